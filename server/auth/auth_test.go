package auth

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-msgauth/dkim"

	"github.com/nanomx/nanomx/server/resolver"
	"github.com/nanomx/nanomx/server/resolver/dnstest"
)

// setup starts a DNS server with zone and a resolver asking it (no cache,
// so that tests may change the data; short timeouts).
func setup(t *testing.T, zone string) (*dnstest.Server, *resolver.Resolver) {
	t.Helper()
	s := dnstest.New(t, zone)
	r, err := resolver.New(resolver.Config{Servers: []string{s.Addr()}, Timeout: 200 * time.Millisecond, Attempts: 1, CacheEntries: -1})
	if err != nil {
		t.Fatal(err)
	}
	return s, r
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	t.Cleanup(cancel)
	return c
}

// txt quotes a long TXT value as several strings of at most 200 bytes.
func txt(v string) string {
	var parts []string
	for len(v) > 200 {
		parts = append(parts, `"`+v[:200]+`"`)
		v = v[200:]
	}
	return strings.Join(append(parts, `"`+v+`"`), " ")
}

const spfZone = `
pass.test.      TXT "v=spf1 ip4:192.0.2.1 -all"
fail.test.      TXT "v=spf1 -all"
softfail.test.  TXT "v=spf1 ~all"
neutral.test.   TXT "v=spf1 ?all"
perm.test.      TXT "v=spf1 bogus:mechanism ip4:192.0.2.1 -all"
twice.test.     TXT "v=spf1 -all"
twice.test.     TXT "v=spf1 +all"
none.test.      TXT "just text"
helo.test.      TXT "v=spf1 ip4:192.0.2.9 -all"
loop.test.      TXT "v=spf1 include:loop.test -all"
`

// TestSPFResults: every SPF result, the HELO identity for a null sender,
// and DNS trouble as temperror.
func TestSPFResults(t *testing.T) {
	s, r := setup(t, spfZone)
	ip := netip.MustParseAddr("192.0.2.1")
	for _, tc := range []struct {
		from, helo string
		want       Status
	}{
		{"a@pass.test", "x.test", Pass},
		{"a@fail.test", "x.test", Fail},
		{"a@softfail.test", "x.test", SoftFail},
		{"a@neutral.test", "x.test", Neutral},
		{"a@perm.test", "x.test", PermError},
		{"a@twice.test", "x.test", PermError}, // two records (RFC 7208 4.5)
		{"a@loop.test", "x.test", PermError},  // lookup limit
		{"a@none.test", "x.test", None},
		{"a@nxdomain.test", "x.test", None},
		// Null sender: the HELO identity (RFC 7208 2.3).
		{"", "helo.test", Fail},
		{"", "[192.0.2.1]", None},
	} {
		got := CheckSPF(ctx(t), r, ip, tc.helo, tc.from)
		if got.Status != tc.want {
			t.Errorf("%q/%q: %s (%s), want %s", tc.from, tc.helo, got.Status, got.Reason, tc.want)
		}
		if tc.from == "" && !got.Helo {
			t.Errorf("null sender checked %q, not the HELO identity", got.Identity)
		}
	}
	if got := CheckSPF(ctx(t), r, netip.MustParseAddr("192.0.2.9"), "helo.test", ""); got.Status != Pass || got.Domain != "helo.test" {
		t.Errorf("HELO pass: %+v", got)
	}
	s.Servfail("pass.test")
	if got := CheckSPF(ctx(t), r, ip, "x.test", "a@pass.test"); got.Status != TempError {
		t.Errorf("SERVFAIL: %s, want temperror", got.Status)
	}
	s.Drop(true)
	start := time.Now()
	if got := CheckSPF(ctx(t), r, ip, "x.test", "a@fail.test"); got.Status != TempError {
		t.Errorf("no answer: %s, want temperror", got.Status)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("no answer took %v", d)
	}
}

