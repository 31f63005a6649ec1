package spool

import (
	"errors"
	"fmt"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// BatchSyncer is a Syncer that can also make everything written to the
// Maildir file system so far durable at once. A spool whose Syncer is a
// BatchSyncer uses group commit:
//
//  1. workers write each message into tmp/ (and link it into the other
//     mailboxes' tmp/) without syncing anything;
//  2. one committer goroutine takes every prepared message waiting (a
//     batch is whatever has accumulated, so a lone message is not held
//     back), calls SyncAll, renames them all into new/, and reports them
//     delivered after the next SyncAll, which also makes the following
//     batch's files durable.
//
// One flush per batch (two per message, shared with the neighbouring
// batches) replaces two fsyncs per file and directory per message, which
// on a small VPS is most of the cost of a delivery.
type BatchSyncer interface {
	Syncer
	SyncAll() error
}

// maxBatch bounds one group commit, so that one flush never waits for an
// unbounded amount of data.
const maxBatch = 256

// GroupSyncer is the production BatchSyncer: syncfs(2) on a descriptor
// kept open on the Maildir root for the life of the process. syncfs writes
// back every dirty inode of that file system, commits the journal and
// flushes the disk cache (ext4, xfs). Since Linux 5.8 it also reports
// write-back errors that happened since the descriptor was opened, which is
// why the descriptor is long-lived and why older kernels are refused.
// SyncFile and SyncDir are plain fsyncs, for the fallback and for creating
// Maildirs.
type GroupSyncer struct {
	FsyncSyncer
	fd int
}

// NewGroupSyncer opens root for syncfs. It fails on kernels older than 5.8,
// where syncfs does not report write-back errors: use FsyncSyncer there.
func NewGroupSyncer(root string) (*GroupSyncer, error) {
	if !haveSyncfs {
		return nil, errors.New("spool: syncfs(2) is Linux's: use per-file fsync")
	}
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return nil, err
	}
	if rel := unix.ByteSliceToString(u.Release[:]); !kernelAtLeast(rel, 5, 8) {
		return nil, fmt.Errorf("spool: kernel %s is older than 5.8: syncfs does not report write errors", rel)
	}
	fd, err := openFD(root, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		return nil, err
	}
	return &GroupSyncer{fd: fd}, nil
}

// SyncAll calls syncfs on the Maildir file system.
func (g *GroupSyncer) SyncAll() error {
	for {
		err := syncfs(g.fd)
		if err != syscall.EINTR {
			if err != nil {
				return os.NewSyscallError("syncfs", err)
			}
			return nil
		}
	}
}

// Close releases the descriptor.
func (g *GroupSyncer) Close() error { return unix.Close(g.fd) }

// kernelAtLeast compares a release string such as "6.1.0-18-amd64".
func kernelAtLeast(release string, major, minor int) bool {
	parts := strings.SplitN(release, ".", 3)
	if len(parts) < 2 {
		return false
	}
	maj, err1 := strconv.Atoi(parts[0])
	minStr := parts[1]
	if i := strings.IndexFunc(minStr, func(r rune) bool { return r < '0' || r > '9' }); i >= 0 {
		minStr = minStr[:i]
	}
	mnr, err2 := strconv.Atoi(minStr)
	if err1 != nil || err2 != nil {
		return false
	}
	return maj > major || (maj == major && mnr >= minor)
}

// prepared is a message written into tmp/ and waiting for its batch.
type prepared struct {
	d *delivery
	j job
	// epoch is how many flushes had returned when the worker began writing
	// the message (Spool.flushEpoch): every later flush may have written
	// back, and failed on, its pages.
	epoch uint64
}

// commitStats counts group commits; the tests read them (CommitStats).
type commitStats struct {
	batches  atomic.Uint64
	messages atomic.Uint64
	// hook is OnCommit's function; flushTime is the last SyncAll's
	// duration (the committer's alone): the flush that made the answered
	// batch's renames durable.
	hook      atomic.Pointer[func(messages int, flush time.Duration)]
	flushTime time.Duration
}

