package spool

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/valyala/bytebufferpool"
	"golang.org/x/sys/unix"
)

// spillNameRE is a spilling file's name in tmp/: a unique name with the
// marker but no S= yet.
var spillNameRE = regexp.MustCompile(`^\d+\.M\d{1,6}P\d+Q\d+_nanomx\.mx\.example\.test$`)

// feed is how a test hands a body to a spill: the first chunk's length,
// then chunks of chunk bytes; the last tail bytes go as Message.Body.
type feed struct{ first, chunk, tail int }

// chunks cuts body the way f says.
func (f feed) chunks(body string) (parts []string, tail string) {
	rest := body
	if f.tail > len(rest) {
		f.tail = len(rest)
	}
	tail = rest[len(rest)-f.tail:]
	rest = rest[:len(rest)-f.tail]
	n := f.first
	for rest != "" {
		n = min(n, len(rest))
		parts = append(parts, rest[:n])
		rest = rest[n:]
		n = f.chunk
	}
	return parts, tail
}

func buffer(s string) *bytebufferpool.ByteBuffer {
	b := bytebufferpool.Get()
	b.WriteString(s)
	return b
}

// writer tracks a spill's write callbacks.
type writer struct {
	sp    *Spill
	wg    sync.WaitGroup
	dones atomic.Int64
	bufs  []*bytebufferpool.ByteBuffer
}

func (w *writer) write(s string) {
	b := buffer(s)
	w.bufs = append(w.bufs, b)
	w.wg.Add(1)
	w.sp.Write(b, func() {
		w.dones.Add(1)
		w.wg.Done()
	})
}

// waitWritten waits until every chunk's done has run.
func (w *writer) waitWritten(t *testing.T) {
	t.Helper()
	ch := make(chan struct{})
	go func() { w.wg.Wait(); close(ch) }()
	select {
	case <-ch:
	case <-time.After(10 * time.Second):
		t.Fatal("write callbacks did not run")
	}
}

// submitSpilled submits sp's message with tail as its Body and returns a
// channel for done's result.
func submitSpilled(t *testing.T, s *Spool, sp *Spill, tail string) chan error {
	t.Helper()
	m := &Message{Spill: sp}
	if tail != "" {
		m.Body = buffer(tail)
	}
	ch := make(chan error, 1)
	if err := s.Submit(m, func(err error) { ch <- err }); err != nil {
		t.Fatalf("Submit: %v", err)
	}
	return ch
}

// spillBody delivers body to rcpts through a spill cut by f and returns
// done's result.
func spillBody(t *testing.T, s *Spool, body string, f feed, rcpts ...string) error {
	t.Helper()
	env := testMessage()
	env.Mailboxes = boxes(rcpts...)
	w := &writer{sp: s.NewSpill(env)}
	parts, tail := f.chunks(body)
	for _, p := range parts {
		w.write(p)
	}
	err := wait(t, submitSpilled(t, s, w.sp, tail))
	w.waitWritten(t)
	return err
}

// submitBody delivers body to rcpts the usual way.
func submitBody(t *testing.T, s *Spool, body string, rcpts ...string) error {
	t.Helper()
	ch := make(chan error, 1)
	if err := s.Submit(newMessage(body, rcpts...), func(err error) { ch <- err }); err != nil {
		t.Fatal(err)
	}
	return wait(t, ch)
}

// bigBody is a message of about n bytes whose header section carries
// forged Return-Path fields (one folded) and some Received fields.
func bigBody(n int) string {
	var b strings.Builder
	b.WriteString("Return-Path: <forged@evil.test>\n\tfolded\n")
	b.WriteString(strings.Repeat("Received: from a by b; Mon, 1 Jan 2024 00:00:00 +0000\n", 10))
	b.WriteString("Subject: big\nReturn-Path: <second@evil.test>\nTo: team\n\n")
	for i := 0; b.Len() < n; i++ {
		fmt.Fprintf(&b, "line %d %s\n", i, strings.Repeat("abcdefghij", i%13))
		if i%1000 == 0 {
			b.WriteString("Return-Path: in the body stays\n")
		}
	}
	return b.String()
}

