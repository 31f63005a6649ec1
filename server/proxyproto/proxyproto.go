// Package proxyproto parses the PROXY protocol header, versions 1 (text)
// and 2 (binary), that a proxy such as HAProxy sends before a connection's
// own bytes to pass on the address of the client it relays (HAProxy's
// doc/proxy-protocol.txt, "the spec" below).
//
// Parse reads from a byte slice without copying or allocating, so that a
// server can parse straight from its event loop's inbound buffer and
// discard what was consumed. It only parses: deciding which peers may send
// a header (the spec requires that only trusted proxies may) is the
// caller's job.
//
// Standard library only.
package proxyproto

import (
	"bytes"
	"errors"
	"net/netip"
)

// MaxV1Bytes is the longest version 1 line, CRLF included (spec 2.1: "PROXY
// UNKNOWN" with two full IPv6 addresses and ports).
const MaxV1Bytes = 107

// MaxV2Len bounds the length field of a version 2 header: the address block
// and the TLVs after the 16 fixed bytes. The spec allows 65535; an address
// block takes at most 216 bytes and the TLVs a proxy sends in front of SMTP
// (unique id, authority) a few hundred, so a longer header is refused rather
// than buffered.
const MaxV2Len = 1024

// MaxBytes is the longest header Parse accepts, of either version: the bytes
// a caller may have to hold before Parse decides.
const MaxBytes = 16 + MaxV2Len

// Command is the version 2 command (the low nibble of the 13th byte).
type Command uint8

// The commands. A version 1 header is always CmdProxy.
const (
	// CmdLocal: the proxy opened the connection itself (a health check);
	// the connection's own endpoints are the addresses to use.
	CmdLocal Command = 0x0
	// CmdProxy: the connection is relayed for the client in Source.
	CmdProxy Command = 0x1
)

// Family is the address family and transport of a header: the version 2
// byte (family in the high nibble, transport in the low one). A version 1
// header is TCP4, TCP6 or Unspec ("UNKNOWN").
type Family uint8

// The families the spec defines (2.2); Parse rejects every other value.
const (
	Unspec     Family = 0x00
	TCP4       Family = 0x11
	UDP4       Family = 0x12
	TCP6       Family = 0x21
	UDP6       Family = 0x22
	UnixStream Family = 0x31
	UnixDgram  Family = 0x32
)

func (f Family) String() string {
	switch f {
	case Unspec:
		return "UNSPEC"
	case TCP4:
		return "TCP4"
	case UDP4:
		return "UDP4"
	case TCP6:
		return "TCP6"
	case UDP6:
		return "UDP6"
	case UnixStream:
		return "UNIX-STREAM"
	case UnixDgram:
		return "UNIX-DGRAM"
	}
	return "invalid"
}

// addrLen is the size of a family's version 2 address block; ok is false
// for an undefined family.
func (f Family) addrLen() (n int, ok bool) {
	switch f {
	case Unspec:
		return 0, true
	case TCP4, UDP4:
		return 12, true
	case TCP6, UDP6:
		return 36, true
	case UnixStream, UnixDgram:
		return 216, true
	}
	return 0, false
}

// Header is a parsed PROXY header.
type Header struct {
	// Version is 1 or 2.
	Version uint8
	// Command is CmdProxy, or CmdLocal for a version 2 health check.
	Command Command
	// Family is what the header declared.
	Family Family
	// Source is the client's address and port, Destination the address the
	// client connected to. Both are valid only for a CmdProxy header of
	// family TCP4 or TCP6; otherwise they are the zero AddrPort and the
	// connection's own endpoints stand (spec 2.1 for "UNKNOWN"; 2.2 for
	// LOCAL, UNSPEC, and the UDP and UNIX families, which a TCP receiver
	// treats as UNSPEC). A TCP6 source may be an IPv4-mapped address.
	Source, Destination netip.AddrPort
}

