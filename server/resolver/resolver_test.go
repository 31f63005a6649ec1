package resolver

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/nanomx/nanomx/server/resolver/dnstest"
)

// bigTXT is one TXT record of 20 strings of 200 bytes: larger than any UDP
// answer we accept (1232), so it needs TCP.
var bigTXT = func() string {
	var b strings.Builder
	for i := range 20 {
		fmt.Fprintf(&b, " \"%s\"", strings.Repeat(string(rune('a'+i)), 200))
	}
	return b.String()
}()

var zone = `
$ORIGIN example.test.
@        300 IN SOA ns.example.test. hostmaster.example.test. 1 3600 600 86400 60
@        300 IN TXT "v=spf1 ip4:192.0.2.0/24 mx include:inc.example.test -all"
@            IN MX 20 mx2.example.test.
@            IN MX 10 mx1.example.test.
multi        IN TXT "part one " "part two"
esc          IN TXT "say \"hi\"; back\\slash" "\059\255"
mx1          IN A 192.0.2.1
mx1          IN AAAA 2001:db8::1
mx2          IN A 198.51.100.2
www          IN CNAME alias.example.test.
alias        IN CNAME mx1.example.test.
short      0 IN A 192.0.2.9
long   86400 IN A 192.0.2.10
big          IN TXT` + bigTXT + `
inc          IN TXT "v=spf1 ip4:203.0.113.0/24 -all"
broken       IN A 192.0.2.99
a.deep.ent   IN A 192.0.2.11

$ORIGIN 2.0.192.in-addr.arpa.
@   IN SOA ns.example.test. hostmaster.example.test. 1 3600 600 86400 60
1   IN PTR mx1.example.test.
1   IN PTR other.example.test.
`

// clock is a settable clock for the cache.
type clock struct{ ns atomic.Int64 }

func newClock() *clock {
	c := &clock{}
	c.ns.Store(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano())
	return c
}
func (c *clock) Now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *clock) Advance(d time.Duration) { c.ns.Add(int64(d)) }

