package rspamd

import (
	"bytes"
	"mime"
	"strconv"
	"strings"
)

// Bounds on what a reply may add to a message.
const (
	maxAddFields  = 64       // header fields from milter.add_headers
	maxFieldBytes = 16 << 10 // one added field, folded lines included
	maxSubject    = 998 - len("Subject: ")
	maxSMTPText   = 200 // an SMTP reply text taken from rspamd
)

// Fields nanomx writes itself. The client's copies are always cut, so that
// no sender can forge them.
const (
	FieldAction = "X-Spam-Action"
	FieldScore  = "X-Spam-Score"
	FieldSpam   = "X-Spam"
)

// Edit is what a reply does to a stored message.
type Edit struct {
	// Headers are the fields to prepend, after nanomx's trace fields, each
	// ending in LF: X-Spam-Action, X-Spam-Score, X-Spam: Yes for spam,
	// rspamd's milter.add_headers, and the rewritten Subject.
	Headers []byte
	// Cut are sorted, disjoint [start, end) byte ranges of the message's
	// header fields to drop: those milter.remove_headers names, nanomx's
	// own fields as the client sent them, and the Subject a rewrite
	// replaces. Each is a whole field with its continuation lines.
	Cut [][2]int64
}

// Spam reports whether the action marks the message as spam (it is
// delivered, with X-Spam: Yes and, if so configured, into Junk).
func (r *Reply) Spam() bool {
	switch r.Action {
	case ActionAddHeader, ActionRewriteSubject, ActionDiscard, ActionQuarantine:
		return true
	}
	return false
}

// Edit returns the edit of msg (LF line endings, as it will be stored,
// without nanomx's trace fields) that r asks for. It is meant for messages
// that are delivered (any action but reject, soft reject and greylist).
func (r *Reply) Edit(msg []byte) Edit {
	fields := scanFields(msg)
	cut := make([]bool, len(fields))
	for name, idx := range r.Milter.RemoveHeaders {
		var at []int
		for i, f := range fields {
			if strings.EqualFold(f.name, name) {
				at = append(at, i)
			}
		}
		switch {
		case idx == 0:
			for _, i := range at {
				cut[i] = true
			}
		case idx > 0 && idx <= len(at):
			cut[at[idx-1]] = true
		case idx < 0 && -idx <= len(at):
			cut[at[len(at)+idx]] = true
		}
	}
	subject := ""
	if r.Action == ActionRewriteSubject && r.Subject != "" {
		subject = oneLine(r.Subject, maxSubject)
		if !isASCII(subject) {
			subject = mime.QEncoding.Encode("utf-8", subject)
		}
	}
	for i, f := range fields {
		switch {
		case strings.EqualFold(f.name, FieldAction), strings.EqualFold(f.name, FieldScore),
			strings.EqualFold(f.name, FieldSpam):
			cut[i] = true
		case subject != "" && strings.EqualFold(f.name, "Subject"):
			cut[i] = true
		}
	}
	var e Edit
	for i, f := range fields {
		if !cut[i] {
			continue
		}
		// Adjacent fields merge into one range.
		if n := len(e.Cut); n > 0 && e.Cut[n-1][1] == int64(f.start) {
			e.Cut[n-1][1] = int64(f.end)
		} else {
			e.Cut = append(e.Cut, [2]int64{int64(f.start), int64(f.end)})
		}
	}

	h := make([]byte, 0, 256)
	h = append(h, FieldAction+": "...)
	h = append(h, oneLine(r.Action, 40)...)
	h = append(h, '\n')
	h = append(h, FieldScore+": "...)
	h = strconv.AppendFloat(h, r.Score, 'f', 2, 64)
	h = append(h, " / "...)
	h = strconv.AppendFloat(h, r.RequiredScore, 'f', 2, 64)
	h = append(h, '\n')
	if r.Spam() {
		h = append(h, FieldSpam+": Yes\n"...)
	}
	added := 0
	for _, f := range r.Milter.AddHeaders {
		if added == maxAddFields {
			break
		}
		if ours(f.Name) || strings.EqualFold(f.Name, "Subject") && subject != "" {
			continue
		}
		if b, ok := appendField(h, f.Name, f.Value); ok {
			h = b
			added++
		}
	}
	if subject != "" {
		h = append(h, "Subject: "...)
		h = append(h, subject...)
		h = append(h, '\n')
	}
	e.Headers = h
	return e
}

