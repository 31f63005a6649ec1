package server

import (
	"sync/atomic"

	"github.com/nanomx/nanomx/server/auth"
	"github.com/nanomx/nanomx/server/metrics"
	"github.com/nanomx/nanomx/server/resolver"
	"github.com/nanomx/nanomx/server/screen"
)

// The checks' metrics (issue 12): the resolver's lookups, sender
// authentication's results and DMARC actions, the DNS lists and the
// rates. Each part counts in atomics of its own, with metrics on or off;
// registerCheckMetrics only tells the registry where to read them.

// Sender authentication's methods, as counted.
const (
	authSPF = iota
	authDKIM
	authDMARC
	authIPRev
	numAuthMethods
)

var authMethodNames = [numAuthMethods]string{"spf", "dkim", "dmarc", "iprev"}

// authStatuses are the results counted, in the order of authStats.results.
var authStatuses = [...]auth.Status{auth.Pass, auth.Fail, auth.SoftFail, auth.Neutral, auth.None, auth.TempError, auth.PermError, auth.Policy}

// The DMARC actions counted, in the order of authStats.actions.
var dmarcActions = [...]string{ActionReject, ActionJunk, ActionHeader}

// authStats are the authentication checker's counters: per method and
// result, and per action taken on a DMARC failure. Counting is a switch
// and an atomic add: no map, no allocation. Written by the pool
// goroutines that decide; read when scraped.
type authStats struct {
	results [numAuthMethods][len(authStatuses)]atomic.Uint64
	actions [len(dmarcActions)]atomic.Uint64
}

// statusIndex is s's place in authStatuses, or -1.
func statusIndex(s auth.Status) int {
	switch s {
	case auth.Pass:
		return 0
	case auth.Fail:
		return 1
	case auth.SoftFail:
		return 2
	case auth.Neutral:
		return 3
	case auth.None:
		return 4
	case auth.TempError:
		return 5
	case auth.PermError:
		return 6
	case auth.Policy:
		return 7
	}
	return -1
}

// add counts one result of method (auth*).
func (s *authStats) add(method int, st auth.Status) {
	if i := statusIndex(st); i >= 0 {
		s.results[method][i].Add(1)
	}
}

// count counts the results of one message as its Authentication-Results
// field shows them: one per method run, one per DKIM signature and per
// From domain, "none" for DKIM without a signature and DMARC without a
// result.
func (s *authStats) count(res *auth.Results) {
	if res.IPRev != nil {
		s.add(authIPRev, res.IPRev.Status)
	}
	if res.SPF != nil {
		s.add(authSPF, res.SPF.Status)
	}
	if res.DKIMChecked {
		if len(res.DKIM) == 0 {
			s.add(authDKIM, auth.None)
		}
		for i := range res.DKIM {
			s.add(authDKIM, res.DKIM[i].Status)
		}
	}
	if res.DMARCChecked {
		if len(res.DMARC) == 0 {
			s.add(authDMARC, auth.None)
		}
		for i := range res.DMARC {
			s.add(authDMARC, res.DMARC[i].Status)
		}
	}
}

// action counts an action taken on a DMARC failure.
func (s *authStats) action(a string) {
	switch a {
	case ActionReject:
		s.actions[0].Add(1)
	case ActionJunk:
		s.actions[1].Add(1)
	case ActionHeader:
		s.actions[2].Add(1)
	}
}

// rateKinds name screen.Kind's values, as screener.limited counts them.
var rateKinds = [3]string{
	screen.Connections: "connections",
	screen.Messages:    "messages",
	screen.Recipients:  "recipients",
}

// registerCheckMetrics registers the series of the checks New built: the
// resolver's, and those of authentication, screening and the DNS lists
// when they are on. It runs in New, after the checks are made; without
// metrics it does nothing.
func (s *Server) registerCheckMetrics() {
	if s.m == nil {
		return
	}
	r := s.m.reg
	if res := s.resolver; res != nil {
		registerResolver(r, res)
	}
	if a := s.auth; a != nil {
		for m, method := range authMethodNames {
			for i, st := range authStatuses {
				r.Counter("nanomx_auth_results_total", "Sender authentication results, one per method and message decided (per DKIM signature, per From domain), and SPF fails refused at MAIL.",
					&a.stats.results[m][i], "method", method, "result", string(st))
			}
		}
		for i, act := range dmarcActions {
			r.Counter("nanomx_dmarc_actions_total", "Actions taken on messages failing DMARC (dmarc_reject_action, dmarc_quarantine_action; p=none: header).", &a.stats.actions[i], "action", act)
		}
	}
	for _, ch := range s.cfg.checks {
		if rc, ok := ch.(*rspamdCheck); ok {
			s.registerScanner("rspamd", func() scanStats {
				sn := rc.client.Stats()
				return scanStats{sn.OK, sn.Failed, sn.Timeouts, sn.Busy}
			}, rc.latency)
			s.m.reg.Counter("nanomx_rspamd_skipped_total", "Messages delivered without an rspamd scan: spilled to disk or larger than rspamd_max_size.", &rc.skipped)
		}
	}
	var sc *screener
	for _, ch := range s.cfg.checks {
		if c, ok := ch.(*screener); ok {
			sc = c
		}
	}
	if sc == nil {
		return
	}
	if sc.rates != nil {
		for k, kind := range rateKinds {
			r.Counter("nanomx_rate_limited_total", "Refusals of a per-client rate, by kind (max_connections_per_minute, max_messages_per_minute, max_recipients_per_minute).", &sc.limited[k], "kind", kind)
		}
	}
	if sc.dnsbl != nil {
		registerDNSBL(r, s.DNSBLStats)
	}
}

