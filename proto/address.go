package proto

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// Address is a mailbox address (the Mailbox of RFC 5321 4.1.2) as nanomx
// carries it from the parser on. Its one string form is the canonical form
// Envelope documents, which String writes and ParseAddress reads.
//
// The zero Address is the null reverse-path <>: its String is "". Address
// is comparable, and two Addresses are equal exactly when their canonical
// forms are.
type Address struct {
	// Local is the local part as the string it names: the content of a
	// Quoted-string without its quotes and backslash escapes ("john doe"
	// for <"john\ doe"@x>), a Dot-string as it is. Case is kept.
	Local string
	// Domain is the domain as received: case and UTF-8 U-labels kept, no
	// root dot; or an address literal such as [192.0.2.1] or
	// [IPv6:2001:db8::1]. It is empty only for the bare <Postmaster> of
	// RFC 5321 4.1.1.3, in any case, and for the null reverse-path.
	Domain string
}

// ErrBadAddress is ParseAddress's error for a string that is not an
// address in the canonical form.
var ErrBadAddress = errors.New("proto: not an address in canonical form")

// IsNull reports the null reverse-path <>.
func (a Address) IsNull() bool { return a == Address{} }

// Quoted reports whether the canonical form quotes the local part: Local
// is not a Dot-string (RFC 5321 4.1.2, with RFC 6531 UTF-8 as atext). It
// is computed from Local, so an Address built by hand cannot disagree with
// its own string form.
func (a Address) Quoted() bool { return !a.IsNull() && !dotString(a.Local) }

// UTF8 reports whether the address holds octets beyond ASCII (RFC 6531: a
// UTF-8 local part or U-label domain).
func (a Address) UTF8() bool { return !isASCIIString(a.Local) || !isASCIIString(a.Domain) }

// String returns the canonical form: the local part as a Dot-string, or
// as a Quoted-string escaping only '"' and '\'; then "@" and the domain
// unless there is none. The null reverse-path is "".
func (a Address) String() string {
	switch {
	case a.IsNull():
		return ""
	case a.Domain == "" && !a.Quoted():
		return a.Local
	case !a.Quoted():
		return a.Local + "@" + a.Domain
	}
	return string(a.AppendTo(make([]byte, 0, len(a.Local)+len(a.Domain)+8)))
}

// AppendTo appends the canonical form to b, as String returns it.
func (a Address) AppendTo(b []byte) []byte {
	if a.IsNull() {
		return b
	}
	if !a.Quoted() {
		b = append(b, a.Local...)
	} else {
		b = append(b, '"')
		for i := 0; i < len(a.Local); i++ {
			if c := a.Local[i]; c == '"' || c == '\\' {
				b = append(b, '\\')
			}
			b = append(b, a.Local[i])
		}
		b = append(b, '"')
	}
	if a.Domain != "" {
		b = append(b, '@')
		b = append(b, a.Domain...)
	}
	return b
}

// ParseAddress parses s, which must be in the canonical form Envelope
// documents, exactly as the session's parser writes it: "" (the null
// reverse-path), a Dot-string local part or a minimal Quoted-string, then
// "@" and a domain or address literal; or <Postmaster> alone. Any other
// string, even one the parser would bring to that form, is ErrBadAddress:
// ParseAddress reads what proto produced, it does not parse the wire. So
// ParseAddress(s).String() == s whenever ParseAddress succeeds. Local is
// a substring of s unless it had escapes.
func ParseAddress(s string) (Address, error) {
	if s == "" {
		return Address{}, nil
	}
	if !isASCIIString(s) && !utf8.ValidString(s) {
		return Address{}, badAddress(s, "invalid UTF-8")
	}
	var a Address
	var rest string
	if s[0] == '"' {
		end, escapes := -1, false
	scan:
		for i := 1; i < len(s); i++ {
			switch c := s[i]; {
			case c == '\\':
				if i+1 == len(s) || s[i+1] != '"' && s[i+1] != '\\' {
					return Address{}, badAddress(s, "escape other than \\\" or \\\\")
				}
				escapes = true
				i++
			case c == '"':
				end = i
				break scan
			case c < ' ' || c == 0x7f:
				return Address{}, badAddress(s, "control octet")
			}
		}
		if end < 0 {
			return Address{}, badAddress(s, "unterminated quoted string")
		}
		a.Local = s[1:end]
		if escapes {
			a.Local = unescape(a.Local)
		}
		if dotString(a.Local) {
			return Address{}, badAddress(s, "quoted Dot-string")
		}
		rest = s[end+1:]
	} else {
		at := strings.IndexByte(s, '@')
		if at < 0 {
			at = len(s)
		}
		a.Local, rest = s[:at], s[at:]
		if !dotString(a.Local) {
			return Address{}, badAddress(s, "local part is neither a Dot-string nor quoted")
		}
	}
	if rest == "" {
		// RFC 5321 4.1.1.3: only Postmaster may come without a domain.
		if a.Quoted() || !strings.EqualFold(a.Local, "postmaster") {
			return Address{}, badAddress(s, "no domain")
		}
		return a, nil
	}
	if rest[0] != '@' || !validDomain(rest[1:]) {
		return Address{}, badAddress(s, "bad domain")
	}
	a.Domain = rest[1:]
	return a, nil
}

// FromAddress returns the reverse-path as an Address: the zero Address for
// the null reverse-path.
func (e Envelope) FromAddress() (Address, error) { return ParseAddress(string(e.From)) }

// RcptAddresses appends the accepted forward-paths to dst as Addresses.
func (e Envelope) RcptAddresses(dst []Address) ([]Address, error) {
	for _, r := range e.Rcpts {
		a, err := ParseAddress(string(r))
		if err != nil {
			return dst, err
		}
		dst = append(dst, a)
	}
	return dst, nil
}

func badAddress(s, why string) error {
	if len(s) > 64 {
		s = s[:64] + "..."
	}
	return fmt.Errorf("%w: %q: %s", ErrBadAddress, s, why)
}

// unescape decodes the quoted-pairs of a Quoted-string's content.
func unescape(q string) string {
	var b strings.Builder
	b.Grow(len(q))
	for i := 0; i < len(q); i++ {
		if q[i] == '\\' {
			i++
		}
		b.WriteByte(q[i])
	}
	return b.String()
}

// dotString is isDotString (parse.go) for a string: atoms of atext, every
// octet from 0x80 included (UTF-8 validity is checked on the whole
// address), joined by single dots.
func dotString(s string) bool {
	if s == "" || s[0] == '.' || s[len(s)-1] == '.' {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c == '.' {
			if s[i-1] == '.' {
				return false
			}
		} else if !atext[c] {
			return false
		}
	}
	return true
}

// validDomain checks a domain as parsePath accepts it, after the root dot
// is dropped: at most 255 octets; an address literal of visible ASCII
// without '[', ']' or '\' inside the brackets; or non-empty labels of
// letters, digits, '-', '_' and UTF-8 octets.
func validDomain(d string) bool {
	if d == "" || len(d) > 255 {
		return false
	}
	if d[0] == '[' {
		if len(d) < 3 || d[len(d)-1] != ']' {
			return false
		}
		for i := 1; i < len(d)-1; i++ {
			if c := d[i]; c <= ' ' || c > '~' || c == '[' || c == ']' || c == '\\' {
				return false
			}
		}
		return true
	}
	label := 0
	for i := 0; i < len(d); i++ {
		switch c := d[i]; {
		case c == '.':
			if label == 0 {
				return false
			}
			label = 0
		case domainChar[c]:
			label++
		default:
			return false
		}
	}
	return label > 0
}

func isASCIIString(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}
