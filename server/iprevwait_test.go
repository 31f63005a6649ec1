package server

import (
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// slowAuth is authSetup with a DNS server that answers every query after
// delay: iprev (a PTR, then an A) takes twice that.
func slowAuth(t *testing.T, delay time.Duration) (Config, func(msg string) string) {
	t.Helper()
	dns, cfg, key := authSetup(t)
	dns.Delay(delay)
	cfg.DNSTimeout = 3 * delay
	cfg.CommandTimeout = 10 * cfg.DNSTimeout
	return cfg, func(msg string) string { return signed(t, key, msg) }
}

// TestMailDoesNotWaitForIPRev: MAIL is answered while iprev's lookups are
// still under way; the end of data waits for them, and the Received and
// Authentication-Results fields have iprev's result.
func TestMailDoesNotWaitForIPRev(t *testing.T) {
	const delay = time.Second
	cfg, sign := slowAuth(t, delay)
	r := start(t, cfg)
	c := dialFrom(t, "127.0.0.2", r.addr)
	c.reply()
	t0 := time.Now()
	c.expect("EHLO c.sender.test", "250")
	c.expect("MAIL FROM:<alice@sender.test>", "250")
	if d := time.Since(t0); d >= delay {
		t.Errorf("MAIL answered %v after connect: it waited for iprev (%v)", d, 2*delay)
	}
	c.expect("RCPT TO:<bob@example.test>", "250")
	c.expect("DATA", "354")
	if got := c.cmd(sign("From: alice@sender.test\r\nSubject: hi\r\n\r\nhello\r\n") + "."); !strings.HasPrefix(got, "250 2.0.0") {
		t.Fatalf("end of data: %q", got)
	}
	files := newFiles(t, cfg.MaildirRoot, "example.test", "bob")
	if len(files) != 1 {
		t.Fatalf("%d files", len(files))
	}
	for _, want := range []string{"Received: from c.sender.test (mail.sender.test [127.0.0.2])", "\tiprev=pass policy.iprev=127.0.0.2 (mail.sender.test)", "\tdkim=pass", "\tspf=pass"} {
		if !strings.Contains(files[0], want) {
			t.Errorf("no %q in\n%s", want, files[0])
		}
	}
}

// TestSpillWaitsForName: a body past spill_threshold that arrives while
// iprev is under way stays in memory until iprev answers, so the
// Received field written with the spilled file names the client; one
// that reaches four spill thresholds first spills then, with "unknown",
// and is still delivered whole.
func TestSpillWaitsForName(t *testing.T) {
	big := strings.Repeat(strings.Repeat("z", 998)+"\r\n", 600) // 600 KB
	for _, tc := range []struct {
		name, received string
		threshold      int64
	}{
		{"held", "Received: from c.sender.test (mail.sender.test [127.0.0.2])", 256 << 10},
		{"too big to hold", "Received: from c.sender.test (unknown [127.0.0.2])", 64 << 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, sign := slowAuth(t, time.Second)
			cfg.SpillThreshold = tc.threshold
			r := start(t, cfg)
			c := dialFrom(t, "127.0.0.2", r.addr)
			c.reply()
			c.expect("EHLO c.sender.test", "250")
			msg := sign("From: alice@sender.test\r\nSubject: big\r\n\r\n" + big)
			if got := sendMsg(t, c, "alice@sender.test", "bob@example.test", msg); !strings.HasPrefix(got, "250 2.0.0") {
				t.Fatalf("end of data: %q", got)
			}
			files := newFiles(t, cfg.MaildirRoot, "example.test", "bob")
			if len(files) != 1 {
				t.Fatalf("%d files", len(files))
			}
			f := files[0]
			if !strings.Contains(f, tc.received) {
				t.Errorf("no %q in\n%.1600s", tc.received, f)
			}
			if !strings.Contains(f, "\tiprev=pass") || !strings.Contains(f, "\tdkim=pass") {
				t.Errorf("results:\n%.900s", f)
			}
			if !strings.HasSuffix(f, strings.ReplaceAll(big, "\r\n", "\n")) {
				t.Errorf("body not stored whole (%d bytes)", len(f))
			}
		})
	}
}

// TestRspamdHostnameWaitsForIPRev: the scan of a message that ends while
// iprev is still under way waits for it, and rspamd gets the confirmed
// PTR name in Hostname. (The stand-in records what it was sent and
// answers as rspamd does; TestRspamd talks to a real rspamd.)
func TestRspamdHostnameWaitsForIPRev(t *testing.T) {
	hosts := make(chan string, 4)
	r := iprevRspamd(t, func(r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		hosts <- r.Header.Get("Hostname")
	})
	c := dialFrom(t, "127.0.0.2", r.addr)
	c.reply()
	c.expect("EHLO c.sender.test", "250")
	if got := sendMsg(t, c, "alice@sender.test", "bob@example.test", "From: alice@sender.test\r\n\r\nhi\r\n"); !strings.HasPrefix(got, "250 2.0.0") {
		t.Fatalf("end of data: %q", got)
	}
	select {
	case h := <-hosts:
		if h != "mail.sender.test" {
			t.Errorf("Hostname %q, want mail.sender.test", h)
		}
	default:
		t.Fatal("rspamd was not asked")
	}
}

