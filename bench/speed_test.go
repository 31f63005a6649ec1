package bench

import (
	"context"
	"math"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/nanomx/nanomx/bench/fakesmtp"
)

// runRaw runs the bench against s with cfg, filling in the target and a
// short timeout, without run's delivered + failed = attempted check (a
// profile's or an open loop's attempts include other outcomes).
func runRaw(t *testing.T, s *fakesmtp.Server, cfg Config) *Result {
	t.Helper()
	cfg.Target = s.Addr()
	if cfg.Timeout == 0 {
		cfg.Timeout = 5 * time.Second
	}
	if cfg.MaxDuration == 0 {
		cfg.MaxDuration = 30 * time.Second
	}
	if cfg.RunID == "" {
		cfg.RunID = "rtest"
	}
	res, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	return res
}

// The internet profile's plan is a function of seed and seq alone, and
// its shares are the documented ones.
func TestProfilePlan(t *testing.T) {
	const n = 100_000
	var kinds [nKinds]int
	tlsConns, perConn := 0, map[int]int{}
	differs := false
	for seq := int64(1); seq <= n; seq++ {
		p := planOf(7, seq)
		if p != planOf(7, seq) {
			t.Fatalf("seq %d: two plans", seq)
		}
		differs = differs || p != planOf(8, seq)
		kinds[p.kind]++
		if p.tls {
			tlsConns++
		}
		perConn[p.perConn]++
	}
	if !differs {
		t.Error("seeds 7 and 8 plan alike")
	}
	near := func(what string, got, permille int) {
		if want := n * permille / 1000; got < want-n/100 || got > want+n/100 {
			t.Errorf("%s: %d of %d, want about %d", what, got, n, want)
		}
	}
	for k, share := range internetKinds {
		near(kind(k).String(), kinds[k], share)
	}
	near("tls", tlsConns, internetTLS)
	for _, pc := range internetPerConn {
		near("per-conn", perConn[pc.n], pc.permille)
	}
}

// A profile run against a server that refuses unknown users does what
// its plan says, and a second run with the same seed attempts the same
// mix: every kind as planned, every outcome as its kind expects.
func TestProfileReproducible(t *testing.T) {
	s, _ := startTLSFake(t, func(s *fakesmtp.Server) {
		s.RefuseRcpt = func(a string) bool { return strings.HasPrefix(a, "unknown-") }
	})
	cfg := Config{Profile: ProfileInternet, Conns: 4, Count: 300, Seed: 3, Size: Size{Mix: true}}
	var first *ProfileReport
	for i := range 2 {
		res := runRaw(t, s, cfg)
		p := res.Profile
		if p == nil {
			t.Fatal("no profile report")
		}
		if first == nil {
			first = p
		} else if !equalCounts(first.Planned, p.Planned) {
			t.Errorf("run 2 planned %v, run 1 %v", p.Planned, first.Planned)
		}
		var sum int64
		for _, n := range p.Planned {
			sum += n
		}
		bots := p.Planned["idle bot"] + p.Planned["slow bot"]
		if sum != 300 || res.Attempted != 300 || res.Failed != 0 ||
			res.Delivered != p.Planned["message"] || p.Refused != p.Planned["unknown recipient"] ||
			p.Aborted != p.Planned["disconnect mid-data"] || p.BotsOpened != bots || bots == 0 {
			t.Fatalf("run %d: attempted %d delivered %d failed %d errors %v\nprofile %+v", i+1, res.Attempted, res.Delivered, res.Failed, res.Errors, p)
		}
		if p.TLSConns <= 4*p.PlainConns || p.PlainConns == 0 || res.Connections != p.TLSConns+p.PlainConns {
			t.Errorf("connections: %d TLS, %d plaintext, %d in all", p.TLSConns, p.PlainConns, res.Connections)
		}
		// Mostly a message per connection: far more connections than a
		// session per slot would need.
		if res.Connections < 150 {
			t.Errorf("%d connections for 300 sequence numbers", res.Connections)
		}
		var text strings.Builder
		if err := res.WriteText(&text); err != nil || !strings.Contains(text.String(), "profile     internet") {
			t.Errorf("summary:\n%s", text.String())
		}
	}
	other := runRaw(t, s, Config{Profile: ProfileInternet, Conns: 4, Count: 300, Seed: 4, Size: Size{Mix: true}, RunID: "rother"})
	if equalCounts(first.Planned, other.Profile.Planned) {
		t.Errorf("seeds 3 and 4 planned the same: %v", first.Planned)
	}
}

