// Package server wires the gnet reactor to the SMTP sessions of package
// proto and the Maildir workers of package spool: connection limits,
// timeouts, memory budgets, and turning spool outcomes into replies.
//
// Threading: each connection belongs to one gnet event loop, which alone
// touches its proto.Session and its body buffer. Spool workers hand a
// result back by storing it in the connection (an atomic) and calling
// gnet's Wake, which runs OnTraffic on the loop again. OnTick runs on its
// own goroutine and only reads atomics and calls Wake.
//
// Buffer lifetimes: the bytes gnet's Peek returns in OnTraffic are
// borrowed until Discard. Nothing keeps them: proto copies envelope fields
// into its per-session arena and message bytes into the body buffer (a
// bytebufferpool buffer owned by the connection until it is handed to the
// spool, which returns it to the pool after the message is durable).
package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/panjf2000/gnet/v2"
	"github.com/rs/zerolog"

	"github.com/nanomx/nanomx/proto"
	"github.com/nanomx/nanomx/server/addrbook"
	"github.com/nanomx/nanomx/server/metrics"
	"github.com/nanomx/nanomx/server/resolver"
	"github.com/nanomx/nanomx/spool"
)

// Server is a running MX: one gnet engine and one spool.
type Server struct {
	gnet.BuiltinEventEngine

	cfg   Config // as started; Reload changes live, not this
	log   zerolog.Logger
	spool *spool.Spool
	// deliver is where accepted messages go (deliver.go): the spool's
	// Maildirs or an LMTP server; lmtpRcpt is the RCPT check of
	// lmtp_check_rcpt, nil when off.
	deliver  delivery
	lmtpRcpt *lmtpRcpt
	// live holds the reloadable settings; each connection keeps the ones
	// in force when it opened.
	live atomic.Pointer[live]

	eng    gnet.Engine
	booted chan struct{}

	// budget is the body memory still free, in bytes (Config.BodyBudgetBytes
	// minus every reservation). Loops reserve, workers' callbacks release.
	budget atomic.Int64

	// mu guards conns and perIP; OnOpen/OnClose (loops), OnTick and the
	// drain read or change them.
	mu    sync.Mutex
	conns map[*conn]struct{}
	perIP map[netip.Addr]*ipState

	draining    atomic.Bool
	opens       atomic.Uint64 // OnOpen calls, for quiesce
	loopsSeen   atomic.Int32  // event loops whose thread noteLoop has (sched_batch)
	loopTids    []int         // those threads; guarded by sched.mu
	tlsSessions atomic.Int64  // TLS slots taken (MaxTLSSessions)
	idBase      string
	nextID      atomic.Uint64
	nextSID     atomic.Uint64

	stats Stats

	// resolver is the one DNS layer the checks share (built in New; it
	// sends nothing until asked).
	resolver *resolver.Resolver
	// proxyBinds are the proxy_listen addresses as gnet binds them
	// (proxy.go); untrustedLog rate-limits the log line about untrusted
	// peers (Unix ns of the last one).
	proxyBinds   []netip.AddrPort
	untrustedLog atomic.Int64
	m            *serverMetrics // nil: metrics off
	rejectLog    *rejectLimiter // reject lines per client (rejectlog.go)
	// auth is sender authentication, nil when all its checks are off;
	// dropField its rule for forged Authentication-Results fields.
	auth      *authChecker
	dropField func([]byte) bool

	// keepAliveSet: the listeners have keep-alive, which the sockets they
	// accept inherit (keepalive.go); set in OnBoot, before any accept.
	keepAliveSet bool
}

