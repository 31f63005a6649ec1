package rspamd

import (
	"context"
	"net/netip"
	"strings"
	"testing"

	"github.com/nanomx/nanomx/server/rspamd/rspamdtest"
)

// TestLive asks a real rspamd (rspamdtest) through the client: the GTUBE
// message gets "reject" with rspamd's message, an ordinary one "no action"
// with rspamd's header fields to add and X-Spam to remove, and the test
// score header picks "add header" and "rewrite subject" (with the new
// subject); the envelope headers reach rspamd (its queue id comes back).
func TestLive(t *testing.T) {
	rs := rspamdtest.Start(t)
	c, err := New(Config{URL: rs.URL})
	if err != nil {
		t.Fatal(err)
	}
	req := &Request{IP: netip.MustParseAddr("127.0.0.1"), Helo: "mail.example.org", From: "alice@example.org",
		Rcpts: []string{"bob@example.test"}, QueueID: "QLIVE1"}
	msg := func(extra, body string) []byte {
		return []byte(extra + "From: alice@example.org\nTo: bob@example.test\nSubject: hello\n" +
			"Date: Tue, 01 Dec 2026 12:00:00 +0000\nMessage-ID: <m1@example.org>\n\n" + body)
	}
	for _, tc := range []struct {
		name, extra, body, action string
	}{
		{"gtube", "", "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X\n", ActionReject},
		{"ordinary", "", "Hello Bob,\nthis is an ordinary message.\n", ActionNoAction},
		{"add header", "X-Nanomx-Test-Score: 7\n", "Hello\n", ActionAddHeader},
		{"rewrite subject", "X-Nanomx-Test-Score: 11\n", "Hello\n", ActionRewriteSubject},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := c.Check(context.Background(), req, msg(tc.extra, tc.body))
			if err != nil {
				t.Fatal(err)
			}
			if r.Action != tc.action {
				var syms []string
				for n, s := range r.Symbols {
					if s.Score != 0 {
						syms = append(syms, n)
					}
				}
				t.Fatalf("action %q score %v (%v), want %q", r.Action, r.Score, syms, tc.action)
			}
			switch tc.action {
			case ActionReject:
				if r.SMTPText("") != "Gtube pattern" {
					t.Errorf("smtp_message %q", r.Messages.SMTP)
				}
			case ActionRewriteSubject:
				if r.Subject != "***SPAM*** hello" {
					t.Errorf("subject %q", r.Subject)
				}
				fallthrough
			default:
				if _, ok := r.Milter.RemoveHeaders["X-Spam"]; !ok {
					t.Errorf("remove_headers %v has no X-Spam", r.Milter.RemoveHeaders)
				}
				e := r.Edit(msg(tc.extra, tc.body))
				if !strings.Contains(string(e.Headers), "\nX-Rspamd-Queue-Id: QLIVE1\n") {
					t.Errorf("headers\n%s", e.Headers)
				}
			}
		})
	}
}
