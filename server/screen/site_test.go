package screen

import (
	"net/netip"
	"strings"
	"testing"
)

func TestParseSite(t *testing.T) {
	for _, tc := range []struct {
		in      string
		domain  string
		filter  string // "" for none
		weight  int
		wantErr string
	}{
		// Domain alone, weight, filter, both.
		{in: "bl.spamcop.net", domain: "bl.spamcop.net", weight: 1},
		{in: " Zen.Spamhaus.ORG. ", domain: "zen.spamhaus.org", weight: 1},
		{in: "zen.spamhaus.org*3", domain: "zen.spamhaus.org", weight: 3},
		{in: "zen.spamhaus.org=127.0.0.[2..11]*3", domain: "zen.spamhaus.org", filter: "127.0.0.[2..11]", weight: 3},
		{in: "list.dnswl.org=127.0.[0..255].[1..3]*-2", domain: "list.dnswl.org", filter: "127.0.[0..255].[1..3]", weight: -2},
		{in: "bl.example=127.0.0.2", domain: "bl.example", filter: "127.0.0.2", weight: 1},
		{in: "wl.mailspike.net=127.0.0.[17;18]*-1", domain: "wl.mailspike.net", filter: "127.0.0.[17;18]", weight: -1},
		{in: "bl.example=127.0.0.[2;4;10..11]*+2", domain: "bl.example", filter: "127.0.0.[2;4;10..11]", weight: 2},
		{in: "bl.example*0", domain: "bl.example", weight: 0},
		{in: "b_l.ex-ample.test", domain: "b_l.ex-ample.test", weight: 1},
		// Weights.
		{in: "bl.example*", wantErr: "weight"},
		{in: "bl.example*-", wantErr: "weight"},
		{in: "bl.example*x", wantErr: "weight"},
		{in: "bl.example*1.5", wantErr: "weight"},
		{in: "bl.example*1048577", wantErr: "out of range"},
		{in: "bl.example*-99999999999999999999", wantErr: "out of range"},
		{in: "bl.example*2*3", wantErr: "character"},
		// Filters.
		{in: "bl.example=", wantErr: "filter"},
		{in: "bl.example=127.0.0", wantErr: "four octets"},
		{in: "bl.example=127.0.0.2.5", wantErr: "after the fourth"},
		{in: "bl.example=127.0.0.256", wantErr: "over 255"},
		{in: "bl.example=127.0.0.[2..]", wantErr: "not a number"},
		{in: "bl.example=127.0.0.[11..2]", wantErr: "backwards"},
		{in: "bl.example=127.0.0.[2", wantErr: "without ']'"},
		{in: "bl.example=127.0.0.[]", wantErr: "not a number"},
		{in: "bl.example=127.0.0.[2;]", wantErr: "not a number"},
		{in: "bl.example=127.0.0.-1", wantErr: "not a number"},
		{in: "bl.example=127.0.0.0002", wantErr: "not a number"},
		{in: "bl.example=127.0.0.[1]x", wantErr: "after the fourth"},
		// Domains.
		{in: "", wantErr: "no domain"},
		{in: "=127.0.0.2", wantErr: "no domain"},
		{in: "bl..example", wantErr: "label"},
		{in: "bl example", wantErr: "character"},
		{in: strings.Repeat("a", 64) + ".example", wantErr: "label"},
		{in: strings.Repeat("abcdefgh.", 21) + "example", wantErr: "longer than"},
	} {
		s, err := ParseSite(tc.in)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("ParseSite(%q) = %+v, %v; want an error with %q", tc.in, s, err, tc.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("ParseSite(%q): %v", tc.in, err)
			continue
		}
		f := ""
		if s.Filter != nil {
			f = s.Filter.String()
		}
		if s.Domain != tc.domain || f != tc.filter || s.Weight != tc.weight {
			t.Errorf("ParseSite(%q) = %q %q %d, want %q %q %d", tc.in, s.Domain, f, s.Weight, tc.domain, tc.filter, tc.weight)
		}
	}
}

func TestFilterMatch(t *testing.T) {
	for _, tc := range []struct {
		filter string
		in     []string
		out    []string
	}{
		{"127.0.0.[2..11]", []string{"127.0.0.2", "127.0.0.4", "127.0.0.11"}, []string{"127.0.0.1", "127.0.0.12", "127.0.1.2", "128.0.0.2"}},
		{"127.0.[0..255].[1..3]", []string{"127.0.0.1", "127.0.15.3", "127.0.255.2"}, []string{"127.0.5.0", "127.0.5.4", "127.1.0.1"}},
		{"127.0.0.2", []string{"127.0.0.2"}, []string{"127.0.0.3", "127.0.0.20"}},
		{"127.0.0.[2;4;10..11]", []string{"127.0.0.2", "127.0.0.4", "127.0.0.10", "127.0.0.11"}, []string{"127.0.0.3", "127.0.0.9", "127.0.0.12"}},
		{"[0..255].[0..255].[0..255].[0..255]", []string{"0.0.0.0", "255.255.255.255", "1.128.64.63"}, nil},
		{"127.0.0.[0;63;64;127;128;191;192;255]", []string{"127.0.0.63", "127.0.0.64", "127.0.0.255", "127.0.0.0"}, []string{"127.0.0.62", "127.0.0.65", "127.0.0.254"}},
	} {
		f, err := ParseFilter(tc.filter)
		if err != nil {
			t.Fatalf("%s: %v", tc.filter, err)
		}
		for _, a := range tc.in {
			if !f.Match(netip.MustParseAddr(a).As4()) {
				t.Errorf("%s does not match %s", tc.filter, a)
			}
		}
		for _, a := range tc.out {
			if f.Match(netip.MustParseAddr(a).As4()) {
				t.Errorf("%s matches %s", tc.filter, a)
			}
		}
	}
}

