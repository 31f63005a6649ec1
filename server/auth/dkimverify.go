package auth

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"encoding/base64"
	"hash"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// This file verifies DKIM signatures (RFC 6376, 8301, 8463) on a message
// as it is held: LF or CRLF line endings, the header already split into
// fields, the body streamed once through every canonicalization needed.
// It does what github.com/emersion/go-msgauth's dkim.Verify does (and
// answers the same for well-formed messages; TestDKIMAgreesWithMsgauth),
// without its per-message costs: a goroutine and pipe per signature, a
// copy of the body per write for the line-end fix, a parsed RSA key per
// message (keys here are cached by their record's text).

// sigTags are the tags of one DKIM-Signature, as needed here.
type sigTags struct {
	v, a, b, bh, d, h, s, i, c, q, t, x string
	hasL, hasI, hasQ, hasT, hasX        bool
	missing                             bool // a required tag is absent
}

// dkimSig is one signature being verified.
type dkimSig struct {
	res   *DKIMResult
	field field // the DKIM-Signature field
	tags  sigTags
	key   *dkimKey
	body  int // index of its body canonicalization: 0 simple, 1 relaxed
	head  bool
	hashB []byte // decoded bh=
	sig   []byte // decoded b=
}

// parseSigTags parses a DKIM-Signature value into t; it reports an error
// text for a malformed tag list (RFC 6376 3.2: a duplicate tag makes it
// invalid).
func parseSigTags(v string, t *sigTags) string {
	seen := 0
	for len(v) > 0 {
		var spec string
		if i := strings.IndexByte(v, ';'); i >= 0 {
			spec, v = v[:i], v[i+1:]
		} else {
			spec, v = v, ""
		}
		name, val, ok := strings.Cut(spec, "=")
		name = strings.TrimSpace(name)
		if !ok {
			if name == "" {
				continue
			}
			return "malformed signature tags: dkim: malformed header params"
		}
		val = strings.TrimSpace(val)
		var dst *string
		bit := 0
		switch name {
		case "v":
			dst, bit = &t.v, 1
		case "a":
			dst, bit = &t.a, 2
		case "b":
			dst, bit = &t.b, 4
		case "bh":
			dst, bit = &t.bh, 8
		case "d":
			dst, bit = &t.d, 16
		case "h":
			dst, bit = &t.h, 32
		case "s":
			dst, bit = &t.s, 64
		case "i":
			dst, bit, t.hasI = &t.i, 128, true
		case "c":
			dst, bit = &t.c, 256
		case "q":
			dst, bit, t.hasQ = &t.q, 512, true
		case "t":
			dst, bit, t.hasT = &t.t, 1024, true
		case "x":
			dst, bit, t.hasX = &t.x, 2048, true
		case "l":
			bit, t.hasL = 4096, true
		}
		if bit == 0 {
			continue // an unknown tag (RFC 6376 3.2: ignored)
		}
		if seen&bit != 0 {
			return "malformed signature tags: dkim: duplicate tag name"
		}
		seen |= bit
		if dst != nil {
			*dst = val
		}
	}
	const required = 1 | 2 | 4 | 8 | 16 | 32 | 64 // v a b bh d h s
	t.missing = seen&required != required
	return ""
}

// stripWS removes white space (FWS inside tag values).
func stripWS(s string) string {
	if strings.IndexAny(s, " \t\r\n") < 0 {
		return s
	}
	b := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		if c := s[i]; c != ' ' && c != '\t' && c != '\r' && c != '\n' {
			b = append(b, c)
		}
	}
	return string(b)
}

// tagList splits a colon-separated tag value (h=, q=), white space removed.
func tagList(s string) []string {
	l := strings.Split(s, ":")
	for i, t := range l {
		l[i] = stripWS(t)
	}
	return l
}

// nextTag returns the first element of the colon-separated tag value s
// (h=, q=), its white space removed (as tagList gives them) and appended
// to buf, and the elements after it; more is false for the last one.
func nextTag(s string, buf []byte) (t []byte, rest string, more bool) {
	e, rest, more := strings.Cut(s, ":")
	t = buf
	for i := 0; i < len(e); i++ {
		if c := e[i]; c != ' ' && c != '\t' && c != '\r' && c != '\n' {
			t = append(t, c)
		}
	}
	return t, rest, more
}

