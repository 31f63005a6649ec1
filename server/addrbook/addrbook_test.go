package addrbook

import (
	"errors"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/nanomx/nanomx/proto"
	"github.com/nanomx/nanomx/spool"
)

func testConfig() Config {
	return Config{
		Domains:    []string{"Example.TEST", "other.test"},
		Postmaster: "admin@example.test",
		Mailboxes: []string{
			"bob@example.test", "alice@example.test", "Admin@Example.Test",
			"carol@other.test", "info@other.test", "first.last-1_x@other.test",
		},
		Aliases: map[string][]string{
			"sales@example.test":  {"bob@example.test", "alice@example.test"},
			"team@example.test":   {"sales@example.test", "BOB@example.test", "carol@other.test"},
			"abuse@other.test":    {"postmaster@other.test"},
			"o'neil@example.test": {"bob@example.test"},
		},
		CatchAll:            map[string]string{"other.test": "info@other.test"},
		SubaddressSeparator: "+",
	}
}

func testBook(t testing.TB) *Book {
	t.Helper()
	d, err := New(testConfig())
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// addrs parses canonical addresses (proto.Envelope's form).
func addrs(t testing.TB, canonical ...string) []proto.Address {
	t.Helper()
	out := make([]proto.Address, len(canonical))
	for i, c := range canonical {
		a, err := proto.ParseAddress(c)
		if err != nil {
			t.Fatal(err)
		}
		out[i] = a
	}
	return out
}

// names returns the mailboxes as user@domain.
func names(boxes []spool.Mailbox) []string {
	var out []string
	for _, b := range boxes {
		out = append(out, b.String())
	}
	return out
}

// check looks addr up both ways: as bytes, and as an Address when it is
// in canonical form, failing the test if the two disagree.
func check(t *testing.T, d *Book, addr string) error {
	t.Helper()
	got, err := d.Lookup([]byte(addr))
	if a, perr := proto.ParseAddress(addr); perr == nil {
		got2, err2 := d.LookupAddress(a)
		if err2 != err || !slices.Equal(names(all(got2)), names(all(got))) {
			t.Errorf("%.40q: Lookup %v %v, LookupAddress %v %v", addr, all(got), err, all(got2), err2)
		}
	}
	return err
}

// all returns the mailboxes of t.
func all(t Targets) []spool.Mailbox {
	var out []spool.Mailbox
	for i := range t.Len() {
		out = append(out, t.At(i))
	}
	return out
}

var checkTests = []struct {
	addr string
	want error
}{
	// Mailboxes, any case.
	{"bob@example.test", nil},
	{"BOB@EXAMPLE.TEST", nil},
	{"first.last-1_x@other.test", nil},
	// Aliases.
	{"sales@example.test", nil},
	{"O'Neil@example.test", nil},
	// Subaddresses: the base is tried only when the whole is unknown.
	{"bob+tag@example.test", nil},
	{"Bob+Tag+More@Example.Test", nil},
	{"sales+q3@example.test", nil},
	{"+tag@example.test", ErrUnknownUser},
	{"nobody+bob@example.test", ErrUnknownUser},
	{"bob-tag@example.test", ErrUnknownUser},
	// Postmaster (RFC 5321 4.5.1): bare, and at every domain.
	{"postmaster", nil},
	{"PostMaster", nil},
	{"postmaster@example.test", nil},
	{"POSTMASTER@other.test", nil},
	{"postmaster@elsewhere.test", ErrNotLocal},
	// Unknown local parts; other.test has a catch-all.
	{"nobody@example.test", ErrUnknownUser},
	{"nobody@other.test", nil},
	{"@example.test", ErrUnknownUser},
	{"@other.test", nil},
	{"bob", ErrUnknownUser},
	{"", ErrUnknownUser},
	{"jürgen@example.test", ErrUnknownUser},
	{"jürgen@other.test", nil},
	{"bob@example.test@example.test", ErrUnknownUser}, // not canonical: would be quoted
	// Quoted local parts (proto's canonical form) reach only a catch-all,
	// even when the quoted string looks like a configured name.
	{`"john doe"@example.test`, ErrUnknownUser},
	{`"john doe"@other.test`, nil},
	{`"bob@example.test"@example.test`, ErrUnknownUser},
	{`"carol+x y"@other.test`, nil},
	{`"bob"@example.test`, ErrUnknownUser},
	// Domains not accepted.
	{"bob@elsewhere.test", ErrNotLocal},
	{"bob@example.test.", ErrNotLocal},
	{"bob@", ErrNotLocal},
	{"bob@[192.0.2.1]", ErrNotLocal},
	{"bob@exämple.test", ErrNotLocal},
	{"bob@sub.example.test", ErrNotLocal},
	// Longer than any configured name.
	{strings.Repeat("a", 300) + "@example.test", ErrUnknownUser},
	{strings.Repeat("a", 300) + "@other.test", nil},
	{"bob+" + strings.Repeat("x", 400) + "@example.test", nil},
	{"bob@" + strings.Repeat("a", 300), ErrNotLocal},
	{strings.Repeat("@", 1000), ErrNotLocal},
}

// idnChecks are for idnConfig: domains configured in either form
// are reached in either form, any case, and a domain that IDNA refuses is
// not local.
var idnChecks = []struct {
	addr string
	want error
}{
	{"bob@bücher.example", nil},
	{"bob@BÜCHER.Example", nil},
	{"bob@xn--bcher-kva.example", nil},
	{"Bob@XN--BCHER-KVA.EXAMPLE", nil},
	{"nobody@bücher.example", ErrUnknownUser},
	{"anna@münchen.example", nil},
	{"anna@xn--mnchen-3ya.example", nil},
	{"anna@MÜNCHEN.example", nil},
	{"whoever@münchen.example", nil}, // catch-all
	{"sales@bücher.example", nil},
	{"postmaster@bücher.example", nil},
	{"bob@bücher.example.", ErrNotLocal},
	{"bob@bucher.example", ErrNotLocal},
	{"bob@xn--bcher-kva.example.test", ErrNotLocal},
	{"bob@b\u00fccher\u200d.example", ErrNotLocal}, // ZWJ: CheckJoiners
	{"bob@bü_cher.example", ErrNotLocal},           // STD3 rules
	{"bob@\u202ebücher.example", ErrNotLocal},
	{"bob@ü" + strings.Repeat("a", 80) + ".example", ErrNotLocal}, // label over 63
	{"bob@example.test", nil},
}

// idnConfig configures one domain by its U-labels and one by its
// A-labels, with addresses written in the other form.
func idnConfig() Config {
	return Config{
		Domains:    []string{"Bücher.example", "xn--mnchen-3ya.example", "example.test"},
		Postmaster: "bob@xn--bcher-kva.example",
		Mailboxes:  []string{"bob@bücher.example", "anna@MÜNCHEN.example", "carol@example.test"},
		Aliases: map[string][]string{
			"sales@xn--bcher-kva.example": {"bob@BÜCHER.example", "anna@xn--mnchen-3ya.example"},
			"bob@example.test":            {"bob@bücher.example"},
		},
		CatchAll: map[string]string{"münchen.example": "anna@münchen.example"},
	}
}

func TestIDN(t *testing.T) {
	d, err := New(idnConfig())
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range idnChecks {
		if err := check(t, d, tt.addr); err != tt.want {
			t.Errorf("Lookup(%.40q) = %v, want %v", tt.addr, err, tt.want)
		}
	}
	// Mailboxes, and so Maildir directories, use the A-labels.
	boxes, err := d.Resolve(addrs(t, "sales@bücher.example", "x@MÜNCHEN.EXAMPLE", "bob@example.test"))
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range boxes {
		if !isASCII(b.Path("/m")) || !b.Valid() {
			t.Errorf("mailbox %q: path %q", b, b.Path("/m"))
		}
	}
	if got, want := names(boxes), []string{"bob@xn--bcher-kva.example", "anna@xn--mnchen-3ya.example"}; !slices.Equal(got, want) {
		t.Errorf("Resolve = %q, want %q", got, want)
	}
	// The same domain in both forms is one domain.
	cfg := idnConfig()
	cfg.CatchAll["xn--mnchen-3ya.example"] = "anna@münchen.example"
	if _, err := New(cfg); err == nil || !strings.HasPrefix(err.Error(), "catch_all: ") {
		t.Errorf("catch-all listed in both forms: %v", err)
	}
	cfg = idnConfig()
	cfg.Mailboxes = append(cfg.Mailboxes, "bob@xn--bcher-kva.example") // a duplicate, ignored as before
	if _, err := New(cfg); err != nil {
		t.Errorf("duplicate mailbox in the other form: %v", err)
	}
}

func TestLookup(t *testing.T) {
	d := testBook(t)
	for _, tt := range checkTests {
		if err := check(t, d, tt.addr); err != tt.want {
			t.Errorf("Lookup(%.40q) = %v, want %v", tt.addr, err, tt.want)
		}
	}
}

// TestLookupDoesNotAllocate: a lookup with an ASCII domain, the common
// case, allocates nothing, by bytes or by Address; nor does adding its
// mailboxes to a Set that has held as many before. (Mapping a U-label
// domain with IDNA allocates.)
func TestLookupDoesNotAllocate(t *testing.T) {
	d := testBook(t)
	var set Set
	for _, tt := range append(checkTests, idnChecks...) {
		addr := []byte(tt.addr)
		if _, dom, _ := strings.Cut(tt.addr, "@"); !isASCII(dom) {
			continue
		}
		if n := testing.AllocsPerRun(100, func() { _, _ = d.Lookup(addr) }); n != 0 {
			t.Errorf("Lookup(%.40q) allocates %v times", tt.addr, n)
		}
		if a, err := proto.ParseAddress(tt.addr); err == nil {
			if n := testing.AllocsPerRun(100, func() { _, _ = d.LookupAddress(a) }); n != 0 {
				t.Errorf("LookupAddress(%.40q) allocates %v times", tt.addr, n)
			}
		}
		targets, err := d.Lookup(addr)
		if err != nil {
			continue
		}
		set.Add(targets) // grow once
		set.Reset()
		if n := testing.AllocsPerRun(100, func() { set.Reset(); set.Add(targets) }); n != 0 {
			t.Errorf("Set.Add(%.40q) allocates %v times", tt.addr, n)
		}
	}
}

func TestSubaddressDisabled(t *testing.T) {
	cfg := testConfig()
	cfg.SubaddressSeparator = ""
	d, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := check(t, d, "bob+tag@example.test"); err != ErrUnknownUser {
		t.Errorf("bob+tag without subaddressing: %v, want ErrUnknownUser", err)
	}

	cfg.SubaddressSeparator = "-"
	if d, err = New(cfg); err != nil {
		t.Fatal(err)
	}
	for addr, want := range map[string]error{"bob-tag@example.test": nil, "bob+tag@example.test": ErrUnknownUser} {
		if err := check(t, d, addr); err != want {
			t.Errorf("separator '-': Check(%q) = %v, want %v", addr, err, want)
		}
	}
}

func TestResolve(t *testing.T) {
	d := testBook(t)
	tests := []struct {
		rcpts []string
		want  []string
	}{
		{[]string{"bob@example.test"}, []string{"bob@example.test"}},
		// Alias of an alias, de-duplicated in first-seen order.
		{[]string{"team@example.test"}, []string{"bob@example.test", "alice@example.test", "carol@other.test"}},
		{[]string{"Bob@example.test", "bob+x@example.test", "sales@example.test"}, []string{"bob@example.test", "alice@example.test"}},
		{[]string{"alice@example.test", "bob@example.test"}, []string{"alice@example.test", "bob@example.test"}},
		// Postmaster, directly and through an alias of postmaster@.
		{[]string{"postmaster"}, []string{"admin@example.test"}},
		{[]string{"abuse@other.test"}, []string{"admin@example.test"}},
		// Catch-all.
		{[]string{"whoever@other.test", "else@other.test"}, []string{"info@other.test"}},
	}
	for _, tt := range tests {
		boxes, err := d.Resolve(addrs(t, tt.rcpts...))
		if err != nil {
			t.Errorf("Resolve(%q): %v", tt.rcpts, err)
			continue
		}
		if got := names(boxes); !slices.Equal(got, tt.want) {
			t.Errorf("Resolve(%q) = %q, want %q", tt.rcpts, got, tt.want)
		}
	}
}

func TestResolveErrors(t *testing.T) {
	d := testBook(t)
	if _, err := d.Resolve(addrs(t, "bob@example.test", "nobody@example.test")); !errors.Is(err, ErrUnknownUser) || !strings.Contains(err.Error(), "nobody@example.test") {
		t.Errorf("unknown user: %v", err)
	}
	if _, err := d.Resolve(addrs(t, "bob@elsewhere.test")); !errors.Is(err, ErrNotLocal) {
		t.Errorf("foreign domain: %v", err)
	}
	if _, err := d.Resolve(nil); err == nil {
		t.Error("no recipients: no error")
	}
}

func TestExplicitPostmaster(t *testing.T) {
	cfg := testConfig()
	cfg.Mailboxes = append(cfg.Mailboxes, "postmaster@other.test")
	d, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for addr, want := range map[string]string{
		"postmaster@other.test":   "postmaster@other.test",
		"postmaster@example.test": "admin@example.test",
		"postmaster":              "admin@example.test",
	} {
		boxes, err := d.Resolve(addrs(t, addr))
		if err != nil || len(boxes) != 1 || boxes[0].String() != want {
			t.Errorf("Resolve(%q) = %v, %v; want %s", addr, boxes, err, want)
		}
	}
}

// TestPathSafety feeds hostile wire addresses, as bytes and as Addresses
// (whose local part is then quoted): whatever they say, they reach a
// configured mailbox (the catch-all of other.test) or nothing.
func TestPathSafety(t *testing.T) {
	d := testBook(t)
	root := t.TempDir()
	locals := []string{
		"../../etc", "..", ".", "a/b", "a\x00", "/etc/passwd", "bob/../alice",
		"../bob", "bob/..", `..\..\x`, "bob\x00", "~root", "bob/", "-rf", " bob",
	}
	for _, local := range locals {
		for _, dom := range []string{"example.test", "other.test"} {
			addr := local + "@" + dom
			_, err := d.Lookup([]byte(addr))
			targets, aerr := d.LookupAddress(proto.Address{Local: local, Domain: dom})
			boxes, rerr := d.Resolve([]proto.Address{{Local: local, Domain: dom}})
			if dom == "example.test" {
				if err != ErrUnknownUser || aerr != ErrUnknownUser || !errors.Is(rerr, ErrUnknownUser) {
					t.Errorf("%q: Lookup %v, LookupAddress %v, Resolve %v; want ErrUnknownUser", addr, err, aerr, rerr)
				}
				continue
			}
			info := spool.Mailbox{Domain: "other.test", User: "info"}
			if err != nil || aerr != nil || rerr != nil || targets.Len() != 1 || targets.At(0) != info || len(boxes) != 1 || boxes[0] != info {
				t.Errorf("%q: Lookup %v, LookupAddress %v %v, Resolve %v %v; want the catch-all", addr, err, all(targets), aerr, boxes, rerr)
				continue
			}
			if p := boxes[0].Path(root); p != filepath.Join(root, "other.test", "info") {
				t.Errorf("%q: path %s", addr, p)
			}
		}
	}
	// Hostile domains are never local.
	for _, dom := range []string{"../example.test", "example.test/..", "example.test/../other.test", "..", "example.test\x00"} {
		if _, err := d.Lookup([]byte("bob@" + dom)); err != ErrNotLocal {
			t.Errorf("bob@%q: %v, want ErrNotLocal", dom, err)
		}
		if _, err := d.LookupAddress(proto.Address{Local: "bob", Domain: dom}); err != ErrNotLocal {
			t.Errorf("Address bob@%q: %v, want ErrNotLocal", dom, err)
		}
	}
}

func TestNewErrors(t *testing.T) {
	chain := map[string][]string{}
	for i := range 9 { // a0 -> a1 -> ... -> a9 -> bob: nine hops
		chain["a"+string(rune('0'+i))+"@example.test"] = []string{"a" + string(rune('1'+i)) + "@example.test"}
	}
	chain["a9@example.test"] = []string{"bob@example.test"}

	tests := []struct {
		name   string
		mutate func(*Config)
		key    string
	}{
		{"no domains", func(c *Config) { c.Domains = nil }, "domains"},
		{"space in domain", func(c *Config) { c.Domains = append(c.Domains, "exa mple.test") }, "domains"},
		{"hyphen first", func(c *Config) { c.Domains = append(c.Domains, "-bad.test") }, "domains"},
		{"empty label", func(c *Config) { c.Domains = append(c.Domains, "a..test") }, "domains"},
		{"dot dot", func(c *Config) { c.Domains = append(c.Domains, "..") }, "domains"},
		{"slash", func(c *Config) { c.Domains = append(c.Domains, "a/b") }, "domains"},
		{"long label", func(c *Config) { c.Domains = append(c.Domains, strings.Repeat("a", 64)+".test") }, "domains"},
		{"bad U-label", func(c *Config) { c.Domains = append(c.Domains, "bü_cher.test") }, "domains"},
		{"unmapped U-label", func(c *Config) { c.Domains = append(c.Domains, "ｂüｃｈｅｒ.test") }, "domains"},
		{"joiner", func(c *Config) { c.Domains = append(c.Domains, "b\u00fccher\u200d.test") }, "domains"},
		{"mailbox bad U-label", func(c *Config) { c.Mailboxes = append(c.Mailboxes, "bob@bü_cher.test") }, "mailboxes"},
		{"catch-all twice", func(c *Config) { c.CatchAll["OTHER.test"] = "info@other.test" }, "catch_all"},

		{"mailbox traversal", func(c *Config) { c.Mailboxes = append(c.Mailboxes, "../etc@example.test") }, "mailboxes"},
		{"mailbox dot", func(c *Config) { c.Mailboxes = append(c.Mailboxes, ".@example.test") }, "mailboxes"},
		{"mailbox hidden", func(c *Config) { c.Mailboxes = append(c.Mailboxes, ".bob@example.test") }, "mailboxes"},
		{"mailbox slash", func(c *Config) { c.Mailboxes = append(c.Mailboxes, "a/b@example.test") }, "mailboxes"},
		{"mailbox double dot", func(c *Config) { c.Mailboxes = append(c.Mailboxes, "a..b@example.test") }, "mailboxes"},
		{"mailbox final dot", func(c *Config) { c.Mailboxes = append(c.Mailboxes, "a.@example.test") }, "mailboxes"},
		{"mailbox plus", func(c *Config) { c.Mailboxes = append(c.Mailboxes, "a+b@example.test") }, "mailboxes"},
		{"mailbox too long", func(c *Config) { c.Mailboxes = append(c.Mailboxes, strings.Repeat("a", 65)+"@example.test") }, "mailboxes"},
		{"mailbox no domain", func(c *Config) { c.Mailboxes = append(c.Mailboxes, "bob") }, "mailboxes"},
		{"mailbox two @", func(c *Config) { c.Mailboxes = append(c.Mailboxes, "a@b@example.test") }, "mailboxes"},
		{"mailbox foreign domain", func(c *Config) { c.Mailboxes = append(c.Mailboxes, "bob@elsewhere.test") }, "mailboxes"},

		{"alias syntax", func(c *Config) { c.Aliases["a b@example.test"] = []string{"bob@example.test"} }, "aliases"},
		{"alias foreign domain", func(c *Config) { c.Aliases["x@elsewhere.test"] = []string{"bob@example.test"} }, "aliases"},
		{"alias is a mailbox", func(c *Config) { c.Aliases["Bob@example.test"] = []string{"alice@example.test"} }, "aliases"},
		{"alias twice", func(c *Config) { c.Aliases["SALES@example.test"] = []string{"bob@example.test"} }, "aliases"},
		{"alias no targets", func(c *Config) { c.Aliases["x@example.test"] = nil }, "aliases"},
		{"alias unknown target", func(c *Config) { c.Aliases["x@example.test"] = []string{"nobody@example.test"} }, "aliases"},
		{"alias external target", func(c *Config) { c.Aliases["x@example.test"] = []string{"someone@gmail.example"} }, "aliases"},
		{"alias subaddress target", func(c *Config) { c.Aliases["x@example.test"] = []string{"bob+x@example.test"} }, "aliases"},
		{"alias loop", func(c *Config) {
			c.Aliases["x@example.test"] = []string{"y@example.test"}
			c.Aliases["y@example.test"] = []string{"bob@example.test", "x@example.test"}
		}, "aliases"},
		{"alias self", func(c *Config) { c.Aliases["x@example.test"] = []string{"x@example.test"} }, "aliases"},
		{"alias chain too deep", func(c *Config) { c.Aliases = chain }, "aliases"},

		{"catch-all foreign domain", func(c *Config) { c.CatchAll["elsewhere.test"] = "bob@example.test" }, "catch_all"},
		{"catch-all unknown target", func(c *Config) { c.CatchAll["example.test"] = "nobody@example.test" }, "catch_all"},

		{"no postmaster", func(c *Config) { c.Postmaster = "" }, "postmaster"},
		{"unknown postmaster", func(c *Config) { c.Postmaster = "nobody@example.test" }, "postmaster"},
		{"postmaster loop", func(c *Config) { c.Postmaster = "postmaster@example.test" }, "postmaster"},
		{"bare postmaster", func(c *Config) { c.Postmaster = "postmaster" }, "postmaster"},

		{"separator two bytes", func(c *Config) { c.SubaddressSeparator = "++" }, "subaddress_separator"},
		{"separator letter", func(c *Config) { c.SubaddressSeparator = "x" }, "subaddress_separator"},
		{"separator at", func(c *Config) { c.SubaddressSeparator = "@" }, "subaddress_separator"},
		{"separator dot", func(c *Config) { c.SubaddressSeparator = "." }, "subaddress_separator"},
	}
	for _, tt := range tests {
		cfg := testConfig()
		tt.mutate(&cfg)
		d, err := New(cfg)
		var ce *ConfigError
		if !errors.As(err, &ce) {
			t.Errorf("%s: New = %v, %v; want a *ConfigError", tt.name, d, err)
			continue
		}
		if ce.Key != tt.key || !strings.HasPrefix(err.Error(), tt.key+": ") || ce.Unwrap() == nil {
			t.Errorf("%s: error %q has key %q, want %q", tt.name, err, ce.Key, tt.key)
		}
	}
}

func TestAliasChainAtLimit(t *testing.T) {
	cfg := testConfig()
	for i := range 7 { // c0 -> ... -> c7 -> bob: eight hops
		cfg.Aliases["c"+string(rune('0'+i))+"@example.test"] = []string{"c" + string(rune('1'+i)) + "@example.test"}
	}
	cfg.Aliases["c7@example.test"] = []string{"bob@example.test"}
	d, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if boxes, err := d.Resolve(addrs(t, "c0@example.test")); err != nil || boxes[0].User != "bob" {
		t.Errorf("c0 = %v, %v", boxes, err)
	}
}

// TestSet: mailboxes once each, in the order first added, with the scan
// and past it with the map; targets of two Books mix; Reset empties it;
// Mailboxes is the caller's to keep.
func TestSet(t *testing.T) {
	d := testBook(t)
	lookup := func(d *Book, addr string) Targets {
		t.Helper()
		tg, err := d.Lookup([]byte(addr))
		if err != nil {
			t.Fatalf("%s: %v", addr, err)
		}
		return tg
	}
	var s Set
	for _, a := range []string{"team@example.test", "bob+x@example.test", "postmaster", "whoever@other.test", "sales@example.test"} {
		s.Add(lookup(d, a))
	}
	want := []string{"bob@example.test", "alice@example.test", "carol@other.test", "admin@example.test", "info@other.test"}
	got := s.Mailboxes()
	if !slices.Equal(names(got), want) || s.Len() != len(want) {
		t.Fatalf("Set = %q, want %q", names(got), want)
	}
	got[0] = spool.Mailbox{}
	if again := s.Mailboxes(); again[0].User != "bob" {
		t.Error("Mailboxes shares the set's storage")
	}

	// A reload between two RCPTs: the same mailbox from the new Book is
	// the same mailbox.
	cfg := testConfig()
	cfg.Mailboxes = append(cfg.Mailboxes, "dave@example.test")
	d2, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	s.Add(lookup(d2, "bob@example.test"))
	s.Add(lookup(d2, "dave@example.test"))
	if got := names(s.Mailboxes()); !slices.Equal(got, append(want, "dave@example.test")) {
		t.Errorf("after a reload: %q", got)
	}

	s.Reset()
	if s.Len() != 0 || len(s.Mailboxes()) != 0 {
		t.Fatal("Reset left mailboxes")
	}

	// More mailboxes than the scan covers.
	cfg = testConfig()
	var many []string
	for i := range 3 * scanLimit {
		many = append(many, "u"+string(rune('a'+i/26))+string(rune('a'+i%26))+"@example.test")
	}
	cfg.Mailboxes = append(cfg.Mailboxes, many...)
	cfg.Aliases["many@example.test"] = many
	d3, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	s.Add(lookup(d3, "bob@example.test"))
	s.Add(lookup(d3, "many@example.test"))
	s.Add(lookup(d3, many[2*scanLimit]))
	s.Add(lookup(d3, "bob@example.test"))
	s.Add(lookup(d3, "many@example.test"))
	if got := names(s.Mailboxes()); !slices.Equal(got, append([]string{"bob@example.test"}, many...)) {
		t.Errorf("large set: %q", got)
	}
}

// TestMailboxes: every configured mailbox, for the spool to prepare, in
// configuration order, each valid as a spool path.
func TestMailboxes(t *testing.T) {
	d := testBook(t)
	want := []string{"bob@example.test", "alice@example.test", "admin@example.test", "carol@other.test", "info@other.test", "first.last-1_x@other.test"}
	boxes := d.Mailboxes()
	if !slices.Equal(names(boxes), want) {
		t.Errorf("Mailboxes = %q, want %q", names(boxes), want)
	}
	for _, b := range boxes {
		if !b.Valid() {
			t.Errorf("%q is not a valid spool mailbox", b)
		}
	}
}

// FuzzLookup checks that the two lookups agree for every address in
// canonical form, and that no address, in that form or not, reaches a
// mailbox outside the configured set.
func FuzzLookup(f *testing.F) {
	for _, tt := range checkTests {
		f.Add(tt.addr)
	}
	d := testBook(f)
	f.Fuzz(func(t *testing.T, addr string) {
		targets, err := d.Lookup([]byte(addr))
		if err == nil && targets.Len() == 0 {
			t.Fatalf("%q: no error, no mailbox", addr)
		}
		for _, b := range all(targets) {
			if !slices.Contains(d.boxes, b) {
				t.Fatalf("%q reached unconfigured %v", addr, b)
			}
		}
		a, perr := proto.ParseAddress(addr)
		if perr != nil {
			return
		}
		t2, err2 := d.LookupAddress(a)
		if err2 != err || !slices.Equal(t2.ids, targets.ids) {
			t.Fatalf("%q: Lookup %v %v, LookupAddress %v %v", addr, targets.ids, err, t2.ids, err2)
		}
		boxes, rerr := d.Resolve([]proto.Address{a})
		if !errors.Is(rerr, err) || len(boxes) != targets.Len() {
			t.Fatalf("%q: Lookup %v, Resolve %v %v", addr, err, boxes, rerr)
		}
	})
}

func BenchmarkLookup(b *testing.B) {
	d := testBook(b)
	addrs := [][]byte{
		[]byte("Bob@Example.Test"),
		[]byte("bob+tag@example.test"),
		[]byte("someone@other.test"),
		[]byte("nobody@example.test"),
	}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		_, _ = d.Lookup(addrs[i%len(addrs)])
	}
}
