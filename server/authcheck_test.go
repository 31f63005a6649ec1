package server

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-msgauth/dkim"
	"github.com/emersion/go-msgauth/dmarc"

	"github.com/nanomx/nanomx/bench/smtpc"
	"github.com/nanomx/nanomx/proto"
	"github.com/nanomx/nanomx/server/auth"
	"github.com/nanomx/nanomx/server/check"
	"github.com/nanomx/nanomx/server/resolver/dnstest"
)

// authZone is the world the sender authentication tests see: 127.0.0.2
// is mail.sender.test (PTR and A agree) and may send for sender.test
// (SPF), which signs with DKIM and publishes p=reject; 127.0.0.3 has no
// PTR and no right to send for anyone; q.test publishes p=quarantine.
const authZone = `
2.0.0.127.in-addr.arpa. PTR mail.sender.test.
mail.sender.test.       A   127.0.0.2
4.0.0.127.in-addr.arpa. PTR liar.sender.test.
liar.sender.test.       A   192.0.2.99
sender.test.            TXT "v=spf1 ip4:127.0.0.2 -all"
_dmarc.sender.test.     TXT "v=DMARC1; p=reject; sp=quarantine"
q.test.                 TXT "v=spf1 ip4:127.0.0.2 -all"
_dmarc.q.test.          TXT "v=DMARC1; p=quarantine"
none.test.              TXT "v=spf1 ip4:127.0.0.2 -all"
_dmarc.none.test.       TXT "v=DMARC1; p=none"
`

// authSetup starts a DNS server with authZone and a DKIM key for
// sel._domainkey.sender.test, and a server configuration with every
// check on asking it.
func authSetup(t *testing.T) (*dnstest.Server, Config, ed25519.PrivateKey) {
	t.Helper()
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	zone := authZone + fmt.Sprintf("sel._domainkey.sender.test. TXT \"v=DKIM1; k=ed25519; p=%s\"\n",
		base64.StdEncoding.EncodeToString(key.Public().(ed25519.PublicKey)))
	dns := dnstest.New(t, zone)
	cfg := testServerConfig(t)
	cfg.DNSServers = []string{dns.Addr()}
	cfg.DNSTimeout = 300 * time.Millisecond
	cfg.SPF, cfg.DKIM, cfg.DMARC, cfg.IPRev = true, true, true, true
	return dns, cfg, key
}

