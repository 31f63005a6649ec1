// Package smtpc is the SMTP client of nanomx's load generator and tests:
// the bench (package bench), the crash test (cmd/nanomx) and the server
// tests (package server) all speak SMTP through it.
//
// It works at two levels. Line level: Write sends bytes as they are
// (pipelined commands, a bare LF, half a line), Reply reads one whole
// reply, multi-line or not, and checks its form (RFC 5321 4.2: three
// digits, then a space or a hyphen, CRLF at the end, one code for all
// lines); Text, Code and Status say what it was. ExpectClose, ExpectSilence,
// CloseWrite and Abort cover the endings tests look at. Envelope level:
// Greeting, Ehlo, StartTLS, Mail, Rcpt, Data, DataReply, Send, Rset and
// Quit run one step each and return an *Error naming the step and either
// the reply that refused it or the I/O error that cut it.
//
// A Conn is cheap to reuse (Reset): its reader and scratch buffers survive
// across connections, so a load generator allocates little per session.
// It uses the standard library only, so that any test can import it.
//
// A Conn is not safe for concurrent use, except that another goroutine may
// write raw bytes to NetConn (a trickler) while one reads replies.
package smtpc

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
	"time"
)

// Stages name the steps of a session in an *Error; the bench groups its
// error counts by them ("end-of-data: 451 4.3.2").
const (
	StageConnect  = "connect"
	StageGreeting = "greeting"
	StageEHLO     = "ehlo"
	StageStartTLS = "starttls"
	StageTLS      = "tls-handshake"
	StageEHLOTLS  = "ehlo-after-tls"
	StageMail     = "mail"
	StageRcpt     = "rcpt"
	StageData     = "data"
	StageBdat     = "bdat"
	StageSend     = "send-data"
	StageEnd      = "end-of-data"
	StageRset     = "rset"
	StageQuit     = "quit"
)

var (
	// ErrMalformed is a reply that is not "ddd[ -]text" CRLF, or a
	// multi-line reply whose lines do not share one code.
	ErrMalformed = errors.New("malformed reply")
	// ErrUnsolicited is a reply, or any bytes, the client did not ask for.
	ErrUnsolicited = errors.New("unsolicited reply")
)

// maxText bounds what Text keeps of one reply; what a server sends past it
// is read and dropped, so a hostile server cannot grow the client.
const maxText = 64 << 10

// maxTLSPlaintext is the most data one TLS record carries (RFC 8446 5.1).
const maxTLSPlaintext = 16 << 10

// Conn is one SMTP client connection.
type Conn struct {
	nc net.Conn // what the client speaks over: TLS after StartTLS
	br *bufio.Reader
	bw *bufio.Writer // gathers data into full TLS records; kept across Resets
	// inTLS is set once a handshake succeeded on this connection.
	inTLS bool

	// Timeout, when not zero, bounds each Reply, each write and the TLS
	// handshake, each from its own start. With zero the deadlines set on
	// NetConn apply.
	Timeout time.Duration
	// HandshakeTime is how long the last TLS handshake took.
	HandshakeTime time.Duration

	// text is the last reply, its lines without CRLF joined by "\n";
	// first is the length of its first line; code its code (0 after a
	// failed read).
	text  []byte
	first int
	code  int
	// ehlo is a copy of the text of the last 250 to EHLO; Ext reads it.
	ehlo []byte
	iov  [4][]byte // WriteData's gather list, kept to spare an allocation
}

// New returns a client speaking over nc, which it now owns.
func New(nc net.Conn) *Conn {
	c := &Conn{}
	c.Reset(nc)
	return c
}

// Dial connects to addr over TCP within timeout and returns a client whose
// Timeout is timeout too.
func Dial(addr string, timeout time.Duration) (*Conn, error) {
	nc, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return nil, &Error{Stage: StageConnect, Err: err}
	}
	c := New(nc)
	c.Timeout = timeout
	return c, nil
}

