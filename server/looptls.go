package server

// A TLS session on the event loop. After STARTTLS the socket stays with
// gnet, and Go's crypto/tls runs over a net.Conn of our own (loopTLS) in
// three modes:
//
//   - tlsHandshake: the handshake runs on a goroutine of its own (a
//     handshake reads until it has what it needs, and an error during it
//     is final for the tls.Conn). Its reads take what OnTraffic moved out
//     of gnet's inbound buffer, its writes wait in hsOut until OnTraffic
//     (woken by Wake) writes them; the loop never waits for it. The
//     session's deadline is the handshake timeout meanwhile, and a
//     deadline, the drain or the client's going away closes the
//     connection, which ends the goroutine's reads.
//   - tlsLoop: once the handshake is done the loop drives the session, as
//     it does a plaintext one: a read takes bytes from gnet's inbound
//     buffer and, when there are none, fails at once with errWouldBlock,
//     which crypto/tls does not treat as final (a temporary net.Error:
//     it keeps the part of a record it has, and the next read goes on);
//     writes go to gnet's Write. No goroutine waits for an idle session.
//   - tlsDetached: a half-closed session whose message is still with the
//     spool moves to a goroutine (detachHalfClosed), which answers over
//     the blocking socket.
//
// It replaces a transport that took the socket off gnet at STARTTLS and
// ran the session on a goroutine, reading and writing through Go's poller
// with a deadline per call (and parking an idle session in an epoll of
// its own): each round trip parked and woke that goroutine, where the loop
// serves many sockets per epoll_wait. The README's STARTTLS section has
// the figures.

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/panjf2000/gnet/v2"

	"github.com/nanomx/nanomx/proto"
)

type tlsMode uint8

const (
	tlsHandshake tlsMode = iota
	tlsLoop
	tlsDetached
)

// maxHandshakeInput bounds the input a handshake holds that its goroutine
// has not read: a ClientHello and a client's certificate chain fit.
const maxHandshakeInput = 128 << 10

// errWouldBlock is a loop-mode read finding no input.
var errWouldBlock = wouldBlock{}

type wouldBlock struct{}

func (wouldBlock) Error() string   { return "no input yet" }
func (wouldBlock) Timeout() bool   { return true }
func (wouldBlock) Temporary() bool { return true }

// loopTLS is a TLS session's connection under crypto/tls. The loop owns
// it, except for the fields the handshake's goroutine shares under mu
// until done is set, and except once detached.
type loopTLS struct {
	tc   *tls.Conn
	gc   gnet.Conn
	mode tlsMode

	// The handshake (tlsHandshake): hsIn is input for the goroutine,
	// hsOut its output for the loop, under mu; wake tells the goroutine
	// that hsIn grew or closed is set. hsErr is the handshake's outcome,
	// written before done.
	mu       sync.Mutex
	hsIn     []byte
	hsOut    []byte
	hsClosed bool
	wake     chan struct{}
	done     atomic.Bool
	hsErr    error

	// pending is input read from gnet before the mode changed (what the
	// handshake's goroutine left unread), which reads take first.
	pending []byte
	// buf is the plaintext read and not yet consumed by the session.
	buf readBuf
	// hold keeps writes in held until flushHeld: the last replies go in
	// one segment with the close_notify alert.
	hold bool
	held []byte
	// fc is the blocking socket of a detached session.
	fc *fdConn
}

// startTLS answers STARTTLS and starts the handshake. It runs on the
// loop, after the replies before STARTTLS were written.
func (c *conn) startTLS(gc gnet.Conn) gnet.Action {
	_, _ = gc.Write(proto.ReplyReadyTLS.Bytes())
	c.srv.m.countReplies(proto.ReplyReadyTLS.Bytes())
	c.outBlocked.Store(false)
	l := &loopTLS{gc: gc, wake: make(chan struct{}, 1)}
	l.tc = tls.Server(l, c.lv.tls)
	c.lt = l
	c.deadline.Store(min(time.Now().Add(c.lv.cfg.TLSHandshakeTimeout).UnixNano(), c.sessionEnd))
	go l.handshake()
	return gnet.None
}

// handshake is the handshake's goroutine. Whatever the outcome it leaves
// it for the loop, which it wakes, and touches nothing after.
func (l *loopTLS) handshake() {
	defer func() {
		if p := recover(); p != nil {
			l.hsErr = fmt.Errorf("panic: %v", p)
		}
		l.done.Store(true)
		if !l.aborted() { // else the connection is gone, maybe the engine too
			_ = l.gc.Wake(nil)
		}
	}()
	l.hsErr = l.tc.Handshake()
}

