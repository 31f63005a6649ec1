package server

import (
	"net/netip"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/nanomx/nanomx/proto"
)

// trace is what the trace fields of one message say (RFC 5321 4.4). The
// server fills it at submit, or when a spilled message's data begins.
type trace struct {
	// ID is the queue id; "" leaves out the id clause.
	ID string
	// From is the reverse-path; the zero Address is the null sender.
	From proto.Address
	// Rcpts are the accepted recipients: "for" names the only one.
	Rcpts []proto.Address
	// Helo is the client's HELO/EHLO argument; "" becomes "unknown".
	Helo string
	// Name is the client's host name as iprev confirmed it, or "unknown"
	// (Postfix's word) when it did not; "" (iprev off) shows the address
	// alone.
	Name string
	// RemoteIP is the client address.
	RemoteIP netip.Addr
	// Protocol is the RFC 3848 "with" keyword: "SMTP", "ESMTP", "ESMTPS",
	// "UTF8SMTP", "UTF8SMTPS" (protocolName); "" becomes "SMTP".
	Protocol string
	// TLS describes the TLS session, e.g. "TLSv1.3 with cipher
	// TLS_AES_128_GCM_SHA256"; empty without TLS.
	TLS string
	// Received is the Received field's date; zero means now.
	Received time.Time
}

// maxHeloBytes bounds the HELO name shown, as RFC 5321 4.5.3.1.2 bounds a
// domain.
const maxHeloBytes = 255

// rfc5322Date is the RFC 5322 3.3 date-time layout with a numeric zone.
const rfc5322Date = "Mon, 02 Jan 2006 15:04:05 -0700"

// traceFields returns the Return-Path and Received fields to prepend to a
// message (spool.Message.Trace), LF-terminated and folded so that lines
// stay short (RFC 5321 4.4); host is this MX's name, as validated and
// lowercased for the spool:
//
//	Return-Path: <from>
//	Received: from helo ([192.0.2.1])
//		by host (nanomx) with ESMTPS
//		(using TLSv1.3 with cipher TLS_AES_128_GCM_SHA256)
//		id ID
//		for <rcpt>;
//		Mon, 02 Jan 2006 15:04:05 -0700
//
// The TLS comment appears only with TLS, "for" only with exactly one
// recipient (more would disclose Bcc recipients to each other). Every value
// from the client is sanitized: a header must never be forged through a CR,
// LF or unbalanced parenthesis in HELO or an address. It is a pure
// function of t (and the clock, for a zero Received).
func traceFields(t *trace, host string) []byte {
	from := t.From.String()
	b := make([]byte, 0, 256+len(from)+len(t.Helo)+len(t.TLS))
	b = append(b, "Return-Path: <"...)
	b = appendPath(b, from)
	b = append(b, ">\nReceived: from "...)
	if t.Helo == "" {
		b = append(b, "unknown"...)
	} else {
		b = appendToken(b, t.Helo, maxHeloBytes)
	}
	if ip := t.RemoteIP.Unmap().WithZone(""); ip.IsValid() {
		b = append(b, " ("...)
		if t.Name != "" {
			b = appendToken(b, t.Name, 253)
			b = append(b, ' ')
		}
		b = appendAddrLiteral(b, ip)
		b = append(b, ')')
	}
	b = append(b, "\n\tby "...)
	b = appendToken(b, host, 253) // a valid host name passes as it is
	b = append(b, " (nanomx) with "...)
	if t.Protocol == "" {
		b = append(b, "SMTP"...)
	} else {
		b = appendToken(b, t.Protocol, 32)
	}
	sep := " "
	if t.TLS != "" {
		b = append(b, "\n\t(using "...)
		b = appendComment(b, t.TLS, 200)
		b = append(b, ')')
		sep = "\n\t"
	}
	if t.ID != "" {
		b = append(b, sep...)
		b = append(b, "id "...)
		b = appendToken(b, t.ID, 64)
	}
	if len(t.Rcpts) == 1 {
		b = append(b, "\n\tfor <"...)
		b = appendPath(b, t.Rcpts[0].String())
		b = append(b, '>')
	}
	b = append(b, ";\n\t"...)
	when := t.Received
	if when.IsZero() {
		when = time.Now()
	}
	b = when.AppendFormat(b, rfc5322Date)
	return append(b, '\n')
}

// appendAddrLiteral appends an RFC 5321 4.1.3 address literal:
// [192.0.2.1] or [IPv6:2001:db8::1].
func appendAddrLiteral(b []byte, ip netip.Addr) []byte {
	b = append(b, '[')
	if ip.Is6() {
		b = append(b, "IPv6:"...)
	}
	b = ip.AppendTo(b)
	return append(b, ']')
}

