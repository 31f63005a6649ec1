// Package dnstest runs a real, authoritative DNS server on loopback (UDP
// and TCP on one port) serving records given as master-file text, for
// tests, benchmarks and diagnostics.
//
// It answers with AA set; NXDOMAIN for a name that does not exist, NODATA
// (NOERROR, no answer) for a name that exists without the asked type, both
// with the enclosing zone's SOA in the authority section (a synthesized
// one when the text has none); it follows CNAMEs within its data; over UDP
// it truncates (TC) an answer larger than the client's EDNS0 size (or 512
// bytes), so clients retry over TCP. Knobs make it slow (Delay), silent
// (Drop) or failing (Servfail), and it counts the queries it receives.
package dnstest

import (
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// DefaultTTL is the TTL of records whose text gives none (and no $TTL).
const DefaultTTL = 300

// Server is a running DNS server. Its methods are safe for concurrent use.
type Server struct {
	tb   testing.TB
	addr string
	udp  *dns.Server
	tcp  *dns.Server
	done chan struct{}
	once sync.Once

	mu       sync.Mutex
	data     *zoneData
	delay    time.Duration
	drop     bool
	servfail map[string]bool
	queries  int
	counts   map[qkey]int
	active   int
	peak     int
}

type qkey struct {
	name  string
	qtype uint16
}

// zoneData is the parsed text: records by owner and type, the names that
// exist (owners and empty non-terminals inside a zone) and the zone apexes.
type zoneData struct {
	rrs    map[string]map[uint16][]dns.RR
	exists map[string]bool
	soas   map[string]*dns.SOA
}

// New starts a server for a test serving zone (master-file text; several
// $ORIGIN sections allowed; names not fully qualified are relative to the
// current $ORIGIN, or to the root before any). It fails tb on a parse
// error and stops with tb.Cleanup.
func New(tb testing.TB, zone string) *Server {
	tb.Helper()
	s, err := start(tb, zone)
	if err != nil {
		tb.Fatalf("dnstest: %v", err)
	}
	tb.Cleanup(s.Close)
	return s
}

// Start starts a server outside tests; Close stops it.
func Start(zone string) (*Server, error) { return start(nil, zone) }

func start(tb testing.TB, zone string) (*Server, error) {
	data, err := parse(zone)
	if err != nil {
		return nil, err
	}
	s := &Server{
		tb:       tb,
		data:     data,
		done:     make(chan struct{}),
		servfail: make(map[string]bool),
		counts:   make(map[qkey]int),
	}
	var pc net.PacketConn
	var ln net.Listener
	for i := 0; ; i++ {
		pc, err = net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		port := pc.LocalAddr().(*net.UDPAddr).Port
		ln, err = net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err == nil {
			break
		}
		pc.Close()
		if i == 50 {
			return nil, fmt.Errorf("no port free for both UDP and TCP: %w", err)
		}
	}
	s.addr = ln.Addr().String()
	h := dns.HandlerFunc(s.serve)
	s.udp = &dns.Server{PacketConn: pc, Handler: h, UDPSize: 65535}
	s.tcp = &dns.Server{Listener: ln, Handler: h}
	var wg sync.WaitGroup
	wg.Add(2)
	s.udp.NotifyStartedFunc = wg.Done
	s.tcp.NotifyStartedFunc = wg.Done
	for _, srv := range []*dns.Server{s.udp, s.tcp} {
		go func() {
			if err := srv.ActivateAndServe(); err != nil {
				select {
				case <-s.done:
				default:
					s.logf("dnstest: serve: %v", err)
				}
			}
		}()
	}
	wg.Wait()
	return s, nil
}

// Addr is the server's "127.0.0.1:port", for UDP and TCP alike.
func (s *Server) Addr() string { return s.addr }

// Close stops the server; a delayed answer still pending is not sent.
func (s *Server) Close() {
	s.once.Do(func() {
		close(s.done)
		s.udp.Shutdown()
		s.tcp.Shutdown()
	})
}

// Set replaces all the records with those of zone. On a parse error the
// data stay as they were; a test server fails its test.
func (s *Server) Set(zone string) error {
	data, err := parse(zone)
	if err != nil {
		if s.tb != nil {
			s.tb.Helper()
			s.tb.Errorf("dnstest: Set: %v", err)
		}
		return err
	}
	s.mu.Lock()
	s.data = data
	s.mu.Unlock()
	return nil
}

// Delay makes every answer wait d (each query apart: others are not held
// up). 0 answers at once.
func (s *Server) Delay(d time.Duration) {
	s.mu.Lock()
	s.delay = d
	s.mu.Unlock()
}

// Drop(true) makes the server read queries and never answer.
func (s *Server) Drop(drop bool) {
	s.mu.Lock()
	s.drop = drop
	s.mu.Unlock()
}

// Servfail makes every query for name (any type) answer SERVFAIL.
func (s *Server) Servfail(name string) {
	s.mu.Lock()
	s.servfail[canon(name)] = true
	s.mu.Unlock()
}

// Queries is the number of queries received (dropped ones included, UDP
// and TCP alike).
func (s *Server) Queries() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.queries
}

