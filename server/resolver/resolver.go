// Package resolver is the server's one DNS layer: a stub resolver that asks
// configured recursive servers (UDP with EDNS0, TCP on truncation), caches
// answers for their TTLs (clamped) and negative answers for their SOA
// minimum (RFC 2308), collapses duplicate queries in flight and bounds the
// queries in flight. Its LookupTXT, LookupMX, LookupIPAddr and LookupAddr
// have the shapes of *net.Resolver's, so it drops into libraries such as
// blitiri.com.ar/go/spf; Lookup gives the records with their TTLs.
//
// Every error is a *net.DNSError: IsNotFound for NXDOMAIN and NODATA (as
// net reports them), IsTemporary (and IsTimeout for timeouts) for SERVFAIL,
// REFUSED, timeouts, a full in-flight bound and anything else that may pass.
package resolver

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
)

// Limits on what one answer may make us hold.
const (
	// MaxRRs bounds the records of the asked type kept from one answer;
	// the rest are dropped. It bounds the cost of a hostile answer.
	MaxRRs = 100
	// maxCNAMEHops bounds a CNAME chain followed inside one answer.
	maxCNAMEHops = 8
	// ednsSize is the EDNS0 UDP payload size we announce (DNS flag day
	// 2020 value: no IP fragmentation).
	ednsSize = 1232
)

// Config configures a Resolver. Zero fields take the defaults given.
type Config struct {
	// Servers are the recursive servers asked, "host:port", in order.
	// Empty: the nameservers of /etc/resolv.conf, or 127.0.0.1:53.
	Servers []string
	// Timeout bounds one attempt (one exchange with one server, a TCP
	// retry included). Default 5s. One lookup takes at most about
	// Timeout × Attempts, and never longer than its context.
	Timeout time.Duration
	// Attempts is the number of exchanges tried per lookup, going round
	// Servers in order (a timeout, SERVFAIL or REFUSED moves on to the
	// next). Default max(2, len(Servers)).
	Attempts int
	// MaxInFlight bounds lookups being asked of the servers at once
	// (across all callers; cache hits and collapsed duplicates do not
	// count). Past it callers wait until a slot frees or their context
	// ends. Default 256.
	MaxInFlight int
	// MinTTL and MaxTTL clamp the time an answer (positive or negative)
	// is cached. Defaults 1s and 1h.
	MinTTL time.Duration
	MaxTTL time.Duration
	// CacheEntries bounds the cached answers (default 10,000) and
	// CacheBytes their approximate wire size together (default 8 MiB);
	// the least recently used go first. CacheEntries < 0 disables the
	// cache.
	CacheEntries int
	CacheBytes   int
	// Now is the clock (tests); default time.Now.
	Now func() time.Time
}

// Answer is the result of Lookup.
type Answer struct {
	// RRs are the records of the asked type at the end of any CNAME
	// chain, at most MaxRRs. Shared with the cache: do not modify them.
	// Their header TTLs are those of the original answer; TTL is what
	// remains.
	RRs []dns.RR
	// Name is the canonical name (the end of the CNAME chain), lower
	// case, fully qualified.
	Name string
	// Rcode is dns.RcodeSuccess or dns.RcodeNameError (NXDOMAIN).
	Rcode int
	// TTL is the time this answer stays cached from now.
	TTL time.Duration
	// AD is the server's Authenticated Data bit (meaningful only with a
	// validating resolver reached over a trusted path, e.g. loopback).
	AD bool
	// Authoritative is the AA bit.
	Authoritative bool
}

// Resolver is a caching stub resolver, safe for concurrent use.
type Resolver struct {
	servers  []string
	timeout  time.Duration
	attempts int
	minTTL   time.Duration
	maxTTL   time.Duration
	now      func() time.Time
	sem      chan struct{}
	udp      *dns.Client
	tcp      *dns.Client

	cache *cache

	mu      sync.Mutex
	flights map[key]*flight

	st stats
}

type key struct {
	name  string
	qtype uint16
}

