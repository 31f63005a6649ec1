package proto

import (
	"unicode/utf8"
)

// Verbs are the first four octets of a command, case-folded to lower case,
// packed in a uint32 so dispatch is one comparison and no allocation.
const (
	verbHelo = 'h'<<24 | 'e'<<16 | 'l'<<8 | 'o'
	verbEhlo = 'e'<<24 | 'h'<<16 | 'l'<<8 | 'o'
	verbMail = 'm'<<24 | 'a'<<16 | 'i'<<8 | 'l'
	verbRcpt = 'r'<<24 | 'c'<<16 | 'p'<<8 | 't'
	verbData = 'd'<<24 | 'a'<<16 | 't'<<8 | 'a'
	verbBdat = 'b'<<24 | 'd'<<16 | 'a'<<8 | 't'
	verbRset = 'r'<<24 | 's'<<16 | 'e'<<8 | 't'
	verbNoop = 'n'<<24 | 'o'<<16 | 'o'<<8 | 'p'
	verbQuit = 'q'<<24 | 'u'<<16 | 'i'<<8 | 't'
	verbVrfy = 'v'<<24 | 'r'<<16 | 'f'<<8 | 'y'
	verbHelp = 'h'<<24 | 'e'<<16 | 'l'<<8 | 'p'
	verbExpn = 'e'<<24 | 'x'<<16 | 'p'<<8 | 'n'
	verbTurn = 't'<<24 | 'u'<<16 | 'r'<<8 | 'n'
	verbEtrn = 'e'<<24 | 't'<<16 | 'r'<<8 | 'n'
	verbAtrn = 'a'<<24 | 't'<<16 | 'r'<<8 | 'n'
	verbAuth = 'a'<<24 | 'u'<<16 | 't'<<8 | 'h'
	verbSend = 's'<<24 | 'e'<<16 | 'n'<<8 | 'd'
	verbSoml = 's'<<24 | 'o'<<16 | 'm'<<8 | 'l'
	verbSaml = 's'<<24 | 'a'<<16 | 'm'<<8 | 'l'
	verbStar = 's'<<24 | 't'<<16 | 'a'<<8 | 'r' // STARTTLS
)

// splitVerb returns the case-folded verb of a command line (without CRLF)
// and its argument with leading and trailing spaces removed. A verb that is
// not exactly four letters followed by a space or the end yields 0, except
// STARTTLS, which is reported as verbStar.
func splitVerb(line []byte) (verb uint32, arg []byte) {
	if len(line) < 4 {
		return 0, nil
	}
	for _, c := range line[:4] {
		verb = verb<<8 | uint32(c|0x20)
	}
	rest := line[4:]
	if verb == verbStar {
		if len(rest) >= 4 && equalFold(rest[:4], "ttls") && (len(rest) == 4 || rest[4] == ' ') {
			return verbStar, trimSpace(rest[4:])
		}
		return 0, nil
	}
	if len(rest) > 0 && rest[0] != ' ' {
		return 0, nil
	}
	return verb, trimSpace(rest)
}

// trimSpace removes leading and trailing SP (and HTAB, which some clients
// put before CRLF).
func trimSpace(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	return b
}

