package server

// TCP keep-alive, set once per listener. A dead peer must not hold a
// connection slot forever, so every connection has keep-alive: idle for
// keepAlivePeriod, then 5 probes a fifth of that apart. Set on each
// connection in OnOpen, that is four setsockopt calls per connection;
// Linux gives a socket it accepts the listening socket's SO_KEEPALIVE,
// TCP_KEEPIDLE, TCP_KEEPINTVL and TCP_KEEPCNT, so OnBoot sets them on the
// listeners (before gnet accepts anything) and OnOpen only where that
// failed. gnet's WithTCPKeepAlive would do the same but hides a failed
// bind (server.go). A detached session's socket is the same socket
// (fdconn.go): it keeps them.

import (
	"time"

	"github.com/panjf2000/gnet/v2"
	"github.com/panjf2000/gnet/v2/pkg/socket"
)

// keepAlivePeriod is how long a connection is idle before the first
// keep-alive probe.
const keepAlivePeriod = 2 * time.Minute

// listenerKeepAlive sets keep-alive on every listener of eng; false when
// one could not be set, or accepted sockets do not inherit it here.
func (s *Server) listenerKeepAlive(eng gnet.Engine) bool {
	if !keepAliveInherited {
		return false
	}
	fds, err := s.listenerFDs(eng) // quiesce.go
	if err != nil {
		return false
	}
	defer closeFDs(fds)
	for _, fd := range fds {
		if socket.SetKeepAlivePeriod(fd, int(keepAlivePeriod/time.Second)) != nil {
			return false
		}
	}
	return true
}
