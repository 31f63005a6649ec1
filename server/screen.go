package server

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
	"github.com/rs/zerolog"

	"github.com/nanomx/nanomx/proto"
	"github.com/nanomx/nanomx/server/check"
	"github.com/nanomx/nanomx/server/resolver"
	"github.com/nanomx/nanomx/server/screen"
)

// DNSBLAction values: where a client the DNS lists score at or over
// dnsbl_threshold is refused.
const (
	// DNSBLAtRcpt refuses each RCPT with 550 5.7.1 (except postmaster),
	// like postscreen's "enforce": the log then shows sender and
	// recipient, and a listed sender can still reach postmaster.
	DNSBLAtRcpt = "rcpt"
	// DNSBLAtConnect answers 554 5.7.1 instead of the greeting.
	DNSBLAtConnect = "connect"
)

// Screening's sizes: the query pool, and the longest a list may take.
const (
	screenWorkers = 64
	screenQueue   = 4096
	// dnsblTimeout is postscreen's postscreen_dnsbl_timeout; a query
	// never takes more than half of command_timeout either, so the
	// session's own bound on a check (451 4.7.0) never fires for it.
	dnsblTimeout = 10 * time.Second
)

// The refusals of the rates, shared: a completed result never changes.
var (
	rateConnections = check.Now(check.Verdict{Reply: proto.NewReply(421, "4.7.0", "Too many connections from your address, try again later")})
	rateMessages    = check.Now(check.Verdict{Reply: proto.NewReply(451, "4.7.1", "Too many messages from your address, try again later")})
	rateRecipients  = check.Now(check.Verdict{Reply: proto.NewReply(451, "4.7.1", "Too many recipients from your address, try again later")})
)

// validateScreen checks the screening settings.
func (c *Config) validateScreen() error {
	bad := func(key, format string, args ...any) error {
		return &ConfigError{Key: key, Err: fmt.Errorf(format, args...)}
	}
	if _, err := screen.ParseSites(c.DNSBLSites); err != nil {
		return &ConfigError{Key: "dnsbl_sites", Err: err}
	}
	if _, err := screen.ParseAllowList(c.ScreenAllow); err != nil {
		return &ConfigError{Key: "screen_allow", Err: err}
	}
	switch {
	case c.DNSBLThreshold < 1:
		return bad("dnsbl_threshold", "must be at least 1")
	case c.DNSBLAction != DNSBLAtRcpt && c.DNSBLAction != DNSBLAtConnect:
		return bad("dnsbl_action", "must be %q or %q", DNSBLAtRcpt, DNSBLAtConnect)
	case c.MaxConnectionsPerMinute < 0:
		return bad("max_connections_per_minute", "must not be negative (0 is no limit)")
	case c.MaxMessagesPerMinute < 0:
		return bad("max_messages_per_minute", "must not be negative (0 is no limit)")
	case c.MaxRecipientsPerMinute < 0:
		return bad("max_recipients_per_minute", "must not be negative (0 is no limit)")
	}
	return nil
}

// screener is the check stage's screening, built from the configuration
// at start-up: screen_allow, the rates and the DNS lists. It is shared by
// every session; what it knows of one session is in Info.screen.
type screener struct {
	allow     screen.AllowList
	rates     *screen.Rates // nil: no rate is limited
	dnsbl     *screen.DNSBL // nil: no lists
	atConnect bool          // dnsbl_action = "connect"
	log       zerolog.Logger
	limited   [3]atomic.Uint64 // refusals by screen.Kind, for the metrics
}

// screenState is one session's screening: the DNS lists' verdict, started
// at connect. Owned by the session; the verdict completes on a pool
// goroutine.
type screenState struct {
	allowed bool // in screen_allow: nothing applies
	dnsbl   *check.Result
}

// allowedState is the state of every allow-listed session.
var allowedState = &screenState{allowed: true}

// newScreener builds the screening cfg asks for, or nil when it asks for
// none. lookup asks the shared resolver for A records.
func newScreener(cfg Config, lookup screen.LookupFunc) (*screener, error) {
	sites, err := screen.ParseSites(cfg.DNSBLSites)
	if err != nil {
		return nil, &ConfigError{Key: "dnsbl_sites", Err: err}
	}
	allow, err := screen.ParseAllowList(cfg.ScreenAllow)
	if err != nil {
		return nil, &ConfigError{Key: "screen_allow", Err: err}
	}
	sc := &screener{allow: allow, atConnect: cfg.DNSBLAction == DNSBLAtConnect, log: cfg.Log}
	if cfg.MaxConnectionsPerMinute > 0 || cfg.MaxMessagesPerMinute > 0 || cfg.MaxRecipientsPerMinute > 0 {
		sc.rates = screen.NewRates(screen.DefaultRateEntries, cfg.MaxConnectionsPerMinute, cfg.MaxMessagesPerMinute, cfg.MaxRecipientsPerMinute)
	}
	if len(sites) > 0 {
		if lookup == nil {
			return nil, &ConfigError{Key: "dnsbl_sites", Err: errors.New("needs a resolver")}
		}
		sc.dnsbl, err = screen.NewDNSBL(screen.Config{
			Sites:     sites,
			Threshold: cfg.DNSBLThreshold,
			Lookup:    lookup,
			Pool:      check.NewPool(screenWorkers, screenQueue),
			Timeout:   min(dnsblTimeout, cfg.CommandTimeout/2),
			Log:       cfg.Log,
		})
		if err != nil {
			return nil, &ConfigError{Key: "dnsbl_sites", Err: err}
		}
	}
	if sc.rates == nil && sc.dnsbl == nil {
		return nil, nil // screen_allow alone has nothing to skip
	}
	return sc, nil
}

