package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nanomx/nanomx/bench"
	"github.com/nanomx/nanomx/bench/fakesmtp"
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
		// Nothing listens on port 1: nothing delivered is a failure.
		{[]string{"bench", "-target", "127.0.0.1:1", "-count", "2", "-conns", "1"}, exitError, ""},
	} {
		var out, errOut strings.Builder
		if code := run(tc.args, &out, &errOut); code != tc.code || !strings.Contains(errOut.String(), tc.errOut) {
			t.Errorf("%q: exit %d, stderr %q; want %d with %q", tc.args, code, errOut.String(), tc.code, tc.errOut)
		}
	}
}
