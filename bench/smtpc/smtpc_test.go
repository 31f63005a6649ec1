package smtpc

import (
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nanomx/nanomx/bench/fakesmtp"
	"github.com/nanomx/nanomx/server/servertest"
)

// pair returns a client on a loopback connection and the server's end.
func pair(t *testing.T) (*Conn, *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := Dial(ln.Addr().String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(); s.Close() })
	return c, s.(*net.TCPConn)
}

// scripted returns a client reading what a server sent before closing.
func scripted(t *testing.T, server string) *Conn {
	t.Helper()
	c, s := pair(t)
	go func() {
		_, _ = s.Write([]byte(server))
		_ = s.CloseWrite()
	}()
	return c
}

// Reply reads whole replies, checks their form, and stays in step with
// the stream across long lines and bad ones.
func TestReply(t *testing.T) {
	long := strings.Repeat("x", 9000)
	edge := strings.Repeat("y", 4096-5) // "250-" + edge + "\r" fills the reader's buffer
	for _, tc := range []struct {
		name, in string
		code     int
		text     string
		err      error
	}{
		// Well-formed.
		{"one line", "250 2.0.0 OK\r\n", 250, "250 2.0.0 OK", nil},
		{"code only", "220\r\n", 220, "220", nil},
		{"multi-line", "250-mx.example\r\n250-PIPELINING\r\n250 STARTTLS\r\n", 250, "250-mx.example\n250-PIPELINING\n250 STARTTLS", nil},
		{"line past the buffer", "250-" + long + "\r\n250 end\r\n", 250, "250-" + long + "\n250 end", nil},
		{"CR at the buffer's end", "250-" + edge + "\r\n250 z\r\n", 250, "250-" + edge + "\n250 z", nil},
		// Malformed.
		{"bare LF", "250 OK\n", 0, "", ErrMalformed},
		{"short", "25\r\n", 0, "", ErrMalformed},
		{"letters", "2x0 OK\r\n", 0, "", ErrMalformed},
		{"1xx", "150 OK\r\n", 0, "", ErrMalformed},
		{"bad separator", "250_OK\r\n", 0, "", ErrMalformed},
		{"codes differ", "250-a\r\n251 b\r\n", 0, "", ErrMalformed},
		// Cut.
		{"nothing", "", 0, "", io.EOF},
		{"half a line", "250 O", 0, "", io.ErrUnexpectedEOF},
		{"half a reply", "250-a\r\n", 0, "", io.ErrUnexpectedEOF},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := scripted(t, tc.in)
			code, err := c.Reply()
			if !errors.Is(err, tc.err) || code != tc.code {
				t.Fatalf("Reply() = %d, %v; want %d, %v", code, err, tc.code, tc.err)
			}
			if err == nil && c.Text() != tc.text {
				t.Fatalf("Text() = %q, want %q", c.Text(), tc.text)
			}
		})
	}
}

// A reply past 64 KiB is kept in part, read whole, and the next one is
// read as such.
func TestReplyBounded(t *testing.T) {
	var b strings.Builder
	for b.Len() < 200<<10 {
		b.WriteString("250-" + strings.Repeat("z", 996) + "\r\n")
	}
	c := scripted(t, b.String()+"250 last\r\n221 bye\r\n")
	if code, err := c.Reply(); code != 250 || err != nil {
		t.Fatalf("Reply() = %d, %v", code, err)
	}
	if n := len(c.Text()); n > maxText {
		t.Fatalf("kept %d bytes of the reply, over %d", n, maxText)
	}
	if code, err := c.Reply(); code != 221 || err != nil || c.Text() != "221 bye" {
		t.Fatalf("next Reply() = %d, %v, %q", code, err, c.Text())
	}
}

func TestStatusOf(t *testing.T) {
	for in, want := range map[string]string{
		"451 4.3.2 queue full": "451 4.3.2",
		"250-2.0.0 OK":         "250 2.0.0",
		"220 mx.example ESMTP": "220",
		"221":                  "221",
		"550 5.1.1234567.8 x":  "550",
		"ab":                   "",
		"421 4.4.2\r\n":        "421 4.4.2",
	} {
		if got := StatusOf([]byte(in)); got != want {
			t.Errorf("StatusOf(%q) = %q, want %q", in, got, want)
		}
	}
}