// CommitStats returns how many group commits ran and how many messages
// they carried (both 0 without group commit).
func (s *Spool) CommitStats() (batches, messages uint64) {
	return s.commits.batches.Load(), s.commits.messages.Load()
}

// grouped reports whether deliveries go through the committer: the Syncer
// batches and no flush has failed yet.
func (s *Spool) grouped() bool {
	return s.batch != nil && !s.groupBroken.Load()
}

// flushEpoch returns how many group commit flushes have returned so far.
// Whatever writes data that a later flush is to make durable must read it
// before its first write and carry it to the committer (prepared.epoch):
// syncfs reports a write-back error only once, to whichever flush comes
// first, and that may be an earlier batch's flush while this message was
// being written.
func (s *Spool) flushEpoch() uint64 { return s.flushed.Load() }

// prepareGrouped is step 1 of group commit, on a worker: the message's
// file goes into every tmp/ with nothing synced, then to the committer. A
// message for a mailbox on another file system than the root, which syncfs
// on the root does not cover, is delivered here with per-file fsync
// instead. With done set the message is finished already, with err.
func (s *Spool) prepareGrouped(j job) (p prepared, done bool, err error) {
	defer func() {
		if r := recover(); r != nil {
			s.log.Error().Str("id", j.m.ID).Interface("panic", r).Bytes("stack", debug.Stack()).Msg("delivery panicked")
			p, done, err = prepared{}, true, fmt.Errorf("spool: delivery panicked: %v", r)
		}
	}()
	// Before anything is written: see flushEpoch.
	epoch := s.flushEpoch()
	d, err := s.build(j.m, NoSync{})
	if err != nil {
		return p, true, err
	}
	switch other, err := s.onOtherFS(d.dirs); {
	case err != nil:
		return p, true, d.finish(0, err)
	case other:
		d.sync = s.syncer
		published, err := d.run()
		return p, true, d.finish(published, err)
	}
	if err := d.prepare(); err != nil {
		d.removeTmp(0)
		return p, true, d.finish(0, err)
	}
	d.segs = nil // they point into the body, which goes back to the pool now
	return prepared{d: d, j: j, epoch: epoch}, false, nil
}

// committer is step 2 of group commit: one goroutine, so flushes never
// overlap and each batch is as large as what waited during the last
// cycle. Each cycle is one flush (see cycle): a batch is renamed after
// the flush that makes its files durable and answered after the next one,
// which also makes the following batch's files durable. So a message
// still waits for two flushes, but the committer runs one per batch.
func (s *Spool) committer() {
	defer s.commitDone.Done()
	// renamed is the batch in new/ waiting for the flush that makes its
	// renames durable; next is filling. They swap each cycle.
	renamed, next := newBatch(), newBatch()
	open := true
	for open || len(renamed.items) > 0 {
		if len(renamed.items) == 0 {
			// Nothing waits for a flush: wait for a message.
			p, ok := <-s.commitQ
			if !ok {
				return
			}
			next.items = append(next.items, p)
		}
	fill:
		for open && len(next.items) < maxBatch {
			select {
			case p, ok := <-s.commitQ:
				if !ok {
					open = false
					break fill
				}
				next.items = append(next.items, p)
			default:
				break fill
			}
		}
		s.cycle(renamed, next)
		renamed.reset()
		renamed, next = next, renamed
	}
}

// batch is the messages of one group commit and, once renamed, what each
// rename did.
type batch struct {
	items     []prepared
	published []int
	results   []error
}

func newBatch() *batch { return &batch{items: make([]prepared, 0, maxBatch)} }

// reset empties b, dropping its references to finished deliveries.
func (b *batch) reset() {
	clear(b.items)
	b.items, b.published, b.results = b.items[:0], b.published[:0], b.results[:0]
}

// commit makes one batch durable on its own and answers it: a cycle that
// flushes its files and renames it, and one that flushes the renames. The
// tests use it; the committer overlaps the cycles of successive batches.
func (s *Spool) commit(items []prepared) {
	b, none := newBatch(), newBatch()
	b.items = append(b.items, items...)
	s.cycle(none, b)
	s.cycle(b, none)
}

