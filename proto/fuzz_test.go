package proto

import (
	"bytes"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"
)

// fuzzConfig picks limits from mode bits: 1 normalizes bare newlines, 2
// makes every limit small so the fuzzer reaches them.
func fuzzConfig(mode uint8) Config {
	cfg := testConfig()
	if mode&1 != 0 {
		cfg.BareNewline = BareNewlineNormalize
	}
	if mode&2 != 0 {
		cfg.MaxMessageBytes = 64
		cfg.MaxRcpts = 2
		cfg.MaxBadCommands = 3
	}
	return cfg
}

// smuggleSeeds are the fake ends of data of smuggle.txt, with the hidden
// transaction after them and the real end.
var smuggleSeeds = []string{
	"body\n.\nMAIL FROM:<evil@example.org>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\nx\r\n.\r\n",
	"body\n.\r\nMAIL FROM:<evil@example.org>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\nx\r\n.\r\n",
	"body\r\n.\nMAIL FROM:<evil@example.org>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\nx\r\n.\r\n",
	"body\r.\r\nMAIL FROM:<evil@example.org>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\nx\r\n.\r\n",
	"body\r\n.\rjunk\r\nMAIL FROM:<evil@example.org>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\nx\r\n.\r\n",
	"body\r\n.\r\r\n.\r\n",
	"body\r\r\n.\r\n",
	"body\n\r\n.\r\n",
}

// rfc5321D1 is RFC 5321 Appendix D.1, a typical transaction (its third
// data line is dot-stuffed).
const rfc5321D1 = "EHLO bar.com\r\nMAIL FROM:<Smith@bar.com>\r\nRCPT TO:<Jones@foo.com>\r\n" +
	"RCPT TO:<Green@foo.com>\r\nRCPT TO:<Brown@foo.com>\r\nDATA\r\n" +
	"Blah blah blah...\r\n...etc. etc. etc.\r\n.\r\nQUIT\r\n"

// rfc3030Ex is RFC 3030 4.2's example, one LAST chunk of 86 octets.
const rfc3030Ex = "EHLO Example.ORG\r\nMAIL FROM:<Sam@Random.com>\r\nRCPT TO:<Susan@Random.com>\r\n" +
	"BDAT 86 LAST\r\nTo: Susan@random.com\r\nFrom: Sam@random.com\r\n" +
	"Subject: This is a bodyless test message\r\nQUIT\r\n"

// rfc2920Ex is RFC 2920 3.2's pipelined transaction, addresses moved to
// example.test so some are accepted.
const rfc2920Ex = "EHLO dbc.mtview.ca.us\r\nMAIL FROM:<mrose@dbc.mtview.ca.us>\r\n" +
	"RCPT TO:<bob@example.test>\r\nRCPT TO:<dan@example.test>\r\nRCPT TO:<alice@example.test>\r\n" +
	"DATA\r\nSubject: pipelined\r\n\r\n.\r\nMAIL FROM:<mrose@dbc.mtview.ca.us>\r\n" +
	"RCPT TO:<alice@example.test>\r\nDATA\r\n.\r\nQUIT\r\n"

