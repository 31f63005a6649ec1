package server

import (
	"crypto/tls"
	"errors"
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
	"github.com/nanomx/nanomx/spool"
)

// Flags set from other goroutines (OnTick, drain) and acted on by the loop.
const (
	flagTimeout  uint32 = 1 << iota // deadline passed: 421 4.4.2
	flagShutdown                    // draining: close once idle
	flagForce                       // drain deadline passed: close now
)

// Body budget is reserved in steps: the first from SIZE= (or this much),
// then doubling as the body grows.
const firstReservation = 64 << 10

// conn is the server side of one connection. Unless a field says
// otherwise, only the connection's event loop touches it.
type conn struct {
	srv  *Server
	lv   *live     // the settings in force when the connection opened
	gc   gnet.Conn // valid for Wake from any goroutine
	sess proto.Session

	remote netip.Addr // client address, IPv4-mapped addresses unmapped
	key    netip.Addr // per-IP limit key
	n      uint64     // connection number, for the session id
	opened time.Time

	// deadline is when the session times out (Unix ns). Written by the
	// loop, read by OnTick.
	deadline atomic.Int64
	// flags carries flagTimeout/flagShutdown/flagForce to the loop.
	flags atomic.Uint32
	// greetAt is when the greeting is due (Unix ns), 0 once it was sent.
	// Written by the loop, read by OnTick.
	greetAt    atomic.Int64
	sessionEnd int64  // opened + SessionTimeout, Unix ns
	lastCmds   uint64 // proto Commands() when the deadline was last set
	inTransfer bool   // the deadline in force is the transaction's

	// body is the message being received; reserved is the budget it holds.
	body     *bytebufferpool.ByteBuffer
	reserved int64

	// While a message is with the spool: waiting is set on the loop;
	// result is stored by the worker's callback, then the loop is woken.
	waiting bool
	pending *spool.Message
	size    int64 // decoded size of the pending message
	started time.Time
	result  atomic.Pointer[deliveryResult]

	messages int
	reason   string // why the connection closed, for the log line

	// TLS (tls.go). detached is set on the loop just before the session
	// moves to its goroutine, which then owns every field; tc is set by
	// that goroutine and read by the drain to interrupt a read.
	detached bool
	wakeCh   chan struct{} // a detached session's wake-up for results
	tc       atomic.Pointer[tls.Conn]
	tlsInfo  string // "TLSv1.3 with cipher ...", once TLS is up
}

type deliveryResult struct{ err error }

// OnOpen admits a connection under the total and per-IP limits and sends
// the greeting.
func (s *Server) OnOpen(gc gnet.Conn) ([]byte, gnet.Action) {
	if s.draining.Load() {
		return proto.ReplyShutdown.Bytes(), gnet.Close
	}
	remote := addrOf(gc.RemoteAddr())
	key := ipKey(remote)
	lv := s.live.Load()
	s.mu.Lock()
	switch {
	case len(s.conns) >= lv.cfg.MaxConnections:
		s.mu.Unlock()
		s.stats.Refused.Add(1)
		return proto.ReplyTooManyConns.Bytes(), gnet.Close
	case s.perIP[key] >= lv.cfg.MaxConnectionsPerIP:
		s.mu.Unlock()
		s.stats.Refused.Add(1)
		return proto.ReplyTooManyConnsPerIP.Bytes(), gnet.Close
	}
	now := time.Now()
	c := &conn{
		srv:        s,
		lv:         lv,
		gc:         gc,
		remote:     remote,
		key:        key,
		opened:     now,
		sessionEnd: now.Add(lv.cfg.SessionTimeout).UnixNano(),
	}
	c.n = s.nextSID.Add(1)
	c.deadline.Store(min(now.Add(lv.cfg.CommandTimeout).UnixNano(), c.sessionEnd))
	s.conns[c] = struct{}{}
	s.perIP[key]++
	s.mu.Unlock()

	lv.dialect.InitSession(&c.sess, c)
	gc.SetContext(c)
	s.stats.Accepted.Add(1)
	if s.debug() {
		c.log().Debug().Msg("connection opened")
	}
	if d := lv.cfg.GreetingDelay; d > 0 {
		c.greetAt.Store(now.Add(d).UnixNano()) // OnTick wakes us then
		return nil, gnet.None
	}
	return lv.dialect.Greeting(), gnet.None
}

