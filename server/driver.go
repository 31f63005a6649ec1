package server

// One session driver for both transports. step runs the session over the
// input a transport holds; the transports only move bytes: gnet's
// Peek/Discard/Write on the event loop (OnTraffic), blocking reads and
// writes with deadlines on a detached session's goroutine (serveBlocking).

// next is what a session needs from its transport after a step.
type next uint8

const (
	nextRead    next = iota // more input
	nextWait                // a delivery or a check to answer: feed nothing meanwhile
	nextBlocked             // its replies are not being read (the loop's transport)
	nextClose               // the session has ended: close once the replies are out
	nextTLS                 // STARTTLS accepted: hand the socket to TLS
)

// step takes the results that have arrived (a delivery's, a check's
// verdict), applies what other goroutines asked (deadline, drain) and feeds
// in to the session, writing each batch of replies with write, until the
// session needs more input, waits, or ends. Feed stops after a few KiB of
// replies, so a batch is small; blocked tells it to stop feeding while
// the transport holds too much unsent output. It returns how many bytes
// of in were consumed.
func (c *conn) step(in []byte, write func([]byte) error, blocked func() bool) (consumed int, nx next) {
	for {
		if c.waiting {
			r := c.result.Swap(nil)
			if r == nil {
				return consumed, nextWait
			}
			c.finishDelivery(r.err)
		}
		if c.sess.Pending() && !c.resumeCheck() {
			return consumed, nextWait
		}
		c.applyFlags()
		n := 0
		if !c.sess.Closed() {
			if blocked() {
				return consumed, nextBlocked
			}
			rest := in[consumed:]
			if hook := testHookFeed.Load(); hook != nil {
				(*hook)(c, rest)
			}
			xfer := c.sess.InTransfer()
			n = c.sess.Feed(rest)
			if c.sess.StartingTLS() && n < len(rest) {
				// CVE-2011-0411: commands pipelined after STARTTLS would
				// run as if they had come over TLS. Drop them, as Postfix
				// does.
				c.log().Warn().Int("bytes", len(rest)-n).Msg("STARTTLS: discarding input pipelined after it")
				c.srv.stats.TLSInjections.Add(1)
				n = len(rest)
			}
			consumed += n
			if n > 0 && (xfer || c.sess.InTransfer()) {
				c.progress(n)
			}
			if c.sess.Waiting() {
				c.submit()
			}
		}
		if out := c.sess.Output(); len(out) > 0 {
			if c.srv.debug() {
				c.log().Debug().Bytes("out", out).Msg("reply")
			}
			if err := write(out); err != nil {
				c.reason = "write: " + err.Error()
				return consumed, nextClose
			}
			c.srv.m.countReplies(out)
			c.sess.ClearOutput()
		}
		switch {
		case c.sess.Closed():
			if c.reason == "" {
				c.reason = "session ended"
			}
			return consumed, nextClose
		case c.sess.StartingTLS():
			return consumed, nextTLS
		case c.waiting || c.sess.Pending():
			continue // its answer may be there already
		case n > 0 && consumed < len(in):
			continue // Feed stopped at its output limit
		}
		c.setDeadline()
		c.idleTxn()
		return consumed, nextRead
	}
}

// never is the blocking transport's blocked: its writes block instead.
func never() bool { return false }
