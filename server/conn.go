package server

import (
	"errors"
	"io"
	"math"
	"net"
	"net/netip"
	"runtime/debug"
	"sync/atomic"
	"time"

	"github.com/panjf2000/gnet/v2"
	"github.com/rs/zerolog"
	"github.com/valyala/bytebufferpool"

	"github.com/nanomx/nanomx/proto"
	"github.com/nanomx/nanomx/server/addrbook"
	"github.com/nanomx/nanomx/server/check"
	"github.com/nanomx/nanomx/spool"
)

// Flags set from other goroutines (OnTick, drain) and acted on by the loop.
const (
	flagTimeout  uint32 = 1 << iota // deadline passed: 421 4.4.2
	flagShutdown                    // draining: close once idle
	flagForce                       // drain deadline passed: close now
)

// maxUnsentOutput bounds the replies a connection may have waiting in
// gnet's outbound buffer. Above it the session reads no further commands
// (its input stays in gnet's inbound buffer, bounded by MaxPendingInput):
// a client that never reads its replies cannot grow the server's memory.
const maxUnsentOutput = 32 << 10

// pooledFit is the largest pooled buffer a body takes before its size is
// known; larger ones are left for bodies that need them.
const pooledFit = 64 << 10

// conn is the server side of one connection. Unless a field says
// otherwise, only the connection's event loop touches it.
type conn struct {
	srv  *Server
	lv   *live     // the settings in force when the connection opened
	gc   gnet.Conn // valid for Wake from any goroutine
	sess proto.Session

	remote netip.Addr // client address, IPv4-mapped addresses unmapped; ipKey(remote) is its per-IP limit key
	n      uint64     // connection number, for the session id
	opened int64      // when the connection opened, Unix ns

	// proxy is the peer a PROXY header came from (proxy.go), when the
	// connection arrived on a proxy_listen address; remote is then the
	// client the header named. proxyWait (below) is set until the header
	// is read.
	proxy *netip.Addr

	// deadline is when the session times out (Unix ns). Written by the
	// loop, read by OnTick.
	deadline atomic.Int64
	// flags carries flagTimeout/flagShutdown/flagForce to the loop.
	flags atomic.Uint32
	// outBlocked is set by the loop while the session holds its input
	// because its replies are not being read; OnTick wakes it to look
	// again.
	outBlocked atomic.Bool
	// greetAt is when the greeting is due (Unix ns), 0 once it was sent.
	// Written by the loop, read by OnTick.
	greetAt    atomic.Int64
	sessionEnd int64  // opened + SessionTimeout, Unix ns
	lastCmds   uint64 // proto Commands() when the deadline was last set

	// ip is the client address's shared state (connections, budget).
	ip *ipState

	// The check stage (checks.go): while a check is pending, checkStage
	// says where and verdict receives its answer (stored by any goroutine,
	// then notify); cs is the rest, made only when checks are configured,
	// so that an idle session without checks pays nothing for them.
	// (checkStage is below.)
	verdict atomic.Pointer[check.Verdict]
	cs      *checkState

	// txn is the current transaction's state (txn.go), taken at MAIL and
	// given back once the session is idle again.
	*txn

	messages int
	reason   string // why the connection closed, for the log line

	// Detached sessions (tls.go): detached is set on the loop just before
	// the session moves to a goroutine (for TLS, or to answer a client
	// that half-closed), which then owns every field. wakeCh is that
	// goroutine's wake-up for delivery results; bc is its connection, read
	// by the drain to interrupt a read. (detached is below.)
	wakeCh  atomic.Pointer[chan struct{}]
	bc      atomic.Pointer[net.Conn]
	tlsInfo string // "TLSv1.3 with cipher ...", once TLS is up
	// lt is the session's TLS connection from STARTTLS on (looptls.go).
	lt *loopTLS

	// The one-octet fields, together so that they pad once (an idle
	// session's conn is what thousands of idle connections cost).
	proxyWait  bool
	inTransfer bool // the deadline in force is the transfer's
	checkStage uint8
	// waiting is set on the loop while a message is with the spool
	// (txn.result receives the outcome).
	waiting  bool
	detached bool
	tlsSlot  bool // holds one of MaxTLSSessions (StartTLS)
}

type deliveryResult struct{ err error }

