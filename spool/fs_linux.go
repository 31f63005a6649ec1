//go:build linux

package spool

import (
	"io"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// maxIovec is IOV_MAX on Linux.
const maxIovec = 1024

// writeSegments writes segs to f in as few writev(2) calls as the kernel
// allows, retrying short writes. segs itself is not modified.
func writeSegments(f *os.File, segs [][]byte) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	segs = append([][]byte(nil), segs...)
	for len(segs) > 0 {
		chunk := segs[:min(len(segs), maxIovec)]
		var n int
		var werr error
		// Regular files are never non-blocking, so the callback runs once.
		if err := rc.Write(func(fd uintptr) bool {
			n, werr = unix.Writev(int(fd), chunk)
			return true
		}); err != nil {
			return err
		}
		switch {
		case werr == unix.EINTR:
			continue
		case werr != nil:
			return &os.PathError{Op: "writev", Path: f.Name(), Err: werr}
		case n == 0:
			return &os.PathError{Op: "writev", Path: f.Name(), Err: io.ErrShortWrite}
		}
		for n > 0 {
			if n < len(segs[0]) {
				segs[0] = segs[0][n:]
				break
			}
			n -= len(segs[0])
			segs = segs[1:]
		}
		for len(segs) > 0 && len(segs[0]) == 0 {
			segs = segs[1:]
		}
	}
	return nil
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