func newResolver(t testing.TB, cfg Config) *Resolver {
	t.Helper()
	r, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func setup(t testing.TB) (*dnstest.Server, *Resolver, *clock) {
	t.Helper()
	s := dnstest.New(t, zone)
	c := newClock()
	r := newResolver(t, Config{Servers: []string{s.Addr()}, Timeout: time.Second, Attempts: 1, Now: c.Now})
	return s, r, c
}

func dnsErr(t *testing.T, err error) *net.DNSError {
	t.Helper()
	var de *net.DNSError
	if !errors.As(err, &de) {
		t.Fatalf("error %v (%T) is not a *net.DNSError", err, err)
	}
	return de
}

func TestAnswers(t *testing.T) {
	_, r, _ := setup(t)
	ctx := context.Background()

	txt, err := r.LookupTXT(ctx, "example.test")
	if err != nil || len(txt) != 1 || txt[0] != "v=spf1 ip4:192.0.2.0/24 mx include:inc.example.test -all" {
		t.Errorf("TXT = %q, %v", txt, err)
	}
	// The strings of one record are joined, as net does.
	if txt, err := r.LookupTXT(ctx, "Multi.Example.Test."); err != nil || !slices.Equal(txt, []string{"part one part two"}) {
		t.Errorf("multi TXT = %q, %v", txt, err)
	}
	// Escapes in the zone are bytes on the wire and in the result.
	if txt, err := r.LookupTXT(ctx, "esc.example.test"); err != nil || !slices.Equal(txt, []string{"say \"hi\"; back\\slash;\xff"}) {
		t.Errorf("escaped TXT = %q, %v", txt, err)
	}

	mx, err := r.LookupMX(ctx, "example.test")
	if err != nil || len(mx) != 2 || *mx[0] != (net.MX{Host: "mx1.example.test.", Pref: 10}) || *mx[1] != (net.MX{Host: "mx2.example.test.", Pref: 20}) {
		t.Errorf("MX = %v, %v", mx, err)
	}

	ips, err := r.LookupIPAddr(ctx, "mx1.example.test")
	if err != nil || len(ips) != 2 || !ips[0].IP.Equal(net.ParseIP("192.0.2.1")) || !ips[1].IP.Equal(net.ParseIP("2001:db8::1")) {
		t.Errorf("IPAddr = %v, %v", ips, err)
	}
	// Only A: the missing AAAA is no error.
	if ips, err := r.LookupIPAddr(ctx, "mx2.example.test"); err != nil || len(ips) != 1 || !ips[0].IP.Equal(net.ParseIP("198.51.100.2")) {
		t.Errorf("IPAddr mx2 = %v, %v", ips, err)
	}
	if hosts, err := r.LookupHost(ctx, "mx1.example.test"); err != nil || !slices.Equal(hosts, []string{"192.0.2.1", "2001:db8::1"}) {
		t.Errorf("Host = %v, %v", hosts, err)
	}
	// An IP literal is its own address, without a query.
	if ips, err := r.LookupIPAddr(ctx, "192.0.2.200"); err != nil || len(ips) != 1 || !ips[0].IP.Equal(net.ParseIP("192.0.2.200")) {
		t.Errorf("IPAddr literal = %v, %v", ips, err)
	}

	// A CNAME chain is followed.
	if ips, err := r.LookupIPAddr(ctx, "www.example.test"); err != nil || len(ips) != 2 || !ips[0].IP.Equal(net.ParseIP("192.0.2.1")) {
		t.Errorf("IPAddr via CNAME = %v, %v", ips, err)
	}
	ans, err := r.Lookup(ctx, "www.example.test", dns.TypeA)
	if err != nil || ans.Name != "mx1.example.test." || len(ans.RRs) != 1 || !ans.Authoritative || ans.Rcode != dns.RcodeSuccess || ans.TTL != 300*time.Second {
		t.Errorf("Lookup via CNAME = %+v, %v", ans, err)
	}

	names, err := r.LookupAddr(ctx, "192.0.2.1")
	slices.Sort(names)
	if err != nil || !slices.Equal(names, []string{"mx1.example.test.", "other.example.test."}) {
		t.Errorf("PTR = %v, %v", names, err)
	}
	if _, err := r.LookupAddr(ctx, "192.0.2.2"); err == nil || !dnsErr(t, err).IsNotFound {
		t.Errorf("PTR of unknown address: %v", err)
	}

	// A name that is no domain name is not found, without a query.
	if _, err := r.LookupTXT(ctx, "a..b"); err == nil || !dnsErr(t, err).IsNotFound {
		t.Errorf("bad name: %v", err)
	}
}

func TestCacheTTL(t *testing.T) {
	s, r, c := setup(t)
	ctx := context.Background()
	for i := range 3 {
		if _, err := r.LookupMX(ctx, "example.test"); err != nil {
			t.Fatal(err)
		}
		if n := s.Count("example.test", dns.TypeMX); n != 1 {
			t.Fatalf("lookup %d: server saw %d MX queries, want 1 (cached)", i, n)
		}
	}
	c.Advance(299 * time.Second)
	ans, err := r.Lookup(ctx, "example.test", dns.TypeMX)
	if err != nil || ans.TTL != time.Second || s.Count("example.test", dns.TypeMX) != 1 {
		t.Fatalf("at 299s: %+v, %v, %d queries", ans, err, s.Count("example.test", dns.TypeMX))
	}
	c.Advance(time.Second)
	if _, err := r.LookupMX(ctx, "example.test"); err != nil || s.Count("example.test", dns.TypeMX) != 2 {
		t.Fatalf("after the TTL: %v, %d queries, want 2", err, s.Count("example.test", dns.TypeMX))
	}

	// TTL 0 is raised to MinTTL (1s).
	for range 2 {
		r.LookupIPAddr(ctx, "short.example.test")
	}
	if n := s.Count("short.example.test", dns.TypeA); n != 1 {
		t.Fatalf("TTL 0: %d queries, want 1 (MinTTL)", n)
	}
	c.Advance(time.Second)
	r.LookupIPAddr(ctx, "short.example.test")
	if n := s.Count("short.example.test", dns.TypeA); n != 2 {
		t.Fatalf("TTL 0 after MinTTL: %d queries, want 2", n)
	}

	// A day's TTL is cut to MaxTTL (1h).
	ans, err = r.Lookup(ctx, "long.example.test", dns.TypeA)
	if err != nil || ans.TTL != time.Hour {
		t.Fatalf("long TTL: %+v, %v", ans, err)
	}
	c.Advance(time.Hour)
	r.Lookup(ctx, "long.example.test", dns.TypeA)
	if n := s.Count("long.example.test", dns.TypeA); n != 2 {
		t.Fatalf("after MaxTTL: %d queries, want 2", n)
	}
	st := r.Stats()
	if st.CacheHits == 0 || st.CacheMisses == 0 || st.Queries["MX"] != 5 || st.Results["ok"] == 0 {
		t.Errorf("stats %+v", st)
	}
}

func TestNegativeCache(t *testing.T) {
	s, r, c := setup(t)
	ctx := context.Background()
	for _, tc := range []struct {
		name  string
		qtype uint16
		rcode int
	}{
		{"nosuch.example.test", dns.TypeTXT, dns.RcodeNameError}, // NXDOMAIN
		{"mx1.example.test", dns.TypeTXT, dns.RcodeSuccess},      // NODATA
		{"ent.example.test", dns.TypeA, dns.RcodeSuccess},        // empty non-terminal: NODATA
	} {
		for i := range 2 {
			ans, err := r.Lookup(ctx, tc.name, tc.qtype)
			de := dnsErr(t, err)
			if !de.IsNotFound || de.IsTemporary || de.IsTimeout || de.Name != tc.name {
				t.Errorf("%s: error %+v, want not found", tc.name, de)
			}
			// SOA: TTL 300, minimum 60: cached for 60s (RFC 2308 5).
			if ans == nil || ans.Rcode != tc.rcode || len(ans.RRs) != 0 || ans.TTL != 60*time.Second {
				t.Errorf("%s: answer %+v", tc.name, ans)
			}
			if n := s.Count(tc.name, tc.qtype); n != 1 {
				t.Errorf("%s lookup %d: %d queries, want 1", tc.name, i, n)
			}
		}
	}
	if _, err := r.LookupTXT(ctx, "nosuch.example.test"); err == nil || !dnsErr(t, err).IsNotFound {
		t.Errorf("LookupTXT of NXDOMAIN: %v", err)
	}
	c.Advance(60 * time.Second)
	r.Lookup(ctx, "nosuch.example.test", dns.TypeTXT)
	if n := s.Count("nosuch.example.test", dns.TypeTXT); n != 2 {
		t.Errorf("after the negative TTL: %d queries, want 2", n)
	}
	// No records at all for both A and AAAA: not found.
	if _, err := r.LookupIPAddr(ctx, "nosuch.example.test"); err == nil || !dnsErr(t, err).IsNotFound {
		t.Errorf("LookupIPAddr NXDOMAIN: %v", err)
	}
}

func TestServfail(t *testing.T) {
	s, r, _ := setup(t)
	s.Servfail("broken.example.test")
	ctx := context.Background()
	for i := 1; i <= 2; i++ {
		_, err := r.LookupIPAddr(ctx, "broken.example.test")
		de := dnsErr(t, err)
		if de.IsNotFound || !de.IsTemporary || !de.Temporary() || de.Server != s.Addr() {
			t.Errorf("SERVFAIL: %+v, want temporary", de)
		}
		// Not cached: asked again.
		if n := s.Count("broken.example.test", dns.TypeA); n != i {
			t.Errorf("lookup %d: %d queries", i, n)
		}
	}
	if st := r.Stats(); st.Results["error"] < 2 {
		t.Errorf("stats %+v", st.Results)
	}
}

func TestTimeout(t *testing.T) {
	s := dnstest.New(t, zone)
	s.Drop(true)
	r := newResolver(t, Config{Servers: []string{s.Addr()}, Timeout: 150 * time.Millisecond, Attempts: 2})
	start := time.Now()
	_, err := r.LookupTXT(context.Background(), "example.test")
	el := time.Since(start)
	de := dnsErr(t, err)
	if !de.IsTimeout || !de.IsTemporary || de.IsNotFound {
		t.Errorf("error %+v, want a timeout", de)
	}
	if el < 250*time.Millisecond || el > time.Second {
		t.Errorf("took %v, want about 2 × 150ms", el)
	}
	if n := s.Count("example.test", dns.TypeTXT); n != 2 {
		t.Errorf("%d attempts, want 2", n)
	}

	// The caller's deadline wins over a longer timeout.
	r = newResolver(t, Config{Servers: []string{s.Addr()}, Timeout: 5 * time.Second})
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start = time.Now()
	_, err = r.LookupIPAddr(ctx, "mx1.example.test")
	el = time.Since(start)
	if de := dnsErr(t, err); !de.IsTimeout || !de.IsTemporary || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("ctx deadline: %+v", de)
	}
	if el > 400*time.Millisecond {
		t.Errorf("ctx deadline 100ms: took %v", el)
	}
	// A cancelled context is temporary too (SPF: temperror).
	ctx, cancel = context.WithCancel(context.Background())
	cancel()
	if _, err := r.LookupMX(ctx, "example.test"); err == nil || !dnsErr(t, err).Temporary() {
		t.Errorf("cancelled: %v", err)
	}
}

