package server

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nanomx/nanomx/server/lmtp/dovecottest"
	"github.com/nanomx/nanomx/spool"
)

// lmtpConfig is testServerConfig delivering to d over LMTP.
func lmtpConfig(t *testing.T, d *dovecottest.Server) Config {
	cfg := testServerConfig(t)
	cfg.Delivery = DeliveryLMTP
	cfg.LMTP = d.Addr
	cfg.LMTPConnections = 2
	cfg.LMTPTimeout = 5 * time.Second
	return cfg
}

// lmtpSend sends one message on a new session and returns the reply to
// its data.
func lmtpSend(t *testing.T, addr, from string, rcpts []string, body string) string {
	t.Helper()
	c := dial(t, addr)
	c.reply()
	c.expect("EHLO client.example.org", "250")
	c.expect("MAIL FROM:<"+from+">", "250")
	for _, r := range rcpts {
		c.expect("RCPT TO:<"+r+">", "250")
	}
	c.expect("DATA", "354")
	c.send(body + ".\r\n")
	got := c.reply()
	c.expect("QUIT", "221")
	return got
}

// TestLMTPDelivery: with delivery = "lmtp" a message reaches each
// mailbox its recipients resolve to (an alias to two mailboxes, a
// subaddress, the same mailbox twice) once, in Dovecot's store; the
// trace is nanomx's Received with the Return-Path Dovecot writes, once;
// no local Maildir is made; and every message of several sessions goes
// over at most lmtp_connections connections, each greeted once.
func TestLMTPDelivery(t *testing.T) {
	d := dovecottest.Start(t, "alice@example.test", "bob@example.test")
	cfg := lmtpConfig(t, d)
	r := start(t, cfg)

	body := "Message-ID: <one@example.org>\r\nSubject: to the team\r\n\r\nhello\r\n"
	if got := lmtpSend(t, r.addr, "sender@example.org", []string{"team@example.test", "bob+tag@example.test", "Alice@example.test"}, body); !strings.HasPrefix(got, "250") {
		t.Fatalf("data: %q", got)
	}
	for _, u := range []string{"alice@example.test", "bob@example.test"} {
		msgs := d.Messages(u)
		if len(msgs) != 1 {
			t.Fatalf("%s: %d messages, want 1", u, len(msgs))
		}
		for _, m := range msgs {
			s := string(m)
			if !strings.HasPrefix(s, "Return-Path: <sender@example.org>\n") || strings.Count(s, "Return-Path:") != 1 {
				t.Errorf("%s: want one Return-Path, first: %q", u, s)
			}
			if !strings.Contains(s, "by mx.example.test (nanomx) with ESMTP id ") {
				t.Errorf("%s: no Received of ours: %q", u, s)
			}
			if !strings.HasSuffix(s, strings.ReplaceAll(body, "\r\n", "\n")) {
				t.Errorf("%s: body differs: %q", u, s)
			}
		}
	}
	if _, err := os.Stat(filepath.Join(cfg.MaildirRoot, "example.test")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a local Maildir was made with LMTP delivery: %v", err)
	}

	// Reuse: 20 more messages over 4 sessions, 2 connections at most.
	for s := range 4 {
		c := dial(t, r.addr)
		c.reply()
		c.expect("EHLO client.example.org", "250")
		for range 5 {
			c.expect("MAIL FROM:<s"+string(rune('0'+s))+"@example.org>", "250")
			c.expect("RCPT TO:<alice@example.test>", "250")
			c.expect("DATA", "354")
			c.send("Subject: reuse\r\n\r\nx\r\n.\r\n")
			if got := c.reply(); !strings.HasPrefix(got, "250") {
				t.Fatalf("reuse: %q", got)
			}
		}
		c.expect("QUIT", "221")
	}
	if n := len(d.Messages("alice@example.test")); n != 21 {
		t.Fatalf("alice has %d messages, want 21", n)
	}
	if n := d.Connections(); n < 1 || n > cfg.LMTPConnections {
		t.Fatalf("Dovecot saw %d connections for 21 messages, want 1..%d", n, cfg.LMTPConnections)
	}
}

