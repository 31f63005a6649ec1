package spool

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// errseqSyncer is a BatchSyncer whose SyncAll reports errors the way
// syncfs does since Linux 5.8 (errseq_t on the super block, sampled per
// descriptor): a write-back error is recorded when it happens, whichever
// file's pages failed, and reported exactly once, to the first SyncAll that
// starts after it. Every other call returns nil. File and directory syncs
// are recorded as testSyncer does; SyncAll as "all".
type errseqSyncer struct {
	testSyncer
	gate chan struct{} // when set, each SyncAll waits for a token after sampling

	mu      sync.Mutex
	pending error // recorded, not yet reported
	all     int   // SyncAll calls so far
}

// writebackFailed records a write-back error now, as the kernel would when
// a page fails to reach the disk.
func (e *errseqSyncer) writebackFailed(err error) {
	e.mu.Lock()
	e.pending = err
	e.mu.Unlock()
}

func (e *errseqSyncer) SyncAll() error {
	e.mu.Lock()
	e.all++
	err := e.pending
	e.pending = nil
	e.mu.Unlock()
	if e.gate != nil {
		<-e.gate
	}
	e.log("all")
	return err
}

func (e *errseqSyncer) calls() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.all
}

// holdWrite blocks the write of every message whose bytes contain marker
// until release is closed, signalling writing when one arrives.
func holdWrite(s *Spool, marker string) (writing chan struct{}, release chan struct{}) {
	writing, release = make(chan struct{}, 4), make(chan struct{})
	s.write = func(fd int, path string, segs [][]byte) error {
		if bytes.Contains(bytes.Join(segs, nil), []byte(marker)) {
			writing <- struct{}{}
			<-release
		}
		return writeSegments(fd, path, segs)
	}
	return writing, release
}

// submitOne submits a message "Subject: <id>" to the mailboxes named and returns its
// result channel.
func submitOne(t *testing.T, s *Spool, id string, names ...string) chan error {
	t.Helper()
	ch := make(chan error, 1)
	m := newMessage("Subject: "+id+"\n\nbody\n", names...)
	m.ID = id
	if err := s.Submit(m, func(err error) { ch <- err }); err != nil {
		t.Fatal(err)
	}
	return ch
}

// assertNotStored fails if a file in addr's tmp/ or new/ holds "Subject:
// <id>".
func assertNotStored(t *testing.T, s *Spool, addr, id string) {
	t.Helper()
	for _, sub := range []string{"tmp", "new"} {
		dir := filepath.Join(maildir(s, addr), sub)
		for _, name := range files(t, dir) {
			b, err := os.ReadFile(filepath.Join(dir, name))
			if err != nil {
				t.Fatal(err)
			}
			if bytes.Contains(b, []byte("Subject: "+id+"\n")) {
				t.Errorf("%s is in %s/%s", id, addr, sub)
			}
		}
	}
}

// TestEpochFlushFailsMessageBeingWritten: message B is being written when
// a write-back fails; the error goes to the flush of an earlier batch (A),
// and B's own flush would return nil. B must fail all the same, with its
// tmp file removed and nothing of it in new/.
func TestEpochFlushFailsMessageBeingWritten(t *testing.T) {
	es := &errseqSyncer{}
	s := newTestSpool(t, func(c *Config) { c.Syncer, c.Workers = es, 2 })
	writing, release := holdWrite(s, "Subject: B\n")

	b := submitOne(t, s, "B", "bob@example.test")
	<-writing                       // B's preparation has begun
	es.writebackFailed(syscall.EIO) // perhaps one of B's pages
	a := submitOne(t, s, "A", "bob@example.test")
	if err := wait(t, a); err == nil {
		t.Fatal("A delivered although its flush failed")
	}
	close(release)
	err := wait(t, b)
	if err == nil {
		t.Fatal("B reported delivered: written while a flush failed, and that flush's error is spent")
	}
	if errors.Is(err, ErrNoSpace) || !errors.Is(err, syscall.EIO) || !strings.Contains(err.Error(), "written while flush 1 failed") {
		t.Errorf("B: %v, want a temporary failure naming the flush and carrying its error", err)
	}
	if n := es.calls(); n != 1 {
		t.Errorf("%d flushes, want 1: nothing is flushed after a failure", n)
	}
	// The fake reports an error once: a flush for B would have said nil.
	if err := es.SyncAll(); err != nil {
		t.Fatalf("errseq fake reported the error twice: %v", err)
	}
	assertNothingStored(t, s)
}

