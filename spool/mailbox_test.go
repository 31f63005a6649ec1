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
		{Mailbox{"example.test", "bob"}, true},
		{Mailbox{"xn--bcher-kva.example", "first.last-1_x"}, true},
		{Mailbox{"a-b.c0", "0"}, true},
		{Mailbox{"example.test", strings.Repeat("a", 64)}, true},
		// Users.
		{Mailbox{"example.test", ""}, false},
		{Mailbox{"example.test", "."}, false},
		{Mailbox{"example.test", ".."}, false},
		{Mailbox{"example.test", "../etc"}, false},
		{Mailbox{"example.test", ".bob"}, false},
		{Mailbox{"example.test", "bob."}, false},
		{Mailbox{"example.test", "a..b"}, false},
		{Mailbox{"example.test", "a/b"}, false},
		{Mailbox{"example.test", "a\x00"}, false},
		{Mailbox{"example.test", "Bob"}, false},
		{Mailbox{"example.test", "a+b"}, false},
		{Mailbox{"example.test", "-rf"}, false},
		{Mailbox{"example.test", "jürgen"}, false},
		{Mailbox{"example.test", strings.Repeat("a", 65)}, false},
		// Domains.
		{Mailbox{"", "bob"}, false},
		{Mailbox{"..", "bob"}, false},
		{Mailbox{"example.test/..", "bob"}, false},
		{Mailbox{"Example.test", "bob"}, false},
		{Mailbox{"-x.test", "bob"}, false},
		{Mailbox{"x-.test", "bob"}, false},
		{Mailbox{"a..test", "bob"}, false},
		{Mailbox{"bücher.test", "bob"}, false},
		{Mailbox{"under_score.test", "bob"}, false},
		{Mailbox{strings.Repeat("a", 64) + ".test", "bob"}, false},
		{Mailbox{strings.Repeat("a.", 127) + "a", "bob"}, false},
	} {
		if got := tt.m.Valid(); got != tt.ok {
			t.Errorf("%q.Valid() = %v, want %v", tt.m, got, tt.ok)
		}
	}
}
