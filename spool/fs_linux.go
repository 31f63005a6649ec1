//go:build linux

package spool

import (
	"io"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// haveSyncfs: group commit's syncfs(2) is there (since Linux 2.6.39;
// NewGroupSyncer wants 5.8 for its error reports).
const haveSyncfs = true

func syncfs(fd int) error { return unix.Syncfs(fd) }

// maxIovec is IOV_MAX on Linux.
const maxIovec = 1024

// writeSegments writes segs to the file fd (named path, for errors) in as
// few writev(2) calls as the kernel allows: one for a message, unless it
// has more than IOV_MAX segments or the kernel writes less than asked
// (a filling disk, a signal), which is retried from where it stopped.
// segs itself is not modified.
func writeSegments(fd int, path string, segs [][]byte) error {
	return writeSegmentsWith(unix.Writev, fd, path, segs)
}

// writeSegmentsWith is writeSegments with writev(2) as a parameter, so
// that a test can make it write short or fail with EINTR.
func writeSegmentsWith(writev func(int, [][]byte) (int, error), fd int, path string, segs [][]byte) error {
	copied := false // segs is our own copy, free to trim
	for {
		for len(segs) > 0 && len(segs[0]) == 0 {
			segs = segs[1:]
		}
		if len(segs) == 0 {
			return nil
		}
		n, err := writev(fd, segs[:min(len(segs), maxIovec)])
		switch {
		case err == unix.EINTR:
			continue
		case err != nil:
			return &os.PathError{Op: "writev", Path: path, Err: err}
		case n == 0:
			return &os.PathError{Op: "writev", Path: path, Err: io.ErrShortWrite}
		}
		for n > 0 && len(segs) > 0 && n >= len(segs[0]) {
			n -= len(segs[0])
			segs = segs[1:]
		}
		if n > 0 && len(segs) > 0 {
			// Part of a segment was written: trim it, in a copy.
			if !copied {
				segs, copied = append([][]byte(nil), segs...), true
			}
			segs[0] = segs[0][n:]
		}
	}
}

// renameNoReplace renames oldpath to newpath but fails with EEXIST instead of
// replacing an existing newpath: two processes that picked the same unique
// name (say PID 1 in two containers sharing a volume) must not overwrite
// each other's mail. File systems without RENAME_NOREPLACE get rename(2).
func renameNoReplace(oldpath, newpath string) error {
	err := unix.Renameat2(unix.AT_FDCWD, oldpath, unix.AT_FDCWD, newpath, unix.RENAME_NOREPLACE)
	if err == unix.EINVAL || err == unix.ENOSYS {
		return os.Rename(oldpath, newpath)
	}
	if err != nil {
		return &os.LinkError{Op: "rename", Old: oldpath, New: newpath, Err: err}
	}
	return nil
}

// olderThan reports whether path was neither modified nor accessed since
// cutoff (atime alone is unreliable under noatime and relatime).
func olderThan(path string, cutoff time.Time) bool {
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil {
		return false
	}
	return time.Unix(st.Atim.Unix()).Before(cutoff) && time.Unix(st.Mtim.Unix()).Before(cutoff)
}