// check does the checks of a signature that need no key (RFC 6376 6.1.1);
// it returns the permerror text, or "".
func (t *sigTags) check(now time.Time) string {
	if t.v != "1" {
		return "incompatible signature version"
	}
	if t.missing {
		return "signature missing required tag"
	}
	d := stripWS(t.d)
	if t.hasI {
		i := strings.ToLower(stripWS(t.i))
		ld := strings.ToLower(d)
		if !strings.HasSuffix(i, "@"+ld) && !strings.HasSuffix(i, "."+ld) {
			return "domain mismatch"
		}
	}
	from := false
	var buf [64]byte
	for rest, more := t.h, true; more && !from; {
		var k []byte
		k, rest, more = nextTag(rest, buf[:0])
		from = strings.EqualFold(string(k), "from")
	}
	if !from {
		return "From field not signed"
	}
	if t.hasT {
		if _, err := strconv.ParseInt(stripWS(t.t), 10, 64); err != nil {
			return "malformed time: " + err.Error()
		}
	}
	if t.hasX {
		x, err := strconv.ParseInt(stripWS(t.x), 10, 64)
		if err != nil {
			return "malformed expiration time: " + err.Error()
		}
		if now.After(time.Unix(x, 0)) {
			return "signature has expired"
		}
	}
	if t.hasQ {
		ok := false
		for rest, more := t.q, true; more && !ok; {
			var m []byte
			m, rest, more = nextTag(rest, buf[:0])
			ok = string(m) == "dns/txt"
		}
		if !ok {
			return "unsupported public key query method"
		}
	}
	return ""
}

// dkimKey is a parsed key record (RFC 6376 3.6.1), or why it is unusable.
type dkimKey struct {
	rsa     *rsa.PublicKey
	mont    *rsaMont // rsa's constants for verifySHA256; nil: crypto/rsa verifies
	ed      ed25519.PublicKey
	algo    string   // "rsa" or "ed25519"
	hashes  []string // h=, nil when absent
	service bool     // s= allows email
	err     string   // a permerror text, "" when usable
}

// keyCacheEntries bounds the parsed records kept (keys, DMARC records);
// keyCacheText bounds the text of a cached one (an RSA-4096 key record is
// under 800 bytes).
const (
	keyCacheEntries = 1024
	keyCacheText    = 4096
)

// keyCache maps a key record's text to its parsed key. The resolver
// caches the text for its TTL; the parse (base64, ASN.1) is a pure
// function of the text, so it is kept here as long as the text is asked
// for, within a bound.
var keyCache = textCache[*dkimKey]{m: make(map[string]*dkimKey)}

// parseKey returns the key of record txt, from the cache when it was seen.
func parseKey(txt string) *dkimKey {
	if k, ok := keyCache.get(txt); ok {
		return k
	}
	k := parseKeyRecord(txt)
	keyCache.put(txt, k)
	return k
}

// textCache is a bounded map from a DNS record's text to what it parses
// to; a full cache drops an arbitrary entry. Safe for concurrent use.
type textCache[V any] struct {
	sync.Mutex
	m map[string]V
}

func (c *textCache[V]) get(txt string) (V, bool) {
	c.Lock()
	v, ok := c.m[txt]
	c.Unlock()
	return v, ok
}

func (c *textCache[V]) put(txt string, v V) {
	if len(txt) > keyCacheText {
		return
	}
	c.Lock()
	if len(c.m) >= keyCacheEntries {
		for old := range c.m {
			delete(c.m, old)
			break
		}
	}
	c.m[txt] = v
	c.Unlock()
}

