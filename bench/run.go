package bench

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"

	"github.com/nanomx/nanomx/bench/smtpc"
)

// Reasons a load phase stopped.
const (
	stopCount       = "count"
	stopDuration    = "duration"
	stopMaxDuration = "max-duration"
	stopInterrupted = "interrupted"
)

// runner is the state one run shares between its sessions.
type runner struct {
	cfg  Config
	dial *dialer
	// dialPlain opens the plaintext connections of a profile run.
	dialPlain *dialer
	// prof counts what a profile run does; nil without -profile.
	prof *profileState
	// arrivals carries the scheduled messages of an open-loop run (-rate)
	// from the dispatcher to the sessions; nil in a closed-loop one.
	arrivals chan arrival
	pool     bodyPool
	date     string
	dkim     *signer // signs every message with -dkim-key; nil without

	// Precomputed commands: they do not change within a run.
	mailCmd  []byte
	rcptCmds [][]byte

	next    atomic.Int64 // last claimed sequence number
	stopped atomic.Bool  // no more messages are claimed
	reason  atomic.Pointer[string]
	srcNext atomic.Uint32 // next source address index
	// parent is Run's context; cut ends with it or at MaxDuration.
	parent, cut context.Context

	// Counters read by the progress line.
	delivered atomic.Int64
	failed    atomic.Int64
	bytes     atomic.Int64
	conns     atomic.Int64
	offered   atomic.Bool
	resumed   atomic.Int64
	unserved  atomic.Int64

	// mu guards the histograms, errors and acked; sessions record into
	// them after each message.
	mu                              sync.Mutex
	hConnect, hGreeting, hEnd, hTxn *hdrhistogram.Histogram
	hTLS, hSched                    *hdrhistogram.Histogram
	errors                          map[string]int64
	acked                           []int64
}

