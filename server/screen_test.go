package server

import (
	"errors"
	"strings"
	"testing"
)

// rateConfig is a server with the rates given (0: none).
func rateConfig(t *testing.T, conns, msgs, rcpts int) Config {
	cfg := testServerConfig(t)
	cfg.MaxConnectionsPerMinute, cfg.MaxMessagesPerMinute, cfg.MaxRecipientsPerMinute = conns, msgs, rcpts
	return cfg
}

// TestRateConnections: past max_connections_per_minute a client address
// gets 421 4.7.0 instead of the greeting, and is closed; another address
// is not affected. (start's probe comes from 127.0.0.1: the tests use
// other addresses.)
func TestRateConnections(t *testing.T) {
	r := start(t, rateConfig(t, 2, 0, 0))
	for range 2 {
		c := dialFrom(t, "127.0.0.5", r.addr)
		if g := c.reply(); !strings.HasPrefix(g, "220 ") {
			t.Fatalf("greeting %q", g)
		}
		c.expect("QUIT", "221")
	}
	c := dialFrom(t, "127.0.0.5", r.addr)
	if g := c.reply(); !strings.HasPrefix(g, "421 4.7.0 ") {
		t.Fatalf("third connection: %q", g)
	}
	c.expectClosed()
	other := dialFrom(t, "127.0.0.6", r.addr)
	if g := other.reply(); !strings.HasPrefix(g, "220 ") {
		t.Fatalf("another address: %q", g)
	}
}

// TestRateMessages: past max_messages_per_minute MAIL gets 451 4.7.1,
// in the same session or the next.
func TestRateMessages(t *testing.T) {
	r := start(t, rateConfig(t, 0, 2, 0))
	c := dialFrom(t, "127.0.0.5", r.addr)
	c.reply()
	c.expect("EHLO c.example.org", "250")
	c.expect("MAIL FROM:<a@example.org>", "250 2.1.0")
	c.expect("RSET", "250")
	c.expect("MAIL FROM:<a@example.org>", "250 2.1.0")
	c.expect("RSET", "250")
	c.expect("MAIL FROM:<a@example.org>", "451 4.7.1 ")
	c.expect("RCPT TO:<bob@example.test>", "503")
	c2 := dialFrom(t, "127.0.0.5", r.addr)
	c2.reply()
	c2.expect("HELO c.example.org", "250")
	c2.expect("MAIL FROM:<a@example.org>", "451 4.7.1 ")
	c3 := dialFrom(t, "127.0.0.6", r.addr)
	c3.reply()
	c3.expect("HELO c.example.org", "250")
	c3.expect("MAIL FROM:<a@example.org>", "250 2.1.0")
}

// TestRateRecipients: past max_recipients_per_minute RCPT gets 451
// 4.7.1; recipients the address book refuses do not count; the message
// goes to the ones accepted.
func TestRateRecipients(t *testing.T) {
	cfg := rateConfig(t, 0, 0, 2)
	r := start(t, cfg)
	c := dialFrom(t, "127.0.0.5", r.addr)
	c.reply()
	c.expect("EHLO c.example.org", "250")
	c.expect("MAIL FROM:<a@example.org>", "250 2.1.0")
	c.expect("RCPT TO:<nobody@example.test>", "550 5.1.1")
	c.expect("RCPT TO:<bob@example.test>", "250 2.1.5")
	c.expect("RCPT TO:<alice@example.test>", "250 2.1.5")
	c.expect("RCPT TO:<team@example.test>", "451 4.7.1 ")
	c.expect("DATA", "354")
	c.expect("Subject: rates\r\n\r\nhi\r\n.", "250 2.0.0")
	if n := len(newFiles(t, cfg.MaildirRoot, "example.test", "bob")); n != 1 {
		t.Fatalf("bob has %d messages", n)
	}
}

// TestScreenAllowSkipsRates: a client in screen_allow is never limited.
func TestScreenAllowSkipsRates(t *testing.T) {
	cfg := rateConfig(t, 1, 1, 1)
	cfg.ScreenAllow = []string{"192.0.2.0/24", "127.0.0.7/32"}
	r := start(t, cfg)
	for range 3 {
		c := dialFrom(t, "127.0.0.7", r.addr)
		if g := c.reply(); !strings.HasPrefix(g, "220 ") {
			t.Fatalf("greeting %q", g)
		}
		c.expect("EHLO c.example.org", "250")
		for range 2 {
			c.expect("MAIL FROM:<a@example.org>", "250 2.1.0")
			c.expect("RCPT TO:<bob@example.test>", "250 2.1.5")
			c.expect("RCPT TO:<alice@example.test>", "250 2.1.5")
			c.expect("RSET", "250")
		}
		c.expect("QUIT", "221")
	}
	// 127.0.0.8 is not allowed: its second connection is refused.
	dialFrom(t, "127.0.0.8", r.addr).reply()
	if g := dialFrom(t, "127.0.0.8", r.addr).reply(); !strings.HasPrefix(g, "421 4.7.0") {
		t.Fatalf("second connection from outside screen_allow: %q", g)
	}
}

func TestScreenConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		set func(*Config)
		key string
	}{
		{func(c *Config) { c.DNSBLSites = []string{"zen.spamhaus.org=127.0.0.[2..11"} }, "dnsbl_sites"},
		{func(c *Config) { c.DNSBLThreshold = 0 }, "dnsbl_threshold"},
		{func(c *Config) { c.DNSBLAction = "greet" }, "dnsbl_action"},
		{func(c *Config) { c.ScreenAllow = []string{"10.0.0.0/40"} }, "screen_allow"},
		{func(c *Config) { c.MaxConnectionsPerMinute = -1 }, "max_connections_per_minute"},
		{func(c *Config) { c.MaxMessagesPerMinute = -1 }, "max_messages_per_minute"},
		{func(c *Config) { c.MaxRecipientsPerMinute = -1 }, "max_recipients_per_minute"},
	} {
		cfg := testServerConfig(t)
		tc.set(&cfg)
		err := cfg.Validate()
		var ce *ConfigError
		if !errors.As(err, &ce) || ce.Key != tc.key {
			t.Errorf("want a %s error, got %v", tc.key, err)
		}
	}
}
