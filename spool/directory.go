package spool

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"path/filepath"
	"slices"
	"strings"

	"golang.org/x/net/idna"
)

// Address limits from RFC 5321 4.5.3.1.1 and 4.5.3.1.2. Configured names
// obey them; wire addresses longer than a limit can only reach a catch-all.
const (
	maxLocalBytes  = 64
	maxDomainBytes = 255

	// keyBytes is the stack buffer Check lowercases an address into.
	keyBytes = maxLocalBytes + 1 + maxDomainBytes

	// maxAliasDepth bounds alias chains: a -> b -> ... -> mailbox.
	maxAliasDepth = 8
)

// Mailbox is one Maildir, at <root>/<Domain>/<User>/. Both fields come only
// from configuration, validated and lowercase, so they are safe as path
// elements; nothing received from the network ever becomes a path.
type Mailbox struct {
	Domain, User string
}

// Path returns the Maildir directory <root>/<domain>/<user>.
func (m Mailbox) Path(root string) string {
	return filepath.Join(root, m.Domain, m.User)
}

// String returns the mailbox's address, user@domain.
func (m Mailbox) String() string { return m.User + "@" + m.Domain }

// DirectoryConfig is the address book as configured. Addresses are
// "local@domain"; case does not matter. A domain, here or in an address,
// may be written with A-labels (xn--bcher-kva.example) or U-labels
// (bücher.example): it is stored as its A-labels (IDNA, UTS #46
// registration profile), so Maildir directories are ASCII, and wire
// domains in either form reach it.
type DirectoryConfig struct {
	// Domains are the domains this MX accepts mail for.
	Domains []string
	// Postmaster is the mailbox or alias address that postmaster@<each
	// domain> and the bare "postmaster" reach (RFC 5321 4.5.1). Required.
	// An explicit mailbox or alias postmaster@<domain> takes precedence.
	Postmaster string
	// Mailboxes are full addresses; bob@example.test is stored under
	// <root>/example.test/bob/.
	Mailboxes []string
	// Aliases map an address to one or more mailbox or alias addresses in
	// accepted domains. Chains are allowed up to 8 hops; loops are errors.
	Aliases map[string][]string
	// CatchAll maps a domain to the mailbox or alias address receiving mail
	// for that domain's unknown local parts.
	CatchAll map[string]string
	// SubaddressSeparator is one character such as "+": bob+tag@d reaches
	// bob@d when bob+tag@d itself is not known. "" disables subaddressing
	// (the server's default configuration sets "+").
	SubaddressSeparator string
}

// Directory is an immutable, validated address book. It is safe for
// concurrent use; replace it as a whole (Spool.SetDirectory) to reload.
type Directory struct {
	boxes []Mailbox // every configured mailbox; targets index into it

	// addrs maps a lowercase "local@domain" (mailboxes, aliases and the
	// implicit postmaster@<domain>) to its fully expanded, de-duplicated
	// mailbox indexes, in configuration order.
	addrs      map[string][]int32
	domains    map[string]domainEntry
	postmaster []int32 // the bare "postmaster"
	sep        byte    // subaddress separator, 0 when disabled
}

type domainEntry struct {
	catchAll []int32 // nil when the domain has no catch-all
}

