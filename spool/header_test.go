package spool

import (
	"bytes"
	"net/mail"
	"net/netip"
	"regexp"
	"strings"
	"testing"
	"time"
)

func TestScanHeader(t *testing.T) {
	tests := []struct {
		in       string
		received int
		out      string // in without its Return-Path fields
	}{
		// No trace fields.
		{"Subject: x\n\nbody\n", 0, "Subject: x\n\nbody\n"},
		{"", 0, ""},
		// Received fields count in the header only, any case, with
		// continuation lines and the obsolete space before the colon.
		{"Received: a\nReceived: b\n\tcont\nSubject: x\n\nReceived: in body\n", 2, ""},
		{"received: a\nRECEIVED : b\nX-Received: c\nReceivedX: d\n", 2, ""},
		{"Received: x\r\n\r\nReceived: y\r\n", 1, ""},
		{"\nReceived: body only\n", 0, ""},
		// Leading white-space lines continue no field of the client's: they
		// count and are cut as nothing, and are kept as a field of
		// nanomx's own, so that they cannot continue our Received field.
		{" leading continuation\nReceived: x\n\n", 1, "X-Nanomx-Unattached: leading continuation\nReceived: x\n\n"},
		{" Received: a\n Return-Path: <x>\nReceived: b\n\n", 1, "X-Nanomx-Unattached: Received: a\n Return-Path: <x>\nReceived: b\n\n"},
		{"\tcont\nReturn-Path: <a>\n more\nX: y\n\n", 0, "X-Nanomx-Unattached:\tcont\nX: y\n\n"},
		{" \n\nbody\n", 0, "X-Nanomx-Unattached: \n\nbody\n"},
		{"Return-Path: <a>\n\tmore\nX: y\n", 0, "X: y\n"},
		{"\n body\n", 0, ""},
		// Return-Path fields go, continuation lines included; other fields
		// and the body stay.
		{"Return-Path: <evil@x>\nSubject: x\n\nbody", 0, "Subject: x\n\nbody"},
		{"Subject: x\nreturn-path: <a>\n  folded\n\tmore\nTo: y\n\nReturn-Path: stays\n", 0, "Subject: x\nTo: y\n\nReturn-Path: stays\n"},
		{"Return-Path: a\nRETURN-PATH : b\nX: y\n\n", 0, "X: y\n\n"},
		{"X: y\nReturn-Path: <a>", 0, "X: y\n"},
		{"X: y\nReturn-Path: <a>\n\n", 0, "X: y\n\n"},
		{"Return-Pathology: x\nX-Return-Path: y\n\n", 0, "Return-Pathology: x\nX-Return-Path: y\n\n"},
		{"Received: a\nReturn-Path: <b>\nReceived: c\n\nbody", 2, "Received: a\nReceived: c\n\nbody"},
	}
	for _, tt := range tests {
		received, cuts := scanHeader([]byte(tt.in))
		out := string(bytes.Join(appendKept(nil, []byte(tt.in), cuts), nil))
		if tt.out == "" && len(cuts) == 0 {
			tt.out = tt.in
		}
		if received != tt.received || out != tt.out {
			t.Errorf("scanHeader(%q) = %d, %q; want %d, %q", tt.in, received, out, tt.received, tt.out)
		}
	}
}

func testMessage() *Message {
	return &Message{
		ID:       "ABC123",
		From:     "alice@sender.test",
		Rcpts:    []string{"bob@example.test"},
		Helo:     "mail.sender.test",
		RemoteIP: netip.MustParseAddr("192.0.2.1"),
		Protocol: "ESMTP",
		Received: time.Date(2006, 1, 2, 15, 4, 5, 0, time.FixedZone("", -7*3600)),
	}
}