// Run sends the load described by cfg and returns what it measured. It
// returns an error only when the run could not start (a bad Config, a
// target that does not resolve); failures during the run are counted in
// the Result. Cancelling ctx stops the run early ("interrupted").
func Run(ctx context.Context, cfg Config) (*Result, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	addr, err := net.ResolveTCPAddr("tcp", cfg.Target)
	if err != nil {
		return nil, fmt.Errorf("target: %w", err)
	}
	r := &runner{
		cfg:       cfg,
		pool:      newBodyPool(cfg.Size.max(), cfg.Seed),
		hConnect:  newHistogram(),
		hGreeting: newHistogram(),
		hEnd:      newHistogram(),
		hTxn:      newHistogram(),
		hTLS:      newHistogram(),
		hSched:    newHistogram(),
		errors:    make(map[string]int64),
	}
	r.dial = &dialer{
		addr:   addr,
		spread: cfg.SpreadSources && addr.IP.To4() != nil && addr.IP.To4()[0] == 127,
		src:    r.nextSource,
		ehlo:   cfg.EHLO,
	}
	if cfg.TLS || cfg.Profile != "" {
		if r.dial.tls, err = clientTLS(cfg); err != nil {
			return nil, err
		}
	}
	if cfg.Profile != "" {
		// The profile picks STARTTLS per connection.
		plain := *r.dial
		plain.tls = nil
		r.dialPlain = &plain
		r.prof = newProfileState(cfg.Seed)
	}
	if cfg.DKIMKey != "" {
		if r.dkim, err = newSigner(cfg.DKIMKey, cfg.DKIMSelector, cfg.From); err != nil {
			return nil, fmt.Errorf("dkim key: %w", err)
		}
	}
	r.mailCmd = []byte("MAIL FROM:<" + cfg.From + ">\r\n")
	for _, to := range cfg.To {
		r.rcptCmds = append(r.rcptCmds, []byte("RCPT TO:<"+to+">\r\n"))
	}

	if cfg.GCFloor > 0 {
		// Reachable until Run returns, never written: its pages stay
		// unmapped, and the collector's goal is at least twice its size.
		ballast := make([]byte, cfg.GCFloor)
		defer runtime.KeepAlive(ballast)
	}

	res := &Result{Config: cfg, Started: time.Now().UTC()}
	r.date = headerDate(res.Started)

	// cut ends everything: past MaxDuration (counted from here, so idle
	// and slow set-up count too) or when the caller cancels.
	cut, cancel := context.WithTimeout(ctx, cfg.MaxDuration)
	defer cancel()
	r.parent, r.cut = ctx, cut

	var proc *procWatch
	if cfg.PID > 0 {
		if proc, err = watchProc(cfg.PID); err != nil {
			return nil, err
		}
	}

	// The unread sessions are over before anything else starts.
	if cfg.Unread > 0 {
		res.Unread = r.runUnread(cut, proc)
	}

	// held opens a set of held sessions, noting the server's RSS before
	// and after.
	held := func(open func(context.Context, int) *idleSet, n int) *idleSet {
		rssBefore := proc.rss()
		s := open(cut, n)
		if proc != nil {
			h := &s.report
			h.RSSBeforeKB = rssBefore
			h.RSSAfterKB = proc.settledRSS(cut, 30*time.Second)
			if h.Opened > 0 && rssBefore > 0 && h.RSSAfterKB > 0 {
				h.PerConnKB = float64(h.RSSAfterKB-rssBefore) / float64(h.Opened)
			}
		}
		return s
	}
	var idle, silent *idleSet
	if cfg.Idle > 0 {
		idle = held(r.openIdle, cfg.Idle)
		res.Idle = &idle.report
	}
	if cfg.Silent > 0 {
		silent = held(r.openSilent, cfg.Silent)
		res.Silent = &silent.report
	}

	var slow *slowSet
	if cfg.Slow > 0 {
		slow = r.startSlow(cut, cfg.Slow)
	}

	proc.startLoad()
	self0, selfErr := readProcStat(os.Getpid())
	start := time.Now()
	if cfg.Duration > 0 {
		t := time.AfterFunc(cfg.Duration, func() { r.stop(stopDuration) })
		defer t.Stop()
	}
	stopOnCut := context.AfterFunc(cut, r.stopCut)
	defer stopOnCut()
	var stopProgress func(time.Duration)
	if cfg.Progress != nil {
		stopProgress = r.startProgress(start)
	}

	if cfg.Rate > 0 {
		r.arrivals = make(chan arrival, maxQueued)
		go r.dispatch(start)
	}
	var wg sync.WaitGroup
	for range cfg.Conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.work(cut)
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	if stopProgress != nil {
		stopProgress(elapsed)
	}
	proc.endLoad()
	if self1, err := readProcStat(os.Getpid()); err == nil && selfErr == nil && self1 >= self0 {
		res.Load = loadStats(float64(self1-self0)/clockTicks, runtime.NumCPU(), elapsed.Seconds())
	}

	if r.prof != nil {
		res.Profile = r.prof.finish()
	}
	if slow != nil {
		res.Slow = slow.finish()
	}
	if idle != nil {
		idle.finish()
	}
	if silent != nil {
		silent.finish()
	}

	r.stop(stopCount) // no-op unless the count ran out
	res.Stopped = *r.reason.Load()
	res.Elapsed = elapsed.Seconds()
	res.Attempted = min(r.next.Load(), cfg.Count)
	if cfg.Count == 0 {
		res.Attempted = r.next.Load()
	}
	res.Delivered = r.delivered.Load()
	res.Failed = r.failed.Load()
	res.Bytes = r.bytes.Load()
	res.Connections = r.conns.Load()
	res.PipeliningOffered = r.offered.Load()
	res.TLSResumed = r.resumed.Load()
	res.Unserved = r.unserved.Load()
	if s := elapsed.Seconds(); s > 0 {
		res.MsgsPerSec = float64(res.Delivered) / s
		res.MBPerSec = float64(res.Bytes) / 1e6 / s
	}
	r.mu.Lock()
	res.Latency = Latencies{
		Connect:     latencyOf(r.hConnect),
		Greeting:    latencyOf(r.hGreeting),
		EndOfData:   latencyOf(r.hEnd),
		Transaction: latencyOf(r.hTxn),
		TLS:         latencyOf(r.hTLS),
		Scheduled:   latencyOf(r.hSched),
	}
	res.Errors = r.errors
	res.Acked = r.acked
	r.mu.Unlock()
	slices.Sort(res.Acked)
	if proc != nil {
		res.Server = proc.stats(res.Delivered)
	}
	if cfg.VerifyMaildir != "" {
		v, err := VerifyMaildir(cfg.VerifyMaildir, cfg.RunID, r.expected(res.Acked), false)
		if err != nil {
			return res, fmt.Errorf("verify-maildir: %w", err)
		}
		res.Verify = v
	}
	return res, nil
}

