package proto

import (
	"bytes"
	"strconv"
	"strings"
	"testing"
	"unsafe"
)

// feedString feeds in whole, as a server does (taking the output and
// feeding the rest again when the output is full), and returns the replies
// it produced; the session must consume all of it unless it stops to wait
// or close.
func feedString(t *testing.T, s *Session, in string) string {
	t.Helper()
	var out []byte
	b := []byte(in)
	for {
		n := s.Feed(b)
		b = b[n:]
		full := s.OutputFull()
		out = append(out, s.Output()...)
		s.ClearOutput()
		if !full || s.Closed() {
			break
		}
	}
	if len(b) != 0 && !s.Waiting() && !s.Closed() {
		t.Fatalf("Feed left %d of %d octets of %.100q", len(b), len(in), in)
	}
	return string(out)
}

// newRcptSession returns a session after EHLO, MAIL and one RCPT.
func newRcptSession(t *testing.T, cfg Config, h Handler) *Session {
	t.Helper()
	s := NewDialect(cfg).NewSession(h)
	out := feedString(t, s, "EHLO c.example.org\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<bob@example.test>\r\n")
	if !strings.HasSuffix(out, "250 2.1.0 Sender OK\r\n250 2.1.5 Recipient OK\r\n") {
		t.Fatalf("setup: %q", out)
	}
	return s
}

// TestWaitingStopsFeed checks that a complete message stops the session:
// Feed consumes nothing while it waits, and a pipelined NOOP is answered
// only after the message's own reply.
func TestWaitingStopsFeed(t *testing.T) {
	h := &fakeHandler{}
	s := newRcptSession(t, testConfig(), h)
	in := []byte("DATA\r\nhello\r\n.\r\nNOOP\r\n")
	n := s.Feed(in)
	if want := len(in) - len("NOOP\r\n"); n != want {
		t.Fatalf("Feed consumed %d, want %d", n, want)
	}
	if !s.Waiting() || s.Closed() || s.InTransfer() {
		t.Fatalf("Waiting %v Closed %v InTransfer %v", s.Waiting(), s.Closed(), s.InTransfer())
	}
	if got := string(s.Output()); got != "354 End data with <CR><LF>.<CR><LF>\r\n" {
		t.Fatalf("output while waiting: %q", got)
	}
	for range 3 {
		if n := s.Feed(in[n:]); n != 0 {
			t.Fatalf("Feed consumed %d while waiting", n)
		}
	}
	if got := string(s.Output()); strings.Contains(got, "250") {
		t.Fatalf("NOOP answered while waiting: %q", got)
	}
	if string(h.body) != "hello\n" {
		t.Fatalf("body %q", h.body)
	}
	h.begun = false
	s.Delivered("Q1")
	if n := s.Feed(in[n:]); n != len("NOOP\r\n") {
		t.Fatalf("after Delivered Feed consumed %d", n)
	}
	want := "354 End data with <CR><LF>.<CR><LF>\r\n250 2.0.0 OK: queued as Q1\r\n250 2.0.0 OK\r\n"
	if got := string(s.Output()); got != want {
		t.Fatalf("output %q, want %q", got, want)
	}
	// Delivered and Failed with nothing waiting do nothing.
	s.ClearOutput()
	s.Delivered("again")
	s.Failed(ReplyLocalError)
	if len(s.Output()) != 0 || s.Waiting() {
		t.Fatalf("Delivered/Failed while not waiting: %q", s.Output())
	}
}

// TestWaitingAfterBdat is TestWaitingStopsFeed for BDAT LAST.
func TestWaitingAfterBdat(t *testing.T) {
	h := &fakeHandler{}
	s := newRcptSession(t, testConfig(), h)
	in := []byte("BDAT 5 LAST\r\nhelloRSET\r\n")
	n := s.Feed(in)
	if n != len(in)-len("RSET\r\n") || !s.Waiting() {
		t.Fatalf("consumed %d, waiting %v", n, s.Waiting())
	}
	if s.Feed(in[n:]) != 0 || len(s.Output()) != 0 {
		t.Fatalf("session went on while waiting: %q", s.Output())
	}
	h.begun = false
	s.Delivered("Q2")
	s.Feed(in[n:])
	if got, want := string(s.Output()), "250 2.0.0 OK: queued as Q2\r\n250 2.0.0 OK\r\n"; got != want {
		t.Fatalf("output %q, want %q", got, want)
	}
}

