package server

import "golang.org/x/sys/unix"

// listenerHold makes the listening socket fd drop every segment without
// ACK, so every SYN: a socket filter (classic BPF) runs on the listener
// for each segment that reaches it, with the TCP header at offset 0, and
// byte 13 holds its flags. The last ACK of a handshake already under way
// still passes, so that connection is queued and answered (421) rather
// than left half-open. A socket created by the listener gets a copy of
// its filter; every segment of an established connection has ACK set.
func listenerHold(fd int) error {
	const ack = 0x10
	prog := []unix.SockFilter{
		{Code: unix.BPF_LD | unix.BPF_B | unix.BPF_ABS, K: 13},           // the flags
		{Code: unix.BPF_JMP | unix.BPF_JSET | unix.BPF_K, K: ack, Jf: 1}, // ACK set?
		{Code: unix.BPF_RET | unix.BPF_K, K: 0xffffffff},                 // keep it all
		{Code: unix.BPF_RET | unix.BPF_K, K: 0},                          // drop
	}
	fp := unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]}
	return unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &fp)
}

// acceptQueue is how many connections on the listening socket fd have
// completed their handshake and wait to be accepted: for a listener,
// Linux reports that count in TCP_INFO's tcpi_unacked.
func acceptQueue(fd int) (int, error) {
	info, err := unix.GetsockoptTCPInfo(fd, unix.IPPROTO_TCP, unix.TCP_INFO)
	if err != nil {
		return 0, err
	}
	return int(info.Unacked), nil
}