// Stats are the server's counters. Tests read them; nothing exports them
// to operators yet (the metrics endpoint is issue 12's).
type Stats struct {
	Accepted  atomic.Uint64 // connections served
	Refused   atomic.Uint64 // connections refused by a limit
	Delivered atomic.Uint64 // messages answered 250
	Failed    atomic.Uint64 // messages answered 4xx/5xx after the data
	TimedOut  atomic.Uint64 // sessions closed by a deadline

	EarlyTalkers atomic.Uint64 // clients that spoke before the greeting
	NotReading   atomic.Uint64 // closed: replies unread, input piling up

	TLSSessions   atomic.Uint64 // successful handshakes
	TLSFailed     atomic.Uint64 // failed handshakes
	TLSRefused    atomic.Uint64 // STARTTLS answered 454: no TLS slot
	TLSInjections atomic.Uint64 // input pipelined after STARTTLS, dropped

	ProxyHeaders   atomic.Uint64 // PROXY headers read (LOCAL ones included)
	ProxyLocal     atomic.Uint64 // of which v2 LOCAL (health checks)
	ProxyUntrusted atomic.Uint64 // proxy_listen peers not in proxy_trusted, closed
	ProxyFailed    atomic.Uint64 // bad or missing headers (timeout), closed
}

// Check validates cfg as Run would, address book included, without
// starting anything. Errors are *ConfigError.
func Check(cfg Config) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	if _, err := loadTLS(cfg); err != nil {
		return err
	}
	_, err := newBook(cfg)
	return err
}

func newBook(cfg Config) (*addrbook.Book, error) {
	b, err := addrbook.New(addrbook.Config{
		Domains:             cfg.Domains,
		Postmaster:          cfg.Postmaster,
		Mailboxes:           cfg.Mailboxes,
		Aliases:             cfg.Aliases,
		CatchAll:            cfg.CatchAll,
		SubaddressSeparator: cfg.SubaddressSeparator,
	})
	var ce *addrbook.ConfigError
	if errors.As(err, &ce) {
		return nil, &ConfigError{Key: ce.Key, Err: ce.Err}
	}
	return b, err
}

// New builds a server from cfg: it validates it, checks that every listen
// address can be bound, opens the spool (which cleans stale tmp/ files) and
// prepares the SMTP dialect. A listen address that cannot be bound is a
// *ListenError, returned before the spool is touched: a second nanomx on a
// taken port must not clean the running one's tmp/ files.
func New(cfg Config) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := probeListen(append(slices.Clip(cfg.Listen), cfg.ProxyListen...)); err != nil {
		return nil, err
	}
	proxyBinds, err := resolveProxyListen(cfg.ProxyListen)
	if err != nil {
		return nil, err
	}
	var mln *metrics.Server
	if cfg.MetricsAddr != "" {
		ln, err := metrics.Listen(cfg.MetricsAddr)
		if err != nil {
			return nil, &ListenError{Addr: cfg.MetricsAddr, Err: listenCause(err)}
		}
		mln = ln
		defer func() {
			if mln != nil { // New failed after all
				_ = mln.Close()
			}
		}()
	}
	book, err := newBook(cfg)
	if err != nil {
		return nil, err
	}
	lv, err := newLive(cfg)
	if err != nil {
		return nil, err
	}
	lv.book = book
	res, err := newResolver(cfg)
	if err != nil {
		return nil, err
	}
	// Screening is a check, after the address book (and the tests' own).
	sc, err := newScreener(cfg, lookupA(res))
	if err != nil {
		return nil, err
	}
	if sc != nil {
		cfg.checks = append(cfg.checks[:len(cfg.checks):len(cfg.checks)], sc)
	}
	var syncer spool.Syncer = spool.FsyncSyncer{}
	if !cfg.Fsync {
		syncer = spool.NoSync{}
	}
	if cfg.syncer != nil {
		syncer = cfg.syncer
	}
	sp, err := spool.New(spool.Config{
		Root:        cfg.MaildirRoot,
		Hostname:    cfg.Hostname,
		Workers:     cfg.Workers,
		QueueLength: cfg.QueueLength,
		Syncer:      syncer,
		GroupCommit: cfg.GroupCommit,
		Mailboxes:   spoolMailboxes(cfg, book),
		Log:         cfg.Log,
	})
	if err != nil {
		// A spool error names its key already (hostname, workers, ...);
		// anything else is about the Maildir root.
		var ce *spool.ConfigError
		if errors.As(err, &ce) {
			return nil, &ConfigError{Key: ce.Key, Err: ce.Err}
		}
		return nil, &ConfigError{Key: "maildir_root", Err: err}
	}
	if cfg.RspamdURL != "" {
		rc, err := newRspamdCheck(cfg)
		if err != nil {
			return nil, err
		}
		cfg.checks = append(cfg.checks[:len(cfg.checks):len(cfg.checks)], rc)
	}
	s := &Server{
		cfg:    cfg,
		log:    cfg.Log,
		spool:  sp,
		booted: make(chan struct{}),
		conns:  make(map[*conn]struct{}),
		perIP:  make(map[netip.Addr]*ipState),
		idBase: idBase(time.Now()),
	}
	s.newDelivery(cfg, sp)
	s.proxyBinds = proxyBinds
	s.budget.Store(cfg.BodyBudgetBytes)
	s.rejectLog = newRejectLimiter()
	if mln != nil {
		s.m = s.newMetrics()
		s.m.http, mln = mln, nil
		sp.OnCommit(s.m.commit)
	}
	s.countCommands(lv)
	s.live.Store(lv)
	s.resolver = res
	if a := newAuthChecker(cfg, res); a != nil {
		s.auth, s.dropField = a, a.dropField()
		s.cfg.checks = append(s.cfg.checks, a)
	}
	if cfg.RspamdURL != "" {
		// The client's X-Spam-* fields go from every message, scanned or
		// not (spilled, too large, rspamd failing with on_error accept).
		s.dropField = orDrop(s.dropField, rspamdField)
	}
	s.registerCheckMetrics()
	return s, nil
}