// signed returns msg (CRLF) signed by sender.test.
func signed(t *testing.T, key ed25519.PrivateKey, msg string) string {
	t.Helper()
	var b bytes.Buffer
	if err := dkim.Sign(&b, strings.NewReader(msg), &dkim.SignOptions{Domain: "sender.test", Selector: "sel", Signer: key}); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// send runs one transaction and returns the reply to the end of data.
func sendMsg(t *testing.T, c *client, from, rcpt, msg string) string {
	t.Helper()
	c.expect("MAIL FROM:<"+from+">", "250")
	c.expect("RCPT TO:<"+rcpt+">", "250")
	c.expect("DATA", "354")
	return c.cmd(msg + ".")
}

// TestAuthPass: a message from a client that passes everything is stored
// with one Authentication-Results field saying so, the Received field
// names the confirmed PTR name, and Authentication-Results fields forged
// in our name (with a version, in another case) are gone while another
// receiver's stays.
func TestAuthPass(t *testing.T) {
	_, cfg, key := authSetup(t)
	r := start(t, cfg)
	c := dialFrom(t, "127.0.0.2", r.addr)
	c.reply()
	c.expect("EHLO c.sender.test", "250")
	msg := "Authentication-Results: mx.example.test; dmarc=pass header.from=paypal.test\r\n" +
		"authentication-results: MX.EXAMPLE.TEST 1;\r\n\tspf=pass\r\n" +
		"Authentication-Results: upstream.test; spf=fail\r\n" +
		"From: Alice <alice@sender.test>\r\nTo: bob@example.test\r\nSubject: hi\r\n\r\nHello.\r\n"
	if got := sendMsg(t, c, "alice@sender.test", "bob@example.test", signed(t, key, msg)); !strings.HasPrefix(got, "250 2.0.0") {
		t.Fatalf("end of data: %q", got)
	}
	files := newFiles(t, cfg.MaildirRoot, "example.test", "bob")
	if len(files) != 1 {
		t.Fatalf("%d files", len(files))
	}
	f := files[0]
	want := "Authentication-Results: mx.example.test;\n" +
		"\tspf=pass smtp.mailfrom=alice@sender.test;\n" +
		"\tdkim=pass header.d=sender.test header.s=sel header.a=ed25519-sha256;\n" +
		"\tdmarc=pass (p=reject) header.from=sender.test;\n" +
		"\tiprev=pass policy.iprev=127.0.0.2 (mail.sender.test)\n"
	if !strings.Contains(f, want) {
		t.Errorf("no or wrong Authentication-Results:\n%s", f)
	}
	if !strings.Contains(f, "Received: from c.sender.test (mail.sender.test [127.0.0.2])\n") {
		t.Errorf("Received does not name the client:\n%s", f)
	}
	if n := strings.Count(strings.ToLower(f), "authentication-results: mx.example.test"); n != 1 {
		t.Errorf("%d fields claim our authserv-id, want ours only:\n%s", n, f)
	}
	if strings.Contains(f, "paypal.test") || strings.Contains(f, "MX.EXAMPLE.TEST 1") {
		t.Errorf("forged results kept:\n%s", f)
	}
	if !strings.Contains(f, "Authentication-Results: upstream.test; spf=fail\n") {
		t.Errorf("another receiver's results removed:\n%s", f)
	}
}

// TestAuthActions: p=reject failing is 550 5.7.1 at the end of data;
// p=quarantine goes into .Junk/; p=none is header only; an unconfirmed
// PTR is "unknown" in Received; configured actions change all that.
func TestAuthActions(t *testing.T) {
	_, cfg, key := authSetup(t)
	r := start(t, cfg)
	c := forgerSession(t, r)
	forged := "From: PayPal <service@sender.test>\r\nSubject: pay\r\n\r\nsend money\r\n"
	if got := sendMsg(t, c, "x@elsewhere.test", "bob@example.test", forged); !strings.HasPrefix(got, "550 5.7.1") {
		t.Fatalf("p=reject forgery: %q, want 550 5.7.1", got)
	}
	// Signed by sender.test, the same message passes (DKIM alone).
	if got := sendMsg(t, c, "x@elsewhere.test", "bob@example.test", signed(t, key, forged)); !strings.HasPrefix(got, "250") {
		t.Fatalf("signed: %q", got)
	}
	if got := sendMsg(t, c, "x@elsewhere.test", "bob@example.test", "From: a@q.test\r\nSubject: q\r\n\r\nq\r\n"); !strings.HasPrefix(got, "250") {
		t.Fatalf("p=quarantine: %q", got)
	}
	// A subdomain of sender.test: sp=quarantine.
	if got := sendMsg(t, c, "x@elsewhere.test", "bob@example.test", "From: a@news.sender.test\r\nSubject: sub\r\n\r\nsub\r\n"); !strings.HasPrefix(got, "250") {
		t.Fatalf("sp=quarantine: %q", got)
	}
	if got := sendMsg(t, c, "x@elsewhere.test", "bob@example.test", "From: a@none.test\r\nSubject: n\r\n\r\nn\r\n"); !strings.HasPrefix(got, "250") {
		t.Fatalf("p=none: %q", got)
	}
	inbox := newFiles(t, cfg.MaildirRoot, "example.test", "bob")
	junk := newFiles(t, cfg.MaildirRoot, "example.test", "bob/.Junk")
	if len(inbox) != 2 || len(junk) != 2 {
		t.Fatalf("inbox %d, junk %d; want 2 and 2", len(inbox), len(junk))
	}
	for _, f := range junk {
		if !strings.Contains(f, "\tdmarc=fail reason=\"no aligned SPF or DKIM pass\" (p=quarantine) header.from=") {
			t.Errorf("junk message without dmarc=fail:\n%s", f)
		}
	}
	for _, f := range inbox {
		if !strings.Contains(f, "Received: from forger.test (unknown [127.0.0.3])\n") ||
			!strings.Contains(f, "\tiprev=permerror reason=\"no PTR record\" policy.iprev=127.0.0.3\n") ||
			!strings.Contains(f, "\tspf=none") {
			t.Errorf("inbox message:\n%s", f)
		}
	}
	if !strings.Contains(strings.Join(inbox, ""), "dmarc=fail reason=\"no aligned SPF or DKIM pass\" (p=none) header.from=none.test") {
		t.Errorf("p=none message without its dmarc=fail")
	}

	// dmarc_reject_action = "junk", spf_fail_action = "reject".
	_, cfg, _ = authSetup(t)
	cfg.DMARCRejectAction, cfg.SPFFailAction = ActionJunk, ActionReject
	r = start(t, cfg)
	c = forgerSession(t, r)
	c.expect("MAIL FROM:<alice@sender.test>", "550 5.7.23")
	if got := sendMsg(t, c, "x@elsewhere.test", "alice@example.test", forged); !strings.HasPrefix(got, "250") {
		t.Fatalf("reject action junk: %q", got)
	}
	if n := len(newFiles(t, cfg.MaildirRoot, "example.test", "alice/.Junk")); n != 1 {
		t.Fatalf("reject action junk: %d in .Junk", n)
	}
	// A PTR that does not lead back is "unknown" too.
	c = dialFrom(t, "127.0.0.4", r.addr)
	c.reply()
	c.expect("EHLO liar.test", "250")
	if got := sendMsg(t, c, "", "alice@example.test", "From: a@none.test\r\n\r\nx\r\n"); !strings.HasPrefix(got, "250") {
		t.Fatalf("from .4: %q", got)
	}
	for _, f := range newFiles(t, cfg.MaildirRoot, "example.test", "alice") {
		if !strings.Contains(f, "Received: from liar.test (unknown [127.0.0.4])\n") || !strings.Contains(f, "\tspf=none reason=") || !strings.Contains(f, "smtp.helo=liar.test") {
			t.Errorf("from .4:\n%s", f)
		}
	}
}

// TestAuthDNSDown: a DNS server that never answers makes every check
// temperror within the shared deadline (3 × dns_timeout), and the
// message is accepted.
func TestAuthDNSDown(t *testing.T) {
	dns, cfg, key := authSetup(t)
	dns.Drop(true)
	r := start(t, cfg)
	c := dialFrom(t, "127.0.0.2", r.addr)
	c.reply()
	c.expect("EHLO c.sender.test", "250")
	begin := time.Now()
	got := sendMsg(t, c, "alice@sender.test", "bob@example.test", signed(t, key, "From: alice@sender.test\r\n\r\nhi\r\n"))
	took := time.Since(begin)
	if !strings.HasPrefix(got, "250") {
		t.Fatalf("end of data: %q", got)
	}
	// iprev (begun at connect) and the data checks run at once, each
	// within the bound, 3 × 300 ms: that, plus slack.
	if limit := 3*cfg.DNSTimeout + time.Second; took > limit {
		t.Errorf("took %v, more than %v", took, limit)
	}
	files := newFiles(t, cfg.MaildirRoot, "example.test", "bob")
	if len(files) != 1 {
		t.Fatalf("%d files", len(files))
	}
	for _, want := range []string{"\tspf=temperror", "\tdkim=temperror", "\tdmarc=temperror", "\tiprev=temperror", "Received: from c.sender.test (unknown [127.0.0.2])"} {
		if !strings.Contains(files[0], want) {
			t.Errorf("no %q in\n%s", want, files[0])
		}
	}
}

// TestAuthSpilled: a message past spill_threshold is verified too (read
// back from its file), and loses its forged results.
func TestAuthSpilled(t *testing.T) {
	_, cfg, key := authSetup(t)
	r := start(t, cfg)
	c := dialFrom(t, "127.0.0.2", r.addr)
	c.reply()
	c.expect("EHLO c.sender.test", "250")
	big := strings.Repeat(strings.Repeat("y", 900)+"\r\n", 500) // 450 KB
	// The forged field is added after signing: the spilled file, which
	// DKIM reads back, has lost it already (README: a signature covering
	// a field forged in our name fails on a spilled message).
	msg := "Authentication-Results: mx.example.test; dkim=pass\r\n" + signed(t, key, "From: alice@sender.test\r\nSubject: big\r\n\r\n"+big)
	if got := sendMsg(t, c, "bounce@elsewhere.test", "bob@example.test", msg); !strings.HasPrefix(got, "250") {
		t.Fatalf("end of data: %q", got)
	}
	files := newFiles(t, cfg.MaildirRoot, "example.test", "bob")
	if len(files) != 1 || len(files[0]) < 450_000 {
		t.Fatalf("%d files", len(files))
	}
	f := files[0]
	if !strings.Contains(f, "\tdkim=pass header.d=sender.test") || !strings.Contains(f, "\tdmarc=pass") || !strings.Contains(f, "\tspf=none") {
		t.Errorf("spilled message results:\n%.1200s", f)
	}
	if n := strings.Count(f, "Authentication-Results: mx.example.test"); n != 1 {
		t.Errorf("%d of our fields", n)
	}
}

// TestAuthOffUnchanged: with every check off, no field is added and the
// Received field is as before.
func TestAuthOffUnchanged(t *testing.T) {
	_, cfg, _ := authSetup(t)
	cfg.SPF, cfg.DKIM, cfg.DMARC, cfg.IPRev = false, false, false, false
	r := start(t, cfg)
	if r.srv.auth != nil || len(r.srv.cfg.checks) != 0 {
		t.Fatal("checks configured with all off")
	}
	c := dialFrom(t, "127.0.0.2", r.addr)
	c.reply()
	c.expect("EHLO c.sender.test", "250")
	msg := "Authentication-Results: mx.example.test; spf=pass\r\nFrom: alice@sender.test\r\n\r\nhi\r\n"
	if got := sendMsg(t, c, "alice@sender.test", "bob@example.test", msg); !strings.HasPrefix(got, "250") {
		t.Fatal(got)
	}
	f := newFiles(t, cfg.MaildirRoot, "example.test", "bob")[0]
	if !regexp.MustCompile(`Received: from c\.sender\.test \(\[127\.0\.0\.2\]\)\n`).MatchString(f) || !strings.Contains(f, "\nAuthentication-Results: mx.example.test; spf=pass\n") {
		t.Errorf("checks off:\n%s", f)
	}
}

// TestAuthSPFTimeoutNotDMARCFail: an SPF evaluation that outlives the
// checks' bound (a chain of slow includes) is temperror, and so must be
// DMARC for the MAIL FROM domain it would have aligned with: a p=reject
// domain whose DNS is slow must not see its mail refused with a 550.
func TestAuthSPFTimeoutNotDMARCFail(t *testing.T) {
	zone := "slow.test. TXT \"v=spf1 include:i1.slow.test -all\"\n" +
		"_dmarc.slow.test. TXT \"v=DMARC1; p=reject\"\n"
	for i := 1; i < 9; i++ {
		zone += fmt.Sprintf("i%d.slow.test. TXT \"v=spf1 include:i%d.slow.test -all\"\n", i, i+1)
	}
	zone += "i9.slow.test. TXT \"v=spf1 ip4:127.0.0.3 -all\"\n"
	dns := dnstest.New(t, zone)
	dns.Delay(200 * time.Millisecond) // 10 SPF lookups: 2 s, past the 900 ms bound
	cfg := testServerConfig(t)
	cfg.DNSServers = []string{dns.Addr()}
	cfg.DNSTimeout = 300 * time.Millisecond
	cfg.SPF, cfg.DKIM, cfg.DMARC = true, true, true
	r := start(t, cfg)
	c := dialFrom(t, "127.0.0.3", r.addr)
	c.reply()
	c.expect("EHLO mail.slow.test", "250")
	got := sendMsg(t, c, "alice@slow.test", "bob@example.test", "From: alice@slow.test\r\nSubject: s\r\n\r\nslow\r\n")
	if !strings.HasPrefix(got, "250") {
		t.Fatalf("end of data: %q, want 250 (SPF timed out: DMARC temperror)", got)
	}
	files := newFiles(t, cfg.MaildirRoot, "example.test", "bob")
	if len(files) != 1 || !strings.Contains(files[0], "\tspf=temperror") || !strings.Contains(files[0], "\tdmarc=temperror") {
		t.Fatalf("stored: %q", files)
	}
}

// TestAuthSPFFallbackDomain: when SPF gets no answer in time (here: no
// room on the pool, the same fallback as a deadline) its temperror still
// names the MAIL FROM domain, and DMARC for that domain under p=reject
// is temperror without a refusal, deterministically.
func TestAuthSPFFallbackDomain(t *testing.T) {
	cfg := testServerConfig(t)
	cfg.SPF, cfg.DMARC = true, true
	a := newAuthChecker(cfg, nil)
	a.pool = check.NewPool(0, 0) // every task falls back at once
	i := &Info{IP: netip.MustParseAddr("192.0.2.1"), Helo: "mail.slow.test"}
	a.Mail(i, proto.Address{Local: "alice", Domain: "slow.test"}, proto.MailParams{})
	spf, ok := i.auth.spf.get()
	if !ok || spf.Status != auth.TempError || spf.Domain != "slow.test" {
		t.Fatalf("SPF fallback %+v, want temperror for slow.test", spf)
	}
	rec, err := dmarc.Parse("v=DMARC1; p=reject")
	if err != nil {
		t.Fatal(err)
	}
	v := a.decide(i.auth, i.IP, dkimOut{read: true, from: auth.FromDomains{Domains: []string{"slow.test"}}},
		[]auth.DMARCRecord{{Status: auth.Pass, Domain: "slow.test", At: "slow.test", Record: rec}})
	if v.Reply != nil || !strings.Contains(string(v.Headers), "dmarc=temperror") {
		t.Fatalf("verdict %v, headers %q: want no refusal, dmarc=temperror", v.Reply, v.Headers)
	}
}

// TestAuthForgedDeepInHeader: a header section longer than the first
// spilled chunk cannot hide an Authentication-Results field in our name
// past it: no field claiming our authserv-id but ours reaches the mailbox.
func TestAuthForgedDeepInHeader(t *testing.T) {
	_, cfg, _ := authSetup(t)
	cfg.IPRev = false
	r := start(t, cfg)
	c := forgerSession(t, r)
	pad := strings.Repeat("X-Pad: "+strings.Repeat("p", 900)+"\r\n", 400) // 360 KB of header
	msg := pad + "Authentication-Results: mx.example.test; dmarc=pass header.from=paypal.test\r\n" +
		"From: a@none.test\r\nSubject: deep\r\n\r\nbody\r\n"
	got := sendMsg(t, c, "x@elsewhere.test", "bob@example.test", msg)
	if !strings.HasPrefix(got, "552 5.3.4") {
		t.Errorf("end of data %q, want 552 5.3.4", got)
	}
	for _, f := range newFiles(t, cfg.MaildirRoot, "example.test", "bob") {
		if strings.Contains(f, "paypal.test") {
			t.Fatalf("end of data %q; a forged Authentication-Results was stored", got)
		}
	}
}

// TestAuthBrokenFromStillDMARC: a From field net/mail cannot parse, but
// that mail readers show as the address in it, does not escape the
// domain's DMARC policy: the domains in it are still evaluated, and a
// forgery of a p=reject domain is refused.
func TestAuthBrokenFromStillDMARC(t *testing.T) {
	_, cfg, _ := authSetup(t)
	cfg.IPRev = false
	r := start(t, cfg)
	c := forgerSession(t, r)
	for _, from := range []string{
		`"PayPal" <service@sender.test> x`,
		`PayPal [Service] <service@sender.test>`,
		`Pay"Pal <service@sender.test>`,
		`service@sender.test (PayPal`,
	} {
		msg := "From: " + from + "\r\nSubject: pay\r\n\r\nsend money\r\n"
		if got := sendMsg(t, c, "x@elsewhere.test", "bob@example.test", msg); !strings.HasPrefix(got, "550 5.7.1") {
			t.Errorf("From: %s: %q, want 550 5.7.1", from, got)
		}
	}
}

// TestAuthFromAfterManyFields: a From field after a thousand others is
// still the From field DMARC evaluates: a forgery of a p=reject domain
// cannot hide its From past the fields looked at.
func TestAuthFromAfterManyFields(t *testing.T) {
	_, cfg, _ := authSetup(t)
	cfg.IPRev = false
	r := start(t, cfg)
	c := forgerSession(t, r)
	msg := strings.Repeat("X-A: a\r\n", 1200) + "From: PayPal <service@sender.test>\r\nSubject: pay\r\n\r\nsend money\r\n"
	if got := sendMsg(t, c, "x@elsewhere.test", "bob@example.test", msg); !strings.HasPrefix(got, "550 5.7.1") {
		t.Fatalf("end of data %q, want 550 5.7.1", got)
	}
}

// TestAuthFromDomainsConcurrent: the DMARC records of several From
// domains are looked up at once, so slow domains listed first cannot
// push the lookup of a p=reject domain past the checks' deadline (a
// temperror, accepted).
func TestAuthFromDomainsConcurrent(t *testing.T) {
	dns, cfg, _ := authSetup(t)
	cfg.IPRev = false
	dns.Delay(200 * time.Millisecond) // two lookups per domain: 400 ms; three in a row pass the 900 ms bound
	r := start(t, cfg)
	c := forgerSession(t, r)
	msg := "From: a@x1.a.test, b@x2.b.test, c@x3.c.test, PayPal <service@sender.test>\r\nSubject: pay\r\n\r\nsend money\r\n"
	if got := sendMsg(t, c, "x@elsewhere.test", "bob@example.test", msg); !strings.HasPrefix(got, "550 5.7.1") {
		t.Fatalf("end of data %q, want 550 5.7.1", got)
	}
}

// TestAuthSlowDNSManySessions: with a DNS server answering after 300 ms,
// 400 sessions at once from 400 addresses each wait about one round trip
// for their iprev check at MAIL (no PTR record): the checks do not queue for each other's DNS waits (a
// fixed pool of 128 goroutines made the last ones wait four rounds).
func TestAuthSlowDNSManySessions(t *testing.T) {
	dns, cfg, _ := authSetup(t)
	cfg.DNSTimeout = 2 * time.Second
	cfg.MaxConnectionsPerIP = 1000
	cfg.MaxConnections = 1000
	const sessions = 400
	dns.Delay(300 * time.Millisecond)
	r := start(t, cfg)
	errs := make(chan error, sessions)
	took := make(chan time.Duration, sessions)
	ready := make(chan struct{})
	var wg sync.WaitGroup
	for i := range sessions {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Each from an address of its own: its PTR lookup is its own.
			d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 1, byte(1+i/250), byte(1+i%250))}}
			nc, err := d.Dial("tcp", r.addr)
			if err != nil {
				errs <- err
				return
			}
			c := smtpc.New(nc)
			c.Timeout = 10 * time.Second
			defer c.Close()
			if err := c.Greeting(); err != nil {
				errs <- err
				return
			}
			if err := c.Ehlo("c.sender.test"); err != nil {
				errs <- err
				return
			}
			<-ready
			begin := time.Now()
			if err := c.Mail("alice@sender.test"); err != nil {
				errs <- fmt.Errorf("MAIL: %v %s", err, c.Text())
				return
			}
			took <- time.Since(begin)
		}()
	}
	close(ready) // every session has its greeting: iprev started for all
	wg.Wait()
	close(errs)
	close(took)
	for err := range errs {
		t.Fatal(err)
	}
	var worst time.Duration
	for d := range took {
		worst = max(worst, d)
	}
	if worst > 900*time.Millisecond {
		t.Errorf("slowest MAIL took %v with a 300 ms DNS: checks waited for each other", worst)
	}
	t.Logf("slowest MAIL: %v", worst)
}