// newFiles returns the contents of the files in addr's new/, by name.
func newFiles(t *testing.T, s *Spool, addr string) map[string]string {
	t.Helper()
	dir := filepath.Join(maildir(s, addr), "new")
	out := make(map[string]string)
	for _, name := range files(t, dir) {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		out[name] = string(b)
	}
	return out
}

// TestSpillMatchesBody delivers a 3 MB message in many chunks to three
// mailboxes, with per-file fsync, group commit and no sync: every mailbox
// gets a file byte-identical to the same message delivered from memory
// (trace fields, client Return-Path fields cut), S= is the file size, the
// copies are hard links, the chunks are released once each after their
// done, and while chunks arrive the data sits in the first mailbox's tmp/
// under a marked name without S=, with nothing in new/.
func TestSpillMatchesBody(t *testing.T) {
	body := bigBody(3 << 20)
	rcpts := []string{"bob@example.test", "alice@example.test", "carol@other.test"}
	for _, mode := range []string{"fsync", "group", "nosync"} {
		t.Run(mode, func(t *testing.T) {
			var s *Spool
			ts := &testSyncer{}
			bs := &batchSyncer{}
			switch mode {
			case "fsync":
				s = newTestSpool(t, func(c *Config) { c.Syncer = ts })
			case "group":
				s = newGroupSpool(t, bs)
				ts = &bs.testSyncer
			case "nosync":
				s = newTestSpool(t, func(c *Config) { c.Syncer = NoSync{} })
			}
			var rel countingRelease
			s.release = rel.release

			if err := submitBody(t, s, body, rcpts...); err != nil {
				t.Fatal(err)
			}
			want := newFiles(t, s, "bob@example.test")
			if len(want) != 1 {
				t.Fatalf("reference delivery: %d files", len(want))
			}
			var wantName, wantBody string
			for wantName, wantBody = range want {
			}
			if !strings.HasPrefix(wantBody, "Return-Path: <alice@sender.test>\nReceived: from mail.sender.test") ||
				strings.Contains(wantBody, "forged@evil.test") || strings.Contains(wantBody, "second@evil.test") {
				t.Fatalf("reference delivery is not what the spill must match:\n%.400s", wantBody)
			}
			ts.reset()

			env := testMessage()
			env.Mailboxes = boxes(rcpts...)
			w := &writer{sp: s.NewSpill(env)}
			parts, tail := feed{first: 256 << 10, chunk: 100_003, tail: 5000}.chunks(body)
			w.write(parts[0])
			w.waitWritten(t)
			tmp := files(t, filepath.Join(maildir(s, "bob@example.test"), "tmp"))
			if len(tmp) != 1 || !spillNameRE.MatchString(tmp[0]) {
				t.Fatalf("tmp/ while spilling: %q, want one file named like %s", tmp, spillNameRE)
			}
			for _, p := range parts[1:] {
				w.write(p)
			}
			w.waitWritten(t)
			for _, addr := range rcpts {
				if n := len(newFiles(t, s, addr)); n != 1 {
					t.Fatalf("%s: %d files in new/ before Submit", addr, n)
				}
			}
			calls := ts.reset()
			for _, c := range calls {
				if strings.HasPrefix(c, "file ") {
					t.Errorf("file synced before the end of the message: %q", c)
				}
			}
			if err := wait(t, submitSpilled(t, s, w.sp, tail)); err != nil {
				t.Fatal(err)
			}
			if n := w.dones.Load(); n != int64(len(parts)) {
				t.Errorf("%d write callbacks for %d chunks", n, len(parts))
			}
			for i, b := range w.bufs {
				if n := rel.count(b); n != 1 {
					t.Errorf("chunk %d released %d times", i, n)
				}
			}

			var first os.FileInfo
			for _, addr := range rcpts {
				got := newFiles(t, s, addr)
				if len(got) != 2 {
					t.Fatalf("%s: %d files in new/, want 2", addr, len(got))
				}
				for name, content := range got {
					if name == wantName {
						continue
					}
					if content != wantBody {
						t.Errorf("%s: spilled file differs from the in-memory delivery (%d vs %d bytes)", addr, len(content), len(wantBody))
					}
					sub := nameRE.FindStringSubmatch(name)
					if sub == nil || sub[5] != strconv.Itoa(len(content)) {
						t.Errorf("%s: name %q, size %d", addr, name, len(content))
					}
					fi, err := os.Stat(filepath.Join(maildir(s, addr), "new", name))
					if err != nil {
						t.Fatal(err)
					}
					if first == nil {
						first = fi
					} else if !os.SameFile(first, fi) {
						t.Errorf("%s: not a hard link", addr)
					}
				}
				if tmp := files(t, filepath.Join(maildir(s, addr), "tmp")); len(tmp) != 0 {
					t.Errorf("%s: tmp/ holds %q", addr, tmp)
				}
			}

			calls = ts.reset()
			switch mode {
			case "fsync":
				// The spilled file is synced under its tmp name before any
				// rename, then every tmp/ and every new/.
				if len(calls) == 0 || !strings.HasPrefix(calls[0], "file ") || !spillNameRE.MatchString(filepath.Base(calls[0])) {
					t.Fatalf("first sync %q, want the spilled file", calls)
				}
				var dirs int
				for _, c := range calls[1:] {
					if strings.HasPrefix(c, "dir ") {
						dirs++
					}
				}
				if dirs != 6 {
					t.Errorf("syncs %q: want 3 tmp/ and 3 new/", calls)
				}
			case "group":
				var all int
				for _, c := range calls {
					if strings.HasPrefix(c, "file ") {
						t.Errorf("per-file sync under group commit: %q", c)
					}
					if c == "all" {
						all++
					}
				}
				if all != 2 {
					t.Errorf("syncs %q: want two flushes", calls)
				}
				if b, m := s.CommitStats(); b != 2 || m != 2 {
					t.Errorf("commit stats %d batches, %d messages; want 2, 2", b, m)
				}
			}
		})
	}
}

