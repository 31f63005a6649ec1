package spool

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/valyala/bytebufferpool"
	"golang.org/x/sys/unix"
)

// testSyncer records every sync as "file <path>" or "dir <path>" and lets a
// test fail, block or inspect the tree at each one.
type testSyncer struct {
	mu    sync.Mutex
	calls []string
	hook  func(call string) error // optional, called outside mu
}

func (s *testSyncer) SyncFile(f *os.File) error { return s.record("file " + f.Name()) }
func (s *testSyncer) SyncDir(dir string) error  { return s.record("dir " + dir) }

func (s *testSyncer) record(call string) error {
	s.mu.Lock()
	s.calls = append(s.calls, call)
	hook := s.hook
	s.mu.Unlock()
	if hook != nil {
		return hook(call)
	}
	return nil
}

func (s *testSyncer) log(ev string) {
	s.mu.Lock()
	s.calls = append(s.calls, ev)
	s.mu.Unlock()
}

func (s *testSyncer) reset() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.calls
	s.calls = nil
	return c
}

// testNames are the configured mailboxes of the tests, as user@domain.
var testNames = []string{
	"bob@example.test", "alice@example.test", "admin@example.test",
	"carol@other.test", "info@other.test", "first.last-1_x@other.test",
}

// boxes turns user@domain names into Mailboxes.
func boxes(names ...string) []Mailbox {
	out := make([]Mailbox, len(names))
	for i, n := range names {
		user, domain, _ := strings.Cut(n, "@")
		out[i] = Mailbox{Domain: domain, User: user}
	}
	return out
}

// testTrace stands for the trace fields the server builds: the spool
// writes them as they are.
const testTrace = "Return-Path: <alice@sender.test>\n" +
	"Received: from mail.sender.test ([192.0.2.1])\n" +
	"\tby mx.example.test (nanomx) with ESMTP id ABC123\n" +
	"\tfor <bob@example.test>;\n" +
	"\tMon, 02 Jan 2006 15:04:05 -0700\n"

// testMessage is a message for bob, without a body.
func testMessage() *Message {
	return &Message{ID: "ABC123", Mailboxes: boxes("bob@example.test"), Trace: []byte(testTrace)}
}

