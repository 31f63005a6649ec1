// Package addrbook is nanomx's address book: the domains it accepts mail
// for, their mailboxes, aliases, catch-alls, subaddresses and postmaster.
// It turns a recipient into the mailboxes it reaches, at RCPT time, on the
// event loop: Lookup does not allocate for an ASCII domain. A Book is
// immutable; a reload builds a new one.
//
// The server checks each RCPT with Lookup, collects the transaction's
// mailboxes in a Set and hands them (Set.Mailboxes) to the spool, which
// knows nothing of addresses. Mailbox names come only from configuration,
// validated as spool.Mailbox.Valid demands, so nothing received from the
// network ever becomes a path.
package addrbook

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"golang.org/x/net/idna"

	"github.com/nanomx/nanomx/proto"
	"github.com/nanomx/nanomx/spool"
)

// Outcomes of a lookup, for errors.Is.
var (
	// ErrUnknownUser means the domain is accepted but no mailbox, alias or
	// catch-all takes the local part.
	ErrUnknownUser = errors.New("addrbook: no such user")
	// ErrNotLocal means the domain is not one this MX accepts mail for.
	ErrNotLocal = errors.New("addrbook: domain not local")
)

// ConfigError names the configuration key that is wrong: "domains",
// "postmaster", "mailboxes", "aliases", "catch_all" or
// "subaddress_separator".
type ConfigError struct {
	Key string
	Err error
}

// Error returns "<key>: <reason>".
func (e *ConfigError) Error() string { return e.Key + ": " + e.Err.Error() }

// Unwrap returns the underlying reason.
func (e *ConfigError) Unwrap() error { return e.Err }

// Address limits from RFC 5321 4.5.3.1.1 and 4.5.3.1.2. Configured names
// obey them; wire addresses longer than a limit can only reach a catch-all.
const (
	maxLocalBytes  = 64
	maxDomainBytes = 255

	// keyBytes is the stack buffer Lookup lowercases an address into.
	keyBytes = maxLocalBytes + 1 + maxDomainBytes

	// maxAliasDepth bounds alias chains: a -> b -> ... -> mailbox.
	maxAliasDepth = 8
)

