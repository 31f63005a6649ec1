package proto

import (
	"bytes"
	"strconv"
)

// BareNewline says what a session does with a bare LF or bare CR inside
// message data (DATA or BDAT). Either way such a byte never ends a line or
// the message: only <CRLF>.<CRLF> ends DATA, so nothing can be smuggled
// (CVE-2023-51764 class).
type BareNewline uint8

const (
	// BareNewlineReject reads on to the end of the message without storing
	// it, answers 550 5.5.2 and closes, like chasquid and Postfix's
	// smtpd_forbid_bare_newline=yes.
	BareNewlineReject BareNewline = iota
	// BareNewlineNormalize stores a bare LF as a line ending and a bare CR
	// as itself, like Postfix 3.9's default "normalize".
	BareNewlineNormalize
)

// Config holds the protocol limits. Every field must be set, but for
// MaxJunkCommands, which has a default; the server fills it from its own
// configuration.
type Config struct {
	// Hostname is announced in the greeting and the EHLO reply.
	Hostname string
	// MaxLineBytes bounds a command line including CRLF (RFC 5321
	// 4.5.3.1.4: 512). Longer lines get 500 5.5.2 and the session goes on.
	MaxLineBytes int
	// MaxAddressAllowance is extra room for MAIL and RCPT lines, on top of
	// the room advertised extensions grant, for the long SRS and VERP
	// addresses real senders use.
	MaxAddressAllowance int
	// MaxRcpts bounds accepted recipients per transaction (then 452 4.5.3).
	MaxRcpts int
	// MaxMessageBytes bounds the stored message. Data past it is discarded
	// and the transaction answered 552 5.3.4 at its end.
	MaxMessageBytes int64
	// MaxBadCommands bounds rejected commands per session, RCPTs refused
	// with 550 5.1.1 included; then 421 4.7.0 and close.
	MaxBadCommands int
	// MaxJunkCommands bounds NOOP, RSET, HELP, VRFY and repeated HELO/EHLO
	// per session, like Postfix's smtpd_junk_command_limit: the junk
	// command past it is not run but answered 421 4.7.0, and the session
	// closes. The count restarts after each delivered message. A HELO or
	// EHLO is repeated when one was already accepted since the session
	// (or TLS, RFC 3207 4.2) began. Zero or less means
	// DefaultMaxJunkCommands.
	MaxJunkCommands int
	// BareNewline is the policy for bare CR and LF in message data.
	BareNewline BareNewline
	// StartTLS offers STARTTLS (RFC 3207) on plaintext sessions.
	StartTLS bool
	// TLSRequired refuses MAIL before STARTTLS with 530 5.7.0.
	TLSRequired bool
}

// Extra room for MAIL and RCPT lines granted by the extensions nanomx
// advertises: SIZE (RFC 1870 4: 26 octets), BODY=8BITMIME and SMTPUTF8.
const mailExtensionRoom = 26 + len(" BODY=8BITMIME") + len(" SMTPUTF8")

// maxHeloBytes bounds the stored HELO argument (a domain is at most 255).
const maxHeloBytes = 255

// DefaultMaxJunkCommands is the junk command limit of a Config that sets
// none (Postfix's smtpd_junk_command_limit default).
const DefaultMaxJunkCommands = 100

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

// Dialect is a prepared, immutable Config shared by every session: it
// holds the preformatted greeting and EHLO reply.
type Dialect struct {
	cfg         Config
	greeting    []byte
	ehlo        []byte // without STARTTLS: TLS sessions, or not offered
	ehloPlain   []byte // for plaintext sessions: with STARTTLS if offered
	helo        []byte
	maxMailLine int
	maxJunk     int // MaxJunkCommands, or its default
}

