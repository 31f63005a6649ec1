package screen

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/nanomx/nanomx/server/check"
)

// LookupFunc asks for the A records of name (a fully qualified name). A
// name that does not exist (NXDOMAIN) or has no A records is a
// *net.DNSError with IsNotFound, or no addresses and no error; any other
// error is a failure of the list or of the resolver.
type LookupFunc func(ctx context.Context, name string) ([]netip.Addr, error)

// Config configures a DNSBL.
type Config struct {
	Sites []Site
	// Threshold is the score at or over which a client is listed; at
	// least 1.
	Threshold int
	// Lookup asks the resolver (which caches answers by their TTL).
	Lookup LookupFunc
	// Pool runs the queries, each on one of its goroutines; a full pool
	// counts as a failed query for the lists it could not ask.
	Pool *check.Pool
	// Timeout bounds each query; a list that has not answered by then
	// contributes nothing.
	Timeout time.Duration
	// Log receives the (rate-limited) lines about broken lists.
	Log zerolog.Logger
}

// logEvery is how often at most a line is logged about one list's errors.
const logEvery = time.Minute

// DNSBL scores client addresses against DNS block and allow lists. It is
// safe for concurrent use.
type DNSBL struct {
	sites     []Site
	threshold int
	lookup    LookupFunc
	pool      *check.Pool
	timeout   time.Duration
	log       zerolog.Logger
	// zones are the distinct domains of sites, each asked once per
	// client however many entries name it.
	zones []*zone
}

// zone is one list's domain, the entries that read its answer, and its
// counters.
type zone struct {
	domain  string
	entries []int // indexes into DNSBL.sites

	queries, listed, notListed, errorCodes, failures atomic.Uint64
	lastErrorCode                                    atomic.Uint32 // IPv4, 0 if none
	lastLog                                          atomic.Int64  // Unix ns of the last line logged
	suppressed                                       atomic.Uint64 // lines not logged since
}

// NewDNSBL returns a DNSBL for cfg.
func NewDNSBL(cfg Config) (*DNSBL, error) {
	switch {
	case cfg.Threshold < 1:
		return nil, errors.New("screen: threshold must be at least 1")
	case cfg.Lookup == nil || cfg.Pool == nil:
		return nil, errors.New("screen: a DNSBL needs a Lookup and a Pool")
	case cfg.Timeout <= 0:
		return nil, errors.New("screen: a DNSBL needs a Timeout")
	}
	d := &DNSBL{sites: cfg.Sites, threshold: cfg.Threshold, lookup: cfg.Lookup, pool: cfg.Pool, timeout: cfg.Timeout, log: cfg.Log}
	byDomain := map[string]*zone{}
	for i, s := range cfg.Sites {
		z := byDomain[s.Domain]
		if z == nil {
			z = &zone{domain: s.Domain}
			byDomain[s.Domain] = z
			d.zones = append(d.zones, z)
		}
		z.entries = append(z.entries, i)
	}
	return d, nil
}

// Result is a client's score.
type Result struct {
	// Score is the sum of the weights of the entries that matched.
	Score int
	// Listed is Score >= the threshold.
	Listed bool
	// Site is the domain of the heaviest entry with a positive weight that
	// matched (the first of equals), for the refusal's text.
	Site string
	// Hits are the entries that matched, as written in dnsbl_sites.
	Hits []string
	// Failed counts the lists that gave no usable answer: an error code,
	// a failure or a timeout. They contributed nothing.
	Failed int
}

// outcome is what one list said about one client.
type outcome uint8

const (
	outTimeout   outcome = iota // no answer in time, or the pool was full
	outNotListed                // NXDOMAIN or no A records
	outListed                   // addresses, none of them an error code
	outErrorCode                // an error code (AnswerError)
	outFailed                   // SERVFAIL, refused, a network error
)

// answer is one list's reply to one client's query.
type answer struct {
	out   outcome
	addrs []netip.Addr
	err   error
	done  bool // counted: later replies are ignored
}

// lookup is one client's queries in flight.
type lookup struct {
	d    *DNSBL
	ip   netip.Addr
	fn   func(Result)
	mu   sync.Mutex
	left int
	ans  []answer
}

// Start asks every list about ip at once, on the pool, and calls done with
// the score when each has answered or timed out (on whichever goroutine
// finished last; on the caller's if nothing needed asking or the pool was
// full). Start itself never blocks.
func (d *DNSBL) Start(ip netip.Addr, done func(Result)) {
	ip = ip.Unmap()
	if len(d.zones) == 0 {
		done(Result{})
		return
	}
	lk := &lookup{d: d, ip: ip, fn: done, left: len(d.zones), ans: make([]answer, len(d.zones))}
	for i, z := range d.zones {
		name := QueryName(ip, z.domain)
		r := d.pool.Go(d.timeout, check.Verdict{}, func(ctx context.Context) check.Verdict {
			addrs, err := d.lookup(ctx, name)
			lk.set(i, addrs, err)
			return check.Verdict{}
		})
		// Completes when the query returns, times out, or found no room.
		r.Notify(func(check.Verdict) { lk.finish(i) })
	}
}

