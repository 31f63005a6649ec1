package server

import (
	"net/netip"

	"github.com/nanomx/nanomx/server/addrbook"

	"github.com/nanomx/nanomx/proto"
	"github.com/nanomx/nanomx/server/check"
	"github.com/nanomx/nanomx/spool"
)

// Checker is one check of the check stage. Its methods are asked at each
// stage of a session, on the session's goroutine (often the event loop):
// they must not block. Each returns nil (accept), a completed
// check.Result, or one that completes later (check.Pool.Go for work that
// blocks, check.After for a wait, anything completing it from another
// goroutine); the session then reads nothing more until the verdict, and
// resumes with it. A check may start work early (at MAIL) and hand its
// result to Info.Later, which the end of data waits for: DNS latency
// overlaps the transfer.
type Checker interface {
	Connect(i *Info) *check.Result
	Helo(i *Info, name string) *check.Result
	Mail(i *Info, from proto.Address, p proto.MailParams) *check.Result
	Rcpt(i *Info, rcpt proto.Address) *check.Result
	// Data sees the body when it is in memory (nil past spill_threshold,
	// whose bytes are on disk already), with the LF line endings it will
	// be stored with. It must not keep or modify it.
	Data(i *Info, body []byte) *check.Result
}

// Info is what a session knows, for its checks. It belongs to the
// session's goroutine; a check copies what it needs off it.
type Info struct {
	IP   netip.Addr
	Helo string // the HELO/EHLO name last given (Helo sees it first)
	TLS  string // "TLSv1.3 with cipher ...", once TLS is up
	// From and Rcpts are the transaction's reverse-path and accepted
	// recipients so far.
	From  proto.Address
	Rcpts []proto.Address
	// screen is screening's state for the session (screen.go), set at
	// connect.
	screen *screenState

	// For sender authentication (authcheck.go): its per-session state,
	// and, for a spilled message at Data, the spill and the tail still
	// in memory (the session's until the verdict).
	auth  *authSession
	spill *spool.Spill
	tail  []byte
	// QueueID is the message's queue id (its spool id, in nanomx's log
	// lines), set for Data.
	QueueID string
	later   []*check.Result
}

// Later keeps a result started at an earlier stage of the transaction; the
// end of data combines it with the Data verdicts.
func (i *Info) Later(r *check.Result) { i.later = append(i.later, r) }

// resetTx forgets the transaction's part of i.
func (i *Info) resetTx() {
	i.From, i.Rcpts, i.later, i.QueueID = proto.Address{}, i.Rcpts[:0], nil, ""
	i.spill, i.tail = nil, nil
}

// checkState is a session's part of the check stage: what the checks see,
// and what waits for a verdict: a RCPT's mailboxes and address, and the
// end of data's header fields and folder.
type checkState struct {
	info        Info
	rcptTargets addrbook.Targets
	rcptAddr    proto.Address
	headers     []byte
	folder      string
	cut         [][2]int64
}

// The stages a check can be pending at.
const (
	stageNone uint8 = iota
	stageConnect
	stageHelo
	stageMail
	stageRcpt
	stageData
)

// checkTimedOut is what a check that has not answered within the session's
// bound means when it declared nothing shorter.
var checkTimedOut = check.Verdict{Reply: proto.NewReply(451, "4.7.0", "Checks timed out, try again later")}

// await makes r the session's pending check at stage st. It answers at
// once with the verdict when r is complete; otherwise it returns
// proto.Pending, and the verdict comes back through notify. Every pending
// check is bounded by command_timeout (then 451 4.7.0).
func (c *conn) await(st uint8, r *check.Result) *proto.Reply {
	if r == nil {
		return c.take(st, check.Verdict{})
	}
	if v, done := r.Verdict(); done {
		return c.take(st, v)
	}
	c.checkStage = st
	check.Timeout(r, c.lv.cfg.CommandTimeout, checkTimedOut)
	r.Notify(func(v check.Verdict) {
		c.verdict.Store(&v)
		c.notify()
	})
	return proto.Pending
}

// take applies what a verdict means beyond its reply, and returns the
// reply.
func (c *conn) take(st uint8, v check.Verdict) *proto.Reply {
	switch {
	case v.Reply != nil:
		c.rejected(st, v.Reply, nil)
	case st == stageRcpt:
		c.rcpts.Add(c.cs.rcptTargets)
		c.cs.info.Rcpts = append(c.cs.info.Rcpts, c.cs.rcptAddr)
	case st == stageData:
		c.cs.headers, c.cs.folder, c.cs.cut = v.Headers, v.Folder, v.Cut
	}
	return v.Reply
}

// resumeCheck passes an arrived verdict to the session. It reports false
// while the check is still pending.
func (c *conn) resumeCheck() bool {
	v := c.verdict.Swap(nil)
	if v == nil {
		return false
	}
	st := c.checkStage
	c.checkStage = stageNone
	if st == stageConnect {
		c.connectVerdict(*v)
		return true
	}
	c.sess.Resume(c.take(st, *v))
	return true
}

// connectVerdict acts on the connect stage's verdict: a refusal is sent
// instead of the greeting and the session ends.
func (c *conn) connectVerdict(v check.Verdict) {
	if v.Reply != nil {
		c.sess.Abort(v.Reply)
		c.reason = "refused at connect"
		c.srv.m.refusedConn(refusedConnectCheck)
		c.rejected(stageConnect, v.Reply, nil)
	}
}

// checkers returns the session's checks (none but the address book unless
// configured).
func (c *conn) checkers() []Checker { return c.srv.cfg.checks }

// run asks every checker at a stage and combines their results.
func (c *conn) run(ask func(Checker) *check.Result) *check.Result {
	cs := c.checkers()
	if len(cs) == 1 {
		return ask(cs[0])
	}
	rs := make([]*check.Result, len(cs))
	for i, ch := range cs {
		rs[i] = ask(ch)
	}
	return check.All(rs...)
}

// startConnect asks the connect stage; it reports whether the greeting
// must wait for the verdict.
func (c *conn) startConnect() bool {
	if len(c.checkers()) == 0 {
		return false
	}
	c.cs = &checkState{}
	c.cs.info.IP = c.remote
	if c.srv.auth != nil {
		c.cs.info.auth = &authSession{sid: c.sid()}
	}
	r := c.run(func(ch Checker) *check.Result { return ch.Connect(&c.cs.info) })
	if r == nil {
		return false
	}
	if v, done := r.Verdict(); done {
		c.connectVerdict(v)
		return false
	}
	c.await(stageConnect, r)
	return true
}