// debug reports whether debug lines would be written, so that callers
// build them only then. It reads zerolog's global level (an atomic) each
// time: a SIGHUP may change log_level while the server runs.
func (s *Server) debug() bool {
	return zerolog.GlobalLevel() <= zerolog.DebugLevel && s.log.GetLevel() <= zerolog.DebugLevel
}

// ListenError is a listen address that could not be bound: taken by
// another process, a port below 1024 without the privilege, an address
// this host does not have, or a name that does not resolve. Err is the
// cause, a syscall.Errno when the system refused the bind.
type ListenError struct {
	Addr string
	Err  error
}

func (e *ListenError) Error() string {
	msg := "listen " + e.Addr + ": " + e.Err.Error()
	if errors.Is(e.Err, syscall.EACCES) {
		msg += " (a port below 1024 needs root or CAP_NET_BIND_SERVICE)"
	}
	return msg
}

func (e *ListenError) Unwrap() error { return e.Err }

// probeListen binds every address as gnet will (same network, so IPv6
// literals are IPv6-only; SO_REUSEADDR, which Go sets on every listener,
// like gnet.WithReuseAddr) and closes them all again. They are held
// together so that two addresses that overlap fail as they would in gnet.
// gnet itself cannot report this well: v2.9.7 reports a failed bind as the
// error of the socket option it sets afterwards.
func probeListen(addrs []string) error {
	lns := make([]net.Listener, 0, len(addrs))
	defer func() {
		for _, ln := range lns {
			_ = ln.Close()
		}
	}()
	for _, a := range addrs {
		u, err := listenURL(a)
		if err != nil {
			return &ConfigError{Key: "listen", Err: err}
		}
		network, addr, _ := strings.Cut(u, "://")
		ln, err := net.Listen(network, addr)
		if err != nil {
			return &ListenError{Addr: a, Err: listenCause(err)}
		}
		lns = append(lns, ln)
	}
	return nil
}