// OnOpen admits a connection under the total and per-IP limits and sends
// the greeting.
func (s *Server) OnOpen(gc gnet.Conn) ([]byte, gnet.Action) {
	s.opens.Add(1)
	if s.cfg.SchedBatch && schedSupported && s.loopsSeen.Load() < int32(s.cfg.EventLoops) && noteLoop(&s.loopTids) {
		s.loopsSeen.Add(1) // this loop's thread stays SCHED_OTHER
	}
	if s.draining.Load() {
		s.m.refusedConn(refusedShutdown)
		return proto.ReplyShutdown.Bytes(), gnet.Close
	}
	remote := addrOf(gc.RemoteAddr())
	if s.proxyListener(gc.LocalAddr()) {
		return s.openProxied(gc, remote) // proxy.go: the header first
	}
	return s.admit(gc, remote, nil)
}

// admit admits a connection from the client at remote under the total
// and per-IP limits and sends the greeting. proxy is the proxy it came
// through, when a PROXY header named remote (proxy.go).
func (s *Server) admit(gc gnet.Conn, remote netip.Addr, proxy *netip.Addr) ([]byte, gnet.Action) {
	key := ipKey(remote)
	lv := s.live.Load()
	s.mu.Lock()
	ip := s.perIP[key]
	switch {
	case len(s.conns) >= lv.cfg.MaxConnections:
		s.mu.Unlock()
		s.stats.Refused.Add(1)
		s.rejectConn(remote, key, reasonMaxConns, refusedMaxConns)
		return proto.ReplyTooManyConns.Bytes(), gnet.Close
	case ip != nil && ip.conns >= lv.cfg.MaxConnectionsPerIP:
		s.mu.Unlock()
		s.stats.Refused.Add(1)
		s.rejectConn(remote, key, reasonMaxConnsPerIP, refusedMaxConnsPerIP)
		return proto.ReplyTooManyConnsPerIP.Bytes(), gnet.Close
	}
	if ip == nil {
		ip = &ipState{}
		s.perIP[key] = ip
	}
	ip.conns++
	now := time.Now()
	c := &conn{
		srv:        s,
		lv:         lv,
		gc:         gc,
		remote:     remote,
		proxy:      proxy,
		ip:         ip,
		opened:     now.UnixNano(),
		sessionEnd: now.Add(lv.cfg.SessionTimeout).UnixNano(),
	}
	c.n = s.nextSID.Add(1)
	c.deadline.Store(min(now.Add(lv.cfg.CommandTimeout).UnixNano(), c.sessionEnd))
	s.conns[c] = struct{}{}
	s.mu.Unlock()

	// Keep-alive: a dead peer must not hold a slot forever. Inherited
	// from the listener where OnBoot could set it there (keepalive.go).
	if !s.keepAliveSet {
		_ = gc.SetKeepAlivePeriod(keepAlivePeriod)
	}
	lv.dialect.InitSession(&c.sess, c)
	gc.SetContext(c)
	s.stats.Accepted.Add(1)
	if s.debug() {
		c.log().Debug().Msg("connection opened")
	}
	held := c.startConnect()
	if d := lv.cfg.GreetingDelay; d > 0 || held {
		// OnTick wakes us at greetAt; a pending connect check, with its
		// verdict. The greeting waits for both.
		c.greetAt.Store(now.Add(d).UnixNano())
		return nil, gnet.None
	}
	if c.sess.Closed() { // refused at connect
		return c.sess.Output(), gnet.Close
	}
	s.m.countReplies(lv.dialect.Greeting())
	return lv.dialect.Greeting(), gnet.None
}

