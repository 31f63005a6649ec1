package proto

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// fakeHandler is the server side of a session in tests: an address book
// of example.test (bob, alice, postmaster) and an in-memory body.
type fakeHandler struct {
	body      []byte
	begun     bool
	begins    int // accepted BeginBody calls
	aborted   int
	budget    int64 // refuse BeginBody when sizeHint > budget (0 = no limit)
	writeCap  int   // refuse WriteBody past this many bytes (0 = no limit)
	freeBytes int64 // CheckMail refuses SIZE= above it (0 = no limit)
	// failDeliveries answers that many waiting messages, first ones
	// first, Failed(ReplyLocalError) instead of Delivered.
	failDeliveries int
	noTLS          bool // StartTLS refuses: no TLS slot

	// pendAll makes every Check method answer Pending and keep its verdict
	// in deferred, which the test driver passes to Resume: the same
	// conversation with every check asynchronous.
	pendAll  bool
	deferred *Reply
	pended   map[stage]int // Pending answers per stage
}

// verdict returns r, or Pending with r kept for Resume under pendAll.
func (h *fakeHandler) verdict(st stage, r *Reply) *Reply {
	if !h.pendAll {
		return r
	}
	if h.pended == nil {
		h.pended = map[stage]int{}
	}
	h.pended[st]++
	h.deferred = r
	return Pending
}

func (h *fakeHandler) CheckHelo(name []byte, esmtp bool) *Reply {
	var r *Reply
	if string(name) == "refused.example" {
		r = ReplyHeloRefusedTest
	}
	return h.verdict(stageHelo, r)
}

func (h *fakeHandler) CheckMail(from []byte, p MailParams) *Reply {
	var r *Reply
	switch {
	case h.freeBytes > 0 && p.Size > h.freeBytes:
		r = ReplyNoSpace
	case string(from) == "spammer@example.org":
		r = ReplySenderRefusedTest
	}
	return h.verdict(stageMail, r)
}

// CheckData refuses a message whose body starts with "X-Refuse:".
func (h *fakeHandler) CheckData() *Reply {
	var r *Reply
	if bytes.HasPrefix(h.body, []byte("X-Refuse:")) {
		r = ReplyContentRefusedTest
	}
	return h.verdict(stageData, r)
}

// Replies the test checks give.
var (
	ReplyHeloRefusedTest    = NewReply(550, "", "HELO refused by a test check")
	ReplySenderRefusedTest  = NewReply(550, "5.7.1", "Sender refused by a test check")
	ReplyContentRefusedTest = NewReply(550, "5.7.1", "Content refused by a test check")
)

func (h *fakeHandler) StartTLS() *Reply {
	if h.noTLS {
		return ReplyTLSUnavailable
	}
	return nil
}

func (h *fakeHandler) CheckRcpt(addr []byte) *Reply {
	return h.verdict(stageRcpt, h.lookup(addr))
}

func (h *fakeHandler) lookup(addr []byte) *Reply {
	a := strings.ToLower(string(addr))
	if a == "postmaster" {
		return nil
	}
	local, domain, _ := strings.Cut(a, "@")
	if domain != "example.test" {
		return ReplyRelayDenied
	}
	if i := strings.IndexByte(local, '+'); i > 0 {
		local = local[:i]
	}
	switch local {
	case "bob", "alice", "postmaster", "δοκιμή":
		return nil
	}
	return ReplyUnknownUser
}

func (h *fakeHandler) BeginBody(sizeHint int64) *Reply {
	if h.begun {
		panic("BeginBody twice")
	}
	if h.budget > 0 && sizeHint > h.budget {
		return ReplyNoStorageMemory
	}
	h.begun = true
	h.begins++
	h.body = h.body[:0]
	return nil
}

func (h *fakeHandler) WriteBody(p []byte) *Reply {
	if !h.begun {
		panic("WriteBody without BeginBody")
	}
	if h.writeCap > 0 && len(h.body)+len(p) > h.writeCap {
		return ReplyNoStorageMemory
	}
	h.body = append(h.body, p...)
	return nil
}