// listenCause strips what net.Listen wraps around the reason ("listen tcp4
// 127.0.0.1:25: bind: "), keeping the errno or the resolver's error.
func listenCause(err error) error {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return errno
	}
	var op *net.OpError
	if errors.As(err, &op) && op.Err != nil {
		return op.Err
	}
	return err
}

// live is one generation of reloadable settings.
type live struct {
	cfg     Config
	dialect *proto.Dialect
	tls     *tls.Config // nil: no STARTTLS
	// book is the address book. Unlike the rest, which a connection keeps
	// from when it opened (conn.lv), a transaction takes the newest one at
	// MAIL (Server.live).
	book *addrbook.Book
	// host is the hostname as the spool validated it, lowercase, for the
	// Received field's "by".
	host string
	// trusted are the proxies allowed to send a PROXY header.
	trusted []netip.Prefix
}

func newLive(cfg Config) (*live, error) {
	tlsConf, err := loadTLS(cfg)
	if err != nil {
		return nil, err
	}
	trusted, err := parseTrusted(cfg.ProxyTrusted)
	if err != nil {
		return nil, err
	}
	bare := proto.BareNewlineReject
	if cfg.BareNewline == BareNewlineNormalize {
		bare = proto.BareNewlineNormalize
	}
	host := strings.ToLower(strings.TrimSpace(cfg.Hostname))
	return &live{cfg: cfg, tls: tlsConf, host: host, trusted: trusted, dialect: proto.NewDialect(proto.Config{
		Hostname:            cfg.Hostname,
		MaxLineBytes:        cfg.MaxLineBytes,
		MaxAddressAllowance: cfg.MaxAddressAllowance,
		MaxRcpts:            cfg.MaxRecipients,
		MaxMessageBytes:     cfg.MaxMessageBytes,
		MaxBadCommands:      cfg.MaxBadCommands,
		MaxJunkCommands:     cfg.MaxJunkCommands,
		BareNewline:         bare,
		StartTLS:            tlsConf != nil,
		TLSRequired:         cfg.TLSRequired,
	})}, nil
}

