package server

// The connection of a detached session (detached.go): the descriptor
// gnet's Dup made, as an *os.File on Go's poller. net.FileConn would duplicate
// it a second time and set it up as a net.TCPConn: F_GETFL twice, an
// epoll_ctl for the file it closes again, SO_TYPE, getsockname,
// getpeername, TCP_NODELAY and Go's own keep-alive (15 s, replacing the
// 2 minutes the listener gave the socket), 16 system calls per STARTTLS
// where an os.File of the non-blocking descriptor costs two (F_GETFL and
// the poller's epoll_ctl). Reads, writes and deadlines are the os.File's.

import (
	"errors"
	"io/fs"
	"net"
	"os"
	"time"
)

// fdConn is a net.Conn over a socket's descriptor. Its errors are the
// poller's, unwrapped from the os.File's *fs.PathError, so that a timeout
// is a net.Error as crypto/tls expects (a temporary one does not break
// the tls.Conn).
type fdConn struct {
	f *os.File
	// hold keeps what is written from now on until Close, which sends it
	// in one write with whatever came after (holdLast).
	hold bool
	held []byte
}

// newFDConn makes a connection of fd, which it takes (and closes on an
// error); fd must be a non-blocking socket (gnet's are, and a duplicate
// shares the flag).
func newFDConn(fd int) (*fdConn, error) {
	f := os.NewFile(uintptr(fd), "smtp")
	if f == nil {
		return nil, errors.New("bad descriptor")
	}
	// Only a file on the poller takes deadlines, which every read and
	// write of a session has.
	if err := f.SetDeadline(time.Time{}); err != nil {
		f.Close()
		return nil, err
	}
	return &fdConn{f: f}, nil
}

func (c *fdConn) Read(p []byte) (int, error) {
	n, err := c.f.Read(p)
	return n, unwrapPath(err)
}

func (c *fdConn) Write(p []byte) (int, error) {
	if c.hold {
		c.held = append(c.held, p...)
		return len(p), nil
	}
	n, err := c.f.Write(p)
	return n, unwrapPath(err)
}

// holdLast makes the writes from now on wait for Close. A TLS session
// calls it before its last replies (the 221 of QUIT, a 421), which then
// leave in one segment with the close_notify alert tls.Conn.Close writes
// after them, instead of one write each.
func (c *fdConn) holdLast() { c.hold = true }

// Close sends what was held, within closeTimeout (tls.Conn.Close has
// just set the write deadline to now: "any subsequent writes will fail"),
// and closes the descriptor.
func (c *fdConn) Close() error {
	if len(c.held) > 0 {
		_ = c.f.SetWriteDeadline(time.Now().Add(closeTimeout))
		_, _ = c.f.Write(c.held)
		c.held = nil
	}
	return c.f.Close()
}

func (c *fdConn) SetDeadline(t time.Time) error      { return c.f.SetDeadline(t) }
func (c *fdConn) SetReadDeadline(t time.Time) error  { return c.f.SetReadDeadline(t) }
func (c *fdConn) SetWriteDeadline(t time.Time) error { return c.f.SetWriteDeadline(t) }

// LocalAddr and RemoteAddr are not known here (the session has them from
// gnet) and nothing asks.
func (c *fdConn) LocalAddr() net.Addr  { return fdAddr{} }
func (c *fdConn) RemoteAddr() net.Addr { return fdAddr{} }

type fdAddr struct{}

func (fdAddr) Network() string { return "tcp" }
func (fdAddr) String() string  { return "detached" }

// unwrapPath returns the error inside an os.File's *fs.PathError.
func unwrapPath(err error) error {
	if err == nil {
		return nil
	}
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}
