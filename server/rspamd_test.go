package server

import (
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nanomx/nanomx/server/rspamd/rspamdtest"
)

// gtube is the GTUBE test pattern, which rspamd rejects.
const gtube = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"

// ordinary is a message rspamd (with rspamdtest's configuration) takes as
// ham; extra header fields go in front of it.
func ordinary(extra string) string {
	return extra + "From: alice@example.org\r\nTo: bob@example.test\r\nSubject: hello\r\n" +
		"Date: Tue, 01 Dec 2026 12:00:00 +0000\r\nMessage-ID: <m1@example.org>\r\n\r\n" +
		"Hello Bob,\r\nthis is an ordinary message.\r\n"
}

// send runs one transaction for bob and returns the end of data's reply.
func send(t *testing.T, c *client, msg string) string {
	t.Helper()
	c.expect("MAIL FROM:<alice@example.org>", "250")
	c.expect("RCPT TO:<bob@example.test>", "250")
	c.expect("DATA", "354")
	return c.cmd(msg + ".")
}

func session(t *testing.T, addr string) *client {
	t.Helper()
	c := dial(t, addr)
	c.reply()
	c.expect("EHLO mail.example.org", "250")
	return c
}

// TestRspamd runs real nanomx sessions against a real rspamd (a private
// one, rspamdtest): the GTUBE message is refused 550 5.7.1 with rspamd's
// message and nothing is stored; an ordinary message is stored with
// X-Spam-Action, X-Spam-Score and rspamd's own header fields (its queue id
// is nanomx's), the client's forged X-Spam-* fields gone; "add header"
// with rspamd_junk goes to Junk with X-Spam: Yes; "rewrite subject"
// replaces the Subject and the client's X-Spam field (which rspamd's
// remove_headers names); greylist and soft reject are 451 4.7.1, a forced reject
// 550 5.7.1 with its text; a message past spill_threshold is delivered
// unscanned.
func TestRspamd(t *testing.T) {
	rs := rspamdtest.Start(t)
	cfg := testServerConfig(t)
	cfg.RspamdURL = rs.URL
	cfg.RspamdJunk = true
	cfg.RspamdOnError = RspamdOnErrorTempfail // a failure must not pass for a verdict
	cfg.MetricsAddr = freePort(t)
	r := start(t, cfg)
	c := session(t, r.addr)

	t.Run("gtube", func(t *testing.T) {
		got := send(t, c, "Subject: test\r\n\r\n"+gtube+"\r\n")
		if got != "550 5.7.1 Gtube pattern" {
			t.Errorf("GTUBE: %q, want 550 5.7.1 Gtube pattern", got)
		}
		if n := len(newFiles(t, cfg.MaildirRoot, "example.test", "bob")); n != 0 {
			t.Errorf("%d files stored", n)
		}
	})

	t.Run("ordinary", func(t *testing.T) {
		got := send(t, c, ordinary("X-Spam-Action: no action, trust me\r\nX-Spam-Score: -100\r\n"))
		if !strings.HasPrefix(got, "250 2.0.0") {
			t.Fatalf("ordinary message: %q", got)
		}
		files := newFiles(t, cfg.MaildirRoot, "example.test", "bob")
		if len(files) != 1 {
			t.Fatalf("%d files stored", len(files))
		}
		f := files[0]
		head := f[:strings.Index(f, "\n\n")]
		id := regexp.MustCompile(`with ESMTP id (\S+)`).FindStringSubmatch(head)
		for _, want := range []string{
			"\nX-Spam-Action: no action\n",
			"\nX-Spamd-Result: default: False [",
			"\nFrom: alice@example.org\nTo: bob@example.test\nSubject: hello\n",
		} {
			if !strings.Contains(head, want) {
				t.Errorf("stored header has no %q:\n%s", want, head)
			}
		}
		if !regexp.MustCompile(`\nX-Spam-Score: -?\d+\.\d\d / 15\.00\n`).MatchString(head) {
			t.Errorf("no X-Spam-Score in\n%s", head)
		}
		if id == nil || !strings.Contains(head, "\nX-Rspamd-Queue-Id: "+id[1]+"\n") {
			t.Errorf("X-Rspamd-Queue-Id is not the queue id %v:\n%s", id, head)
		}
		if strings.Contains(head, "trust me") || strings.Contains(head, "-100") || strings.Contains(head, "X-Spam: Yes") {
			t.Errorf("forged fields kept, or marked as spam:\n%s", head)
		}
	})

	t.Run("add header into Junk", func(t *testing.T) {
		if got := send(t, c, ordinary("X-Nanomx-Test-Score: 7\r\n")); !strings.HasPrefix(got, "250 2.0.0") {
			t.Fatalf("%q", got)
		}
		junk := newFiles(t, cfg.MaildirRoot, "example.test", "bob/.Junk")
		if len(junk) != 1 || len(newFiles(t, cfg.MaildirRoot, "example.test", "bob")) != 1 {
			t.Fatalf("%d in Junk, want 1, and the inbox unchanged", len(junk))
		}
		for _, want := range []string{"\nX-Spam-Action: add header\n", "\nX-Spam: Yes\n", "\nX-Spam-Level: ******\n", "\nSubject: hello\n"} {
			if !strings.Contains(junk[0], want) {
				t.Errorf("no %q in\n%s", want, junk[0])
			}
		}
	})

	t.Run("rewrite subject", func(t *testing.T) {
		// rspamd scores the forged X-Spam (SPAM_FLAG, 5) and asks for it
		// to be removed; nanomx writes its own.
		if got := send(t, c, ordinary("X-Nanomx-Test-Score: 6\r\nX-Spam: yes\r\n")); !strings.HasPrefix(got, "250 2.0.0") {
			t.Fatalf("%q", got)
		}
		var f string
		for _, s := range newFiles(t, cfg.MaildirRoot, "example.test", "bob/.Junk") {
			if strings.Contains(s, "rewrite subject") {
				f = s
			}
		}
		if !strings.Contains(f, "\nSubject: ***SPAM*** hello\n") || strings.Count(f, "Subject:") != 1 {
			t.Errorf("subject not rewritten once:\n%s", f)
		}
		if strings.Count(f, "X-Spam:") != 1 || !strings.Contains(f, "\nX-Spam: Yes\n") {
			t.Errorf("the client's X-Spam kept:\n%s", f)
		}
	})

	for _, tc := range []struct{ name, extra, want string }{
		{"greylist", "X-Nanomx-Test-Score: 4.5\r\n", "451 4.7.1 Try again later"},
		{"soft reject", "X-Nanomx-Test-Action: soft reject\r\nX-Nanomx-Test-Message: come back\r\n\tlater\r\n", "451 4.7.1 come back later"},
		{"reject", "X-Nanomx-Test-Action: reject\r\nX-Nanomx-Test-Message: go away\r\n", "550 5.7.1 go away"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := send(t, c, ordinary(tc.extra)); got != tc.want {
				t.Errorf("%q, want %q", got, tc.want)
			}
		})
	}

	t.Run("spilled", func(t *testing.T) {
		big := "Subject: big\r\n\r\n" + gtube + "\r\n" + strings.Repeat(strings.Repeat("z", 998)+"\r\n", 300)
		if got := send(t, c, big); !strings.HasPrefix(got, "250 2.0.0") {
			t.Fatalf("spilled GTUBE message: %q, want it delivered unscanned", got)
		}
		rc := rspamdOf(t, r.srv)
		if rc.skipped.Load() != 1 {
			t.Errorf("skipped %d, want 1", rc.skipped.Load())
		}
	})
	c.expect("QUIT", "221")
	if s := rspamdOf(t, r.srv).client.Stats(); s.OK != 7 || s.Failed+s.Timeouts+s.Busy != 0 || s.P99 <= 0 {
		t.Errorf("stats %+v, want 7 scans, no failure", s)
	}
	// The metrics say the same: 7 requests answered, 7 durations, the
	// spilled message skipped.
	m := scrape(t, cfg.MetricsAddr)
	checkValues(t, m, "nanomx_check_requests_total", map[string]float64{
		"check=rspamd,result=ok": 7, "check=rspamd,result=failed": 0, "check=rspamd,result=timeout": 0, "check=rspamd,result=busy": 0,
	})
	if h := m.metric(t, "nanomx_check_duration_seconds", "check", "rspamd").GetHistogram(); h.GetSampleCount() != 7 {
		t.Errorf("nanomx_check_duration_seconds count %d, want 7", h.GetSampleCount())
	}
	if v := m.value(t, "nanomx_rspamd_skipped_total"); v != 1 {
		t.Errorf("nanomx_rspamd_skipped_total %v, want 1", v)
	}
}

