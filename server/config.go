package server

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/rs/zerolog"

	"github.com/nanomx/nanomx/server/metrics"
	"github.com/nanomx/nanomx/server/rspamd"
	"github.com/nanomx/nanomx/spool"
)

// BareNewline policies for a bare LF or CR inside DATA or BDAT.
const (
	BareNewlineReject    = "reject"
	BareNewlineNormalize = "normalize"
)

// Config is everything the server needs to run. cmd/nanomx fills it from a
// TOML file and flags; tests fill it directly. The zero value is not usable:
// start from Defaults.
type Config struct {
	// Hostname is this MX's name: greeting, EHLO reply, Received header and
	// Maildir file names.
	Hostname string
	// Listen holds addresses such as "0.0.0.0:25", "[::]:25".
	Listen []string
	// MaildirRoot is the folder under which <domain>/<user>/ Maildirs live.
	MaildirRoot string

	// Domains accepted for delivery (case-insensitive).
	Domains []string
	// Postmaster is the mailbox address that postmaster@<every domain> and
	// the bare <Postmaster> reach (RFC 5321 4.5.1). Required.
	Postmaster string
	// Mailboxes are full addresses; bob@example.test lives at
	// <MaildirRoot>/example.test/bob/.
	Mailboxes []string
	// Aliases map one address to one or more mailbox addresses.
	Aliases map[string][]string
	// CatchAll maps a domain to the mailbox that receives mail for its
	// unknown local parts.
	CatchAll map[string]string
	// SubaddressSeparator splits bob+tag into bob; empty disables it.
	SubaddressSeparator string

	// MaxMessageBytes bounds one message; past it data is discarded and the
	// transaction answered 552 5.3.4.
	MaxMessageBytes int64
	// MaxRecipients per transaction (RFC 5321 4.5.3.1.8 asks for >= 100).
	MaxRecipients int
	// MaxLineBytes bounds a command line including CRLF (RFC 5321: 512).
	MaxLineBytes int
	// MaxAddressAllowance is extra room granted to MAIL and RCPT lines for
	// long SRS/VERP addresses, on top of what extensions grant.
	MaxAddressAllowance int
	// MaxBadCommands per session, counting RCPTs refused 550 5.1.1; then 421.
	MaxBadCommands int
	// MaxJunkCommands bounds NOOP, RSET, HELP, VRFY and repeated HELO/EHLO
	// per session (like Postfix's smtpd_junk_command_limit); past it 421
	// 4.7.0 and close. The count restarts after each delivered message.
	MaxJunkCommands int
	// MaxConnections in total and per client IP (IPv6 per /64).
	MaxConnections      int
	MaxConnectionsPerIP int
	// MaxPendingInput bounds unread pipelined bytes held while a reply waits
	// on storage; past it the client is answered 421 and closed.
	MaxPendingInput int
	// BodyBudgetBytes bounds the memory all message bodies in flight may
	// hold together; when it is spent new transactions get 452 4.3.1.
	// Only bytes that arrived are charged: a declared SIZE= or BDAT length
	// reserves nothing.
	BodyBudgetBytes int64
	// BodyBudgetPerIP bounds the share of BodyBudgetBytes that the
	// sessions of one client address (IPv6: one /64) may hold together.
	BodyBudgetPerIP int64
	// SpillThreshold is the body size past which a message is written to
	// its tmp/ file in chunks as it arrives (by the workers, never on the
	// event loop), so that a session holds a chunk or two in memory
	// whatever MaxMessageBytes is.
	SpillThreshold int64
	// BareNewline is BareNewlineReject or BareNewlineNormalize.
	BareNewline string

	// Workers is the size of the delivery worker pool; QueueLength bounds
	// messages waiting for a worker.
	Workers     int
	QueueLength int
	// Fsync makes deliveries durable before 250. Only benchmarks turn it off.
	Fsync bool
	// GroupCommit makes many deliveries durable with one flush (syncfs)
	// instead of fsyncs per file; the 250 still waits for it.
	GroupCommit bool

	// CommandTimeout bounds the wait for each command. DataTimeout bounds
	// each wait for message data during DATA/BDAT (an idle timeout, RFC
	// 5321 4.5.3.2.5: 3 minutes), and MinDataRate (bytes per second, 0 =
	// off) is the lowest average rate a transfer may fall to once it has
	// run for DataTimeout, which cuts a client trickling a byte at a time
	// (like Postfix's smtpd_min_data_rate). SessionTimeout bounds a whole
	// connection, except a transfer that keeps MinDataRate.
	CommandTimeout time.Duration
	DataTimeout    time.Duration
	MinDataRate    int64
	SessionTimeout time.Duration
	// ShutdownTimeout bounds the drain on SIGTERM.
	ShutdownTimeout time.Duration
	// GreetingDelay holds the 220 greeting back; a client that talks
	// before it is an early talker (like Postfix's postscreen pregreet
	// test): 554 5.5.1 and close. 0 greets at once.
	GreetingDelay time.Duration

	// EventLoops is the number of gnet event loops (1 suits one CPU).
	EventLoops int
	// SchedBatch locks the event loops to their threads and runs every
	// other thread of the process as SCHED_BATCH (Linux; schedbatch.go),
	// so that a waking helper thread does not preempt a busy loop.
	SchedBatch bool

	// TLSCert and TLSKey are PEM files (the certificate with its full
	// chain, and its key). When both are set, EHLO offers STARTTLS.
	TLSCert string
	TLSKey  string
	// TLSMinVersion is "1.2" or "1.3".
	TLSMinVersion string
	// TLSRequired refuses MAIL before STARTTLS (530 5.7.0). Off for an MX:
	// senders that cannot do TLS would bounce.
	TLSRequired bool
	// MaxTLSSessions bounds sessions running TLS at once (each holds a
	// goroutine and ~40 KB); over it STARTTLS gets 454 4.7.0.
	MaxTLSSessions int
	// TLSHandshakeTimeout bounds the handshake.
	TLSHandshakeTimeout time.Duration

	// Screening (screen.go): DNSBLSites are DNS block and allow lists in
	// postscreen's syntax ("zen.spamhaus.org=127.0.0.[2..11]*3"); a
	// client whose weights add up to DNSBLThreshold or more is refused,
	// at RCPT (550 5.7.1) or at connect (554 5.7.1) as DNSBLAction says.
	// Clients in ScreenAllow (CIDRs) skip the lists and the rates. The
	// rates are per client address (IPv6: its /64), 0 for none: over them
	// a connection gets 421 4.7.0, a MAIL or RCPT 451 4.7.1.
	DNSBLSites              []string
	DNSBLThreshold          int
	DNSBLAction             string
	ScreenAllow             []string
	MaxConnectionsPerMinute int
	MaxMessagesPerMinute    int
	MaxRecipientsPerMinute  int

	// PprofAddr, when set, is where cmd/nanomx serves net/http/pprof
	// (loopback only). The server itself does not read it.
	PprofAddr string

	// DNSServers are the recursive DNS servers ("ip:port") the checks
	// ask, in order; empty: the nameservers of /etc/resolv.conf.
	// DNSTimeout bounds one query to one server (0: 5s).
	DNSServers []string
	DNSTimeout time.Duration
	// Delivery is DeliveryMaildir (the spool writes the Maildirs) or
	// DeliveryLMTP (each message goes to the LMTP server at LMTP,
	// "unix:/run/dovecot/lmtp" or "host:port"; deliver.go). With LMTP,
	// LMTPConnections bounds the connections and deliveries in flight (0:
	// Workers), LMTPTimeout bounds connecting and each step, and
	// LMTPCheckRcpt asks the LMTP server about each recipient at RCPT.
	Delivery        string
	LMTP            string
	LMTPCheckRcpt   bool
	LMTPConnections int
	LMTPTimeout     time.Duration
	// ProxyListen are more listen addresses, where every connection must
	// begin with a PROXY protocol header (v1 or v2) from a peer in
	// ProxyTrusted; the client address it carries then stands for the
	// peer's everywhere (limits, checks, logs, the Received header).
	ProxyListen []string
	// ProxyTrusted are the proxies allowed to send that header: CIDR
	// prefixes ("10.0.0.0/8") or single addresses. Empty trusts none.
	ProxyTrusted []string
	// ProxyTimeout bounds the wait for the header.
	ProxyTimeout time.Duration
	// MetricsAddr, when set, is where the server serves Prometheus metrics
	// at /metrics, on a net/http server of its own. Loopback only unless
	// MetricsAllowPublic.
	MetricsAddr        string
	MetricsAllowPublic bool

	// Sender authentication (authcheck.go, server/auth): SPF, DKIM,
	// DMARC and iprev, each on its own; with all off nothing is looked up
	// and no Authentication-Results field is written. AuthservID names
	// this receiver in that field ("" is Hostname). DMARCRejectAction is
	// what a message failing p=reject gets (ActionReject, ActionJunk or
	// ActionHeader), DMARCQuarantineAction the same for p=quarantine
	// (ActionJunk or ActionHeader), SPFFailAction for SPF fail
	// (ActionHeader, or ActionReject: 550 5.7.23 at MAIL). JunkFolder is
	// the Maildir++ folder "junk" delivers into.
	SPF, DKIM, DMARC, IPRev bool
	AuthservID              string
	DMARCRejectAction       string
	DMARCQuarantineAction   string
	SPFFailAction           string
	JunkFolder              string

	// Log receives every log line.
	Log zerolog.Logger

	// RspamdURL is rspamd's normal worker, e.g. "http://127.0.0.1:11333":
	// every message is scanned at the end of data (POST /checkv2) and
	// rspamd's action applied (rspamd.go). Empty: no scanning.
	RspamdURL string
	// RspamdTimeout bounds a scan (at most CommandTimeout).
	RspamdTimeout time.Duration
	// RspamdMaxSize is the largest message scanned; 0 is SpillThreshold,
	// which it cannot exceed (a spilled message is not scanned).
	RspamdMaxSize int64
	// RspamdMaxConcurrent bounds the scans in flight; 4 times as many may
	// wait for a slot (within RspamdTimeout), and a message past those is
	// treated as a failed scan.
	RspamdMaxConcurrent int
	// RspamdOnError is what a failed scan (timeout, connection, HTTP
	// error, bad reply, too many in flight) means: RspamdOnErrorAccept
	// delivers unscanned, RspamdOnErrorTempfail answers 451 4.7.1.
	RspamdOnError string
	// RspamdJunk delivers what rspamd marks as spam ("add header",
	// "rewrite subject") into JunkFolder instead of the inbox.
	RspamdJunk bool

	// syncer replaces the durability step in tests (nil: by Fsync).
	syncer spool.Syncer
	// checks are the check stage's checks (tests only, so far: sender
	// authentication and screening will add theirs). With none, every
	// stage answers at once, as before the check stage existed.
	checks []Checker
}