// Reload applies a new configuration without dropping connections (SIGHUP):
// the address book at once for every session, limits and timeouts for
// connections opened from now on. Settings fixed at start-up (listen
// addresses, Maildir root, hostname, workers, durability, event loops)
// cannot change; a config that changes them, or any invalid one, is
// refused whole with a *ConfigError and the running settings stay.
func (s *Server) Reload(cfg Config) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	old := s.live.Load().cfg
	for _, f := range []struct {
		key  string
		same bool
	}{
		{"listen", slices.Equal(cfg.Listen, old.Listen)},
		{"proxy_listen", slices.Equal(cfg.ProxyListen, old.ProxyListen)},
		{"maildir_root", cfg.MaildirRoot == old.MaildirRoot},
		{"hostname", cfg.Hostname == old.Hostname},
		{"workers", cfg.Workers == old.Workers},
		{"queue_length", cfg.QueueLength == old.QueueLength},
		{"fsync", cfg.Fsync == old.Fsync},
		{"group_commit", cfg.GroupCommit == old.GroupCommit},
		{"event_loops", cfg.EventLoops == old.EventLoops},
		{"sched_batch", cfg.SchedBatch == old.SchedBatch},
		// Screening is a check, built once in New.
		{"dnsbl_sites", slices.Equal(cfg.DNSBLSites, old.DNSBLSites)},
		{"dnsbl_threshold", cfg.DNSBLThreshold == old.DNSBLThreshold},
		{"dnsbl_action", cfg.DNSBLAction == old.DNSBLAction},
		{"screen_allow", slices.Equal(cfg.ScreenAllow, old.ScreenAllow)},
		{"max_connections_per_minute", cfg.MaxConnectionsPerMinute == old.MaxConnectionsPerMinute},
		{"max_messages_per_minute", cfg.MaxMessagesPerMinute == old.MaxMessagesPerMinute},
		{"max_recipients_per_minute", cfg.MaxRecipientsPerMinute == old.MaxRecipientsPerMinute},
		{"delivery", sameDelivery(cfg, old)},
		{"metrics", cfg.MetricsAddr == old.MetricsAddr},
		{"metrics_allow_public", cfg.MetricsAllowPublic == old.MetricsAllowPublic},
		// Sender authentication is built once, in New.
		{"spf", cfg.SPF == old.SPF},
		{"dkim", cfg.DKIM == old.DKIM},
		{"dmarc", cfg.DMARC == old.DMARC},
		{"iprev", cfg.IPRev == old.IPRev},
		{"authserv_id", cfg.AuthservID == old.AuthservID},
		{"dmarc_reject_action", cfg.DMARCRejectAction == old.DMARCRejectAction},
		{"dmarc_quarantine_action", cfg.DMARCQuarantineAction == old.DMARCQuarantineAction},
		{"spf_fail_action", cfg.SPFFailAction == old.SPFFailAction},
		{"junk_folder", cfg.JunkFolder == old.JunkFolder},
		// The rspamd check is built at start (its client, its bounds).
		{"rspamd_url", cfg.RspamdURL == old.RspamdURL},
		{"rspamd_timeout", cfg.RspamdTimeout == old.RspamdTimeout},
		{"rspamd_max_size", cfg.RspamdMaxSize == old.RspamdMaxSize},
		{"rspamd_max_concurrent", cfg.RspamdMaxConcurrent == old.RspamdMaxConcurrent},
		{"rspamd_on_error", cfg.RspamdOnError == old.RspamdOnError},
		{"rspamd_junk", cfg.RspamdJunk == old.RspamdJunk},
	} {
		if !f.same {
			return &ConfigError{Key: f.key, Err: errors.New("cannot change without a restart")}
		}
	}
	book, err := newBook(cfg)
	if err != nil {
		return err
	}
	cfg.Log, cfg.syncer = old.Log, old.syncer
	lv, err := newLive(cfg) // reloads the certificate too
	if err != nil {
		return err
	}
	lv.book = book
	// Reservations in flight stay valid; only the headroom changes.
	s.budget.Add(cfg.BodyBudgetBytes - old.BodyBudgetBytes)
	s.countCommands(lv)
	s.live.Store(lv)
	s.log.Info().Int("domains", len(cfg.Domains)).Int("mailboxes", len(cfg.Mailboxes)).Msg("configuration reloaded")
	return nil
}

// Run serves cfg until ctx is cancelled, then drains: it stops accepting,
// lets deliveries in flight finish and answer and sends 421 to idle
// sessions. It returns New's or Serve's error: nil after a clean drain.
func Run(ctx context.Context, cfg Config) error {
	s, err := New(cfg)
	if err != nil {
		return err
	}
	return s.Serve(ctx)
}

// connCount returns the number of open connections, TLS ones included.
func (s *Server) connCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

// Stats returns the server's counters.
func (s *Server) Stats() *Stats { return &s.stats }

