package server

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/valyala/bytebufferpool"

	"github.com/nanomx/nanomx/proto"
	"github.com/nanomx/nanomx/server/addrbook"
	"github.com/nanomx/nanomx/server/check"
	"github.com/nanomx/nanomx/server/lmtp"
	"github.com/nanomx/nanomx/spool"
)

// Delivery targets (Config.Delivery).
const (
	DeliveryMaildir = "maildir"
	DeliveryLMTP    = "lmtp"
)

// delivery is where accepted messages go: the spool's Maildirs, or an
// LMTP server. The session calls it on its goroutine (the loop); neither
// method blocks.
type delivery interface {
	// Submit hands m over, body and spill included, which the delivery
	// owns from then on. done runs once, on a worker, with nil only once
	// m is stored for every mailbox; an error is a reply (*proto.Reply)
	// or an error replyFor knows. If Submit itself fails, done is never
	// called and the body has been released.
	Submit(m *outgoing, done func(error)) error
	// NewSpill starts a message whose body is written to disk as it
	// arrives (spool.Spool.NewSpill).
	NewSpill(m *spool.Message) *spool.Spill
	// Close finishes what was submitted and stops.
	Close() error
}

// maildirDelivery is the default: the spool writes every mailbox's
// Maildir, as before there was a choice.
type maildirDelivery struct{ sp *spool.Spool }

func (d maildirDelivery) Submit(m *outgoing, done func(error)) error {
	return d.sp.Submit(m.Message, done)
}
func (d maildirDelivery) NewSpill(m *spool.Message) *spool.Spill { return d.sp.NewSpill(m) }
func (d maildirDelivery) Close() error                           { return d.sp.Close() }

// lmtpDelivery sends each message to the LMTP server, one transaction per
// message, a recipient per mailbox (user@domain, as the address book
// resolved it: aliases expanded, subaddresses cut). The bytes are those
// the Maildir file would hold, without our Return-Path: the LMTP server
// is the final delivery and writes its own from MAIL FROM (RFC 5321 4.4),
// as Dovecot does. A Maildir++ folder a check chose is not applied:
// the mailbox server files by the check's header fields (Sieve).
//
// Large messages still spill: the spool writes them into a scratch
// Maildir under maildir_root (spool.ScratchMailbox), the LMTP worker
// streams the file and removes it.
type lmtpDelivery struct {
	sp   *spool.Spool
	pool *lmtp.Pool
	// probes runs the RCPT checks (lmtp_check_rcpt) on their own workers;
	// nil when they are off.
	probes  *check.Pool
	timeout time.Duration
}

func newLMTPDelivery(cfg Config, sp *spool.Spool) *lmtpDelivery {
	n := cfg.LMTPConnections
	if n == 0 {
		n = cfg.Workers
	}
	d := &lmtpDelivery{
		sp: sp,
		pool: lmtp.New(lmtp.Config{
			Addr:        cfg.LMTP,
			Hostname:    cfg.Hostname,
			Connections: n,
			QueueLength: cfg.QueueLength,
			Timeout:     cfg.LMTPTimeout,
			Log:         cfg.Log,
		}),
		timeout: cfg.LMTPTimeout,
	}
	if cfg.LMTPCheckRcpt {
		// As many workers as connections: more would only wait for one.
		d.probes = check.NewPool(n, cfg.QueueLength)
	}
	return d
}

func (d *lmtpDelivery) NewSpill(m *spool.Message) *spool.Spill {
	scratch := *m
	scratch.Mailboxes = []spool.Mailbox{spool.ScratchMailbox}
	return d.sp.NewSpill(&scratch)
}

