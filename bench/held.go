package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/nanomx/nanomx/bench/smtpc"
)

// heldConn is an idle or slow session held open during the load.
type heldConn struct {
	c      net.Conn
	cut    func() bool
	opened time.Time
}

func (h *heldConn) close() {
	h.cut()
	_ = h.c.Close()
}

// openHeld opens n sessions (greeting and EHLO) through d with up to 64
// dials at a time, and fills in the Opened, OpenFailed and OpenSeconds of
// report. prep, if not nil, runs on each session once it is open, with
// the session's number (from 1) and a way to update report under its
// lock; it returns an error key, having closed the session, or "" to hold
// it.
func (r *runner) openHeld(ctx context.Context, n int, report *HeldReport, d *dialer, prep func(c *conn, i int64, rec func(func(*HeldReport))) string) []*heldConn {
	start := time.Now()
	var (
		mu   sync.Mutex
		held []*heldConn
		next atomic.Int64
		wg   sync.WaitGroup
	)
	rec := func(f func(*HeldReport)) {
		mu.Lock()
		f(report)
		mu.Unlock()
	}
	for range min(n, 64) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var c conn
			for {
				i := next.Add(1)
				if i > int64(n) || ctx.Err() != nil {
					return
				}
				key := d.open(ctx, &c, r.cfg.Timeout, nil)
				if key == "" && prep != nil {
					key = prep(&c, i, rec)
				}
				mu.Lock()
				if key != "" {
					report.OpenFailed[key]++
				} else {
					// Held past the set-up's deadline: only the run's
					// end (c.cut) and the server may end it now.
					_ = c.NetConn().SetDeadline(time.Time{})
					held = append(held, &heldConn{c: c.NetConn(), cut: c.cut, opened: time.Now()})
				}
				mu.Unlock()
				c.tcp = nil
			}
		}()
	}
	wg.Wait()
	report.Opened = len(held)
	report.OpenSeconds = time.Since(start).Seconds()
	return held
}

func newHeldReport(n int) HeldReport {
	return HeldReport{Requested: n, OpenFailed: map[string]int64{}, Outcomes: map[string]int64{}}
}

// idleSet is the -idle sessions: opened before the load, silent during it,
// probed after it.
type idleSet struct {
	held   []*heldConn
	report HeldReport
}

// openIdle opens n idle sessions; with IdleRcpts each runs its
// transaction first (idleTxn).
func (r *runner) openIdle(ctx context.Context, n int) *idleSet {
	s := &idleSet{report: newHeldReport(n)}
	var prep func(*conn, int64, func(func(*HeldReport))) string
	if r.cfg.IdleRcpts > 0 {
		s.report.RcptsRefused = map[string]int64{}
		prep = r.idleTxn
	}
	s.held = r.openHeld(ctx, n, &s.report, r.dial, prep)
	return s
}

// idleTxn runs idle session i's transaction: MAIL, IdleRcpts long
// recipients (in the same write when PIPELINING is offered, RFC 2920),
// then RSET. Refused recipients are counted, not fatal; a refused MAIL or
// RSET, or a 421, fails the session.
func (r *runner) idleTxn(c *conn, i int64, rec func(func(*HeldReport))) string {
	cfg := &r.cfg
	_ = c.NetConn().SetDeadline(time.Now().Add(cfg.Timeout))
	fail := func(key string) string {
		c.close()
		return key
	}
	domain := domainOf(cfg.To[0])
	cmd := func(b []byte, j int) []byte {
		b = append(b, "RCPT TO:<"...)
		b = append(b, longLocal(i, j, cfg.IdleRcptLen-1-len(domain))...)
		b = append(b, '@')
		b = append(b, domain...)
		return append(b, ">\r\n"...)
	}
	var accepted int64
	refused := map[string]int64{}
	rcpt := func() string {
		code, err := c.Reply()
		switch {
		case err != nil:
			return fail(errKey(smtpc.StageRcpt, err))
		case code/100 == 2:
			accepted++
		case code == 421:
			return fail(c.replyKey(smtpc.StageRcpt))
		default:
			refused[c.replyKey(smtpc.StageRcpt)]++
		}
		return ""
	}
	if c.pipelining {
		b := append([]byte(nil), r.mailCmd...)
		for j := range cfg.IdleRcpts {
			b = cmd(b, j)
		}
		if err := c.Write(b); err != nil {
			return fail(errKey(smtpc.StageMail, err))
		}
		code, err := c.Reply()
		if err != nil {
			return fail(errKey(smtpc.StageMail, err))
		}
		mailKey := ""
		if code != 250 {
			mailKey = c.replyKey(smtpc.StageMail)
		}
		for range cfg.IdleRcpts {
			if key := rcpt(); key != "" {
				return key
			}
		}
		if mailKey != "" {
			return fail(mailKey)
		}
	} else {
		if err := c.Step(smtpc.StageMail, r.mailCmd, 250); err != nil {
			return fail(keyOf(err))
		}
		var b []byte
		for j := range cfg.IdleRcpts {
			b = cmd(b[:0], j)
			if err := c.Write(b); err != nil {
				return fail(errKey(smtpc.StageRcpt, err))
			}
			if key := rcpt(); key != "" {
				return key
			}
		}
	}
	if err := c.Rset(); err != nil {
		return fail(keyOf(err))
	}
	rec(func(h *HeldReport) {
		h.RcptsAccepted += accepted
		for k, v := range refused {
			h.RcptsRefused[k] += v
		}
	})
	return ""
}