// OnClose forgets the connection, frees what it holds and logs one line.
// A client that half-closed (shutdown(SHUT_WR), as Exim does after a
// pipelined QUIT) while its message is with the spool or a check still gets every
// reply it is owed: the session moves to a goroutine that answers on a
// duplicate of the socket (RFC 5321 4.1.1.10: 221, then close).
func (s *Server) OnClose(gc gnet.Conn, err error) gnet.Action {
	c, ok := gc.Context().(*conn)
	gc.SetContext(nil)
	if !ok || c.detached {
		return gnet.None // a detached session is its goroutine's now
	}
	if c.lt != nil && c.lt.mode == tlsHandshake {
		c.lt.abort() // its goroutine's reads end
		if c.reason == "" {
			// The client went away during the handshake (or just after
			// it, before the loop took the session up: not a failure).
			c.reason = "TLS handshake: client closed"
			if !c.lt.done.Load() || c.lt.hsErr != nil {
				s.stats.TLSFailed.Add(1)
			}
		}
	}
	owed := c.waiting || c.sess.Pending() // a delivery or a check will answer
	if owed && errors.Is(err, io.EOF) && gc.OutboundBuffered() == 0 {
		if (c.lt == nil || c.lt.mode == tlsLoop) && c.detachHalfClosed(gc) {
			return gnet.None
		}
	}
	c.releaseTLS()
	if c.lt != nil {
		c.lt.buf.free()
	}
	c.freeBody()
	if c.reason == "" {
		c.reason = "client closed"
		if err != nil && !errors.Is(err, net.ErrClosed) {
			c.reason = err.Error()
		}
	}
	s.forget(c)
	return gnet.None
}

// forget releases the connection's slots and logs its one line.
func (s *Server) forget(c *conn) {
	s.mu.Lock()
	delete(s.conns, c)
	if c.ip.conns--; c.ip.conns <= 0 {
		// (A conn waiting for its PROXY header has an ipState of its own.)
		if k := ipKey(c.remote); s.perIP[k] == c.ip {
			delete(s.perIP, k)
		}
	}
	s.mu.Unlock()
	if !c.waiting { // else the spool's callback has the txn still
		c.putTxn()
	}
	ev := c.event(zerolog.InfoLevel).Str("reason", c.reason).Int64("duration_ms", time.Since(time.Unix(0, c.opened)).Milliseconds()).Int("messages", c.messages)
	if c.waiting {
		// The spool still owns the message and will finish it; the client
		// went away before its answer (it will retry: a duplicate, not a
		// loss).
		ev = ev.Bool("unanswered_delivery", true)
	}
	ev.Msg("connection closed")
}

// OnTraffic runs the session over the bytes gnet holds for it. It is also
// called with no new bytes after Wake: a delivery result, a deadline, a
// shutdown, or replies that may have drained.
func (s *Server) OnTraffic(gc gnet.Conn) (action gnet.Action) {
	c, ok := gc.Context().(*conn)
	if !ok {
		return gnet.Close
	}
	if c.proxyWait {
		// No session yet: the PROXY header comes first (proxy.go). Once it
		// is read, the session it began serves the bytes after it.
		if c, action = c.readProxyHeader(gc); c == nil {
			return action
		}
	}
	defer func() {
		if p := recover(); p != nil {
			// A bug must cost one connection, not the server.
			c.log().Error().Interface("panic", p).Bytes("stack", debug.Stack()).Msg("session panic")
			c.reason = "internal error"
			action = c.lastWrite(gc, proto.ReplyInternal.Bytes())
		}
	}()

	if c.lt != nil {
		if c.lt.mode == tlsHandshake {
			return c.handshakeTraffic(gc)
		}
		return c.tlsTraffic(gc)
	}

	if c.checkStage == stageConnect && !c.resumeCheck() {
		// The connect check is pending: the greeting waits; so does
		// input, unless greeting_delay makes it an early talker's.
		if c.lv.cfg.GreetingDelay == 0 || gc.InboundBuffered() == 0 {
			return c.holdInput(gc)
		}
	}

	if at := c.greetAt.Load(); at != 0 {
		if c.sess.Closed() { // refused at connect: the refusal, not the greeting
			c.greetAt.Store(0)
			c.flush(gc)
			return gnet.Close
		}
		// Greeting held back by greeting_delay: any input now is an early
		// talker's. (Held only for a connect check, input just waits.)
		if gc.InboundBuffered() > 0 && c.lv.cfg.GreetingDelay > 0 {
			_, _ = gc.Write(proto.ReplyEarlyTalker.Bytes())
			c.reason = "early talker"
			s.stats.EarlyTalkers.Add(1)
			s.m.refusedConn(refusedEarlyTalker)
			c.rejected(stageConnect, proto.ReplyEarlyTalker, nil)
			return gnet.Close
		}
		if (time.Now().UnixNano() < at || c.checkStage == stageConnect) && c.flags.Load() == 0 {
			return gnet.None
		}
		c.greetAt.Store(0)
		_, _ = gc.Write(c.lv.dialect.Greeting())
		s.m.countReplies(c.lv.dialect.Greeting())
	}

	in, _ := gc.Peek(-1)
	n, nx := c.step(in, func(out []byte) error { _, _ = gc.Write(out); return nil },
		func() bool { return gc.OutboundBuffered() > maxUnsentOutput })
	if n > 0 {
		// Never Discard(0): gnet v2.9.7 takes n <= 0 as "everything", and
		// the start of a command line would be lost.
		_, _ = gc.Discard(n)
	}
	switch nx {
	case nextWait:
		return c.holdInput(gc)
	case nextBlocked:
		if gc.InboundBuffered() > c.lv.cfg.MaxPendingInput {
			_, _ = gc.Write(proto.ReplyPipelineOverflow.Bytes())
			c.reason = "replies not read"
			s.stats.NotReading.Add(1)
			return gnet.Close
		}
		c.outBlocked.Store(true) // OnTick wakes us to look again
		return gnet.None
	case nextClose:
		return gnet.Close
	case nextTLS:
		return c.startTLS(gc) // looptls.go
	}
	c.outBlocked.Store(false)
	return gnet.None
}

