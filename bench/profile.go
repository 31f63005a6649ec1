package bench

import (
	"context"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nanomx/nanomx/bench/smtpc"
)

// ProfileInternet is the traffic an internet-facing MX sees, as a mix of
// what each claimed sequence number becomes (per mille):
//
//	730  a message, delivered as usual
//	 80  a message to an unknown recipient (unknown-<seq>@ the domain of
//	     the first -to): the server should refuse the RCPT (5xx), then
//	     the client says RSET
//	 40  a client that disconnects mid-transaction: MAIL, RCPT, DATA,
//	     half of the message, then it closes the connection
//	100  an idle bot: a connection that says EHLO (and STARTTLS when its
//	     connection is a TLS one) and then nothing for ProfileBotHold
//	 50  a slow bot: after EHLO it trickles "MAIL FROM:<bot@example.net>"
//	     one byte every ProfileSlowInterval for ProfileBotHold
//
// and of the connections a sequence number opens: 900 in 1000 upgrade
// with STARTTLS, the others stay in plaintext; 800 carry one message,
// 150 two and 50 five (a "message" may be any of the first three kinds).
// Bots run on their own goroutines beside the sessions (at most
// maxProfileBots at once), so that they load the server without taking a
// session slot. Message sizes are the "mix" sizes unless -size says
// otherwise.
//
// Every choice is a function of the seed and the sequence number only
// (planOf), so a run with the same seed and -count attempts the same
// mix; which connection carries which message depends on timing when
// there are several sessions.
const ProfileInternet = "internet"

// Bot timings of the internet profile.
const (
	ProfileBotHold      = 2 * time.Second
	ProfileSlowInterval = 250 * time.Millisecond
	maxProfileBots      = 2000
)

// kind is what a sequence number becomes under a profile.
type kind uint8

const (
	kindMessage kind = iota
	kindRefused
	kindAbort
	kindIdleBot
	kindSlowBot
	nKinds
)

var kindNames = [nKinds]string{"message", "unknown recipient", "disconnect mid-data", "idle bot", "slow bot"}

func (k kind) String() string { return kindNames[k] }

func (k kind) bot() bool { return k == kindIdleBot || k == kindSlowBot }

// The internet mix, per mille; see ProfileInternet.
var (
	internetKinds   = [nKinds]int{730, 80, 40, 100, 50}
	internetTLS     = 900
	internetPerConn = []struct{ n, permille int }{{1, 800}, {2, 150}, {5, 50}}
)

// plan is what one sequence number does.
type plan struct {
	kind kind
	// For a connection this sequence number opens: STARTTLS or not, and
	// how many sequence numbers it carries before QUIT.
	tls     bool
	perConn int
}

// planOf is the plan of seq under the internet profile with seed.
func planOf(seed, seq int64) plan {
	x := splitmix64(uint64(seed)*0x9e3779b97f4a7c15 ^ uint64(seq) ^ 0x5bd1e995)
	var p plan
	k := int(x % 1000)
	for i, share := range internetKinds {
		if k < share {
			p.kind = kind(i)
			break
		}
		k -= share
	}
	p.tls = int(x>>20%1000) < internetTLS
	c := int(x >> 40 % 1000)
	for _, pc := range internetPerConn {
		if c < pc.permille {
			p.perConn = pc.n
			break
		}
		c -= pc.permille
	}
	return p
}

// ProfileReport is what a -profile run did beside the messages counted in
// Result: Attempted is Delivered + Failed + Unserved + the planned
// unknown-recipient, disconnect and bot sequence numbers.
type ProfileReport struct {
	Name string `json:"name"`
	// Planned counts the attempted sequence numbers by kind ("message",
	// "unknown recipient", "disconnect mid-data", "idle bot", "slow bot").
	Planned map[string]int64 `json:"planned"`
	// TLSConns and PlainConns are the load connections opened, with and
	// without STARTTLS (bots not included).
	TLSConns   int64 `json:"tls_conns"`
	PlainConns int64 `json:"plain_conns"`
	// Refused counts the unknown recipients refused with 5xx, as planned;
	// RefusedAccepted those the server accepted (it has a catch-all).
	Refused         int64 `json:"refused"`
	RefusedAccepted int64 `json:"refused_accepted,omitempty"`
	// Aborted counts the transactions dropped mid-data, as planned.
	Aborted int64 `json:"aborted"`
	// BotsOpened counts the bots whose session opened; BotOutcomes what
	// had happened to each bot when it left ("still open" when it closed
	// first, "closed after 421 4.4.2"...), or why it could not open.
	BotsOpened  int64            `json:"bots_opened"`
	BotOutcomes map[string]int64 `json:"bot_outcomes,omitempty"`
}

// profileState counts what a profile run does; shared by the sessions.
type profileState struct {
	seed                       int64
	planned                    [nKinds]atomic.Int64
	tlsConns, plainConns       atomic.Int64
	refused, refusedAccepted   atomic.Int64
	aborted, botsOpened, alive atomic.Int64

	stop     chan struct{} // closed at the end of the load: bots leave
	stopOnce sync.Once
	wg       sync.WaitGroup
	mu       sync.Mutex
	outcomes map[string]int64
}

func newProfileState(seed int64) *profileState {
	return &profileState{seed: seed, stop: make(chan struct{}), outcomes: make(map[string]int64)}
}

// plan returns seq's plan and counts it.
func (p *profileState) plan(seq int64) plan {
	pl := planOf(p.seed, seq)
	p.planned[pl.kind].Add(1)
	return pl
}

