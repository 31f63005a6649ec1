package spool

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
	"github.com/valyala/bytebufferpool"
	"golang.org/x/sys/unix"
)

// Defaults for Config.
const (
	DefaultWorkers     = 4
	DefaultQueueLength = 256
)

// freeSpaceInterval is how often the background goroutine measures the free
// space under Root.
const freeSpaceInterval = 5 * time.Second

// Message is one accepted message handed to the spool: where it goes, the
// trace fields to put in front of it and its body. The server fills it on
// the event loop; after Submit only the spool touches it, and neither the
// slices nor what they point to may change.
type Message struct {
	// ID is the queue id, for logs.
	ID string
	// Mailboxes are the Maildirs to deliver to, in order (the first gets
	// the file, the others hard links). Each must be Valid, or the message
	// fails; one listed twice is delivered once.
	Mailboxes []Mailbox
	// Folder, when set, delivers into that Maildir++ folder of every
	// mailbox (Mailbox.Folder), e.g. "Junk". For a spilled message it is
	// read at Submit: the file, written into the first mailbox's tmp/ as
	// it arrived, is moved into the folder at the end.
	Folder string
	// Headers are more header fields, written after Trace under the same
	// rules (a check's verdict: Authentication-Results, spam headers).
	// For a spilled message they are read at Submit: the file is written
	// anew with them (a copy of what is on disk, copy_file_range).
	Headers []byte
	// Cut are byte ranges [start, end) of the body to leave out of the
	// file, sorted and disjoint: a check's edit (header fields it removes
	// or replaces). Offsets are into the whole body: Body for a message in
	// memory; for a spilled one, every chunk written followed by Body. Each
	// range should be whole header fields, continuation lines included.
	// Ranges that are not sorted, disjoint and within the body fail the
	// message (a temporary failure). For a spilled message they are read
	// at Submit, like Headers.
	Cut [][2]int64
	// Trace is the header fields to prepend (Return-Path and Received, RFC
	// 5321 4.4), LF-terminated, written as they are. The spool checks only
	// that they stay fields of their own (no empty line, a final LF); it
	// never builds one. Empty prepends nothing.
	Trace []byte
	// DropField, when set, is asked about each header field of the body
	// (the whole field, name to its last LF, continuation lines included)
	// and the fields it reports true for are left out of the file, as the
	// client's Return-Path fields are (a check's rule: forged
	// Authentication-Results). It runs on a worker and must be safe for
	// concurrent use. For a spilled message it is the one given to
	// NewSpill, applied to the first chunk under the same rules as
	// Return-Path (see spill.go).
	DropField func(field []byte) bool
	// Body is the message as received, with LF line endings and without
	// trace fields. Submit takes ownership and returns it with
	// bytebufferpool.Put when done, whatever the outcome (even when Submit
	// itself fails). Deliver only borrows it.
	Body *bytebufferpool.ByteBuffer
	// Spill, when set, holds the body written so far (NewSpill, spill.go):
	// Body is then only the tail, appended after every chunk, and the ID,
	// Mailboxes and Trace given to NewSpill are used, not this message's.
	Spill *Spill
}

// Config configures a Spool.
type Config struct {
	// Root is the Maildir root (maildir_root); mailboxes live in
	// <Root>/<domain>/<user>/. New creates it if missing.
	Root string
	// Hostname goes into Maildir file names.
	Hostname string
	// Workers is the number of delivery goroutines; 0 means DefaultWorkers.
	Workers int
	// QueueLength bounds the messages waiting for a worker; 0 means
	// DefaultQueueLength.
	QueueLength int
	// Syncer makes deliveries durable; nil means FsyncSyncer{}.
	Syncer Syncer
	// GroupCommit, with a nil Syncer or FsyncSyncer, makes deliveries
	// durable in batches with syncfs (GroupSyncer, commit.go) where the
	// kernel allows it, and per file otherwise.
	GroupCommit bool
	// Mailboxes are the configured mailboxes: New creates their Maildirs
	// and removes stale files from their tmp/. Each must be Valid.
	// Mailboxes configured later (a reload) are created on first delivery.
	Mailboxes []Mailbox
	// Log receives delivery errors, each with the message id. The zero
	// Logger discards everything.
	Log zerolog.Logger
}

