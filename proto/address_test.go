package proto

import (
	"errors"
	"strings"
	"testing"
)

func TestParseAddress(t *testing.T) {
	tests := []struct {
		in     string
		want   Address
		quoted bool
		utf8   bool
	}{
		// The null reverse-path.
		{"", Address{}, false, false},
		// Dot-strings, case kept.
		{"bob@example.test", Address{"bob", "example.test"}, false, false},
		{"A.B+c@Example.ORG", Address{"A.B+c", "Example.ORG"}, false, false},
		{"a%b!c@[192.0.2.1]", Address{"a%b!c", "[192.0.2.1]"}, false, false},
		{"bob@[IPv6:2001:db8::1]", Address{"bob", "[IPv6:2001:db8::1]"}, false, false},
		{"o'neil@x_y.test", Address{"o'neil", "x_y.test"}, false, false},
		// UTF-8 (RFC 6531).
		{"jürgen@bücher.test", Address{"jürgen", "bücher.test"}, false, true},
		{"bob@παράδειγμα.δοκιμή", Address{"bob", "παράδειγμα.δοκιμή"}, false, true},
		// Quoted-strings: the content decoded.
		{`"john doe"@example.test`, Address{"john doe", "example.test"}, true, false},
		{`""@x.test`, Address{"", "x.test"}, true, false},
		{`"a..b"@x`, Address{"a..b", "x"}, true, false},
		{`".a"@x`, Address{".a", "x"}, true, false},
		{`"a@b"@x`, Address{"a@b", "x"}, true, false},
		{`"\""@x`, Address{`"`, "x"}, true, false},
		{`"\\"@x`, Address{`\`, "x"}, true, false},
		{`"a\\\"b"@x`, Address{`a\"b`, "x"}, true, false},
		{`"δο κι"@x`, Address{"δο κι", "x"}, true, true},
		// Postmaster alone (RFC 5321 4.1.1.3), any case.
		{"postmaster", Address{"postmaster", ""}, false, false},
		{"PostMaster", Address{"PostMaster", ""}, false, false},
	}
	for _, tt := range tests {
		a, err := ParseAddress(tt.in)
		if err != nil || a != tt.want {
			t.Errorf("ParseAddress(%q) = %#v, %v; want %#v", tt.in, a, err, tt.want)
			continue
		}
		if a.Quoted() != tt.quoted || a.UTF8() != tt.utf8 || a.IsNull() != (tt.in == "") {
			t.Errorf("%q: Quoted %v UTF8 %v IsNull %v", tt.in, a.Quoted(), a.UTF8(), a.IsNull())
		}
		if s := a.String(); s != tt.in {
			t.Errorf("%#v.String() = %q, want %q", a, s, tt.in)
		}
		if b := a.AppendTo([]byte("x:")); string(b) != "x:"+tt.in {
			t.Errorf("%#v.AppendTo = %q", a, b)
		}
	}
}

// TestParseAddressRefuses: only the canonical form is read, not the wire
// forms the parser brings to it, and nothing a parser would refuse.
func TestParseAddressRefuses(t *testing.T) {
	for _, in := range []string{
		// Not canonical: the parser would have rewritten these.
		`"bob"@x`, `"a\b"@x`, `"john\ doe"@x`, "a..b@x", ".a@x", "a.@x",
		"<bob@x>", "bob@x.", "john doe@x",
		// Not addresses.
		"@x", "bob@", "bob@@x", "bob@x@y", `"unterminated@x`, `"a"b@x`, `"a"`,
		"bob", `""`, "a@b c", "a@-x..y", "a@[]", "a@[1.2.3.4", "a@[a]b]", "a@x>",
		"a\x00@x", "\"a\tb\"@x", "a@\xff", "\xce@x", `"\`,
		"a@" + strings.Repeat("d", 256),
	} {
		if a, err := ParseAddress(in); !errors.Is(err, ErrBadAddress) {
			t.Errorf("ParseAddress(%q) = %#v, %v; want ErrBadAddress", in, a, err)
		}
	}
}

// TestAddressString: hand-built Addresses get the canonical form, quoted
// when (and only when) the local part is no Dot-string.
func TestAddressString(t *testing.T) {
	for _, tt := range []struct {
		a    Address
		want string
	}{
		{Address{}, ""},
		{Address{Local: "bob", Domain: "x"}, "bob@x"},
		{Address{Local: "john doe", Domain: "x"}, `"john doe"@x`},
		{Address{Local: `a"b\c`, Domain: "x"}, `"a\"b\\c"@x`},
		{Address{Local: "", Domain: "x"}, `""@x`},
		{Address{Local: "a..b", Domain: "x"}, `"a..b"@x`},
		{Address{Local: "Postmaster"}, "Postmaster"},
	} {
		if got := tt.a.String(); got != tt.want {
			t.Errorf("%#v.String() = %q, want %q", tt.a, got, tt.want)
		}
	}
}

// TestParseAddressAllocs: an address without escapes is taken apart
// without allocating; its fields are substrings of the input.
func TestParseAddressAllocs(t *testing.T) {
	for _, s := range []string{"bob@example.test", `"john doe"@example.test`, "postmaster"} {
		if n := testing.AllocsPerRun(100, func() { _, _ = ParseAddress(s) }); n != 0 {
			t.Errorf("ParseAddress(%q) allocates %v times", s, n)
		}
	}
}

// TestEnvelopeAddresses: the envelope's canonical bytes come back as
// Addresses.
func TestEnvelopeAddresses(t *testing.T) {
	env := Envelope{From: []byte(`"john doe"@x.test`), Rcpts: [][]byte{[]byte("bob@y.test"), []byte("postmaster")}}
	from, err := env.FromAddress()
	if err != nil || from != (Address{"john doe", "x.test"}) {
		t.Errorf("FromAddress = %#v, %v", from, err)
	}
	rcpts, err := env.RcptAddresses(nil)
	if err != nil || len(rcpts) != 2 || rcpts[0] != (Address{"bob", "y.test"}) || rcpts[1] != (Address{Local: "postmaster"}) {
		t.Errorf("RcptAddresses = %#v, %v", rcpts, err)
	}
	if null, err := (Envelope{}).FromAddress(); err != nil || !null.IsNull() {
		t.Errorf("null sender: %#v, %v", null, err)
	}
	if _, err := (Envelope{Rcpts: [][]byte{[]byte("a b@x")}}).RcptAddresses(nil); !errors.Is(err, ErrBadAddress) {
		t.Errorf("bad recipient: %v", err)
	}
}

// FuzzAddress ties Address to the parser both ways. Every address
// parsePath accepts (as the session accepts it: with a domain, or
// Postmaster alone) parses, and String gives the parser's bytes back; and
// every string ParseAddress accepts is a fixed point of the parser, so
// ParseAddress reads nothing proto would not have produced.
func FuzzAddress(f *testing.F) {
	for _, s := range []string{
		"<a@example.org>", "<Postmaster>", `<"john doe"@example.test>`, `<"bob"@x>`,
		"<δοκιμή@παράδειγμα.δοκιμή>", "<a@[IPv6:2001:db8::1]>", `<"a\"b\\c"@x>`, `<""@x>`,
		"<a..b@x>", `<"a\ b"@x>`, "bob@x", `"\""@x`, "postmaster", "<bob>",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		out, _, p, perr := parsePath([]byte(in), nil)
		if perr == pathOK && !p.null && (!p.noDomain || equalFold(out, "postmaster")) {
			a, err := ParseAddress(string(out))
			if err != nil {
				t.Fatalf("parser gave %q (from %q), ParseAddress: %v", out, in, err)
			}
			if a.String() != string(out) || a.Quoted() != (out[0] == '"') || a.UTF8() != p.utf8 {
				t.Fatalf("%q: %#v, String %q, Quoted %v, UTF8 %v (parser utf8 %v)", out, a, a.String(), a.Quoted(), a.UTF8(), p.utf8)
			}
			if b, err := ParseAddress(a.String()); err != nil || b != a {
				t.Fatalf("%#v does not round-trip: %#v, %v", a, b, err)
			}
		}
		a, err := ParseAddress(in)
		if err != nil {
			return
		}
		if a.String() != in {
			t.Fatalf("ParseAddress(%q) = %#v, String %q", in, a, a.String())
		}
		if in == "" {
			return
		}
		again, rest, p2, perr2 := parsePath([]byte("<"+in+">"), nil)
		if perr2 != pathOK || string(again) != in || len(rest) != 0 || p2.null {
			t.Fatalf("ParseAddress accepted %q, which the parser makes %q (%v)", in, again, perr2)
		}
	})
}
