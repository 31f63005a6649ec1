package server

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nanomx/nanomx/server/proxyproto/haproxytest"
)

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
			haproxytest.Start(t, func(sock string) string { return haproxyConf(front, cfg.ProxyListen[0], send, "", sock) })

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
			h := haproxytest.Start(t, func(sock string) string { return haproxyConf(front, cfg.ProxyListen[0], send, "200ms", sock) })
			st := h.WaitStat(t, "nanomx", "mx1", 10*time.Second, func(st map[string]string) bool {
				return st["check_status"] == "L7OK" && st["status"] == "UP"
			})
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