// Spool delivers messages into Maildirs through a fixed pool of workers.
// Its methods are safe for concurrent use.
type Spool struct {
	root     string // absolute, clean
	nameHost string // validated hostname, escaped for Maildir file names
	pid      int
	syncer   Syncer
	log      zerolog.Logger

	free atomic.Int64 // bytes available under root, -1 if unknown
	// ready maps a Maildir path to a bool once ensureMaildir has made it
	// durable: true if its tmp/ or new/ is on another file system than
	// root (a mount point, or a symlink to elsewhere), which group commit's
	// syncfs on root does not flush. Set and read by workers.
	ready   sync.Map
	rootDev uint64                            // st_dev of root
	devOf   func(path string) (uint64, error) // st_dev of path, following symlinks
	lock    *os.File                          // <root>/.nanomx.lock, flock'd for the spool's life

	// mu guards closed and sends on queue: Submit holds it shared, so
	// Close cannot close the channel under a send.
	mu      sync.RWMutex
	closed  bool
	queue   chan job
	workers sync.WaitGroup
	stop    chan struct{} // closed by Close to end the free-space refresher
	refresh sync.WaitGroup

	// Spill run queue (spill.go): spills with work, each at most once;
	// pushed under mu shared with the spool open, served by the workers.
	spillMu   sync.Mutex
	spills    []*Spill
	spillWake chan struct{} // a token per wake-up; capacity Workers

	// Group commit (commit.go): batch is the Syncer when it batches;
	// workers send prepared messages on commitQ to the committer.
	batch       BatchSyncer
	closeSyncer func() error // releases a GroupSyncer New opened
	groupBroken atomic.Bool
	// flushed counts the flushes (SyncAll calls) that have returned;
	// failedFlush is the number of the first that failed, 0 if none, and
	// flushErr its error. The committer writes them; workers read flushed
	// (flushEpoch). flushErr is the committer's alone.
	flushed     atomic.Uint64
	failedFlush atomic.Uint64
	flushErr    error
	commitQ     chan prepared
	commitDone  sync.WaitGroup
	commits     commitStats

	// Test seams, set before any delivery starts; production uses the real
	// system calls.
	write   func(fd int, path string, segs [][]byte) error
	link    func(oldpath, newpath string) error
	rename  func(oldpath, newpath string) error
	release func(*bytebufferpool.ByteBuffer)
}

// job is one submitted message and its completion callback.
type job struct {
	m    *Message
	done func(error)
	// scratch, set by FinishSpill, takes the finished file of a spill
	// instead of its publication (scratch.go).
	scratch func(path string, err error)
}

