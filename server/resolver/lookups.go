package resolver

import (
	"context"
	"net"
	"slices"
	"strings"

	"github.com/miekg/dns"
)

// LookupTXT returns the TXT records of name, the strings of each record
// joined, as (*net.Resolver).LookupTXT does.
func (r *Resolver) LookupTXT(ctx context.Context, name string) ([]string, error) {
	e, err := r.lookup(ctx, name, dns.TypeTXT)
	if err != nil {
		return nil, err
	}
	return slices.Clone(e.txt), nil // joined when cached; the caller may modify its slice
}

// LookupTXTShared is LookupTXT returning the cache's own slice, which
// the caller must only read (no copy made, for the checks that look up
// the same records message after message).
func (r *Resolver) LookupTXTShared(ctx context.Context, name string) ([]string, error) {
	e, err := r.lookup(ctx, name, dns.TypeTXT)
	if err != nil {
		return nil, err
	}
	return e.txt[:len(e.txt):len(e.txt)], nil
}

// txtStrings returns the strings of each TXT record joined.
func txtStrings(rrs []dns.RR) []string {
	out := make([]string, 0, len(rrs))
	for _, rr := range rrs {
		t := rr.(*dns.TXT)
		var s string
		if len(t.Txt) == 1 {
			s = unescape(t.Txt[0])
		} else {
			var b strings.Builder
			for _, p := range t.Txt {
				b.WriteString(unescape(p))
			}
			s = b.String()
		}
		out = append(out, s)
	}
	return out
}

// LookupMX returns the MX records of name sorted by preference, hosts
// fully qualified (with the trailing dot), as (*net.Resolver).LookupMX.
func (r *Resolver) LookupMX(ctx context.Context, name string) ([]*net.MX, error) {
	e, err := r.lookup(ctx, name, dns.TypeMX)
	if err != nil {
		return nil, err
	}
	out := make([]*net.MX, 0, len(e.rrs))
	for _, rr := range e.rrs {
		m := rr.(*dns.MX)
		out = append(out, &net.MX{Host: m.Mx, Pref: m.Preference})
	}
	slices.SortStableFunc(out, func(a, b *net.MX) int { return int(a.Pref) - int(b.Pref) })
	return out, nil
}

// LookupAddr returns the PTR names of an IP address, fully qualified, as
// (*net.Resolver).LookupAddr.
func (r *Resolver) LookupAddr(ctx context.Context, addr string) ([]string, error) {
	rev, err := dns.ReverseAddr(addr)
	if err != nil {
		return nil, &net.DNSError{Err: "unrecognized address", Name: addr}
	}
	e, err := r.lookup(ctx, rev, dns.TypePTR)
	if err != nil {
		return nil, withName(err, addr)
	}
	out := make([]string, 0, len(e.rrs))
	for _, rr := range e.rrs {
		out = append(out, rr.(*dns.PTR).Ptr)
	}
	return out, nil
}

// LookupIPAddr returns the A and AAAA addresses of host, asked
// concurrently, IPv4 first. An IP literal is returned as is. Unlike
// net's default, a temporary failure of either query fails the lookup
// (as net.Resolver with StrictErrors): a missing half could turn an SPF
// pass into a fail.
func (r *Resolver) LookupIPAddr(ctx context.Context, host string) ([]net.IPAddr, error) {
	if ip := net.ParseIP(host); ip != nil {
		return []net.IPAddr{{IP: ip}}, nil
	}
	type res struct {
		e   *entry
		err error
	}
	var six res
	var done chan struct{}
	if k, ok := makeKey(host, dns.TypeAAAA); ok {
		if e := r.fromCache(k); e != nil {
			// Cache hit: no goroutine.
			six.e, six.err = r.lookup(ctx, host, dns.TypeAAAA)
		} else {
			done = make(chan struct{})
			go func() {
				six.e, six.err = r.lookup(ctx, host, dns.TypeAAAA)
				close(done)
			}()
		}
	} else {
		six.e, six.err = r.lookup(ctx, host, dns.TypeAAAA)
	}
	four, err4 := r.lookup(ctx, host, dns.TypeA)
	if done != nil {
		<-done
	}
	err6 := six.err
	for _, err := range []error{err4, err6} {
		if de, ok := err.(*net.DNSError); ok && !de.IsNotFound {
			return nil, withName(err, host)
		}
	}
	if err4 != nil && err6 != nil {
		return nil, withName(err4, host)
	}
	var out []net.IPAddr
	if err4 == nil {
		for _, rr := range four.rrs {
			out = append(out, net.IPAddr{IP: rr.(*dns.A).A})
		}
	}
	if err6 == nil {
		for _, rr := range six.e.rrs {
			out = append(out, net.IPAddr{IP: rr.(*dns.AAAA).AAAA})
		}
	}
	return out, nil
}

// LookupHost returns the addresses of host as strings, as
// (*net.Resolver).LookupHost.
func (r *Resolver) LookupHost(ctx context.Context, host string) ([]string, error) {
	addrs, err := r.LookupIPAddr(ctx, host)
	if err != nil {
		return nil, err
	}
	out := make([]string, len(addrs))
	for i, a := range addrs {
		out[i] = a.String()
	}
	return out, nil
}

// unescape turns a character-string in miekg/dns presentation form
// (\" \\ and \DDD escapes, as it unpacks TXT data) back into its bytes.
func unescape(s string) string {
	i := strings.IndexByte(s, '\\')
	if i < 0 {
		return s
	}
	b := make([]byte, 0, len(s))
	b = append(b, s[:i]...)
	for ; i < len(s); i++ {
		c := s[i]
		if c != '\\' || i+1 == len(s) {
			b = append(b, c)
			continue
		}
		if i+3 < len(s) && isDigit(s[i+1]) && isDigit(s[i+2]) && isDigit(s[i+3]) {
			n := int(s[i+1]-'0')*100 + int(s[i+2]-'0')*10 + int(s[i+3]-'0')
			if n <= 255 {
				b = append(b, byte(n))
				i += 3
				continue
			}
		}
		i++
		b = append(b, s[i])
	}
	return string(b)
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }
