package server

import (
	"net"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nanomx/nanomx/proto"
)

// tlsIdle opens a TLS session that said EHLO over TLS.
func tlsIdle(t *testing.T, r *running, p *testPKI) *client {
	t.Helper()
	c := dial(t, r.addr)
	c.reply() // greeting
	c.expect("EHLO client.example.org", "250")
	tc := c.starttls(t, p.Client())
	tc.expect("EHLO client.example.org", "250")
	return tc
}

// goroutines counts the goroutines running a server function whose name
// contains fn.
func goroutines(fn string) int {
	buf := make([]byte, 4<<20)
	return strings.Count(string(buf[:runtime.Stack(buf, true)]), fn)
}

// TestTLSOnLoop: once the handshake is done, a TLS session runs on the
// event loop: no goroutine of ours is left for it, while it is idle or
// between commands; it answers single commands, a message and pipelined
// commands, and QUIT ends it.
func TestTLSOnLoop(t *testing.T) {
	p := newTestPKI(t)
	r := start(t, tlsServerConfig(t, p))
	a, b := tlsIdle(t, r, p), tlsIdle(t, r, p)
	noGoroutine := func(when string) {
		t.Helper()
		// The handshake's goroutine ends right after the handshake.
		deadline := time.Now().Add(5 * time.Second)
		for goroutines("server.(*loopTLS)") > 0 || goroutines("server.(*blocking)") > 0 {
			if time.Now().After(deadline) {
				t.Fatalf("%s: a goroutine still serves a TLS session", when)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	noGoroutine("after EHLO")
	a.expect("NOOP", "250")
	a.expect("MAIL FROM:<a@example.org>", "250 2.1.0")
	a.expect("RCPT TO:<bob@example.test>", "250 2.1.5")
	a.expect("DATA", "354")
	a.send("Subject: on the loop\r\n\r\nbody\r\n.\r\n")
	if g := a.reply(); !strings.HasPrefix(g, "250 2.0.0") {
		t.Fatalf("message over TLS: %q", g)
	}
	if n := r.srv.Stats().Delivered.Load(); n != 1 {
		t.Fatalf("delivered %d, want 1", n)
	}
	noGoroutine("after a message")
	b.send("NOOP\r\nRSET\r\nNOOP\r\n")
	for _, want := range []string{"250", "250 2.0.0", "250"} {
		if g := b.reply(); !strings.HasPrefix(g, want) {
			t.Fatalf("pipelined: %q, want %q", g, want)
		}
	}
	a.expect("QUIT", "221")
	a.expectClosed()
	b.expect("NOOP", "250")
	if n := r.srv.tlsSessions.Load(); n != 1 {
		t.Fatalf("%d TLS slots held with one TLS session open, want 1", n)
	}
}

// TestTLSIdleTimeout: an idle TLS session times out at its command
// deadline, with 421 4.4.2 over TLS.
func TestTLSIdleTimeout(t *testing.T) {
	p := newTestPKI(t)
	cfg := tlsServerConfig(t, p)
	cfg.CommandTimeout = 1500 * time.Millisecond
	r := start(t, cfg)
	c := tlsIdle(t, r, p)
	t0 := time.Now()
	expectTimedOut(t, c, "idle TLS session", t0, cfg.CommandTimeout)
	if n := r.srv.Stats().TimedOut.Load(); n != 1 {
		t.Errorf("TimedOut = %d, want 1", n)
	}
	waitFor(t, func() bool { return r.srv.tlsSessions.Load() == 0 })
}

// TestTLSDrain: the drain answers an idle TLS session 421 4.3.2 and
// closes it, and the server stops.
func TestTLSDrain(t *testing.T) {
	p := newTestPKI(t)
	r := start(t, tlsServerConfig(t, p))
	c := tlsIdle(t, r, p)
	stopped := make(chan error, 1)
	go func() { stopped <- r.stop() }()
	want := strings.TrimRight(string(proto.ReplyShutdown.Bytes()), "\r\n")
	if g := c.reply(); g != want {
		t.Fatalf("TLS session in the drain: %q, want %q", g, want)
	}
	c.expectClosed()
	select {
	case err := <-stopped:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("server did not stop")
	}
}

// splitConn writes one write in two: the first bytes at once, the rest
// when rest is closed.
type splitConn struct {
	net.Conn
	split atomic.Bool
	rest  chan struct{}
	done  chan error
}

func (s *splitConn) Write(b []byte) (int, error) {
	if !s.split.CompareAndSwap(true, false) || len(b) < 8 {
		return s.Conn.Write(b)
	}
	if _, err := s.Conn.Write(b[:7]); err != nil {
		return 0, err
	}
	tail := append([]byte(nil), b[7:]...)
	go func() {
		<-s.rest
		_, err := s.Conn.Write(tail)
		s.done <- err
	}()
	return len(b), nil
}

// TestTLSPartialRecord: a client that sends part of a TLS record and
// falls silent gets its answer once the rest arrives: the read that found
// the record incomplete left it to crypto/tls, which goes on with it.
func TestTLSPartialRecord(t *testing.T) {
	p := newTestPKI(t)
	r := start(t, tlsServerConfig(t, p))
	nc, err := net.Dial("tcp", r.addr)
	if err != nil {
		t.Fatal(err)
	}
	sc := &splitConn{Conn: nc, rest: make(chan struct{}), done: make(chan error, 1)}
	c := newClient(t, sc)
	c.reply()
	c.expect("EHLO client.example.org", "250")
	tc := c.starttls(t, p.Client())
	tc.expect("EHLO client.example.org", "250")
	sc.split.Store(true)
	tc.send("NOOP\r\n") // 7 bytes of the record now: the header and 2 more
	time.Sleep(200 * time.Millisecond)
	close(sc.rest)
	if err := <-sc.done; err != nil {
		t.Fatal(err)
	}
	if g := tc.reply(); !strings.HasPrefix(g, "250") {
		t.Fatalf("after the rest of the record: %q", g)
	}
	tc.expect("QUIT", "221")
}

// TestTLSHandshakeEnds: a client that stops in the middle of the
// handshake (part of a ClientHello, then nothing, or then gone) costs a
// goroutine only until the handshake timeout or its going away, and gives
// its TLS slot back; the loop serves others meanwhile.
func TestTLSHandshakeEnds(t *testing.T) {
	p := newTestPKI(t)
	cfg := tlsServerConfig(t, p)
	cfg.TLSHandshakeTimeout = time.Second
	r := start(t, cfg)
	half := func() *client {
		c := dial(t, r.addr)
		c.reply()
		c.expect("EHLO c", "250")
		c.expect("STARTTLS", "220")
		// A TLS record header announcing 512 bytes, and 5 of them.
		if _, err := c.c.Write([]byte{0x16, 0x03, 0x01, 0x02, 0x00, 1, 0, 1, 0xfc, 3}); err != nil {
			t.Fatal(err)
		}
		return c
	}
	silent, gone := half(), half()
	waitFor(t, func() bool { return goroutines("server.(*loopTLS).handshake") == 2 })
	other := dial(t, r.addr) // the loop is free
	other.reply()
	other.expect("EHLO o", "250")
	gone.c.Close()
	waitFor(t, func() bool { return goroutines("server.(*loopTLS).handshake") == 1 })
	t0 := time.Now()
	silent.expectClosed()
	if d := time.Since(t0); d > 3*time.Second {
		t.Errorf("stalled handshake closed after %v, want about %v", d, cfg.TLSHandshakeTimeout)
	}
	waitFor(t, func() bool { return goroutines("server.(*loopTLS).handshake") == 0 })
	waitFor(t, func() bool { return r.srv.tlsSessions.Load() == 0 })
	if n := r.srv.Stats().TLSFailed.Load(); n != 2 {
		t.Errorf("TLSFailed = %d, want 2", n)
	}
	other.expect("QUIT", "221")
}

// expectTimedOut: c, quiet since t0, gets 421 4.4.2 about timeout later
// and is closed.
func expectTimedOut(t *testing.T, c *client, what string, t0 time.Time, timeout time.Duration) {
	t.Helper()
	want := strings.TrimRight(string(proto.ReplyTimeout.Bytes()), "\r\n")
	if g := c.reply(); g != want {
		t.Fatalf("%s at its deadline: %q, want %q", what, g, want)
	}
	c.expectClosed()
	if d := time.Since(t0); d < timeout-100*time.Millisecond || d > timeout+3*time.Second {
		t.Errorf("%s timed out after %v, want about %v", what, d, timeout)
	}
}

// chunkConn writes every write in pieces of 1–7 bytes, one system call
// each.
type chunkConn struct {
	net.Conn
	n int
}

func (c *chunkConn) Write(b []byte) (int, error) {
	for off := 0; off < len(b); {
		c.n++
		end := min(len(b), off+1+c.n*7919%7)
		if _, err := c.Conn.Write(b[off:end]); err != nil {
			return off, err
		}
		off = end
	}
	return len(b), nil
}

// TestTLSChunked: the handshake and a whole session over TLS with the
// client's bytes arriving a few at a time, records split anywhere: the
// handshake's input gathers until its goroutine has what it needs, and on
// the loop every partial record waits in crypto/tls for its rest. The
// message lands intact.
func TestTLSChunked(t *testing.T) {
	p := newTestPKI(t)
	cfg := tlsServerConfig(t, p)
	r := start(t, cfg)
	nc, err := net.Dial("tcp", r.addr)
	if err != nil {
		t.Fatal(err)
	}
	c := newClient(t, &chunkConn{Conn: nc})
	c.reply()
	c.expect("EHLO client.example.org", "250")
	tc := c.starttls(t, p.Client())
	tc.expect("EHLO client.example.org", "250")
	body := "Subject: chunked\r\n\r\n" + strings.Repeat("0123456789abcdef chunked over TLS\r\n", 60)
	tc.send("MAIL FROM:<a@example.org>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\n")
	for _, want := range []string{"250 2.1.0", "250 2.1.5", "354"} {
		if g := tc.reply(); !strings.HasPrefix(g, want) {
			t.Fatalf("%q, want %q", g, want)
		}
	}
	tc.send(body + ".\r\n")
	if g := tc.reply(); !strings.HasPrefix(g, "250 2.0.0") {
		t.Fatalf("after the data: %q", g)
	}
	tc.expect("QUIT", "221")
	files := newFiles(t, cfg.MaildirRoot, "example.test", "bob")
	if len(files) != 1 {
		t.Fatalf("%d files, want 1", len(files))
	}
	if !strings.HasSuffix(files[0], strings.ReplaceAll(body, "\r\n", "\n")) { // Maildir: LF
		t.Fatalf("stored message does not end with the body sent: %q", files[0])
	}
}
