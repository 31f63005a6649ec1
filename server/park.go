package server

// Parking an idle TLS session. A goroutine that has written a reply over
// TLS (AES-GCM, the record layer) has a 4 KiB stack or more, and a stack
// only shrinks at a collection while under a quarter of it is in use (with
// the runtime's 800-byte guard counted): a goroutine blocked in
// tls.Conn.Read, a dozen frames deep, keeps 4 KiB for as long as the
// client is silent, and the collector counts it again in its goal. So a
// session that stays silent between commands for parkAfter parks: its
// goroutine ends and the session's state (blocking) goes to the server's
// parker, which watches the socket in an epoll instance of its own
// (park_linux.go). When the client sends, or a kick comes (the deadline
// from OnTick, the drain), a new session goroutine takes it up again. A
// busy session never waits that long and never parks. Where there is no
// parker, a parked session waits on a goroutine of its own, in a small
// stack (wait).
//
// A timed-out tls.Conn.Read is not an error for the tls.Conn (a timeout
// is temporary: it keeps what it read of a record), and it means that
// tls.Conn holds no whole record it has not returned: all it waits for is
// on the socket.
//
// Measured with 5,000 idle TLS sessions (bench/idlemem.sh, the RSS
// growth per session): 19.3–22.9 KiB before, 16.8–18.0 KiB parked; the
// goroutine stack (4.3 KiB) is gone and 256 bytes of read buffer are let
// go while parked.

import (
	"errors"
	"net"
	"syscall"
	"time"
)

// parkAfter is how long a session between commands waits in tls.Conn.Read
// before it parks.
const parkAfter = time.Second

// blocking is a detached session's transport (the twin of OnTraffic's),
// kept across the goroutines a parked session runs on.
type blocking struct {
	c   *conn
	nc  net.Conn
	buf readBuf // readbuf.go
	// raw is the socket under TLS, which a parked session waits on, and
	// fd its descriptor; raw is nil for a session that never parks.
	raw syscall.RawConn
	fd  int
	// fc is the socket under TLS (fdconn.go), nil for a plaintext session.
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

// run drives the session over the blocking connection until it ends
// (false) or parks (true: the caller starts wait and touches nothing
// more).
func (b *blocking) run() (parked bool) {
	c, buf := b.c, &b.buf
	if buf.small == nil {
		buf.init(nil) // back from parking
	}
	for {
		n, nx := c.step(buf.b, b.write, never)
		buf.consume(n)
		switch nx {
		case nextWait:
			buf.release()
			c.waitAnswer()
			continue
		case nextClose, nextTLS: // no STARTTLS is offered over TLS
			return false
		}
		if !c.sess.InTransfer() {
			buf.release() // between commands: nothing big is coming yet
		}
		deadline := c.deadline.Load()
		var parkAt int64
		if b.raw != nil && len(buf.b) == 0 && !c.sess.InTransfer() {
			if at := time.Now().Add(parkAfter).UnixNano(); at < deadline {
				parkAt, deadline = at, at
			}
		}
		_ = b.nc.SetReadDeadline(time.Unix(0, deadline))
		space := buf.space()
		n, err := b.nc.Read(space)
		buf.read(n, space)
		if err != nil {
			var ne net.Error
			switch {
			case errors.As(err, &ne) && ne.Timeout():
				// The deadline passed, or the drain interrupted the read:
				// the flags decide on the next turn.
				now := time.Now().UnixNano()
				if now >= c.deadline.Load() {
					c.flags.Or(flagTimeout)
				} else if parkAt != 0 && n == 0 && now >= parkAt {
					return true
				}
			case n == 0:
				c.reason = "client closed"
				return false
			}
		}
	}
}

// park parks the session, which holds nothing but its state then: in the
// server's parker (park_linux.go), or else on a goroutine of its own
// (wait). Once parked, the session may already run on another goroutine.
func (b *blocking) park() {
	c := b.c
	b.buf = readBuf{} // empty (run parks only then): run makes a new one
	if !c.srv.parker.park(b) {
		go b.wait()
		return
	}
	// A kick (the deadline, the drain) after the last read found nothing
	// to wake: look at what it left.
	if c.flags.Load() != 0 || time.Now().UnixNano() >= c.deadline.Load() {
		c.srv.parker.wake(c.n)
	}
}

// wait is a parked session's goroutine: it waits until the socket is
// readable, the deadline passes or the drain interrupts it, and starts
// the session's goroutine again, which reads or looks at the flags. Its
// frame is small: this is the stack an idle session keeps.
func (b *blocking) wait() {
	c := b.c
	_ = b.nc.SetReadDeadline(time.Unix(0, c.deadline.Load()))
	if err := b.raw.Read(readable); err != nil && time.Now().UnixNano() >= c.deadline.Load() {
		c.flags.Or(flagTimeout)
	}
	go c.serveTLSSession(b)
}

// readable is the RawConn.Read callback: true when a read would not
// block (input, end of file or an error to return), false to wait for the
// socket to become readable.
func readable(fd uintptr) bool {
	var p [1]byte
	_, _, err := syscall.Recvfrom(int(fd), p[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
	return err != syscall.EAGAIN
}
