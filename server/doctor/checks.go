package doctor

import (
	"bufio"
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"time"
)

// checkListen connects to each listener and reads its greeting. It cannot
// tell whether port 25 is reachable from the internet: that takes a probe
// from outside.
func (d *doc) checkListen(ctx context.Context) {
	for _, l := range d.cfg.Listen {
		name := "listen " + l
		host, port, err := net.SplitHostPort(l)
		if err != nil {
			d.add(name, Fail, "not a host:port address", "")
			continue
		}
		switch host {
		case "", "0.0.0.0":
			host = "127.0.0.1"
		case "::":
			host = "::1"
		}
		addr := net.JoinHostPort(host, port)
		greeting, err := greet(ctx, addr, d.cfg.GreetingDelay+d.cfg.Timeout)
		switch {
		case err != nil:
			d.add(name, Fail, "nothing answers on "+addr+": "+err.Error(), "start nanomx (systemctl start nanomx) and check its log")
		case !strings.HasPrefix(greeting, "220"):
			d.add(name, Warn, "answers, but not with 220: "+greeting, "")
		default:
			// Whether the internet reaches it, this host cannot tell:
			// clouds filter port 25 and NAT reflection lies.
			d.add(name, OK, fmt.Sprintf("answers %q; to see whether the internet reaches it, run \"nanomx doctor probe %s\" from another machine",
				greeting, d.cfg.Hostname), "")
		}
	}
}

// greet connects to addr, reads the greeting's last line and quits.
func greet(ctx context.Context, addr string, timeout time.Duration) (string, error) {
	dl := net.Dialer{Timeout: timeout}
	c, err := dl.DialContext(ctx, "tcp", addr)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(timeout))
	r := bufio.NewReader(io.LimitReader(c, 4096))
	line, err := readReply(r)
	if err != nil {
		return "", err
	}
	_, _ = io.WriteString(c, "QUIT\r\n")
	return line, nil
}

// readReply reads a (multi-line) SMTP reply and returns its last line.
func readReply(r *bufio.Reader) (string, error) {
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return "", err
		}
		line = strings.TrimRight(line, "\r\n")
		if len(line) < 4 || line[3] != '-' {
			return line, nil
		}
	}
}

func (d *doc) checkTLS() {
	const name = "tls certificate"
	if d.cfg.TLSCert == "" {
		d.add(name, Warn, "no certificate: STARTTLS is not offered, so mail arrives unencrypted",
			"get a certificate for "+d.cfg.Hostname+" (certbot or lego) and set tls_cert and tls_key")
		return
	}
	b, err := os.ReadFile(d.cfg.TLSCert)
	if err != nil {
		d.add(name, Fail, err.Error(), "")
		return
	}
	var certs []*x509.Certificate
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			break
		}
		if blk.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			d.add(name, Fail, "cannot parse "+d.cfg.TLSCert+": "+err.Error(), "")
			return
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		d.add(name, Fail, d.cfg.TLSCert+" holds no certificate", "")
		return
	}
	leaf := certs[0]
	now := d.cfg.Now()
	left := leaf.NotAfter.Sub(now)
	days := int(left.Hours() / 24)
	if err := leaf.VerifyHostname(d.cfg.Hostname); err != nil {
		d.add(name, Fail, fmt.Sprintf("does not cover %s: %v", d.cfg.Hostname, err),
			"get a certificate whose names include "+d.cfg.Hostname)
		return
	}
	if left <= 0 {
		d.add(name, Fail, fmt.Sprintf("expired on %s", leaf.NotAfter.Format(time.DateOnly)), "renew it (certbot renew) and reload nanomx (SIGHUP)")
		return
	}
	selfSigned := bytes.Equal(leaf.RawIssuer, leaf.RawSubject) && leaf.CheckSignature(leaf.SignatureAlgorithm, leaf.RawTBSCertificate, leaf.Signature) == nil
	if selfSigned {
		d.add(name, Warn, fmt.Sprintf("self-signed, covers %s, %d days left; senders encrypt but cannot verify it (DANE and MTA-STS need a real one)", d.cfg.Hostname, days),
			"get a certificate from a public CA (Let's Encrypt)")
		return
	}
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	_, verr := leaf.Verify(x509.VerifyOptions{DNSName: d.cfg.Hostname, Intermediates: inter, Roots: d.cfg.Roots, CurrentTime: now})
	switch {
	case len(certs) == 1:
		d.add(name, Warn, fmt.Sprintf("covers %s, %d days left, but the file holds no intermediate certificate", d.cfg.Hostname, days),
			"point tls_cert at the full chain (fullchain.pem), not cert.pem")
	case verr != nil:
		d.add(name, Warn, fmt.Sprintf("covers %s, %d days left, but does not verify here: %v", d.cfg.Hostname, days, verr), "")
	case left < 14*24*time.Hour:
		d.add(name, Warn, fmt.Sprintf("expires in %d days (%s)", days, leaf.NotAfter.Format(time.DateOnly)), "renew it; check that automatic renewal runs and reloads nanomx")
	default:
		d.add(name, OK, fmt.Sprintf("covers %s, chain of %d, %d days left", d.cfg.Hostname, len(certs), days), "")
	}
}

