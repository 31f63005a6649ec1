package bench

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"strconv"
	"syscall"
	"time"
)

// Stages of a session, used in error keys.
const (
	stageConnect  = "connect"
	stageGreeting = "greeting"
	stageEHLO     = "ehlo"
	stageStartTLS = "starttls"
	stageTLS      = "tls-handshake"
	stageEHLOTLS  = "ehlo-after-tls"
	stageMail     = "mail"
	stageRcpt     = "rcpt"
	stageData     = "data"
	stageBdat     = "bdat"
	stageSend     = "send-data"
	stageEnd      = "end-of-data"
	stageRset     = "rset"
	stageQuit     = "quit"
)

// aLongTimeAgo is a deadline in the past: setting it unblocks any I/O.
var aLongTimeAgo = time.Unix(1, 0)

// errBadReply is a reply that is not "ddd[ -]text".
var errBadReply = errors.New("malformed reply")

// errUnsolicited is a reply the client did not ask for.
var errUnsolicited = errors.New("unsolicited reply")

// conn is one SMTP client connection with its reply reader. A worker
// reuses its reader and scratch buffers across the connections it opens.
type conn struct {
	c   net.Conn
	br  *bufio.Reader
	cut func() bool // unregisters the cut-off hook

	// last is a copy of the first line of the last reply read.
	last []byte
	// offered is set when the EHLO reply listed PIPELINING, tlsOffered
	// when it listed STARTTLS.
	offered, tlsOffered bool
	// bw batches a message's data into full TLS records on a TLS
	// session (on plaintext, one writev does); kept across connections.
	bw *bufio.Writer
	// inTLS is set once STARTTLS succeeded.
	inTLS bool
}

// hooks receive the latencies of a session's set-up; nil fields are
// skipped.
type hooks struct {
	connect, greeting, handshake func(time.Duration)
}

// dialer opens connections to the target for one run.
type dialer struct {
	addr   *net.TCPAddr // the target, resolved once
	spread bool
	src    func() *net.TCPAddr
	ehlo   []byte // "EHLO name\r\n"
	// tls, when not nil, is the client configuration for STARTTLS.
	tls *tls.Config
}

// open connects, reads the greeting and says EHLO; with TLS on it then
// upgrades with STARTTLS and says EHLO again. c is reset to the new
// connection. h, if not nil, gets the latencies. On failure it returns an
// error key and leaves nothing open.
func (d *dialer) open(ctx context.Context, c *conn, timeout time.Duration, h *hooks) string {
	if h == nil {
		h = &hooks{}
	}
	nd := net.Dialer{Timeout: timeout, Control: dialControl}
	if d.spread {
		nd.LocalAddr = d.src()
	}
	t0 := time.Now()
	nc, err := nd.DialContext(ctx, "tcp", d.addr.String())
	if err != nil {
		return errKey(stageConnect, err)
	}
	t1 := time.Now()
	if h.connect != nil {
		h.connect(t1.Sub(t0))
	}
	c.c = nc
	if c.br == nil {
		c.br = bufio.NewReaderSize(nc, 4096)
	} else {
		c.br.Reset(nc)
	}
	c.offered, c.tlsOffered, c.inTLS = false, false, false
	// Past the hard deadline (or on interrupt) every connection is cut.
	c.cut = context.AfterFunc(ctx, func() { _ = nc.SetDeadline(aLongTimeAgo) })
	_ = nc.SetDeadline(t1.Add(timeout))
	code, err := c.reply(false)
	if err != nil {
		c.close()
		return errKey(stageGreeting, err)
	}
	if code != 220 {
		c.close()
		return c.replyKey(stageGreeting)
	}
	if h.greeting != nil {
		h.greeting(time.Since(t1))
	}
	if key := c.ehlo(d.ehlo, stageEHLO); key != "" {
		return key
	}
	if d.tls == nil {
		return ""
	}
	if key := c.startTLS(d.tls, h.handshake); key != "" {
		return key
	}
	return c.ehlo(d.ehlo, stageEHLOTLS)
}

// ehlo says EHLO and reads its reply; on failure it closes the
// connection and returns an error key under stage.
func (c *conn) ehlo(cmd []byte, stage string) string {
	c.offered, c.tlsOffered = false, false
	if _, err := c.c.Write(cmd); err != nil {
		c.close()
		return errKey(stage, err)
	}
	code, err := c.reply(true)
	if err != nil {
		c.close()
		return errKey(stage, err)
	}
	if code != 250 {
		c.close()
		return c.replyKey(stage)
	}
	return ""
}

// startTLS upgrades the connection (RFC 3207): STARTTLS, its 220, and the
// handshake, whose duration goes to handshake if not nil. The deadline in
// force bounds it all. On failure it closes the connection and returns an
// error key.
func (c *conn) startTLS(cfg *tls.Config, handshake func(time.Duration)) string {
	if !c.tlsOffered {
		c.close()
		return stageStartTLS + ": not offered"
	}
	if _, err := c.c.Write([]byte("STARTTLS\r\n")); err != nil {
		c.close()
		return errKey(stageStartTLS, err)
	}
	code, err := c.reply(false)
	switch {
	case err != nil:
		c.close()
		return errKey(stageStartTLS, err)
	case code != 220:
		c.close()
		return c.replyKey(stageStartTLS)
	case c.br.Buffered() > 0:
		// Plaintext after the 220 would be read as if it came over TLS
		// (the client side of CVE-2011-0411): refuse it.
		c.close()
		return stageStartTLS + ": " + errUnsolicited.Error()
	}
	tc := tls.Client(c.c, cfg)
	t0 := time.Now()
	if err := tc.Handshake(); err != nil {
		c.close()
		return errKey(stageTLS, err)
	}
	if handshake != nil {
		handshake(time.Since(t0))
	}
	// c.cut still holds the TCP connection, whose deadline also bounds
	// the TLS one.
	c.c = tc
	c.br.Reset(tc)
	c.inTLS = true
	return ""
}

