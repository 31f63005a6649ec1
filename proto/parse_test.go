package proto

import (
	"strings"
	"testing"
)

func TestSplitVerb(t *testing.T) {
	tests := []struct {
		line string
		verb uint32
		arg  string
	}{
		// Verbs in any case (RFC 5321 2.4), argument trimmed.
		{"EHLO example.org", verbEhlo, "example.org"},
		{"ehlo example.org", verbEhlo, "example.org"},
		{"eHlO   example.org  ", verbEhlo, "example.org"},
		{"HELO x", verbHelo, "x"},
		{"HELP", verbHelp, ""},
		{"MAIL FROM:<a@b>", verbMail, "FROM:<a@b>"},
		{"mail from:<a@b>\t", verbMail, "from:<a@b>"},
		{"RCPT TO:<a@b>", verbRcpt, "TO:<a@b>"},
		{"DATA", verbData, ""},
		{"DATA ", verbData, ""},
		{"BDAT 10 LAST", verbBdat, "10 LAST"},
		{"RSET", verbRset, ""},
		{"NOOP hello", verbNoop, "hello"},
		{"QUIT", verbQuit, ""},
		{"VRFY bob", verbVrfy, "bob"},
		{"EXPN list", verbExpn, "list"},
		{"TURN", verbTurn, ""},
		{"ETRN x", verbEtrn, "x"},
		{"ATRN x", verbAtrn, "x"},
		{"AUTH PLAIN", verbAuth, "PLAIN"},
		{"SEND FROM:<a@b>", verbSend, "FROM:<a@b>"},
		{"SOML FROM:<a@b>", verbSoml, "FROM:<a@b>"},
		{"SAML FROM:<a@b>", verbSaml, "FROM:<a@b>"},
		// STARTTLS is the one eight-letter verb.
		{"STARTTLS", verbStar, ""},
		{"starttls ", verbStar, ""},
		{"STARTTLSX", 0, ""},
		{"STARTTL", 0, ""},
		{"STAR", 0, ""},
		{"STAR TTLS", 0, ""},
		// Not a verb: too short, glued on, not a space after it.
		{"", 0, ""},
		{"NOO", 0, ""},
		{"NOOPS", 0, ""},
		{"MAILFROM:<a@b>", 0, ""},
		{"NOOP\tx", 0, ""},
		{"XYZZY", 0, ""},
		{"XYZZ", 'x'<<24 | 'y'<<16 | 'z'<<8 | 'z', ""},
		// Non-letters are not folded into letters.
		{"@AIL FROM:<a@b>", '`'<<24 | 'a'<<16 | 'i'<<8 | 'l', "FROM:<a@b>"},
	}
	for _, tt := range tests {
		verb, arg := splitVerb([]byte(tt.line))
		if verb != tt.verb || string(arg) != tt.arg {
			t.Errorf("splitVerb(%q) = %#x, %q; want %#x, %q", tt.line, verb, arg, tt.verb, tt.arg)
		}
	}
}

