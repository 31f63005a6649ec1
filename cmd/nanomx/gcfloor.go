package main

// A floor under the collector's heap goal.
//
// With GOGC=100 the collector runs whenever the heap has doubled since the
// last collection, and at least every 4 MiB. nanomx's live heap is small
// (1-3 MiB under bench/auth.sh's load: buffers are pooled, bodies go to
// disk), so with the sender checks on, at ~11 MB/s of short-lived
// allocations, it collected five times a second (GODEBUG=gctrace=1: 53-56
// collections in a 10 s run, ~3.5 ms of CPU each, about 2 % of the one
// CPU); with the floor, 6-8. On tmpfs, 5 alternating runs of that load:
// 263 against 272 µs of server CPU per message (medians; the runs
// overlap, 244-291 against 249-276), which is about what the collections
// cost.
//
// The percentage is set after every collection from the live heap it
// left: heapFloor/live, between 100 (the default, once the live heap is
// past heapFloor) and maxGCPercent. So the heap goal is the larger of
// twice the live heap and about live + heapFloor; at maxGCPercent the
// runtime's own minimum goal is 4 MiB × 4 = 16 MiB. A collection that
// finds the live heap grown sets a lower percentage for the next one, so
// what the floor can add is bounded by heapFloor plus one cycle's growth
// at most maxGCPercent. GOMEMLIMIT bounds the heap as before, and a GOGC
// in the environment is the operator's choice: the floor is not set then.

import (
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync/atomic"
)

const (
	// heapFloor is what the heap may grow by between collections at
	// least.
	heapFloor = 16 << 20
	// maxGCPercent bounds the percentage the floor sets.
	maxGCPercent = 400
)

// gcPercentFor returns the GOGC that lets a heap of live bytes grow by
// heapFloor, within 100 and maxGCPercent.
func gcPercentFor(live uint64) int {
	if live == 0 {
		return maxGCPercent
	}
	p := heapFloor * 100 / live
	return int(max(100, min(p, maxGCPercent)))
}

// startGCFloor sets the percentage now and after every collection, unless
// GOGC is set; ok is false when it does nothing. stop ends it and puts
// the default back (the tests use it; serve never stops it).
func startGCFloor() (stop func(), ok bool) {
	if _, set := os.LookupEnv("GOGC"); set {
		return func() {}, false
	}
	var stopped atomic.Bool
	sample := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	adjust := func() {
		metrics.Read(sample)
		if sample[0].Value.Kind() == metrics.KindUint64 {
			p := gcPercentFor(sample[0].Value.Uint64())
			debug.SetGCPercent(p)
			gcFloorSet.Store(int64(p))
			gcFloorRuns.Add(1)
		}
	}
	adjust()
	// A finalizer runs once the collection that found its object
	// unreachable is over; each one sets the percentage and arms the next.
	// They run one at a time, on the runtime's finalizer goroutine.
	var arm func()
	arm = func() {
		runtime.SetFinalizer(&gcSentinel{}, func(*gcSentinel) {
			if stopped.Load() {
				return
			}
			adjust()
			arm()
		})
	}
	arm()
	return func() {
		stopped.Store(true)
		debug.SetGCPercent(100)
	}, true
}

// gcFloorSet is the percentage the floor set last and gcFloorRuns how
// many times it set one, for the tests.
var gcFloorSet, gcFloorRuns atomic.Int64

// gcSentinel is an object made unreachable at once, whose finalizer marks
// the end of a collection. It is 32 bytes: a finalizer needs an object of
// its own, not a zero-sized one or a piece of a tiny-allocator block.
type gcSentinel struct{ _ [32]byte }