// flight is one lookup asked of the servers, shared by every caller that
// wants the same key meanwhile. ans and err are written before done closes.
type flight struct {
	done chan struct{}
	ans  *entry
	err  error
}

// New returns a Resolver. It sends no query.
func New(cfg Config) (*Resolver, error) {
	servers := cfg.Servers
	if len(servers) == 0 {
		s, err := ServersFromResolvConf(DefaultResolvConf)
		if err != nil || len(s) == 0 {
			s = []string{"127.0.0.1:53"}
		}
		servers = s
	}
	for _, s := range servers {
		if err := CheckServer(s); err != nil {
			return nil, err
		}
	}
	r := &Resolver{
		servers:  append([]string(nil), servers...),
		timeout:  cfg.Timeout,
		attempts: cfg.Attempts,
		minTTL:   cfg.MinTTL,
		maxTTL:   cfg.MaxTTL,
		now:      cfg.Now,
		flights:  make(map[key]*flight),
	}
	if r.timeout <= 0 {
		r.timeout = 5 * time.Second
	}
	if r.attempts <= 0 {
		r.attempts = max(2, len(r.servers))
	}
	if r.minTTL <= 0 {
		r.minTTL = time.Second
	}
	if r.maxTTL <= 0 {
		r.maxTTL = time.Hour
	}
	if r.maxTTL < r.minTTL {
		return nil, fmt.Errorf("resolver: MaxTTL %v below MinTTL %v", r.maxTTL, r.minTTL)
	}
	if r.now == nil {
		r.now = time.Now
	}
	inflight := cfg.MaxInFlight
	if inflight <= 0 {
		inflight = 256
	}
	r.sem = make(chan struct{}, inflight)
	entries, bytes := cfg.CacheEntries, cfg.CacheBytes
	if entries == 0 {
		entries = 10000
	}
	if bytes <= 0 {
		bytes = 8 << 20
	}
	if entries > 0 {
		r.cache = newCache(entries, bytes)
	}
	r.udp = &dns.Client{Net: "udp", Timeout: r.timeout, UDPSize: ednsSize}
	r.tcp = &dns.Client{Net: "tcp", Timeout: r.timeout}
	return r, nil
}

// CheckServer reports whether s is a usable "host:port" server address
// (the host an IP address, the port numeric).
func CheckServer(s string) error {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return fmt.Errorf("resolver: server %q: %w", s, err)
	}
	if i := strings.IndexByte(host, '%'); i >= 0 {
		host = host[:i] // an IPv6 zone
	}
	if net.ParseIP(host) == nil {
		return fmt.Errorf("resolver: server %q: host is not an IP address", s)
	}
	if p, err := parsePort(port); err != nil || p == 0 {
		return fmt.Errorf("resolver: server %q: bad port", s)
	}
	return nil
}

func parsePort(s string) (int, error) {
	if s == "" || len(s) > 5 {
		return 0, errors.New("bad port")
	}
	n := 0
	for _, c := range s {
		if c < '0' || c > '9' {
			return 0, errors.New("bad port")
		}
		n = n*10 + int(c-'0')
	}
	if n > 65535 {
		return 0, errors.New("bad port")
	}
	return n, nil
}

// Servers returns the servers asked, in order.
func (r *Resolver) Servers() []string { return append([]string(nil), r.servers...) }

// Lookup asks for the records of qtype at name (following CNAMEs in the
// answer). When the servers answer NXDOMAIN or NODATA, Lookup returns both
// the Answer (no RRs, with its Rcode and negative TTL) and a *net.DNSError
// with IsNotFound; on every other failure the Answer is nil and the error
// is temporary.
func (r *Resolver) Lookup(ctx context.Context, name string, qtype uint16) (*Answer, error) {
	e, err := r.lookup(ctx, name, qtype)
	if e == nil {
		return nil, err
	}
	return &Answer{
		RRs:           e.rrs,
		Name:          e.name,
		Rcode:         e.rcode,
		TTL:           e.expires.Sub(r.now()),
		AD:            e.ad,
		Authoritative: e.aa,
	}, err
}