// NewDialect prepares cfg for sessions.
func NewDialect(cfg Config) *Dialect {
	d := &Dialect{cfg: cfg}
	d.greeting = []byte("220 " + cfg.Hostname + " ESMTP nanomx\r\n")
	d.helo = []byte("250 " + cfg.Hostname + "\r\n")
	ext := "250-PIPELINING\r\n" +
		"250-SIZE " + strconv.FormatInt(cfg.MaxMessageBytes, 10) + "\r\n" +
		"250-8BITMIME\r\n" +
		"250-ENHANCEDSTATUSCODES\r\n" +
		"250-SMTPUTF8\r\n" +
		"250 CHUNKING\r\n"
	d.ehlo = []byte("250-" + cfg.Hostname + "\r\n" + ext)
	d.ehloPlain = d.ehlo
	if cfg.StartTLS {
		// RFC 3207 4: STARTTLS is offered only before TLS is in force.
		d.ehloPlain = []byte("250-" + cfg.Hostname + "\r\n250-STARTTLS\r\n" + ext)
	}
	d.maxMailLine = cfg.MaxLineBytes + mailExtensionRoom + cfg.MaxAddressAllowance
	d.maxJunk = cfg.MaxJunkCommands
	if d.maxJunk <= 0 {
		d.maxJunk = DefaultMaxJunkCommands
	}
	return d
}

// Greeting returns the 220 banner. The slice is shared: do not modify it.
func (d *Dialect) Greeting() []byte { return d.greeting }

// Config returns the settings the dialect was built from, as given (a zero
// MaxJunkCommands stays zero).
func (d *Dialect) Config() Config { return d.cfg }

// Handler is what a session asks of its server. Its methods run on the
// goroutine that calls Feed and must not block. Byte slices passed in are
// borrowed: copy what you keep.
type Handler interface {
	// CheckHelo decides a HELO/EHLO name (the first token of its argument,
	// at most 255 octets). nil accepts. A refusal must carry no enhanced
	// status code (RFC 2034 3); a 421 ends the session.
	CheckHelo(name []byte, esmtp bool) *Reply
	// CheckMail decides a transaction's reverse-path (in the canonical
	// form Envelope describes; empty for the null sender) and parameters,
	// e.g. the declared SIZE= against free disk space (RFC 1870: 452
	// 4.3.1). nil accepts.
	CheckMail(from []byte, p MailParams) *Reply
	// CheckRcpt decides one recipient ("local@domain" or "Postmaster", in
	// the canonical form Envelope describes).
	// nil accepts; refusals such as ReplyUnknownUser or ReplyRelayDenied
	// are sent as they are.
	CheckRcpt(addr []byte) *Reply
	// CheckData decides a complete message whose body the handler holds
	// (BeginBody, WriteBody), before it is delivered. nil accepts: the
	// session then waits for delivery (Waiting). A refusal answers the
	// transaction and drops the body (AbortBody).
	CheckData() *Reply
	// BeginBody is called when DATA or the first BDAT chunk starts, with
	// the declared SIZE= or a hint. A non-nil reply refuses the body.
	BeginBody(sizeHint int64) *Reply
	// WriteBody receives decoded message bytes (dot-unstuffed, LF line
	// endings). A non-nil reply makes the session discard the rest and
	// answer that reply once the message ends.
	WriteBody(p []byte) *Reply
	// AbortBody drops the body begun by BeginBody. After BeginBody exactly
	// one of two things happens: AbortBody, or the session waits for
	// delivery (Waiting) and the server takes the body.
	AbortBody()
	// StartTLS is asked when a client sends STARTTLS, e.g. to take one of
	// a bounded number of TLS slots. nil lets the session wait for the
	// handshake (StartingTLS); a reply (454 4.7.0) refuses and the session
	// goes on in plaintext.
	StartTLS() *Reply
}

// The Check methods may also return Pending: the verdict is not known
// yet. The session then reads no further input (Feed consumes nothing,
// so pipelined commands stay with the caller) and produces no reply
// until the caller passes the verdict to Resume; replies keep their
// order. Arguments are borrowed until the method returns, also when it
// returns Pending: copy what the check needs.

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

