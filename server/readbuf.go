package server

import "sync"

// A detached session's input buffer (serveBlocking). An idle session is
// always blocked in a read, so whatever it reads into is held for as long
// as the client stays silent: that is a small buffer of its own. Input
// that flows (a message body, pipelined commands) goes through a pooled
// record-sized buffer, taken when a read fills the small one and given
// back as soon as everything read was consumed between transactions or
// while the session waits for the spool. crypto/tls keeps the record it
// decrypted, so a small read costs a copy, not a system call.
//
// Measured with 3,000 idle TLS sessions (after EHLO over TLS): the read
// buffer was 2 KiB of each session's ~12 KiB live heap.

const (
	// smallBufBytes holds a command line or a few: what an idle session
	// keeps.
	smallBufBytes = 256
	// bigBufBytes is one TLS record's plaintext, the most one read of a
	// tls.Conn returns.
	bigBufBytes = 16 << 10
)

var bigBufs = sync.Pool{New: func() any { return new([bigBufBytes]byte) }}

// readBuf is the input read and not yet consumed: b, in small, in a
// pooled big buffer, or in a slice of its own (grown past bigBufBytes, or
// the input a half-closed session brought along).
type readBuf struct {
	b      []byte
	small  []byte
	big    *[bigBufBytes]byte // the pooled buffer b is in, if it is
	filled bool               // the last read filled the space it was given
}

// newReadBuf starts with pending, input received before (may be nil).
func newReadBuf(pending []byte) *readBuf {
	r := new(readBuf)
	r.init(pending)
	return r
}

// init makes r a new buffer holding pending (may be nil).
func (r *readBuf) init(pending []byte) {
	*r = readBuf{small: make([]byte, 0, smallBufBytes)}
	r.b = r.small
	if len(pending) > 0 {
		r.b = pending
	}
}

// consume drops the first n bytes of the input.
func (r *readBuf) consume(n int) { r.b = r.b[:copy(r.b, r.b[n:])] }

// release goes back to the small buffer once nothing is pending.
func (r *readBuf) release() {
	if len(r.b) > 0 || cap(r.b) == smallBufBytes && r.big == nil {
		return
	}
	r.free()
	r.b, r.filled = r.small[:0], false
}

// free gives the pooled buffer back.
func (r *readBuf) free() {
	if r.big != nil {
		bigBufs.Put(r.big)
		r.big = nil
	}
}

// space returns where the next read goes: after the pending input; in
// the big buffer once a read filled the small one (more is coming) or
// little room is left in it; in a larger one when under 1 KiB is left.
func (r *readBuf) space() []byte {
	free := cap(r.b) - len(r.b)
	if small := r.big == nil && cap(r.b) <= smallBufBytes; small && (r.filled || free < smallBufBytes/4) || free < 1024 && !small {
		r.grow()
	}
	r.filled = false
	return r.b[len(r.b):cap(r.b)]
}

// read records that n bytes were read into space.
func (r *readBuf) read(n int, space []byte) {
	r.b = r.b[:len(r.b)+n]
	r.filled = n == len(space)
}

func (r *readBuf) grow() {
	if r.big == nil && len(r.b) < bigBufBytes/2 {
		big := bigBufs.Get().(*[bigBufBytes]byte)
		r.b = big[:copy(big[:], r.b)]
		r.big = big
		return
	}
	// Only a partial command line stays unconsumed (Feed drops over-long
	// ones), so this grows to a few KiB past a record at most.
	nb := make([]byte, len(r.b), len(r.b)+max(cap(r.b), bigBufBytes))
	copy(nb, r.b)
	r.free()
	r.b = nb
}