// longLocal is the local part of recipient j of idle session i, n bytes
// long (at least its unique prefix "hw<i>-<j>-"), padded with x.
func longLocal(i int64, j, n int) []byte {
	b := fmt.Appendf(nil, "hw%d-%d-", i, j)
	for len(b) < n {
		b = append(b, 'x')
	}
	return b
}

// openSilent opens n silent sessions (silentTxn), from SilentSource when
// it is set.
func (r *runner) openSilent(ctx context.Context, n int) *idleSet {
	s := &idleSet{report: newHeldReport(n)}
	d := r.dial
	if r.cfg.SilentSource != "" {
		one := *r.dial
		ip := net.ParseIP(r.cfg.SilentSource)
		one.spread = true
		one.src = func() *net.TCPAddr { return &net.TCPAddr{IP: ip} }
		d = &one
	}
	s.held = r.openHeld(ctx, n, &s.report, d, r.silentTxn)
	return s
}

// silentTxn starts a transaction whose chunk never comes: MAIL FROM:<>,
// RCPT TO:<SilentRcpt>, each answered, then BDAT with session i's size
// (RFC 3030), whose reply is owed only once that many octets arrive.
func (r *runner) silentTxn(c *conn, i int64, _ func(func(*HeldReport))) string {
	_ = c.NetConn().SetDeadline(time.Now().Add(r.cfg.Timeout))
	err := c.Mail("")
	if err == nil {
		err = c.Rcpt(r.cfg.SilentRcpt)
	}
	if err != nil {
		c.close()
		return keyOf(err)
	}
	sizes := r.cfg.SilentBDAT
	if err := c.Write(fmt.Appendf(nil, "BDAT %d\r\n", sizes[(i-1)%int64(len(sizes))])); err != nil {
		c.close()
		return errKey(smtpc.StageBdat, err)
	}
	return ""
}

// finish probes every idle session for what the server did to it, counts
// the outcomes and closes them all.
func (s *idleSet) finish() {
	var (
		mu   sync.Mutex
		next atomic.Int64
		wg   sync.WaitGroup
	)
	for range min(len(s.held), 256) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 512)
			for {
				i := next.Add(1) - 1
				if i >= int64(len(s.held)) {
					return
				}
				h := s.held[i]
				outcome := probe(h.c, buf)
				h.close()
				mu.Lock()
				s.report.Outcomes[outcome]++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
}

// probe reads what the server sent on an idle connection without waiting
// more than a few milliseconds: a reply already sent and a close already
// made are in the socket, so a short wait suffices.
func probe(c net.Conn, buf []byte) string {
	const wait = 5 * time.Millisecond
	_ = c.SetReadDeadline(time.Now().Add(wait))
	n, err := c.Read(buf)
	if n == 0 {
		return closeOutcome(err, "")
	}
	reply := replyTextOf(buf[:n])
	for err == nil {
		_ = c.SetReadDeadline(time.Now().Add(wait))
		_, err = c.Read(buf)
	}
	return closeOutcome(err, reply)
}

// closeOutcome names what a read error says about a held connection after
// the server sent reply ("" for none).
func closeOutcome(err error, reply string) string {
	var ne net.Error
	switch {
	case errors.As(err, &ne) && ne.Timeout():
		if reply != "" {
			return reply + ", still open"
		}
		return "still open"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		if reply != "" {
			return "closed after " + reply
		}
		return "closed without reply"
	case errors.Is(err, syscall.ECONNRESET):
		if reply != "" {
			return "reset after " + reply
		}
		return "reset"
	}
	return errKey("closed", err)
}