// TestSpillFeeds checks odd cuts against the in-memory delivery: the whole
// message as the tail, tiny chunks after a first chunk holding the header,
// no tail, an empty message, a message without header section.
func TestSpillFeeds(t *testing.T) {
	s := newTestSpool(t, nil)
	body := bigBody(50_000)
	cases := []struct {
		name string
		body string
		feed feed
	}{
		{"all tail", body, feed{first: 1, chunk: 1, tail: len(body)}},
		{"tiny chunks", body, feed{first: 1000, chunk: 7, tail: 3}},
		{"no tail", body, feed{first: 4096, chunk: 4096}},
		{"empty", "", feed{first: 1, chunk: 1}},
		{"no header", "\nReturn-Path: body\n", feed{first: 5, chunk: 1}},
		{"one line", "no newline at all", feed{first: 3, chunk: 3}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := newFiles(t, s, "bob@example.test")
			if err := submitBody(t, s, tc.body, "bob@example.test"); err != nil {
				t.Fatal(err)
			}
			if err := spillBody(t, s, tc.body, tc.feed, "bob@example.test"); err != nil {
				t.Fatal(err)
			}
			var got []string
			for name, content := range newFiles(t, s, "bob@example.test") {
				if _, old := before[name]; !old {
					got = append(got, content)
				}
			}
			if len(got) != 2 || got[0] != got[1] {
				t.Fatalf("%d new files, equal %v", len(got), len(got) == 2 && got[0] == got[1])
			}
		})
	}
}

// TestSpillHeaderPastFirstChunk: when the header section does not end in
// the first chunk, Return-Path fields complete before its last line are
// cut, the one that might continue in the next chunk is kept, and Received
// fields beyond it are not counted.
func TestSpillHeaderPastFirstChunk(t *testing.T) {
	s := newTestSpool(t, nil)
	first := "Return-Path: <cut@evil.test>\nSubject: x\nReturn-Path: <kept@evil.test>\n"
	rest := "\tcontinued\n" + strings.Repeat("Received: x\n", 60) + "\nbody\n"
	env := testMessage()
	w := &writer{sp: s.NewSpill(env)}
	w.write(first)
	w.write(rest)
	if err := wait(t, submitSpilled(t, s, w.sp, "")); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(only(t, s, "bob@example.test"))
	want := testTrace + "Subject: x\nReturn-Path: <kept@evil.test>\n" + rest
	if string(got) != want {
		t.Errorf("stored\n%q\nwant\n%q", got, want)
	}
}

