package server

import (
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestListenerHold: on a listener nobody accepts from, a held listening
// socket completes no handshake (a dial times out), the queue count is
// what is queued, and once the queued connections are accepted and the
// listener closed, the held dial is refused rather than cut. Over IPv4
// and IPv6: the filter reads the TCP header, which both put at offset 0.
func TestListenerHold(t *testing.T) {
	t.Run("ipv4", func(t *testing.T) { testListenerHold(t, false) })
	t.Run("ipv6", func(t *testing.T) { testListenerHold(t, true) })
}

func testListenerHold(t *testing.T, v6 bool) {
	family, sa := syscall.AF_INET, syscall.Sockaddr(&syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}})
	if v6 {
		family, sa = syscall.AF_INET6, &syscall.SockaddrInet6{Addr: [16]byte{15: 1}}
	}
	fd, err := syscall.Socket(family, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if v6 && errors.Is(err, syscall.EAFNOSUPPORT) {
		t.Skipf("no IPv6 on this machine: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	lnClosed := false
	defer func() {
		if !lnClosed {
			syscall.Close(fd)
		}
	}()
	if err := syscall.Bind(fd, sa); err != nil {
		if v6 && errors.Is(err, syscall.EADDRNOTAVAIL) {
			t.Skipf("no ::1 on this machine (IPv6 off): %v", err)
		}
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 16); err != nil {
		t.Fatal(err)
	}
	var addr string
	switch got, _ := syscall.Getsockname(fd); got := got.(type) {
	case *syscall.SockaddrInet4:
		addr = (&net.TCPAddr{IP: got.Addr[:], Port: got.Port}).String()
	case *syscall.SockaddrInet6:
		addr = (&net.TCPAddr{IP: got.Addr[:], Port: got.Port}).String()
	}

	var early []net.Conn
	for range 3 {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		early = append(early, c)
	}
	// pending is the accept queue; no handshake is ever left under way
	// here (a held listener drops the SYN before it makes one).
	pending := func(when string, want int) {
		t.Helper()
		n, port, err := acceptQueue(fd)
		if err != nil {
			t.Fatal(err)
		}
		h, err := handshakes([]int{port})
		if err != nil || n != want || h != 0 {
			t.Fatalf("%s: %d queued, %d handshakes, %v; want %d, 0", when, n, h, err, want)
		}
	}
	pending("before the hold", 3)
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
	pending("while held", 3)
	for range 3 {
		nfd, _, err := syscall.Accept(fd)
		if err != nil {
			t.Fatal(err)
		}
		syscall.Close(nfd)
	}
	pending("after accepting", 0)
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
	var answered, shutdown, refused, cut, dialErr atomic.Int64
	var cutErr atomic.Value // of string
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
				if errors.Is(err, syscall.ECONNREFUSED) {
					refused.Add(1)
					time.Sleep(5 * time.Millisecond)
					continue
				}
				if err != nil {
					// A timeout: a SYN the hold dropped was still
					// dropped at its retransmissions.
					dialErr.Add(1)
					cutErr.Store(err.Error())
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
					cutErr.Store(fmt.Sprintf("read %q, then %v", buf[:n], err))
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
	t.Logf("answered %d, 421 %d, refused %d, cut %d, failed dials %d", answered.Load(), shutdown.Load(), refused.Load(), cut.Load(), dialErr.Load())
	if n := cut.Load() + dialErr.Load(); n > 0 {
		t.Errorf("%d connections cut without a reply, %d dials neither connected nor refused (the last: %v)", cut.Load(), dialErr.Load(), cutErr.Load())
	}
	if answered.Load() == 0 || refused.Load() == 0 {
		t.Error("the flood did not span the server's life and its end")
	}
}

// TestListenerHoldFilter sends hand-made segments to a held listener
// over a raw socket (CAP_NET_RAW): a SYN gets no SYN-ACK (dropped), while a
// lone ACK passes the filter and the listener answers it with RST, as
// Linux does for an ACK matching no handshake. So the last ACK of a
// handshake under way at the hold reaches its listener. Before the hold,
// the same SYN gets its SYN-ACK, so the silence is the filter's.
func TestListenerHoldFilter(t *testing.T) {
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(fd)
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 16); err != nil {
		t.Fatal(err)
	}
	sa, _ := syscall.Getsockname(fd)
	port := uint16(sa.(*syscall.SockaddrInet4).Port)

	raw, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_RAW|syscall.SOCK_CLOEXEC, syscall.IPPROTO_TCP)
	if errors.Is(err, syscall.EPERM) {
		t.Skipf("raw sockets need CAP_NET_RAW (root): %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(raw)
	// The raw socket gets a copy of every TCP segment on the machine:
	// keep only the listener's (its source port, after the IP header),
	// with room for them, so that other tests' traffic cannot crowd them
	// out.
	keep := []unix.SockFilter{
		{Code: unix.BPF_LDX | unix.BPF_B | unix.BPF_MSH, K: 0}, // x = IP header length
		{Code: unix.BPF_LD | unix.BPF_H | unix.BPF_IND, K: 0},  // the source port
		{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, K: uint32(port), Jf: 1},
		{Code: unix.BPF_RET | unix.BPF_K, K: 0xffff},
		{Code: unix.BPF_RET | unix.BPF_K, K: 0},
	}
	if err := unix.SetsockoptSockFprog(raw, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &unix.SockFprog{Len: uint16(len(keep)), Filter: &keep[0]}); err != nil {
		t.Fatal(err)
	}
	_ = syscall.SetsockoptInt(raw, syscall.SOL_SOCKET, syscall.SO_RCVBUF, 1<<20)
	tv := syscall.NsecToTimeval(int64(50 * time.Millisecond))
	if err := syscall.SetsockoptTimeval(raw, syscall.SOL_SOCKET, syscall.SO_RCVTIMEO, &tv); err != nil {
		t.Fatal(err)
	}
	const (
		syn, rst, ack = 0x02, 0x04, 0x10
	)
	// reply sends a segment with flags from src to the listener and
	// returns the flags of the listener's answer to src, or 0 when there
	// was none within wait.
	reply := func(src uint16, flags byte, wait time.Duration) byte {
		seg := tcpSegment(src, port, flags)
		if err := syscall.Sendto(raw, seg, 0, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 1500)
		for end := time.Now().Add(wait); time.Now().Before(end); {
			n, _, err := syscall.Recvfrom(raw, buf, 0)
			if err != nil {
				continue // the receive timeout; look at the clock again
			}
			ihl := int(buf[0]&0x0f) * 4
			if n < ihl+20 {
				continue
			}
			h := buf[ihl:n]
			if uint16(h[0])<<8|uint16(h[1]) == port && uint16(h[2])<<8|uint16(h[3]) == src {
				return h[13]
			}
		}
		return 0
	}
	src := uint16(40000 + time.Now().UnixNano()%10000)
	next := func() uint16 { src++; return src }
	// answered sends flags from fresh ports, up to three times, until the
	// listener answers with flags including want; it returns the last
	// answer's flags.
	answered := func(flags, want byte) (got byte) {
		for range 3 {
			if got = reply(next(), flags, time.Second); got&want == want && got != 0 {
				return got
			}
		}
		return got
	}
	if got := answered(syn, syn|ack); got != syn|ack {
		t.Fatalf("SYN before the hold: answered with flags %#x, want SYN-ACK", got)
	}
	if err := listenerHold(fd); err != nil {
		t.Fatal(err)
	}
	if got := reply(next(), syn, 300*time.Millisecond); got != 0 {
		t.Errorf("SYN to a held listener: answered with flags %#x, want no answer", got)
	}
	if got := answered(ack, rst); got&rst == 0 {
		t.Errorf("ACK to a held listener: answered with flags %#x, want RST (the ACK passed the filter)", got)
	}
	if got := answered(syn|ack, rst); got&rst == 0 {
		t.Errorf("SYN-ACK to a held listener: answered with flags %#x, want RST (only a lone SYN is dropped)", got)
	}
}

// tcpSegment is a 20-byte TCP header from 127.0.0.1:src to 127.0.0.1:dst
// with flags, its checksum over the IPv4 pseudo-header.
func tcpSegment(src, dst uint16, flags byte) []byte {
	h := make([]byte, 20)
	h[0], h[1], h[2], h[3] = byte(src>>8), byte(src), byte(dst>>8), byte(dst)
	h[7] = 0x10                 // sequence number
	h[11] = 0x20                // acknowledgment number
	h[12] = 5 << 4              // data offset: 5 words
	h[13] = flags               //
	h[14], h[15] = 0xff, 0xff   // window
	var sum uint32 = 127<<8 + 1 // source address 127.0.0.1, in 16-bit words
	sum += 127<<8 + 1           // destination address
	sum += syscall.IPPROTO_TCP + uint32(len(h))
	for i := 0; i < len(h); i += 2 {
		sum += uint32(h[i])<<8 | uint32(h[i+1])
	}
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	c := ^uint16(sum)
	h[16], h[17] = byte(c>>8), byte(c)
	return h
}