// NewDirectory validates cfg and builds a Directory. Every error is a
// *ConfigError naming the offending key.
func NewDirectory(cfg DirectoryConfig) (*Directory, error) {
	d := &Directory{
		addrs:   make(map[string][]int32),
		domains: make(map[string]domainEntry),
	}

	if len(cfg.Domains) == 0 {
		return nil, configErr("domains", "at least one domain is required")
	}
	for _, raw := range cfg.Domains {
		dom, err := normalizeDomain(raw)
		if err != nil {
			return nil, configErr("domains", "%q is not a valid internationalized domain name: %v", raw, err)
		}
		if !validDomain(dom) {
			return nil, configErr("domains", "%q is not a valid domain name", raw)
		}
		d.domains[dom] = domainEntry{}
	}

	switch sep := cfg.SubaddressSeparator; {
	case sep == "":
	case len(sep) == 1 && strings.IndexByte(atextSpecials, sep[0]) >= 0:
		d.sep = sep[0]
	default:
		return nil, configErr("subaddress_separator",
			"%q must be empty or one of the characters %s", sep, atextSpecials)
	}

	for _, raw := range cfg.Mailboxes {
		local, dom, ok := splitConfigAddr(raw)
		if !ok || !validMailboxName(local) {
			return nil, configErr("mailboxes",
				"%q: local part must be 1-64 of [a-z0-9._-], start with a letter or digit, without \"..\" or a final dot", raw)
		}
		if _, ok := d.domains[dom]; !ok {
			return nil, configErr("mailboxes", "%q: domain %q is not in domains", raw, dom)
		}
		key := local + "@" + dom
		if _, dup := d.addrs[key]; dup {
			continue
		}
		d.addrs[key] = []int32{int32(len(d.boxes))}
		d.boxes = append(d.boxes, Mailbox{Domain: dom, User: local})
	}

	// Aliases are expanded once here, so lookups never recurse. Sorting the
	// keys makes error messages deterministic.
	b := &builder{d: d, aliases: make(map[string][]string), done: make(map[string]expanded)}
	for _, raw := range slices.Sorted(maps.Keys(cfg.Aliases)) {
		local, dom, ok := splitConfigAddr(raw)
		if !ok || !validAliasName(local) {
			return nil, configErr("aliases", "%q is not a valid address (dot-atom local part, at most 64 bytes)", raw)
		}
		if _, ok := d.domains[dom]; !ok {
			return nil, configErr("aliases", "%q: domain %q is not in domains", raw, dom)
		}
		key := local + "@" + dom
		if _, ok := d.addrs[key]; ok {
			return nil, configErr("aliases", "%q is also a mailbox", raw)
		}
		if _, ok := b.aliases[key]; ok {
			return nil, configErr("aliases", "%q is listed twice (addresses ignore case)", raw)
		}
		targets := cfg.Aliases[raw]
		if len(targets) == 0 {
			return nil, configErr("aliases", "%q has no targets", raw)
		}
		norm := make([]string, len(targets))
		for i, t := range targets {
			norm[i] = normalizeAddr(t)
		}
		b.aliases[key] = norm
	}

	// RFC 5321 4.5.1: postmaster@<every domain> must work. Unless configured
	// explicitly, it is an alias of Postmaster.
	pm := normalizeAddr(cfg.Postmaster)
	if pm == "" {
		return nil, configErr("postmaster", "is required (RFC 5321 4.5.1)")
	}
	for dom := range d.domains {
		key := "postmaster@" + dom
		if _, ok := d.addrs[key]; ok {
			continue
		}
		if _, ok := b.aliases[key]; !ok {
			b.aliases[key] = []string{pm}
		}
	}
	var err error
	if d.postmaster, _, err = b.expand(pm, 0); err != nil {
		return nil, &ConfigError{Key: "postmaster", Err: err}
	}
	for _, key := range slices.Sorted(maps.Keys(b.aliases)) {
		boxes, _, err := b.expand(key, 0)
		if err != nil {
			return nil, &ConfigError{Key: "aliases", Err: err}
		}
		d.addrs[key] = boxes
	}

	catchAlls := make(map[string]struct{}, len(cfg.CatchAll))
	for _, raw := range slices.Sorted(maps.Keys(cfg.CatchAll)) {
		dom, _ := normalizeDomain(raw) // "" when invalid: not in domains
		if _, ok := d.domains[dom]; !ok {
			return nil, configErr("catch_all", "domain %q is not in domains", raw)
		}
		if _, dup := catchAlls[dom]; dup {
			return nil, configErr("catch_all", "domain %q is listed twice (in another form or case)", raw)
		}
		catchAlls[dom] = struct{}{}
		boxes, _, err := b.expand(normalizeAddr(cfg.CatchAll[raw]), 0)
		if err != nil {
			return nil, &ConfigError{Key: "catch_all", Err: err}
		}
		d.domains[dom] = domainEntry{catchAll: boxes}
	}
	return d, nil
}

// builder expands aliases recursively with memoization, detecting loops and
// chains longer than maxAliasDepth.
type builder struct {
	d       *Directory
	aliases map[string][]string // alias key -> normalized targets
	done    map[string]expanded // aliases expanded so far
	path    []string            // aliases being expanded, outermost first
}

type expanded struct {
	boxes  []int32
	height int // alias levels from here down to the mailboxes: 1 for an alias of mailboxes
}

// expand returns the mailboxes addr reaches and its height (0 for a
// mailbox). depth is the number of aliases above addr in the chain.
func (b *builder) expand(addr string, depth int) ([]int32, int, error) {
	if boxes, ok := b.d.addrs[addr]; ok {
		return boxes, 0, nil // a mailbox (aliases enter addrs only after the build)
	}
	chain := func() string { return strings.Join(append(b.path, addr), " -> ") }
	if e, ok := b.done[addr]; ok {
		if depth+e.height > maxAliasDepth {
			return nil, 0, fmt.Errorf("alias chain longer than %d: %s -> ...", maxAliasDepth, chain())
		}
		return e.boxes, e.height, nil
	}
	targets, ok := b.aliases[addr]
	switch {
	case !ok:
		return nil, 0, fmt.Errorf("%s: %q is not a configured mailbox or alias", chain(), addr)
	case slices.Contains(b.path, addr):
		return nil, 0, fmt.Errorf("alias loop: %s", chain())
	case depth >= maxAliasDepth:
		return nil, 0, fmt.Errorf("alias chain longer than %d: %s", maxAliasDepth, chain())
	}
	b.path = append(b.path, addr)
	var set indexSet
	height := 1
	for _, t := range targets {
		sub, h, err := b.expand(t, depth+1)
		if err != nil {
			return nil, 0, err
		}
		set.add(sub)
		height = max(height, h+1)
	}
	b.path = b.path[:len(b.path)-1]
	b.done[addr] = expanded{set.list, height}
	return set.list, height, nil
}