func (h *fakeHandler) AbortBody() {
	if !h.begun {
		panic("AbortBody without BeginBody")
	}
	h.begun = false
	h.aborted++
}

func testConfig() Config {
	return Config{
		Hostname:            "mx.example.test",
		MaxLineBytes:        512,
		MaxAddressAllowance: 512,
		MaxRcpts:            5,
		MaxMessageBytes:     1000,
		MaxBadCommands:      10,
		BareNewline:         BareNewlineReject,
	}
}

// run feeds input to a new session in the given chunks, re-offering the
// unconsumed rest with the next chunk as gnet does, and answers every
// waiting message Delivered("ID") (or Failed, see failDeliveries). Like a
// server it writes and clears the output after every Feed, and feeds again
// at once when Feed stopped on a full output. It returns all output and the
// stored messages. It also checks what must hold after every Feed: one call
// produces at most OutputLimit and one command's replies; Feed stops short
// only for a reason (waiting, closed, full output, or half a command line
// that could still be legal), and a body is never left begun by an idle or
// closed session.
func run(t testing.TB, cfg Config, h *fakeHandler, chunks [][]byte) (out string, msgs []string, closed bool) {
	t.Helper()
	s := NewDialect(cfg).NewSession(h)
	var buf []byte
	var o bytes.Buffer
	o.Write(s.d.Greeting())
	step := func() {
		for {
			n := s.Feed(buf)
			if n < 0 || n > len(buf) {
				t.Fatalf("Feed returned %d of %d", n, len(buf))
			}
			buf = buf[n:]
			if len(s.Output()) > OutputLimit+maxStepOutput {
				t.Fatalf("one Feed produced %d octets of replies", len(s.Output()))
			}
			full := s.OutputFull()
			o.Write(s.Output())
			s.ClearOutput()
			if s.Pending() {
				// While pending the session takes no input and says
				// nothing; the verdict then resumes it where it stopped.
				if n := s.Feed(buf); n != 0 || len(s.Output()) != 0 {
					t.Fatalf("pending session consumed %d bytes, replied %q", n, s.Output())
				}
				r := h.deferred
				h.deferred = nil
				s.Resume(r)
				continue
			}
			if s.Waiting() {
				if !h.begun {
					t.Fatalf("waiting without a body")
				}
				env := s.Envelope()
				if len(env.Rcpts) == 0 {
					t.Fatalf("waiting without recipients")
				}
				if env.Size != int64(len(h.body)) {
					t.Fatalf("envelope size %d, body %d", env.Size, len(h.body))
				}
				h.begun = false // the server takes the body
				if h.failDeliveries > 0 {
					h.failDeliveries--
					s.Failed(ReplyLocalError)
				} else {
					msgs = append(msgs, string(h.body))
					s.Delivered("ID")
				}
				continue
			}
			if full && !s.Closed() {
				continue
			}
			break
		}
		switch {
		case s.Closed():
		case s.state == stateData || s.state == stateBdat:
			if len(buf) > 0 {
				t.Fatalf("Feed left %d bytes while reading message data", len(buf))
			}
		default:
			if bytes.IndexByte(buf, '\n') >= 0 || len(buf) >= s.d.maxMailLine {
				t.Fatalf("Feed left %d bytes unconsumed with no reason: %q", len(buf), buf)
			}
		}
		o.Write(s.Output()) // Delivered's reply
		s.ClearOutput()
	}
	for _, c := range chunks {
		if s.Closed() {
			break
		}
		buf = append(buf, c...)
		step()
	}
	if h.begun && (s.Closed() || !s.InTransfer()) {
		t.Fatalf("body begun but session idle or closed (state %v)", s.state)
	}
	return o.String(), msgs, s.Closed()
}