// Defaults returns a Config with safe defaults and no domains.
func Defaults() Config {
	return Config{
		Hostname:            "localhost",
		Listen:              []string{"127.0.0.1:2525"},
		MaildirRoot:         "./mail",
		SubaddressSeparator: "+",
		MaxMessageBytes:     25 << 20,
		MaxRecipients:       100,
		MaxLineBytes:        512,
		MaxAddressAllowance: 512,
		MaxBadCommands:      20,
		MaxJunkCommands:     100,
		MaxConnections:      2000,
		MaxConnectionsPerIP: 20,
		MaxPendingInput:     64 << 10,
		BodyBudgetBytes:     256 << 20,
		BodyBudgetPerIP:     32 << 20,
		SpillThreshold:      256 << 10,
		BareNewline:         BareNewlineReject,
		Workers:             4,
		QueueLength:         256,
		Fsync:               true,
		GroupCommit:         true,
		CommandTimeout:      5 * time.Minute,
		DataTimeout:         3 * time.Minute,
		MinDataRate:         500,
		SessionTimeout:      30 * time.Minute,
		ShutdownTimeout:     30 * time.Second,
		EventLoops:          1,
		SchedBatch:          true,
		TLSMinVersion:       "1.2",
		MaxTLSSessions:      1000,
		TLSHandshakeTimeout: 30 * time.Second,
		DNSServers:          []string{}, // /etc/resolv.conf's (not nil: reads back from check-config the same)
		DNSTimeout:          5 * time.Second,
		DNSBLSites:          []string{}, // empty, not nil: as a file's [] reads
		DNSBLThreshold:      1,
		DNSBLAction:         DNSBLAtRcpt,
		ScreenAllow:         []string{},
		Delivery:            DeliveryMaildir,
		LMTPTimeout:         30 * time.Second,
		ProxyListen:         []string{}, // empty, not nil: as a file's [] reads
		ProxyTrusted:        []string{},
		ProxyTimeout:        10 * time.Second,
		// Off here (tests, the development default); cmd/nanomx turns
		// them on for a configuration file.
		DMARCRejectAction:     ActionReject,
		DMARCQuarantineAction: ActionJunk,
		SPFFailAction:         ActionHeader,
		JunkFolder:            "Junk",
		RspamdTimeout:         10 * time.Second,
		RspamdMaxConcurrent:   16,
		RspamdOnError:         RspamdOnErrorAccept,
		Log:                   zerolog.Nop(),
	}
}