// TestFailedLocalError: a delivery failure answers 451 4.3.0 and the
// session takes the next transaction.
func TestFailedLocalError(t *testing.T) {
	h := &fakeHandler{}
	s := newRcptSession(t, testConfig(), h)
	feedString(t, s, "DATA\r\nx\r\n.\r\n")
	if !s.Waiting() {
		t.Fatal("not waiting")
	}
	h.begun = false
	s.Failed(ReplyLocalError)
	if got := string(s.Output()); got != "451 4.3.0 Local error in processing, try again later\r\n" {
		t.Fatalf("output %q", got)
	}
	s.ClearOutput()
	if s.Closed() || s.Waiting() {
		t.Fatal("session ended")
	}
	if env := s.Envelope(); len(env.From) != 0 || len(env.Rcpts) != 0 {
		t.Fatalf("transaction not reset: %+v", env)
	}
	out := feedString(t, s, "RCPT TO:<bob@example.test>\r\nMAIL FROM:<b@example.org>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\ny\r\n.\r\n")
	if !strings.HasPrefix(out, "503 5.5.1 Need MAIL command first\r\n250 2.1.0") || !s.Waiting() {
		t.Fatalf("next transaction: %q", out)
	}
}

// TestAbort: Abort(ReplyTimeout) answers 421 4.4.2 and closes in any
// state; a body still being read is aborted, a waiting one is the
// server's and is left alone.
func TestAbort(t *testing.T) {
	tests := []struct {
		name    string
		input   string
		aborted int
	}{
		{"greeted", "", 0},
		{"half a command", "MAIL FROM:<a@exa", 0},
		{"mail", "EHLO c\r\nMAIL FROM:<a@example.org>\r\n", 0},
		{"data", "EHLO c\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\npartial", 1},
		{"bdat chunk", "EHLO c\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<bob@example.test>\r\nBDAT 10\r\npart", 1},
		{"between chunks", "EHLO c\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<bob@example.test>\r\nBDAT 4\r\npart", 1},
		{"waiting", "EHLO c\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\nx\r\n.\r\n", 0},
	}
	for _, tt := range tests {
		h := &fakeHandler{}
		s := NewDialect(testConfig()).NewSession(h)
		s.Feed([]byte(tt.input))
		s.ClearOutput()
		s.Abort(ReplyTimeout)
		if got := string(s.Output()); got != "421 4.4.2 Timeout, closing connection\r\n" {
			t.Errorf("%s: output %q", tt.name, got)
		}
		if !s.Closed() || s.Waiting() {
			t.Errorf("%s: Closed %v Waiting %v", tt.name, s.Closed(), s.Waiting())
		}
		if h.aborted != tt.aborted {
			t.Errorf("%s: AbortBody called %d times, want %d", tt.name, h.aborted, tt.aborted)
		}
		if n := s.Feed([]byte("NOOP\r\n")); n != 0 {
			t.Errorf("%s: closed session consumed %d", tt.name, n)
		}
		s.ClearOutput()
		s.Abort(ReplyTimeout)
		if len(s.Output()) != 0 {
			t.Errorf("%s: second Abort wrote %q", tt.name, s.Output())
		}
	}
}

