package server

import (
	"bytes"
	"testing"
)

// TestReadBuf drives a detached session's input buffer through a
// transaction: commands read into the small buffer, a body that fills it
// moves to the pooled record-sized buffer (pending bytes kept), a partial
// line near the end grows it, and once everything was consumed the session
// goes back to the small buffer, giving the pooled one back.
func TestReadBuf(t *testing.T) {
	r := newReadBuf(nil)
	read := func(p []byte) int {
		space := r.space()
		n := copy(space, p)
		r.read(n, space)
		return n
	}
	if cap(r.space()) != smallBufBytes {
		t.Fatalf("idle buffer %d bytes, want %d", cap(r.space()), smallBufBytes)
	}
	// A command line: read and consumed within the small buffer.
	line := []byte("MAIL FROM:<a@example.org>\r\n")
	if n := read(line); n != len(line) || !bytes.Equal(r.b, line) {
		t.Fatalf("read %d: %q", n, r.b)
	}
	r.consume(len(line))
	r.release()
	if r.big != nil || cap(r.b) != smallBufBytes {
		t.Fatal("small buffer left after a command")
	}

	// A body: the first read fills the small buffer; 10 bytes stay
	// unconsumed (a partial line) and must survive the move.
	body := bytes.Repeat([]byte("0123456789abcdef"), 2048) // 32 KiB
	if n := read(body); n != smallBufBytes {
		t.Fatalf("first body read %d, want the small buffer's %d", n, smallBufBytes)
	}
	r.consume(smallBufBytes - 10)
	n := read(body[smallBufBytes:])
	if r.big == nil {
		t.Fatal("a read that filled the small buffer did not move to the big one")
	}
	if want := body[smallBufBytes-10 : smallBufBytes+n]; !bytes.Equal(r.b, want) {
		t.Fatalf("pending input lost in the move: %d bytes, want %d", len(r.b), len(want))
	}
	if n != bigBufBytes-10 {
		t.Fatalf("big read %d, want %d", n, bigBufBytes-10)
	}

	// Under 1 KiB left in the big buffer (a long partial line): it grows,
	// keeping the bytes, and is no longer the pooled one.
	r.consume(len(r.b) - (bigBufBytes - 512))
	keep := bytes.Clone(r.b)
	read([]byte("x"))
	if r.big != nil || cap(r.b) < bigBufBytes+512 || !bytes.Equal(r.b[:len(keep)], keep) {
		t.Fatalf("grow: big %v cap %d", r.big != nil, cap(r.b))
	}

	// Pending input keeps the buffer; consumed, it goes back to small.
	r.release()
	if cap(r.b) == smallBufBytes {
		t.Fatal("released with input pending")
	}
	r.consume(len(r.b))
	r.release()
	if r.big != nil || cap(r.b) != smallBufBytes || r.filled {
		t.Fatal("not back to the small buffer once consumed")
	}

	// Input a half-closed session brought along is kept first.
	r = newReadBuf([]byte("QUIT\r\n"))
	if string(r.b) != "QUIT\r\n" {
		t.Fatalf("pending %q", r.b)
	}
}
