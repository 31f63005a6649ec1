package spool

import (
	"strings"
	"testing"
)

func TestMailboxPath(t *testing.T) {
	m := Mailbox{Domain: "example.test", User: "bob"}
	if got := m.Path("/var/mail"); got != "/var/mail/example.test/bob" {
		t.Errorf("Path = %q", got)
	}
	if got := m.String(); got != "bob@example.test" {
		t.Errorf("String = %q", got)
	}
}

// TestMailboxValid: only names that are safe, plain path elements pass.
func TestMailboxValid(t *testing.T) {
	for _, tt := range []struct {
		m  Mailbox
		ok bool
	}{
		{Mailbox{Domain: "example.test", User: "bob"}, true},
		{Mailbox{Domain: "xn--bcher-kva.example", User: "first.last-1_x"}, true},
		{Mailbox{Domain: "a-b.c0", User: "0"}, true},
		{Mailbox{Domain: "example.test", User: strings.Repeat("a", 64)}, true},
		// Folders (Maildir++).
		{Mailbox{Domain: "example.test", User: "bob", Folder: "Junk"}, true},
		{Mailbox{Domain: "example.test", User: "bob", Folder: "a-b_C9"}, true},
		{Mailbox{Domain: "example.test", User: "bob", Folder: "."}, false},
		{Mailbox{Domain: "example.test", User: "bob", Folder: "../x"}, false},
		{Mailbox{Domain: "example.test", User: "bob", Folder: "Junk.Sub"}, false},
		{Mailbox{Domain: "example.test", User: "bob", Folder: strings.Repeat("j", 65)}, false},
		// Users.
		{Mailbox{Domain: "example.test", User: ""}, false},
		{Mailbox{Domain: "example.test", User: "."}, false},
		{Mailbox{Domain: "example.test", User: ".."}, false},
		{Mailbox{Domain: "example.test", User: "../etc"}, false},
		{Mailbox{Domain: "example.test", User: ".bob"}, false},
		{Mailbox{Domain: "example.test", User: "bob."}, false},
		{Mailbox{Domain: "example.test", User: "a..b"}, false},
		{Mailbox{Domain: "example.test", User: "a/b"}, false},
		{Mailbox{Domain: "example.test", User: "a\x00"}, false},
		{Mailbox{Domain: "example.test", User: "Bob"}, false},
		{Mailbox{Domain: "example.test", User: "a+b"}, false},
		{Mailbox{Domain: "example.test", User: "-rf"}, false},
		{Mailbox{Domain: "example.test", User: "jürgen"}, false},
		{Mailbox{Domain: "example.test", User: strings.Repeat("a", 65)}, false},
		// Domains.
		{Mailbox{Domain: "", User: "bob"}, false},
		{Mailbox{Domain: "..", User: "bob"}, false},
		{Mailbox{Domain: "example.test/..", User: "bob"}, false},
		{Mailbox{Domain: "Example.test", User: "bob"}, false},
		{Mailbox{Domain: "-x.test", User: "bob"}, false},
		{Mailbox{Domain: "x-.test", User: "bob"}, false},
		{Mailbox{Domain: "a..test", User: "bob"}, false},
		{Mailbox{Domain: "bücher.test", User: "bob"}, false},
		{Mailbox{Domain: "under_score.test", User: "bob"}, false},
		{Mailbox{Domain: strings.Repeat("a", 64) + ".test", User: "bob"}, false},
		{Mailbox{Domain: strings.Repeat("a.", 127) + "a", User: "bob"}, false},
	} {
		if got := tt.m.Valid(); got != tt.ok {
			t.Errorf("%q.Valid() = %v, want %v", tt.m, got, tt.ok)
		}
	}
}
