package proto

import (
	"strings"
	"testing"
)

func tlsConfig() Config {
	cfg := testConfig()
	cfg.StartTLS = true
	return cfg
}

// feedAll feeds in and returns the bytes consumed and the replies.
func feedAll(s *Session, in string) (int, string) {
	n := s.Feed([]byte(in))
	out := string(s.Output())
	s.ClearOutput()
	return n, out
}

// TestStartTLSAdvertised checks RFC 3207 4: STARTTLS is in the EHLO reply
// only when offered and only before TLS.
func TestStartTLSAdvertised(t *testing.T) {
	h := &fakeHandler{}
	s := NewDialect(testConfig()).NewSession(h)
	if _, out := feedAll(s, "EHLO c\r\n"); strings.Contains(out, "STARTTLS") {
		t.Fatalf("advertised without a certificate: %q", out)
	}
	if _, out := feedAll(s, "STARTTLS\r\n"); !strings.HasPrefix(out, "502 5.5.1") {
		t.Fatalf("STARTTLS not offered: %q", out)
	}
	s = NewDialect(tlsConfig()).NewSession(h)
	if _, out := feedAll(s, "EHLO c\r\n"); !strings.Contains(out, "250-STARTTLS\r\n") {
		t.Fatalf("not advertised: %q", out)
	}
}

// TestStartTLSDiscardsPipelinedInput checks CVE-2011-0411: the session
// stops right after the STARTTLS line, so the server can throw away what
// follows, and after the handshake the state is reset.
func TestStartTLSDiscardsPipelinedInput(t *testing.T) {
	h := &fakeHandler{}
	s := NewDialect(tlsConfig()).NewSession(h)
	feedAll(s, "EHLO c\r\n")
	line := "STARTTLS\r\n"
	injected := "MAIL FROM:<evil@example.org>\r\nRCPT TO:<bob@example.test>\r\n"
	n, out := feedAll(s, line+injected)
	if n != len(line) {
		t.Fatalf("consumed %d bytes, want exactly the STARTTLS line (%d)", n, len(line))
	}
	if out != "" || !s.StartingTLS() {
		t.Fatalf("after STARTTLS: out %q, starting %v", out, s.StartingTLS())
	}
	if n, _ := feedAll(s, injected); n != 0 {
		t.Fatalf("fed %d bytes while waiting for the handshake", n)
	}
	s.TLSStarted()
	if !s.TLS() || s.StartingTLS() {
		t.Fatal("TLSStarted did not take")
	}
	// RFC 3207 4.2: the client must say EHLO again; nothing from before
	// survives.
	if _, out := feedAll(s, "MAIL FROM:<a@example.org>\r\n"); !strings.HasPrefix(out, "503 5.5.1") {
		t.Fatalf("MAIL before the new EHLO: %q", out)
	}
	_, out = feedAll(s, "EHLO c\r\n")
	if strings.Contains(out, "STARTTLS") || !strings.Contains(out, "250 CHUNKING") {
		t.Fatalf("EHLO after TLS: %q", out)
	}
	if _, out := feedAll(s, "STARTTLS\r\n"); !strings.HasPrefix(out, "503 5.5.1") {
		t.Fatalf("second STARTTLS: %q", out)
	}
	if _, out := feedAll(s, "MAIL FROM:<a@example.org>\r\n"); !strings.HasPrefix(out, "250 2.1.0") {
		t.Fatalf("MAIL after TLS: %q", out)
	}
}

// TestStartTLSRefusals checks the other answers to STARTTLS.
func TestStartTLSRefusals(t *testing.T) {
	h := &fakeHandler{}
	s := NewDialect(tlsConfig()).NewSession(h)
	feedAll(s, "EHLO c\r\n")
	if _, out := feedAll(s, "STARTTLS now\r\n"); !strings.HasPrefix(out, "501 5.5.4") {
		t.Fatalf("with an argument: %q", out)
	}
	feedAll(s, "MAIL FROM:<a@example.org>\r\n")
	if _, out := feedAll(s, "STARTTLS\r\n"); !strings.HasPrefix(out, "503 5.5.1") {
		t.Fatalf("in a transaction: %q", out)
	}
	feedAll(s, "RSET\r\n")
	h.noTLS = true
	if _, out := feedAll(s, "STARTTLS\r\n"); !strings.HasPrefix(out, "454 4.7.0") {
		t.Fatalf("no TLS slot: %q", out)
	}
	// The session goes on in plaintext.
	if _, out := feedAll(s, "MAIL FROM:<a@example.org>\r\n"); !strings.HasPrefix(out, "250 2.1.0") {
		t.Fatalf("plaintext after 454: %q", out)
	}
}

// TestTLSRequired checks 530 5.7.0 before STARTTLS when TLS is required.
func TestTLSRequired(t *testing.T) {
	cfg := tlsConfig()
	cfg.TLSRequired = true
	s := NewDialect(cfg).NewSession(&fakeHandler{})
	feedAll(s, "EHLO c\r\n")
	if _, out := feedAll(s, "MAIL FROM:<a@example.org>\r\n"); !strings.HasPrefix(out, "530 5.7.0") {
		t.Fatalf("MAIL before TLS: %q", out)
	}
	feedAll(s, "STARTTLS\r\n")
	s.TLSStarted()
	feedAll(s, "EHLO c\r\n")
	if _, out := feedAll(s, "MAIL FROM:<a@example.org>\r\n"); !strings.HasPrefix(out, "250 2.1.0") {
		t.Fatalf("MAIL after TLS: %q", out)
	}
}
