package server

// Closing the listeners without cutting anyone. When a listening socket
// closes, the kernel resets every connection whose handshake it has
// completed but nobody has accepted yet, and every handshake still under
// way: the client saw its connect() succeed and then reads nothing, not
// even the 421 a draining server answers. Behind a load balancer that is
// a cut session rather than a connection refused, which the balancer
// would have retried on another MX at once (HAProxy's "option
// redispatch"). So before gnet closes the listeners, quiesce stops new
// handshakes (listenerHold, per OS), waits until no handshake is under way
// and the accept queues are empty (every connection in them got OnOpen's
// 421), and only then lets Stop close them. A SYN dropped meanwhile is
// sent again by the client (Linux waits a second, then two more) and
// then refused: a connection refused, which a balancer retries elsewhere
// and a sending MTA retries later.
//
// It is a bounded wait, not a proof: a handshake whose last ACK comes
// after quiesceWait, or a socket gnet's acceptor took and has not yet
// handed to its loop past the settling time, is still cut. Both are
// logged when counted.

import (
	"bytes"
	"errors"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/panjf2000/gnet/v2"
)

const (
	// quiesceWait bounds how long quiesce waits: a handshake's last ACK
	// comes one round trip after the SYN-ACK (or after the SYN-ACK's
	// retransmission, a second later, if one was lost).
	quiesceWait = 2 * time.Second
	// quiesceSettle is how long quiesce waits once all is quiet before it
	// looks again. gnet's acceptor hands each socket it accepts to its
	// loop by a task, which must run (OnOpen, the 421) before the loop's
	// stop task.
	quiesceSettle = 50 * time.Millisecond
	// quiescePoll is how often it looks while something is pending.
	quiescePoll = 5 * time.Millisecond
)

// listenerFDs returns a duplicate descriptor of each listener of eng
// (the same socket; the caller closes them), or the first error.
func (s *Server) listenerFDs(eng gnet.Engine) ([]int, error) {
	var fds []int
	for _, a := range append(slices.Clip(s.cfg.Listen), s.cfg.ProxyListen...) {
		u, err := listenURL(a)
		if err == nil {
			_, addr, _ := strings.Cut(u, "://")
			var fd int
			if fd, err = eng.DupListener("tcp", addr); err == nil {
				fds = append(fds, fd)
				continue
			}
		}
		closeFDs(fds)
		return nil, err
	}
	return fds, nil
}

func closeFDs(fds []int) {
	for _, fd := range fds {
		_ = syscall.Close(fd)
	}
}

// errNoHold is listenerHold's answer where the system has no way to hold
// a listener (quiesce_other.go): the listeners then close as gnet closes
// them, as they always do there, which is not worth a warning.
var errNoHold = errors.New("not supported on this system")

// quiesced is what quiesce saw at its end: connections queued for
// accepting and handshakes under way (closing the listeners resets
// both), and why the listeners could not be held or watched, if so.
type quiesced struct {
	queued, handshakes int
	err                error
}

// quiesce stops the listeners of eng taking new connections and waits,
// at most quiesceWait, until no connection is queued for accepting, no
// handshake is under way, and OnOpen has been quiet for quiesceSettle.
func (s *Server) quiesce(eng gnet.Engine) quiesced {
	fds, err := s.listenerFDs(eng)
	if err != nil {
		return quiesced{err: err}
	}
	defer closeFDs(fds)
	for _, fd := range fds {
		if err := listenerHold(fd); err != nil {
			return quiesced{err: err}
		}
	}
	deadline := time.Now().Add(quiesceWait)
	var opened uint64
	for settled := false; ; {
		var q quiesced
		var ports []int
		for _, fd := range fds {
			n, port, err := acceptQueue(fd)
			if err != nil {
				return quiesced{err: err}
			}
			q.queued += n
			if !slices.Contains(ports, port) {
				ports = append(ports, port)
			}
		}
		if q.handshakes, err = handshakes(ports); err != nil {
			return quiesced{err: err}
		}
		now := s.opens.Load()
		switch quiet := q.queued == 0 && q.handshakes == 0; {
		case quiet && settled && now == opened:
			return q
		case time.Now().After(deadline):
			return q
		case quiet:
			// Once more after the settling time, and again for as long
			// as connections still reach OnOpen.
			opened, settled = now, true
			time.Sleep(quiesceSettle)
		default:
			settled = false
			time.Sleep(quiescePoll)
		}
	}
}

// synRecv counts the rows of a /proc/net/tcp or tcp6 table b in state
// SYN_RECV (03) whose local port is port. A row is "sl: local remote st
// ...", each address hex "ADDR:PORT".
func synRecv(b []byte, port int) int {
	n := 0
	for len(b) > 0 {
		line := b
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			line, b = b[:i], b[i+1:]
		} else {
			b = nil
		}
		f := bytes.Fields(line)
		if len(f) < 4 || string(f[3]) != "03" {
			continue
		}
		local := f[1]
		i := bytes.LastIndexByte(local, ':')
		if i < 0 {
			continue
		}
		if p, err := strconv.ParseUint(string(local[i+1:]), 16, 16); err == nil && int(p) == port {
			n++
		}
	}
	return n
}
