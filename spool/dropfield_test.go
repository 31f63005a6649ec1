package spool

import (
	"bytes"
	"errors"
	"io"
	"os"
	"strings"
	"testing"
	"time"
)

// dropForged is a DropField that drops "X-Forged" fields.
func dropForged(f []byte) bool { return bytes.HasPrefix(bytes.ToLower(f), []byte("x-forged:")) }

// forgedBody is a message with two X-Forged fields (one folded) among
// others, and one in the body that must stay.
const forgedBody = "X-Forged: a\nSubject: s\nx-forged: b\n\tcontinued\nReturn-Path: <c>\nTo: t\n\nX-Forged: in body\n"

const forgedWant = "Subject: s\nTo: t\n\nX-Forged: in body\n"

// TestDropFieldInMemory: the fields DropField reports leave the stored
// file, continuation lines included; the rest, body too, stays.
func TestDropFieldInMemory(t *testing.T) {
	s := newTestSpool(t, nil)
	m := newMessage(forgedBody, "bob@example.test")
	m.DropField = dropForged
	ch := make(chan error, 1)
	if err := s.Submit(m, func(err error) { ch <- err }); err != nil {
		t.Fatal(err)
	}
	if err := wait(t, ch); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(only(t, s, "bob@example.test"))
	if want := testTrace + forgedWant; string(got) != want {
		t.Fatalf("stored\n%q\nwant\n%q", got, want)
	}
	// Without DropField the fields stay (only Return-Path goes).
	m = newMessage(forgedBody, "alice@example.test")
	ch = make(chan error, 1)
	if err := s.Submit(m, func(err error) { ch <- err }); err != nil {
		t.Fatal(err)
	}
	if err := wait(t, ch); err != nil {
		t.Fatal(err)
	}
	got, _ = os.ReadFile(only(t, s, "alice@example.test"))
	if !bytes.Contains(got, []byte("X-Forged: a\n")) || bytes.Contains(got, []byte("Return-Path: <c>")) {
		t.Fatalf("stored without DropField:\n%s", got)
	}
}

// TestDropFieldSpilled: a spilled message loses the fields too (the
// first chunk is scanned with DropField), and Written gives the file and
// offset at which the chunks' bytes can be read back once on disk.
func TestDropFieldSpilled(t *testing.T) {
	s := newTestSpool(t, nil)
	env := testMessage()
	env.DropField = dropForged
	w := &writer{sp: s.NewSpill(env)}
	filler := strings.Repeat("0123456789abcdef\n", 20000) // ~340 KB
	w.write(forgedBody + filler)
	w.write("second chunk\n")
	type at struct {
		path string
		off  int64
	}
	got := make(chan at, 1)
	w.sp.Written(func(path string, off int64) { got <- at{path, off} })
	var where at
	select {
	case where = <-got:
	case <-time.After(10 * time.Second):
		t.Fatal("Written never ran")
	}
	if where.path == "" || where.off != int64(len(testTrace)) {
		t.Fatalf("Written gave %+v, want the tmp file and offset %d", where, len(testTrace))
	}
	f, err := os.Open(where.path)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = f.Seek(where.off, io.SeekStart)
	read, _ := io.ReadAll(f)
	f.Close()
	if want := forgedWant + filler + "second chunk\n"; string(read) != want {
		t.Fatalf("read back %d bytes, want %d (starts %q)", len(read), len(want), read[:min(len(read), 80)])
	}
	if err := wait(t, submitSpilled(t, s, w.sp, "tail\n")); err != nil {
		t.Fatal(err)
	}
	w.waitWritten(t)
	stored, _ := os.ReadFile(only(t, s, "bob@example.test"))
	if want := testTrace + forgedWant + filler + "second chunk\ntail\n"; string(stored) != want {
		t.Fatalf("stored %d bytes, want %d", len(stored), len(want))
	}
}

// TestWrittenAfterFailure: Written reports "" for a spill that failed.
func TestWrittenAfterFailure(t *testing.T) {
	s := newTestSpool(t, nil)
	env := testMessage()
	env.Mailboxes = boxes("bad name@example.test")
	w := &writer{sp: s.NewSpill(env)}
	w.write("Subject: x\n\nbody\n")
	got := make(chan string, 1)
	w.sp.Written(func(path string, off int64) { got <- path })
	select {
	case p := <-got:
		if p != "" {
			t.Fatalf("Written after failure gave %q", p)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Written never ran")
	}
	w.sp.Abort()
	w.waitWritten(t)
}

// TestDropFieldHeaderPastFirstChunk: with DropField set, a spilled
// message whose header section does not end inside the first chunk is
// refused with ErrHeaderTooLong: the fields after the chunk are never
// scanned, so one DropField would report (a forged field) would be kept.
// Without DropField such a message is stored as before.
func TestDropFieldHeaderPastFirstChunk(t *testing.T) {
	s := newTestSpool(t, nil)
	pad := strings.Repeat("X-Pad: 0123456789abcdef\n", 15000) // ~360 KB of header
	for _, drop := range []bool{true, false} {
		env := testMessage()
		if drop {
			env.DropField = dropForged
		}
		w := &writer{sp: s.NewSpill(env)}
		w.write(pad)
		w.write("X-Forged: deep\nSubject: s\n\nbody\n")
		err := wait(t, submitSpilled(t, s, w.sp, "tail\n"))
		w.waitWritten(t)
		if drop && !errors.Is(err, ErrHeaderTooLong) {
			t.Fatalf("with DropField: %v, want ErrHeaderTooLong", err)
		}
		if !drop && err != nil {
			t.Fatalf("without DropField: %v", err)
		}
	}
}
