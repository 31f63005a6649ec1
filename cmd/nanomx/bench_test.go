package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nanomx/nanomx/bench"
	"github.com/nanomx/nanomx/bench/fakesmtp"
	"github.com/nanomx/nanomx/server/servertest"
)

// nanomx bench against the real server: every acked message is in both
// recipients' Maildirs, once; the JSON result feeds -table and -chart.
func TestBenchAgainstNanomx(t *testing.T) {
	p, root := startWithConfig(t)
	var out, errOut strings.Builder
	code := run([]string{"bench", "-target", p.addr, "-conns", "4", "-count", "60", "-size", "2KB",
		"-to", "alice@example.test,bob@example.test", "-rcpts", "2", "-pipelining", "-per-conn", "7",
		"-verify-maildir", root, "-json"}, &out, &errOut)
	if code != exitOK {
		t.Fatalf("bench exit %d\n%s\n%s", code, out.String(), errOut.String())
	}
	var res bench.Result
	if err := json.Unmarshal([]byte(out.String()), &res); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	v := res.Verify
	if res.Delivered != 60 || len(res.Errors) != 0 || !res.PipeliningOffered ||
		v == nil || v.Present != 60 || v.Lost != 0 || v.Duplicates != 0 || v.Files != 120 {
		t.Fatalf("result: %s", out.String())
	}

	dir := t.TempDir()
	file := filepath.Join(dir, "r.json")
	if err := os.WriteFile(file, []byte(out.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	svg := filepath.Join(dir, "c.svg")
	if code := run([]string{"bench", "-table", "-ref", file, "-chart", svg, file}, &out, &errOut); code != exitOK {
		t.Fatalf("report exit %d: %s", code, errOut.String())
	}
	if !strings.Contains(out.String(), "| 4 | 2KB |") || !strings.Contains(out.String(), " 1.00 |") {
		t.Errorf("table:\n%s", out.String())
	}
	if b, err := os.ReadFile(svg); err != nil || !strings.HasPrefix(string(b), "<svg") {
		t.Errorf("chart: %v %.100s", err, b)
	}
}

// A server that acks a message it does not store makes the exit status 1.
func TestBenchVerifyExit(t *testing.T) {
	dir := t.TempDir()
	s := &fakesmtp.Server{
		Maildir: filepath.Join(dir, "box"),
		Decide:  func(seq int64) fakesmtp.Action { return fakesmtp.Action{NoStore: seq == 2} },
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var out, errOut strings.Builder
	code := run([]string{"bench", "-target", s.Addr(), "-count", "5", "-run-id", "rx", "-verify-maildir", dir}, &out, &errOut)
	if code != exitError || !strings.Contains(errOut.String(), "1 acked messages lost") || !strings.Contains(out.String(), "lost: rx-2") {
		t.Errorf("exit %d\nstdout: %s\nstderr: %s", code, out.String(), errOut.String())
	}
}

func TestBenchUsage(t *testing.T) {
	for _, tc := range []struct {
		args   []string
		code   int
		errOut string
	}{
		{[]string{"bench", "-size", "10XB"}, exitUsage, "unknown unit"},
		{[]string{"bench", "-conns", "0"}, exitUsage, "-conns: must be at least 1"},
		{[]string{"bench", "-duration", "1h", "-max-duration", "1m"}, exitUsage, "past max-duration"},
		{[]string{"bench", "-table"}, exitUsage, "want JSON result files"},
		{[]string{"bench", "stray"}, exitUsage, `unexpected argument "stray"`},
		{[]string{"bench", "-nope"}, exitUsage, "flag provided but not defined"},
		{[]string{"bench", "-tls-ca", "ca.pem"}, exitUsage, "tls-ca, tls-servername, tls-resume: need tls"},
		{[]string{"bench", "-slo", "100ms"}, exitUsage, "-slo needs -rate"},
		{[]string{"bench", "-profile", "lan"}, exitUsage, `profile "lan": unknown`},
		{[]string{"bench", "-tls", "-tls-ca", "/nonexistent/ca.pem"}, exitUsage, "tls-ca: open /nonexistent/ca.pem"},
		// Nothing listens on port 1: nothing delivered is a failure.
		{[]string{"bench", "-target", "127.0.0.1:1", "-count", "2", "-conns", "1"}, exitError, ""},
	} {
		var out, errOut strings.Builder
		if code := run(tc.args, &out, &errOut); code != tc.code || !strings.Contains(errOut.String(), tc.errOut) {
			t.Errorf("%q: exit %d, stderr %q; want %d with %q", tc.args, code, errOut.String(), tc.code, tc.errOut)
		}
	}
}

// startTLSServer runs nanomx with a throwaway certificate for
// mx.example.test and the extra config keys.
func startTLSServer(t *testing.T, extra string) (*proc, string, *servertest.PKI) {
	t.Helper()
	dir := t.TempDir()
	pki, err := servertest.NewPKI(dir, "mx.example.test")
	if err != nil {
		t.Fatal(err)
	}
	p, root := startWithExtra(t, dir, fmt.Sprintf("tls_cert = %q\ntls_key = %q\n%s", pki.CertFile, pki.KeyFile, extra))
	return p, root, pki
}

// nanomx bench -tls against the real server: every session upgrades with
// STARTTLS, every acked message is stored once, and its Received header
// says ESMTPS with the TLS version and cipher.
func TestBenchTLSAgainstNanomx(t *testing.T) {
	p, root, pki := startTLSServer(t, "")
	var out, errOut strings.Builder
	code := run([]string{"bench", "-target", p.addr, "-tls", "-tls-ca", pki.CAFile, "-tls-servername", "mx.example.test",
		"-conns", "3", "-count", "24", "-per-conn", "5", "-size", "3KB", "-pipelining", "-to", "alice@example.test",
		"-idle", "2", "-slow", "1", "-slow-interval", "1h", "-pid", fmt.Sprint(p.cmd.Process.Pid),
		"-verify-maildir", root, "-json"}, &out, &errOut)
	if code != exitOK {
		t.Fatalf("bench exit %d\n%s\n%s", code, out.String(), errOut.String())
	}
	var res bench.Result
	if err := json.Unmarshal([]byte(out.String()), &res); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	v := res.Verify
	if res.Delivered != 24 || len(res.Errors) != 0 || !res.PipeliningOffered ||
		v == nil || v.Present != 24 || v.Lost != 0 || v.Duplicates != 0 {
		t.Fatalf("result: %s", out.String())
	}
	// 24 messages, 5 a session: at least 5 sessions, one handshake each.
	if res.Connections < 5 || res.Latency.TLS.Count != res.Connections {
		t.Errorf("%d handshakes measured over %d connections", res.Latency.TLS.Count, res.Connections)
	}
	if res.Idle == nil || res.Idle.Outcomes["still open"] != 2 || res.Slow == nil || res.Slow.Outcomes["still open"] != 1 {
		t.Errorf("idle %+v\nslow %+v", res.Idle, res.Slow)
	}
	if res.Server == nil || res.Server.CPUSeconds < 0 || res.Server.PeakRSSKB == 0 {
		t.Errorf("server: %+v", res.Server)
	}
	files := maildirFiles(t, filepath.Join(root, "example.test", "alice"))
	if len(files) != 24 {
		t.Fatalf("%d files in alice/new, want 24", len(files))
	}
	for name, b := range files {
		if !bytes.Contains(b, []byte(" with ESMTPS\n\t(using TLSv1.3 with cipher TLS_")) ||
			!bytes.Contains(b, []byte("\nX-Nanomx-Bench: "+res.Config.RunID+"-")) {
			t.Fatalf("%s: not received over TLS by bench:\n%.600s", name, b)
		}
	}
}

// The idle sessions upgrade too: with max_tls_sessions = 2 and two idle
// TLS sessions holding the slots, the load's STARTTLS is refused 454.
func TestBenchTLSIdleHoldSlots(t *testing.T) {
	p, _, _ := startTLSServer(t, "max_tls_sessions = 2\n")
	var out, errOut strings.Builder
	code := run([]string{"bench", "-target", p.addr, "-tls", "-conns", "1", "-count", "3", "-idle", "2", "-to", "bob@example.test"},
		&out, &errOut)
	if code != exitError || !strings.Contains(out.String(), "       3  starttls: 454 4.7.0\n") ||
		!strings.Contains(out.String(), "idle        2 of 2 opened") {
		t.Errorf("exit %d\nstdout: %s\nstderr: %s", code, out.String(), errOut.String())
	}
}

// A server that does not offer STARTTLS fails every -tls session, the
// idle ones included; nothing is sent.
func TestBenchTLSNotOffered(t *testing.T) {
	s := &fakesmtp.Server{}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var out, errOut strings.Builder
	code := run([]string{"bench", "-target", s.Addr(), "-tls", "-conns", "2", "-count", "5", "-idle", "3"}, &out, &errOut)
	if code != exitError || !strings.Contains(out.String(), "       5  starttls: not offered\n") ||
		!strings.Contains(out.String(), "       3  not opened: starttls: not offered\n") || s.Messages.Load() != 0 {
		t.Errorf("exit %d, %d messages sent\nstdout: %s\nstderr: %s", code, s.Messages.Load(), out.String(), errOut.String())
	}
}