// Reset makes c a client of the new connection nc, keeping its buffers;
// what c knew of its last connection is forgotten. Timeout stays.
func (c *Conn) Reset(nc net.Conn) {
	c.nc = nc
	if c.br == nil {
		c.br = bufio.NewReaderSize(nc, 4096)
	} else {
		c.br.Reset(nc)
	}
	c.inTLS = false
	c.text, c.first, c.code = c.text[:0], 0, 0
	c.ehlo = c.ehlo[:0]
}

// NetConn returns the connection the client speaks over: the *tls.Conn
// after StartTLS or Handshake. Raw writes to it go out as they are.
func (c *Conn) NetConn() net.Conn { return c.nc }

// TLS reports whether a TLS handshake succeeded on this connection.
func (c *Conn) TLS() bool { return c.inTLS }

// Buffered returns how many bytes the server sent that no Reply has read:
// after a reply that ends an exchange, anything there is unsolicited.
func (c *Conn) Buffered() int { return c.br.Buffered() }

// Text returns the last reply, its lines without CRLF joined by "\n" (at
// most 64 KiB of it).
func (c *Conn) Text() string { return string(c.text) }

// Code returns the last reply's code, 0 if the last read failed.
func (c *Conn) Code() int { return c.code }

// Status returns the last reply's code and enhanced status code, such as
// "451 4.3.2" (just "451" without one); see StatusOf.
func (c *Conn) Status() string { return StatusOf(c.text[:c.first]) }

// Write sends b as it is.
func (c *Conn) Write(b []byte) error {
	if c.Timeout > 0 {
		_ = c.nc.SetWriteDeadline(time.Now().Add(c.Timeout))
	}
	_, err := c.nc.Write(b)
	return err
}

// WriteData writes the parts of a message's data (for instance header,
// body, end of data) as one stream. On plaintext that is one writev; on
// TLS the parts are gathered into full 16 KB records, as a sender with a
// buffered TLS stream sends them, rather than a record (and a write) per
// part.
func (c *Conn) WriteData(parts ...[]byte) error {
	if c.Timeout > 0 {
		_ = c.nc.SetWriteDeadline(time.Now().Add(c.Timeout))
	}
	if !c.inTLS && len(parts) <= len(c.iov) {
		// WriteTo consumes the slice it is given: hand it c.iov, not parts.
		n := copy(c.iov[:], parts)
		bufs := net.Buffers(c.iov[:n])
		_, err := bufs.WriteTo(c.nc)
		c.iov = [len(c.iov)][]byte{} // drop the references
		return err
	}
	if c.bw == nil {
		c.bw = bufio.NewWriterSize(c.nc, maxTLSPlaintext)
	} else {
		c.bw.Reset(c.nc)
	}
	for _, b := range parts {
		if _, err := c.bw.Write(b); err != nil {
			return err
		}
	}
	return c.bw.Flush()
}

// Reply reads one reply, all its lines, and returns its code; Text and
// Status then describe it. A reply cut by the end of the connection is
// io.ErrUnexpectedEOF; an end before any byte of it, io.EOF.
func (c *Conn) Reply() (int, error) {
	if c.Timeout > 0 {
		_ = c.nc.SetReadDeadline(time.Now().Add(c.Timeout))
	}
	c.text, c.first, c.code = c.text[:0], 0, 0
	code := 0
	for n := 0; ; n++ {
		if n > 0 && len(c.text) < maxText {
			c.text = append(c.text, '\n')
		}
		start := len(c.text)
		l, err := c.readLine()
		if err != nil {
			if errors.Is(err, io.EOF) && (n > 0 || l.n > 0) {
				err = io.ErrUnexpectedEOF
			}
			return 0, err
		}
		h := l.head[:min(l.n, len(l.head))]
		if !l.crlf || len(h) < 3 || h[0] < '2' || h[0] > '5' || !isDigits(h[1:3]) ||
			(len(h) > 3 && h[3] != ' ' && h[3] != '-') {
			return 0, fmt.Errorf("%w: %q", ErrMalformed, c.text[start:])
		}
		lc := int(h[0]-'0')*100 + int(h[1]-'0')*10 + int(h[2]-'0')
		if n == 0 {
			code, c.first = lc, len(c.text)
		} else if lc != code {
			// RFC 5321 4.2.1: every line of a reply has the same code.
			return 0, fmt.Errorf("%w: code %d in a %d reply", ErrMalformed, lc, code)
		}
		if len(h) == 3 || h[3] == ' ' {
			c.code = code
			return code, nil
		}
	}
}

