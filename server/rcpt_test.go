package server

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nanomx/nanomx/proto"
	"github.com/nanomx/nanomx/spool"
)

// rcptConn is a connection without a socket or spool: enough for the
// handler's address-book side, with cfg's address book in force.
func rcptConn(t *testing.T, cfg Config) (*Server, *conn) {
	t.Helper()
	book, err := newBook(cfg)
	if err != nil {
		t.Fatal(err)
	}
	lv, err := newLive(cfg)
	if err != nil {
		t.Fatal(err)
	}
	lv.book = book
	s := &Server{cfg: cfg, idBase: idBase(time.Now())}
	s.live.Store(lv)
	return s, &conn{srv: s, lv: lv, ip: &ipState{}}
}

// TestRcptResolvedAtRcpt: each accepted RCPT is resolved to its mailboxes
// when it is accepted, a refused one adds none, and the message handed to
// the spool carries them once each, in first-seen order, with the trace
// fields built from the envelope. MAIL starts a new set.
func TestRcptResolvedAtRcpt(t *testing.T) {
	cfg := testServerConfig(t)
	cfg.Hostname = "MX.Example.Test" // the trace shows it as the spool validated it
	cfg.Mailboxes = append(cfg.Mailboxes, "carol@example.test")
	_, c := rcptConn(t, cfg)
	if r := c.CheckMail(nil, proto.MailParams{}); r != nil {
		t.Fatal(r)
	}
	for _, tc := range []struct{ rcpt, want string }{
		{"carol@example.test", ""},
		{"team@example.test", ""},
		{"nobody@example.test", "550 5.1.1"},
		{"bob@elsewhere.test", "550 5.7.1"},
		{"Bob+tag@example.test", ""},
	} {
		r := c.CheckRcpt([]byte(tc.rcpt))
		if got := ""; r != nil {
			got = r.Error()
			if tc.want == "" || !strings.HasPrefix(got, tc.want) {
				t.Errorf("RCPT %s: %s, want %q", tc.rcpt, got, tc.want)
			}
		} else if tc.want != "" {
			t.Errorf("RCPT %s accepted, want %s", tc.rcpt, tc.want)
		}
	}
	env := proto.Envelope{
		From:  []byte(`"john doe"@example.org`),
		Rcpts: [][]byte{[]byte("carol@example.test"), []byte("team@example.test"), []byte("Bob+tag@example.test")},
		Helo:  []byte("client.example.org"),
		ESMTP: true,
	}
	m := c.message(env)
	want := []spool.Mailbox{{Domain: "example.test", User: "carol"}, {Domain: "example.test", User: "bob"}, {Domain: "example.test", User: "alice"}}
	if !slices.Equal(m.Mailboxes, want) {
		t.Errorf("mailboxes %q, want %q", m.Mailboxes, want)
	}
	tr := string(m.Trace)
	if !strings.HasPrefix(tr, "Return-Path: <\"john doe\"@example.org>\nReceived: from client.example.org") ||
		!strings.Contains(tr, "\n\tby mx.example.test (nanomx) with ESMTP id "+m.ID+";\n") || strings.Contains(tr, "for <") {
		t.Errorf("trace fields:\n%s", tr)
	}
	if m.from != string(env.From) || !slices.Equal(m.rcpts, []string{"carol@example.test", "team@example.test", "Bob+tag@example.test"}) {
		t.Errorf("log envelope %q %q", m.from, m.rcpts)
	}

	// The next transaction starts afresh.
	if r := c.CheckMail(nil, proto.MailParams{}); r != nil {
		t.Fatal(r)
	}
	if r := c.CheckRcpt([]byte("alice@example.test")); r != nil {
		t.Fatal(r)
	}
	m = c.message(proto.Envelope{Rcpts: [][]byte{[]byte("alice@example.test")}})
	if !slices.Equal(m.Mailboxes, []spool.Mailbox{{Domain: "example.test", User: "alice"}}) {
		t.Errorf("second transaction: %q", m.Mailboxes)
	}
	if !strings.HasPrefix(string(m.Trace), "Return-Path: <>\n") || !strings.Contains(string(m.Trace), "\n\tfor <alice@example.test>;\n") {
		t.Errorf("second trace:\n%s", m.Trace)
	}
}

// TestCheckRcptDoesNotAllocate: resolving a recipient on the event loop
// allocates nothing once the session has warmed up.
func TestCheckRcptDoesNotAllocate(t *testing.T) {
	_, c := rcptConn(t, testServerConfig(t))
	rcpts := [][]byte{[]byte("bob@example.test"), []byte("Team@Example.Test"), []byte("alice+x@example.test"), []byte("postmaster")}
	run := func() {
		c.CheckMail(nil, proto.MailParams{})
		for _, r := range rcpts {
			if rep := c.CheckRcpt(r); rep != nil {
				t.Fatal(rep)
			}
		}
	}
	run()
	if n := testing.AllocsPerRun(100, run); n != 0 {
		t.Errorf("MAIL and %d RCPTs allocate %v times", len(rcpts), n)
	}
}