// ConfigError names the setting that is wrong.
type ConfigError struct {
	Key string
	Err error
}

func (e *ConfigError) Error() string { return e.Key + ": " + e.Err.Error() }
func (e *ConfigError) Unwrap() error { return e.Err }

// Validate checks the settings that do not depend on the address book
// (the spool validates domains, mailboxes and aliases).
func (c *Config) Validate() error {
	bad := func(key, format string, args ...any) error {
		return &ConfigError{Key: key, Err: fmt.Errorf(format, args...)}
	}
	for _, a := range c.Listen {
		if err := checkListenAddr(a); err != nil {
			return &ConfigError{Key: "listen", Err: err}
		}
	}
	if c.MetricsAddr != "" {
		if err := metrics.CheckAddr(c.MetricsAddr, c.MetricsAllowPublic); err != nil {
			return &ConfigError{Key: "metrics", Err: err}
		}
	}
	switch {
	case c.Hostname == "":
		return bad("hostname", "must not be empty")
	case len(c.Listen) == 0:
		return bad("listen", "needs at least one address")
	case c.MaildirRoot == "":
		return bad("maildir_root", "must not be empty")
	case c.Postmaster == "":
		return &ConfigError{Key: "postmaster", Err: errors.New("is required (RFC 5321 4.5.1: postmaster must be accepted)")}
	case c.MaxMessageBytes < 1024:
		return bad("max_message_size", "must be at least 1024 bytes")
	case c.MaxRecipients < 1:
		return bad("max_recipients", "must be at least 1")
	case c.MaxLineBytes < 512:
		return bad("max_line_length", "must be at least 512 (RFC 5321 4.5.3.1.4)")
	case c.MaxAddressAllowance < 0:
		return bad("max_address_allowance", "must not be negative")
	case c.MaxBadCommands < 1:
		return bad("max_bad_commands", "must be at least 1")
	case c.MaxConnections < 1:
		return bad("max_connections", "must be at least 1")
	case c.MaxConnectionsPerIP < 1:
		return bad("max_connections_per_ip", "must be at least 1")
	case c.MaxPendingInput < 4096:
		return bad("max_pending_input", "must be at least 4096 bytes")
	case c.MaxJunkCommands < 1:
		return bad("max_junk_commands", "must be at least 1")
	case c.BodyBudgetBytes < c.MaxMessageBytes:
		return bad("body_budget", "must be at least max_message_size (%d bytes)", c.MaxMessageBytes)
	case c.BodyBudgetPerIP < 1<<20 || c.BodyBudgetPerIP > c.BodyBudgetBytes:
		return bad("body_budget_per_ip", "must be between 1 MiB and body_budget")
	case c.SpillThreshold < 64<<10 || c.SpillThreshold > c.BodyBudgetPerIP/4:
		return bad("spill_threshold", "must be between 64 KiB and a quarter of body_budget_per_ip")
	case c.MinDataRate < 0:
		return bad("min_data_rate", "must not be negative")
	case c.BareNewline != BareNewlineReject && c.BareNewline != BareNewlineNormalize:
		return bad("bare_newline", "must be %q or %q", BareNewlineReject, BareNewlineNormalize)
	case c.Workers < 1:
		return bad("workers", "must be at least 1")
	case c.QueueLength < 1:
		return bad("queue_length", "must be at least 1")
	case c.CommandTimeout < time.Second:
		return bad("command_timeout", "must be at least 1s")
	case c.DataTimeout < time.Second:
		return bad("data_timeout", "must be at least 1s")
	case c.SessionTimeout < c.CommandTimeout:
		return bad("session_timeout", "must be at least command_timeout")
	case c.GreetingDelay < 0 || c.GreetingDelay > time.Minute:
		return bad("greeting_delay", "must be between 0 and 1m")
	case c.EventLoops < 1:
		return bad("event_loops", "must be at least 1")
	case (c.TLSCert == "") != (c.TLSKey == ""):
		return bad("tls_key", "tls_cert and tls_key must be set together")
	case c.TLSMinVersion != "1.2" && c.TLSMinVersion != "1.3":
		return bad("tls_min_version", `must be "1.2" or "1.3"`)
	case c.TLSRequired && c.TLSCert == "":
		return bad("tls_required", "needs tls_cert and tls_key")
	case c.MaxTLSSessions < 1:
		return bad("max_tls_sessions", "must be at least 1")
	case c.TLSHandshakeTimeout < time.Second:
		return bad("tls_handshake_timeout", "must be at least 1s")
	}
	if err := c.validateDNS(); err != nil {
		return err
	}
	if err := c.validateScreen(); err != nil {
		return err
	}
	if err := c.validateDelivery(); err != nil {
		return err
	}
	if err := c.validateProxy(); err != nil {
		return err
	}
	if err := c.validateAuth(); err != nil {
		return err
	}
	return c.validateRspamd()
}

