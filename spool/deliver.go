package spool

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"
)

// nameMarker sits in every Maildir file name nanomx makes, so that start-up
// can tell its own leftovers in tmp/ from other deliverers' files.
const nameMarker = "_nanomx."

// nameCounter makes unique names unique within the process: the Q<n> part
// (cr.yp.to/proto/maildir.html).
var nameCounter atomic.Uint64

// uniqueName returns the Maildir file name
//
//	<sec>.M<usec>P<pid>Q<n>_nanomx.<host>,S=<size>
//
// host must already be escaped (escapeNameHost). Dovecot reads the message
// size from S= without looking at the file, so size must be exact.
func uniqueName(now time.Time, pid int, n uint64, host string, size int64) string {
	// On the stack unless the host is unusually long: the string is the
	// only allocation.
	var buf [192]byte
	b := buf[:0]
	b = strconv.AppendInt(b, now.Unix(), 10)
	b = append(b, ".M"...)
	b = strconv.AppendInt(b, int64(now.Nanosecond()/1000), 10)
	b = append(b, 'P')
	b = strconv.AppendInt(b, int64(pid), 10)
	b = append(b, 'Q')
	b = strconv.AppendUint(b, n, 10)
	b = append(b, nameMarker...)
	b = append(b, host...)
	b = append(b, ",S="...)
	b = strconv.AppendInt(b, size, 10)
	return string(b)
}

// escapeNameHost makes a host name safe inside a Maildir file name: '/'
// becomes \057 and ':' \072 as the Maildir specification asks, and ',' and
// '\' (Dovecot's field separator and our escape), as well as anything
// outside printable ASCII, are escaped the same way. At most 100 bytes of
// the host are used, keeping names well under NAME_MAX.
func escapeNameHost(host string) string {
	host = host[:min(len(host), 100)]
	b := make([]byte, 0, len(host))
	for i := 0; i < len(host); i++ {
		c := host[i]
		switch {
		case c == '/' || c == ':' || c == ',' || c == '\\' || c < 0x21 || c > 0x7e:
			b = append(b, '\\', '0'+c>>6, '0'+c>>3&7, '0'+c&7)
		default:
			b = append(b, c)
		}
	}
	return string(b)
}

// Deliver stores m in every mailbox of m.Mailboxes, on the caller's
// goroutine (the workers call it; so may tests). It returns nil only once
// the message is durable everywhere. Deliver borrows m.Body and does not
// release it.
//
// Errors: ErrMailLoop, ErrNoSpace (wrapped) when the disk or a quota is
// full; anything else (an invalid mailbox or trace among them) is a
// temporary failure.
func (s *Spool) Deliver(m *Message) error {
	if m != nil && m.Spill != nil {
		return errors.New("spool: Deliver cannot take a spilled message; Submit it")
	}
	d, err := s.build(m, s.syncer)
	if err != nil {
		return err
	}
	published, err := d.run()
	return d.finish(published, err)
}

// build checks m's mailboxes and lays out its file, ready for prepare.
// Files and tmp/ entries are made durable through sync.
func (s *Spool) build(m *Message, sync Syncer) (*delivery, error) {
	if m == nil {
		return nil, errors.New("spool: nil message")
	}
	dirs, err := s.maildirs(inFolder(m.Mailboxes, m.Folder))
	if err != nil {
		return nil, err
	}
	// The file is written with one writev.
	segs, err := segments(m)
	if err != nil {
		return nil, err
	}
	var size int64
	for _, seg := range segs {
		size += int64(len(seg))
	}
	return &delivery{s: s, id: m.ID, sync: sync, segs: segs, size: size, dirs: dirs}, nil
}

// maildirs returns the Maildir of each mailbox in boxes, in order, each
// once. A mailbox that is not Valid fails the message: its names would
// become paths.
// inFolder returns boxes with their Folder set to folder, or boxes as
// they are when folder is "".
func inFolder(boxes []Mailbox, folder string) []Mailbox {
	if folder == "" {
		return boxes
	}
	out := make([]Mailbox, len(boxes))
	for i, b := range boxes {
		b.Folder = folder
		out[i] = b
	}
	return out
}

func (s *Spool) maildirs(boxes []Mailbox) ([]string, error) {
	if len(boxes) == 0 {
		return nil, errNoMailboxes
	}
	dirs := make([]string, 0, len(boxes))
	var seen map[Mailbox]struct{} // past a few mailboxes; below, a scan
	for i, b := range boxes {
		if !b.Valid() {
			return nil, fmt.Errorf("spool: %q is not a valid mailbox", b)
		}
		if seen == nil && i >= 8 {
			seen = make(map[Mailbox]struct{}, len(boxes))
			for _, prev := range boxes[:i] {
				seen[prev] = struct{}{}
			}
		}
		if seen != nil {
			if _, dup := seen[b]; dup {
				continue
			}
			seen[b] = struct{}{}
		} else if slices.Contains(boxes[:i], b) {
			continue
		}
		dirs = append(dirs, b.Path(s.root))
	}
	return dirs, nil
}

