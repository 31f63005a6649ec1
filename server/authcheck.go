package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-msgauth/dmarc"
	"github.com/rs/zerolog"

	"github.com/nanomx/nanomx/proto"
	"github.com/nanomx/nanomx/server/auth"
	"github.com/nanomx/nanomx/server/check"
	"github.com/nanomx/nanomx/server/resolver"
	"github.com/nanomx/nanomx/spool"
)

// Actions for a message that fails DMARC, and for SPF fail.
const (
	ActionReject = "reject" // 550 5.7.1 at end of data (SPF: 550 5.7.23 at MAIL)
	ActionJunk   = "junk"   // delivered into Config.JunkFolder
	ActionHeader = "header" // delivered, the verdict only in Authentication-Results
)

// The replies of sender authentication.
var (
	// ReplyDMARCReject refuses a message failing the DMARC policy
	// p=reject of its From domain (RFC 7489 6.6.4, 10.3; as Gmail does).
	ReplyDMARCReject = proto.NewReply(550, "5.7.1", "Message rejected: unauthenticated mail from this domain is refused by its DMARC policy")
	// ReplySPFFail refuses a sender whose SPF result is fail (RFC 7372
	// 3.2: 5.7.23), with spf_fail_action = "reject".
	ReplySPFFail = proto.NewReply(550, "5.7.23", "SPF validation failed for the sender")
	// ReplyHeaderTooLong refuses, with the checks on, a message whose
	// header section is longer than spill_threshold: forged
	// Authentication-Results past that point could not be removed (as
	// Exim refuses headers past header_maxsize).
	ReplyHeaderTooLong = proto.NewReply(552, "5.3.4", "Message header section too large")
)

// authPoolKeep goroutines wait for checks (enough for the end of data of
// 50 sessions at once: a goroutine started for a check begins with a
// small stack and grows it, copying, in DKIM's verification; a resident
// one keeps it); authPoolMax bounds the ones started when those are busy. Most of a
// check is waiting on DNS, and a slow DNS must not make the checks wait
// for each other (a goroutine costs a few KB and only while it runs);
// the CPU work runs GOMAXPROCS at a time anyway. authPoolQueue bounds the
// checks waiting past it; past that a check yields temperror at once.
const (
	authPoolKeep  = 64
	authPoolMax   = 4096
	authPoolQueue = 1024
)

// authChecker is sender authentication (server/auth) on the check stage:
// iprev starts at connect, SPF at MAIL (its DNS overlaps the rest of the
// transaction), DKIM and the DMARC record lookup at the end of data; the
// DMARC decision and the Authentication-Results field come when all of
// them have answered. Every lookup runs on the goroutines of one bounded
// pool, never on the event loop; the checks of one message share one
// deadline (bound from the start of each stage), past which what did not
// answer is temperror and the message is accepted.
type authChecker struct {
	r     auth.Resolver
	pool  *check.Pool
	bound time.Duration
	id    string // authserv-id
	log   zerolog.Logger

	spfCache spfCache

	spf, dkim, dmarc, iprev bool
	rejectAction            string
	quarantineAction        string
	spfReject               bool
	junk                    string

	stats authStats // results and actions, for the metrics

	// cached is set when r is the server's caching resolver, which can
	// answer from its cache alone (resolver.CacheOnly): the end of data
	// then decides on the session's goroutine when nothing needs a round
	// trip (dataInline), under a context of cacheOnly.
	cached    bool
	cacheOnly sync.Pool // of *resolver.CacheOnlyContext
}

// authSession is one session's part: the connection's iprev and the
// transaction's SPF, each nil when not run.
type authSession struct {
	sid   string
	iprev *outcome[auth.IPRevResult]
	spf   *outcome[auth.SPFResult]
	// helo is the HELO name whose addresses were looked up ahead of
	// iprev (Helo).
	helo string
}

