package proto

import (
	"bytes"
	"strconv"
)

// OutputLimit bounds the replies one Feed call produces: Feed stops
// consuming once Output holds this many octets, so a client that pipelines
// without reading cannot make the session buffer megabytes of replies.
// Output can pass it by at most one command's replies.
const OutputLimit = 4 << 10

// Bounds on the buffers an idle session keeps. A transaction can grow its
// arena and recipient slices to its limits (MaxRcpts long addresses); when
// it ends, buffers above these capacities are dropped rather than kept for
// the rest of the session. Normal transactions stay below them, so a warm
// session still allocates nothing.
const (
	maxIdleArena = 1 << 10 // octets of envelope addresses
	maxIdleSpans = 16      // entries of rcpts and views
	maxIdleOut   = 1 << 10 // octets of replies, checked by ClearOutput
)

type state uint8

const (
	stateGreeted state = iota // connected, no HELO yet
	stateReady                // HELO/EHLO done, no transaction
	stateMail                 // MAIL accepted
	stateRcpt                 // at least one RCPT accepted
	stateData                 // reading DATA
	stateBdat                 // reading the octets of a BDAT chunk
	stateWait                 // message complete, waiting for delivery
	statePending              // a check's verdict is awaited (Resume)
	stateTLS                  // STARTTLS accepted, waiting for the handshake
	stateClosed               // QUIT or fatal: nothing more is read
)

func (s state) String() string {
	switch s {
	case stateGreeted:
		return "greeted"
	case stateReady:
		return "ready"
	case stateMail:
		return "mail"
	case stateRcpt:
		return "rcpt"
	case stateData:
		return "data"
	case stateBdat:
		return "bdat"
	case stateWait:
		return "wait"
	case statePending:
		return "pending"
	case stateTLS:
		return "tls"
	case stateClosed:
		return "closed"
	}
	return "state(" + strconv.Itoa(int(s)) + ")"
}

// span locates bytes in the session arena.
type span struct{ off, len int32 }

// Session is one SMTP conversation. It is fed bytes and produces replies
// and events; it does no I/O. A Session is not safe for concurrent use: the
// server's event loop owns it.
type Session struct {
	d *Dialect
	h Handler

	helo []byte // owned copy of the HELO/EHLO argument
	// out holds the replies not yet taken by the server: a spare buffer
	// taken with the first reply and given back by ClearOutput, so that an
	// idle session holds none.
	out []byte

	// The transaction's envelope lives in the arena of *txBufs, taken at
	// HELO/EHLO or MAIL and given back once the session is idle again (no
	// transaction, no check pending): reset, not freed, so a warmed-up
	// session allocates nothing, and an idle one holds no envelope buffers.
	*txBufs
	from     span
	declSize int64 // MAIL SIZE=, 0 if absent

	// Body decoding (DATA and BDAT).
	bodyLen    int64  // decoded octets stored or counted
	bodyErr    *Reply // WriteBody refused: discard, answer this at the end
	bdatLeft   int64  // octets of the current chunk still to read
	bdatSize   int64  // size of the current chunk, for its reply
	bdatRefuse *Reply // the chunk is refused: read and drop it, then answer

	bad      int // rejected commands so far
	junk     int // junk commands since the session began or a delivery
	commands uint64

	pend pending // the check awaited in statePending

	// The one-octet fields, together so that they pad once.
	state     state
	tls       bool      // TLS is in force (after TLSStarted)
	esmtp     bool      // EHLO rather than HELO
	utf8      bool      // MAIL had SMTPUTF8
	ds        dataState // DATA's position relative to line starts
	heldCR    bool      // decode saw a CR and awaits the next octet
	bodyBegun bool      // BeginBody accepted: the handler holds a body
	tooBig    bool      // passed MaxMessageBytes: discard the rest
	bare      bool      // saw a bare CR or LF
	inBdat    bool      // a BDAT transaction is open between chunks
	bdatLast  bool      // the current chunk is the LAST one
	bdatPrev  state     // state to return to after a refused chunk
	skipping  bool      // inside an over-long command line, dropping to its LF
	skipCR    bool      // the last octet dropped while skipping was CR
	hello     bool      // a HELO/EHLO was accepted since the session or TLS began
}

// txBufs are a transaction's buffers: the arena holding its addresses,
// the recipients' spans in it, and the views Envelope returns.
type txBufs struct {
	arena []byte
	rcpts []span
	views [][]byte // reused by Envelope
}

// NewSession starts a session; the server sends d.Greeting() first.
func (d *Dialect) NewSession(h Handler) *Session {
	return &Session{d: d, h: h}
}

// InitSession is NewSession into a Session the caller allocated, e.g.
// embedded in its own per-connection struct to save an allocation.
func (d *Dialect) InitSession(s *Session, h Handler) {
	*s = Session{d: d, h: h}
}