// dataState tracks where the DATA decoder stands relative to line starts.
// Only CRLF starts a line, so only <CRLF>.<CRLF> ends the message.
type dataState uint8

const (
	dsLineStart dataState = iota // after CRLF (or at the start of DATA)
	dsMid                        // inside a line
	dsCR                         // saw CR inside a line
	dsDot                        // saw '.' at a line start
	dsDotCR                      // saw ".\r" at a line start
)

// span locates bytes in the session arena.
type span struct{ off, len int32 }

// Session is one SMTP conversation. It is fed bytes and produces replies
// and events; it does no I/O. A Session is not safe for concurrent use: the
// server's event loop owns it.
type Session struct {
	d *Dialect
	h Handler

	state state
	tls   bool   // TLS is in force (after TLSStarted)
	esmtp bool   // EHLO rather than HELO
	helo  []byte // owned copy of the HELO/EHLO argument
	out   []byte // replies not yet taken by the server

	// The transaction's envelope lives in arena; it is reset, not freed,
	// per transaction, so a warmed-up session allocates nothing.
	arena    []byte
	from     span
	rcpts    []span
	views    [][]byte // reused by Envelope
	utf8     bool     // MAIL had SMTPUTF8
	declSize int64    // MAIL SIZE=, 0 if absent

	// Body decoding (DATA and BDAT).
	ds         dataState
	bodyBegun  bool   // BeginBody accepted: the handler holds a body
	bodyLen    int64  // decoded octets stored or counted
	tooBig     bool   // passed MaxMessageBytes: discard the rest
	bare       bool   // saw a bare CR or LF
	bodyErr    *Reply // WriteBody refused: discard, answer this at the end
	inBdat     bool   // a BDAT transaction is open between chunks
	bdatLeft   int64  // octets of the current chunk still to read
	bdatSize   int64  // size of the current chunk, for its reply
	bdatLast   bool   // the current chunk is the LAST one
	bdatCR     bool   // the previous chunk ended in CR
	bdatRefuse *Reply // the chunk is refused: read and drop it, then answer
	bdatPrev   state  // state to return to after a refused chunk

	skipping bool // inside an over-long command line, dropping to its LF
	skipCR   bool // the last octet dropped while skipping was CR
	bad      int  // rejected commands so far
	junk     int  // junk commands since the session began or a delivery
	hello    bool // a HELO/EHLO was accepted since the session or TLS began
	commands uint64

	pend pending // the check awaited in statePending
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

// Reset makes s a fresh session for a new connection, keeping its buffers
// (those within the idle bounds).
func (s *Session) Reset(h Handler) {
	views := keep(s.views, maxIdleSpans)
	clear(views[:cap(views)]) // no pointers into an arena that may go
	*s = Session{
		d: s.d, h: h,
		helo: s.helo[:0], out: keep(s.out, maxIdleOut), arena: keep(s.arena, maxIdleArena),
		rcpts: keep(s.rcpts, maxIdleSpans), views: views,
	}
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

// ClearOutput drops the replies returned by Output. A buffer grown past
// OutputLimit by heavy pipelining is let go rather than kept.
func (s *Session) ClearOutput() { s.out = keep(s.out, maxIdleOut) }

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
	s.views = s.views[:0]
	for _, r := range s.rcpts {
		s.views = append(s.views, s.arena[r.off:r.off+r.len])
	}
	return Envelope{
		From:     s.arena[s.from.off : s.from.off+s.from.len],
		Rcpts:    s.views,
		Helo:     s.helo,
		ESMTP:    s.esmtp,
		SMTPUTF8: s.utf8,
		Size:     s.bodyLen,
	}
}

// Delivered answers the waiting message "250 2.0.0 OK: queued as id" and
// readies the session for the next transaction.
func (s *Session) Delivered(id string) {
	if s.state != stateWait {
		return
	}
	s.out = append(s.out, "250 2.0.0 OK: queued as "...)
	s.out = append(s.out, id...)
	s.out = append(s.out, '\r', '\n')
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
}

func (s *Session) reply(r *Reply) { s.out = append(s.out, r.line...) }

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
	s.arena = keep(s.arena, maxIdleArena)
	s.from = span{}
	s.rcpts = keep(s.rcpts, maxIdleSpans)
	s.views = keep(s.views, maxIdleSpans)
	clear(s.views[:cap(s.views)]) // no pointers into an arena that may go
	s.utf8 = false
	s.declSize = 0
	s.inBdat = false
	s.bdatCR = false
	s.bodyLen = 0
	s.tooBig, s.bare, s.bodyErr = false, false, nil
	if s.state > stateReady {
		s.state = stateReady
	}
}

