package proto

import "sync"

// An idle session (after EHLO, between transactions) holds no output and
// no envelope buffers: it takes spare ones when it needs them and gives
// them back once done, so that thousands of idle connections cost little,
// and a busy session still allocates nothing once warm.

// freeList is a bounded stock of spare buffers: get takes one or makes a
// new one, put keeps one unless the stock is full (then the collector has
// it). Not a sync.Pool: its behaviour is the same under the race detector
// (which makes a Pool drop a quarter of what it is given), so the tests
// that count allocations hold there too; and a mutex is cheaper than a
// channel's operations.
type freeList[T any] struct {
	mu    sync.Mutex
	spare []*T
}

// newFreeList makes a stock of up to n spares.
func newFreeList[T any](n int) *freeList[T] { return &freeList[T]{spare: make([]*T, 0, n)} }

func (f *freeList[T]) get() *T {
	f.mu.Lock()
	if n := len(f.spare) - 1; n >= 0 {
		b := f.spare[n]
		f.spare[n] = nil
		f.spare = f.spare[:n]
		f.mu.Unlock()
		return b
	}
	f.mu.Unlock()
	return new(T)
}

func (f *freeList[T]) put(b *T) {
	f.mu.Lock()
	if len(f.spare) < cap(f.spare) {
		f.spare = append(f.spare, b)
	}
	f.mu.Unlock()
}

// outBuf is an output buffer; a session whose replies outgrow it (heavy
// pipelining) grows its own, which ClearOutput lets go.
type outBuf [maxIdleOut]byte

var (
	// A session holds an output buffer only while its replies are being
	// written: a few cover a busy server. It holds envelope buffers for a
	// transaction: the stock covers the transactions open at once on a
	// busy server (past it, a transaction allocates its own).
	outBufs = newFreeList[outBuf](64)
	txSpare = newFreeList[txBufs](256)
)

// outBuf returns the session's output, taking a spare buffer if it holds
// none. Replies are appended to it.
func (s *Session) outBuf() []byte {
	if s.out == nil {
		s.out = outBufs.get()[:0]
	}
	return s.out
}

// takeTx makes sure the session holds envelope buffers.
func (s *Session) takeTx() {
	if s.txBufs == nil {
		s.txBufs = txSpare.get()
	}
}

// tidy gives the envelope buffers back once the session is idle: no
// transaction, no check pending, no message waiting.
func (s *Session) tidy() {
	b := s.txBufs
	if b == nil || !s.Idle() {
		return
	}
	s.txBufs = nil
	b.empty()
	txSpare.put(b)
}

// empty empties b for the next transaction, letting go of what a big one
// grew past the idle bounds.
func (b *txBufs) empty() {
	b.arena = keep(b.arena, maxIdleArena)
	b.rcpts = keep(b.rcpts, maxIdleSpans)
	b.views = keep(b.views, maxIdleSpans)
	clear(b.views[:cap(b.views)]) // no pointers into an arena that may go, or that another session reuses
}
