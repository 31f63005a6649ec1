package auth

import (
	"context"
	"net/netip"
	"strings"
)

// maxPTRNames bounds the PTR names forward-checked (RFC 8601 3 leaves the
// bound to the receiver; Postfix and sendmail check a handful).
const maxPTRNames = 10

// IPRevResult is the iprev verdict (RFC 8601 3) for a client address.
type IPRevResult struct {
	Status Status
	IP     netip.Addr
	// Name is the forward-confirmed PTR name (pass only), without the
	// final dot, lowercase.
	Name   string
	Reason string
}

// CheckIPRev looks up the PTR names of ip and forward-confirms them: pass
// when one of them has an A/AAAA record holding ip; permerror when there
// is no PTR at all; fail when no name confirms; temperror when DNS trouble
// kept it from knowing.
func CheckIPRev(ctx context.Context, r Resolver, ip netip.Addr) IPRevResult {
	ip = ip.Unmap().WithZone("")
	res := IPRevResult{IP: ip}
	names, err := r.LookupAddr(ctx, ip.String())
	switch {
	case err != nil && notFound(err), err == nil && len(names) == 0:
		res.Status, res.Reason = PermError, "no PTR record"
		return res
	case err != nil:
		res.Status, res.Reason = TempError, "PTR lookup: "+err.Error()
		return res
	}
	temp := false
	for i, name := range names {
		if i == maxPTRNames {
			break
		}
		name = strings.ToLower(strings.TrimSuffix(name, "."))
		addrs, err := r.LookupIPAddr(ctx, name)
		if err != nil {
			temp = temp || !notFound(err)
			continue
		}
		for _, a := range addrs {
			if got, ok := netip.AddrFromSlice(a.IP); ok && got.Unmap() == ip {
				res.Status, res.Name = Pass, name
				return res
			}
		}
	}
	if temp {
		res.Status, res.Reason = TempError, "forward lookup failed"
		return res
	}
	res.Status, res.Reason = Fail, "PTR name does not resolve to the address"
	return res
}