// Serve runs the gnet engine until ctx is cancelled, then drains.
func (s *Server) Serve(ctx context.Context) error {
	defer s.serveMetrics()()
	addrs := make([]string, len(s.cfg.Listen)+len(s.cfg.ProxyListen))
	for i, a := range append(slices.Clip(s.cfg.Listen), s.cfg.ProxyListen...) {
		u, err := listenURL(a)
		if err != nil {
			_ = s.deliver.Close()
			return &ConfigError{Key: "listen", Err: err}
		}
		addrs[i] = u
	}
	if s.cfg.SchedBatch && schedSupported {
		// Before the loops run: their first OnOpen must find it started.
		defer startSchedBatch(s.log, &s.loopTids)()
	}
	errc := make(chan error, 1)
	go func() {
		errc <- gnet.Rotate(s, addrs,
			gnet.WithNumEventLoop(s.cfg.EventLoops),
			gnet.WithReusePort(false),
			// SO_REUSEADDR: a restart must not wait a minute for the
			// TIME_WAIT sockets of the last run to clear.
			gnet.WithReuseAddr(true),
			gnet.WithReadBufferCap(64<<10),
			gnet.WithTicker(true),
			// sched_batch: a loop's goroutine keeps its thread, which
			// alone stays SCHED_OTHER (schedbatch.go).
			gnet.WithLockOSThread(s.cfg.SchedBatch && schedSupported),
			// No gnet.WithTCPKeepAlive: gnet v2.9.7 then hides a failed
			// bind behind the keep-alive setsockopt's error. Keep-alive is
			// set on the listeners in OnBoot instead (keepalive.go).
			gnet.WithLogger(gnetLogger{s.log}),
		)
	}()
	select {
	case err := <-errc:
		// New bound every address a moment ago; another process took one
		// since, or gnet failed otherwise.
		_ = s.deliver.Close()
		return fmt.Errorf("listen %s: %w", strings.Join(s.cfg.Listen, ", "), listenCause(err))
	case <-s.booted:
	}
	s.raiseProcs() // procs.go
	s.log.Info().Strs("listen", s.cfg.Listen).Str("hostname", s.cfg.Hostname).
		Str("maildir_root", s.cfg.MaildirRoot).Msg("nanomx ready")
	s.logProxyReady()
	select {
	case err := <-errc:
		_ = s.deliver.Close()
		return err
	case <-ctx.Done():
	}
	s.drain()
	began := time.Now()
	switch q := s.quiesce(s.eng); { // quiesce.go
	case errors.Is(q.err, errNoHold):
		s.log.Debug().Msg("the listeners close without holding new handshakes first")
	case q.err != nil || q.queued > 0 || q.handshakes > 0:
		ev := s.log.Warn().Int("queued", q.queued).Int("handshakes", q.handshakes)
		if q.err != nil {
			ev = ev.AnErr("hold", q.err)
		}
		ev.Msg("closing the listeners resets the connections still queued or in their handshake")
	default:
		s.log.Debug().Dur("took", time.Since(began)).Msg("listeners quiet: closing them")
	}
	stopCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.eng.Stop(stopCtx); err != nil {
		s.log.Warn().Err(err).Msg("engine stop")
	}
	<-errc
	err := s.deliver.Close()
	s.log.Info().Uint64("delivered", s.stats.Delivered.Load()).Msg("nanomx stopped")
	return err
}

// listenURL turns "host:port" into gnet's form. IPv6 literals listen
// IPv6-only so that "0.0.0.0:25" and "[::]:25" can both be configured.
func listenURL(a string) (string, error) {
	host, port, err := net.SplitHostPort(a)
	if err != nil {
		return "", err
	}
	if port == "" {
		return "", fmt.Errorf("%q: missing port", a)
	}
	ip, err := netip.ParseAddr(host)
	switch {
	case host == "":
		return "tcp://" + a, nil
	case err != nil:
		return "tcp://" + a, nil // a name: let the resolver decide
	case ip.Is4():
		return "tcp4://" + a, nil
	default:
		return "tcp6://" + a, nil
	}
}

// OnBoot records the engine.
func (s *Server) OnBoot(eng gnet.Engine) gnet.Action {
	s.eng = eng
	s.keepAliveSet = s.listenerKeepAlive(eng)
	close(s.booted)
	return gnet.None
}

