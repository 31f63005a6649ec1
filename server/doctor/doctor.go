// Package doctor checks what makes an MX reachable and trusted from the
// outside: the host's A and PTR records, each domain's MX, what the local
// resolver still caches against what the zone's own servers say, the
// listeners, the certificate, the DNSBL resolver path and the records a
// receive-only domain should publish. Each check yields a Finding with a
// status and, when something is wrong, what to do about it.
//
// doctor talks only to the configured resolvers, the authoritative servers
// of the zones it checks, its own listeners and, for MTA-STS, the domain's
// policy host. A probe of port 25 through the host's own public address
// lies on many clouds, so Probe is meant to run from another machine.
package doctor

import (
	"context"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"slices"
	"strings"
	"time"
)

// Status is how a check went.
type Status string

// The statuses, from best to worst.
const (
	OK   Status = "ok"
	Warn Status = "warn"
	Fail Status = "fail"
)

func (s Status) rank() int {
	switch s {
	case Warn:
		return 1
	case Fail:
		return 2
	}
	return 0
}

// Finding is the outcome of one check.
type Finding struct {
	Check  string `json:"check"`
	Status Status `json:"status"`
	Detail string `json:"detail"`
	Fix    string `json:"fix,omitempty"`
}

// Worst is the worst status among fs (OK for none).
func Worst(fs []Finding) Status {
	w := OK
	for _, f := range fs {
		if f.Status.rank() > w.rank() {
			w = f.Status
		}
	}
	return w
}

// ExitCode is the process exit status for fs: 0 all ok, 1 a warning, 2 a
// failure.
func ExitCode(fs []Finding) int { return Worst(fs).rank() }

// Config is what doctor checks, and where it asks.
type Config struct {
	// Hostname is the MX's name (greeting, EHLO, certificate, PTR).
	Hostname string
	// Domains are the domains nanomx receives mail for.
	Domains []string
	// Listen are the SMTP listeners ("0.0.0.0:25", "[::]:25").
	Listen []string
	// GreetingDelay is how long the server waits before its greeting.
	GreetingDelay time.Duration
	// TLSCert is the PEM certificate chain file, "" without TLS.
	TLSCert string
	// DNSBLSites are DNSBL entries in postscreen's syntax; only the domain
	// part is used.
	DNSBLSites []string
	// Resolvers are the recursive resolvers ("host:port") nanomx uses.
	Resolvers []string
	// Timeout bounds each DNS query and connection attempt (default 5 s).
	Timeout time.Duration

	// NSPort is the port the zones' authoritative servers are asked on
	// (default "53"; tests serve their zones elsewhere).
	NSPort string
	// HostAddrs are this host's addresses; nil reads the interfaces.
	HostAddrs []netip.Addr
	// HostsFile is checked for the hostname mapped to loopback (default
	// /etc/hosts).
	HostsFile string
	// HTTPClient fetches MTA-STS policies (default: one with Timeout).
	HTTPClient *http.Client
	// Roots verify the certificate chain (nil: the system's roots).
	Roots *x509.CertPool
	// Now is the clock for certificate expiry (default time.Now).
	Now func() time.Time
}