// parseKeyRecord parses a DKIM key record.
func parseKeyRecord(txt string) *dkimKey {
	bad := func(s string) *dkimKey { return &dkimKey{err: s} }
	tags := map[string]string{}
	for _, spec := range strings.Split(txt, ";") {
		name, val, ok := strings.Cut(spec, "=")
		name = strings.TrimSpace(name)
		if !ok {
			if name == "" {
				continue
			}
			return bad("key record error: dkim: malformed header params")
		}
		if _, dup := tags[name]; dup {
			return bad("key record error: dkim: duplicate tag name")
		}
		tags[name] = strings.TrimSpace(val)
	}
	if v, ok := tags["v"]; ok && v != "DKIM1" {
		return bad("incompatible public key version")
	}
	p, ok := tags["p"]
	if !ok {
		return bad("key syntax error: missing public key data")
	}
	if p == "" {
		return bad("key revoked")
	}
	raw, err := base64.StdEncoding.DecodeString(stripWS(p))
	if err != nil {
		return bad("key syntax error: " + err.Error())
	}
	k := &dkimKey{service: true}
	switch tags["k"] {
	case "rsa", "":
		pub, err := x509.ParsePKIXPublicKey(raw)
		if err != nil {
			// RFC 6376 erratum 3017: RSAPublicKey is seen too.
			pub, err = x509.ParsePKCS1PublicKey(raw)
			if err != nil {
				return bad("key syntax error: " + err.Error())
			}
		}
		rk, ok := pub.(*rsa.PublicKey)
		if !ok {
			return bad("key syntax error: not an RSA public key")
		}
		if rk.Size()*8 < 1024 { // RFC 8301 3.2
			return bad("key is too short: want 1024 bits, has " + strconv.Itoa(rk.Size()*8) + " bits")
		}
		k.rsa, k.mont, k.algo = rk, newRSAMont(rk), "rsa"
	case "ed25519":
		if len(raw) != ed25519.PublicKeySize {
			return bad("invalid Ed25519 public key size: " + strconv.Itoa(len(raw)) + " bytes")
		}
		k.ed, k.algo = ed25519.PublicKey(raw), "ed25519"
	default:
		return bad("unsupported key algorithm")
	}
	if h, ok := tags["h"]; ok {
		k.hashes = tagList(h)
	}
	if s, ok := tags["s"]; ok {
		k.service = false
		for _, svc := range tagList(s) {
			if svc == "*" || svc == "email" {
				k.service = true
			}
		}
	}
	return k
}

// lookupKey fetches and parses the key of a signature: DNS trouble is a
// temperror, a missing or unusable record a permerror (RFC 6376 6.1.2).
func lookupKey(ctx context.Context, r Resolver, t *sigTags) (*dkimKey, Status, string) {
	name := stripWS(t.s) + "._domainkey." + stripWS(t.d)
	txts, err := lookupTXT(ctx, r, name)
	if err != nil {
		err = normalizeErr(name, err)
		if notFound(err) {
			return nil, PermError, "dkim: no key for signature: " + err.Error()
		}
		return nil, TempError, "dkim: key unavailable: " + err.Error()
	}
	switch len(txts) {
	case 0:
		return nil, PermError, "dkim: no valid key found"
	case 1:
	default:
		return nil, PermError, "dkim: multiple TXT records found for key"
	}
	k := parseKey(txts[0])
	if k.err != "" {
		return nil, PermError, "dkim: " + k.err
	}
	return k, "", ""
}

// withKey does the checks that need the key and decodes the hashes; it
// returns the result's status and reason when the signature cannot pass,
// "" when the body and header hashes decide.
//
// The decoded hashes are appended to dec (scratch, returned), which they
// then point into.
func (s *dkimSig) withKey(rd *msgReader, dec []byte) (Status, string, []byte) {
	t := &s.tags
	keyAlgo, hashAlgo, ok := strings.Cut(stripWS(t.a), "-")
	if !ok {
		return PermError, "dkim: malformed algorithm name", dec
	}
	if s.key.hashes != nil {
		found := false
		for _, h := range s.key.hashes {
			if h == hashAlgo {
				found = true
				break
			}
		}
		if !found {
			return PermError, "dkim: inappropriate hash algorithm", dec
		}
	}
	switch hashAlgo {
	case "sha1": // RFC 8301 3.1
		return PermError, "dkim: hash algorithm too weak: sha1", dec
	case "sha256":
	default:
		return PermError, "dkim: unsupported hash algorithm", dec
	}
	if s.key.algo != keyAlgo {
		return PermError, "dkim: inappropriate key algorithm", dec
	}
	if !s.key.service {
		return PermError, "dkim: inappropriate service", dec
	}
	hc, bc := "simple", "simple"
	if c := stripWS(t.c); c != "" {
		h, b, two := strings.Cut(c, "/")
		if h != "" {
			hc = h
		}
		if two {
			bc = b
		}
	}
	switch hc {
	case "simple", "relaxed":
	default:
		return PermError, "dkim: unsupported header canonicalization algorithm", dec
	}
	switch bc {
	case "simple", "relaxed":
	default:
		return PermError, "dkim: unsupported body canonicalization algorithm", dec
	}
	s.head = hc == "relaxed"
	if bc == "relaxed" {
		s.body = 1
	}
	if t.hasL {
		// l= leaves what follows the counted bytes unsigned.
		return Policy, "l= tag: part of the body is unsigned", dec
	}
	var err error
	if s.hashB, dec, err = decodeB64(rd, dec, t.bh); err != nil {
		return PermError, "dkim: malformed body hash: " + err.Error(), dec
	}
	if s.sig, dec, err = decodeB64(rd, dec, t.b); err != nil {
		return PermError, "dkim: malformed signature: " + err.Error(), dec
	}
	return "", "", dec
}

