package server

// Two Ps on one CPU.
//
// A goroutine in a blocking system call keeps its P (the right to run Go
// code) until the runtime's monitor thread notices and hands the P to
// another thread, and that monitor sleeps up to 10 ms when it has had
// nothing to do. With GOMAXPROCS=1, the spool's syncfs (0.2–3 ms) then
// stops every goroutine: a TLS session (then on a goroutine) could not read its client,
// answer or submit while the committer flushes, so the next batch holds
// one or two messages and the server waits on one flush per message.
// Traced on the nanode profile (50 sessions × 10 KB over STARTTLS, fsync
// on): the only P sat in syncfs 67 % of the time with sessions runnable,
// 2,162 flushes for ~2,100 messages in 2 s; the plaintext sessions of the
// event loop, whose epoll_wait keeps the monitor awake, got the P back
// from 357 of 405 flushes and batched ~13 messages a flush.
//
// The check stage's goroutines (DKIM verification, the DNS answers, rspamd
// and LMTP replies) wait the same way: with the checks on (50 sessions ×
// 10 KB, DKIM-signed, ext4, fsync on) the server used 69 % of its CPU at
// 1,450 msgs/s with one P and 90 % at 1,690 msgs/s with two; plaintext
// with the checks off went from 2,880–3,030 to 3,080–3,300 msgs/s.
//
// With a second P the other goroutines run while one thread waits in the
// kernel; the CPU is still one (the second P is only taken while the
// first is blocked or between time slices), so the server stays a
// single-core program. A server therefore runs with GOMAXPROCS of at
// least 2, whatever the environment says.

import (
	"runtime"
	"sync/atomic"
)

// minProcs is the GOMAXPROCS a server runs with at least.
const minProcs = 2

// procsRaised is set once GOMAXPROCS was checked (it is the process's).
var procsRaised atomic.Bool

// raiseProcs makes sure GOMAXPROCS is at least minProcs. It is called
// when a server starts; only the first call does anything.
func (s *Server) raiseProcs() {
	if procsRaised.Load() || !procsRaised.CompareAndSwap(false, true) {
		return
	}
	if n := runtime.GOMAXPROCS(0); n < minProcs {
		runtime.GOMAXPROCS(minProcs)
		s.log.Info().Int("was", n).Int("gomaxprocs", minProcs).
			Msg("GOMAXPROCS raised: a thread blocked in syncfs must not hold the only P")
	}
}
