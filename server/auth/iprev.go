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
	if len(names) > maxPTRNames {
		names = names[:maxPTRNames]
	}
	// The forward lookups of all the names run at once (RFC 8601 3 asks
	// for each): a slow DNS costs one round trip after the PTR, not one
	// per name. The first name in PTR order that confirms wins.
	type fwd struct{ pass, temp, done bool }
	got := make([]fwd, len(names))
	check := func(ctx context.Context, i int) fwd {
		addrs, err := r.LookupIPAddr(ctx, normName(names[i]))
		if err != nil {
			return fwd{temp: !notFound(err), done: true}
		}
		for _, a := range addrs {
			if got, ok := netip.AddrFromSlice(a.IP); ok && got.Unmap() == ip {
				return fwd{pass: true, done: true}
			}
		}
		return fwd{done: true}
	}
	if len(names) == 1 {
		got[0] = check(ctx, 0)
	} else {
		ctx, cancel := context.WithCancel(ctx)
		defer cancel() // a confirmed name stops the lookups still out
		type answer struct {
			i int
			f fwd
		}
		answers := make(chan answer, len(names))
		for i := range names {
			go func() { answers <- answer{i, check(ctx, i)} }()
		}
	wait:
		for range names {
			a := <-answers
			got[a.i] = a.f
			for _, f := range got {
				switch {
				case f.pass:
					break wait
				case !f.done:
					continue wait
				}
			}
		}
	}
	temp := false
	for i, f := range got {
		if f.pass {
			res.Status, res.Name = Pass, normName(names[i])
			return res
		}
		temp = temp || f.temp
	}
	if temp {
		res.Status, res.Reason = TempError, "forward lookup failed"
		return res
	}
	res.Status, res.Reason = Fail, "PTR name does not resolve to the address"
	return res
}

// normName is a PTR name as iprev reports it: lowercase, no final dot.
func normName(name string) string { return strings.ToLower(strings.TrimSuffix(name, ".")) }