// Errors. Each says why a header was refused; the spec's answer to all of
// them is to close the connection (2.1: "Any sequence which does not exactly
// match the protocol must be discarded and cause the receiver to abort").
var (
	// ErrNotProxy: the bytes are no PROXY header of either version.
	ErrNotProxy = errors.New("proxyproto: not a PROXY protocol header")
	// ErrV1TooLong: no CRLF within MaxV1Bytes.
	ErrV1TooLong = errors.New("proxyproto: v1 line longer than 107 bytes")
	// ErrV1Syntax: the line is not "PROXY <family> <src> <dst> <sport>
	// <dport>\r\n" with single spaces (or "PROXY UNKNOWN ...\r\n").
	ErrV1Syntax = errors.New("proxyproto: malformed v1 line")
	// ErrV1Family: the family is none of TCP4, TCP6 and UNKNOWN.
	ErrV1Family = errors.New("proxyproto: v1 family not TCP4, TCP6 or UNKNOWN")
	// ErrAddress: an address is malformed or not of the declared family.
	ErrAddress = errors.New("proxyproto: invalid address")
	// ErrPort: a port is not a decimal 0-65535 without leading zeros.
	ErrPort = errors.New("proxyproto: invalid port")
	// ErrV2Version: the version nibble is not 2.
	ErrV2Version = errors.New("proxyproto: v2 version is not 2")
	// ErrV2Command: the command is neither LOCAL nor PROXY.
	ErrV2Command = errors.New("proxyproto: v2 command is not LOCAL or PROXY")
	// ErrV2Family: the family/transport byte is not one the spec defines.
	ErrV2Family = errors.New("proxyproto: v2 family or transport undefined")
	// ErrV2Length: the length is over MaxV2Len, or shorter than a PROXY
	// header's address block.
	ErrV2Length = errors.New("proxyproto: v2 length out of range")
)

const (
	sigV1 = "PROXY "
	sigV2 = "\r\n\r\n\x00\r\nQUIT\n"
)

// Parse parses the PROXY header at the start of b, of either version (told
// apart by the first byte, spec 2.2). It returns the header and the number
// of bytes it took; the connection's own bytes follow them.
//
// When b is a proper prefix of a header that could still be valid, Parse
// returns more = true, n = 0 and no error: the caller waits for more bytes
// (a proxy is meant to send the header at once, but TCP need not deliver it
// so). It never asks for more than MaxBytes. Any other failure is an error
// and the connection should be closed. Parse neither keeps nor copies b,
// and it does not allocate.
func Parse(b []byte) (h Header, n int, more bool, err error) {
	if len(b) == 0 {
		return h, 0, true, nil
	}
	switch b[0] {
	case sigV1[0]:
		if k := min(len(b), len(sigV1)); string(b[:k]) != sigV1[:k] {
			return h, 0, false, ErrNotProxy
		} else if k < len(sigV1) {
			return h, 0, true, nil
		}
		return parseV1(b)
	case sigV2[0]:
		if k := min(len(b), len(sigV2)); string(b[:k]) != sigV2[:k] {
			return h, 0, false, ErrNotProxy
		}
		return parseV2(b)
	}
	return h, 0, false, ErrNotProxy
}