// newTestSpool starts a spool on a fresh root with the test mailboxes.
func newTestSpool(t *testing.T, mutate func(*Config)) *Spool {
	t.Helper()
	cfg := Config{
		Root:      filepath.Join(t.TempDir(), "mail"),
		Hostname:  "mx.example.test",
		Syncer:    &testSyncer{},
		Mailboxes: boxes(testNames...),
	}
	if mutate != nil {
		mutate(&cfg)
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// newMessage is testMessage with a body, for the mailboxes named.
func newMessage(body string, names ...string) *Message {
	m := testMessage()
	m.Mailboxes = boxes(names...)
	m.Body = bytebufferpool.Get()
	m.Body.WriteString(body)
	return m
}

// files lists the names in dir; a missing dir is empty.
func files(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

func maildir(s *Spool, addr string) string {
	user, domain, _ := strings.Cut(addr, "@")
	return Mailbox{Domain: domain, User: user}.Path(s.root)
}

// only returns the path of the single file in dir/new, failing otherwise.
func only(t *testing.T, s *Spool, addr string) string {
	t.Helper()
	dir := maildir(s, addr)
	if tmp := files(t, filepath.Join(dir, "tmp")); len(tmp) != 0 {
		t.Errorf("%s: tmp/ not empty: %q", addr, tmp)
	}
	names := files(t, filepath.Join(dir, "new"))
	if len(names) != 1 {
		t.Fatalf("%s: new/ holds %q, want one file", addr, names)
	}
	return filepath.Join(dir, "new", names[0])
}

// assertNothingStored fails if any test mailbox has a file in tmp/ or
// new/.
func assertNothingStored(t *testing.T, s *Spool) {
	t.Helper()
	for _, b := range boxes(testNames...) {
		for _, sub := range []string{"tmp", "new"} {
			if names := files(t, filepath.Join(b.Path(s.root), sub)); len(names) != 0 {
				t.Errorf("%s/%s holds %q", b, sub, names)
			}
		}
	}
}

var nameRE = regexp.MustCompile(`^(\d+)\.M(\d{1,6})P(\d+)Q(\d+)_nanomx\.mx\.example\.test,S=(\d+)$`)

func TestDeliver(t *testing.T) {
	s := newTestSpool(t, nil)
	body := "Subject: hi\nReturn-Path: <forged@evil.test>\n\tfolded\nTo: bob@example.test\n\nHello, wörld.\nReturn-Path: in the body stays\n"
	m := newMessage(body, "bob@example.test")
	if err := s.Deliver(m); err != nil {
		t.Fatal(err)
	}

	path := only(t, s, "bob@example.test")
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// The trace fields as given, then the client's message without its
	// Return-Path field.
	want := testTrace + "Subject: hi\nTo: bob@example.test\n\nHello, wörld.\nReturn-Path: in the body stays\n"
	if string(got) != want {
		t.Errorf("stored\n%q\nwant\n%q", got, want)
	}
	if m.Body == nil || m.Body.String() != body {
		t.Error("Deliver must only borrow the body")
	}

	// The name is a Maildir unique name whose S= is the file size exactly.
	name := filepath.Base(path)
	sub := nameRE.FindStringSubmatch(name)
	if sub == nil {
		t.Fatalf("name %q does not match %s", name, nameRE)
	}
	if sub[3] != strconv.Itoa(os.Getpid()) {
		t.Errorf("name %q: pid %s, want %d", name, sub[3], os.Getpid())
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if size, _ := strconv.ParseInt(sub[5], 10, 64); size != fi.Size() || size != int64(len(want)) {
		t.Errorf("S=%d, file size %d, content %d", size, fi.Size(), len(want))
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("file mode %v, want 0600", fi.Mode().Perm())
	}

	// Directories made on first use: 0700, with cur/ for the MUA.
	dir := maildir(s, "bob@example.test")
	for _, d := range []string{filepath.Dir(dir), dir, dir + "/tmp", dir + "/new", dir + "/cur"} {
		if fi, err := os.Stat(d); err != nil || !fi.IsDir() || fi.Mode().Perm() != 0o700 {
			t.Errorf("%s: %v, %v; want a 0700 directory", d, fi.Mode(), err)
		}
	}
}

func TestDeliverNoHeaderSection(t *testing.T) {
	s := newTestSpool(t, nil)
	for _, body := range []string{"", "no newline at all", "\nReturn-Path: body\n"} {
		m := newMessage(body, "alice@example.test")
		if err := s.Deliver(m); err != nil {
			t.Fatal(err)
		}
	}
	m := &Message{Mailboxes: boxes("alice@example.test")} // nil Body, no trace: empty file
	if err := s.Deliver(m); err != nil {
		t.Fatal(err)
	}
	if n := len(files(t, filepath.Join(maildir(s, "alice@example.test"), "new"))); n != 4 {
		t.Errorf("%d files, want 4", n)
	}
}

// TestDeliverSizeMatches checks S= against the real size for bodies of
// several shapes, including removed Return-Path fields and multi-byte text.
func TestDeliverSizeMatches(t *testing.T) {
	s := newTestSpool(t, nil)
	bodies := []string{
		"",
		"a",
		"Return-Path: <x>\n",
		"Return-Path: <x>\nReturn-Path: <y>\n\t z\nA: b\n\nü€𝄞\n",
		strings.Repeat("Received: x\n", 50) + "\n" + strings.Repeat("line\n", 10000),
	}
	for _, body := range bodies {
		m := newMessage(body, "carol@other.test")
		if err := s.Deliver(m); err != nil {
			t.Fatal(err)
		}
	}
	dir := filepath.Join(maildir(s, "carol@other.test"), "new")
	for _, name := range files(t, dir) {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		sub := nameRE.FindStringSubmatch(name)
		if sub == nil || sub[5] != strconv.FormatInt(fi.Size(), 10) {
			t.Errorf("%s: size %d", name, fi.Size())
		}
	}
}

// TestDeliverManyMailboxesHardLinks: every mailbox gets the message once,
// as a hard link of one file, even when the caller lists one twice.
func TestDeliverManyMailboxesHardLinks(t *testing.T) {
	s := newTestSpool(t, nil)
	m := newMessage("Subject: team\n\nhi\n", "bob@example.test", "alice@example.test", "carol@other.test", "bob@example.test", "info@other.test")
	if err := s.Deliver(m); err != nil {
		t.Fatal(err)
	}
	var first os.FileInfo
	for _, addr := range []string{"bob@example.test", "alice@example.test", "carol@other.test", "info@other.test"} {
		fi, err := os.Stat(only(t, s, addr))
		if err != nil {
			t.Fatal(err)
		}
		if first == nil {
			first = fi
		} else if !os.SameFile(first, fi) {
			t.Errorf("%s: not a hard link of the first copy", addr)
		}
	}
	if s.syncer.(*testSyncer).calls == nil {
		t.Fatal("no syncs")
	}
}

// TestDeliverManyDuplicates lists more mailboxes than the scan for
// duplicates covers (the rest go through a map): each still gets one
// copy.
func TestDeliverManyDuplicates(t *testing.T) {
	s := newTestSpool(t, nil)
	var names []string
	for range 4 {
		names = append(names, testNames...)
	}
	if err := s.Deliver(newMessage("x\n", names...)); err != nil {
		t.Fatal(err)
	}
	for _, addr := range testNames {
		only(t, s, addr)
	}
}

func TestDeliverLinkFallsBackToCopy(t *testing.T) {
	s := newTestSpool(t, nil)
	ts := s.syncer.(*testSyncer)
	s.link = func(oldpath, newpath string) error {
		return &os.LinkError{Op: "link", Old: oldpath, New: newpath, Err: syscall.EXDEV}
	}
	m := newMessage("Subject: x\n\nbody\n", "bob@example.test", "carol@other.test")
	if err := s.Deliver(m); err != nil {
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
		t.Errorf("%d file syncs, want 2 (each copy)", fileSyncs)
	}
}

func TestDeliverMailLoop(t *testing.T) {
	s := newTestSpool(t, nil)
	loop := strings.Repeat("Received: from a by b; Mon, 1 Jan 2024 00:00:00 +0000\n", 50)
	m := newMessage("received: one more\n\tfolded\n"+loop+"\nbody\n", "bob@example.test")
	if err := s.Deliver(m); !errors.Is(err, ErrMailLoop) {
		t.Fatalf("51 Received: %v, want ErrMailLoop", err)
	}
	// New made the Maildirs; no message may be in them.
	assertNothingStored(t, s)
	m = newMessage(loop+"\n"+loop, "bob@example.test") // 50 in the header, 50 in the body
	if err := s.Deliver(m); err != nil {
		t.Fatalf("50 Received: %v", err)
	}
}

// TestDeliverInvalidMailbox: a mailbox whose names are not safe path
// elements, or none at all, fails the message, temporarily, before
// anything is written; so does a trace that would not stay fields of its
// own.
func TestDeliverInvalidMailbox(t *testing.T) {
	s := newTestSpool(t, nil)
	for _, bad := range [][]Mailbox{
		nil,
		{{Domain: "example.test", User: "bob"}, {Domain: "example.test", User: "../alice"}},
		{{Domain: "example.test", User: "Bob"}},
		{{Domain: "example.test", User: ""}},
		{{Domain: "..", User: "bob"}},
		{{Domain: "example.test/../other.test", User: "carol"}},
		{{Domain: "", User: "bob"}},
		{{Domain: "example.test", User: "a/b"}},
		{{Domain: "example.test", User: "bob\x00"}},
	} {
		m := newMessage("x\n")
		m.Mailboxes = bad
		err := s.Deliver(m)
		if err == nil || errors.Is(err, ErrNoSpace) || errors.Is(err, ErrMailLoop) {
			t.Errorf("%q: err = %v, want a temporary failure", bad, err)
		}
	}
	for _, trace := range []string{"Received: x", "Received: x\n\nBody: y\n", "\tcontinued\n", "\nX: y\n", "X: y\r\n"} {
		m := newMessage("Subject: x\n\nbody\n", "bob@example.test")
		m.Trace = []byte(trace)
		if err := s.Deliver(m); !errors.Is(err, errBadTrace) {
			t.Errorf("trace %q: err = %v, want errBadTrace", trace, err)
		}
	}
	// New made the Maildirs; no message may be in them, nor elsewhere.
	assertNothingStored(t, s)
	if _, err := os.Stat(filepath.Join(s.root, "alice")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a path outside the root was made: %v", err)
	}
}

// TestDeliverNewMailbox: a valid mailbox that New did not prepare (one
// configured by a reload) is created on first delivery, 0700 with cur/.
func TestDeliverNewMailbox(t *testing.T) {
	s := newTestSpool(t, nil)
	if err := s.Deliver(newMessage("x\n", "dave@example.test")); err != nil {
		t.Fatal(err)
	}
	only(t, s, "dave@example.test")
	dir := maildir(s, "dave@example.test")
	for _, d := range []string{dir, dir + "/tmp", dir + "/new", dir + "/cur"} {
		if fi, err := os.Stat(d); err != nil || !fi.IsDir() || fi.Mode().Perm() != 0o700 {
			t.Errorf("%s: %v, %v; want a 0700 directory", d, fi, err)
		}
	}
}

// TestDeliverOrder proves SyncFile -> SyncDir(tmp) -> rename -> SyncDir(new),
// with nothing visible in any new/ before its SyncFile.
func TestDeliverOrder(t *testing.T) {
	s := newTestSpool(t, nil)
	ts := s.syncer.(*testSyncer)
	bob, carol := maildir(s, "bob@example.test"), maildir(s, "carol@other.test")
	for _, dir := range []string{bob, carol} {
		if err := s.ensureMaildir(dir); err != nil {
			t.Fatal(err)
		}
	}
	ts.reset()
	s.rename = func(oldpath, newpath string) error {
		ts.log("rename " + oldpath)
		return renameNoReplace(oldpath, newpath)
	}
	var fileSynced bool
	ts.hook = func(call string) error {
		inNew := len(files(t, bob+"/new")) + len(files(t, carol+"/new"))
		switch {
		case strings.HasPrefix(call, "file "):
			fileSynced = true
			if inNew != 0 {
				t.Errorf("%s: a file is already in new/", call)
			}
		case strings.HasSuffix(call, "/tmp"):
			if !fileSynced || inNew != 0 {
				t.Errorf("%s: file synced %v, files in new/ %d", call, fileSynced, inNew)
			}
		case strings.HasSuffix(call, "/new"):
			if inNew != 2 {
				t.Errorf("%s: %d files in new/, want both renamed", call, inNew)
			}
		}
		return nil
	}
	m := newMessage("Subject: x\n\nbody\n", "bob@example.test", "carol@other.test")
	if err := s.Deliver(m); err != nil {
		t.Fatal(err)
	}
	name := filepath.Base(only(t, s, "bob@example.test"))
	want := []string{
		"file " + bob + "/tmp/" + name,
		"dir " + bob + "/tmp",
		"dir " + carol + "/tmp",
		"rename " + bob + "/tmp/" + name,
		"rename " + carol + "/tmp/" + name,
		"dir " + bob + "/new",
		"dir " + carol + "/new",
	}
	if got := ts.reset(); !slices.Equal(got, want) {
		t.Errorf("calls\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// TestDeliverSyncsNewDirectories checks that directories made on first use
// are synced into their parents before the delivery reports success.
func TestDeliverSyncsNewDirectories(t *testing.T) {
	s := newTestSpool(t, nil)
	ts := s.syncer.(*testSyncer)
	ts.reset()
	if err := s.Deliver(newMessage("x\n", "bob@example.test")); err != nil {
		t.Fatal(err)
	}
	calls := ts.reset()
	box := maildir(s, "bob@example.test")
	for _, dir := range []string{s.root, filepath.Dir(box), box} {
		i := slices.Index(calls, "dir "+dir)
		if i < 0 || i > slices.Index(calls, "dir "+box+"/new") {
			t.Errorf("%s not synced before new/: %q", dir, calls)
		}
	}
}

// TestDeliverSyncFailures fails each sync in turn: before the first rename
// nothing may be left anywhere; after it the error still reaches the caller.
func TestDeliverSyncFailures(t *testing.T) {
	errSync := errors.New("injected sync failure")
	tests := []struct {
		name      string
		fail      func(call string) bool
		published bool // the message may remain in new/
	}{
		{"file", func(c string) bool { return strings.HasPrefix(c, "file ") }, false},
		{"second tmp dir", func(c string) bool { return strings.HasSuffix(c, "other.test/carol/tmp") }, false},
		{"first tmp dir", func(c string) bool { return strings.HasSuffix(c, "/tmp") }, false},
		{"mailbox creation", func(c string) bool { return strings.HasSuffix(c, "other.test/carol") }, false},
		{"new dir", func(c string) bool { return strings.HasSuffix(c, "/new") }, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newTestSpool(t, nil)
			s.syncer.(*testSyncer).hook = func(call string) error {
				if tt.fail(call) {
					return errSync
				}
				return nil
			}
			err := s.Deliver(newMessage("x\n", "bob@example.test", "carol@other.test"))
			if !errors.Is(err, errSync) || errors.Is(err, ErrNoSpace) {
				t.Fatalf("err = %v, want the injected failure", err)
			}
			if !tt.published {
				assertNothingStored(t, s)
			}
			for _, addr := range []string{"bob@example.test", "carol@other.test"} {
				if names := files(t, filepath.Join(maildir(s, addr), "tmp")); len(names) != 0 {
					t.Errorf("%s: tmp/ holds %q", addr, names)
				}
			}
		})
	}
}

// TestDeliverRetriesDirectorySync fails the sync of a new mailbox's
// directories once: the next delivery must sync them again rather than
// trust directories that exist but may not be durable.
func TestDeliverRetriesDirectorySync(t *testing.T) {
	s := newTestSpool(t, nil)
	ts := s.syncer.(*testSyncer)
	box := maildir(s, "bob@example.test")
	ts.hook = func(call string) error {
		if call == "dir "+box {
			return syscall.EIO
		}
		return nil
	}
	if err := s.Deliver(newMessage("x\n", "bob@example.test")); !errors.Is(err, syscall.EIO) {
		t.Fatalf("err = %v, want EIO", err)
	}
	ts.hook = nil
	ts.reset()
	if err := s.Deliver(newMessage("x\n", "bob@example.test")); err != nil {
		t.Fatal(err)
	}
	if calls := ts.reset(); !slices.Contains(calls, "dir "+box) {
		t.Errorf("mailbox directory not synced on retry: %q", calls)
	}
	ts.reset()
	if err := s.Deliver(newMessage("x\n", "bob@example.test")); err != nil {
		t.Fatal(err)
	}
	if calls := ts.reset(); len(calls) != 3 {
		t.Errorf("steady state: %q, want file, tmp and new syncs only", calls)
	}
}

func TestDeliverNoSpace(t *testing.T) {
	for _, errno := range []syscall.Errno{syscall.ENOSPC, syscall.EDQUOT} {
		t.Run("sync "+errno.Error(), func(t *testing.T) {
			s := newTestSpool(t, nil)
			s.syncer.(*testSyncer).hook = func(call string) error {
				if strings.HasPrefix(call, "file ") {
					return errno
				}
				return nil
			}
			err := s.Deliver(newMessage("x\n", "bob@example.test"))
			if !errors.Is(err, ErrNoSpace) || !errors.Is(err, errno) {
				t.Fatalf("err = %v, want ErrNoSpace wrapping %v", err, errno)
			}
			assertNothingStored(t, s)
		})
		t.Run("write "+errno.Error(), func(t *testing.T) {
			s := newTestSpool(t, nil)
			// A short write then the error, as a filling disk does.
			s.write = func(fd int, path string, segs [][]byte) error {
				if _, err := unix.Write(fd, segs[0][:10]); err != nil {
					return err
				}
				return &os.PathError{Op: "writev", Path: path, Err: errno}
			}
			err := s.Deliver(newMessage("x\n", "bob@example.test", "carol@other.test"))
			if !errors.Is(err, ErrNoSpace) {
				t.Fatalf("err = %v, want ErrNoSpace", err)
			}
			assertNothingStored(t, s)
		})
	}
}

// TestDeliverCopyFailure fails the fallback copy into the second mailbox:
// the first mailbox's tmp file must go too.
func TestDeliverCopyFailure(t *testing.T) {
	s := newTestSpool(t, nil)
	s.link = func(oldpath, newpath string) error { return syscall.EMLINK }
	var writes int
	s.write = func(fd int, path string, segs [][]byte) error {
		if writes++; writes == 2 {
			return syscall.EIO
		}
		return writeSegments(fd, path, segs)
	}
	err := s.Deliver(newMessage("x\n", "bob@example.test", "carol@other.test"))
	if !errors.Is(err, syscall.EIO) || errors.Is(err, ErrNoSpace) {
		t.Fatalf("err = %v, want EIO", err)
	}
	assertNothingStored(t, s)
}

func TestDeliverRenameFailure(t *testing.T) {
	t.Run("first", func(t *testing.T) {
		s := newTestSpool(t, nil)
		s.rename = func(oldpath, newpath string) error { return syscall.EIO }
		if err := s.Deliver(newMessage("x\n", "bob@example.test", "carol@other.test")); !errors.Is(err, syscall.EIO) {
			t.Fatalf("err = %v, want EIO", err)
		}
		assertNothingStored(t, s)
	})
	t.Run("second", func(t *testing.T) {
		// The first mailbox has it; the second is cleaned up and the error
		// makes the sender retry (a duplicate for bob beats a loss for carol).
		s := newTestSpool(t, nil)
		var n int
		s.rename = func(oldpath, newpath string) error {
			if n++; n == 2 {
				return syscall.EIO
			}
			return renameNoReplace(oldpath, newpath)
		}
		err := s.Deliver(newMessage("x\n", "bob@example.test", "carol@other.test"))
		if !errors.Is(err, syscall.EIO) || !strings.Contains(err.Error(), "after 1 of 2") {
			t.Fatalf("err = %v", err)
		}
		only(t, s, "bob@example.test")
		carol := maildir(s, "carol@other.test")
		if names := append(files(t, carol+"/tmp"), files(t, carol+"/new")...); len(names) != 0 {
			t.Errorf("carol holds %q", names)
		}
	})
}

// TestDeliverRecreatesMissingDirs removes a Maildir's new/ and tmp/ behind
// the spool's back; deliveries recreate them.
func TestDeliverRecreatesMissingDirs(t *testing.T) {
	s := newTestSpool(t, nil)
	m := func() *Message { return newMessage("x\n", "alice@example.test", "bob@example.test") }
	if err := s.Deliver(m()); err != nil {
		t.Fatal(err)
	}
	alice, bob := maildir(s, "alice@example.test"), maildir(s, "bob@example.test")
	for _, dir := range []string{alice + "/new", bob + "/tmp"} {
		if err := os.RemoveAll(dir); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Deliver(m()); err != nil {
		t.Fatal(err)
	}
	if n := len(files(t, alice+"/new")); n != 1 {
		t.Errorf("alice/new: %d files, want 1", n)
	}
	if n := len(files(t, bob+"/new")); n != 2 {
		t.Errorf("bob/new: %d files, want 2", n)
	}
}

func TestRenameNoReplace(t *testing.T) {
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	for _, p := range []string{a, b} {
		if err := os.WriteFile(p, []byte(p), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := renameNoReplace(a, b); err == nil {
		if got, _ := os.ReadFile(b); string(got) == a {
			t.Skip("file system without RENAME_NOREPLACE")
		}
	} else if !errors.Is(err, fs.ErrExist) {
		t.Errorf("err = %v, want EEXIST", err)
	}
}

func TestWriteSegments(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "f"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	// More segments than IOV_MAX, some empty.
	var segs [][]byte
	var want strings.Builder
	for i := range 3000 {
		s := fmt.Sprint(i, ",")
		if i%7 == 0 {
			s = ""
		}
		segs = append(segs, []byte(s))
		want.WriteString(s)
	}
	orig := slices.Clone(segs)
	if err := writeSegments(int(f.Fd()), f.Name(), segs); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(f.Name())
	if string(got) != want.String() {
		t.Errorf("wrote %d bytes, want %d", len(got), want.Len())
	}
	for i := range segs {
		if string(segs[i]) != string(orig[i]) {
			t.Fatal("writeSegments modified its argument")
		}
	}
}

func TestDeliverConcurrent(t *testing.T) {
	s := newTestSpool(t, func(c *Config) { c.Syncer = NoSync{} })
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 25 {
				if err := s.Deliver(newMessage("x\n", "bob@example.test", "alice@example.test", "carol@other.test")); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	for _, addr := range []string{"bob@example.test", "alice@example.test", "carol@other.test"} {
		if n := len(files(t, filepath.Join(maildir(s, addr), "new"))); n != 200 {
			t.Errorf("%s: %d files, want 200", addr, n)
		}
	}
}

func TestFsyncSyncer(t *testing.T) {
	dir := t.TempDir()
	f, err := os.Create(filepath.Join(dir, "f"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var s FsyncSyncer
	if err := s.SyncFile(f); err != nil {
		t.Error(err)
	}
	if err := s.SyncDir(dir); err != nil {
		t.Error(err)
	}
	if err := s.SyncDir(f.Name()); err == nil {
		t.Error("SyncDir on a regular file: no error")
	}
	if err := s.SyncDir(filepath.Join(dir, "missing")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("SyncDir on a missing dir: %v", err)
	}
}

func BenchmarkDeliver10KB(b *testing.B) {
	body := "Subject: bench\nFrom: a@b.test\n\n" + strings.Repeat(strings.Repeat("x", 99)+"\n", 102)
	for _, bc := range []struct {
		name   string
		syncer Syncer
	}{{"fsync", FsyncSyncer{}}, {"nosync", NoSync{}}} {
		b.Run(bc.name, func(b *testing.B) {
			s, err := New(Config{
				Root:      b.TempDir(),
				Hostname:  "mx.example.test",
				Syncer:    bc.syncer,
				Mailboxes: boxes(testNames...),
			})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			m := newMessage(body, "bob@example.test")
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			for b.Loop() {
				if err := s.Deliver(m); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestDeliverMissingRoot removes the root (an unmounted file system looks
// the same): deliveries fail temporarily instead of recreating it.
func TestDeliverMissingRoot(t *testing.T) {
	s := newTestSpool(t, nil)
	if err := os.RemoveAll(s.root); err != nil {
		t.Fatal(err)
	}
	err := s.Deliver(newMessage("x\n", "bob@example.test"))
	if err == nil || errors.Is(err, ErrNoSpace) || errors.Is(err, errNoMailboxes) {
		t.Fatalf("err = %v, want a temporary failure", err)
	}
	if _, err := os.Stat(s.root); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("root recreated: %v", err)
	}
}
