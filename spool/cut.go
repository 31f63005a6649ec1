package spool

// Cutting: Message.Cut drops byte ranges of the client's message from the
// stored file (a check removing header fields: rspamd's remove_headers, a
// subject it rewrites, forged fields). The spool knows no header field:
// it drops what it is told, with the same care as for the Return-Path
// fields it cuts itself (appendKept), and the two kinds of cut merge.
//
// A message in memory is written without the cut ranges (build). A
// spilled one was written as it arrived; at Submit its file is written
// anew (rewrite): the trace, the check's header fields, and the kept
// ranges copied by the kernel (copy_file_range) from the old file, whose
// layout (which Return-Path fields its first chunk cut, whether it opened
// unattachedField) the spill remembers from its first chunk.

import (
	"errors"
	"fmt"
	"io"
	"os"
)

// errBadCut is a Message.Cut that is not sorted, disjoint ranges within
// the body: the server's bug, a temporary failure.
var errBadCut = errors.New("spool: bad cut ranges")

// cutSpans checks cut against a body of n bytes and returns it as spans:
// each range non-empty, within [0, n], after the one before it.
func cutSpans(cut [][2]int64, n int64) ([]span, error) {
	if len(cut) == 0 {
		return nil, nil
	}
	spans := make([]span, len(cut))
	var prev int64
	for i, c := range cut {
		if c[0] < prev || c[1] <= c[0] || c[1] > n {
			return nil, fmt.Errorf("%w: [%d, %d) of %d bytes", errBadCut, c[0], c[1], n)
		}
		spans[i] = span{int(c[0]), int(c[1])}
		prev = c[1]
	}
	return spans, nil
}

// union merges two sorted lists of disjoint spans into one, merging spans
// that overlap or touch.
func union(a, b []span) []span {
	if len(b) == 0 {
		return a
	}
	if len(a) == 0 {
		return b
	}
	out := make([]span, 0, len(a)+len(b))
	for len(a) > 0 || len(b) > 0 {
		var next span
		if len(b) == 0 || len(a) > 0 && a[0].start <= b[0].start {
			next, a = a[0], a[1:]
		} else {
			next, b = b[0], b[1:]
		}
		if n := len(out); n > 0 && next.start <= out[n-1].end {
			out[n-1].end = max(out[n-1].end, next.end)
			continue
		}
		out = append(out, next)
	}
	return out
}

// headLayout is how a file's first segments were laid out from the body:
// the spans of the body left out, and the bytes of unattachedField opened
// in front of the first kept part (0 or its length).
type headLayout struct {
	cuts []span
	lead int
}

// layoutOf is the layout appendKept makes of body with cuts.
func layoutOf(body []byte, cuts []span) headLayout {
	l := headLayout{cuts: cuts}
	first := 0
	if len(cuts) > 0 && cuts[0].start == 0 {
		first = cuts[0].end
	}
	if first < len(body) && (body[first] == ' ' || body[first] == '\t') {
		l.lead = len(unattachedField)
	}
	return l
}

// rewrite writes the spill's file anew, after every chunk and the tail:
// the trace fields, headers after them, and the body without the cut
// spans (Message.Cut, in body offsets) and without what the first chunk
// left out already. The old file is read back at the mapped offsets; the
// new one (its name has the marker, so start-up removes it after a crash)
// replaces it.
func (sp *Spill) rewrite(headers []byte, cut [][2]int64) error {
	trace := sp.env.Trace
	if err := checkTrace(append(trace[:len(trace):len(trace)], headers...)); err != nil {
		return err
	}
	old := sp.layout
	removed := 0
	for _, c := range old.cuts {
		removed += c.end - c.start
	}
	// What the file holds says how long the body was.
	bodyLen := sp.size - int64(len(trace)+old.lead) + int64(removed)
	spans, err := cutSpans(cut, bodyLen)
	if err != nil {
		return err
	}
	cuts := union(old.cuts, spans)
	// fileOff maps a body offset outside old.cuts to its offset in the old file.
	fileOff := func(x int64) int64 {
		off := int64(len(trace)+old.lead) + x
		for _, c := range old.cuts {
			if int64(c.end) <= x {
				off -= int64(c.end - c.start)
			}
		}
		return off
	}
	var kept [][2]int64
	var at int64
	for _, c := range cuts {
		if int64(c.start) > at {
			kept = append(kept, [2]int64{at, int64(c.start)})
		}
		at = int64(c.end)
	}
	if at < bodyLen {
		kept = append(kept, [2]int64{at, bodyLen})
	}

	oldPath := sp.d.tmp[0]
	src, err := os.Open(oldPath)
	if err != nil {
		return err
	}
	defer src.Close()
	// The same rule as appendKept: a first kept part starting with white
	// space gets a field of its own.
	var lead []byte
	if len(kept) > 0 {
		var b [1]byte
		if _, err := src.ReadAt(b[:], fileOff(kept[0][0])); err != nil {
			return err
		}
		if b[0] == ' ' || b[0] == '\t' {
			lead = unattachedField
		}
	}
	newPath := oldPath + ".h"
	f, err := sp.s.createTmp(sp.d.dirs[0], newPath)
	if err != nil {
		return err
	}
	size := int64(len(trace) + len(headers) + len(lead))
	var segs [][]byte
	for _, seg := range [][]byte{trace, headers, lead} {
		if len(seg) > 0 {
			segs = append(segs, seg)
		}
	}
	if len(segs) > 0 {
		err = sp.s.write(int(f.Fd()), f.Name(), segs)
	}
	for _, k := range kept {
		if err != nil {
			break
		}
		if _, err = src.Seek(fileOff(k[0]), io.SeekStart); err != nil {
			break
		}
		n := k[1] - k[0]
		var w int64
		// ReadFrom with a LimitedReader of a file: copy_file_range.
		w, err = io.Copy(f, io.LimitReader(src, n))
		if err == nil && w != n {
			err = fmt.Errorf("spool: spill file shorter than written (%d of %d bytes)", w, n)
		}
		size += w
	}
	if err != nil {
		f.Close()
		os.Remove(newPath)
		return err
	}
	sp.f.Close()
	os.Remove(oldPath)
	sp.f, sp.d.tmp[0] = f, newPath
	sp.size = size
	return nil
}