func TestHeaderPart(t *testing.T) {
	for _, tc := range []struct {
		in, scan string
		open     bool
	}{
		{"", "", true},
		{"A: b", "", true},
		{"A: b\nC: d", "A: b\n", true},
		{"A: b\n", "A: b\n", true},
		{"A: b\n\nbody", "A: b\n\nbody", false},
		{"A: b\r\n\r\nbody", "A: b\r\n\r\nbody", false},
		{"\nbody", "\nbody", false},
		{"A: b\n\r", "A: b\n", true}, // a CR alone is not an empty line yet
	} {
		scan, open := headerPart([]byte(tc.in))
		if string(scan) != tc.scan || open != tc.open {
			t.Errorf("headerPart(%q) = %q, %v; want %q, %v", tc.in, scan, open, tc.scan, tc.open)
		}
	}
}

// TestSpillMailLoop: more than 50 Received fields in the first chunk fail
// the message at the end with ErrMailLoop; no file is ever created.
func TestSpillMailLoop(t *testing.T) {
	s := newTestSpool(t, nil)
	body := strings.Repeat("Received: from a by b; Mon, 1 Jan 2024 00:00:00 +0000\n", 51) + "\n" + strings.Repeat("x\n", 100_000)
	env := testMessage()
	w := &writer{sp: s.NewSpill(env)}
	parts, tail := feed{first: 8192, chunk: 8192, tail: 10}.chunks(body)
	for _, p := range parts {
		w.write(p)
	}
	w.waitWritten(t)
	assertNothingStored(t, s)
	if err := wait(t, submitSpilled(t, s, w.sp, tail)); !errors.Is(err, ErrMailLoop) {
		t.Fatalf("err = %v, want ErrMailLoop", err)
	}
	assertNothingStored(t, s)
	if n := w.dones.Load(); n != int64(len(parts)) {
		t.Errorf("%d write callbacks for %d chunks", n, len(parts))
	}
}

// TestSpillInvalidMailbox: a mailbox that is no safe path, or a trace
// that would not stay fields of its own, fails the message; nothing is
// ever stored.
func TestSpillInvalidMailbox(t *testing.T) {
	s := newTestSpool(t, nil)
	err := spillBody(t, s, "Subject: x\n\nbody\n", feed{first: 4, chunk: 4}, "bob@example.test", "../nobody@example.test")
	if err == nil || !strings.Contains(err.Error(), "not a valid mailbox") {
		t.Fatalf("err = %v, want an invalid mailbox", err)
	}
	assertNothingStored(t, s)

	env := testMessage()
	env.Trace = []byte("Received: no final newline")
	w := &writer{sp: s.NewSpill(env)}
	w.write("Subject: x\n\nbody\n")
	if err := wait(t, submitSpilled(t, s, w.sp, "")); !errors.Is(err, errBadTrace) {
		t.Fatalf("err = %v, want errBadTrace", err)
	}
	w.waitWritten(t)
	assertNothingStored(t, s)
}

