package auth

import (
	"bytes"
	"net/mail"
	"strings"
)

// field is one header field: its name and its raw value (continuation
// lines included, line ends kept).
type field struct {
	name  string
	raw   []byte // the name as written, white space before the colon kept
	value []byte
}

// maxHeaderFields bounds the fields looked at; a header with more is
// judged on its first ones.
const maxHeaderFields = 1000

// headerFields splits the header section of msg (up to the first empty
// line) into fields. Lines before the first field and lines without a
// colon are skipped.
func headerFields(msg []byte) []field {
	var fs []field
	off := 0
	for off < len(msg) && len(fs) < maxHeaderFields {
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
				f := &fs[n-1]
				f.value = f.value[:len(f.value)+len(line)] // lines are adjacent in msg
			}
		} else if colon := bytes.IndexByte(line, ':'); colon > 0 {
			fs = append(fs, field{
				name:  string(bytes.TrimRight(line[:colon], " \t")),
				raw:   line[:colon],
				value: msg[off+colon+1 : end : len(msg)],
			})
		}
		off = end
	}
	return fs
}

// unfold joins a field value's lines (RFC 5322 2.2.3) and trims it.
func unfold(v []byte) string {
	v = bytes.TrimSpace(v)
	if bytes.IndexAny(v, "\r\n") < 0 {
		return string(v)
	}
	b := make([]byte, 0, len(v))
	for _, c := range v {
		if c != '\r' && c != '\n' {
			b = append(b, c)
		}
	}
	return string(bytes.TrimSpace(b))
}

// FromDomains are the RFC 5322.From domains of a message (RFC 7489 3.1):
// every address of every From field, lowercased and deduplicated, with
// Problem saying what is wrong when there is not exactly one From field
// holding exactly one address ("" when there is).
type FromDomains struct {
	Domains []string
	Problem string
}

// maxFromDomains bounds the From domains DMARC evaluates.
const maxFromDomains = 4

// fromDomains finds the From domains in fs.
func fromDomains(fs []field) FromDomains {
	var d FromDomains
	fields, addrs := 0, 0
	for _, f := range fs {
		if !strings.EqualFold(f.name, "from") {
			continue
		}
		fields++
		list, err := mail.ParseAddressList(unfold(f.value))
		if err != nil {
			d.Problem = "From field does not parse"
			continue
		}
		for _, a := range list {
			addrs++
			at := strings.LastIndexByte(a.Address, '@')
			dom := strings.TrimSuffix(strings.ToLower(a.Address[at+1:]), ".")
			if at < 0 || !isDomainName(dom) {
				d.Problem = "From address has no domain"
				continue
			}
			if !containsStr(d.Domains, dom) && len(d.Domains) < maxFromDomains {
				d.Domains = append(d.Domains, dom)
			}
		}
	}
	switch {
	case d.Problem != "":
	case fields == 0:
		d.Problem = "no From field"
	case fields > 1:
		d.Problem = "several From fields"
	case addrs > 1:
		d.Problem = "several From addresses"
	}
	return d
}

func containsStr(l []string, s string) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}

// ForgedResults returns a test for header fields (the whole field, name
// to final LF, continuation lines included) that are Authentication-Results
// fields claiming authservID, with or without a version ("mx.example.test
// 1;"), compared case-insensitively: RFC 8601 5 has them removed, so that
// a sender cannot forge our verdicts. The test is safe for concurrent use.
func ForgedResults(authservID string) func(field []byte) bool {
	id := strings.ToLower(authservID)
	return func(f []byte) bool {
		colon := bytes.IndexByte(f, ':')
		if colon < 0 || !strings.EqualFold(string(bytes.TrimRight(f[:colon], " \t")), "authentication-results") {
			return false
		}
		got, ok := authservIDOf(f[colon+1:])
		return ok && strings.ToLower(got) == id
	}
}

// authservIDOf returns the authserv-id at the start of an
// Authentication-Results value (RFC 8601 2.2: [CFWS] authserv-id), a
// token or a quoted string; comments and white space before it are
// skipped.
func authservIDOf(v []byte) (string, bool) {
	i := skipCFWS(v, 0)
	if i >= len(v) {
		return "", false
	}
	if v[i] == '"' {
		var sb strings.Builder
		for j := i + 1; j < len(v); j++ {
			switch v[j] {
			case '\\':
				if j+1 < len(v) {
					j++
					sb.WriteByte(v[j])
				}
			case '"':
				return sb.String(), true
			default:
				sb.WriteByte(v[j])
			}
		}
		return "", false
	}
	j := i
	for j < len(v) && !isSpace(v[j]) && v[j] != ';' && v[j] != '(' {
		j++
	}
	return string(v[i:j]), j > i
}

// skipCFWS skips white space, line ends and (nested) comments.
func skipCFWS(v []byte, i int) int {
	depth := 0
	for ; i < len(v); i++ {
		c := v[i]
		switch {
		case c == '\\' && depth > 0:
			i++
		case c == '(':
			depth++
		case c == ')' && depth > 0:
			depth--
		case depth > 0, isSpace(c):
		default:
			return i
		}
	}
	return i
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\r' || c == '\n' }