// TestSPFCache: a result is reused for the same client, HELO name and
// sender until spfCacheTTL passes; another sender, HELO or client is
// not; temperror is never kept; the cache stays within its bound.
func TestSPFCache(t *testing.T) {
	c := spfCache{m: make(map[spfKey]spfEntry)}
	now := time.Now()
	ip := netip.MustParseAddr("192.0.2.1")
	k := spfKey{ip, "h.test", "a", "s.test"}
	c.put(k, auth.SPFResult{Status: auth.Pass}, now)
	if r, ok := c.get(k, now.Add(spfCacheTTL-time.Second)); !ok || r.Status != auth.Pass {
		t.Fatalf("cached: %v %v", r, ok)
	}
	for _, other := range []spfKey{{ip, "h.test", "b", "s.test"}, {ip, "h.test", "a", "t.test"}, {ip, "x.test", "a", "s.test"}, {netip.MustParseAddr("192.0.2.2"), "h.test", "a", "s.test"}} {
		if _, ok := c.get(other, now); ok {
			t.Errorf("%v answered from %v's result", other, k)
		}
	}
	if _, ok := c.get(k, now.Add(spfCacheTTL)); ok {
		t.Error("reused past its TTL")
	}
	t2 := spfKey{ip, "h.test", "temp", "s.test"}
	c.put(t2, auth.SPFResult{Status: auth.TempError}, now)
	if _, ok := c.get(t2, now); ok {
		t.Error("temperror kept")
	}
	for i := range 2 * spfCacheEntries {
		c.put(spfKey{ip, "h.test", fmt.Sprintf("%d", i), "s.test"}, auth.SPFResult{Status: auth.Fail}, now)
	}
	if len(c.m) > spfCacheEntries {
		t.Errorf("%d entries, bound %d", len(c.m), spfCacheEntries)
	}
}

