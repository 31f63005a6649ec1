package server

import (
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/nanomx/nanomx/server/resolver/dnstest"
	"github.com/nanomx/nanomx/server/screen"
)

// The lists of the README's example, as the tests' DNS server serves
// them. Clients are loopback addresses: 127.0.0.5 is in ZEN, 127.0.0.6 in
// ZEN and in DNSWL, 127.0.0.7 nowhere; 127.0.0.10 to .12 get error codes
// from bl.example (a list without a filter); ::1 is in bl.example.
const dnsblZone = `
$ORIGIN zen.spamhaus.org.
5.0.0.127   A 127.0.0.2
5.0.0.127   A 127.0.0.4
6.0.0.127   A 127.0.0.10
$ORIGIN list.dnswl.org.
6.0.0.127   A 127.0.15.2
$ORIGIN bl.example.
10.0.0.127  A 127.255.255.254
11.0.0.127  A 127.0.0.1
12.0.0.127  A 198.51.100.7
1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0 A 127.0.0.2
`

var readmeSites = []string{"zen.spamhaus.org=127.0.0.[2..11]*3", "list.dnswl.org=127.0.[0..255].[1..3]*-2"}

// dnsblConfig is a server asking the tests' DNS server about sites.
func dnsblConfig(t *testing.T, ns *dnstest.Server, threshold int, sites ...string) Config {
	cfg := testServerConfig(t)
	cfg.DNSServers = []string{ns.Addr()}
	cfg.DNSTimeout = time.Second
	cfg.DNSBLSites = sites
	cfg.DNSBLThreshold = threshold
	return cfg
}

// screenSession greets, says EHLO and opens a transaction.
func screenSession(t *testing.T, from, addr string) *client {
	t.Helper()
	c := dialFrom(t, from, addr)
	if g := c.reply(); !strings.HasPrefix(g, "220 ") {
		t.Fatalf("greeting %q", g)
	}
	c.expect("EHLO c.example.org", "250")
	c.expect("MAIL FROM:<a@example.org>", "250 2.1.0")
	return c
}

// TestDNSBLAtRcpt: a client listed at or over the threshold is refused at
// each RCPT with 550 5.7.1 naming the list, after its greeting, EHLO and
// MAIL were answered as usual; postmaster stays reachable. An allow list
// (DNSWL's negative weight) takes a listed client under the threshold; a
// client in no list is not refused.
func TestDNSBLAtRcpt(t *testing.T) {
	ns := dnstest.New(t, dnsblZone)
	r := start(t, dnsblConfig(t, ns, 3, readmeSites...))

	c := screenSession(t, "127.0.0.5", r.addr)
	if got := c.cmd("RCPT TO:<bob@example.test>"); got != "550 5.7.1 Service unavailable; client [127.0.0.5] blocked using zen.spamhaus.org" {
		t.Fatalf("listed client's RCPT: %q", got)
	}
	c.expect("RCPT TO:<postmaster@example.test>", "250 2.1.5")
	c.expect("DATA", "354")
	c.expect("Subject: why\r\n\r\nam I listed?\r\n.", "250 2.0.0")

	// In ZEN (3) and in DNSWL (-2): 1, under the threshold.
	c = screenSession(t, "127.0.0.6", r.addr)
	c.expect("RCPT TO:<bob@example.test>", "250 2.1.5")
	c = screenSession(t, "127.0.0.7", r.addr)
	c.expect("RCPT TO:<bob@example.test>", "250 2.1.5")

	st := r.srv.DNSBLStats()
	if len(st) != 2 || st[0].Domain != "zen.spamhaus.org" || st[0].Listed != 2 || st[1].Listed != 1 || st[0].ErrorCodes+st[0].Failures != 0 {
		t.Fatalf("stats %+v", st)
	}
}

// TestDNSBLAtConnect: with dnsbl_action = "connect" a listed client gets
// 554 5.7.1 instead of the greeting and is closed; others are greeted.
func TestDNSBLAtConnect(t *testing.T) {
	ns := dnstest.New(t, dnsblZone)
	cfg := dnsblConfig(t, ns, 3, readmeSites...)
	cfg.DNSBLAction = DNSBLAtConnect
	r := start(t, cfg)
	c := dialFrom(t, "127.0.0.5", r.addr)
	if g := c.reply(); g != "554 5.7.1 Service unavailable; client [127.0.0.5] blocked using zen.spamhaus.org" {
		t.Fatalf("listed client: %q", g)
	}
	c.expectClosed()
	for _, ip := range []string{"127.0.0.6", "127.0.0.7"} {
		c := screenSession(t, ip, r.addr)
		c.expect("RCPT TO:<bob@example.test>", "250 2.1.5")
	}
}

