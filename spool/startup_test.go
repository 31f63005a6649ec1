package spool

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

func startupConfig(t *testing.T, root string) Config {
	return Config{Root: root, Hostname: "mx.example.test", Syncer: &testSyncer{}, Mailboxes: boxes(testNames...)}
}

// TestLockRoot: a second spool on a root in use refuses to start, naming
// the holder's pid, and leaves the first one's in-flight tmp/ files alone;
// once the first is closed, a new one starts (and cleans them).
func TestLockRoot(t *testing.T) {
	root := filepath.Join(t.TempDir(), "mail")
	first, err := New(startupConfig(t, root))
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	inflight := filepath.Join(maildir(first, "bob@example.test"), "tmp", "1700000000.M1P2Q3_nanomx.mx.example.test,S=1")
	if err := os.WriteFile(inflight, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}

	second, err := New(startupConfig(t, root))
	if !errors.Is(err, ErrLocked) {
		if second != nil {
			second.Close()
		}
		t.Fatalf("second New on a locked root: %v, want ErrLocked", err)
	}
	if want := fmt.Sprintf("%s: locked by another nanomx (pid %d)", root, os.Getpid()); err.Error() != want {
		t.Errorf("error %q, want %q", err, want)
	}
	if _, err := os.Stat(inflight); err != nil {
		t.Fatalf("the running spool's tmp/ file is gone: %v", err)
	}

	lock := filepath.Join(root, ".nanomx.lock")
	fi, err := os.Stat(lock)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("lock file: %v, %v; want mode 0600", fi, err)
	}
	if b, _ := os.ReadFile(lock); string(b) != strconv.Itoa(os.Getpid())+"\n" {
		t.Errorf("lock file holds %q, want our pid", b)
	}

	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	third, err := New(startupConfig(t, root))
	if err != nil {
		t.Fatalf("New after the holder closed: %v", err)
	}
	defer third.Close()
	if _, err := os.Stat(inflight); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("stale tmp/ file not cleaned once the lock was ours: %v", err)
	}
}

// TestLockHolderUnknown: a lock file without a pid (its holder had not
// written it yet) still gives a clear message.
func TestLockHolderUnknown(t *testing.T) {
	root := t.TempDir()
	f, err := os.OpenFile(filepath.Join(root, lockName), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	s, err := New(startupConfig(t, root))
	if err == nil {
		s.Close()
	}
	if !errors.Is(err, ErrLocked) || !strings.HasSuffix(err.Error(), "(pid unknown)") {
		t.Fatalf("New = %v", err)
	}
}

// TestNewUnwritableDomain: a regular file where a domain folder should be
// is a start-up error naming the mailbox and the path, not a 4xx for every
// message; New releases the lock on the way out.
func TestNewUnwritableDomain(t *testing.T) {
	root := t.TempDir()
	domain := filepath.Join(root, "other.test")
	if err := os.WriteFile(domain, []byte("not a folder"), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := New(startupConfig(t, root))
	if err == nil {
		s.Close()
		t.Fatal("New accepted a domain folder that is a file")
	}
	if !errors.Is(err, syscall.ENOTDIR) || !strings.Contains(err.Error(), domain+"/") || !strings.Contains(err.Error(), "@other.test") {
		t.Errorf("error %q: want ENOTDIR naming the mailbox and a path under %s", err, domain)
	}
	if err := os.Remove(domain); err != nil {
		t.Fatal(err)
	}
	s, err = New(startupConfig(t, root))
	if err != nil {
		t.Fatalf("after the fix: %v", err)
	}
	s.Close()
}

// TestNewMaildirFolderIsFile: a Maildir's cur/ that is a file (mkdir says
// only EEXIST) is found too.
func TestNewMaildirFolderIsFile(t *testing.T) {
	root := t.TempDir()
	box := filepath.Join(root, "example.test", "bob")
	if err := os.MkdirAll(box, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(box+"/cur", nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := New(startupConfig(t, root)); err == nil || !strings.Contains(err.Error(), box+"/cur is not a directory") {
		t.Fatalf("New = %v", err)
	}
}

// TestNewReadOnlyMaildir: a tmp/ nanomx may not write to (here a read-only
// file system, which stops root too) is a start-up error.
func TestNewReadOnlyMaildir(t *testing.T) {
	root := t.TempDir()
	tmp := filepath.Join(root, "example.test", "bob", "tmp")
	if err := os.MkdirAll(tmp, 0o700); err != nil {
		t.Fatal(err)
	}
	mountTmpfs(t, tmp, unix.MS_RDONLY)
	_, err := New(startupConfig(t, root))
	if !errors.Is(err, syscall.EROFS) || !strings.Contains(err.Error(), tmp) {
		t.Fatalf("New = %v, want EROFS naming %s", err, tmp)
	}
}

// TestNewCreatesMaildirs: every configured mailbox has its Maildir after
// New, before any delivery.
func TestNewCreatesMaildirs(t *testing.T) {
	s := newTestSpool(t, nil)
	for _, b := range boxes(testNames...) {
		for _, sub := range []string{"tmp", "new", "cur"} {
			if fi, err := os.Stat(filepath.Join(b.Path(s.root), sub)); err != nil || !fi.IsDir() {
				t.Errorf("%s/%s: %v", b, sub, err)
			}
		}
	}
}

// TestCleanFolderTmp: a delivery into a Maildir++ folder (Mailbox.Folder)
// that a crash interrupted leaves its file in <user>/.<Folder>/tmp/; start-up
// removes it as it does in the inbox's tmp/, and leaves foreign recent
// files there alone.
func TestCleanFolderTmp(t *testing.T) {
	root := filepath.Join(t.TempDir(), "mail")
	s, err := New(startupConfig(t, root))
	if err != nil {
		t.Fatal(err)
	}
	m := newMessage("Subject: junk\n\nbuy\n", "bob@example.test")
	m.Mailboxes[0].Folder = "Junk"
	if err := s.Deliver(m); err != nil {
		t.Fatal(err)
	}
	s.Close()
	junk := filepath.Join(root, "example.test", "bob", ".Junk")
	if ents, _ := os.ReadDir(filepath.Join(junk, "new")); len(ents) != 1 {
		t.Fatalf("%d files in .Junk/new, want 1", len(ents))
	}
	ours := filepath.Join(junk, "tmp", "1700000000.M1P2Q3_nanomx.mx.example.test,S=1")
	foreign := filepath.Join(junk, "tmp", "1700000000.M1P2.dovecot")
	for _, p := range []string{ours, foreign} {
		if err := os.WriteFile(p, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	s2, err := New(startupConfig(t, root))
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if _, err := os.Stat(ours); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("our stale file in .Junk/tmp survived start-up: %v", err)
	}
	if _, err := os.Stat(foreign); err != nil {
		t.Errorf("a recent foreign file in .Junk/tmp was removed: %v", err)
	}
}