// New checks cfg, creates Root if missing (mode 0700), locks it against a
// second nanomx (ErrLocked), creates the Maildir of every configured
// mailbox, removes stale files from their tmp/ folders, measures the free
// space and starts the workers and the free-space refresher. Configuration
// errors are *ConfigError; a Maildir that cannot be created or written is
// an error naming its path.
func New(cfg Config) (*Spool, error) {
	host := normalize(cfg.Hostname)
	if !ValidDomain(host) {
		return nil, configErr("hostname", "%q is not a valid host name", cfg.Hostname)
	}
	if cfg.Workers < 0 {
		return nil, configErr("workers", "must not be negative")
	}
	if cfg.QueueLength < 0 {
		return nil, configErr("queue_length", "must not be negative")
	}
	if cfg.Root == "" {
		return nil, configErr("maildir_root", "must not be empty")
	}
	root, err := filepath.Abs(cfg.Root)
	if err != nil {
		return nil, &ConfigError{Key: "maildir_root", Err: err}
	}
	for _, box := range cfg.Mailboxes {
		if !box.Valid() {
			return nil, configErr("mailboxes", "%q is not a valid mailbox name (a lowercase domain, a user of [a-z0-9._-])", box)
		}
	}
	s := &Spool{
		root:     root,
		nameHost: escapeNameHost(host),
		pid:      os.Getpid(),
		syncer:   cfg.Syncer,
		log:      cfg.Log,
		stop:     make(chan struct{}),
		write:    writeSegments,
		link:     os.Link,
		rename:   renameNoReplace,
		release:  bytebufferpool.Put,
		devOf:    devOf,
	}
	if s.syncer == nil {
		s.syncer = FsyncSyncer{}
	}

	switch fi, err := os.Stat(root); {
	case errors.Is(err, fs.ErrNotExist):
		if err := s.mkdirSynced(root); err != nil {
			return nil, &ConfigError{Key: "maildir_root", Err: err}
		}
	case err != nil:
		return nil, &ConfigError{Key: "maildir_root", Err: err}
	case !fi.IsDir():
		return nil, configErr("maildir_root", "%s is not a directory", root)
	}
	if s.rootDev, err = s.devOf(root); err != nil {
		return nil, &ConfigError{Key: "maildir_root", Err: err}
	}
	// Lock before touching anything under root: a second instance must not
	// clean the tmp/ files the running one is about to publish.
	if s.lock, err = lockRoot(root, s.pid); err != nil {
		return nil, err
	}
	if err := s.makeMaildirs(cfg.Mailboxes); err != nil {
		s.lock.Close()
		return nil, err
	}
	if _, plain := s.syncer.(FsyncSyncer); plain && cfg.GroupCommit {
		g, err := NewGroupSyncer(root)
		if err != nil {
			s.log.Warn().Err(err).Msg("group commit unavailable; using per-file fsync")
		} else {
			s.syncer, s.closeSyncer = g, g.Close
		}
	}
	mode := "per-file fsync"
	switch s.syncer.(type) {
	case NoSync:
		mode = "none (benchmark only: a crash loses acknowledged mail)"
	case BatchSyncer:
		mode = "group commit (syncfs)"
	}
	s.log.Info().Str("durability", mode).Str("root", root).Msg("spool ready")
	s.cleanTmp(cfg.Mailboxes, time.Now())
	s.refreshFree()

	workers, qlen := cfg.Workers, cfg.QueueLength
	if workers == 0 {
		workers = DefaultWorkers
	}
	if qlen == 0 {
		qlen = DefaultQueueLength
	}
	s.queue = make(chan job, qlen)
	s.spillWake = make(chan struct{}, workers)
	if bs, ok := s.syncer.(BatchSyncer); ok {
		s.batch = bs
		s.commitQ = make(chan prepared, qlen)
		s.commitDone.Add(1)
		go s.committer()
	}
	s.workers.Add(workers)
	for range workers {
		go s.worker()
	}
	s.refresh.Add(1)
	go s.refresher()
	return s, nil
}

// Submit hands m to a worker without blocking. The spool owns m and m.Body
// from the call on, whatever the result. It returns ErrQueueFull when the
// queue is full and ErrClosed after Close; the body is then released at once
// and done is never called. Otherwise done (if not nil) is called exactly
// once, on a worker goroutine, with nil only once the message is durable in
// every mailbox, after the body has been released. A message with a Spill
// takes no queue slot (its work is on the spill run queue, spill.go) and
// fails only after Close, or if the spill was submitted or aborted before;
// a failed Submit aborts the spill.
func (s *Spool) Submit(m *Message, done func(error)) error {
	if m == nil {
		return errors.New("spool: nil message")
	}
	if m.Spill != nil {
		return s.submitSpill(m, done)
	}
	err := s.enqueue(job{m: m, done: done})
	if err != nil {
		s.releaseBody(m)
	}
	return err
}

func (s *Spool) enqueue(j job) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return ErrClosed
	}
	select {
	case s.queue <- j:
		return nil
	default:
		return ErrQueueFull
	}
}

// releaseBody returns m.Body to the pool; m must not refer to it after.
func (s *Spool) releaseBody(m *Message) {
	if m.Body != nil {
		s.release(m.Body)
		m.Body = nil
	}
}

// worker serves the message queue and the spill run queue. Once Close has
// closed the queue no spill can be queued any more (both are guarded by
// mu), so the worker runs every spill still waiting and exits: Close waits
// for submitted spills too.
func (s *Spool) worker() {
	defer s.workers.Done()
	for {
		select {
		case j, ok := <-s.queue:
			if !ok {
				for sp := s.popSpill(); sp != nil; sp = s.popSpill() {
					sp.run()
				}
				return
			}
			s.runJob(j)
		case <-s.spillWake:
			if sp := s.popSpill(); sp != nil {
				sp.run()
			}
		}
	}
}

