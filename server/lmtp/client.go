// Package lmtp hands accepted messages to a mailbox server over LMTP (RFC
// 2033), Dovecot's above all: a small client (Conn), a bounded pool of
// connections reused across messages, and the fixed workers that do the
// blocking I/O (Pool). It knows no gnet and no sessions: it is given an
// envelope and the bytes of the message and answers with one reply per
// recipient.
//
// The client is our own rather than github.com/emersion/go-smtp's: that
// one sends LHLO again after every RSET, sets no deadline while the body
// is written, and takes the body through an io.Writer that the spool's
// segments and scratch files would have to be copied into. This one sends
// LHLO once per connection, pipelines MAIL, RCPT and DATA (RFC 2920) when
// the server offers PIPELINING, bounds every write and read by a
// deadline, converts the spool's LF line endings to CRLF and dot-stuffs
// as it streams (RFC 5321 4.5.2), and returns replies as proto.Reply
// values the server passes on as they are.
package lmtp

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/nanomx/nanomx/proto"
)

// maxReplyLine bounds one reply line (RFC 5321 4.5.3.1.5: 512 octets;
// servers write longer ones, so twice that and some).
const maxReplyLine = 2048

// maxReplyLines bounds the lines of one multi-line reply.
const maxReplyLines = 100

// Network splits an lmtp address into Dial's network and address:
// "unix:/run/dovecot/lmtp" is a Unix socket, anything else host:port.
func Network(addr string) (network, address string) {
	if p, ok := strings.CutPrefix(addr, "unix:"); ok {
		return "unix", p
	}
	return "tcp", addr
}

// ProtocolError is a reply or a connection that broke the protocol: the
// connection cannot be used further.
type ProtocolError struct{ Msg string }

func (e *ProtocolError) Error() string { return "lmtp: " + e.Msg }

// Conn is one LMTP connection. It is not safe for concurrent use: a pool
// worker owns it while it runs a transaction.
type Conn struct {
	nc      net.Conn
	br      *bufio.Reader
	bw      *bufio.Writer
	timeout time.Duration
	// pipelining: the server offered PIPELINING in its LHLO reply.
	pipelining, eightBit, utf8 bool
	// broken is set once the connection's state is unknown (an I/O error,
	// a reply out of protocol): it must be closed, never reused.
	broken bool
	// dotSent is set once the data's final dot was handed to the socket:
	// from then on the server may have delivered.
	dotSent bool
	// used counts the transactions run; idleSince is when the last ended.
	used      int
	idleSince time.Time
}

// Dial connects to addr ("unix:/path" or "host:port"), reads the greeting
// and sends LHLO name. timeout bounds the connection and each step.
func Dial(addr, name string, timeout time.Duration) (*Conn, error) {
	network, address := Network(addr)
	nc, err := net.DialTimeout(network, address, timeout)
	if err != nil {
		return nil, err
	}
	c := &Conn{nc: nc, br: bufio.NewReaderSize(nc, 4096), bw: bufio.NewWriterSize(nc, 32<<10), timeout: timeout}
	if err := c.hello(name); err != nil {
		nc.Close()
		return nil, err
	}
	return c, nil
}

// hello reads the greeting and sends LHLO (RFC 2033 4.1).
func (c *Conn) hello(name string) error {
	c.deadline()
	r, lines, err := c.readReply()
	if err != nil {
		return err
	}
	if r.Code != 220 {
		return r
	}
	if _, err := c.bw.WriteString("LHLO " + name + "\r\n"); err != nil {
		return err
	}
	if err := c.flush(); err != nil {
		return err
	}
	r, lines, err = c.readReply()
	if err != nil {
		return err
	}
	if r.Code != 250 {
		return r
	}
	for _, l := range lines[1:] {
		kw, _, _ := strings.Cut(strings.ToUpper(l), " ")
		switch kw {
		case "PIPELINING":
			c.pipelining = true
		case "8BITMIME":
			c.eightBit = true
		case "SMTPUTF8":
			c.utf8 = true
		}
	}
	return nil
}

// Close closes the connection, with QUIT when it is in a known state.
func (c *Conn) Close() error {
	if !c.broken {
		c.deadline()
		if _, err := c.bw.WriteString("QUIT\r\n"); err == nil && c.bw.Flush() == nil {
			_, _, _ = c.readReply()
		}
	}
	return c.nc.Close()
}

// Broken reports whether the connection must not be reused.
func (c *Conn) Broken() bool { return c.broken }

func (c *Conn) deadline() { _ = c.nc.SetDeadline(time.Now().Add(c.timeout)) }

func (c *Conn) flush() error {
	c.deadline()
	if err := c.bw.Flush(); err != nil {
		c.broken = true
		return err
	}
	return nil
}

// Body is a message's bytes as the spool stores them (LF line endings):
// segments in memory, then, if File is set, that file from offset Skip.
type Body struct {
	Segs [][]byte
	File string
	Skip int64
}

