package spool

// Raw descriptors for message files and directories. os.OpenFile costs
// four fcntl(2) calls and a failing epoll_ctl(2) per file on Linux (Go
// tries to register every file it opens with its poller, and regular files
// cannot be polled), an allocation and a finalizer; a message file is
// opened, written once, perhaps synced and closed, so the plain system
// calls are all a delivery needs.

import (
	"os"

	"golang.org/x/sys/unix"
)

// createExcl creates path, which must not exist, write-only with mode 0600,
// and returns its descriptor. Errors are *os.PathError, as os.OpenFile's.
func createExcl(path string) (int, error) {
	return openFD(path, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL, 0o600)
}

// openFD is open(2) with O_CLOEXEC added, retrying EINTR as os.OpenFile
// does. Errors are *os.PathError.
func openFD(path string, flags int, mode uint32) (int, error) {
	for {
		fd, err := unix.Open(path, flags|unix.O_CLOEXEC, mode)
		if err == unix.EINTR {
			continue // as os.OpenFile does
		}
		if err != nil {
			return -1, &os.PathError{Op: "open", Path: path, Err: err}
		}
		return fd, nil
	}
}

// closeFD closes fd. close(2) can report deferred write errors (NFS), so
// its error counts; it is never retried: Linux releases the descriptor
// even when close returns EINTR.
func closeFD(fd int, path string) error {
	if err := unix.Close(fd); err != nil {
		return &os.PathError{Op: "close", Path: path, Err: err}
	}
	return nil
}

// fsyncFD calls fsync(2) on fd, retrying EINTR as os.File.Sync does.
func fsyncFD(fd int, path string) error {
	for {
		err := unix.Fsync(fd)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return &os.PathError{Op: "sync", Path: path, Err: err}
		}
		return nil
	}
}

// fdSyncer is a Syncer of this package, which syncs a file by its
// descriptor. Other Syncers (the tests') get an *os.File (finishFile).
type fdSyncer interface {
	syncFD(fd int, path string) error
}

// finishFile ends the life of the file fd, named path, that a writer
// created: unless err (the writing's outcome) is set, it syncs it with
// sync; it always closes it. It returns the first error.
func finishFile(sync Syncer, fd int, path string, err error) error {
	if fs, ok := sync.(fdSyncer); ok {
		if err == nil {
			err = fs.syncFD(fd, path)
		}
		if cerr := closeFD(fd, path); err == nil {
			err = cerr
		}
		return err
	}
	// The *os.File owns fd from here on: its Close closes it.
	f := os.NewFile(uintptr(fd), path)
	if err == nil {
		err = sync.SyncFile(f)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// openFile is os.OpenFile for a regular file, without the poller:
// os.NewFile on a descriptor in blocking mode costs one fcntl. The spill
// path keeps its file open as an *os.File across chunks.
func openFile(path string) (*os.File, error) {
	fd, err := createExcl(path)
	if err != nil {
		return nil, err
	}
	return os.NewFile(uintptr(fd), path), nil
}