func equalCounts(a, b map[string]int64) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// Open loop: against a server that takes 20 ms per message on one
// session (50 msgs/s), 200 arrivals/s pile up; the latency from the
// scheduled arrival shows the queue, which the end of data's latency, all
// a closed-loop run sees, hides.
func TestOpenLoopShowsQueueing(t *testing.T) {
	s := startFake(t, func(s *fakesmtp.Server) {
		s.Decide = func(int64) fakesmtp.Action { return fakesmtp.Action{Delay: 20 * time.Millisecond} }
	})
	closed := run(t, s, Config{Conns: 1, Count: 20, RunID: "rclosed"})
	open := runRaw(t, s, Config{Conns: 1, Rate: 200, Duration: 300 * time.Millisecond, RunID: "ropen"})
	if open.Delivered < 40 || open.Delivered != open.Attempted || open.Unserved != 0 {
		t.Fatalf("open loop: %d delivered of %d attempted, %d unserved, errors %v", open.Delivered, open.Attempted, open.Unserved, open.Errors)
	}
	c, o := closed.Latency, open.Latency
	t.Logf("closed loop: end of data p99 %.1f ms; open loop: end of data p99 %.1f ms, scheduled p99 %.1f ms", c.EndOfData.P99, o.EndOfData.P99, o.Scheduled.P99)
	if c.Scheduled.Count != 0 || o.Scheduled.Count != open.Delivered {
		t.Errorf("scheduled latencies: closed %d, open %d of %d", c.Scheduled.Count, o.Scheduled.Count, open.Delivered)
	}
	// ~60 arrivals in 0.3 s served at 50/s: the last waits about a second.
	if o.Scheduled.P99 < 500 || o.Scheduled.P99 < 10*c.EndOfData.P99 || o.EndOfData.P99 > 150 || o.Scheduled.P50 < o.EndOfData.P50 {
		t.Errorf("open loop p99 %.1f ms from the schedule, %.1f from the end of data; closed loop %.1f", o.Scheduled.P99, o.EndOfData.P99, c.EndOfData.P99)
	}
}

// Open loop against a fast server keeps to the schedule: about rate ×
// duration messages, not as many as the sessions could send.
func TestOpenLoopKeepsRate(t *testing.T) {
	s := startFake(t, nil)
	res := runRaw(t, s, Config{Conns: 4, Rate: 200, Duration: 500 * time.Millisecond})
	if res.Attempted < 90 || res.Attempted > 110 || res.Delivered != res.Attempted || res.Latency.Scheduled.P99 > 100 {
		t.Errorf("attempted %d, delivered %d, scheduled p99 %.1f ms; want about 100", res.Attempted, res.Delivered, res.Latency.Scheduled.P99)
	}
}

// The SLO search brackets a server that handles about 200 msgs/s (two
// sessions, 10 ms per message): some rate passes, a higher one fails,
// and the best is between.
func TestSearchSLO(t *testing.T) {
	s := startFake(t, func(s *fakesmtp.Server) {
		s.Decide = func(int64) fakesmtp.Action { return fakesmtp.Action{Delay: 10 * time.Millisecond} }
	})
	cfg := Config{Target: s.Addr(), Conns: 2, Rate: 50, Duration: 300 * time.Millisecond, Timeout: 5 * time.Second, RunID: "rslo"}
	res, err := SearchSLO(context.Background(), cfg, 60*time.Millisecond, nil)
	if err != nil {
		t.Fatal(err)
	}
	var text strings.Builder
	_ = res.WriteText(&text)
	t.Log("\n" + text.String())
	over := false
	for _, st := range res.Steps {
		over = over || !st.OK
		if st.OK && st.Rate > res.Best {
			t.Errorf("step %.0f/s passed above the best %.0f", st.Rate, res.Best)
		}
	}
	if res.Best < 50 || res.Best > 300 || !over || res.BestResult == nil || len(res.Steps) > sloMaxSteps {
		t.Errorf("best %.0f msgs/s after %d steps (one over: %v)", res.Best, len(res.Steps), over)
	}
	if !strings.Contains(text.String(), "highest rate with p99") {
		t.Errorf("text:\n%s", text.String())
	}
}

