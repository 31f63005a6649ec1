package doctor

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nanomx/nanomx/server/resolver/dnstest"
)

// zoneHead is the SOA and NS of the fixture zones: ns1.example.test is
// 127.0.0.1, and the tests ask it on the fixture server's port.
const zoneHead = `
$ORIGIN example.test.
@     300 IN SOA ns1.example.test. hostmaster.example.test. 1 3600 600 86400 60
@     300 IN NS  ns1.example.test.
ns1   300 IN A   127.0.0.1
`

const reverseHead = `
$ORIGIN 2.0.192.in-addr.arpa.
@     300 IN SOA ns1.example.test. hostmaster.example.test. 1 3600 600 86400 60
@     300 IN NS  ns1.example.test.
`

// good is a zone with nothing wrong: mx.example.test is 192.0.2.10 (this
// host, in the tests), its PTR confirms, the domain's MX names it.
const good = zoneHead + `
mx     300 IN A   192.0.2.10
@      300 IN MX  10 mx.example.test.
@      300 IN TXT "v=spf1 -all"
_dmarc 300 IN TXT "v=DMARC1; p=reject"
` + reverseHead + `
10    300 IN PTR mx.example.test.
`

var hostAddr = netip.MustParseAddr("192.0.2.10")

// fixture runs doctor against a DNS server serving zone, both as the
// resolver and as the zone's authoritative server.
func fixture(t *testing.T, zone string, edit func(*Config)) []Finding {
	t.Helper()
	s := dnstest.New(t, zone)
	_, port, _ := net.SplitHostPort(s.Addr())
	cfg := Config{
		Hostname:  "mx.example.test",
		Domains:   []string{"example.test"},
		Resolvers: []string{s.Addr()},
		NSPort:    port,
		HostAddrs: []netip.Addr{hostAddr, netip.MustParseAddr("127.0.0.1")},
		HostsFile: filepath.Join(t.TempDir(), "none"),
		Timeout:   2 * time.Second,
	}
	if edit != nil {
		edit(&cfg)
	}
	return Run(context.Background(), cfg)
}

// find returns the finding of the named check.
func find(t *testing.T, fs []Finding, check string) Finding {
	t.Helper()
	for _, f := range fs {
		if f.Check == check {
			return f
		}
	}
	t.Fatalf("no finding %q in %v", check, fs)
	return Finding{}
}

func want(t *testing.T, fs []Finding, check string, st Status, detail string) Finding {
	t.Helper()
	f := find(t, fs, check)
	if f.Status != st || !strings.Contains(f.Detail, detail) {
		t.Errorf("%s: got %s %q, want %s with %q", check, f.Status, f.Detail, st, detail)
	}
	return f
}

func TestGoodZone(t *testing.T) {
	fs := fixture(t, good, nil)
	want(t, fs, "hostname mx.example.test", OK, "192.0.2.10")
	want(t, fs, "mx example.test", OK, "mx.example.test (preference 10)")
	want(t, fs, "ptr 192.0.2.10", OK, "forward-confirmed")
	want(t, fs, "propagation mx.example.test A", OK, "agree")
	want(t, fs, "propagation example.test MX", OK, "agree")
	want(t, fs, "spf example.test", OK, "v=spf1 -all")
	want(t, fs, "dmarc example.test", OK, "p=reject")
	want(t, fs, "mta-sts example.test", OK, "no MTA-STS")
	// No certificate configured: a warning, so the exit status is 1.
	want(t, fs, "tls certificate", Warn, "no certificate")
	if ExitCode(fs) != 1 {
		t.Errorf("exit code %d, want 1 (one warning)", ExitCode(fs))
	}
}