// Count is the number of queries received for name and qtype.
func (s *Server) Count(name string, qtype uint16) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.counts[qkey{canon(name), qtype}]
}

// MaxConcurrent is the largest number of queries the server held at once
// (received and not yet answered, dropped or delayed ones included).
func (s *Server) MaxConcurrent() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.peak
}

func (s *Server) logf(format string, args ...any) {
	if s.tb != nil {
		s.tb.Logf(format, args...)
	}
}

func canon(name string) string { return strings.ToLower(dns.Fqdn(name)) }

// serve answers one query; the dns package runs each on its own goroutine.
func (s *Server) serve(w dns.ResponseWriter, req *dns.Msg) {
	if len(req.Question) != 1 || req.Response {
		m := new(dns.Msg)
		m.SetRcode(req, dns.RcodeFormatError)
		w.WriteMsg(m)
		return
	}
	q := req.Question[0]
	name := canon(q.Name)
	s.mu.Lock()
	s.queries++
	s.counts[qkey{name, q.Qtype}]++
	s.active++
	s.peak = max(s.peak, s.active)
	delay, drop, fail, data := s.delay, s.drop, s.servfail[name], s.data
	s.mu.Unlock()
	// Not held any more once the answer is about to go (a client may
	// send its next query as soon as it has this one).
	release := func() {
		s.mu.Lock()
		s.active--
		s.mu.Unlock()
	}
	if drop {
		// Hold the query until the server closes, so that it counts as
		// in flight, and never answer.
		<-s.done
		release()
		return
	}
	if delay > 0 {
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-s.done:
			t.Stop()
			release()
			return
		}
	}
	m := new(dns.Msg)
	m.SetReply(req)
	m.Authoritative = true
	m.RecursionAvailable = req.RecursionDesired
	if fail {
		m.Rcode = dns.RcodeServerFailure
	} else {
		data.answer(m, name, q.Qtype)
	}
	size := dns.MinMsgSize
	if opt := req.IsEdns0(); opt != nil {
		size = max(size, int(opt.UDPSize()))
		m.SetEdns0(opt.UDPSize(), false)
	}
	if _, udp := w.RemoteAddr().(*net.UDPAddr); udp {
		m.Truncate(size)
	}
	release()
	if err := w.WriteMsg(m); err != nil {
		s.logf("dnstest: write: %v", err)
	}
}