// TestEnvelope checks the envelope handed to delivery: canonical paths,
// the HELO argument, the protocol flags and the decoded size.
func TestEnvelope(t *testing.T) {
	cfg := testConfig()
	h := &fakeHandler{}
	s := NewDialect(cfg).NewSession(h)
	feedString(t, s, "EHLO [192.0.2.1]\r\n"+
		"MAIL FROM:<@relay.example:\"bob\"@example.org> SMTPUTF8 SIZE=100\r\n"+
		"RCPT TO:<@a.example,@b.example:alice@example.test>\r\n"+
		"RCPT TO:<Postmaster>\r\n"+
		"RCPT TO:<nobody@example.test>\r\n"+
		"RCPT TO:<\"bob\"@example.test>\r\n"+
		"RCPT TO:<δοκιμή@example.test>\r\n"+
		"RCPT TO:bob+tag@example.test.\r\n"+
		"DATA\r\na\r\n..b\r\n.\r\n")
	if !s.Waiting() {
		t.Fatal("not waiting")
	}
	env := s.Envelope()
	var rcpts []string
	for _, r := range env.Rcpts {
		rcpts = append(rcpts, string(r))
	}
	want := []string{"alice@example.test", "Postmaster", "bob@example.test", "δοκιμή@example.test", "bob+tag@example.test"}
	if string(env.From) != "bob@example.org" || strings.Join(rcpts, " ") != strings.Join(want, " ") ||
		string(env.Helo) != "[192.0.2.1]" || !env.ESMTP || !env.SMTPUTF8 || env.Size != int64(len("a\n.b\n")) {
		t.Fatalf("envelope From %q Rcpts %q Helo %q ESMTP %v SMTPUTF8 %v Size %d",
			env.From, rcpts, env.Helo, env.ESMTP, env.SMTPUTF8, env.Size)
	}
	h.begun = false
	s.Delivered("1")

	// HELO, null sender; nothing of the previous transaction is left.
	feedString(t, s, "HELO   client_1.example.org  \r\n"+
		"MAIL FROM:<>\r\n"+
		"RCPT TO:<bob@example.test>\r\n"+
		"DATA\r\nabc\r\n.\r\n")
	env = s.Envelope()
	if len(env.From) != 0 || len(env.Rcpts) != 1 || string(env.Rcpts[0]) != "bob@example.test" ||
		string(env.Helo) != "client_1.example.org" || env.ESMTP || env.SMTPUTF8 || env.Size != 4 {
		t.Fatalf("second envelope %+v", env)
	}
	h.begun = false
	s.Delivered("2")

	// A quoted local part in canonical form: quoted-pairs reduced.
	feedString(t, s, "EHLO c\r\nMAIL FROM:<\"john\\ doe\"@example.org>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\n.\r\n")
	env = s.Envelope()
	if string(env.From) != `"john doe"@example.org` || env.SMTPUTF8 || env.Size != 0 {
		t.Fatalf("third envelope %+v", env)
	}

	// A HELO argument is stored cut to a domain's 255 octets.
	h.begun = false
	s.Delivered("3")
	feedString(t, s, "EHLO "+strings.Repeat("h", 300)+"\r\n")
	if got := len(s.Envelope().Helo); got != 255 {
		t.Fatalf("HELO stored %d octets", got)
	}
}

// TestWarmSessionAllocatesNothing checks that a warm session runs whole
// transactions (DATA and BDAT, a refused command, NOOP) without allocating:
// the arena, recipient, view and output buffers are reused.
func TestWarmSessionAllocatesNothing(t *testing.T) {
	h := &nopHandler{}
	cfg := benchConfig()
	cfg.MaxBadCommands = 1 << 30 // each conversation has one refused RCPT
	s := NewDialect(cfg).NewSession(h)
	conv := []byte("EHLO client.example.org\r\n" +
		"MAIL FROM:<a@example.org> SIZE=20\r\n" +
		"RCPT TO:<bob@example.test>\r\nRCPT TO:<alice@example.test>\r\n" +
		"DATA\r\nhello\r\n..\r\n.\r\n" +
		"MAIL FROM:<b@example.org>\r\nRCPT TO:<bob@example.test>\r\nBDAT 2\r\nabBDAT 1 LAST\r\nc" +
		"RCPT TO:<bob@example.test>\r\nNOOP\r\n")
	session := func() {
		for in := conv; len(in) > 0; {
			n := s.Feed(in)
			in = in[n:]
			if s.Waiting() {
				h.begun = false
				s.Delivered("ID")
			} else if n == 0 {
				t.Fatalf("stuck at %q after %q", in, s.Output())
			}
		}
	}
	session()
	s.ClearOutput()
	session()
	want := "250 2.0.0 OK: queued as ID\r\n503 5.5.1 Need MAIL command first\r\n250 2.0.0 OK\r\n"
	if out := string(s.Output()); !strings.HasSuffix(out, want) || s.Closed() {
		t.Fatalf("conversation ended %q", out)
	}
	s.ClearOutput()
	allocs := testing.AllocsPerRun(100, func() {
		session()
		s.ClearOutput()
	})
	if allocs != 0 {
		t.Fatalf("a warm session allocates %.1f times per conversation", allocs)
	}
}

