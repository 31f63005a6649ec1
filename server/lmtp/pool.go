package lmtp

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/nanomx/nanomx/proto"
)

// Defaults for Config.
const (
	DefaultConnections = 4
	DefaultTimeout     = 30 * time.Second
)

// maxIdle is how long an idle connection is kept for reuse. Dovecot
// closes an idle LMTP client after 5 minutes; one older than this is
// closed and a fresh one dialled instead.
const maxIdle = time.Minute

// Replies for outcomes the server cannot express otherwise.
var (
	// ReplyUnavailable: the mailbox server could not be reached, or the
	// connection failed before every reply arrived.
	ReplyUnavailable = proto.NewReply(451, "4.4.1", "Mailbox server unavailable, try again later")
	// ReplyQueueFull: every LMTP worker is busy and the queue is full.
	ReplyQueueFull = proto.NewReply(451, "4.3.2", "Mailbox server busy, try again later")
)

// BodyError is a message whose bytes could not be had (Message.Body
// failed: a mail loop, a file that cannot be read): it was not sent.
type BodyError struct{ Err error }

func (e *BodyError) Error() string { return "lmtp: message body: " + e.Err.Error() }
func (e *BodyError) Unwrap() error { return e.Err }

// ErrClosed is Submit's answer after Close.
var ErrClosed = errors.New("lmtp: pool closed")

// Config configures a Pool.
type Config struct {
	// Addr is the LMTP server: "unix:/run/dovecot/lmtp" or "127.0.0.1:24".
	Addr string
	// Hostname is the name sent with LHLO.
	Hostname string
	// Connections bounds the open connections and is the number of
	// delivery workers: the deliveries in flight. 0 means
	// DefaultConnections.
	Connections int
	// QueueLength bounds the messages waiting for a worker (0: 256).
	QueueLength int
	// Timeout bounds connecting, each command's reply, each write of the
	// data and each reply after it. 0 means DefaultTimeout.
	Timeout time.Duration
	// Log receives connection failures and refusals.
	Log zerolog.Logger
}

// Message is one message for the LMTP server.
type Message struct {
	ID    string
	From  string   // reverse-path, "" for <>
	Rcpts []string // user@domain, each once
	// Body returns the bytes to send; it runs on the worker, before the
	// first attempt.
	Body func() (Body, error)
	// Release, when set, runs on the worker once the message is done with
	// (buffers back to their pool, a scratch file removed).
	Release func()
}

// Pool sends messages to one LMTP server through a fixed set of workers,
// each taking a connection from a bounded pool of connections reused
// across messages. Its methods are safe for concurrent use.
type Pool struct {
	cfg   Config
	log   zerolog.Logger
	jobs  chan job
	idle  chan *Conn    // connections ready for reuse
	slots chan struct{} // a token per open connection (Connections)
	stop  chan struct{} // closed by Close: waiters give up

	mu      sync.RWMutex // guards closed and sends on jobs
	closed  bool
	workers sync.WaitGroup

	dials atomic.Uint64 // connections opened
	txs   atomic.Uint64 // transactions run (deliveries and probes)
}

type job struct {
	m    *Message
	done func([]*proto.Reply, error)
}

// New starts a pool's workers. It does not connect: the first message
// does.
func New(cfg Config) *Pool {
	if cfg.Connections <= 0 {
		cfg.Connections = DefaultConnections
	}
	if cfg.QueueLength <= 0 {
		cfg.QueueLength = 256
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.Hostname == "" {
		cfg.Hostname = "localhost"
	}
	p := &Pool{
		cfg:   cfg,
		log:   cfg.Log,
		jobs:  make(chan job, cfg.QueueLength),
		idle:  make(chan *Conn, cfg.Connections),
		slots: make(chan struct{}, cfg.Connections),
		stop:  make(chan struct{}),
	}
	p.workers.Add(cfg.Connections)
	for range cfg.Connections {
		go p.work()
	}
	return p
}

// Submit queues m without blocking. done runs once, on a worker, with one
// reply per recipient (nil: accepted) or the error that kept the outcome
// from being known. Submit fails with ReplyQueueFull or ErrClosed; done
// is then never called and m.Release not run.
func (p *Pool) Submit(m *Message, done func([]*proto.Reply, error)) error {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.closed {
		return ErrClosed
	}
	select {
	case p.jobs <- job{m, done}:
		return nil
	default:
		return ReplyQueueFull
	}
}

// Close stops taking messages, lets the queued ones finish and closes the
// idle connections.
func (p *Pool) Close() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	close(p.jobs)
	p.mu.Unlock()
	p.workers.Wait()
	close(p.stop)
	for {
		select {
		case c := <-p.idle:
			_ = c.Close()
		default:
			return
		}
	}
}

// Dials returns the number of connections opened so far.
func (p *Pool) Dials() uint64 { return p.dials.Load() }

// Transactions returns the number of transactions run so far.
func (p *Pool) Transactions() uint64 { return p.txs.Load() }

func (p *Pool) work() {
	defer p.workers.Done()
	for j := range p.jobs {
		p.run(j)
	}
}

// run delivers one message and answers it; a panic costs that message a
// 451, not the worker.
func (p *Pool) run(j job) {
	var rs []*proto.Reply
	err := errors.New("lmtp: delivery panicked")
	defer func() {
		if r := recover(); r != nil {
			p.log.Error().Str("id", j.m.ID).Interface("panic", r).Bytes("stack", debug.Stack()).Msg("lmtp delivery panicked")
		}
		if j.m.Release != nil {
			j.m.Release()
		}
		if j.done != nil {
			j.done(rs, err)
		}
	}()
	body, berr := j.m.Body()
	if berr != nil {
		rs, err = nil, &BodyError{berr}
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), p.cfg.Timeout)
	defer cancel()
	rs, err = p.send(ctx, func(c *Conn) ([]*proto.Reply, error) { return c.Send(j.m.From, j.m.Rcpts, body) })
	if err != nil {
		p.log.Warn().Err(err).Str("id", j.m.ID).Str("lmtp", p.cfg.Addr).Msg("lmtp delivery failed")
	}
}

