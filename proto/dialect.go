package proto

import "strconv"

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
	// Counters, when set, counts the sessions' commands (metrics). Optional.
	Counters *Counters
}

// Extra room for MAIL and RCPT lines granted by the extensions nanomx
// advertises: SIZE (RFC 1870 4: 26 octets), BODY=8BITMIME and SMTPUTF8.
const mailExtensionRoom = 26 + len(" BODY=8BITMIME") + len(" SMTPUTF8")

// maxHeloBytes bounds the stored HELO argument (a domain is at most 255).
const maxHeloBytes = 255

// DefaultMaxJunkCommands is the junk command limit of a Config that sets
// none (Postfix's smtpd_junk_command_limit default).
const DefaultMaxJunkCommands = 100

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
