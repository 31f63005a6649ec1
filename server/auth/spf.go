package auth

import (
	"context"
	"net"
	"net/netip"
	"strings"

	"blitiri.com.ar/go/spf"
)

// SPFResult is the SPF verdict for one identity.
type SPFResult struct {
	Status Status
	// Helo is true when the HELO identity was checked (a null
	// reverse-path, RFC 7208 2.3); the MAIL FROM identity otherwise.
	Helo bool
	// Identity is what was checked: the reverse-path, or the HELO name.
	Identity string
	// Domain is its domain (the one DMARC aligns with).
	Domain string
	// Reason says why, for the header comment; may be empty.
	Reason string
}

// CheckSPF evaluates SPF for a client at ip: the MAIL FROM identity from
// (an address, "" for the null reverse-path), or the HELO identity helo
// when from is null (RFC 7208 2.3). The 10-lookup and 2-void-lookup limits
// of RFC 7208 4.6.4 apply (blitiri.com.ar/go/spf).
func CheckSPF(ctx context.Context, r Resolver, ip netip.Addr, helo, from string) SPFResult {
	res := SPFIdentity(helo, from)
	if !IsDomainName(res.Domain) {
		// An address literal, or no HELO at all: nothing to check (RFC
		// 7208 2.3, 4.3).
		res.Status, res.Reason = None, "no domain to check"
		return res
	}
	sender := from
	if from == "" {
		sender = "postmaster@" + res.Domain // RFC 7208 2.4: the local part for HELO
	}
	st, err := spf.CheckHostWithSender(net.IP(ip.Unmap().AsSlice()), res.Domain, sender,
		spf.WithContext(ctx), spf.WithResolver(strictResolver{r}))
	res.Status = Status(st)
	if err != nil && st != spf.Pass {
		res.Reason = err.Error()
	}
	return res
}

// SPFIdentity is the result CheckSPF starts from, Status not yet set:
// the identity checked and its domain. A caller that gives up on CheckSPF
// (a deadline) fills in a temperror on it, so that DMARC still sees the
// domain SPF was about (a temperror for an aligned domain is a DMARC
// temperror, never a fail).
func SPFIdentity(helo, from string) SPFResult {
	res := SPFResult{Identity: from}
	if from == "" {
		res.Helo, res.Identity = true, helo
	}
	if at := strings.LastIndexByte(res.Identity, '@'); at >= 0 {
		res.Domain = strings.ToLower(res.Identity[at+1:])
	} else {
		res.Domain = strings.ToLower(res.Identity)
	}
	res.Domain = strings.TrimSuffix(res.Domain, ".")
	return res
}

// IsDomainName reports a plausible DNS name (without the root dot): dot-separated labels of
// letters, digits, '-' and '_' (and UTF-8, for IDNs), at least two labels.
func IsDomainName(s string) bool {
	if len(s) == 0 || len(s) > 253 || !strings.Contains(s, ".") {
		return false
	}
	for l := range strings.SplitSeq(s, ".") {
		if l == "" || len(l) > 63 {
			return false
		}
		for i := 0; i < len(l); i++ {
			c := l[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c >= 0x80) {
				return false
			}
		}
	}
	return true
}
