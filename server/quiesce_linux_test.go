package server

import (
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// TestListenerHold: on a listener nobody accepts from, a held listening
// socket completes no handshake (a dial times out), the queue count is
// what is queued, and once the queued connections are accepted and the
// listener closed, the held dial is refused rather than cut.
func TestListenerHold(t *testing.T) {
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	lnClosed := false
	defer func() {
		if !lnClosed {
			syscall.Close(fd)
		}
	}()
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 16); err != nil {
		t.Fatal(err)
	}
	sa, _ := syscall.Getsockname(fd)
	addr := (&net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: sa.(*syscall.SockaddrInet4).Port}).String()

	var early []net.Conn
	for range 3 {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		early = append(early, c)
	}
	if n, err := acceptQueue(fd); err != nil || n != 3 {
		t.Fatalf("accept queue before the hold: %d, %v; want 3", n, err)
	}
	if err := listenerHold(fd); err != nil {
		t.Fatal(err)
	}
	if c, err := net.DialTimeout("tcp", addr, 300*time.Millisecond); err == nil {
		c.Close()
		t.Fatal("a held listener completed a handshake")
	}
	// A dial that waits on its SYN's retransmission while the queue is
	// taken and the listener closes.
	late := make(chan error, 1)
	go func() {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err == nil {
			_, err = c.Read(make([]byte, 1))
			c.Close()
			err = errors.Join(errors.New("connected"), err)
		}
		late <- err
	}()
	time.Sleep(100 * time.Millisecond)
	if n, err := acceptQueue(fd); err != nil || n != 3 {
		t.Fatalf("accept queue while held: %d, %v; want 3", n, err)
	}
	for range 3 {
		nfd, _, err := syscall.Accept(fd)
		if err != nil {
			t.Fatal(err)
		}
		syscall.Close(nfd)
	}
	if n, err := acceptQueue(fd); err != nil || n != 0 {
		t.Fatalf("accept queue after accepting: %d, %v; want 0", n, err)
	}
	syscall.Close(fd)
	lnClosed = true
	if err := <-late; !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("a dial held across the close: %v, want connection refused", err)
	}
	// The queued ones were accepted, not reset: each reads the close.
	for i, c := range early {
		c.SetReadDeadline(time.Now().Add(time.Second))
		if _, err := c.Read(make([]byte, 1)); err != io.EOF {
			t.Errorf("queued connection %d: %v, want EOF", i, err)
		}
	}
}

// TestShutdownUnderConnectFlood: clients connecting without pause while
// the server drains and stops are each answered (220 before the drain,
// 421 4.3.2 during it) or refused; none connects and then reads nothing,
// which is what closing a listener with connections in its accept queue
// does to them.
func TestShutdownUnderConnectFlood(t *testing.T) {
	cfg := testServerConfig(t)
	cfg.MaxConnectionsPerIP = 1000
	r := start(t, cfg)
	var answered, shutdown, refused, cut atomic.Int64
	var cutErr atomic.Value
	done := make(chan struct{})
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 64)
			for {
				select {
				case <-done:
					return
				default:
				}
				c, err := net.DialTimeout("tcp", r.addr, 5*time.Second)
				if err != nil {
					refused.Add(1)
					time.Sleep(5 * time.Millisecond)
					continue
				}
				c.SetReadDeadline(time.Now().Add(5 * time.Second))
				n, err := io.ReadAtLeast(c, buf, 5)
				c.Close()
				switch {
				case n >= 5 && strings.HasPrefix(string(buf[:n]), "421 4.3.2"):
					shutdown.Add(1)
				case n >= 5 && strings.HasPrefix(string(buf[:n]), "220 "):
					answered.Add(1)
				default:
					cut.Add(1)
					cutErr.Store(errors.Join(errors.New(string(buf[:n])), err))
				}
			}
		}()
	}
	time.Sleep(300 * time.Millisecond)
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	close(done)
	wg.Wait()
	t.Logf("answered %d, 421 %d, refused %d, cut %d", answered.Load(), shutdown.Load(), refused.Load(), cut.Load())
	if n := cut.Load(); n > 0 {
		t.Errorf("%d connections cut without a reply (the last: %v)", n, cutErr.Load())
	}
	if answered.Load() == 0 || refused.Load() == 0 {
		t.Error("the flood did not span the server's life and its end")
	}
}
