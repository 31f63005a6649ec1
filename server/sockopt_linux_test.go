package server

import (
	"io"
	"net"
	"os"
	"strconv"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// serverSocket finds, in this process, the server's socket of the
// connection c: the descriptor whose peer is c's local address.
func serverSocket(t *testing.T, c net.Conn) int {
	t.Helper()
	local := c.LocalAddr().(*net.TCPAddr)
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("no /proc: %v", err)
	}
	found := -1
	for _, e := range ents {
		fd, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		sa, err := syscall.Getpeername(fd)
		if err != nil {
			continue
		}
		if in4, ok := sa.(*syscall.SockaddrInet4); ok && in4.Port == local.Port && net.IP(in4.Addr[:]).Equal(local.IP) {
			if found >= 0 {
				t.Fatalf("two server sockets for %v: %d and %d", local, found, fd)
			}
			found = fd
		}
	}
	if found < 0 {
		t.Fatalf("no server socket for %v", local)
	}
	return found
}

// checkSockopts asserts the options every session socket has: no Nagle
// (each reply leaves at once) and keep-alive after keepAlivePeriod.
func checkSockopts(t *testing.T, what string, fd int) {
	t.Helper()
	for _, o := range []struct {
		name       string
		level, opt int
		want       int
	}{
		{"TCP_NODELAY", syscall.IPPROTO_TCP, syscall.TCP_NODELAY, 1},
		{"SO_KEEPALIVE", syscall.SOL_SOCKET, syscall.SO_KEEPALIVE, 1},
		{"TCP_KEEPIDLE", syscall.IPPROTO_TCP, syscall.TCP_KEEPIDLE, int(keepAlivePeriod.Seconds())},
		{"TCP_KEEPINTVL", syscall.IPPROTO_TCP, syscall.TCP_KEEPINTVL, int(keepAlivePeriod.Seconds()) / 5},
		{"TCP_KEEPCNT", syscall.IPPROTO_TCP, syscall.TCP_KEEPCNT, 5},
	} {
		v, err := syscall.GetsockoptInt(fd, o.level, o.opt)
		if err != nil {
			t.Fatalf("%s: %s: %v", what, o.name, err)
		}
		if (o.want == 1 && v == 0) || (o.want != 1 && v != o.want) {
			t.Errorf("%s: %s = %d, want %d", what, o.name, v, o.want)
		}
	}
}

// TestSessionSocketOptions: the listeners carry keep-alive, which a
// session's socket inherits, and a session keeps it (and TCP_NODELAY)
// after STARTTLS moved it off the loop: the detached socket is not set up
// again as a net.TCPConn, whose keep-alive would be Go's 15 s.
func TestSessionSocketOptions(t *testing.T) {
	p := newTestPKI(t)
	r := start(t, tlsServerConfig(t, p))
	if !r.srv.keepAliveSet {
		t.Fatal("keep-alive not set on the listener")
	}
	a := dial(t, r.addr)
	a.reply()
	a.expect("EHLO a", "250")
	checkSockopts(t, "plaintext", serverSocket(t, a.c))
	as := a.starttls(t, p.Client())
	as.expect("EHLO a", "250")
	checkSockopts(t, "TLS", serverSocket(t, a.c))
}

// TestTLSQuitOneSegment: over TLS the 221 of QUIT and the close_notify
// alert after it leave in one write, so one TCP segment.
func TestTLSQuitOneSegment(t *testing.T) {
	p := newTestPKI(t)
	r := start(t, tlsServerConfig(t, p))
	a := dial(t, r.addr)
	a.reply()
	a.expect("EHLO a", "250")
	raw := a.c.(*net.TCPConn)
	as := a.starttls(t, p.Client())
	as.expect("EHLO a", "250")
	segs := func() uint32 {
		rc, err := raw.SyscallConn()
		if err != nil {
			t.Fatal(err)
		}
		var info *unix.TCPInfo
		var ierr error
		_ = rc.Control(func(fd uintptr) { info, ierr = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO) })
		if ierr != nil {
			t.Skipf("TCP_INFO: %v", ierr)
		}
		return info.Data_segs_in
	}
	before := segs()
	as.expect("QUIT", "221")
	var b [64]byte
	if n, err := as.c.Read(b[:]); err != io.EOF {
		t.Fatalf("after 221: %q, %v; want the end (close_notify)", b[:n], err)
	}
	if got := segs() - before; got != 1 {
		t.Fatalf("221 and close_notify came in %d segments, want 1", got)
	}
}
