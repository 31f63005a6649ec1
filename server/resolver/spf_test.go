package resolver

import (
	"context"
	"net"
	"testing"
	"time"

	"blitiri.com.ar/go/spf"
)

var _ spf.DNSResolver = (*Resolver)(nil)

// TestSPF runs blitiri.com.ar/go/spf through the Resolver against a real
// server: its results depend on our error classification.
func TestSPF(t *testing.T) {
	s, r, _ := setup(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	check := func(ip, sender string) spf.Result {
		res, _ := spf.CheckHostWithSender(net.ParseIP(ip), "helo.example.test", sender, spf.WithResolver(r), spf.WithContext(ctx))
		return res
	}
	for _, tc := range []struct {
		ip, sender string
		want       spf.Result
	}{
		{"192.0.2.77", "a@example.test", spf.Pass},      // ip4
		{"198.51.100.2", "a@example.test", spf.Pass},    // mx → mx2's A
		{"2001:db8::1", "a@example.test", spf.Pass},     // mx → mx1's AAAA
		{"203.0.113.5", "a@example.test", spf.Pass},     // include
		{"10.1.1.1", "a@example.test", spf.Fail},        // -all
		{"10.1.1.1", "a@nosuch.example.test", spf.None}, // NXDOMAIN: no record
	} {
		if got := check(tc.ip, tc.sender); got != tc.want {
			t.Errorf("%s from %s: %s, want %s", tc.sender, tc.ip, got, tc.want)
		}
	}
	// SERVFAIL is temperror, never none.
	s.Servfail("mx2.example.test")
	if got := check("10.1.1.1", "a@mx2.example.test"); got != spf.TempError {
		t.Errorf("SERVFAIL: %s, want temperror", got)
	}
	// A server that never answers: temperror within the deadline.
	s.Drop(true)
	r2 := newResolver(t, Config{Servers: []string{s.Addr()}, Timeout: 100 * time.Millisecond, Attempts: 1})
	res, _ := spf.CheckHostWithSender(net.ParseIP("10.1.1.1"), "h", "a@mx2.example.test", spf.WithResolver(r2), spf.WithContext(ctx))
	if res != spf.TempError {
		t.Errorf("timeout: %s, want temperror", res)
	}
}
