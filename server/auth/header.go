package auth

import (
	"bytes"
	"net/mail"
	"strings"
)

// field is one header field: its name and its raw value (continuation
// lines included, line ends kept).
type field struct {
	name  []byte // white space before the colon trimmed
	raw   []byte // the name as written, white space before the colon kept
	value []byte
}

// maxHeaderFields bounds the fields kept; a header with more is judged
// on its first ones.
const maxHeaderFields = 1000

// headerFields splits the header section of msg (up to the first empty
// line) into fields. Lines before the first field and lines without a
// colon are skipped.
func headerFields(msg []byte) []field { return fieldsNamed(msg, "") }

// fieldsNamed is headerFields keeping only the fields named name (any
// case; "" keeps all). The whole header section is scanned, so that a
// field cannot hide behind maxHeaderFields others.
func fieldsNamed(msg []byte, name string) []field {
	var fs []field
	if name == "" {
		fs = make([]field, 0, 16)
	}
	return appendFields(fs, msg, name)
}

// appendFields is fieldsNamed appending to fs (at most maxHeaderFields
// appended).
func appendFields(fs []field, msg []byte, name string) []field {
	off, base := 0, len(fs)
	kept := false // the last field seen was kept
	for off < len(msg) && len(fs)-base < maxHeaderFields {
		end := len(msg)
		if i := bytes.IndexByte(msg[off:], '\n'); i >= 0 {
			end = off + i + 1
		}
		line := msg[off:end]
		if len(bytes.TrimRight(line, "\r\n")) == 0 {
			break
		}
		if line[0] == ' ' || line[0] == '\t' {
			if n := len(fs); n > base && kept {
				f := &fs[n-1]
				f.value = f.value[:len(f.value)+len(line)] // lines are adjacent in msg
			}
		} else if colon := bytes.IndexByte(line, ':'); colon > 0 {
			n := bytes.TrimRight(line[:colon], " \t")
			kept = name == "" || nameIs(n, name)
			if kept {
				fs = append(fs, field{
					name:  n,
					raw:   line[:colon],
					value: msg[off+colon+1 : end : len(msg)],
				})
			}
		} else {
			kept = false
		}
		off = end
	}
	return fs
}

// unfold joins a field value's lines (RFC 5322 2.2.3) and trims it.
func unfold(v []byte) string {
	v = bytes.TrimSpace(v)
	if bytes.IndexByte(v, '\n') < 0 && bytes.IndexByte(v, '\r') < 0 {
		return string(v)
	}
	var b strings.Builder
	b.Grow(len(v))
	for len(v) > 0 { // the lines, and in each the runs between CR bytes
		line := v
		if i := bytes.IndexByte(v, '\n'); i >= 0 {
			line, v = v[:i], v[i+1:]
		} else {
			v = nil
		}
		for {
			j := bytes.IndexByte(line, '\r')
			if j < 0 {
				break
			}
			b.Write(line[:j])
			line = line[j+1:]
		}
		b.Write(line)
	}
	return strings.TrimSpace(b.String())
}

// nameIs reports whether the field name n is name, in any case. Field
// names are printable US-ASCII (RFC 5322 2.2), so ASCII case folding is
// the comparison (strings.EqualFold would also match the Kelvin sign).
func nameIs[S string | []byte](n []byte, name S) bool {
	if len(n) != len(name) {
		return false
	}
	for i := range len(n) {
		a, b := n[i], name[i]
		if 'A' <= a && a <= 'Z' {
			a += 'a' - 'A'
		}
		if 'A' <= b && b <= 'Z' {
			b += 'a' - 'A'
		}
		if a != b {
			return false
		}
	}
	return true
}

// FromDomains are the RFC 5322.From domains of a message (RFC 7489 3.1):
// every address of every From field, lowercased and deduplicated, with
// Problem saying what is wrong when there is not exactly one From field
// holding exactly one address ("" when there is).
type FromDomains struct {
	Domains []string
	Problem string
}

// maxFromDomains bounds the From domains DMARC evaluates.
const maxFromDomains = 4

// fromDomains finds the From domains in fs.
func fromDomains(fs []field) FromDomains {
	var d FromDomains
	fields, addrs := 0, 0
	add := func(address string) {
		addrs++
		at := strings.LastIndexByte(address, '@')
		dom := strings.TrimSuffix(strings.ToLower(address[at+1:]), ".")
		if at < 0 || !IsDomainName(dom) {
			d.Problem = "From address has no domain"
			return
		}
		if !containsStr(d.Domains, dom) && len(d.Domains) < maxFromDomains {
			d.Domains = append(d.Domains, dom)
		}
	}
	for _, f := range fs {
		if !nameIs(f.name, "from") {
			continue
		}
		fields++
		v := unfold(f.value)
		if a, ok := simpleAddress(v); ok {
			add(a) // what net/mail would find, without its cost
			continue
		}
		list, err := mail.ParseAddressList(v)
		if err != nil {
			// Mail readers still show an address from such a field: its
			// domains stay under DMARC, or a broken From would escape
			// the policy.
			d.Problem = "From field does not parse"
			for _, dom := range lenientDomains(v) {
				addrs++
				if !containsStr(d.Domains, dom) && len(d.Domains) < maxFromDomains {
					d.Domains = append(d.Domains, dom)
				}
			}
			continue
		}
		for _, a := range list {
			add(a.Address)
		}
	}
	switch {
	case d.Problem != "":
	case fields == 0:
		d.Problem = "no From field"
	case fields > 1:
		d.Problem = "several From fields"
	case addrs > 1:
		d.Problem = "several From addresses"
	}
	return d
}

