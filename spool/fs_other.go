//go:build !linux

package spool

import (
	"io"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// haveSyncfs: there is no syncfs(2) here, so no group commit: per-file
// fsync makes every delivery durable (NewGroupSyncer refuses).
const haveSyncfs = false

func syncfs(int) error { return unix.ENOSYS }

// writeSegments writes segs to the file fd one after another.
func writeSegments(fd int, path string, segs [][]byte) error {
	for _, s := range segs {
		for len(s) > 0 {
			n, err := unix.Write(fd, s)
			switch {
			case err == unix.EINTR:
				continue
			case err != nil:
				return &os.PathError{Op: "write", Path: path, Err: err}
			case n == 0:
				return &os.PathError{Op: "write", Path: path, Err: io.ErrShortWrite}
			}
			s = s[n:]
		}
	}
	return nil
}

// renameNoReplace is rename(2); only Linux offers RENAME_NOREPLACE.
func renameNoReplace(oldpath, newpath string) error { return os.Rename(oldpath, newpath) }

// olderThan reports whether path was last modified before cutoff.
func olderThan(path string, cutoff time.Time) bool {
	fi, err := os.Lstat(path)
	return err == nil && fi.ModTime().Before(cutoff)
}
