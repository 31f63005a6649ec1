package spool

// Spilling: a large body is written to its tmp/ file while it arrives, so
// that the server holds a chunk or two of it in memory instead of the whole
// message (NewSpill, Spill.Write, Submit with Message.Spill).
//
// Scheduling. Every write is done by the spool's fixed workers, never on
// the caller's goroutine, and there is no goroutine per spill. A spill with
// work to do sits on the spill run queue (Spool.spills), which the workers
// serve beside the message queue; a spill is on it at most once (Spill.running),
// and one goroutine at a time runs it, so chunks are written in Write order.
// The run queue is therefore bounded by the number of open spills, which the
// server bounds by its connections, and it is never full: a Write cannot
// fail for lack of a queue slot the way Submit does with ErrQueueFull, which
// would turn a burst of large messages into 451s at the end of their
// transfers. Backpressure is the caller's memory budget instead: each
// chunk's done callback runs only once the chunk is on disk. A worker takes
// every chunk waiting for a spill in one writev, then puts the spill back at
// the end of the run queue if more work arrived meanwhile, so that one fast
// sender cannot monopolise a worker.
//
// File. The file is created in the first mailbox's tmp/ at the first
// non-empty chunk, under the unique name without ",S=" (the size is not
// known yet) but with the _nanomx. marker, so start-up cleanup removes it
// after a crash. It stays open across chunks: one descriptor per spilling
// message, bounded by the server's connection limit (Go raises the soft
// RLIMIT_NOFILE to the hard limit), where reopening per chunk would cost an
// open, a path lookup and a close for every 256 KiB. At the end the links
// into the other mailboxes' tmp/ and the files in new/ get the full name
// with ",S=<exact size>"; publish renames tmp/<name> into new/<name,S=...>.
//
// Header. The trace fields (built by the server, given to NewSpill) go in
// front of the first chunk. The Received count (loop check) and the cuts of
// the client's Return-Path fields come from the first chunk alone, which the
// server makes at least spill_threshold (256 KiB) long. If the header section
// does not end inside it, scanning stops at its last complete line: Received
// fields after that are not counted, and a Return-Path field after it, or
// one that is the last complete field of the chunk (its continuation lines
// may follow in the next chunk), is kept rather than cut, so that a partial
// cut can never leave continuation lines to join a field nanomx wrote.
//
// Errors (an invalid mailbox or trace, mail loop, I/O) are remembered: the
// file is removed at once, later chunks are dropped (their done callbacks
// still run) and the error is reported through Submit's done.

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/valyala/bytebufferpool"
)

// Spill is a message whose body is being written to disk as it arrives. It
// is made by NewSpill, fed with Write, and either submitted (Submit with
// Message.Spill set) or given up with Abort. Its methods are safe for
// concurrent use and never block.
type Spill struct {
	s   *Spool
	env Message // ID, Mailboxes, Trace (NewSpill); read by the running goroutine only

	// mu guards the fields the caller and the workers share.
	mu        sync.Mutex
	pending   []spillWrite // chunks not yet taken by a worker, in Write order
	running   bool         // on the run queue or being run, by one goroutine at a time
	aborted   bool         // Abort was called (before Submit)
	submitted bool         // Submit accepted the spill
	final     *job         // set by Submit; run once pending is empty

	// Run state: only the goroutine running the spill touches these; running
	// hands them over under mu (and the run queue's mutex).
	f     *os.File  // the tmp file, open while chunks arrive
	d     *delivery // set once the mailboxes passed: dirs, id, tmp[0] is the file
	base  string    // the file's name without ",S="
	size  int64     // bytes written so far, trace fields included
	err   error     // the first failure; the file is gone
	ended bool      // file closed (removed or handed to the delivery): drop writes
	epoch uint64    // flushes returned before the first write (prepared.epoch)
	// layout is what the first chunk left out of the body (rewrite, cut.go).
	layout headLayout
}

// spillWrite is one chunk given to Write.
type spillWrite struct {
	b    *bytebufferpool.ByteBuffer
	done func()
}