// parseV1 parses a version 1 line; b starts with "PROXY ".
func parseV1(b []byte) (h Header, n int, more bool, err error) {
	end := bytes.IndexByte(b[:min(len(b), MaxV1Bytes)], '\n')
	if end < 0 {
		if len(b) >= MaxV1Bytes {
			return h, 0, false, ErrV1TooLong
		}
		return h, 0, true, nil
	}
	// Spec 2.1: a lone LF must not end the line.
	if b[end-1] != '\r' {
		return h, 0, false, ErrV1Syntax
	}
	line := b[len(sigV1) : end-1]
	n = end + 1
	h.Version, h.Command = 1, CmdProxy
	switch {
	case hasPrefix(line, "UNKNOWN") && (len(line) == 7 || line[7] == ' '):
		// Whatever follows UNKNOWN up to the CRLF is ignored (spec 2.1).
		h.Family = Unspec
		return h, n, false, nil
	case hasPrefix(line, "TCP4 "):
		h.Family = TCP4
	case hasPrefix(line, "TCP6 "):
		h.Family = TCP6
	default:
		return Header{}, 0, false, ErrV1Family
	}
	rest := line[5:]
	var f [4][]byte
	for i := range f {
		j := bytes.IndexByte(rest, ' ')
		if i == len(f)-1 {
			if j >= 0 {
				return Header{}, 0, false, ErrV1Syntax // a fifth field
			}
			f[i] = rest
			break
		}
		if j < 0 {
			return Header{}, 0, false, ErrV1Syntax
		}
		f[i], rest = rest[:j], rest[j+1:]
	}
	var src, dst netip.Addr
	var ok bool
	if h.Family == TCP4 {
		src, ok = parseIPv4(f[0])
		if ok {
			dst, ok = parseIPv4(f[1])
		}
	} else {
		src, ok = parseIPv6(f[0])
		if ok {
			dst, ok = parseIPv6(f[1])
		}
	}
	if !ok {
		return Header{}, 0, false, ErrAddress
	}
	sport, ok1 := parsePort(f[2])
	dport, ok2 := parsePort(f[3])
	if !ok1 || !ok2 {
		return Header{}, 0, false, ErrPort
	}
	h.Source = netip.AddrPortFrom(src, sport)
	h.Destination = netip.AddrPortFrom(dst, dport)
	return h, n, false, nil
}

// parseV2 parses a version 2 header; b starts with (a prefix of) the
// signature. Each fixed byte is checked as soon as it has arrived, so that
// a bad header is refused without waiting for the rest.
func parseV2(b []byte) (h Header, n int, more bool, err error) {
	if len(b) > 12 {
		if b[12]>>4 != 2 {
			return h, 0, false, ErrV2Version
		}
		if Command(b[12]&0xf) > CmdProxy {
			return h, 0, false, ErrV2Command
		}
	}
	var need int
	if len(b) > 13 {
		var ok bool
		if need, ok = Family(b[13]).addrLen(); !ok {
			return h, 0, false, ErrV2Family
		}
	}
	if len(b) < 16 {
		return h, 0, true, nil
	}
	h.Version, h.Command, h.Family = 2, Command(b[12]&0xf), Family(b[13])
	l := int(b[14])<<8 | int(b[15])
	// A LOCAL header's address block is ignored whatever its length (the
	// spec: "must not assume zero is presented for LOCAL connections").
	if l > MaxV2Len || (h.Command == CmdProxy && l < need) {
		return Header{}, 0, false, ErrV2Length
	}
	if len(b) < 16+l {
		return Header{}, 0, true, nil
	}
	// TLVs (after the address block) are skipped: nothing here uses them.
	a := b[16:]
	if h.Command == CmdProxy {
		switch h.Family {
		case TCP4:
			h.Source = netip.AddrPortFrom(netip.AddrFrom4([4]byte(a[0:4])), be16(a[8:]))
			h.Destination = netip.AddrPortFrom(netip.AddrFrom4([4]byte(a[4:8])), be16(a[10:]))
		case TCP6:
			h.Source = netip.AddrPortFrom(netip.AddrFrom16([16]byte(a[0:16])), be16(a[32:]))
			h.Destination = netip.AddrPortFrom(netip.AddrFrom16([16]byte(a[16:32])), be16(a[34:]))
		}
	}
	return h, 16 + l, false, nil
}

func be16(b []byte) uint16 { return uint16(b[0])<<8 | uint16(b[1]) }

func hasPrefix(b []byte, p string) bool { return len(b) >= len(p) && string(b[:len(p)]) == p }

// parsePort parses a decimal port, 0 to 65535, without leading zeros (spec
// 2.1: they could be read as octal).
func parsePort(s []byte) (uint16, bool) {
	if len(s) == 0 || len(s) > 5 || (s[0] == '0' && len(s) > 1) {
		return 0, false
	}
	v := 0
	for _, c := range s {
		if c < '0' || c > '9' {
			return 0, false
		}
		v = v*10 + int(c-'0')
	}
	if v > 0xffff {
		return 0, false
	}
	return uint16(v), true
}