// decodeB64 decodes the base64 tag value v (FWS inside it ignored),
// appending to dec; it returns the decoded bytes and dec.
func decodeB64(rd *msgReader, dec []byte, v string) ([]byte, []byte, error) {
	b := slices.Grow(rd.b64[:0], len(v))[:len(v)]
	n := 0
	for i := 0; i < len(v); i++ {
		c := v[i]
		b[n] = c
		if c != ' ' && c != '\t' && c != '\r' && c != '\n' {
			n++
		}
	}
	b = b[:n]
	rd.b64 = b[:0]
	at := len(dec)
	dec = slices.Grow(dec, base64.StdEncoding.DecodedLen(len(b)))
	n, err := base64.StdEncoding.Decode(dec[at:at+base64.StdEncoding.DecodedLen(len(b))], b)
	if err != nil {
		return nil, dec, err
	}
	dec = dec[:at+n]
	return dec[at : at+n : at+n], dec, nil
}

// finish compares the body hash and verifies the signature over the
// header fields fs (RFC 6376 3.7).
func (s *dkimSig) finish(rd *msgReader, fs []field, bodyHash []byte) (Status, string) {
	if subtle.ConstantTimeCompare(bodyHash, s.hashB) != 1 {
		return Fail, "dkim: body hash did not verify"
	}
	if rd.headH == nil {
		rd.headH = sha256.New()
	}
	h := rd.headH
	h.Reset()
	// Each name in h= takes the last instance of that field not taken yet
	// (RFC 6376 5.4.2); names without one contribute nothing.
	used := rd.used[:0]
	scratch := rd.hdr[:0]
	var buf [64]byte
	for rest, more := s.tags.h, true; more; {
		var name []byte
		name, rest, more = nextTag(rest, buf[:0])
		for i := len(fs) - 1; i >= 0; i-- {
			if !nameIs(fs[i].name, name) || containsInt(used, i) {
				continue
			}
			used = append(used, i)
			scratch = canonHeader(scratch[:0], fs[i], s.head, false)
			h.Write(scratch)
			break
		}
	}
	rd.used = used[:0]
	// The signature's own field, its b= value empty, without the final
	// CRLF.
	scratch = canonHeader(scratch[:0], s.field, s.head, true)
	rd.hdr = scratch[:0]
	scratch = bytes.TrimRight(scratch, "\r\n")
	h.Write(scratch)
	digest := h.Sum(rd.digest[:0])
	switch {
	case s.key.mont != nil:
		if !s.key.mont.verifySHA256(digest, s.sig) {
			return Fail, "dkim: signature did not verify: " + rsa.ErrVerification.Error()
		}
	case s.key.rsa != nil:
		if err := rsa.VerifyPKCS1v15(s.key.rsa, crypto.SHA256, digest, s.sig); err != nil {
			return Fail, "dkim: signature did not verify: " + err.Error()
		}
	default:
		if !ed25519.Verify(s.key.ed, digest, s.sig) {
			return Fail, "dkim: signature did not verify: dkim: invalid Ed25519 signature"
		}
	}
	return Pass, ""
}

func containsInt(l []int, x int) bool {
	for _, v := range l {
		if v == x {
			return true
		}
	}
	return false
}

// canonHeader appends field f canonicalized (RFC 6376 3.4.1, 3.4.2) to
// dst, its line ends CRLF; with emptyB, the value of its b= tag left out.
func canonHeader(dst []byte, f field, relaxed, emptyB bool) []byte {
	// The value in two parts: around the b= value left out, if any (it
	// lies between '=' and ';' or the end: the cut is no line end).
	v, tail := f.value, []byte(nil)
	if emptyB {
		if at, end, ok := bValue(v); ok {
			v, tail = v[:at], v[end:]
		}
	}
	if !relaxed {
		dst = append(dst, f.raw...)
		dst = append(dst, ':')
		return appendCRLF(appendCRLF(dst, v), tail)
	}
	for _, c := range f.name {
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		dst = append(dst, c)
	}
	dst = append(dst, ':')
	// Unfold, turn white space runs into one space, trim both ends.
	ws, any := false, false
	for _, part := range [2][]byte{v, tail} {
		for _, c := range part {
			switch c {
			case '\r', '\n':
			case ' ', '\t':
				ws = true
			default:
				if ws && any {
					dst = append(dst, ' ')
				}
				ws, any = false, true
				dst = append(dst, c)
			}
		}
	}
	return append(dst, '\r', '\n')
}

