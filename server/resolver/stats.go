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

// Results of a lookup as counted.
const (
	resOK       = iota // records
	resNotFound        // NXDOMAIN or NODATA
	resTimeout         // no answer in time (servers or the caller's context)
	resError           // SERVFAIL, REFUSED, anything else temporary
	nResults
)

var resultNames = [nResults]string{"ok", "notfound", "timeout", "error"}

// stats are the resolver's counters, all atomic.
type stats struct {
	queries     [nTypes]atomic.Uint64
	results     [nResults]atomic.Uint64
	cacheHits   atomic.Uint64
	cacheMisses atomic.Uint64
	collapsed   atomic.Uint64
	exchanges   atomic.Uint64
	tcp         atomic.Uint64
	flights     atomic.Uint64
	latencyNs   atomic.Uint64
}

func typeIndex(qtype uint16) int {
	for i, t := range statTypes {
		if t == qtype {
			return i
		}
	}
	return len(statTypes)
}

func (s *stats) query(qtype uint16) { s.queries[typeIndex(qtype)].Add(1) }
func (s *stats) result(r int)       { s.results[r].Add(1) }

func (s *stats) resultOf(err error) {
	var de *net.DNSError
	if errors.As(err, &de) && de.IsTimeout {
		s.result(resTimeout)
		return
	}
	s.result(resError)
}

func (s *stats) latency(d time.Duration) {
	s.flights.Add(1)
	s.latencyNs.Add(uint64(d))
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
	s := Stats{
		Queries:      make(map[string]uint64, nTypes),
		Results:      make(map[string]uint64, nResults),
		CacheHits:    r.st.cacheHits.Load(),
		CacheMisses:  r.st.cacheMisses.Load(),
		Collapsed:    r.st.collapsed.Load(),
		Exchanges:    r.st.exchanges.Load(),
		TCPFallbacks: r.st.tcp.Load(),
		Flights:      r.st.flights.Load(),
		LatencySum:   time.Duration(r.st.latencyNs.Load()),
	}
	for i := range r.st.queries {
		name := "other"
		if i < len(statTypes) {
			name = dns.TypeToString[statTypes[i]]
		}
		s.Queries[name] = r.st.queries[i].Load()
	}
	for i := range r.st.results {
		s.Results[resultNames[i]] = r.st.results[i].Load()
	}
	if r.cache != nil {
		s.CacheEntries, s.CacheBytes = r.cache.len()
	}
	return s
}
