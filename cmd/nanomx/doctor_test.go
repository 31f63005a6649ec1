package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nanomx/nanomx/server/doctor"
	"github.com/nanomx/nanomx/server/resolver/dnstest"
)

// TestDoctor runs "nanomx doctor -json" against the configuration of a
// running nanomx with TLS, its DNS served by an in-process server, and
// "doctor probe" against that nanomx.
func TestDoctor(t *testing.T) {
	zone := `
$ORIGIN example.test.
@     300 IN SOA ns1.example.test. hostmaster.example.test. 1 3600 600 86400 60
@     300 IN NS  ns1.example.test.
ns1   300 IN A   127.0.0.1
mx    300 IN A   127.0.0.1
@     300 IN MX  10 mx.example.test.
$ORIGIN 0.0.127.in-addr.arpa.
@     300 IN SOA ns1.example.test. hostmaster.example.test. 1 3600 600 86400 60
1     300 IN PTR mx.example.test.
$ORIGIN bl.test.
2.0.0.127 300 IN A 127.0.0.2
`
	dns := dnstest.New(t, zone)
	_, nsPort, _ := net.SplitHostPort(dns.Addr())
	dir := t.TempDir()
	p, _, _ := startTLSIn(t, dir, fmt.Sprintf("dns_servers = [%q]\ndnsbl_sites = [\"bl.test*2\"]\n", dns.Addr()))

	var out, errb bytes.Buffer
	code := run([]string{"doctor", "-json", "-ns-port", nsPort, "-config", filepath.Join(dir, "nanomx.toml")}, &out, &errb)
	var fs []doctor.Finding
	if err := json.Unmarshal(out.Bytes(), &fs); err != nil {
		t.Fatalf("doctor -json: %v\n%s\n%s", err, out.String(), errb.String())
	}
	if code != doctor.ExitCode(fs) {
		t.Errorf("exit %d, findings say %d", code, doctor.ExitCode(fs))
	}
	got := map[string]doctor.Finding{}
	for _, f := range fs {
		got[f.Check] = f
		if f.Status != doctor.OK && f.Status != doctor.Warn && f.Status != doctor.Fail {
			t.Errorf("bad status %+v", f)
		}
	}
	for check, st := range map[string]doctor.Status{
		"mx example.test":             doctor.OK,
		"propagation example.test MX": doctor.OK,
		"listen " + p.addr:            doctor.OK,
		"tls certificate":             doctor.Warn, // a day-old test CA: not trusted, expiring
		"spf example.test":            doctor.Warn,
		"dmarc example.test":          doctor.Warn,
	} {
		if f, ok := got[check]; !ok || f.Status != st {
			t.Errorf("%s: got %+v, want %s\n%s", check, f, st, out.String())
		}
	}
	if code < 1 {
		t.Errorf("exit %d with warnings", code)
	}

	// The text form says the same, one line per check.
	out.Reset()
	run([]string{"doctor", "-ns-port", nsPort, "-config", filepath.Join(dir, "nanomx.toml")}, &out, &errb)
	if !strings.Contains(out.String(), "ok    mx example.test: points at mx.example.test") ||
		!strings.Contains(out.String(), "      fix: if example.test sends no mail") {
		t.Errorf("text output:\n%s", out.String())
	}

	// The probe, as from another machine.
	out.Reset()
	host, port, _ := net.SplitHostPort(p.addr)
	code = run([]string{"doctor", "probe", "-json", "-port", port, host}, &out, &errb)
	fs = nil
	if err := json.Unmarshal(out.Bytes(), &fs); err != nil {
		t.Fatalf("probe -json: %v\n%s", err, out.String())
	}
	if code != 0 || len(fs) < 4 || fs[len(fs)-1].Check != "starttls" {
		t.Errorf("probe exit %d: %+v", code, fs)
	}
	// Nothing listening: exit 2.
	out.Reset()
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	_, deadPort, _ := net.SplitHostPort(ln.Addr().String())
	ln.Close()
	if code := run([]string{"doctor", "probe", "-port", deadPort, "127.0.0.1"}, &out, &errb); code != 2 ||
		!strings.Contains(out.String(), "connection refused") {
		t.Errorf("probe of a closed port: exit %d\n%s", code, out.String())
	}
	if code := run([]string{"doctor", "probe"}, &out, &errb); code != exitUsage {
		t.Errorf("probe without a host: exit %d", code)
	}
}