// holdInput is the loop's answer while the session waits on the spool or
// a check: pipelined input stays in gnet's buffer, which cannot be paused
// (gnet v2), so it is bounded instead; a forced drain ends the wait.
func (c *conn) holdInput(gc gnet.Conn) gnet.Action {
	switch {
	case c.flags.Load()&flagForce != 0:
		c.reason = "shutdown"
		return c.lastWrite(gc, proto.ReplyShutdown.Bytes())
	case gc.InboundBuffered() > c.lv.cfg.MaxPendingInput:
		c.reason = "pipelined input overflow"
		return c.lastWrite(gc, proto.ReplyPipelineOverflow.Bytes())
	}
	return gnet.None
}

// flush writes the session's replies to gnet, which sends what the socket
// takes and keeps the rest.
func (c *conn) flush(gc gnet.Conn) {
	if out := c.sess.Output(); len(out) > 0 {
		if c.srv.debug() {
			c.log().Debug().Bytes("out", out).Msg("reply")
		}
		_, _ = gc.Write(out)
		c.srv.m.countReplies(out)
		c.sess.ClearOutput()
	}
}

// applyFlags ends the session if another goroutine asked for it: a
// deadline, or the drain (at once when forced, else once it is idle). It
// returns the flags it saw.
func (c *conn) applyFlags() uint32 {
	flags := c.flags.Load()
	switch {
	case flags&flagForce != 0:
		c.sess.Abort(proto.ReplyShutdown)
		c.reason = "shutdown"
	case flags&flagTimeout != 0:
		c.sess.Abort(proto.ReplyTimeout)
		c.reason = "timeout"
		c.srv.stats.TimedOut.Add(1)
	case flags&flagShutdown != 0 && !c.sess.InTransfer():
		c.sess.Abort(proto.ReplyShutdown)
		c.reason = "shutdown"
	}
	return flags
}

// progress records n bytes of message data arriving.
func (c *conn) progress(n int) {
	c.tx()
	now := time.Now().UnixNano()
	if !c.inTransfer {
		c.inTransfer = true
		c.xferStart, c.xferBytes = now, 0
	}
	c.xferLast = now
	c.xferBytes += int64(n)
}

// setDeadline restarts the command deadline when a command completed, and
// during a transfer sets the data deadline: DataTimeout after the last
// bytes arrived (RFC 5321 4.5.3.2.5), and no later than the average rate
// falling below MinDataRate once the transfer has run for DataTimeout.
// Reads alone never move the command deadline, and a byte-a-second
// trickler is cut by the rate; a transfer that keeps the rate may outlast
// SessionTimeout.
func (c *conn) setDeadline() {
	cfg := &c.lv.cfg
	var d int64
	switch {
	case c.waiting || c.sess.Pending():
		// The spool or a check answers, each bounded: no client timeout
		// meanwhile.
		d = math.MaxInt64
		c.inTransfer = false
	case c.sess.InTransfer():
		if !c.inTransfer {
			c.progress(0)
		}
		d = c.xferLast + int64(cfg.DataTimeout)
		if rate := cfg.MinDataRate; rate > 0 {
			byRate := c.xferStart + int64(cfg.DataTimeout) + c.xferBytes*int64(time.Second)/rate
			d = min(d, byRate)
		}
		c.lastCmds = c.sess.Commands()
		c.deadline.Store(d)
		return
	default:
		if cmds := c.sess.Commands(); cmds == c.lastCmds && !c.inTransfer {
			return
		}
		c.inTransfer = false
		d = time.Now().Add(cfg.CommandTimeout).UnixNano()
	}
	c.lastCmds = c.sess.Commands()
	c.deadline.Store(min(d, c.sessionEnd))
}

