package main

import (
	"fmt"
	"io"
	"net/http"
	"net/smtp"
	"strings"
	"testing"
	"time"
)

// TestE2EMetrics: the binary with a metrics key serves /metrics, counting
// the message delivered and the recipient refused, and the log sink's
// dropped lines; the refusal is a reject line in its log.
func TestE2EMetrics(t *testing.T) {
	maddr := freeAddr(t)
	p, _ := startWithExtra(t, t.TempDir(), fmt.Sprintf("metrics = %q", maddr))
	c, err := smtp.Dial(p.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Mail("a@example.org"); err != nil {
		t.Fatal(err)
	}
	if err := c.Rcpt("nobody@example.test"); err == nil || !strings.Contains(err.Error(), "5.1.1") {
		t.Fatalf("unknown recipient: %v", err)
	}
	if err := c.Rcpt("bob@example.test"); err != nil {
		t.Fatal(err)
	}
	w, err := c.Data()
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte("Subject: m\r\n\r\nhi\r\n"))
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	c.Quit()

	res, err := http.Get("http://" + maddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	for _, want := range []string{
		"\nnanomx_messages_delivered_total 1\n",
		"\nnanomx_rejects_total{code=\"550\",reason=\"unknown_user\"} 1\n",
		"\nnanomx_log_lines_dropped_total 0\n",
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics has no %q:\n%s", strings.TrimSpace(want), body)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(p.log.String(), `"reason":"unknown_user","helo":`) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if log := p.log.String(); !strings.Contains(log, `"reason":"unknown_user","helo":`) || !strings.Contains(log, `"message":"metrics listening"`) {
		t.Errorf("log:\n%s", log)
	}
}