// rspamdOf finds the server's rspamd check.
func rspamdOf(t testing.TB, s *Server) *rspamdCheck {
	t.Helper()
	for _, ch := range s.cfg.checks {
		if rc, ok := ch.(*rspamdCheck); ok {
			return rc
		}
	}
	t.Fatal("no rspamd check")
	return nil
}

// TestRspamdUnreachable: with rspamd's port closed, rspamd_on_error
// "accept" delivers the message unscanned (no X-Spam fields), "tempfail"
// answers 451 4.7.1.
func TestRspamdUnreachable(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	url := "http://" + l.Addr().String()
	l.Close()
	for _, tc := range []struct{ onError, want string }{
		{RspamdOnErrorAccept, "250 2.0.0"},
		{RspamdOnErrorTempfail, "451 4.7.1 Spam filter unavailable"},
	} {
		t.Run(tc.onError, func(t *testing.T) {
			cfg := testServerConfig(t)
			cfg.RspamdURL, cfg.RspamdOnError = url, tc.onError
			r := start(t, cfg)
			c := session(t, r.addr)
			// A client's own X-Spam-* fields go even when nothing is
			// scanned: a Sieve rule must not trust a forged score.
			forged := "X-Spam: No\r\nx-spam-score: -100\r\nX-Spam-Action: no action\r\n"
			if got := send(t, c, ordinary(forged)); !strings.HasPrefix(got, tc.want) {
				t.Fatalf("%q, want %q", got, tc.want)
			}
			files := newFiles(t, cfg.MaildirRoot, "example.test", "bob")
			if tc.onError == RspamdOnErrorAccept && (len(files) != 1 || strings.Contains(files[0], "X-Spam")) {
				t.Errorf("%d files, or scanned headers on an unscanned message", len(files))
			}
			if tc.onError == RspamdOnErrorTempfail && len(files) != 0 {
				t.Errorf("%d files stored", len(files))
			}
			if s := rspamdOf(t, r.srv).client.Stats(); s.Failed != 1 {
				t.Errorf("stats %+v", s)
			}
		})
	}
}

