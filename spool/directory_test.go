package spool

import (
	"errors"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func testDirectoryConfig() DirectoryConfig {
	return DirectoryConfig{
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

func testDirectory(t testing.TB) *Directory {
	t.Helper()
	d, err := NewDirectory(testDirectoryConfig())
	if err != nil {
		t.Fatal(err)
	}
	return d
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

// idnChecks are for idnDirectoryConfig: domains configured in either form
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

// idnDirectoryConfig configures one domain by its U-labels and one by its
// A-labels, with addresses written in the other form.
func idnDirectoryConfig() DirectoryConfig {
	return DirectoryConfig{
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
	d, err := NewDirectory(idnDirectoryConfig())
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range idnChecks {
		if err := d.Check([]byte(tt.addr)); err != tt.want {
			t.Errorf("Check(%.40q) = %v, want %v", tt.addr, err, tt.want)
		}
	}
	// Mailboxes, and so Maildir directories, use the A-labels.
	boxes, err := d.Resolve([]string{"sales@bücher.example", "x@MÜNCHEN.EXAMPLE", "bob@example.test"})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, b := range boxes {
		got = append(got, b.String())
		if !isASCII([]byte(b.Path("/m"))) {
			t.Errorf("non-ASCII path %q", b.Path("/m"))
		}
	}
	if want := []string{"bob@xn--bcher-kva.example", "anna@xn--mnchen-3ya.example"}; !slices.Equal(got, want) {
		t.Errorf("Resolve = %q, want %q", got, want)
	}
	// The same domain in both forms is one domain.
	cfg := idnDirectoryConfig()
	cfg.CatchAll["xn--mnchen-3ya.example"] = "anna@münchen.example"
	if _, err := NewDirectory(cfg); err == nil || !strings.HasPrefix(err.Error(), "catch_all: ") {
		t.Errorf("catch-all listed in both forms: %v", err)
	}
	cfg = idnDirectoryConfig()
	cfg.Mailboxes = append(cfg.Mailboxes, "bob@xn--bcher-kva.example") // a duplicate, ignored as before
	if _, err := NewDirectory(cfg); err != nil {
		t.Errorf("duplicate mailbox in the other form: %v", err)
	}
}

func TestCheck(t *testing.T) {
	d := testDirectory(t)
	for _, tt := range checkTests {
		if err := d.Check([]byte(tt.addr)); err != tt.want {
			t.Errorf("Check(%.40q) = %v, want %v", tt.addr, err, tt.want)
		}
	}
}

// TestCheckDoesNotAllocate: a lookup with an ASCII domain, the common
// case, allocates nothing. (Mapping a U-label domain with IDNA does.)
func TestCheckDoesNotAllocate(t *testing.T) {
	d := testDirectory(t)
	for _, tt := range append(checkTests, idnChecks...) {
		addr := []byte(tt.addr)
		if _, dom, _ := strings.Cut(tt.addr, "@"); !isASCII([]byte(dom)) {
			continue
		}
		if n := testing.AllocsPerRun(100, func() { d.Check(addr) }); n != 0 {
			t.Errorf("Check(%.40q) allocates %v times", tt.addr, n)
		}
	}
}

func TestSubaddressDisabled(t *testing.T) {
	cfg := testDirectoryConfig()
	cfg.SubaddressSeparator = ""
	d, err := NewDirectory(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Check([]byte("bob+tag@example.test")); err != ErrUnknownUser {
		t.Errorf("bob+tag without subaddressing: %v, want ErrUnknownUser", err)
	}

	cfg.SubaddressSeparator = "-"
	if d, err = NewDirectory(cfg); err != nil {
		t.Fatal(err)
	}
	for addr, want := range map[string]error{"bob-tag@example.test": nil, "bob+tag@example.test": ErrUnknownUser} {
		if err := d.Check([]byte(addr)); err != want {
			t.Errorf("separator '-': Check(%q) = %v, want %v", addr, err, want)
		}
	}
}

func TestResolve(t *testing.T) {
	d := testDirectory(t)
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
		boxes, err := d.Resolve(tt.rcpts)
		if err != nil {
			t.Errorf("Resolve(%q): %v", tt.rcpts, err)
			continue
		}
		var got []string
		for _, b := range boxes {
			got = append(got, b.String())
		}
		if !slices.Equal(got, tt.want) {
			t.Errorf("Resolve(%q) = %q, want %q", tt.rcpts, got, tt.want)
		}
	}
}

func TestResolveErrors(t *testing.T) {
	d := testDirectory(t)
	if _, err := d.Resolve([]string{"bob@example.test", "nobody@example.test"}); !errors.Is(err, ErrUnknownUser) || !strings.Contains(err.Error(), "nobody@example.test") {
		t.Errorf("unknown user: %v", err)
	}
	if _, err := d.Resolve([]string{"bob@elsewhere.test"}); !errors.Is(err, ErrNotLocal) {
		t.Errorf("foreign domain: %v", err)
	}
	if _, err := d.Resolve(nil); err == nil {
		t.Error("no recipients: no error")
	}
}

func TestExplicitPostmaster(t *testing.T) {
	cfg := testDirectoryConfig()
	cfg.Mailboxes = append(cfg.Mailboxes, "postmaster@other.test")
	d, err := NewDirectory(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for addr, want := range map[string]string{
		"postmaster@other.test":   "postmaster@other.test",
		"postmaster@example.test": "admin@example.test",
		"postmaster":              "admin@example.test",
	} {
		boxes, err := d.Resolve([]string{addr})
		if err != nil || len(boxes) != 1 || boxes[0].String() != want {
			t.Errorf("Resolve(%q) = %v, %v; want %s", addr, boxes, err, want)
		}
	}
}

// TestPathSafety feeds hostile wire addresses: whatever they say, they reach
// a configured mailbox (the catch-all of other.test) or nothing.
func TestPathSafety(t *testing.T) {
	d := testDirectory(t)
	root := t.TempDir()
	locals := []string{
		"../../etc", "..", ".", "a/b", "a\x00", "/etc/passwd", "bob/../alice",
		"../bob", "bob/..", `..\..\x`, "bob\x00", "~root", "bob/", "-rf", " bob",
	}
	for _, local := range locals {
		for _, dom := range []string{"example.test", "other.test"} {
			addr := local + "@" + dom
			err := d.Check([]byte(addr))
			boxes, rerr := d.Resolve([]string{addr})
			if dom == "example.test" {
				if err != ErrUnknownUser || !errors.Is(rerr, ErrUnknownUser) {
					t.Errorf("%q: Check %v, Resolve %v; want ErrUnknownUser", addr, err, rerr)
				}
				continue
			}
			if err != nil || rerr != nil || len(boxes) != 1 || boxes[0] != (Mailbox{"other.test", "info"}) {
				t.Errorf("%q: Check %v, Resolve %v %v; want the catch-all", addr, err, boxes, rerr)
				continue
			}
			if p := boxes[0].Path(root); p != filepath.Join(root, "other.test", "info") {
				t.Errorf("%q: path %s", addr, p)
			}
		}
	}
	// Hostile domains are never local.
	for _, dom := range []string{"../example.test", "example.test/..", "example.test/../other.test", "..", "example.test\x00"} {
		if err := d.Check([]byte("bob@" + dom)); err != ErrNotLocal {
			t.Errorf("bob@%q: %v, want ErrNotLocal", dom, err)
		}
	}
}

func TestNewDirectoryErrors(t *testing.T) {
	chain := map[string][]string{}
	for i := range 9 { // a0 -> a1 -> ... -> a9 -> bob: nine hops
		chain["a"+string(rune('0'+i))+"@example.test"] = []string{"a" + string(rune('1'+i)) + "@example.test"}
	}
	chain["a9@example.test"] = []string{"bob@example.test"}

	tests := []struct {
		name   string
		mutate func(*DirectoryConfig)
		key    string
	}{
		{"no domains", func(c *DirectoryConfig) { c.Domains = nil }, "domains"},
		{"space in domain", func(c *DirectoryConfig) { c.Domains = append(c.Domains, "exa mple.test") }, "domains"},
		{"hyphen first", func(c *DirectoryConfig) { c.Domains = append(c.Domains, "-bad.test") }, "domains"},
		{"empty label", func(c *DirectoryConfig) { c.Domains = append(c.Domains, "a..test") }, "domains"},
		{"dot dot", func(c *DirectoryConfig) { c.Domains = append(c.Domains, "..") }, "domains"},
		{"slash", func(c *DirectoryConfig) { c.Domains = append(c.Domains, "a/b") }, "domains"},
		{"long label", func(c *DirectoryConfig) { c.Domains = append(c.Domains, strings.Repeat("a", 64)+".test") }, "domains"},
		{"bad U-label", func(c *DirectoryConfig) { c.Domains = append(c.Domains, "bü_cher.test") }, "domains"},
		{"unmapped U-label", func(c *DirectoryConfig) { c.Domains = append(c.Domains, "ｂüｃｈｅｒ.test") }, "domains"},
		{"joiner", func(c *DirectoryConfig) { c.Domains = append(c.Domains, "b\u00fccher\u200d.test") }, "domains"},
		{"mailbox bad U-label", func(c *DirectoryConfig) { c.Mailboxes = append(c.Mailboxes, "bob@bü_cher.test") }, "mailboxes"},
		{"catch-all twice", func(c *DirectoryConfig) { c.CatchAll["OTHER.test"] = "info@other.test" }, "catch_all"},

		{"mailbox traversal", func(c *DirectoryConfig) { c.Mailboxes = append(c.Mailboxes, "../etc@example.test") }, "mailboxes"},
		{"mailbox dot", func(c *DirectoryConfig) { c.Mailboxes = append(c.Mailboxes, ".@example.test") }, "mailboxes"},
		{"mailbox hidden", func(c *DirectoryConfig) { c.Mailboxes = append(c.Mailboxes, ".bob@example.test") }, "mailboxes"},
		{"mailbox slash", func(c *DirectoryConfig) { c.Mailboxes = append(c.Mailboxes, "a/b@example.test") }, "mailboxes"},
		{"mailbox double dot", func(c *DirectoryConfig) { c.Mailboxes = append(c.Mailboxes, "a..b@example.test") }, "mailboxes"},
		{"mailbox final dot", func(c *DirectoryConfig) { c.Mailboxes = append(c.Mailboxes, "a.@example.test") }, "mailboxes"},
		{"mailbox plus", func(c *DirectoryConfig) { c.Mailboxes = append(c.Mailboxes, "a+b@example.test") }, "mailboxes"},
		{"mailbox too long", func(c *DirectoryConfig) { c.Mailboxes = append(c.Mailboxes, strings.Repeat("a", 65)+"@example.test") }, "mailboxes"},
		{"mailbox no domain", func(c *DirectoryConfig) { c.Mailboxes = append(c.Mailboxes, "bob") }, "mailboxes"},
		{"mailbox two @", func(c *DirectoryConfig) { c.Mailboxes = append(c.Mailboxes, "a@b@example.test") }, "mailboxes"},
		{"mailbox foreign domain", func(c *DirectoryConfig) { c.Mailboxes = append(c.Mailboxes, "bob@elsewhere.test") }, "mailboxes"},

		{"alias syntax", func(c *DirectoryConfig) { c.Aliases["a b@example.test"] = []string{"bob@example.test"} }, "aliases"},
		{"alias foreign domain", func(c *DirectoryConfig) { c.Aliases["x@elsewhere.test"] = []string{"bob@example.test"} }, "aliases"},
		{"alias is a mailbox", func(c *DirectoryConfig) { c.Aliases["Bob@example.test"] = []string{"alice@example.test"} }, "aliases"},
		{"alias twice", func(c *DirectoryConfig) { c.Aliases["SALES@example.test"] = []string{"bob@example.test"} }, "aliases"},
		{"alias no targets", func(c *DirectoryConfig) { c.Aliases["x@example.test"] = nil }, "aliases"},
		{"alias unknown target", func(c *DirectoryConfig) { c.Aliases["x@example.test"] = []string{"nobody@example.test"} }, "aliases"},
		{"alias external target", func(c *DirectoryConfig) { c.Aliases["x@example.test"] = []string{"someone@gmail.example"} }, "aliases"},
		{"alias subaddress target", func(c *DirectoryConfig) { c.Aliases["x@example.test"] = []string{"bob+x@example.test"} }, "aliases"},
		{"alias loop", func(c *DirectoryConfig) {
			c.Aliases["x@example.test"] = []string{"y@example.test"}
			c.Aliases["y@example.test"] = []string{"bob@example.test", "x@example.test"}
		}, "aliases"},
		{"alias self", func(c *DirectoryConfig) { c.Aliases["x@example.test"] = []string{"x@example.test"} }, "aliases"},
		{"alias chain too deep", func(c *DirectoryConfig) { c.Aliases = chain }, "aliases"},

		{"catch-all foreign domain", func(c *DirectoryConfig) { c.CatchAll["elsewhere.test"] = "bob@example.test" }, "catch_all"},
		{"catch-all unknown target", func(c *DirectoryConfig) { c.CatchAll["example.test"] = "nobody@example.test" }, "catch_all"},

		{"no postmaster", func(c *DirectoryConfig) { c.Postmaster = "" }, "postmaster"},
		{"unknown postmaster", func(c *DirectoryConfig) { c.Postmaster = "nobody@example.test" }, "postmaster"},
		{"postmaster loop", func(c *DirectoryConfig) { c.Postmaster = "postmaster@example.test" }, "postmaster"},
		{"bare postmaster", func(c *DirectoryConfig) { c.Postmaster = "postmaster" }, "postmaster"},

		{"separator two bytes", func(c *DirectoryConfig) { c.SubaddressSeparator = "++" }, "subaddress_separator"},
		{"separator letter", func(c *DirectoryConfig) { c.SubaddressSeparator = "x" }, "subaddress_separator"},
		{"separator at", func(c *DirectoryConfig) { c.SubaddressSeparator = "@" }, "subaddress_separator"},
		{"separator dot", func(c *DirectoryConfig) { c.SubaddressSeparator = "." }, "subaddress_separator"},
	}
	for _, tt := range tests {
		cfg := testDirectoryConfig()
		tt.mutate(&cfg)
		d, err := NewDirectory(cfg)
		var ce *ConfigError
		if !errors.As(err, &ce) {
			t.Errorf("%s: NewDirectory = %v, %v; want a *ConfigError", tt.name, d, err)
			continue
		}
		if ce.Key != tt.key || !strings.HasPrefix(err.Error(), tt.key+": ") || ce.Unwrap() == nil {
			t.Errorf("%s: error %q has key %q, want %q", tt.name, err, ce.Key, tt.key)
		}
	}
}

func TestAliasChainAtLimit(t *testing.T) {
	cfg := testDirectoryConfig()
	for i := range 7 { // c0 -> ... -> c7 -> bob: eight hops
		cfg.Aliases["c"+string(rune('0'+i))+"@example.test"] = []string{"c" + string(rune('1'+i)) + "@example.test"}
	}
	cfg.Aliases["c7@example.test"] = []string{"bob@example.test"}
	d, err := NewDirectory(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if boxes, err := d.Resolve([]string{"c0@example.test"}); err != nil || boxes[0].User != "bob" {
		t.Errorf("c0 = %v, %v", boxes, err)
	}
}

func TestMailboxPath(t *testing.T) {
	m := Mailbox{Domain: "example.test", User: "bob"}
	if got := m.Path("/var/mail"); got != "/var/mail/example.test/bob" {
		t.Errorf("Path = %q", got)
	}
	if got := m.String(); got != "bob@example.test" {
		t.Errorf("String = %q", got)
	}
}

// FuzzDirectory checks that Check and Resolve agree and never produce a
// mailbox outside the configured set, whatever the address.
func FuzzDirectory(f *testing.F) {
	for _, tt := range checkTests {
		f.Add(tt.addr)
	}
	d := testDirectory(f)
	f.Fuzz(func(t *testing.T, addr string) {
		err := d.Check([]byte(addr))
		boxes, rerr := d.Resolve([]string{addr})
		if err == nil {
			if rerr != nil || len(boxes) == 0 {
				t.Fatalf("%q: Check ok, Resolve %v, %v", addr, boxes, rerr)
			}
		} else if !errors.Is(rerr, err) {
			t.Fatalf("%q: Check %v, Resolve %v", addr, err, rerr)
		}
		for _, b := range boxes {
			if !slices.Contains(d.boxes, b) {
				t.Fatalf("%q resolved to unconfigured %v", addr, b)
			}
		}
	})
}

func BenchmarkCheck(b *testing.B) {
	d := testDirectory(b)
	addrs := [][]byte{
		[]byte("Bob@Example.Test"),
		[]byte("bob+tag@example.test"),
		[]byte("someone@other.test"),
		[]byte("nobody@example.test"),
	}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		d.Check(addrs[i%len(addrs)])
	}
}