// lookup returns the entry (cached or fresh) for name and qtype. A
// negative entry comes with its not-found error.
func (r *Resolver) lookup(ctx context.Context, name string, qtype uint16) (*entry, error) {
	k, ok := makeKey(name, qtype)
	if !ok {
		r.st.query(qtype)
		r.st.result(qtype, resNotFound)
		return nil, &net.DNSError{Err: errNoSuchHost, Name: name, IsNotFound: true}
	}
	if e := r.fromCache(k); e != nil {
		r.st.query(qtype)
		r.st.cacheHits.Add(1)
		return e, r.entryErr(e, k.qtype, name)
	}
	if co, _ := ctx.Value(cacheOnlyKey{}).(*CacheOnlyContext); co != nil {
		// Not counted: the caller asks again, without CacheOnly.
		co.missed.Store(true)
		return nil, &net.DNSError{Err: errNotCached, Name: name, IsTemporary: true}
	}
	r.st.query(qtype)
	e, err := r.miss(ctx, k, name)
	return e, err
}

// errNotCached is the error of a CacheOnly lookup the cache cannot answer.
const errNotCached = "not in the cache"

type cacheOnlyKey struct{}

// CacheOnly returns a context under which lookups answer from the cache
// alone, never waiting: a name not cached fails at once with a temporary
// error, and missed then reports true. It lets work that needs no DNS
// round trip run where waiting is not allowed (the event loop), and go
// elsewhere, to run again, when missed says it would have waited.
func CacheOnly(ctx context.Context) (_ context.Context, missed func() bool) {
	co := NewCacheOnly(ctx)
	return co, co.Missed
}

// CacheOnlyContext is the context CacheOnly returns, as a value that can
// be used again (Reset), for a caller that does this for every message.
type CacheOnlyContext struct {
	context.Context
	missed atomic.Bool
}

// NewCacheOnly is CacheOnly's context under parent.
func NewCacheOnly(parent context.Context) *CacheOnlyContext {
	return &CacheOnlyContext{Context: parent}
}

// Value marks the context as CacheOnly's.
func (c *CacheOnlyContext) Value(k any) any {
	if k == (cacheOnlyKey{}) {
		return c
	}
	return c.Context.Value(k)
}

// Missed reports whether a lookup under c found nothing cached.
func (c *CacheOnlyContext) Missed() bool { return c.missed.Load() }

// Reset forgets what Missed reports, for the next use of c (once no
// lookup under it is running).
func (c *CacheOnlyContext) Reset() { c.missed.Store(false) }

// fromCache returns the live cached entry for k, if any.
func (r *Resolver) fromCache(k key) *entry {
	if r.cache == nil {
		return nil
	}
	return r.cache.get(k, r.now())
}

// entryErr is the error that goes with an entry: nil for a positive one,
// not found for a negative one.
func (r *Resolver) entryErr(e *entry, qtype uint16, name string) error {
	if e.rcode == dns.RcodeSuccess && len(e.rrs) > 0 {
		r.st.result(qtype, resOK)
		return nil
	}
	r.st.result(qtype, resNotFound)
	return &net.DNSError{Err: errNoSuchHost, Name: name, Server: e.server, IsNotFound: true}
}

// miss joins the flight for k or starts one, and waits for it or ctx.
func (r *Resolver) miss(ctx context.Context, k key, name string) (*entry, error) {
	r.mu.Lock()
	f := r.flights[k]
	r.mu.Unlock()
	if f == nil {
		// Wait for a slot outside the lock, then look again: the same
		// key may have been asked (or answered) while we waited.
		select {
		case r.sem <- struct{}{}:
		case <-ctx.Done():
			r.st.result(k.qtype, resTimeout)
			return nil, ctxErr(ctx, name, "")
		}
		r.mu.Lock()
		f = r.flights[k]
		if f == nil {
			if e := r.fromCache(k); e != nil {
				r.mu.Unlock()
				<-r.sem
				r.st.cacheHits.Add(1)
				return e, r.entryErr(e, k.qtype, name)
			}
			f = &flight{done: make(chan struct{})}
			r.flights[k] = f
			r.mu.Unlock()
			r.st.cacheMisses.Add(1)
			go r.fly(k, f)
		} else {
			r.mu.Unlock()
			<-r.sem
			r.st.collapsed.Add(1)
		}
	} else {
		r.st.collapsed.Add(1)
	}
	select {
	case <-f.done:
	case <-ctx.Done():
		r.st.result(k.qtype, resTimeout)
		return nil, ctxErr(ctx, name, "")
	}
	if f.err != nil {
		r.st.resultOf(k.qtype, f.err)
		return nil, withName(f.err, name)
	}
	return f.ans, r.entryErr(f.ans, k.qtype, name)
}

// fly asks the servers on its own deadline (so that callers giving up do
// not waste the answer for the others), caches the result and releases
// the in-flight slot.
func (r *Resolver) fly(k key, f *flight) {
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), r.timeout*time.Duration(r.attempts)+r.timeout/2)
	f.ans, f.err = r.resolve(ctx, k)
	cancel()
	r.st.latency(time.Since(start))
	if f.err == nil && r.cache != nil {
		r.cache.put(k, f.ans)
	}
	r.mu.Lock()
	delete(r.flights, k)
	r.mu.Unlock()
	<-r.sem
	close(f.done)
}

// resolve runs the attempts for k over the servers.
func (r *Resolver) resolve(ctx context.Context, k key) (*entry, error) {
	q := new(dns.Msg)
	q.SetQuestion(dns.Fqdn(k.name), k.qtype)
	q.RecursionDesired = true
	q.AuthenticatedData = true // RFC 6840 5.7: ask for the AD bit
	q.SetEdns0(ednsSize, false)
	var last error
	for i := 0; i < r.attempts; i++ {
		if ctx.Err() != nil {
			break
		}
		server := r.servers[i%len(r.servers)]
		e, err := r.exchange(ctx, q, k, server)
		if err == nil {
			return e, nil
		}
		last = err
	}
	if last == nil {
		last = &net.DNSError{Err: errTimeout, Name: k.name, IsTimeout: true, IsTemporary: true}
	}
	return nil, last
}

// exchange asks one server, over TCP when the UDP answer is truncated, and
// turns the answer into an entry or a temporary error.
func (r *Resolver) exchange(ctx context.Context, q *dns.Msg, k key, server string) (*entry, error) {
	q.Id = dns.Id()
	r.st.exchanges.Add(1)
	m, _, err := r.udp.ExchangeContext(ctx, q, server)
	if err == nil && m.Truncated {
		r.st.tcp.Add(1)
		q.Id = dns.Id()
		m, _, err = r.tcp.ExchangeContext(ctx, q, server)
	}
	if err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, context.DeadlineExceeded) {
			return nil, &net.DNSError{Err: errTimeout, Name: k.name, Server: server, IsTimeout: true, IsTemporary: true, UnwrapErr: err}
		}
		return nil, &net.DNSError{Err: err.Error(), Name: k.name, Server: server, IsTemporary: true, UnwrapErr: err}
	}
	if len(m.Question) != 1 || m.Question[0].Qtype != k.qtype || !strings.EqualFold(m.Question[0].Name, dns.Fqdn(k.name)) {
		return nil, &net.DNSError{Err: "answer for another question", Name: k.name, Server: server, IsTemporary: true}
	}
	switch m.Rcode {
	case dns.RcodeSuccess, dns.RcodeNameError:
	case dns.RcodeServerFailure:
		return nil, &net.DNSError{Err: errServerMisbehaving, Name: k.name, Server: server, IsTemporary: true}
	case dns.RcodeRefused:
		return nil, &net.DNSError{Err: "server refused the query", Name: k.name, Server: server, IsTemporary: true}
	default:
		return nil, &net.DNSError{Err: "server answered " + dns.RcodeToString[m.Rcode], Name: k.name, Server: server, IsTemporary: true}
	}
	return r.toEntry(m, k, server), nil
}