// TestIPRev: pass with the confirmed name, fail when the name does not
// lead back, permerror without PTR, temperror when DNS does not answer.
func TestIPRev(t *testing.T) {
	s, r := setup(t, `
1.2.0.192.in-addr.arpa. PTR mail.good.test.
2.2.0.192.in-addr.arpa. PTR mail.liar.test.
3.2.0.192.in-addr.arpa. PTR gone.test.
1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa. PTR v6.good.test.
mail.good.test. A 192.0.2.1
mail.liar.test. A 198.51.100.1
v6.good.test. AAAA 2001:db8::1
`)
	for _, tc := range []struct {
		ip   string
		want Status
		name string
	}{
		{"192.0.2.1", Pass, "mail.good.test"},
		{"2001:db8::1", Pass, "v6.good.test"},
		{"192.0.2.2", Fail, ""},
		{"192.0.2.3", Fail, ""},
		{"192.0.2.4", PermError, ""},
	} {
		got := CheckIPRev(ctx(t), r, netip.MustParseAddr(tc.ip))
		if got.Status != tc.want || got.Name != tc.name {
			t.Errorf("%s: %s %q (%s), want %s %q", tc.ip, got.Status, got.Name, got.Reason, tc.want, tc.name)
		}
	}
	s.Drop(true)
	if got := CheckIPRev(ctx(t), r, netip.MustParseAddr("192.0.2.1")); got.Status != TempError {
		t.Errorf("no answer: %s, want temperror", got.Status)
	}
}

// TestIPRevConcurrent: the forward lookups of several PTR names run at
// once, so with a DNS server answering after 150 ms a client with four
// names (only the last confirming) is confirmed in about two round trips,
// not five; the first confirming name in PTR order is the one reported.
func TestIPRevConcurrent(t *testing.T) {
	s, r := setup(t, `
9.2.0.192.in-addr.arpa. PTR a.multi.test.
9.2.0.192.in-addr.arpa. PTR b.multi.test.
9.2.0.192.in-addr.arpa. PTR c.multi.test.
9.2.0.192.in-addr.arpa. PTR d.multi.test.
a.multi.test. A 198.51.100.1
b.multi.test. A 198.51.100.2
d.multi.test. A 192.0.2.9
8.2.0.192.in-addr.arpa. PTR x.multi.test.
8.2.0.192.in-addr.arpa. PTR y.multi.test.
x.multi.test. A 192.0.2.8
y.multi.test. A 192.0.2.8
`)
	s.Delay(150 * time.Millisecond)
	start := time.Now()
	got := CheckIPRev(ctx(t), r, netip.MustParseAddr("192.0.2.9"))
	if got.Status != Pass || got.Name != "d.multi.test" {
		t.Fatalf("%s %q (%s), want pass d.multi.test", got.Status, got.Name, got.Reason)
	}
	if d := time.Since(start); d > 600*time.Millisecond {
		t.Errorf("four names took %v: forward lookups one after another", d)
	}
	if s.MaxConcurrent() < 4 {
		t.Errorf("at most %d queries at once", s.MaxConcurrent())
	}
	// Both names confirm: whichever answers first, the first is reported.
	for range 3 {
		if got := CheckIPRev(ctx(t), r, netip.MustParseAddr("192.0.2.8")); got.Name != "x.multi.test" {
			t.Fatalf("%s %q, want x.multi.test", got.Status, got.Name)
		}
	}
}

// keys are a test's DKIM keys and their DNS records.
type keys struct {
	rsa  *rsa.PrivateKey
	ed   ed25519.PrivateKey
	zone string
}

func newKeys(t *testing.T) keys {
	t.Helper()
	rk, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := x509.MarshalPKIXPublicKey(&rk.PublicKey)
	_, ek, _ := ed25519.GenerateKey(rand.Reader)
	zone := fmt.Sprintf("rsa._domainkey.signer.test. TXT %s\ned._domainkey.signer.test. TXT \"v=DKIM1; k=ed25519; p=%s\"\n",
		txt("v=DKIM1; k=rsa; p="+base64.StdEncoding.EncodeToString(pub)),
		base64.StdEncoding.EncodeToString(ek.Public().(ed25519.PublicKey)))
	return keys{rsa: rk, ed: ek, zone: zone}
}

