package spool

import (
	"bytes"
	"net/netip"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// maxReceived is the hop limit: a message arriving with more Received
// fields than this is looping (RFC 5321 6.3; Postfix's hopcount_limit).
const maxReceived = 50

// span is a byte range [start, end) of the message.
type span struct{ start, end int }

// scanHeader walks the header section of msg, up to the first empty line
// (RFC 5322 2.1), and returns the number of Received fields and the byte
// ranges of every Return-Path field, continuation lines included. Field
// names compare case-insensitively; "Received :" (RFC 5322 4.5 obsolete
// syntax) counts too. A message without an empty line is all header.
func scanHeader(msg []byte) (received int, returnPaths []span) {
	cut := -1 // start of the Return-Path field being cut, or -1
	off := 0
	for off < len(msg) {
		end := len(msg)
		if i := bytes.IndexByte(msg[off:], '\n'); i >= 0 {
			end = off + i + 1
		}
		line := msg[off:end]
		if len(bytes.TrimRight(line, "\r\n")) == 0 {
			break
		}
		// A line starting with white space continues the previous field
		// (RFC 5322 2.2.3); only a new field ends a cut.
		if line[0] != ' ' && line[0] != '\t' {
			if cut >= 0 {
				returnPaths = append(returnPaths, span{cut, off})
				cut = -1
			}
			switch name := fieldName(line); {
			case asciiEqualFold(name, "received"):
				received++
			case asciiEqualFold(name, "return-path"):
				cut = off
			}
		}
		off = end
	}
	if cut >= 0 {
		returnPaths = append(returnPaths, span{cut, off})
	}
	return received, returnPaths
}

// fieldName returns the name of the header field starting line, without
// trailing white space, or nil if the line has no colon.
func fieldName(line []byte) []byte {
	i := bytes.IndexByte(line, ':')
	if i < 0 {
		return nil
	}
	return bytes.TrimRight(line[:i], " \t")
}

// unattachedField opens a header field of nanomx's own in front of a
// message that starts with white space (see appendKept).
var unattachedField = []byte("X-Nanomx-Unattached:")

// appendKept appends to segs the parts of msg outside the cut spans, which
// must be sorted and disjoint, skipping empty parts. segs ends with the
// trace fields nanomx wrote.
//
// Client content must never extend a field nanomx wrote: a message whose
// first line starts with SP or HTAB would otherwise be a continuation of
// our Received field (RFC 5322 2.2.3), letting the client add to our trace
// (a fake "from", a comment, a date). Such leading lines belong to no field
// of the client's, and scanHeader counts and cuts nothing in them; they are
// kept, every octet, as the value of a field of their own, named
// unattachedField. Dropping them would lose data silently, and an empty
// line would turn the client's whole header into body.
func appendKept(segs [][]byte, msg []byte, cuts []span) [][]byte {
	off := 0
	for _, c := range cuts {
		if c.start > off {
			segs = appendSeg(segs, msg[off:c.start], off == 0)
		}
		off = c.end
	}
	if off < len(msg) {
		segs = appendSeg(segs, msg[off:], off == 0)
	}
	return segs
}

// appendSeg appends seg, opening unattachedField in front of it when it
// is the first kept part and starts with white space. Only the first can:
// a cut Return-Path field takes its continuation lines with it.
func appendSeg(segs [][]byte, seg []byte, first bool) [][]byte {
	if first && (seg[0] == ' ' || seg[0] == '\t') {
		segs = append(segs, unattachedField)
	}
	return append(segs, seg)
}

// rfc5322Date is the RFC 5322 3.3 date-time layout with a numeric zone.
const rfc5322Date = "Mon, 02 Jan 2006 15:04:05 -0700"

// traceHeader returns the Return-Path and Received fields to prepend to m,
// LF-terminated and folded so that lines stay short (RFC 5321 4.4):
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
// LF or unbalanced parenthesis in HELO or an address.
func traceHeader(m *Message, host string) []byte {
	b := make([]byte, 0, 256+len(m.From)+len(m.Helo)+len(m.TLS))
	b = append(b, "Return-Path: <"...)
	b = appendPath(b, m.From)
	b = append(b, ">\nReceived: from "...)
	if m.Helo == "" {
		b = append(b, "unknown"...)
	} else {
		b = appendToken(b, m.Helo, maxDomainBytes)
	}
	if ip := m.RemoteIP.Unmap().WithZone(""); ip.IsValid() {
		b = append(b, " ("...)
		b = appendAddrLiteral(b, ip)
		b = append(b, ')')
	}
	b = append(b, "\n\tby "...)
	b = append(b, host...)
	b = append(b, " (nanomx) with "...)
	if m.Protocol == "" {
		b = append(b, "SMTP"...)
	} else {
		b = appendToken(b, m.Protocol, 32)
	}
	sep := " "
	if m.TLS != "" {
		b = append(b, "\n\t(using "...)
		b = appendComment(b, m.TLS, 200)
		b = append(b, ')')
		sep = "\n\t"
	}
	if m.ID != "" {
		b = append(b, sep...)
		b = append(b, "id "...)
		b = appendToken(b, m.ID, 64)
	}
	if len(m.Rcpts) == 1 {
		b = append(b, "\n\tfor <"...)
		b = appendPath(b, m.Rcpts[0])
		b = append(b, '>')
	}
	b = append(b, ";\n\t"...)
	t := m.Received
	if t.IsZero() {
		t = time.Now()
	}
	b = t.AppendFormat(b, rfc5322Date)
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
// documents (the Mailbox of RFC 5321 4.1.2: local part a Dot-string, or a
// Quoted-string escaping only '"' and '\\'; UTF-8 kept, RFC 6531 3.3).
// Such an address is written verbatim. Anything else, which only a caller
// bypassing proto can hand in, is rewritten defensively into that form: a
// leading quoted string is decoded, the local part quoted again when it is
// no Dot-string, and control characters, invalid UTF-8 and non-graphic
// runes become '?'. Either way no CR, LF or other control reaches the
// header, and neither an unquoted SP or '>' nor a lone quote.
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