// equalFold compares b with the lower-case ASCII string s, ignoring case.
func equalFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range len(b) {
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

// hasPrefixFold reports whether b starts with the lower-case string s.
func hasPrefixFold(b []byte, s string) bool {
	return len(b) >= len(s) && equalFold(b[:len(s)], s)
}

// nextToken splits b at the first SP: the token and the rest with leading
// spaces removed.
func nextToken(b []byte) (tok, rest []byte) {
	i := 0
	for i < len(b) && b[i] != ' ' {
		i++
	}
	tok, rest = b[:i], b[i:]
	for len(rest) > 0 && rest[0] == ' ' {
		rest = rest[1:]
	}
	return tok, rest
}

// parseDigits parses a decimal number of at most 18 digits (so it fits an
// int64 without overflow checks). ok is false for anything else.
func parseDigits(b []byte) (n int64, ok bool) {
	if len(b) == 0 || len(b) > 18 {
		return 0, false
	}
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	return n, true
}

// path is the result of parsing a reverse-path or forward-path.
type path struct {
	null     bool // "<>"
	noDomain bool // no "@domain": only <Postmaster> may be so
	utf8     bool // some octet >= 0x80
}

// pathError says why a path was refused.
type pathError uint8

const (
	pathOK pathError = iota
	pathSyntax
	pathBadUTF8
)

// isAtext reports RFC 5322 atext, which RFC 5321's Atom uses. '%' and '!'
// are atext, so old source-routing local parts pass.
var atext [256]bool

// isDomainChar reports octets allowed in a domain label. '_' is not LDH but
// real hosts use it, so it is tolerated.
var domainChar [256]bool

func init() {
	for c := 'a'; c <= 'z'; c++ {
		atext[c], atext[c-'a'+'A'] = true, true
		domainChar[c], domainChar[c-'a'+'A'] = true, true
	}
	for c := '0'; c <= '9'; c++ {
		atext[c], domainChar[c] = true, true
	}
	for _, c := range "!#$%&'*+-/=?^_`{|}~" {
		atext[c] = true
	}
	domainChar['-'], domainChar['_'] = true, true
	for c := 0x80; c < 0x100; c++ {
		atext[c], domainChar[c] = true, true // UTF-8, checked separately
	}
}

// parsePath parses a path at the start of b: "<...>" as RFC 5321 4.1.2 has
// it, or a bare address as some clients send. A source route ("@a,@b:") is
// dropped (RFC 5321 4.1.2 and C). The address is appended to dst in the
// canonical form Envelope documents. rest is what follows the path (the
// parameters).
func parsePath(b, dst []byte) (out []byte, rest []byte, p path, perr pathError) {
	out = dst
	var inner []byte
	if len(b) > 0 && b[0] == '<' {
		end := closeAngle(b)
		if end < 0 {
			return out, nil, p, pathSyntax
		}
		inner, rest = b[1:end], b[end+1:]
		if len(rest) > 0 && rest[0] != ' ' {
			return out, nil, p, pathSyntax
		}
	} else {
		// Bare address: up to the first space outside quotes.
		i, inQuote := 0, false
		for ; i < len(b); i++ {
			c := b[i]
			if inQuote && c == '\\' {
				i++
				continue
			}
			if c == '"' {
				inQuote = !inQuote
			} else if c == ' ' && !inQuote {
				break
			}
		}
		if inQuote || i == 0 {
			return out, nil, p, pathSyntax
		}
		inner, rest = b[:i], b[i:]
	}
	for len(rest) > 0 && rest[0] == ' ' {
		rest = rest[1:]
	}
	if len(inner) == 0 {
		p.null = true
		return out, rest, p, pathOK
	}
	// Source route: "@one,@two:user@host".
	if inner[0] == '@' {
		i := 0
		for i < len(inner) && inner[i] != ':' {
			c := inner[i]
			if c != '@' && c != ',' && c != '.' && c != '[' && c != ']' && !domainChar[c] {
				return out, nil, p, pathSyntax
			}
			i++
		}
		// A route must lead to a mailbox: "<@a:>" has none.
		if i+1 >= len(inner) {
			return out, nil, p, pathSyntax
		}
		inner = inner[i+1:]
	}
	// Local part, written in canonical form (see Envelope).
	start := len(out)
	if inner[0] == '"' {
		i := 1
		for ; i < len(inner) && inner[i] != '"'; i++ {
			c := inner[i]
			if c == '\\' {
				// quoted-pairSMTP (RFC 5321 4.1.2): the octet stands for
				// itself. An 8-bit one is tolerated (UTF-8 is checked at
				// the end).
				if i+1 >= len(inner) || inner[i+1] < 32 || inner[i+1] == 127 {
					return out, nil, p, pathSyntax
				}
				i++
				c = inner[i]
			} else if c < 32 || c == 127 {
				return out, nil, p, pathSyntax
			}
			if c >= 0x80 {
				p.utf8 = true
			}
		}
		if i >= len(inner) {
			return out, nil, p, pathSyntax
		}
		q := inner[1:i]
		inner = inner[i+1:]
		out = appendQuoted(out, q)
		if content := out[start+1 : len(out)-1]; isDotString(content) {
			// The string is a Dot-string ("bob", "a\b"): no quotes. An
			// escape left in content would not be atext.
			out = out[:start+copy(out[start:], content)]
		}
	} else {
		i := 0
		for i < len(inner) && inner[i] != '@' {
			c := inner[i]
			if !atext[c] && c != '.' {
				return out, nil, p, pathSyntax
			}
			if c >= 0x80 {
				p.utf8 = true
			}
			i++
		}
		local := inner[:i]
		inner = inner[i:]
		if len(local) == 0 {
			return out, nil, p, pathSyntax
		}
		// Leading, trailing or doubled dots break the Dot-string rule but
		// are tolerated, as Postfix does; such a local part is quoted.
		if isDotString(local) {
			out = append(out, local...)
		} else {
			out = appendQuoted(out, local)
		}
	}
	if len(inner) == 0 {
		p.noDomain = true
		return finishPath(out, start, rest, p)
	}
	if inner[0] != '@' || len(inner) == 1 {
		return out, nil, p, pathSyntax
	}
	domain := inner[1:]
	if len(domain) > 255 {
		return out, nil, p, pathSyntax
	}
	if domain[0] == '[' {
		// Address literal: [192.0.2.1] or [IPv6:...] or a general literal.
		if domain[len(domain)-1] != ']' || len(domain) < 3 {
			return out, nil, p, pathSyntax
		}
		for _, c := range domain[1 : len(domain)-1] {
			if c <= ' ' || c > '~' || c == '[' || c == ']' || c == '\\' {
				return out, nil, p, pathSyntax
			}
		}
	} else {
		if domain[len(domain)-1] == '.' { // a root dot is tolerated and dropped
			domain = domain[:len(domain)-1]
		}
		label := 0
		for _, c := range domain {
			switch {
			case c == '.':
				if label == 0 {
					return out, nil, p, pathSyntax
				}
				label = 0
			case domainChar[c]:
				if c >= 0x80 {
					p.utf8 = true
				}
				label++
			default:
				return out, nil, p, pathSyntax
			}
		}
		if label == 0 {
			return out, nil, p, pathSyntax
		}
	}
	out = append(out, '@')
	out = append(out, domain...)
	return finishPath(out, start, rest, p)
}

func finishPath(out []byte, start int, rest []byte, p path) ([]byte, []byte, path, pathError) {
	if p.utf8 && !utf8.Valid(out[start:]) {
		return out[:start], nil, p, pathBadUTF8
	}
	return out, rest, p, pathOK
}

// closeAngle returns the index of the '>' that closes the '<' at b[0],
// skipping quoted strings, or -1.
func closeAngle(b []byte) int {
	inQuote := false
	for i := 1; i < len(b); i++ {
		switch c := b[i]; {
		case inQuote && c == '\\':
			i++
		case c == '"':
			inQuote = !inQuote
		case c == '>' && !inQuote:
			return i
		}
	}
	return -1
}

// isDotString reports an RFC 5321 Dot-string: atoms of atext (UTF-8
// included, RFC 6531 3.3) joined by single dots.
func isDotString(b []byte) bool {
	if len(b) == 0 || b[0] == '.' || b[len(b)-1] == '.' {
		return false
	}
	for i, c := range b {
		if c == '.' {
			if b[i-1] == '.' {
				return false
			}
		} else if !atext[c] {
			return false
		}
	}
	return true
}

// appendQuoted appends the content of a quoted string (or an unquoted
// local part that is no Dot-string) as a canonical Quoted-string: quoted-
// pairs decoded, and only '"' and '\\' escaped again.
func appendQuoted(out, q []byte) []byte {
	out = append(out, '"')
	for i := 0; i < len(q); i++ {
		c := q[i]
		if c == '\\' {
			i++
			c = q[i]
		}
		if c == '"' || c == '\\' {
			out = append(out, '\\')
		}
		out = append(out, c)
	}
	return append(out, '"')
}

// badCommandByte returns true if line holds NUL or another control octet
// (HTAB aside) that has no place in a command.
func badCommandByte(line []byte) bool {
	for _, c := range line {
		if (c < ' ' && c != '\t') || c == 127 {
			return true
		}
	}
	return false
}
