package server

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/nanomx/nanomx/proto"
)

// addr builds an Address from its decoded parts.
func addr(local, domain string) proto.Address { return proto.Address{Local: local, Domain: domain} }

func testTrace() *trace {
	return &trace{
		ID:       "ABC123",
		From:     addr("alice", "sender.test"),
		Rcpts:    []proto.Address{addr("bob", "example.test")},
		Helo:     "mail.sender.test",
		RemoteIP: netip.MustParseAddr("192.0.2.1"),
		Protocol: "ESMTP",
		Received: time.Date(2006, 1, 2, 15, 4, 5, 0, time.FixedZone("", -7*3600)),
	}
}

func TestTraceFields(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*trace)
		want   string
	}{
		{"plain", func(*trace) {},
			"Return-Path: <alice@sender.test>\n" +
				"Received: from mail.sender.test ([192.0.2.1])\n" +
				"\tby mx.example.test (nanomx) with ESMTP id ABC123\n" +
				"\tfor <bob@example.test>;\n" +
				"\tMon, 02 Jan 2006 15:04:05 -0700\n"},
		{"tls, ipv6, two rcpts, null sender, no helo", func(m *trace) {
			m.From, m.Helo, m.Protocol = proto.Address{}, "", "ESMTPS"
			m.RemoteIP = netip.MustParseAddr("2001:db8::1")
			m.TLS = "TLSv1.3 with cipher TLS_AES_128_GCM_SHA256"
			m.Rcpts = append(m.Rcpts, addr("carol", "example.test"))
		},
			"Return-Path: <>\n" +
				"Received: from unknown ([IPv6:2001:db8::1])\n" +
				"\tby mx.example.test (nanomx) with ESMTPS\n" +
				"\t(using TLSv1.3 with cipher TLS_AES_128_GCM_SHA256)\n" +
				"\tid ABC123;\n" +
				"\tMon, 02 Jan 2006 15:04:05 -0700\n"},
		{"mapped ipv4, utf8 paths, no id", func(m *trace) {
			m.RemoteIP = netip.MustParseAddr("::ffff:192.0.2.7")
			m.ID, m.Protocol = "", "UTF8SMTP"
			m.From, m.Rcpts = addr("jürgen", "bücher.test"), []proto.Address{addr("john doe", "example.test")}
			m.Received = time.Date(2024, 2, 29, 23, 59, 1, 0, time.UTC)
		},
			"Return-Path: <jürgen@bücher.test>\n" +
				"Received: from mail.sender.test ([192.0.2.7])\n" +
				"\tby mx.example.test (nanomx) with UTF8SMTP\n" +
				"\tfor <\"john doe\"@example.test>;\n" +
				"\tThu, 29 Feb 2024 23:59:01 +0000\n"},
		{"no address", func(m *trace) { m.RemoteIP = netip.Addr{} },
			"Return-Path: <alice@sender.test>\n" +
				"Received: from mail.sender.test\n" +
				"\tby mx.example.test (nanomx) with ESMTP id ABC123\n" +
				"\tfor <bob@example.test>;\n" +
				"\tMon, 02 Jan 2006 15:04:05 -0700\n"},
		{"hostile helo and tls", func(m *trace) {
			m.Helo = "evil\r\nX-Injected: 1 (by x);ü"
			m.TLS = "TLS (fake)\nX: y"
			m.ID = "id)\n"
		},
			"Return-Path: <alice@sender.test>\n" +
				"Received: from evil??X-Injected:?1??by?x???? ([192.0.2.1])\n" +
				"\tby mx.example.test (nanomx) with ESMTP\n" +
				"\t(using TLS ?fake??X: y)\n" +
				"\tid id??\n" +
				"\tfor <bob@example.test>;\n" +
				"\tMon, 02 Jan 2006 15:04:05 -0700\n"},
	}
	for _, tt := range tests {
		m := testTrace()
		tt.mutate(m)
		if got := string(traceFields(m, "mx.example.test")); got != tt.want {
			t.Errorf("%s:\ngot\n%s\nwant\n%s", tt.name, got, tt.want)
		}
	}
}