// line is what readLine learnt of one line.
type line struct {
	head [4]byte // its first bytes, enough to check the code
	n    int     // its length without the line end
	crlf bool    // it ended in CRLF
}

// readLine reads the next line and appends it to c.text without its line
// end, or the part of it that fits under maxText.
func (c *Conn) readLine() (line, error) {
	var l line
	var tail [2]byte // the last two bytes read
	kept := 0        // bytes of the line appended to c.text
	for {
		frag, err := c.br.ReadSlice('\n')
		for _, b := range frag {
			if l.n < len(l.head) {
				l.head[l.n] = b
			}
			l.n++
			tail = [2]byte{tail[1], b}
		}
		if room := maxText - len(c.text); room > 0 {
			k := min(len(frag), room)
			c.text = append(c.text, frag[:k]...)
			kept += k
		}
		if err == nil {
			l.crlf = tail == [2]byte{'\r', '\n'}
			end := 1
			if l.crlf {
				end = 2
			}
			l.n -= end
			// Take back off c.text whatever of the line end it got.
			c.text = c.text[:len(c.text)-max(0, kept-l.n)]
			return l, nil
		}
		if !errors.Is(err, bufio.ErrBufferFull) {
			return l, err
		}
	}
}

// Cmd sends line and CRLF and reads the reply.
func (c *Conn) Cmd(line string) (int, error) {
	if err := c.Write([]byte(line + "\r\n")); err != nil {
		return 0, err
	}
	return c.Reply()
}

// Step sends cmd (nothing if it is nil) and reads the reply, which must be
// want: for want 250, any 2xx will do (251, RFC 5321 3.4). Any other
// reply, or an I/O error, is an *Error of stage.
func (c *Conn) Step(stage string, cmd []byte, want int) error {
	if cmd != nil {
		if err := c.Write(cmd); err != nil {
			return &Error{Stage: stage, Err: err}
		}
	}
	code, err := c.Reply()
	switch {
	case err != nil:
		return &Error{Stage: stage, Err: err}
	case code == want, want == 250 && code/100 == 2:
		return nil
	}
	return &Error{Stage: stage, Code: code, Reply: c.Text()}
}

// Greeting reads the server's greeting, which must be 220.
func (c *Conn) Greeting() error { return c.Step(StageGreeting, nil, 220) }

// Ehlo says EHLO name; the 250's extensions are then known to Ext. Over
// TLS its errors are StageEHLOTLS.
func (c *Conn) Ehlo(name string) error {
	c.ehlo = c.ehlo[:0]
	stage := StageEHLO
	if c.inTLS {
		stage = StageEHLOTLS
	}
	if err := c.Step(stage, []byte("EHLO "+name+"\r\n"), 250); err != nil {
		return err
	}
	c.ehlo = append(c.ehlo[:0], c.text...)
	return nil
}

// Hello reads the greeting and says EHLO name.
func (c *Conn) Hello(name string) error {
	if err := c.Greeting(); err != nil {
		return err
	}
	return c.Ehlo(name)
}

// Ext reports whether the last EHLO reply listed the extension keyword
// (case does not matter).
func (c *Conn) Ext(keyword string) bool {
	b := c.ehlo
	for i := 0; len(b) > 0; i++ {
		line, rest, _ := bytes.Cut(b, []byte("\n"))
		b = rest
		if i == 0 || len(line) < 4 {
			continue // the first line is the server's name
		}
		kw, _, _ := bytes.Cut(line[4:], []byte(" "))
		if bytes.EqualFold(kw, []byte(keyword)) {
			return true
		}
	}
	return false
}