// errSpillUsed is Submit's answer for a spill already submitted or aborted.
var errSpillUsed = errors.New("spool: spill already submitted or aborted")

// NewSpill starts a message whose body will be written to disk as it
// arrives. m carries everything but the body: ID, Mailboxes and Trace.
// NewSpill copies them (the slices are shared and must not change), so
// later changes to m do not matter; those of the message given to Submit
// are ignored. The trace fields are written with the first chunk, and the
// mailboxes checked then. NewSpill does no I/O.
func (s *Spool) NewSpill(m *Message) *Spill {
	sp := &Spill{s: s}
	if m != nil {
		sp.env = Message{ID: m.ID, Mailboxes: m.Mailboxes, Trace: m.Trace, DropField: m.DropField}
	}
	return sp
}

// Write queues b (decoded body bytes, LF line endings, in order) to be
// appended to the file. The spill owns b from the call on and returns it to
// the pool once it is written or dropped; then done, if not nil, runs on a
// worker goroutine, so that the caller can release b's share of its memory
// budget. A failure (disk full, invalid mailbox, mail loop) is remembered
// and reported when the message is submitted; later chunks are dropped,
// done still runs. Write never blocks and does no I/O; it must not be
// called after Submit or Abort (the chunk is then dropped).
func (sp *Spill) Write(b *bytebufferpool.ByteBuffer, done func()) {
	sp.mu.Lock()
	sp.pending = append(sp.pending, spillWrite{b: b, done: done})
	start := !sp.running
	sp.running = true
	sp.mu.Unlock()
	if start {
		sp.s.scheduleSpill(sp)
	}
}

// Written runs fn once every chunk written before it is on disk, on a
// worker goroutine, with the path of the file and the offset at which the
// chunks' bytes begin in it (after the trace fields; the client's
// Return-Path fields and those Message.DropField reports are not in it).
// path is "" when the spill has failed. The file may be read until the
// spill is submitted or aborted; fn must not block (hand the reading to
// another goroutine). Written never blocks and, like Write, must not be
// called after Submit or Abort.
func (sp *Spill) Written(fn func(path string, off int64)) {
	sp.Write(nil, func() {
		// On the goroutine running the spill: the run state is ours.
		if sp.ended || sp.d == nil || len(sp.d.tmp) == 0 {
			fn("", 0)
			return
		}
		fn(sp.d.tmp[0], int64(len(sp.env.Trace)))
	})
}

// Abort gives the spill up: chunks not yet written are dropped (their done
// callbacks run) and the tmp file is removed, on a worker. Abort never
// blocks; after a successful Submit, and a second time, it does nothing.
func (sp *Spill) Abort() {
	sp.mu.Lock()
	if sp.submitted || sp.aborted {
		sp.mu.Unlock()
		return
	}
	sp.aborted = true
	start := !sp.running
	sp.running = true
	sp.mu.Unlock()
	if start {
		sp.s.scheduleSpill(sp)
	}
}

// submitSpill is Submit for a message with a Spill: its Body (may be nil)
// is the tail, written after every chunk, then the message is delivered. It
// fails only after Close, or for a spill already submitted or aborted; the
// spill is then aborted and the body released.
func (s *Spool) submitSpill(m *Message, done func(error)) error {
	sp := m.Spill
	var err error
	if sp.s != s {
		err = errors.New("spool: spill of another spool")
	} else {
		err = s.acceptSpill(sp, job{m: m, done: done})
	}
	if err != nil {
		s.releaseBody(m)
		if sp.s == s {
			sp.Abort()
		}
	}
	return err
}

// acceptSpill hands j to sp unless the spool is closed. It holds s.mu
// shared, so Close cannot slip between the check and the spill reaching the
// run queue (or its running worker), which the workers drain before they
// exit: a submitted spill always finishes on a worker, while the committer
// still runs. Lock order: s.mu, then sp.mu; nothing takes s.mu holding sp.mu.
func (s *Spool) acceptSpill(sp *Spill, j job) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return ErrClosed
	}
	sp.mu.Lock()
	defer sp.mu.Unlock()
	if sp.submitted || sp.aborted {
		return errSpillUsed
	}
	sp.submitted, sp.final = true, &j
	if !sp.running {
		sp.running = true
		s.pushSpill(sp)
	}
	return nil
}

