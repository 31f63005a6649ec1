package bench

import (
	"bufio"
	"bytes"
	"cmp"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
)

// Verify is what -verify-maildir found: the markers of one run in the
// Maildirs under a folder, compared with the messages the server acked.
type Verify struct {
	Dir string `json:"dir"`
	// Files is the number of message files read (in new/ and cur/).
	Files int `json:"files"`
	// Acked is the number of messages acked with 250.
	Acked int `json:"acked"`
	// Present counts acked messages found in at least one Maildir.
	Present int `json:"acked_present"`
	// Lost counts acked messages found in no Maildir: mail the server
	// acknowledged and does not have.
	Lost int `json:"lost"`
	// Incomplete counts acked messages found in some of the Maildirs
	// they were sent to (Sent.Maildirs) but not in all.
	Incomplete int `json:"incomplete"`
	// Duplicates counts messages found more than once in one Maildir.
	Duplicates int `json:"duplicates"`
	// Unacked counts messages found that were never acked: stored, but the
	// 250 never reached the client (a dropped connection, a timeout). The
	// sender would retry them: harmless duplicates, not losses.
	// UnackedPartial counts those of them found in only some of their
	// Maildirs.
	Unacked        int `json:"present_unacked"`
	UnackedPartial int `json:"present_unacked_partial"`
	// Misplaced counts files of a message in a Maildir it was not sent
	// to; Unended, messages stored although their data never ended.
	Misplaced int `json:"misplaced"`
	Unended   int `json:"unended"`
	// Unknown counts, when the caller listed every message it sent, the
	// files holding no marker of the run or the marker of a message it
	// did not send.
	Unknown int `json:"unknown"`
	// Bytes is the size of the files holding this run's messages.
	Bytes int64 `json:"bytes"`
	// SizeChecked counts the files of messages whose stored size was
	// compared with what was sent: from the bench's first header line
	// (the server's trace fields come before it) to the end, with LF
	// line endings, it must be as long as the message sent. SizeMismatch
	// counts those that were not: a truncated or padded message.
	SizeChecked  int `json:"size_checked"`
	SizeMismatch int `json:"size_mismatch"`
	// SumChecked counts the files whose content, over the same span, was
	// compared with the SHA-256 of what was sent; SumMismatch those that
	// differ: a message stored with other bytes, or cut.
	SumChecked  int `json:"sum_checked"`
	SumMismatch int `json:"sum_mismatch"`
	// NameSizeChecked counts the files whose name carries the Maildir++
	// size, ",S=<bytes>"; NameSizeMismatch those where it is not the
	// file's size: a partial file, or a name that lies.
	NameSizeChecked  int `json:"name_size_checked"`
	NameSizeMismatch int `json:"name_size_mismatch"`
	// The first few markers of each problem, for a closer look.
	LostMarkers      []string `json:"lost_markers,omitempty"`
	DuplicateMarkers []string `json:"duplicate_markers,omitempty"`
	MismatchMarkers  []string `json:"size_mismatch_markers,omitempty"`
	// Problems describes the first problems of every kind, one a line.
	Problems []string `json:"problems,omitempty"`
}

// OK reports whether nothing acked was lost or stored incompletely, and
// nothing was stored twice, cut, altered, misplaced, before its end of
// data, or unknown.
func (v *Verify) OK() bool {
	return v.Lost+v.Incomplete+v.Duplicates+v.SizeMismatch+v.SumMismatch+v.NameSizeMismatch+
		v.Misplaced+v.Unended+v.Unknown == 0
}

// Sent is what a client knows of one message it sent, for VerifyMaildir.
type Sent struct {
	Seq int64 // its marker is Marker(runID, Seq)
	// Acked is set when its end of data was answered 250: it must be
	// stored. Unended is set when its data never ended: it must not.
	Acked, Unended bool
	// Maildirs, if not empty, are the Maildirs it was sent to, as paths
	// relative to the folder verified ("example.test/alice"): an acked
	// message must be in each, and no copy may be in another.
	Maildirs []string
	// Size, if not 0, is the length the message must have as stored, from
	// its Message-ID line (see VerifyMaildir) to the end of the file, with
	// LF line ends; Sum, if not zero, the SHA-256 of those bytes.
	Size int64
	Sum  [sha256.Size]byte
}

