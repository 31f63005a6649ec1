package server

// STARTTLS (RFC 3207) on an event-loop server. gnet has no TLS, and a
// forked, non-blocking crypto/tls would have to track Go's security fixes
// by hand. So the plaintext phase, where most abuse lands, runs on the
// event loop, and a session that asks for STARTTLS leaves it:
//
//  1. OnTraffic sees the session waiting for TLS. Everything the client
//     pipelined after "STARTTLS\r\n" is discarded, never run
//     (CVE-2011-0411), logged and counted.
//  2. It duplicates the socket (Conn.Dup) and returns gnet.Close. That
//     closes gnet's descriptor at once, without another read, so gnet never
//     consumes the ClientHello; gnet never calls shutdown(2), so the
//     duplicate keeps the connection. Detaching with c.Close() instead
//     would only queue a task, and gnet would read the ClientHello first.
//  3. A goroutine writes "220 2.0.0 Ready to start TLS" on the duplicate,
//     runs Go's crypto/tls handshake, resets the session (the client must
//     EHLO again) and drives the same proto.Session with blocking reads and
//     writes until the end.
//
// A TLS session keeps its connection slot (total and per IP) until its
// goroutine ends; their number is bounded by MaxTLSSessions, and past it
// STARTTLS is answered 454 4.7.0 and the session stays in plaintext.
// Deadlines are the same as on the loop, applied as read deadlines, so a
// client trickling bytes is still cut off; the drain interrupts idle reads.

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/panjf2000/gnet/v2"

	"github.com/nanomx/nanomx/proto"
)

// loadTLS builds the TLS configuration of cfg, or nil when TLS is off.
// Errors name the key and the file.
func loadTLS(cfg Config) (*tls.Config, error) {
	if cfg.TLSCert == "" {
		return nil, nil
	}
	cert, err := tls.LoadX509KeyPair(cfg.TLSCert, cfg.TLSKey)
	if err != nil {
		key := "tls_cert"
		var pe *os.PathError
		if errors.As(err, &pe) && pe.Path == cfg.TLSKey {
			key = "tls_key"
		}
		return nil, &ConfigError{Key: key, Err: fmt.Errorf("%s, %s: %w", cfg.TLSCert, cfg.TLSKey, err)}
	}
	min := uint16(tls.VersionTLS12)
	if cfg.TLSMinVersion == "1.3" {
		min = tls.VersionTLS13
	}
	// Go's default cipher suites and session tickets.
	return &tls.Config{
		Certificates: []tls.Certificate{cert},
		MinVersion:   min,
	}, nil
}

// StartTLS takes a TLS slot for the session, or refuses with 454 4.7.0.
func (c *conn) StartTLS() *proto.Reply {
	if c.lv.tls == nil {
		return proto.ReplyNotImplemented
	}
	if c.srv.tlsSessions.Add(1) > int64(c.lv.cfg.MaxTLSSessions) {
		c.srv.tlsSessions.Add(-1)
		c.srv.stats.TLSRefused.Add(1)
		return proto.ReplyTLSUnavailable
	}
	return nil
}

// detach takes the connection off the event loop for its TLS phase. It
// runs on the loop, after the replies before STARTTLS were written.
func (c *conn) detach(gc gnet.Conn) gnet.Action {
	s := c.srv
	if gc.OutboundBuffered() > 0 {
		// gnet drops unflushed output on close: the client would miss
		// replies. This needs a client that does not read; drop it.
		s.tlsSessions.Add(-1)
		c.reason = "STARTTLS with replies unsent"
		return gnet.Close
	}
	fd, err := gc.Dup()
	if err != nil {
		s.tlsSessions.Add(-1)
		c.log().Error().Err(err).Msg("STARTTLS: dup")
		_, _ = gc.Write(proto.ReplyInternal.Bytes())
		c.reason = "STARTTLS dup failed"
		return gnet.Close
	}
	// From here the goroutine owns c; OnClose sees detached and leaves it.
	c.detached = true
	ch := make(chan struct{}, 1)
	c.wakeCh.Store(&ch)
	go c.serveTLS(fd)
	return gnet.Close
}

