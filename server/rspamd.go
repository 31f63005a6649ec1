package server

import (
	"bytes"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/nanomx/nanomx/proto"
	"github.com/nanomx/nanomx/server/auth"
	"github.com/nanomx/nanomx/server/check"
	"github.com/nanomx/nanomx/server/metrics"
	"github.com/nanomx/nanomx/server/rspamd"
)

// What rspamd_on_error may say.
const (
	RspamdOnErrorAccept   = "accept"
	RspamdOnErrorTempfail = "tempfail"
)

// Replies of the rspamd check, when rspamd gives no text of its own.
var (
	replyRspamdReject  = "Spam message rejected"
	replyRspamdLater   = "Try again later"
	replyRspamdTrouble = proto.NewReply(451, "4.7.1", "Spam filter unavailable, try again later")
)

// rspamdCheck scans each message at the end of data with rspamd
// (Config.RspamdURL) and turns rspamd's action into a verdict: reject is
// 550 5.7.1, soft reject and greylist 451 4.7.1; anything delivered gets
// X-Spam-Action and X-Spam-Score, rspamd's milter header edits, the
// rewritten subject, and spam goes to the Junk folder if configured.
//
// Only a message the session holds in memory is scanned (at most
// spill_threshold, and RspamdMaxSize): a spilled one is on disk, being
// written by the spool's workers, and is delivered unscanned (counted in
// skipped). The HTTP call runs on the client's own goroutines: at most
// RspamdMaxConcurrent in flight, and 4 times as many waiting for one of
// them (the wait counts against RspamdTimeout); beyond those, and for
// any failure, RspamdOnError decides.
type rspamdCheck struct {
	client  *rspamd.Client
	maxSize int
	onError check.Verdict // accept: the zero verdict
	folder  string        // for spam; "" keeps it in the inbox
	log     zerolog.Logger

	skipped  atomic.Uint64      // not scanned: spilled or larger than maxSize
	latency  *metrics.Histogram // scan durations, request to reply or failure
	lastWarn atomic.Int64       // unix nanos of the last error logged
	quiet    atomic.Uint64      // errors not logged since
}

func newRspamdCheck(cfg Config) (*rspamdCheck, error) {
	client, err := rspamd.New(rspamd.Config{
		URL:           cfg.RspamdURL,
		Timeout:       cfg.RspamdTimeout,
		MaxConcurrent: cfg.RspamdMaxConcurrent,
	})
	if err != nil {
		return nil, &ConfigError{Key: "rspamd_url", Err: err}
	}
	r := &rspamdCheck{client: client, maxSize: int(cfg.RspamdMaxSize), log: cfg.Log,
		latency: metrics.NewDurationHistogram(scanBuckets...)}
	if r.maxSize <= 0 || int64(r.maxSize) > cfg.SpillThreshold {
		r.maxSize = int(cfg.SpillThreshold)
	}
	if cfg.RspamdOnError == RspamdOnErrorTempfail {
		r.onError = check.Verdict{Reply: replyRspamdTrouble}
	}
	if cfg.RspamdJunk {
		r.folder = cfg.JunkFolder
	}
	return r, nil
}

func (r *rspamdCheck) Connect(*Info) *check.Result                               { return nil }
func (r *rspamdCheck) Helo(*Info, string) *check.Result                          { return nil }
func (r *rspamdCheck) Mail(*Info, proto.Address, proto.MailParams) *check.Result { return nil }
func (r *rspamdCheck) Rcpt(*Info, proto.Address) *check.Result                   { return nil }

