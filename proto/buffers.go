package proto

// An idle session (after EHLO, between transactions) holds no output and
// no envelope buffers: it takes spare ones when it needs them and gives
// them back once done, so that thousands of idle connections cost little,
// and a busy session still allocates nothing once warm.

// freeList is a bounded stock of spare buffers: get takes one or makes a
// new one, put keeps one unless the stock is full (then the collector has
// it). A buffered channel rather than a sync.Pool: its behaviour is the
// same under the race detector (which makes a Pool drop a quarter of what
// it is given), so the tests that count allocations hold there too.
type freeList[T any] chan *T

func (f freeList[T]) get() *T {
	select {
	case b := <-f:
		return b
	default:
		return new(T)
	}
}

func (f freeList[T]) put(b *T) {
	select {
	case f <- b:
	default:
	}
}

// spares bounds each stock. A session holds an output buffer only while
// its replies are being written, and envelope buffers for a transaction,
// so a few cover a busy server; more are only kept after a burst.
const spares = 64

// outBuf is an output buffer; a session whose replies outgrow it (heavy
// pipelining) grows its own, which ClearOutput lets go.
type outBuf [maxIdleOut]byte

var (
	outBufs = make(freeList[outBuf], spares)
	txSpare = make(freeList[txBufs], spares)
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
	b.arena = keep(b.arena, maxIdleArena)
	b.rcpts = keep(b.rcpts, maxIdleSpans)
	b.views = keep(b.views, maxIdleSpans)
	clear(b.views[:cap(b.views)]) // no pointers into an arena another session reuses
	txSpare.put(b)
}