// TestLongLineBounded streams a 1 MiB line in 4 KiB reads the way gnet
// does (unconsumed bytes are offered again): the session never holds more
// than one legal line, answers 500 5.5.2 once, and goes on.
func TestLongLineBounded(t *testing.T) {
	s := NewDialect(testConfig()).NewSession(&fakeHandler{})
	feedString(t, s, "EHLO c\r\n")
	line := []byte("NOOP " + strings.Repeat("x", 1<<20) + "\r\nNOOP\r\n")
	var buf []byte
	for off := 0; off < len(line); off += 4096 {
		buf = append(buf, line[off:min(off+4096, len(line))]...)
		n := s.Feed(buf)
		buf = append(buf[:0], buf[n:]...)
		if len(buf) >= s.d.maxMailLine {
			t.Fatalf("session left %d octets unconsumed at offset %d", len(buf), off)
		}
	}
	if len(buf) != 0 {
		t.Fatalf("left %q", buf)
	}
	if got := string(s.Output()); got != "500 5.5.2 Line too long\r\n250 2.0.0 OK\r\n" {
		t.Fatalf("output %q", got)
	}
	if cap(envBufs(s).arena) > maxHeloBytes || cap(s.out) > 4096 { // the arena held the EHLO name
		t.Fatalf("buffers grew: arena %d out %d", cap(envBufs(s).arena), cap(s.out))
	}
}

// TestBigMessageBounded streams 1 MiB of DATA and of BDAT past a 1000
// octet limit: the handler never sees more than the limit, the session
// answers 552 5.3.4 at the end and takes the next message.
func TestBigMessageBounded(t *testing.T) {
	body := bytes.Repeat([]byte("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcd\r\n"), 1<<14)
	for _, bdat := range []bool{false, true} {
		h := &fakeHandler{}
		s := newRcptSession(t, testConfig(), h)
		in := []byte("DATA\r\n")
		if bdat {
			in = []byte("BDAT " + strconv.Itoa(len(body)) + " LAST\r\n")
		}
		in = append(in, body...)
		if !bdat {
			in = append(in, ".\r\n"...)
		}
		for off := 0; off < len(in); off += 4096 {
			chunk := in[off:min(off+4096, len(in))]
			if n := s.Feed(chunk); n != len(chunk) {
				t.Fatalf("bdat=%v: consumed %d of %d at %d", bdat, n, len(chunk), off)
			}
			if len(h.body) > 1000 {
				t.Fatalf("bdat=%v: handler holds %d octets", bdat, len(h.body))
			}
		}
		out := string(s.Output())
		if !strings.HasSuffix(out, "552 5.3.4 Message size exceeds fixed limit\r\n") || h.aborted != 1 || h.begun {
			t.Fatalf("bdat=%v: output %q aborted %d", bdat, out, h.aborted)
		}
		s.ClearOutput()
		feedString(t, s, "MAIL FROM:<a@example.org>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\nok\r\n.\r\n")
		if !s.Waiting() || string(h.body) != "ok\n" {
			t.Fatalf("bdat=%v: next message not taken (%q)", bdat, h.body)
		}
	}
}

// TestRefusedBdatConsumed: a refused BDAT's octets are read however many
// there are, and commands inside them are not run.
func TestRefusedBdatConsumed(t *testing.T) {
	s := NewDialect(testConfig()).NewSession(&fakeHandler{})
	feedString(t, s, "EHLO c\r\n")
	payload := bytes.Repeat([]byte("QUIT\r\n"), 50000)
	in := append([]byte("BDAT "+strconv.Itoa(len(payload))+" LAST\r\n"), payload...)
	in = append(in, "NOOP\r\n"...)
	if n := s.Feed(in); n != len(in) {
		t.Fatalf("consumed %d of %d", n, len(in))
	}
	if got := string(s.Output()); got != "503 5.5.1 Need MAIL command first\r\n250 2.0.0 OK\r\n" || s.Closed() {
		t.Fatalf("output %q closed %v", got, s.Closed())
	}
}