// Send runs one transaction: MAIL FROM:<from>, a RCPT for each of rcpts
// and, if any was accepted, DATA with body. It returns one reply per
// recipient, in order: the RCPT's refusal, or the reply after the data
// (RFC 2033 4.2). An error means the outcome is unknown (I/O, timeout,
// protocol) or the transaction was refused as a whole (MAIL, DATA; a
// *proto.Reply); the replies are then nil. The connection is left ready
// for the next transaction unless Broken.
func (c *Conn) Send(from string, rcpts []string, body Body) ([]*proto.Reply, error) {
	c.used++
	defer func() { c.idleSince = time.Now() }()
	rs, err := c.envelope(from, rcpts, true)
	if err != nil {
		return nil, err
	}
	accepted := 0
	for _, r := range rs {
		if r == nil {
			accepted++
		}
	}
	if accepted == 0 {
		// RFC 2920: DATA, pipelined or not, was refused; no transaction is
		// left, but reset anyway so the next MAIL finds a clean state.
		return rs, c.reset()
	}
	if err := c.data(body); err != nil {
		c.broken = true
		return nil, err
	}
	for i, r := range rs {
		if r != nil {
			continue
		}
		reply, _, err := c.readReply()
		if err != nil {
			return nil, err
		}
		if reply.Code == 250 {
			reply = nil
		}
		rs[i] = reply
	}
	return rs, nil
}

// Probe asks whether the server would take mail from from to each of
// rcpts: MAIL, the RCPTs, RSET. It returns one reply per recipient, nil
// for an accepted one.
func (c *Conn) Probe(from string, rcpts []string) ([]*proto.Reply, error) {
	c.used++
	defer func() { c.idleSince = time.Now() }()
	rs, err := c.envelope(from, rcpts, false)
	if err != nil {
		return nil, err
	}
	return rs, c.reset()
}

// envelope sends MAIL and the RCPTs, and DATA when withData, pipelined
// when the server allows it. It returns the RCPT replies (nil where
// accepted). A MAIL or DATA refusal is returned as the error, after a
// reset; with data it reports nothing accepted (all replies set) when DATA
// was refused because every RCPT was.
func (c *Conn) envelope(from string, rcpts []string, withData bool) ([]*proto.Reply, error) {
	if c.broken {
		return nil, &ProtocolError{"connection is broken"}
	}
	if len(rcpts) == 0 {
		return nil, errors.New("lmtp: no recipients")
	}
	mail := "MAIL FROM:<" + from + ">"
	if c.eightBit {
		mail += " BODY=8BITMIME"
	}
	if c.utf8 && !isASCII(from) {
		mail += " SMTPUTF8"
	}
	cmds := make([]string, 0, len(rcpts)+2)
	cmds = append(cmds, mail)
	for _, r := range rcpts {
		cmds = append(cmds, "RCPT TO:<"+r+">")
	}
	if withData {
		cmds = append(cmds, "DATA")
	}
	for _, cmd := range cmds {
		if strings.ContainsAny(cmd, "\r\n") {
			return nil, fmt.Errorf("lmtp: line break in %q", cmd)
		}
	}
	replies := make([]*proto.Reply, len(cmds))
	if c.pipelining {
		for _, cmd := range cmds {
			_, _ = c.bw.WriteString(cmd)
			_, _ = c.bw.WriteString("\r\n")
		}
		if err := c.flush(); err != nil {
			return nil, err
		}
		for i := range cmds {
			r, _, err := c.readReply()
			if err != nil {
				return nil, err
			}
			replies[i] = r
		}
	} else {
		for i, cmd := range cmds {
			if _, err := c.bw.WriteString(cmd + "\r\n"); err != nil {
				c.broken = true
				return nil, err
			}
			if err := c.flush(); err != nil {
				return nil, err
			}
			r, _, err := c.readReply()
			if err != nil {
				return nil, err
			}
			replies[i] = r
			if i == 0 && r.Code != 250 {
				return nil, c.refused(r)
			}
		}
	}
	if r := replies[0]; r.Code != 250 {
		return nil, c.refused(r)
	}
	rs := replies[1 : 1+len(rcpts)]
	accepted := 0
	for i, r := range rs {
		if r.Code == 250 || r.Code == 251 {
			rs[i] = nil
			accepted++
		}
	}
	if !withData {
		return rs, nil
	}
	d := replies[len(replies)-1]
	switch {
	case d.Code == 354 && accepted == 0:
		// The server wants data for no recipient: its state is not one
		// we can follow.
		c.broken = true
		return nil, &ProtocolError{"354 to DATA with no recipient accepted"}
	case d.Code == 354:
	case accepted == 0:
		// The expected refusal of DATA after every RCPT was refused.
	default:
		return nil, c.refused(d)
	}
	return rs, nil
}

// refused resets the transaction after r refused it and returns r.
func (c *Conn) refused(r *proto.Reply) error {
	if err := c.reset(); err != nil {
		return err
	}
	return r
}