// FuzzCommand feeds arbitrary command lines to a session that has said
// EHLO (or HELO), maybe with an open transaction. No panic; every reply is
// well formed; the session's memory stays within its limits; and unless
// the input left the session reading data, waiting or closed, it answers
// a following NOOP normally.
func FuzzCommand(f *testing.F) {
	for _, seed := range []string{
		// RFC 5321 4.1.1 and its examples.
		"EHLO bar.com", "HELO bar.com", "MAIL FROM:<Smith@bar.com>", "RCPT TO:<Jones@foo.com>",
		"RCPT TO:<@hosta.int,@jkl.org:userc@d.bar.org>", "VRFY Smith", "EXPN Example-People",
		"HELP", "HELP MAIL", "NOOP", "RSET", "QUIT", "DATA", "TURN", "ETRN example.org", "STARTTLS",
		"AUTH PLAIN AGJvYgBwYXNz",
		// Parameters (RFC 1870, 6152, 6531, 3030, 3461).
		"MAIL FROM:<a@example.org> SIZE=100 BODY=8BITMIME SMTPUTF8",
		"MAIL FROM:<> BODY=BINARYMIME", "MAIL FROM:<a@example.org> RET=HDRS ENVID=x",
		"RCPT TO:<bob@example.test> NOTIFY=NEVER ORCPT=rfc822;bob@example.test",
		"MAIL FROM:<a@example.org> SIZE=99999999999999999999",
		"BDAT 0 LAST", "BDAT 3\r\nabc", "BDAT 86 LAST", "BDAT x", "bdat 1 last\r\nz",
		// Tolerated and refused paths.
		"MAIL FROM: <a@example.org>", "MAIL FROM:a@example.org", "mail from:<A@B.C>   ",
		`RCPT TO:<"john doe"@example.test>`, `RCPT TO:<"bob"@example.test>`, "RCPT TO:<Postmaster>",
		"RCPT TO:<δοκιμή@example.test>", "MAIL FROM:<δοκιμή@παράδειγμα.δοκιμή> SMTPUTF8",
		"RCPT TO:<\xff@example.test>", "MAIL FROM:<@a:>", "RCPT TO:<@a,@b:>", `MAIL FROM:<"a\`,
		"MAIL FROM:<a@[IPv6:2001:db8::1]>", "EHLO [192.0.2.1]", "EHLO my_host",
		// Control octets, bare LF, long lines.
		"NOOP\x00", "NOOP\rQUIT", "NOOP\nQUIT", "\n", "\r\n", "",
		"NOOP " + strings.Repeat("x", 600), "MAIL FROM:<" + strings.Repeat("a", 1100) + "@example.org>",
		"RCPT TO:<bob@example.test>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\nhi\r\n.",
	} {
		for _, mode := range []uint8{0, 1, 2} {
			f.Add([]byte(seed), mode)
		}
	}
	f.Fuzz(func(t *testing.T, line []byte, mode uint8) {
		cfg := fuzzConfig(mode & 4 >> 1) // bit 4: small limits
		h := &fakeHandler{}
		d := NewDialect(cfg)
		s := d.NewSession(h)
		setup := "EHLO c.example.org\r\n"
		if mode&2 != 0 {
			setup = "HELO c.example.org\r\n"
		}
		if mode&1 != 0 {
			setup += "MAIL FROM:<a@example.org>\r\nRCPT TO:<bob@example.test>\r\n"
		}
		if n := s.Feed([]byte(setup)); n != len(setup) {
			t.Fatalf("setup consumed %d", n)
		}
		s.ClearOutput()

		in := line
		if !bytes.HasSuffix(in, []byte("\n")) {
			in = append(in[:len(in):len(in)], '\r', '\n')
		}
		rest := in
		var out []byte
		for {
			n := s.Feed(rest)
			rest = rest[n:]
			if len(s.Output()) > OutputLimit+maxStepOutput {
				t.Fatalf("one Feed produced %d octets of replies", len(s.Output()))
			}
			full := s.OutputFull()
			out = append(out, s.Output()...)
			s.ClearOutput()
			if s.Waiting() {
				h.begun = false
				s.Delivered("ID")
				continue
			}
			if !full || s.Closed() {
				break
			}
		}
		out = append(out, s.Output()...)
		if err := checkReplies(d, out); err != nil {
			t.Fatal(err)
		}
		// Memory: bounded by the limits, whatever the input.
		lines := bytes.Count(in, []byte("\n")) + 1
		if len(out) > lines*(len(d.ehlo)+len(ReplyTooManyErrors.line)) {
			t.Fatalf("%d octets of replies for %d lines", len(out), lines)
		}
		b := envBufs(s)
		if len(s.helo) > maxHeloBytes || len(b.rcpts) > cfg.MaxRcpts ||
			len(b.arena) > (cfg.MaxRcpts+1)*d.maxMailLine || len(h.body) > int(cfg.MaxMessageBytes) {
			t.Fatalf("state grew: helo %d rcpts %d arena %d body %d", len(s.helo), len(b.rcpts), len(b.arena), len(h.body))
		}
		switch {
		case s.Closed():
			if h.begun {
				t.Fatal("closed with a body begun")
			}
		case s.state == stateData || s.state == stateBdat:
			if len(rest) != 0 {
				t.Fatalf("left %d octets while reading data", len(rest))
			}
		default:
			// The input ends in LF, so it was all read; the session
			// still answers.
			if len(rest) != 0 {
				t.Fatalf("left %q unconsumed", rest)
			}
			if h.begun && !s.inBdat {
				t.Fatal("body begun outside a transfer")
			}
			s.ClearOutput()
			if s.junk >= d.maxJunk {
				return // the NOOP would be one junk command too many
			}
			if s.Feed([]byte("NOOP\r\n")) != 6 || string(s.Output()) != "250 2.0.0 OK\r\n" {
				t.Fatalf("NOOP after %q: %q", line, s.Output())
			}
		}
	})
}

// refData is the slow, obviously correct DATA decoder the session is
// checked against. in is what follows the DATA command line. The message
// ends at the first <CRLF>.<CRLF>, where the CRLF ending the DATA line
// counts as the first CRLF (RFC 5321 4.1.1.4); end is the offset just past
// it, ok false if there is none. The text before it is cut into lines at
// each CRLF; one leading dot is removed from each line (4.5.2); a CR or LF
// left inside a line is bare: kept as is in normalize mode, and in reject
// mode it taints the message. Each line is stored with LF.
func refData(in []byte) (body []byte, end int, bare, ok bool) {
	framed := append([]byte("\r\n"), in...)
	k := bytes.Index(framed, []byte("\r\n.\r\n"))
	if k < 0 {
		return nil, 0, false, false
	}
	body = []byte{}
	if k > 0 {
		lines := strings.Split(string(in[:k]), "\r\n")
		lines = lines[:len(lines)-1] // in[:k] ends with CRLF
		for _, l := range lines {
			l = strings.TrimPrefix(l, ".")
			if strings.ContainsAny(l, "\r\n") {
				bare = true
			}
			body = append(body, l+"\n"...)
		}
	}
	return body, k + 3, bare, true
}

// refBdat is the reference BDAT decoder for the concatenated chunks: no
// dot handling, CRLF stored as LF, any other CR or LF bare.
func refBdat(in []byte) (body []byte, bare bool) {
	body = []byte{}
	for i := 0; i < len(in); i++ {
		switch c := in[i]; {
		case c == '\r' && i+1 < len(in) && in[i+1] == '\n':
			body = append(body, '\n')
			i++
		case c == '\r' || c == '\n':
			bare = true
			body = append(body, c)
		default:
			body = append(body, c)
		}
	}
	return body, bare
}

// encodeData is a correct SMTP client: each stored line is sent with
// CRLF, dot-stuffed, then the end of data.
func encodeData(body []byte) []byte {
	var out []byte
	for len(body) > 0 {
		i := bytes.IndexByte(body, '\n')
		if body[0] == '.' {
			out = append(out, '.')
		}
		out = append(out, body[:i]...)
		out = append(out, '\r', '\n')
		body = body[i+1:]
	}
	return append(out, ".\r\n"...)
}

// pieces cuts b into pieces whose sizes come from cuts (cycled; a zero
// size piece is an empty Feed); without cuts b is one piece.
func pieces(b, cuts []byte) [][]byte {
	if len(cuts) == 0 {
		return [][]byte{b}
	}
	var ps [][]byte
	for i := 0; len(b) > 0; i++ {
		n := min(int(cuts[i%len(cuts)]), len(b))
		ps = append(ps, b[:n])
		b = b[n:]
		if i > 1<<16 {
			return append(ps, b)
		}
	}
	return ps
}

// FuzzDataReader decodes an arbitrary payload, fed in arbitrary pieces,
// through DATA or BDAT and compares the outcome with refData or refBdat:
// where the message ends (exactly once, at the real end of data), what is
// stored, and the reply (550 5.5.2 and close for bare newlines in reject
// mode, 552 5.3.4 past the size limit). A stored DATA body must also
// survive a round trip through a correct client as one identical message.
func FuzzDataReader(f *testing.F) {
	add := func(payload string, cuts []byte) {
		for _, mode := range []uint8{0, 1, 2, 3, 4, 5} {
			f.Add([]byte(payload), cuts, mode)
		}
	}
	for _, s := range smuggleSeeds {
		add(s, nil)
		add(s, []byte{1})
		add(s, []byte{4, 1, 2})
	}
	add("Blah blah blah...\r\n...etc. etc. etc.\r\n.\r\n", []byte{3})
	add("To: Susan@random.com\r\nFrom: Sam@random.com\r\nSubject: This is a bodyless test message\r\n", []byte{22, 22, 42})
	add("", nil)
	add(".\r\n", []byte{1})
	add("..\r\n.\r\n", []byte{1})
	add("\r\n.\r\n", []byte{2, 1, 2})
	add(".\r\r\n", []byte{1})
	add("a\r", []byte{2})
	add(strings.Repeat("x", 1500)+"\r\n", []byte{200})
	add("line one\r\n.line two\r\n..line three\r\n\r\n", []byte{5, 0, 7})

	f.Fuzz(func(t *testing.T, payload, cuts []byte, mode uint8) {
		normalize, bdat, small := mode&1 != 0, mode&2 != 0, mode&4 != 0
		cfg := testConfig()
		cfg.MaxMessageBytes = 1 << 16
		if small {
			cfg.MaxMessageBytes = 64
		}
		if normalize {
			cfg.BareNewline = BareNewlineNormalize
		}
		h := &fakeHandler{}
		s := NewDialect(cfg).NewSession(h)
		setup := "EHLO c\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<bob@example.test>\r\n"
		s.Feed([]byte(setup))
		s.ClearOutput()

		var stream, wantBody []byte
		var bare bool
		var wantReplies string
		if !bdat {
			// The appended end guarantees an end; the payload may hold an
			// earlier one, and then the rest would be commands: feed only
			// up to the real end.
			data := append(append([]byte{}, payload...), "\r\n.\r\n"...)
			var end int
			wantBody, end, bare, _ = refData(data)
			if s.Feed([]byte("DATA\r\n")) != 6 || string(s.Output()) != string(ReplyStartData.line) {
				t.Fatalf("DATA: %q", s.Output())
			}
			s.ClearOutput()
			stream = data[:end]
		} else {
			// Chunk sizes come from the cuts, reversed, so feed pieces and
			// chunks differ; the last chunk is LAST.
			chunkCuts := make([]byte, len(cuts))
			for i, c := range cuts {
				chunkCuts[len(cuts)-1-i] = c
			}
			chunks := pieces(payload, chunkCuts)
			if len(chunks) == 0 {
				chunks = [][]byte{nil} // BDAT 0 LAST
			}
			if len(chunks) > 64 {
				chunks = append(chunks[:63], bytes.Join(chunks[63:], nil))
			}
			for i, c := range chunks {
				if i == len(chunks)-1 {
					stream = append(stream, "BDAT "+strconv.Itoa(len(c))+" LAST\r\n"...)
				} else {
					stream = append(stream, "BDAT "+strconv.Itoa(len(c))+"\r\n"...)
					wantReplies += "250 2.0.0 " + strconv.Itoa(len(c)) + " octets received\r\n"
				}
				stream = append(stream, c...)
			}
			wantBody, bare = refBdat(payload)
		}
		switch {
		case bare && !normalize:
			wantReplies += string(ReplyBareNewline.line)
		case int64(len(wantBody)) > cfg.MaxMessageBytes:
			wantReplies += string(ReplyTooBig.line)
		default:
			wantReplies += "250 2.0.0 OK: queued as ID\r\n"
		}

		var buf, replies []byte
		var stored []string
		ps := pieces(stream, cuts)
		for i, p := range ps {
			buf = append(buf, p...)
			n := s.Feed(buf)
			buf = buf[n:]
			for s.OutputFull() && !s.Closed() && !s.Waiting() {
				// Write and clear, as a server does, and go on at once.
				replies = append(replies, s.Output()...)
				s.ClearOutput()
				n = s.Feed(buf)
				buf = buf[n:]
			}
			if s.Waiting() {
				if i != len(ps)-1 || len(buf) != 0 {
					t.Fatalf("message ended before the real end (piece %d of %d, %d octets left)", i, len(ps), len(buf))
				}
				if n := s.Feed([]byte("NOOP\r\n")); n != 0 {
					t.Fatalf("Feed consumed %d while waiting", n)
				}
				stored = append(stored, string(h.body))
				h.begun = false
				s.Delivered("ID")
			}
			// Before the last piece a DATA message is still being read and
			// a BDAT session is between or inside chunks, never closed.
			if i < len(ps)-1 && (s.Closed() || !bdat && s.state != stateData) {
				t.Fatalf("message ended early (piece %d of %d, state %v): %q", i, len(ps), s.state, s.Output())
			}
		}
		if len(buf) != 0 {
			t.Fatalf("%d octets left", len(buf))
		}
		if s.InTransfer() {
			t.Fatalf("message did not end (state %v)", s.state)
		}
		if got := string(append(replies, s.Output()...)); got != wantReplies {
			t.Fatalf("replies %q, want %q", got, wantReplies)
		}
		if h.begun || h.begins != 1 || h.aborted != 1-len(stored) {
			t.Fatalf("body accounting: begun %v begins %d aborted %d stored %d", h.begun, h.begins, h.aborted, len(stored))
		}
		if s.Closed() != (bare && !normalize) {
			t.Fatalf("closed = %v", s.Closed())
		}
		if len(stored) == 0 {
			return
		}
		if stored[0] != string(wantBody) {
			t.Fatalf("stored %q, want %q", stored[0], wantBody)
		}

		// What was stored goes through a correct client unchanged and as
		// exactly one message: nothing in it ends the data early.
		if len(wantBody) > 0 && wantBody[len(wantBody)-1] != '\n' {
			return // a BDAT body without a final LF has no DATA form
		}
		h2 := &fakeHandler{}
		s2 := newRcptSessionFuzz(cfg, h2)
		again := append([]byte("DATA\r\n"), encodeData(wantBody)...)
		again = append(again, "NOOP\r\n"...)
		n := s2.Feed(again)
		if !s2.Waiting() || n != len(again)-len("NOOP\r\n") || string(h2.body) != string(wantBody) {
			t.Fatalf("round trip: waiting %v, consumed %d of %d, body %q", s2.Waiting(), n, len(again), h2.body)
		}
	})
}

func newRcptSessionFuzz(cfg Config, h Handler) *Session {
	s := NewDialect(cfg).NewSession(h)
	s.Feed([]byte("EHLO c\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<bob@example.test>\r\n"))
	s.ClearOutput()
	return s
}

// FuzzSession runs arbitrary input through a whole session, whole, cut in
// two, in reads of one size, and byte by byte when short. No panic; run checks that Feed
// always consumes or stops for a reason and that no body is leaked. The
// outcome does not depend on the cut; every reply is well formed; every
// body begun ends exactly once (delivered, failed or aborted); no more
// messages are stored than "queued" replies sent.
func FuzzSession(f *testing.F) {
	// Transcripts as seeds, the small ones: the fuzzer minimizes every new
	// input it finds interesting, and minimizing mutants of large seeds
	// would take most of a short run.
	for _, tr := range loadTranscripts(f) {
		if len(tr.input) <= 2048 {
			f.Add(tr.input, uint16(len(tr.input)/2), uint8(0))
			f.Add(tr.input, uint16(100), uint8(1))
		}
	}
	// An over-long command line, dropped while it streams, ending in a bare
	// LF, then one ending in CRLF.
	f.Add([]byte("EHLO c\r\nNOOP "+strings.Repeat("z", 1100)+"\nNOOP\r\n"), uint16(100), uint8(0))
	f.Add([]byte("EHLO c\r\nNOOP "+strings.Repeat("z", 1100)+"\r\nNOOP\r\n"), uint16(600), uint8(0))
	for _, s := range []string{rfc5321D1, rfc3030Ex, rfc2920Ex} {
		for _, mode := range []uint8{0, 1, 2, 4, 8, 16, 32} {
			f.Add([]byte(s), uint16(len(s)/3), mode)
		}
	}
	for _, s := range smuggleSeeds {
		in := "EHLO c\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\n" + s + "QUIT\r\n"
		f.Add([]byte(in), uint16(60), uint8(0))
		f.Add([]byte(in), uint16(70), uint8(1))
	}
	f.Fuzz(func(t *testing.T, input []byte, cut uint16, mode uint8) {
		cfg := fuzzConfig(mode)
		var h0 fakeHandler
		if mode&4 != 0 {
			h0.budget = 32
		}
		if mode&8 != 0 {
			h0.writeCap = 16
		}
		if mode&16 != 0 {
			h0.freeBytes = 100
		}
		if mode&32 != 0 {
			h0.failDeliveries = 1
		}
		type result struct {
			out     string
			msgs    []string
			closed  bool
			aborted int
		}
		do := func(chunks [][]byte) result {
			h := h0
			out, msgs, closed := run(t, cfg, &h, chunks)
			if err := checkReplies(NewDialect(cfg), []byte(out)); err != nil {
				t.Fatal(err)
			}
			failed := h0.failDeliveries - h.failDeliveries
			open := 0
			if h.begun {
				open = 1
			}
			if h.begins != len(msgs)+failed+h.aborted+open {
				t.Fatalf("bodies: %d begun, %d stored, %d failed, %d aborted, %d open",
					h.begins, len(msgs), failed, h.aborted, open)
			}
			if queued := strings.Count(out, "250 2.0.0 OK: queued as "); len(msgs) > queued {
				t.Fatalf("%d messages stored, %d queued replies", len(msgs), queued)
			}
			return result{out, msgs, closed, h.aborted}
		}
		same := func(how string, a, b result) {
			if a.out != b.out || a.closed != b.closed || a.aborted != b.aborted ||
				strings.Join(a.msgs, "\x00---\x00") != strings.Join(b.msgs, "\x00---\x00") || len(a.msgs) != len(b.msgs) {
				t.Fatalf("%s differs from whole:\n whole: %q %q closed %v aborted %d\n %s: %q %q closed %v aborted %d",
					how, a.out, a.msgs, a.closed, a.aborted, how, b.out, b.msgs, b.closed, b.aborted)
			}
		}
		whole := do([][]byte{input})
		c := int(cut) % (len(input) + 1)
		same("cut at "+strconv.Itoa(c), whole, do([][]byte{input[:c], input[c:]}))
		// Reads of one size, so long lines arrive in many pieces.
		size := int(cut)%1021 + 1
		var reads [][]byte
		for b := input; len(b) > 0; b = b[min(size, len(b)):] {
			reads = append(reads, b[:min(size, len(b))])
		}
		same("reads of "+strconv.Itoa(size), whole, do(reads))
		// Every check answering later (Resume) must change nothing.
		h0.pendAll = true
		same("checks pending", whole, do([][]byte{input[:c], input[c:]}))
		h0.pendAll = false
		if len(input) <= 512 {
			var bytewise [][]byte
			for i := range input {
				bytewise = append(bytewise, input[i:i+1])
			}
			same("bytewise", whole, do(bytewise))
		}
	})
}

// FuzzParsePath fuzzes the address and parameter parser directly: no
// panic; on success the address is in the canonical form Envelope
// documents (checkCanonical, written apart from the parser), holds no
// control octet, no SP or angle bracket outside quotes, is at most the
// input and a pair of quotes long, and is a fixed point (parsed again it
// comes back unchanged); the rest is a suffix of the input.
func FuzzParsePath(f *testing.F) {
	for _, s := range []string{
		"<a@example.org>", "a@example.org SIZE=10", "<>", "<Postmaster>",
		"<@a.example,@b.example:bob@example.test>", `<"john doe"@example.test>`,
		`<"bob"@example.test> SMTPUTF8`, "<δοκιμή@παράδειγμα.δοκιμή>", "<a%b!c@[192.0.2.1]>",
		"<a@[IPv6:2001:db8::1]>", "<../../etc/passwd@example.test>", "<a\x00b@example.test>",
		"<@a:>", "<" + strings.Repeat("x", 300) + "@example.test>", `<"a\"b"@x.test>`, "<a@b.>",
		`<"a\b\ c\\"@x>`, `<"\a">`, `"a..b"@x`, `<""@x>`, `<"\\"@x>`, "<\"\\\xce\xb4\"@x>",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		out, rest, p, perr := parsePath(in, nil)
		if perr != pathOK {
			return
		}
		if !bytes.HasSuffix(in, rest) {
			t.Fatalf("rest %q is not a suffix of %q", rest, in)
		}
		if p.null {
			if len(out) != 0 {
				t.Fatalf("null path with address %q", out)
			}
			return
		}
		if len(out) == 0 || len(out) > len(in)+2 {
			t.Fatalf("canonical %q from %q", out, in)
		}
		if err := checkCanonical(out); err != nil {
			t.Fatalf("%q from %q: %v", out, in, err)
		}
		if p.noDomain != !bytes.ContainsRune(out[bytes.LastIndexByte(out, '"')+1:], '@') {
			t.Fatalf("%q from %q: noDomain %v", out, in, p.noDomain)
		}
		again, rest2, p2, perr2 := parsePath(append([]byte("<"), append(out, '>')...), nil)
		if perr2 != pathOK || !bytes.Equal(again, out) || len(rest2) != 0 || p2.utf8 != p.utf8 || p2.noDomain != p.noDomain {
			t.Fatalf("canonical %q does not round-trip: %q %v %v", out, again, perr2, p2)
		}
	})
}

// checkCanonical checks an address against Envelope's canonical form,
// without the parser's helpers: a Dot-string local part, or a Quoted-string
// whose content is not one, with only '"' and '\\' escaped; then nothing or
// "@" and a domain (labels, or an address literal) without a final dot.
func checkCanonical(addr []byte) error {
	if !utf8.Valid(addr) {
		return fmt.Errorf("invalid UTF-8")
	}
	for _, c := range addr {
		if c < ' ' || c == 127 {
			return fmt.Errorf("control octet")
		}
	}
	const special = "!#$%&'*+-/=?^_`{|}~"
	dotString := func(s string) bool {
		if s == "" || s[0] == '.' || s[len(s)-1] == '.' || strings.Contains(s, "..") {
			return false
		}
		for i := 0; i < len(s); i++ {
			c := s[i]
			if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c >= 0x80 ||
				c == '.' || strings.IndexByte(special, c) >= 0) {
				return false
			}
		}
		return true
	}
	s := string(addr)
	var domain string
	if s[0] == '"' {
		var content []byte
		i := 1
		for ; i < len(s) && s[i] != '"'; i++ {
			if s[i] == '\\' {
				if i+1 == len(s) || (s[i+1] != '"' && s[i+1] != '\\') {
					return fmt.Errorf("quoted-pair %q is not minimal", s[i:min(i+2, len(s))])
				}
				i++
			}
			content = append(content, s[i])
		}
		if i == len(s) {
			return fmt.Errorf("unterminated quoted string")
		}
		if dotString(string(content)) {
			return fmt.Errorf("quoted Dot-string %q", content)
		}
		domain = s[i+1:]
	} else {
		local, _, _ := strings.Cut(s, "@")
		if !dotString(local) {
			return fmt.Errorf("local part %q is neither a Dot-string nor quoted", local)
		}
		domain = s[len(local):]
	}
	if domain == "" {
		return nil
	}
	domain, ok := strings.CutPrefix(domain, "@")
	if !ok || domain == "" {
		return fmt.Errorf("%q after the local part", domain)
	}
	if domain[0] == '[' {
		if domain[len(domain)-1] != ']' || strings.ContainsAny(domain[1:len(domain)-1], "[]\\ ") {
			return fmt.Errorf("bad address literal %q", domain)
		}
		return nil
	}
	if strings.HasSuffix(domain, ".") || strings.ContainsAny(domain, "@ <>\"\\[]") {
		return fmt.Errorf("bad domain %q", domain)
	}
	return nil
}