// TestInTransfer: the transaction deadline applies while message data is
// read, between BDAT chunks included.
func TestInTransfer(t *testing.T) {
	h := &fakeHandler{}
	s := newRcptSession(t, testConfig(), h)
	steps := []struct {
		in   string
		want bool
	}{
		{"", false},
		{"BDAT 4\r\nab", true},
		{"cd", true}, // between chunks
		{"NOOP\r\n", true},
		{"RSET\r\n", false},
		{"MAIL FROM:<a@example.org>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\n", true},
		{"x\r\n", true},
	}
	for _, st := range steps {
		s.Feed([]byte(st.in))
		if s.InTransfer() != st.want {
			t.Fatalf("after %q InTransfer = %v", st.in, !st.want)
		}
	}
}

// TestCommandsCounter: the server restarts its command deadline whenever
// Commands changes.
func TestCommandsCounter(t *testing.T) {
	s := NewDialect(testConfig()).NewSession(&fakeHandler{})
	c0 := s.Commands()
	s.Feed([]byte("NOOP"))
	if s.Commands() != c0 {
		t.Fatal("half a command counted")
	}
	s.Feed([]byte("NOOP\r\nEHLO c\r\n"))
	if s.Commands() != c0+2 {
		t.Fatalf("Commands = %d, want %d", s.Commands(), c0+2)
	}
}

// TestReplies checks every named reply: class-consistent RFC 3463 code
// (none on 354), the wire form, Error and Temporary.
func TestReplies(t *testing.T) {
	all := []*Reply{ReplyOK, ReplyMailOK, ReplyRcptOK, ReplyStartData, ReplyBye, ReplyVrfy, ReplyHelp,
		ReplyUnknownCommand, ReplyNotImplemented, ReplyLineTooLong, ReplyBareLFCommand, ReplyBadCharacter,
		ReplyHeloSyntax, ReplyEhloSyntax, ReplyTooManyJunkHelo, ReplyMailSyntax, ReplyRcptSyntax, ReplyBdatSyntax, ReplyVrfySyntax,
		ReplyNoParams, ReplyBadSizeParam, ReplyBadBodyParam, ReplyUnsupportedParam, ReplyUnsupportedBody,
		ReplyBadSenderSyntax, ReplyBadRcptSyntax, ReplyNeedSMTPUTF8, ReplyBadUTF8,
		ReplyTooBig, ReplyTooManyRcpts, ReplyBareNewline, ReplyTooManyErrors, ReplyTooManyJunk, ReplyNeedHelo, ReplyNestedMail,
		ReplyNeedMail, ReplyNeedRcpt, ReplyDataInBdat, ReplyCommandInBdat, ReplyBdatAfterHelo, ReplyUnknownUser, ReplyRelayDenied,
		ReplyNoStorageMemory, ReplyNoSpace, ReplyQueueFull, ReplyLocalError, ReplyMailLoop, ReplyTimeout,
		ReplyShutdown, ReplyInternal, ReplyTooManyConns, ReplyTooManyConnsPerIP, ReplyPipelineOverflow,
		ReplyEarlyTalker, ReplyReadyTLS, ReplyTLSUnavailable, ReplyTLSActive, ReplyStartTLSSyntax,
		ReplyTLSInTransaction, ReplyNeedTLS}
	d := NewDialect(testConfig())
	hello := 0
	for _, r := range all {
		if err := checkReplies(d, r.Bytes()); err != nil {
			t.Errorf("%v", err)
		}
		// Only the replies to HELO/EHLO (and 3xx) go without an enhanced
		// code (RFC 2034 3); checkReplies lets exactly those through.
		if r.Enh == "" && r.Code/100 != 3 {
			if !strings.HasSuffix(r.Text, "HELO hostname") && !strings.HasSuffix(r.Text, "EHLO hostname") && r != ReplyTooManyJunkHelo {
				t.Errorf("%q: no enhanced code but not a reply to HELO/EHLO", r.Bytes())
			}
			hello++
		}
		if r.Code/100 == 3 && r.Enh != "" {
			t.Errorf("%q: 3xx with an enhanced code", r.Bytes())
		}
		if r.Error()+"\r\n" != string(r.Bytes()) || r.Temporary() != (r.Code/100 == 4) {
			t.Errorf("%q: Error %q Temporary %v", r.Bytes(), r.Error(), r.Temporary())
		}
		// Closing replies say so; 421 always closes.
		if r.Code == 421 && !strings.Contains(r.Text, "closing") && !strings.Contains(r.Text, "try again later") {
			t.Errorf("%q: 421 does not say the connection closes", r.Bytes())
		}
	}
	if hello != len(helloReplies())-1 { // less the test check's HELO refusal

		t.Errorf("%d plain replies, helloReplies has %d", hello, len(helloReplies()))
	}
	if got := string(NewReply(451, "4.3.0", "x").Bytes()); got != "451 4.3.0 x\r\n" {
		t.Errorf("NewReply: %q", got)
	}
	if got := string(NewReply(501, "", "Syntax: EHLO hostname").Bytes()); got != "501 Syntax: EHLO hostname\r\n" {
		t.Errorf("NewReply without an enhanced code: %q", got)
	}
}

