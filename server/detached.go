package server

// A detached session's transport: a half-closed session whose message is
// still with the spool leaves the loop (gnet would close it) for a
// goroutine of its own, which waits for the answer, writes it and
// whatever was pipelined after it (QUIT), and closes. The twin of
// OnTraffic's, with blocking reads and writes under deadlines.

import (
	"errors"
	"net"
	"time"
)

// blocking is a detached session's transport.
type blocking struct {
	c   *conn
	nc  net.Conn
	buf readBuf // readbuf.go
	// fc is the socket (fdconn.go) when nc is a TLS connection over it.
	fc *fdConn
}

func newBlocking(c *conn, nc net.Conn, pending []byte) *blocking {
	b := &blocking{c: c, nc: nc}
	b.buf.init(pending)
	return b
}

// write writes a batch of replies. A client that does not read blocks
// this goroutine, not the server, until the command deadline: the write is
// bounded by Feed's output limit.
func (b *blocking) write(out []byte) error {
	if b.fc != nil && b.c.sess.Closed() {
		// The last replies: they go with the close_notify alert.
		b.fc.holdLast()
	}
	_ = b.nc.SetWriteDeadline(time.Now().Add(b.c.lv.cfg.CommandTimeout))
	_, err := b.nc.Write(out)
	return err
}

// run drives the session over the blocking connection until it ends.
func (b *blocking) run() {
	c, buf := b.c, &b.buf
	for {
		n, nx := c.step(buf.b, b.write, never)
		buf.consume(n)
		switch nx {
		case nextWait:
			buf.release()
			c.waitAnswer()
			continue
		case nextClose, nextTLS: // no STARTTLS is offered over TLS
			return
		}
		if !c.sess.InTransfer() {
			buf.release() // between commands: nothing big is coming yet
		}
		_ = b.nc.SetReadDeadline(time.Unix(0, c.deadline.Load()))
		space := buf.space()
		n, err := b.nc.Read(space)
		buf.read(n, space)
		if err != nil {
			var ne net.Error
			switch {
			case errors.As(err, &ne) && ne.Timeout():
				// The deadline passed, or the drain interrupted the read:
				// the flags decide on the next turn.
				if time.Now().UnixNano() >= c.deadline.Load() {
					c.flags.Or(flagTimeout)
				}
			case n == 0:
				c.reason = "client closed"
				return
			}
		}
	}
}