// command runs one command line, CRLF included.
func (s *Session) command(line []byte) {
	s.commands++
	if len(line) < 2 || line[len(line)-2] != '\r' {
		// RFC 5321 2.3.8: lines end in CRLF. A bare LF in a command is how
		// smuggling and desynchronisation start, so the session ends.
		s.close(ReplyBareLFCommand)
		return
	}
	if len(line) > s.d.cfg.MaxLineBytes {
		limit := s.d.cfg.MaxLineBytes
		if hasPrefixFold(line, "mail ") || hasPrefixFold(line, "rcpt ") {
			limit = s.d.maxMailLine
		}
		if len(line) > limit {
			s.reject(ReplyLineTooLong)
			return
		}
	}
	line = line[:len(line)-2]
	if badCommandByte(line) {
		s.reject(ReplyBadCharacter)
		return
	}
	verb, arg := splitVerb(line)
	if s.tooMuchJunk(verb) {
		return
	}
	switch verb {
	case verbEhlo:
		s.handleHelo(arg, true)
	case verbHelo:
		s.handleHelo(arg, false)
	case verbMail:
		s.handleMail(arg)
	case verbRcpt:
		s.handleRcpt(arg)
	case verbData:
		s.handleData(arg)
	case verbBdat:
		s.handleBdat(arg)
	case verbRset:
		s.handleRset(arg)
	case verbNoop:
		s.reply(ReplyOK)
	case verbQuit:
		s.close(ReplyBye)
	case verbVrfy:
		// RFC 5321 3.5.3: 252 for every address, so VRFY confirms nothing.
		if len(arg) == 0 {
			s.reject(ReplyVrfySyntax)
			return
		}
		s.reply(ReplyVrfy)
	case verbHelp:
		s.reply(ReplyHelp)
	case verbStar:
		s.handleStartTLS(arg)
	case verbExpn, verbTurn, verbEtrn, verbAtrn, verbAuth, verbSend, verbSoml, verbSaml:
		s.reject(ReplyNotImplemented)
	default:
		s.reject(ReplyUnknownCommand)
	}
}

// tooMuchJunk counts a junk command (NOOP, RSET, HELP, VRFY, a repeated
// HELO/EHLO) and, past MaxJunkCommands, answers 421 instead of running it
// and closes. Junk commands are harmless one by one but keep a connection
// slot busy without moving mail.
func (s *Session) tooMuchJunk(verb uint32) bool {
	switch verb {
	case verbNoop, verbRset, verbHelp, verbVrfy:
	case verbHelo, verbEhlo:
		if !s.hello {
			return false
		}
	default:
		return false
	}
	s.junk++
	if s.junk <= s.d.maxJunk {
		return false
	}
	if verb == verbHelo || verb == verbEhlo {
		s.close(ReplyTooManyJunkHelo)
	} else {
		s.close(ReplyTooManyJunk)
	}
	return true
}