// registerResolver registers the shared resolver's series. Each reads
// the resolver's Counts, which allocates nothing.
func registerResolver(r *metrics.Registry, res *resolver.Resolver) {
	r.Collect("nanomx_dns_queries_total", "DNS lookups the checks asked of the resolver (cache hits included), by query type and result.", metrics.KindCounter, func(e *metrics.Emitter) {
		c := res.Counts()
		for t := range c.Lookups {
			for i, n := range c.Lookups[t] {
				e.Uint(n, "type", resolver.TypeNames[t], "result", resolver.ResultNames[i])
			}
		}
	})
	for _, f := range []struct {
		name, help string
		read       func(resolver.Counts) uint64
	}{
		{"nanomx_dns_cache_hits_total", "DNS lookups answered from the resolver's cache.", func(c resolver.Counts) uint64 { return c.CacheHits }},
		{"nanomx_dns_cache_misses_total", "DNS lookups that sent a query to the servers.", func(c resolver.Counts) uint64 { return c.CacheMisses }},
		{"nanomx_dns_collapsed_total", "DNS lookups that joined the same query already in flight.", func(c resolver.Counts) uint64 { return c.Collapsed }},
		{"nanomx_dns_exchanges_total", "DNS messages sent to the servers, retries and TCP included.", func(c resolver.Counts) uint64 { return c.Exchanges }},
		{"nanomx_dns_tcp_fallbacks_total", "DNS queries retried over TCP after a truncated answer.", func(c resolver.Counts) uint64 { return c.TCPFallbacks }},
	} {
		read := f.read
		r.CounterFunc(f.name, f.help, func() uint64 { return read(res.Counts()) })
	}
	r.GaugeFunc("nanomx_dns_cache_entries", "Answers in the resolver's cache.", func() float64 { return float64(res.Counts().CacheEntries) })
	r.GaugeFunc("nanomx_dns_cache_bytes", "Bytes the resolver's cache holds (as it counts them).", func() float64 { return float64(res.Counts().CacheBytes) })
	bounds := make([]float64, len(resolver.LatencyBounds))
	for i, b := range resolver.LatencyBounds {
		bounds[i] = b.Seconds()
	}
	r.HistogramFunc("nanomx_dns_query_duration_seconds", "Time the DNS servers took to answer a cache miss, retries included.", bounds, func(counts []uint64) float64 {
		c := res.Counts()
		copy(counts, c.Latency[:])
		return c.LatencySum.Seconds()
	})
}

// registerDNSBL registers the DNS lists' series, read from stats (one
// snapshot per family and scrape).
func registerDNSBL(r *metrics.Registry, stats func() []screen.ZoneStats) {
	r.Collect("nanomx_dnsbl_queries_total", "DNS list queries, by list (one per client and list).", metrics.KindCounter, func(e *metrics.Emitter) {
		for _, z := range stats() {
			e.Uint(z.Queries, "site", z.Domain)
		}
	})
	r.Collect("nanomx_dnsbl_listed_total", "DNS list answers that matched a filter (a listing; for an allow list, an allowance), by list.", metrics.KindCounter, func(e *metrics.Emitter) {
		for _, z := range stats() {
			e.Uint(z.Listed, "site", z.Domain)
		}
	})
	r.Collect("nanomx_dnsbl_errors_total", "DNS list answers that counted for nothing, by list: error codes (127.255.255.x, addresses outside 127/8) and failures (timeouts, SERVFAIL).", metrics.KindCounter, func(e *metrics.Emitter) {
		for _, z := range stats() {
			e.Uint(z.ErrorCodes, "site", z.Domain, "kind", "error_code")
			e.Uint(z.Failures, "site", z.Domain, "kind", "failure")
		}
	})
	r.Collect("nanomx_dnsbl_last_error_code", "The last error code a DNS list answered (1, the code a label), absent before the first.", metrics.KindGauge, func(e *metrics.Emitter) {
		for _, z := range stats() {
			if z.LastErrorCode.IsValid() {
				e.Uint(1, "site", z.Domain, "code", z.LastErrorCode.String())
			}
		}
	})
}

// scanStats are the counters of a check that asks a service of its own
// for each message (rspamd): its requests by outcome.
type scanStats struct {
	OK, Failed, Timeouts, Busy uint64 // Busy: refused, too many in flight
}

// registerScanner is the hook for such a check (rspamd, merged
// separately): called in New once the check is built, it registers
// nanomx_check_requests_total{check=name,result} read from stats at each
// scrape and, when latency is not nil, its request durations as
// nanomx_check_duration_seconds{check=name}. Without metrics it does
// nothing.
//
//	s.registerScanner("rspamd", func() scanStats { sn := rc.client.Stats(); return scanStats{sn.OK, sn.Failed, sn.Timeouts, sn.Busy} }, rc.latency)
func (s *Server) registerScanner(name string, stats func() scanStats, latency *metrics.Histogram) {
	if s.m == nil {
		return
	}
	r := s.m.reg
	const help = "Requests of a check to its service (rspamd), by result: ok, failed, timeout, busy (refused: too many in flight)."
	r.CounterFunc("nanomx_check_requests_total", help, func() uint64 { return stats().OK }, "check", name, "result", "ok")
	r.CounterFunc("nanomx_check_requests_total", help, func() uint64 { return stats().Failed }, "check", name, "result", "failed")
	r.CounterFunc("nanomx_check_requests_total", help, func() uint64 { return stats().Timeouts }, "check", name, "result", "timeout")
	r.CounterFunc("nanomx_check_requests_total", help, func() uint64 { return stats().Busy }, "check", name, "result", "busy")
	if latency != nil {
		r.Histogram("nanomx_check_duration_seconds", "Time a check's request to its service (rspamd) took.", latency, "check", name)
	}
}