// maxListed bounds the markers listed per problem; maxProblems the lines
// of Verify.Problems.
const (
	maxListed   = 20
	maxProblems = 30
)

// VerifyMaildir looks for the messages of run runID under dir: every file
// in a folder named new or cur, at any depth, so dir may be one Maildir, a
// domain's folder or maildir_root. A message is known by its header:
// "X-Nanomx-Bench: <runID>-<seq>" (MarkerHeader), and the stored message
// begins at the line "Message-ID: <<runID>-<seq>@...>", which comes first;
// the server's trace fields are before it. Each file is checked against
// sent, by seq:
//
//   - an acked message must be in each of its Maildirs, and is LOST when
//     it is in none;
//   - a message is DUPLICATE when it is in two files of one Maildir (a
//     message sent to several mailboxes is in each once);
//   - a file's size from the Message-ID line, its SHA-256, and the size
//     its name gives (",S=") must be right;
//   - a message whose data never ended must not be stored at all.
//
// With all set, sent lists every message of the run, and a file that holds
// no marker of the run, or the marker of a message not in sent, is
// unknown; otherwise such files are left alone (other mail), and messages
// of the run not in sent count as unacked.
func VerifyMaildir(dir, runID string, sent []Sent, all bool) (*Verify, error) {
	var files []string
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if path == dir && errors.Is(err, fs.ErrNotExist) {
				// A server that stored nothing may not have made the
				// Maildir yet: nothing there, every acked message lost.
				return filepath.SkipAll
			}
			return err
		}
		if d.Type().IsRegular() {
			if p := filepath.Base(filepath.Dir(path)); p == "new" || p == "cur" {
				files = append(files, path)
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	bySeq := make(map[int64]*Sent, len(sent))
	for i := range sent {
		bySeq[sent[i].Seq] = &sent[i]
	}

	// Read the files in parallel, then judge them in order.
	marks := make([]fileMarks, len(files))
	var (
		next    int
		mu      sync.Mutex
		wg      sync.WaitGroup
		readErr error
	)
	prefix := []byte(runID + "-")
	for range min(runtime.GOMAXPROCS(0)*2, max(len(files), 1)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				mu.Lock()
				i := next
				next++
				mu.Unlock()
				if i >= len(files) {
					return
				}
				fm, err := fileMarkers(files[i], prefix, bySeq)
				if err != nil {
					mu.Lock()
					readErr = cmp.Or(readErr, err)
					mu.Unlock()
				}
				marks[i] = fm
			}
		}()
	}
	wg.Wait()
	if readErr != nil {
		return nil, readErr
	}

	v := &Verify{Dir: dir, Files: len(files)}
	problem := func(format string, args ...any) {
		if len(v.Problems) < maxProblems {
			v.Problems = append(v.Problems, fmt.Sprintf(format, args...))
		}
	}
	type key struct {
		maildir string
		seq     int64
	}
	seen := make(map[key]int)
	found := make(map[int64][]string) // seq → the Maildirs holding it
	var mismatch []int64
	for i, fm := range marks {
		if fm.gone {
			continue
		}
		rel, _ := filepath.Rel(dir, files[i])
		maildir := filepath.Dir(filepath.Dir(rel))
		if len(fm.seqs) == 0 && !all {
			continue // other mail
		}
		if n, ok := nameSize(filepath.Base(files[i])); ok {
			v.NameSizeChecked++
			if n != fm.size {
				v.NameSizeMismatch++
				problem("%s: %d bytes, the name says S=%d (a partial file?)", rel, fm.size, n)
			}
		}
		if len(fm.seqs) == 0 {
			v.Unknown++
			problem("%s: no %s marker of run %s", rel, MarkerHeader, runID)
			continue
		}
		v.Bytes += fm.size
		for _, seq := range fm.seqs {
			k := key{maildir, seq}
			if seen[k] == 0 {
				found[seq] = append(found[seq], maildir)
			}
			seen[k]++
			s := bySeq[seq]
			if s == nil {
				if all {
					v.Unknown++
					problem("%s: %s, a message not sent", rel, Marker(runID, seq))
				}
				continue
			}
			if len(s.Maildirs) > 0 && !slices.Contains(s.Maildirs, maildir) {
				v.Misplaced++
				problem("%s: %s stored in %s, not one of %v", rel, Marker(runID, seq), maildir, s.Maildirs)
			}
			if s.Size != 0 {
				v.SizeChecked++
				if fm.start < 0 || fm.size-fm.start != s.Size {
					mismatch = append(mismatch, seq)
					problem("%s: %s is %d bytes from its Message-ID on, %d were sent (acked %v)",
						rel, Marker(runID, seq), fm.size-fm.start, s.Size, s.Acked)
				}
			}
			if s.Sum != ([sha256.Size]byte{}) {
				v.SumChecked++
				if !fm.summed || fm.sum != s.Sum {
					v.SumMismatch++
					problem("%s: %s differs from what was sent (SHA-256; acked %v)", rel, Marker(runID, seq), s.Acked)
				}
			}
		}
	}
	slices.Sort(mismatch)
	v.SizeMismatch = len(mismatch)
	for _, seq := range mismatch[:min(len(mismatch), maxListed)] {
		v.MismatchMarkers = append(v.MismatchMarkers, Marker(runID, seq))
	}

	var dups []key
	for k, n := range seen {
		if n > 1 {
			dups = append(dups, k)
		}
	}
	slices.SortFunc(dups, func(a, b key) int {
		return cmp.Or(cmp.Compare(a.seq, b.seq), strings.Compare(a.maildir, b.maildir))
	})
	v.Duplicates = len(dups)
	for i, k := range dups {
		if i < maxListed {
			v.DuplicateMarkers = append(v.DuplicateMarkers, Marker(runID, k.seq))
		}
		problem("%s stored %d times in %s", Marker(runID, k.seq), seen[k], k.maildir)
	}

	for i := range sent {
		s := &sent[i]
		in := found[s.Seq]
		missing := 0
		for _, md := range s.Maildirs {
			if !slices.Contains(in, md) {
				missing++
			}
		}
		switch {
		case s.Acked:
			v.Acked++
			switch {
			case len(in) == 0:
				v.Lost++
				if len(v.LostMarkers) < maxListed {
					v.LostMarkers = append(v.LostMarkers, Marker(runID, s.Seq))
				}
				problem("%s acked, and in no Maildir", Marker(runID, s.Seq))
			case missing > 0:
				v.Present++
				v.Incomplete++
				problem("%s acked, but missing from %d of %v (found in %v)", Marker(runID, s.Seq), missing, s.Maildirs, in)
			default:
				v.Present++
			}
		case len(in) > 0:
			v.Unacked++
			if missing > 0 {
				v.UnackedPartial++
			}
		}
		if s.Unended && len(in) > 0 {
			v.Unended++
			problem("%s stored although its data never ended", Marker(runID, s.Seq))
		}
	}
	if !all {
		for seq := range found {
			if bySeq[seq] == nil {
				v.Unacked++
			}
		}
	}
	return v, nil
}

