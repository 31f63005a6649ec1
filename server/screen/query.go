package screen

import (
	"net/netip"
	"strings"
)

// QueryName is the name a DNS list is asked for about ip (RFC 5782 2.1,
// 2.4): the octets of an IPv4 address in reverse order, or the 32 nibbles
// of an IPv6 address in reverse order, then the list's domain, and a final
// dot. "1.2.3.4" at zen.spamhaus.org is "4.3.2.1.zen.spamhaus.org.".
// An IPv4-mapped IPv6 address is asked as IPv4.
func QueryName(ip netip.Addr, domain string) string {
	ip = ip.Unmap()
	var b strings.Builder
	if ip.Is4() {
		a := ip.As4()
		b.Grow(16 + len(domain))
		for i := 3; i >= 0; i-- {
			writeDec(&b, a[i])
			b.WriteByte('.')
		}
	} else {
		const hex = "0123456789abcdef"
		a := ip.As16()
		b.Grow(65 + len(domain))
		for i := 15; i >= 0; i-- {
			b.WriteByte(hex[a[i]&0xf])
			b.WriteByte('.')
			b.WriteByte(hex[a[i]>>4])
			b.WriteByte('.')
		}
	}
	b.WriteString(domain)
	b.WriteByte('.')
	return b.String()
}

func writeDec(b *strings.Builder, v byte) {
	if v >= 100 {
		b.WriteByte('0' + v/100)
	}
	if v >= 10 {
		b.WriteByte('0' + v/10%10)
	}
	b.WriteByte('0' + v%10)
}

// AnswerError reports whether an address a DNS list answered with is an
// error code rather than a listing: anything outside 127.0.0.0/8 (a
// resolver that rewrites NXDOMAIN, or a list that died and whose domain
// now points at a parking page), 127.0.0.1 (RFC 5782 5: never a listing),
// and 127.255.255.0/24, where Spamhaus answers queries it refuses
// (127.255.255.252 a typing error, .254 a query through a public or open
// resolver, .255 excessive queries). Such answers are never listings:
// treating them as such rejected all mail at mox (#354) and SimpleLogin
// (#2674).
func AnswerError(a netip.Addr) bool {
	a = a.Unmap()
	if !a.Is4() {
		return true
	}
	b := a.As4()
	switch {
	case b[0] != 127:
		return true
	case b == [4]byte{127, 0, 0, 1}:
		return true
	case b[1] == 255 && b[2] == 255:
		return true
	}
	return false
}