// forgerSession opens a session to r from 127.0.0.3 (no PTR name) that
// said EHLO forger.test.
func forgerSession(t *testing.T, r *running) *client {
	t.Helper()
	c := dialFrom(t, "127.0.0.3", r.addr)
	c.reply()
	c.expect("EHLO forger.test", "250")
	return c
}

// TestAuthInline: once every answer a message needs is cached, the end of
// data decides at once, on the session's goroutine (its result is
// complete when Data returns), with the Authentication-Results field the
// first message got from the pool; a message needing a key not cached
// yet still goes to the pool, waits for its lookup, and passes.
func TestAuthInline(t *testing.T) {
	dns, cfg, key := authSetup(t)
	res, err := newResolver(cfg)
	if err != nil {
		t.Fatal(err)
	}
	a := newAuthChecker(cfg, res)
	if !a.cached {
		t.Fatal("the server's resolver is not seen as caching")
	}
	wait := func(r *check.Result) check.Verdict { t.Helper(); return waitVerdict(t, r) }
	i := &Info{IP: netip.MustParseAddr("127.0.0.2"), Helo: "c.sender.test"}
	a.Connect(i)
	lf := func(s string) []byte { return []byte(strings.ReplaceAll(s, "\r\n", "\n")) }
	msg := "From: Alice <alice@sender.test>\r\nTo: bob@example.test\r\nSubject: hi\r\n\r\nHello.\r\n"
	// data runs a transaction and returns its verdict and whether it was
	// ready when Data returned.
	data := func(body []byte) (check.Verdict, bool) {
		t.Helper()
		i.resetTx()
		if v := wait(a.Mail(i, proto.Address{Local: "alice", Domain: "sender.test"}, proto.MailParams{})); v.Reply != nil {
			t.Fatalf("MAIL: %v", v.Reply)
		}
		r := a.Data(i, body)
		_, ready := r.Verdict()
		return wait(r), ready
	}
	const want = "\tdkim=pass header.d=sender.test header.s=sel header.a=ed25519-sha256;\n" +
		"\tdmarc=pass (p=reject) header.from=sender.test;\n"
	first, _ := data(lf(signed(t, key, msg)))
	if !strings.Contains(string(first.Headers), want) {
		t.Fatalf("first message: %q", first.Headers)
	}
	second, ready := data(lf(signed(t, key, msg)))
	if !ready {
		t.Fatal("second message: the verdict was not ready when Data returned (answers cached)")
	}
	if string(second.Headers) != string(first.Headers) {
		t.Fatalf("second message: %q, want %q", second.Headers, first.Headers)
	}
	if n := dns.Count("sel._domainkey.sender.test", 16); n != 1 {
		t.Fatalf("%d key queries, want 1", n)
	}

	// A second selector, not cached, behind a slow server: the pool waits.
	_, key2, _ := ed25519.GenerateKey(rand.Reader)
	zone := authZone + fmt.Sprintf("sel._domainkey.sender.test. TXT \"v=DKIM1; k=ed25519; p=%s\"\nsel2._domainkey.sender.test. TXT \"v=DKIM1; k=ed25519; p=%s\"\n",
		base64.StdEncoding.EncodeToString(key.Public().(ed25519.PublicKey)), base64.StdEncoding.EncodeToString(key2.Public().(ed25519.PublicKey)))
	if err := dns.Set(zone); err != nil {
		t.Fatal(err)
	}
	dns.Delay(100 * time.Millisecond)
	var b bytes.Buffer
	if err := dkim.Sign(&b, strings.NewReader(msg), &dkim.SignOptions{Domain: "sender.test", Selector: "sel2", Signer: key2}); err != nil {
		t.Fatal(err)
	}
	third, ready := data(lf(b.String()))
	if ready || !strings.Contains(string(third.Headers), "\tdkim=pass header.d=sender.test header.s=sel2 ") {
		t.Fatalf("new selector: ready at once %v (want false: its key was not cached), %q", ready, third.Headers)
	}
	if n := dns.Count("sel2._domainkey.sender.test", 16); n != 1 {
		t.Fatalf("new selector: %d key queries, want 1", n)
	}
}
