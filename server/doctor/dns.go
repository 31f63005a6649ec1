package doctor

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/miekg/dns"
)

const (
	typeA    = dns.TypeA
	typeAAAA = dns.TypeAAAA
	typeMX   = dns.TypeMX
	typeTXT  = dns.TypeTXT
	typeNS   = dns.TypeNS
	typePTR  = dns.TypePTR
)

func typeName(t uint16) string { return dns.TypeToString[t] }

// client asks DNS questions without a cache: doctor wants what the
// resolver and the zone's servers answer now, TTLs included.
type client struct {
	resolvers []string
	timeout   time.Duration
	nsPort    string
}

func newClient(resolvers []string, timeout time.Duration, nsPort string) *client {
	return &client{resolvers: resolvers, timeout: timeout, nsPort: nsPort}
}

// answer is one DNS response, reduced to what the checks read.
type answer struct {
	msg      *dns.Msg
	name     string
	nxdomain bool
	cname    string // the target when name is an alias
	negTTL   uint32 // the SOA minimum of a negative answer
}

// exchange sends one query to server, over UDP and again over TCP when
// the answer is truncated.
func (c *client) exchange(ctx context.Context, server, name string, qtype uint16, rd bool) (*dns.Msg, error) {
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), qtype)
	m.RecursionDesired = rd
	m.SetEdns0(1232, false)
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	cl := &dns.Client{Net: "udp", Timeout: c.timeout}
	r, _, err := cl.ExchangeContext(ctx, m, server)
	if err == nil && r.Truncated {
		cl.Net = "tcp"
		r, _, err = cl.ExchangeContext(ctx, m, server)
	}
	if err != nil {
		return nil, err
	}
	return r, nil
}

// query asks the configured resolvers in turn. NXDOMAIN and NODATA are
// answers; SERVFAIL, REFUSED and timeouts are errors.
func (c *client) query(ctx context.Context, name string, qtype uint16) (*answer, error) {
	if len(c.resolvers) == 0 {
		return nil, errors.New("no resolver configured")
	}
	var last error
	for _, s := range c.resolvers {
		r, err := c.exchange(ctx, s, name, qtype, true)
		if err != nil {
			last = fmt.Errorf("%s: %w", s, err)
			continue
		}
		a, err := reduce(r, name, qtype)
		if err != nil {
			last = fmt.Errorf("%s: %w", s, err)
			continue
		}
		return a, nil
	}
	return nil, last
}

func reduce(r *dns.Msg, name string, qtype uint16) (*answer, error) {
	switch r.Rcode {
	case dns.RcodeSuccess, dns.RcodeNameError:
	default:
		return nil, fmt.Errorf("answered %s", dns.RcodeToString[r.Rcode])
	}
	a := &answer{msg: r, name: dns.Fqdn(strings.ToLower(name)), nxdomain: r.Rcode == dns.RcodeNameError}
	for _, rr := range r.Answer {
		if cn, ok := rr.(*dns.CNAME); ok && strings.EqualFold(cn.Hdr.Name, a.name) && qtype != dns.TypeCNAME {
			a.cname = strings.TrimSuffix(cn.Target, ".")
		}
	}
	for _, rr := range r.Ns {
		if soa, ok := rr.(*dns.SOA); ok {
			a.negTTL = min(soa.Hdr.Ttl, soa.Minttl)
		}
	}
	return a, nil
}

// records are the answer's records of type qtype (after any CNAME).
func (a *answer) records(qtype uint16) []dns.RR {
	var out []dns.RR
	for _, rr := range a.msg.Answer {
		if rr.Header().Rrtype == qtype {
			out = append(out, rr)
		}
	}
	return out
}

func (a *answer) addrs() []netip.Addr {
	var out []netip.Addr
	for _, rr := range a.msg.Answer {
		var ip net.IP
		switch v := rr.(type) {
		case *dns.A:
			ip = v.A
		case *dns.AAAA:
			ip = v.AAAA
		default:
			continue
		}
		if x, ok := netip.AddrFromSlice(ip); ok {
			out = append(out, x.Unmap())
		}
	}
	return out
}