// toEntry follows the CNAME chain from the question name through the
// answer section and keeps the asked records at its end; a negative answer
// lives for its SOA's TTL and minimum (RFC 2308 5), clamped.
func (r *Resolver) toEntry(m *dns.Msg, k key, server string) *entry {
	e := &entry{
		key:    k,
		name:   dns.Fqdn(k.name),
		rcode:  m.Rcode,
		ad:     m.AuthenticatedData,
		aa:     m.Authoritative,
		server: server,
		size:   m.Len() + 128,
	}
	ttl := uint32(1<<32 - 1)
	if m.Rcode == dns.RcodeSuccess {
		name := e.name
		for hop := 0; hop <= maxCNAMEHops; hop++ {
			next := ""
			for _, rr := range m.Answer {
				h := rr.Header()
				if !strings.EqualFold(h.Name, name) {
					continue
				}
				if h.Rrtype == k.qtype {
					if len(e.rrs) < MaxRRs {
						e.rrs = append(e.rrs, rr)
						ttl = min(ttl, h.Ttl)
					}
				} else if c, ok := rr.(*dns.CNAME); ok && k.qtype != dns.TypeCNAME && next == "" {
					next = strings.ToLower(c.Target)
					ttl = min(ttl, h.Ttl)
				}
			}
			if len(e.rrs) > 0 || next == "" {
				break
			}
			name = next
			e.name = name
		}
	}
	if len(e.rrs) == 0 {
		// NXDOMAIN or NODATA.
		neg := uint32(0)
		for _, rr := range m.Ns {
			if soa, ok := rr.(*dns.SOA); ok {
				neg = min(soa.Hdr.Ttl, soa.Minttl)
				break
			}
		}
		ttl = min(ttl, neg) // no SOA: not cached past MinTTL
	}
	if k.qtype == dns.TypeTXT {
		// Joined once here rather than at every cached answer: the DKIM
		// key and DMARC record of each message are asked for again.
		e.txt = txtStrings(e.rrs)
		for _, s := range e.txt {
			e.size += len(s) + 16
		}
	}
	d := time.Duration(ttl) * time.Second
	d = max(r.minTTL, min(r.maxTTL, d))
	e.expires = r.now().Add(d)
	return e
}

// makeKey is the cache key of a name: lower case, without the trailing
// dot (so that a name written without one costs no allocation). It
// reports false for a name that is not a domain name.
func makeKey(name string, qtype uint16) (key, bool) {
	if name == "" || len(name) > 254 {
		return key{}, false
	}
	if _, ok := dns.IsDomainName(name); !ok {
		return key{}, false
	}
	name = strings.TrimSuffix(name, ".")
	if hasUpper(name) {
		name = strings.ToLower(name)
	}
	return key{name: name, qtype: qtype}, true
}

func hasUpper(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c >= 'A' && c <= 'Z' {
			return true
		}
	}
	return false
}

// The Err strings net uses, so that logs read the same.
const (
	errNoSuchHost        = "no such host"
	errTimeout           = "i/o timeout"
	errServerMisbehaving = "server misbehaving"
)

// ctxErr is the error for a caller whose context ended first.
func ctxErr(ctx context.Context, name, server string) error {
	err := ctx.Err()
	if errors.Is(err, context.DeadlineExceeded) {
		return &net.DNSError{Err: errTimeout, Name: name, Server: server, IsTimeout: true, IsTemporary: true, UnwrapErr: err}
	}
	return &net.DNSError{Err: err.Error(), Name: name, Server: server, IsTemporary: true, UnwrapErr: err}
}

// withName returns a copy of a flight's error naming the caller's name.
func withName(err error, name string) error {
	var de *net.DNSError
	if errors.As(err, &de) {
		c := *de
		c.Name = name
		return &c
	}
	return err
}