// message appends the header of message seq to hdr and returns it with
// the message's body, which the end of data follows.
func (r *runner) message(hdr []byte, seq int64) ([]byte, []byte) {
	cfg := &r.cfg
	to := cfg.To[(seq-1)*int64(cfg.Rcpts)%int64(len(cfg.To))]
	hdr = appendHeader(hdr, cfg.RunID, seq, cfg.From, to, r.date)
	if r.dkim == nil {
		return hdr, r.pool.body(cfg.Size.Of(cfg.Seed, seq), len(hdr))
	}
	// Signed: the DKIM-Signature field goes last in the header (the
	// Message-ID line stays first, for -verify-maildir).
	body := r.pool.body(cfg.Size.Of(cfg.Seed, seq), len(hdr)+r.dkim.size)
	hdr = append(append(hdr[:len(hdr)-2], r.dkim.field(to, r.date, body)...), "\r\n"...)
	return hdr, body
}

// expected is what VerifyMaildir must find of the acked messages: each
// one's stored size and SHA-256, computed again from its seq after the
// load (so that hashing costs the load nothing), on every CPU.
func (r *runner) expected(acked []int64) []Sent {
	sent := make([]Sent, len(acked))
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(runtime.GOMAXPROCS(0), max(len(acked), 1)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var hdr []byte
			for i := next.Add(1) - 1; i < int64(len(acked)); i = next.Add(1) - 1 {
				var body []byte
				hdr, body = r.message(hdr[:0], acked[i])
				sent[i] = Sent{Seq: acked[i], Acked: true, Size: storedSize(hdr, body),
					Sum: storedSum(hdr, body, endOfData[:2])}
			}
		}()
	}
	wg.Wait()
	return sent
}

// clientTLS is the client's TLS configuration for cfg: the server name
// from TLSServerName or the target's host, verified against TLSCA or not
// at all.
func clientTLS(cfg Config) (*tls.Config, error) {
	name := cfg.TLSServerName
	if name == "" {
		host, _, err := net.SplitHostPort(cfg.Target)
		if err != nil {
			return nil, fmt.Errorf("target: %w", err)
		}
		name = host
	}
	tc := &tls.Config{
		ServerName: name,
		// Full 16 KB records from the first byte, as OpenSSL-based MTAs
		// send them; Go's default starts small, for browsers.
		DynamicRecordSizingDisabled: true,
	}
	if cfg.TLSResume {
		tc.ClientSessionCache = tls.NewLRUClientSessionCache(64)
	}
	if cfg.TLSCA == "" {
		tc.InsecureSkipVerify = true
		return tc, nil
	}
	pem, err := os.ReadFile(cfg.TLSCA)
	if err != nil {
		return nil, fmt.Errorf("tls-ca: %w", err)
	}
	tc.RootCAs = x509.NewCertPool()
	if !tc.RootCAs.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("tls-ca: %s: no PEM certificate", cfg.TLSCA)
	}
	return tc, nil
}

// stop ends the claiming of messages, remembering the first reason.
func (r *runner) stop(reason string) {
	r.reason.CompareAndSwap(nil, &reason)
	r.stopped.Store(true)
}

// stopCut stops the run when cut is done: interrupted by the caller or
// past MaxDuration.
func (r *runner) stopCut() {
	if r.parent.Err() != nil {
		r.stop(stopInterrupted)
	} else {
		r.stop(stopMaxDuration)
	}
}

// claim returns the next message's sequence number, or false when the run
// is over.
func (r *runner) claim() (int64, bool) {
	if r.stopped.Load() {
		return 0, false
	}
	if r.cut.Err() != nil {
		// The AfterFunc may not have run yet.
		r.stopCut()
		return 0, false
	}
	seq := r.next.Add(1)
	if r.cfg.Count > 0 && seq > r.cfg.Count {
		r.stop(stopCount)
		return 0, false
	}
	return seq, true
}

// nextSource returns the next source address of 127.0.0.2-127.0.255.254,
// skipping the target's own.
func (r *runner) nextSource() *net.TCPAddr {
	const n = 256 * 254
	for {
		i := r.srcNext.Add(1) % n
		a, b := byte(i/254), byte(i%254+1)
		if a == 0 && b == 1 {
			continue // 127.0.0.1
		}
		ip := net.IPv4(127, 0, a, b)
		if ip.Equal(r.dial.addr.IP) {
			continue
		}
		return &net.TCPAddr{IP: ip}
	}
}

// fail counts a failed message under key.
func (r *runner) fail(key string) {
	r.failed.Add(1)
	r.event(key)
}

// event counts an error that failed no message.
func (r *runner) event(key string) {
	r.mu.Lock()
	r.errors[key]++
	r.mu.Unlock()
}

