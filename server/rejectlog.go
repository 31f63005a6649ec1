package server

// Reject lines. Every refusal of a client's connection, sender, recipient
// or message is logged as one info line, like Postfix's "NOQUEUE: reject:"
// line, so that fail2ban and "why did my mail bounce?" can be answered
// from the journal:
//
//	{"level":"info","time":"...","sid":"...","remote":"192.0.2.7","stage":"rcpt","code":550,"status":"5.1.1",
//	 "reason":"unknown_user","helo":"client.example","from":"a@example.org","rcpt":"nobody@example.test","message":"reject"}
//
// A client gets at most rejectLogLimit such lines a minute (per address,
// an IPv6 one by its /64, as the limits count); the rest are counted and
// reported in one "reject lines suppressed" line when its minute is over.
// The table the limit keeps is fixed in size, so a flood from many
// addresses costs no memory either: an address pushed out of a full set
// by a newer one has its count reported early and starts afresh.

import (
	"math/rand/v2"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/nanomx/nanomx/proto"
)

// Reject line limits: lines per client address per window.
const (
	rejectLogLimit  = 20
	rejectLogWindow = time.Minute
	// The table: rejectSets sets of rejectWays addresses.
	rejectSets = 256
	rejectWays = 4
)

// reason is why a refusal happened, as its line and the rejects metric
// name it.
type reason uint8

const (
	reasonMaxConns reason = iota
	reasonMaxConnsPerIP
	reasonEarlyTalker
	reasonNoSpace
	reasonUnknownUser
	reasonRelayDenied
	reasonNoMemory
	reasonCheckTimeout
	reasonCheck // a check's verdict: "<stage>_check"
	numReasons
)

// reasons names each reason and the reply that means it (none for a
// check's, whose reply is the check's).
var reasons = [numReasons]struct {
	name  string
	reply *proto.Reply
}{
	reasonMaxConns:      {"max_connections", proto.ReplyTooManyConns},
	reasonMaxConnsPerIP: {"max_connections_per_ip", proto.ReplyTooManyConnsPerIP},
	reasonEarlyTalker:   {"early_talker", proto.ReplyEarlyTalker},
	reasonNoSpace:       {"no_space", proto.ReplyNoSpace},
	reasonUnknownUser:   {"unknown_user", proto.ReplyUnknownUser},
	reasonRelayDenied:   {"relay_denied", proto.ReplyRelayDenied},
	reasonNoMemory:      {"no_memory", proto.ReplyNoStorageMemory},
	reasonCheckTimeout:  {"check_timeout", checkTimedOut.Reply},
	reasonCheck:         {"check", nil},
}

// stageNames name the stages (checks.go) in reject lines; checkReasons
// are the reasons of a check's refusal at each.
var (
	stageNames   = [...]string{stageNone: "", stageConnect: "connect", stageHelo: "helo", stageMail: "mail", stageRcpt: "rcpt", stageData: "data"}
	checkReasons = [...]string{stageNone: "check", stageConnect: "connect_check", stageHelo: "helo_check", stageMail: "mail_check", stageRcpt: "rcpt_check", stageData: "data_check"}
)

// classify finds the reason of a refusal by its reply.
func classify(r *proto.Reply) reason {
	for i := range reasonCheck {
		if reasons[i].reply == r {
			return i
		}
	}
	return reasonCheck
}

// reasonName is the reason as logged: a check's carries its stage.
func reasonName(st uint8, rs reason) string {
	if rs == reasonCheck {
		return checkReasons[st]
	}
	return reasons[rs].name
}

// rejected counts the metric of a refusal (by reason, or by stage and code
// for a check's).
func (m *serverMetrics) rejected(st uint8, rs reason, r *proto.Reply) {
	if m == nil {
		return
	}
	if rs == reasonCheck {
		m.checkRejects[st][checkCodeIndex(r.Code)].Add(1)
		return
	}
	m.rejects[rs].Add(1)
}

// rejected counts and logs a refusal at stage st with reply r. arg is what
// was refused (the HELO name, the sender, the recipient) when the caller
// has it; nil takes it from the check stage's state.
func (c *conn) rejected(st uint8, r *proto.Reply, arg []byte) {
	s := c.srv
	rs := classify(r)
	s.m.rejected(st, rs, r)
	if !s.rejectLog.allow(&s.log, ipKey(c.remote), time.Now()) {
		return
	}
	ev := c.log().Info().Str("stage", stageNames[st]).Int("code", r.Code).Str("status", r.Enh).Str("reason", reasonName(st, rs))
	if rs == reasonCheck || rs == reasonCheckTimeout {
		ev = ev.Str("text", r.Text)
	}
	env := c.sess.Envelope()
	switch st {
	case stageHelo:
		if arg != nil {
			ev = ev.Bytes("helo", arg)
		} else if c.cs != nil {
			ev = ev.Str("helo", c.cs.info.Helo)
		}
	case stageMail:
		ev = ev.Bytes("helo", env.Helo)
		if arg != nil {
			ev = ev.Bytes("from", arg)
		} else if c.cs != nil {
			ev = ev.Str("from", c.cs.info.From.String())
		}
	case stageRcpt:
		ev = ev.Bytes("helo", env.Helo).Bytes("from", env.From)
		if arg != nil {
			ev = ev.Bytes("rcpt", arg)
		} else if c.cs != nil {
			ev = ev.Str("rcpt", c.cs.rcptAddr.String())
		}
	case stageData:
		ev = ev.Bytes("helo", env.Helo).Bytes("from", env.From).Int("rcpts", len(env.Rcpts))
		if len(env.Rcpts) > 0 {
			ev = ev.Bytes("rcpt", env.Rcpts[0])
		}
	}
	ev.Msg("reject")
}

