package spool

import (
	"os"

	"golang.org/x/sys/unix"
)

// Syncer is the durability step of a delivery. It is an interface so that
// group commit (BatchSyncer) can batch it, and so that tests can inject
// failures and record the order of calls. Implementations must be safe for
// concurrent use by the workers.
type Syncer interface {
	// SyncFile makes f's data and size durable.
	SyncFile(f *os.File) error
	// SyncDir makes the entries created, renamed or linked in dir durable.
	SyncDir(dir string) error
}

// FsyncSyncer is the production Syncer: fsync(2) on the file, and fsync(2)
// on the directory opened O_RDONLY|O_DIRECTORY.
type FsyncSyncer struct{}

// SyncFile calls fsync on f.
func (FsyncSyncer) SyncFile(f *os.File) error { return f.Sync() }

func (FsyncSyncer) syncFD(fd int, path string) error { return fsyncFD(fd, path) }

// SyncDir opens dir and calls fsync on it (plain system calls: see fd.go).
func (FsyncSyncer) SyncDir(dir string) error {
	fd, err := openFD(dir, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		return err
	}
	err = fsyncFD(fd, dir)
	if cerr := closeFD(fd, dir); err == nil {
		err = cerr
	}
	return err
}

// NoSync skips every sync. A crash can then lose or truncate acknowledged
// mail: it exists for benchmarks only.
type NoSync struct{}

// SyncFile does nothing.
func (NoSync) SyncFile(*os.File) error { return nil }

func (NoSync) syncFD(int, string) error { return nil }

// SyncDir does nothing.
func (NoSync) SyncDir(string) error { return nil }
