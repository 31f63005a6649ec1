package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nanomx/nanomx/server/lmtp/dovecottest"
)

// lmtpUsers are the Dovecot users the LMTP tests deliver to: the crash
// test's mailboxes and the example's postmaster.
var lmtpUsers = []string{"alice@example.test", "bob@example.test", "carol@example.test", "admin@example.test"}

// lmtpExample is the README's nanomx example for an MX in front of
// Dovecot (nanomx.lmtp.example.toml), pointed at this test's addresses,
// with the crash load's alias (and its targets) and per-IP limit added.
func lmtpExample(t *testing.T, host, addr, root, lmtp string) string {
	t.Helper()
	b, err := os.ReadFile("nanomx.lmtp.example.toml")
	if err != nil {
		t.Fatal(err)
	}
	conf := string(b)
	for _, r := range [][2]string{
		{`hostname = "mx1.example.test"`, fmt.Sprintf("hostname = %q", host)},
		{`listen = ["0.0.0.0:25", "[::]:25"]`, fmt.Sprintf("listen = [%q]", addr)},
		{`maildir_root = "/var/lib/nanomx"`, fmt.Sprintf("maildir_root = %q", root)},
		{`lmtp = "10.0.0.5:24"`, fmt.Sprintf("lmtp = %q", lmtp)},
		// An alias's targets must be listed; carol stays Dovecot's alone.
		{`mailboxes = ["admin@example.test"]`, `mailboxes = ["admin@example.test", "alice@example.test", "bob@example.test"]`},
	} {
		if !strings.Contains(conf, r[0]) {
			t.Fatalf("nanomx.lmtp.example.toml has no %s", r[0])
		}
		conf = strings.Replace(conf, r[0], r[1], 1)
	}
	return conf + `max_connections_per_ip = 100
shutdown_timeout = "10s"

[aliases]
"team@example.test" = ["alice@example.test", "bob@example.test"]
`
}

// lmtpOutcomes counts the load's messages by class: acked, refused 4xx,
// refused 5xx, and anything else (a connection cut).
func lmtpOutcomes(msgs []*crashMsg) (acked, temp, perm, other int) {
	for _, m := range msgs {
		switch {
		case m.acked:
			acked++
		case m.err.Code/100 == 4:
			temp++
		case m.err.Code/100 == 5:
			perm++
		default:
			other++
		}
	}
	return
}

// TestLMTPDovecotDown runs the crash test's load (16 senders, sizes up to
// a megabyte, so spilled messages too, lines that need dot-stuffing)
// through the nanomx binary, configured as the README's example, into a
// real Dovecot over LMTP; stops Dovecot in the middle and starts it again.
// While it is down every message is refused with 4xx (at RCPT, by
// lmtp_check_rcpt, or after the data), never 5xx; and the bench's
// verifier, run on Dovecot's store, finds every message answered 250
// exactly once in each of its mailboxes, complete and byte for byte.
func TestLMTPDovecotDown(t *testing.T) {
	d := dovecottest.Start(t, lmtpUsers...)
	dir := t.TempDir()
	addr := freeAddr(t)
	srv := newCrashServer(t, dir, addr, lmtpExample(t, "mx1.example.test", addr, filepath.Join(dir, "spool"), d.Addr))
	srv.start()

	seed := crashSeed(t)
	t.Logf("seed %d", seed)
	stop := make(chan struct{})
	g := &crashLoad{addr: addr, run: fmt.Sprintf("l%x", seed), seed: seed, stop: stop}
	defer func() {
		select {
		case <-stop:
		default:
			close(stop)
		}
	}()
	g.start(crashSenders, 0)
	time.Sleep(1500 * time.Millisecond)
	before := g.acked.Load()
	d.Stop()
	time.Sleep(1500 * time.Millisecond)
	during := g.acked.Load()
	d.Restart()
	time.Sleep(1500 * time.Millisecond)
	close(stop)
	msgs := g.wait(t)
	if took, err := srv.term(30 * time.Second); err != nil {
		t.Errorf("SIGTERM: %v after %v", err, took)
	}
	srv.checkLogs()

	v := crashCheck(t, d.MailDir(), g.run, msgs)
	acked, temp, perm, other := lmtpOutcomes(msgs)
	t.Logf("outcomes: %s", crashOutcomes(msgs))
	t.Logf("%s", crashSummary(msgs, v))
	t.Logf("acked before the stop %d, while down %d, at the end %d; Dovecot connections %d", before, during-before, acked, d.Connections())
	switch {
	case before == 0 || int64(acked) == during:
		t.Errorf("no message was acked before the stop (%d) or after the restart (%d → %d)", before, during, acked)
	case temp == 0:
		t.Error("no message was refused 4xx while Dovecot was down")
	case perm > 0:
		t.Errorf("%d messages were refused 5xx: Dovecot being down must only defer", perm)
	}
	_ = other
}