func ours(name string) bool {
	return strings.EqualFold(name, FieldAction) || strings.EqualFold(name, FieldScore) || strings.EqualFold(name, FieldSpam)
}

// field is one header field of a message: its name and its bytes
// [start, end), continuation lines and final LF included.
type field struct {
	name       string
	start, end int
}

// scanFields returns the header fields of msg, up to the empty line that
// ends the header section (RFC 5322 2.1), or all of msg if it has none. A
// line starting with white space continues the field before it (RFC 5322
// 2.2.3); such lines before any field belong to none. A line without a
// colon is a field without a name, which nothing matches.
func scanFields(msg []byte) []field {
	var fs []field
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
		if line[0] == ' ' || line[0] == '\t' {
			if n := len(fs); n > 0 {
				fs[n-1].end = end
			}
		} else {
			name := ""
			if i := bytes.IndexByte(line, ':'); i >= 0 {
				name = string(bytes.TrimRight(line[:i], " \t"))
			}
			fs = append(fs, field{name: name, start: off, end: end})
		}
		off = end
	}
	return fs
}

// appendField appends "Name: value\n" to b, if name is a valid field name
// (RFC 5322 2.2: printable ASCII but colon). The value keeps rspamd's
// folding: its lines (split at LF, CR or CRLF: rspamd folds with the line
// ending it saw in the message) become continuation lines, each starting
// with white space; empty lines, which would end the header section, and
// control characters are dropped. A value longer than maxFieldBytes is cut
// at a line.
func appendField(b []byte, name, value string) ([]byte, bool) {
	if name == "" || len(name) > 76 {
		return b, false
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; c <= ' ' || c >= 0x7f || c == ':' {
			return b, false
		}
	}
	start := len(b)
	b = append(b, name...)
	b = append(b, ':')
	lines := strings.FieldsFunc(value, func(r rune) bool { return r == '\n' || r == '\r' })
	n := 0
	for _, l := range lines {
		l = strings.TrimRight(stripControls(l), " \t")
		if strings.TrimLeft(l, " \t") == "" {
			continue
		}
		if n == 0 {
			l = " " + strings.TrimLeft(l, " \t")
		} else {
			b = append(b, '\n')
			if l[0] != ' ' && l[0] != '\t' {
				b = append(b, '\t')
			}
		}
		if len(b)-start+len(l) > maxFieldBytes {
			break
		}
		b = append(b, l...)
		n++
	}
	if n == 0 {
		return b[:start], false
	}
	return append(b, '\n'), true
}

// stripControls drops control characters but TAB.
func stripControls(s string) string {
	clean := true
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < 0x20 && c != '\t') || c == 0x7f {
			clean = false
			break
		}
	}
	if clean {
		return s
	}
	return strings.Map(func(r rune) rune {
		if (r < 0x20 && r != '\t') || r == 0x7f {
			return -1
		}
		return r
	}, s)
}

// oneLine makes s one line of at most max bytes: runs of white space and
// control characters become one space, and it is cut at max (at a UTF-8
// boundary).
func oneLine(s string, max int) string {
	var b strings.Builder
	space := false
	for _, r := range s {
		if r <= ' ' || r == 0x7f {
			space = b.Len() > 0
			continue
		}
		if space {
			b.WriteByte(' ')
			space = false
		}
		if b.Len()+len(string(r)) > max {
			break
		}
		b.WriteRune(r)
	}
	return b.String()
}

// printable makes s a one-line printable ASCII text of at most max bytes,
// for an SMTP reply or a log line: anything else becomes '?'.
func printable(s string, max int) string {
	s = oneLine(s, 4*max)
	b := make([]byte, 0, min(len(s), max))
	for i := 0; i < len(s) && len(b) < max; i++ {
		c := s[i]
		if c < 0x20 || c >= 0x7f {
			// One '?' per non-ASCII rune: skip its continuation bytes.
			for i+1 < len(s) && s[i+1]&0xc0 == 0x80 {
				i++
			}
			c = '?'
		}
		b = append(b, c)
	}
	return string(b)
}

// SMTPText returns rspamd's messages.smtp_message as an SMTP reply text:
// one line of printable ASCII, at most 200 bytes, or def when there is
// none.
func (r *Reply) SMTPText(def string) string {
	if t := printable(r.Messages.SMTP, maxSMTPText); strings.TrimSpace(t) != "" {
		return t
	}
	return def
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}
