package screen

import (
	"context"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/nanomx/nanomx/server/check"
	"github.com/nanomx/nanomx/server/servertest"
)

// zoneLookup answers from a table of names: an address list, or
// "nxdomain", "servfail", "hang" (until the context ends).
type zoneLookup struct {
	mu    sync.Mutex
	names map[string]string
	asked []string
}

func (z *zoneLookup) lookup(ctx context.Context, name string) ([]netip.Addr, error) {
	z.mu.Lock()
	v, ok := z.names[name]
	z.asked = append(z.asked, name)
	z.mu.Unlock()
	switch {
	case !ok || v == "nxdomain":
		return nil, &net.DNSError{Err: "no such host", Name: name, IsNotFound: true}
	case v == "servfail":
		return nil, &net.DNSError{Err: "server misbehaving", Name: name, IsTemporary: true}
	case v == "hang":
		<-ctx.Done()
		return nil, ctx.Err()
	}
	var out []netip.Addr
	for _, a := range strings.Fields(v) {
		out = append(out, netip.MustParseAddr(a))
	}
	return out, nil
}

func score(t *testing.T, d *DNSBL, ip string) Result {
	t.Helper()
	got := make(chan Result, 1)
	d.Start(netip.MustParseAddr(ip), func(r Result) { got <- r })
	select {
	case r := <-got:
		return r
	case <-time.After(5 * time.Second):
		t.Fatal("no score")
		return Result{}
	}
}