// outgoing is a message on its way to the spool, with the envelope its
// log line shows.
type outgoing struct {
	*spool.Message
	from  string   // canonical reverse-path, "" for <>
	rcpts []string // canonical forward-paths
}

// message builds the spool message of the current transaction, without
// its body: the mailboxes resolved at RCPT and the trace fields.
func (c *conn) message(env proto.Envelope) *outgoing {
	m := &outgoing{from: string(env.From), rcpts: make([]string, len(env.Rcpts))}
	id := c.srv.newID()
	if c.cs != nil && c.cs.info.QueueID != "" {
		id = c.cs.info.QueueID // the id the checks were given
	}
	t := trace{
		ID:       id,
		From:     address(m.from),
		Rcpts:    make([]proto.Address, len(env.Rcpts)),
		Helo:     string(env.Helo),
		Name:     c.clientName(),
		RemoteIP: c.remote,
		Protocol: protocolName(env, c.tlsInfo != ""),
		TLS:      c.tlsInfo,
		Received: time.Now(),
	}
	for i, r := range env.Rcpts {
		m.rcpts[i] = string(r)
		t.Rcpts[i] = address(m.rcpts[i])
	}
	m.Message = &spool.Message{ID: t.ID, Mailboxes: c.rcpts.Mailboxes(), Trace: traceFields(&t, c.lv.host)}
	if c.srv.dropField != nil {
		m.DropField = c.srv.dropField // forged Authentication-Results, X-Spam-* go
	}
	return m
}

// address is the Address of s, an address in proto's canonical form; its
// fields share s's bytes. That form always parses (proto.FuzzAddress); if
// it did not, the whole of s would stand as the local part, which the
// trace fields show sanitized.
func address(s string) proto.Address {
	a, err := proto.ParseAddress(s)
	if err != nil {
		return proto.Address{Local: s}
	}
	return a
}

// submit hands the waiting message to the spool: the body in memory, or
// for a spilled one the last bytes after those on disk.
func (c *conn) submit() {
	env := c.sess.Envelope()
	m := c.spillMsg
	if m == nil {
		m = c.message(env)
	}
	if c.cs != nil && c.cs.folder != "" {
		m.Folder = c.cs.folder // a check chose a folder (a Junk folder)
		c.cs.folder = ""
	}
	if c.cs != nil && len(c.cs.headers) > 0 {
		m.Headers = c.cs.headers // the checks' fields, after the trace
		c.cs.headers = nil
	}
	if c.cs != nil && len(c.cs.cut) > 0 {
		m.Cut = c.cs.cut // header fields the checks removed
		c.cs.cut = nil
	}
	m.Body, m.Spill = c.body, c.spill
	c.spill, c.spillMsg = nil, nil
	reserved := c.reserved
	c.body, c.reserved = nil, 0
	srv, ip, t := c.srv, c.ip, c.txn
	err := srv.deliver.Submit(m, func(err error) {
		// On a worker goroutine: publish the result, then let the session's
		// goroutine (the loop, or a detached session's) act on it.
		srv.release(ip, reserved)
		t.result.Store(&deliveryResult{err})
		c.notify()
	})
	if err != nil {
		// The spool did not take the message (and returned its body).
		srv.release(ip, reserved)
		srv.stats.Failed.Add(1)
		c.log().Warn().Err(err).Str("id", m.ID).Msg("message not queued")
		c.sess.Failed(replyFor(err))
		return
	}
	c.waiting = true
	c.pending = m
	c.size = env.Size
	c.started = time.Now()
}