// checkDNSBL checks the DNSBL path through the resolver as RFC 5782 5
// says: 127.0.0.2 must be listed and 127.0.0.1 must not. Lists answer a
// resolver they refuse (a public one) with 127.255.255.x codes.
func (d *doc) checkDNSBL(ctx context.Context, site string) {
	name := "dnsbl " + site
	const unbound = "run a local caching resolver (unbound) and set dns_servers = [\"127.0.0.1:53\"]; lists refuse queries relayed by public resolvers"
	pos, err := d.dns.query(ctx, "2.0.0.127."+site, typeA)
	if err != nil {
		d.add(name, Fail, "the list did not answer: "+err.Error(), unbound)
		return
	}
	for _, a := range pos.addrs() {
		if a.Is4() && a.As4()[0] == 127 && a.As4()[1] == 255 && a.As4()[2] == 255 {
			d.add(name, Fail, fmt.Sprintf("the list answers with the error code %s: it refuses this resolver", a), unbound)
			return
		}
		if !a.Is4() || a.As4()[0] != 127 {
			d.add(name, Fail, fmt.Sprintf("the test entry answered %s, outside 127.0.0.0/8: a resolver that rewrites NXDOMAIN, or a dead list", a), unbound)
			return
		}
	}
	if len(pos.addrs()) == 0 {
		d.add(name, Fail, "127.0.0.2 is not listed: the list does not work through this resolver (RFC 5782 5)", unbound)
		return
	}
	neg, err := d.dns.query(ctx, "1.0.0.127."+site, typeA)
	if err != nil {
		d.add(name, Warn, "the 127.0.0.1 test did not answer: "+err.Error(), "")
		return
	}
	if as := neg.addrs(); len(as) > 0 {
		d.add(name, Fail, fmt.Sprintf("127.0.0.1 is listed (%s): the list or the resolver lists everything", join(as)), unbound)
		return
	}
	d.add(name, OK, fmt.Sprintf("127.0.0.2 listed (%s), 127.0.0.1 not", join(pos.addrs())), "")
}

// txtRecords returns the TXT records at qname that match; false (with a
// Warn for the check name) when the lookup failed.
func (d *doc) txtRecords(ctx context.Context, name, qname string, match func(string) bool) ([]string, bool) {
	a, err := d.dns.query(ctx, qname, typeTXT)
	if err != nil {
		d.add(name, Warn, "could not look up TXT: "+err.Error(), "")
		return nil, false
	}
	var recs []string
	for _, t := range a.txt() {
		if match(t) {
			recs = append(recs, t)
		}
	}
	return recs, true
}

