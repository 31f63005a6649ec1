package server

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/nanomx/nanomx/proto"
	"github.com/nanomx/nanomx/server/check"
)

// maxInlineAllocs bounds the allocations of one transaction's sender
// authentication (MAIL, then the end of data of an ed25519-signed
// message) once every answer is cached: the verdict's result and header
// field, SPF's outcome, the message's state, the DKIM and DMARC results,
// the From domain, the unfolded From and DKIM-Signature values (which
// the results' strings point into), the names looked up. It was 40
// before the inline path was trimmed for issue 10's bench (an RSA
// signature adds crypto/rsa's 9).
const maxInlineAllocs = 11

// TestAuthInlineAllocs: with SPF, iprev, the key and the DMARC record
// cached, a transaction's checks allocate at most maxInlineAllocs times,
// and still verify the message in full (dkim=pass, dmarc=pass: a
// changed body fails).
func TestAuthInlineAllocs(t *testing.T) {
	_, cfg, key := authSetup(t)
	res, err := newResolver(cfg)
	if err != nil {
		t.Fatal(err)
	}
	a := newAuthChecker(cfg, res)
	i := &Info{IP: netip.MustParseAddr("127.0.0.2"), Helo: "c.sender.test"}
	a.Connect(i)
	body := []byte(strings.ReplaceAll(signed(t, key, "From: Alice <alice@sender.test>\r\nTo: bob@example.test\r\nSubject: hi\r\n\r\n"+
		strings.Repeat(strings.Repeat("b", 98)+"\r\n", 100)), "\r\n", "\n"))
	from := proto.Address{Local: "alice", Domain: "sender.test"}
	wait := func(r *check.Result) check.Verdict { t.Helper(); return waitVerdict(t, r) }
	// Warm: the first transaction looks up and caches every answer.
	i.resetTx()
	wait(a.Mail(i, from, proto.MailParams{}))
	if v := wait(a.Data(i, body)); !strings.Contains(string(v.Headers), "dkim=pass") {
		t.Fatalf("first message: %q", v.Headers)
	}
	// Then each transaction is decided at once.
	tx := func(body []byte) []byte {
		i.resetTx()
		if r := a.Mail(i, from, proto.MailParams{}); r != nil {
			if v, done := r.Verdict(); !done || v.Reply != nil {
				t.Fatalf("MAIL: %v done=%v", v.Reply, done)
			}
		}
		v, done := a.Data(i, body).Verdict()
		if !done {
			t.Fatal("not decided at once")
		}
		return v.Headers
	}
	if h := string(tx(body)); !strings.Contains(h, "spf=pass") || !strings.Contains(h, "dkim=pass") || !strings.Contains(h, "dmarc=pass") || !strings.Contains(h, "iprev=pass") {
		t.Fatalf("cached: %q", h)
	}
	bad := append([]byte{}, body...)
	bad[len(bad)-3] = 'X'
	if h := string(tx(bad)); !strings.Contains(h, "dkim=fail") {
		t.Fatalf("changed body: %q", h)
	}
	if raceAllocs {
		return // the checks above ran; the count means nothing under -race
	}
	n := testing.AllocsPerRun(200, func() { tx(body) })
	t.Logf("%.1f allocations per transaction", n)
	if n > maxInlineAllocs {
		t.Errorf("a cached transaction allocates %.1f times, want at most %d", n, maxInlineAllocs)
	}
}