func TestRetryNextServer(t *testing.T) {
	dead := dnstest.New(t, zone)
	dead.Drop(true)
	live := dnstest.New(t, zone)
	r := newResolver(t, Config{Servers: []string{dead.Addr(), live.Addr()}, Timeout: 100 * time.Millisecond})
	txt, err := r.LookupTXT(context.Background(), "inc.example.test")
	if err != nil || len(txt) != 1 {
		t.Fatalf("TXT = %q, %v", txt, err)
	}
	if dead.Count("inc.example.test", dns.TypeTXT) != 1 || live.Count("inc.example.test", dns.TypeTXT) != 1 {
		t.Errorf("queries: dead %d, live %d", dead.Count("inc.example.test", dns.TypeTXT), live.Count("inc.example.test", dns.TypeTXT))
	}
	// SERVFAIL from the first moves on too.
	dead.Drop(false)
	dead.Servfail("mx2.example.test")
	if _, err := r.Lookup(context.Background(), "mx2.example.test", dns.TypeA); err != nil {
		t.Errorf("after SERVFAIL from the first: %v", err)
	}
}

func TestTruncationTCP(t *testing.T) {
	s, r, _ := setup(t)
	txt, err := r.LookupTXT(context.Background(), "big.example.test")
	if err != nil || len(txt) != 1 || len(txt[0]) != 4000 || txt[0][:200] != strings.Repeat("a", 200) || txt[0][3800:] != strings.Repeat("t", 200) {
		t.Fatalf("big TXT: %d records, %v", len(txt), err)
	}
	if st := r.Stats(); st.TCPFallbacks != 1 || st.Exchanges != 1 {
		t.Errorf("stats %+v", st)
	}
	if n := s.Count("big.example.test", dns.TypeTXT); n != 2 {
		t.Errorf("%d queries, want 2 (UDP then TCP)", n)
	}
}

