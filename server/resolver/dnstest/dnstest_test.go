package dnstest

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
)

func ask(t *testing.T, s *Server, net, name string, qtype uint16, edns uint16) *dns.Msg {
	t.Helper()
	q := new(dns.Msg)
	q.SetQuestion(name, qtype)
	if edns > 0 {
		q.SetEdns0(edns, false)
	}
	c := &dns.Client{Net: net, Timeout: 2 * time.Second, UDPSize: 65535}
	m, _, err := c.Exchange(q, s.Addr())
	if err != nil {
		t.Fatalf("%s %s %s: %v", net, name, dns.TypeToString[qtype], err)
	}
	return m
}

// TestServer: answers, NXDOMAIN vs NODATA with a SOA (the zone's or a
// synthesized one), CNAMEs, several $ORIGINs, truncation at 512 bytes or
// the EDNS size over UDP only, Set, Servfail and the counters.
func TestServer(t *testing.T) {
	var many strings.Builder
	for i := range 40 {
		fmt.Fprintf(&many, "many IN A 10.0.0.%d\n", i)
	}
	s := New(t, `
$ORIGIN a.test.
@   IN SOA ns.a.test. h.a.test. 1 3600 600 86400 42
www 60 IN A 192.0.2.1
alias  IN CNAME www
x.y    IN TXT "deep"
`+many.String()+`
$ORIGIN b.test.
mail IN MX 10 mx.b.test.
`)
	m := ask(t, s, "udp", "WWW.a.test.", dns.TypeA, 0)
	if m.Rcode != dns.RcodeSuccess || !m.Authoritative || len(m.Answer) != 1 || m.Answer[0].Header().Ttl != 60 {
		t.Errorf("A: %v", m)
	}
	m = ask(t, s, "udp", "alias.a.test.", dns.TypeA, 0)
	if len(m.Answer) != 2 || m.Answer[0].Header().Rrtype != dns.TypeCNAME || m.Answer[1].(*dns.A).A.String() != "192.0.2.1" {
		t.Errorf("CNAME: %v", m)
	}
	for _, tc := range []struct {
		name  string
		rcode int
		soa   string
		ttl   uint32
	}{
		{"www.a.test.", dns.RcodeSuccess, "a.test.", 42},    // NODATA
		{"y.a.test.", dns.RcodeSuccess, "a.test.", 42},      // empty non-terminal
		{"nope.a.test.", dns.RcodeNameError, "a.test.", 42}, // NXDOMAIN
		{"mail.b.test.", dns.RcodeSuccess, "test.", 300},    // no SOA in the text: synthesized
		{"nope.b.test.", dns.RcodeNameError, "test.", 300},
	} {
		m := ask(t, s, "udp", tc.name, dns.TypeTXT, 0)
		if m.Rcode != tc.rcode || len(m.Answer) != 0 || len(m.Ns) != 1 {
			t.Errorf("%s: %v", tc.name, m)
			continue
		}
		if soa, ok := m.Ns[0].(*dns.SOA); !ok || soa.Hdr.Name != tc.soa || soa.Hdr.Ttl != tc.ttl {
			t.Errorf("%s: authority %v", tc.name, m.Ns[0])
		}
	}
	if m := ask(t, s, "udp", "mail.b.test.", dns.TypeMX, 0); len(m.Answer) != 1 {
		t.Errorf("second $ORIGIN: %v", m)
	}

	// 40 A records (~650 bytes) do not fit 512 bytes: truncated over UDP,
	// whole with EDNS 1232 and over TCP.
	if m := ask(t, s, "udp", "many.a.test.", dns.TypeA, 0); !m.Truncated || len(m.Answer) == 40 || compressedLen(m) > 512 {
		t.Errorf("UDP 512: TC %v, %d records, %d bytes", m.Truncated, len(m.Answer), m.Len())
	}
	if m := ask(t, s, "udp", "many.a.test.", dns.TypeA, 1232); m.Truncated || len(m.Answer) != 40 {
		t.Errorf("UDP EDNS 1232: TC %v, %d records", m.Truncated, len(m.Answer))
	}
	if m := ask(t, s, "tcp", "many.a.test.", dns.TypeA, 0); m.Truncated || len(m.Answer) != 40 {
		t.Errorf("TCP: TC %v, %d records", m.Truncated, len(m.Answer))
	}
	if n := s.Count("MANY.a.test", dns.TypeA); n != 3 {
		t.Errorf("Count = %d, want 3", n)
	}

	s.Servfail("www.a.test")
	if m := ask(t, s, "tcp", "www.a.test.", dns.TypeA, 0); m.Rcode != dns.RcodeServerFailure {
		t.Errorf("Servfail: %v", m)
	}
	if err := s.Set("$ORIGIN c.test.\n@ IN A 192.0.2.3\n"); err != nil {
		t.Fatal(err)
	}
	if m := ask(t, s, "udp", "c.test.", dns.TypeA, 0); len(m.Answer) != 1 {
		t.Errorf("after Set: %v", m)
	}
	if m := ask(t, s, "udp", "alias.a.test.", dns.TypeA, 0); m.Rcode != dns.RcodeNameError {
		t.Errorf("after Set, old data: %v", m)
	}
	if n := s.Queries(); n != 14 {
		t.Errorf("Queries = %d, want 14", n)
	}
}

// TestDelayDrop: a delayed query holds up no other; a dropped one is never
// answered; Close does not wait for either.
func TestDelayDrop(t *testing.T) {
	s, err := Start("$ORIGIN d.test.\n@ IN A 192.0.2.4\n")
	if err != nil {
		t.Fatal(err)
	}
	s.Delay(300 * time.Millisecond)
	start := time.Now()
	done := make(chan struct{})
	for range 5 {
		go func() {
			ask(t, s, "udp", "d.test.", dns.TypeA, 0)
			done <- struct{}{}
		}()
	}
	for range 5 {
		<-done
	}
	if el := time.Since(start); el < 300*time.Millisecond || el > 900*time.Millisecond {
		t.Errorf("5 delayed queries took %v, want about 300ms (concurrent)", el)
	}
	if p := s.MaxConcurrent(); p != 5 {
		t.Errorf("MaxConcurrent = %d, want 5", p)
	}
	s.Delay(0)
	s.Drop(true)
	c := &dns.Client{Timeout: 200 * time.Millisecond}
	q := new(dns.Msg)
	q.SetQuestion("d.test.", dns.TypeA)
	if _, _, err := c.Exchange(q, s.Addr()); err == nil {
		t.Error("Drop: answered")
	}
	start = time.Now()
	s.Close()
	if el := time.Since(start); el > 2*time.Second {
		t.Errorf("Close took %v", el)
	}
}

func compressedLen(m *dns.Msg) int {
	c := m.Copy()
	c.Compress = true
	return c.Len()
}
