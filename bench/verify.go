package bench

import (
	"bufio"
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
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
	// Duplicates counts messages found more than once in one Maildir.
	Duplicates int `json:"duplicates"`
	// Unacked counts messages found that were never acked: stored, but the
	// 250 never reached the client (a dropped connection, a timeout). The
	// sender would retry them: harmless duplicates, not losses.
	Unacked int `json:"present_unacked"`
	// Bytes is the size of the files holding this run's messages.
	Bytes int64 `json:"bytes"`
	// SizeChecked counts the files of acked messages whose content was
	// compared with what was sent: from the bench's own first header
	// line (the server's trace fields come before it) to the end, with
	// LF line endings, it must be as long as the message sent.
	// SizeMismatch counts those that were not: a truncated or padded
	// message.
	SizeChecked  int `json:"size_checked"`
	SizeMismatch int `json:"size_mismatch"`
	// The first few markers of each problem, for a closer look.
	LostMarkers      []string `json:"lost_markers,omitempty"`
	DuplicateMarkers []string `json:"duplicate_markers,omitempty"`
	MismatchMarkers  []string `json:"size_mismatch_markers,omitempty"`
}

// OK reports whether nothing acked was lost, duplicated or stored with
// the wrong size.
func (v *Verify) OK() bool { return v.Lost == 0 && v.Duplicates == 0 && v.SizeMismatch == 0 }

// maxListed bounds the markers listed per problem.
const maxListed = 20

// VerifyMaildir looks for the messages of run runID under dir: every file
// in a folder named new or cur, at any depth, so dir may be one Maildir, a
// domain's folder or maildir_root. Each file's header is searched for
// "X-Nanomx-Bench: <runID>-<seq>". A message is LOST when its seq is in
// acked but in no file, and DUPLICATE when its marker is in two files of
// the same Maildir (a message sent to several mailboxes is in each once).
// sizes, if not nil, holds the stored size each acked message must have
// (see Verify.SizeChecked), by seq.
func VerifyMaildir(dir, runID string, acked []int64, sizes map[int64]int64) (*Verify, error) {
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

	// seen counts each seq per Maildir (the parent of new/ and cur/).
	type key struct {
		maildir string
		seq     int64
	}
	var (
		mu       sync.Mutex
		seen     = make(map[key]int)
		readErr  error
		next     int
		wg       sync.WaitGroup
		total    int64
		checked  int
		mismatch []int64
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
				fm, err := fileMarkers(files[i], prefix)
				mu.Lock()
				if err != nil && readErr == nil {
					readErr = err
				}
				if len(fm.seqs) > 0 {
					total += fm.size
				}
				for _, seq := range fm.seqs {
					seen[key{filepath.Dir(filepath.Dir(files[i])), seq}]++
					if want, ok := sizes[seq]; ok {
						checked++
						if fm.start < 0 || fm.size-fm.start != want {
							mismatch = append(mismatch, seq)
						}
					}
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if readErr != nil {
		return nil, readErr
	}

	v := &Verify{Dir: dir, Files: len(files), Acked: len(acked), Bytes: total,
		SizeChecked: checked, SizeMismatch: len(mismatch)}
	slices.Sort(mismatch)
	for _, seq := range mismatch[:min(len(mismatch), maxListed)] {
		v.MismatchMarkers = append(v.MismatchMarkers, Marker(runID, seq))
	}
	found := make(map[int64]bool)
	var dups []int64
	for k, n := range seen {
		found[k.seq] = true
		if n > 1 {
			v.Duplicates++
			dups = append(dups, k.seq)
		}
	}
	isAcked := make(map[int64]bool, len(acked))
	for _, seq := range acked {
		isAcked[seq] = true
		if found[seq] {
			v.Present++
		} else {
			v.Lost++
			if len(v.LostMarkers) < maxListed {
				v.LostMarkers = append(v.LostMarkers, Marker(runID, seq))
			}
		}
	}
	for seq := range found {
		if !isAcked[seq] {
			v.Unacked++
		}
	}
	slices.Sort(dups)
	for _, seq := range dups[:min(len(dups), maxListed)] {
		v.DuplicateMarkers = append(v.DuplicateMarkers, Marker(runID, seq))
	}
	return v, nil
}

// fileMarks is what fileMarkers found in one message file.
type fileMarks struct {
	seqs []int64
	// start is the offset of the bench's first header line (Message-ID
	// with a marker of the run), -1 if there is none; size is the file's.
	start, size int64
}

// fileMarkers returns the seqs of the markers with prefix in the header of
// the message file at path, and where the bench's header starts. Maildir
// files end lines in LF; CRLF is accepted too.
func fileMarkers(path string, prefix []byte) (fileMarks, error) {
	fm := fileMarks{start: -1}
	f, err := os.Open(path)
	if err != nil {
		if os.IsNotExist(err) {
			return fm, nil // moved to cur/ or deleted meanwhile
		}
		return fm, err
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil {
		fm.size = st.Size()
	}
	br := bufio.NewReaderSize(f, 8192)
	name := []byte(MarkerHeader + ":")
	msgID := append([]byte("Message-ID: <"), prefix...)
	var off int64
	for {
		line, err := br.ReadSlice('\n')
		if len(bytes.TrimRight(line, "\r\n")) == 0 {
			return fm, nil // end of the header (or of the file)
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
			return fm, nil
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
