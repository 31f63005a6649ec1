package metrics

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"time"
)

// CheckAddr refuses an address to serve metrics on that is not host:port
// or, unless allowPublic, not a loopback one (127.0.0.0/8, [::1],
// localhost): the counters tell an outsider how busy the server is and
// which of its mailboxes exist (the reject reasons), so they are kept
// local, like pprof, unless the operator says otherwise.
func CheckAddr(addr string, allowPublic bool) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%q is not host:port", addr)
	}
	if port == "" {
		return fmt.Errorf("%q has no port", addr)
	}
	if allowPublic || host == "localhost" {
		return nil
	}
	if ip, err := netip.ParseAddr(host); err == nil && ip.Unmap().IsLoopback() {
		return nil
	}
	return fmt.Errorf("%q is not a loopback address: metrics listen only on 127.0.0.0/8, [::1] or localhost unless metrics_allow_public = true", addr)
}

// Handler serves r at any path it is mounted on, for GET and HEAD.
func Handler(r *Registry) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.Method != http.MethodGet && req.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		w.Header().Set("Content-Type", ContentType)
		if req.Method == http.MethodHead {
			return
		}
		_, _ = r.WriteTo(w)
	})
}

// Server is the metrics endpoint: r at /metrics on a listener of its own.
type Server struct {
	ln  net.Listener
	srv *http.Server
}

// Listen binds addr (checked by CheckAddr first). Serving starts with
// Serve, so that a taken port is reported before anything else starts.
func Listen(addr string) (*Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	return &Server{
		ln: ln,
		srv: &http.Server{
			ReadHeaderTimeout: 10 * time.Second,
			WriteTimeout:      30 * time.Second,
			IdleTimeout:       2 * time.Minute,
			MaxHeaderBytes:    8 << 10,
		},
	}, nil
}

// Addr is the address bound.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Serve serves r at /metrics on a goroutine of its own until Close;
// failed is told why serving stopped early (not called after Close).
func (s *Server) Serve(r *Registry, failed func(error)) {
	mux := http.NewServeMux()
	mux.Handle("/metrics", Handler(r))
	s.srv.Handler = mux
	go func() {
		if err := s.srv.Serve(s.ln); !errors.Is(err, http.ErrServerClosed) && failed != nil {
			failed(err)
		}
	}()
}

// Close stops serving (and closes the listener, served or not).
func (s *Server) Close() error {
	err := s.srv.Close()
	_ = s.ln.Close()
	return err
}
