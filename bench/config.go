package bench

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"time"
)

// Config describes one run. The zero value of a field means its default
// (see Defaults), except for the bools.
type Config struct {
	// Label names the run in reports (RESULTS.md, the chart); free text.
	Label string `json:"label,omitempty"`
	// Target is the server's host:port.
	Target string `json:"target"`
	// Conns is the number of concurrent sessions sending messages.
	Conns int `json:"conns"`
	// Count is the number of messages to attempt; 0 means no bound by
	// count. Every claimed message counts, including one whose connection
	// could not be opened.
	Count int64 `json:"count,omitempty"`
	// Duration stops the run from starting new messages; those in flight
	// finish. 0 means no bound by time (Count then bounds the run).
	Duration time.Duration `json:"duration,omitempty"`
	// MaxDuration is the hard bound on the run, idle and slow set-up
	// included: past it every connection is cut, whatever Count and
	// Duration say.
	MaxDuration time.Duration `json:"max_duration"`
	// Size is the size of each message, header included.
	Size Size `json:"size"`
	// PerConn is how many messages a session sends before QUIT; 1 opens a
	// connection per message, 0 keeps sessions until the run ends.
	PerConn int `json:"per_conn"`
	// Rcpts is the number of recipients per message, taken in turn from To.
	Rcpts int `json:"rcpts"`
	// From is the envelope sender.
	From string `json:"from"`
	// To are the recipient addresses, used round robin.
	To []string `json:"to"`
	// Pipelining sends MAIL, every RCPT and DATA in one write when the
	// server offers PIPELINING (RFC 2920).
	Pipelining bool `json:"pipelining"`
	// EHLO is the name sent with EHLO.
	EHLO string `json:"ehlo"`
	// Seed fixes the body text and the sizes of a "mix" run.
	Seed int64 `json:"seed"`
	// RunID starts every marker; random when empty.
	RunID string `json:"run_id"`
	// Timeout bounds each transaction, and each connect, greeting and EHLO.
	Timeout time.Duration `json:"timeout"`
	// SpreadSources binds each connection to the next local address of
	// 127.0.0.2-127.0.255.254 when the target is on 127.0.0.0/8, so
	// TIME_WAIT does not use up the ephemeral ports of one address. It has
	// no effect on other targets.
	SpreadSources bool `json:"spread_sources"`
	// DKIMKey is a PEM private key file (RSA or Ed25519) that DKIM-signs
	// every message for the domain of From, with selector DKIMSelector
	// (default DefaultDKIMSelector): for the sender authentication
	// checks. Each signature is made once per recipient and body length.
	DKIMKey      string `json:"dkim_key,omitempty"`
	DKIMSelector string `json:"dkim_selector,omitempty"`

	// TLS upgrades every session, the idle and slow ones included, with
	// STARTTLS (RFC 3207) after the first EHLO, with a full handshake (no
	// session resumption), then says EHLO again. A server that does not
	// offer STARTTLS fails the session.
	TLS bool `json:"tls,omitempty"`
	// TLSCA is a PEM file of the certificate authorities to verify the
	// server's certificate with; empty skips verification (as most MTAs
	// do without MTA-STS or DANE).
	TLSCA string `json:"tls_ca,omitempty"`
	// TLSServerName is the name sent in SNI and verified against the
	// certificate; empty means the host of Target.
	TLSServerName string `json:"tls_servername,omitempty"`
	// TLSResume offers TLS session resumption: the load sessions share
	// one client session cache, so that a connection after the first
	// presents the ticket the server sent (TLS 1.3 PSK with ECDHE, or a
	// TLS 1.2 ticket). Without it every handshake is a full one.
	TLSResume bool `json:"tls_resume,omitempty"`

	// Rate, when not 0, makes the run open-loop: messages arrive on a
	// fixed schedule, Rate per second, whether or not earlier ones have
	// finished, and wait for a free session (of Conns) when none is; the
	// latency of each is also measured from its scheduled arrival
	// (Latencies.Scheduled), so a server that falls behind shows its
	// queue (no coordinated omission, as wrk2 and k6's
	// constant-arrival-rate). Duration or Count ends the arrivals.
	Rate float64 `json:"rate,omitempty"`
	// Profile, when set, shapes the traffic after a named mix; the only
	// one is "internet" (see profile.go and ProfileReport).
	Profile string `json:"profile,omitempty"`

	// PID is a local server process to measure from /proc; 0 for none.
	PID int `json:"pid,omitempty"`
	// Idle sessions are opened (greeting and EHLO, and STARTTLS with
	// TLS) before the load and held, silent, until it ends.
	Idle int `json:"idle,omitempty"`
	// Slow sessions trickle a transaction, one byte every SlowInterval,
	// while the load runs.
	Slow         int           `json:"slow,omitempty"`
	SlowInterval time.Duration `json:"slow_interval,omitempty"`
	// IdleRcpts, when not 0, makes each idle session run one transaction
	// before it falls silent: MAIL, IdleRcpts recipients of IdleRcptLen
	// bytes each (pipelined when offered), then RSET; what a session's
	// buffers keep from it shows in the RSS per idle session. The
	// recipients are unique long local parts at the domain of To[0]: the
	// server needs a catch-all for them.
	IdleRcpts   int `json:"idle_rcpts,omitempty"`
	IdleRcptLen int `json:"idle_rcpt_len,omitempty"`

	// Unread sessions are opened before the load, each sends UnreadBytes
	// of UnreadCommand lines, pipelined as fast as the socket takes them,
	// and reads nothing until it has sent them all, the server stopped
	// taking them (UnreadStall without progress), UnreadFor passed or the
	// server's RSS passed RSSLimit; then it reads what the server sent,
	// and is closed before the load starts.
	Unread        int    `json:"unread,omitempty"`
	UnreadBytes   int64  `json:"unread_bytes,omitempty"`
	UnreadCommand string `json:"unread_command,omitempty"`
	// UnreadFirst, when set, is a command line sent once before them, in
	// the same stream ("MAIL FROM:<>" before a flood of RCPTs).
	UnreadFirst string        `json:"unread_first,omitempty"`
	UnreadFor   time.Duration `json:"unread_for,omitempty"`
	// RSSLimit (bytes, 0 for none) stops the unread sessions' writing
	// when the server's VmRSS (PID) passes it: a server with no bound on
	// its output would otherwise take the machine's memory.
	RSSLimit int64 `json:"rss_limit,omitempty"`
	// GCFloor (bytes, 0 for none) is heap the load generator sets aside
	// untouched for the run, so that its garbage collector runs about
	// GCFloor bytes of garbage apart instead of at every few MiB: a
	// STARTTLS handshake leaves ~100 KB, and collecting every few of them
	// cost the load ~10 % of its CPU. The memory is never written, so it
	// is not resident; the garbage between collections is (at most about
	// GCFloor more).
	GCFloor int64 `json:"gc_floor,omitempty"`

	// Silent sessions are opened before the load and held during it: each
	// says MAIL FROM:<>, RCPT TO:<SilentRcpt>, BDAT n and then nothing, a
	// chunk announced and never sent; session i announces SilentBDAT[(i-1)
	// % len], so that large and small chunks can take turns. SilentRcpt defaults to
	// postmaster at the domain of To[0]. SilentSource, when set, is the
	// one local address they all come from (else they spread like the
	// others).
	Silent       int     `json:"silent,omitempty"`
	SilentRcpt   string  `json:"silent_rcpt,omitempty"`
	SilentBDAT   []int64 `json:"silent_bdat,omitempty"`
	SilentSource string  `json:"silent_source,omitempty"`

	// VerifyMaildir, when set, is searched after the run for the markers
	// of this run (see VerifyMaildir).
	VerifyMaildir string `json:"verify_maildir,omitempty"`

	// Progress receives a progress line every second (with a carriage
	// return, for a terminal); nil for none.
	Progress io.Writer `json:"-"`
}