// TestTraceFieldsQuoted: a quoted local part from proto (john doe, sent as
// <"john doe"@example.org>) shows exactly as sent in Return-Path and
// "for", quoted once.
func TestTraceFieldsQuoted(t *testing.T) {
	m := testTrace()
	a, err := proto.ParseAddress(`"john doe"@example.org`)
	if err != nil {
		t.Fatal(err)
	}
	m.From, m.Rcpts = a, []proto.Address{a}
	h := string(traceFields(m, "mx.example.test"))
	if !strings.HasPrefix(h, "Return-Path: <\"john doe\"@example.org>\n") ||
		!strings.Contains(h, "\n\tfor <\"john doe\"@example.org>;\n") {
		t.Errorf("trace fields:\n%s", h)
	}
}

// TestTraceFieldsNeverBreakOut throws control characters at every field
// taken from the client, addresses built by hand included: the result must
// stay exactly two fields.
func TestTraceFieldsNeverBreakOut(t *testing.T) {
	nasty := []string{"a\nb", "a\rb", "a\x00b", "a\r\n\r\nb", "\xff\xfe", "a\u2028b", "a\x85b", "<>\"\\"}
	for _, s := range nasty {
		m := testTrace()
		m.From, m.Rcpts, m.Helo, m.TLS, m.ID, m.Protocol = addr(s, "x"), []proto.Address{addr(s, "y"+s)}, s, s, s, s
		h := string(traceFields(m, "mx.example.test"))
		lines := strings.Split(strings.TrimSuffix(h, "\n"), "\n")
		for i, line := range lines {
			if i == 0 && !strings.HasPrefix(line, "Return-Path: <") ||
				i == 1 && !strings.HasPrefix(line, "Received: from ") ||
				i > 1 && !strings.HasPrefix(line, "\t") {
				t.Errorf("%q: line %d breaks out: %q", s, i, line)
			}
			if strings.ContainsAny(line, "\r\x00\x85\u2028") {
				t.Errorf("%q: control character in %q", s, line)
			}
		}
	}
}

func TestAppendPath(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", ""},
		{"alice@x.test", "alice@x.test"},
		{"first.last+tag@x.test", "first.last+tag@x.test"},
		{"postmaster", "postmaster"},
		{"john doe@x.test", `"john doe"@x.test`},
		{`a"b\c@x.test`, `"a\"b\\c"@x.test`},
		{"a@b@x.test", `"a@b"@x.test`},
		{".start@x.test", `".start"@x.test`},
		{"a..b@x.test", `"a..b"@x.test`},
		{"jürgen@例え.jp", "jürgen@例え.jp"},
		{"evil\r\n@x.test", `"evil??"@x.test`},
		{"bad\xff@x.test", `"bad?"@x.test`},
		{"user@x>y z", "user@x?y?z"},
		{"@x.test", `""@x.test`},
		{"a\u202eb@x.test", `"a?b"@x.test`},
		// proto's canonical form (proto.Envelope) is written verbatim.
		{`"john doe"@example.org`, `"john doe"@example.org`},
		{`"a\"b\\c"@x.test`, `"a\"b\\c"@x.test`},
		{`"a@b"@x.test`, `"a@b"@x.test`},
		{`"a..b"@x.test`, `"a..b"@x.test`},
		{`""@x.test`, `""@x.test`},
		{`"δο κι"@παράδειγμα.δοκιμή`, `"δο κι"@παράδειγμα.δοκιμή`},
		{`"post master"`, `"post master"`},
		{"bob@[IPv6:2001:db8::1]", "bob@[IPv6:2001:db8::1]"},
		// Other quoted forms are brought to it, never quoted twice.
		{`"bob"@x.test`, "bob@x.test"},
		{`"a\b"@x.test`, "ab@x.test"},
		{`"john\ doe"@x.test`, `"john doe"@x.test`},
		{"\"evil\r\n\"@x.test", `"evil??"@x.test`},
		{"\"a\u202eb\"@x.test", `"a?b"@x.test`},
		{"\"a\\\x01\"@x.test", `"a?"@x.test`},
		{`"unterminated@x.test`, `"\"unterminated"@x.test`},
		{`"a"@x y`, "a@x?y"},
		{"\"a b\"@x\r\n.test", `"a b"@x??.test`},
	}
	for _, tt := range tests {
		if got := string(appendPath(nil, tt.in)); got != tt.want {
			t.Errorf("appendPath(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}
