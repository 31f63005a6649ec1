package server

import (
	"os"
	"runtime"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestSchedBatch: with sched_batch on (the default), once a connection
// has come, the event loop's thread is SCHED_OTHER and, within a few
// scans, every other thread of the process is SCHED_BATCH, a niced one
// with its nice kept.
func TestSchedBatch(t *testing.T) {
	niced, release := make(chan int), make(chan struct{})
	defer close(release)
	go func() {
		runtime.LockOSThread() // the thread ends with the goroutine
		tid := unix.Gettid()
		if err := unix.Setpriority(unix.PRIO_PROCESS, tid, 3); err != nil {
			t.Error(err)
		}
		niced <- tid
		<-release
	}()
	nicedTid := <-niced

	cfg := testServerConfig(t)
	if !cfg.SchedBatch {
		t.Fatal("sched_batch is not on by default")
	}
	start(t, cfg) // its probe connection shows the loop its thread
	var bad string
	for deadline := time.Now().Add(5 * time.Second); ; {
		bad = schedBatchBad()
		if bad == "" || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if bad != "" {
		t.Fatal(bad)
	}
	if p, err := threadPolicy(nicedTid); err != nil || p != policyBatch {
		t.Errorf("the niced thread: policy %d, %v; want SCHED_BATCH", p, err)
	}
	if n, err := unix.Getpriority(unix.PRIO_PROCESS, nicedTid); err != nil || 20-n != 3 {
		t.Errorf("the niced thread's nice after the move: %d, %v; want 3", 20-n, err)
	}
}

// schedBatchBad is what is not as sched_batch wants it now, or "".
func schedBatchBad() string {
	sched.mu.Lock()
	loops := make(map[int]bool, len(sched.loops))
	for tid := range sched.loops {
		loops[tid] = true
	}
	sched.mu.Unlock()
	if len(loops) == 0 {
		return "no event loop thread known"
	}
	ents, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return err.Error()
	}
	batch := 0
	for _, e := range ents {
		tid, _ := strconv.Atoi(e.Name())
		p, err := threadPolicy(tid)
		if err != nil {
			continue // gone
		}
		switch want := policyBatch; {
		case loops[tid] && p != policyOther:
			return "loop thread " + e.Name() + " is not SCHED_OTHER: " + strconv.Itoa(p)
		case !loops[tid] && p != want:
			return "thread " + e.Name() + " is not SCHED_BATCH: " + strconv.Itoa(p)
		case !loops[tid]:
			batch++
		}
	}
	if batch == 0 {
		return "no thread moved"
	}
	return ""
}