// writeData writes a message's data: header, body and end of data. On
// plaintext it is one writev; on TLS the parts are gathered into full
// 16 KB records, as a sender with a buffered TLS stream would send them,
// rather than a record (and a write) per part.
func (c *conn) writeData(hdr, body, end []byte) error {
	if !c.inTLS {
		iov := [3][]byte{hdr, body, end}
		bufs := net.Buffers(iov[:])
		_, err := bufs.WriteTo(c.c)
		return err
	}
	if c.bw == nil {
		c.bw = bufio.NewWriterSize(c.c, maxTLSPlaintext)
	} else {
		c.bw.Reset(c.c)
	}
	for _, b := range [][]byte{hdr, body, end} {
		if _, err := c.bw.Write(b); err != nil {
			return err
		}
	}
	return c.bw.Flush()
}

// maxTLSPlaintext is the most data one TLS record carries (RFC 8446 5.1).
const maxTLSPlaintext = 16 << 10

// close closes the connection without QUIT.
func (c *conn) close() {
	if c.c == nil {
		return
	}
	c.cut()
	_ = c.c.Close()
	c.c = nil
}

// quit sends QUIT, waits for its reply and closes. It returns an error
// key, or "" after 221.
func (c *conn) quit(timeout time.Duration) string {
	defer c.close()
	_ = c.c.SetDeadline(time.Now().Add(timeout))
	if _, err := c.c.Write([]byte("QUIT\r\n")); err != nil {
		return errKey(stageQuit, err)
	}
	code, err := c.reply(false)
	switch {
	case err != nil:
		return errKey(stageQuit, err)
	case code != 221:
		return c.replyKey(stageQuit)
	}
	return ""
}

// reply reads one reply, multiline or not, and returns its code. The
// first line is kept in c.last. With ehlo set it notes PIPELINING.
func (c *conn) reply(ehlo bool) (int, error) {
	first := true
	for {
		line, err := c.br.ReadSlice('\n')
		long := false
		for errors.Is(err, bufio.ErrBufferFull) {
			// A line longer than the buffer: keep its start, skip the rest.
			if first {
				c.last = append(c.last[:0], line...)
			}
			long = true
			_, err = c.br.ReadSlice('\n')
		}
		if err != nil {
			if errors.Is(err, io.EOF) && !first {
				err = io.ErrUnexpectedEOF
			}
			return 0, err
		}
		if !long && first {
			c.last = append(c.last[:0], line...)
		}
		line = bytes.TrimRight(line, "\r\n")
		if len(line) < 3 || !isDigits(line[:3]) || (len(line) > 3 && line[3] != ' ' && line[3] != '-') {
			return 0, errBadReply
		}
		if ehlo && len(line) > 4 {
			kw, _, _ := bytes.Cut(line[4:], []byte(" "))
			switch {
			case bytes.EqualFold(kw, []byte("PIPELINING")):
				c.offered = true
			case bytes.EqualFold(kw, []byte("STARTTLS")):
				c.tlsOffered = true
			}
		}
		first = false
		if len(line) == 3 || line[3] == ' ' {
			code, _ := strconv.Atoi(string(line[:3]))
			return code, nil
		}
	}
}

// replyKey is the error key of the last reply: the stage, the code and
// the enhanced status code when there is one ("end-of-data: 451 4.3.2").
func (c *conn) replyKey(stage string) string {
	line := bytes.TrimRight(c.last, "\r\n")
	if len(line) < 3 {
		return stage + ": " + errBadReply.Error()
	}
	key := stage + ": " + string(line[:3])
	if len(line) > 4 {
		if enh, _, _ := bytes.Cut(line[4:], []byte(" ")); isEnhanced(enh) {
			key += " " + string(enh)
		}
	}
	return key
}

// replyText is the last reply's code and enhanced code ("421 4.4.2"),
// without a stage.
func (c *conn) replyText() string {
	k := c.replyKey("")
	return k[2:]
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

// errKey names an I/O error by kind, so that errors group: "timeout",
// "connection closed", "connection reset" or the errno's text.
func errKey(stage string, err error) string {
	var ne net.Error
	var errno syscall.Errno
	kind := ""
	switch {
	case errors.Is(err, errBadReply), errors.Is(err, errUnsolicited):
		kind = err.Error()
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		kind = "connection closed"
	case errors.Is(err, syscall.ECONNRESET):
		kind = "connection reset"
	case errors.Is(err, syscall.EPIPE):
		kind = "connection closed (broken pipe)"
	case errors.As(err, &ne) && ne.Timeout():
		kind = "timeout"
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		kind = "cut off"
	case errors.As(err, &errno):
		kind = errno.Error()
	default:
		// Without the addresses, which would make every key unique.
		var oe *net.OpError
		if errors.As(err, &oe) && oe.Err != nil {
			err = oe.Err
		}
		kind = err.Error()
	}
	return stage + ": " + kind
}