// appendToken appends at most limit bytes of s, replacing everything but
// printable ASCII (0x21-0x7e) with '?', and also the characters that would
// end a clause or open or close a comment in a Received field.
func appendToken(b []byte, s string, limit int) []byte {
	s = s[:min(len(s), limit)]
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x21 || c > 0x7e || strings.IndexByte(`();\`, c) >= 0 {
			c = '?'
		}
		b = append(b, c)
	}
	return b
}

// appendComment is appendToken for the inside of a comment: spaces are
// kept.
func appendComment(b []byte, s string, limit int) []byte {
	s = s[:min(len(s), limit)]
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c > 0x7e || strings.IndexByte(`()\`, c) >= 0 {
			c = '?'
		}
		b = append(b, c)
	}
	return b
}

// appendPath appends addr, a mailbox in the canonical form proto.Envelope
// documents and proto.Address.String writes (the Mailbox of RFC 5321
// 4.1.2: local part a Dot-string, or a Quoted-string escaping only '"' and
// '\\'; UTF-8 kept, RFC 6531 3.3). Such an address is written verbatim
// unless it holds a rune a header should not show. Anything else (an
// Address built by hand may hold anything) is rewritten defensively into
// that form: a leading quoted string is decoded, the local part quoted
// again when it is no Dot-string, and control characters, invalid UTF-8
// and non-graphic runes become '?'. Either way no CR, LF or other control
// reaches the header, and neither an unquoted SP or '>' nor a lone quote.
func appendPath(b []byte, addr string) []byte {
	if addr == "" {
		return b // the null reverse-path <>
	}
	local, domain, quoted := splitPath(addr)
	if canonicalLocal(local, quoted) && safeDomain(domain) {
		return append(b, addr...)
	}
	if quoted {
		local = unquote(local)
	}
	if isDotString(local) {
		b = append(b, local...)
	} else {
		b = append(b, '"')
		for _, r := range sanitizeRunes(local) {
			if r == '"' || r == '\\' {
				b = append(b, '\\')
			}
			b = utf8.AppendRune(b, r)
		}
		b = append(b, '"')
	}
	for _, r := range sanitizeRunes(domain) {
		if r == ' ' || r == '<' || r == '>' || r == '"' || r == '\\' {
			r = '?'
		}
		b = utf8.AppendRune(b, r)
	}
	return b
}

// splitPath splits addr into its local part and the rest ("@domain" or
// ""). A local part starting with a quote ends at the matching quote, so
// its '@' are not the separator; quoted is false when there is none.
// Otherwise the local part ends at the last '@'.
func splitPath(addr string) (local, domain string, quoted bool) {
	if addr[0] == '"' {
		for i := 1; i < len(addr); i++ {
			switch addr[i] {
			case '\\':
				i++
			case '"':
				return addr[:i+1], addr[i+1:], true
			}
		}
	}
	if at := strings.LastIndexByte(addr, '@'); at >= 0 {
		return addr[:at], addr[at:], false
	}
	return addr, "", false
}

// canonicalLocal reports a local part in canonical form: a Dot-string, or
// a Quoted-string of printable ASCII and graphic UTF-8 whose only escapes
// are \" and \\ and whose content is no Dot-string.
func canonicalLocal(local string, quoted bool) bool {
	if !quoted {
		return isDotString(local)
	}
	q := local[1 : len(local)-1]
	for i := 0; i < len(q); i++ {
		switch c := q[i]; {
		case c == '\\':
			if i+1 == len(q) || q[i+1] != '"' && q[i+1] != '\\' {
				return false
			}
			i++
		case c == '"' || c < 0x20 || c == 0x7f:
			return false
		case c >= 0x80:
			r, n := utf8.DecodeRuneInString(q[i:])
			if r == utf8.RuneError || !unicode.IsGraphic(r) {
				return false
			}
			i += n - 1
		}
	}
	return !isDotString(q)
}

// unquote decodes a quoted string, quotes included: each quoted-pair
// stands for its octet.
func unquote(q string) string {
	q = q[1 : len(q)-1]
	if strings.IndexByte(q, '\\') < 0 {
		return q
	}
	var sb strings.Builder
	for i := 0; i < len(q); i++ {
		if q[i] == '\\' && i+1 < len(q) {
			i++
		}
		sb.WriteByte(q[i])
	}
	return sb.String()
}

// safeDomain reports "" or "@" and a domain or address literal of visible
// ASCII and graphic UTF-8, without '<', '>', '"', '\\' or another '@'.
func safeDomain(d string) bool {
	if d == "" {
		return true
	}
	if d[0] != '@' || len(d) == 1 {
		return false
	}
	for _, r := range d[1:] {
		switch {
		case r == utf8.RuneError, r <= ' ', r == 0x7f, strings.ContainsRune("<>\"\\@", r):
			return false
		case r >= 0x80 && !unicode.IsGraphic(r):
			return false
		}
	}
	return true
}

// sanitizeRunes returns s's runes with control characters, invalid UTF-8
// and non-graphic Unicode (line separators, bidi overrides, C1 controls)
// replaced by '?'.
func sanitizeRunes(s string) []rune {
	rs := []rune(s)
	for i, r := range rs {
		if r < 0x20 || r == 0x7f || r == utf8.RuneError || r >= 0x80 && !unicode.IsGraphic(r) {
			rs[i] = '?'
		}
	}
	return rs
}

// isDotString reports whether s is an RFC 5321 Dot-string, with RFC 6531
// UTF-8 allowed.
func isDotString(s string) bool {
	if s == "" || s[0] == '.' || s[len(s)-1] == '.' || strings.Contains(s, "..") || !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		switch {
		case r >= 0x80 && unicode.IsGraphic(r):
		case r < 0x80 && (isLowerAlnum(byte(r)) || 'A' <= r && r <= 'Z' || r == '.' || strings.IndexRune(atextSpecials, r) >= 0):
		default:
			return false
		}
	}
	return true
}

// atextSpecials are the non-alphanumeric atext characters (RFC 5322 3.2.3).
const atextSpecials = "!#$%&'*+-/=?^_`{|}~"

func isLowerAlnum(c byte) bool { return 'a' <= c && c <= 'z' || '0' <= c && c <= '9' }