func (s *Session) handleHelo(arg []byte, esmtp bool) {
	if len(arg) == 0 {
		if esmtp {
			s.reject(ReplyEhloSyntax)
		} else {
			s.reject(ReplyHeloSyntax)
		}
		return
	}
	// Any first token is taken: real clients send underscores, address
	// literals and worse; it is only ever written, sanitised, into the
	// Received header.
	tok, _ := nextToken(arg)
	if len(tok) > maxHeloBytes {
		tok = tok[:maxHeloBytes]
	}
	// The name waits at the end of the arena until the verdict: a refused
	// HELO changes nothing (the transaction and the old name stay).
	mark := len(s.arena)
	s.arena = append(s.arena, tok...)
	r := s.h.CheckHelo(s.arena[mark:], esmtp)
	if r == Pending {
		s.await(pending{stage: stageHelo, mark: int32(mark), esmtp: esmtp})
		return
	}
	s.finishHelo(r, mark, esmtp)
}

func (s *Session) finishHelo(r *Reply, mark int, esmtp bool) {
	if r != nil {
		s.arena = s.arena[:mark]
		s.refuse(r)
		return
	}
	s.helo = append(s.helo[:0], s.arena[mark:]...)
	s.resetTx() // RFC 5321 4.1.4: EHLO/HELO resets the transaction
	s.esmtp = esmtp
	s.hello = true
	s.state = stateReady
	if esmtp && !s.tls {
		s.out = append(s.out, s.d.ehloPlain...)
	} else if esmtp {
		s.out = append(s.out, s.d.ehlo...)
	} else {
		s.out = append(s.out, s.d.helo...)
	}
}

func (s *Session) handleStartTLS(arg []byte) {
	switch {
	case !s.d.cfg.StartTLS:
		s.reject(ReplyNotImplemented)
	case s.tls:
		s.reject(ReplyTLSActive)
	case len(arg) > 0:
		s.reject(ReplyStartTLSSyntax)
	case s.state > stateReady:
		s.reject(ReplyTLSInTransaction)
	default:
		if r := s.h.StartTLS(); r != nil {
			s.reply(r)
			return
		}
		s.state = stateTLS
	}
}

func (s *Session) handleMail(arg []byte) {
	switch {
	case s.state == stateGreeted:
		s.reject(ReplyNeedHelo)
		return
	case s.d.cfg.TLSRequired && !s.tls:
		s.reject(ReplyNeedTLS)
		return
	case s.state != stateReady:
		s.reject(ReplyNestedMail)
		return
	case !hasPrefixFold(arg, "from:"):
		s.reject(ReplyMailSyntax)
		return
	}
	arg = trimSpace(arg[len("from:"):])
	mark := len(s.arena)
	arena, params, p, perr := parsePath(arg, s.arena)
	s.arena = arena
	switch {
	case perr == pathBadUTF8:
		s.arena = s.arena[:mark]
		s.reject(ReplyBadUTF8)
		return
	case perr != pathOK || (p.noDomain && !p.null):
		s.arena = s.arena[:mark]
		s.reject(ReplyBadSenderSyntax)
		return
	}
	var size int64
	var smtputf8, body8 bool
	for len(params) > 0 {
		var tok []byte
		tok, params = nextToken(params)
		key, val, hasVal := bytes.Cut(tok, []byte{'='})
		if !s.esmtp {
			s.arena = s.arena[:mark]
			s.reject(ReplyUnsupportedParam) // HELO advertised nothing
			return
		}
		var r *Reply
		switch {
		case equalFold(key, "size"):
			n, ok := parseDigits(val)
			if !ok {
				r = ReplyBadSizeParam
			}
			size = n
		case equalFold(key, "body"):
			switch {
			case equalFold(val, "7bit"):
			case equalFold(val, "8bitmime"):
				body8 = true
			case equalFold(val, "binarymime"):
				r = ReplyUnsupportedBody // RFC 3030 BINARYMIME is not offered
			default:
				r = ReplyBadBodyParam
			}
		case equalFold(key, "smtputf8") && !hasVal:
			smtputf8 = true
		default:
			r = ReplyUnsupportedParam // DSN's RET=/ENVID=, AUTH=, ...
		}
		if r != nil {
			s.arena = s.arena[:mark]
			s.reject(r)
			return
		}
	}
	if p.utf8 && !smtputf8 {
		s.arena = s.arena[:mark]
		s.reject(ReplyNeedSMTPUTF8) // RFC 6531 3.5
		return
	}
	if size > s.d.cfg.MaxMessageBytes {
		s.arena = s.arena[:mark]
		s.reply(ReplyDeclaredTooBig) // RFC 1870 6.1
		return
	}
	mp := MailParams{Size: size, SMTPUTF8: smtputf8, Body8Bit: body8}
	r := s.h.CheckMail(s.arena[mark:], mp)
	if r == Pending {
		s.await(pending{stage: stageMail, mark: int32(mark), mail: mp})
		return
	}
	s.finishMail(r, mark, mp)
}