// notify wakes whichever goroutine runs the session: its detached
// goroutine once it has one, else the event loop. The result is stored
// before notify and the channel before the goroutine looks at the result,
// so one of the two always sees the other (sequentially consistent
// atomics).
func (c *conn) notify() {
	if ch := c.wakeCh.Load(); ch != nil {
		select {
		case *ch <- struct{}{}:
		default: // a wake-up is pending already
		}
		return
	}
	_ = c.gc.Wake(nil)
}

// finishDelivery answers the message the spool has finished with.
func (c *conn) finishDelivery(err error) {
	m := c.pending
	c.waiting, c.pending = false, nil
	if err != nil {
		c.srv.stats.Failed.Add(1)
		c.log().Warn().Err(err).Str("id", m.ID).Msg("delivery failed")
		c.sess.Failed(replyFor(err))
		return
	}
	c.srv.stats.Delivered.Add(1)
	now := time.Now()
	end := c.started
	if !c.dataEnd.IsZero() {
		end, c.dataEnd = c.dataEnd, time.Time{}
	}
	c.srv.m.delivered(c.size, now.Sub(end))
	c.messages++
	c.event(zerolog.InfoLevel).Str("id", m.ID).Str("from", m.from).Strs("rcpts", m.rcpts).
		Int64("size", c.size).Int64("delivery_ms", now.Sub(c.started).Milliseconds()).Msg("delivered")
	c.sess.Delivered(m.ID)
}

// replyFor turns a spool outcome into the reply the client gets. Anything
// unknown is temporary: a failure is never turned into a 5xx by accident.
func replyFor(err error) *proto.Reply {
	var r *proto.Reply
	switch {
	case errors.As(err, &r):
		return r
	case errors.Is(err, spool.ErrQueueFull), errors.Is(err, spool.ErrClosed):
		return proto.ReplyQueueFull
	case errors.Is(err, spool.ErrNoSpace):
		return proto.ReplyNoSpace
	case errors.Is(err, spool.ErrMailLoop):
		return proto.ReplyMailLoop
	case errors.Is(err, spool.ErrHeaderTooLong):
		return ReplyHeaderTooLong
	case errors.Is(err, addrbook.ErrUnknownUser):
		return proto.ReplyUnknownUser
	case errors.Is(err, addrbook.ErrNotLocal):
		return proto.ReplyRelayDenied
	}
	return proto.ReplyLocalError
}

// protocolName is the Received header's "with" keyword (RFC 3848, RFC
// 6531 3.7.3).
func protocolName(env proto.Envelope, tls bool) string {
	name := "SMTP"
	switch {
	case env.SMTPUTF8:
		name = "UTF8SMTP"
	case env.ESMTP:
		name = "ESMTP"
	}
	if tls {
		name += "S" // ESMTPS, UTF8SMTPS (RFC 3848, RFC 6531)
	}
	return name
}

// CheckMail refuses a declared size the disk cannot hold (RFC 1870 6.1)
// and takes the address book the transaction's recipients are resolved
// against.
func (c *conn) CheckMail(from []byte, p proto.MailParams) *proto.Reply {
	c.tx()
	c.rcpts.Reset()
	if size := p.Size; size > 0 {
		if free := c.srv.spool.FreeBytes(); free >= 0 && size > free {
			c.rejected(stageMail, proto.ReplyNoSpace, from)
			return proto.ReplyNoSpace
		}
	}
	c.book = c.srv.live.Load().book
	if len(c.checkers()) == 0 {
		return nil
	}
	c.cs.info.resetTx()
	c.cs.info.IP, c.cs.info.TLS = c.remote, c.tlsInfo
	c.cs.info.From = address(string(from))
	return c.await(stageMail, c.run(func(ch Checker) *check.Result { return ch.Mail(&c.cs.info, c.cs.info.From, p) }))
}

