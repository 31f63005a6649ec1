package server

// Two Ps on one CPU, for TLS sessions.
//
// A goroutine in a blocking system call keeps its P (the right to run Go
// code) until the runtime's monitor thread notices and hands the P to
// another thread, and that monitor sleeps up to 10 ms when it has had
// nothing to do. With GOMAXPROCS=1, the spool's syncfs (0.2–3 ms) then
// stops every goroutine: a detached TLS session cannot read its client,
// answer or submit while the committer flushes, so the next batch holds
// one or two messages and the server waits on one flush per message.
// Traced on the nanode profile (50 sessions × 10 KB over STARTTLS, fsync
// on): the only P sat in syncfs 67 % of the time with sessions runnable,
// 2,162 flushes for ~2,100 messages in 2 s; the plaintext sessions of the
// event loop, whose epoll_wait keeps the monitor awake, got the P back
// from 357 of 405 flushes and batched ~13 messages a flush.
//
// With a second P the other goroutines run while one thread waits in the
// kernel; the CPU is still one (the second P is only taken while the
// first is blocked or between time slices), so the server stays a
// single-core program. A server with TLS configured therefore runs with
// GOMAXPROCS of at least 2, whatever the environment says.

import (
	"runtime"
	"sync/atomic"
)

// minTLSProcs is the GOMAXPROCS a server with TLS runs with at least.
const minTLSProcs = 2

// procsRaised is set once GOMAXPROCS was checked (it is the process's).
var procsRaised atomic.Bool

// raiseProcs makes sure GOMAXPROCS is at least minTLSProcs. It is called
// when a server with TLS starts and at each STARTTLS (for TLS enabled by
// a reload); only the first call does anything.
func (s *Server) raiseProcs() {
	if procsRaised.Load() || !procsRaised.CompareAndSwap(false, true) {
		return
	}
	if n := runtime.GOMAXPROCS(0); n < minTLSProcs {
		runtime.GOMAXPROCS(minTLSProcs)
		s.log.Info().Int("was", n).Int("gomaxprocs", minTLSProcs).
			Msg("GOMAXPROCS raised for TLS sessions: a thread blocked in syncfs must not hold the only P")
	}
}