// StartTLS upgrades the connection (RFC 3207): STARTTLS, its 220, and the
// handshake. Bytes the server sent after the 220 are refused before the
// handshake (ErrUnsolicited): they would be read as if they came over TLS
// (the client side of CVE-2011-0411). Say EHLO again afterwards.
func (c *Conn) StartTLS(cfg *tls.Config) error {
	if err := c.Step(StageStartTLS, []byte("STARTTLS\r\n"), 220); err != nil {
		return err
	}
	if c.br.Buffered() > 0 {
		return &Error{Stage: StageStartTLS, Err: ErrUnsolicited}
	}
	return c.Handshake(cfg)
}

// Handshake runs a TLS client handshake over the connection, as after the
// server's 220 to STARTTLS, and from then on speaks over TLS. Its
// duration goes to HandshakeTime. With Timeout set it bounds the
// handshake, and the connection has no deadline afterwards.
func (c *Conn) Handshake(cfg *tls.Config) error {
	tc := tls.Client(c.nc, cfg)
	if c.Timeout > 0 {
		_ = tc.SetDeadline(time.Now().Add(c.Timeout))
	}
	t0 := time.Now()
	if err := tc.Handshake(); err != nil {
		return &Error{Stage: StageTLS, Err: err}
	}
	c.HandshakeTime = time.Since(t0)
	if c.Timeout > 0 {
		_ = tc.SetDeadline(time.Time{})
	}
	c.nc = tc
	c.br.Reset(tc)
	c.inTLS = true
	return nil
}

// Mail sends MAIL FROM:<from>, which must be accepted.
func (c *Conn) Mail(from string) error {
	return c.Step(StageMail, []byte("MAIL FROM:<"+from+">\r\n"), 250)
}

// Rcpt sends RCPT TO:<to>, which must be accepted.
func (c *Conn) Rcpt(to string) error {
	return c.Step(StageRcpt, []byte("RCPT TO:<"+to+">\r\n"), 250)
}

// Data sends DATA, which must be answered 354.
func (c *Conn) Data() error { return c.Step(StageData, []byte("DATA\r\n"), 354) }

// DataReply reads the reply to the end of data, which must be 250.
func (c *Conn) DataReply() error { return c.Step(StageEnd, nil, 250) }

// Send runs one transaction: MAIL, a RCPT per recipient, DATA, then data,
// which is in its DATA form (CRLF line ends, dot-stuffed, ending in
// ".\r\n"), and the reply to it. It returns nil once the message is
// answered 250. The *Error of a failure says at which stage; StageSend
// means the data was not all written, StageEnd that it was.
func (c *Conn) Send(from string, rcpts []string, data ...[]byte) error {
	if err := c.Mail(from); err != nil {
		return err
	}
	for _, to := range rcpts {
		if err := c.Rcpt(to); err != nil {
			return err
		}
	}
	if err := c.Data(); err != nil {
		return err
	}
	if err := c.WriteData(data...); err != nil {
		return &Error{Stage: StageSend, Err: err}
	}
	return c.DataReply()
}

// Rset sends RSET, which must be answered 250.
func (c *Conn) Rset() error { return c.Step(StageRset, []byte("RSET\r\n"), 250) }

// Quit sends QUIT, which must be answered 221. It does not close.
func (c *Conn) Quit() error { return c.Step(StageQuit, []byte("QUIT\r\n"), 221) }

// Close closes the connection; over TLS it sends close_notify first.
func (c *Conn) Close() error { return c.nc.Close() }

// Abort resets the connection (SO_LINGER 0): no FIN, no TIME_WAIT on
// either side, and no close_notify.
func (c *Conn) Abort() {
	nc := c.nc
	if tc, ok := nc.(*tls.Conn); ok {
		nc = tc.NetConn()
	}
	if tc, ok := nc.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = nc.Close()
}

