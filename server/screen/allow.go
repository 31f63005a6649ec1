package screen

import (
	"fmt"
	"net/netip"
	"strings"
)

// AllowList is screen_allow: networks whose clients skip DNS lists and
// rates (a backup MX, a monitoring host, the office).
type AllowList []netip.Prefix

// ParseAllowList parses CIDRs ("192.0.2.0/24", "2001:db8::/32") and bare
// addresses (a /32 or /128). An IPv4-mapped IPv6 network is taken as the
// IPv4 one, as client addresses are.
func ParseAllowList(entries []string) (AllowList, error) {
	out := make(AllowList, 0, len(entries))
	for _, e := range entries {
		s := strings.TrimSpace(e)
		var p netip.Prefix
		var err error
		if strings.Contains(s, "/") {
			p, err = netip.ParsePrefix(s)
		} else {
			var a netip.Addr
			if a, err = netip.ParseAddr(s); err == nil && a.Zone() != "" {
				return nil, fmt.Errorf("%q: a zone has no place in a network", e)
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		if err != nil {
			return nil, fmt.Errorf("%q: not a network (write 192.0.2.0/24 or 2001:db8::/32)", e)
		}
		if a := p.Addr(); a.Is4In6() && p.Bits() >= 96 {
			p = netip.PrefixFrom(a.Unmap(), p.Bits()-96)
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

// Contains reports whether ip is in one of the networks.
func (l AllowList) Contains(ip netip.Addr) bool {
	ip = ip.Unmap()
	for _, p := range l {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}