// replyTextOf is "421 4.4.2" for the first reply line in b.
func replyTextOf(b []byte) string {
	line, _, _ := bytes.Cut(b, []byte("\n"))
	if s := smtpc.StatusOf(line); s != "" {
		return s
	}
	return smtpc.ErrMalformed.Error()
}

// slowSender trickles one transaction, a byte at a time.
type slowSender struct {
	heldConn
	sent atomic.Int64

	// mu guards the fields below: the reader goroutine sets them when the
	// server closes; finish sets them for a session still open.
	mu          sync.Mutex
	done        bool
	outcome     string
	closedAfter time.Duration
}

// slowSet is the -slow sessions.
type slowSet struct {
	senders []*slowSender
	report  HeldReport
	stop    chan struct{}
	wg      sync.WaitGroup
}

// startSlow opens n sessions and starts trickling on each: MAIL, RCPT,
// DATA, a short message, QUIT, one byte every SlowInterval, without waiting
// for replies; a reader goroutine per session notes what the server says.
func (r *runner) startSlow(ctx context.Context, n int) *slowSet {
	s := &slowSet{report: newHeldReport(n), stop: make(chan struct{})}
	held := r.openHeld(ctx, n, &s.report, r.dial, nil)
	for i, h := range held {
		ss := &slowSender{heldConn: *h}
		s.senders = append(s.senders, ss)
		script := r.slowScript(int64(i + 1))
		s.wg.Add(2)
		go func() {
			defer s.wg.Done()
			ss.trickle(script, r.cfg.SlowInterval, r.cfg.Timeout, s.stop)
		}()
		go func() {
			defer s.wg.Done()
			ss.read()
		}()
	}
	return s
}

// slowScript is what slow sender i sends: a whole transaction and QUIT.
// Its marker is "<runid>-slow-<i>", which -verify-maildir does not count.
func (r *runner) slowScript(i int64) []byte {
	cfg := &r.cfg
	b := append([]byte(nil), r.mailCmd...)
	b = append(b, r.rcptCmds[0]...)
	b = append(b, "DATA\r\n"...)
	hdr := len(b)
	b = appendHeader(b, cfg.RunID+"-slow", i, cfg.From, cfg.To[0], r.date)
	b = append(b, r.pool.body(1000, len(b)-hdr)...)
	b = append(b, endOfData...)
	return append(b, "QUIT\r\n"...)
}

// trickle writes script one byte every interval until it is sent, the
// connection fails or stop is closed.
func (s *slowSender) trickle(script []byte, interval, timeout time.Duration, stop <-chan struct{}) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for i := range script {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		_ = s.c.SetWriteDeadline(time.Now().Add(timeout))
		if _, err := s.c.Write(script[i : i+1]); err != nil {
			return
		}
		s.sent.Add(1)
	}
}

// read notes the server's replies until the connection ends, and how it
// ended.
func (s *slowSender) read() {
	var c smtpc.Conn
	c.Reset(s.c)
	bad, quit := "", false
	for {
		code, err := c.Reply()
		if err != nil {
			s.mu.Lock()
			if !s.done {
				s.done = true
				s.outcome = closeOutcome(err, bad)
				switch {
				case quit && bad == "":
					s.outcome = "completed the transaction"
				case s.outcome == "still open":
					// Cut by the run's own deadline, not by the server.
					s.done = false
				default:
					s.closedAfter = time.Since(s.opened)
				}
			}
			s.mu.Unlock()
			return
		}
		switch {
		case code == 221:
			quit = true
		case code >= 400:
			bad = c.Status()
		}
	}
}

// finish stops the trickling, counts the outcomes and closes the sessions.
func (s *slowSet) finish() *HeldReport {
	close(s.stop)
	rep := &s.report
	for _, ss := range s.senders {
		ss.mu.Lock()
		if !ss.done {
			ss.done = true
			ss.outcome = "still open"
		} else if ss.closedAfter > 0 {
			sec := ss.closedAfter.Seconds()
			if rep.FirstClose == 0 || sec < rep.FirstClose {
				rep.FirstClose = sec
			}
			rep.LastClose = max(rep.LastClose, sec)
		}
		rep.Outcomes[ss.outcome]++
		ss.mu.Unlock()
		ss.close()
	}
	s.wg.Wait()
	for _, ss := range s.senders {
		rep.BytesSent += ss.sent.Load()
	}
	return rep
}