// set records list i's reply, unless its time ran out already.
func (lk *lookup) set(i int, addrs []netip.Addr, err error) {
	a := answer{addrs: addrs, err: err}
	switch {
	case err != nil:
		var de *net.DNSError
		if errors.As(err, &de) && de.IsNotFound {
			a.out = outNotListed
		} else {
			a.out = outFailed
		}
	case len(addrs) == 0:
		a.out = outNotListed
	default:
		a.out = outListed
		for _, ad := range addrs {
			if AnswerError(ad) {
				// One error code spoils the answer: the list refused to
				// answer this query, whatever else came with it.
				a.out = outErrorCode
				a.err = fmt.Errorf("error code %s", ad)
				break
			}
		}
	}
	lk.mu.Lock()
	if !lk.ans[i].done {
		lk.ans[i] = a
	}
	lk.mu.Unlock()
}

// finish marks list i as done; the last one scores.
func (lk *lookup) finish(i int) {
	lk.mu.Lock()
	if lk.ans[i].done {
		lk.mu.Unlock()
		return
	}
	lk.ans[i].done = true
	lk.left--
	last := lk.left == 0
	lk.mu.Unlock()
	if last {
		lk.fn(lk.d.score(lk.ip, lk.ans))
	}
}

// score adds up the entries that match, counts each list's outcome and
// logs the broken ones. The answers are final: no goroutine writes them.
func (d *DNSBL) score(ip netip.Addr, ans []answer) Result {
	var r Result
	best := 0
	for zi, z := range d.zones {
		a := &ans[zi]
		z.queries.Add(1)
		switch a.out {
		case outNotListed:
			z.notListed.Add(1)
			continue
		case outListed:
		case outErrorCode:
			z.errorCodes.Add(1)
			for _, ad := range a.addrs {
				if AnswerError(ad) && ad.Is4() {
					b := ad.As4()
					z.lastErrorCode.Store(uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3]))
					break
				}
			}
			r.Failed++
			d.complain(z, ip, a)
			continue
		default:
			z.failures.Add(1)
			r.Failed++
			if a.out == outTimeout {
				a.err = fmt.Errorf("no answer within %v", d.timeout)
			}
			d.complain(z, ip, a)
			continue
		}
		hit := false
		for _, si := range z.entries {
			s := &d.sites[si]
			if !matches(s.Filter, a.addrs) {
				continue
			}
			hit = true
			r.Score += s.Weight
			r.Hits = append(r.Hits, s.String())
			if s.Weight > best {
				best, r.Site = s.Weight, s.Domain
			}
		}
		if hit {
			z.listed.Add(1)
		} else {
			z.notListed.Add(1)
		}
	}
	r.Listed = r.Score >= d.threshold
	return r
}

// matches reports whether any address is in the filter (any address at
// all without one). The addresses hold no error code.
func matches(f *Filter, addrs []netip.Addr) bool {
	if f == nil {
		return len(addrs) > 0
	}
	for _, a := range addrs {
		if a.Is4() && f.Match(a.As4()) {
			return true
		}
	}
	return false
}

// complain logs a broken list, at most once per logEvery per list; the
// lines left out are counted in the next one.
func (d *DNSBL) complain(z *zone, ip netip.Addr, a *answer) {
	now := time.Now().UnixNano()
	last := z.lastLog.Load()
	if now-last < int64(logEvery) || !z.lastLog.CompareAndSwap(last, now) {
		z.suppressed.Add(1)
		return
	}
	ev := d.log.Warn().Str("dnsbl", z.domain).Stringer("client", ip).Uint64("suppressed", z.suppressed.Swap(0))
	if a.err != nil {
		ev = ev.Str("error", a.err.Error())
	}
	if a.out == outErrorCode {
		ev.Msg("dns list answered an error code, not a listing: check that the resolver is your own (Spamhaus refuses public resolvers)")
		return
	}
	ev.Msg("dns list query failed; the list counts for nothing")
}

// ZoneStats are one list's counters since start.
type ZoneStats struct {
	Domain string
	// Queries were asked; each ends as one of the four below.
	Queries   uint64
	Listed    uint64 // an answer some entry's filter matched
	NotListed uint64 // NXDOMAIN, or an answer no filter matched
	// ErrorCodes are answers that are errors (AnswerError), never
	// listings; LastErrorCode is the last such address.
	ErrorCodes    uint64
	LastErrorCode netip.Addr
	// Failures are timeouts, SERVFAIL, refusals and network errors.
	Failures uint64
}

// Stats returns every list's counters, in the order of dnsbl_sites.
func (d *DNSBL) Stats() []ZoneStats {
	out := make([]ZoneStats, len(d.zones))
	for i, z := range d.zones {
		out[i] = ZoneStats{
			Domain:     z.domain,
			Queries:    z.queries.Load(),
			Listed:     z.listed.Load(),
			NotListed:  z.notListed.Load(),
			ErrorCodes: z.errorCodes.Load(),
			Failures:   z.failures.Load(),
		}
		if v := z.lastErrorCode.Load(); v != 0 {
			out[i].LastErrorCode = netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
		}
	}
	return out
}