// TestLMTPTwoMX runs two nanomx processes, each configured as the
// README's example, under load at the same time, both delivering to one
// Dovecot: every message either acked is stored once in each of its
// mailboxes, and each process keeps to its lmtp_connections.
func TestLMTPTwoMX(t *testing.T) {
	d := dovecottest.Start(t, lmtpUsers...)
	seed := crashSeed(t)
	run := fmt.Sprintf("m%x", seed)
	stop := make(chan struct{})
	defer func() {
		select {
		case <-stop:
		default:
			close(stop)
		}
	}()
	var srvs []*crashServer
	var loads []*crashLoad
	for i, host := range []string{"mx1.example.test", "mx2.example.test"} {
		dir := t.TempDir()
		addr := freeAddr(t)
		srv := newCrashServer(t, dir, addr, lmtpExample(t, host, addr, filepath.Join(dir, "spool"), d.Addr))
		srv.start()
		g := &crashLoad{addr: addr, run: run, seed: seed + uint64(i), stop: stop}
		g.next.Store(int64(i) << 40) // one marker space, two ranges
		srvs, loads = append(srvs, srv), append(loads, g)
	}
	for _, g := range loads {
		g.start(8, 0)
	}
	time.Sleep(2500 * time.Millisecond)
	close(stop)
	var msgs []*crashMsg
	for i, g := range loads {
		m := g.wait(t)
		if g.acked.Load() == 0 {
			t.Errorf("mx%d acked nothing", i+1)
		}
		msgs = append(msgs, m...)
	}
	for _, srv := range srvs {
		if took, err := srv.term(30 * time.Second); err != nil {
			t.Errorf("SIGTERM: %v after %v", err, took)
		}
		srv.checkLogs()
	}
	v := crashCheck(t, d.MailDir(), run, msgs)
	t.Logf("outcomes: %s", crashOutcomes(msgs))
	t.Logf("%s", crashSummary(msgs, v))
	if acked, _, _, _ := lmtpOutcomes(msgs); acked != len(msgs) {
		t.Errorf("%d of %d messages acked; with Dovecot up all should be", acked, len(msgs))
	}
	if n := d.Connections(); n > 2*4 {
		t.Errorf("Dovecot saw %d connections from two MXes with lmtp_connections = 4", n)
	}
}

// TestLMTPExamplesInREADME: the README's "More than one machine" shows the
// example files the LMTP tests run, as they are.
func TestLMTPExamplesInREADME(t *testing.T) {
	readme, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	toml, err := os.ReadFile("nanomx.lmtp.example.toml")
	if err != nil {
		t.Fatal(err)
	}
	dovecot, err := dovecottest.Example()
	if err != nil {
		t.Fatal(err)
	}
	for name, b := range map[string][]byte{"nanomx.lmtp.example.toml": toml, "dovecot-lmtp.conf": dovecot} {
		if !strings.Contains(string(readme), "\n"+string(b)+"```\n") {
			t.Errorf("README.md does not show %s as it is", name)
		}
	}
}
