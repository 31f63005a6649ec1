//go:build linux

package server

import (
	"net"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
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

// waitParked waits until n sessions are parked (park.go), at most 10 s.
func waitParked(t *testing.T, r *running, n int) {
	t.Helper()
	for deadline := time.Now().Add(parkAfter + 10*time.Second); r.srv.parker.count() != n; {
		if time.Now().After(deadline) {
			t.Fatalf("%d sessions parked, want %d", r.srv.parker.count(), n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestParkedTLSSession: a TLS session silent for parkAfter parks, and
// goes on when the client speaks: single commands, a message, pipelined
// commands, and parks again after each silence.
func TestParkedTLSSession(t *testing.T) {
	p := newTestPKI(t)
	r := start(t, tlsServerConfig(t, p))
	a, b := tlsIdle(t, r, p), tlsIdle(t, r, p)
	waitParked(t, r, 2)
	a.expect("NOOP", "250")
	waitParked(t, r, 2)
	a.expect("MAIL FROM:<a@example.org>", "250 2.1.0")
	a.expect("RCPT TO:<bob@example.test>", "250 2.1.5")
	a.expect("DATA", "354")
	a.send("Subject: parked\r\n\r\nbody\r\n.\r\n")
	if g := a.reply(); !strings.HasPrefix(g, "250 2.0.0") {
		t.Fatalf("message after parking: %q", g)
	}
	if n := r.srv.Stats().Delivered.Load(); n != 1 {
		t.Fatalf("delivered %d, want 1", n)
	}
	waitParked(t, r, 2)
	b.send("NOOP\r\nRSET\r\nNOOP\r\n")
	for _, want := range []string{"250", "250 2.0.0", "250"} {
		if g := b.reply(); !strings.HasPrefix(g, want) {
			t.Fatalf("pipelined after parking: %q, want %q", g, want)
		}
	}
	waitParked(t, r, 2)
	a.expect("QUIT", "221")
	a.expectClosed()
	waitParked(t, r, 1)
	b.expect("NOOP", "250")
}

// TestParkedTLSTimeout: a parked session still times out at its command
// deadline, with 421 4.4.2.
func TestParkedTLSTimeout(t *testing.T) {
	p := newTestPKI(t)
	cfg := tlsServerConfig(t, p)
	cfg.CommandTimeout = parkAfter + 1500*time.Millisecond
	r := start(t, cfg)
	c := tlsIdle(t, r, p)
	t0 := time.Now()
	waitParked(t, r, 1)
	expectTimedOut(t, c, "parked session", t0, cfg.CommandTimeout)
	if n := r.srv.Stats().TimedOut.Load(); n != 1 {
		t.Errorf("TimedOut = %d, want 1", n)
	}
	waitParked(t, r, 0)
}

// TestParkedTLSDrain: the drain answers a parked session 421 4.3.2 and
// closes it, and the server stops.
func TestParkedTLSDrain(t *testing.T) {
	p := newTestPKI(t)
	r := start(t, tlsServerConfig(t, p))
	c := tlsIdle(t, r, p)
	waitParked(t, r, 1)
	stopped := make(chan error, 1)
	go func() { stopped <- r.stop() }()
	want := strings.TrimRight(string(proto.ReplyShutdown.Bytes()), "\r\n")
	if g := c.reply(); g != want {
		t.Fatalf("parked session in the drain: %q, want %q", g, want)
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

// TestParkedTLSWaiter: without the parker (closed, as after the drain, or
// where epoll is missing) a parked session waits on a goroutine of its
// own (blocking.wait), goes on when the client speaks and still times
// out.
func TestParkedTLSWaiter(t *testing.T) {
	p := newTestPKI(t)
	cfg := tlsServerConfig(t, p)
	cfg.CommandTimeout = parkAfter + 2*time.Second
	r := start(t, cfg)
	r.srv.parker.mu.Lock()
	r.srv.parker.closed = true
	r.srv.parker.mu.Unlock()
	c := tlsIdle(t, r, p)
	waiting := func() bool {
		buf := make([]byte, 1<<20)
		return strings.Contains(string(buf[:runtime.Stack(buf, true)]), "server.(*blocking).wait")
	}
	for deadline := time.Now().Add(parkAfter + 5*time.Second); !waiting(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no session waits in blocking.wait")
		}
	}
	c.expect("NOOP", "250")
	t0 := time.Now()
	expectTimedOut(t, c, "waiting session", t0, cfg.CommandTimeout)
}

// TestParkerCloseWhileWaking: the server stops while the parker's loop
// is between epoll's events and waking their sessions (the drain already
// woke and ended them): closing the epoll file waits for the loop, so the
// loop must still be able to take the parker's lock.
func TestParkerCloseWhileWaking(t *testing.T) {
	p := newTestPKI(t)
	r := start(t, tlsServerConfig(t, p))
	c := tlsIdle(t, r, p)
	waitParked(t, r, 1)
	inLoop, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	hook := func() {
		once.Do(func() {
			close(inLoop)
			<-release
		})
	}
	testHookParkEvents.Store(&hook)
	defer testHookParkEvents.Store(nil)
	c.send("NOOP\r\n")
	select {
	case <-inLoop:
	case <-time.After(5 * time.Second):
		t.Fatal("the parker saw no event")
	}
	stopped := make(chan error, 1)
	go func() { stopped <- r.stop() }()
	// The drain wakes the session (421) and ends it; then the parker
	// closes, while its loop still holds the events.
	want := strings.TrimRight(string(proto.ReplyShutdown.Bytes()), "\r\n")
	if g := c.reply(); g != want {
		t.Fatalf("parked session in the drain: %q, want %q", g, want)
	}
	c.expectClosed()
	time.Sleep(200 * time.Millisecond) // the parker's close is under way
	close(release)
	select {
	case err := <-stopped:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("server did not stop: the parker's close and its loop wait on each other")
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

// TestParkedTLSPartialRecord: a session whose client sent part of a TLS
// record and fell silent parks with those bytes in crypto/tls (a timeout
// keeps them), and answers once the rest of the record arrives.
func TestParkedTLSPartialRecord(t *testing.T) {
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
	waitParked(t, r, 1)
	tc.expect("NOOP", "250") // back from parking
	sc.split.Store(true)
	tc.send("NOOP\r\n") // 7 bytes of the record now: the header and 2 more
	time.Sleep(100 * time.Millisecond)
	waitParked(t, r, 1) // parked again, with a partial record
	close(sc.rest)
	if err := <-sc.done; err != nil {
		t.Fatal(err)
	}
	if g := tc.reply(); !strings.HasPrefix(g, "250") {
		t.Fatalf("after the rest of the record: %q", g)
	}
	tc.expect("QUIT", "221")
}

// TestParkerLoopFails: when the parker's epoll fails, its loop ends and
// the sessions parked in it go on at once (nobody would watch them any
// more); later silences wait on goroutines of their own.
func TestParkerLoopFails(t *testing.T) {
	p := newTestPKI(t)
	r := start(t, tlsServerConfig(t, p))
	defer r.stop()
	a := tlsIdle(t, r, p)
	b := tlsIdle(t, r, p)
	waitParked(t, r, 2)
	fail := func() error { return syscall.EIO }
	testHookParkError.Store(&fail)
	defer testHookParkError.Store(nil)
	a.send("NOOP\r\n") // an event: the loop sees the failure and ends
	if g := a.reply(); !strings.HasPrefix(g, "250") {
		t.Fatalf("NOOP on the session that woke the loop: %q", g)
	}
	// b was parked too: it was started again when the loop ended, so it
	// answers although nothing watches the epoll set.
	deadline := time.Now().Add(5 * time.Second)
	for r.srv.parker.count() > 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := r.srv.parker.count(); n != 0 {
		t.Fatalf("%d sessions still parked after the loop ended", n)
	}
	time.Sleep(1500 * time.Millisecond) // past the park delay: b waits itself now
	b.send("NOOP\r\n")
	if g := b.reply(); !strings.HasPrefix(g, "250") {
		t.Fatalf("NOOP on the other session: %q", g)
	}
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
