package spool

import (
	"bytes"
	"fmt"
)

// maxReceived is the hop limit: a message arriving with more Received
// fields than this is looping (RFC 5321 6.3; Postfix's hopcount_limit).
const maxReceived = 50

// span is a byte range [start, end) of the message.
type span struct{ start, end int }

// scanHeader walks the header section of msg, up to the first empty line
// (RFC 5322 2.1), and returns the number of Received fields and the byte
// ranges of every field to cut, continuation lines included: each
// Return-Path field, and each field drop (if not nil) reports true for.
// Field names compare case-insensitively; "Received :" (RFC 5322 4.5
// obsolete syntax) counts too. A message without an empty line is all
// header.
func scanHeader(msg []byte, drop func(field []byte) bool) (received int, cuts []span) {
	start := -1 // start of the field being read, or -1
	cutIt := false
	endField := func(end int) {
		if start >= 0 && (cutIt || drop != nil && drop(msg[start:end])) {
			cuts = append(cuts, span{start, end})
		}
		start, cutIt = -1, false
	}
	off := 0
	for off < len(msg) {
		end := len(msg)
		if i := bytes.IndexByte(msg[off:], '\n'); i >= 0 {
			end = off + i + 1
		}
		line := msg[off:end]
		if len(bytes.TrimRight(line, "\r\n")) == 0 {
			break
		}
		// A line starting with white space continues the previous field
		// (RFC 5322 2.2.3); only a new field ends a cut.
		if line[0] != ' ' && line[0] != '\t' {
			endField(off)
			start = off
			switch name := fieldName(line); {
			case asciiEqualFold(name, "received"):
				received++
			case asciiEqualFold(name, "return-path"):
				cutIt = true
			}
		}
		off = end
	}
	endField(off)
	return received, cuts
}

// fieldName returns the name of the header field starting line, without
// trailing white space, or nil if the line has no colon.
func fieldName(line []byte) []byte {
	i := bytes.IndexByte(line, ':')
	if i < 0 {
		return nil
	}
	return bytes.TrimRight(line[:i], " \t")
}

// unattachedField opens a header field of nanomx's own in front of a
// message that starts with white space (see appendKept).
var unattachedField = []byte("X-Nanomx-Unattached:")

// appendKept appends to segs the parts of msg outside the cut spans, which
// must be sorted and disjoint, skipping empty parts. segs ends with the
// trace fields the server built (Message.Trace).
//
// Client content must never extend a field nanomx wrote: a message whose
// first line starts with SP or HTAB would otherwise be a continuation of
// our Received field (RFC 5322 2.2.3), letting the client add to our trace
// (a fake "from", a comment, a date). Such leading lines belong to no field
// of the client's, and scanHeader counts and cuts nothing in them; they are
// kept, every octet, as the value of a field of their own, named
// unattachedField. Dropping them would lose data silently, and an empty
// line would turn the client's whole header into body.
func appendKept(segs [][]byte, msg []byte, cuts []span) [][]byte {
	off, first := 0, true
	for _, c := range cuts {
		if c.start > off {
			segs = appendSeg(segs, msg[off:c.start], first)
			first = false
		}
		off = c.end
	}
	if off < len(msg) {
		segs = appendSeg(segs, msg[off:], first)
	}
	return segs
}

// appendSeg appends seg, opening unattachedField in front of it when it
// is the first kept part and starts with white space. Only the first can:
// a cut field (Return-Path, or one of Message.Cut) takes its continuation
// lines with it.
func appendSeg(segs [][]byte, seg []byte, first bool) [][]byte {
	if first && (seg[0] == ' ' || seg[0] == '\t') {
		segs = append(segs, unattachedField)
	}
	return append(segs, seg)
}

// fileHead returns the first segments of a message's file: the trace
// fields, then body (a whole message, or a spill's first chunk when
// partial) minus the Return-Path fields the client sent and the fields
// drop reports (Message.DropField). It fails with
// ErrMailLoop past the hop limit. For a partial body whose header section
// does not end inside it, only complete lines are scanned and the last
// field is not cut: see the notes at the top of spill.go.
//
// Both rules are about the file, and both need the one scan of its header
// section that only a worker makes (for a spill, of a chunk the event loop
// never looks at): RFC 5321 4.4 has the final delivery add Return-Path,
// and one the client wrote would stand beside ours; a message that has
// passed more than maxReceived hops is looping (RFC 5321 6.3).
func fileHead(trace, body []byte, partial bool, drop func([]byte) bool) ([][]byte, error) {
	segs, _, err := fileHeadCut(trace, body, partial, nil, drop)
	return segs, err
}

// fileHeadCut is fileHead that also drops the cut spans of body (sorted,
// disjoint: Message.Cut) and returns the layout of what it wrote.
func fileHeadCut(trace, body []byte, partial bool, cut []span, drop func([]byte) bool) ([][]byte, headLayout, error) {
	if err := checkTrace(trace); err != nil {
		return nil, headLayout{}, err
	}
	scan, open := body, false
	if partial {
		scan, open = headerPart(body)
	}
	if open && drop != nil {
		return nil, headLayout{}, ErrHeaderTooLong
	}
	received, returnPaths := scanHeader(scan, drop)
	if n := len(returnPaths); open && n > 0 && returnPaths[n-1].end == len(scan) {
		returnPaths = returnPaths[:n-1]
	}
	if received > maxReceived {
		return nil, headLayout{}, fmt.Errorf("%w (%d)", ErrMailLoop, received)
	}
	cuts := union(returnPaths, cut)
	segs := make([][]byte, 0, 2+len(cuts))
	if len(trace) > 0 {
		segs = append(segs, trace)
	}
	return appendKept(segs, body, cuts), layoutOf(body, cuts), nil
}

// checkTrace refuses trace fields that would not stay header fields of
// their own at the top of the header section: a first line that continues
// nothing (white space), an empty line (the header section would end
// there and the client's header would become body), a CR (files are
// stored with LF endings) or a last line without its LF (the client's
// first line would join it). The spool trusts their content, which the
// server builds, and checks only what prepending them relies on.
func checkTrace(trace []byte) error {
	switch {
	case len(trace) == 0:
		return nil
	case trace[0] == ' ' || trace[0] == '\t' || trace[0] == '\n',
		trace[len(trace)-1] != '\n',
		bytes.IndexByte(trace, '\r') >= 0,
		bytes.Contains(trace, []byte("\n\n")):
		return errBadTrace
	}
	return nil
}

// headerPart returns the part of b that scanHeader may look at when more
// bytes follow b: all of b if its header section ends inside it (an empty
// line), otherwise its complete lines, with open true.
func headerPart(b []byte) (scan []byte, open bool) {
	off := 0
	for {
		i := bytes.IndexByte(b[off:], '\n')
		if i < 0 {
			return b[:off], true
		}
		// The same test for the empty line as scanHeader's.
		if len(bytes.TrimRight(b[off:off+i+1], "\r\n")) == 0 {
			return b, false
		}
		off += i + 1
	}
}

// asciiEqualFold reports whether b equals the lowercase ASCII string s,
// ignoring ASCII case.
func asciiEqualFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != s[i] {
			return false
		}
	}
	return true
}