func (d *doc) checkSPF(ctx context.Context, dom string) {
	name := "spf " + dom
	spf, ok := d.txtRecords(ctx, name, dom, func(t string) bool {
		return t == "v=spf1" || strings.HasPrefix(strings.ToLower(t), "v=spf1 ")
	})
	if !ok {
		return
	}
	switch len(spf) {
	case 0:
		d.add(name, Warn, "no SPF record: anyone can send as "+dom+" without a fail verdict",
			fmt.Sprintf("if %s sends no mail (nanomx only receives): %s. TXT \"v=spf1 -all\"; else list your sending servers", dom, dom))
	case 1:
		d.add(name, OK, spf[0], "")
	default:
		d.add(name, Fail, "several SPF records: receivers treat that as permerror (RFC 7208 4.5)", "merge them into one TXT record")
	}
}

func (d *doc) checkDMARC(ctx context.Context, dom string) {
	name := "dmarc " + dom
	recs, ok := d.txtRecords(ctx, name, "_dmarc."+dom, func(t string) bool {
		return strings.HasPrefix(strings.ToLower(strings.TrimSpace(t)), "v=dmarc1")
	})
	if !ok {
		return
	}
	switch len(recs) {
	case 0:
		d.add(name, Warn, "no DMARC record: receivers apply no policy to forgeries of "+dom,
			fmt.Sprintf("if %s sends no mail: _dmarc.%s. TXT \"v=DMARC1; p=reject\"", dom, dom))
	case 1:
		d.add(name, OK, recs[0], "")
	default:
		d.add(name, Fail, "several DMARC records: receivers ignore them all (RFC 7489 6.6.3)", "keep one")
	}
}

// checkMTASTS checks a published MTA-STS policy (RFC 8461) lists this MX:
// an enforce-mode policy that does not loses mail from senders that
// honour it.
func (d *doc) checkMTASTS(ctx context.Context, dom string) {
	name := "mta-sts " + dom
	recs, ok := d.txtRecords(ctx, name, "_mta-sts."+dom, func(t string) bool {
		return strings.HasPrefix(strings.ToLower(t), "v=stsv1")
	})
	if !ok {
		return
	}
	if len(recs) == 0 {
		d.add(name, OK, "no MTA-STS policy published (optional)", "")
		return
	}
	url := "https://mta-sts." + dom + "/.well-known/mta-sts.txt"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		d.add(name, Warn, err.Error(), "")
		return
	}
	resp, err := d.cfg.HTTPClient.Do(req)
	if err != nil {
		d.add(name, Fail, "the TXT record announces a policy but "+url+" cannot be fetched: "+err.Error(),
			"serve the policy over HTTPS with a valid certificate, or remove the _mta-sts record")
		return
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		d.add(name, Fail, fmt.Sprintf("%s answered %s", url, resp.Status), "")
		return
	}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	mode, mxs := "", []string(nil)
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(strings.TrimSpace(line), ":")
		if !ok {
			continue
		}
		v = strings.ToLower(strings.TrimSpace(v))
		switch strings.TrimSpace(k) {
		case "mode":
			mode = v
		case "mx":
			mxs = append(mxs, v)
		}
	}
	for _, p := range mxs {
		if mxMatch(p, d.cfg.Hostname) {
			d.add(name, OK, fmt.Sprintf("policy mode %s lists %s (as %s)", mode, d.cfg.Hostname, p), "")
			return
		}
	}
	st := Warn
	if mode == "enforce" {
		st = Fail
	}
	d.add(name, st, fmt.Sprintf("policy mode %s does not list %s (mx: %s)", mode, d.cfg.Hostname, strings.Join(mxs, ", ")),
		"add \"mx: "+d.cfg.Hostname+"\" to the policy and change its id in the _mta-sts TXT record")
}

// mxMatch matches an MTA-STS mx pattern: a name, or "*.domain" matching
// exactly one more label (RFC 8461 4.1).
func mxMatch(pattern, host string) bool {
	if rest, ok := strings.CutPrefix(pattern, "*."); ok {
		i := strings.IndexByte(host, '.')
		return i > 0 && host[i+1:] == rest
	}
	return pattern == host
}