// keep returns b emptied, or nil when its capacity is above limit, so that
// an idle session does not hold on to a high-water buffer.
func keep[T any](b []T, limit int) []T {
	if cap(b) > limit {
		return nil
	}
	return b[:0]
}

// Feed consumes as much of in as the session can act on and returns how
// many bytes it consumed. An incomplete command line is left unconsumed, so
// the caller must offer it again with more bytes appended. Feed stops early
// when the session waits for delivery (Waiting) or closes (Closed); the
// rest stays unconsumed. Replies accumulate in Output.
//
// Feed also stops early once Output holds OutputLimit octets or more
// (OutputFull), however much complete input is left: the caller writes
// Output, calls ClearOutput and calls Feed again with the rest, without
// waiting for more input. Until ClearOutput, Feed consumes nothing.
func (s *Session) Feed(in []byte) int {
	n := s.feed(in)
	s.tidy()
	return n
}

func (s *Session) feed(in []byte) int {
	n := 0
	for n < len(in) {
		if len(s.out) >= OutputLimit {
			return n
		}
		switch s.state {
		case stateWait, statePending, stateTLS, stateClosed:
			return n
		case stateData:
			n += s.feedData(in[n:])
		case stateBdat:
			n += s.feedBdat(in[n:])
		default:
			i := bytes.IndexByte(in[n:], '\n')
			if s.skipping {
				if i < 0 {
					s.skipCR = in[len(in)-1] == '\r'
					return len(in)
				}
				// The CR before this LF may have gone with an earlier
				// chunk. A bare LF closes, as command decides for a line
				// that arrived whole: the reply must not hang on chunking.
				crlf := (i > 0 && in[n+i-1] == '\r') || (i == 0 && s.skipCR)
				n += i + 1
				s.skipping = false
				if crlf {
					s.reject(ReplyLineTooLong)
				} else {
					s.close(ReplyBareLFCommand)
				}
				continue
			}
			if i < 0 {
				if len(in)-n >= s.d.maxMailLine {
					// No line can be this long: drop it now rather than
					// buffer it, and answer when its end arrives.
					s.skipping = true
					s.skipCR = in[len(in)-1] == '\r'
					return len(in)
				}
				return n
			}
			line := in[n : n+i+1]
			n += i + 1
			s.command(line)
		}
	}
	return n
}

// Output returns the replies produced so far. The slice is valid until the
// next call on s; call ClearOutput once it is written.
func (s *Session) Output() []byte { return s.out }

// ClearOutput drops the replies returned by Output and gives the buffer
// back. A buffer grown past it by heavy pipelining is let go.
func (s *Session) ClearOutput() {
	if cap(s.out) == maxIdleOut {
		outBufs.put((*outBuf)(s.out[:maxIdleOut]))
	}
	s.out = nil
}

// OutputFull reports that Output has reached OutputLimit, so Feed consumes
// nothing more until ClearOutput.
func (s *Session) OutputFull() bool { return len(s.out) >= OutputLimit }

// Waiting reports a complete message waiting for Delivered or Failed.
func (s *Session) Waiting() bool { return s.state == stateWait }

// StartingTLS reports that STARTTLS was accepted: the server sends
// "220 2.0.0 Ready to start TLS" itself, runs the handshake and calls
// TLSStarted. Bytes the client sent after the STARTTLS line must be thrown
// away, never fed (CVE-2011-0411).
func (s *Session) StartingTLS() bool { return s.state == stateTLS }

// TLSStarted resets the session after a successful handshake: RFC 3207 4.2
// makes the client start again with EHLO, and STARTTLS is not offered again.
func (s *Session) TLSStarted() {
	s.resetTx()
	s.helo = s.helo[:0]
	s.esmtp = false
	s.hello = false // the EHLO RFC 3207 4.2 requires now is no junk
	s.tls = true
	s.state = stateGreeted
	s.commands++
	s.tidy()
}

// TLS reports whether TLS is in force.
func (s *Session) TLS() bool { return s.tls }

// Closed reports that the session has ended (QUIT, a fatal error, Abort):
// write Output, then close the connection.
func (s *Session) Closed() bool { return s.state == stateClosed }

// InTransfer reports that message data is being read (DATA, or a BDAT
// transaction), which runs under the transaction deadline rather than the
// command deadline.
func (s *Session) InTransfer() bool {
	return s.state == stateData || s.state == stateBdat || s.inBdat
}

// Idle reports that no transaction is open: no MAIL accepted (or it was
// answered, reset or given up), no check pending, no message waiting.
func (s *Session) Idle() bool {
	switch s.state {
	case stateGreeted, stateReady, stateClosed:
		return !s.inBdat
	}
	return false
}

