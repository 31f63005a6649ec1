// Package check is the server's asynchronous check stage: verdicts that
// may not be known yet, a bounded pool for checks that must block, and
// timers for those that only wait. A session asks its checks at each stage
// (connect, HELO, MAIL, each RCPT, end of data); a check answers at once
// or returns a Result that completes later, off the event loop, and the
// session resumes with the verdict. A verdict is data: the session, not
// the check, writes replies, so their order under pipelining stays the
// session's job.
package check

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/nanomx/nanomx/proto"
)

// Verdict is a check's decision.
type Verdict struct {
	// Reply refuses (any 4xx or 5xx with its enhanced code); nil accepts.
	Reply *proto.Reply
	// Headers are header fields to prepend to the stored message (end of
	// data only), e.g. Authentication-Results; each ends in LF.
	Headers []byte
	// Folder is the Maildir++ folder to deliver into (end of data only),
	// e.g. "Junk"; "" is the inbox.
	Folder string
	// Cut are byte ranges [start, end) of the body as Data saw it to leave
	// out of the stored message (end of data only): whole header fields a
	// check removes or replaces. Sorted and disjoint (spool.Message.Cut).
	Cut [][2]int64
}

// Result is a verdict, known now or later. It completes once; later
// completions are ignored, so a timeout and a late answer can race.
type Result struct {
	mu   sync.Mutex
	done bool
	v    Verdict
	cb   func(Verdict)
}

// Now returns a completed result.
func Now(v Verdict) *Result { return &Result{done: true, v: v} }

// Accept is a completed result that accepts.
func Accept() *Result { return Now(Verdict{}) }

// New returns a result that completes with Complete.
func New() *Result { return &Result{} }

// Complete sets the verdict, if none was set, and runs the waiter's
// callback on the calling goroutine. It reports whether v was taken.
func (r *Result) Complete(v Verdict) bool {
	r.mu.Lock()
	if r.done {
		r.mu.Unlock()
		return false
	}
	r.done, r.v = true, v
	cb := r.cb
	r.cb = nil
	r.mu.Unlock()
	if cb != nil {
		cb(v)
	}
	return true
}

// Verdict returns the verdict and whether it is known.
func (r *Result) Verdict() (Verdict, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.v, r.done
}

// Notify runs cb with the verdict once it is known: at once, on the
// calling goroutine, if it is already. A result has at most one waiter.
func (r *Result) Notify(cb func(Verdict)) {
	r.mu.Lock()
	if !r.done {
		r.cb = cb
		r.mu.Unlock()
		return
	}
	v := r.v
	r.mu.Unlock()
	cb(v)
}

// After returns a result that completes with v after d, on a timer: a
// check that only waits holds no goroutine.
func After(d time.Duration, v Verdict) *Result {
	r := New()
	time.AfterFunc(d, func() { r.Complete(v) })
	return r
}

// Timeout makes r complete with policy if it has not completed within d
// (what a timed-out check means is the check's declared policy: accept,
// or e.g. 451 4.7.0). It returns r.
func Timeout(r *Result, d time.Duration, policy Verdict) *Result {
	if _, done := r.Verdict(); done || d <= 0 {
		return r
	}
	// A timer firing after the answer finds r complete and does nothing.
	time.AfterFunc(d, func() { r.Complete(policy) })
	return r
}

// All combines results in order: it completes when every one has, with
// the first refusal (in the order given, not of arrival), the header
// fields of all in order, the last folder named, and the union of the
// cuts. nil results accept.
func All(rs ...*Result) *Result {
	var live []*Result
	n, done := 0, true
	for _, r := range rs {
		if r != nil {
			n++
			done = done && r.isDone()
		}
	}
	switch {
	case n == 0:
		return Accept()
	case n == 1:
		for _, r := range rs {
			if r != nil {
				return r
			}
		}
	case done:
		// All known (the end of data's, when every answer was cached):
		// combined at once, without waiters.
		var c Verdict
		for _, r := range rs {
			if r != nil {
				v, _ := r.Verdict()
				c = combineOne(c, v)
			}
		}
		return Now(c)
	}
	live = make([]*Result, 0, n)
	for _, r := range rs {
		if r != nil {
			live = append(live, r)
		}
	}
	out := New()
	var mu sync.Mutex
	left := len(live)
	vs := make([]Verdict, len(live))
	for i, r := range live {
		r.Notify(func(v Verdict) {
			mu.Lock()
			vs[i] = v
			left--
			last := left == 0
			mu.Unlock()
			if last {
				out.Complete(combine(vs))
			}
		})
	}
	return out
}

// isDone reports whether r has its verdict.
func (r *Result) isDone() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.done
}

func combine(vs []Verdict) Verdict {
	var c Verdict
	for _, v := range vs {
		c = combineOne(c, v)
	}
	return c
}

