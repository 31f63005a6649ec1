package spool

import "time"

// QueueDepth returns how many messages wait for a worker now. Safe from
// any goroutine (metrics read it when scraped).
func (s *Spool) QueueDepth() int { return len(s.queue) }

// QueueCapacity returns how many messages may wait for a worker
// (Config.QueueLength, or its default).
func (s *Spool) QueueCapacity() int { return cap(s.queue) }

// OnCommit sets a function the committer calls after each group commit
// with the batch's size and the time of the flush (SyncAll) that made its
// renames durable (one flush a cycle serves two batches), so that
// the server can keep histograms without the spool knowing about metrics.
// It runs on the committer goroutine and must be quick (atomic adds); nil
// removes it. Safe to call at any time.
func (s *Spool) OnCommit(f func(messages int, flush time.Duration)) {
	if f == nil {
		s.commits.hook.Store(nil)
		return
	}
	s.commits.hook.Store(&f)
}