// abort ends a handshake under way: its reads find the end of input.
func (l *loopTLS) abort() {
	l.mu.Lock()
	l.hsClosed = true
	l.mu.Unlock()
	l.signal()
}

func (l *loopTLS) aborted() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.hsClosed
}

func (l *loopTLS) signal() {
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

// handshakeTraffic is OnTraffic during the handshake: the goroutine's
// output goes out, input goes to it, and once it is done the session goes
// on on the loop.
func (c *conn) handshakeTraffic(gc gnet.Conn) gnet.Action {
	l := c.lt
	done := l.done.Load() // before taking hsOut: then nothing follows it
	in, _ := gc.Peek(-1)
	out, over := l.exchange(in, !done)
	if len(out) > 0 {
		_, _ = gc.Write(out)
	}
	switch {
	case done:
		return c.tlsUp(gc)
	case over:
		c.reason = "TLS handshake: too much input"
		c.srv.stats.TLSFailed.Add(1)
		return gnet.Close
	case c.flags.Load()&flagTimeout != 0:
		c.reason = "TLS handshake: timeout"
		c.srv.stats.TLSFailed.Add(1)
		return gnet.Close
	case c.flags.Load() != 0:
		c.reason = "shutdown" // the drain: a handshake is not worth waiting for
		return gnet.Close
	}
	if len(in) > 0 {
		_, _ = gc.Discard(len(in))
		l.signal()
	}
	return gnet.None
}

// exchange takes the handshake's output and, with give, gives it in
// unless that would pass maxHandshakeInput (over). The lock is released
// by defer: a panic here must not leave it held for OnClose's abort.
func (l *loopTLS) exchange(in []byte, give bool) (out []byte, over bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	out, l.hsOut = l.hsOut, nil
	over = len(l.hsIn)+len(in) > maxHandshakeInput
	if give && !over && len(in) > 0 {
		l.hsIn = append(l.hsIn, in...)
	}
	return out, over
}

// tlsUp ends the handshake: the session goes on over TLS on the loop, or
// ends if the handshake failed.
func (c *conn) tlsUp(gc gnet.Conn) gnet.Action {
	l := c.lt
	s := c.srv
	if l.hsErr != nil {
		s.stats.TLSFailed.Add(1)
		c.reason = "TLS handshake: " + l.hsErr.Error()
		return gnet.Close
	}
	l.mode = tlsLoop
	if len(l.hsIn) > 0 {
		l.pending = l.hsIn
	}
	l.hsIn, l.wake = nil, nil
	l.buf.init(nil)
	st := l.tc.ConnectionState()
	c.tlsInfo = tlsInfo(st.Version, st.CipherSuite)
	s.stats.TLSSessions.Add(1)
	s.m.tlsSession(st.Version)
	c.sess.TLSStarted()
	c.deadline.Store(min(time.Now().Add(c.lv.cfg.CommandTimeout).UnixNano(), c.sessionEnd))
	c.lastCmds = c.sess.Commands()
	return c.tlsTraffic(gc)
}

// tlsTraffic is OnTraffic for a session over TLS: the plaintext
// transport's, with records decrypted into buf as the session asks for
// input.
func (c *conn) tlsTraffic(gc gnet.Conn) gnet.Action {
	l := c.lt
	blocked := func() bool { return gc.OutboundBuffered() > maxUnsentOutput }
	// One record per batch of replies; the last ones wait for the
	// close_notify alert.
	write := func(out []byte) error {
		if c.sess.Closed() {
			l.hold = true
		}
		_, err := l.tc.Write(out)
		return err
	}
	for {
		n, nx := c.step(l.buf.b, write, blocked)
		l.buf.consume(n)
		switch nx {
		case nextWait:
			l.buf.release()
			return c.holdInput(gc)
		case nextBlocked:
			if gc.InboundBuffered()+len(l.buf.b) > c.lv.cfg.MaxPendingInput {
				c.reason = "replies not read"
				c.srv.stats.NotReading.Add(1)
				return c.lastWrite(gc, proto.ReplyPipelineOverflow.Bytes())
			}
			c.outBlocked.Store(true) // OnTick wakes us to look again
			return gnet.None
		case nextClose, nextTLS: // no STARTTLS is offered over TLS
			return l.closeNotify(gc)
		}
		c.outBlocked.Store(false)
		if !c.sess.InTransfer() {
			l.buf.release() // between commands: nothing big is coming yet
		}
		space := l.buf.space()
		m, err := l.tc.Read(space)
		l.buf.read(m, space)
		if m > 0 || err == nil {
			continue
		}
		if err == errWouldBlock {
			return gnet.None
		}
		switch {
		case errors.Is(err, io.EOF):
			c.reason = "client closed"
		default:
			c.reason = "TLS: " + err.Error()
		}
		return gnet.Close
	}
}

// closeNotify ends a TLS session on the loop: the replies written last
// and the close_notify alert (RFC 8446 6.1) leave in one write, then gnet
// closes.
func (l *loopTLS) closeNotify(gc gnet.Conn) gnet.Action {
	l.hold = true
	_ = l.tc.CloseWrite()
	l.flushHeld(gc)
	return gnet.Close
}

func (l *loopTLS) flushHeld(gc gnet.Conn) {
	if len(l.held) > 0 {
		_, _ = gc.Write(l.held)
	}
	l.held, l.hold = nil, false
}

// lastWrite writes a last reply before the connection closes: over TLS
// with the close_notify alert, else as it is.
func (c *conn) lastWrite(gc gnet.Conn, b []byte) gnet.Action {
	if l := c.lt; l != nil && l.mode == tlsLoop {
		l.hold = true
		_, _ = l.tc.Write(b)
		return l.closeNotify(gc)
	}
	if c.lt == nil {
		_, _ = gc.Write(b)
	}
	return gnet.Close
}

// Read is crypto/tls's read of the socket.
func (l *loopTLS) Read(p []byte) (int, error) {
	if l.mode == tlsHandshake {
		return l.hsRead(p)
	}
	if len(l.pending) > 0 {
		n := copy(p, l.pending)
		if l.pending = l.pending[n:]; len(l.pending) == 0 {
			l.pending = nil
		}
		return n, nil
	}
	if l.mode == tlsDetached {
		return l.fc.Read(p)
	}
	if l.gc.InboundBuffered() == 0 {
		return 0, errWouldBlock
	}
	return l.gc.Read(p)
}

// hsRead is the handshake goroutine's read: it waits for OnTraffic to
// bring input, or for the connection to close.
func (l *loopTLS) hsRead(p []byte) (int, error) {
	for {
		n, closed := l.take(p)
		switch {
		case n > 0:
			return n, nil
		case closed:
			return 0, io.EOF
		}
		<-l.wake
	}
}

// take moves what it can of hsIn into p; closed once aborted.
func (l *loopTLS) take(p []byte) (n int, closed bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	n = copy(p, l.hsIn)
	l.hsIn = l.hsIn[:copy(l.hsIn, l.hsIn[n:])]
	return n, l.hsClosed
}

// Write is crypto/tls's write to the socket.
func (l *loopTLS) Write(p []byte) (int, error) {
	switch {
	case l.mode == tlsHandshake:
		if !l.give(p) {
			return 0, net.ErrClosed
		}
		_ = l.gc.Wake(nil)
		return len(p), nil
	case l.mode == tlsDetached:
		return l.fc.Write(p)
	case l.hold:
		l.held = append(l.held, p...)
		return len(p), nil
	}
	return l.gc.Write(p)
}

// give queues the handshake's output for the loop; false once aborted.
func (l *loopTLS) give(p []byte) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.hsClosed {
		return false
	}
	l.hsOut = append(l.hsOut, p...)
	return true
}

// Close closes a detached session's socket; on the loop gnet closes it.
func (l *loopTLS) Close() error {
	if l.mode == tlsDetached {
		return l.fc.Close()
	}
	return nil
}

// Deadlines are a detached session's; on the loop the session's deadline
// is OnTick's, and no call waits.
func (l *loopTLS) SetDeadline(t time.Time) error {
	if l.mode == tlsDetached {
		return l.fc.SetDeadline(t)
	}
	return nil
}

func (l *loopTLS) SetReadDeadline(t time.Time) error {
	if l.mode == tlsDetached {
		return l.fc.SetReadDeadline(t)
	}
	return nil
}

func (l *loopTLS) SetWriteDeadline(t time.Time) error {
	if l.mode == tlsDetached {
		return l.fc.SetWriteDeadline(t)
	}
	return nil
}

func (l *loopTLS) LocalAddr() net.Addr  { return l.gc.LocalAddr() }
func (l *loopTLS) RemoteAddr() net.Addr { return l.gc.RemoteAddr() }