func (p *profileState) outcome(key string) {
	p.mu.Lock()
	p.outcomes[key]++
	p.mu.Unlock()
}

// finish stops the bots, waits for them and returns the report.
func (p *profileState) finish() *ProfileReport {
	p.stopOnce.Do(func() { close(p.stop) })
	p.wg.Wait()
	rep := &ProfileReport{
		Name:            ProfileInternet,
		Planned:         make(map[string]int64),
		TLSConns:        p.tlsConns.Load(),
		PlainConns:      p.plainConns.Load(),
		Refused:         p.refused.Load(),
		RefusedAccepted: p.refusedAccepted.Load(),
		Aborted:         p.aborted.Load(),
		BotsOpened:      p.botsOpened.Load(),
	}
	for k := range nKinds {
		if n := p.planned[k].Load(); n > 0 {
			rep.Planned[k.String()] = n
		}
	}
	p.mu.Lock()
	if len(p.outcomes) > 0 {
		rep.BotOutcomes = p.outcomes
	}
	p.mu.Unlock()
	return rep
}

// startBot runs the bot of pl on its own goroutine.
func (r *runner) startBot(ctx context.Context, pl plan) {
	p := r.prof
	if p.alive.Add(1) > maxProfileBots {
		p.alive.Add(-1)
		p.outcome("not opened: too many bots")
		return
	}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		defer p.alive.Add(-1)
		var c conn
		if key := r.dialFor(pl.tls).open(ctx, &c, r.cfg.Timeout, nil); key != "" {
			p.outcome("not opened: " + key)
			return
		}
		p.botsOpened.Add(1)
		defer c.close()
		hold := time.NewTimer(ProfileBotHold)
		defer hold.Stop()
		var tick <-chan time.Time
		script := []byte("MAIL FROM:<bot@example.net>\r\n")
		if pl.kind == kindSlowBot {
			t := time.NewTicker(ProfileSlowInterval)
			defer t.Stop()
			tick = t.C
		}
		for {
			select {
			case <-tick:
				if len(script) == 0 {
					continue
				}
				_ = c.NetConn().SetWriteDeadline(time.Now().Add(r.cfg.Timeout))
				if err := c.Write(script[:1]); err != nil {
					p.outcome(pl.kind.String() + ": " + errKey("write", err))
					return
				}
				script = script[1:]
			case <-hold.C:
				p.outcome(pl.kind.String() + ": " + probe(c.NetConn(), make([]byte, 512)))
				return
			case <-p.stop:
				p.outcome(pl.kind.String() + ": " + probe(c.NetConn(), make([]byte, 512)))
				return
			case <-ctx.Done():
				p.outcome(pl.kind.String() + ": cut off")
				return
			}
		}
	}()
}

// transactRefused sends MAIL and one RCPT to an unknown address, which
// should be refused, then RSET. It returns false when the connection can
// no longer be used.
func (w *worker) transactRefused(seq int64) bool {
	r := w.r
	_ = w.NetConn().SetDeadline(time.Now().Add(r.cfg.Timeout))
	if err := w.Write(r.mailCmd); err != nil {
		r.fail(errKey(smtpc.StageMail, err))
		return false
	}
	code, err := w.Reply()
	switch {
	case err != nil:
		r.fail(errKey(smtpc.StageMail, err))
		return false
	case code != 250:
		r.fail(w.replyKey(smtpc.StageMail))
		return code != 421 && w.rset()
	}
	cmd := "RCPT TO:<unknown-" + strconv.FormatInt(seq, 10) + "@" + domainOf(r.cfg.To[0]) + ">\r\n"
	if err := w.Write([]byte(cmd)); err != nil {
		r.fail(errKey(smtpc.StageRcpt, err))
		return false
	}
	code, err = w.Reply()
	switch {
	case err != nil:
		r.fail(errKey(smtpc.StageRcpt, err))
		return false
	case code == 421:
		r.fail(w.replyKey(smtpc.StageRcpt))
		return false
	case code/100 == 5:
		r.prof.refused.Add(1)
	case code/100 == 2:
		r.prof.refusedAccepted.Add(1)
	default:
		r.fail(w.replyKey(smtpc.StageRcpt))
	}
	return w.rset()
}

// transactAbort starts message seq, sends half of it after DATA's 354 and
// drops the connection.
func (w *worker) transactAbort(seq int64) {
	r := w.r
	defer w.close()
	_ = w.NetConn().SetDeadline(time.Now().Add(r.cfg.Timeout))
	step := func(stage string, cmd []byte, want int) bool {
		if err := w.Write(cmd); err != nil {
			r.fail(errKey(stage, err))
			return false
		}
		code, err := w.Reply()
		if err != nil {
			r.fail(errKey(stage, err))
			return false
		}
		if code != want {
			r.fail(w.replyKey(stage))
			return false
		}
		return true
	}
	if !step(smtpc.StageMail, r.mailCmd, 250) || !step(smtpc.StageRcpt, r.rcptCmds[(seq-1)%int64(len(r.rcptCmds))], 250) ||
		!step(smtpc.StageData, []byte("DATA\r\n"), 354) {
		return
	}
	var body []byte
	w.hdr, body = r.message(w.hdr[:0], seq)
	if err := w.WriteData(w.hdr, body[:len(body)/2]); err != nil {
		r.fail(errKey(smtpc.StageSend, err))
		return
	}
	r.prof.aborted.Add(1)
}