// transcript is one session of a testdata file. A file holds one or more
// sessions; a line starting with "=" begins the next one (options reset).
// Lines:
//
//	C: text       a client line (CRLF appended)
//	R: "..."      raw client bytes in Go string syntax (no CRLF appended)
//	S: text       an expected server line (CRLF appended)
//	E:            the expected EHLO reply of mx.example.test (multi-line;
//	              ehlo.txt spells it out)
//	M: text       a line of the expected stored message (LF appended);
//	              "M: ---" starts the next message
//	B: "..."      raw bytes of the expected message in Go string syntax
//	              (no LF appended; `B: ""` expects an empty message)
//	X:            the session ends closed
//	A: n          AbortBody is called n times in all
//	O: key=value  an option (see below)
//	# ...         a comment
//
// In C, R, S, M and B text, {{s*N}} stands for s repeated N times.
type transcript struct {
	name    string
	cfg     Config
	h       fakeHandler
	input   []byte
	want    string
	msgs    []string
	closed  bool
	aborted int // -1: not checked
}

var repeatMacro = regexp.MustCompile(`\{\{([^*}]*)\*([0-9]+)\}\}`)

// expand replaces each {{s*N}} with s repeated N times.
func expand(s string) string {
	return repeatMacro.ReplaceAllStringFunc(s, func(m string) string {
		sub := repeatMacro.FindStringSubmatch(m)
		n, _ := strconv.Atoi(sub[2])
		return strings.Repeat(sub[1], n)
	})
}

func loadTranscripts(t testing.TB) []transcript {
	files, err := filepath.Glob("testdata/transcripts/*.txt")
	if err != nil || len(files) == 0 {
		t.Fatalf("no transcripts: %v", err)
	}
	var all []transcript
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, parseTranscripts(t, filepath.Base(f), string(data))...)
	}
	return all
}

func parseTranscripts(t testing.TB, name, data string) []transcript {
	var all []transcript
	var tr transcript
	var msg *strings.Builder
	var want strings.Builder
	session := 0
	begin := func() {
		session++
		tr = transcript{name: name, cfg: testConfig(), aborted: -1}
		if session > 1 {
			tr.name += "#" + strconv.Itoa(session)
		}
		msg = nil
		want.Reset()
		want.WriteString("220 mx.example.test ESMTP nanomx\r\n")
	}
	finish := func() {
		if msg != nil {
			tr.msgs = append(tr.msgs, msg.String())
		}
		tr.want = want.String()
		if len(tr.input) == 0 {
			t.Fatalf("%s: session without input", tr.name)
		}
		all = append(all, tr)
	}
	unquote := func(s string) string {
		u, err := strconv.Unquote(s)
		if err != nil {
			t.Fatalf("%s: bad quoted string %q: %v", tr.name, s, err)
		}
		return u
	}
	begin()
	for _, line := range strings.Split(data, "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if strings.HasPrefix(line, "=") {
			finish()
			begin()
			continue
		}
		tag, rest, _ := strings.Cut(line, ":")
		rest = strings.TrimPrefix(rest, " ")
		switch tag {
		case "C":
			tr.input = append(tr.input, expand(rest)+"\r\n"...)
		case "R":
			tr.input = append(tr.input, expand(unquote(rest))...)
		case "S":
			want.WriteString(expand(rest) + "\r\n")
		case "E":
			want.WriteString("250-mx.example.test\r\n250-PIPELINING\r\n" +
				"250-SIZE " + strconv.FormatInt(tr.cfg.MaxMessageBytes, 10) + "\r\n" +
				"250-8BITMIME\r\n250-ENHANCEDSTATUSCODES\r\n250-SMTPUTF8\r\n250 CHUNKING\r\n")
		case "M", "B":
			if rest == "---" || msg == nil {
				if msg != nil {
					tr.msgs = append(tr.msgs, msg.String())
				}
				msg = &strings.Builder{}
				if rest == "---" {
					continue
				}
			}
			if tag == "M" {
				msg.WriteString(expand(rest) + "\n")
			} else {
				msg.WriteString(expand(unquote(rest)))
			}
		case "X":
			tr.closed = true
		case "A":
			n, err := strconv.Atoi(rest)
			if err != nil {
				t.Fatalf("%s: bad A line %q", tr.name, line)
			}
			tr.aborted = n
		case "O":
			k, v, _ := strings.Cut(rest, "=")
			n, _ := strconv.Atoi(v)
			switch k {
			case "bare_newline":
				switch v {
				case "normalize":
					tr.cfg.BareNewline = BareNewlineNormalize
				case "reject":
					tr.cfg.BareNewline = BareNewlineReject
				default:
					t.Fatalf("%s: bad bare_newline %q", tr.name, v)
				}
			case "max_rcpts":
				tr.cfg.MaxRcpts = n
			case "max_message_bytes":
				tr.cfg.MaxMessageBytes = int64(n)
			case "max_bad_commands":
				tr.cfg.MaxBadCommands = n
			case "max_junk_commands":
				tr.cfg.MaxJunkCommands = n
			case "budget":
				tr.h.budget = int64(n)
			case "write_cap":
				tr.h.writeCap = n
			case "free_bytes":
				tr.h.freeBytes = int64(n)
			case "fail_deliveries":
				tr.h.failDeliveries = n
			default:
				t.Fatalf("%s: unknown option %q", tr.name, k)
			}
		default:
			t.Fatalf("%s: bad line %q", tr.name, line)
		}
	}
	finish()
	return all
}