func (s *Session) finishMail(r *Reply, mark int, mp MailParams) {
	if r != nil {
		s.arena = s.arena[:mark]
		s.refuse(r)
		return
	}
	s.from = span{int32(mark), int32(len(s.arena) - mark)}
	s.utf8 = mp.SMTPUTF8
	s.declSize = mp.Size
	s.state = stateMail
	s.reply(ReplyMailOK)
}

func (s *Session) handleRcpt(arg []byte) {
	switch {
	case s.state == stateGreeted:
		s.reject(ReplyNeedHelo)
		return
	case s.state == stateReady:
		s.reject(ReplyNeedMail)
		return
	case s.inBdat:
		s.reject(ReplyCommandInBdat)
		return
	case !hasPrefixFold(arg, "to:"):
		s.reject(ReplyRcptSyntax)
		return
	case len(s.rcpts) >= s.d.cfg.MaxRcpts:
		s.reply(ReplyTooManyRcpts) // RFC 5321 4.5.3.1.10
		return
	}
	arg = trimSpace(arg[len("to:"):])
	mark := len(s.arena)
	arena, params, p, perr := parsePath(arg, s.arena)
	s.arena = arena
	addr := s.arena[mark:]
	var r *Reply
	switch {
	case perr == pathBadUTF8:
		r = ReplyBadUTF8
	case perr != pathOK || p.null || (p.noDomain && !equalFold(addr, "postmaster")):
		r = ReplyBadRcptSyntax
	case len(params) > 0:
		r = ReplyUnsupportedParam // no RCPT parameter is advertised (no DSN)
	case p.utf8 && !s.utf8:
		r = ReplyNeedSMTPUTF8
	default:
		r = s.h.CheckRcpt(addr)
		if r == Pending {
			s.await(pending{stage: stageRcpt, mark: int32(mark)})
			return
		}
	}
	s.finishRcpt(r, mark)
}

func (s *Session) finishRcpt(r *Reply, mark int) {
	if r != nil {
		s.arena = s.arena[:mark]
		s.refuse(r) // counts 550 5.1.1 against address guessing
		return
	}
	s.rcpts = append(s.rcpts, span{int32(mark), int32(len(s.arena) - mark)})
	s.state = stateRcpt
	s.reply(ReplyRcptOK)
}

func (s *Session) handleRset(arg []byte) {
	if len(arg) > 0 {
		s.reject(ReplyNoParams)
		return
	}
	s.resetTx()
	s.reply(ReplyOK)
}

func (s *Session) handleData(arg []byte) {
	switch {
	case len(arg) > 0:
		s.reject(ReplyNoParams)
		return
	case s.state == stateGreeted:
		s.reject(ReplyNeedHelo)
		return
	case s.state == stateReady:
		s.reject(ReplyNeedMail)
		return
	case s.inBdat:
		s.reject(ReplyDataInBdat) // RFC 3030 3: no DATA in a BDAT transaction
		return
	case s.state == stateMail:
		s.reject(ReplyNeedRcpt) // RFC 5321 3.3 allows 503 or 554
		return
	}
	if r := s.h.BeginBody(s.declSize); r != nil {
		s.reply(r)
		return
	}
	s.bodyBegun = true
	s.bodyLen = 0
	s.tooBig, s.bare, s.bodyErr = false, false, nil
	s.ds = dsLineStart
	s.state = stateData
	s.reply(ReplyStartData)
}