// newAuthChecker returns the check for cfg, or nil when every check is
// off. r answers the lookups.
func newAuthChecker(cfg Config, r auth.Resolver) *authChecker {
	if !cfg.SPF && !cfg.DKIM && !cfg.DMARC && !cfg.IPRev {
		return nil
	}
	id := cfg.AuthservID
	if id == "" {
		id = cfg.Hostname
	}
	_, cached := r.(*resolver.Resolver)
	return &authChecker{
		r:                r,
		cached:           cached,
		pool:             check.NewPoolOnDemand(authPoolKeep, authPoolMax, authPoolQueue),
		spfCache:         spfCache{m: make(map[spfKey]spfEntry)},
		bound:            3 * dnsTimeout(&cfg),
		id:               id,
		log:              cfg.Log,
		spf:              cfg.SPF,
		dkim:             cfg.DKIM,
		dmarc:            cfg.DMARC,
		iprev:            cfg.IPRev,
		rejectAction:     cfg.DMARCRejectAction,
		quarantineAction: cfg.DMARCQuarantineAction,
		spfReject:        cfg.SPFFailAction == ActionReject,
		junk:             cfg.JunkFolder,
	}
}

// dropField is the spool's rule for the Authentication-Results fields a
// sender forged in our name (RFC 8601 5).
func (a *authChecker) dropField() func([]byte) bool { return auth.ForgedResults(a.id) }

// session returns i's authentication state, made at the first stage.
func (a *authChecker) session(i *Info) *authSession {
	if i.auth == nil {
		i.auth = &authSession{}
	}
	return i.auth
}

// Connect starts iprev.
func (a *authChecker) Connect(i *Info) *check.Result {
	st := a.session(i)
	if a.iprev {
		ip := i.IP
		st.iprev = runOn(a.pool, a.bound, auth.IPRevResult{Status: auth.TempError, IP: ip, Reason: "timed out"},
			func(ctx context.Context) auth.IPRevResult { return auth.CheckIPRev(ctx, a.r, ip) })
	}
	return nil
}

// Helo accepts every name (SPF checks it at MAIL for a null sender).
//
// While iprev is under way it also looks up the addresses of the HELO
// name, if it is a host name: a mail server's HELO name is most often its
// PTR name, and iprev's forward lookup of that name then joins this one in
// the resolver (or finds it cached), one DNS round trip after the PTR
// answer instead of two. The answer is only cached; a name that is not the
// PTR name costs one lookup, bounded like the others.
func (a *authChecker) Helo(i *Info, name string) *check.Result {
	if !a.iprev || !a.cached {
		return nil
	}
	st := a.session(i)
	host := strings.ToLower(strings.TrimSuffix(name, "."))
	if st.iprev == nil || st.iprev.known() || !auth.IsDomainName(host) || st.helo == host {
		return nil
	}
	st.helo = host
	runOn(a.pool, a.bound, struct{}{}, func(ctx context.Context) struct{} {
		_, _ = a.r.LookupIPAddr(ctx, host)
		return struct{}{}
	})
	return nil
}

// Rcpt accepts: authentication is about the sender.
func (a *authChecker) Rcpt(*Info, proto.Address) *check.Result { return nil }

// Mail starts SPF. With spf_fail_action = "reject" its reply waits for
// SPF; else nothing waits until the end of data.
func (a *authChecker) Mail(i *Info, from proto.Address, _ proto.MailParams) *check.Result {
	st := a.session(i)
	st.spf = nil
	if a.spf {
		ip, helo := i.IP, i.Helo
		k := spfKey{ip, helo, from.Local, from.Domain}
		if r, ok := a.spfCache.get(k, time.Now()); ok {
			st.spf = &outcome[auth.SPFResult]{done: true, v: r}
		} else {
			sender := from.String()
			// The fallback names the domain: DMARC must read a timed-out
			// SPF as temperror for it, not as no SPF at all (a fail).
			fallback := auth.SPFIdentity(helo, sender)
			fallback.Status, fallback.Reason = auth.TempError, "timed out"
			st.spf = runOn(a.pool, a.bound, fallback,
				func(ctx context.Context) auth.SPFResult {
					r := auth.CheckSPF(ctx, a.r, ip, helo, sender)
					a.spfCache.put(k, r, time.Now())
					return r
				})
		}
	}
	// A known outcome that accepts needs no result (nil accepts). iprev,
	// begun at connect, is not waited for here: the end of data waits
	// for it (finish), and so does the first spill of a large body, whose
	// Received field names the client (iprevwait.go).
	var waits []*check.Result
	if st.spf != nil && a.spfReject {
		sid, ip := st.sid, i.IP
		waits = append(waits, resultOf(st.spf, func(r auth.SPFResult) check.Verdict {
			if r.Status != auth.Fail {
				return check.Verdict{}
			}
			a.stats.add(authSPF, r.Status) // the transaction ends here: decide never sees it
			a.log.Info().Str("sid", sid).Stringer("remote", ip).Str("action", ActionReject).
				Str("spf", string(r.Status)).Str("domain", r.Domain).Msg("refused: SPF fail")
			return check.Verdict{Reply: ReplySPFFail}
		}))
	} else if st.spf != nil && !st.spf.known() {
		// Decided at the end of data, with DKIM and DMARC (which waits
		// for it too: finish).
		i.Later(resultOf(st.spf, func(auth.SPFResult) check.Verdict { return check.Verdict{} }))
	}
	switch len(waits) {
	case 0:
		return nil
	case 1:
		return waits[0]
	}
	return check.All(waits...)
}

