package server

import (
	"net"
	"syscall"
	"testing"
	"time"
)

// seqpacketPair is a connected pair of SOCK_SEQPACKET sockets, both
// non-blocking: every write is one packet at the other end, so a test sees
// how many writes a connection made.
func seqpacketPair(t *testing.T) (a, b int) {
	t.Helper()
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_SEQPACKET|syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Skipf("socketpair: %v", err)
	}
	t.Cleanup(func() { syscall.Close(fds[1]) })
	return fds[0], fds[1]
}

// readPacket reads the next packet at fd, waiting up to a second; "" at
// the end of the stream.
func readPacket(t *testing.T, fd int) string {
	t.Helper()
	buf := make([]byte, 4096)
	for deadline := time.Now().Add(time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		n, _, err := syscall.Recvfrom(fd, buf, 0)
		if err == syscall.EAGAIN {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		return string(buf[:n])
	}
	t.Fatal("no packet")
	return ""
}

// TestFDConnHoldLast: writes after holdLast leave in one write at Close,
// even after the write deadline was set to now (as tls.Conn.Close does
// after its close_notify alert); writes before it leave at once.
func TestFDConnHoldLast(t *testing.T) {
	a, b := seqpacketPair(t)
	c, err := newFDConn(a)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write([]byte("250 ok\r\n")); err != nil {
		t.Fatal(err)
	}
	if got := readPacket(t, b); got != "250 ok\r\n" {
		t.Fatalf("first write: %q", got)
	}
	c.holdLast()
	c.Write([]byte("221 bye\r\n"))
	c.Write([]byte("alert"))
	_ = c.SetWriteDeadline(time.Now())
	var p [16]byte
	if _, _, err := syscall.Recvfrom(b, p[:], 0); err != syscall.EAGAIN {
		t.Fatalf("held bytes were sent before Close: %v", err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if got := readPacket(t, b); got != "221 bye\r\nalert" {
		t.Fatalf("at Close: %q, want both held writes in one packet", got)
	}
	if got := readPacket(t, b); got != "" {
		t.Fatalf("after Close: %q, want the end of the stream", got)
	}
}

// TestFDConnTimeout: a read past its deadline fails with an error that is
// itself a temporary net.Error (crypto/tls asserts the type, without
// errors.As, and keeps a tls.Conn usable only after a temporary one), and
// the connection reads on afterwards.
func TestFDConnTimeout(t *testing.T) {
	a, b := seqpacketPair(t)
	c, err := newFDConn(a)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Millisecond))
	var p [16]byte
	_, err = c.Read(p[:])
	ne, ok := err.(net.Error)
	if !ok || !ne.Timeout() || !ne.Temporary() { //nolint:staticcheck // what crypto/tls asks
		t.Fatalf("read past the deadline: %T %v, want a temporary net.Error", err, err)
	}
	if _, err := syscall.Write(b, []byte("EHLO a\r\n")); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(time.Second))
	n, err := c.Read(p[:])
	if err != nil || string(p[:n]) != "EHLO a\r\n" {
		t.Fatalf("read after the timeout: %q, %v", p[:n], err)
	}
}

// TestFDConnNotPollable: a descriptor Go's poller cannot watch (a regular
// file) is refused.
func TestFDConnNotPollable(t *testing.T) {
	fd, err := syscall.Open(t.TempDir()+"/f", syscall.O_CREAT|syscall.O_RDWR|syscall.O_CLOEXEC, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := newFDConn(fd); err == nil {
		t.Fatal("a regular file was taken")
	}
}