// maxStepOutput bounds the replies of one command: the longest reply
// (EHLO's) and a closing 421 after it.
const maxStepOutput = 512

// checkReplies returns an error for the first malformed reply in out.
// Each line is three digits (2xx to 5xx), SP or "-", text and CRLF, with
// no other CR or LF; the lines of a multi-line reply share a code. Every
// 2xx, 4xx and 5xx reply but the greeting and the HELO/EHLO replies
// (RFC 2034 3: helloReplies) starts its text with an RFC 3463 enhanced
// status code of the reply's class.
func checkReplies(d *Dialect, out []byte) error {
	cont := "" // the code of an unfinished multi-line reply
next:
	for len(out) > 0 {
		if cont == "" {
			for _, fixed := range append([][]byte{d.greeting, d.ehlo, d.ehloPlain, d.helo}, helloReplies()...) {
				if bytes.HasPrefix(out, fixed) {
					out = out[len(fixed):]
					continue next
				}
			}
		}
		i := bytes.Index(out, []byte("\r\n"))
		if i < 0 {
			return fmt.Errorf("reply without CRLF: %q", out)
		}
		line := string(out[:i])
		out = out[i+2:]
		if strings.ContainsAny(line, "\r\n") {
			return fmt.Errorf("bare CR or LF in reply %q", line)
		}
		if len(line) < 5 || line[0] < '2' || line[0] > '5' ||
			line[1] < '0' || line[1] > '9' || line[2] < '0' || line[2] > '9' ||
			(line[3] != ' ' && line[3] != '-') {
			return fmt.Errorf("malformed reply %q", line)
		}
		code := line[:3]
		if cont != "" && code != cont {
			return fmt.Errorf("multi-line reply changes code: %q after %s", line, cont)
		}
		cont = ""
		if line[3] == '-' {
			cont = code
		}
		if code[0] == '3' {
			continue
		}
		if !enhancedCode.MatchString(line[4:]) || line[4] != code[0] {
			return fmt.Errorf("reply %q lacks an enhanced status code of its class", line)
		}
	}
	if cont != "" {
		return fmt.Errorf("unfinished multi-line reply %s", cont)
	}
	return nil
}

// helloReplies are the named replies to HELO and EHLO, which carry no
// enhanced status code.
func helloReplies() [][]byte {
	return [][]byte{ReplyHeloSyntax.line, ReplyEhloSyntax.line, ReplyTooManyJunkHelo.line, ReplyHeloRefusedTest.line}
}

var enhancedCode = regexp.MustCompile(`^[245]\.[0-9]{1,3}\.[0-9]{1,3} `)