// OnClose forgets the connection, frees what it holds and logs one line.
func (s *Server) OnClose(gc gnet.Conn, err error) gnet.Action {
	c, ok := gc.Context().(*conn)
	gc.SetContext(nil)
	if !ok || c.detached {
		return gnet.None // a detached session is its goroutine's now
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
	if s.perIP[c.key]--; s.perIP[c.key] <= 0 {
		delete(s.perIP, c.key)
	}
	s.mu.Unlock()
	ev := c.log().Info().Str("reason", c.reason).Dur("duration", time.Since(c.opened)).Int("messages", c.messages)
	if c.waiting {
		// The spool still owns the message and will finish it; the client
		// went away before its answer (it will retry: a duplicate, not a
		// loss).
		ev = ev.Bool("unanswered_delivery", true)
	}
	ev.Msg("connection closed")
}

// OnTraffic runs the session over the bytes gnet holds for it. It is also
// called with no new bytes after Wake: a delivery result, a deadline or a
// shutdown.
func (s *Server) OnTraffic(gc gnet.Conn) (action gnet.Action) {
	c, ok := gc.Context().(*conn)
	if !ok {
		return gnet.Close
	}
	defer func() {
		if p := recover(); p != nil {
			// A bug must cost one connection, not the server.
			c.log().Error().Interface("panic", p).Bytes("stack", debug.Stack()).Msg("session panic")
			_, _ = gc.Write(proto.ReplyInternal.Bytes())
			c.reason = "internal error"
			action = gnet.Close
		}
	}()

	if c.waiting {
		r := c.result.Swap(nil)
		if r == nil {
			// Still with the spool. Pipelined input waits in gnet's buffer,
			// which cannot be paused (gnet v2): bound it instead.
			if gc.InboundBuffered() > c.lv.cfg.MaxPendingInput || c.flags.Load()&flagForce != 0 {
				_, _ = gc.Write(proto.ReplyPipelineOverflow.Bytes())
				c.reason = "pipelined input overflow"
				return gnet.Close
			}
			return gnet.None
		}
		c.finishDelivery(r.err)
	}

	if at := c.greetAt.Load(); at != 0 {
		// Greeting held back: any input now is an early talker's.
		if gc.InboundBuffered() > 0 {
			_, _ = gc.Write(proto.ReplyEarlyTalker.Bytes())
			c.reason = "early talker"
			s.stats.EarlyTalkers.Add(1)
			return gnet.Close
		}
		if time.Now().UnixNano() < at && c.flags.Load() == 0 {
			return gnet.None
		}
		c.greetAt.Store(0)
		_, _ = gc.Write(c.lv.dialect.Greeting())
	}

	flags := c.applyFlags()

	if !c.sess.Closed() {
		in, _ := gc.Peek(-1)
		n := c.sess.Feed(in)
		if c.sess.StartingTLS() && n < len(in) {
			// CVE-2011-0411: commands pipelined after STARTTLS would run
			// as if they had come over TLS. Drop them, as Postfix does.
			c.log().Warn().Int("bytes", len(in)-n).Msg("STARTTLS: discarding input pipelined after it")
			s.stats.TLSInjections.Add(1)
			n = len(in)
		}
		if n > 0 {
			// Never Discard(0): gnet v2.9.7 takes n <= 0 as "everything",
			// and the start of a command line would be lost.
			_, _ = gc.Discard(n)
		}
		if c.sess.Waiting() {
			c.submit()
		}
	}
	if out := c.sess.Output(); len(out) > 0 {
		if s.debug() {
			c.log().Debug().Bytes("out", out).Msg("reply")
		}
		_, _ = gc.Write(out)
		c.sess.ClearOutput()
	}
	if c.sess.Closed() {
		if c.reason == "" {
			c.reason = "session ended"
		}
		return gnet.Close
	}
	if c.sess.StartingTLS() {
		return c.detach(gc)
	}
	if !c.waiting && flags&flagShutdown != 0 && !c.sess.InTransfer() {
		// The delivery that held the drain back has been answered.
		_, _ = gc.Write(proto.ReplyShutdown.Bytes())
		c.reason = "shutdown"
		return gnet.Close
	}
	c.setDeadline()
	return gnet.None
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

// setDeadline restarts the command deadline when a command completed and
// starts the transaction deadline when data begins. Reads alone never move
// it, so a client trickling bytes is still cut off (RFC 5321 4.5.3.2).
func (c *conn) setDeadline() {
	var d int64
	switch {
	case c.waiting:
		d = math.MaxInt64 // the spool answers; no client timeout meanwhile
		c.inTransfer = false
	case c.sess.InTransfer():
		if c.inTransfer {
			return
		}
		c.inTransfer = true
		d = time.Now().Add(c.lv.cfg.DataTimeout).UnixNano()
	default:
		if cmds := c.sess.Commands(); cmds == c.lastCmds && !c.inTransfer {
			return
		}
		c.inTransfer = false
		d = time.Now().Add(c.lv.cfg.CommandTimeout).UnixNano()
	}
	c.lastCmds = c.sess.Commands()
	c.deadline.Store(min(d, c.sessionEnd))
}

// submit hands the waiting message to the spool.
func (c *conn) submit() {
	env := c.sess.Envelope()
	m := &spool.Message{
		ID:       c.srv.newID(),
		From:     string(env.From),
		Rcpts:    make([]string, len(env.Rcpts)),
		Body:     c.body,
		Helo:     string(env.Helo),
		RemoteIP: c.remote,
		Protocol: protocolName(env, c.tlsInfo != ""),
		TLS:      c.tlsInfo,
		Received: time.Now(),
	}
	for i, r := range env.Rcpts {
		m.Rcpts[i] = string(r)
	}
	reserved := c.reserved
	c.body, c.reserved = nil, 0
	srv := c.srv
	wake := func() { _ = c.gc.Wake(nil) }
	if ch := c.wakeCh; ch != nil {
		wake = func() { ch <- struct{}{} }
	}
	err := srv.spool.Submit(m, func(err error) {
		// On a worker goroutine: publish the result, then let the session's
		// goroutine (the loop, or a TLS session's) act on it.
		srv.release(reserved)
		c.result.Store(&deliveryResult{err})
		wake()
	})
	if err != nil {
		// The spool did not take the message (and returned its body).
		srv.release(reserved)
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
	c.messages++
	c.log().Info().Str("id", m.ID).Str("from", m.From).Strs("rcpts", m.Rcpts).
		Int64("size", c.size).Dur("delivery", time.Since(c.started)).Msg("delivered")
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
	case errors.Is(err, spool.ErrUnknownUser):
		return proto.ReplyUnknownUser
	case errors.Is(err, spool.ErrNotLocal):
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

// CheckMail refuses a declared size the disk cannot hold (RFC 1870 6.1).
func (c *conn) CheckMail(size int64) *proto.Reply {
	if size > 0 {
		if free := c.srv.spool.FreeBytes(); free >= 0 && size > free {
			return proto.ReplyNoSpace
		}
	}
	return nil
}

// CheckRcpt asks the address book; configuration alone decides mailboxes.
func (c *conn) CheckRcpt(addr []byte) *proto.Reply {
	switch err := c.srv.spool.Directory().Check(addr); {
	case err == nil:
		return nil
	case errors.Is(err, spool.ErrNotLocal):
		return proto.ReplyRelayDenied
	default:
		return proto.ReplyUnknownUser
	}
}

// BeginBody reserves body budget and takes a pooled buffer. With no budget
// left the transaction is refused 452 4.3.1 rather than memory grown. The
// budget covers the buffer's capacity, not just its length: a pooled
// buffer may come back large from an earlier message.
func (c *conn) BeginBody(sizeHint int64) *proto.Reply {
	n := max(min(sizeHint, c.lv.cfg.MaxMessageBytes), firstReservation)
	if !c.srv.reserve(n) {
		return proto.ReplyNoStorageMemory
	}
	b := bytebufferpool.Get()
	if extra := int64(cap(b.B)) - n; extra > 0 && !c.srv.reserve(extra) {
		b.B = nil // too big for what is left: let it go, start small
	} else if extra > 0 {
		n += extra
	}
	c.reserved = n
	c.body = b
	return nil
}

// WriteBody appends decoded bytes. It grows the buffer itself, doubling,
// so that every byte of capacity is reserved before it is allocated.
func (c *conn) WriteBody(p []byte) *proto.Reply {
	b := c.body.B
	if need := len(b) + len(p); need > cap(b) {
		newCap := max(need, 2*cap(b), 4096)
		if limit := int(c.lv.cfg.MaxMessageBytes); newCap > limit && need <= limit {
			newCap = limit // the session never stores more than this
		}
		if grow := int64(newCap) - c.reserved; grow > 0 {
			if !c.srv.reserve(grow) {
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

// AbortBody drops the body of an abandoned transaction.
func (c *conn) AbortBody() { c.freeBody() }

func (c *conn) freeBody() {
	if c.body != nil {
		bytebufferpool.Put(c.body)
		c.body = nil
	}
	c.srv.release(c.reserved)
	c.reserved = 0
}

// log returns the connection's logger: the server's, with the session id,
// the client address and, once up, TLS. It is built per call rather than
// kept, because an idle connection should hold as little as possible.
func (c *conn) log() *zerolog.Logger {
	ctx := c.srv.log.With().Str("sid", c.srv.idBase+"s"+itoa36(c.n)).Stringer("remote", c.remote)
	if c.tlsInfo != "" {
		ctx = ctx.Str("tls", c.tlsInfo)
	}
	l := ctx.Logger()
	return &l
}

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
