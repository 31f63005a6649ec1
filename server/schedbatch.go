package server

// The event loops' threads first (sched_batch). On one CPU the loop
// shares the core with the threads Go runs everything else on: the spool's
// workers and committer, the checks, the collector, the runtime's monitor.
// Each of those wakes many times per message, and Linux lets a thread that
// wakes preempt the one running, so the loop was switched out about six
// times per message (16,000 times a second at 2,500 msgs/s, checks on),
// each time coming back to caches the other thread had used. With
// sched_batch, the loops' goroutines are locked to their threads and every
// other thread of the process runs as SCHED_BATCH: the same share of the
// CPU (the same weight, the same nice), but a batch thread that wakes does
// not preempt; it runs when the loop waits for the network or its time
// slice ends. Measured on one CPU (bench/auth.sh's load):
// context switches from ~10,000 to ~1,400 a second, server CPU per message
// about 12 % less, and the transaction latency lower too.
//
// Only threads in SCHED_OTHER are moved, and a thread's nice is kept: a
// process an operator started under another policy (chrt, systemd's
// CPUSchedulingPolicy) is left as it is.

import (
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/rs/zerolog"
)

// schedScan is how often the process's threads are looked at: Go starts
// threads as it needs them, and a thread started by a loop's thread
// inherits its policy.
const schedScan = time.Second

// sched is the process's part, shared by every Server in it (the tests
// run several): the loops' threads and the scanner.
var sched struct {
	mu      sync.Mutex
	loops   map[int]bool // thread ids of event loops: kept SCHED_OTHER
	batched map[int]bool // thread ids already moved
	users   int          // servers running with sched_batch
	stop    chan struct{}
	checked bool // the process's policy was looked at
	off     bool // not SCHED_OTHER, or the system refused: nothing is tried
}

// startSchedBatch starts moving the process's threads other than the
// loops' to SCHED_BATCH, unless the process does not run in SCHED_OTHER or
// the system does not allow it. The returned function stops it.
func startSchedBatch(log zerolog.Logger, mine *[]int) func() {
	sched.mu.Lock()
	defer sched.mu.Unlock()
	if sched.off {
		return func() {}
	}
	if !sched.checked {
		// Once per process, before anything was moved.
		sched.checked = true
		if p, err := threadPolicy(0); err != nil || p != policyOther {
			sched.off = true
			if err != nil {
				log.Warn().Err(err).Msg("sched_batch: the scheduling policy cannot be read; threads left as they are")
			}
			return func() {}
		}
		sched.loops, sched.batched = map[int]bool{}, map[int]bool{}
	}
	if sched.users == 0 {
		sched.stop = make(chan struct{})
		go schedScanner(sched.stop, log)
	}
	sched.users++
	var once sync.Once
	return func() {
		once.Do(func() {
			sched.mu.Lock()
			defer sched.mu.Unlock()
			for _, tid := range *mine {
				delete(sched.loops, tid)
			}
			*mine = nil
			if sched.users--; sched.users == 0 && sched.stop != nil {
				close(sched.stop)
				sched.stop = nil
			}
		})
	}
}

// noteLoop records the calling thread, an event loop's (its goroutine is
// locked to it), in the process's loops and in mine (the server's, which
// its stop forgets: Go reuses a loop's thread once the loop is gone), and
// gives it SCHED_OTHER back if the scanner had moved it
// before the loop was known. It reports whether the caller may count
// the loop as seen: the thread was new, or nothing is tracked here (the
// process is not in SCHED_OTHER), so that OnOpen stops calling it.
func noteLoop(mine *[]int) bool {
	tid := gettid()
	sched.mu.Lock()
	defer sched.mu.Unlock()
	if sched.loops == nil {
		return true // nothing is moved in this process: stop asking
	}
	if sched.loops[tid] {
		return false
	}
	sched.loops[tid] = true
	*mine = append(*mine, tid)
	if sched.batched[tid] {
		delete(sched.batched, tid)
		_ = setThreadPolicy(0, policyOther)
	}
	return true
}

// schedScanner moves every thread of the process that is neither a loop's
// nor moved already, once per schedScan, until stop is closed.
func schedScanner(stop chan struct{}, log zerolog.Logger) {
	t := time.NewTicker(schedScan)
	defer t.Stop()
	for {
		if !schedPass(log) {
			return
		}
		select {
		case <-stop:
			return
		case <-t.C:
		}
	}
}

// schedPass is one look at the threads; false when the system refused.
func schedPass(log zerolog.Logger) bool {
	ents, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return true // try again later
	}
	sched.mu.Lock()
	defer sched.mu.Unlock()
	alive := make(map[int]bool, len(ents))
	for _, e := range ents {
		tid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		alive[tid] = true
		if sched.loops[tid] || sched.batched[tid] {
			continue
		}
		p, err := threadPolicy(tid)
		if err != nil {
			continue // it exited meanwhile
		}
		if p == policyOther {
			if err := setThreadPolicy(tid, policyBatch); err != nil {
				if isPerm(err) {
					sched.off = true
					log.Warn().Err(err).Msg("sched_batch: the system refuses SCHED_BATCH; threads left as they are")
					return false
				}
				continue
			}
		}
		sched.batched[tid] = true
	}
	for tid := range sched.batched {
		if !alive[tid] {
			delete(sched.batched, tid)
		}
	}
	return true
}