func check(t *testing.T, tr transcript, how string, h *fakeHandler, out string, msgs []string, closed bool) {
	t.Helper()
	if out != tr.want {
		t.Fatalf("%s (%s): replies differ\n got: %q\nwant: %q", tr.name, how, out, tr.want)
	}

	if tr.aborted >= 0 && h.aborted != tr.aborted {
		t.Fatalf("%s (%s): AbortBody called %d times, want %d", tr.name, how, h.aborted, tr.aborted)
	}
	if len(msgs) != len(tr.msgs) {
		t.Fatalf("%s (%s): %d messages stored, want %d: %q", tr.name, how, len(msgs), len(tr.msgs), msgs)
	}
	for i := range msgs {
		if msgs[i] != tr.msgs[i] {
			t.Fatalf("%s (%s): message %d\n got: %q\nwant: %q", tr.name, how, i, msgs[i], tr.msgs[i])
		}
	}
	if closed != tr.closed {
		t.Fatalf("%s (%s): closed=%v, want %v", tr.name, how, closed, tr.closed)
	}
}

// TestTranscripts runs every transcript whole, byte by byte, and cut in two
// at every offset: an event loop delivers arbitrary chunks.
func TestTranscripts(t *testing.T) {
	for _, tr := range loadTranscripts(t) {
		t.Run(tr.name, func(t *testing.T) {
			// Every run must produce exactly tr.want, so checking the
			// expected replies once covers them all.
			if err := checkReplies(NewDialect(tr.cfg), []byte(tr.want)); err != nil {
				t.Fatalf("%s: expected replies: %v", tr.name, err)
			}
			h := tr.h
			out, msgs, closed := run(t, tr.cfg, &h, [][]byte{tr.input})
			check(t, tr, "whole", &h, out, msgs, closed)

			h = tr.h
			var bytewise [][]byte
			for i := range tr.input {
				bytewise = append(bytewise, tr.input[i:i+1])
			}
			out, msgs, closed = run(t, tr.cfg, &h, bytewise)
			check(t, tr, "bytewise", &h, out, msgs, closed)

			for cut := 1; cut < len(tr.input); cut++ {
				h = tr.h
				out, msgs, closed = run(t, tr.cfg, &h, [][]byte{tr.input[:cut], tr.input[cut:]})
				check(t, tr, "cut at "+strconv.Itoa(cut), &h, out, msgs, closed)
			}
		})
	}
}

// TestTranscriptsPending runs every transcript again with every check
// (HELO, MAIL, RCPT, end of data) answering Pending and its verdict given
// later by Resume, whole, byte by byte and cut at every offset: the
// conversation must be the same, pipelined input waiting while a check is
// pending, replies in order.
func TestTranscriptsPending(t *testing.T) {
	seen := map[stage]int{}
	for _, tr := range loadTranscripts(t) {
		t.Run(tr.name, func(t *testing.T) {
			h := tr.h
			h.pendAll = true
			out, msgs, closed := run(t, tr.cfg, &h, [][]byte{tr.input})
			check(t, tr, "whole, pending", &h, out, msgs, closed)
			for st, n := range h.pended {
				seen[st] += n
			}
			h = tr.h
			h.pendAll = true
			var bytewise [][]byte
			for i := range tr.input {
				bytewise = append(bytewise, tr.input[i:i+1])
			}
			out, msgs, closed = run(t, tr.cfg, &h, bytewise)
			check(t, tr, "bytewise, pending", &h, out, msgs, closed)
			for cut := 1; cut < len(tr.input); cut++ {
				h = tr.h
				h.pendAll = true
				out, msgs, closed = run(t, tr.cfg, &h, [][]byte{tr.input[:cut], tr.input[cut:]})
				check(t, tr, "pending, cut at "+strconv.Itoa(cut), &h, out, msgs, closed)
			}
		})
	}
	for _, st := range []stage{stageHelo, stageMail, stageRcpt, stageData} {
		if seen[st] == 0 {
			t.Errorf("no transcript has a pending check at stage %d", st)
		}
	}
}