// drain implements graceful shutdown: new connections are refused, idle
// sessions get 421 4.3.2, and sessions in a transaction or waiting on the
// spool finish it (and are then closed) until ShutdownTimeout.
func (s *Server) drain() {
	s.draining.Store(true)
	deadline := time.Now().Add(s.cfg.ShutdownTimeout)
	for {
		s.mu.Lock()
		n := len(s.conns)
		for c := range s.conns {
			if time.Now().After(deadline) {
				c.flags.Or(flagForce)
			}
			if c.flags.Or(flagShutdown)&flagShutdown == 0 || time.Now().After(deadline) || c.bc.Load() != nil {
				c.kick()
			}
		}
		s.mu.Unlock()
		if n == 0 || time.Now().After(deadline.Add(2*time.Second)) {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// OnTick closes sessions past their deadline. It runs on gnet's ticker
// goroutine, so it only reads atomics and calls Wake; the loop does the
// rest in OnTraffic.
func (s *Server) OnTick() (time.Duration, gnet.Action) {
	s.rejectLog.sweep(&s.log, time.Now())
	now := time.Now().UnixNano()
	s.mu.Lock()
	for c := range s.conns {
		switch at := c.greetAt.Load(); {
		case now > c.deadline.Load() && c.flags.Or(flagTimeout)&flagTimeout == 0:
			c.kick()
		case at != 0 && now >= at:
			_ = c.gc.Wake(nil) // time to greet
		case c.outBlocked.Load():
			_ = c.gc.Wake(nil) // have its replies been read?
		}
	}
	s.mu.Unlock()
	if s.cfg.GreetingDelay > 0 {
		// Greetings are sent from here: keep their lateness small.
		return 50 * time.Millisecond, gnet.None
	}
	return time.Second, gnet.None
}

// ipState is what the connections of one client address (ipKey) share.
type ipState struct {
	conns  int          // open connections; guarded by Server.mu
	budget atomic.Int64 // body budget held by its sessions, in bytes
}

// reserve takes n bytes of body budget for a session of ip, whose
// sessions together may hold at most perIP, or reports that there are
// none.
func (s *Server) reserve(ip *ipState, n, perIP int64) bool {
	if ip.budget.Add(n) > perIP {
		ip.budget.Add(-n)
		return false
	}
	for {
		avail := s.budget.Load()
		if avail < n {
			ip.budget.Add(-n)
			return false
		}
		if s.budget.CompareAndSwap(avail, avail-n) {
			return true
		}
	}
}

// release returns n bytes taken by reserve. It may run on any goroutine,
// also after the connection has gone.
func (s *Server) release(ip *ipState, n int64) {
	if n != 0 {
		ip.budget.Add(-n)
		s.budget.Add(n)
	}
}

// ipKey is the address limits count by: the IPv4 address, or the /64 of
// an IPv6 one (one host usually owns a whole /64).
func ipKey(a netip.Addr) netip.Addr {
	if a.Is4() {
		return a
	}
	p, _ := a.Prefix(64)
	return p.Addr()
}

// newID returns a queue id: the process's start time in microseconds and
// a counter, so ids stay unique across restarts, even within one second.
func (s *Server) newID() string {
	return s.idBase + fmt.Sprintf("%06X", s.nextID.Add(1))
}

// idBase is the start-time prefix of queue and session ids: 10 base-36
// digits of Unix microseconds (fixed width until the year 5188).
func idBase(t time.Time) string {
	b := itoa36(uint64(t.UnixMicro()))
	if len(b) < 10 {
		b = strings.Repeat("0", 10-len(b)) + b
	}
	return b
}

// gnetLogger sends gnet's own log lines to zerolog. gnet's Info lines
// (its start-up banner) go to Debug: "nanomx ready" says the same for
// operators.
type gnetLogger struct{ l zerolog.Logger }

func (g gnetLogger) Debugf(f string, a ...any) { g.l.Debug().Str("from", "gnet").Msgf(f, a...) }
func (g gnetLogger) Infof(f string, a ...any)  { g.l.Debug().Str("from", "gnet").Msgf(f, a...) }
func (g gnetLogger) Warnf(f string, a ...any)  { g.l.Warn().Str("from", "gnet").Msgf(f, a...) }
func (g gnetLogger) Errorf(f string, a ...any) { g.l.Error().Str("from", "gnet").Msgf(f, a...) }
func (g gnetLogger) Fatalf(f string, a ...any) { g.l.Fatal().Str("from", "gnet").Msgf(f, a...) }
