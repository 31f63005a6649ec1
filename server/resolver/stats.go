package resolver

import (
	"errors"
	"net"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
)

// Query types counted apart; the rest count as "other".
var statTypes = [...]uint16{dns.TypeA, dns.TypeAAAA, dns.TypeMX, dns.TypeTXT, dns.TypePTR}

const nTypes = len(statTypes) + 1

// NumTypes is the number of query types Counts tells apart.
const NumTypes = nTypes

// TypeNames name Counts' query types: "A", "AAAA", "MX", "TXT", "PTR",
// "other".
var TypeNames = [nTypes]string{"A", "AAAA", "MX", "TXT", "PTR", "other"}

// Results of a lookup as counted.
const (
	resOK       = iota // records
	resNotFound        // NXDOMAIN or NODATA
	resTimeout         // no answer in time (servers or the caller's context)
	resError           // SERVFAIL, REFUSED, anything else temporary
	nResults
)

// NumResults is the number of lookup results Counts tells apart.
const NumResults = nResults

// ResultNames name Counts' results: "ok", "notfound" (NXDOMAIN or
// NODATA), "timeout", "error" (SERVFAIL, REFUSED and other temporary
// failures).
var ResultNames = [nResults]string{"ok", "notfound", "timeout", "error"}

// LatencyBounds are the upper bounds of the buckets Counts.Latency counts
// the servers' answering times in: a resolver on the host answers from
// its cache in well under a millisecond, a recursion takes tens to
// hundreds, and a lookup that times out takes its retries.
var LatencyBounds = [...]time.Duration{
	500 * time.Microsecond, time.Millisecond, 2500 * time.Microsecond, 5 * time.Millisecond,
	10 * time.Millisecond, 25 * time.Millisecond, 50 * time.Millisecond, 100 * time.Millisecond,
	250 * time.Millisecond, 500 * time.Millisecond, time.Second, 2500 * time.Millisecond,
	5 * time.Second, 10 * time.Second,
}

// NumLatencyBuckets is LatencyBounds' buckets and the one past them.
const NumLatencyBuckets = len(LatencyBounds) + 1

// stats are the resolver's counters, all atomic.
type stats struct {
	queries     [nTypes]atomic.Uint64
	results     [nTypes][nResults]atomic.Uint64
	cacheHits   atomic.Uint64
	cacheMisses atomic.Uint64
	collapsed   atomic.Uint64
	exchanges   atomic.Uint64
	tcp         atomic.Uint64
	flights     atomic.Uint64
	latencyNs   atomic.Uint64
	latencyHist [NumLatencyBuckets]atomic.Uint64
}

func typeIndex(qtype uint16) int {
	for i, t := range statTypes {
		if t == qtype {
			return i
		}
	}
	return len(statTypes)
}

func (s *stats) query(qtype uint16)         { s.queries[typeIndex(qtype)].Add(1) }
func (s *stats) result(qtype uint16, r int) { s.results[typeIndex(qtype)][r].Add(1) }

func (s *stats) resultOf(qtype uint16, err error) {
	var de *net.DNSError
	if errors.As(err, &de) && de.IsTimeout {
		s.result(qtype, resTimeout)
		return
	}
	s.result(qtype, resError)
}

func (s *stats) latency(d time.Duration) {
	s.flights.Add(1)
	s.latencyNs.Add(uint64(d))
	i := 0
	for i < len(LatencyBounds) && d > LatencyBounds[i] {
		i++
	}
	s.latencyHist[i].Add(1)
}

// Counts are a Resolver's counters as plain arrays, indexed as TypeNames
// and ResultNames name them: what Stats holds, without its maps, for a
// reader that must not allocate (the metrics endpoint).
type Counts struct {
	// Lookups by query type and result; each lookup asked of the
	// Resolver ends as one result, cache hits included.
	Lookups [NumTypes][NumResults]uint64
	// As in Stats.
	CacheHits, CacheMisses, Collapsed uint64
	Exchanges, TCPFallbacks           uint64
	Flights                           uint64
	LatencySum                        time.Duration
	// Latency counts the Flights by their time: per bucket of
	// LatencyBounds (not cumulative), the last one past every bound.
	Latency [NumLatencyBuckets]uint64
	// CacheEntries and CacheBytes are the cache's size now.
	CacheEntries, CacheBytes int
}

// Counts returns the counters since New. Each is read atomically; they
// are not one consistent snapshot while lookups run.
func (r *Resolver) Counts() Counts {
	c := Counts{
		CacheHits:    r.st.cacheHits.Load(),
		CacheMisses:  r.st.cacheMisses.Load(),
		Collapsed:    r.st.collapsed.Load(),
		Exchanges:    r.st.exchanges.Load(),
		TCPFallbacks: r.st.tcp.Load(),
		Flights:      r.st.flights.Load(),
		LatencySum:   time.Duration(r.st.latencyNs.Load()),
	}
	for t := range r.st.results {
		for res := range r.st.results[t] {
			c.Lookups[t][res] = r.st.results[t][res].Load()
		}
	}
	for i := range r.st.latencyHist {
		c.Latency[i] = r.st.latencyHist[i].Load()
	}
	if r.cache != nil {
		c.CacheEntries, c.CacheBytes = r.cache.len()
	}
	return c
}

// Stats is a snapshot of a Resolver's counters since New.
type Stats struct {
	// Queries counts lookups asked of the Resolver by query type ("A",
	// "AAAA", "MX", "TXT", "PTR", "other"), cache hits included.
	Queries map[string]uint64
	// Results counts lookups by outcome: "ok", "notfound" (NXDOMAIN or
	// NODATA), "timeout", "error" (SERVFAIL, REFUSED and other temporary
	// failures). A lookup of both A and AAAA counts twice.
	Results map[string]uint64
	// CacheHits are lookups answered from the cache; CacheMisses started
	// a query to the servers; Collapsed joined one already in flight.
	CacheHits, CacheMisses, Collapsed uint64
	// Exchanges are messages sent to servers (retries included), of which
	// TCPFallbacks were retried over TCP after a truncated answer.
	Exchanges, TCPFallbacks uint64
	// Flights are the lookups asked of the servers and LatencySum their
	// total time, retries included (mean latency = LatencySum / Flights).
	Flights    uint64
	LatencySum time.Duration
	// CacheEntries and CacheBytes are the cache's size now.
	CacheEntries, CacheBytes int
}

// Stats returns a snapshot of the counters.
func (r *Resolver) Stats() Stats {
	c := r.Counts()
	s := Stats{
		Queries:      make(map[string]uint64, nTypes),
		Results:      make(map[string]uint64, nResults),
		CacheHits:    c.CacheHits,
		CacheMisses:  c.CacheMisses,
		Collapsed:    c.Collapsed,
		Exchanges:    c.Exchanges,
		TCPFallbacks: c.TCPFallbacks,
		Flights:      c.Flights,
		LatencySum:   c.LatencySum,
		CacheEntries: c.CacheEntries,
		CacheBytes:   c.CacheBytes,
	}
	for i := range r.st.queries {
		s.Queries[TypeNames[i]] = r.st.queries[i].Load()
	}
	for _, byResult := range c.Lookups {
		for res, n := range byResult {
			s.Results[ResultNames[res]] += n
		}
	}
	return s
}
