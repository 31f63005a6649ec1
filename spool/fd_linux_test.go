//go:build linux

package spool

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// shortWritev is writev(2) writing at most max bytes per call, and failing
// every third call with EINTR before writing anything, as a signal can.
type shortWritev struct {
	max   int
	calls int
}

func (w *shortWritev) writev(fd int, segs [][]byte) (int, error) {
	if w.calls++; w.calls%3 == 0 {
		return 0, unix.EINTR
	}
	var iov [][]byte
	left := w.max
	for _, s := range segs {
		if left == 0 {
			break
		}
		s = s[:min(len(s), left)]
		iov = append(iov, s)
		left -= len(s)
	}
	return unix.Writev(fd, iov)
}

// TestWriteSegmentsShort makes the kernel write less than asked, cutting
// segments in the middle and at their ends, with EINTR between: the file
// must still hold every byte once, in order, and segs stay as they were.
func TestWriteSegmentsShort(t *testing.T) {
	var segs [][]byte
	var want strings.Builder
	for i := range 40 {
		s := fmt.Sprint(i, strings.Repeat("x", i%5), ";")
		if i%6 == 0 {
			s = ""
		}
		segs = append(segs, []byte(s))
		want.WriteString(s)
	}
	orig := slices.Clone(segs)
	for _, max := range []int{1, 2, 3, 7, 64, want.Len()} {
		path := filepath.Join(t.TempDir(), "f")
		fd, err := createExcl(path)
		if err != nil {
			t.Fatal(err)
		}
		w := &shortWritev{max: max}
		err = writeSegmentsWith(w.writev, fd, path, segs)
		if cerr := closeFD(fd, path); err == nil {
			err = cerr
		}
		if err != nil {
			t.Fatalf("max %d: %v", max, err)
		}
		got, _ := os.ReadFile(path)
		if string(got) != want.String() {
			t.Errorf("max %d: file %q, want %q", max, got, want.String())
		}
		if wantCalls := (want.Len() + max - 1) / max; w.calls < wantCalls {
			t.Errorf("max %d: %d writev calls, want at least %d", max, w.calls, wantCalls)
		}
		for i := range segs {
			if string(segs[i]) != string(orig[i]) {
				t.Fatalf("max %d: writeSegments modified its argument", max)
			}
		}
	}
}

// TestWriteSegmentsErrors: a write of nothing is an error (not a loop),
// and an error after a short write is reported with the file's path.
func TestWriteSegmentsErrors(t *testing.T) {
	segs := [][]byte{[]byte("abc"), []byte("def")}
	calls := 0
	zero := func(int, [][]byte) (int, error) { calls++; return 0, nil }
	err := writeSegmentsWith(zero, -1, "/x/f", segs)
	if !errors.Is(err, io.ErrShortWrite) || calls != 1 {
		t.Errorf("zero-byte writev: err = %v after %d calls, want ErrShortWrite after 1", err, calls)
	}
	calls = 0
	full := func(int, [][]byte) (int, error) {
		if calls++; calls == 1 {
			return 4, nil
		}
		return 0, syscall.ENOSPC
	}
	err = writeSegmentsWith(full, -1, "/x/f", segs)
	var pe *os.PathError
	if !errors.Is(err, syscall.ENOSPC) || !errors.As(err, &pe) || pe.Path != "/x/f" || calls != 2 {
		t.Errorf("ENOSPC after a short write: err = %v after %d calls", err, calls)
	}
	// Nothing to write: no system call at all.
	calls = 0
	if err := writeSegmentsWith(zero, -1, "/x/f", [][]byte{nil, {}}); err != nil || calls != 0 {
		t.Errorf("empty segments: err = %v after %d calls", err, calls)
	}
}

// TestFinishFile: a Syncer of this package syncs the descriptor itself;
// any other gets an *os.File of the right name; either way the
// descriptor is closed afterwards, and a write error skips the sync.
func TestFinishFile(t *testing.T) {
	dir := t.TempDir()
	for i, sync := range []Syncer{FsyncSyncer{}, NoSync{}, &testSyncer{}} {
		path := filepath.Join(dir, fmt.Sprint("f", i))
		fd, err := createExcl(path)
		if err != nil {
			t.Fatal(err)
		}
		if err := finishFile(sync, fd, path, nil); err != nil {
			t.Errorf("%T: %v", sync, err)
		}
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err != unix.EBADF {
			t.Errorf("%T: descriptor still open after finishFile (%v)", sync, err)
		}
		if ts, ok := sync.(*testSyncer); ok {
			if !slices.Equal(ts.calls, []string{"file " + path}) {
				t.Errorf("testSyncer saw %q, want a SyncFile of %s", ts.calls, path)
			}
			fd, err := createExcl(path + ".2")
			if err != nil {
				t.Fatal(err)
			}
			werr := errors.New("write failed")
			if err := finishFile(sync, fd, path+".2", werr); err != werr {
				t.Errorf("finishFile after a write error: %v, want it", err)
			}
			if len(ts.calls) != 1 {
				t.Errorf("synced after a write error: %q", ts.calls)
			}
		}
	}
	if _, err := createExcl(filepath.Join(dir, "f0")); !errors.Is(err, os.ErrExist) {
		t.Errorf("createExcl of an existing file: %v, want ErrExist", err)
	}
}