// clientName is the name the Received field shows for the client: the
// forward-confirmed PTR name, "unknown" when iprev did not confirm one,
// "" when iprev is off (the field then shows only the address).
func (st *authSession) clientName() string {
	if st == nil || st.iprev == nil {
		return ""
	}
	if r, ok := st.iprev.get(); ok && r.Status == auth.Pass {
		return r.Name
	}
	return "unknown"
}

// dkimOut is what the message task found: the From domains, the DKIM
// results and the DMARC records.
type dkimOut struct {
	from   auth.FromDomains
	read   bool // the header was read
	dkim   []auth.DKIMResult
	reason string
	dmarc  []auth.DMARCRecord // nil: not looked up, or not in time
}

// Data verifies DKIM and looks up DMARC for a complete message, then
// decides with the SPF and iprev results. It is one task on the pool: the
// DMARC lookups run beside the DKIM key lookups and verification, on a
// goroutine of their own.
func (a *authChecker) Data(i *Info, body []byte) *check.Result {
	st := a.session(i)
	if !a.dkim && !a.dmarc {
		return a.finish(st, i.IP, nil, nil)
	}
	if a.cached && body != nil && len(body) <= inlineMaxBody && st.spf.known() && st.iprev.known() {
		if v, ok := a.dataInline(st, i.IP, body); ok {
			return check.Now(v)
		}
	}
	// The body belongs to the session, which waits for this verdict; the
	// guard makes sure nothing reads it once the verdict is out (a late
	// reader gets an error instead).
	g := &guard{}
	var open func(ctx context.Context) (io.ReadCloser, error)
	switch {
	case body != nil || i.spill == nil:
		open = func(context.Context) (io.ReadCloser, error) { return io.NopCloser(g.reader(body)), nil }
	default:
		// A spilled message: its chunks are on disk once the spool says
		// so; the tail is still the session's.
		at := make(chan spillAt, 1)
		i.spill.Written(func(path string, off int64) { at <- spillAt{path, off} })
		tail := i.tail
		open = func(ctx context.Context) (io.ReadCloser, error) {
			var w spillAt
			select {
			case w = <-at:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
			if w.path == "" {
				return nil, errors.New("spilled message unavailable")
			}
			f, err := os.Open(w.path)
			if err != nil {
				return nil, err
			}
			if _, err := f.Seek(w.off, io.SeekStart); err != nil {
				f.Close()
				return nil, err
			}
			return struct {
				io.Reader
				io.Closer
			}{io.MultiReader(f, g.reader(tail)), f}, nil
		}
	}
	msg := runOn(a.pool, a.bound, dkimOut{reason: "timed out"}, func(ctx context.Context) dkimOut {
		rc, err := open(ctx)
		if err != nil {
			return dkimOut{reason: "reading message: " + err.Error()}
		}
		defer rc.Close()
		m, err := auth.ReadMessage(rc)
		if err != nil {
			return dkimOut{reason: "reading message: " + err.Error()}
		}
		out := dkimOut{read: true, from: m.From()}
		var recs []auth.DMARCRecord
		var looked chan struct{}
		if a.dmarc && len(out.from.Domains) > 0 {
			domains := out.from.Domains
			looked = make(chan struct{})
			go func() {
				defer close(looked)
				res := make([]auth.DMARCRecord, len(domains))
				if len(domains) == 1 { // most messages: no second goroutine
					res[0] = auth.LookupDMARC(ctx, a.r, domains[0])
					recs = res
					return
				}
				// At once (at most 4): slow domains listed first must not
				// push the others past the deadline.
				var wg sync.WaitGroup
				for i, d := range domains {
					wg.Add(1)
					go func() {
						defer wg.Done()
						res[i] = auth.LookupDMARC(ctx, a.r, d)
					}()
				}
				wg.Wait()
				recs = res
			}()
		}
		if a.dkim {
			out.dkim = m.VerifyDKIM(ctx, a.r)
		} else {
			m.Close()
		}
		if looked != nil {
			select {
			case <-looked:
				out.dmarc = recs
			case <-ctx.Done():
			}
		}
		return out
	})
	return a.finish(st, i.IP, msg, g)
}

// inlineMaxBody bounds the messages dataInline takes: hashing one costs
// about 1 µs per KB, and DKIM may hash it twice (simple and relaxed).
const inlineMaxBody = 128 << 10

// dataInline is Data for a message whose every answer is cached already:
// the key of each signature, the DMARC record of each From domain (SPF
// and iprev have answered). It runs on the session's goroutine, looking
// only at the resolver's cache (CPU only: the From header, the hashes and
// the signatures' verification, about 60 µs for a 10 KB message with an
// RSA-2048 signature), which spares the pool's goroutine, its hand-off and
// the event loop's wake-up for a verdict; most messages of a session
// after its first, and of a sender seen recently, take it. It reports
// false, deciding nothing, when a lookup would have had to wait: Data
// then runs the checks on the pool (the work done here, at most the From
// header and the DMARC lookups, is lost).
func (a *authChecker) dataInline(st *authSession, ip netip.Addr, body []byte) (check.Verdict, bool) {
	ctx, _ := a.cacheOnly.Get().(*resolver.CacheOnlyContext)
	if ctx == nil {
		ctx = resolver.NewCacheOnly(context.Background())
	}
	defer func() {
		ctx.Reset() // every lookup under it has returned
		a.cacheOnly.Put(ctx)
	}()
	m := auth.ReadMessageBytes(body)
	out := dkimOut{read: true, from: m.From()}
	if a.dmarc {
		for _, d := range out.from.Domains {
			out.dmarc = append(out.dmarc, auth.LookupDMARC(ctx, a.r, d))
		}
		if ctx.Missed() {
			m.Close()
			return check.Verdict{}, false
		}
	}
	if a.dkim {
		out.dkim = m.VerifyDKIM(ctx, a.r)
	} else {
		m.Close()
	}
	if ctx.Missed() {
		return check.Verdict{}, false
	}
	return a.decide(st, ip, out, out.dmarc), true
}

// spillAt is where a spilled message's bytes can be read back.
type spillAt struct {
	path string
	off  int64
}

// finish waits for SPF, the message task and its DMARC lookups (each
// bounded), then decides. The decision is pure computation: it may run
// on whichever goroutine completed last.
func (a *authChecker) finish(st *authSession, ip netip.Addr, msg *outcome[dkimOut], g *guard) *check.Result {
	out := check.New()
	decide := func(m dkimOut, recs []auth.DMARCRecord) {
		g.close()
		out.Complete(a.decide(st, ip, m, recs))
	}
	afterMsg := func() {
		if msg == nil {
			decide(dkimOut{}, nil)
			return
		}
		msg.then(func(m dkimOut) { decide(m, m.dmarc) })
	}
	afterSPF := func() {
		if st.spf != nil {
			st.spf.then(func(auth.SPFResult) { afterMsg() })
		} else {
			afterMsg()
		}
	}
	if st.iprev != nil {
		st.iprev.then(func(auth.IPRevResult) { afterSPF() })
	} else {
		afterSPF()
	}
	return out
}

// decide builds the Authentication-Results field and applies the DMARC
// policy's action.
func (a *authChecker) decide(st *authSession, ip netip.Addr, m dkimOut, recs []auth.DMARCRecord) check.Verdict {
	var res auth.Results
	if st.iprev != nil {
		r, _ := st.iprev.get()
		res.IPRev = &r
	}
	var spf auth.SPFResult
	if st.spf != nil {
		spf, _ = st.spf.get()
		res.SPF = &spf
	}
	if a.dkim {
		res.DKIMChecked = true
		res.DKIM = m.dkim
		if !m.read {
			res.DKIM = []auth.DKIMResult{{Status: auth.TempError, Reason: m.reason}}
		}
	}
	var v check.Verdict
	if a.dmarc {
		var buf [2]auth.DMARCResult
		res.DMARC = buf[:0]
		res.DMARCChecked = true
		res.DMARCProblem = m.from.Problem
		switch {
		case !m.read:
			res.DMARC = []auth.DMARCResult{{Status: auth.TempError, Reason: m.reason}}
		case len(m.from.Domains) == 0:
			// No From domain: nothing to evaluate (RFC 7489 6.6.1); the
			// problem is named in the result's comment.
			res.DMARC = []auth.DMARCResult{{Status: auth.PermError}}
		}
		for i, d := range m.from.Domains {
			rec := auth.DMARCRecord{Status: auth.TempError, Domain: d, Reason: "timed out"}
			if i < len(recs) {
				rec = recs[i]
			}
			r := auth.EvaluateDMARC(rec, spf, m.dkim)
			res.DMARC = append(res.DMARC, r)
			if r.Status == auth.Fail {
				v = a.act(v, st.sid, ip, r, spf, m.dkim)
			}
		}
	}
	a.stats.count(&res)
	v.Headers = auth.FormatResults(a.id, res)
	return v
}

// act applies the action for a failing DMARC result r on top of v: the
// strictest of several From domains' wins.
func (a *authChecker) act(v check.Verdict, sid string, ip netip.Addr, r auth.DMARCResult, spf auth.SPFResult, dkims []auth.DKIMResult) check.Verdict {
	action := ActionHeader
	switch r.Policy {
	case dmarc.PolicyReject:
		action = a.rejectAction
	case dmarc.PolicyQuarantine:
		action = a.quarantineAction
	}
	switch action {
	case ActionReject:
		v.Reply = ReplyDMARCReject
	case ActionJunk:
		v.Folder = a.junk
	}
	a.stats.action(action)
	ev := a.log.Info().Str("sid", sid).Stringer("remote", ip).Str("action", action).
		Str("domain", r.Domain).Str("dmarc", string(r.Status)).Str("policy", string(r.Policy)).
		Str("spf", string(spf.Status)).Str("spf_domain", spf.Domain)
	dk := make([]string, len(dkims))
	for i, d := range dkims {
		dk[i] = string(d.Status) + ":" + d.Domain
	}
	ev.Strs("dkim", dk).Msg("DMARC fail")
	return v
}

// spfCacheTTL is how long an SPF result is reused for the same client,
// HELO name and reverse-path (a sender's session sends many messages;
// its DNS answers are cached for their TTLs anyway); spfCacheEntries
// bounds the results kept. DNS trouble (temperror) is not kept.
const (
	spfCacheTTL     = 10 * time.Second
	spfCacheEntries = 4096
)

// spfKey is what an SPF result depends on: the client, the HELO name
// (the identity for a null sender; %{h} in macros) and the reverse-path
// (its local part is %{l}), as its parts: equal parts make equal
// addresses, and the cached path needs no string built.
type spfKey struct {
	ip                  netip.Addr
	helo, local, domain string
}

type spfEntry struct {
	r     auth.SPFResult
	until time.Time
}

// spfCache holds recent SPF results; get is cheap enough for the event
// loop (a map under a lock held for the lookup only).
type spfCache struct {
	mu sync.Mutex
	m  map[spfKey]spfEntry
}

func (c *spfCache) get(k spfKey, now time.Time) (auth.SPFResult, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[k]
	if !ok || !now.Before(e.until) {
		return auth.SPFResult{}, false
	}
	return e.r, true
}

func (c *spfCache) put(k spfKey, r auth.SPFResult, now time.Time) {
	if r.Status == auth.TempError {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.m) >= spfCacheEntries {
		// Full: drop the expired, or else any one.
		for old, e := range c.m {
			if !now.Before(e.until) {
				delete(c.m, old)
			}
		}
		for old := range c.m {
			if len(c.m) < spfCacheEntries {
				break
			}
			delete(c.m, old)
		}
	}
	c.m[k] = spfEntry{r, now.Add(spfCacheTTL)}
}

// outcome is a value known later, with any number of waiters (a
// check.Result has one).
type outcome[T any] struct {
	mu      sync.Mutex
	done    bool
	v       T
	waiters []func(T)
}

// set stores v unless a value is there; it runs the waiters on the
// calling goroutine.
func (o *outcome[T]) set(v T) {
	o.mu.Lock()
	if o.done {
		o.mu.Unlock()
		return
	}
	o.done, o.v = true, v
	ws := o.waiters
	o.waiters = nil
	o.mu.Unlock()
	for _, w := range ws {
		w(v)
	}
}

// known reports whether o is nil (not run) or has its value.
func (o *outcome[T]) known() bool {
	if o == nil {
		return true
	}
	_, ok := o.get()
	return ok
}

// get returns the value and whether it is known.
func (o *outcome[T]) get() (T, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.v, o.done
}

// then runs fn with the value once it is known: at once if it is.
func (o *outcome[T]) then(fn func(T)) {
	o.mu.Lock()
	if !o.done {
		o.waiters = append(o.waiters, fn)
		o.mu.Unlock()
		return
	}
	v := o.v
	o.mu.Unlock()
	fn(v)
}

// runOn runs fn on the pool within d; its outcome is fn's value, or
// fallback when d passes first or the pool is full.
func runOn[T any](p *check.Pool, d time.Duration, fallback T, fn func(context.Context) T) *outcome[T] {
	o := &outcome[T]{}
	r := p.Go(d, check.Verdict{}, func(ctx context.Context) check.Verdict {
		o.set(fn(ctx))
		return check.Verdict{}
	})
	r.Notify(func(check.Verdict) { o.set(fallback) }) // a no-op once fn has set it
	return o
}

// resultOf is a check.Result completing with verdict(value) once o is
// known.
func resultOf[T any](o *outcome[T], verdict func(T) check.Verdict) *check.Result {
	if v, ok := o.get(); ok {
		return check.Now(verdict(v))
	}
	r := check.New()
	o.then(func(v T) { r.Complete(verdict(v)) })
	return r
}

// guard lets readers read the session's body bytes until it is closed.
type guard struct {
	mu     sync.Mutex
	closed bool
}

func (g *guard) close() {
	if g != nil {
		g.mu.Lock()
		g.closed = true
		g.mu.Unlock()
	}
}

// reader reads b while g is open; after close it fails.
func (g *guard) reader(b []byte) io.Reader { return &guardReader{g: g, b: b} }

type guardReader struct {
	g *guard
	b []byte
}

var errBodyGone = errors.New("message body no longer available")

func (r *guardReader) Read(p []byte) (int, error) {
	r.g.mu.Lock()
	defer r.g.mu.Unlock()
	if r.g.closed {
		return 0, errBodyGone
	}
	if len(r.b) == 0 {
		return 0, io.EOF
	}
	n := copy(p, r.b)
	r.b = r.b[n:]
	return n, nil
}

// clientName is the Received field's name for the client (iprev).
func (c *conn) clientName() string {
	if c.cs == nil {
		return ""
	}
	return c.cs.info.auth.clientName()
}

// validateAuth checks the sender authentication settings.
func (c *Config) validateAuth() error {
	bad := func(key, format string, args ...any) error {
		return &ConfigError{Key: key, Err: fmt.Errorf(format, args...)}
	}
	switch {
	case c.DMARCRejectAction != ActionReject && c.DMARCRejectAction != ActionJunk && c.DMARCRejectAction != ActionHeader:
		return bad("dmarc_reject_action", "must be %q, %q or %q", ActionReject, ActionJunk, ActionHeader)
	case c.DMARCQuarantineAction != ActionJunk && c.DMARCQuarantineAction != ActionHeader:
		return bad("dmarc_quarantine_action", "must be %q or %q", ActionJunk, ActionHeader)
	case c.SPFFailAction != ActionReject && c.SPFFailAction != ActionHeader:
		return bad("spf_fail_action", "must be %q or %q", ActionHeader, ActionReject)
	case !spool.ValidFolder(c.JunkFolder):
		return bad("junk_folder", "%q is not a valid Maildir++ folder name", c.JunkFolder)
	case c.AuthservID != "" && !validAuthservID(c.AuthservID):
		return bad("authserv_id", "%q must be a host name (letters, digits, '-', '.')", c.AuthservID)
	case (c.SPF || c.DKIM || c.DMARC || c.IPRev) && 3*dnsTimeout(c) >= c.CommandTimeout:
		return bad("dns_timeout", "3 × dns_timeout (the bound of one message's checks) must be below command_timeout")
	}
	return nil
}

// dnsTimeout is the per-query timeout in force (0 means 5s).
func dnsTimeout(c *Config) time.Duration {
	if c.DNSTimeout <= 0 {
		return 5 * time.Second
	}
	return c.DNSTimeout
}

func validAuthservID(s string) bool {
	if len(s) > 253 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.') {
			return false
		}
	}
	return true
}