// CheckRcpt resolves a recipient with the transaction's address book
// (configuration alone decides mailboxes) and keeps the mailboxes it
// reaches for the spool.
func (c *conn) CheckRcpt(addr []byte) *proto.Reply {
	c.tx() // taken at MAIL; RCPT comes after it
	if c.book == nil {
		c.book = c.srv.live.Load().book
	}
	// The address book is the check stage's first check: its answer is a
	// completed result, combined with the other checks' when there are
	// any; the mailboxes join the transaction with the verdict (take).
	targets, err := c.srv.lookup(c.book, addr)
	r := bookVerdict(err)
	if err != nil || len(c.checkers()) == 0 {
		// The book's verdict is the whole verdict, complete now.
		v, _ := r.Verdict()
		if v.Reply == nil {
			c.rcpts.Add(targets)
		} else {
			c.rejected(stageRcpt, v.Reply, addr)
		}
		return v.Reply
	}
	c.cs.rcptTargets = targets
	c.cs.rcptAddr = address(string(addr))
	return c.await(stageRcpt, check.All(r, c.run(func(ch Checker) *check.Result { return ch.Rcpt(&c.cs.info, c.cs.rcptAddr) })))
}

// The address book's verdicts, shared: a completed result never changes.
var (
	bookAccept  = check.Accept()
	bookRelay   = check.Now(check.Verdict{Reply: proto.ReplyRelayDenied})
	bookUnknown = check.Now(check.Verdict{Reply: proto.ReplyUnknownUser})
)

// bookVerdict turns an address book lookup into the check stage's result.
func bookVerdict(err error) *check.Result {
	switch {
	case err == nil:
		return bookAccept
	case errors.Is(err, addrbook.ErrNotLocal):
		return bookRelay
	default:
		return bookUnknown
	}
}

// CheckHelo asks the checks about a HELO/EHLO name (with none configured
// every name is taken: it is only ever written, sanitised, into the
// Received header).
func (c *conn) CheckHelo(name []byte, esmtp bool) *proto.Reply {
	if len(c.checkers()) == 0 {
		return nil
	}
	c.cs.info.resetTx()
	c.cs.info.Helo = string(name)
	return c.await(stageHelo, c.run(func(ch Checker) *check.Result { return ch.Helo(&c.cs.info, c.cs.info.Helo) }))
}

// CheckData asks the checks about a complete message, together with the
// results its earlier stages left for it (Info.Later).
func (c *conn) CheckData() *proto.Reply {
	if len(c.checkers()) == 0 {
		return nil
	}
	c.tx() // taken at MAIL; data comes after it
	c.dataEnd = time.Now()
	c.cs.headers, c.cs.cut = nil, nil
	var body []byte
	if c.spill == nil && c.body != nil {
		body = c.body.B
	}
	c.cs.info.spill, c.cs.info.tail = c.spill, nil
	if c.spill != nil && c.body != nil {
		c.cs.info.tail = c.body.B
	}
	if c.spillMsg != nil {
		c.cs.info.QueueID = c.spillMsg.ID
	} else {
		c.cs.info.QueueID = c.srv.newID()
	}
	r := c.run(func(ch Checker) *check.Result { return ch.Data(&c.cs.info, body) })
	if len(c.cs.info.later) > 0 {
		r = check.All(append(c.cs.info.later, r)...)
	}
	return c.await(stageData, r)
}

// BeginBody starts a body. Nothing is reserved yet: the budget is charged
// as bytes arrive (WriteBody), so a declared SIZE= or a BDAT length that
// never comes costs nothing. It refuses (452 4.3.1) only when the client
// address has already spent its share of the budget.
func (c *conn) BeginBody(sizeHint int64) *proto.Reply {
	c.tx() // taken at MAIL; data comes after it
	c.hint = sizeHint
	if c.ip.budget.Load() >= c.lv.cfg.BodyBudgetPerIP || c.srv.budget.Load() <= 0 {
		c.rejected(stageData, proto.ReplyNoStorageMemory, nil)
		return proto.ReplyNoStorageMemory
	}
	return nil
}