// Commands counts the commands completed so far; a change tells the server
// to restart its per-command deadline.
func (s *Session) Commands() uint64 { return s.commands }

// Envelope describes the waiting message. Its byte slices point into the
// session and are valid until Delivered or Failed.
//
// Addresses (From, Rcpts, and what Handler.CheckRcpt is given) are in the
// one canonical form nanomx uses from here on, down to the Return-Path and
// Received fields: the RFC 5321 4.1.2 Mailbox, without angle brackets or
// source route.
//
//   - The local part is a Dot-string when the string it names is one
//     (atext, UTF-8 included, in atoms joined by single dots): <"bob"@x>
//     and <"b\ob"@x> are both bob@x. Otherwise it is a Quoted-string in
//     which only '"' and '\' are backslash-escaped, every other quoted-pair
//     reduced to its octet: <"john\ doe"@x> is "john doe"@x, and the
//     tolerated <a..b@x> is "a..b"@x. The local part is never empty: an
//     empty string is "".
//   - Then "@" and the domain as received (case kept, UTF-8 U-labels
//     kept), minus a root dot; an address literal ([192.0.2.1],
//     [IPv6:...]) as is.
//   - <Postmaster>, in any case and maybe quoted, is the local part alone,
//     with no "@".
//
// No control octet (CR, LF, NUL, HTAB...) and no invalid UTF-8 can appear;
// SP, '<' and '>' only inside the quotes. The form is a fixed point: parsed
// again it comes back unchanged.
type Envelope struct {
	From     []byte   // reverse-path without <>; empty for the null sender
	Rcpts    [][]byte // accepted forward-paths
	Helo     []byte   // HELO/EHLO argument
	ESMTP    bool     // EHLO was used
	SMTPUTF8 bool     // MAIL had SMTPUTF8
	Size     int64    // decoded message size
}

// Envelope returns the envelope of the current transaction.
func (s *Session) Envelope() Envelope {
	env := Envelope{Helo: s.helo, ESMTP: s.esmtp, SMTPUTF8: s.utf8, Size: s.bodyLen}
	if s.txBufs == nil {
		return env // idle: no transaction
	}
	s.views = s.views[:0]
	for _, r := range s.rcpts {
		s.views = append(s.views, s.arena[r.off:r.off+r.len])
	}
	env.From = s.arena[s.from.off : s.from.off+s.from.len]
	env.Rcpts = s.views
	return env
}

// Delivered answers the waiting message "250 2.0.0 OK: queued as id" and
// readies the session for the next transaction.
func (s *Session) Delivered(id string) {
	if s.state != stateWait {
		return
	}
	s.out = appendQueued(s.outBuf(), id)
	s.junk = 0 // a delivered message restarts the junk count, as in Postfix
	s.endWait()
}

// Failed answers the waiting message with r (a 4xx or 5xx).
func (s *Session) Failed(r *Reply) {
	if s.state != stateWait {
		return
	}
	s.reply(r)
	s.endWait()
}

func (s *Session) endWait() {
	s.bodyBegun = false // the server took the body
	s.state = stateReady
	s.resetTx()
	s.commands++
	s.tidy()
}

// Abort ends the session with r (a 421), e.g. on timeout or shutdown. A
// body begun and not yet handed to delivery is dropped.
func (s *Session) Abort(r *Reply) {
	if s.state == stateClosed {
		return
	}
	if s.state != stateWait {
		s.dropBody()
	}
	s.reply(r)
	s.state = stateClosed
	s.tidy()
}

func (s *Session) reply(r *Reply) { s.out = append(s.outBuf(), r.line...) }

// reject answers a refused command and counts it against MaxBadCommands.
func (s *Session) reject(r *Reply) {
	s.reply(r)
	s.bad++
	if s.bad >= s.d.cfg.MaxBadCommands && s.state != stateClosed {
		s.dropBody()
		s.reply(ReplyTooManyErrors)
		s.state = stateClosed
	}
}

func (s *Session) close(r *Reply) {
	s.dropBody()
	s.reply(r)
	s.state = stateClosed
}

func (s *Session) dropBody() {
	if s.bodyBegun {
		s.bodyBegun = false
		s.h.AbortBody()
	}
}

// resetTx forgets the transaction (RFC 5321 4.1.1.5), keeping HELO. Buffers
// a big transaction grew past the idle bounds are dropped.
func (s *Session) resetTx() {
	s.dropBody()
	if s.txBufs != nil {
		s.txBufs.empty()
	}
	s.from = span{}
	s.utf8 = false
	s.declSize = 0
	s.inBdat = false
	s.heldCR = false
	s.bodyLen = 0
	s.tooBig, s.bare, s.bodyErr = false, false, nil
	if s.state > stateReady {
		s.state = stateReady
	}
}