func (c *Config) defaults() {
	if c.Timeout <= 0 {
		c.Timeout = 5 * time.Second
	}
	if c.NSPort == "" {
		c.NSPort = "53"
	}
	if c.HostsFile == "" {
		c.HostsFile = "/etc/hosts"
	}
	if c.HTTPClient == nil {
		c.HTTPClient = &http.Client{Timeout: 2 * c.Timeout}
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	c.Hostname = strings.TrimSuffix(strings.ToLower(c.Hostname), ".")
}

// doc is one run's state.
type doc struct {
	cfg   Config
	dns   *client
	host  []netip.Addr // this host's addresses
	hostA []netip.Addr // what the hostname resolves to
	out   []Finding
}

func (d *doc) add(check string, s Status, detail, fix string) {
	d.out = append(d.out, Finding{Check: check, Status: s, Detail: detail, Fix: fix})
}

// Run performs every check and returns the findings in order.
func Run(ctx context.Context, cfg Config) []Finding {
	cfg.defaults()
	d := &doc{cfg: cfg, dns: newClient(cfg.Resolvers, cfg.Timeout, cfg.NSPort)}
	d.host = cfg.HostAddrs
	if d.host == nil {
		d.host = interfaceAddrs()
	}
	d.checkHostname(ctx)
	d.checkHostsFile()
	for _, dom := range cfg.Domains {
		d.checkMX(ctx, dom)
	}
	d.checkPTR(ctx)
	d.checkPropagation(ctx)
	d.checkListen(ctx)
	d.checkTLS()
	for _, s := range cfg.DNSBLSites {
		d.checkDNSBL(ctx, siteDomain(s))
	}
	for _, dom := range cfg.Domains {
		d.checkSPF(ctx, dom)
		d.checkDMARC(ctx, dom)
		d.checkMTASTS(ctx, dom)
	}
	return d.out
}

// interfaceAddrs lists the host's unicast addresses.
func interfaceAddrs() []netip.Addr {
	as, err := net.InterfaceAddrs()
	if err != nil {
		return nil
	}
	var out []netip.Addr
	for _, a := range as {
		if p, err := netip.ParsePrefix(a.String()); err == nil {
			out = append(out, p.Addr().Unmap())
		}
	}
	return out
}

// public reports whether a is reachable from the internet as far as its
// range tells: global unicast, not private (RFC 1918, ULA), not loopback
// or link-local, not shared address space (RFC 6598).
func public(a netip.Addr) bool {
	if !a.IsGlobalUnicast() || a.IsPrivate() {
		return false
	}
	return !netip.MustParsePrefix("100.64.0.0/10").Contains(a)
}

// publicHost is the host's public addresses.
func (d *doc) publicHost() []netip.Addr {
	var out []netip.Addr
	for _, a := range d.host {
		if public(a) {
			out = append(out, a)
		}
	}
	return out
}

func (d *doc) onHost(a netip.Addr) bool { return slices.Contains(d.host, a) }

func (d *doc) checkHostname(ctx context.Context) {
	h := d.cfg.Hostname
	name := "hostname " + h
	if !strings.Contains(h, ".") {
		d.add(name, Fail, "the hostname is not a fully qualified domain name",
			`set hostname to the name your MX record points at, e.g. "mx.example.com"`)
		return
	}
	v4, err4 := d.dns.addrs(ctx, h, typeA)
	v6, err6 := d.dns.addrs(ctx, h, typeAAAA)
	if err := firstTemp(err4, err6); err != nil {
		d.add(name, Warn, "could not resolve it: "+err.Error(), "check dns_servers and that the resolver answers")
		return
	}
	d.hostA = append(v4, v6...)
	if len(v4) == 0 && len(v6) == 0 {
		d.add(name, Fail, "has no A or AAAA record",
			fmt.Sprintf("add to the zone: %s. A <this host's public IPv4 address>", h))
		return
	}
	pub := d.publicHost()
	var elsewhere []string
	for _, a := range d.hostA {
		if !d.onHost(a) {
			elsewhere = append(elsewhere, a.String())
		}
	}
	switch {
	case len(elsewhere) > 0 && len(pub) == 0:
		d.add(name, Warn, fmt.Sprintf("resolves to %s, not an address of this host; this host has no public address (%s), so it may sit behind NAT",
			join(d.hostA), join(d.host)),
			"if this host is reached through 1:1 NAT, make sure the public address forwards port 25 here")
	case len(elsewhere) > 0:
		d.add(name, Fail, fmt.Sprintf("resolves to %s; this host's public addresses are %s", join(d.hostA), join(pub)),
			fmt.Sprintf("point %s's A/AAAA records at %s", h, join(pub)))
	default:
		d.add(name, OK, "resolves to "+join(d.hostA)+", this host", "")
	}
	has6 := false
	for _, a := range pub {
		if a.Is6() {
			has6 = true
		}
	}
	if has6 && len(v6) == 0 {
		d.add(name+" AAAA", Warn, "this host has a public IPv6 address but the hostname has no AAAA record",
			fmt.Sprintf("add %s. AAAA <this host's IPv6 address> (and its PTR), or senders will only use IPv4", h))
	}
}

// checkHostsFile warns when /etc/hosts maps the hostname to loopback,
// which Debian's installer does (127.0.1.1): programs on this host then
// resolve the MX's name to itself instead of its public address.
func (d *doc) checkHostsFile() {
	b, err := os.ReadFile(d.cfg.HostsFile)
	if err != nil {
		return
	}
	for _, line := range strings.Split(string(b), "\n") {
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		a, err := netip.ParseAddr(f[0])
		if err != nil || !a.IsLoopback() {
			continue
		}
		for _, n := range f[1:] {
			if strings.EqualFold(strings.TrimSuffix(n, "."), d.cfg.Hostname) {
				d.add("hosts file", Warn, fmt.Sprintf("%s maps %s to the loopback address %s", d.cfg.HostsFile, d.cfg.Hostname, a),
					fmt.Sprintf("replace %s with the public address in %s, or remove the name from that line", a, d.cfg.HostsFile))
				return
			}
		}
	}
}

func (d *doc) checkMX(ctx context.Context, dom string) {
	dom = strings.TrimSuffix(strings.ToLower(dom), ".")
	name := "mx " + dom
	m, err := d.dns.query(ctx, dom, typeMX)
	if err != nil {
		d.add(name, Warn, "could not look up MX: "+err.Error(), "check dns_servers")
		return
	}
	if m.nxdomain {
		d.add(name, Fail, dom+" does not exist in DNS", "register the domain or fix its delegation")
		return
	}
	mxs := m.mx()
	if len(mxs) == 0 {
		d.add(name, Fail, "no MX record; senders fall back to the domain's A record (RFC 5321 5.1)",
			fmt.Sprintf("add to the zone: %s. MX 10 %s.", dom, d.cfg.Hostname))
		return
	}
	if len(mxs) == 1 && mxs[0].host == "" {
		d.add(name, Fail, "a null MX (RFC 7505): the domain says it accepts no mail",
			fmt.Sprintf("replace \"%s. MX 0 .\" with %s. MX 10 %s.", dom, dom, d.cfg.Hostname))
		return
	}
	var ours, notes []string
	bad := false
	for _, mx := range mxs {
		if mx.host == "" {
			notes = append(notes, "a null MX beside real ones (RFC 7505 forbids that)")
			bad = true
			continue
		}
		t, err := d.dns.query(ctx, mx.host, typeA)
		if err != nil {
			notes = append(notes, fmt.Sprintf("%s: %v", mx.host, err))
			continue
		}
		if t.cname != "" {
			notes = append(notes, fmt.Sprintf("%s is a CNAME (to %s); an MX must name a host with its own A record (RFC 2181 10.3)", mx.host, t.cname))
			bad = true
			continue
		}
		as := t.addrs()
		if t6, err := d.dns.query(ctx, mx.host, typeAAAA); err == nil {
			as = append(as, t6.addrs()...)
		}
		if len(as) == 0 {
			notes = append(notes, mx.host+" has no address")
			bad = true
			continue
		}
		mine := mx.host == d.cfg.Hostname
		for _, a := range as {
			if d.onHost(a) || slices.Contains(d.hostA, a) {
				mine = true
			}
		}
		if mine {
			ours = append(ours, fmt.Sprintf("%s (preference %d)", mx.host, mx.pref))
		} else {
			notes = append(notes, fmt.Sprintf("%s (%s) is not this host", mx.host, join(as)))
		}
	}
	switch {
	case bad:
		d.add(name, Fail, strings.Join(notes, "; "), fmt.Sprintf("make %s's MX point at %s., a name with A records", dom, d.cfg.Hostname))
	case len(ours) == 0:
		d.add(name, Fail, "no MX points at this host: "+strings.Join(notes, "; "),
			fmt.Sprintf("add %s. MX 10 %s. (or fix the MX target's address)", dom, d.cfg.Hostname))
	case len(notes) > 0:
		d.add(name, OK, "points at "+strings.Join(ours, ", ")+"; also "+strings.Join(notes, "; "), "")
	default:
		d.add(name, OK, "points at "+strings.Join(ours, ", "), "")
	}
}

// checkPTR checks reverse DNS for the host's public addresses, or, when
// it has none, for those the hostname resolves to.
func (d *doc) checkPTR(ctx context.Context) {
	addrs := d.publicHost()
	if len(addrs) == 0 {
		addrs = d.hostA
	}
	const panel = "PTR records are set where the address comes from: your VPS provider's control panel (\"reverse DNS\"), not in your domain's zone"
	for _, a := range addrs {
		name := "ptr " + a.String()
		names, err := d.dns.ptr(ctx, a)
		if err != nil {
			d.add(name, Warn, "could not look up the PTR record: "+err.Error(), "check dns_servers")
			continue
		}
		if len(names) == 0 {
			d.add(name, Fail, "no PTR record: many receivers distrust or refuse a client without reverse DNS",
				fmt.Sprintf("set the PTR of %s to %s. %s", a, d.cfg.Hostname, panel))
			continue
		}
		confirmed := ""
		for _, n := range names {
			fwd, err := d.dns.addrs(ctx, n, typeA)
			if err == nil {
				f6, _ := d.dns.addrs(ctx, n, typeAAAA)
				fwd = append(fwd, f6...)
			}
			if slices.Contains(fwd, a) {
				confirmed = n
				break
			}
		}
		switch {
		case confirmed == "":
			d.add(name, Fail, fmt.Sprintf("PTR %s does not resolve back to %s (not forward-confirmed)", strings.Join(names, ", "), a),
				fmt.Sprintf("give %s an A/AAAA record for %s, or set the PTR to %s. %s", names[0], a, d.cfg.Hostname, panel))
		case confirmed != d.cfg.Hostname:
			d.add(name, Warn, fmt.Sprintf("PTR %s resolves back, but differs from hostname %s", confirmed, d.cfg.Hostname),
				fmt.Sprintf("set the PTR to %s. (%s), or set hostname = %q", d.cfg.Hostname, panel, confirmed))
		default:
			d.add(name, OK, "PTR "+confirmed+", forward-confirmed", "")
		}
	}
}

// checkPropagation compares the local resolver's answers with those of
// the zones' own servers: while they differ, the resolver serves a cached
// old answer until its TTL runs out.
func (d *doc) checkPropagation(ctx context.Context) {
	type q struct {
		name  string
		qtype uint16
	}
	qs := []q{{d.cfg.Hostname, typeA}}
	for _, dom := range d.cfg.Domains {
		qs = append(qs, q{strings.TrimSuffix(strings.ToLower(dom), "."), typeMX})
	}
	for _, x := range qs {
		name := fmt.Sprintf("propagation %s %s", x.name, typeName(x.qtype))
		rec, err := d.dns.query(ctx, x.name, x.qtype)
		if err != nil {
			d.add(name, Warn, "the resolver did not answer: "+err.Error(), "")
			continue
		}
		auth, server, err := d.dns.authoritative(ctx, x.name, x.qtype)
		if err != nil {
			d.add(name, Warn, "could not ask the zone's own servers: "+err.Error(),
				"check that the zone's NS records resolve and its servers answer")
			continue
		}
		rs, as := rec.data(x.qtype), auth.data(x.qtype)
		if slices.Equal(rs, as) {
			d.add(name, OK, fmt.Sprintf("resolver and %s agree: %s (TTL %d s at the zone, %d s left in the cache)",
				server, orNone(as), auth.ttl(x.qtype), rec.ttl(x.qtype)), "")
			continue
		}
		wait := rec.ttl(x.qtype)
		if len(rs) == 0 {
			wait = rec.negTTL
		}
		d.add(name, Warn, fmt.Sprintf("the zone (%s) says %s; the resolver still answers %s", server, orNone(as), orNone(rs)),
			fmt.Sprintf("nothing to fix if you changed it recently: the resolver's copy expires within %d s (propagation is only that wait)", wait))
	}
}

func orNone(s []string) string {
	if len(s) == 0 {
		return "nothing"
	}
	return strings.Join(s, ", ")
}

func join(as []netip.Addr) string {
	if len(as) == 0 {
		return "none"
	}
	s := make([]string, len(as))
	for i, a := range as {
		s[i] = a.String()
	}
	return strings.Join(s, ", ")
}

func firstTemp(errs ...error) error {
	for _, e := range errs {
		if e != nil {
			return e
		}
	}
	return nil
}

// siteDomain is the domain of a postscreen-syntax DNSBL entry
// ("zen.spamhaus.org=127.0.0.[2..11]*3").
func siteDomain(s string) string {
	if i := strings.IndexAny(s, "=*"); i >= 0 {
		s = s[:i]
	}
	return strings.TrimSuffix(strings.TrimSpace(s), ".")
}