// Probe asks the LMTP server whether it would take mail from from to
// each of rcpts (MAIL, RCPT..., RSET on a pooled connection) and returns
// one reply per recipient, nil for accepted. It blocks: run it off the
// event loop (a check.Pool worker). ctx bounds the wait for a connection.
func (p *Pool) Probe(ctx context.Context, from string, rcpts []string) ([]*proto.Reply, error) {
	return p.send(ctx, func(c *Conn) ([]*proto.Reply, error) { return c.Probe(from, rcpts) })
}

// send runs tx on a pooled connection. A reused connection that fails
// before the data's final dot was written (the server closed it while
// idle, or restarted) is replaced by a fresh one and tx tried once more:
// nothing can have been delivered yet.
func (p *Pool) send(ctx context.Context, tx func(*Conn) ([]*proto.Reply, error)) ([]*proto.Reply, error) {
	for attempt := 0; ; attempt++ {
		c, reused, err := p.get(ctx)
		if err != nil {
			return nil, err
		}
		p.txs.Add(1)
		c.dotSent = false
		rs, err := tx(c)
		p.put(c)
		if err == nil || !c.broken || !reused || c.dotSent || attempt > 0 {
			return rs, err
		}
		p.log.Debug().Err(err).Msg("reused lmtp connection failed; retrying on a new one")
	}
}

// get returns an idle connection, or dials one while fewer than
// Connections are open, or waits for one to come back.
func (p *Pool) get(ctx context.Context) (*Conn, bool, error) {
	for {
		var c *Conn
		select {
		case c = <-p.idle:
		default:
			select {
			case c = <-p.idle:
			case p.slots <- struct{}{}:
				return p.dial()
			case <-ctx.Done():
				return nil, false, fmt.Errorf("lmtp: waiting for a connection: %w", ctx.Err())
			case <-p.stop:
				return nil, false, ErrClosed
			}
		}
		if time.Since(c.idleSince) < maxIdle {
			return c, true, nil
		}
		p.discard(c)
	}
}

// dial opens a connection in the slot the caller took.
func (p *Pool) dial() (*Conn, bool, error) {
	c, err := Dial(p.cfg.Addr, p.cfg.Hostname, p.cfg.Timeout)
	if err != nil {
		<-p.slots
		return nil, false, err
	}
	p.dials.Add(1)
	return c, false, nil
}

// put returns c for reuse, or closes it if it is broken.
func (p *Pool) put(c *Conn) {
	if c.broken {
		p.discard(c)
		return
	}
	select {
	case p.idle <- c:
	default: // cannot happen: at most Connections exist
		p.discard(c)
	}
}

func (p *Pool) discard(c *Conn) {
	_ = c.Close()
	<-p.slots
}

// Outcome is the one reply the SMTP client gets for a message whose LMTP
// transaction ended with rs (one reply per recipient, nil: accepted) or
// err. The promise is that 250 means stored for every recipient, and
// that nanomx, which has no queue and sends no bounces, loses nothing:
//
//   - every recipient accepted: nil (250);
//   - any temporary refusal, or an unknown outcome (err: the connection
//     failed, timed out, the server broke the protocol): 4xx for the
//     whole message. The sender retries; recipients that had accepted
//     get a duplicate, which beats a loss;
//   - every recipient refused permanently: the first refusal (550 5.1.1,
//     552 5.2.2 ...), so that the sender's MTA bounces with the mailbox
//     server's reason. Nobody got the message;
//   - some accepted, the rest refused permanently: 451 4.3.0 naming the
//     refusal. A 250 would drop the refused recipients silently, a 5xx
//     would bounce a message others received; with 451 the sender
//     retries and, if the refusal persists, bounces it when it gives up
//     (typically after days), the others having had duplicates. This is
//     the one case that cannot be answered well after the data, so it
//     is best made rare: lmtp_check_rcpt moves refusals to RCPT time,
//     one per recipient, and Dovecot's lmtp_rcpt_check_quota and
//     quota_full_tempfail make a full mailbox answer there too, or
//     temporarily.
//
// A whole transaction refused (MAIL or DATA: a *proto.Reply as err) is
// passed on when temporary; a permanent one becomes 451 4.3.0: it is the
// mailbox server refusing every message, a fault of ours to fix, not the
// sender's.
func Outcome(rs []*proto.Reply, err error) error {
	if err != nil {
		var r *proto.Reply
		var be *BodyError
		switch {
		case errors.As(err, &be):
			return be.Err // the caller's own error (a mail loop), as it is
		case errors.As(err, &r) && r.Temporary():
			return r
		case errors.As(err, &r):
			return proto.NewReply(451, "4.3.0", "Mailbox server refused the message, try again later")
		case errors.Is(err, ReplyQueueFull):
			return ReplyQueueFull
		}
		return ReplyUnavailable
	}
	var firstPerm *proto.Reply
	accepted := 0
	for _, r := range rs {
		switch {
		case r == nil:
			accepted++
		case r.Temporary():
			return r
		case firstPerm == nil:
			firstPerm = r
		}
	}
	switch {
	case firstPerm == nil:
		return nil
	case accepted == 0:
		return firstPerm
	}
	return proto.NewReply(451, "4.3.0", "Not every recipient was accepted ("+firstPerm.Error()+"), try again later")
}