// worker is one session slot: it opens a connection, sends messages over
// it, and opens another after QUIT or a failure, until the run is over.
// It touches only its own fields, and the runner through its methods.
type worker struct {
	r *runner
	conn
	sent   int    // messages sent on this connection
	envBuf []byte // the pipelined envelope
	hdr    []byte // the message header
	acked  []int64
	// limit is how many messages this connection carries (0: no limit).
	limit int
	// sched is the scheduled arrival of the current message in an
	// open-loop run, else zero.
	sched time.Time
	// refused are the error keys of the refused recipients of the
	// current message.
	refused []string
}

// work runs one worker until no message is left to claim.
func (r *runner) work(ctx context.Context) {
	w := &worker{r: r}
	timeout := r.cfg.Timeout
	h := &hooks{
		connect:   func(d time.Duration) { r.record(r.hConnect, d) },
		greeting:  func(d time.Duration) { r.record(r.hGreeting, d) },
		handshake: func(d time.Duration) { r.record(r.hTLS, d) },
		resumed:   func() { r.resumed.Add(1) },
	}
	for {
		seq, sched, ok := r.nextMessage()
		if !ok {
			break
		}
		w.sched = sched
		var pl plan
		if r.prof != nil {
			pl = r.prof.plan(seq)
			if pl.kind.bot() {
				r.startBot(ctx, pl)
				continue
			}
		}
		if w.tcp == nil {
			if key := r.dialFor(r.prof == nil || pl.tls).open(ctx, &w.conn, timeout, h); key != "" {
				r.fail(key)
				// A server that refuses connections is not retried in a
				// tight loop.
				select {
				case <-ctx.Done():
				case <-time.After(20 * time.Millisecond):
				}
				continue
			}
			r.conns.Add(1)
			if w.pipelining {
				r.offered.Store(true)
			}
			w.sent, w.limit = 0, r.cfg.PerConn
			if r.prof != nil {
				w.limit = pl.perConn
				if pl.tls {
					r.prof.tlsConns.Add(1)
				} else {
					r.prof.plainConns.Add(1)
				}
			}
		}
		var keep bool
		switch pl.kind {
		case kindRefused:
			keep = w.transactRefused(seq)
		case kindAbort:
			w.transactAbort(seq)
		default:
			keep = w.transact(seq)
		}
		w.sent++
		if !keep {
			w.close()
			continue
		}
		if w.limit > 0 && w.sent >= w.limit {
			w.endSession()
		}
	}
	if w.tcp != nil {
		w.endSession()
	}
	r.mu.Lock()
	r.acked = append(r.acked, w.acked...)
	r.mu.Unlock()
}

// endSession QUITs the connection.
func (w *worker) endSession() {
	if key := w.quit(w.r.cfg.Timeout); key != "" {
		w.r.event(key)
	}
}

// record adds d to h.
func (r *runner) record(h *hdrhistogram.Histogram, d time.Duration) {
	r.mu.Lock()
	recordDuration(h, d)
	r.mu.Unlock()
}