// TestDNSBLErrorCodes: 127.255.255.254 (Spamhaus: a public resolver),
// 127.0.0.1 and an address outside 127/8 are errors, never listings,
// even from a list without a filter: nobody is refused, and they are
// counted.
func TestDNSBLErrorCodes(t *testing.T) {
	ns := dnstest.New(t, dnsblZone)
	r := start(t, dnsblConfig(t, ns, 1, "bl.example"))
	for _, ip := range []string{"127.0.0.10", "127.0.0.11", "127.0.0.12"} {
		c := screenSession(t, ip, r.addr)
		c.expect("RCPT TO:<bob@example.test>", "250 2.1.5")
	}
	st := r.srv.DNSBLStats()
	if len(st) != 1 || st[0].ErrorCodes != 3 || st[0].Listed != 0 || st[0].LastErrorCode != netip.MustParseAddr("198.51.100.7") {
		t.Fatalf("stats %+v", st)
	}
}

// TestDNSBLIPv6: a client over IPv6 is asked by the 32 nibbles of its
// address (the DNS server saw that name) and refused when listed.
func TestDNSBLIPv6(t *testing.T) {
	ln, err := net.Listen("tcp6", "[::1]:0")
	if err != nil {
		t.Skip("no IPv6 loopback:", err)
	}
	addr6 := ln.Addr().String()
	ln.Close()
	ns := dnstest.New(t, dnsblZone)
	cfg := dnsblConfig(t, ns, 1, "bl.example")
	cfg.Listen = append(cfg.Listen, addr6)
	r := start(t, cfg)
	_ = r
	c := dial(t, addr6)
	c.reply()
	c.expect("EHLO c.example.org", "250")
	c.expect("MAIL FROM:<a@example.org>", "250 2.1.0")
	if got := c.cmd("RCPT TO:<bob@example.test>"); got != "550 5.7.1 Service unavailable; client [::1] blocked using bl.example" {
		t.Fatalf("RCPT from ::1: %q", got)
	}
	name := screen.QueryName(netip.MustParseAddr("::1"), "bl.example")
	if n := ns.Count(name, dns.TypeA); n != 1 {
		t.Fatalf("%d queries for %s", n, name)
	}
}

// TestDNSBLTimeout: a list that never answers refuses nobody: the RCPT
// waits for it at most its bound (half of command_timeout here, under the
// session's own bound on a check), then the session goes on.
func TestDNSBLTimeout(t *testing.T) {
	ns := dnstest.New(t, dnsblZone)
	ns.Drop(true)
	cfg := dnsblConfig(t, ns, 1, readmeSites...)
	cfg.CommandTimeout = 2 * time.Second
	r := start(t, cfg)
	begun := time.Now()
	c := screenSession(t, "127.0.0.5", r.addr)
	c.expect("RCPT TO:<bob@example.test>", "250 2.1.5")
	if d := time.Since(begun); d > 1500*time.Millisecond {
		t.Fatalf("RCPT answered after %v", d)
	}
	c.expect("DATA", "354")
	c.expect("Subject: t\r\n\r\nhi\r\n.", "250 2.0.0")
	if st := r.srv.DNSBLStats(); st[0].Failures < 1 || st[0].Listed != 0 {
		t.Fatalf("stats %+v", st)
	}
}

// TestDNSBLDuringGreetingDelay: the queries start at connect, so a
// greeting_delay longer than the lists take hides them: the RCPT after
// it is answered at once.
func TestDNSBLDuringGreetingDelay(t *testing.T) {
	ns := dnstest.New(t, dnsblZone)
	ns.Delay(400 * time.Millisecond)
	cfg := dnsblConfig(t, ns, 3, readmeSites...)
	cfg.GreetingDelay = 700 * time.Millisecond
	r := start(t, cfg)
	c := screenSession(t, "127.0.0.5", r.addr)
	begun := time.Now()
	c.expect("RCPT TO:<bob@example.test>", "550 5.7.1")
	if d := time.Since(begun); d > 200*time.Millisecond {
		t.Fatalf("RCPT waited %v for lists asked at connect", d)
	}
}

// TestScreenAllowSkipsDNSBL: a client in screen_allow is not looked up.
func TestScreenAllowSkipsDNSBL(t *testing.T) {
	ns := dnstest.New(t, dnsblZone)
	cfg := dnsblConfig(t, ns, 3, readmeSites...)
	cfg.ScreenAllow = []string{"127.0.0.5"}
	r := start(t, cfg)
	c := screenSession(t, "127.0.0.5", r.addr)
	c.expect("RCPT TO:<bob@example.test>", "250 2.1.5")
	if n := ns.Count("5.0.0.127.zen.spamhaus.org.", dns.TypeA); n != 0 {
		t.Fatalf("allowed client looked up %d times", n)
	}
}
