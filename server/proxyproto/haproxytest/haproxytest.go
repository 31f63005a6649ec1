// Package haproxytest starts a private HAProxy for tests: its own
// configuration in a temporary directory, an admin stats socket there,
// run in the foreground and stopped by PID at the end of the test. The
// caller writes the configuration (the README's examples, with the
// test's addresses); this package runs it and reads HAProxy's view of its
// servers.
//
// Without HAProxy the test is skipped, except under CI=true, where it
// fails: CI installs haproxy (.ci/run).
package haproxytest

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nanomx/nanomx/server/servertest"
)

// Server is a running private HAProxy.
type Server struct {
	// Sock is the admin stats socket the configuration must declare
	// ("stats socket <Sock> ... level admin"); Start waits for it.
	Sock string
	// Dir holds the configuration and the socket.
	Dir string

	out *syncBuffer
}

// Bin finds HAProxy: the test is skipped when it is missing, or fails
// under CI=true.
func Bin(t testing.TB) string {
	t.Helper()
	for _, p := range []string{"haproxy", "/usr/sbin/haproxy"} {
		if path, err := exec.LookPath(p); err == nil {
			return path
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("haproxy is not installed (apt-get install haproxy)")
	}
	t.Skip("haproxy is not installed")
	return ""
}

// Start runs HAProxy in the foreground (-db) on the configuration
// build returns for the stats socket's path, until the test ends, when it
// is killed by its PID. It returns once the socket answers: by then
// HAProxy has bound its frontends.
func Start(t testing.TB, build func(sock string) string) *Server {
	t.Helper()
	bin := Bin(t)
	dir := t.TempDir()
	s := &Server{Sock: filepath.Join(dir, "haproxy.sock"), Dir: dir, out: &syncBuffer{}}
	cfgPath := filepath.Join(dir, "haproxy.cfg")
	if err := os.WriteFile(cfgPath, []byte(build(s.Sock)), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-db", "-f", cfgPath)
	cmd.Stdout, cmd.Stderr = s.out, s.out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill() // the PID we started
		<-done
		if t.Failed() {
			t.Logf("haproxy output:\n%s", s.out.String())
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := s.Cmd("show info"); err == nil {
			return s
		}
		select {
		case <-done:
			t.Fatalf("haproxy exited:\n%s", s.out.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("haproxy did not start:\n%s", s.out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Cmd sends one command to the stats socket and returns the answer.
func (s *Server) Cmd(cmd string) (string, error) {
	c, err := net.DialTimeout("unix", s.Sock, time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := io.WriteString(c, cmd+"\n"); err != nil {
		return "", err
	}
	b, err := io.ReadAll(bufio.NewReader(c))
	return string(b), err
}

// Stat returns the fields of "show stat" (status, check_status,
// check_code, check_desc, stot...) for server in backend.
func (s *Server) Stat(backend, server string) (map[string]string, error) {
	out, err := s.Cmd("show stat")
	if err != nil {
		return nil, err
	}
	lines := strings.Split(out, "\n")
	if !strings.HasPrefix(lines[0], "# ") {
		return nil, fmt.Errorf("show stat: %q", out)
	}
	names := strings.Split(strings.TrimPrefix(lines[0], "# "), ",")
	for _, l := range lines[1:] {
		f := strings.Split(l, ",")
		if len(f) >= 2 && f[0] == backend && f[1] == server {
			m := make(map[string]string, len(names))
			for i, n := range names {
				if i < len(f) {
					m[n] = f[i]
				}
			}
			return m, nil
		}
	}
	return nil, fmt.Errorf("no %s/%s in show stat:\n%s", backend, server, out)
}

// WaitStat polls Stat until ok accepts the fields or timeout passes, and
// returns the last fields; the test fails if ok never did.
func (s *Server) WaitStat(t testing.TB, backend, server string, timeout time.Duration, ok func(map[string]string) bool) map[string]string {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		st, err := s.Stat(backend, server)
		if err != nil {
			t.Fatal(err)
		}
		if ok(st) {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("haproxy %s/%s after %v: status %s, check_status %s, check_code %s, check_desc %s",
				backend, server, timeout, st["status"], st["check_status"], st["check_code"], st["check_desc"])
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// syncBuffer collects HAProxy's output while it runs.
type syncBuffer = servertest.SyncBuffer