// transact sends message seq and counts it as delivered or failed. It
// returns false when the connection can no longer be used.
func (w *worker) transact(seq int64) (keep bool) {
	keep = true
	r := w.r
	cfg := &r.cfg
	first := (seq - 1) * int64(cfg.Rcpts)
	rcpt := func(i int) []byte { return r.rcptCmds[(first+int64(i))%int64(len(r.rcptCmds))] }

	t0 := time.Now()
	_ = w.NetConn().SetDeadline(t0.Add(cfg.Timeout))
	if w.Buffered() > 0 {
		// The server said something nobody asked for, such as a second
		// reply to the last end of data: the dialogue is out of step.
		r.fail(smtpc.StageMail + ": " + smtpc.ErrUnsolicited.Error())
		return false
	}

	// fail counts the message as failed with the last reply; the session
	// stays usable unless the server is closing it (421).
	failReply := func(key string, code int) bool {
		r.fail(key)
		if code == 421 {
			return false
		}
		return w.rset()
	}

	// Recipients refused while others were accepted fail no message;
	// they are counted as events once the message goes on to DATA.
	accepted := 0
	w.refused = w.refused[:0]
	if cfg.Pipelining && w.pipelining {
		// RFC 2920: MAIL, the RCPTs and DATA go in one write; the replies
		// come back in order.
		b := append(w.envBuf[:0], r.mailCmd...)
		for i := range cfg.Rcpts {
			b = append(b, rcpt(i)...)
		}
		b = append(b, "DATA\r\n"...)
		w.envBuf = b
		if err := w.Write(b); err != nil {
			r.fail(errKey(smtpc.StageMail, err))
			return false
		}
		var mailKey string
		code, err := w.Reply()
		if err != nil {
			r.fail(errKey(smtpc.StageMail, err))
			return false
		}
		if code != 250 {
			mailKey = w.replyKey(smtpc.StageMail)
			if code == 421 {
				r.fail(mailKey)
				return false
			}
		}
		for range cfg.Rcpts {
			if !w.rcptReply(&accepted) {
				return false
			}
		}
		code, err = w.Reply()
		if err != nil {
			r.fail(errKey(smtpc.StageData, err))
			return false
		}
		if code != 354 {
			// The first refusal is the reason: MAIL's, else a RCPT's.
			key := w.replyKey(smtpc.StageData)
			switch {
			case mailKey != "":
				key = mailKey
			case accepted == 0 && len(w.refused) > 0:
				key = w.refused[0]
			}
			return failReply(key, code)
		}
		if mailKey != "" || accepted == 0 {
			// The server invites data for a transaction it refused: do
			// not send a message it may store; drop the connection.
			r.fail(smtpc.StageData + ": 354 after a refused envelope")
			return false
		}
	} else {
		if err := w.Write(r.mailCmd); err != nil {
			r.fail(errKey(smtpc.StageMail, err))
			return false
		}
		code, err := w.Reply()
		if err != nil {
			r.fail(errKey(smtpc.StageMail, err))
			return false
		}
		if code != 250 {
			return failReply(w.replyKey(smtpc.StageMail), code)
		}
		for i := range cfg.Rcpts {
			if err := w.Write(rcpt(i)); err != nil {
				r.fail(errKey(smtpc.StageRcpt, err))
				return false
			}
			if !w.rcptReply(&accepted) {
				return false
			}
		}
		if accepted == 0 {
			return failReply(w.refused[0], 0)
		}
		if err := w.Write([]byte("DATA\r\n")); err != nil {
			r.fail(errKey(smtpc.StageData, err))
			return false
		}
		code, err = w.Reply()
		if err != nil {
			r.fail(errKey(smtpc.StageData, err))
			return false
		}
		if code != 354 {
			return failReply(w.replyKey(smtpc.StageData), code)
		}
	}
	for _, key := range w.refused {
		r.event(key)
	}

	// The data: header, a prefix of the shared body, and the end of data,
	// in one writev.
	var body []byte
	w.hdr, body = r.message(w.hdr[:0], seq)
	if err := w.WriteData(w.hdr, body, endOfData); err != nil {
		r.fail(errKey(smtpc.StageSend, err))
		return false
	}
	t1 := time.Now()
	code, err := w.Reply()
	if err != nil {
		r.fail(errKey(smtpc.StageEnd, err))
		return false
	}
	if code != 250 {
		return failReply(w.replyKey(smtpc.StageEnd), code)
	}
	t2 := time.Now()
	if w.Buffered() > 0 {
		// More than one reply to the end of data: the message counts (it
		// got its 250) but the dialogue is out of step; start afresh.
		r.event(smtpc.StageEnd + ": " + smtpc.ErrUnsolicited.Error())
		keep = false
	}
	w.acked = append(w.acked, seq)
	r.delivered.Add(1)
	r.bytes.Add(int64(len(w.hdr) + len(body) + 2))
	r.mu.Lock()
	recordDuration(r.hEnd, t2.Sub(t1))
	recordDuration(r.hTxn, t2.Sub(t0))
	if !w.sched.IsZero() {
		recordDuration(r.hSched, t2.Sub(w.sched))
	}
	r.mu.Unlock()
	return keep
}

// rcptReply reads one RCPT reply: an acceptance counts in accepted, a
// refusal is noted; it returns false when the session cannot go on.
func (w *worker) rcptReply(accepted *int) bool {
	code, err := w.Reply()
	switch {
	case err != nil:
		w.r.fail(errKey(smtpc.StageRcpt, err))
		return false
	case code/100 == 2:
		*accepted++
	case code == 421:
		w.r.fail(w.replyKey(smtpc.StageRcpt))
		return false
	default:
		w.refused = append(w.refused, w.replyKey(smtpc.StageRcpt))
	}
	return true
}

// rset resets the transaction after a refusal; false if that fails.
func (w *worker) rset() bool {
	if err := w.Rset(); err != nil {
		w.r.event(keyOf(err))
		return false
	}
	return true
}
