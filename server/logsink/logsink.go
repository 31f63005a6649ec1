// Package logsink is a log writer that never blocks the code that logs.
//
// zerolog writes each line synchronously, from whichever goroutine logs:
// the gnet event loops among them. When standard output stops draining
// (journald stuck, a terminal paused with Ctrl-S, a full pipe) every
// logging goroutine stops with it, and so does the whole MX. A Writer
// stands between the logger and the real output: Write copies the line
// into a bounded buffer and returns at once; one goroutine writes the
// buffer to the real output. When the buffer is full a line is dropped
// whole and counted, and once lines fit again a notice saying how many
// were dropped takes the place of the missing lines.
package logsink

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultMax is the buffer bound New uses for max <= 0: about 4,000 lines
// of 250 bytes, a few seconds of a busy MX.
const DefaultMax = 1 << 20

// ErrCloseTimeout is returned by Close when the output did not take the
// buffered lines in time.
var ErrCloseTimeout = errors.New("logsink: output blocked; buffered log lines not written")

// Writer is an io.Writer that buffers whole lines for a goroutine of its
// own to write out. Its methods are safe for concurrent use.
type Writer struct {
	out    io.Writer
	max    int
	notice func(n uint64) []byte

	dropped atomic.Uint64 // lines dropped since New, for Dropped

	mu   sync.Mutex
	wake *sync.Cond // signalled when pending gains lines or on Close
	// pending holds whole lines waiting, appended by Write under mu. The
	// drainer takes the whole slice, writes it without mu and hands it
	// back as spare, so the two slices alternate and steady logging does
	// not allocate.
	pending []byte
	spare   []byte
	// inflight is the length of the slice the drainer is writing now;
	// pending plus inflight never exceeds max.
	inflight   int
	unreported uint64 // lines dropped since the last notice
	failing    bool   // the last write to out failed
	closed     bool
	peak       int // highest pending+inflight, for tests
	done       chan struct{}
}

// New starts a Writer that writes to out and holds at most max bytes of
// lines that out has not taken yet (DefaultMax if max <= 0); its two
// buffers together allocate at most twice that. notice formats the line
// that reports n dropped lines, in the format of the other lines (nil: a
// plain "n log lines dropped"). It is called with the Writer's lock held,
// so it must not log to this Writer. Close stops the goroutine.
func New(out io.Writer, max int, notice func(n uint64) []byte) *Writer {
	if max <= 0 {
		max = DefaultMax
	}
	if notice == nil {
		notice = func(n uint64) []byte { return fmt.Appendf(nil, "%d log lines dropped\n", n) }
	}
	w := &Writer{out: out, max: max, notice: notice, done: make(chan struct{})}
	w.wake = sync.NewCond(&w.mu)
	go w.drain()
	return w
}

// Write queues a copy of p, which should be one whole line (zerolog
// writes one per call), and returns at once: len(p) and nil even when the
// line is dropped, so that the logger does not report a failure on the
// slow path this Writer exists to avoid.
func (w *Writer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed || len(w.pending)+w.inflight+len(p) > w.max {
		w.drop(1)
		return len(p), nil
	}
	if w.unreported > 0 {
		// The notice goes where the lines went missing, before this one.
		note := w.notice(w.unreported)
		if len(w.pending)+w.inflight+len(note)+len(p) > w.max {
			w.drop(1)
			return len(p), nil
		}
		w.pending = append(w.pending, note...)
		w.unreported = 0
	}
	wasEmpty := len(w.pending) == 0
	w.pending = append(w.pending, p...)
	w.peak = max(w.peak, len(w.pending)+w.inflight)
	if wasEmpty {
		w.wake.Signal()
	}
	return len(p), nil
}

// drop counts n lines lost. Called with mu held.
func (w *Writer) drop(n uint64) {
	w.unreported += n
	w.dropped.Add(n)
}

// Dropped returns the number of lines dropped since New: refused because
// the buffer was full or the Writer closed, or lost in a failed write.
func (w *Writer) Dropped() uint64 { return w.dropped.Load() }

// Buffered returns the bytes of lines taken by Write and not yet written
// out (those being written included). It never exceeds the bound.
func (w *Writer) Buffered() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.pending) + w.inflight
}

// Close writes out what is buffered, waiting at most timeout for the
// output to take it, and stops the goroutine. Lines written after Close
// are dropped. It returns ErrCloseTimeout if the output did not drain in
// time; the goroutine then stays blocked in its write until the process
// exits.
func (w *Writer) Close(timeout time.Duration) error {
	w.mu.Lock()
	w.closed = true
	w.wake.Signal()
	w.mu.Unlock()
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-w.done:
		return nil
	case <-t.C:
		return ErrCloseTimeout
	}
}

// drain is the one goroutine that writes to out.
func (w *Writer) drain() {
	defer close(w.done)
	w.mu.Lock()
	defer w.mu.Unlock()
	for {
		if len(w.pending) == 0 && w.unreported > 0 && !w.failing {
			// Nothing came after the dropped lines: report them now
			// rather than on the next line, which may be long in coming.
			// Not after a failed write, which would report its own loss
			// in a loop.
			if note := w.notice(w.unreported); len(note) <= w.max {
				w.pending = append(w.pending, note...)
				w.unreported = 0
			}
		}
		if len(w.pending) == 0 {
			if w.closed {
				return
			}
			w.wake.Wait()
			continue
		}
		chunk := w.pending
		w.pending, w.spare = w.spare[:0], nil
		w.inflight = len(chunk)
		w.mu.Unlock()
		_, err := w.out.Write(chunk)
		w.mu.Lock()
		w.inflight = 0
		w.failing = err != nil
		if err != nil {
			w.drop(uint64(max(bytes.Count(chunk, []byte{'\n'}), 1)))
		}
		w.spare = chunk[:0]
	}
}