// detachHalfClosed moves a session whose client half-closed while its
// message is with the spool onto a goroutine, which waits for the result,
// answers it and whatever was pipelined after it (QUIT), and closes. It
// runs in OnClose, before gnet closes its descriptor; false means the
// socket could not be duplicated and the session ends as before.
func (c *conn) detachHalfClosed(gc gnet.Conn) bool {
	in, _ := gc.Peek(-1)
	rest := append(make([]byte, 0, max(len(in), 512)), in...)
	fd, err := gc.Dup()
	if err != nil {
		c.log().Warn().Err(err).Msg("half-closed: dup")
		return false
	}
	c.detached = true
	ch := make(chan struct{}, 1)
	c.wakeCh.Store(&ch)
	go c.serveDetached(fd, rest)
	return true
}

// serveDetached is the goroutine of a half-closed plaintext session.
func (c *conn) serveDetached(fd int, rest []byte) {
	var w net.Conn
	defer c.endDetached(&w, false)
	fc, err := newFDConn(fd) // fdconn.go
	if err != nil {
		c.reason = "half-closed: " + err.Error()
		return
	}
	var nc net.Conn = fc
	w = nc
	c.bc.Store(&nc)
	b := newBlocking(c, nc, rest) // park.go
	defer b.buf.free()
	b.run()
}

// endDetached ends a detached session's goroutine: a panic answers 421
// 4.3.0 like the loop's, the connection is closed (a TLS one with a
// close_notify alert first, RFC 8446 6.1, under a write deadline) and the
// slots are released.
func (c *conn) endDetached(w *net.Conn, isTLS bool) { c.end(recover(), w, isTLS) }

// endHandshake ends the handshake's goroutine: as endDetached, unless the
// session went on (up) on a goroutine of its own.
func (c *conn) endHandshake(w *net.Conn, up *bool) {
	p := recover()
	if p == nil && *up {
		return
	}
	c.end(p, w, true)
}

func (c *conn) end(p any, w *net.Conn, isTLS bool) {
	s := c.srv
	if p != nil {
		c.log().Error().Interface("panic", p).Bytes("stack", debug.Stack()).Msg("session panic")
		c.reason = "internal error"
		if *w != nil {
			_ = (*w).SetWriteDeadline(time.Now().Add(closeTimeout))
			_, _ = (*w).Write(proto.ReplyInternal.Bytes())
		}
	}
	if *w != nil {
		_ = (*w).SetWriteDeadline(time.Now().Add(closeTimeout))
		_ = (*w).Close() // tls.Conn.Close sends close_notify first
	}
	if isTLS {
		s.tlsSessions.Add(-1)
	}
	c.freeBody()
	if c.waiting {
		// Gone before its answer: wait for the spool so that the budget
		// and the log line are settled; the spool always answers.
		c.waitResult()
	}
	s.forget(c)
}

// closeTimeout bounds the last write of a detached session: the 421 of a
// panic and the TLS close_notify alert.
const closeTimeout = 5 * time.Second