func TestParsePath(t *testing.T) {
	const (
		null = 1 << iota
		noDomain
		utf8
	)
	long := strings.Repeat("x", 300)
	label := strings.Repeat("d", 63)
	domain255 := label + "." + label + "." + label + "." + label[:63] // 255 octets
	tests := []struct {
		in    string
		want  string // canonical address appended to dst
		rest  string
		flags int
		err   pathError
	}{
		// RFC 5321 4.1.2 Path and Mailbox.
		{"<a@example.org>", "a@example.org", "", 0, pathOK},
		{"<a.b-c+d@sub.example.org>", "a.b-c+d@sub.example.org", "", 0, pathOK},
		{"<a@example.org> SIZE=10", "a@example.org", "SIZE=10", 0, pathOK},
		{"<a@example.org>   SIZE=10  BODY=7BIT", "a@example.org", "SIZE=10  BODY=7BIT", 0, pathOK},
		{"<A@Example.ORG>", "A@Example.ORG", "", 0, pathOK},
		// Null reverse-path and Postmaster (RFC 5321 4.5.1).
		{"<>", "", "", null, pathOK},
		{"<> SIZE=10", "", "SIZE=10", null, pathOK},
		{"<Postmaster>", "Postmaster", "", noDomain, pathOK},
		{"<postMASTER>", "postMASTER", "", noDomain, pathOK},
		{"<bob>", "bob", "", noDomain, pathOK},
		// Tolerated: no angle brackets.
		{"a@example.org", "a@example.org", "", 0, pathOK},
		{"a@example.org SIZE=10", "a@example.org", "SIZE=10", 0, pathOK},
		{`"a b"@example.org SIZE=1`, `"a b"@example.org`, "SIZE=1", 0, pathOK},
		{"postmaster", "postmaster", "", noDomain, pathOK},
		// Quoted local parts, in the canonical form of Envelope: unquoted
		// when the string is a Dot-string, else quoted with only '"' and
		// '\' escaped, every other quoted-pair reduced to its octet.
		{`<"bob"@example.test>`, "bob@example.test", "", 0, pathOK},
		{`<"john"@x>`, "john@x", "", 0, pathOK},
		{`<"a.b"@x.test>`, "a.b@x.test", "", 0, pathOK},
		{`<"john doe"@example.test>`, `"john doe"@example.test`, "", 0, pathOK},
		{`<"john doe"@x>`, `"john doe"@x`, "", 0, pathOK},
		{`<"a\b"@x>`, "ab@x", "", 0, pathOK},
		{`<"\b\o\b"@x>`, "bob@x", "", 0, pathOK},
		{`<"john\ doe"@x>`, `"john doe"@x`, "", 0, pathOK},
		{`<"a\@b"@x>`, `"a@b"@x`, "", 0, pathOK},
		{`<"a\.b"@x>`, "a.b@x", "", 0, pathOK},
		{`<"\.a"@x>`, `".a"@x`, "", 0, pathOK},
		{`<"\""@x>`, `"\""@x`, "", 0, pathOK},
		{`<"\\"@x>`, `"\\"@x`, "", 0, pathOK},
		{`<"a\\\"b"@x>`, `"a\\\"b"@x`, "", 0, pathOK},
		{"<\"δ\\ο\"@x>", "δο@x", "", utf8, pathOK},
		{`<".a"@x.test>`, `".a"@x.test`, "", 0, pathOK},
		{`<"a."@x.test>`, `"a."@x.test`, "", 0, pathOK},
		{`<"a..b"@x.test>`, `"a..b"@x.test`, "", 0, pathOK},
		{`<""@x.test>`, `""@x.test`, "", 0, pathOK},
		{`<"a\"b"@x.test>`, `"a\"b"@x.test`, "", 0, pathOK},
		{`<"a\\b"@x.test>`, `"a\\b"@x.test`, "", 0, pathOK},
		{`<"a>b"@x.test>`, `"a>b"@x.test`, "", 0, pathOK},
		{`<"a@b"@x.test>`, `"a@b"@x.test`, "", 0, pathOK},
		{`<"Postmaster">`, "Postmaster", "", noDomain, pathOK},
		{`<"Post\master">`, "Postmaster", "", noDomain, pathOK},
		{`<"post master">`, `"post master"`, "", noDomain, pathOK},
		// Old relay syntax and odd but harmless local parts.
		{"<a%b@x.test>", "a%b@x.test", "", 0, pathOK},
		{"<host!a@x.test>", "host!a@x.test", "", 0, pathOK},
		{"<a/b@x.test>", "a/b@x.test", "", 0, pathOK},
		// Tolerated dots that break the Dot-string rule: quoted.
		{"<../../etc/passwd@x.test>", `"../../etc/passwd"@x.test`, "", 0, pathOK},
		{"<a..b@x.test>", `"a..b"@x.test`, "", 0, pathOK},
		{"<.a@x.test>", `".a"@x.test`, "", 0, pathOK},
		{"<a.@x.test>", `"a."@x.test`, "", 0, pathOK},
		{"<.>", `"."`, "", noDomain, pathOK},
		{"<{a}'#$&*=?^`|~@x.test>", "{a}'#$&*=?^`|~@x.test", "", 0, pathOK},
		{"<" + long + "@x.test>", long + "@x.test", "", 0, pathOK},
		// Source routes are dropped (RFC 5321 4.1.2, Appendix C).
		{"<@a.example,@b.example:bob@example.test>", "bob@example.test", "", 0, pathOK},
		{"<@a.example:bob@example.test>", "bob@example.test", "", 0, pathOK},
		{"<@[192.0.2.1]:bob@example.test>", "bob@example.test", "", 0, pathOK},
		{"@a.example:bob@example.test", "bob@example.test", "", 0, pathOK},
		{"<@a.example:Postmaster>", "Postmaster", "", noDomain, pathOK},
		// Domains: underscores, a root dot, address literals.
		{"<a@my_host.example>", "a@my_host.example", "", 0, pathOK},
		{"<a@example.org.>", "a@example.org", "", 0, pathOK},
		{"<a@[192.0.2.1]>", "a@[192.0.2.1]", "", 0, pathOK},
		{"<a@[IPv6:2001:db8::1]>", "a@[IPv6:2001:db8::1]", "", 0, pathOK},
		{"<a@[x-tag:anything]>", "a@[x-tag:anything]", "", 0, pathOK},
		{"<a@" + domain255 + ">", "a@" + domain255, "", 0, pathOK},
		// Internationalised addresses (RFC 6531).
		{"<δοκιμή@παράδειγμα.δοκιμή>", "δοκιμή@παράδειγμα.δοκιμή", "", utf8, pathOK},
		{"<a@bücher.example>", "a@bücher.example", "", utf8, pathOK},
		{`<"δοκιμή"@example.test>`, "δοκιμή@example.test", "", utf8, pathOK},
		{`<"δο κι"@example.test>`, `"δο κι"@example.test`, "", utf8, pathOK},
		{"<\xff@example.test>", "", "", utf8, pathBadUTF8},
		{"<a@\xce.example>", "", "", utf8, pathBadUTF8},
		{"<\"\xc3\"@example.test>", "", "", utf8, pathBadUTF8},

		// Broken brackets.
		{"", "", "", 0, pathSyntax},
		{"<", "", "", 0, pathSyntax},
		{"<a@example.org", "", "", 0, pathSyntax},
		{"<a@example.org>x", "", "", 0, pathSyntax},
		{"<a@example.org>,<b@example.org>", "", "", 0, pathSyntax},
		{"<<a@example.org>>", "", "", 0, pathSyntax},
		{"<a@example.org>>", "", "", 0, pathSyntax},
		// Broken quoting.
		{`<"a@example.org>`, "", "", 0, pathSyntax},
		{`"a@example.org`, "", "", 0, pathSyntax},
		{`"a\`, "", "", 0, pathSyntax},
		{`<"a"b@example.org>`, "", "", 0, pathSyntax},
		{"<\"a\x01\"@example.org>", "", "", 0, pathSyntax},
		{"<\"a\\\x00\"@example.org>", "", "", 0, pathSyntax},
		{`<"a\`, "", "", 0, pathSyntax},
		// Broken local parts.
		{"<a b@example.org>", "", "", 0, pathSyntax},
		{"<a\x00@example.org>", "", "", 0, pathSyntax},
		{"<a(comment)@example.org>", "", "", 0, pathSyntax},
		{"<a,b@example.org>", "", "", 0, pathSyntax},
		// Broken source routes: no colon, no mailbox after it.
		{"<@example.org>", "", "", 0, pathSyntax},
		{"<@a.example>", "", "", 0, pathSyntax},
		{"<@a.example:>", "", "", 0, pathSyntax},
		{"<@a.example,@b.example:>", "", "", 0, pathSyntax},
		{"@a.example:", "", "", 0, pathSyntax},
		{"<@a b:c@example.org>", "", "", 0, pathSyntax},
		// Broken domains.
		{"<a@>", "", "", 0, pathSyntax},
		{"<@>", "", "", 0, pathSyntax},
		{"<a@@example.org>", "", "", 0, pathSyntax},
		{"<a@b@example.org>", "", "", 0, pathSyntax},
		{"<a@.example.org>", "", "", 0, pathSyntax},
		{"<a@example..org>", "", "", 0, pathSyntax},
		{"<a@.>", "", "", 0, pathSyntax},
		{"<a@example.org..>", "", "", 0, pathSyntax},
		{"<a@exa mple.org>", "", "", 0, pathSyntax},
		{"<a@exa+mple.org>", "", "", 0, pathSyntax},
		{"<a@[]>", "", "", 0, pathSyntax},
		{"<a@[192.0.2.1>", "", "", 0, pathSyntax},
		{"<a@[192.0.2.1]x>", "", "", 0, pathSyntax},
		{"<a@[192 0.2.1]>", "", "", 0, pathSyntax},
		{"<a@[1[2]>", "", "", 0, pathSyntax},
		{"<a@[1\\2]>", "", "", 0, pathSyntax},
		{"<a@[\xc3\xbc]>", "", "", 0, pathSyntax},
		{"<a@" + domain255 + "x>", "", "", 0, pathSyntax},
	}
	for _, tt := range tests {
		dst := []byte("prefix:")
		out, rest, p, err := parsePath([]byte(tt.in), dst)
		if err != tt.err {
			t.Errorf("parsePath(%q): err %d, want %d (out %q)", tt.in, err, tt.err, out)
			continue
		}
		if err != pathOK {
			continue
		}
		if string(out) != "prefix:"+tt.want || string(rest) != tt.rest {
			t.Errorf("parsePath(%q) = %q, rest %q; want %q, rest %q", tt.in, out, rest, "prefix:"+tt.want, tt.rest)
		}
		flags := 0
		if p.null {
			flags |= null
		}
		if p.noDomain {
			flags |= noDomain
		}
		if p.utf8 {
			flags |= utf8
		}
		if flags != tt.flags {
			t.Errorf("parsePath(%q): flags %b, want %b", tt.in, flags, tt.flags)
		}
	}
}

// TestParsePathBadUTF8Truncates checks that a refused UTF-8 path leaves
// nothing appended, so the session arena holds only accepted paths.
func TestParsePathBadUTF8Truncates(t *testing.T) {
	out, _, _, err := parsePath([]byte("<\xffabc@example.test>"), []byte("keep"))
	if err != pathBadUTF8 || string(out) != "keep" {
		t.Fatalf("got %q, %d", out, err)
	}
}

func TestParseDigits(t *testing.T) {
	tests := []struct {
		in   string
		want int64
		ok   bool
	}{
		// Decimal, leading zeros allowed, up to 18 digits.
		{"0", 0, true},
		{"007", 7, true},
		{"1000", 1000, true},
		{"999999999999999999", 999999999999999999, true},
		// Anything else.
		{"", 0, false},
		{"1234567890123456789", 0, false},
		{"-1", 0, false},
		{"+1", 0, false},
		{" 1", 0, false},
		{"1 ", 0, false},
		{"1e3", 0, false},
		{"0x10", 0, false},
		{"١", 0, false},
	}
	for _, tt := range tests {
		n, ok := parseDigits([]byte(tt.in))
		if ok != tt.ok || (ok && n != tt.want) {
			t.Errorf("parseDigits(%q) = %d, %v; want %d, %v", tt.in, n, ok, tt.want, tt.ok)
		}
	}
}

func TestTrimSpace(t *testing.T) {
	tests := []struct{ in, want string }{
		// SP and HTAB on both ends; nothing else.
		{"", ""},
		{"   ", ""},
		{" \t a b \t ", "a b"},
		{"a", "a"},
		{"\ra\r", "\ra\r"},
	}
	for _, tt := range tests {
		if got := string(trimSpace([]byte(tt.in))); got != tt.want {
			t.Errorf("trimSpace(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestNextToken(t *testing.T) {
	tests := []struct{ in, tok, rest string }{
		// Split at the first SP; the rest loses its leading spaces.
		{"", "", ""},
		{"a", "a", ""},
		{"a b", "a", "b"},
		{"a    b c", "a", "b c"},
		{" a", "", "a"},
		{"a\tb", "a\tb", ""},
	}
	for _, tt := range tests {
		tok, rest := nextToken([]byte(tt.in))
		if string(tok) != tt.tok || string(rest) != tt.rest {
			t.Errorf("nextToken(%q) = %q, %q; want %q, %q", tt.in, tok, rest, tt.tok, tt.rest)
		}
	}
}

func TestEqualFold(t *testing.T) {
	tests := []struct {
		b, s string
		eq   bool
		pre  bool // hasPrefixFold
	}{
		// ASCII letters fold; nothing else does.
		{"SIZE", "size", true, true},
		{"SiZe", "size", true, true},
		{"size", "size", true, true},
		{"SIZE=1", "size", false, true},
		{"SIZ", "size", false, false},
		{"", "", true, true},
		{"x", "", false, true},
		{"[", "{", false, false},
		{"@", "`", false, false},
		{"\xc3\x80", "\xc3\xa0", false, false},
	}
	for _, tt := range tests {
		if got := equalFold([]byte(tt.b), tt.s); got != tt.eq {
			t.Errorf("equalFold(%q, %q) = %v", tt.b, tt.s, got)
		}
		if got := hasPrefixFold([]byte(tt.b), tt.s); got != tt.pre {
			t.Errorf("hasPrefixFold(%q, %q) = %v", tt.b, tt.s, got)
		}
	}
}

func TestBadCommandByte(t *testing.T) {
	tests := []struct {
		in  string
		bad bool
	}{
		// Printable text, TAB and 8-bit octets are fine.
		{"MAIL FROM:<a@example.org>", false},
		{"NOOP\tx", false},
		{"MAIL FROM:<δ@example.org> SMTPUTF8", false},
		{"", false},
		// NUL, other C0 controls, CR, DEL are not.
		{"NOOP\x00", true},
		{"\x01", true},
		{"NOOP\rQUIT", true},
		{"NOOP\nQUIT", true},
		{"\x1b[0m", true},
		{"\x7f", true},
	}
	for _, tt := range tests {
		if got := badCommandByte([]byte(tt.in)); got != tt.bad {
			t.Errorf("badCommandByte(%q) = %v, want %v", tt.in, got, tt.bad)
		}
	}
}

func TestCloseAngle(t *testing.T) {
	tests := []struct {
		in   string
		want int
	}{
		// The '>' that closes b[0], outside quoted strings.
		{"<>", 1},
		{"<a@b>", 4},
		{"<a@b> x>", 4},
		{`<"a>b"@c>`, 8},
		{`<"a\">"@c>`, 9},
		{`<"a>`, -1},
		{"<a@b", -1},
		{"<", -1},
	}
	for _, tt := range tests {
		if got := closeAngle([]byte(tt.in)); got != tt.want {
			t.Errorf("closeAngle(%q) = %d, want %d", tt.in, got, tt.want)
		}
	}
}