func TestHostileAnswerCapped(t *testing.T) {
	var b strings.Builder
	b.WriteString("$ORIGIN many.test.\n")
	for i := range 400 {
		fmt.Fprintf(&b, "@ IN A 10.0.%d.%d\n", i/256, i%256)
	}
	s := dnstest.New(t, b.String())
	r := newResolver(t, Config{Servers: []string{s.Addr()}})
	ans, err := r.Lookup(context.Background(), "many.test", dns.TypeA)
	if err != nil || len(ans.RRs) != MaxRRs {
		t.Fatalf("400 A records: kept %d, %v; want %d", len(ans.RRs), err, MaxRRs)
	}
}

func TestCollapse(t *testing.T) {
	s, r, _ := setup(t)
	s.Delay(200 * time.Millisecond)
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for range 20 {
		wg.Go(func() {
			txt, err := r.LookupTXT(context.Background(), "inc.example.test")
			if err == nil && len(txt) != 1 {
				err = fmt.Errorf("TXT %q", txt)
			}
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	if n := s.Queries(); n != 1 {
		t.Errorf("20 concurrent lookups: %d queries, want 1", n)
	}
	if st := r.Stats(); st.Collapsed+st.CacheHits != 19 {
		t.Errorf("stats %+v", st)
	}

	// A caller that gives up does not spoil the answer for the others.
	s.Delay(200 * time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	done := make(chan error)
	go func() {
		_, err := r.LookupMX(context.Background(), "mx1.example.test")
		done <- err
	}()
	if _, err := r.LookupMX(ctx, "mx1.example.test"); err == nil || !dnsErr(t, err).IsTimeout {
		t.Errorf("short ctx: %v", err)
	}
	if err := <-done; err == nil || !dnsErr(t, err).IsNotFound {
		t.Errorf("patient caller: %v, want NODATA", err)
	}
}

func TestMaxInFlight(t *testing.T) {
	s := dnstest.New(t, zone)
	s.Delay(50 * time.Millisecond)
	r := newResolver(t, Config{Servers: []string{s.Addr()}, MaxInFlight: 3})
	var wg sync.WaitGroup
	var bad atomic.Int32
	for i := range 12 {
		wg.Go(func() {
			_, err := r.LookupTXT(context.Background(), fmt.Sprintf("n%d.example.test", i))
			if err == nil || !dnsErr(t, err).IsNotFound {
				bad.Add(1)
			}
		})
	}
	wg.Wait()
	if s.Queries() != 12 || bad.Load() != 0 {
		t.Fatalf("%d queries, %d bad answers", s.Queries(), bad.Load())
	}
	if p := s.MaxConcurrent(); p > 3 || p < 2 {
		t.Errorf("server held %d queries at once, want at most 3", p)
	}
	// A caller waiting for a slot gives up with its context.
	s.Drop(true)
	r = newResolver(t, Config{Servers: []string{s.Addr()}, MaxInFlight: 1, Timeout: time.Second, Attempts: 1})
	go r.LookupTXT(context.Background(), "hold.example.test")
	time.Sleep(20 * time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	if _, err := r.LookupTXT(ctx, "other.example.test"); err == nil || !dnsErr(t, err).IsTemporary || time.Since(start) > 500*time.Millisecond {
		t.Errorf("waiting for a slot: %v after %v", err, time.Since(start))
	}
}

func TestCacheBounded(t *testing.T) {
	s := dnstest.New(t, zone)
	r := newResolver(t, Config{Servers: []string{s.Addr()}, CacheEntries: 10})
	ctx := context.Background()
	for i := range 50 {
		r.LookupTXT(ctx, fmt.Sprintf("n%d.example.test", i))
		if st := r.Stats(); st.CacheEntries > 10 {
			t.Fatalf("after %d names: %d entries", i+1, st.CacheEntries)
		}
	}
	// The last ten are cached, the first was evicted.
	r.LookupTXT(ctx, "n49.example.test")
	r.LookupTXT(ctx, "n0.example.test")
	if s.Count("n49.example.test", dns.TypeTXT) != 1 || s.Count("n0.example.test", dns.TypeTXT) != 2 {
		t.Errorf("n49: %d, n0: %d queries", s.Count("n49.example.test", dns.TypeTXT), s.Count("n0.example.test", dns.TypeTXT))
	}

	// The byte bound holds too: big answers push each other out.
	r = newResolver(t, Config{Servers: []string{s.Addr()}, CacheBytes: 6000})
	for _, n := range []string{"big.example.test", "example.test", "multi.example.test"} {
		r.LookupTXT(ctx, n)
	}
	if st := r.Stats(); st.CacheBytes > 6000 || st.CacheEntries < 1 {
		t.Errorf("byte bound: %d bytes in %d entries", st.CacheBytes, st.CacheEntries)
	}
}

func TestServersFromResolvConf(t *testing.T) {
	p := filepath.Join(t.TempDir(), "resolv.conf")
	os.WriteFile(p, []byte("# comment\nsearch example.test\nnameserver 192.0.2.53\nnameserver ::1\nnameserver fe80::1%eth0\nnameserver bogus\noptions ndots:1\n"), 0o644)
	got, err := ServersFromResolvConf(p)
	if want := []string{"192.0.2.53:53", "[::1]:53", "[fe80::1%eth0]:53"}; err != nil || !slices.Equal(got, want) {
		t.Errorf("got %q, %v; want %q", got, err, want)
	}
	for _, s := range got {
		if err := CheckServer(s); err != nil {
			t.Error(err)
		}
	}
	if _, err := ServersFromResolvConf(filepath.Join(t.TempDir(), "none")); err == nil {
		t.Error("missing file: no error")
	}
	for _, bad := range []string{"192.0.2.1", "dns.example:53", "192.0.2.1:0", "192.0.2.1:x", "[::1]:70000"} {
		if CheckServer(bad) == nil {
			t.Errorf("CheckServer(%q) accepted", bad)
		}
	}
	if _, err := New(Config{Servers: []string{"nohost"}}); err == nil {
		t.Error("New accepted a bad server")
	}
}

func BenchmarkCachedLookup(b *testing.B) {
	_, r, _ := setup(b)
	ctx := context.Background()
	if _, err := r.LookupTXT(ctx, "example.test"); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := r.LookupTXT(ctx, "example.test"); err != nil {
			b.Fatal(err)
		}
	}
}

// TestCounts: each lookup is counted once under its type and result (a
// cache hit too), and each query asked of the servers once in the
// latency buckets, in the bucket its time falls in.
func TestCounts(t *testing.T) {
	s, r, _ := setup(t)
	s.Servfail("broken.example.test")
	ctx := context.Background()
	r.LookupMX(ctx, "example.test")                 // MX ok
	r.LookupMX(ctx, "example.test")                 // MX ok, from the cache
	r.LookupTXT(ctx, "nosuch.example.test")         // TXT notfound
	r.Lookup(ctx, "broken.example.test", dns.TypeA) // A error
	r.Lookup(ctx, "mx1.example.test", dns.TypeSRV)  // other notfound (NODATA)
	s.Delay(30 * time.Millisecond)
	r.Lookup(ctx, "mx2.example.test", dns.TypeA) // A ok, 30 ms or more

	c := r.Counts()
	idx := func(names []string, name string) int {
		i := slices.Index(names, name)
		if i < 0 {
			t.Fatalf("no %q in %v", name, names)
		}
		return i
	}
	want := map[[2]string]uint64{
		{"MX", "ok"}: 2, {"TXT", "notfound"}: 1, {"A", "error"}: 1, {"other", "notfound"}: 1, {"A", "ok"}: 1,
	}
	var total uint64
	for ti, byResult := range c.Lookups {
		for ri, n := range byResult {
			k := [2]string{TypeNames[ti], ResultNames[ri]}
			if n != want[k] {
				t.Errorf("lookups %v = %d, want %d", k, n, want[k])
			}
			total += n
		}
	}
	if total != 6 || c.Lookups[idx(TypeNames[:], "MX")][idx(ResultNames[:], "ok")] != 2 {
		t.Errorf("%d lookups counted, want 6", total)
	}
	if c.CacheHits != 1 || c.CacheMisses != 5 || c.Flights != 5 {
		t.Errorf("hits %d, misses %d, flights %d; want 1, 5, 5", c.CacheHits, c.CacheMisses, c.Flights)
	}
	var inBuckets, slow uint64
	for i, n := range c.Latency {
		inBuckets += n
		if i == len(LatencyBounds) || LatencyBounds[i] > 25*time.Millisecond {
			slow += n
		}
	}
	if inBuckets != c.Flights || slow < 1 || c.LatencySum < 30*time.Millisecond {
		t.Errorf("latency buckets %v (sum %v): %d counted of %d flights, %d over 25 ms, want 1", c.Latency, c.LatencySum, inBuckets, c.Flights, slow)
	}
	st := r.Stats()
	if st.Results["ok"] != 3 || st.Results["notfound"] != 2 || st.Results["error"] != 1 || st.Queries["A"] != 2 {
		t.Errorf("Stats %+v", st)
	}
	if n := testing.AllocsPerRun(10, func() { _ = r.Counts() }); n != 0 {
		t.Errorf("Counts allocates %v times", n)
	}
}

// TestCacheOnly: under CacheOnly a cached name (positive or negative) is
// answered as usual and missed stays false; a name not cached fails at
// once with a temporary error, sets missed, and sends no query; the same
// name asked normally afterwards is looked up.
func TestCacheOnly(t *testing.T) {
	s, r, _ := setup(t)
	bg := context.Background()
	if _, err := r.LookupTXT(bg, "example.test"); err != nil {
		t.Fatal(err)
	}
	if _, err := r.LookupTXT(bg, "nx.example.test"); !dnsErr(t, err).IsNotFound {
		t.Fatalf("nx: %v", err)
	}
	ctx, missed := CacheOnly(bg)
	txt, err := r.LookupTXT(ctx, "example.test")
	if err != nil || len(txt) != 1 || !strings.HasPrefix(txt[0], "v=spf1") {
		t.Fatalf("cached: %q, %v", txt, err)
	}
	if _, err := r.LookupTXT(ctx, "nx.example.test"); !dnsErr(t, err).IsNotFound {
		t.Fatalf("cached NXDOMAIN: %v, want not found", err)
	}
	if missed() {
		t.Fatal("missed after cached answers")
	}
	queries := r.Stats().Queries["TXT"]
	start := time.Now()
	_, err = r.LookupTXT(ctx, "multi.example.test")
	if de := dnsErr(t, err); !de.IsTemporary || de.IsNotFound || time.Since(start) > 100*time.Millisecond {
		t.Fatalf("not cached: %+v after %v, want a temporary error at once", de, time.Since(start))
	}
	if !missed() || s.Count("multi.example.test", dns.TypeTXT) != 0 || r.Stats().Queries["TXT"] != queries {
		t.Fatalf("not cached: missed %v, %d queries sent, counted %d→%d", missed(), s.Count("multi.example.test", dns.TypeTXT), queries, r.Stats().Queries["TXT"])
	}
	if _, err := r.LookupTXT(bg, "multi.example.test"); err != nil || s.Count("multi.example.test", dns.TypeTXT) != 1 {
		t.Fatalf("asked again: %v, %d queries", err, s.Count("multi.example.test", dns.TypeTXT))
	}
}

// TestCacheOnlyReset: a CacheOnlyContext used again after Reset reports
// a miss afresh; a context derived from it (a deadline) is cache-only
// too; a cached lookup under it allocates only the caller's slice.
func TestCacheOnlyReset(t *testing.T) {
	s, r, _ := setup(t)
	bg := context.Background()
	if _, err := r.LookupTXT(bg, "example.test"); err != nil {
		t.Fatal(err)
	}
	co := NewCacheOnly(bg)
	if _, err := r.LookupTXT(co, "multi.example.test"); err == nil || !co.Missed() {
		t.Fatalf("not cached: %v, missed %v", err, co.Missed())
	}
	co.Reset()
	if co.Missed() {
		t.Fatal("missed after Reset")
	}
	if _, err := r.LookupTXT(co, "example.test"); err != nil || co.Missed() {
		t.Fatalf("cached after Reset: %v, missed %v", err, co.Missed())
	}
	ctx, cancel := context.WithTimeout(co, time.Minute)
	defer cancel()
	if _, err := r.LookupTXT(ctx, "multi.example.test"); err == nil || !co.Missed() || s.Count("multi.example.test", dns.TypeTXT) != 0 {
		t.Fatalf("derived context: %v, missed %v, %d queries", err, co.Missed(), s.Count("multi.example.test", dns.TypeTXT))
	}
	co.Reset()
	if n := testing.AllocsPerRun(100, func() { _, _ = r.LookupTXT(co, "example.test") }); n > 1 {
		t.Errorf("a cached TXT lookup allocates %v times, want at most 1 (the slice returned)", n)
	}
}

// TestLookupTXTShared: LookupTXTShared answers what LookupTXT does, from
// the cache without a copy (no allocation), and errors alike.
func TestLookupTXTShared(t *testing.T) {
	_, r, _ := setup(t)
	bg := context.Background()
	want, err := r.LookupTXT(bg, "multi.example.test")
	if err != nil {
		t.Fatal(err)
	}
	got, err := r.LookupTXTShared(bg, "multi.example.test")
	if err != nil || !slices.Equal(got, want) {
		t.Fatalf("shared %q %v, want %q", got, err, want)
	}
	if n := testing.AllocsPerRun(100, func() { _, _ = r.LookupTXTShared(bg, "multi.example.test") }); n != 0 {
		t.Errorf("a cached shared lookup allocates %v times", n)
	}
	if _, err := r.LookupTXTShared(bg, "nx.example.test"); !dnsErr(t, err).IsNotFound {
		t.Fatalf("nx: %v", err)
	}
}