// validateRspamd checks the rspamd_* settings and junk_folder.
func (c *Config) validateRspamd() error {
	bad := func(key, format string, args ...any) error {
		return &ConfigError{Key: key, Err: fmt.Errorf(format, args...)}
	}
	switch {
	case !spool.ValidFolder(c.JunkFolder):
		return bad("junk_folder", "%q is not a valid Maildir++ folder name", c.JunkFolder)
	case c.RspamdURL == "":
		return nil
	case c.RspamdTimeout < 100*time.Millisecond || c.RspamdTimeout > c.CommandTimeout:
		return bad("rspamd_timeout", "must be between 100ms and command_timeout")
	case c.RspamdMaxSize < 0 || c.RspamdMaxSize > c.SpillThreshold:
		return bad("rspamd_max_size", "must be between 0 (spill_threshold) and spill_threshold (%d bytes): a spilled message is not scanned", c.SpillThreshold)
	case c.RspamdMaxConcurrent < 1 || c.RspamdMaxConcurrent > 1024:
		return bad("rspamd_max_concurrent", "must be between 1 and 1024")
	case c.RspamdOnError != RspamdOnErrorAccept && c.RspamdOnError != RspamdOnErrorTempfail:
		return bad("rspamd_on_error", "must be %q or %q", RspamdOnErrorAccept, RspamdOnErrorTempfail)
	}
	if _, err := rspamd.New(rspamd.Config{URL: c.RspamdURL}); err != nil {
		return &ConfigError{Key: "rspamd_url", Err: err}
	}
	return nil
}

// checkListenAddr refuses a listen address that no bind could accept: one
// without a port, or whose port is not a number from 1 to 65535 (port 0
// would pick a random port, which no MX record can name). The host may be
// empty (every address), an IP literal or a name.
func checkListenAddr(a string) error {
	_, port, err := net.SplitHostPort(a)
	if err != nil {
		var ae *net.AddrError
		if errors.As(err, &ae) {
			return fmt.Errorf("%q: %s (write host:port, an IPv6 address in brackets: \"[::]:25\")", a, ae.Err)
		}
		return fmt.Errorf("%q: %w", a, err)
	}
	if port == "" {
		return fmt.Errorf("%q: missing port", a)
	}
	for i := 0; i < len(port); i++ {
		if port[i] < '0' || port[i] > '9' {
			return fmt.Errorf("%q: port %q is not a number", a, port)
		}
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("%q: port %s is out of range (1-65535)", a, port)
	}
	return nil
}