// nameSize parses the ",S=<size>" of a Maildir++ file name.
func nameSize(name string) (int64, bool) {
	i := strings.Index(name, ",S=")
	if i < 0 {
		return 0, false
	}
	s := name[i+3:]
	if j := strings.IndexAny(s, ",:"); j >= 0 {
		s = s[:j]
	}
	n, err := strconv.ParseInt(s, 10, 64)
	return n, err == nil
}

// fileMarks is what fileMarkers found in one message file.
type fileMarks struct {
	seqs []int64
	// start is the offset of the bench's first header line (Message-ID
	// with a marker of the run), -1 if there is none; size is the file's.
	start, size int64
	// sum is the SHA-256 from start to the end, when summed.
	sum    [sha256.Size]byte
	summed bool
	// gone is set when the file went away (moved to cur/ meanwhile).
	gone bool
}

// fileMarkers returns the seqs of the markers with prefix in the header of
// the message file at path, and where the bench's header starts; when one
// of them has a Sum in bySeq, it hashes the message from there. Maildir
// files end lines in LF; CRLF is accepted too.
func fileMarkers(path string, prefix []byte, bySeq map[int64]*Sent) (fileMarks, error) {
	fm := fileMarks{start: -1}
	f, err := os.Open(path)
	if err != nil {
		if os.IsNotExist(err) {
			fm.gone = true
			return fm, nil
		}
		return fm, err
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil {
		fm.size = st.Size()
	}
	readHeader(bufio.NewReaderSize(f, 8192), prefix, &fm)
	want := false
	for _, seq := range fm.seqs {
		if s := bySeq[seq]; s != nil && s.Sum != ([sha256.Size]byte{}) {
			want = true
		}
	}
	if want && fm.start >= 0 {
		h := sha256.New()
		if _, err := f.Seek(fm.start, io.SeekStart); err != nil {
			return fm, err
		}
		if _, err := io.Copy(h, f); err != nil {
			return fm, err
		}
		h.Sum(fm.sum[:0])
		fm.summed = true
	}
	return fm, nil
}

// readHeader reads the header of a message file into fm: its markers with
// prefix, and the offset of the Message-ID line with one.
func readHeader(br *bufio.Reader, prefix []byte, fm *fileMarks) {
	name := []byte(MarkerHeader + ":")
	msgID := append([]byte("Message-ID: <"), prefix...)
	var off int64
	for {
		line, err := br.ReadSlice('\n')
		if len(bytes.TrimRight(line, "\r\n")) == 0 {
			return // end of the header (or of the file)
		}
		if fm.start < 0 && bytes.HasPrefix(line, msgID) {
			fm.start = off
		}
		off += int64(len(line))
		if len(line) > len(name) && bytes.EqualFold(line[:len(name)], name) {
			v := bytes.TrimSpace(line[len(name):])
			if rest, ok := bytes.CutPrefix(v, prefix); ok {
				if seq, err := strconv.ParseInt(string(rest), 10, 64); err == nil {
					fm.seqs = append(fm.seqs, seq)
				}
			}
		}
		if err != nil {
			if err == bufio.ErrBufferFull {
				// A header line longer than the buffer: skip the rest of it.
				for err == bufio.ErrBufferFull {
					line, err = br.ReadSlice('\n')
					off += int64(len(line))
				}
				if err == nil {
					continue
				}
			}
			return
		}
	}
}

// storedSize is the size a message sent as hdr, body and the end of data
// has in a Maildir from its first header line on: CRLF becomes LF, and
// the CRLF that starts the end of data ends the last line. Bodies are
// prefixes of a body pool, whose lines are lineLen+2 bytes.
func storedSize(hdr, body []byte) int64 {
	crlfs := bytes.Count(hdr, []byte("\r\n")) + len(body)/(lineLen+2) + 1
	return int64(len(hdr) + len(body) + 2 - crlfs)
}

// storedSum is the SHA-256 of the stored form of the message whose DATA
// form is parts, without the final ".\r\n" and dot-stuffing (the bench's
// bodies need none): every CRLF becomes LF.
func storedSum(parts ...[]byte) [sha256.Size]byte {
	h := sha256.New()
	cr := false // the last part ended in CR
	for _, p := range parts {
		if len(p) == 0 {
			continue
		}
		if cr && p[0] != '\n' {
			h.Write([]byte{'\r'})
		}
		cr = false
		for len(p) > 0 {
			i := bytes.IndexByte(p, '\r')
			if i < 0 {
				h.Write(p)
				break
			}
			h.Write(p[:i])
			if i+1 == len(p) {
				cr = true
				break
			}
			if p[i+1] != '\n' {
				h.Write(p[i : i+1])
			}
			p = p[i+1:]
		}
	}
	if cr {
		h.Write([]byte{'\r'})
	}
	var sum [sha256.Size]byte
	h.Sum(sum[:0])
	return sum
}