// answer fills m for name and qtype: records (after CNAMEs), else
// NXDOMAIN or NODATA with the SOA.
func (d *zoneData) answer(m *dns.Msg, name string, qtype uint16) {
	cur := name
	for hop := 0; hop < 16; hop++ {
		types := d.rrs[cur]
		if rrs := types[qtype]; len(rrs) > 0 {
			m.Answer = append(m.Answer, rrs...)
			return
		}
		if qtype == dns.TypeANY && len(types) > 0 {
			for _, rrs := range types {
				m.Answer = append(m.Answer, rrs...)
			}
			return
		}
		if c := types[dns.TypeCNAME]; len(c) > 0 && qtype != dns.TypeCNAME {
			m.Answer = append(m.Answer, c[0])
			cur = canon(c[0].(*dns.CNAME).Target)
			continue
		}
		break
	}
	if !d.exists[cur] {
		m.Rcode = dns.RcodeNameError
	}
	m.Ns = append(m.Ns, d.soaFor(cur))
}

// soaFor returns the SOA of the zone enclosing name, with the TTL of a
// negative answer (RFC 2308 3: the lower of its TTL and minimum), or a
// synthesized one for the top label.
func (d *zoneData) soaFor(name string) dns.RR {
	for n := name; ; {
		if soa := d.soas[n]; soa != nil {
			c := dns.Copy(soa).(*dns.SOA)
			c.Hdr.Ttl = min(c.Hdr.Ttl, c.Minttl)
			return c
		}
		i := strings.IndexByte(n, '.')
		if i < 0 || i == len(n)-1 {
			break
		}
		n = n[i+1:]
	}
	labels := dns.SplitDomainName(name)
	apex := "."
	if len(labels) > 0 {
		apex = labels[len(labels)-1] + "."
	}
	return &dns.SOA{
		Hdr: dns.RR_Header{Name: apex, Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: DefaultTTL},
		Ns:  "ns.dnstest.", Mbox: "hostmaster.dnstest.",
		Serial: 1, Refresh: 3600, Retry: 600, Expire: 86400, Minttl: DefaultTTL,
	}
}

// parse reads master-file text.
func parse(zone string) (*zoneData, error) {
	d := &zoneData{
		rrs:    make(map[string]map[uint16][]dns.RR),
		exists: make(map[string]bool),
		soas:   make(map[string]*dns.SOA),
	}
	zp := dns.NewZoneParser(strings.NewReader(zone), ".", "")
	zp.SetDefaultTTL(DefaultTTL)
	var owners []string
	for rr, ok := zp.Next(); ok; rr, ok = zp.Next() {
		h := rr.Header()
		name := canon(h.Name)
		h.Name = name
		if d.rrs[name] == nil {
			d.rrs[name] = make(map[uint16][]dns.RR)
			owners = append(owners, name)
		}
		d.rrs[name][h.Rrtype] = append(d.rrs[name][h.Rrtype], rr)
		d.exists[name] = true
		if soa, ok := rr.(*dns.SOA); ok {
			d.soas[name] = soa
		}
	}
	if err := zp.Err(); err != nil {
		return nil, err
	}
	if len(d.rrs) == 0 && strings.TrimSpace(zone) != "" && !onlyComments(zone) {
		return nil, errors.New("no records in zone text")
	}
	// Empty non-terminals inside a zone exist (NODATA, RFC 8020).
	for _, name := range owners {
		for n := name; ; {
			i := strings.IndexByte(n, '.')
			if i < 0 || i == len(n)-1 {
				break
			}
			n = n[i+1:]
			if !d.inZone(n) {
				break
			}
			d.exists[n] = true
		}
	}
	return d, nil
}

// inZone reports whether n is at or below a zone apex of the data.
func (d *zoneData) inZone(n string) bool {
	for {
		if d.soas[n] != nil {
			return true
		}
		i := strings.IndexByte(n, '.')
		if i < 0 || i == len(n)-1 {
			return false
		}
		n = n[i+1:]
	}
}

func onlyComments(zone string) bool {
	for _, line := range strings.Split(zone, "\n") {
		line = strings.TrimSpace(line)
		if line != "" && !strings.HasPrefix(line, ";") && !strings.HasPrefix(line, "$") {
			return false
		}
	}
	return true
}