// TestVariableReplies checks the replies with a variable part: their wire
// form, appended to what the output already holds, without allocating.
func TestVariableReplies(t *testing.T) {
	d := NewDialect(testConfig())
	buf := make([]byte, 0, 128)
	buf = append(buf, "x"...)
	cases := []struct {
		got  func([]byte) []byte
		want string
	}{
		{func(b []byte) []byte { return appendQueued(b, "1A2B") }, "250 2.0.0 OK: queued as 1A2B\r\n"},
		{func(b []byte) []byte { return appendChunkOK(b, 0) }, "250 2.0.0 0 octets received\r\n"},
		{func(b []byte) []byte { return appendChunkOK(b, 1<<40) }, "250 2.0.0 1099511627776 octets received\r\n"},
	}
	for _, c := range cases {
		out := c.got(buf)
		if string(out) != "x"+c.want {
			t.Errorf("got %q, want %q", out, "x"+c.want)
		}
		if err := checkReplies(d, out[1:]); err != nil {
			t.Errorf("%v", err)
		}
		if n := testing.AllocsPerRun(10, func() { _ = c.got(buf) }); n != 0 {
			t.Errorf("%q: %.0f allocations", c.want, n)
		}
	}
}

func TestDialect(t *testing.T) {
	cfg := testConfig()
	d := NewDialect(cfg)
	if string(d.Greeting()) != "220 mx.example.test ESMTP nanomx\r\n" || d.Config() != cfg {
		t.Fatalf("greeting %q", d.Greeting())
	}
	if err := checkReplies(d, append(append(append([]byte{}, d.greeting...), d.ehlo...), d.helo...)); err != nil {
		t.Fatal(err)
	}
	if want := 512 + 26 + 14 + 9 + 512; d.maxMailLine != want {
		t.Fatalf("maxMailLine %d, want %d", d.maxMailLine, want)
	}
}

func TestStateString(t *testing.T) {
	want := []string{"greeted", "ready", "mail", "rcpt", "data", "bdat", "wait", "closed", "state(42)"}
	for i, st := range []state{stateGreeted, stateReady, stateMail, stateRcpt, stateData, stateBdat, stateWait, stateClosed, 42} {
		if st.String() != want[i] {
			t.Errorf("state %d: %q, want %q", i, st.String(), want[i])
		}
	}
}