type mxRecord struct {
	pref uint16
	host string // "" for the null MX "."
}

func (a *answer) mx() []mxRecord {
	var out []mxRecord
	for _, rr := range a.records(dns.TypeMX) {
		mx := rr.(*dns.MX)
		out = append(out, mxRecord{mx.Preference, strings.TrimSuffix(strings.ToLower(mx.Mx), ".")})
	}
	slices.SortFunc(out, func(x, y mxRecord) int { return int(x.pref) - int(y.pref) })
	return out
}

func (a *answer) txt() []string {
	var out []string
	for _, rr := range a.records(dns.TypeTXT) {
		out = append(out, strings.Join(rr.(*dns.TXT).Txt, ""))
	}
	return out
}

// data is the answer's records of qtype as sorted text without TTLs, to
// compare two answers.
func (a *answer) data(qtype uint16) []string {
	var out []string
	for _, rr := range a.records(qtype) {
		h := rr.Header()
		s := strings.TrimPrefix(rr.String(), h.String())
		out = append(out, strings.ToLower(strings.TrimSpace(s)))
	}
	slices.Sort(out)
	return out
}

// ttl is the smallest TTL of the answer's records of qtype.
func (a *answer) ttl(qtype uint16) uint32 {
	var t uint32
	for i, rr := range a.records(qtype) {
		if i == 0 || rr.Header().Ttl < t {
			t = rr.Header().Ttl
		}
	}
	return t
}

// addrs resolves name's records of qtype (A or AAAA) through the
// resolver; NXDOMAIN and NODATA give none and no error.
func (c *client) addrs(ctx context.Context, name string, qtype uint16) ([]netip.Addr, error) {
	a, err := c.query(ctx, name, qtype)
	if err != nil {
		return nil, err
	}
	return a.addrs(), nil
}

// ptr returns the PTR names of ip.
func (c *client) ptr(ctx context.Context, ip netip.Addr) ([]string, error) {
	rev, err := dns.ReverseAddr(ip.String())
	if err != nil {
		return nil, err
	}
	a, err := c.query(ctx, rev, typePTR)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, rr := range a.records(typePTR) {
		out = append(out, strings.TrimSuffix(strings.ToLower(rr.(*dns.PTR).Ptr), "."))
	}
	return out, nil
}

// authoritative asks name's zone's own servers: it finds the zone cut by
// asking the resolver for NS records from name upwards, resolves the name
// servers, and asks each, without recursion, until one answers with
// authority. It returns the answer and the server that gave it.
func (c *client) authoritative(ctx context.Context, name string, qtype uint16) (*answer, string, error) {
	labels := dns.SplitDomainName(name)
	for i := range labels {
		zone := strings.Join(labels[i:], ".")
		ns, err := c.query(ctx, zone, typeNS)
		if err != nil {
			return nil, "", err
		}
		recs := ns.records(typeNS)
		if len(recs) == 0 {
			continue
		}
		var last error = errors.New("no name server of " + zone + " answered")
		for _, rr := range recs {
			host := strings.TrimSuffix(rr.(*dns.NS).Ns, ".")
			as, _ := c.addrs(ctx, host, typeA)
			a6, _ := c.addrs(ctx, host, typeAAAA)
			for _, ip := range append(as, a6...) {
				server := net.JoinHostPort(ip.String(), c.nsPort)
				r, err := c.exchange(ctx, server, name, qtype, false)
				if err != nil {
					last = fmt.Errorf("%s (%s): %w", host, ip, err)
					continue
				}
				if !r.Authoritative {
					last = fmt.Errorf("%s (%s) is not authoritative for %s", host, ip, zone)
					continue
				}
				a, err := reduce(r, name, qtype)
				if err != nil {
					last = fmt.Errorf("%s (%s): %w", host, ip, err)
					continue
				}
				return a, host, nil
			}
		}
		return nil, "", last
	}
	return nil, "", errors.New("no NS records found for " + name + " or its parents")
}
