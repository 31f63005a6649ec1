package bench

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nanomx/nanomx/bench/fakesmtp"
)

// shortUnread shortens the -unread waits for the test.
func shortUnread(t *testing.T, stall time.Duration) {
	t.Helper()
	s, st, ri := unreadStall, unreadSettle, unreadReadIdle
	unreadStall, unreadSettle, unreadReadIdle = stall, 50*time.Millisecond, 200*time.Millisecond
	t.Cleanup(func() { unreadStall, unreadSettle, unreadReadIdle = s, st, ri })
}

// An unread session sends exactly its bytes in whole commands without
// reading, then reads every reply the server sent: a server that keeps
// answering leaves it open after the last, one that cuts the client is
// seen with its reply.
func TestUnread(t *testing.T) {
	shortUnread(t, 5*time.Second)
	s := startFake(t, nil)
	res := run(t, s, Config{Conns: 1, Count: 1, Unread: 2, UnreadBytes: 60_003, UnreadCommand: "NOOP"})
	u := res.Unread
	if u == nil {
		t.Fatal("no unread report")
	}
	const cmds = 60_003 / 6 // "NOOP\r\n"
	if u.Opened != 2 || u.BytesPerConn != cmds*6 || u.BytesSent != 2*cmds*6 || u.Stops[unreadAllSent] != 2 {
		t.Errorf("unread = %+v", u)
	}
	if u.Replies != 2*cmds || u.Outcomes["still open"] != 2 || u.ReplyBytes != 2*cmds*int64(len("250 2.0.0 ok\r\n")) {
		t.Errorf("replies %d (%d bytes), outcomes %v; want %d still open", u.Replies, u.ReplyBytes, u.Outcomes, 2*cmds)
	}
	if res.Delivered != 1 {
		t.Errorf("the load after it delivered %d", res.Delivered)
	}

	// With a first command: it goes once, before the flood, and is not
	// counted in it.
	s = startFake(t, nil)
	rcpt := "RCPT TO:<a@b.test>"
	res = run(t, s, Config{Conns: 1, Count: 1, Unread: 1, UnreadBytes: 100 * int64(len(rcpt)+2), UnreadCommand: rcpt, UnreadFirst: "MAIL FROM:<>"})
	u = res.Unread
	if n := len(s.Rcpts()); n != 101 || u.Replies != 101 || u.BytesSent != 100*int64(len(rcpt)+2) {
		t.Errorf("with a first command: %d RCPTs (want 100 + the load's), %d replies (want 101), %d bytes", n, u.Replies, u.BytesSent)
	}

	// The EHLO of the set-up is the first command: 499 NOOPs get 250,
	// the 500th 421 and the close. The server has read all there was, so
	// the close is orderly and the client reads it all.
	s = startFake(t, func(s *fakesmtp.Server) { s.MaxCommands = 500 })
	res = run(t, s, Config{Conns: 1, Count: 1, Unread: 2, UnreadBytes: 500 * 6, UnreadCommand: "NOOP"})
	u = res.Unread
	if u.Replies != 2*500 || u.Outcomes["closed after 421 4.7.0"] != 2 {
		t.Errorf("replies %d, outcomes %v; want 1000, 2 closed after 421 4.7.0", u.Replies, u.Outcomes)
	}
	// Closed with input unread, its kernel resets the connection and
	// drops what it had not sent yet: the client may never see the 421,
	// but it sees the end.
	res = run(t, s, Config{Conns: 1, Count: 1, Unread: 2, UnreadBytes: 1 << 20, UnreadCommand: "NOOP"})
	u = res.Unread
	for k := range u.Outcomes {
		switch k {
		case "reset", "reset after 421 4.7.0", "closed without reply", "closed after 421 4.7.0":
		default:
			t.Errorf("outcomes %v, want each reset or closed", u.Outcomes)
		}
	}
	if u.Replies > 2*500 {
		t.Errorf("%d replies from a server that sent at most 1000", u.Replies)
	}
}