// sign returns msg (LF endings) signed for domain with selector's key.
func sign(t *testing.T, msg, domain, selector string, key crypto.Signer, mutate func(*dkim.SignOptions)) string {
	t.Helper()
	o := &dkim.SignOptions{Domain: domain, Selector: selector, Signer: key}
	if mutate != nil {
		mutate(o)
	}
	var b bytes.Buffer
	if err := dkim.Sign(&b, strings.NewReader(strings.ReplaceAll(msg, "\n", "\r\n")), o); err != nil {
		t.Fatal(err)
	}
	return strings.ReplaceAll(b.String(), "\r\n", "\n")
}

const plainMsg = "From: Alice <alice@signer.test>\nTo: bob@example.test\nSubject: hi\n\nHello.\n"

// TestDKIM: pass, fail, permerror, temperror, policy for rsa-sha256
// (2048-bit) and ed25519-sha256, one result per signature.
func TestDKIM(t *testing.T) {
	k := newKeys(t)
	s, r := setup(t, k.zone)
	for _, alg := range []struct {
		sel string
		key crypto.Signer
	}{{"rsa", k.rsa}, {"ed", k.ed}} {
		signed := sign(t, plainMsg, "signer.test", alg.sel, alg.key, nil)
		for _, tc := range []struct {
			name, msg string
			want      Status
		}{
			{"pass", signed, Pass},
			{"body changed", strings.Replace(signed, "Hello.", "Hello!", 1), Fail},
			{"header changed", strings.Replace(signed, "Subject: hi", "Subject: ho", 1), Fail},
			{"no key", strings.Replace(signed, "s="+alg.sel, "s=nokey", 1), PermError},
			{"expired", sign(t, plainMsg, "signer.test", alg.sel, alg.key, func(o *dkim.SignOptions) { o.Expiration = time.Now().Add(-time.Hour) }), PermError},
			{"l=", strings.Replace(signed, "DKIM-Signature: ", "DKIM-Signature: l=7; ", 1), Policy},
		} {
			got := VerifyDKIM(ctx(t), r, strings.NewReader(tc.msg))
			if len(got) != 1 || got[0].Status != tc.want || got[0].Domain != "signer.test" {
				t.Errorf("%s %s: %+v, want one %s for signer.test", alg.sel, tc.name, got, tc.want)
			}
		}
		if got := VerifyDKIM(ctx(t), r, strings.NewReader(signed)); got[0].Selector != alg.sel || !strings.HasPrefix(got[0].Algorithm, map[string]string{"rsa": "rsa-", "ed": "ed25519-"}[alg.sel]) {
			t.Errorf("%s: selector %q algorithm %q", alg.sel, got[0].Selector, got[0].Algorithm)
		}
	}
	// Two signatures, two results, in order.
	both := sign(t, sign(t, plainMsg, "signer.test", "rsa", k.rsa, nil), "signer.test", "ed", k.ed, nil)
	if got := VerifyDKIM(ctx(t), r, strings.NewReader(both)); len(got) != 2 || got[0].Status != Pass || got[1].Status != Pass {
		t.Errorf("two signatures: %+v", got)
	}
	// More than MaxSignatures: only the first MaxSignatures are reported.
	many := plainMsg
	for range MaxSignatures + 2 {
		many = sign(t, many, "signer.test", "ed", k.ed, nil)
	}
	if got := VerifyDKIM(ctx(t), r, strings.NewReader(many)); len(got) != MaxSignatures {
		t.Errorf("%d signatures: %d results, want %d", MaxSignatures+2, len(got), MaxSignatures)
	}
	if got := VerifyDKIM(ctx(t), r, strings.NewReader(plainMsg)); len(got) != 0 {
		t.Errorf("unsigned: %+v", got)
	}
	// DNS trouble on the key: temperror, never permerror.
	signed := sign(t, plainMsg, "signer.test", "rsa", k.rsa, nil)
	s.Servfail("rsa._domainkey.signer.test")
	if got := VerifyDKIM(ctx(t), r, strings.NewReader(signed)); got[0].Status != TempError {
		t.Errorf("SERVFAIL: %+v, want temperror", got)
	}
	s.Drop(true)
	if got := VerifyDKIM(ctx(t), r, strings.NewReader(signed)); got[0].Status != TempError {
		t.Errorf("no answer: %+v, want temperror", got)
	}
}

