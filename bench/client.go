package bench

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"syscall"
	"time"

	"github.com/nanomx/nanomx/bench/smtpc"
)

// aLongTimeAgo is a deadline in the past: setting it unblocks any I/O.
var aLongTimeAgo = time.Unix(1, 0)

// conn is one session of the bench: the shared SMTP client (package smtpc)
// and the hook that cuts it when the run ends. A worker reuses it, and so
// its reader and scratch buffers, across the connections it opens.
type conn struct {
	smtpc.Conn
	tcp net.Conn    // the TCP connection, nil once closed
	cut func() bool // unregisters the cut-off hook
	// pipelining is set when the EHLO reply listed PIPELINING.
	pipelining bool
}

// hooks receive the latencies of a session's set-up; nil fields are
// skipped.
type hooks struct {
	connect, greeting, handshake func(time.Duration)
	// resumed is called after a handshake that resumed a session.
	resumed func()
}

// dialer opens connections to the target for one run.
type dialer struct {
	addr   *net.TCPAddr // the target, resolved once
	spread bool
	src    func() *net.TCPAddr
	ehlo   string // the EHLO name
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
		return errKey(smtpc.StageConnect, err)
	}
	t1 := time.Now()
	if h.connect != nil {
		h.connect(t1.Sub(t0))
	}
	c.Reset(nc)
	c.tcp, c.pipelining = nc, false
	// Past the hard deadline (or on interrupt) every connection is cut;
	// the TCP connection's deadline bounds the TLS one too.
	c.cut = context.AfterFunc(ctx, func() { _ = nc.SetDeadline(aLongTimeAgo) })
	_ = nc.SetDeadline(t1.Add(timeout))
	fail := func(err error) string {
		c.close()
		return keyOf(err)
	}
	if err := c.Greeting(); err != nil {
		return fail(err)
	}
	if h.greeting != nil {
		h.greeting(time.Since(t1))
	}
	if err := c.Ehlo(d.ehlo); err != nil {
		return fail(err)
	}
	if d.tls != nil {
		if !c.Ext("STARTTLS") {
			c.close()
			return smtpc.StageStartTLS + ": not offered"
		}
		if err := c.StartTLS(d.tls); err != nil {
			return fail(err)
		}
		if h.handshake != nil {
			h.handshake(c.HandshakeTime)
		}
		if tc, ok := c.NetConn().(*tls.Conn); ok && h.resumed != nil && tc.ConnectionState().DidResume {
			h.resumed()
		}
		if err := c.Ehlo(d.ehlo); err != nil {
			return fail(err)
		}
	}
	c.pipelining = c.Ext("PIPELINING")
	return ""
}

// close closes the connection without QUIT.
func (c *conn) close() {
	if c.tcp == nil {
		return
	}
	c.cut()
	_ = c.Close()
	c.tcp = nil
}

// quit sends QUIT, waits for its reply and closes. It returns an error
// key, or "" after 221.
func (c *conn) quit(timeout time.Duration) string {
	defer c.close()
	_ = c.NetConn().SetDeadline(time.Now().Add(timeout))
	if err := c.Quit(); err != nil {
		return keyOf(err)
	}
	return ""
}

// replyKey is the error key of the last reply: the stage, the code and
// the enhanced status code when there is one ("end-of-data: 451 4.3.2").
func (c *conn) replyKey(stage string) string { return stage + ": " + c.Status() }

// keyOf is the error key of a failed smtpc step: its stage, then the
// reply's status or the kind of I/O error.
func keyOf(err error) string {
	var se *smtpc.Error
	if !errors.As(err, &se) {
		return errKey("error", err)
	}
	if se.Err != nil {
		return errKey(se.Stage, se.Err)
	}
	return se.Stage + ": " + se.Status()
}

// errKey names an I/O error by kind, so that errors group: "timeout",
// "connection closed", "connection reset" or the errno's text.
func errKey(stage string, err error) string {
	var ne net.Error
	var errno syscall.Errno
	kind := ""
	switch {
	case errors.Is(err, smtpc.ErrMalformed):
		kind = smtpc.ErrMalformed.Error() // without the reply, which would make every key unique
	case errors.Is(err, smtpc.ErrUnsolicited):
		kind = smtpc.ErrUnsolicited.Error()
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