// A server that stops reading stalls the writing; the time bound and the
// RSS limit stop it sooner, and the RSS limit resets the sessions.
func TestUnreadStops(t *testing.T) {
	s := startFake(t, func(s *fakesmtp.Server) { s.StallAfter = 10 })
	for _, tc := range []struct {
		name  string
		stall time.Duration
		cfg   Config
		stop  string
	}{
		{"stall", 200 * time.Millisecond, Config{}, unreadStalled},
		{"time bound", time.Minute, Config{UnreadFor: 300 * time.Millisecond}, unreadTimeBound},
		// The test's own process stands in for the server: its RSS is
		// past 1 KiB.
		{"rss limit", time.Minute, Config{PID: os.Getpid(), RSSLimit: 1 << 10}, unreadRSSLimit},
	} {
		t.Run(tc.name, func(t *testing.T) {
			shortUnread(t, tc.stall)
			cfg := tc.cfg
			cfg.Conns, cfg.Count, cfg.Unread, cfg.UnreadBytes = 1, 1, 2, 1<<30
			res := run(t, s, cfg)
			u := res.Unread
			if u.Stops[tc.stop] != 2 || u.BytesSent == 0 || u.BytesSent >= 2<<30 {
				t.Errorf("stops %v after %d bytes, want 2 %q", u.Stops, u.BytesSent, tc.stop)
			}
			if tc.stop == unreadRSSLimit {
				if u.Outcomes[unreadAborted] != 2 || u.PeakRSSKB == 0 || u.RSSLimitKB != 1 {
					t.Errorf("outcomes %v, peak %d KiB, limit %d KiB", u.Outcomes, u.PeakRSSKB, u.RSSLimitKB)
				}
			} else if u.Outcomes["still open"] != 2 {
				t.Errorf("outcomes %v", u.Outcomes)
			}
			if u.WriteSeconds > 20 {
				t.Errorf("writing took %.1fs", u.WriteSeconds)
			}
		})
	}
}

// The reply counter finds the same replies whatever the pieces it is fed.
func TestReplyCounter(t *testing.T) {
	stream := []byte("250-mx\r\n250-PIPELINING\r\n250 CHUNKING\r\n250 2.0.0 ok\r\n" +
		"452 4.3.1 " + strings.Repeat("x", 100) + "\r\n421 4.7.0 bye\r\n250")
	for i := range len(stream) + 1 {
		var rc replyCounter
		rc.feed(stream[:i])
		rc.feed(stream[i:])
		if rc.replies != 4 || rc.bad != "452 4.3.1" {
			t.Fatalf("split at %d: %d replies, first bad %q", i, rc.replies, rc.bad)
		}
	}
}

// Silent sessions say MAIL FROM:<>, RCPT and BDAT with their size in
// turn, from the one source given, and hold until the server cuts them.
func TestSilent(t *testing.T) {
	s := startFake(t, func(s *fakesmtp.Server) { s.IdleTimeout = 300 * time.Millisecond })
	res := run(t, s, Config{Conns: 1, Duration: 600 * time.Millisecond, SpreadSources: true,
		Silent: 4, SilentBDAT: []int64{999_999_999_999, 65536}, SilentSource: "127.0.0.7"})
	h := res.Silent
	if h == nil || h.Opened != 4 || h.Outcomes["closed after 421 4.4.2"] != 4 {
		t.Fatalf("silent: %+v", h)
	}
	bdats := s.Bdats()
	slices.Sort(bdats)
	if want := []int64{65536, 65536, 999_999_999_999, 999_999_999_999}; !slices.Equal(bdats, want) {
		t.Errorf("BDATs %v, want %v", bdats, want)
	}
	if n := s.Remotes()["127.0.0.7"]; n != 4 {
		t.Errorf("%d sessions from 127.0.0.7, want 4 (remotes %v)", n, s.Remotes())
	}
	postmaster := 0
	for _, a := range s.Rcpts() {
		if a == "postmaster@localhost" {
			postmaster++
		}
	}
	if postmaster != 4 {
		t.Errorf("%d RCPT TO:<postmaster@localhost>, want 4", postmaster)
	}
	if res.Delivered == 0 {
		t.Errorf("the load delivered nothing: %v", res.Errors)
	}
}

// An idle session with -idle-rcpts runs MAIL, its long recipients and
// RSET before it falls silent, pipelined or not.
func TestIdleRcpts(t *testing.T) {
	for _, pipelining := range []bool{false, true} {
		s := startFake(t, func(s *fakesmtp.Server) { s.Pipelining = pipelining })
		res := run(t, s, Config{Conns: 1, Count: 1, To: []string{"a@bench.test"}, Idle: 3, IdleRcpts: 5, IdleRcptLen: 60})
		h := res.Idle
		if h.Opened != 3 || h.RcptsAccepted != 15 || h.Outcomes["still open"] != 3 {
			t.Errorf("pipelining %v: idle %+v", pipelining, h)
		}
		seen := map[string]bool{}
		for _, a := range s.Rcpts() {
			if a == "a@bench.test" {
				continue // the load's
			}
			if len(a) != 60 || !strings.HasSuffix(a, "@bench.test") || seen[a] {
				t.Errorf("recipient %q: want 60 bytes @bench.test, unique", a)
			}
			seen[a] = true
		}
		if len(seen) != 15 {
			t.Errorf("pipelining %v: %d distinct long recipients, want 15", pipelining, len(seen))
		}
	}
}

