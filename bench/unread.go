package bench

import (
	"bytes"
	"context"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Timing of the -unread sessions; tests shorten them.
var (
	// unreadStall is how long a write may make no progress before the
	// session counts as stalled (the server stopped taking input).
	unreadStall = 5 * time.Second
	// unreadSettle is the wait between the end of the writing and the
	// RSS reading, for the server to work through what it has taken.
	unreadSettle = 2 * time.Second
	// unreadReadIdle ends the reading of a session that sends nothing
	// more for this long ("still open").
	unreadReadIdle = 2 * time.Second
)

const (
	// unreadPoll is how often the server's RSS is compared with RSSLimit.
	unreadPoll = 10 * time.Millisecond
	// unreadChunk is about how much one write sends.
	unreadChunk = 64 << 10
)

// Why an unread session stopped writing.
const (
	unreadAllSent   = "all sent"
	unreadStalled   = "stalled"
	unreadRSSLimit  = "rss limit"
	unreadTimeBound = "time bound"
	unreadCutOff    = "cut off"
	// The outcome of the sessions reset at the RSS limit, not read.
	unreadAborted = "reset by the bench: server RSS past the limit"
)

// runUnread runs the -unread sessions to their end: opens them, floods
// them all at once, waits for the server to settle, reads what each got
// and closes them. proc may be nil.
func (r *runner) runUnread(ctx context.Context, proc *procWatch) *UnreadReport {
	cfg := &r.cfg
	line := []byte(cfg.UnreadCommand + "\r\n")
	rep := &UnreadReport{
		Requested:    cfg.Unread,
		Command:      cfg.UnreadCommand,
		BytesPerConn: cfg.UnreadBytes / int64(len(line)) * int64(len(line)),
		Stops:        map[string]int64{},
		Outcomes:     map[string]int64{},
		RSSBeforeKB:  proc.rss(),
		RSSLimitKB:   cfg.RSSLimit >> 10,
	}
	hr := newHeldReport(cfg.Unread)
	held := r.openHeld(ctx, cfg.Unread, &hr, r.dial, nil)
	rep.Opened, rep.OpenFailed = hr.Opened, hr.OpenFailed
	defer func() {
		for _, h := range held {
			h.close()
		}
	}()

	// Every session stops at the first of: all sent, a stall, an error,
	// or stop (the RSS limit, the time bound). stopAll unblocks writes
	// in progress by moving their deadline to the past.
	var (
		stopOnce sync.Once
		stop     = make(chan struct{})
		why      atomic.Pointer[string]
	)
	stopAll := func(reason string) {
		stopOnce.Do(func() {
			why.Store(&reason)
			close(stop)
			for _, h := range held {
				_ = h.c.SetWriteDeadline(aLongTimeAgo)
			}
		})
	}
	watchDone := make(chan struct{})
	var watchWG sync.WaitGroup
	if proc != nil && cfg.RSSLimit > 0 {
		watchWG.Add(1)
		go func() {
			defer watchWG.Done()
			watchRSS(proc.pid, cfg.RSSLimit>>10, watchDone, func() { stopAll(unreadRSSLimit) })
		}()
	}
	bound := time.AfterFunc(cfg.UnreadFor, func() { stopAll(unreadTimeBound) })
	cutOff := context.AfterFunc(ctx, func() { stopAll(unreadCutOff) })

	chunk := bytes.Repeat(line, max(1, unreadChunk/len(line)))
	var first []byte
	if cfg.UnreadFirst != "" {
		first = []byte(cfg.UnreadFirst + "\r\n")
	}
	start := time.Now()
	var (
		sent atomic.Int64
		mu   sync.Mutex
		wg   sync.WaitGroup
	)
	for _, h := range held {
		wg.Add(1)
		go func() {
			defer wg.Done()
			reason := flood(h.c, first, chunk, rep.BytesPerConn, unreadStall, stop, &sent)
			if reason == "" {
				reason = *why.Load()
			}
			mu.Lock()
			rep.Stops[reason]++
			mu.Unlock()
		}()
	}
	wg.Wait()
	rep.WriteSeconds = time.Since(start).Seconds()
	rep.BytesSent = sent.Load()
	bound.Stop()
	cutOff()

	// Past the RSS limit the sessions are reset at once: what the
	// server's sockets hold would grow it further.
	aborted := why.Load() != nil && *why.Load() == unreadRSSLimit
	if aborted {
		for _, h := range held {
			h.cut()
			abort(h.c)
		}
		rep.Outcomes[unreadAborted] = int64(len(held))
	}
	// The server may still be working through what its socket holds.
	select {
	case <-ctx.Done():
	case <-time.After(unreadSettle):
	}
	close(watchDone)
	watchWG.Wait()
	rep.RSSAfterKB = proc.rss()
	if aborted {
		held = nil
	}

	until := time.Now().Add(cfg.UnreadFor)
	for _, h := range held {
		wg.Add(1)
		go func() {
			defer wg.Done()
			replies, n, outcome := drainReplies(ctx, h.c, unreadReadIdle, until)
			mu.Lock()
			rep.Replies += replies
			rep.ReplyBytes += n
			rep.Outcomes[outcome]++
			mu.Unlock()
		}()
	}
	wg.Wait()
	if proc != nil {
		if hwm, _, err := readProcMem(proc.pid); err == nil {
			rep.PeakRSSKB = hwm
			if rep.RSSBeforeKB > 0 {
				rep.GrowthKB = hwm - rep.RSSBeforeKB
			}
		}
	}
	return rep
}

// abort resets c (SO_LINGER 0) rather than closing it gracefully.
func abort(c net.Conn) {
	if nc, ok := c.(interface{ NetConn() net.Conn }); ok {
		c = nc.NetConn()
	}
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = c.Close()
}

// watchRSS calls over once when pid's VmRSS passes limitKB, polling until
// done is closed.
func watchRSS(pid int, limitKB int64, done <-chan struct{}, over func()) {
	t := time.NewTicker(unreadPoll)
	defer t.Stop()
	for {
		select {
		case <-done:
			return
		case <-t.C:
		}
		if _, rss, err := readProcMem(pid); err == nil && rss > limitKB {
			over()
			return
		}
	}
}

// flood writes first, then total bytes of chunk's repeated content to c,
// never reading. It returns why it stopped: "all sent", "stalled" (no
// progress in stall), a write error's key, or "" when stop was closed.
// sent counts the flood's bytes, not first's.
func flood(c net.Conn, first, chunk []byte, total int64, stall time.Duration, stop <-chan struct{}, sent *atomic.Int64) string {
	stopped := func() bool {
		select {
		case <-stop:
			return true
		default:
			return false
		}
	}
	for left := total; left > 0; {
		if stopped() {
			return ""
		}
		p := chunk[:min(int64(len(chunk)), left)]
		_ = c.SetWriteDeadline(time.Now().Add(stall))
		var n int
		var err error
		if first != nil {
			// One writev: the first command goes with the flood's start.
			bufs := net.Buffers{first, p}
			var m int64
			m, err = bufs.WriteTo(c)
			n = max(int(m)-len(first), 0)
			if m >= int64(len(first)) {
				first = nil
			} else {
				first = first[m:]
			}
		} else {
			n, err = c.Write(p)
		}
		sent.Add(int64(n))
		left -= int64(n)
		if err != nil {
			var ne net.Error
			switch {
			case stopped():
				return ""
			case errors.As(err, &ne) && ne.Timeout():
				return unreadStalled
			}
			return errKey("write", err)
		}
	}
	return unreadAllSent
}

// drainReplies reads what the server sent on c until it closes, sends
// nothing for idle, until passes or ctx ends. It returns the complete
// replies and the bytes read, and how the session ended (closeOutcome,
// naming the first reply that was not 2xx).
func drainReplies(ctx context.Context, c net.Conn, idle time.Duration, until time.Time) (replies, n int64, outcome string) {
	buf := make([]byte, 256<<10)
	var rc replyCounter
	for {
		if ctx.Err() != nil {
			return rc.replies, n, closeOutcome(ctx.Err(), rc.bad)
		}
		d := time.Now().Add(idle)
		if until.Before(d) {
			d = until
		}
		_ = c.SetReadDeadline(d)
		k, err := c.Read(buf)
		n += int64(k)
		rc.feed(buf[:k])
		if err != nil {
			return rc.replies, n, closeOutcome(err, rc.bad)
		}
	}
}

// replyCounter counts the replies in a stream of reply lines fed in
// arbitrary pieces, and keeps the first that is not 2xx ("421 4.7.0").
type replyCounter struct {
	head    []byte // the start of the current line, up to maxHead bytes
	replies int64
	bad     string
}

// maxHead is enough of a line for its code and enhanced code.
const maxHead = 64

func (rc *replyCounter) feed(p []byte) {
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		seg := p
		if i >= 0 {
			seg, p = p[:i+1], p[i+1:]
		} else {
			p = nil
		}
		if room := maxHead - len(rc.head); room > 0 {
			rc.head = append(rc.head, seg[:min(len(seg), room)]...)
		}
		if i < 0 {
			return
		}
		if isFinalReply(rc.head) {
			rc.replies++
			if rc.bad == "" && rc.head[0] != '2' {
				rc.bad = replyTextOf(rc.head)
			}
		}
		rc.head = rc.head[:0]
	}
}

// isFinalReply reports whether line is the last line of a reply:
// "ddd text" or "ddd" alone.
func isFinalReply(line []byte) bool {
	line = bytes.TrimRight(line, "\r\n")
	if len(line) < 3 || (len(line) > 3 && line[3] != ' ') {
		return false
	}
	for _, c := range line[:3] {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}
