package spool

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"golang.org/x/sys/unix"
)

// mountTmpfs mounts a small tmpfs on dir (which must exist) until the test
// ends: another file system without a disk. It needs root (or
// CAP_SYS_ADMIN); without it the test is skipped, except under CI=true,
// where it fails.
func mountTmpfs(t *testing.T, dir string, flags uintptr) {
	t.Helper()
	if err := unix.Mount("tmpfs", dir, "tmpfs", flags, "size=4m,mode=0700"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("mount tmpfs on %s: %v (CI=true: this test must run)", dir, err)
		}
		t.Skipf("cannot mount a tmpfs on %s (%v): needs root or CAP_SYS_ADMIN; under CI=true this fails", dir, err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(dir, 0); err != nil {
			unix.Unmount(dir, unix.MNT_DETACH)
		}
	})
}

// syncsOf returns the file syncs, directory syncs and flushes in calls.
func syncsOf(calls []string) (files, dirs []string, flushes int) {
	for _, c := range calls {
		switch {
		case strings.HasPrefix(c, "file "):
			files = append(files, strings.TrimPrefix(c, "file "))
		case strings.HasPrefix(c, "dir "):
			dirs = append(dirs, strings.TrimPrefix(c, "dir "))
		case c == "all":
			flushes++
		}
	}
	return files, dirs, flushes
}

// assertPerFile checks that a delivery under group commit was made durable
// file by file: its file in each of boxes synced, each tmp/ and new/
// synced, no flush.
func assertPerFile(t *testing.T, calls []string, boxes ...string) {
	t.Helper()
	files, dirs, flushes := syncsOf(calls)
	if flushes != 0 {
		t.Errorf("flushed (syncfs) for a foreign file system: %q", calls)
	}
	for _, box := range boxes {
		synced := slices.ContainsFunc(files, func(f string) bool { return strings.HasPrefix(f, box+"/tmp/") })
		if !synced {
			t.Errorf("%s: file not synced: %q", box, calls)
		}
		for _, sub := range []string{"/tmp", "/new"} {
			if !slices.Contains(dirs, box+sub) {
				t.Errorf("%s%s not synced: %q", box, sub, calls)
			}
		}
	}
}

// assertGrouped checks that a delivery went through group commit alone.
func assertGrouped(t *testing.T, calls []string) {
	t.Helper()
	files, _, flushes := syncsOf(calls)
	if len(files) != 0 || flushes != 2 {
		t.Errorf("not a group commit (want no file syncs, 2 flushes): %q", calls)
	}
}

// TestOtherFSMountPoint: a mailbox folder that is a mount point (a tmpfs)
// is on another file system than the root, which syncfs on the root does
// not flush: its deliveries, including one that also goes to a mailbox on
// the root's file system and must copy across (EXDEV), are fsync'd per
// file. Deliveries on the root's file system stay grouped.
func TestOtherFSMountPoint(t *testing.T) {
	root := filepath.Join(t.TempDir(), "mail")
	alice := filepath.Join(root, "example.test", "alice")
	if err := os.MkdirAll(alice, 0o700); err != nil {
		t.Fatal(err)
	}
	mountTmpfs(t, alice, 0)
	bs := &batchSyncer{}
	s := newTestSpool(t, func(c *Config) { c.Root, c.Syncer = root, bs })
	if rd, ad := mustDev(t, root), mustDev(t, alice); rd == ad {
		t.Fatalf("tmpfs has the root's st_dev %d", rd)
	}
	bob := maildir(s, "bob@example.test")

	bs.reset()
	if err := wait(t, submitOne(t, s, "A", "alice@example.test")); err != nil {
		t.Fatal(err)
	}
	assertPerFile(t, bs.reset(), alice)
	only(t, s, "alice@example.test")

	if err := wait(t, submitOne(t, s, "B", "bob@example.test")); err != nil {
		t.Fatal(err)
	}
	assertGrouped(t, bs.reset())

	// To bob and alice: the link from bob's tmp/ into alice's fails with
	// EXDEV and a copy is written; both are fsync'd.
	if err := wait(t, submitOne(t, s, "C", "bob@example.test", "alice@example.test")); err != nil {
		t.Fatal(err)
	}
	calls := bs.reset()
	assertPerFile(t, calls, alice, bob)
	if files, _, _ := syncsOf(calls); len(files) != 2 {
		t.Errorf("file syncs %q, want bob's file and alice's copy", files)
	}
	for _, box := range []string{alice, bob} {
		if n := len(files(t, box+"/new")); n != 2 {
			t.Errorf("%s/new: %d files, want 2", box, n)
		}
	}
}

// TestOtherFSSymlinkedDomain: a domain folder that is a symlink to another
// file system is treated the same way.
func TestOtherFSSymlinkedDomain(t *testing.T) {
	base := t.TempDir()
	elsewhere := filepath.Join(base, "elsewhere")
	root := filepath.Join(base, "mail")
	for _, d := range []string{elsewhere, root} {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	mountTmpfs(t, elsewhere, 0)
	if err := os.Symlink(elsewhere, filepath.Join(root, "other.test")); err != nil {
		t.Fatal(err)
	}
	bs := &batchSyncer{}
	s := newTestSpool(t, func(c *Config) { c.Root, c.Syncer = root, bs })
	bs.reset()
	if err := wait(t, submitOne(t, s, "A", "carol@other.test")); err != nil {
		t.Fatal(err)
	}
	assertPerFile(t, bs.reset(), maildir(s, "carol@other.test"))
	if n := len(files(t, filepath.Join(elsewhere, "carol", "new"))); n != 1 {
		t.Errorf("%d files on the other file system, want 1", n)
	}
}

func mustDev(t *testing.T, path string) uint64 {
	t.Helper()
	d, err := devOf(path)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// TestOtherFSSeam uses the st_dev seam instead of a mount: the device is
// looked up once per mailbox (tmp/ and new/), not per delivery, and a
// foreign mailbox is fsync'd per file every time.
func TestOtherFSSeam(t *testing.T) {
	bs := &batchSyncer{}
	s := newTestSpool(t, func(c *Config) { c.Syncer = bs })
	alice := maildir(s, "alice@example.test")
	var mu sync.Mutex
	looked := map[string]int{}
	s.devOf = func(path string) (uint64, error) {
		mu.Lock()
		looked[path]++
		mu.Unlock()
		if strings.HasPrefix(path, alice+"/") {
			return s.rootDev + 1, nil
		}
		return devOf(path)
	}
	for _, id := range []string{"A", "B", "C"} {
		bs.reset()
		if err := wait(t, submitOne(t, s, id, "alice@example.test")); err != nil {
			t.Fatal(err)
		}
		assertPerFile(t, bs.reset(), alice)
		if err := wait(t, submitOne(t, s, id, "bob@example.test")); err != nil {
			t.Fatal(err)
		}
		assertGrouped(t, bs.reset())
	}
	mu.Lock()
	defer mu.Unlock()
	bob := maildir(s, "bob@example.test")
	for _, p := range []string{alice + "/tmp", alice + "/new", bob + "/tmp", bob + "/new"} {
		if looked[p] != 1 {
			t.Errorf("st_dev of %s looked up %d times, want once: %v", p, looked[p], looked)
		}
	}
}