// Defaults are the values Run uses for zero fields. Count defaults to
// DefaultCount only when Duration is zero too.
const (
	DefaultTarget       = "127.0.0.1:2525"
	DefaultConns        = 10
	DefaultCount        = 1000
	DefaultMaxDuration  = 15 * time.Minute
	DefaultSize         = 10_000
	DefaultFrom         = "bench@localhost"
	DefaultTo           = "bench@localhost"
	DefaultEHLO         = "bench.localhost"
	DefaultTimeout      = 30 * time.Second
	DefaultSlowInterval = 2 * time.Second
	DefaultIdleRcptLen  = 200
	DefaultUnreadBytes  = 24 << 20
	DefaultUnreadCmd    = "EHLO a"
	DefaultUnreadFor    = 60 * time.Second
	DefaultSilentBDAT   = 999_999_999_999
)

// withDefaults returns c with zero fields set to their defaults, or an
// error for a field no default can fix.
func (c Config) withDefaults() (Config, error) {
	if c.Target == "" {
		c.Target = DefaultTarget
	}
	if c.Conns == 0 {
		c.Conns = DefaultConns
	}
	if c.Count == 0 && c.Duration == 0 {
		c.Count = DefaultCount
	}
	if c.MaxDuration == 0 {
		c.MaxDuration = DefaultMaxDuration
	}
	if c.Size == (Size{}) {
		c.Size = Size{Bytes: DefaultSize}
	}
	if c.Rcpts == 0 {
		c.Rcpts = 1
	}
	if c.From == "" {
		c.From = DefaultFrom
	}
	if len(c.To) == 0 {
		c.To = []string{DefaultTo}
	}
	if c.EHLO == "" {
		c.EHLO = DefaultEHLO
	}
	if c.Timeout == 0 {
		c.Timeout = DefaultTimeout
	}
	if c.SlowInterval == 0 {
		c.SlowInterval = DefaultSlowInterval
	}
	// The modes' own defaults, only for the modes in use: the others stay
	// out of the JSON.
	if c.IdleRcpts > 0 && c.IdleRcptLen == 0 {
		c.IdleRcptLen = DefaultIdleRcptLen
	}
	if c.Unread > 0 {
		if c.UnreadBytes == 0 {
			c.UnreadBytes = DefaultUnreadBytes
		}
		if c.UnreadCommand == "" {
			c.UnreadCommand = DefaultUnreadCmd
		}
		if c.UnreadFor == 0 {
			c.UnreadFor = DefaultUnreadFor
		}
	}
	if c.Silent > 0 {
		if c.SilentRcpt == "" {
			c.SilentRcpt = "postmaster@" + domainOf(c.To[0])
		}
		if len(c.SilentBDAT) == 0 {
			c.SilentBDAT = []int64{DefaultSilentBDAT}
		}
	}
	if c.RunID == "" {
		var b [4]byte
		_, _ = rand.Read(b[:])
		c.RunID = "r" + hex.EncodeToString(b[:])
	}
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	switch {
	case c.Conns < 0:
		bad("conns: must be at least 1")
	case c.Count < 0:
		bad("count: must not be negative")
	case c.Duration < 0:
		bad("duration: must not be negative")
	case c.MaxDuration < 0:
		bad("max-duration: must not be negative")
	case c.Duration > c.MaxDuration:
		bad("duration: %v is past max-duration %v", c.Duration, c.MaxDuration)
	case c.PerConn < 0:
		bad("per-conn: must not be negative")
	case c.Rcpts < 0:
		bad("rcpts: must be at least 1")
	case c.Timeout < 0:
		bad("timeout: must not be negative")
	case c.Idle < 0 || c.Slow < 0:
		bad("idle, slow: must not be negative")
	case c.SlowInterval < 0:
		bad("slow-interval: must not be negative")
	case !c.TLS && c.Profile == "" && (c.TLSCA != "" || c.TLSServerName != "" || c.TLSResume):
		bad("tls-ca, tls-servername, tls-resume: need tls")
	case c.Rate < 0:
		bad("rate: must not be negative")
	case c.Profile != "" && c.Profile != ProfileInternet:
		bad("profile %q: unknown (the one profile is %q)", c.Profile, ProfileInternet)
	case c.IdleRcpts < 0 || c.Unread < 0 || c.Silent < 0:
		bad("idle-rcpts, unread, silent: must not be negative")
	case c.IdleRcpts > 0 && c.IdleRcptLen < len("x@")+len(domainOf(c.To[0]))+12:
		bad("idle-rcpt-len: %d is too short for unique addresses at %s", c.IdleRcptLen, domainOf(c.To[0]))
	case c.UnreadBytes < 0 || c.UnreadFor < 0 || c.RSSLimit < 0 || c.GCFloor < 0 || slices.Min(append([]int64{0}, c.SilentBDAT...)) < 0:
		bad("unread-bytes, unread-for, rss-limit, gc-floor, silent-bdat: must not be negative")
	case c.Unread > 0 && c.UnreadBytes < int64(len(c.UnreadCommand)+2):
		bad("unread-bytes: less than one command")
	case c.RSSLimit > 0 && c.PID == 0:
		bad("rss-limit: needs pid")
	case c.SilentSource != "" && net.ParseIP(c.SilentSource) == nil:
		bad("silent-source %q: not an IP address", c.SilentSource)
	}
	if strings.ContainsAny(c.UnreadCommand+c.UnreadFirst, "\r\n") {
		bad("unread-command %q, unread-first %q: one line each, without CRLF", c.UnreadCommand, c.UnreadFirst)
	}
	if c.Size.Bytes < 0 || (!c.Size.Mix && c.Size.Bytes > maxFixedSize) {
		bad("size: must be from 1 byte to %d MiB", maxFixedSize>>20)
	}
	// Runs are compared by their markers: keep them one header token.
	if strings.ContainsAny(c.RunID, " \t\r\n<>@") {
		bad("run-id %q: no spaces, <, > or @", c.RunID)
	}
	for _, a := range append([]string{c.From, c.SilentRcpt}, c.To...) {
		if strings.ContainsAny(a, " \t\r\n<>") {
			bad("address %q: no spaces, < or >", a)
		}
	}
	if strings.ContainsAny(c.EHLO, " \t\r\n") {
		bad("ehlo %q: no spaces", c.EHLO)
	}
	return c, errors.Join(errs...)
}