// Check reports whether addr, a recipient as received (in the canonical
// mailbox form of proto.Envelope, any case, possibly UTF-8) is
// deliverable: nil, ErrUnknownUser or ErrNotLocal. The bare "postmaster"
// is accepted. A quoted local part ("john doe"@d) can only reach d's
// catch-all: configured names are dot-atoms, which proto never quotes. A
// domain with non-ASCII octets is mapped to its A-labels (IDNA, UTS #46
// lookup profile) first; one that does not map is ErrNotLocal.
//
// Check runs on the event loop for every RCPT and does not allocate for an
// ASCII domain (IDNA mapping a U-label domain does).
func (d *Directory) Check(addr []byte) error {
	_, err := d.lookup(addr)
	return err
}

// lookup finds the mailboxes addr reaches. Check and Resolve share it, so
// they always agree. It must not allocate: the key is built in a stack array
// and the map is indexed with string(b), which Go does not allocate for.
func (d *Directory) lookup(addr []byte) ([]int32, error) {
	at := bytes.LastIndexByte(addr, '@') // a quoted local part may contain '@'
	if at < 0 {
		if asciiEqualFold(addr, "postmaster") {
			return d.postmaster, nil
		}
		return nil, ErrUnknownUser
	}
	local, domain := addr[:at], addr[at+1:]
	if len(domain) > maxDomainBytes {
		return nil, ErrNotLocal
	}

	// The key is laid out right-aligned, "<local>@<domain>" ending at the end
	// of buf, so the subaddress base can be written in front of "@<domain>"
	// without moving the domain. Only ASCII is folded: configured names are
	// ASCII, and other bytes must match exactly (they never do).
	var buf [keyBytes]byte
	dom := len(buf) - len(domain)
	if isASCII(domain) {
		lowerInto(buf[dom:], domain)
	} else {
		// A U-label domain: its A-labels, as configured domains are
		// stored. The Lookup profile maps case and compatibility forms
		// as resolvers do (nontransitional: ß stays ß).
		a, err := idna.Lookup.ToASCII(string(domain))
		if err != nil || len(a) == 0 || len(a) > maxDomainBytes {
			return nil, ErrNotLocal
		}
		dom = len(buf) - len(a)
		copy(buf[dom:], a)
		lowerInto(buf[dom:], buf[dom:])
	}
	de, ok := d.domains[string(buf[dom:])]
	if !ok {
		return nil, ErrNotLocal
	}
	if len(local) > 0 && local[0] == '"' {
		// A Quoted-string names no configured dot-atom.
		if de.catchAll != nil {
			return de.catchAll, nil
		}
		return nil, ErrUnknownUser
	}
	buf[dom-1] = '@'
	room := dom - 1 // at least maxLocalBytes: longer local parts match nothing

	if len(local) <= room {
		start := room - len(local)
		lowerInto(buf[start:room], local)
		if boxes, ok := d.addrs[string(buf[start:])]; ok {
			return boxes, nil
		}
	}
	if d.sep != 0 {
		if i := bytes.IndexByte(local, d.sep); i > 0 && i <= room {
			start := room - i
			lowerInto(buf[start:room], local[:i])
			if boxes, ok := d.addrs[string(buf[start:])]; ok {
				return boxes, nil
			}
		}
	}
	if de.catchAll != nil {
		return de.catchAll, nil
	}
	return nil, ErrUnknownUser
}

// Resolve expands recipient addresses (aliases, subaddresses, catch-alls,
// postmaster) into the set of mailboxes to deliver to: de-duplicated, in the
// order they first appear. If any recipient is not deliverable the error
// wraps ErrUnknownUser or ErrNotLocal and names it.
func (d *Directory) Resolve(rcpts []string) ([]Mailbox, error) {
	if len(rcpts) == 0 {
		return nil, errors.New("spool: no recipients")
	}
	var set indexSet
	for _, r := range rcpts {
		boxes, err := d.lookup([]byte(r))
		if err != nil {
			return nil, fmt.Errorf("recipient %q: %w", r, err)
		}
		set.add(boxes)
	}
	out := make([]Mailbox, len(set.list))
	for n, i := range set.list {
		out[n] = d.boxes[i]
	}
	return out, nil
}

