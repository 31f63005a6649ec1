package auth

import (
	"net/mail"
	"net/netip"
	"strings"
	"testing"

	"github.com/emersion/go-msgauth/dmarc"
)

func TestOrgDomain(t *testing.T) {
	for in, want := range map[string]string{
		"example.com":          "example.com",
		"a.b.example.com":      "example.com",
		"mail.example.co.uk":   "example.co.uk",
		"x.y.example.invalidt": "example.invalidt", // unlisted TLD: the default rule "*"
		"com":                  "com",
		"A.Example.COM.":       "example.com",
	} {
		if got := OrgDomain(in); got != want {
			t.Errorf("OrgDomain(%q) = %q, want %q", in, got, want)
		}
	}
}

const dmarcZone = `
_dmarc.org.test.       TXT "v=DMARC1; p=reject; sp=quarantine"
_dmarc.strict.test.    TXT "v=DMARC1; p=reject; aspf=s; adkim=s"
_dmarc.none.test.      TXT "v=DMARC1; p=none"
_dmarc.own.org.test.   TXT "v=DMARC1; p=none"
_dmarc.np.test.        TXT "v=DMARC1; p=none; sp=none; np=reject"
exists.np.test.        A 192.0.2.1
_dmarc.bad.test.       TXT "v=DMARC1; p=sometimes"
_dmarc.two.test.       TXT "v=DMARC1; p=reject"
_dmarc.two.test.       TXT "v=DMARC1; p=none"
_dmarc.pct.test.       TXT "v=DMARC1; p=reject; pct=0"
`

func spfPass(domain string) SPFResult { return SPFResult{Status: Pass, Domain: domain} }
func dkimPass(domain string) []DKIMResult {
	return []DKIMResult{{Status: Pass, Domain: domain}}
}

// TestDMARC: pass via SPF only and via DKIM only, relaxed and strict
// alignment, misaligned passes failing, p= and sp= and np=, and the
// records that yield none, permerror and temperror.
func TestDMARC(t *testing.T) {
	s, r := setup(t, dmarcZone)
	for _, tc := range []struct {
		name   string
		from   string
		spf    SPFResult
		dkim   []DKIMResult
		want   Status
		policy dmarc.Policy
	}{
		{"spf only", "org.test", spfPass("org.test"), nil, Pass, dmarc.PolicyReject},
		{"spf relaxed", "org.test", spfPass("bounce.org.test"), nil, Pass, dmarc.PolicyReject},
		{"dkim only", "org.test", SPFResult{Status: Fail, Domain: "org.test"}, dkimPass("org.test"), Pass, dmarc.PolicyReject},
		{"dkim relaxed", "org.test", SPFResult{Status: None}, dkimPass("mail.org.test"), Pass, dmarc.PolicyReject},
		{"misaligned", "org.test", spfPass("other.test"), dkimPass("other.test"), Fail, dmarc.PolicyReject},
		{"dkim fail aligned", "org.test", SPFResult{Status: SoftFail, Domain: "org.test"}, []DKIMResult{{Status: Fail, Domain: "org.test"}}, Fail, dmarc.PolicyReject},
		{"strict spf", "strict.test", spfPass("a.strict.test"), nil, Fail, dmarc.PolicyReject},
		{"strict dkim", "strict.test", SPFResult{}, dkimPass("a.strict.test"), Fail, dmarc.PolicyReject},
		{"strict exact", "strict.test", SPFResult{}, dkimPass("strict.test"), Pass, dmarc.PolicyReject},
		{"subdomain: sp=", "sub.org.test", spfPass("other.test"), nil, Fail, dmarc.PolicyQuarantine},
		{"own record beats sp=", "own.org.test", SPFResult{}, nil, Fail, dmarc.PolicyNone},
		{"np= for a missing subdomain", "missing.np.test", SPFResult{}, nil, Fail, dmarc.PolicyReject},
		{"np= not for an existing one", "exists.np.test", SPFResult{}, nil, Fail, dmarc.PolicyNone},
		{"pct= ignored", "pct.test", SPFResult{}, nil, Fail, dmarc.PolicyReject},
		{"temperror aligned spf", "org.test", SPFResult{Status: TempError, Domain: "org.test"}, nil, TempError, dmarc.PolicyReject},
		{"temperror dkim", "org.test", SPFResult{Status: Fail, Domain: "org.test"}, []DKIMResult{{Status: TempError, Domain: "org.test"}}, TempError, dmarc.PolicyReject},
		{"no record", "norecord.test", spfPass("other.test"), nil, None, ""},
		{"two records", "two.test", SPFResult{}, nil, None, ""},
		{"invalid record", "bad.test", SPFResult{}, nil, PermError, ""},
	} {
		rec := LookupDMARC(ctx(t), r, tc.from)
		got := EvaluateDMARC(rec, tc.spf, tc.dkim)
		if got.Status != tc.want || got.Policy != tc.policy || got.Domain != tc.from {
			t.Errorf("%s: %+v, want %s with p=%q", tc.name, got, tc.want, tc.policy)
		}
	}
	s.Drop(true)
	if rec := LookupDMARC(ctx(t), r, "org.test"); rec.Status != TempError {
		t.Errorf("no answer: %+v, want temperror", rec)
	}
}

