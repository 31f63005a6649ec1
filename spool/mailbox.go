package spool

import (
	"path/filepath"
	"strings"
)

// maxUserBytes bounds a mailbox folder name, as RFC 5321 4.5.3.1.1 bounds
// the local part it is configured as.
const maxUserBytes = 64

// Mailbox is one Maildir, at <root>/<Domain>/<User>/. Both names must be
// configured ones (Valid): nothing received from the network may become a
// path. The spool checks every Mailbox it is given and refuses the
// message otherwise.
type Mailbox struct {
	Domain, User string
	// Folder, when set, is a Maildir++ folder of the mailbox (e.g.
	// "Junk", which Dovecot shows as Junk): the message goes to
	// <root>/<domain>/<user>/.<Folder>/. A check's verdict chooses it.
	Folder string
}

// Path returns the Maildir directory <root>/<domain>/<user>, or its
// folder's <root>/<domain>/<user>/.<folder>.
func (m Mailbox) Path(root string) string {
	if m.Folder != "" {
		return filepath.Join(root, m.Domain, m.User, "."+m.Folder)
	}
	return filepath.Join(root, m.Domain, m.User)
}

// String returns the mailbox's name as configured, user@domain.
func (m Mailbox) String() string { return m.User + "@" + m.Domain }

// Valid reports whether both names are safe as the path elements they
// become: Domain a lowercase LDH host name (RFC 1035, RFC 1123 2.1: labels
// of 1-63 letters, digits and hyphens, no hyphen first or last, at most
// 253 bytes), User 1-64 bytes of [a-z0-9._-] starting with a letter or
// digit, with no ".." and no final dot. That excludes ".", "..", "/", NUL,
// upper case, and anything a shell or a path would treat specially.
func (m Mailbox) Valid() bool {
	return ValidDomain(m.Domain) && validUser(m.User) && (m.Folder == "" || ValidFolder(m.Folder))
}

// ValidFolder reports whether s may name a Maildir++ folder: 1-64 ASCII
// letters, digits, '_' and '-' (no dot: Maildir++ uses it for nesting, and
// none of '/', "..", NUL can appear).
func ValidFolder(s string) bool {
	if len(s) == 0 || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !isLowerAlnum(c) && !('A' <= c && c <= 'Z') && c != '_' && c != '-' {
			return false
		}
	}
	return true
}

// ValidDomain reports whether s is a lowercase LDH host name, as Valid
// asks of a mailbox's domain; the address book checks configured domains
// with it.
func ValidDomain(s string) bool {
	if len(s) == 0 || len(s) > 253 {
		return false
	}
	for label := range strings.SplitSeq(s, ".") {
		if len(label) == 0 || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			if c := label[i]; !isLowerAlnum(c) && c != '-' {
				return false
			}
		}
	}
	return true
}

// validUser reports whether s may name a Maildir directory (see Valid).
func validUser(s string) bool {
	if len(s) == 0 || len(s) > maxUserBytes || !isLowerAlnum(s[0]) || s[len(s)-1] == '.' {
		return false
	}
	for i := 1; i < len(s); i++ {
		c := s[i]
		if !isLowerAlnum(c) && c != '.' && c != '_' && c != '-' {
			return false
		}
	}
	return !strings.Contains(s, "..")
}

func isLowerAlnum(c byte) bool { return 'a' <= c && c <= 'z' || '0' <= c && c <= '9' }

// normalize trims and lowercases a configured name.
func normalize(s string) string { return strings.ToLower(strings.TrimSpace(s)) }
