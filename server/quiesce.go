package server

// Closing the listeners without cutting anyone. When a listening socket
// closes, the kernel resets every connection whose handshake it has
// completed but nobody has accepted yet: the client saw its connect()
// succeed and then reads nothing, not even the 421 a draining server
// answers. Behind a load balancer that is a cut session rather than a
// connection refused, which the balancer would have retried on another
// MX at once (HAProxy's "option redispatch"). So before gnet closes the
// listeners, quiesce stops new handshakes (listenerHold, per OS), waits
// until the accept queues are empty (every connection in them got
// OnOpen's 421), and only then lets Stop close them. A SYN dropped
// meanwhile is sent again after a second (Linux's first retransmission),
// and then refused: a connection refused, which a balancer retries
// elsewhere and a sending MTA retries later.

import (
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/panjf2000/gnet/v2"
)

const (
	// quiesceWait bounds how long quiesce waits for the accept queues.
	quiesceWait = time.Second
	// quiesceSettle is how long quiesce waits once the queues are
	// empty before it looks again. gnet's acceptor hands each socket it
	// accepts to its loop by a task, which must run (OnOpen, the 421)
	// before the loop's stop task; and a handshake under way at the hold
	// completes into the queue when its last ACK arrives.
	quiesceSettle = 20 * time.Millisecond
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

// quiesce stops the listeners of eng taking new connections and waits
// until none is queued for accepting, at most quiesceWait. It returns how
// many connections were still queued (closing the listeners resets
// them), and false if the listeners could not be held, so that closing
// them may reset what arrives until then.
func (s *Server) quiesce(eng gnet.Engine) (queued int, held bool) {
	fds, err := s.listenerFDs(eng)
	if err != nil {
		return 0, false
	}
	defer closeFDs(fds)
	held = true
	for _, fd := range fds {
		if listenerHold(fd) != nil {
			held = false
		}
	}
	deadline := time.Now().Add(quiesceWait)
	for settled := false; ; {
		queued = 0
		for _, fd := range fds {
			n, err := acceptQueue(fd)
			if err != nil {
				return 0, held // not known here: nothing to wait for
			}
			queued += n
		}
		switch {
		case queued == 0 && settled:
			return 0, held
		case time.Now().After(deadline):
			return queued, held
		case queued == 0:
			// Empty; once more after the settling time, for the
			// handshakes that were under way.
			time.Sleep(quiesceSettle)
			settled = true
		default:
			time.Sleep(2 * time.Millisecond)
			settled = false
		}
	}
}