// simpleAddress returns the address of a From value in one of the common
// forms "local@domain" and "Display Name <local@domain>", made of plain
// ASCII words (letters, digits and a few marks) and single spaces only:
// the one address net/mail.ParseAddressList finds in it
// (FuzzSimpleAddress holds the two to that). ok is false for anything
// else (quotes, comments, encoded words, groups, several addresses),
// which net/mail then parses.
func simpleAddress(v string) (addr string, ok bool) {
	if i := strings.IndexByte(v, '<'); i >= 0 {
		if !strings.HasSuffix(v, ">") {
			return "", false
		}
		// The display name: words separated by single spaces.
		phrase := strings.TrimSuffix(v[:i], " ")
		for w := range strings.SplitSeq(phrase, " ") {
			if w == "" && phrase != "" {
				return "", false
			}
			for j := 0; j < len(w); j++ {
				if c := w[j]; !isAlnum(c) && c != '-' && c != '_' {
					return "", false
				}
			}
		}
		v = v[i+1 : len(v)-1]
	}
	at := strings.IndexByte(v, '@')
	if at <= 0 || at == len(v)-1 {
		return "", false
	}
	if !plainDotAtom(v[:at], "-_+") || !plainDotAtom(v[at+1:], "-_") {
		return "", false
	}
	return v, true
}

// plainDotAtom reports whether s is atoms of letters, digits and marks
// joined by single dots.
func plainDotAtom(s, marks string) bool {
	prev := byte('.')
	for j := 0; j < len(s); j++ {
		c := s[j]
		switch {
		case isAlnum(c) || strings.IndexByte(marks, c) >= 0:
		case c == '.' && prev != '.':
		default:
			return false
		}
		prev = c
	}
	return prev != '.'
}

// lenientDomains returns the domain names that follow an '@' in v, a
// From value that does not parse, lowercased, without a final dot.
func lenientDomains(v string) []string {
	var out []string
	for i := 0; i < len(v) && len(out) < maxFromDomains; i++ {
		if v[i] != '@' {
			continue
		}
		j := i + 1
		for j < len(v) {
			c := v[j]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.' || c >= 0x80) {
				break
			}
			j++
		}
		if dom := strings.TrimSuffix(strings.ToLower(v[i+1:j]), "."); IsDomainName(dom) {
			out = append(out, dom)
		}
		i = j - 1
	}
	return out
}

func containsStr(l []string, s string) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}

// ForgedResults returns a test for header fields (the whole field, name
// to final LF, continuation lines included) that are Authentication-Results
// fields claiming authservID, with or without a version ("mx.example.test
// 1;"), compared case-insensitively: RFC 8601 5 has them removed, so that
// a sender cannot forge our verdicts. The test is safe for concurrent use.
func ForgedResults(authservID string) func(field []byte) bool {
	id := strings.ToLower(authservID)
	return func(f []byte) bool {
		colon := bytes.IndexByte(f, ':')
		if colon < 0 || !strings.EqualFold(string(bytes.TrimRight(f[:colon], " \t")), "authentication-results") {
			return false
		}
		got, ok := authservIDOf(f[colon+1:])
		return ok && strings.ToLower(got) == id
	}
}

// authservIDOf returns the authserv-id at the start of an
// Authentication-Results value (RFC 8601 2.2: [CFWS] authserv-id), a
// token or a quoted string; comments and white space before it are
// skipped.
func authservIDOf(v []byte) (string, bool) {
	i := skipCFWS(v, 0)
	if i >= len(v) {
		return "", false
	}
	if v[i] == '"' {
		var sb strings.Builder
		for j := i + 1; j < len(v); j++ {
			switch v[j] {
			case '\\':
				if j+1 < len(v) {
					j++
					sb.WriteByte(v[j])
				}
			case '"':
				return sb.String(), true
			default:
				sb.WriteByte(v[j])
			}
		}
		return "", false
	}
	j := i
	for j < len(v) && !isSpace(v[j]) && v[j] != ';' && v[j] != '(' {
		j++
	}
	return string(v[i:j]), j > i
}

// skipCFWS skips white space, line ends and (nested) comments.
func skipCFWS(v []byte, i int) int {
	depth := 0
	for ; i < len(v); i++ {
		c := v[i]
		switch {
		case c == '\\' && depth > 0:
			i++
		case c == '(':
			depth++
		case c == ')' && depth > 0:
			depth--
		case depth > 0, isSpace(c):
		default:
			return i
		}
	}
	return i
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\r' || c == '\n' }
