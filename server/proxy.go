package server

// PROXY protocol listeners (proxy_listen). A connection accepted there
// belongs to a proxy (HAProxy, a cloud load balancer) relaying a client:
// before anything else it must send a PROXY header naming that client
// (haproxy.org's doc/proxy-protocol.txt, "the spec"). Only peers in
// proxy_trusted may; others are closed at once, without a byte, since the
// spec leaves a receiver no way to answer a header it will not believe. The
// header is parsed on the loop straight from gnet's inbound buffer
// (proxyproto.Parse neither copies nor allocates) under proxy_timeout,
// before the greeting: nothing is sent until it is complete (spec 2: "The
// receiver MUST NOT start processing the connection before it receives a
// complete and valid PROXY protocol header"), so greeting_delay and the
// early-talker test start only after it. Then the connection is admitted
// as if the client had connected directly: its address is the one every
// limit, check, log line and Received header uses, and the log names the
// proxy too. A v2 LOCAL header (HAProxy's health check) or a v1 UNKNOWN
// one carries no client: the connection is the proxy's own and is served
// as such (HAProxy's "option smtpchk" wants the 220 and a 250 to HELO).
//
// On an ordinary listen address nothing of this applies: the spec forbids
// guessing whether a header is there, so "PROXY ..." is just an unknown
// command.

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/panjf2000/gnet/v2"

	"github.com/nanomx/nanomx/proto"
	"github.com/nanomx/nanomx/server/proxyproto"
)

// validateProxy checks proxy_listen, proxy_trusted and proxy_timeout.
func (c *Config) validateProxy() error {
	for _, a := range c.ProxyListen {
		if err := checkListenAddr(a); err != nil {
			return &ConfigError{Key: "proxy_listen", Err: err}
		}
		if slices.Contains(c.Listen, a) {
			return &ConfigError{Key: "proxy_listen", Err: fmt.Errorf("%q is in listen too: a port either expects the PROXY header or does not (the spec forbids guessing)", a)}
		}
	}
	if _, err := parseTrusted(c.ProxyTrusted); err != nil {
		return err
	}
	if c.ProxyTimeout < time.Second || c.ProxyTimeout > 5*time.Minute {
		return &ConfigError{Key: "proxy_timeout", Err: errors.New("must be between 1s and 5m")}
	}
	return nil
}

