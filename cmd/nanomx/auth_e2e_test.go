package main

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nanomx/nanomx/bench/smtpc"
	"github.com/nanomx/nanomx/server/resolver/dnstest"
)

// e2eAuthZone: 127.0.0.2 is mx.good.test (PTR and A agree) and the only
// sender good.test's SPF allows, with DMARC p=quarantine; 127.0.0.3 has
// no PTR.
const e2eAuthZone = `
2.0.0.127.in-addr.arpa. PTR mx.good.test.
mx.good.test.           A   127.0.0.2
good.test.              TXT "v=spf1 ip4:127.0.0.2 -all"
_dmarc.good.test.       TXT "v=DMARC1; p=quarantine"
`

// TestE2EAuth runs the binary with sender authentication on (the
// default with a config file) against an in-process DNS server, and
// sends from two loopback addresses: SPF, iprev, DMARC and the Received
// field see two different clients.
func TestE2EAuth(t *testing.T) {
	dns := dnstest.New(t, e2eAuthZone)
	dir := t.TempDir()
	addr := freeAddr(t)
	root := filepath.Join(dir, "maildir")
	conf := fmt.Sprintf(`hostname = "mx.example.test"
listen = [%q]
maildir_root = %q
domains = ["example.test"]
postmaster = "alice@example.test"
mailboxes = ["alice@example.test", "bob@example.test"]
dns_servers = [%q]
dns_timeout = "500ms"
`, addr, root, dns.Addr())
	path := filepath.Join(dir, "nanomx.toml")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	startNanomx(t, dir, addr, "serve", "-config", path)

	send := func(local, helo, from, rcpt, msg string) {
		t.Helper()
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}, Timeout: 5 * time.Second}
		nc, err := d.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		c := smtpc.New(nc)
		c.Timeout = 10 * time.Second
		defer c.Close()
		if err := c.Greeting(); err != nil {
			t.Fatal(err)
		}
		if err := c.Ehlo(helo); err != nil {
			t.Fatal(err)
		}
		if err := c.Send(from, []string{rcpt}, []byte(msg), []byte(".\r\n")); err != nil {
			t.Fatalf("from %s: %v (%s)", local, err, c.Text())
		}
		_ = c.Quit()
	}
	send("127.0.0.2", "mx.good.test", "news@good.test", "bob@example.test",
		"Authentication-Results: mx.example.test; dmarc=pass\r\nFrom: News <news@good.test>\r\nSubject: a\r\n\r\nhello\r\n")
	send("127.0.0.3", "forger.test", "ceo@good.test", "alice@example.test",
		"From: CEO <ceo@good.test>\r\nSubject: b\r\n\r\npay now\r\n")

	bob := maildirFiles(t, filepath.Join(root, "example.test", "bob"))
	if len(bob) != 1 {
		t.Fatalf("bob: %d files", len(bob))
	}
	for _, f := range bob {
		s := string(f)
		for _, want := range []string{
			"Received: from mx.good.test (mx.good.test [127.0.0.2])\n",
			"Authentication-Results: mx.example.test;\n\tspf=pass smtp.mailfrom=news@good.test;\n\tdkim=none;\n\tdmarc=pass (p=quarantine) header.from=good.test;\n\tiprev=pass policy.iprev=127.0.0.2 (mx.good.test)\n",
		} {
			if !strings.Contains(s, want) {
				t.Errorf("bob's message lacks %q:\n%s", want, s)
			}
		}
		if strings.Count(s, "Authentication-Results:") != 1 {
			t.Errorf("forged field kept:\n%s", s)
		}
	}
	// From 127.0.0.3 the same domain fails SPF and DMARC: p=quarantine
	// puts it into alice's Junk folder.
	if n := len(maildirFiles(t, filepath.Join(root, "example.test", "alice"))); n != 0 {
		t.Errorf("alice's inbox has %d files", n)
	}
	junk := maildirFiles(t, filepath.Join(root, "example.test", "alice", ".Junk"))
	if len(junk) != 1 {
		t.Fatalf("alice/.Junk: %d files", len(junk))
	}
	for _, f := range junk {
		s := string(f)
		for _, want := range []string{
			"Received: from forger.test (unknown [127.0.0.3])\n",
			"\tspf=fail",
			"smtp.mailfrom=ceo@good.test;\n",
			"\tdmarc=fail reason=\"no aligned SPF or DKIM pass\" (p=quarantine) header.from=good.test;\n",
			"\tiprev=permerror reason=\"no PTR record\" policy.iprev=127.0.0.3\n",
		} {
			if !strings.Contains(s, want) {
				t.Errorf("junk message lacks %q:\n%s", want, s)
			}
		}
	}
}