// -tls-resume: every connection after the first resumes; without it none
// does.
func TestTLSResume(t *testing.T) {
	s, _ := startTLSFake(t, nil)
	for _, resume := range []bool{false, true} {
		before := s.TLSResumed.Load()
		res := run(t, s, Config{TLS: true, TLSResume: resume, Conns: 1, Count: 6, PerConn: 1})
		want := int64(0)
		if resume {
			want = 5
		}
		if res.Delivered != 6 || res.TLSResumed != want || s.TLSResumed.Load()-before != want {
			t.Errorf("resume %v: %d delivered, %d resumed (server: %d), want %d", resume, res.Delivered, res.TLSResumed, s.TLSResumed.Load()-before, want)
		}
	}
}

// Cells: median, min–max and spread per label; a spread past 25 % is
// flagged, and the matrix puts rows against columns with ratios.
func TestCells(t *testing.T) {
	res := func(label string, rate float64) *Result {
		return &Result{Config: Config{Label: label}, MsgsPerSec: rate, Server: &ServerStats{CPUMsPerMsg: rate / 10000}}
	}
	cells := Cells([]*Result{
		res("plain · nanomx", 3000), res("plain · go-smtp", 1500), res("tls · nanomx", 1000),
		res("plain · nanomx", 2800), res("plain · go-smtp", 1400), res("tls · nanomx", 2000),
		res("plain · nanomx", 3100), res("plain · go-smtp", 1450), res("tls · nanomx", 1500),
	})
	if len(cells) != 3 {
		t.Fatalf("%d cells", len(cells))
	}
	c := cells[0]
	if c.Row != "plain" || c.Col != "nanomx" || c.Median != 3000 || c.Min != 2800 || c.Max != 3100 || c.Wide || c.CPUMsPerMsg != 0.3 {
		t.Errorf("cell 0: %+v", c)
	}
	if !cells[2].Wide || cells[1].Wide {
		t.Errorf("wide: tls %v (spread %.2f), go-smtp %v", cells[2].Wide, cells[2].Spread, cells[1].Wide)
	}
	if m := median([]float64{4, 1, 3, 2}); m != 2.5 {
		t.Errorf("median of 4 = %v", m)
	}
	var b strings.Builder
	if err := WriteMatrix(&b, cells, [][2]string{{"nanomx", "go-smtp"}}); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"| cell | nanomx msgs/s | go-smtp msgs/s | nanomx ÷ go-smtp |", "| plain | 3000 (2800–3100) | 1450 (1400–1500) | 2.07× |", "| tls | 1500 (1000–2000) ⚠ | | |"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("matrix lacks %q:\n%s", want, b.String())
		}
	}
	if strings.Contains(b.String(), "load-bound") {
		t.Errorf("no load measured, yet load-bound:\n%s", b.String())
	}
	b.Reset()
	_ = WriteCells(&b, cells)
	if !strings.Contains(b.String(), "| tls · nanomx | 1000 2000 1500 | 1500 | 1000–2000 | **67 % ⚠ wide** |") {
		t.Errorf("cells:\n%s", b.String())
	}
}