// finish classifies and logs the outcome of a delivery.
func (d *delivery) finish(published int, err error) error {
	s := d.s
	if err != nil {
		if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
			err = fmt.Errorf("%w: message %s: %w", ErrNoSpace, d.id, err)
		} else {
			err = fmt.Errorf("spool: message %s: %w", d.id, err)
		}
		// After a partial publication the client's retry will duplicate the
		// message in the first mailboxes: say so.
		s.log.Error().Err(err).Str("id", d.id).Int("mailboxes", len(d.dirs)).Int("published", published).Msg("delivery failed")
		return err
	}
	s.log.Debug().Str("id", d.id).Int("mailboxes", len(d.dirs)).Int64("size", d.size).Str("file", d.name).Msg("delivered")
	return nil
}

// delivery is one message on its way into a set of Maildirs. Its paths
// are built by concatenation, not filepath.Join (whose Clean showed in
// the profile): every Maildir path is clean already (Mailbox.Path) and a
// file name is one element without '/' (uniqueName).
type delivery struct {
	s    *Spool
	id   string
	sync Syncer   // file and tmp/ syncs: the spool's, or none under group commit
	segs [][]byte // the file's bytes
	size int64
	dirs []string // Maildir of each mailbox; dirs[0] gets the real write
	name string   // the file's name, the same in every tmp/ and new/
	tmp  []string // tmp/<name> files created so far, in dirs order

	// spilled: a Spill (spill.go) wrote tmp[0], under a name without ",S=",
	// before prepare; copies are made from that file, as segs is nil.
	spilled bool
}

// run performs the delivery:
//
//  1. write the file once into dirs[0]/tmp and SyncFile it;
//  2. hard-link it into every other tmp/ (or write a copy);
//  3. SyncDir every tmp/;
//  4. rename each into its new/;
//  5. SyncDir every new/.
//
// Until the first rename nothing is visible, and a failure removes every
// tmp file: all or nothing. A failure after a rename cannot be undone
// safely (an MUA may already have seen the message); the sender retries,
// and a duplicate beats a loss. published counts the mailboxes whose new/
// may hold the message.
func (d *delivery) run() (published int, err error) {
	if err := d.prepare(); err != nil {
		d.removeTmp(0)
		return 0, err
	}
	return d.publish(true)
}

// publish renames every tmp file into its new/ (step 4) and, with syncNew,
// syncs each new/ (step 5); group commit flushes instead.
func (d *delivery) publish(syncNew bool) (published int, err error) {
	s := d.s
	for i, dir := range d.dirs {
		newPath := dir + "/new/" + d.name
		err := s.rename(d.tmp[i], newPath)
		if errors.Is(err, fs.ErrNotExist) {
			// new/ was removed behind our back.
			if err = s.ensureMaildir(dir); err == nil {
				err = s.rename(d.tmp[i], newPath)
			}
		}
		if err != nil {
			d.removeTmp(i)
			if i > 0 {
				err = fmt.Errorf("after %d of %d mailboxes: %w", i, len(d.dirs), err)
			}
			return i, err
		}
	}
	if !syncNew {
		return len(d.dirs), nil
	}
	// Only this fsync makes the new names durable. Until it returns, a crash
	// could leave the file in tmp/, where start-up would delete it, so the
	// client must not have been told 250 yet.
	for _, dir := range d.dirs {
		if err := s.syncer.SyncDir(filepath.Join(dir, "new")); err != nil {
			return len(d.dirs), fmt.Errorf("after rename: %w", err)
		}
	}
	return len(d.dirs), nil
}

// prepare does steps 1-3: after it, a durable copy of the message sits in
// every mailbox's tmp/.
func (d *delivery) prepare() error {
	s := d.s
	segs, size := d.segs, d.size
	for _, dir := range d.dirs {
		if _, ok := s.ready.Load(dir); !ok {
			if err := s.ensureMaildir(dir); err != nil {
				return err
			}
		}
	}

	first := d.dirs[0]
	for attempt := 0; !d.spilled; attempt++ {
		d.name = uniqueName(time.Now(), s.pid, nameCounter.Add(1), s.nameHost, size)
		path := first + "/tmp/" + d.name
		err := s.writeFile(first, path, segs, d.sync)
		if errors.Is(err, fs.ErrExist) && attempt < 3 {
			continue // another process with our pid and host name; take the next counter
		}
		if err != nil {
			return err
		}
		d.tmp = append(d.tmp, path)
		break
	}

	// Hard links share the inode, whose data SyncFile already made durable;
	// only the new directory entries need syncing (step 3). Different file
	// systems (EXDEV), link limits (EMLINK) or file systems without links
	// get a copy instead.
	for _, dir := range d.dirs[1:] {
		path := dir + "/tmp/" + d.name
		err := s.link(d.tmp[0], path)
		if errors.Is(err, fs.ErrNotExist) {
			// tmp/ was removed behind our back; recreate it durably.
			if err := s.ensureMaildir(dir); err != nil {
				return err
			}
			err = s.link(d.tmp[0], path)
		}
		if err != nil {
			s.log.Debug().Err(err).Str("id", d.id).Msg("hard link failed; writing a copy")
			if d.spilled {
				err = s.copyFile(dir, path, d.tmp[0], d.sync)
			} else {
				err = s.writeFile(dir, path, segs, d.sync)
			}
			if err != nil {
				return err
			}
		}
		d.tmp = append(d.tmp, path)
	}

	if _, none := d.sync.(NoSync); none {
		return nil // group commit: the flush covers the entries
	}
	for _, dir := range d.dirs {
		if err := d.sync.SyncDir(dir + "/tmp"); err != nil {
			return err
		}
	}
	return nil
}