// rfc8463Message is the signed example of RFC 8463 Appendix A.3, with
// the keys of A.2 (an Ed25519 and an RSA key of football.example.com).
const rfc8463Message = `DKIM-Signature: v=1; a=ed25519-sha256; c=relaxed/relaxed;
 d=football.example.com; i=@football.example.com;
 q=dns/txt; s=brisbane; t=1528637909; h=from : to :
 subject : date : message-id : from : subject : date;
 bh=2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8=;
 b=/gCrinpcQOoIfuHNQIbq4pgh9kyIK3AQUdt9OdqQehSwhEIug4D11Bus
 Fa3bT3FY5OsU7ZbnKELq+eXdp1Q1Dw==
DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed;
 d=football.example.com; i=@football.example.com;
 q=dns/txt; s=test; t=1528637909; h=from : to : subject :
 date : message-id : from : subject : date;
 bh=2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8=;
 b=F45dVWDfMbQDGHJFlXUNB2HKfbCeLRyhDXgFpEL8GwpsRe0IeIixNTe3
 DhCVlUrSjV4BwcVcOF6+FF3Zo9Rpo1tFOeS9mPYQTnGdaSGsgeefOsk2Jz
 dA+L10TeYt9BgDfQNZtKdN1WO//KgIqXP7OdEFE4LjFYNcUxZQ4FADY+8=
From: Joe SixPack <joe@football.example.com>
To: Suzie Q <suzie@shopping.example.net>
Subject: Is dinner ready?
Date: Fri, 11 Jul 2003 21:00:37 -0700 (PDT)
Message-ID: <20030712040037.46341.5F8J@football.example.com>

Hi.

We lost the game.  Are you hungry yet?

Joe.
`

const rfc8463Zone = `
brisbane._domainkey.football.example.com. TXT "v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="
test._domainkey.football.example.com. TXT "v=DKIM1; k=rsa; p=MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQDkHlOQoBTzWRiGs5V6NpP3idY6Wk08a5qhdR6wy5bdOKb2jLQiY/J16JYi0Qvx/byYzCNb3W91y3FutACDfzwQ/BC/e/8uBsCR+yz1Lxj+PL6lHvqMKrM3rG4hstT5QjvHO9PzoxZyVYLzBfO2EeC3Ip3G+2kryOTIKT+l/K4w3QIDAQAB"
`

// TestDKIMRFC8463: the RFC's example verifies, both signatures (the body
// hash in the RFC is of the body ending in one CRLF).
func TestDKIMRFC8463(t *testing.T) {
	_, r := setup(t, rfc8463Zone)
	got := VerifyDKIM(ctx(t), r, strings.NewReader(rfc8463Message))
	if len(got) != 2 || got[0].Status != Pass || got[1].Status != Pass || got[0].Algorithm != "ed25519-sha256" {
		t.Fatalf("RFC 8463 example: %+v", got)
	}
	// One changed byte fails it.
	got = VerifyDKIM(ctx(t), r, strings.NewReader(strings.Replace(rfc8463Message, "hungry", "Hungry", 1)))
	if got[0].Status != Fail {
		t.Fatalf("changed example: %+v", got)
	}
}

// TestIsDomainName: a plausible DNS name (what SPF, From and the HELO
// lookup ahead of iprev accept): two labels or more, none empty or over
// 63 octets, no address literal, at most 253 octets.
func TestIsDomainName(t *testing.T) {
	for s, want := range map[string]bool{
		"mail.example.org": true, "MX1.Example.ORG": true, "a-b.c": true, "_spf.example.org": true,
		"localhost": false, "[192.0.2.1]": false, "": false, "a..b": false, ".a.b": false, "a.b.": false,
		strings.Repeat("a", 64) + ".org": false, strings.Repeat("a.", 127) + "a": false,
	} {
		if got := IsDomainName(s); got != want {
			t.Errorf("IsDomainName(%q) = %v, want %v", s, got, want)
		}
	}
}
