//go:build !linux

package spool

import (
	"os"
	"time"
)

// writeSegments writes segs to f one after another.
func writeSegments(f *os.File, segs [][]byte) error {
	for _, s := range segs {
		if _, err := f.Write(s); err != nil {
			return err
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