// TestFromDomains: a From field with one address; several fields or
// addresses (every domain kept, the problem named); none; unparsable.
func TestFromDomains(t *testing.T) {
	for _, tc := range []struct {
		head    string
		domains string
		problem bool
	}{
		{"From: A <a@Example.ORG>\n", "example.org", false},
		{"from: a@example.org\n (comment)\n", "example.org", false},
		{"From: a@x.test, b@y.test\n", "x.test y.test", true},
		{"From: a@x.test\nFrom: b@y.test\n", "x.test y.test", true},
		{"Subject: none\n", "", true},
		{"From: not an address\n", "", true},
	} {
		got := fromDomains(headerFields([]byte(tc.head + "\nbody\n")))
		if strings.Join(got.Domains, " ") != tc.domains || (got.Problem != "") != tc.problem {
			t.Errorf("%q: %+v", tc.head, got)
		}
	}
}

// TestForgedResults: fields claiming our authserv-id, with or without a
// version, any case, after comments, go; others stay.
func TestForgedResults(t *testing.T) {
	forged := ForgedResults("mx.example.test")
	for f, want := range map[string]bool{
		"Authentication-Results: mx.example.test; spf=pass\n":          true,
		"authentication-results: MX.Example.Test 1; dkim=pass\n":       true,
		"Authentication-Results:\n\tmx.example.test;\n\tdmarc=pass\n":  true,
		"Authentication-Results: (forged) mx.example.test; none\n":     true,
		"Authentication-Results : \"mx.example.test\"; none\n":         true,
		"Authentication-Results: mx.example.test.evil; spf=pass\n":     false,
		"Authentication-Results: other.example; spf=pass\n":            false,
		"X-Authentication-Results: mx.example.test; spf=pass\n":        false,
		"ARC-Authentication-Results: i=1; mx.example.test; spf=pass\n": false,
		"Subject: Authentication-Results: mx.example.test; spf=pass\n": false,
	} {
		if got := forged([]byte(f)); got != want {
			t.Errorf("%q: %v, want %v", f, got, want)
		}
	}
}