// cycle is one flush of group commit. renamed is in new/, waiting for
// the flush that makes its renames durable; next is in tmp/, waiting for
// the flush that makes its files durable. One syncfs does both, as it
// writes back everything dirty on the file system when it is called:
// every rename of renamed and every file of next were made before it.
// Then renamed is answered, and next is renamed (its results are kept in
// next for the following cycle, whose flush it waits for). Only the
// committer calls it.
//
// In order, for each message: its file is written (by a worker, before
// the message reached commitQ, so before the flush of the cycle that took
// it); flush k makes it durable; only then is it renamed; flush k+1,
// called after the rename, makes the rename durable; only then is it
// answered. A crash between the two leaves it in new/, unanswered: the
// client retries, a duplicate rather than a loss (as in the per-file
// order, where the crash can come between the rename and its fsync).
func (s *Spool) cycle(renamed, next *batch) {
	if len(renamed.items) == 0 && len(next.items) == 0 {
		return
	}
	next.published = append(next.published[:0], make([]int, len(next.items))...)
	next.results = append(next.results[:0], make([]error, len(next.items))...)
	if failed := s.failedFlush.Load(); failed != 0 {
		// A flush has failed (renamed is empty then: that cycle answered
		// it). A message whose writing began before that flush returned
		// may have lost pages in its write-back, and the error has been
		// reported once already: a flush now would return 0 for it. Later
		// messages should not be here at all (workers see the group
		// broken), but one may have slipped past that check. All of them
		// go back to the sender as 4xx; the retry is fsync'd per file.
		for i, p := range next.items {
			p.d.removeTmp(0)
			if p.epoch < failed {
				next.results[i] = fmt.Errorf("written while flush %d failed: %w", failed, s.flushErr)
			} else {
				next.results[i] = fmt.Errorf("group commit stopped after flush %d failed: %w", failed, s.flushErr)
			}
		}
		s.answer(renamed)
		s.answer(next)
		return
	}
	if err := s.flush(); err != nil {
		for i := range renamed.results {
			if renamed.results[i] == nil {
				// In new/ but perhaps not durable: answer 4xx; the
				// retry may duplicate, which beats a loss.
				renamed.results[i] = fmt.Errorf("flush after rename: %w", err)
			}
		}
		// Not renamed yet, so nothing of next is visible: remove its
		// tmp files, 4xx, retry.
		for i, p := range next.items {
			p.d.removeTmp(0)
			next.results[i] = fmt.Errorf("flush before rename: %w", err)
		}
		s.answer(renamed)
		s.answer(next)
		return
	}
	s.answer(renamed)
	for i, p := range next.items {
		next.published[i], next.results[i] = p.d.publish(false)
	}
}

// answer finishes every message of a renamed batch and calls its done.
func (s *Spool) answer(b *batch) {
	if len(b.items) == 0 {
		return
	}
	s.commits.batches.Add(1)
	s.commits.messages.Add(uint64(len(b.items)))
	if f := s.commits.hook.Load(); f != nil {
		(*f)(len(b.items), s.commits.flushTime)
	}
	for i, p := range b.items {
		err := p.d.finish(b.published[i], b.results[i])
		if p.j.done != nil {
			s.callDone(p.j, err)
		}
	}
}

// flush runs one SyncAll and advances the epoch. On failure it records the
// flush's number before the epoch moves past it, so that every message
// whose writing began before this flush returned compares as older, and
// switches the spool to per-file fsync.
func (s *Spool) flush() error {
	n := s.flushed.Load() + 1
	start := time.Now()
	err := s.batch.SyncAll()
	s.commits.flushTime = time.Since(start)
	if err != nil && s.failedFlush.Load() == 0 {
		s.flushErr = err
		s.failedFlush.Store(n)
		s.breakGroup(err)
	}
	s.flushed.Store(n)
	return err
}

// breakGroup switches the spool to per-file fsync for good: after a failed
// syncfs the file system's state is uncertain, and per-file fsync reports
// errors per message.
func (s *Spool) breakGroup(err error) {
	if s.groupBroken.CompareAndSwap(false, true) {
		s.log.Error().Err(err).Msg("group commit flush failed; falling back to per-file fsync")
	}
}
