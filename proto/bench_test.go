package proto

import (
	"strconv"
	"strings"
	"testing"
)

// nopHandler accepts everything and allocates nothing once warm: it keeps
// the body in a reused buffer. Benchmarks and allocation tests use it, as
// fakeHandler's address book allocates.
type nopHandler struct {
	body  []byte
	begun bool
}

func (h *nopHandler) CheckHelo([]byte, bool) *Reply       { return nil }
func (h *nopHandler) CheckMail([]byte, MailParams) *Reply { return nil }
func (h *nopHandler) CheckRcpt([]byte) *Reply             { return nil }
func (h *nopHandler) CheckData() *Reply                   { return nil }
func (h *nopHandler) StartTLS() *Reply                    { return nil }

func (h *nopHandler) BeginBody(int64) *Reply {
	if h.begun {
		panic("BeginBody twice")
	}
	h.begun = true
	h.body = h.body[:0]
	return nil
}

func (h *nopHandler) WriteBody(p []byte) *Reply {
	if !h.begun {
		panic("WriteBody without BeginBody")
	}
	h.body = append(h.body, p...)
	return nil
}

func (h *nopHandler) AbortBody() {
	if !h.begun {
		panic("AbortBody without BeginBody")
	}
	h.begun = false
}

func benchConfig() Config {
	cfg := testConfig()
	cfg.MaxRcpts = 100
	cfg.MaxMessageBytes = 10 << 20
	cfg.MaxJunkCommands = 1 << 30 // BenchmarkCommand's RSETs are junk
	return cfg
}

// feedOrFail feeds in whole, delivering a waiting message; every byte must
// be consumed.
func feedOrFail(tb testing.TB, s *Session, h *nopHandler, in []byte) {
	for len(in) > 0 {
		n := s.Feed(in)
		in = in[n:]
		if s.Waiting() {
			h.begun = false
			s.Delivered("ID")
			continue
		}
		if n == 0 {
			tb.Fatalf("Feed stuck (state %v) on %q; output %q", s.state, in, s.Output())
		}
	}
	s.ClearOutput()
}

// BenchmarkCommand feeds a warmed-up session a pipelined envelope (MAIL
// with parameters, two RCPTs, RSET), the command path of every message.
// It must not allocate.
func BenchmarkCommand(b *testing.B) {
	h := &nopHandler{}
	s := NewDialect(benchConfig()).NewSession(h)
	feedOrFail(b, s, h, []byte("EHLO client.example.org\r\n"))
	in := []byte("MAIL FROM:<sender@example.org> SIZE=10000 BODY=8BITMIME\r\n" +
		"RCPT TO:<bob@example.test>\r\n" +
		"RCPT TO:<@relay.example:\"alice\"@example.test>\r\n" +
		"RSET\r\n")
	for range 10 {
		feedOrFail(b, s, h, in)
	}
	b.SetBytes(int64(len(in)))
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if n := s.Feed(in); n != len(in) {
			b.Fatalf("consumed %d of %d", n, len(in))
		}
		s.ClearOutput()
	}
}

// BenchmarkParsePath parses typical and awkward paths into a reused buffer.
func BenchmarkParsePath(b *testing.B) {
	paths := [][]byte{
		[]byte("<bob@example.test>"),
		[]byte("<bounces+SRS=K3x9=QW=example.org=someone@lists.example.net> SIZE=1000"),
		[]byte("<@a.example,@b.example:\"john.doe\"@example.test>"),
		[]byte("<δοκιμή@παράδειγμα.δοκιμή> SMTPUTF8"),
	}
	var dst []byte
	b.ReportAllocs()
	for b.Loop() {
		for _, p := range paths {
			var err pathError
			dst, _, _, err = parsePath(p, dst[:0])
			if err != pathOK {
				b.Fatalf("%q: %d", p, err)
			}
		}
	}
}

// realisticMessage returns a message of about size octets as sent on the
// wire (CRLF, dot-stuffed): headers, then text lines of varying length,
// some starting with a dot.
func realisticMessage(size int) []byte {
	var sb strings.Builder
	sb.WriteString("Received: from client.example.org (client.example.org [192.0.2.1])\r\n" +
		"\tby mx.example.test with ESMTP id 1a2b3c4d; Tue, 25 Nov 2025 11:07:00 +0000\r\n" +
		"From: Alice <alice@example.org>\r\nTo: Bob <bob@example.test>\r\n" +
		"Subject: Quarterly figures\r\nMessage-ID: <20251125110700.1234@example.org>\r\n" +
		"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n")
	words := strings.Fields("the quick brown fox jumps over the lazy dog while " +
		"figures for the quarter show growth in all regions and a few losses")
	for i := 0; sb.Len() < size; i++ {
		line := ""
		for j := 0; j < 4+i%12; j++ {
			line += words[(i*7+j)%len(words)] + " "
		}
		if i%9 == 0 {
			line = ".." + line // a stuffed dot
		}
		sb.WriteString(line + strconv.Itoa(i) + "\r\n")
	}
	sb.WriteString(".\r\n")
	return []byte(sb.String())
}

// BenchmarkDataDecode decodes a 10 KB message through DATA: dot-unstuffing,
// CRLF to LF, the end-of-data search, and its envelope.
func BenchmarkDataDecode(b *testing.B) {
	h := &nopHandler{}
	s := NewDialect(benchConfig()).NewSession(h)
	feedOrFail(b, s, h, []byte("EHLO client.example.org\r\n"))
	msg := realisticMessage(10 << 10)
	in := append([]byte("MAIL FROM:<alice@example.org>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\n"), msg...)
	feedOrFail(b, s, h, in)
	if len(h.body) < 9<<10 {
		b.Fatalf("body %d octets", len(h.body))
	}
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		feedOrFail(b, s, h, in)
	}
}

// BenchmarkBdatDecode sends the same 10 KB in three BDAT chunks.
func BenchmarkBdatDecode(b *testing.B) {
	h := &nopHandler{}
	s := NewDialect(benchConfig()).NewSession(h)
	feedOrFail(b, s, h, []byte("EHLO client.example.org\r\n"))
	msg := realisticMessage(10 << 10)
	msg = msg[:len(msg)-len(".\r\n")]
	in := []byte("MAIL FROM:<alice@example.org>\r\nRCPT TO:<bob@example.test>\r\n")
	const chunk = 4096
	for off := 0; off < len(msg); off += chunk {
		end := min(off+chunk, len(msg))
		last := ""
		if end == len(msg) {
			last = " LAST"
		}
		in = append(in, "BDAT "+strconv.Itoa(end-off)+last+"\r\n"...)
		in = append(in, msg[off:end]...)
	}
	feedOrFail(b, s, h, in)
	if len(h.body) < 9<<10 {
		b.Fatalf("body %d octets", len(h.body))
	}
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		feedOrFail(b, s, h, in)
	}
}