func (d *lmtpDelivery) Submit(m *outgoing, done func(error)) error {
	rcpts := make([]string, len(m.Mailboxes))
	for i, b := range m.Mailboxes {
		rcpts[i] = b.User + "@" + b.Domain
	}
	skip := returnPathLen(m.Trace)
	lm := &lmtp.Message{ID: m.ID, From: m.from, Rcpts: rcpts}
	answer := func(rs []*proto.Reply, err error) { done(lmtp.Outcome(rs, err)) }
	if m.Spill != nil {
		return d.sp.FinishSpill(m.Message, func(path string, err error) {
			// On a spool worker: the file is complete; an LMTP worker
			// sends it.
			if err != nil {
				done(err)
				return
			}
			lm.Body = func() (lmtp.Body, error) { return lmtp.Body{File: path, Skip: int64(skip)}, nil }
			lm.Release = func() { _ = os.Remove(path) }
			if err := d.pool.Submit(lm, answer); err != nil {
				_ = os.Remove(path)
				done(err)
			}
		})
	}
	msg := m.Message
	lm.Body = func() (lmtp.Body, error) {
		segs, err := spool.Content(msg) // the header scan, on the worker
		if err != nil {
			return lmtp.Body{}, err
		}
		if skip > 0 && len(segs) > 0 {
			segs[0] = segs[0][skip:]
		}
		return lmtp.Body{Segs: segs}, nil
	}
	lm.Release = func() {
		if msg.Body != nil {
			bytebufferpool.Put(msg.Body)
			msg.Body = nil
		}
	}
	err := d.pool.Submit(lm, answer)
	if err != nil {
		lm.Release()
	}
	return err
}

func (d *lmtpDelivery) Close() error {
	d.pool.Close()
	if d.probes != nil {
		d.probes.Close()
	}
	return d.sp.Close()
}

// returnPathLen is the length of the Return-Path field that opens trace
// (traceFields writes it first), continuation lines included; 0 if trace
// does not start with one.
func returnPathLen(trace []byte) int {
	if !bytes.HasPrefix(trace, []byte("Return-Path:")) {
		return 0
	}
	off := 0
	for {
		i := bytes.IndexByte(trace[off:], '\n')
		if i < 0 {
			return len(trace)
		}
		off += i + 1
		if off == len(trace) || (trace[off] != ' ' && trace[off] != '\t') {
			return off
		}
	}
}

// replyCannotVerify is a RCPT check that could not ask the LMTP server.
var replyCannotVerify = proto.NewReply(451, "4.4.1", "Cannot verify the recipient now, try again later")

// lmtpRcpt is the RCPT check of lmtp_check_rcpt: the mailboxes a
// recipient reaches are asked of the LMTP server (MAIL, RCPT, RSET on a
// pooled connection, on a probe worker), so that an unknown user is
// refused at RCPT, where SMTP can say so per recipient, not after the
// data. With it the address book may list no users at all: an address of
// a configured domain that it does not know is asked as it is (lookup).
type lmtpRcpt struct {
	srv *Server
	d   *lmtpDelivery
}

func (l *lmtpRcpt) Connect(*Info) *check.Result                               { return nil }
func (l *lmtpRcpt) Helo(*Info, string) *check.Result                          { return nil }
func (l *lmtpRcpt) Mail(*Info, proto.Address, proto.MailParams) *check.Result { return nil }
func (l *lmtpRcpt) Data(*Info, []byte) *check.Result                          { return nil }

// Rcpt asks the LMTP server about the mailboxes rcpt reaches: any
// permanent refusal refuses the recipient (an unknown user: 550 5.1.1),
// a temporary one or no answer defers it (4xx).
func (l *lmtpRcpt) Rcpt(i *Info, rcpt proto.Address) *check.Result {
	t, err := l.srv.live.Load().book.Guess([]byte(rcpt.String()))
	if err != nil {
		return nil // the address book's own verdict stands
	}
	rcpts := make([]string, t.Len())
	for j := range t.Len() {
		b := t.At(j)
		rcpts[j] = b.User + "@" + b.Domain
	}
	from := i.From.String()
	return l.d.probes.Go(l.d.timeout, check.Verdict{Reply: replyCannotVerify}, func(ctx context.Context) check.Verdict {
		rs, err := l.d.pool.Probe(ctx, from, rcpts)
		if err != nil {
			l.srv.log.Warn().Err(err).Str("rcpt", rcpt.String()).Msg("lmtp recipient check failed")
			return check.Verdict{Reply: replyCannotVerify}
		}
		var temp *proto.Reply
		for _, r := range rs {
			switch {
			case r == nil:
			case !r.Temporary() && r.Enh == "5.1.1":
				return check.Verdict{Reply: proto.ReplyUnknownUser}
			case !r.Temporary():
				return check.Verdict{Reply: r}
			case temp == nil:
				temp = r
			}
		}
		return check.Verdict{Reply: temp}
	})
}

