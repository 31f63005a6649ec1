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

// appendKept appends to segs the parts of msg outside the cut spans, which
// must be sorted and disjoint, skipping empty parts.
func appendKept(segs [][]byte, msg []byte, cuts []span) [][]byte {
	off := 0
	for _, c := range cuts {
		if c.start > off {
			segs = append(segs, msg[off:c.start])
		}
		off = c.end
	}
	if off < len(msg) {
		segs = append(segs, msg[off:])
	}
	return segs
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

// appendPath appends addr, a mailbox as received with its local part
// unquoted, in RFC 5321 4.1.2 form: the local part as a Dot-string when it
// is one, else as a Quoted-string. UTF-8 is kept (RFC 6531 3.3); control
// characters and invalid UTF-8 become '?'.
func appendPath(b []byte, addr string) []byte {
	if addr == "" {
		return b // the null reverse-path <>
	}
	local, domain := addr, ""
	if at := strings.LastIndexByte(addr, '@'); at >= 0 {
		local, domain = addr[:at], addr[at:]
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
		if r == ' ' || r == '<' || r == '>' {
			r = '?'
		}
		b = utf8.AppendRune(b, r)
	}
	return b
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
