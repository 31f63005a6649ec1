package spool

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// batchSyncer is a testSyncer that also batches: SyncAll is recorded as
// "all", can be held at a gate, and can fail.
type batchSyncer struct {
	testSyncer
	gate   chan struct{} // when set, each SyncAll waits for a token
	allErr func(n int) error
	mu2    sync.Mutex
	n      int
}

func (b *batchSyncer) SyncAll() error {
	b.mu2.Lock()
	b.n++
	n := b.n
	b.mu2.Unlock()
	if b.gate != nil {
		<-b.gate
	}
	err := b.record("all")
	if err == nil && b.allErr != nil {
		err = b.allErr(n)
	}
	return err
}

func newGroupSpool(t *testing.T, bs *batchSyncer) *Spool {
	return newTestSpool(t, func(c *Config) {
		c.Syncer = bs
		c.Workers = 4
	})
}

// submitAll submits n messages to bob and returns their results in order.
func submitAll(t *testing.T, s *Spool, n int) []chan error {
	t.Helper()
	out := make([]chan error, n)
	for i := range n {
		ch := make(chan error, 1)
		out[i] = ch
		m := newMessage(fmt.Sprintf("Subject: %d\n\nbody %d\n", i, i), "bob@example.test")
		m.ID = fmt.Sprintf("ID%d", i)
		if err := s.Submit(m, func(err error) { ch <- err }); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

func wait(t *testing.T, ch chan error) error {
	t.Helper()
	select {
	case err := <-ch:
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("no result")
		return nil
	}
}

// TestGroupCommitOrder proves the group-commit durability order for every
// message: no per-file syncs, a flush before any rename, a flush after the
// renames, and done only after that second flush; that messages waiting
// during a flush share the next one; and that one flush serves two
// batches, the renames of one and the files of the next (one flush per
// cycle: 3 for 2 batches, not 4).
func TestGroupCommitOrder(t *testing.T) {
	bs := &batchSyncer{gate: make(chan struct{})}
	s := newGroupSpool(t, bs)
	var renames sync.Mutex
	var events []string
	s.rename = func(oldpath, newpath string) error {
		renames.Lock()
		events = append(events, "rename")
		renames.Unlock()
		bs.log("rename")
		return renameNoReplace(oldpath, newpath)
	}
	bs.reset()
	submit := func(n int) []chan error {
		out := make([]chan error, n)
		for i := range n {
			ch := make(chan error, 1)
			out[i] = ch
			m := newMessage(fmt.Sprintf("Subject: %d\n\nbody %d\n", i, i), "bob@example.test")
			if err := s.Submit(m, func(err error) { bs.log("done"); ch <- err }); err != nil {
				t.Fatal(err)
			}
		}
		return out
	}
	results := submit(1)
	// The first batch is held in its first flush; more messages arrive.
	time.Sleep(50 * time.Millisecond)
	more := submit(20)
	time.Sleep(100 * time.Millisecond)
	if n := len(files(t, filepath.Join(maildir(s, "bob@example.test"), "new"))); n != 0 {
		t.Fatalf("%d files in new/ before any flush finished", n)
	}
	// Let every flush through.
	go func() {
		for range 8 {
			bs.gate <- struct{}{}
		}
	}()
	for _, ch := range append(results, more...) {
		if err := wait(t, ch); err != nil {
			t.Fatal(err)
		}
	}
	calls := bs.reset()
	for _, c := range calls {
		if strings.HasPrefix(c, "file ") {
			t.Fatalf("per-file fsync under group commit: %q", calls)
		}
	}
	// Expect: all (batch 1's files), rename; all (batch 1's renames and
	// batch 2's files), done, rename×20; all (batch 2's renames), done×20.
	want := "all rename all done " + strings.Repeat("rename ", 20) + "all" + strings.Repeat(" done", 20)
	got := strings.Join(filterDirs(calls), " ")
	if got != want {
		t.Fatalf("events:\n got %s\nwant %s", got, want)
	}
	if b, m := s.CommitStats(); b != 2 || m != 21 {
		t.Fatalf("CommitStats = %d batches, %d messages; want 2, 21", b, m)
	}
	if n := len(files(t, filepath.Join(maildir(s, "bob@example.test"), "new"))); n != 21 {
		t.Fatalf("%d files in new/, want 21", n)
	}
}

// filterDirs drops "dir" syncs (made once per mailbox when it is created).
func filterDirs(calls []string) []string {
	var out []string
	for _, c := range calls {
		if !strings.HasPrefix(c, "dir ") {
			out = append(out, c)
		}
	}
	return out
}

// TestGroupCommitFirstFlushFails: nothing becomes visible, every message of
// the batch fails (temporarily), no tmp file stays, and the spool falls back
// to per-file fsync, which then delivers.
func TestGroupCommitFirstFlushFails(t *testing.T) {
	bs := &batchSyncer{allErr: func(n int) error {
		if n == 1 {
			return syscall.EIO
		}
		return nil
	}}
	s := newGroupSpool(t, bs)
	err := wait(t, submitAll(t, s, 1)[0])
	if err == nil || errors.Is(err, ErrNoSpace) {
		t.Fatalf("failed flush: %v", err)
	}
	assertNothingStored(t, s)
	if s.grouped() {
		t.Fatal("still grouping after a failed flush")
	}
	bs.reset()
	if err := wait(t, submitAll(t, s, 1)[0]); err != nil {
		t.Fatalf("after fallback: %v", err)
	}
	calls := strings.Join(bs.reset(), " ")
	if !strings.Contains(calls, "file ") || strings.Contains(calls, "all") {
		t.Fatalf("fallback did not use per-file fsync: %s", calls)
	}
	only(t, s, "bob@example.test")
}

// TestGroupCommitSecondFlushFails: the rename may not be durable, so the
// answer is a temporary failure (the retry may duplicate: never a loss).
func TestGroupCommitSecondFlushFails(t *testing.T) {
	bs := &batchSyncer{allErr: func(n int) error {
		if n == 2 {
			return syscall.EIO
		}
		return nil
	}}
	s := newGroupSpool(t, bs)
	if err := wait(t, submitAll(t, s, 1)[0]); err == nil {
		t.Fatal("a failed flush after rename answered success")
	}
	if s.grouped() {
		t.Fatal("still grouping after a failed flush")
	}
}

// TestGroupCommitNoSpace: ENOSPC from the flush is reported as ErrNoSpace.
func TestGroupCommitNoSpace(t *testing.T) {
	bs := &batchSyncer{allErr: func(int) error { return syscall.ENOSPC }}
	s := newGroupSpool(t, bs)
	if err := wait(t, submitAll(t, s, 1)[0]); !errors.Is(err, ErrNoSpace) {
		t.Fatalf("ENOSPC flush: %v", err)
	}
	assertNothingStored(t, s)
}

// TestGroupSyncer runs real syncfs deliveries and Close draining the
// committer.
func TestGroupSyncer(t *testing.T) {
	root := filepath.Join(t.TempDir(), "mail")
	if err := os.Mkdir(root, 0o700); err != nil {
		t.Fatal(err)
	}
	g, err := NewGroupSyncer(root)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	s, err := New(Config{Root: root, Hostname: "mx.example.test", Syncer: g, Mailboxes: boxes(testNames...)})
	if err != nil {
		t.Fatal(err)
	}
	results := submitAll(t, s, 50)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	for _, ch := range results {
		if err := wait(t, ch); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(files(t, filepath.Join(maildir(s, "bob@example.test"), "new"))); n != 50 {
		t.Fatalf("%d files, want 50", n)
	}
	if n := len(files(t, filepath.Join(maildir(s, "bob@example.test"), "tmp"))); n != 0 {
		t.Fatalf("%d files left in tmp/", n)
	}
}

func TestKernelAtLeast(t *testing.T) {
	for _, tc := range []struct {
		rel  string
		want bool
	}{
		{"5.8.0", true}, {"5.7.19", false}, {"6.1.0-18-amd64", true}, {"4.19.0", false},
		{"5.10+", true}, {"10.0", true}, {"garbage", false}, {"5", false},
	} {
		if got := kernelAtLeast(tc.rel, 5, 8); got != tc.want {
			t.Errorf("kernelAtLeast(%q) = %v", tc.rel, got)
		}
	}
}

// BenchmarkSubmit10KB delivers 10 KB messages through the worker pool, 64
// in flight, with per-file fsync and with group commit, side by side.
func BenchmarkSubmit10KB(b *testing.B) {
	body := "Subject: bench\nFrom: a@b.test\n\n" + strings.Repeat(strings.Repeat("x", 99)+"\n", 102)
	for _, name := range []string{"fsync", "group"} {
		b.Run(name, func(b *testing.B) {
			root := b.TempDir()
			var syncer Syncer = FsyncSyncer{}
			if name == "group" {
				g, err := NewGroupSyncer(root)
				if err != nil {
					b.Fatal(err)
				}
				defer g.Close()
				syncer = g
			}
			s, err := New(Config{Root: root, Hostname: "mx.example.test", Syncer: syncer, Mailboxes: boxes(testNames...)})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			sem := make(chan struct{}, 64)
			var wg sync.WaitGroup
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			for b.Loop() {
				sem <- struct{}{}
				wg.Add(1)
				m := newMessage(body, "bob@example.test")
				for s.Submit(m, func(err error) {
					if err != nil {
						b.Error(err)
					}
					<-sem
					wg.Done()
				}) != nil {
					time.Sleep(time.Millisecond) // queue full
					m = newMessage(body, "bob@example.test")
				}
			}
			wg.Wait()
			if name == "group" {
				// How many syncfs calls the messages shared.
				b.ReportMetric(float64(s.flushed.Load())/float64(b.N), "flushes/op")
			}
		})
	}
}

// TestGroupCommitSharedFlushFails: the flush that makes batch 1's renames
// and batch 2's files durable fails. Batch 1 is in new/ and gets a
// temporary failure ("flush after rename": the retry may duplicate);
// batch 2 was never renamed: its tmp files go, nothing of it is in new/.
func TestGroupCommitSharedFlushFails(t *testing.T) {
	bs := &batchSyncer{gate: make(chan struct{}), allErr: func(n int) error {
		if n == 2 {
			return syscall.EIO
		}
		return nil
	}}
	s := newGroupSpool(t, bs)
	first := submitAll(t, s, 1)
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
		bs.mu2.Lock()
		n := bs.n
		bs.mu2.Unlock()
		if n == 1 {
			break // batch 1's first flush is held at the gate
		}
		if time.Now().After(deadline) {
			t.Fatal("no flush")
		}
	}
	second := submitAll(t, s, 5)
	for deadline := time.Now().Add(5 * time.Second); len(s.commitQ) < 5; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("batch 2 never reached the committer")
		}
	}
	close(bs.gate)
	if err := wait(t, first[0]); err == nil || !strings.Contains(err.Error(), "flush after rename") || !errors.Is(err, syscall.EIO) {
		t.Fatalf("batch 1: %v, want a failed flush after rename", err)
	}
	for i, ch := range second {
		if err := wait(t, ch); err == nil || !strings.Contains(err.Error(), "flush before rename") {
			t.Fatalf("batch 2, message %d: %v, want a failed flush before rename", i, err)
		}
	}
	dir := maildir(s, "bob@example.test")
	if n := len(files(t, filepath.Join(dir, "new"))); n > 1 {
		t.Errorf("%d files in new/: batch 2 was renamed", n)
	}
	if tmp := files(t, filepath.Join(dir, "tmp")); len(tmp) != 0 {
		t.Errorf("tmp/ holds %q", tmp)
	}
	if s.grouped() {
		t.Error("still grouping after a failed flush")
	}
}