// indexSet collects mailbox indexes once each, in the order first added.
type indexSet struct {
	list []int32
	seen map[int32]struct{}
}

func (s *indexSet) add(ids []int32) {
	if s.seen == nil {
		s.seen = make(map[int32]struct{}, len(ids))
	}
	for _, i := range ids {
		if _, dup := s.seen[i]; !dup {
			s.seen[i] = struct{}{}
			s.list = append(s.list, i)
		}
	}
}

// atextSpecials are the non-alphanumeric atext characters (RFC 5322 3.2.3).
const atextSpecials = "!#$%&'*+-/=?^_`{|}~"

// validDomain reports whether s is a lowercase LDH host name (RFC 1035,
// RFC 1123 2.1): dot-separated labels of 1-63 letters, digits and hyphens,
// not starting or ending with a hyphen, at most 253 bytes in all.
func validDomain(s string) bool {
	if len(s) == 0 || len(s) > 253 {
		return false
	}
	for label := range strings.SplitSeq(s, ".") {
		if len(label) == 0 || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			if c := label[i]; !isLowerAlnum(c) && c != '-' {
				return false
			}
		}
	}
	return true
}

// validMailboxName reports whether s may name a Maildir directory: 1-64
// bytes of [a-z0-9._-], starting with a letter or digit, with no ".." and no
// final dot. That excludes ".", "..", "/", NUL and anything a shell or a
// path would treat specially.
func validMailboxName(s string) bool {
	if len(s) == 0 || len(s) > maxLocalBytes || !isLowerAlnum(s[0]) || s[len(s)-1] == '.' {
		return false
	}
	for i := 1; i < len(s); i++ {
		c := s[i]
		if !isLowerAlnum(c) && c != '.' && c != '_' && c != '-' {
			return false
		}
	}
	return !strings.Contains(s, "..")
}

// validAliasName reports whether s is a lowercase ASCII dot-atom local part
// (RFC 5322 3.2.3) of at most 64 bytes. Alias names never become paths, so
// they may use every atext character.
func validAliasName(s string) bool {
	if len(s) == 0 || len(s) > maxLocalBytes || s[0] == '.' || s[len(s)-1] == '.' || strings.Contains(s, "..") {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !isLowerAlnum(c) && c != '.' && strings.IndexByte(atextSpecials, c) < 0 {
			return false
		}
	}
	return true
}

// splitConfigAddr splits a normalized configured address at its only '@'.
func splitConfigAddr(raw string) (local, domain string, ok bool) {
	local, domain, ok = strings.Cut(normalizeAddr(raw), "@")
	if !ok || strings.IndexByte(domain, '@') >= 0 {
		return "", "", false
	}
	return local, domain, true
}

// normalize trims and lowercases a configured name.
func normalize(s string) string { return strings.ToLower(strings.TrimSpace(s)) }

// normalizeDomain normalizes a configured domain, U-labels mapped to
// A-labels with the IDNA registration profile: a configured name must
// already be in its registrable form (lowercase aside), unlike a wire name,
// which the lookup profile maps. Both give the same A-labels for such a
// name, so the two sides meet.
func normalizeDomain(s string) (string, error) {
	s = normalize(s)
	if isASCII([]byte(s)) {
		return s, nil
	}
	return idna.Registration.ToASCII(s)
}

// normalizeAddr normalizes a configured address, its domain as
// normalizeDomain does. A domain that does not convert is left as it is,
// non-ASCII, so that it is in no domain and the address is refused.
func normalizeAddr(s string) string {
	s = normalize(s)
	at := strings.LastIndexByte(s, '@')
	if at < 0 {
		return s
	}
	dom, err := normalizeDomain(s[at+1:])
	if err != nil {
		return s
	}
	return s[:at+1] + dom
}

// isASCII reports whether b is all ASCII.
func isASCII(b []byte) bool {
	for _, c := range b {
		if c >= 0x80 {
			return false
		}
	}
	return true
}

func isLowerAlnum(c byte) bool { return 'a' <= c && c <= 'z' || '0' <= c && c <= '9' }

// lowerInto copies src into dst, folding ASCII upper case. len(dst) must be
// len(src).
func lowerInto(dst, src []byte) {
	for i, c := range src {
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		dst[i] = c
	}
}

// asciiEqualFold reports whether b equals the lowercase ASCII string s,
// ignoring ASCII case.
func asciiEqualFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != s[i] {
			return false
		}
	}
	return true
}

func configErr(key, format string, args ...any) error {
	return &ConfigError{Key: key, Err: fmt.Errorf(format, args...)}
}
