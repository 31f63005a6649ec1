package server

// STARTTLS (RFC 3207) on an event-loop server. gnet has no TLS, and a
// forked, non-blocking crypto/tls would have to track Go's security fixes
// by hand. So Go's crypto/tls runs unchanged over a connection of our own
// (looptls.go):
//
//  1. OnTraffic sees the session waiting for TLS. Everything the client
//     pipelined after "STARTTLS\r\n" is discarded, never run
//     (CVE-2011-0411), logged and counted.
//  2. The loop writes "220 2.0.0 Ready to start TLS" and starts the
//     handshake on a goroutine, which gets its input from OnTraffic and
//     gives it its output; the goroutine ends with the handshake.
//  3. The session is reset (the client must EHLO again) and goes on on the
//     loop: the records gnet has read are decrypted as the session asks
//     for input, and its replies are encrypted into gnet's Write.
//
// Their number is bounded by MaxTLSSessions: past it STARTTLS is answered
// 454 4.7.0 and the session stays in plaintext. The handshake has
// tls_handshake_timeout, and after it deadlines, limits and the drain are
// the plaintext session's.
//
// A session detached from the loop (a half-closed one waiting for the
// spool, plaintext or TLS) runs on a goroutine with blocking reads and
// writes (detached.go) until it ends.

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
	c.tlsSlot = true
	return nil
}

// releaseTLS gives the session's TLS slot back, once.
func (c *conn) releaseTLS() {
	if c.tlsSlot {
		c.tlsSlot = false
		c.srv.tlsSessions.Add(-1)
	}
}

// detachHalfClosed moves a session whose client half-closed while its
// message is with the spool onto a goroutine, which waits for the result,
// answers it and whatever was pipelined after it (QUIT), and closes. It
// runs in OnClose, before gnet closes its descriptor; false means the
// socket could not be duplicated and the session ends as before.
func (c *conn) detachHalfClosed(gc gnet.Conn) bool {
	in, _ := gc.Peek(-1)
	var rest []byte
	if l := c.lt; l != nil {
		// Over TLS the records gnet still holds go to the tls.Conn first
		// (looptls.go), the plaintext not yet consumed to the session.
		l.pending = append(l.pending, in...)
		rest = append([]byte(nil), l.buf.b...)
	} else {
		rest = append(make([]byte, 0, max(len(in), 512)), in...)
	}
	fd, err := gc.Dup()
	if err != nil {
		c.log().Warn().Err(err).Msg("half-closed: dup")
		return false
	}
	if c.lt != nil {
		c.lt.buf.free()
	}
	c.detached = true
	ch := make(chan struct{}, 1)
	c.wakeCh.Store(&ch)
	go c.serveDetached(fd, rest)
	return true
}

// serveDetached is the goroutine of a half-closed session: over the
// socket, or over TLS on it.
func (c *conn) serveDetached(fd int, rest []byte) {
	var w net.Conn
	defer c.endDetached(&w)
	fc, err := newFDConn(fd) // fdconn.go
	if err != nil {
		c.reason = "half-closed: " + err.Error()
		return
	}
	var nc net.Conn = fc
	if l := c.lt; l != nil {
		l.fc, l.mode = fc, tlsDetached
		nc = l.tc
	}
	w = nc
	c.bc.Store(&nc)
	b := newBlocking(c, nc, rest) // detached.go
	if c.lt != nil {
		b.fc = fc // the last replies wait for the close_notify alert
	}
	defer b.buf.free()
	b.run()
}

// endDetached ends a detached session's goroutine: a panic answers 421
// 4.3.0 like the loop's, the connection is closed (a TLS one with a
// close_notify alert first, RFC 8446 6.1, under a write deadline) and the
// slots are released.
func (c *conn) endDetached(w *net.Conn) {
	p := recover()
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
	c.releaseTLS()
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
		_ = (*bc).SetReadDeadline(time.Now())
		return
	}
	_ = c.gc.Wake(nil)
}