func (s *Spool) runJob(j job) {
	if s.grouped() {
		p, done, err := s.prepareGrouped(j)
		s.releaseBody(j.m) // written to tmp/: the bytes are no longer needed
		if done {
			if j.done != nil {
				s.callDone(j, err)
			}
			return
		}
		s.commitQ <- p
		return
	}
	err := s.deliverRecovered(j.m)
	s.releaseBody(j.m)
	if j.done != nil {
		s.callDone(j, err)
	}
}

// deliverRecovered is Deliver turning a panic into an error, so that one bad
// message can neither kill a worker nor lose its done call.
func (s *Spool) deliverRecovered(m *Message) (err error) {
	defer func() {
		if p := recover(); p != nil {
			s.log.Error().Str("id", m.ID).Interface("panic", p).Bytes("stack", debug.Stack()).Msg("delivery panicked")
			err = fmt.Errorf("spool: delivery panicked: %v", p)
		}
	}()
	return s.Deliver(m)
}

// callDone runs the server's callback; a panic there is logged, not retried.
func (s *Spool) callDone(j job, err error) {
	defer func() {
		if p := recover(); p != nil {
			s.log.Error().Str("id", j.m.ID).Interface("panic", p).Bytes("stack", debug.Stack()).Msg("done callback panicked")
		}
	}()
	j.done(err)
}

// Close stops accepting messages, waits until the queued and in-flight
// deliveries have finished and their done callbacks have returned, and stops
// the background goroutines. Later calls return nil at once. Submitted
// spills are finished too. A spill not yet submitted is left as it is; as
// no worker is left, its later Writes and its Abort (Submit now fails) run
// on a goroutine of their own.
func (s *Spool) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	close(s.queue)
	s.mu.Unlock()

	s.workers.Wait()
	if s.commitQ != nil {
		close(s.commitQ)
		s.commitDone.Wait()
	}
	close(s.stop)
	s.refresh.Wait()
	var err error
	if s.closeSyncer != nil {
		err = s.closeSyncer()
	}
	// Last: nothing of ours is in flight any more, so another nanomx may
	// start and clean tmp/.
	if cerr := s.lock.Close(); err == nil {
		err = cerr
	}
	return err
}

// FreeBytes returns the space available to unprivileged writers on the
// Maildir file system as last measured, or -1 if unknown. A background
// goroutine refreshes it every few seconds, so FreeBytes is a single atomic
// load, fit for the event loop (RFC 1870 SIZE checks).
func (s *Spool) FreeBytes() int64 { return s.free.Load() }

func (s *Spool) refresher() {
	defer s.refresh.Done()
	t := time.NewTicker(freeSpaceInterval)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			s.refreshFree()
		}
	}
}

func (s *Spool) refreshFree() {
	var st unix.Statfs_t
	if err := unix.Statfs(s.root, &st); err != nil {
		s.free.Store(-1)
		return
	}
	s.free.Store(int64(st.Bavail) * int64(st.Bsize))
}

// staleTmpAge is how long a foreign file may sit in tmp/ before it is
// removed (the Maildir specification's 36 hours).
const staleTmpAge = 36 * time.Hour