// jsonConfig is Config with its durations as strings ("10s") in JSON.
type jsonConfig struct {
	plainConfig
	Duration     string `json:"duration,omitempty"`
	MaxDuration  string `json:"max_duration"`
	Timeout      string `json:"timeout"`
	SlowInterval string `json:"slow_interval,omitempty"`
	UnreadFor    string `json:"unread_for,omitempty"`
}

type plainConfig Config

// MarshalJSON writes c with durations as Go duration strings.
func (c Config) MarshalJSON() ([]byte, error) {
	j := jsonConfig{plainConfig: plainConfig(c), MaxDuration: c.MaxDuration.String(), Timeout: c.Timeout.String()}
	if c.Duration != 0 {
		j.Duration = c.Duration.String()
	}
	if c.Slow > 0 {
		j.SlowInterval = c.SlowInterval.String()
	}
	if c.Unread > 0 {
		j.UnreadFor = c.UnreadFor.String()
	}
	return json.Marshal(j)
}

// UnmarshalJSON reads what MarshalJSON wrote.
func (c *Config) UnmarshalJSON(b []byte) error {
	var j jsonConfig
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	*c = Config(j.plainConfig)
	for _, d := range []struct {
		s   string
		dst *time.Duration
	}{{j.Duration, &c.Duration}, {j.MaxDuration, &c.MaxDuration}, {j.Timeout, &c.Timeout}, {j.SlowInterval, &c.SlowInterval}, {j.UnreadFor, &c.UnreadFor}} {
		if d.s == "" {
			*d.dst = 0
			continue
		}
		v, err := time.ParseDuration(d.s)
		if err != nil {
			return err
		}
		*d.dst = v
	}
	return nil
}

// domainOf is the domain of address a, or "localhost" when it has none.
func domainOf(a string) string {
	if i := strings.LastIndexByte(a, '@'); i >= 0 && i+1 < len(a) {
		return a[i+1:]
	}
	return "localhost"
}