// parseTrusted parses proxy_trusted: CIDR prefixes, or single addresses.
func parseTrusted(list []string) ([]netip.Prefix, error) {
	out := make([]netip.Prefix, 0, len(list))
	for _, s := range list {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			a, aerr := netip.ParseAddr(s)
			if aerr != nil || a.Zone() != "" {
				return nil, &ConfigError{Key: "proxy_trusted", Err: fmt.Errorf("%q is neither a CIDR prefix (10.0.0.0/8) nor an address", s)}
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		if p.Addr().Is4In6() {
			// Peers are compared unmapped: ::ffff:10.0.0.0/104 would match none.
			return nil, &ConfigError{Key: "proxy_trusted", Err: fmt.Errorf("%q: write IPv4-mapped prefixes as IPv4", s)}
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

// resolveProxyListen returns the proxy_listen addresses as gnet will bind
// them: gnet v2.9.7 resolves each with net.ResolveTCPAddr and gives every
// connection it accepts that address as its LocalAddr (the listener's, not
// the socket's own: 0.0.0.0:2526 stays 0.0.0.0:2526), so a connection is
// a proxy_listen one when its LocalAddr is one of these. probeListen has
// bound them all already, so two listeners never share one.
func resolveProxyListen(list []string) ([]netip.AddrPort, error) {
	var out []netip.AddrPort
	for _, a := range list {
		u, err := listenURL(a)
		if err != nil {
			return nil, &ConfigError{Key: "proxy_listen", Err: err}
		}
		network, addr, _ := strings.Cut(u, "://")
		ta, err := net.ResolveTCPAddr(network, addr)
		if err != nil {
			return nil, &ListenError{Addr: a, Err: listenCause(err)}
		}
		out = append(out, bindKey(ta))
	}
	return out, nil
}

// bindKey is a listener address in comparable form; an empty host (every
// address) has the zero Addr.
func bindKey(a net.Addr) netip.AddrPort {
	ta, ok := a.(*net.TCPAddr)
	if !ok {
		return netip.AddrPort{}
	}
	ip, _ := netip.AddrFromSlice(ta.IP)
	return netip.AddrPortFrom(ip.Unmap(), uint16(ta.Port))
}

// proxyListener reports whether gnet accepted a connection on a
// proxy_listen address; local is its LocalAddr.
func (s *Server) proxyListener(local net.Addr) bool {
	return len(s.proxyBinds) > 0 && slices.Contains(s.proxyBinds, bindKey(local))
}

// trusts reports whether peer may send a PROXY header.
func (lv *live) trusts(peer netip.Addr) bool {
	for _, p := range lv.trusted {
		if p.Contains(peer) {
			return true
		}
	}
	return false
}

// openProxied takes a connection on a proxy_listen address from peer. A
// trusted peer's connection is held, counted against max_connections but
// not yet against any client address, until readProxyHeader has its header
// or proxy_timeout passes. An untrusted peer's is closed at once.
func (s *Server) openProxied(gc gnet.Conn, peer netip.Addr) ([]byte, gnet.Action) {
	lv := s.live.Load()
	if !lv.trusts(peer) {
		s.stats.ProxyUntrusted.Add(1)
		// One line a second at most: whoever reaches the port can flood it.
		now := time.Now().UnixNano()
		if last := s.untrustedLog.Load(); now-last >= int64(time.Second) && s.untrustedLog.CompareAndSwap(last, now) {
			s.log.Warn().Stringer("remote", peer).Str("local", gc.LocalAddr().String()).
				Msg("connection to a proxy_listen address from a peer not in proxy_trusted: closed")
		}
		return nil, gnet.Close
	}
	now := time.Now()
	c := &conn{
		srv:       s,
		lv:        lv,
		gc:        gc,
		remote:    peer,
		proxy:     &peer,
		proxyWait: true,
		ip:        &ipState{}, // its own until the header names the client
		opened:    now.UnixNano(),
		n:         s.nextSID.Add(1),
	}
	c.deadline.Store(now.Add(lv.cfg.ProxyTimeout).UnixNano())
	s.mu.Lock()
	if len(s.conns) >= lv.cfg.MaxConnections {
		s.mu.Unlock()
		s.stats.Refused.Add(1)
		// What the client behind the proxy would get connecting directly.
		return proto.ReplyTooManyConns.Bytes(), gnet.Close
	}
	s.conns[c] = struct{}{}
	s.mu.Unlock()
	_ = gc.SetKeepAlivePeriod(2 * time.Minute)
	gc.SetContext(c)
	return nil, gnet.None
}

// readProxyHeader reads the header of a connection openProxied holds, from
// gnet's buffer, which keeps a partial header for the next call. Once the
// header is complete it admits the connection for the client it names,
// sends the greeting (unless greeting_delay or a connect check holds it)
// and returns the new session's conn, which serves the bytes after the
// header. It returns nil and what to do when the connection must wait for
// more or end: a bad header, proxy_timeout, the drain, or a limit.
func (c *conn) readProxyHeader(gc gnet.Conn) (*conn, gnet.Action) {
	s := c.srv
	if f := c.flags.Load(); f != 0 {
		if f&flagTimeout != 0 {
			c.reason = "no PROXY header within proxy_timeout"
			s.stats.ProxyFailed.Add(1)
		} else {
			c.reason = "shutdown"
		}
		return nil, gnet.Close // nothing was said; nothing to say
	}
	in, _ := gc.Peek(-1)
	h, n, more, err := proxyproto.Parse(in)
	switch {
	case err != nil:
		c.reason = "bad PROXY header: " + strings.TrimPrefix(err.Error(), "proxyproto: ")
		s.stats.ProxyFailed.Add(1)
		return nil, gnet.Close
	case more:
		return nil, gnet.None // Parse never asks for more than proxyproto.MaxBytes
	}
	_, _ = gc.Discard(n) // n > 0
	s.stats.ProxyHeaders.Add(1)
	client := c.remote
	if h.Source.IsValid() {
		client = h.Source.Addr().Unmap()
	}
	if h.Command == proxyproto.CmdLocal {
		s.stats.ProxyLocal.Add(1)
	}
	// The held conn gives way to the session admit makes; it logs nothing.
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
	gc.SetContext(nil)
	out, action := s.admit(gc, client, c.proxy)
	if len(out) > 0 {
		_, _ = gc.Write(out)
	}
	nc, ok := gc.Context().(*conn)
	if action == gnet.Close || !ok {
		return nil, gnet.Close
	}
	if s.debug() {
		nc.log().Debug().Uint8("version", h.Version).Stringer("family", h.Family).
			Bool("local", h.Command == proxyproto.CmdLocal).Msg("PROXY header read")
	}
	return nc, gnet.None
}

// logProxyReady adds the proxy listeners to the start-up lines.
func (s *Server) logProxyReady() {
	if len(s.cfg.ProxyListen) == 0 {
		return
	}
	s.log.Info().Strs("proxy_listen", s.cfg.ProxyListen).Strs("proxy_trusted", s.cfg.ProxyTrusted).Msg("PROXY protocol listeners ready")
	if len(s.cfg.ProxyTrusted) == 0 {
		s.log.Warn().Msg("proxy_trusted is empty: every connection to proxy_listen is refused")
	}
}