// TestSpillWriteError: a write failing with ENOSPC (after a short write)
// removes the tmp file at once, later chunks are dropped with their
// callbacks run and buffers released, and done reports ErrNoSpace; nothing
// reaches new/.
func TestSpillWriteError(t *testing.T) {
	for _, mode := range []string{"fsync", "group"} {
		t.Run(mode, func(t *testing.T) {
			var s *Spool
			if mode == "group" {
				s = newGroupSpool(t, &batchSyncer{})
			} else {
				s = newTestSpool(t, nil)
			}
			var rel countingRelease
			s.release = rel.release
			var writes atomic.Int64
			s.write = func(fd int, path string, segs [][]byte) error {
				if writes.Add(1) < 3 {
					return writeSegments(fd, path, segs)
				}
				if _, err := unix.Write(fd, segs[0][:3]); err != nil {
					return err
				}
				return &os.PathError{Op: "writev", Path: path, Err: syscall.ENOSPC}
			}
			w := &writer{sp: s.NewSpill(testMessage())}
			for i := range 3 {
				w.write(fmt.Sprintf("chunk %d\n", i))
				w.waitWritten(t) // one writev per chunk
			}
			assertNothingStored(t, s) // removed at the failure, not at the end
			for i := range 5 {
				w.write(fmt.Sprintf("dropped %d\n", i))
			}
			err := wait(t, submitSpilled(t, s, w.sp, "tail\n"))
			if !errors.Is(err, ErrNoSpace) || !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("err = %v, want ErrNoSpace wrapping ENOSPC", err)
			}
			w.waitWritten(t)
			assertNothingStored(t, s)
			if n := writes.Load(); n != 3 {
				t.Errorf("%d writes, want 3: chunks after the failure must be dropped", n)
			}
			for i, b := range w.bufs {
				if n := rel.count(b); n != 1 {
					t.Errorf("chunk %d released %d times", i, n)
				}
			}
		})
	}
}

// TestSpillSyncError: per-file fsync of the spilled file failing fails the
// message and leaves nothing behind.
func TestSpillSyncError(t *testing.T) {
	s := newTestSpool(t, nil)
	s.syncer.(*testSyncer).hook = func(call string) error {
		if strings.HasPrefix(call, "file ") {
			return syscall.EIO
		}
		return nil
	}
	err := spillBody(t, s, bigBody(100_000), feed{first: 30_000, chunk: 30_000, tail: 10}, "bob@example.test", "carol@other.test")
	if !errors.Is(err, syscall.EIO) || errors.Is(err, ErrNoSpace) {
		t.Fatalf("err = %v, want EIO", err)
	}
	assertNothingStored(t, s)
}

// TestSpillLinkFallsBackToCopy: without hard links the other mailboxes get
// a synced copy read back from the spilled file.
func TestSpillLinkFallsBackToCopy(t *testing.T) {
	s := newTestSpool(t, nil)
	ts := s.syncer.(*testSyncer)
	s.link = func(oldpath, newpath string) error {
		return &os.LinkError{Op: "link", Old: oldpath, New: newpath, Err: syscall.EXDEV}
	}
	body := bigBody(200_000)
	if err := spillBody(t, s, body, feed{first: 64 << 10, chunk: 10_000, tail: 1}, "bob@example.test", "carol@other.test"); err != nil {
		t.Fatal(err)
	}
	a, b := only(t, s, "bob@example.test"), only(t, s, "carol@other.test")
	fa, _ := os.Stat(a)
	fb, _ := os.Stat(b)
	ca, _ := os.ReadFile(a)
	cb, _ := os.ReadFile(b)
	if os.SameFile(fa, fb) || string(ca) != string(cb) || filepath.Base(a) != filepath.Base(b) {
		t.Errorf("copy: same inode %v, same content %v, names %s %s", os.SameFile(fa, fb), string(ca) == string(cb), a, b)
	}
	var fileSyncs int
	for _, c := range ts.calls {
		if strings.HasPrefix(c, "file ") {
			fileSyncs++
		}
	}
	if fileSyncs != 2 {
		t.Errorf("%d file syncs, want 2 (the spilled file and the copy)", fileSyncs)
	}
}