// -verify-maildir compares each acked message's stored size with what was
// sent: a message stored short is counted and fails the check.
func TestVerifySizes(t *testing.T) {
	dir := t.TempDir()
	s := startFake(t, func(s *fakesmtp.Server) {
		s.Maildir = dir + "/bench.test/bench"
		s.Decide = func(seq int64) fakesmtp.Action { return fakesmtp.Action{Truncate: int(seq / 4)} }
	})
	res := run(t, s, Config{Conns: 1, Count: 5, Size: Size{Mix: true}, VerifyMaildir: dir})
	v := res.Verify
	if v.SizeChecked != 5 || v.SizeMismatch != 2 || !slices.Equal(v.MismatchMarkers, []string{"rtest-4", "rtest-5"}) ||
		v.SumChecked != 5 || v.SumMismatch != 2 || v.OK() {
		t.Errorf("verify = %+v", v)
	}
	var total int64
	for _, n := range s.Sizes() {
		total += int64(n)
	}
	// The fake stores LF endings: a byte less per line, and 2 truncated.
	if v.Bytes <= 0 || v.Bytes >= total {
		t.Errorf("bytes stored %d, sent %d", v.Bytes, total)
	}
}

// storedSize and storedSum are the length and hash of the message in LF
// form, for bodies cut anywhere in the pool.
func TestStoredSize(t *testing.T) {
	pool := newBodyPool(2000, 1)
	for size := int64(1); size < 1500; size += 7 {
		hdr := appendHeader(nil, "r1", size, "a@b", "c@d", "date")
		body := pool.body(size, len(hdr))
		msg := slices.Concat(hdr, body, []byte("\r\n"))
		want := int64(len(bytes.ReplaceAll(msg, []byte("\r\n"), []byte("\n"))))
		lf := bytes.ReplaceAll(msg, []byte("\r\n"), []byte("\n"))
		if got := storedSize(hdr, body); got != want {
			t.Fatalf("size %d: storedSize %d, want %d", size, got, want)
		}
		if storedSum(hdr, body, []byte("\r\n")) != sha256.Sum256(lf) {
			t.Fatalf("size %d: storedSum is not the SHA-256 of the LF form", size)
		}
	}
}

// The new modes' settings are checked, defaulted only when in use, and
// read back from JSON.
func TestModesConfig(t *testing.T) {
	for _, c := range []Config{
		{RSSLimit: 1 << 20, Unread: 1},
		{Silent: 1, SilentSource: "not-an-ip"},
		{Unread: 1, UnreadCommand: "NOOP\r\nQUIT"},
		{Unread: 1, UnreadBytes: 3},
		{Idle: 1, IdleRcpts: 1, IdleRcptLen: 10},
		{Silent: 1, SilentBDAT: []int64{-1}},
	} {
		if _, err := Run(context.Background(), c); err == nil {
			t.Errorf("%+v: no error", c)
		}
	}
	c, err := Config{}.withDefaults()
	if err != nil || c.UnreadBytes != 0 || c.SilentBDAT != nil || c.IdleRcptLen != 0 {
		t.Errorf("defaults without the modes: %+v, %v", c, err)
	}
	c, err = Config{Unread: 2, Silent: 3, IdleRcpts: 4, To: []string{"x@bench.test"}}.withDefaults()
	if err != nil || c.UnreadBytes != DefaultUnreadBytes || c.UnreadCommand != DefaultUnreadCmd ||
		c.UnreadFor != DefaultUnreadFor || !slices.Equal(c.SilentBDAT, []int64{DefaultSilentBDAT}) ||
		c.SilentRcpt != "postmaster@bench.test" || c.IdleRcptLen != DefaultIdleRcptLen {
		t.Errorf("defaults with the modes: %+v, %v", c, err)
	}
	b, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	var back Config
	err = json.Unmarshal(b, &back)
	back.SlowInterval = c.SlowInterval // written only with Slow
	if err != nil || !reflect.DeepEqual(back, c) {
		t.Errorf("JSON round trip: %+v, %v\n%s", back, err, b)
	}
}