// FuzzParseSite: no input panics; whatever parses prints back to a form
// that parses to the same site, with a valid domain.
func FuzzParseSite(f *testing.F) {
	for _, s := range []string{"zen.spamhaus.org=127.0.0.[2..11]*3", "list.dnswl.org=127.0.[0..255].[1..3]*-2",
		"bl.example", "bl.example=127.0.0.[2;4;10..11]", "a*-0", "x=[1..2].[3;4].5.[6]*+7", "b=1.2.3.[", "=*"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		s, err := ParseSite(in)
		if err != nil {
			return
		}
		if s.Domain == "" || len(s.Domain) > maxDomainLen || s.Weight > MaxWeight || s.Weight < -MaxWeight {
			t.Fatalf("%q parsed to %+v", in, s)
		}
		again, err := ParseSite(s.String())
		if err != nil {
			t.Fatalf("%q printed as %q, which does not parse: %v", in, s.String(), err)
		}
		if again.Domain != s.Domain || again.Weight != s.Weight || (again.Filter == nil) != (s.Filter == nil) ||
			(s.Filter != nil && again.Filter.octets != s.Filter.octets) {
			t.Fatalf("%q: %+v printed as %q parses to %+v", in, s, s.String(), again)
		}
		// A query name built from it is a valid name: at most 253 octets.
		if n := QueryName(netip.MustParseAddr("2001:db8::1"), s.Domain); len(n) > 254 {
			t.Fatalf("query name %d octets: %q", len(n), n)
		}
	})
}

func TestQueryName(t *testing.T) {
	for _, tc := range []struct{ ip, domain, want string }{
		{"1.2.3.4", "zen.spamhaus.org", "4.3.2.1.zen.spamhaus.org."},
		{"192.0.2.99", "bl.example", "99.2.0.192.bl.example."},
		{"127.0.0.2", "bl.example", "2.0.0.127.bl.example."},
		{"::ffff:10.0.100.255", "bl.example", "255.100.0.10.bl.example."},
		// RFC 5782 2.4's example.
		{"2001:db8:1:2:3:4:567:89ab", "ugly.example.com", "b.a.9.8.7.6.5.0.4.0.0.0.3.0.0.0.2.0.0.0.1.0.0.0.8.b.d.0.1.0.0.2.ugly.example.com."},
		{"::1", "bl.example", "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.bl.example."},
	} {
		if got := QueryName(netip.MustParseAddr(tc.ip), tc.domain); got != tc.want {
			t.Errorf("QueryName(%s, %s) = %q, want %q", tc.ip, tc.domain, got, tc.want)
		}
	}
}

func TestAnswerError(t *testing.T) {
	for _, tc := range []struct {
		a   string
		err bool
	}{
		{"127.0.0.2", false}, {"127.0.0.11", false}, {"127.0.15.3", false}, {"127.255.254.1", false},
		{"127.0.0.1", true},
		{"127.255.255.252", true}, {"127.255.255.254", true}, {"127.255.255.255", true}, {"127.255.255.0", true},
		{"10.0.0.2", true}, {"192.0.2.1", true}, {"128.0.0.2", true},
		{"::1", true}, {"::ffff:127.0.0.2", false},
	} {
		if got := AnswerError(netip.MustParseAddr(tc.a)); got != tc.err {
			t.Errorf("AnswerError(%s) = %v", tc.a, got)
		}
	}
}

func TestAllowList(t *testing.T) {
	l, err := ParseAllowList([]string{"192.0.2.0/24", "2001:db8::/32", "198.51.100.7", "::ffff:203.0.113.0/120", "10.1.2.3/8"})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		ip string
		in bool
	}{
		{"192.0.2.1", true}, {"192.0.3.1", false}, {"2001:db8:ffff::1", true}, {"2001:db9::1", false},
		{"198.51.100.7", true}, {"198.51.100.8", false}, {"203.0.113.9", true}, {"::ffff:192.0.2.5", true},
		{"10.200.0.1", true}, {"127.0.0.1", false},
	} {
		if got := l.Contains(netip.MustParseAddr(tc.ip)); got != tc.in {
			t.Errorf("Contains(%s) = %v", tc.ip, got)
		}
	}
	for _, bad := range []string{"192.0.2.0/33", "example.org", "", "fe80::1%eth0"} {
		if _, err := ParseAllowList([]string{bad}); err == nil {
			t.Errorf("ParseAllowList(%q) took it", bad)
		}
	}
}
