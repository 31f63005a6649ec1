package doctor

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/nanomx/nanomx/server/servertest"
)

// fakeMX accepts on loopback and speaks just enough SMTP: a greeting,
// EHLO (with STARTTLS when cert is set), STARTTLS and QUIT.
func fakeMX(t *testing.T, greeting string, cert *tls.Config) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func(c net.Conn) {
				defer c.Close()
				c.SetDeadline(time.Now().Add(5 * time.Second))
				if greeting == "" {
					time.Sleep(2 * time.Second)
					return
				}
				fmt.Fprint(c, greeting)
				r := bufio.NewReader(c)
				var conn net.Conn = c
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						return
					}
					switch strings.ToUpper(strings.Fields(line + " x")[0]) {
					case "EHLO":
						if cert != nil {
							fmt.Fprint(conn, "250-mx.example.test\r\n250-PIPELINING\r\n250 STARTTLS\r\n")
						} else {
							fmt.Fprint(conn, "250-mx.example.test\r\n250 PIPELINING\r\n")
						}
					case "STARTTLS":
						fmt.Fprint(conn, "220 2.0.0 go ahead\r\n")
						tc := tls.Server(c, cert)
						if tc.Handshake() != nil {
							return
						}
						conn, r = tc, bufio.NewReader(tc)
					case "QUIT":
						fmt.Fprint(conn, "221 2.0.0 bye\r\n")
						return
					}
				}
			}(c)
		}
	}()
	return ln.Addr().String()
}

func probe(t *testing.T, addr string) []Finding {
	t.Helper()
	host, port, _ := net.SplitHostPort(addr)
	return Probe(context.Background(), ProbeConfig{Host: host, Port: port, Timeout: time.Second, Helo: "laptop.example.test"})
}

func TestProbe(t *testing.T) {
	pki, err := servertest.NewPKI(t.TempDir(), "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	kp, err := tls.LoadX509KeyPair(pki.CertFile, pki.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	fs := probe(t, fakeMX(t, "220 mx.example.test ESMTP\r\n", &tls.Config{Certificates: []tls.Certificate{kp}}))
	want(t, fs, "banner", OK, "220 mx.example.test")
	want(t, fs, "ehlo", OK, "STARTTLS")
	want(t, fs, "starttls", OK, "TLS 1.3")
	if ExitCode(fs) != 0 {
		t.Errorf("exit code %d: %v", ExitCode(fs), fs)
	}

	fs = probe(t, fakeMX(t, "220 mx.example.test ESMTP\r\n", nil))
	want(t, fs, "starttls", Warn, "not offered")
	if ExitCode(fs) != 1 {
		t.Errorf("exit code %d, want 1", ExitCode(fs))
	}

	fs = probe(t, fakeMX(t, "554 5.7.1 go away\r\n", nil))
	want(t, fs, "banner", Fail, "554 5.7.1")
}

func TestProbeBlocked(t *testing.T) {
	// Nothing listens: refused, with the explanation for that case.
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := ln.Addr().String()
	ln.Close()
	fs := probe(t, addr)
	f := want(t, fs, "connect "+addr, Fail, "connection refused")
	if ExitCode(fs) != 2 || !strings.Contains(f.Fix, "start nanomx") {
		t.Errorf("refused: %+v exit %d", f, ExitCode(fs))
	}
	// A connection that is accepted but never greets: something in the
	// path swallows it.
	fs = probe(t, fakeMX(t, "", nil))
	want(t, fs, "banner", Fail, "no greeting")
	// The explanation for a filtered port names both usual blocks.
	if !strings.Contains(blockedFix, "provider") || !strings.Contains(blockedFix, "mobile hotspot") {
		t.Error("blockedFix lost an explanation")
	}
}
