package server

import (
	"crypto/tls"
	"errors"
	"net/smtp"
	"strings"
	"testing"
	"time"

	"github.com/nanomx/nanomx/server/servertest"
)

type testPKI = servertest.PKI

func newTestPKI(t testing.TB) *testPKI {
	t.Helper()
	p, err := servertest.NewPKI(t.TempDir(), "mx.example.test")
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func tlsServerConfig(t *testing.T, p *testPKI) Config {
	cfg := testServerConfig(t)
	cfg.TLSCert, cfg.TLSKey = p.CertFile, p.KeyFile
	return cfg
}

// starttls upgrades a raw client after EHLO: it returns a client speaking
// over TLS (the same connection: c itself now speaks TLS too).
func (c *client) starttls(t *testing.T, conf *tls.Config) *client {
	t.Helper()
	c.expect("STARTTLS", "220 2.0.0")
	if err := c.sc.Handshake(conf); err != nil {
		t.Fatalf("handshake: %v", err)
	}
	return &client{t: t, c: c.sc.NetConn(), sc: c.sc}
}

// TestStartTLSNetSMTP delivers over STARTTLS with Go's net/smtp and checks
// the Received header records ESMTPS and the cipher.
func TestStartTLSNetSMTP(t *testing.T) {
	p := newTestPKI(t)
	cfg := tlsServerConfig(t, p)
	r := start(t, cfg)
	c, err := smtp.Dial(r.addr)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Hello("client.example.org"); err != nil {
		t.Fatal(err)
	}
	if ok, _ := c.Extension("STARTTLS"); !ok {
		t.Fatal("STARTTLS not offered")
	}
	if err := c.StartTLS(p.Client()); err != nil {
		t.Fatal(err)
	}
	if ok, _ := c.Extension("STARTTLS"); ok {
		t.Fatal("STARTTLS offered again over TLS")
	}
	if err := c.Mail("a@example.org"); err != nil {
		t.Fatal(err)
	}
	if err := c.Rcpt("bob@example.test"); err != nil {
		t.Fatal(err)
	}
	w, err := c.Data()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write([]byte("Subject: tls\r\n\r\nsecret\r\n")); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Quit(); err != nil {
		t.Fatal(err)
	}
	files := newFiles(t, cfg.MaildirRoot, "example.test", "bob")
	if len(files) != 1 {
		t.Fatalf("%d files", len(files))
	}
	if !strings.Contains(files[0], "with UTF8SMTPS\n\t(using TLSv1.3 with cipher TLS_") || !strings.HasSuffix(files[0], "\nsecret\n") {
		t.Fatalf("stored: %q", files[0])
	}
	if n := r.srv.Stats().TLSSessions.Load(); n != 1 {
		t.Fatalf("TLSSessions = %d", n)
	}
}

// TestStartTLSInjectionSamePacket: commands pipelined in the same packet
// as STARTTLS are discarded, never run after the handshake (CVE-2011-0411).
func TestStartTLSInjectionSamePacket(t *testing.T) {
	p := newTestPKI(t)
	r := start(t, tlsServerConfig(t, p))
	c := dial(t, r.addr)
	c.reply()
	c.expect("EHLO c", "250")
	c.send("STARTTLS\r\nMAIL FROM:<evil@example.org>\r\nRCPT TO:<bob@example.test>\r\n")
	if g := c.reply(); !strings.HasPrefix(g, "220 2.0.0") {
		t.Fatalf("STARTTLS: %q", g)
	}
	if err := c.sc.Handshake(p.Client()); err != nil {
		t.Fatal(err)
	}
	s := c
	// The first reply over TLS answers our EHLO, not an injected command;
	// and no transaction exists.
	s.expect("EHLO c", "250-mx.example.test")
	s.expect("RCPT TO:<bob@example.test>", "503 5.5.1")
	if n := r.srv.Stats().TLSInjections.Load(); n != 1 {
		t.Fatalf("TLSInjections = %d, want 1", n)
	}
}

// TestStartTLSInjectionSplit: plaintext sent after the 220 in its own
// packet is not a handshake: the handshake fails, nothing runs, and the
// server stays healthy.
func TestStartTLSInjectionSplit(t *testing.T) {
	p := newTestPKI(t)
	cfg := tlsServerConfig(t, p)
	r := start(t, cfg)
	c := dial(t, r.addr)
	c.reply()
	c.expect("EHLO c", "250")
	c.expect("STARTTLS", "220 2.0.0")
	c.send("MAIL FROM:<evil@example.org>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\n")
	_ = c.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 512)
	for {
		n, err := c.c.Read(buf)
		if err != nil {
			break
		}
		if strings.Contains(string(buf[:n]), "250") {
			t.Fatalf("injected command answered: %q", buf[:n])
		}
	}
	waitFor(t, func() bool { return r.srv.Stats().TLSFailed.Load() == 1 })
	// Healthy: a new session delivers over TLS.
	d := dial(t, r.addr)
	d.reply()
	d.expect("EHLO d", "250")
	s := d.starttls(t, p.Client())
	s.expect("EHLO d", "250")
	s.expect("MAIL FROM:<a@example.org>", "250")
	s.expect("RCPT TO:<bob@example.test>", "250")
	s.expect("DATA", "354")
	s.expect("hello\r\n.", "250 2.0.0")
	waitFor(t, func() bool { return r.srv.tlsSessions.Load() == 1 })
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestStartTLSBound: past max_tls_sessions STARTTLS answers 454 4.7.0 and
// the session goes on in plaintext; a detached session keeps its per-IP
// slot; its end frees both.
func TestStartTLSBound(t *testing.T) {
	p := newTestPKI(t)
	cfg := tlsServerConfig(t, p)
	cfg.MaxTLSSessions = 1
	cfg.MaxConnectionsPerIP = 2
	r := start(t, cfg)
	a := dial(t, r.addr)
	a.reply()
	a.expect("EHLO a", "250")
	as := a.starttls(t, p.Client())
	as.expect("EHLO a", "250")

	b := dial(t, r.addr)
	b.reply()
	b.expect("EHLO b", "250")
	b.expect("STARTTLS", "454 4.7.0")
	b.expect("MAIL FROM:<x@example.org>", "250 2.1.0")

	// Two connections from this IP: the TLS one still counts.
	c := dial(t, r.addr)
	if g := c.reply(); !strings.HasPrefix(g, "421 4.7.0") {
		t.Fatalf("third connection: %q", g)
	}
	as.expect("QUIT", "221")
	waitFor(t, func() bool { return r.srv.tlsSessions.Load() == 0 })
	b.expect("RSET", "250")
	b.starttls(t, p.Client()).expect("EHLO b", "250")
}

// TestStartTLSTimeoutAndDrain: a TLS session is cut by the command deadline
// like a plaintext one, and an idle TLS session gets 421 on shutdown.
func TestStartTLSTimeoutAndDrain(t *testing.T) {
	p := newTestPKI(t)
	cfg := tlsServerConfig(t, p)
	cfg.CommandTimeout = time.Second
	r := start(t, cfg)
	a := dial(t, r.addr)
	a.reply()
	a.expect("EHLO a", "250")
	as := a.starttls(t, p.Client())
	if g := as.reply(); !strings.HasPrefix(g, "421 4.4.2") {
		t.Fatalf("idle TLS session: %q", g)
	}

	cfg2 := tlsServerConfig(t, p)
	r2 := start(t, cfg2)
	b := dial(t, r2.addr)
	b.reply()
	b.expect("EHLO b", "250")
	bs := b.starttls(t, p.Client())
	bs.expect("EHLO b", "250")
	stopped := make(chan error, 1)
	go func() { stopped <- r2.stop() }()
	if g := bs.reply(); !strings.HasPrefix(g, "421 4.3.2") {
		t.Fatalf("TLS session at shutdown: %q", g)
	}
	select {
	case err := <-stopped:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("drain did not end")
	}
}

// TestStartTLSConfigErrors: a missing certificate is a start-up error that
// names the key and the file.
func TestStartTLSConfigErrors(t *testing.T) {
	cfg := testServerConfig(t)
	cfg.TLSCert, cfg.TLSKey = "/nonexistent/cert.pem", "/nonexistent/key.pem"
	var ce *ConfigError
	err := Check(cfg)
	if !errors.As(err, &ce) || ce.Key != "tls_cert" || !strings.Contains(err.Error(), "/nonexistent/cert.pem") {
		t.Fatalf("missing cert: %v", err)
	}
	cfg.TLSKey = ""
	if err := Check(cfg); !errors.As(err, &ce) || ce.Key != "tls_key" {
		t.Fatalf("cert without key: %v", err)
	}
}

// TestStartTLSCertReload: Reload (SIGHUP) swaps the certificate for new
// sessions without dropping the open ones.
func TestStartTLSCertReload(t *testing.T) {
	p1, p2 := newTestPKI(t), newTestPKI(t)
	cfg := tlsServerConfig(t, p1)
	r := start(t, cfg)
	old := dial(t, r.addr)
	old.reply()
	old.expect("EHLO a", "250")
	olds := old.starttls(t, p1.Client())

	next := cfg
	next.TLSCert, next.TLSKey = p2.CertFile, p2.KeyFile
	if err := r.srv.Reload(next); err != nil {
		t.Fatal(err)
	}
	c := dial(t, r.addr)
	c.reply()
	c.expect("EHLO c", "250")
	c.starttls(t, p2.Client()).expect("EHLO c", "250") // verified against the new CA
	olds.expect("EHLO a", "250")                       // the old session goes on

	broken := next
	broken.TLSKey = p1.KeyFile // the key does not match the certificate
	var ce *ConfigError
	if err := r.srv.Reload(broken); !errors.As(err, &ce) {
		t.Fatalf("mismatched key: %v", err)
	}
}

// TestStartTLSHandshakeTimeout: a client that never starts its handshake
// is cut after tls_handshake_timeout, and its slot comes back.
func TestStartTLSHandshakeTimeout(t *testing.T) {
	p := newTestPKI(t)
	cfg := tlsServerConfig(t, p)
	cfg.TLSHandshakeTimeout = time.Second
	r := start(t, cfg)
	c := dial(t, r.addr)
	c.reply()
	c.expect("EHLO c", "250")
	c.expect("STARTTLS", "220 2.0.0")
	c.expectClosed()
	waitFor(t, func() bool { return r.srv.tlsSessions.Load() == 0 && r.srv.connCount() == 0 })
	if n := r.srv.Stats().TLSFailed.Load(); n != 1 {
		t.Fatalf("TLSFailed = %d", n)
	}
}

// TestStartTLSResumption: every full handshake issues a session ticket
// (crypto/tls's default: one, in the server's first flight, so no write
// of its own), and a client that offers it back resumes: no certificate
// and no signature, the key exchange still done (psk_dhe_ke). A serious
// MX offers this, as Postfix does: senders that come back often (the
// large providers, mailing lists) save the server's signature and a
// round of certificate checks on their side. A resumed session is a TLS
// session like any other.
func TestStartTLSResumption(t *testing.T) {
	p := newTestPKI(t)
	r := start(t, tlsServerConfig(t, p))
	conf := p.Client()
	conf.ClientSessionCache = tls.NewLRUClientSessionCache(4)
	for i, resumed := range []bool{false, true} {
		c := dial(t, r.addr)
		c.reply()
		c.expect("EHLO a", "250")
		cs := c.starttls(t, conf)
		cs.expect("EHLO a", "250") // the ticket is read with it
		st := cs.c.(*tls.Conn).ConnectionState()
		if st.DidResume != resumed {
			t.Fatalf("session %d: resumed %v, want %v", i, st.DidResume, resumed)
		}
		cs.expect("MAIL FROM:<a@example.org>", "250")
		cs.expect("RCPT TO:<bob@example.test>", "250")
		cs.expect("QUIT", "221")
	}
	waitFor(t, func() bool { return r.srv.Stats().TLSSessions.Load() == 2 })
}
