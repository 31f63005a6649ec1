package main

import (
	"os"
	"runtime"
	"runtime/debug"
	"testing"
	"time"
)

// TestGCPercentFor: the heap may grow by heapFloor, or by as much as the
// live heap once that is larger, never by more than maxGCPercent.
func TestGCPercentFor(t *testing.T) {
	for _, tc := range []struct {
		live uint64
		want int
	}{
		{0, maxGCPercent},
		{1 << 20, maxGCPercent},
		{4 << 20, 400},
		{8 << 20, 200},
		{10 << 20, 160},
		{heapFloor, 100},
		{100 << 20, 100},
		{1 << 40, 100},
	} {
		if got := gcPercentFor(tc.live); got != tc.want {
			t.Errorf("gcPercentFor(%d MiB) = %d, want %d", tc.live>>20, got, tc.want)
		}
	}
}

// TestGCFloorRuns: without GOGC the floor sets the percentage at once and
// again after collections (the default of 100 put back in between is
// replaced); with GOGC set it leaves the percentage alone.
func TestGCFloorRuns(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(100))
	t.Setenv("GOGC", "100")
	if _, ok := startGCFloor(); ok {
		t.Fatal("the floor started with GOGC set")
	}
	if p := debug.SetGCPercent(100); p != 100 {
		t.Fatalf("GOGC set: the percentage is %d", p)
	}
	os.Unsetenv("GOGC") // t.Setenv restores it after the test

	stop, ok := startGCFloor()
	if !ok {
		t.Fatal("the floor did not start without GOGC")
	}
	defer stop()
	first := debug.SetGCPercent(100) // the default back: a collection must replace it
	if first < 100 || first > maxGCPercent || int64(first) != gcFloorSet.Load() {
		t.Fatalf("at start the percentage is %d (the floor set %d)", first, gcFloorSet.Load())
	}
	runs := gcFloorRuns.Load()
	for deadline := time.Now().Add(10 * time.Second); gcFloorRuns.Load() == runs; {
		if time.Now().After(deadline) {
			t.Fatal("no collection set the percentage again in 10 s")
		}
		runtime.GC()
		time.Sleep(10 * time.Millisecond) // the finalizer goroutine's turn
	}
	if p, set := debug.SetGCPercent(100), gcFloorSet.Load(); int64(p) != set || p < 100 || p > maxGCPercent {
		t.Fatalf("after a collection the percentage is %d, the floor set %d", p, set)
	}
	stop()
	runtime.GC()
	time.Sleep(10 * time.Millisecond)
	runtime.GC()
	time.Sleep(10 * time.Millisecond)
	if p := debug.SetGCPercent(100); p != 100 {
		t.Errorf("after stop the percentage is %d", p)
	}
}