func TestBrokenZones(t *testing.T) {
	cases := []struct {
		name, zone, check string
		st                Status
		detail, fix       string
	}{
		{"no A record", zoneHead + "@ 300 IN MX 10 mx.example.test.\n", "hostname mx.example.test", Fail, "no A or AAAA", "A <this host"},
		{"A elsewhere", zoneHead + "mx 300 IN A 198.51.100.7\n", "hostname mx.example.test", Fail, "198.51.100.7", "point mx.example.test"},
		{"missing PTR", zoneHead + "mx 300 IN A 192.0.2.10\n" + reverseHead, "ptr 192.0.2.10", Fail, "no PTR", "VPS provider's control panel"},
		{"PTR not confirming", zoneHead + "mx 300 IN A 192.0.2.10\nother 300 IN A 192.0.2.99\n" + reverseHead + "10 300 IN PTR other.example.test.\n",
			"ptr 192.0.2.10", Fail, "not forward-confirmed", "control panel"},
		{"PTR other name", zoneHead + "mx 300 IN A 192.0.2.10\nhost 300 IN A 192.0.2.10\n" + reverseHead + "10 300 IN PTR host.example.test.\n",
			"ptr 192.0.2.10", Warn, "differs from hostname", "set the PTR to mx.example.test"},
		{"no MX", zoneHead + "mx 300 IN A 192.0.2.10\n", "mx example.test", Fail, "no MX record", "example.test. MX 10 mx.example.test."},
		{"MX elsewhere", zoneHead + "mx 300 IN A 192.0.2.10\nmail 300 IN A 198.51.100.1\n@ 300 IN MX 10 mail.example.test.\n",
			"mx example.test", Fail, "no MX points at this host", "MX 10 mx.example.test."},
		{"CNAME MX", zoneHead + "mx 300 IN A 192.0.2.10\nalias 300 IN CNAME mx.example.test.\n@ 300 IN MX 10 alias.example.test.\n",
			"mx example.test", Fail, "is a CNAME", "a name with A records"},
		{"null MX", zoneHead + "mx 300 IN A 192.0.2.10\n@ 300 IN MX 0 .\n", "mx example.test", Fail, "null MX", "MX 10 mx.example.test."},
		{"no SPF", zoneHead, "spf example.test", Warn, "no SPF record", "v=spf1 -all"},
		{"two SPF", zoneHead + "@ 300 IN TXT \"v=spf1 -all\"\n@ 300 IN TXT \"v=spf1 mx -all\"\n", "spf example.test", Fail, "several SPF", "merge"},
		{"no DMARC", zoneHead, "dmarc example.test", Warn, "no DMARC", "v=DMARC1; p=reject"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			fs := fixture(t, c.zone, nil)
			f := want(t, fs, c.check, c.st, c.detail)
			if !strings.Contains(f.Fix, c.fix) {
				t.Errorf("fix %q lacks %q", f.Fix, c.fix)
			}
			if ExitCode(fs) < c.st.rank() {
				t.Errorf("exit code %d below %s", ExitCode(fs), c.st)
			}
		})
	}
}

// TestNoPublicAddress: a test box or a 1:1-NAT cloud has only private
// addresses; the A record pointing elsewhere is a warning there, and PTRs
// are checked for the addresses the hostname has.
func TestNoPublicAddress(t *testing.T) {
	fs := fixture(t, good, func(c *Config) { c.HostAddrs = []netip.Addr{netip.MustParseAddr("10.0.0.5")} })
	want(t, fs, "hostname mx.example.test", Warn, "no public address")
	want(t, fs, "ptr 192.0.2.10", OK, "forward-confirmed")
}

// TestStaleResolver: the local resolver still has an old answer the zone's
// own servers no longer give.
func TestStaleResolver(t *testing.T) {
	auth := dnstest.New(t, good)
	stale := dnstest.New(t, strings.Replace(good, "mx     300 IN A   192.0.2.10", "mx     300 IN A   192.0.2.9", 1))
	_, port, _ := net.SplitHostPort(auth.Addr())
	fs := Run(context.Background(), Config{
		Hostname: "mx.example.test", Domains: []string{"example.test"},
		Resolvers: []string{stale.Addr()}, NSPort: port,
		HostAddrs: []netip.Addr{hostAddr}, Timeout: 2 * time.Second,
	})
	f := want(t, fs, "propagation mx.example.test A", Warn, "still answers 192.0.2.9")
	if !strings.Contains(f.Detail, "192.0.2.10") || !strings.Contains(f.Fix, "expires within 300 s") {
		t.Errorf("propagation finding %+v", f)
	}
	want(t, fs, "propagation example.test MX", OK, "agree")
}

func TestDNSBLHealth(t *testing.T) {
	zone := good + `
$ORIGIN bl.test.
2.0.0.127 300 IN A 127.0.0.2
$ORIGIN refused.test.
2.0.0.127 300 IN A 127.255.255.254
1.0.0.127 300 IN A 127.255.255.254
$ORIGIN all.test.
2.0.0.127 300 IN A 127.0.0.2
1.0.0.127 300 IN A 127.0.0.2
$ORIGIN dead.test.
x 300 IN A 127.0.0.2
`
	fs := fixture(t, zone, func(c *Config) {
		c.DNSBLSites = []string{"bl.test=127.0.0.[2..11]*3", "refused.test", "all.test*2", "dead.test"}
	})
	want(t, fs, "dnsbl bl.test", OK, "127.0.0.2 listed")
	want(t, fs, "dnsbl refused.test", Fail, "127.255.255.254")
	want(t, fs, "dnsbl all.test", Fail, "127.0.0.1 is listed")
	want(t, fs, "dnsbl dead.test", Fail, "127.0.0.2 is not listed")
}

func TestHostsFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "hosts")
	os.WriteFile(p, []byte("127.0.0.1 localhost\n127.0.1.1 mx.example.test mx # Debian's installer\n"), 0o644)
	fs := fixture(t, good, func(c *Config) { c.HostsFile = p })
	want(t, fs, "hosts file", Warn, "127.0.1.1")
}