// TestSpillAbort: Abort removes the tmp file, drops the chunks still
// queued without writing them (their callbacks run, their buffers go back),
// makes a later Submit fail, and nothing reaches new/.
func TestSpillAbort(t *testing.T) {
	s := newTestSpool(t, func(c *Config) { c.Workers = 1 })
	var rel countingRelease
	s.release = rel.release
	var writes atomic.Int64
	s.write = func(fd int, path string, segs [][]byte) error {
		writes.Add(1)
		return writeSegments(fd, path, segs)
	}
	w := &writer{sp: s.NewSpill(testMessage())}
	w.write("Subject: x\n\n")
	w.waitWritten(t)
	if tmp := files(t, filepath.Join(maildir(s, "bob@example.test"), "tmp")); len(tmp) != 1 {
		t.Fatalf("tmp/ holds %q, want the spilled file", tmp)
	}

	// Hold the only worker in another message's fsync while chunks queue.
	g := newGate(s)
	held := make(chan error, 1)
	if err := s.Submit(newMessage("x\n", "alice@example.test"), func(err error) { held <- err }); err != nil {
		t.Fatal(err)
	}
	<-g.entered
	for range 10 {
		w.write(strings.Repeat("y", 1000) + "\n")
	}
	w.sp.Abort()
	w.sp.Abort() // twice is harmless
	w.write("after abort\n")
	close(g.open)
	if err := wait(t, held); err != nil {
		t.Fatal(err)
	}
	w.waitWritten(t)

	tail := buffer("tail\n")
	err := s.Submit(&Message{Spill: w.sp, Body: tail}, func(error) { t.Error("done called for a refused Submit") })
	if !errors.Is(err, errSpillUsed) {
		t.Errorf("Submit after Abort: %v", err)
	}
	if rel.count(tail) != 1 {
		t.Error("refused tail not released")
	}
	s.Close() // the workers finish every spill step before Close returns
	if tmp := files(t, filepath.Join(maildir(s, "bob@example.test"), "tmp")); len(tmp) != 0 {
		t.Errorf("tmp/ holds %q after Abort", tmp)
	}
	if n := len(files(t, filepath.Join(maildir(s, "bob@example.test"), "new"))); n != 0 {
		t.Errorf("%d files in new/ after Abort", n)
	}
	if n := writes.Load(); n != 2 { // the first chunk and alice's message
		t.Errorf("%d writes, want 2: chunks queued at the abort must be dropped", n)
	}
	for i, b := range w.bufs {
		if n := rel.count(b); n != 1 {
			t.Errorf("chunk %d released %d times", i, n)
		}
	}
}

// TestSpillSurvivesPanics: a panic while writing a chunk or finishing the
// message fails that message only (file removed, done called, buffers
// released), and the worker goes on.
func TestSpillSurvivesPanics(t *testing.T) {
	s := newTestSpool(t, func(c *Config) { c.Workers = 1 })
	var rel countingRelease
	s.release = rel.release
	var writes atomic.Int64
	s.write = func(fd int, path string, segs [][]byte) error {
		if writes.Add(1) == 2 {
			panic("injected write")
		}
		return writeSegments(fd, path, segs)
	}
	w := &writer{sp: s.NewSpill(testMessage())}
	w.write("Subject: x\n\n")
	w.waitWritten(t)
	w.write("panics\n")
	w.waitWritten(t)
	assertNothingStored(t, s) // removed before the callback ran
	w.write("dropped\n")
	tail := buffer("tail\n")
	ch := make(chan error, 1)
	if err := s.Submit(&Message{Spill: w.sp, Body: tail}, func(err error) { ch <- err }); err != nil {
		t.Fatal(err)
	}
	if err := wait(t, ch); err == nil || !strings.Contains(err.Error(), "panic") {
		t.Errorf("err = %v, want the panic", err)
	}
	w.waitWritten(t)
	for i, b := range append(w.bufs, tail) {
		if n := rel.count(b); n != 1 {
			t.Errorf("buffer %d released %d times", i, n)
		}
	}

	// A panic in the final fsync.
	s.syncer.(*testSyncer).hook = func(call string) error {
		if strings.HasPrefix(call, "file ") {
			panic("injected sync")
		}
		return nil
	}
	tail = buffer("tail\n")
	w = &writer{sp: s.NewSpill(testMessage())}
	w.write("Subject: y\n\n")
	if err := s.Submit(&Message{Spill: w.sp, Body: tail}, func(err error) { ch <- err }); err != nil {
		t.Fatal(err)
	}
	if err := wait(t, ch); err == nil || !strings.Contains(err.Error(), "panic") {
		t.Errorf("err = %v, want the panic", err)
	}
	assertNothingStored(t, s)
	if rel.count(tail) != 1 {
		t.Error("tail not released after a panic")
	}

	s.syncer.(*testSyncer).hook = nil
	if err := spillBody(t, s, "Subject: z\n\nok\n", feed{first: 3, chunk: 3}, "bob@example.test"); err != nil {
		t.Fatalf("after the panics: %v", err)
	}
	only(t, s, "bob@example.test")
}