// TestHeloPrefetch: a client whose HELO name is its PTR name has iprev's
// answer one DNS round trip after the PTR's, not two: the addresses of the
// HELO name were asked for at EHLO, and iprev's forward lookup found them
// there (the DNS server saw one A query for the name). A HELO name that is
// not a host name is not looked up.
func TestHeloPrefetch(t *testing.T) {
	const delay = time.Second
	dns, cfg, _ := authSetup(t)
	dns.Delay(delay)
	cfg.DNSTimeout = 3 * delay
	cfg.CommandTimeout = 10 * cfg.DNSTimeout
	cfg.SPF, cfg.DKIM, cfg.DMARC = false, false, false // iprev alone
	r := start(t, cfg)
	c := dialFrom(t, "127.0.0.2", r.addr)
	t0 := time.Now()
	c.reply()
	c.expect("EHLO mail.sender.test", "250")
	if got := sendMsg(t, c, "alice@sender.test", "bob@example.test", "From: alice@sender.test\r\n\r\nhi\r\n"); !strings.HasPrefix(got, "250 2.0.0") {
		t.Fatalf("end of data: %q", got)
	}
	// PTR, then A: 2 s without the lookup ahead, about 1 s with it.
	if d := time.Since(t0); d > delay+delay/2 {
		t.Errorf("the message waited %v for iprev, want about %v", d, delay)
	}
	if n := dns.Count("mail.sender.test", 1 /* A */); n != 1 {
		t.Errorf("%d A queries for mail.sender.test, want 1", n)
	}
	files := newFiles(t, cfg.MaildirRoot, "example.test", "bob")
	if len(files) != 1 || !strings.Contains(files[0], "Received: from mail.sender.test (mail.sender.test [127.0.0.2])") {
		t.Fatalf("stored: %q", files)
	}
	before := dns.Queries()
	c2 := dialFrom(t, "127.0.0.3", r.addr)
	c2.reply()
	c2.expect("EHLO [127.0.0.3]", "250")
	c2.expect("QUIT", "221")
	if n := dns.Queries() - before; n > 1 { // the PTR of 127.0.0.3 only
		t.Errorf("%d queries for a client saying EHLO [127.0.0.3], want the PTR alone", n)
	}
}

// TestRspamdLateScanOwnBody: a scan that waits for iprev scans the message
// it was started for, even when its client has reset the connection
// meanwhile: the ended session's body, which the pending check still
// reads, does not go back to the pool, so another session cannot fill it.
// (With the body pooled, the two scans are sent the second message.)
func TestRspamdLateScanOwnBody(t *testing.T) {
	bodies := make(chan string, 8)
	r := iprevRspamd(t, func(r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		bodies <- string(b)
	})
	first := "From: alice@sender.test\r\nSubject: first\r\n\r\n" + strings.Repeat("1", 2000) + "\r\n"
	a := dialFrom(t, "127.0.0.2", r.addr)
	a.reply()
	a.expect("EHLO c.sender.test", "250")
	a.expect("MAIL FROM:<alice@sender.test>", "250")
	a.expect("RCPT TO:<bob@example.test>", "250")
	a.expect("DATA", "354")
	a.send(first + ".\r\n")
	time.Sleep(100 * time.Millisecond)  // the scan waits for iprev
	_ = a.c.(*net.TCPConn).SetLinger(0) // a reset, not a half-close: the session ends
	a.c.Close()                         // and its body goes back to the pool
	time.Sleep(100 * time.Millisecond)
	// Another session fills a body buffer before the first scan starts.
	b := dialFrom(t, "127.0.0.3", r.addr)
	b.reply()
	b.expect("EHLO other.test", "250")
	b.expect("MAIL FROM:<x@other.test>", "250")
	b.expect("RCPT TO:<bob@example.test>", "250")
	b.expect("DATA", "354")
	b.send("Subject: second\r\n\r\n" + strings.Repeat("2", 2000) + "\r\n.\r\n")
	var got []string
	for deadline := time.After(5 * time.Second); len(got) < 2; {
		select {
		case body := <-bodies:
			got = append(got, body)
		case <-deadline:
			t.Fatalf("%d scans, want 2", len(got))
		}
	}
	for _, body := range got {
		if strings.Contains(body, "Subject: first") != strings.Contains(body, strings.Repeat("1", 2000)) ||
			strings.Contains(body, "Subject: second") != strings.Contains(body, strings.Repeat("2", 2000)) ||
			strings.Count(body, "Subject: ") != 1 {
			t.Errorf("a scan was sent a body that is not its message's:\n%.120s", body)
		}
	}
	if strings.Contains(got[0], "second") == strings.Contains(got[1], "second") {
		t.Errorf("the two scans were sent the same message")
	}
}

// iprevRspamd starts a server with iprev alone on, its DNS answering after
// 700 ms, and rspamd_url at a stand-in that passes each scan request to
// record and answers "no action" as rspamd does.
func iprevRspamd(t *testing.T, record func(*http.Request)) *running {
	t.Helper()
	fake := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		record(r)
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"action":"no action","score":0.5,"required_score":15}`)
	}))
	t.Cleanup(fake.Close)
	cfg, _ := slowAuth(t, 700*time.Millisecond)
	cfg.SPF, cfg.DKIM, cfg.DMARC = false, false, false
	cfg.RspamdURL = fake.URL
	return start(t, cfg)
}