// TestEpochSecondFlushFailsMessageBeingWritten: as above, but the failed
// flush is the one after A's renames.
func TestEpochSecondFlushFailsMessageBeingWritten(t *testing.T) {
	es := &errseqSyncer{}
	s := newTestSpool(t, func(c *Config) { c.Syncer, c.Workers = es, 2 })
	writing, release := holdWrite(s, "Subject: B\n")
	var once sync.Once
	s.rename = func(oldpath, newpath string) error {
		once.Do(func() { es.writebackFailed(syscall.EIO) }) // between A's two flushes
		return renameNoReplace(oldpath, newpath)
	}

	b := submitOne(t, s, "B", "bob@example.test")
	<-writing
	a := submitOne(t, s, "A", "bob@example.test")
	if err := wait(t, a); err == nil {
		t.Fatal("A delivered although the flush after its rename failed")
	}
	if n := es.calls(); n != 2 {
		t.Fatalf("%d flushes before A's answer, want 2", n)
	}
	close(release)
	if err := wait(t, b); err == nil {
		t.Fatal("B reported delivered although it was written while a flush failed")
	}
	if n := es.calls(); n != 2 {
		t.Errorf("%d flushes, want 2: nothing is flushed after a failure", n)
	}
	assertNotStored(t, s, "bob@example.test", "B")
	if tmp := files(t, filepath.Join(maildir(s, "bob@example.test"), "tmp")); len(tmp) != 0 {
		t.Errorf("tmp/ holds %q", tmp)
	}
}

// TestEpochQueuedDuringFailedFlush: B is fully written and waiting for the
// committer while A's flush fails; B must fail without a flush of its own.
func TestEpochQueuedDuringFailedFlush(t *testing.T) {
	es := &errseqSyncer{gate: make(chan struct{})}
	s := newTestSpool(t, func(c *Config) { c.Syncer, c.Workers = es, 2 })
	es.writebackFailed(syscall.EIO)
	a := submitOne(t, s, "A", "bob@example.test")
	for es.calls() == 0 { // A's flush has started and taken the error
		time.Sleep(time.Millisecond)
	}
	b := submitOne(t, s, "B", "bob@example.test")
	for deadline := time.Now().Add(5 * time.Second); len(s.commitQ) == 0; {
		if time.Now().After(deadline) {
			t.Fatal("B never reached the committer")
		}
		time.Sleep(time.Millisecond)
	}
	es.gate <- struct{}{}
	if err := wait(t, a); err == nil {
		t.Fatal("A delivered although its flush failed")
	}
	close(es.gate) // any later flush passes at once and returns nil
	if err := wait(t, b); err == nil {
		t.Fatal("B, queued during the failed flush, reported delivered")
	}
	if n := es.calls(); n != 1 {
		t.Errorf("%d flushes, want 1", n)
	}
	assertNothingStored(t, s)
}

// TestEpochStragglerAfterFailure: a message that passed the workers'
// grouped check just before a flush failed, and began writing after it,
// still reaches the committer; it fails too, unflushed, tmp file removed.
// Messages after that go through per-file fsync and are delivered.
func TestEpochStragglerAfterFailure(t *testing.T) {
	es := &errseqSyncer{}
	s := newTestSpool(t, func(c *Config) { c.Syncer, c.Workers = es, 1 })
	es.writebackFailed(syscall.EIO)
	if err := wait(t, submitOne(t, s, "A", "bob@example.test")); err == nil {
		t.Fatal("A delivered although its flush failed")
	}
	if s.grouped() {
		t.Fatal("still grouping after a failed flush")
	}

	var got error
	called := false
	m := newMessage("Subject: C\n\nbody\n", "bob@example.test")
	p, done, err := s.prepareGrouped(job{m: m, done: func(err error) { got, called = err, true }})
	if done || err != nil {
		t.Fatalf("prepareGrouped: done %v, %v", done, err)
	}
	if p.epoch != 1 {
		t.Errorf("epoch %d, want 1 (one flush had returned)", p.epoch)
	}
	if n := len(files(t, filepath.Join(maildir(s, "bob@example.test"), "tmp"))); n != 1 {
		t.Fatalf("%d files in tmp/ after prepare, want 1", n)
	}
	s.commit([]prepared{p})
	if !called || got == nil || !strings.Contains(got.Error(), "group commit stopped") {
		t.Fatalf("straggler: called %v, err %v", called, got)
	}
	if n := es.calls(); n != 1 {
		t.Errorf("%d flushes, want 1", n)
	}
	assertNothingStored(t, s)

	es.reset()
	if err := wait(t, submitOne(t, s, "D", "bob@example.test")); err != nil {
		t.Fatalf("after the failure: %v", err)
	}
	if calls := strings.Join(es.reset(), " "); !strings.Contains(calls, "file ") || strings.Contains(calls, "all") {
		t.Errorf("not per-file fsync after the failure: %s", calls)
	}
	only(t, s, "bob@example.test")
}