// parseIPv4 parses dotted-decimal IPv4: four numbers 0-255 without leading
// zeros (spec 2.1), as netip.ParseAddr does.
func parseIPv4(s []byte) (netip.Addr, bool) {
	var ip [4]byte
	if !parseIPv4Into(s, &ip) {
		return netip.Addr{}, false
	}
	return netip.AddrFrom4(ip), true
}

func parseIPv4Into(s []byte, ip *[4]byte) bool {
	field, val, digits := 0, 0, 0
	for _, c := range s {
		switch {
		case c >= '0' && c <= '9':
			if digits == 1 && val == 0 {
				return false // a leading zero
			}
			val = val*10 + int(c-'0')
			if val > 255 {
				return false
			}
			digits++
		case c == '.' && digits > 0 && field < 3:
			ip[field] = byte(val)
			field++
			val, digits = 0, 0
		default:
			return false
		}
	}
	if field != 3 || digits == 0 {
		return false
	}
	ip[3] = byte(val)
	return true
}

// parseIPv6 parses an IPv6 address as netip.ParseAddr does, except that a
// zone ("%eth0") is refused: groups of one to four hex digits, at most one
// "::" standing for at least one zero group, and an optional dotted IPv4
// tail in the last 32 bits (which is how inet_ntop writes an IPv4-mapped
// address, as HAProxy sends it).
func parseIPv6(s []byte) (netip.Addr, bool) {
	var ip [16]byte
	ellipsis := -1 // where "::" stands, in bytes of ip
	if len(s) >= 2 && s[0] == ':' && s[1] == ':' {
		ellipsis = 0
		s = s[2:]
		if len(s) == 0 {
			return netip.IPv6Unspecified(), true
		}
	}
	i := 0
	for i < 16 {
		// A group of hex digits.
		off, acc := 0, 0
		for ; off < len(s); off++ {
			d := hexVal(s[off])
			if d < 0 {
				break
			}
			if off > 3 {
				return netip.Addr{}, false // more than four digits
			}
			acc = acc<<4 | d
		}
		if off == 0 {
			return netip.Addr{}, false
		}
		// Or the dotted IPv4 tail, where the last 32 bits begin.
		if off < len(s) && s[off] == '.' {
			if (ellipsis < 0 && i != 12) || i+4 > 16 {
				return netip.Addr{}, false
			}
			if !parseIPv4Into(s, (*[4]byte)(ip[i:i+4])) {
				return netip.Addr{}, false
			}
			s = nil
			i += 4
			break
		}
		ip[i], ip[i+1] = byte(acc>>8), byte(acc)
		i += 2
		s = s[off:]
		if len(s) == 0 {
			break
		}
		if s[0] != ':' || len(s) == 1 {
			return netip.Addr{}, false
		}
		s = s[1:]
		if s[0] == ':' {
			if ellipsis >= 0 {
				return netip.Addr{}, false // a second "::"
			}
			ellipsis = i
			s = s[1:]
			if len(s) == 0 {
				break
			}
		}
	}
	if len(s) != 0 {
		return netip.Addr{}, false
	}
	if i < 16 {
		if ellipsis < 0 {
			return netip.Addr{}, false
		}
		// Move what follows "::" to the end and zero the gap.
		n := 16 - i
		for j := i - 1; j >= ellipsis; j-- {
			ip[j+n] = ip[j]
		}
		clear(ip[ellipsis : ellipsis+n])
	} else if ellipsis >= 0 {
		return netip.Addr{}, false // "::" standing for no group
	}
	return netip.AddrFrom16(ip), true
}

func hexVal(c byte) int {
	switch {
	case c >= '0' && c <= '9':
		return int(c - '0')
	case c >= 'a' && c <= 'f':
		return int(c-'a') + 10
	case c >= 'A' && c <= 'F':
		return int(c-'A') + 10
	}
	return -1
}