// TestRspamdTimeout: an HTTP server that accepts the scan and never
// answers costs the message rspamd_timeout, then rspamd_on_error applies.
// With rspamd_max_concurrent = 1 the next four messages wait for the slot
// (within their own timeout) and a sixth is refused at once.
func TestRspamdTimeout(t *testing.T) {
	release := make(chan struct{})
	hang := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-release }))
	t.Cleanup(hang.Close)
	t.Cleanup(func() { close(release) }) // runs first: lets the handlers end
	cfg := testServerConfig(t)
	cfg.RspamdURL, cfg.RspamdOnError = hang.URL, RspamdOnErrorTempfail
	cfg.RspamdTimeout, cfg.RspamdMaxConcurrent = 500*time.Millisecond, 1
	r := start(t, cfg)

	cs := make([]*client, 6)
	for i := range cs {
		cs[i] = session(t, r.addr)
		cs[i].expect("MAIL FROM:<alice@example.org>", "250")
		cs[i].expect("RCPT TO:<bob@example.test>", "250")
		cs[i].expect("DATA", "354")
	}
	start := time.Now()
	for _, c := range cs[:5] {
		c.send(ordinary("") + ".\r\n")
	}
	time.Sleep(100 * time.Millisecond) // one scan holds the slot, four wait
	if got := cs[5].cmd(ordinary("") + "."); !strings.HasPrefix(got, "451 4.7.1") || time.Since(start) > 400*time.Millisecond {
		t.Errorf("sixth message: %q after %v, want 451 4.7.1 at once", got, time.Since(start))
	}
	for i, c := range cs[:5] {
		got := c.reply()
		if d := time.Since(start); !strings.HasPrefix(got, "451 4.7.1") || d < 500*time.Millisecond || d > 5*time.Second {
			t.Errorf("message %d: %q after %v, want 451 4.7.1 after the 500ms timeout", i, got, d)
		}
	}
	if s := rspamdOf(t, r.srv).client.Stats(); s.Timeouts != 5 || s.Queued != 4 || s.Busy != 1 {
		t.Errorf("stats %+v, want 5 timeouts (4 of them waiting) and a busy refusal", s)
	}
	if n := len(newFiles(t, cfg.MaildirRoot, "example.test", "bob")); n != 0 {
		t.Errorf("%d files stored", n)
	}
}

// TestRspamdConfig: each bad rspamd setting is refused naming its key;
// rspamd_url empty leaves the other rspamd keys unchecked, and builds no
// check.
func TestRspamdConfig(t *testing.T) {
	for _, tc := range []struct {
		key    string
		mutate func(*Config)
	}{
		{"rspamd_url", func(c *Config) { c.RspamdURL = "127.0.0.1:11333" }},
		{"rspamd_timeout", func(c *Config) { c.RspamdTimeout = 10 * time.Millisecond }},
		{"rspamd_timeout", func(c *Config) { c.RspamdTimeout = c.CommandTimeout + time.Second }},
		{"rspamd_max_size", func(c *Config) { c.RspamdMaxSize = c.SpillThreshold + 1 }},
		{"rspamd_max_concurrent", func(c *Config) { c.RspamdMaxConcurrent = 0 }},
		{"rspamd_on_error", func(c *Config) { c.RspamdOnError = "reject" }},
		{"junk_folder", func(c *Config) { c.JunkFolder = "../x" }},
	} {
		cfg := testServerConfig(t)
		cfg.RspamdURL = "http://127.0.0.1:11333"
		tc.mutate(&cfg)
		var ce *ConfigError
		if err := cfg.Validate(); !errors.As(err, &ce) || ce.Key != tc.key {
			t.Errorf("%s: %v", tc.key, err)
		}
	}
	cfg := testServerConfig(t)
	cfg.RspamdOnError = "whatever"
	if err := cfg.Validate(); err != nil {
		t.Errorf("rspamd off: %v", err)
	}
	if r := start(t, cfg); len(r.srv.cfg.checks) != 0 {
		t.Errorf("%d checks with rspamd off", len(r.srv.cfg.checks))
	}
}