// TestSpillSubmitClosed: a Submit that fails (the spool is closed) aborts
// the spill: its file goes, its tail is released, done is never called.
func TestSpillSubmitClosed(t *testing.T) {
	s := newTestSpool(t, nil)
	var rel countingRelease
	s.release = rel.release
	w := &writer{sp: s.NewSpill(testMessage())}
	w.write("Subject: x\n\nbody\n")
	w.waitWritten(t)
	tmpDir := filepath.Join(maildir(s, "bob@example.test"), "tmp")
	if n := len(files(t, tmpDir)); n != 1 {
		t.Fatalf("%d files in tmp/", n)
	}
	s.Close()
	tail := buffer("tail\n")
	err := s.Submit(&Message{Spill: w.sp, Body: tail}, func(error) { t.Error("done called for a refused Submit") })
	if !errors.Is(err, ErrClosed) {
		t.Fatalf("Submit after Close: %v", err)
	}
	if rel.count(tail) != 1 {
		t.Error("refused tail not released")
	}
	// After Close the abort runs on a goroutine of its own.
	deadline := time.Now().Add(5 * time.Second)
	for len(files(t, tmpDir)) != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("tmp/ still holds %q", files(t, tmpDir))
		}
		time.Sleep(5 * time.Millisecond)
	}
	// Writes after Close are dropped; their callbacks still run.
	w.write("late\n")
	w.waitWritten(t)
	assertNothingStored(t, s)
}

// TestSpillCloseDrains: Close returns only after a submitted spill's done
// has run.
func TestSpillCloseDrains(t *testing.T) {
	s := newTestSpool(t, func(c *Config) { c.Workers = 1 })
	g := newGate(s)
	// The only worker is held in a message's fsync while the spill queues.
	held := make(chan error, 1)
	if err := s.Submit(newMessage("x\n", "alice@example.test"), func(err error) { held <- err }); err != nil {
		t.Fatal(err)
	}
	<-g.entered
	w := &writer{sp: s.NewSpill(testMessage())}
	for i := range 20 {
		w.write(fmt.Sprintf("line %d\n", i))
	}
	var answered atomic.Bool
	m := &Message{Spill: w.sp, Body: buffer("end\n")}
	if err := s.Submit(m, func(err error) {
		if err != nil {
			t.Error(err)
		}
		answered.Store(true)
	}); err != nil {
		t.Fatal(err)
	}
	closed := make(chan struct{})
	go func() { s.Close(); close(closed) }()
	time.Sleep(20 * time.Millisecond)
	close(g.open) // g.entered has room for the spill's own fsync
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not return")
	}
	if !answered.Load() {
		t.Error("Close returned before the spilled message was answered")
	}
	if err := <-held; err != nil {
		t.Error(err)
	}
	only(t, s, "bob@example.test")
}

