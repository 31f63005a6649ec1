package check

import (
	"context"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nanomx/nanomx/proto"
)

func wait(t *testing.T, r *Result) Verdict {
	t.Helper()
	got := make(chan Verdict, 1)
	r.Notify(func(v Verdict) { got <- v })
	select {
	case v := <-got:
		return v
	case <-time.After(5 * time.Second):
		t.Fatal("result never completed")
		return Verdict{}
	}
}

func TestResultOnce(t *testing.T) {
	r := New()
	if _, done := r.Verdict(); done {
		t.Fatal("new result is done")
	}
	var calls atomic.Int32
	r.Notify(func(Verdict) { calls.Add(1) })
	if !r.Complete(Verdict{Reply: proto.ReplyLocalError}) || r.Complete(Verdict{}) {
		t.Fatal("Complete took the second verdict or not the first")
	}
	if v, _ := r.Verdict(); v.Reply != proto.ReplyLocalError || calls.Load() != 1 {
		t.Fatalf("verdict %v, %d callbacks", v, calls.Load())
	}
	// A waiter after completion runs at once.
	ran := false
	r.Notify(func(Verdict) { ran = true })
	if !ran {
		t.Fatal("Notify on a done result did not run")
	}
}

func TestTimeoutPolicy(t *testing.T) {
	policy := Verdict{Reply: proto.NewReply(451, "4.7.0", "check timed out")}
	if v := wait(t, Timeout(New(), 20*time.Millisecond, policy)); v.Reply != policy.Reply {
		t.Fatalf("timed out: %v", v)
	}
	if v := wait(t, Timeout(After(5*time.Millisecond, Verdict{Headers: []byte("X: y\n")}), time.Second, policy)); string(v.Headers) != "X: y\n" {
		t.Fatalf("answered in time: %v", v)
	}
}

func TestAllOrder(t *testing.T) {
	first := proto.NewReply(550, "5.7.1", "first")
	second := proto.NewReply(451, "4.7.1", "second")
	a := After(30*time.Millisecond, Verdict{Reply: first, Headers: []byte("A: 1\n")})
	b := Now(Verdict{Reply: second, Headers: []byte("B: 2\n")})
	v := wait(t, All(a, nil, b))
	if v.Reply != first || string(v.Headers) != "A: 1\nB: 2\n" {
		t.Fatalf("combined %+v", v)
	}
	if v := wait(t, All()); v.Reply != nil {
		t.Fatalf("empty All: %v", v)
	}
}

// TestPoolBounded: the pool runs at most its workers at once, a full
// queue answers the policy at once, and a check past its timeout answers
// the policy and sees its context cancelled.
func TestPoolBounded(t *testing.T) {
	t.Run("fixed", func(t *testing.T) { testPoolBounded(t, NewPool(2, 1)) })
	t.Run("on demand", func(t *testing.T) { testPoolBounded(t, NewPoolOnDemand(0, 2, 1)) })
	t.Run("on demand, resident", func(t *testing.T) { testPoolBounded(t, NewPoolOnDemand(1, 1, 1)) })
}

func testPoolBounded(t *testing.T, p *Pool) {
	defer p.Close()
	policy := Verdict{Reply: proto.NewReply(451, "4.7.0", "busy or late")}
	release := make(chan struct{})
	var running, peak atomic.Int32
	block := func(ctx context.Context) Verdict {
		n := running.Add(1)
		for {
			if old := peak.Load(); n <= old || peak.CompareAndSwap(old, n) {
				break
			}
		}
		select {
		case <-release:
		case <-ctx.Done():
		}
		running.Add(-1)
		return Verdict{}
	}
	var rs []*Result
	for i := int32(1); i <= 2; i++ {
		rs = append(rs, p.Go(time.Minute, policy, block))
		for running.Load() < i {
			runtime.Gosched()
		}
	}
	rs = append(rs, p.Go(time.Minute, policy, block)) // queued
	if v := wait(t, p.Go(time.Minute, policy, block)); v.Reply != policy.Reply {
		t.Fatalf("full pool: %v", v)
	}
	close(release)
	for _, r := range rs {
		if v := wait(t, r); v.Reply != nil {
			t.Fatalf("released: %v", v)
		}
	}
	if peak.Load() > 2 {
		t.Fatalf("%d checks ran at once on a pool of 2", peak.Load())
	}
	cancelled := make(chan bool, 1)
	late := p.Go(20*time.Millisecond, policy, func(ctx context.Context) Verdict {
		<-ctx.Done()
		cancelled <- true
		return Verdict{}
	})
	if v := wait(t, late); v.Reply != policy.Reply {
		t.Fatalf("late check: %v", v)
	}
	if !<-cancelled {
		t.Fatal("context not cancelled")
	}
}