func (s *Session) handleBdat(arg []byte) {
	tok, rest := nextToken(arg)
	size, ok := parseDigits(tok)
	last := false
	if len(rest) > 0 {
		if equalFold(rest, "last") {
			last = true
		} else {
			ok = false
		}
	}
	if !ok {
		// Without a size the chunk's end is unknown, and its octets would
		// be read as commands: the session cannot go on (RFC 3030 2).
		s.close(ReplyBdatSyntax)
		return
	}
	s.bdatSize, s.bdatLeft, s.bdatLast = size, size, last
	s.bdatRefuse = nil
	s.bdatPrev = s.state
	switch {
	case s.state == stateGreeted:
		s.bdatRefuse = ReplyNeedHelo
	case !s.esmtp:
		// HELO advertised no CHUNKING (RFC 3030 2 needs EHLO), as it
		// advertised no MAIL parameter. An open transaction stays as it
		// is: the command was refused, no chunk failed.
		s.bdatRefuse = ReplyBdatAfterHelo
	case s.state == stateReady:
		s.bdatRefuse = ReplyNeedMail
	case s.state == stateMail:
		s.bdatRefuse = ReplyNeedRcpt
	case !s.inBdat:
		hint := s.declSize
		if hint == 0 {
			hint = size
		}
		if r := s.h.BeginBody(hint); r != nil {
			// RFC 3030 3: a failed chunk fails the transaction.
			s.resetTx()
			s.bdatPrev = stateReady
			s.bdatRefuse = r
			break
		}
		s.bodyBegun = true
		s.inBdat = true
		s.bodyLen = 0
		s.tooBig, s.bare, s.bodyErr = false, false, nil
		s.bdatCR = false
	}
	// The chunk's octets are always read, even when refused, so that the
	// payload is never run as commands.
	s.state = stateBdat
	if size == 0 {
		s.endChunk()
	}
}

// feedBdat reads octets of the current chunk.
func (s *Session) feedBdat(p []byte) int {
	n := len(p)
	if int64(n) > s.bdatLeft {
		n = int(s.bdatLeft)
	}
	s.bdatLeft -= int64(n)
	if s.bdatRefuse == nil {
		s.decodeChunk(p[:n])
	}
	if s.bdatLeft == 0 {
		s.endChunk()
	}
	return n
}

// decodeChunk turns CRLF into LF and spots bare CR and LF; BDAT has no dot
// stuffing (RFC 3030 2). A CR ending a chunk is held until the next one.
func (s *Session) decodeChunk(c []byte) {
	if len(c) == 0 {
		return
	}
	i := 0
	if s.bdatCR {
		s.bdatCR = false
		if c[0] == '\n' {
			s.emit(lf)
			i = 1
		} else {
			s.bareCR()
		}
	}
	for i < len(c) {
		j := indexCRLF(c[i:])
		if j < 0 {
			s.emit(c[i:])
			return
		}
		s.emit(c[i : i+j])
		i += j
		if c[i] == '\n' {
			s.bareLF()
			i++
			continue
		}
		switch {
		case i+1 == len(c):
			s.bdatCR = true
			i++
		case c[i+1] == '\n':
			s.emit(lf)
			i += 2
		default:
			s.bareCR()
			i++
		}
	}
}

// endChunk answers a chunk whose octets have all been read.
func (s *Session) endChunk() {
	if r := s.bdatRefuse; r != nil {
		s.bdatRefuse = nil
		s.state = s.bdatPrev
		if r.Code >= 500 {
			s.reject(r)
		} else {
			s.reply(r)
		}
		return
	}
	if !s.bdatLast {
		s.state = stateRcpt
		s.out = append(s.out, "250 2.0.0 "...)
		s.out = strconv.AppendInt(s.out, s.bdatSize, 10)
		s.out = append(s.out, " octets received\r\n"...)
		return
	}
	if s.bdatCR {
		s.bdatCR = false
		s.bareCR()
	}
	s.endMessage()
}