// combineOne adds v to c, the combination of the verdicts before it. The
// header fields of a single verdict are taken as they are, not copied
// (their capacity clipped: another verdict's are appended to a copy).
func combineOne(c, v Verdict) Verdict {
	if c.Reply == nil && v.Reply != nil {
		c.Reply = v.Reply
	}
	switch {
	case len(v.Headers) == 0:
	case len(c.Headers) == 0:
		c.Headers = v.Headers[:len(v.Headers):len(v.Headers)]
	default:
		c.Headers = append(c.Headers, v.Headers...)
	}
	if v.Folder != "" {
		c.Folder = v.Folder
	}
	c.Cut = MergeCuts(c.Cut, v.Cut)
	return c
}

// MergeCuts returns the union of two sorted lists of disjoint ranges,
// sorted, with ranges that overlap or touch merged.
func MergeCuts(a, b [][2]int64) [][2]int64 {
	if len(b) == 0 {
		return a
	}
	if len(a) == 0 {
		return b
	}
	out := make([][2]int64, 0, len(a)+len(b))
	for len(a) > 0 || len(b) > 0 {
		var next [2]int64
		if len(b) == 0 || len(a) > 0 && a[0][0] <= b[0][0] {
			next, a = a[0], a[1:]
		} else {
			next, b = b[0], b[1:]
		}
		if n := len(out); n > 0 && next[0] <= out[n-1][1] {
			out[n-1][1] = max(out[n-1][1], next[1])
			continue
		}
		out = append(out, next)
	}
	return out
}

// ErrBusy is what a full pool answers; Go turns it into the policy.
var ErrBusy = errors.New("check: pool busy")

// Pool runs checks that must block (a library without a callback API) on
// a bounded number of goroutines, never one per session: a fixed set
// (NewPool), or goroutines started as checks come, up to a bound
// (NewPoolOnDemand), for checks that mostly wait on the network.
type Pool struct {
	q chan task

	// On demand: the goroutines running (at most max); mu guards
	// running and the hand-over of the queue, so that a check queued as
	// the last goroutine leaves is never stranded.
	mu      sync.Mutex
	running int
	max     int
	// idle hands a check to a resident goroutine waiting for one (they
	// keep their grown stacks; one started for a check begins small).
	idle chan task
}

type task struct {
	ctx    context.Context
	cancel context.CancelFunc
	stop   func() bool // stops the deadline's completion
	fn     func(context.Context) Verdict
	r      *Result
	policy Verdict
}

// NewPool starts workers goroutines serving at most queue waiting checks.
func NewPool(workers, queue int) *Pool {
	p := &Pool{q: make(chan task, queue)}
	for range workers {
		go p.work()
	}
	return p
}

// NewPoolOnDemand returns a pool of keep resident goroutines that, when
// they are all busy, starts a goroutine for a check while fewer than max
// of those are running (each takes the queued checks when it is done,
// then ends), and queues at most queue checks past them: at most
// keep+max goroutines at once, keep while idle.
func NewPoolOnDemand(keep, max, queue int) *Pool {
	p := &Pool{q: make(chan task, queue), max: max, idle: make(chan task)}
	for range keep {
		go func() {
			for t := range p.idle {
				t.run()
			}
		}()
	}
	return p
}

func (p *Pool) work() {
	for t := range p.q {
		t.run()
	}
}

// runOnDemand runs t, then the queued checks, until the queue is empty.
func (p *Pool) runOnDemand(t task) {
	for {
		t.run()
		p.mu.Lock()
		select {
		case t = <-p.q:
			p.mu.Unlock()
		default:
			p.running--
			p.mu.Unlock()
			return
		}
	}
}

func (t *task) run() {
	if t.ctx.Err() == nil {
		v := t.fn(t.ctx)
		if t.ctx.Err() != nil {
			v = t.policy // what a check says past its deadline does not count
		}
		t.r.Complete(v)
	}
	t.stop()
	t.cancel()
}

// submit queues t or starts a goroutine for it; false when full.
func (p *Pool) submit(t task) bool {
	if p.max == 0 {
		select {
		case p.q <- t:
			return true
		default:
			return false
		}
	}
	select {
	case p.idle <- t: // a resident goroutine was waiting
		return true
	default:
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.running < p.max {
		p.running++
		go p.runOnDemand(t)
		return true
	}
	select {
	case p.q <- t:
		return true
	default:
		return false
	}
}

// Go runs fn on the pool under timeout: the result completes with fn's
// verdict, or with policy when the timeout passes first (fn's context is
// then cancelled) or the pool's queue is full. Go never blocks.
func (p *Pool) Go(timeout time.Duration, policy Verdict, fn func(context.Context) Verdict) *Result {
	r := New()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	// The deadline completes r even while fn ignores its context; one
	// timer (the context's) serves both, stopped when fn returns.
	stop := context.AfterFunc(ctx, func() { r.Complete(policy) })
	if !p.submit(task{ctx, cancel, stop, fn, r, policy}) {
		stop()
		cancel()
		r.Complete(policy)
	}
	return r
}

// Close stops the workers once the queue is drained (and a pool on
// demand's resident ones). No check may be started after it.
func (p *Pool) Close() {
	if p.max == 0 {
		close(p.q)
	} else {
		close(p.idle)
	}
}