// certFile writes a certificate chain for name into a file: signed by a
// fresh CA (included when chain is set) or self-signed.
func certFile(t *testing.T, name string, notAfter time.Time, selfSigned, chain bool) (string, *x509.CertPool) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ca := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(365 * 24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, _ := x509.CreateCertificate(rand.Reader, ca, ca, &caKey.PublicKey, caKey)
	caCert, _ := x509.ParseCertificate(caDER)
	leaf := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: name}, DNSNames: []string{name},
		NotBefore: time.Now().Add(-2 * time.Hour), NotAfter: notAfter,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, KeyUsage: x509.KeyUsageDigitalSignature,
	}
	parent, signer := caCert, caKey
	if selfSigned {
		parent, signer = leaf, key
	}
	der, err := x509.CreateCertificate(rand.Reader, leaf, parent, &key.PublicKey, signer)
	if err != nil {
		t.Fatal(err)
	}
	pemData := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	if chain {
		pemData = append(pemData, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})...)
	}
	p := filepath.Join(t.TempDir(), "cert.pem")
	os.WriteFile(p, pemData, 0o644)
	roots := x509.NewCertPool()
	roots.AddCert(caCert)
	return p, roots
}

func TestCertificate(t *testing.T) {
	later := time.Now().Add(60 * 24 * time.Hour)
	cases := []struct {
		name, host       string
		notAfter         time.Time
		selfSigned, full bool
		st               Status
		detail           string
	}{
		{"good", "mx.example.test", later, false, true, OK, "chain of 2"},
		{"wrong name", "other.example.test", later, false, true, Fail, "does not cover mx.example.test"},
		{"expired", "mx.example.test", time.Now().Add(-time.Hour), false, true, Fail, "expired"},
		{"soon", "mx.example.test", time.Now().Add(5 * 24 * time.Hour), false, true, Warn, "expires in"},
		{"self-signed", "mx.example.test", later, true, false, Warn, "self-signed"},
		{"no chain", "mx.example.test", later, false, false, Warn, "no intermediate"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p, roots := certFile(t, c.host, c.notAfter, c.selfSigned, c.full)
			fs := fixture(t, good, func(cfg *Config) { cfg.TLSCert, cfg.Roots = p, roots })
			want(t, fs, "tls certificate", c.st, c.detail)
		})
	}
}

// TestMTASTS serves a policy over HTTPS; the client reaches it whatever
// the name resolves to.
func TestMTASTS(t *testing.T) {
	for _, c := range []struct {
		policy string
		st     Status
		detail string
	}{
		{"version: STSv1\nmode: enforce\nmx: *.example.test\nmax_age: 86400\n", OK, "lists mx.example.test"},
		{"version: STSv1\nmode: enforce\nmx: mail.other.test\nmax_age: 86400\n", Fail, "does not list"},
		{"version: STSv1\nmode: testing\nmx: mail.other.test\nmax_age: 86400\n", Warn, "does not list"},
	} {
		var path string
		h := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			path = r.Host + r.URL.Path
			fmt.Fprint(w, c.policy)
		}))
		cl := h.Client()
		tr := cl.Transport.(*http.Transport)
		tr.DialContext = func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, h.Listener.Addr().String())
		}
		tr.TLSClientConfig = &tls.Config{InsecureSkipVerify: true}
		fs := fixture(t, good+"$ORIGIN example.test.\n_mta-sts 300 IN TXT \"v=STSv1; id=20261201\"\n", func(cfg *Config) { cfg.HTTPClient = cl })
		want(t, fs, "mta-sts example.test", c.st, c.detail)
		if path != "mta-sts.example.test/.well-known/mta-sts.txt" {
			t.Errorf("fetched %q", path)
		}
		h.Close()
	}
}

func TestListen(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			fmt.Fprint(c, "220-mx.example.test ESMTP\r\n220 nanomx\r\n")
			c.Close()
		}
	}()
	dead, _ := net.Listen("tcp", "127.0.0.1:0")
	deadAddr := dead.Addr().String()
	dead.Close()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	fs := fixture(t, good, func(c *Config) { c.Listen = []string{"0.0.0.0:" + port, deadAddr} })
	f := want(t, fs, "listen 0.0.0.0:"+port, OK, "220 nanomx")
	if !strings.Contains(f.Detail, "nanomx doctor probe mx.example.test") {
		t.Errorf("listen finding does not point at probe: %q", f.Detail)
	}
	want(t, fs, "listen "+deadAddr, Fail, "nothing answers")
}

// TestTimeout: a resolver that never answers gives warnings within the
// time the queries are bounded by, not a hang.
func TestTimeout(t *testing.T) {
	s := dnstest.New(t, good)
	s.Drop(true)
	start := time.Now()
	fs := Run(context.Background(), Config{
		Hostname: "mx.example.test", Domains: []string{"example.test"},
		Resolvers: []string{s.Addr()}, HostAddrs: []netip.Addr{hostAddr}, Timeout: 200 * time.Millisecond,
	})
	want(t, fs, "hostname mx.example.test", Warn, "could not resolve")
	want(t, fs, "mx example.test", Warn, "could not look up MX")
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("took %v", d)
	}
}
