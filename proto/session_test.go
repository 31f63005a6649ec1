package proto

import (
	"bufio"
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// fakeHandler is the server side of a session in tests: an address book
// of example.test (bob, alice, postmaster) and an in-memory body.
type fakeHandler struct {
	body      []byte
	begun     bool
	aborted   int
	budget    int64 // refuse BeginBody when sizeHint > budget (0 = no limit)
	writeCap  int   // refuse WriteBody past this many bytes (0 = no limit)
	freeBytes int64 // CheckMail refuses SIZE= above it (0 = no limit)
}

func (h *fakeHandler) CheckMail(size int64) *Reply {
	if h.freeBytes > 0 && size > h.freeBytes {
		return ReplyNoSpace
	}
	return nil
}

func (h *fakeHandler) CheckRcpt(addr []byte) *Reply {
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
// waiting message Delivered("ID"). It returns all output and the stored
// messages.
func run(t testing.TB, cfg Config, h *fakeHandler, chunks [][]byte) (out string, msgs []string, closed bool) {
	t.Helper()
	s := NewDialect(cfg).NewSession(h)
	var buf []byte
	var o bytes.Buffer
	o.Write(s.d.Greeting())
	step := func() {
		for {
			n := s.Feed(buf)
			buf = buf[n:]
			if s.Waiting() {
				if !h.begun {
					t.Fatalf("waiting without a body")
				}
				env := s.Envelope()
				if len(env.Rcpts) == 0 {
					t.Fatalf("waiting without recipients")
				}
				msgs = append(msgs, string(h.body))
				h.begun = false
				s.Delivered("ID")
				continue
			}
			break
		}
		o.Write(s.Output())
		s.ClearOutput()
	}
	for _, c := range chunks {
		if s.Closed() {
			break
		}
		buf = append(buf, c...)
		step()
	}
	if h.begun && !s.Closed() && !s.InTransfer() {
		t.Fatalf("body begun but session idle")
	}
	return o.String(), msgs, s.Closed()
}

// transcript is a parsed testdata file: "C: " lines are client lines (CRLF
// appended), "R: " lines are raw client bytes in Go string syntax (no CRLF
// appended), "S: " lines are expected server lines, "M: " lines are the
// expected stored message (LF joined; "M: ---" separates messages), "X:"
// expects the connection closed, and "O: key=value" sets options.
type transcript struct {
	name   string
	cfg    Config
	h      fakeHandler
	input  []byte
	want   string
	msgs   []string
	closed bool
}

func loadTranscripts(t *testing.T) []transcript {
	files, err := filepath.Glob("testdata/transcripts/*.txt")
	if err != nil || len(files) == 0 {
		t.Fatalf("no transcripts: %v", err)
	}
	var all []transcript
	for _, f := range files {
		fh, err := os.Open(f)
		if err != nil {
			t.Fatal(err)
		}
		tr := transcript{name: filepath.Base(f), cfg: testConfig()}
		var msg *strings.Builder
		var want strings.Builder
		want.WriteString("220 mx.example.test ESMTP nanomx\r\n")
		sc := bufio.NewScanner(fh)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			line := sc.Text()
			if line == "" || strings.HasPrefix(line, "#") {
				continue
			}
			tag, rest, _ := strings.Cut(line, ":")
			rest = strings.TrimPrefix(rest, " ")
			switch tag {
			case "C":
				tr.input = append(tr.input, rest+"\r\n"...)
			case "R":
				u, err := strconv.Unquote(rest)
				if err != nil {
					t.Fatalf("%s: bad R line %q: %v", f, rest, err)
				}
				tr.input = append(tr.input, u...)
			case "S":
				want.WriteString(rest + "\r\n")
			case "M":
				if rest == "---" || msg == nil {
					if msg != nil {
						tr.msgs = append(tr.msgs, msg.String())
					}
					msg = &strings.Builder{}
					if rest == "---" {
						continue
					}
				}
				msg.WriteString(rest + "\n")
			case "X":
				tr.closed = true
			case "O":
				k, v, _ := strings.Cut(rest, "=")
				n, _ := strconv.Atoi(v)
				switch k {
				case "bare_newline":
					if v == "normalize" {
						tr.cfg.BareNewline = BareNewlineNormalize
					}
				case "max_rcpts":
					tr.cfg.MaxRcpts = n
				case "max_message_bytes":
					tr.cfg.MaxMessageBytes = int64(n)
				case "max_bad_commands":
					tr.cfg.MaxBadCommands = n
				case "budget":
					tr.h.budget = int64(n)
				case "write_cap":
					tr.h.writeCap = n
				case "free_bytes":
					tr.h.freeBytes = int64(n)
				default:
					t.Fatalf("%s: unknown option %q", f, k)
				}
			default:
				t.Fatalf("%s: bad line %q", f, line)
			}
		}
		fh.Close()
		if msg != nil {
			tr.msgs = append(tr.msgs, msg.String())
		}
		tr.want = want.String()
		all = append(all, tr)
	}
	return all
}

func check(t *testing.T, tr transcript, how string, out string, msgs []string, closed bool) {
	t.Helper()
	if out != tr.want {
		t.Fatalf("%s (%s): replies differ\n got: %q\nwant: %q", tr.name, how, out, tr.want)
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
			h := tr.h
			out, msgs, closed := run(t, tr.cfg, &h, [][]byte{tr.input})
			check(t, tr, "whole", out, msgs, closed)

			h = tr.h
			var bytewise [][]byte
			for i := range tr.input {
				bytewise = append(bytewise, tr.input[i:i+1])
			}
			out, msgs, closed = run(t, tr.cfg, &h, bytewise)
			check(t, tr, "bytewise", out, msgs, closed)

			for cut := 1; cut < len(tr.input); cut++ {
				h = tr.h
				out, msgs, closed = run(t, tr.cfg, &h, [][]byte{tr.input[:cut], tr.input[cut:]})
				check(t, tr, "cut at "+strconv.Itoa(cut), out, msgs, closed)
			}
		})
	}
}