func newDNSBL(t *testing.T, z *zoneLookup, threshold int, timeout time.Duration, sites ...string) *DNSBL {
	t.Helper()
	ss, err := ParseSites(sites)
	if err != nil {
		t.Fatal(err)
	}
	p := check.NewPool(4, 16)
	t.Cleanup(p.Close)
	d, err := NewDNSBL(Config{Sites: ss, Threshold: threshold, Lookup: z.lookup, Pool: p, Timeout: timeout})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// TestScore: weights of the entries that match add up, once per entry;
// an allow list offsets a listing; error codes, failures and timeouts
// count for nothing (and are counted); the reply names the heaviest list.
func TestScore(t *testing.T) {
	const (
		zen   = "zen.spamhaus.org=127.0.0.[2..11]*3"
		dnswl = "list.dnswl.org=127.0.[0..255].[1..3]*-2"
		cop   = "bl.spamcop.net"
	)
	z := &zoneLookup{names: map[string]string{
		// 192.0.2.1: in zen (twice over) and spamcop.
		"1.2.0.192.zen.spamhaus.org.": "127.0.0.2 127.0.0.4",
		"1.2.0.192.bl.spamcop.net.":   "127.0.0.2",
		// 192.0.2.2: in zen and dnswl.
		"2.2.0.192.zen.spamhaus.org.": "127.0.0.10",
		"2.2.0.192.list.dnswl.org.":   "127.0.5.2",
		// 192.0.2.3: zen answers an address its filter does not take;
		// dnswl one its filter does not take either.
		"3.2.0.192.zen.spamhaus.org.": "127.0.0.20",
		"3.2.0.192.list.dnswl.org.":   "127.0.5.0",
		// 192.0.2.4: zen refuses (public resolver), spamcop answers 127.0.0.1.
		"4.2.0.192.zen.spamhaus.org.": "127.255.255.254",
		"4.2.0.192.bl.spamcop.net.":   "127.0.0.1",
		// 192.0.2.5: spamcop answers outside 127/8 (NXDOMAIN rewritten),
		// zen mixes a listing with an error code; dnswl fails.
		"5.2.0.192.bl.spamcop.net.":   "198.51.100.1",
		"5.2.0.192.zen.spamhaus.org.": "127.0.0.2 127.255.255.252",
		"5.2.0.192.list.dnswl.org.":   "servfail",
		// 192.0.2.6: zen hangs.
		"6.2.0.192.zen.spamhaus.org.": "hang",
		"6.2.0.192.bl.spamcop.net.":   "127.0.0.2",
	}}
	d := newDNSBL(t, z, 3, 300*time.Millisecond, zen, dnswl, cop, "zen.spamhaus.org=127.0.0.4*1")
	for _, tc := range []struct {
		ip     string
		score  int
		listed bool
		site   string
		failed int
	}{
		{"192.0.2.1", 5, true, "zen.spamhaus.org", 0}, // 3 + 1 (the second zen entry) + 1
		{"192.0.2.2", 1, false, "zen.spamhaus.org", 0},
		{"192.0.2.3", 0, false, "", 0},
		{"192.0.2.4", 0, false, "", 2},
		{"192.0.2.5", 0, false, "", 3},
		{"192.0.2.6", 1, false, "bl.spamcop.net", 1},
		{"192.0.2.7", 0, false, "", 0},
	} {
		begun := time.Now()
		r := score(t, d, tc.ip)
		if r.Score != tc.score || r.Listed != tc.listed || r.Site != tc.site || r.Failed != tc.failed {
			t.Errorf("%s: %+v, want score %d listed %v site %q failed %d", tc.ip, r, tc.score, tc.listed, tc.site, tc.failed)
		}
		if time.Since(begun) > 2*time.Second {
			t.Errorf("%s: scored after %v", tc.ip, time.Since(begun))
		}
	}
	// Each list was asked once per client, whatever number of entries.
	z.mu.Lock()
	asked := slices.Clone(z.asked)
	z.mu.Unlock()
	if len(asked) != 7*3 {
		t.Errorf("%d queries for 7 clients and 3 lists: %q", len(asked), asked)
	}
	st := d.Stats()
	want := []ZoneStats{
		{Domain: "zen.spamhaus.org", Queries: 7, Listed: 2, NotListed: 2, ErrorCodes: 2, LastErrorCode: netip.MustParseAddr("127.255.255.252"), Failures: 1},
		{Domain: "list.dnswl.org", Queries: 7, Listed: 1, NotListed: 5, Failures: 1},
		{Domain: "bl.spamcop.net", Queries: 7, Listed: 2, NotListed: 3, ErrorCodes: 2, LastErrorCode: netip.MustParseAddr("198.51.100.1")},
	}
	if !slices.Equal(st, want) {
		t.Errorf("stats\n%+v\nwant\n%+v", st, want)
	}
}

// TestScoreIPv6: an IPv6 client is asked by its 32 nibbles.
func TestScoreIPv6(t *testing.T) {
	z := &zoneLookup{names: map[string]string{
		"1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.bl.example.": "127.0.0.2",
	}}
	d := newDNSBL(t, z, 1, time.Second, "bl.example")
	if r := score(t, d, "2001:db8::1"); !r.Listed || r.Site != "bl.example" {
		t.Fatalf("%+v", r)
	}
}

// TestScoreFullPool: when the pool has no room the lists are not asked
// and count for nothing, at once.
func TestScoreFullPool(t *testing.T) {
	z := &zoneLookup{names: map[string]string{"2.0.0.127.a.example.": "hang", "2.0.0.127.b.example.": "127.0.0.2"}}
	ss, _ := ParseSites([]string{"a.example", "b.example"})
	p := check.NewPool(1, 0)
	defer p.Close()
	d, err := NewDNSBL(Config{Sites: ss, Threshold: 1, Lookup: z.lookup, Pool: p, Timeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	// The one worker takes a.example (which hangs) once it is free; b
	// finds no room.
	var r Result
	for range 100 {
		if r = score(t, d, "127.0.0.2"); r.Failed == 2 {
			break
		}
	}
	if r.Failed != 2 || r.Listed {
		t.Fatalf("%+v", r)
	}
}

// TestErrorCodesLoggedOnce: a list answering error codes to every query
// is logged once a minute, not once a query, and every answer counted.
func TestErrorCodesLoggedOnce(t *testing.T) {
	z := &zoneLookup{names: map[string]string{}}
	for i := range 20 {
		z.names[QueryName(netip.AddrFrom4([4]byte{192, 0, 2, byte(i)}), "zen.spamhaus.org")] = "127.255.255.254"
	}
	ss, _ := ParseSites([]string{"zen.spamhaus.org"})
	p := check.NewPool(2, 8)
	defer p.Close()
	var buf servertest.SyncBuffer
	d, err := NewDNSBL(Config{Sites: ss, Threshold: 1, Lookup: z.lookup, Pool: p, Timeout: time.Second, Log: zerolog.New(&buf)})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		if r := score(t, d, netip.AddrFrom4([4]byte{192, 0, 2, byte(i)}).String()); r.Listed || r.Failed != 1 {
			t.Fatalf("%+v", r)
		}
	}
	if st := d.Stats()[0]; st.ErrorCodes != 20 || st.LastErrorCode != netip.MustParseAddr("127.255.255.254") {
		t.Fatalf("%+v", st)
	}
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 1 || !strings.Contains(lines[0], `"dnsbl":"zen.spamhaus.org"`) || !strings.Contains(lines[0], "127.255.255.254") {
		t.Fatalf("log:\n%s", buf.String())
	}
}