// appendCRLF appends v with every lone LF made CRLF.
func appendCRLF(dst, v []byte) []byte {
	for len(v) > 0 {
		i := bytes.IndexByte(v, '\n')
		if i < 0 {
			return append(dst, v...)
		}
		if i > 0 && v[i-1] == '\r' {
			dst = append(dst, v[:i+1]...)
		} else {
			dst = append(dst, v[:i]...)
			dst = append(dst, '\r', '\n')
		}
		v = v[i+1:]
	}
	return dst
}

// bValue returns where the value of the b= tag of the tag list v lies,
// v[at:end] (after its '=', up to its ';' or the end): canonHeader leaves
// it out (RFC 6376 3.5: "b=" stays, white space around the value too may
// go).
func bValue(v []byte) (at, end int, ok bool) {
	off := 0
	for off <= len(v) {
		end := bytes.IndexByte(v[off:], ';')
		if end < 0 {
			end = len(v)
		} else {
			end += off
		}
		spec := v[off:end]
		if eq := bytes.IndexByte(spec, '='); eq >= 0 && isTagB(spec[:eq]) {
			return off + eq + 1, end, true
		}
		off = end + 1
	}
	return 0, 0, false
}

// isTagB reports whether name, white space around it trimmed, is "b".
func isTagB(name []byte) bool {
	seen := false
	for _, c := range name {
		switch {
		case c == ' ' || c == '\t' || c == '\r' || c == '\n':
		case c == 'b' && !seen:
			seen = true
		default:
			return false
		}
	}
	return seen
}

// bodyCanon canonicalizes a body (RFC 6376 3.4.3 simple, 3.4.4 relaxed)
// as it streams by, into a hash: lone LF is a line end as CRLF is, empty
// lines at the end are dropped. It holds O(1) state between writes.
type bodyCanon struct {
	h       hash.Hash
	relaxed bool
	out     []byte // pending output, flushed to h when large
	empty   int    // empty lines not written yet (they may be the last)
	content bool   // the current line has content written
	cr      bool   // a CR ended the last write: a line end if LF follows
	ws      bool   // relaxed: white space pending on the current line
	wrote   bool   // anything but pending empty lines written
}

func (b *bodyCanon) reset(h hash.Hash, relaxed bool, out []byte) {
	*b = bodyCanon{h: h, relaxed: relaxed, out: out[:0]}
}

// text appends line content (no CR or LF in it).
func (b *bodyCanon) text(p []byte) {
	if !b.relaxed {
		if len(p) > 0 {
			b.lineStart()
			b.out = append(b.out, p...)
		}
		return
	}
	if singleSpaced(p) {
		b.single(p)
		return
	}
	for len(p) > 0 {
		j := 0
		for j < len(p) && (p[j] == ' ' || p[j] == '\t') {
			j++
		}
		if j > 0 {
			b.ws, p = true, p[j:]
		}
		k := 0
		for k < len(p) && p[k] != ' ' && p[k] != '\t' {
			k++
		}
		if k == 0 {
			return
		}
		b.lineStart()
		if b.ws {
			b.out = append(b.out, ' ')
			b.ws = false
		}
		b.out = append(b.out, p[:k]...)
		p = p[k:]
	}
}

// single appends relaxed line content whose every run of white space is
// one SP already, as in most text: it goes out as it is, but for a space
// that continues a pending run and a space at its end, which waits (it is
// dropped if the line ends there).
func (b *bodyCanon) single(p []byte) {
	if b.ws && len(p) > 0 && p[0] == ' ' {
		p = p[1:]
	}
	trailing := len(p) > 0 && p[len(p)-1] == ' '
	if trailing {
		p = p[:len(p)-1]
	}
	if len(p) > 0 {
		b.lineStart()
		if b.ws {
			b.out = append(b.out, ' ')
			b.ws = false
		}
		b.out = append(b.out, p...)
	}
	if trailing {
		b.ws = true
	}
}