// rejectConn counts and logs a connection refused before it has a session
// (the connection limits, checked in OnOpen).
func (s *Server) rejectConn(remote, key netip.Addr, rs reason, refusal int) {
	s.m.refusedConn(refusal)
	s.m.rejected(stageConnect, rs, reasons[rs].reply)
	if !s.rejectLog.allow(&s.log, key, time.Now()) {
		return
	}
	r := reasons[rs].reply
	s.log.Info().Stringer("remote", remote).Str("stage", "connect").Int("code", r.Code).Str("status", r.Enh).
		Str("reason", reasons[rs].name).Msg("reject")
}

// rejectLimiter bounds reject lines per client address. Its zero value
// works (with the default limit and window); every method is safe for
// concurrent use: sessions on every loop and TLS goroutines call it.
type rejectLimiter struct {
	mu        sync.Mutex // guards everything but suppressed
	limit     int        // 0: rejectLogLimit
	window    time.Duration
	seed      uint64
	slots     [rejectSets][rejectWays]rejectSlot
	lastSweep time.Time
	// suppressed counts every line not written (a metric).
	suppressed atomic.Uint64
}

// rejectSlot is one address's window: when it began (zero: free), how
// many lines it has written and how many it has not.
type rejectSlot struct {
	addr    netip.Addr
	start   time.Time
	lines   int
	dropped int
}

func newRejectLimiter() *rejectLimiter {
	return &rejectLimiter{seed: rand.Uint64()}
}

func (l *rejectLimiter) params() (int, time.Duration) {
	limit, window := l.limit, l.window
	if limit <= 0 {
		limit = rejectLogLimit
	}
	if window <= 0 {
		window = rejectLogWindow
	}
	return limit, window
}

// set is the table set of a; the seed keeps a sender from choosing
// addresses that share one.
func (l *rejectLimiter) set(a netip.Addr) *[rejectWays]rejectSlot {
	b := a.As16()
	h := l.seed
	for i := 0; i < 16; i += 8 {
		var w uint64
		for _, c := range b[i : i+8] {
			w = w<<8 | uint64(c)
		}
		h ^= w
		h *= 0x9e3779b97f4a7c15
		h ^= h >> 29
	}
	return &l.slots[h%rejectSets]
}

// allow reports whether a reject line of a may be written at now, and
// counts it either way. The "suppressed" lines it writes to log go out
// under its lock; log never blocks (server/logsink).
func (l *rejectLimiter) allow(log *zerolog.Logger, a netip.Addr, now time.Time) bool {
	if l == nil {
		return true
	}
	limit, window := l.params()
	l.mu.Lock()
	defer l.mu.Unlock()
	set := l.set(a)
	var slot *rejectSlot
	for i := range set {
		if w := &set[i]; !w.start.IsZero() && w.addr == a {
			slot = w
			break
		}
	}
	if slot == nil {
		// A free way, else the oldest window, whose count is reported now.
		slot = &set[0]
		for i := range set {
			if w := &set[i]; w.start.Before(slot.start) {
				slot = w
			}
		}
		l.report(log, slot, now)
		*slot = rejectSlot{addr: a, start: now}
	} else if now.Sub(slot.start) >= window {
		l.report(log, slot, now)
		slot.start, slot.lines, slot.dropped = now, 0, 0
	}
	if slot.lines < limit {
		slot.lines++
		return true
	}
	slot.dropped++
	l.suppressed.Add(1)
	return false
}

// report writes the "suppressed" line of a window that did not write all
// its lines; l.mu is held.
func (l *rejectLimiter) report(log *zerolog.Logger, w *rejectSlot, now time.Time) {
	if w.start.IsZero() || w.dropped == 0 {
		return
	}
	log.Info().Stringer("remote", w.addr).Int("suppressed", w.dropped).Int("logged", w.lines).
		Int64("window_s", int64(now.Sub(w.start).Seconds())).Msg("reject lines suppressed")
	w.dropped = 0
}

// sweep reports and frees the windows that are over, at most every tenth
// of a window, so that a client that stopped still has its suppressed
// count reported. OnTick calls it.
func (l *rejectLimiter) sweep(log *zerolog.Logger, now time.Time) {
	_, window := l.params()
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Sub(l.lastSweep) < window/10 {
		return
	}
	l.lastSweep = now
	for s := range l.slots {
		for i := range l.slots[s] {
			if w := &l.slots[s][i]; !w.start.IsZero() && now.Sub(w.start) >= window {
				l.report(log, w, now)
				*w = rejectSlot{}
			}
		}
	}
}