// The envelope helpers against a server: extensions, a transaction, a
// refusal as an *Error with its stage and status, QUIT.
func TestEnvelope(t *testing.T) {
	s := &fakesmtp.Server{Pipelining: true, Decide: func(seq int64) fakesmtp.Action {
		if seq == 2 {
			return fakesmtp.Action{Reply: 451}
		}
		return fakesmtp.Action{}
	}}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	c, err := Dial(s.Addr(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Hello("client.test"); err != nil {
		t.Fatal(err)
	}
	if !c.Ext("pipelining") || c.Ext("STARTTLS") || c.Ext("250") {
		t.Fatalf("Ext after %q", c.Text())
	}
	msg := func(seq string) []byte {
		return []byte(fakesmtp.MarkerHeader + ": r-" + seq + "\r\n\r\n.dot\r\n.\r\n")
	}
	if err := c.Send("a@example.org", []string{"b@example.test", "c@example.test"}, msg("1")); err != nil {
		t.Fatal(err)
	}
	err = c.Send("a@example.org", []string{"b@example.test"}, msg("2")[:10], msg("2")[10:])
	var se *Error
	if !errors.As(err, &se) || se.Stage != StageEnd || se.Code != 451 || !strings.HasPrefix(se.Status(), "451") || se.Timeout() {
		t.Fatalf("refused message: %#v", err)
	}
	if err := c.Quit(); err != nil {
		t.Fatal(err)
	}
	if err := c.ExpectClose(); err != nil {
		t.Fatalf("after QUIT: %v", err)
	}
	if got := s.Rcpts(); len(got) != 3 || got[1] != "c@example.test" {
		t.Errorf("server got recipients %q", got)
	}
}

// StartTLS upgrades and says so; pipelined plaintext after the 220 is
// refused before the handshake.
func TestStartTLS(t *testing.T) {
	p, err := servertest.NewPKI(t.TempDir(), "mx.example.test")
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.LoadX509KeyPair(p.CertFile, p.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	s := &fakesmtp.Server{TLS: &tls.Config{Certificates: []tls.Certificate{cert}}}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	c, err := Dial(s.Addr(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Hello("client.test"); err != nil || !c.Ext("STARTTLS") {
		t.Fatalf("hello: %v, %q", err, c.Text())
	}
	c.Timeout = 2 * time.Second
	if err := c.StartTLS(p.Client()); err != nil {
		t.Fatal(err)
	}
	// The handshake's deadline does not outlive it: raw use of NetConn
	// (Timeout 0) is not cut by it.
	c.Timeout = 0
	time.Sleep(2100 * time.Millisecond)
	if _, ok := c.NetConn().(*tls.Conn); !ok || !c.TLS() || c.HandshakeTime <= 0 {
		t.Fatalf("after StartTLS: %T, TLS %v, took %v", c.NetConn(), c.TLS(), c.HandshakeTime)
	}
	err = c.Ehlo("client.test")
	if err != nil || c.Ext("STARTTLS") {
		t.Fatalf("EHLO over TLS: %v, %q", err, c.Text())
	}
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}

	// A server that answers STARTTLS and something more in one write.
	d, srv := pair(t)
	go func() {
		buf := make([]byte, 64)
		_, _ = srv.Read(buf)
		_, _ = srv.Write([]byte("220 go ahead\r\n250 injected\r\n"))
	}()
	var se *Error
	if err := d.StartTLS(p.Client()); !errors.As(err, &se) || se.Stage != StageStartTLS || !errors.Is(err, ErrUnsolicited) {
		t.Fatalf("STARTTLS with bytes after the 220: %v", err)
	}
}

// The endings: a close is nil, bytes before it are not, an open
// connection times out; silence is checked without consuming a reply;
// CloseWrite and Abort reach the server as a FIN and an RST.
func TestEndings(t *testing.T) {
	c := scripted(t, "")
	if err := c.ExpectClose(); err != nil {
		t.Fatalf("closed: %v", err)
	}
	c = scripted(t, "421 4.4.2 bye\r\n")
	if err := c.ExpectClose(); !errors.Is(err, ErrUnsolicited) || !strings.Contains(err.Error(), "421") {
		t.Fatalf("a reply before the close: %v", err)
	}
	c, _ = pair(t)
	c.Timeout = 50 * time.Millisecond
	var ne net.Error
	if err := c.ExpectClose(); !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("still open: %v", err)
	}

	c, s := pair(t)
	if err := c.ExpectSilence(50 * time.Millisecond); err != nil {
		t.Fatalf("silence: %v", err)
	}
	_, _ = s.Write([]byte("250 late\r\n"))
	time.Sleep(20 * time.Millisecond)
	if err := c.ExpectSilence(50 * time.Millisecond); !errors.Is(err, ErrUnsolicited) {
		t.Fatalf("a reply within the wait: %v", err)
	}
	c.Timeout = time.Second
	if code, err := c.Reply(); code != 250 || err != nil {
		t.Fatalf("the reply ExpectSilence saw: %d, %v", code, err)
	}

	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	_ = s.SetReadDeadline(time.Now().Add(5 * time.Second))
	if b, err := io.ReadAll(s); err != nil || len(b) != 0 {
		t.Fatalf("after CloseWrite the server reads %q, %v", b, err)
	}
	_, _ = s.Write([]byte("221 still heard\r\n"))
	if code, err := c.Reply(); code != 221 || err != nil {
		t.Fatalf("reply after CloseWrite: %d, %v", code, err)
	}

	c, s = pair(t)
	c.Abort()
	_ = s.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := s.Read(make([]byte, 1)); !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("after Abort the server reads %v, want a reset", err)
	}
}

// WriteData sends its parts as one stream, on plaintext and without
// keeping them.
func TestWriteData(t *testing.T) {
	c, s := pair(t)
	parts := [][]byte{[]byte("a\r\n"), []byte("b\r\n"), []byte(".\r\n")}
	if err := c.WriteData(parts...); err != nil {
		t.Fatal(err)
	}
	if len(parts[0]) != 3 || c.iov[0] != nil {
		t.Fatal("WriteData consumed its argument or kept it")
	}
	_ = c.CloseWrite()
	_ = s.SetReadDeadline(time.Now().Add(5 * time.Second))
	if b, _ := io.ReadAll(s); !bytes.Equal(b, []byte("a\r\nb\r\n.\r\n")) {
		t.Fatalf("server read %q", b)
	}
}