// Data starts the scan of body; the result completes on the client's
// goroutine.
func (r *rspamdCheck) Data(i *Info, body []byte) *check.Result {
	if body == nil || len(body) > r.maxSize {
		r.skipped.Add(1)
		return nil
	}
	req := &rspamd.Request{
		IP:      i.IP,
		Helo:    i.Helo,
		From:    i.From.String(),
		Rcpts:   make([]string, len(i.Rcpts)),
		QueueID: i.QueueID,
	}
	for n, a := range i.Rcpts {
		req.Rcpts[n] = a.String()
	}
	res := check.New()
	qid := i.QueueID
	st := i.auth
	send := func() {
		// The forward-confirmed PTR name when iprev is on ("unknown"
		// without one, as Postfix passes it); empty when it is off.
		req.Hostname = st.clientName()
		start := time.Now()
		err := r.client.Go(req, body, func(rep *rspamd.Reply, msg []byte, err error) {
			r.latency.ObserveDuration(time.Since(start))
			res.Complete(r.verdict(qid, rep, msg, err))
		})
		if err != nil { // busy
			r.trouble(qid, err)
			res.Complete(r.onError)
		}
	}
	if st != nil && st.iprev != nil && !st.iprev.known() {
		// iprev began at connect and MAIL did not wait for it: the scan
		// starts once it has answered (the session does not give a body
		// back to the pool while a data check may read it: freeBody).
		st.iprev.then(func(auth.IPRevResult) { send() })
	} else {
		send()
	}
	return res
}

// scanBuckets are the upper bounds of nanomx_check_duration_seconds:
// rspamd takes tens of milliseconds for an ordinary message, seconds when
// its own DNS work waits.
var scanBuckets = []time.Duration{
	5 * time.Millisecond, 10 * time.Millisecond, 25 * time.Millisecond, 50 * time.Millisecond,
	100 * time.Millisecond, 250 * time.Millisecond, 500 * time.Millisecond,
	time.Second, 2500 * time.Millisecond, 5 * time.Second, 10 * time.Second,
}

// verdict is what rspamd's reply (or failure) means for the message.
func (r *rspamdCheck) verdict(qid string, rep *rspamd.Reply, msg []byte, err error) check.Verdict {
	if err != nil {
		r.trouble(qid, err)
		return r.onError
	}
	var reply *proto.Reply
	switch rep.Action {
	case rspamd.ActionReject:
		reply = proto.NewReply(550, "5.7.1", rep.SMTPText(replyRspamdReject))
	case rspamd.ActionSoftReject, rspamd.ActionGreylist:
		reply = proto.NewReply(451, "4.7.1", rep.SMTPText(replyRspamdLater))
	}
	if reply != nil {
		r.log.Info().Str("id", qid).Str("action", rep.Action).Float64("score", rep.Score).
			Str("reply", reply.Error()).Msg("rspamd refused a message")
		return check.Verdict{Reply: reply}
	}
	if e := r.log.Debug(); e.Enabled() {
		e.Str("id", qid).Str("action", rep.Action).Float64("score", rep.Score).Msg("rspamd scanned a message")
	}
	edit := rep.Edit(msg)
	v := check.Verdict{Headers: edit.Headers, Cut: edit.Cut}
	if rep.Spam() {
		v.Folder = r.folder
	}
	return v
}

// trouble logs a failed scan, at most one line every 10 s (with the count
// of those not logged): an rspamd that is down must not flood the log.
func (r *rspamdCheck) trouble(qid string, err error) {
	now := time.Now().UnixNano()
	last := r.lastWarn.Load()
	if now-last < int64(10*time.Second) || !r.lastWarn.CompareAndSwap(last, now) {
		r.quiet.Add(1)
		return
	}
	policy := RspamdOnErrorAccept
	if r.onError.Reply != nil {
		policy = RspamdOnErrorTempfail
	}
	r.log.Warn().Str("id", qid).Err(err).Str("on_error", policy).Uint64("not_logged", r.quiet.Swap(0)).
		Msg("rspamd scan failed")
}

// rspamdField reports whether a header field is one the rspamd check
// writes (X-Spam, X-Spam-Action, X-Spam-Score): a client's copy is
// removed from every message, as the spool's DropField.
func rspamdField(field []byte) bool {
	name, _, ok := bytes.Cut(field, []byte(":"))
	if !ok {
		return false
	}
	name = bytes.TrimRight(name, " \t")
	for _, f := range []string{rspamd.FieldSpam, rspamd.FieldAction, rspamd.FieldScore} {
		if bytes.EqualFold(name, []byte(f)) {
			return true
		}
	}
	return false
}

// orDrop is a DropField rule dropping what either a (may be nil) or b
// drops.
func orDrop(a, b func([]byte) bool) func([]byte) bool {
	if a == nil {
		return b
	}
	return func(f []byte) bool { return a(f) || b(f) }
}
