package server

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
)

// haproxyBin finds HAProxy: skipped locally when it is missing, a failure
// in CI (.ci/run installs it).
func haproxyBin(t *testing.T) string {
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

// haproxyConf is the configuration the HAProxy tests run, and README.md's
// "Behind a proxy" section shows (TestREADMEHAProxySnippet): a TCP
// frontend on front relaying to nanomx's proxy_listen address mx with the
// PROXY header (send is "send-proxy" or "send-proxy-v2") and, when inter
// is set, an SMTP health check every inter. HAProxy's idle timeouts are
// longer than nanomx's command_timeout (5m), so that a late client gets
// nanomx's 421, not a cut connection.
func haproxyConf(front, mx, send, inter, sock string) string {
	chk, server := "", fmt.Sprintf("    server mx1 %s %s", mx, send)
	if inter != "" {
		chk = "    option smtpchk EHLO haproxy.example.test\n"
		server += " check inter " + inter
	}
	return fmt.Sprintf(`global
    stats socket %s mode 600 level admin

defaults
    mode tcp
    timeout connect 5s
    timeout client 6m
    timeout server 6m

frontend smtp
    bind %s
    default_backend nanomx

backend nanomx
%s%s
`, sock, front, chk, server)
}

// TestREADMEHAProxySnippet: the HAProxy configuration README.md shows is
// haproxyConf's, which the tests run.
func TestREADMEHAProxySnippet(t *testing.T) {
	readme, err := os.ReadFile(filepath.Join("..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	want := haproxyConf("0.0.0.0:25", "127.0.0.1:2526", "send-proxy-v2", "30s", "/run/haproxy/admin.sock")
	if !strings.Contains(string(readme), "\n```\n"+want+"```\n") {
		t.Errorf("README.md has no HAProxy configuration block equal to\n%s", want)
	}
}

// startHAProxy runs HAProxy in the foreground (-db) with conf until the
// test ends, stopped by its PID; it returns its stats socket's path once
// the socket answers (by then HAProxy has bound its frontend).
func startHAProxy(t *testing.T, build func(sock string) string) string {
	t.Helper()
	bin := haproxyBin(t)
	dir := t.TempDir()
	sock := filepath.Join(dir, "haproxy.sock")
	cfgPath := filepath.Join(dir, "haproxy.cfg")
	if err := os.WriteFile(cfgPath, []byte(build(sock)), 0o600); err != nil {
		t.Fatal(err)
	}
	out := &syncBuffer{}
	cmd := exec.Command(bin, "-db", "-f", cfgPath)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill() // the PID we started
		<-done
		if t.Failed() {
			t.Logf("haproxy output:\n%s", out.String())
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := haproxyCmd(sock, "show info"); err == nil {
			return sock
		}
		select {
		case <-done:
			t.Fatalf("haproxy exited:\n%s", out.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("haproxy did not start:\n%s", out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// haproxyCmd sends one command to HAProxy's stats socket.
func haproxyCmd(sock, cmd string) (string, error) {
	c, err := net.DialTimeout("unix", sock, time.Second)
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

// serverStat returns the fields of "show stat" for backend/server.
func serverStat(t *testing.T, sock, backend, server string) map[string]string {
	t.Helper()
	out, err := haproxyCmd(sock, "show stat")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(out, "\n")
	if len(lines) == 0 || !strings.HasPrefix(lines[0], "# ") {
		t.Fatalf("show stat: %q", out)
	}
	names := strings.Split(strings.TrimPrefix(lines[0], "# "), ",")
	for _, l := range lines[1:] {
		f := strings.Split(l, ",")
		if len(f) >= 2 && f[0] == backend && f[1] == server {
			m := map[string]string{}
			for i, n := range names {
				if i < len(f) {
					m[n] = f[i]
				}
			}
			return m
		}
	}
	t.Fatalf("no %s/%s in show stat:\n%s", backend, server, out)
	return nil
}

// TestHAProxy: a client connecting through a real HAProxy from 127.0.0.5,
// with send-proxy (v1) and send-proxy-v2, is the client nanomx sees: the
// stored Received field names 127.0.0.5, and the log line names HAProxy's
// address as the proxy.
func TestHAProxy(t *testing.T) {
	for _, send := range []string{"send-proxy", "send-proxy-v2"} {
		t.Run(send, func(t *testing.T) {
			cfg, logs := proxyConfig(t)
			r := start(t, cfg)
			front := freePort(t)
			startHAProxy(t, func(sock string) string { return haproxyConf(front, cfg.ProxyListen[0], send, "", sock) })

			c := dialFrom(t, "127.0.0.5", front)
			got := received(t, deliver(t, c, cfg.MaildirRoot))
			if !strings.Contains(got, "([127.0.0.5])") {
				t.Errorf("Received: %q, want the client 127.0.0.5", got)
			}
			waitLog(t, logs, `"remote":"127.0.0.5","proxy":"127.0.0.1"`, `"message":"delivered"`)
			if n := r.srv.Stats().ProxyHeaders.Load(); n != 1 {
				t.Errorf("ProxyHeaders = %d", n)
			}
		})
	}
}

// TestHAProxyHealthCheck: HAProxy's SMTP health check ("option smtpchk",
// which wants a 2xx greeting and a 2xx to its EHLO) passes through the
// PROXY listener: with send-proxy-v2 it comes as a v2 LOCAL header, with
// send-proxy as "PROXY UNKNOWN" or a line naming HAProxy itself, and
// either way nanomx serves it as the proxy's own session. HAProxy reports
// L7OK once the check has passed.
func TestHAProxyHealthCheck(t *testing.T) {
	for _, send := range []string{"send-proxy", "send-proxy-v2"} {
		t.Run(send, func(t *testing.T) {
			cfg, _ := proxyConfig(t)
			r := start(t, cfg)
			front := freePort(t)
			sock := startHAProxy(t, func(sock string) string { return haproxyConf(front, cfg.ProxyListen[0], send, "200ms", sock) })
			deadline := time.Now().Add(10 * time.Second)
			var st map[string]string
			for {
				st = serverStat(t, sock, "nanomx", "mx1")
				if st["check_status"] == "L7OK" || time.Now().After(deadline) {
					break
				}
				time.Sleep(50 * time.Millisecond)
			}
			if st["check_status"] != "L7OK" || st["status"] != "UP" {
				t.Fatalf("health check: status %s, check_status %s, check_code %s, check_desc %s",
					st["status"], st["check_status"], st["check_code"], st["check_desc"])
			}
			s := r.srv.Stats()
			t.Logf("%s: %d PROXY headers, %d LOCAL; check_code %s", send, s.ProxyHeaders.Load(), s.ProxyLocal.Load(), st["check_code"])
			if s.ProxyHeaders.Load() == 0 {
				t.Error("the health check sent no PROXY header")
			}
			if send == "send-proxy-v2" && s.ProxyLocal.Load() == 0 {
				t.Error("HAProxy's v2 health check was not a LOCAL header")
			}
			if s.ProxyFailed.Load() != 0 || s.ProxyUntrusted.Load() != 0 {
				t.Errorf("ProxyFailed %d, ProxyUntrusted %d", s.ProxyFailed.Load(), s.ProxyUntrusted.Load())
			}
		})
	}
}