// removeTmp removes the tmp files from index i on; they were never
// published. Failures are logged: start-up cleanup gets another chance.
func (d *delivery) removeTmp(i int) {
	for _, path := range d.tmp[i:] {
		if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			d.s.log.Warn().Err(err).Str("id", d.id).Str("file", path).Msg("cannot remove tmp file")
		}
	}
}

// writeFile creates path (which must not exist) in Maildir box with mode
// 0600, writes segs, syncs it with sync and closes it. On failure it
// removes the file.
func (s *Spool) writeFile(box, path string, segs [][]byte, sync Syncer) error {
	fd, err := createExcl(path)
	if errors.Is(err, fs.ErrNotExist) {
		if err := s.ensureMaildir(box); err != nil {
			return err
		}
		fd, err = createExcl(path)
	}
	if err != nil {
		return err
	}
	err = finishFile(sync, fd, path, s.write(fd, path, segs))
	if err != nil {
		os.Remove(path)
	}
	return err
}

// ensureMaildir creates the Maildir box (<root>/<domain>/<user>) with
// tmp/, new/ and cur/, all mode 0700, and syncs root, domain and box
// directories so that every entry on the way is durable: fsync on new/
// covers the entries in new/, not new/ itself. It runs once per mailbox and
// process even when everything exists, because a crash or a failed sync may
// have left directories in place but not durable, and later only when a
// path turns out to be missing. A missing root is an error, not recreated:
// it may be an unmounted file system. It also notes whether the Maildir is
// on another file system than root (see Spool.ready).
func (s *Spool) ensureMaildir(box string) error {
	if err := makeMaildir(box); err != nil {
		return err
	}
	for _, dir := range [...]string{s.root, filepath.Dir(box), box} {
		if err := s.syncer.SyncDir(dir); err != nil {
			return err
		}
	}
	other := false
	for _, dir := range [...]string{box + "/tmp", box + "/new"} {
		dev, err := s.devOf(dir)
		if err != nil {
			return err
		}
		other = other || dev != s.rootDev
	}
	if _, known := s.ready.Swap(box, other); !known && other && s.batch != nil {
		s.log.Info().Str("maildir", box).Msg("mailbox is on another file system than maildir_root: its deliveries use per-file fsync")
	}
	return nil
}

// makeMaildir creates the missing folders of Maildir box, syncing nothing.
func makeMaildir(box string) error {
	domain := filepath.Dir(box)
	for _, dir := range [...]string{domain, box, box + "/tmp", box + "/new", box + "/cur"} {
		if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
			return err
		}
	}
	return nil
}

// onOtherFS reports whether any of the Maildirs dirs is on another file
// system than root, making each durable first (ensureMaildir) if it is not
// yet. Group commit's syncfs on root would leave such a delivery unsynced.
func (s *Spool) onOtherFS(dirs []string) (bool, error) {
	other := false
	for _, dir := range dirs {
		v, ok := s.ready.Load(dir)
		if !ok {
			if err := s.ensureMaildir(dir); err != nil {
				return false, err
			}
			v, _ = s.ready.Load(dir)
		}
		if o, _ := v.(bool); o {
			other = true
		}
	}
	return other, nil
}

// mkdirSynced creates dir and its missing parents with mode 0700, syncing
// the parent of each directory it makes. New uses it for the root.
func (s *Spool) mkdirSynced(dir string) error {
	err := os.Mkdir(dir, 0o700)
	if errors.Is(err, fs.ErrNotExist) {
		parent := filepath.Dir(dir)
		if parent == dir {
			return err
		}
		if err := s.mkdirSynced(parent); err != nil {
			return err
		}
		err = os.Mkdir(dir, 0o700)
	}
	if errors.Is(err, fs.ErrExist) {
		return nil
	}
	if err != nil {
		return err
	}
	return s.syncer.SyncDir(filepath.Dir(dir))
}