// Config is the address book as configured. Addresses are
// "local@domain"; case does not matter. A domain, here or in an address,
// may be written with A-labels (xn--bcher-kva.example) or U-labels
// (bücher.example): it is stored as its A-labels (IDNA, UTS #46
// registration profile), so Maildir directories are ASCII, and wire
// domains in either form reach it.
type Config struct {
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

// Book is an immutable, validated address book, safe for concurrent use.
// To reload, build a new one.
type Book struct {
	boxes []spool.Mailbox // every configured mailbox; targets index into it

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

// New validates cfg and builds a Book. Every error is a *ConfigError
// naming the offending key.
func New(cfg Config) (*Book, error) {
	d := &Book{
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
		if !spool.ValidDomain(dom) {
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
		if !ok {
			return nil, configErr("mailboxes", "%q is not an address (local@domain)", raw)
		}
		if _, ok := d.domains[dom]; !ok {
			return nil, configErr("mailboxes", "%q: domain %q is not in domains", raw, dom)
		}
		// The spool's rule for folder names, the one rule there is.
		// Domains in d.domains are valid ones, so this is about local.
		box := spool.Mailbox{Domain: dom, User: local}
		if !box.Valid() {
			return nil, configErr("mailboxes",
				"%q: local part must be 1-64 of [a-z0-9._-], start with a letter or digit, without \"..\" or a final dot", raw)
		}
		key := local + "@" + dom
		if _, dup := d.addrs[key]; dup {
			continue
		}
		d.addrs[key] = []int32{int32(len(d.boxes))}
		d.boxes = append(d.boxes, box)
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
	d       *Book
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

// Targets are the mailboxes one recipient reaches, each once, in
// configuration order. They point into the Book, which never changes: no
// copy is made, and they stay valid as long as they are kept.
type Targets struct {
	b   *Book
	ids []int32
}

// Len returns the number of mailboxes.
func (t Targets) Len() int { return len(t.ids) }

// At returns the i-th mailbox.
func (t Targets) At(i int) spool.Mailbox { return t.b.boxes[t.ids[i]] }

// Lookup finds the mailboxes addr reaches: addr is a recipient as
// received, in the canonical form proto.Envelope documents (any case,
// possibly UTF-8). The error is ErrUnknownUser or ErrNotLocal. The bare
// "postmaster" is accepted. A quoted local part ("john doe"@d) can only
// reach d's catch-all: configured names are dot-atoms, which proto never
// quotes. A domain with non-ASCII octets is mapped to its A-labels (IDNA,
// UTS #46 lookup profile) first; one that does not map is ErrNotLocal.
// Bytes not in that form (only a caller bypassing proto has them) reach
// a catch-all or nothing, never another mailbox.
//
// Lookup runs on the event loop for every RCPT and does not allocate for
// an ASCII domain (IDNA mapping a U-label domain does).
func (d *Book) Lookup(addr []byte) (Targets, error) {
	at := lastIndexByte(addr, '@') // a quoted local part may contain '@', a domain never
	if at < 0 {
		return find(d, addr, addr[:0], false, false)
	}
	local := addr[:at]
	return find(d, local, addr[at+1:], len(local) > 0 && local[0] == '"', true)
}

// LookupAddress is Lookup for an Address: for every address proto
// produces, LookupAddress(a) and Lookup([]byte(a.String())) agree. It
// does not allocate for an ASCII domain either.
func (d *Book) LookupAddress(a proto.Address) (Targets, error) {
	return find(d, a.Local, a.Domain, a.Quoted(), a.Domain != "")
}

// find is the lookup both entries share, over bytes or a string. It must
// not allocate: the key is built in a stack array and the map is indexed
// with string(b), which Go does not allocate for. local is the local part
// as received (with its quotes, for bytes), quoted whether it is a
// Quoted-string, and hasDomain false for an address without "@".
func find[T string | []byte](d *Book, local, domain T, quoted, hasDomain bool) (Targets, error) {
	if !hasDomain {
		if asciiEqualFold(local, "postmaster") {
			return Targets{d, d.postmaster}, nil
		}
		return Targets{}, ErrUnknownUser
	}
	if len(domain) > maxDomainBytes {
		return Targets{}, ErrNotLocal
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
			return Targets{}, ErrNotLocal
		}
		dom = len(buf) - len(a)
		copy(buf[dom:], a)
		lowerInto(buf[dom:], buf[dom:])
	}
	de, ok := d.domains[string(buf[dom:])]
	if !ok {
		return Targets{}, ErrNotLocal
	}
	if quoted {
		// A Quoted-string names no configured dot-atom.
		if de.catchAll != nil {
			return Targets{d, de.catchAll}, nil
		}
		return Targets{}, ErrUnknownUser
	}
	buf[dom-1] = '@'
	room := dom - 1 // at least maxLocalBytes: longer local parts match nothing

	if len(local) <= room {
		start := room - len(local)
		lowerInto(buf[start:room], local)
		if boxes, ok := d.addrs[string(buf[start:])]; ok {
			return Targets{d, boxes}, nil
		}
	}
	if d.sep != 0 {
		if i := indexByte(local, d.sep); i > 0 && i <= room {
			start := room - i
			lowerInto(buf[start:room], local[:i])
			if boxes, ok := d.addrs[string(buf[start:])]; ok {
				return Targets{d, boxes}, nil
			}
		}
	}
	if de.catchAll != nil {
		return Targets{d, de.catchAll}, nil
	}
	return Targets{}, ErrUnknownUser
}

// Mailboxes returns every configured mailbox, in configuration order: the
// list the spool prepares at start-up (spool.Config.Mailboxes).
func (d *Book) Mailboxes() []spool.Mailbox { return slices.Clone(d.boxes) }

// Resolve expands recipients (aliases, subaddresses, catch-alls,
// postmaster) into the mailboxes to deliver to, as a Set collects them:
// each once, in the order first reached. If any recipient is not
// deliverable the error wraps ErrUnknownUser or ErrNotLocal and names it.
func (d *Book) Resolve(rcpts []proto.Address) ([]spool.Mailbox, error) {
	if len(rcpts) == 0 {
		return nil, errors.New("addrbook: no recipients")
	}
	var set Set
	for _, r := range rcpts {
		t, err := d.LookupAddress(r)
		if err != nil {
			return nil, fmt.Errorf("recipient %q: %w", r.String(), err)
		}
		set.Add(t)
	}
	return set.Mailboxes(), nil
}

// Set collects the mailboxes of a transaction's recipients: each once, in
// the order first added. The server keeps one per session, adds each
// accepted RCPT's Targets and hands Mailboxes to the spool. Set holds
// mailboxes, not positions in a Book, so targets of two Books (a reload
// between two RCPTs) mix safely. The zero Set is empty. Add does not
// allocate once the set's storage has grown to the transaction's size
// (Reset keeps it, up to a bound), while the set holds at most scanLimit
// mailboxes; past that it keeps a map.
type Set struct {
	list []spool.Mailbox
	seen map[spool.Mailbox]struct{} // set once list has scanLimit entries
}

// scanLimit is the size up to which Set finds duplicates by a scan.
const scanLimit = 16

// maxIdleSet bounds the storage a Set keeps across Reset.
const maxIdleSet = 64

// Add adds t's mailboxes that the set does not hold yet.
func (s *Set) Add(t Targets) {
	for i := range t.Len() {
		m := t.At(i)
		if s.seen == nil && len(s.list) >= scanLimit {
			s.seen = make(map[spool.Mailbox]struct{}, 2*len(s.list))
			for _, prev := range s.list {
				s.seen[prev] = struct{}{}
			}
		}
		if s.seen != nil {
			if _, dup := s.seen[m]; dup {
				continue
			}
			s.seen[m] = struct{}{}
		} else if slices.Contains(s.list, m) {
			continue
		}
		s.list = append(s.list, m)
	}
}

// Len returns the number of mailboxes in the set.
func (s *Set) Len() int { return len(s.list) }

// Mailboxes returns the set's mailboxes in a new slice, for the spool to
// own (spool.Message.Mailboxes).
func (s *Set) Mailboxes() []spool.Mailbox { return slices.Clone(s.list) }

// Reset empties the set for the next transaction, keeping its storage if
// it is small.
func (s *Set) Reset() {
	clear(s.list) // no references into a Book that a reload may drop
	s.list = s.list[:0]
	if cap(s.list) > maxIdleSet {
		s.list = nil
	}
	s.seen = nil
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
	if isASCII(s) {
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
func isASCII[T string | []byte](b T) bool {
	for i := 0; i < len(b); i++ {
		if b[i] >= 0x80 {
			return false
		}
	}
	return true
}

func isLowerAlnum(c byte) bool { return 'a' <= c && c <= 'z' || '0' <= c && c <= '9' }

// lowerInto copies src into dst, folding ASCII upper case. len(dst) must be
// len(src).
func lowerInto[T string | []byte](dst []byte, src T) {
	for i := 0; i < len(src); i++ {
		c := src[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		dst[i] = c
	}
}

// asciiEqualFold reports whether b equals the lowercase ASCII string s,
// ignoring ASCII case.
func asciiEqualFold[T string | []byte](b T, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := 0; i < len(b); i++ {
		c := b[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != s[i] {
			return false
		}
	}
	return true
}

func indexByte[T string | []byte](b T, c byte) int {
	for i := 0; i < len(b); i++ {
		if b[i] == c {
			return i
		}
	}
	return -1
}

func lastIndexByte(b []byte, c byte) int {
	for i := len(b) - 1; i >= 0; i-- {
		if b[i] == c {
			return i
		}
	}
	return -1
}

func configErr(key, format string, args ...any) error {
	return &ConfigError{Key: key, Err: fmt.Errorf(format, args...)}
}