// singleSpaced reports whether p is not empty and every run of white
// space in it is one SP (no tab, no two spaces in a row): the relaxed
// canonicalization then changes nothing in it but at its ends (single).
func singleSpaced(p []byte) bool {
	return len(p) > 0 && bytes.IndexByte(p, '\t') < 0 && bytes.Index(p, doubleSpace) < 0
}

// doubleSpace is the white space run singleSpaced looks for.
var doubleSpace = []byte("  ")

// lineStart writes the empty lines held back once the line has content.
func (b *bodyCanon) lineStart() {
	if b.content {
		return
	}
	for ; b.empty > 0; b.empty-- {
		b.out = append(b.out, '\r', '\n')
		if len(b.out) >= flushBytes {
			b.h.Write(b.out)
			b.out = b.out[:0]
		}
	}
	b.content, b.wrote = true, true
}

// flushBytes is the pending output that is hashed at once.
const flushBytes = 16 << 10

// eol ends the current line.
func (b *bodyCanon) eol() {
	b.ws = false
	if b.content {
		b.out = append(b.out, '\r', '\n')
		b.content = false
	} else {
		b.empty++
	}
}

// write feeds body bytes.
func (b *bodyCanon) write(p []byte) {
	if b.cr {
		b.cr = false
		if len(p) > 0 && p[0] == '\n' {
			b.eol()
			p = p[1:]
		} else {
			b.text([]byte{'\r'})
		}
	}
	// When p as a whole has no tab and no two spaces in a row (most
	// text), neither has any of its lines: they skip text's scans, and
	// the lines the canonicalization leaves as they are go to the hash
	// straight from p (lines).
	text, fast := b.text, !b.relaxed
	if b.relaxed && singleSpaced(p) {
		text, fast = b.single, true
	}
	for len(p) > 0 {
		if fast && !b.content && !b.ws {
			if n := b.lines(p); n > 0 {
				p = p[n:]
				continue
			}
		}
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			if p[len(p)-1] == '\r' {
				text(p[:len(p)-1])
				b.cr = true
			} else {
				text(p)
			}
			break
		}
		line := p[:i]
		if i > 0 && line[i-1] == '\r' {
			line = line[:i-1]
		}
		text(line)
		b.eol()
		p = p[i+1:]
	}
	if len(b.out) >= flushBytes {
		b.h.Write(b.out)
		b.out = b.out[:0]
	}
}

// lines hashes the whole lines at the start of p that the
// canonicalization leaves as they are, straight from p, and returns their
// length: each has content and ends in CRLF; relaxed, a space at its end
// is dropped, and the hash skips it. It is called at the start of a line,
// with no white space pending, and for relaxed only on a p that is
// singleSpaced: its runs of white space are single spaces already.
func (b *bodyCanon) lines(p []byte) int {
	n, from := 0, 0 // consumed; where the bytes not hashed yet start
	for {
		i := bytes.IndexByte(p[n:], '\n')
		if i < 2 {
			break // no whole line left, an empty line, or a bare LF
		}
		lf := n + i
		if p[lf-1] != '\r' {
			break
		}
		if b.relaxed && p[lf-2] == ' ' {
			if i == 2 {
				break // " CRLF": an empty line once the space goes
			}
			b.direct(p[from : lf-2])
			from = lf - 1
		}
		n = lf + 1
	}
	if n > from {
		b.direct(p[from:n])
	}
	return n
}

// direct hashes p, canonical output, after what is pending.
func (b *bodyCanon) direct(p []byte) {
	for ; b.empty > 0; b.empty-- {
		b.out = append(b.out, '\r', '\n')
	}
	if len(b.out) > 0 {
		b.h.Write(b.out)
		b.out = b.out[:0]
	}
	b.h.Write(p)
	b.wrote = true
}

// sum ends the body and appends its hash to dst.
func (b *bodyCanon) sum(dst []byte) []byte {
	if b.cr {
		b.cr = false
		b.text([]byte{'\r'})
	}
	switch {
	case b.content:
		b.out = append(b.out, '\r', '\n') // a last line without its end
	case !b.wrote && !b.relaxed:
		b.out = append(b.out, '\r', '\n') // simple: an empty body is CRLF
	}
	b.h.Write(b.out)
	b.out = b.out[:0]
	return b.h.Sum(dst)
}