// reset sends RSET.
func (c *Conn) reset() error {
	if _, err := c.bw.WriteString("RSET\r\n"); err != nil {
		c.broken = true
		return err
	}
	if err := c.flush(); err != nil {
		return err
	}
	r, _, err := c.readReply()
	if err != nil {
		return err
	}
	if r.Code != 250 {
		c.broken = true
		return r
	}
	return nil
}

// data streams body, line endings as CRLF and dot-stuffed, and the final
// ".". Every write is bounded by the timeout.
func (c *Conn) data(body Body) error {
	w := stuffer{c: c}
	for _, s := range body.Segs {
		if err := w.write(s); err != nil {
			return err
		}
	}
	if body.File != "" {
		f, err := openAt(body.File, body.Skip)
		if err != nil {
			return err
		}
		defer f.Close()
		buf := make([]byte, 32<<10)
		for {
			n, err := f.Read(buf)
			if n > 0 {
				if werr := w.write(buf[:n]); werr != nil {
					return werr
				}
			}
			if err == io.EOF {
				break
			}
			if err != nil {
				return err
			}
		}
	}
	return w.end()
}

// stuffer writes LF-terminated text as CRLF lines with leading dots
// doubled (RFC 5321 4.5.2). A CR already before an LF is kept, not
// doubled.
type stuffer struct {
	c       *Conn
	midLine bool // the last byte written was not an LF
	lastCR  bool // the last byte written was a CR
}

func (w *stuffer) write(p []byte) error {
	bw := w.c.bw
	for len(p) > 0 {
		if !w.midLine && p[0] == '.' {
			bw.WriteByte('.')
		}
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			bw.Write(p)
			w.midLine, w.lastCR = true, p[len(p)-1] == '\r'
			break
		}
		bw.Write(p[:i])
		if !(i > 0 && p[i-1] == '\r' || i == 0 && w.lastCR) {
			bw.WriteByte('\r')
		}
		bw.WriteByte('\n')
		w.midLine, w.lastCR = false, false
		p = p[i+1:]
		if bw.Buffered() >= 16<<10 {
			if err := w.c.flush(); err != nil {
				return err
			}
		}
	}
	if bw.Buffered() >= 16<<10 {
		return w.c.flush()
	}
	return nil
}

// end finishes the last line and writes the terminating dot.
func (w *stuffer) end() error {
	if w.midLine {
		if !w.lastCR {
			w.c.bw.WriteByte('\r')
		}
		w.c.bw.WriteByte('\n')
	}
	w.c.bw.WriteString(".\r\n")
	w.c.dotSent = true
	return w.c.flush()
}

// readReply reads one reply, multi-line or not. Its lines are returned
// without code and CRLF; the reply's text is the last line's.
func (c *Conn) readReply() (*proto.Reply, []string, error) {
	c.deadline()
	var lines []string
	for {
		line, err := c.br.ReadSlice('\n')
		if err != nil {
			c.broken = true
			if errors.Is(err, bufio.ErrBufferFull) {
				return nil, nil, &ProtocolError{"reply line too long"}
			}
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return nil, nil, err
		}
		line = bytes.TrimRight(line, "\r\n")
		if len(line) < 3 || (len(line) > 3 && line[3] != ' ' && line[3] != '-') {
			c.broken = true
			return nil, nil, &ProtocolError{fmt.Sprintf("malformed reply %q", line)}
		}
		code, err := strconv.Atoi(string(line[:3]))
		if err != nil || code < 200 || code > 599 {
			c.broken = true
			return nil, nil, &ProtocolError{fmt.Sprintf("malformed reply %q", line)}
		}
		text := ""
		if len(line) > 4 {
			text = string(line[4:])
		}
		lines = append(lines, text)
		if len(line) == 3 || line[3] == ' ' {
			return replyOf(code, text), lines, nil
		}
		if len(lines) >= maxReplyLines {
			c.broken = true
			return nil, nil, &ProtocolError{"reply too long"}
		}
	}
}

// replyOf makes a reply from the server's code and text, splitting off an
// enhanced status code (RFC 3463) whose class matches the code's.
func replyOf(code int, text string) *proto.Reply {
	enh, rest, _ := strings.Cut(text, " ")
	if isEnhanced(enh) && enh[0] == byte('0'+code/100) {
		return proto.NewReply(code, enh, rest)
	}
	return proto.NewReply(code, "", text)
}

func isEnhanced(s string) bool {
	parts := strings.Split(s, ".")
	if len(parts) != 3 || len(parts[0]) != 1 || parts[0][0] < '2' || parts[0][0] > '5' {
		return false
	}
	for _, p := range parts[1:] {
		if len(p) == 0 || len(p) > 3 || strings.Trim(p, "0123456789") != "" {
			return false
		}
	}
	return true
}

// openAt opens path for reading from offset skip.
func openAt(path string, skip int64) (*os.File, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	if skip > 0 {
		if _, err := f.Seek(skip, io.SeekStart); err != nil {
			f.Close()
			return nil, err
		}
	}
	return f, nil
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}
