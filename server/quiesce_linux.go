package server

import (
	"errors"
	"io/fs"
	"os"

	"golang.org/x/sys/unix"
)

// listenerHold makes the listening socket fd drop every SYN that is not
// also an ACK: a socket filter (classic BPF) runs on the listener for each
// segment that reaches it, with the TCP header at offset 0, whose byte 13
// holds the flags. The last ACK of a handshake already under way still
// passes, so that connection is queued and answered (421) rather than
// left half-open. A socket the listener creates gets a copy of its
// filter; a SYN never reaches an established connection's socket, so the
// copy drops nothing there (a RST, which may lack ACK, still passes).
func listenerHold(fd int) error {
	const syn, ack = 0x02, 0x10
	prog := []unix.SockFilter{
		{Code: unix.BPF_LD | unix.BPF_B | unix.BPF_ABS, K: 13},          // the flags
		{Code: unix.BPF_ALU | unix.BPF_AND | unix.BPF_K, K: syn | ack},  // SYN and ACK
		{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, K: syn, Jf: 1}, // SYN alone?
		{Code: unix.BPF_RET | unix.BPF_K, K: 0},                         // drop
		{Code: unix.BPF_RET | unix.BPF_K, K: 0xffffffff},                // keep it all
	}
	fp := unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]}
	return unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &fp)
}

// acceptQueue is how many connections on the listening socket fd have
// completed their handshake and wait to be accepted (for a listener,
// Linux reports that count in TCP_INFO's tcpi_unacked), and its port.
func acceptQueue(fd int) (queued, port int, err error) {
	info, err := unix.GetsockoptTCPInfo(fd, unix.IPPROTO_TCP, unix.TCP_INFO)
	if err != nil {
		return 0, 0, err
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return 0, 0, err
	}
	switch sa := sa.(type) {
	case *unix.SockaddrInet4:
		port = sa.Port
	case *unix.SockaddrInet6:
		port = sa.Port
	}
	return int(info.Unacked), port, nil
}

// handshakes is how many handshakes to the ports are under way
// (SYN_RECV, in /proc/net/tcp and tcp6: the kernel shows its pending
// requests there, and nowhere per socket).
func handshakes(ports []int) (int, error) {
	n := 0
	for _, table := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		b, err := os.ReadFile(table)
		if errors.Is(err, fs.ErrNotExist) {
			continue // no IPv6 here
		}
		if err != nil {
			return 0, err
		}
		for _, p := range ports {
			n += synRecv(b, p)
		}
	}
	return n, nil
}