// TestSpillConcurrent interleaves many spills and ordinary messages on two
// workers: every spilled message arrives intact, chunks in order.
func TestSpillConcurrent(t *testing.T) {
	for _, mode := range []string{"fsync", "group"} {
		t.Run(mode, func(t *testing.T) {
			var s *Spool
			if mode == "group" {
				s = newTestSpool(t, func(c *Config) { c.Syncer, c.Workers = &batchSyncer{}, 2 })
			} else {
				s = newTestSpool(t, func(c *Config) { c.Workers = 2 })
			}
			const n = 12
			var wg sync.WaitGroup
			errs := make(chan error, 2*n)
			for i := range n {
				wg.Add(2)
				go func() {
					defer wg.Done()
					env := testMessage()
					env.ID = fmt.Sprintf("S%d", i)
					env.Mailboxes = boxes("carol@other.test")
					sp := s.NewSpill(env)
					var b strings.Builder
					fmt.Fprintf(&b, "Subject: %d\n\n", i)
					sp.Write(buffer(b.String()), nil)
					for j := range 200 {
						line := fmt.Sprintf("%d:%d\n", i, j)
						b.WriteString(line)
						sp.Write(buffer(line), nil)
					}
					ch := make(chan error, 1)
					if err := s.Submit(&Message{Spill: sp}, func(err error) { ch <- err }); err != nil {
						errs <- err
						return
					}
					if err := <-ch; err != nil {
						errs <- err
						return
					}
				}()
				go func() {
					defer wg.Done()
					ch := make(chan error, 1)
					m := newMessage(fmt.Sprintf("Subject: small %d\n\nx\n", i), "info@other.test")
					if err := s.Submit(m, func(err error) { ch <- err }); err != nil {
						errs <- err
						return
					}
					if err := <-ch; err != nil {
						errs <- err
					}
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
			got := newFiles(t, s, "carol@other.test")
			if len(got) != n {
				t.Fatalf("%d spilled messages stored, want %d", len(got), n)
			}
			for _, content := range got {
				_, rest, _ := strings.Cut(content, "\nSubject: ")
				var i int
				fmt.Sscanf(rest, "%d", &i)
				var want strings.Builder
				fmt.Fprintf(&want, "%d\n\n", i)
				for j := range 200 {
					fmt.Fprintf(&want, "%d:%d\n", i, j)
				}
				if rest != want.String() {
					t.Errorf("message %d garbled:\n%.300s", i, rest)
				}
			}
			if n := len(newFiles(t, s, "info@other.test")); n != 12 {
				t.Errorf("%d small messages, want 12", n)
			}
		})
	}
}

// TestSpillDeliverRefused: Deliver is synchronous and cannot take a spill.
func TestSpillDeliverRefused(t *testing.T) {
	s := newTestSpool(t, nil)
	sp := s.NewSpill(testMessage())
	defer sp.Abort()
	if err := s.Deliver(&Message{Spill: sp}); err == nil {
		t.Error("Deliver took a spilled message")
	}
}

// BenchmarkSpill25MB stores a 25 MB message delivered in 256 KiB chunks
// through a spill (at most two chunks in flight), and the same message from
// memory (Body), side by side, without and with per-file fsync.
func BenchmarkSpill25MB(b *testing.B) {
	body := bigBody(25 << 20)
	const chunk = 256 << 10
	for _, sync := range []string{"nosync", "fsync"} {
		for _, how := range []string{"body", "spill"} {
			b.Run(sync+"/"+how, func(b *testing.B) {
				var syncer Syncer = NoSync{}
				if sync == "fsync" {
					syncer = FsyncSyncer{}
				}
				s, err := New(Config{Root: b.TempDir(), Hostname: "mx.example.test", Syncer: syncer, Mailboxes: boxes(testNames...)})
				if err != nil {
					b.Fatal(err)
				}
				defer s.Close()
				box := Mailbox{Domain: "example.test", User: "bob"}.Path(s.root)
				inflight := make(chan struct{}, 2)
				b.SetBytes(int64(len(body)))
				b.ReportAllocs()
				for b.Loop() {
					done := make(chan error, 1)
					m := &Message{}
					if how == "body" {
						m = newMessage(body, "bob@example.test")
					} else {
						// Two chunks in flight at most, as a session's
						// memory budget would allow.
						sp := s.NewSpill(testMessage())
						for off := 0; off < len(body); off += chunk {
							inflight <- struct{}{}
							sp.Write(buffer(body[off:min(off+chunk, len(body))]), func() { <-inflight })
						}
						m.Spill = sp
					}
					if err := s.Submit(m, func(err error) { done <- err }); err != nil {
						b.Fatal(err)
					}
					if err := <-done; err != nil {
						b.Fatal(err)
					}
					// Keep the file system from filling up.
					b.StopTimer()
					os.RemoveAll(filepath.Join(box, "new"))
					os.Mkdir(filepath.Join(box, "new"), 0o700)
					b.StartTimer()
				}
			})
		}
	}
}