// TestJunkLimit checks MaxJunkCommands at its boundary for every kind of
// junk command: the limit's worth are run, the next one is answered 421
// 4.7.0 (plain for HELO/EHLO, RFC 2034 3) instead, and the session closes.
// A zero limit means DefaultMaxJunkCommands.
func TestJunkLimit(t *testing.T) {
	kinds := []struct {
		cmd, reply string
	}{
		{"NOOP", "250 2.0.0 OK\r\n"},
		{"RSET", "250 2.0.0 OK\r\n"},
		{"HELP", string(ReplyHelp.line)},
		{"VRFY bob", string(ReplyVrfy.line)},
		{"EHLO c", ""}, // the EHLO reply, below
		{"HELO c", "250 mx.example.test\r\n"},
	}
	for _, limit := range []int{1, 7, 0} {
		for _, k := range kinds {
			cfg := testConfig()
			cfg.MaxJunkCommands = limit
			d := NewDialect(cfg)
			want := k.reply
			if want == "" {
				want = string(d.ehlo)
			}
			n := limit
			if n == 0 {
				n = DefaultMaxJunkCommands
			}
			s := d.NewSession(&fakeHandler{})
			feedString(t, s, "EHLO first\r\n") // the first EHLO is no junk
			for i := range n {
				if got := feedString(t, s, k.cmd+"\r\n"); got != want || s.Closed() {
					t.Fatalf("limit %d: %s #%d: %q closed %v", limit, k.cmd, i+1, got, s.Closed())
				}
			}
			over := ReplyTooManyJunk
			if strings.HasSuffix(k.cmd, "LO c") {
				over = ReplyTooManyJunkHelo
			}
			if got := feedString(t, s, k.cmd+"\r\nNOOP\r\n"); got != string(over.line) || !s.Closed() {
				t.Fatalf("limit %d: %s #%d: %q closed %v", limit, k.cmd, n+1, got, s.Closed())
			}
		}
	}
}

// TestJunkNotCounted: commands that move mail or are refused are no junk,
// the first EHLO after STARTTLS (RFC 3207 4.2) is none, and a delivered
// message restarts the count.
func TestJunkNotCounted(t *testing.T) {
	cfg := tlsConfig()
	cfg.MaxJunkCommands = 2
	cfg.MaxBadCommands = 1000
	h := &fakeHandler{}
	s := NewDialect(cfg).NewSession(h)
	in := "EHLO c\r\nMAIL FROM:<a@example.org>\r\n"
	for range 50 {
		// 452 after MaxRcpts, 550 for unknown users, 500, 502: none is junk.
		in += "RCPT TO:<bob@example.test>\r\nRCPT TO:<nobody@example.test>\r\nFOO\r\nEXPN x\r\n"
	}
	in += "NOOP\r\nNOOP\r\n"
	if out := feedString(t, s, in); s.Closed() || !strings.HasSuffix(out, "250 2.0.0 OK\r\n250 2.0.0 OK\r\n") {
		t.Fatalf("closed %v after %q", s.Closed(), out[len(out)-100:])
	}
	// Delivered restarts the count.
	feedString(t, s, "RCPT TO:<bob@example.test>\r\nDATA\r\nx\r\n.\r\n")
	h.begun = false
	s.Delivered("1")
	if out := feedString(t, s, "RSET\r\nSTARTTLS\r\n"); s.Closed() || !strings.HasSuffix(out, "250 2.0.0 OK\r\n") {
		t.Fatalf("after delivery: %q", out)
	}
	s.TLSStarted()
	if out := feedString(t, s, "EHLO c\r\n"); !strings.HasSuffix(out, "250 CHUNKING\r\n") {
		t.Fatalf("first EHLO after TLS: %q", out)
	}
	// RSET was junk 1 since the delivery; this EHLO is 2, the next 3.
	if out := feedString(t, s, "EHLO c\r\n"); !strings.HasSuffix(out, "250 CHUNKING\r\n") || s.Closed() {
		t.Fatalf("second EHLO after TLS: %q", out)
	}
	if out := feedString(t, s, "EHLO c\r\n"); out != string(ReplyTooManyJunkHelo.line) || !s.Closed() {
		t.Fatalf("third EHLO after TLS: %q", out)
	}
}