// lookup resolves a recipient for CheckRcpt: with lmtp_check_rcpt an
// address the book does not know, in one of its domains, is taken as a
// mailbox of its own for the LMTP server to judge (addrbook.Guess).
func (s *Server) lookup(book *addrbook.Book, addr []byte) (addrbook.Targets, error) {
	if s.lmtpRcpt != nil {
		return book.Guess(addr)
	}
	return book.Lookup(addr)
}

// newDelivery builds the delivery cfg asks for around the spool, and the
// RCPT check that goes with LMTP's lmtp_check_rcpt.
func (s *Server) newDelivery(cfg Config, sp *spool.Spool) {
	if cfg.Delivery != DeliveryLMTP {
		s.deliver = maildirDelivery{sp}
		return
	}
	d := newLMTPDelivery(cfg, sp)
	s.deliver = d
	if cfg.LMTPCheckRcpt {
		s.lmtpRcpt = &lmtpRcpt{srv: s, d: d}
		s.cfg.checks = append(s.cfg.checks[:len(s.cfg.checks):len(s.cfg.checks)], s.lmtpRcpt)
	}
}

// spoolMailboxes are the Maildirs the spool prepares at start-up: the
// configured mailboxes, or with LMTP delivery only the scratch Maildir of
// spilled messages (whose leftovers start-up removes).
func spoolMailboxes(cfg Config, book *addrbook.Book) []spool.Mailbox {
	if cfg.Delivery == DeliveryLMTP {
		return []spool.Mailbox{spool.ScratchMailbox}
	}
	return book.Mailboxes()
}

// validateDelivery checks the delivery keys.
func (c *Config) validateDelivery() error {
	bad := func(key, format string, args ...any) error {
		return &ConfigError{Key: key, Err: fmt.Errorf(format, args...)}
	}
	switch c.Delivery {
	case "", DeliveryMaildir:
		if c.LMTPCheckRcpt {
			return bad("lmtp_check_rcpt", "needs delivery = %q", DeliveryLMTP)
		}
		return nil
	case DeliveryLMTP:
	default:
		return bad("delivery", "must be %q or %q", DeliveryMaildir, DeliveryLMTP)
	}
	switch {
	case c.LMTP == "":
		return bad("lmtp", `is required with delivery = "lmtp" ("unix:/run/dovecot/lmtp" or "host:port")`)
	case strings.HasPrefix(c.LMTP, "unix:") && !strings.HasPrefix(c.LMTP, "unix:/"):
		return bad("lmtp", "%q: a Unix socket needs an absolute path", c.LMTP)
	case !strings.HasPrefix(c.LMTP, "unix:"):
		if err := checkListenAddr(c.LMTP); err != nil {
			return &ConfigError{Key: "lmtp", Err: err}
		}
	}
	switch {
	case c.LMTPConnections < 0 || c.LMTPConnections > 1000:
		return bad("lmtp_connections", "must be between 0 (as many as workers) and 1000")
	case c.LMTPTimeout < time.Second:
		return bad("lmtp_timeout", "must be at least 1s")
	}
	return nil
}

// sameDelivery reports whether two configurations deliver the same way
// (none of the delivery keys can change without a restart).
func sameDelivery(a, b Config) bool {
	return a.Delivery == b.Delivery && a.LMTP == b.LMTP && a.LMTPCheckRcpt == b.LMTPCheckRcpt &&
		a.LMTPConnections == b.LMTPConnections && a.LMTPTimeout == b.LMTPTimeout
}