// scheduleSpill puts sp, whose running flag the caller just set, on the run
// queue. After Close no worker is left: a goroutine runs it instead (only
// writes to drop and files to remove remain then, as Submit fails).
func (s *Spool) scheduleSpill(sp *Spill) {
	if !s.requeueSpill(sp) {
		go sp.run()
	}
}

// requeueSpill puts sp on the run queue and reports true, or false once the
// spool is closed.
func (s *Spool) requeueSpill(sp *Spill) bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return false
	}
	s.pushSpill(sp)
	return true
}

// pushSpill appends sp to the run queue and wakes a worker; the caller holds
// s.mu shared with the spool open. A full wake channel means wake-ups are
// pending already, and each worker woken passes one on while spills wait
// (popSpill), so no spill is left behind.
func (s *Spool) pushSpill(sp *Spill) {
	s.spillMu.Lock()
	s.spills = append(s.spills, sp)
	s.spillMu.Unlock()
	select {
	case s.spillWake <- struct{}{}:
	default:
	}
}

// popSpill takes the first spill off the run queue, or returns nil.
func (s *Spool) popSpill() *Spill {
	s.spillMu.Lock()
	n := len(s.spills)
	if n == 0 {
		s.spillMu.Unlock()
		return nil
	}
	sp := s.spills[0]
	copy(s.spills, s.spills[1:]) // at most one entry per open spill: short
	s.spills[n-1] = nil
	s.spills = s.spills[:n-1]
	s.spillMu.Unlock()
	if n > 1 {
		select {
		case s.spillWake <- struct{}{}:
		default:
		}
	}
	return sp
}

// run works on sp, whose running flag the caller holds, one step at a
// time, until nothing is left or another spill deserves the worker.
func (sp *Spill) run() {
	for {
		sp.step()
		if sp.idle() || sp.s.requeueSpill(sp) {
			return
		}
		// Closed: no run queue any more; finish here.
	}
}

// idle clears running and reports true if sp has nothing to do.
func (sp *Spill) idle() bool {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	if len(sp.pending) > 0 || sp.aborted && !sp.ended || sp.final != nil {
		return false
	}
	sp.running = false
	return true
}

// step does the next piece of work: write (or drop) every waiting chunk, or
// remove the file of an aborted spill, or finish a submitted one.
func (sp *Spill) step() {
	sp.mu.Lock()
	ws := sp.pending
	sp.pending = nil
	abort := sp.aborted && !sp.ended
	var final *job
	if len(ws) == 0 && !abort {
		final, sp.final = sp.final, nil
	}
	sp.mu.Unlock()

	answered := false
	defer func() {
		if p := recover(); p != nil {
			sp.s.log.Error().Str("id", sp.env.ID).Interface("panic", p).Bytes("stack", debug.Stack()).Msg("spill panicked")
			sp.fail(fmt.Errorf("spool: spill panicked: %v", p))
			if final != nil && !answered {
				sp.s.releaseBody(final.m)
				sp.answer(*final, sp.err)
			}
		}
	}()
	switch {
	case len(ws) > 0:
		sp.writeChunks(ws, abort)
	case abort:
		sp.fail(nil)
		sp.s.log.Debug().Str("id", sp.env.ID).Int64("size", sp.size).Msg("spill aborted")
	case final != nil:
		sp.deliver(*final, &answered)
	}
}