// cleanTmp removes what earlier runs left in tmp/ of every mailbox in boxes:
// every file of ours (none of them was acknowledged: we answer only after
// the rename into new/ is durable, so the client will retry), and any other
// file neither read nor written for 36 hours. Recent foreign files stay:
// Dovecot and others deliver through tmp/ too. Failures are only logged.
func (s *Spool) cleanTmp(boxes []Mailbox, now time.Time) {
	var tmps []string
	for _, box := range boxes {
		tmps = append(tmps, filepath.Join(box.Path(s.root), "tmp"))
		// Its Maildir++ folders (<user>/.<Folder>/tmp) too: a check's
		// verdict may deliver there (Mailbox.Folder).
		if more, err := filepath.Glob(filepath.Join(box.Path(s.root), ".*", "tmp")); err == nil {
			tmps = append(tmps, more...)
		}
	}
	for _, tmp := range tmps {
		entries, err := os.ReadDir(tmp)
		if err != nil {
			if !errors.Is(err, fs.ErrNotExist) {
				s.log.Warn().Err(err).Str("dir", tmp).Msg("cannot scan tmp for stale files")
			}
			continue
		}
		for _, e := range entries {
			if !e.Type().IsRegular() {
				continue
			}
			name := e.Name()
			if !strings.Contains(name, nameMarker) && !olderThan(filepath.Join(tmp, name), now.Add(-staleTmpAge)) {
				continue
			}
			if err := os.Remove(filepath.Join(tmp, name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
				s.log.Warn().Err(err).Str("file", filepath.Join(tmp, name)).Msg("cannot remove stale tmp file")
			}
		}
	}
}

// ErrLocked means another process, normally a running nanomx, holds the
// lock on maildir_root. New wraps it with the root and the holder's pid:
// "/var/mail: locked by another nanomx (pid 1234)".
var ErrLocked = errors.New("locked by another nanomx")

// lockName is the lock file in the Maildir root. No domain folder can be
// called that (domain names do not start with a dot).
const lockName = ".nanomx.lock"

// lockRoot takes an exclusive flock(2) on <root>/.nanomx.lock (mode 0600)
// without waiting and writes pid into it. The lock lasts as long as the
// returned file stays open, and dies with the process, so a crash leaves
// nothing to clean up. The file itself stays: removing it would let a
// third process lock a new file while a second still holds the old one.
func lockRoot(root string, pid int) (*os.File, error) {
	path := filepath.Join(root, lockName)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|unix.O_NOFOLLOW, 0o600)
	if err != nil {
		return nil, err
	}
	fd := int(f.Fd())
	for {
		err = unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB)
		if err != unix.EINTR {
			break
		}
	}
	if err == unix.EWOULDBLOCK {
		holder := lockHolder(f)
		f.Close()
		return nil, fmt.Errorf("%s: %w (pid %s)", root, ErrLocked, holder)
	}
	if err == nil {
		err = f.Truncate(0)
	}
	if err == nil {
		_, err = f.WriteAt([]byte(strconv.Itoa(pid)+"\n"), 0)
	}
	if err != nil {
		f.Close()
		return nil, &os.PathError{Op: "lock", Path: path, Err: err}
	}
	return f, nil
}

// lockHolder reads the pid the holder of the lock wrote, or "unknown".
func lockHolder(f *os.File) string {
	var b [24]byte
	n, _ := f.ReadAt(b[:], 0)
	pid := strings.TrimSpace(string(b[:n]))
	if pid == "" || strings.Trim(pid, "0123456789") != "" {
		return "unknown"
	}
	return pid
}

// makeMaildirs creates the Maildir of every mailbox in boxes (without syncing:
// the first delivery's ensureMaildir does) and checks that its folders are
// directories nanomx may write to, so that a domain folder it cannot
// create is a start-up error rather than a 4xx for every message.
// Mailboxes configured later are created on first delivery.
func (s *Spool) makeMaildirs(boxes []Mailbox) error {
	for _, box := range boxes {
		dir := box.Path(s.root)
		err := makeMaildir(dir)
		for _, sub := range [...]string{"tmp", "new", "cur"} {
			if err != nil {
				break
			}
			path := filepath.Join(dir, sub)
			switch fi, serr := os.Stat(path); {
			case serr != nil:
				err = serr
			case !fi.IsDir():
				err = fmt.Errorf("%s is not a directory", path)
			case sub != "cur":
				// Probed as the effective user; root passes unless the file
				// system is read-only.
				if aerr := unix.Faccessat(unix.AT_FDCWD, path, unix.W_OK|unix.X_OK, unix.AT_EACCESS); aerr != nil {
					err = &os.PathError{Op: "access", Path: path, Err: aerr}
				}
			}
		}
		if err != nil {
			return fmt.Errorf("mailbox %s: cannot create its Maildir: %w", box, err)
		}
	}
	return nil
}

// devOf returns the st_dev of path, following symlinks.
func devOf(path string) (uint64, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return 0, &os.PathError{Op: "stat", Path: path, Err: err}
	}
	return uint64(st.Dev), nil
}