// TestFormatResults: the field's layout, and values from the wire that
// try to inject a line, a result or a quote come out inert.
func TestFormatResults(t *testing.T) {
	spf := SPFResult{Status: Pass, Identity: "alice@example.org", Domain: "example.org"}
	got := string(FormatResults("mx.example.test", Results{
		SPF:          &spf,
		DKIMChecked:  true,
		DKIM:         []DKIMResult{{Status: Pass, Domain: "example.org", Selector: "sel", Algorithm: "rsa-sha256"}},
		DMARCChecked: true,
		DMARC:        []DMARCResult{{Status: Pass, Domain: "example.org", Policy: dmarc.PolicyReject}},
		IPRev:        &IPRevResult{Status: Pass, IP: netip.MustParseAddr("192.0.2.1"), Name: "mail.example.org"},
	}))
	want := "Authentication-Results: mx.example.test;\n" +
		"\tspf=pass smtp.mailfrom=alice@example.org;\n" +
		"\tdkim=pass header.d=example.org header.s=sel header.a=rsa-sha256;\n" +
		"\tdmarc=pass (p=reject) header.from=example.org;\n" +
		"\tiprev=pass policy.iprev=192.0.2.1 (mail.example.org)\n"
	if got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
	evil := SPFResult{Status: Fail, Helo: true, Identity: "x\r\nX-Evil: 1; dkim=pass", Reason: "a\"b\\c\nd"}
	got = string(FormatResults("mx.example.test", Results{SPF: &evil, DKIMChecked: true}))
	want = "Authentication-Results: mx.example.test;\n" +
		"\tspf=fail reason=\"a\\\"b\\\\c?d\" smtp.helo=\"x??X-Evil: 1; dkim=pass\";\n" +
		"\tdkim=none\n"
	if got != want {
		t.Errorf("got\n%q\nwant\n%q", got, want)
	}
	v6 := &IPRevResult{Status: Fail, IP: netip.MustParseAddr("2001:db8::1")}
	if got := string(FormatResults("mx.example.test", Results{IPRev: v6})); !strings.Contains(got, `iprev=fail policy.iprev="2001:db8::1"`) {
		t.Errorf("IPv6 iprev: %q", got)
	}
	if got := string(FormatResults("mx.example.test", Results{})); got != "Authentication-Results: mx.example.test; none\n" {
		t.Errorf("no results: %q", got)
	}
}

// TestDMARCParseCache: a record's text is parsed once (the same parse is
// returned), and a changed record is parsed anew.
func TestDMARCParseCache(t *testing.T) {
	s, r := setup(t, `_dmarc.cached.test. TXT "v=DMARC1; p=reject; np=quarantine"`)
	a, b := LookupDMARC(ctx(t), r, "cached.test"), LookupDMARC(ctx(t), r, "cached.test")
	if a.Status != Pass || a.Record != b.Record || a.NP != "quarantine" {
		t.Fatalf("%+v %+v: want one shared parse", a, b)
	}
	if err := s.Set(`_dmarc.cached.test. TXT "v=DMARC1; p=none"`); err != nil {
		t.Fatal(err)
	}
	if c := LookupDMARC(ctx(t), r, "cached.test"); c.Record.Policy != "none" || c.NP != "" {
		t.Fatalf("changed record: %+v", c.Record)
	}
}

// FuzzSimpleAddress: whenever simpleAddress takes a From value,
// net/mail.ParseAddressList finds that one address in it, so that the
// fast path never changes a From domain.
func FuzzSimpleAddress(f *testing.F) {
	for _, s := range []string{
		"Alice <alice@sender.test>", "alice@sender.test", "<alice@sender.test>", "Alice<alice@x.test>",
		"Alice Smith <a.b+c@mail.example.com>", "Alice  <a@b.test>", " <a@b.test>", "A-b_c <x@y-z.test>",
		"a..b@x.test", ".a@x.test", "a@x..test", "a@x.test.", "Alice <a@b.test", "a@b@c.test",
		"\"Alice\" <a@b.test>", "Alice (c) <a@b.test>", "=?utf-8?q?A?= <a@b.test>", "a@[1.2.3.4]",
		"Alice <a@b.test>, Bob <b@c.test>", "x: a@b.test;", "Alice <@b.test>", "Alice <a@>",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		addr, ok := simpleAddress(v)
		if !ok {
			return
		}
		list, err := mail.ParseAddressList(v)
		if err != nil || len(list) != 1 || list[0].Address != addr {
			t.Fatalf("simpleAddress(%q) = %q; net/mail: %v %v", v, addr, list, err)
		}
	})
}

// TestSimpleAddress: the common From forms take the fast path, the
// others do not.
func TestSimpleAddress(t *testing.T) {
	for v, want := range map[string]string{
		"Alice <alice@sender.test>":            "alice@sender.test",
		"alice@sender.test":                    "alice@sender.test",
		"Alice Smith <a.b+c@mail.example.com>": "a.b+c@mail.example.com",
		"<x@y.test>":                           "x@y.test",
		"\"Alice\" <a@b.test>":                 "",
		"Alice (c) <a@b.test>":                 "",
		"a@b.test, c@d.test":                   "",
		"Alice <a@b.test> x":                   "",
	} {
		got, ok := simpleAddress(v)
		if ok != (want != "") || got != want {
			t.Errorf("simpleAddress(%q) = %q %v, want %q", v, got, ok, want)
		}
	}
}
