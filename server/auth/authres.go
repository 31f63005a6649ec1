package auth

import (
	"strings"
	"unicode"
	"unicode/utf8"
)

// Results are the verdicts for one message, for FormatResults. A nil
// check, or one not Checked, was not run and is left out.
type Results struct {
	IPRev *IPRevResult
	SPF   *SPFResult
	// DKIM holds one result per signature; DKIMChecked with none is
	// dkim=none.
	DKIM        []DKIMResult
	DKIMChecked bool
	// DMARC holds one result per From domain; DMARCChecked with none is
	// dmarc=none (no From domain to evaluate).
	DMARC        []DMARCResult
	DMARCChecked bool
	// DMARCProblem, when set, says why the From field is unusual (RFC
	// 7489 6.6.1); it goes into a comment.
	DMARCProblem string
}

// maxValueBytes bounds each value written (an address, a domain, a
// reason).
const maxValueBytes = 255

// FormatResults writes the Authentication-Results field (RFC 8601 2.2)
// for r under authservID, one result per line, LF-terminated:
//
//	Authentication-Results: mx.example.test;
//		spf=pass smtp.mailfrom=alice@example.org;
//		dkim=pass header.d=example.org header.s=sel header.a=rsa-sha256;
//		dmarc=pass (p=reject) header.from=example.org;
//		iprev=pass policy.iprev=192.0.2.1 (mail.example.org)
//
// Every value from the wire (addresses, names, reasons) is bounded and
// written as a token or a quoted string, so no CR, LF, ';' or unbalanced
// quote can forge another result or field.
func FormatResults(authservID string, r Results) []byte {
	b := make([]byte, 0, 512)
	b = append(b, "Authentication-Results: "...)
	b = appendValue(b, authservID)
	n := 0
	next := func(method string, st Status) {
		b = append(b, ";\n\t"...)
		b = append(b, method...)
		b = append(b, '=')
		b = append(b, st...)
		n++
	}
	reason := func(s string) {
		if s != "" {
			b = append(b, " reason="...)
			b = appendQuoted(b, s)
		}
	}
	prop := func(name, v string) {
		if v != "" {
			b = append(b, ' ')
			b = append(b, name...)
			b = append(b, '=')
			b = appendValue(b, v)
		}
	}
	if s := r.SPF; s != nil {
		next("spf", s.Status)
		reason(s.Reason)
		if s.Helo {
			prop("smtp.helo", s.Identity)
		} else {
			prop("smtp.mailfrom", s.Identity)
		}
	}
	if r.DKIMChecked && len(r.DKIM) == 0 {
		next("dkim", None)
	}
	for _, d := range r.DKIM {
		next("dkim", d.Status)
		reason(d.Reason)
		prop("header.d", d.Domain)
		prop("header.s", d.Selector)
		prop("header.a", d.Algorithm)
	}
	if r.DMARCChecked && len(r.DMARC) == 0 {
		next("dmarc", None)
		if r.DMARCProblem != "" {
			b = appendComment(append(b, " ("...), r.DMARCProblem)
			b = append(b, ')')
		}
	}
	for _, d := range r.DMARC {
		next("dmarc", d.Status)
		reason(d.Reason)
		if d.Policy != "" || r.DMARCProblem != "" {
			b = append(b, " ("...)
			if d.Policy != "" {
				b = append(b, "p="...)
				b = append(b, d.Policy...)
			}
			if r.DMARCProblem != "" {
				if d.Policy != "" {
					b = append(b, ", "...)
				}
				b = appendComment(b, r.DMARCProblem)
			}
			b = append(b, ')')
		}
		prop("header.from", d.Domain)
	}
	if ip := r.IPRev; ip != nil {
		next("iprev", ip.Status)
		reason(ip.Reason)
		if ip.IP.IsValid() {
			var buf [64]byte
			prop("policy.iprev", string(ip.IP.AppendTo(buf[:0]))) // its String, not allocated
		} else {
			prop("policy.iprev", ip.IP.String())
		}
		if ip.Name != "" {
			b = appendComment(append(b, " ("...), ip.Name)
			b = append(b, ')')
		}
	}
	if n == 0 {
		b = append(b, "; none"...)
	}
	return append(b, '\n')
}

// appendValue appends v as an RFC 8601 pvalue: as it is when it is a
// token (RFC 2045) or a dot-atom local part "@" a domain name, else as a
// quoted string.
func appendValue(b []byte, v string) []byte {
	v = truncate(v)
	if v != "" && (isToken(v) || isAddrSpec(v)) {
		return append(b, v...)
	}
	return appendQuoted(b, v)
}

// truncate bounds v to maxValueBytes without splitting a rune.
func truncate(v string) string {
	if len(v) <= maxValueBytes {
		return v
	}
	v = v[:maxValueBytes]
	for len(v) > 0 && !utf8.ValidString(v) {
		v = v[:len(v)-1]
	}
	return v
}

// tspecials are RFC 2045 5.1's.
const tspecials = `()<>@,;:\"/[]?=`

func isToken(v string) bool {
	for i := 0; i < len(v); i++ {
		if c := v[i]; c <= ' ' || c >= 0x7f || strings.IndexByte(tspecials, c) >= 0 {
			return false
		}
	}
	return true
}

func isAddrSpec(v string) bool {
	at := strings.LastIndexByte(v, '@')
	if at <= 0 || at == len(v)-1 {
		return false
	}
	local, dom := v[:at], v[at+1:]
	if local[0] == '.' || local[len(local)-1] == '.' || strings.Contains(local, "..") {
		return false
	}
	for i := 0; i < len(local); i++ {
		c := local[i]
		if !(isAlnum(c) || c == '.' || strings.IndexByte(atextSpecials, c) >= 0) {
			return false
		}
	}
	for i := 0; i < len(dom); i++ {
		if c := dom[i]; !(isAlnum(c) || c == '.' || c == '-') {
			return false
		}
	}
	return true
}

const atextSpecials = "!#$%&'*+-/=?^_`{|}~"

func isAlnum(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
}

// appendQuoted appends v as a quoted string: '"' and '\\' escaped,
// control characters, invalid UTF-8 and non-graphic runes as '?'.
func appendQuoted(b []byte, v string) []byte {
	b = append(b, '"')
	for _, r := range truncate(v) {
		switch {
		case r == '"' || r == '\\':
			b = append(b, '\\', byte(r))
		case r < 0x20 || r == 0x7f || r == utf8.RuneError || r >= 0x80 && !unicode.IsGraphic(r):
			b = append(b, '?')
		default:
			b = utf8.AppendRune(b, r)
		}
	}
	return append(b, '"')
}

// appendComment appends the inside of a comment: printable ASCII without
// parentheses or backslash.
func appendComment(b []byte, s string) []byte {
	s = truncate(s)
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c > 0x7e || c == '(' || c == ')' || c == '\\' {
			c = '?'
		}
		b = append(b, c)
	}
	return b
}