// serveTLS is the goroutine of a detached session's handshake. The
// session then goes on on a goroutine of its own: the handshake grows a
// goroutine's stack to 16–32 KiB (the key exchange's arithmetic), which an
// idle session would keep until enough collections shrank it; a fresh
// goroutine's stack holds only what reading and answering need.
func (c *conn) serveTLS(fd int) {
	s := c.srv
	var w net.Conn
	up := false
	defer c.endHandshake(&w, &up)
	fc, err := newFDConn(fd) // fdconn.go
	if err != nil {
		c.reason = "STARTTLS: " + err.Error()
		return
	}
	var nc net.Conn = fc
	w = nc
	c.bc.Store(&nc)

	// The deadline bounds the 220 and every read and write of the
	// handshake (a context would cost a goroutine per handshake).
	_ = nc.SetDeadline(time.Now().Add(c.lv.cfg.TLSHandshakeTimeout))
	if _, err := nc.Write(proto.ReplyReadyTLS.Bytes()); err != nil {
		c.reason = "STARTTLS: " + err.Error()
		return
	}
	s.m.countReplies(proto.ReplyReadyTLS.Bytes())
	tc := tls.Server(nc, c.lv.tls)
	if err := tc.Handshake(); err != nil {
		s.stats.TLSFailed.Add(1)
		c.reason = "TLS handshake: " + err.Error()
		return
	}
	var tcConn net.Conn = tc
	w = tc
	c.bc.Store(&tcConn)
	st := tc.ConnectionState()
	c.tlsInfo = tlsInfo(st.Version, st.CipherSuite)
	s.stats.TLSSessions.Add(1)
	s.m.tlsSession(st.Version)
	c.sess.TLSStarted()
	b := newBlocking(c, tc, nil) // park.go
	b.fc = fc
	if raw, err := fc.SyscallConn(); err == nil && raw.Control(func(fd uintptr) { b.fd = int(fd) }) == nil {
		b.raw = raw
	}
	up = true
	go c.serveTLSSession(b)
}

// serveTLSSession is the goroutine of a detached session once TLS is up,
// from the handshake or from a parked session's wait (park.go).
func (c *conn) serveTLSSession(b *blocking) {
	parked := false
	defer c.endTLSSession(b, &parked)
	if parked = b.run(); parked {
		b.park()
	}
}

// endTLSSession ends a TLS session's goroutine: as endDetached, unless the
// session parked.
func (c *conn) endTLSSession(b *blocking, parked *bool) {
	p := recover()
	if p == nil && *parked {
		return
	}
	b.buf.free()
	w := b.nc
	c.end(p, &w, true)
}

// waitResult waits for the spool's answer to the message in flight.
func (c *conn) waitResult() *deliveryResult {
	ch := *c.wakeCh.Load()
	for {
		if r := c.result.Swap(nil); r != nil {
			return r
		}
		<-ch
	}
}

// testHookFeed, nil in production, is called before each Feed (tests
// inject panics with it).
var testHookFeed atomic.Pointer[func(c *conn, in []byte)]

// waitAnswer blocks until the delivery or the check the session waits on
// has answered (step then takes the answer).
func (c *conn) waitAnswer() {
	ch := *c.wakeCh.Load()
	for (!c.waiting || c.result.Load() == nil) && (!c.sess.Pending() || c.verdict.Load() == nil) {
		<-ch
	}
}

// tlsInfos holds the tlsInfo strings made so far: a session shares one
// instead of holding its own.
var tlsInfos sync.Map // uint32(version)<<16 | suite → string

// tlsInfo describes a version and a cipher suite for the Received header
// and the log: "TLSv1.3 with cipher TLS_AES_128_GCM_SHA256".
func tlsInfo(version, suite uint16) string {
	key := uint32(version)<<16 | uint32(suite)
	if s, ok := tlsInfos.Load(key); ok {
		return s.(string)
	}
	s := tlsVersion(version) + " with cipher " + tls.CipherSuiteName(suite)
	tlsInfos.Store(key, s)
	return s
}

// tlsVersion names a version as Postfix writes it in Received headers.
func tlsVersion(v uint16) string {
	switch v {
	case tls.VersionTLS12:
		return "TLSv1.2"
	case tls.VersionTLS13:
		return "TLSv1.3"
	}
	return tls.VersionName(v)
}

// kick makes a session look at its flags: a Wake on the loop, or an
// interrupted read for a detached session.
func (c *conn) kick() {
	if bc := c.bc.Load(); bc != nil {
		if c.srv.parker.wake(c.n) {
			return // parked (park.go): it runs again and looks
		}
		_ = (*bc).SetReadDeadline(time.Now())
		return
	}
	_ = c.gc.Wake(nil)
}