// A cell whose load generator was busy (the median of its rounds at 90 %
// of its CPUs or more) is load-bound: the matrix says so, and a ratio with
// it above the line is a lower bound, below it an upper one.
func TestCellsLoadBound(t *testing.T) {
	res := func(label string, rate, share float64) *Result {
		return &Result{Config: Config{Label: label}, MsgsPerSec: rate, Load: loadStats(share*10, 1, 10)}
	}
	cells := Cells([]*Result{
		res("tls · nanomx", 700, 0.95), res("tls · go-smtp", 400, 0.5), res("plain · nanomx", 3000, 0.6), res("plain · go-smtp", 1500, 0.92),
		res("tls · nanomx", 710, 0.85), res("tls · go-smtp", 410, 0.5), res("plain · nanomx", 3000, 0.6), res("plain · go-smtp", 1500, 0.92),
		res("tls · nanomx", 720, 0.93), res("tls · go-smtp", 420, 0.5), res("plain · nanomx", 3000, 0.6), res("plain · go-smtp", 1500, 0.92),
	})
	if c := cells[0]; !c.LoadBound || c.LoadShare != 0.93 || cells[1].LoadBound || cells[2].LoadBound || !cells[3].LoadBound {
		t.Fatalf("cells: %+v", cells)
	}
	var b strings.Builder
	if err := WriteMatrix(&b, cells, [][2]string{{"nanomx", "go-smtp"}}); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"| tls | 710 (700–720) load-bound | 410 (400–420) | ≥ 1.73× |",
		"| plain | 3000 (3000–3000) | 1500 (1500–1500) load-bound | ≤ 2.00× |",
		"load-bound: the load generator used at least 90 %",
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("matrix lacks %q:\n%s", want, b.String())
		}
	}
	b.Reset()
	_ = WriteCells(&b, cells)
	if !strings.Contains(b.String(), "| 93 % ⚠ | 0 |") || !strings.Contains(b.String(), "| 50 % | 0 |") {
		t.Errorf("cells:\n%s", b.String())
	}
}

// A run reports this process's own CPU over the load: a goroutine
// spinning all along is in it, as a share of the CPUs it may use.
func TestLoadCPU(t *testing.T) {
	s := startFake(t, nil)
	stop := make(chan struct{})
	spun := make(chan struct{})
	go func() {
		defer close(spun)
		for {
			select {
			case <-stop:
				return
			default:
			}
			for i := 0; i < 1e5; i++ {
				_ = i * i
			}
		}
	}()
	res := run(t, s, Config{Conns: 1, Duration: time.Second})
	close(stop)
	<-spun
	l := res.Load
	if runtime.GOOS != "linux" {
		if l != nil {
			t.Errorf("load %+v without /proc", *l)
		}
		return
	}
	if l == nil {
		t.Fatal("no load stats")
	}
	if l.CPUs != runtime.NumCPU() || l.CPUSeconds < 0.3 || l.CPUSeconds > float64(l.CPUs)*res.Elapsed+0.05 {
		t.Errorf("load %+v over %.2fs: the spinning goroutine alone used about a second of one CPU", *l, res.Elapsed)
	}
	if want := l.CPUSeconds / (float64(l.CPUs) * res.Elapsed); math.Abs(l.Share-want) > 1e-9 || l.Bound != (l.Share >= LoadBoundShare) {
		t.Errorf("share %v bound %v, want %v", l.Share, l.Bound, want)
	}
	var b strings.Builder
	_ = res.WriteText(&b)
	if !strings.Contains(b.String(), "load        this process CPU ") {
		t.Errorf("text lacks the load line:\n%s", b.String())
	}
}

// -gc-floor spaces the load generator's collections: the same garbage,
// made while a run goes on, takes far fewer of them.
func TestGCFloor(t *testing.T) {
	s := startFake(t, nil)
	gcs := func(floor int64) uint32 {
		var sink []byte
		stop, done := make(chan struct{}), make(chan uint32)
		go func() {
			time.Sleep(20 * time.Millisecond) // Run has begun
			var m0, m1 runtime.MemStats
			runtime.ReadMemStats(&m0)
			for i := 0; i < 300; i++ { // 300 MiB of garbage
				sink = make([]byte, 1<<20)
				sink[0] = 1
			}
			runtime.ReadMemStats(&m1)
			<-stop
			done <- m1.NumGC - m0.NumGC
		}()
		res := run(t, s, Config{Conns: 1, Duration: 300 * time.Millisecond, GCFloor: floor})
		close(stop)
		n := <-done
		if res.Config.GCFloor != floor || res.Delivered == 0 {
			t.Errorf("floor %d: config %d, %d delivered", floor, res.Config.GCFloor, res.Delivered)
		}
		return n
	}
	runtime.GC()
	without := gcs(0)
	with := gcs(128 << 20)
	t.Logf("%d collections with the floor, %d without", with, without)
	if with*4 > without {
		t.Errorf("collections while making 300 MiB of garbage: %d with a 128 MiB floor, %d without", with, without)
	}
}
