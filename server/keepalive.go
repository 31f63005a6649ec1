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
	"slices"
	"strings"
	"syscall"
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
	for _, a := range append(slices.Clip(s.cfg.Listen), s.cfg.ProxyListen...) {
		u, err := listenURL(a)
		if err != nil {
			return false
		}
		_, addr, _ := strings.Cut(u, "://")
		fd, err := eng.DupListener("tcp", addr) // the same socket
		if err != nil {
			return false
		}
		err = socket.SetKeepAlivePeriod(fd, int(keepAlivePeriod/time.Second))
		_ = syscall.Close(fd)
		if err != nil {
			return false
		}
	}
	return true
}