func TestTraceHeader(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*Message)
		want   string
	}{
		{"plain", func(*Message) {},
			"Return-Path: <alice@sender.test>\n" +
				"Received: from mail.sender.test ([192.0.2.1])\n" +
				"\tby mx.example.test (nanomx) with ESMTP id ABC123\n" +
				"\tfor <bob@example.test>;\n" +
				"\tMon, 02 Jan 2006 15:04:05 -0700\n"},
		{"tls, ipv6, two rcpts, null sender, no helo", func(m *Message) {
			m.From, m.Helo, m.Protocol = "", "", "ESMTPS"
			m.RemoteIP = netip.MustParseAddr("2001:db8::1")
			m.TLS = "TLSv1.3 with cipher TLS_AES_128_GCM_SHA256"
			m.Rcpts = append(m.Rcpts, "carol@example.test")
		},
			"Return-Path: <>\n" +
				"Received: from unknown ([IPv6:2001:db8::1])\n" +
				"\tby mx.example.test (nanomx) with ESMTPS\n" +
				"\t(using TLSv1.3 with cipher TLS_AES_128_GCM_SHA256)\n" +
				"\tid ABC123;\n" +
				"\tMon, 02 Jan 2006 15:04:05 -0700\n"},
		{"mapped ipv4, utf8 paths, no id", func(m *Message) {
			m.RemoteIP = netip.MustParseAddr("::ffff:192.0.2.7")
			m.ID, m.Protocol = "", "UTF8SMTP"
			m.From, m.Rcpts = "jürgen@bücher.test", []string{"john doe@example.test"}
			m.Received = time.Date(2024, 2, 29, 23, 59, 1, 0, time.UTC)
		},
			"Return-Path: <jürgen@bücher.test>\n" +
				"Received: from mail.sender.test ([192.0.2.7])\n" +
				"\tby mx.example.test (nanomx) with UTF8SMTP\n" +
				"\tfor <\"john doe\"@example.test>;\n" +
				"\tThu, 29 Feb 2024 23:59:01 +0000\n"},
		{"no address", func(m *Message) { m.RemoteIP = netip.Addr{} },
			"Return-Path: <alice@sender.test>\n" +
				"Received: from mail.sender.test\n" +
				"\tby mx.example.test (nanomx) with ESMTP id ABC123\n" +
				"\tfor <bob@example.test>;\n" +
				"\tMon, 02 Jan 2006 15:04:05 -0700\n"},
		{"hostile helo and tls", func(m *Message) {
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
		m := testMessage()
		tt.mutate(m)
		if got := string(traceHeader(m, "mx.example.test")); got != tt.want {
			t.Errorf("%s:\ngot\n%s\nwant\n%s", tt.name, got, tt.want)
		}
	}
}

// TestTraceHeaderQuoted: a quoted local part from proto (john doe, sent as
// <"john doe"@example.org>) shows exactly as sent in Return-Path and
// "for", quoted once.
func TestTraceHeaderQuoted(t *testing.T) {
	m := testMessage()
	m.From, m.Rcpts = `"john doe"@example.org`, []string{`"john doe"@example.org`}
	h := string(traceHeader(m, "mx.example.test"))
	if !strings.HasPrefix(h, "Return-Path: <\"john doe\"@example.org>\n") ||
		!strings.Contains(h, "\n\tfor <\"john doe\"@example.org>;\n") {
		t.Errorf("trace fields:\n%s", h)
	}
}

// TestClientCannotExtendReceived builds the file's bytes as build does
// (trace fields, then the client's message minus Return-Path) for messages
// starting with white space, and parses the header: our Received field is
// exactly what nanomx wrote, and the client's leading lines are the value
// of X-Nanomx-Unattached.
func TestClientCannotExtendReceived(t *testing.T) {
	for _, body := range []string{
		" from forged.example (by evil);\nSubject: hi\n\nbody\n",
		"\t(comment)\n\tmore\nReturn-Path: <x@y>\nSubject: hi\n\nbody\n",
	} {
		m := testMessage()
		trace := traceHeader(m, "mx.example.test")
		_, cuts := scanHeader([]byte(body))
		file := bytes.Join(appendKept([][]byte{trace}, []byte(body), cuts), nil)
		msg, err := mail.ReadMessage(bytes.NewReader(file))
		if err != nil {
			t.Fatalf("%q: %v", body, err)
		}
		_, ours, _ := strings.Cut(strings.TrimSuffix(string(trace), "\n"), "\nReceived: ")
		want := strings.ReplaceAll(ours, "\n\t", " ")
		if got := msg.Header["Received"]; len(got) != 1 || got[0] != want {
			t.Errorf("%q: Received %q, want %q", body, got, want)
		}
		if got := msg.Header.Get("X-Nanomx-Unattached"); got == "" || msg.Header.Get("Subject") != "hi" {
			t.Errorf("%q: X-Nanomx-Unattached %q, header %v", body, got, msg.Header)
		}
	}
}

// TestTraceHeaderNeverBreaksOut throws control characters at every field
// taken from the client: the result must stay exactly two fields.
func TestTraceHeaderNeverBreaksOut(t *testing.T) {
	nasty := []string{"a\nb", "a\rb", "a\x00b", "a\r\n\r\nb", "\xff\xfe", "a\u2028b", "a\x85b", "<>\"\\"}
	for _, s := range nasty {
		m := testMessage()
		m.From, m.Rcpts, m.Helo, m.TLS, m.ID, m.Protocol = s+"@x", []string{s + "@y" + s}, s, s, s, s
		h := string(traceHeader(m, "mx.example.test"))
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

func TestUniqueName(t *testing.T) {
	now := time.Unix(1700000000, 123456789)
	got := uniqueName(now, 4242, 7, escapeNameHost("mx.example.test"), 10240)
	if want := "1700000000.M123456P4242Q7_nanomx.mx.example.test,S=10240"; got != want {
		t.Errorf("uniqueName = %q, want %q", got, want)
	}
	if got := uniqueName(time.Unix(5, 0), 1, 1, "h", 0); got != "5.M0P1Q1_nanomx.h,S=0" {
		t.Errorf("uniqueName = %q", got)
	}
}

func TestEscapeNameHost(t *testing.T) {
	tests := []struct{ in, want string }{
		{"mx.example.test", "mx.example.test"},
		{"a/b:c", `a\057b\072c`},
		{`a,b\c`, `a\054b\134c`},
		{"a b\x00\xff", `a\040b\000\377`},
		{strings.Repeat("h", 300), strings.Repeat("h", 100)},
	}
	for _, tt := range tests {
		if got := escapeNameHost(tt.in); got != tt.want {
			t.Errorf("escapeNameHost(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
	name := uniqueName(time.Now(), 1, 1, escapeNameHost("a/b:c,d"), 1)
	if !regexp.MustCompile(`^\d+\.M\d+P\d+Q\d+_nanomx\.[^/:,]+,S=\d+$`).MatchString(name) {
		t.Errorf("unsafe name %q", name)
	}
}