// Connect counts the connection against its rate and starts the DNS
// lists' queries, which the greeting (greeting_delay) and the commands
// before RCPT hide. With dnsbl_action = "connect" the greeting waits for
// them.
func (sc *screener) Connect(i *Info) *check.Result {
	if sc.allow.Contains(i.IP) {
		i.screen = allowedState
		return nil
	}
	if sc.rates != nil && !sc.rates.Allow(ipKey(i.IP), screen.Connections, time.Now()) {
		sc.limited[screen.Connections].Add(1)
		return rateConnections
	}
	if sc.dnsbl == nil {
		return nil
	}
	st := &screenState{dnsbl: check.New()}
	i.screen = st
	ip, code := i.IP, 550
	if sc.atConnect {
		code = 554
	}
	sc.dnsbl.Start(ip, func(r screen.Result) {
		var v check.Verdict
		if r.Listed {
			v.Reply = proto.NewReply(code, "5.7.1", "Service unavailable; client ["+ip.String()+"] blocked using "+r.Site)
			sc.log.Info().Stringer("remote", ip).Int("dnsbl_score", r.Score).Strs("dnsbl_hits", r.Hits).Msg("client listed by dns lists")
		}
		st.dnsbl.Complete(v)
	})
	if sc.atConnect {
		return st.dnsbl
	}
	return nil
}

// Helo has nothing to screen.
func (sc *screener) Helo(*Info, string) *check.Result { return nil }

// Mail counts a message against its rate.
func (sc *screener) Mail(i *Info, _ proto.Address, _ proto.MailParams) *check.Result {
	if i.screen == allowedState || sc.rates == nil {
		return nil
	}
	if !sc.rates.Allow(ipKey(i.IP), screen.Messages, time.Now()) {
		sc.limited[screen.Messages].Add(1)
		return rateMessages
	}
	return nil
}

// Rcpt counts a recipient against its rate and, with dnsbl_action =
// "rcpt", answers with the DNS lists' verdict: refused with the list's
// name, or waiting for the lists still (each query is bounded). The
// verdict is the session's own, and it waits for one at a time, so the
// result has one waiter at most, as check.Result requires.
//
// postmaster (of any of our domains, or the bare <postmaster>) stays
// reachable from a listed client, as RFC 5321 4.5.1 wants postmaster
// reachable: the operator of a listed server can still write to ask why.
// Rates apply to it all the same.
func (sc *screener) Rcpt(i *Info, rcpt proto.Address) *check.Result {
	st := i.screen
	if st == allowedState {
		return nil
	}
	if sc.rates != nil && !sc.rates.Allow(ipKey(i.IP), screen.Recipients, time.Now()) {
		sc.limited[screen.Recipients].Add(1)
		return rateRecipients
	}
	if st == nil || st.dnsbl == nil || sc.atConnect || strings.EqualFold(rcpt.Local, "postmaster") {
		return nil
	}
	return st.dnsbl
}

// Data has nothing to screen.
func (sc *screener) Data(*Info, []byte) *check.Result { return nil }

// lookupA asks r for the A records of name, for the DNS lists.
func lookupA(r *resolver.Resolver) screen.LookupFunc {
	return func(ctx context.Context, name string) ([]netip.Addr, error) {
		ans, err := r.Lookup(ctx, name, dns.TypeA)
		if err != nil {
			return nil, err
		}
		out := make([]netip.Addr, 0, len(ans.RRs))
		for _, rr := range ans.RRs {
			if a, ok := rr.(*dns.A); ok {
				if ip, ok := netip.AddrFromSlice(a.A); ok {
					out = append(out, ip.Unmap())
				}
			}
		}
		return out, nil
	}
}

// DNSBLStats returns the DNS lists' counters (nil without lists): queries,
// listings, and the answers that were error codes or failures, for the
// metrics and "nanomx doctor".
func (s *Server) DNSBLStats() []screen.ZoneStats {
	for _, ch := range s.cfg.checks {
		if sc, ok := ch.(*screener); ok && sc.dnsbl != nil {
			return sc.dnsbl.Stats()
		}
	}
	return nil
}