// TestCutsCombine: All merges the verdicts' cuts into one sorted list,
// joining ranges that overlap or touch.
func TestCutsCombine(t *testing.T) {
	r := All(Now(Verdict{Cut: [][2]int64{{0, 5}, {20, 30}}}), Now(Verdict{Cut: [][2]int64{{5, 8}, {10, 12}, {25, 40}}}), Now(Verdict{}))
	v, done := r.Verdict()
	want := [][2]int64{{0, 8}, {10, 12}, {20, 40}}
	if !done || len(v.Cut) != len(want) {
		t.Fatalf("cuts %v, want %v", v.Cut, want)
	}
	for i := range want {
		if v.Cut[i] != want[i] {
			t.Fatalf("cuts %v, want %v", v.Cut, want)
		}
	}
}

// TestPoolOnDemand: a pool on demand runs every one of many short checks
// submitted from several goroutines (none stranded in the queue as its
// last goroutine leaves), and holds only its resident goroutines once
// idle.
func TestPoolOnDemand(t *testing.T) {
	before := runtime.NumGoroutine()
	p := NewPoolOnDemand(2, 4, 10000)
	var wg sync.WaitGroup
	var done atomic.Int32
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 500 {
				r := p.Go(time.Minute, Verdict{Reply: proto.NewReply(451, "4.7.0", "busy")}, func(context.Context) Verdict { return Verdict{} })
				if v := wait(t, r); v.Reply == nil {
					done.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	if done.Load() != 8*500 {
		t.Fatalf("%d of %d checks ran", done.Load(), 8*500)
	}
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before+2 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before+2 {
		t.Fatalf("%d goroutines left running, %d before and 2 resident", n, before)
	}
	p.Close()
}

// TestAllDone: results all complete combine at once (All's result is
// complete when it returns), in order, without writing into a verdict's
// header fields; a single verdict's fields are taken as they are.
func TestAllDone(t *testing.T) {
	first := proto.NewReply(550, "5.7.1", "first")
	ha := append(make([]byte, 0, 64), "A: 1\n"...)
	a := Now(Verdict{Headers: ha, Folder: "Junk"})
	b := Now(Verdict{Reply: first, Headers: []byte("B: 2\n"), Cut: [][2]int64{{0, 4}}})
	r := All(a, nil, b)
	v, done := r.Verdict()
	if !done || v.Reply != first || string(v.Headers) != "A: 1\nB: 2\n" || v.Folder != "Junk" || len(v.Cut) != 1 {
		t.Fatalf("combined %+v done=%v", v, done)
	}
	if string(ha[:cap(ha)][:10]) == "A: 1\nB: 2\n" {
		t.Fatal("B's fields were appended into A's buffer")
	}
	v, _ = All(nil, a, Accept()).Verdict()
	if &v.Headers[0] != &ha[0] || cap(v.Headers) != len(ha) {
		t.Fatalf("one verdict's fields: copied, or not clipped (cap %d)", cap(v.Headers))
	}
	acc := Accept()
	if n := testing.AllocsPerRun(100, func() { All(a, acc) }); n > 1 {
		t.Errorf("All of complete results allocates %v times, want 1 (its result)", n)
	}
}