// WriteBody appends decoded bytes. It grows the buffer itself, doubling,
// so that every byte of capacity is reserved before it is allocated and
// the reservation never exceeds twice what arrived. The first bytes take
// a pooled buffer; its capacity is charged too.
func (c *conn) WriteBody(p []byte) *proto.Reply {
	c.tx()
	threshold := c.lv.cfg.SpillThreshold
	if c.body != nil && int64(len(c.body.B)+len(p)) > threshold && !c.holdSpill(int64(len(c.body.B)+len(p))) {
		c.spillBody() // (iprevwait.go: the first spill may wait for the client's name)
	}
	if c.body == nil {
		b := bytebufferpool.Get()
		if extra := int64(cap(b.B)); extra > 0 {
			// A pooled buffer is taken if it is not much larger than this
			// body is likely to need (the hint is bounded by the spill
			// threshold, beyond which the body goes to disk).
			fit := max(pooledFit, 2*min(c.hint, c.lv.cfg.SpillThreshold))
			if extra > fit || !c.srv.reserve(c.ip, extra, c.lv.cfg.BodyBudgetPerIP) {
				b.B = nil // more than this body needs yet: start small
			} else {
				c.reserved += extra
			}
		}
		c.body = b
	}
	b := c.body.B
	if need := len(b) + len(p); need > cap(b) {
		newCap := max(need, 2*cap(b), 4096)
		// The session never holds more than this in memory: past the
		// spill threshold the body goes to disk.
		if limit := int(min(c.lv.cfg.MaxMessageBytes, threshold)); newCap > limit && need <= limit {
			newCap = limit
		}
		if grow := int64(newCap) - c.reserved; grow > 0 {
			if !c.srv.reserve(c.ip, grow, c.lv.cfg.BodyBudgetPerIP) {
				c.rejected(stageData, proto.ReplyNoStorageMemory, nil)
				return proto.ReplyNoStorageMemory
			}
			c.reserved += grow
		}
		nb := make([]byte, len(b), newCap)
		copy(nb, b)
		b = nb
	}
	c.body.B = append(b, p...)
	return nil
}

// spillBody hands the body held so far to the spool, which appends it to
// the message's tmp/ file on a worker (the first chunk carries the header
// section, so the trace fields and the loop check see it). The chunk's
// budget is released once it is on disk; until then it counts, so a disk
// slower than the senders ends in 452 4.3.1, not in unbounded memory.
func (c *conn) spillBody() {
	if c.spill == nil {
		c.spillMsg = c.message(c.sess.Envelope())
		c.spill = c.srv.deliver.NewSpill(c.spillMsg.Message)
	}
	b, n := c.body, c.reserved
	c.body, c.reserved = nil, 0
	srv, ip := c.srv, c.ip
	c.spill.Write(b, func() { srv.release(ip, n) })
}

// AbortBody drops the body of an abandoned transaction.
func (c *conn) AbortBody() { c.freeBody() }

func (c *conn) freeBody() {
	if c.txn == nil {
		return // no transaction, no body
	}
	if c.spill != nil {
		c.spill.Abort() // the tmp/ file is removed on a worker
		c.spill, c.spillMsg = nil, nil
	}
	if c.body != nil {
		// A data check still pending (the session ended before its
		// verdict) may still read the body: it is left to the collector
		// then, never handed to another session through the pool.
		if c.checkStage != stageData {
			bytebufferpool.Put(c.body)
		}
		c.body = nil
	}
	c.srv.release(c.ip, c.reserved)
	c.reserved = 0
}

// log returns the connection's logger: the server's, with the session id,
// the client address and, once up, TLS. It is built per call rather than
// kept, because an idle connection should hold as little as possible.
func (c *conn) log() *zerolog.Logger {
	ctx := c.srv.log.With().Str("sid", c.sid()).Stringer("remote", c.remote)
	if c.proxy != nil {
		ctx = ctx.Stringer("proxy", c.proxy)
	}
	if c.tlsInfo != "" {
		ctx = ctx.Str("tls", c.tlsInfo)
	}
	l := ctx.Logger()
	return &l
}

// sid is the session id in log lines.
func (c *conn) sid() string { return c.srv.idBase + "s" + itoa36(c.n) }

// addrOf extracts the client IP, unmapping IPv4-mapped IPv6 addresses.
func addrOf(a net.Addr) netip.Addr {
	if ta, ok := a.(*net.TCPAddr); ok {
		if ip, ok := netip.AddrFromSlice(ta.IP); ok {
			return ip.Unmap()
		}
	}
	return netip.IPv4Unspecified()
}

func itoa36(n uint64) string {
	const digits = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
	var b [13]byte
	i := len(b)
	for {
		i--
		b[i] = digits[n%36]
		n /= 36
		if n == 0 {
			return string(b[i:])
		}
	}
}