// TestLMTPSpilled: a message past spill_threshold, with lines that need
// dot-stuffing and a client Return-Path, is stored byte for byte (after
// the trace, LF line endings), and its scratch file is gone afterwards.
func TestLMTPSpilled(t *testing.T) {
	d := dovecottest.Start(t, "bob@example.test")
	cfg := lmtpConfig(t, d)
	r := start(t, cfg)

	var stored bytes.Buffer
	stored.WriteString("Message-ID: <big@example.org>\nSubject: big\n\n")
	for i := 0; stored.Len() < 400<<10; i++ {
		switch i % 50 {
		case 0:
			stored.WriteString(".\n")
		case 1:
			stored.WriteString("..double\n")
		case 2:
			stored.WriteString(". leading dot\n")
		default:
			stored.WriteString(strings.Repeat("abcdefghij", i%12) + "\n")
		}
	}
	wire := "Return-Path: <forged@example.net>\r\n" + stuff(stored.String())
	if got := lmtpSend(t, r.addr, "sender@example.org", []string{"bob@example.test"}, wire); !strings.HasPrefix(got, "250") {
		t.Fatalf("data: %q", got)
	}
	msgs := d.Messages("bob@example.test")
	if len(msgs) != 1 {
		t.Fatalf("%d messages, want 1", len(msgs))
	}
	for _, m := range msgs {
		got := dovecottest.Stored(m, "Message-ID: <big@")
		if !bytes.Equal(got, stored.Bytes()) {
			t.Fatalf("stored message differs (%d bytes, want %d)", len(got), stored.Len())
		}
		if bytes.Contains(m, []byte("forged")) || bytes.Count(m, []byte("Return-Path:")) != 1 {
			t.Errorf("Return-Path fields wrong: %q", m[:300])
		}
	}
	scratch := filepath.Join(spool.ScratchMailbox.Path(cfg.MaildirRoot), "tmp")
	deadline := time.Now().Add(5 * time.Second)
	for {
		ents, err := os.ReadDir(scratch)
		if err != nil {
			t.Fatalf("scratch Maildir: %v", err)
		}
		if len(ents) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("scratch files left: %v", ents)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// stuff turns LF text into its DATA form: CRLF, leading dots doubled.
func stuff(s string) string {
	var b strings.Builder
	for line := range strings.SplitSeq(strings.TrimSuffix(s, "\n"), "\n") {
		if strings.HasPrefix(line, ".") {
			b.WriteByte('.')
		}
		b.WriteString(line + "\r\n")
	}
	return b.String()
}

// TestLMTPCheckRcpt: with lmtp_check_rcpt the address book needs no user
// list: a user only Dovecot knows is accepted and delivered, an unknown
// one is refused at RCPT with 550 5.1.1, and with Dovecot down RCPT is
// deferred with 451 (and so is the data of a message accepted before).
func TestLMTPCheckRcpt(t *testing.T) {
	d := dovecottest.Start(t, "alice@example.test", "carol@example.test")
	cfg := lmtpConfig(t, d)
	cfg.LMTPCheckRcpt = true
	cfg.Mailboxes = []string{"alice@example.test"}
	cfg.Aliases = nil
	r := start(t, cfg)

	c := dial(t, r.addr)
	c.reply()
	c.expect("EHLO client.example.org", "250")
	c.expect("MAIL FROM:<sender@example.org>", "250")
	c.expect("RCPT TO:<nobody@example.test>", "550 5.1.1")
	c.expect("RCPT TO:<someone@elsewhere.test>", "550 5.7.1") // not ours: never asked
	c.expect("RCPT TO:<Carol+news@example.test>", "250")
	c.expect("RCPT TO:<alice@example.test>", "250")
	c.expect("DATA", "354")
	c.send("Subject: checked\r\n\r\nhi\r\n.\r\n")
	if got := c.reply(); !strings.HasPrefix(got, "250") {
		t.Fatalf("data: %q", got)
	}
	for _, u := range []string{"alice@example.test", "carol@example.test"} {
		if n := len(d.Messages(u)); n != 1 {
			t.Errorf("%s: %d messages, want 1", u, n)
		}
	}

	c.expect("MAIL FROM:<sender@example.org>", "250")
	c.expect("RCPT TO:<alice@example.test>", "250")
	c.expect("DATA", "354")
	d.Stop()
	c.send("Subject: down\r\n\r\nhi\r\n.\r\n")
	if got := c.reply(); !strings.HasPrefix(got, "451 4.4.1") {
		t.Fatalf("data with Dovecot down: %q", got)
	}
	c.expect("MAIL FROM:<sender@example.org>", "250")
	c.expect("RCPT TO:<carol@example.test>", "451 4.4.1")
	c.expect("QUIT", "221")
}

// TestLMTPConfig: the delivery keys are checked, and cannot change on
// reload.
func TestLMTPConfig(t *testing.T) {
	for _, tt := range []struct {
		set func(*Config)
		key string
	}{
		{func(c *Config) { c.Delivery = "smtp" }, "delivery"},
		{func(c *Config) { c.Delivery = DeliveryLMTP }, "lmtp"},
		{func(c *Config) { c.Delivery, c.LMTP = DeliveryLMTP, "unix:run/lmtp" }, "lmtp"},
		{func(c *Config) { c.Delivery, c.LMTP = DeliveryLMTP, "localhost" }, "lmtp"},
		{func(c *Config) { c.Delivery, c.LMTP, c.LMTPConnections = DeliveryLMTP, "127.0.0.1:24", -1 }, "lmtp_connections"},
		{func(c *Config) { c.Delivery, c.LMTP, c.LMTPTimeout = DeliveryLMTP, "127.0.0.1:24", 0 }, "lmtp_timeout"},
		{func(c *Config) { c.LMTPCheckRcpt = true }, "lmtp_check_rcpt"},
	} {
		cfg := testServerConfig(t)
		tt.set(&cfg)
		var ce *ConfigError
		if err := cfg.Validate(); !errors.As(err, &ce) || ce.Key != tt.key {
			t.Errorf("%s: got %v", tt.key, err)
		}
	}
	cfg := testServerConfig(t)
	cfg.Delivery, cfg.LMTP = DeliveryLMTP, "unix:/run/dovecot/lmtp"
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	r := start(t, testServerConfig(t))
	next := r.srv.cfg
	next.Delivery, next.LMTP = DeliveryLMTP, "127.0.0.1:24"
	var ce *ConfigError
	if err := r.srv.Reload(next); !errors.As(err, &ce) || ce.Key != "delivery" {
		t.Fatalf("reload to lmtp: %v", err)
	}
}