// writeChunks appends ws to the file with one writev, or drops them after
// a failure or an abort, then releases every buffer and runs its done.
func (sp *Spill) writeChunks(ws []spillWrite, drop bool) {
	defer func() {
		// The file must be gone before the callbacks run, even after a
		// panic (a test seam's, say).
		if p := recover(); p != nil {
			sp.s.log.Error().Str("id", sp.env.ID).Interface("panic", p).Bytes("stack", debug.Stack()).Msg("spill panicked")
			sp.fail(fmt.Errorf("spool: spill panicked: %v", p))
		}
		for _, w := range ws {
			if w.b != nil {
				sp.s.release(w.b)
			}
			if w.done != nil {
				sp.callWriteDone(w.done)
			}
		}
	}()
	if drop || sp.ended {
		return
	}
	segs := make([][]byte, 0, len(ws)+3)
	for _, w := range ws {
		if w.b == nil || len(w.b.B) == 0 {
			continue
		}
		if sp.f == nil {
			head, err := sp.open(w.b.B, true)
			if err != nil {
				sp.fail(err)
				return
			}
			segs = append(segs, head...)
			continue
		}
		segs = append(segs, w.b.B)
	}
	if err := sp.write(segs); err != nil {
		sp.fail(err)
	}
}

// write appends segs to the open file.
func (sp *Spill) write(segs [][]byte) error {
	if len(segs) == 0 {
		return nil
	}
	if err := sp.s.write(int(sp.f.Fd()), sp.f.Name(), segs); err != nil {
		return err
	}
	for _, seg := range segs {
		sp.size += int64(len(seg))
	}
	return nil
}

// open checks the mailboxes, computes the file's head from first (the
// first body bytes; partial if more follow) and creates the file in the
// first mailbox's tmp/. It returns the segments to write first.
func (sp *Spill) open(first []byte, partial bool) ([][]byte, error) {
	s := sp.s
	// Anything written from here on may be written back by a flush that
	// is running now: the epoch is taken before the first byte.
	sp.epoch = s.flushEpoch()
	dirs, err := s.maildirs(sp.env.Mailboxes)
	if err != nil {
		return nil, err
	}
	head, layout, err := fileHeadCut(sp.env.Trace, first, partial, nil, sp.env.DropField)
	if err != nil {
		return nil, err
	}
	sp.layout = layout
	d := &delivery{s: s, id: sp.env.ID, spilled: true, dirs: dirs}
	sp.d = d // from here on failures are storage failures, classified by finish

	box := d.dirs[0]
	if _, ok := s.ready.Load(box); !ok {
		if err := s.ensureMaildir(box); err != nil {
			return nil, err
		}
	}
	for attempt := 0; ; attempt++ {
		name := uniqueName(time.Now(), s.pid, nameCounter.Add(1), s.nameHost, 0)
		sp.base = strings.TrimSuffix(name, ",S=0")
		path := filepath.Join(box, "tmp", sp.base)
		f, err := s.createTmp(box, path)
		if errors.Is(err, fs.ErrExist) && attempt < 3 {
			continue // another process with our pid and host name
		}
		if err != nil {
			return nil, err
		}
		sp.f, d.tmp = f, []string{path}
		return head, nil
	}
}

// createTmp creates path (which must not exist) in Maildir box, mode 0600,
// recreating the Maildir if its tmp/ has gone.
func (s *Spool) createTmp(box, path string) (*os.File, error) {
	f, err := openFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		if err := s.ensureMaildir(box); err != nil {
			return nil, err
		}
		f, err = openFile(path)
	}
	return f, err
}

// fail records err (nil for an abort), closes and removes the file, and
// ends the spill: later chunks are dropped.
func (sp *Spill) fail(err error) {
	if sp.err == nil {
		sp.err = err
	}
	if sp.f != nil {
		sp.f.Close()
		sp.f = nil
	}
	if sp.d != nil && len(sp.d.tmp) > 0 {
		sp.d.removeTmp(0)
		sp.d.tmp = nil
	}
	sp.ended = true
}

