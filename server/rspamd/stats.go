package rspamd

import (
	"context"
	"errors"
	"math"
	"math/bits"
	"sync/atomic"
	"time"
)

// Stats counts a client's scans and keeps a histogram of their durations,
// with atomics only: scans record from their own goroutines, readers
// (Snapshot) from anywhere.
type Stats struct {
	ok       atomic.Uint64 // replies decoded
	failed   atomic.Uint64 // errors other than timeouts
	timeouts atomic.Uint64 // of them waiting for a slot: not in the histogram
	busy     atomic.Uint64 // refused: MaxConcurrent in flight, MaxWaiting waiting
	queued   atomic.Uint64 // waited for a slot
	sumNanos atomic.Uint64
	maxNanos atomic.Uint64
	buckets  [numBuckets]atomic.Uint64
}

// The histogram has subBuckets buckets per power of two of nanoseconds: a
// percentile is known to within 2^(1/8)-1, 9%. Bucket 0 is everything
// under 2^minExp ns (16 µs), the last everything over 2^(maxExp) ns (~69 s).
const (
	subBuckets = 8
	minExp     = 14
	maxExp     = 36
	numBuckets = (maxExp-minExp)*subBuckets + 2
)

func bucketOf(ns uint64) int {
	if ns < 1<<minExp {
		return 0
	}
	e := bits.Len64(ns) - 1 // 2^e <= ns < 2^(e+1)
	if e >= maxExp {
		return numBuckets - 1
	}
	// The sub-bucket from the bits under the leading one, on a log scale.
	frac := math.Log2(float64(ns)) - float64(e)
	sub := min(int(frac*subBuckets), subBuckets-1)
	return 1 + (e-minExp)*subBuckets + sub
}

// bucketTop is the upper bound of bucket i, in nanoseconds.
func bucketTop(i int) float64 {
	if i == 0 {
		return 1 << minExp
	}
	if i >= numBuckets-1 {
		return math.Inf(1)
	}
	i--
	e, sub := minExp+i/subBuckets, i%subBuckets
	return math.Exp2(float64(e) + float64(sub+1)/subBuckets)
}

func (s *Stats) record(d time.Duration, err error) {
	ns := uint64(max(d, 0))
	s.buckets[bucketOf(ns)].Add(1)
	s.sumNanos.Add(ns)
	for {
		m := s.maxNanos.Load()
		if ns <= m || s.maxNanos.CompareAndSwap(m, ns) {
			break
		}
	}
	switch {
	case err == nil:
		s.ok.Add(1)
	case errors.Is(err, context.DeadlineExceeded) || isTimeout(err):
		s.timeouts.Add(1)
	default:
		s.failed.Add(1)
	}
}

func isTimeout(err error) bool {
	var t interface{ Timeout() bool }
	return errors.As(err, &t) && t.Timeout()
}

// Snapshot is a copy of a client's statistics.
type Snapshot struct {
	OK, Failed, Timeouts, Busy uint64
	// Queued scans waited for a slot (and were then sent, or timed out).
	Queued uint64
	// Scans is OK+Failed+Timeouts: every scan that was not refused. The
	// percentiles describe the requests sent: from sending to the reply,
	// without the wait for a slot.
	Scans         uint64
	Mean, Max     time.Duration
	P50, P90, P99 time.Duration // upper bounds of their buckets (within 9%)
}

// Stats returns a snapshot of c's statistics.
func (c *Client) Stats() Snapshot { return c.stats.Snapshot() }

// Snapshot reads s. Counts taken while scans record may be off by the
// scans in flight; each is consistent on its own.
func (s *Stats) Snapshot() Snapshot {
	var counts [numBuckets]uint64
	var n uint64
	for i := range s.buckets {
		counts[i] = s.buckets[i].Load()
		n += counts[i]
	}
	snap := Snapshot{
		OK: s.ok.Load(), Failed: s.failed.Load(), Timeouts: s.timeouts.Load(), Busy: s.busy.Load(), Queued: s.queued.Load(),
		Max: time.Duration(s.maxNanos.Load()),
	}
	snap.Scans = snap.OK + snap.Failed + snap.Timeouts
	if n == 0 {
		return snap
	}
	snap.Mean = time.Duration(s.sumNanos.Load() / n)
	q := func(p float64) time.Duration {
		want := uint64(math.Ceil(p * float64(n)))
		var seen uint64
		for i, c := range counts {
			seen += c
			if seen >= want {
				top := bucketTop(i)
				if math.IsInf(top, 1) || time.Duration(top) > snap.Max {
					return snap.Max // no bucket bound past the largest seen
				}
				return time.Duration(top)
			}
		}
		return snap.Max
	}
	snap.P50, snap.P90, snap.P99 = q(0.50), q(0.90), q(0.99)
	return snap
}