// CloseWrite shuts the sending side (shutdown(SHUT_WR)); over TLS it sends
// close_notify first. Replies can still be read.
func (c *Conn) CloseWrite() error {
	type closeWriter interface{ CloseWrite() error }
	if cw, ok := c.nc.(closeWriter); ok {
		return cw.CloseWrite()
	}
	return fmt.Errorf("smtpc: %T cannot close its write side", c.nc)
}

// ExpectClose waits for the server to close the connection (an end of
// stream or a reset) and returns nil then. Anything it sends first is
// ErrUnsolicited; a connection still open at Timeout is the timeout error.
func (c *Conn) ExpectClose() error {
	if c.Timeout > 0 {
		_ = c.nc.SetReadDeadline(time.Now().Add(c.Timeout))
	}
	b, err := c.br.Peek(1)
	switch {
	case len(b) > 0:
		more, _ := c.br.Peek(c.br.Buffered())
		return fmt.Errorf("%w: %q before the close", ErrUnsolicited, more)
	case errors.Is(err, io.EOF), errors.Is(err, syscall.ECONNRESET):
		return nil
	}
	return err
}

// ExpectSilence checks that the server sends nothing for d: it returns
// ErrUnsolicited if a byte comes, an error if the connection ends, nil
// once d passed in silence. What arrives is left for Reply.
func (c *Conn) ExpectSilence(d time.Duration) error {
	_ = c.nc.SetReadDeadline(time.Now().Add(d))
	b, err := c.br.Peek(1)
	var ne net.Error
	switch {
	case len(b) > 0:
		more, _ := c.br.Peek(c.br.Buffered())
		return fmt.Errorf("%w: %q within %v", ErrUnsolicited, more, d)
	case errors.As(err, &ne) && ne.Timeout():
		return nil
	case err == nil:
		return errors.New("smtpc: empty read")
	}
	return err
}

// Error is a step that failed: the server refused it (Code and Reply set)
// or the connection failed (Err set).
type Error struct {
	Stage string // one of the Stage constants
	Code  int    // the reply's code; 0 when Err is set
	Reply string // the whole reply, lines joined by "\n"
	Err   error  // the I/O error, or ErrMalformed, ErrUnsolicited
}

func (e *Error) Error() string {
	if e.Err != nil {
		return e.Stage + ": " + e.Err.Error()
	}
	return e.Stage + ": " + e.Reply
}

func (e *Error) Unwrap() error { return e.Err }

// Status is the refusal's code and enhanced status code ("451 4.3.2"), ""
// for an I/O error.
func (e *Error) Status() string {
	if e.Err != nil {
		return ""
	}
	line, _, _ := bytes.Cut([]byte(e.Reply), []byte("\n"))
	return StatusOf(line)
}

// Timeout reports whether the step failed on a deadline.
func (e *Error) Timeout() bool {
	var ne net.Error
	return errors.As(e.Err, &ne) && ne.Timeout()
}

// StatusOf returns the code and the RFC 3463 enhanced status code at the
// start of a reply line, "451 4.3.2", or just "451" when the text does not
// start with one; "" if line does not start with a code.
func StatusOf(line []byte) string {
	line = bytes.TrimRight(line, "\r\n")
	if len(line) < 3 || !isDigits(line[:3]) {
		return ""
	}
	s := string(line[:3])
	if len(line) > 4 {
		if enh, _, _ := bytes.Cut(line[4:], []byte(" ")); isEnhanced(enh) {
			s += " " + string(enh)
		}
	}
	return s
}

// isEnhanced reports whether b looks like an RFC 3463 status code, d.d.d.
func isEnhanced(b []byte) bool {
	parts := bytes.Split(b, []byte("."))
	if len(parts) != 3 || len(b) > 11 {
		return false
	}
	for _, p := range parts {
		if len(p) == 0 || !isDigits(p) {
			return false
		}
	}
	return true
}

func isDigits(b []byte) bool {
	for _, c := range b {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}