// deliver finishes a submitted spill: the tail goes after every chunk, the
// file is synced (per-file fsync) and closed, linked into the other
// mailboxes and published, directly or through the committer, as prepare
// and publish do for a message in memory.
func (sp *Spill) deliver(j job, answered *bool) {
	s := sp.s
	if j.scratch != nil {
		sp.finishScratch(j, answered) // FinishSpill: the caller takes the file
		return
	}
	if f := j.m.Folder; f != "" && sp.d != nil && sp.err == nil {
		// Into a folder: the file stays where it was written (the first
		// mailbox's tmp/, on the same file system) and is linked into the
		// folders' tmp/ and renamed into the first folder's new/.
		if dirs, err := s.maildirs(inFolder(sp.env.Mailboxes, f)); err != nil {
			sp.fail(err)
		} else {
			sp.d.dirs = dirs
		}
	}
	grouped := s.grouped()
	if grouped && sp.d != nil {
		// syncfs on the root does not cover another file system: such a
		// message is synced per file, like prepareGrouped does.
		if other, err := s.onOtherFS(sp.d.dirs); err != nil || other {
			grouped = false
		}
	}
	if !sp.ended {
		if err := sp.complete(j.m.Body, j.m.Headers, j.m.Cut, grouped); err != nil {
			sp.fail(err)
		}
	}
	s.releaseBody(j.m)
	sp.ended = true

	d := sp.d
	if sp.err != nil {
		err := sp.err
		if d != nil { // mailbox, trace and loop errors are final as they are
			err = d.finish(0, err)
		}
		*answered = true
		sp.answer(j, err)
		return
	}
	d.size = sp.size
	d.name = sp.base + ",S=" + strconv.FormatInt(sp.size, 10)
	d.sync = s.syncer
	if grouped {
		d.sync = NoSync{}
	}
	if err := d.prepare(); err != nil {
		d.removeTmp(0)
		*answered = true
		sp.answer(j, d.finish(0, err))
		return
	}
	if grouped {
		*answered = true // the committer answers
		s.commitQ <- prepared{d: d, j: j, epoch: sp.epoch}
		return
	}
	published, err := d.publish(true)
	*answered = true
	sp.answer(j, d.finish(published, err))
}

// complete writes the tail (or, if no chunk had bytes, the whole message),
// writes the file anew with headers and without the cut ranges if there
// are any (rewrite), syncs it unless group commit will, and closes it.
func (sp *Spill) complete(tail *bytebufferpool.ByteBuffer, headers []byte, cut [][2]int64, grouped bool) error {
	var b []byte
	if tail != nil {
		b = tail.B
	}
	var segs [][]byte
	if sp.f == nil {
		head, err := sp.open(b, false)
		if err != nil {
			return err
		}
		segs = head
	} else if len(b) > 0 {
		segs = [][]byte{b}
	}
	err := sp.write(segs)
	if err == nil && (len(headers) > 0 || len(cut) > 0) {
		err = sp.rewrite(headers, cut)
	}
	if err == nil && !grouped {
		err = sp.s.syncer.SyncFile(sp.f)
	}
	// close(2) can report deferred write errors (NFS); it must succeed too.
	cerr := sp.f.Close()
	sp.f = nil
	if err == nil {
		err = cerr
	}
	return err
}

// answer calls Submit's done for j, if any.
func (sp *Spill) answer(j job, err error) {
	if j.done != nil {
		sp.s.callDone(j, err)
	}
}

// callWriteDone runs a chunk's done callback; a panic there is logged.
func (sp *Spill) callWriteDone(done func()) {
	defer func() {
		if p := recover(); p != nil {
			sp.s.log.Error().Str("id", sp.env.ID).Interface("panic", p).Bytes("stack", debug.Stack()).Msg("spill write callback panicked")
		}
	}()
	done()
}

// copyFile is writeFile for a spilled message: path, in Maildir box, gets a
// copy of the file src, synced with sync. On failure it is removed.
func (s *Spool) copyFile(box, path, src string, sync Syncer) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	f, err := s.createTmp(box, path)
	if err != nil {
		return err
	}
	_, err = io.Copy(f, in) // copy_file_range where the kernel can
	if err == nil {
		err = sync.SyncFile(f)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
	}
	return err
}