// TestOutputLimit pipelines 10,000 commands that are neither bad nor junk
// (RCPTs past MaxRcpts: 452 4.5.3) in one read. Each Feed call stops once
// OutputLimit octets of replies are waiting, passing it by one reply at
// most; fed again with the rest after ClearOutput, as a server does, the
// session answers every command, in order.
func TestOutputLimit(t *testing.T) {
	cfg := testConfig()
	s := NewDialect(cfg).NewSession(&fakeHandler{})
	feedString(t, s, "EHLO c\r\nMAIL FROM:<a@example.org>\r\n")
	const cmds = 10000
	in := []byte(strings.Repeat("RCPT TO:<bob@example.test>\r\n", cmds))
	want := strings.Repeat(string(ReplyRcptOK.line), cfg.MaxRcpts) +
		strings.Repeat(string(ReplyTooManyRcpts.line), cmds-cfg.MaxRcpts)
	var out []byte
	calls := 0
	for len(in) > 0 {
		n := s.Feed(in)
		in = in[n:]
		calls++
		if got := len(s.Output()); got > OutputLimit+len(ReplyTooManyRcpts.line) {
			t.Fatalf("Feed call %d produced %d octets", calls, got)
		}
		if len(in) > 0 && (!s.OutputFull() || n == 0) {
			t.Fatalf("Feed call %d stopped with %d octets left, output %d", calls, len(in), len(s.Output()))
		}
		out = append(out, s.Output()...)
		s.ClearOutput()
		if calls > cmds {
			t.Fatal("no progress")
		}
	}
	if string(out) != want || s.Closed() {
		t.Fatalf("replies differ (%d octets, want %d), closed %v", len(out), len(want), s.Closed())
	}
	if min := len(want) / (OutputLimit + len(ReplyTooManyRcpts.line)); calls < min {
		t.Fatalf("%d Feed calls for %d octets of replies", calls, len(want))
	}
	// Full, Feed consumes nothing until ClearOutput.
	s.out = append(s.out, make([]byte, OutputLimit)...)
	if n := s.Feed([]byte("NOOP\r\n")); n != 0 || !s.OutputFull() {
		t.Fatalf("full output: Feed consumed %d", n)
	}
}

// envBufs returns the envelope buffers s holds, empty ones when it holds
// none.
func envBufs(s *Session) txBufs {
	if s.txBufs == nil {
		return txBufs{}
	}
	return *s.txBufs
}

// retained is the buffer capacity a session holds, in octets.
func retained(s *Session) int {
	b := envBufs(s)
	return cap(b.arena) + cap(s.out) + cap(s.helo) +
		cap(b.rcpts)*int(unsafe.Sizeof(span{})) + cap(b.views)*int(unsafe.Sizeof([]byte(nil)))
}

// TestIdleBuffersShrink: a transaction with 100 long recipients grows the
// arena, recipient slices and output; once it ends (RSET, delivery, a new
// EHLO) and the output is cleared, the idle session holds a few KiB again,
// and none of it its own: the buffers it kept went back to the spares.
func TestIdleBuffersShrink(t *testing.T) {
	cfg := benchConfig()
	cfg.MaxAddressAllowance = 1024
	env := "MAIL FROM:<a@example.org>\r\n"
	for i := range 100 {
		env += "RCPT TO:<bob+" + strings.Repeat("x", 900) + strconv.Itoa(i) + "@example.test>\r\n"
	}
	for _, end := range []string{"RSET\r\n", "DATA\r\nhi\r\n.\r\n", "EHLO again\r\n"} {
		h := &nopHandler{}
		s := NewDialect(cfg).NewSession(h)
		feedOrFail(t, s, h, []byte("EHLO "+strings.Repeat("h", 300)+"\r\n"+env))
		if len(s.rcpts) != 100 || retained(s) < 90_000 {
			t.Fatalf("setup: %d rcpts, %d octets retained", len(s.rcpts), retained(s))
		}
		s.Envelope() // grows views too
		// A big output, cleared, is let go.
		s.out = append(s.out, make([]byte, 3*OutputLimit)...)
		s.ClearOutput()
		if cap(s.out) != 0 {
			t.Fatalf("ClearOutput kept %d octets", cap(s.out))
		}
		feedOrFail(t, s, h, []byte(end))
		if got := retained(s); got > 2<<10 {
			t.Fatalf("after %q an idle session retains %d octets (arena %d out %d helo %d rcpts %d views %d)",
				end, got, cap(envBufs(s).arena), cap(s.out), cap(s.helo), cap(envBufs(s).rcpts), cap(envBufs(s).views))
		}
		// Idle, its replies written, it holds no buffer but the HELO name's.
		s.ClearOutput()
		if s.txBufs != nil || s.out != nil {
			t.Fatalf("after %q an idle session holds envelope buffers %v, output %d octets", end, s.txBufs != nil, cap(s.out))
		}
	}
}