var lf = []byte{'\n'}

// indexCRLF returns the index of the first CR or LF in b, or -1. Both
// searches are the runtime's vectorised IndexByte.
func indexCRLF(b []byte) int {
	j := bytes.IndexByte(b, '\n')
	if j < 0 {
		return bytes.IndexByte(b, '\r')
	}
	if k := bytes.IndexByte(b[:j], '\r'); k >= 0 {
		return k
	}
	return j
}

// feedData decodes DATA octets: dot-unstuffing (RFC 5321 4.5.2), CRLF to
// LF, bare CR/LF policy, end at <CRLF>.<CRLF> only. It works on any split
// of the input, carrying its position in s.ds.
func (s *Session) feedData(p []byte) int {
	i := 0
	for i < len(p) {
		switch s.ds {
		case dsMid:
			rest := p[i:]
			j := indexCRLF(rest)
			if j < 0 {
				s.emit(rest)
				return len(p)
			}
			s.emit(rest[:j])
			i += j + 1
			if rest[j] == '\r' {
				s.ds = dsCR
			} else {
				s.bareLF()
			}
		case dsCR:
			if p[i] == '\n' {
				s.emit(lf)
				s.ds = dsLineStart
				i++
			} else {
				s.bareCR()
				s.ds = dsMid
			}
		case dsLineStart:
			switch p[i] {
			case '.':
				s.ds = dsDot // dropped: a stuffed dot or the terminator
				i++
			case '\r':
				s.ds = dsCR
				i++
			default:
				s.ds = dsMid
			}
		case dsDot:
			if p[i] == '\r' {
				s.ds = dsDotCR
				i++
			} else {
				s.ds = dsMid
			}
		case dsDotCR:
			if p[i] == '\n' {
				s.endMessage()
				return i + 1
			}
			s.bareCR() // ".\rX": the CR is bare
			s.ds = dsMid
		}
	}
	return i
}

// emit stores decoded octets unless the message is being discarded.
func (s *Session) emit(p []byte) {
	if len(p) == 0 || s.tooBig || (s.bare && s.d.cfg.BareNewline == BareNewlineReject) {
		return
	}
	// Count on after a WriteBody refusal: a message over the limit gets
	// 552 however its data was cut into reads, not the handler's reply.
	s.bodyLen += int64(len(p))
	if s.bodyLen > s.d.cfg.MaxMessageBytes {
		s.tooBig = true
		return
	}
	if s.bodyErr != nil {
		return
	}
	if r := s.h.WriteBody(p); r != nil {
		s.bodyErr = r
	}
}

func (s *Session) bareLF() {
	if s.d.cfg.BareNewline == BareNewlineNormalize {
		s.emit(lf)
		return
	}
	s.bare = true
}

func (s *Session) bareCR() {
	if s.d.cfg.BareNewline == BareNewlineNormalize {
		s.emit(cr)
		return
	}
	s.bare = true
}

var cr = []byte{'\r'}

// endMessage runs when DATA's terminator or BDAT LAST's octets are read.
func (s *Session) endMessage() {
	s.inBdat = false
	switch {
	case s.bare && s.d.cfg.BareNewline == BareNewlineReject:
		s.close(ReplyBareNewline)
	case s.tooBig:
		s.state = stateReady
		s.resetTx()
		s.reply(ReplyTooBig)
	case s.bodyErr != nil:
		r := s.bodyErr
		s.state = stateReady
		s.resetTx()
		s.reply(r)
	default:
		r := s.h.CheckData()
		if r == Pending {
			s.state = stateRcpt // where the verdict returns to
			s.await(pending{stage: stageData})
			return
		}
		s.finishData(r)
	}
}

func (s *Session) finishData(r *Reply) {
	if r != nil {
		s.state = stateReady
		s.resetTx() // drops the body
		s.reply(r)
		return
	}
	s.state = stateWait
}
