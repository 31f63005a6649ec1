package bench

import (
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// VerifyMaildir is fed Maildirs with each kind of broken promise, so that
// a check that passes (the crash test's, -verify-maildir's) means the
// promises held, not that the verifier saw nothing.
func TestVerifyMaildirProblems(t *testing.T) {
	const trace = "Return-Path: <s@example.org>\nReceived: from sender.example.org ([127.0.0.1])\n" +
		"\tby mx.example.test (nanomx) with ESMTP id 0123ABC;\n\tMon, 02 Jan 2006 15:04:05 -0700\n"
	type msg struct {
		sent Sent
		file []byte // as a server would store it
	}
	mk := func(seq int64, boxes []string, acked bool, size int) msg {
		m := fmt.Sprintf("Message-ID: <%s@crash.invalid>\n%s: %s\nSubject: v\n\n", Marker("v", seq), MarkerHeader, Marker("v", seq))
		for i := 0; len(m) < size; i++ {
			m += fmt.Sprintf("line %d of message %d\n", i, seq)
		}
		var maildirs []string
		for _, b := range boxes {
			maildirs = append(maildirs, "example.test/"+b)
		}
		return msg{Sent{Seq: seq, Acked: acked, Maildirs: maildirs, Size: int64(len(m)), Sum: sha256.Sum256([]byte(m))},
			append([]byte(trace), m...)}
	}
	team := []string{"alice", "bob"}
	a, b, c := mk(1, team, true, 3000), mk(2, team, false, 200000), mk(3, []string{"carol"}, true, 100)
	unsent := mk(4, []string{"bob"}, true, 100)
	unended := mk(5, []string{"bob"}, false, 100)
	unended.sent.Unended = true
	flipped := mk(1, team, true, 3000)
	flipped.file[len(flipped.file)-2] ^= 1 // same size, other content

	type file struct {
		box  string
		m    msg
		cut  int  // bytes cut off the end of the content
		size bool // name the cut size in ,S= (a lie nanomx must never tell)
		raw  string
	}
	fine := []file{{box: "alice", m: a}, {box: "bob", m: a}, {box: "carol", m: c}}
	with := func(more ...file) []file { return append(append([]file(nil), fine...), more...) }
	for _, tc := range []struct {
		name  string
		files []file
		all   bool
		want  Verify // the counts compared (see got below)
		probs []string
	}{
		{"all well", fine, true, Verify{Present: 2, NameSizeChecked: 3}, nil},
		{"unacked in some mailboxes only", with(file{box: "alice", m: b}), true,
			Verify{Present: 2, Unacked: 1, UnackedPartial: 1, NameSizeChecked: 4}, nil},
		{"acked, missing", fine[:2], true, Verify{Present: 1, Lost: 1, NameSizeChecked: 2}, []string{"v-3 acked, and in no Maildir"}},
		{"acked, one mailbox missing", []file{fine[0], fine[2]}, true, Verify{Present: 2, Incomplete: 1, NameSizeChecked: 2},
			[]string{"v-1 acked, but missing from 1 of"}},
		{"duplicate", with(file{box: "bob", m: a}), true, Verify{Present: 2, Duplicates: 1, NameSizeChecked: 4},
			[]string{"v-1 stored 2 times in example.test/bob"}},
		{"unacked duplicate", with(file{box: "alice", m: b}, file{box: "alice", m: b}), true,
			Verify{Present: 2, Duplicates: 1, Unacked: 1, UnackedPartial: 1, NameSizeChecked: 5}, []string{"v-2 stored 2 times in example.test/alice"}},
		{"truncated", []file{fine[0], {box: "bob", m: a, cut: 10}, fine[2]}, true,
			Verify{Present: 2, NameSizeChecked: 3, NameSizeMismatch: 1, SizeMismatch: 1, SumMismatch: 1},
			[]string{"the name says S=", "v-1 is 3002 bytes from its Message-ID on, 3012 were sent", "v-1 differs"}},
		{"truncated, size in the name", with(file{box: "alice", m: b, cut: 1 << 16, size: true}), true,
			Verify{Present: 2, Unacked: 1, UnackedPartial: 1, NameSizeChecked: 4, SizeMismatch: 1, SumMismatch: 1},
			[]string{"v-2 is", "v-2 differs"}},
		{"same size, other bytes", []file{fine[0], {box: "bob", m: flipped}, fine[2]}, true,
			Verify{Present: 2, NameSizeChecked: 3, SumMismatch: 1}, []string{"v-1 differs from what was sent"}},
		{"wrong mailbox", with(file{box: "carol", m: a}), true, Verify{Present: 2, Misplaced: 1, NameSizeChecked: 4},
			[]string{"v-1 stored in example.test/carol, not one of"}},
		{"a message not sent", with(file{box: "bob", m: unsent}), true, Verify{Present: 2, Unknown: 1, NameSizeChecked: 4},
			[]string{"v-4, a message not sent"}},
		{"no marker", with(file{box: "bob", raw: trace + "Subject: other mail\n\nhi\n"}), true,
			Verify{Present: 2, Unknown: 1, NameSizeChecked: 4}, []string{"no X-Nanomx-Bench marker of run v"}},
		{"other mail, not all listed", with(file{box: "bob", m: unsent}, file{box: "bob", raw: "Subject: x\n\nhi\n"}), false,
			Verify{Present: 2, Unacked: 1, NameSizeChecked: 4}, nil},
		{"stored before the end of data", with(file{box: "bob", m: unended}), true,
			Verify{Present: 2, Unacked: 1, Unended: 1, NameSizeChecked: 4}, []string{"v-5 stored although its data never ended"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			for i, f := range tc.files {
				content := []byte(f.raw)
				if f.raw == "" {
					content = f.m.file
				}
				size := len(content)
				content = content[:len(content)-f.cut]
				if f.size {
					size = len(content)
				}
				dir := filepath.Join(root, "example.test", f.box, "new")
				if err := os.MkdirAll(dir, 0o700); err != nil {
					t.Fatal(err)
				}
				name := fmt.Sprintf("1700000000.M%dP1Q%d_nanomx.mx.example.test,S=%d", i, i, size)
				if err := os.WriteFile(filepath.Join(dir, name), content, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			v, err := VerifyMaildir(root, "v", []Sent{a.sent, b.sent, c.sent, unended.sent}, tc.all)
			if err != nil {
				t.Fatal(err)
			}
			got := Verify{Present: v.Present, Lost: v.Lost, Incomplete: v.Incomplete, Duplicates: v.Duplicates,
				Unacked: v.Unacked, UnackedPartial: v.UnackedPartial, Misplaced: v.Misplaced, Unended: v.Unended,
				Unknown: v.Unknown, SizeMismatch: v.SizeMismatch, SumMismatch: v.SumMismatch,
				NameSizeChecked: v.NameSizeChecked, NameSizeMismatch: v.NameSizeMismatch}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("counts %+v\n  want %+v", got, tc.want)
			}
			if v.OK() != (len(tc.probs) == 0) {
				t.Errorf("OK() = %v with problems %q", v.OK(), v.Problems)
			}
			if len(v.Problems) != len(tc.probs) {
				t.Fatalf("problems %q, want one each with %q", v.Problems, tc.probs)
			}
			for _, w := range tc.probs {
				if !strings.Contains(strings.Join(v.Problems, "\n"), w) {
					t.Errorf("problems %q: none with %q", v.Problems, w)
				}
			}
		})
	}
}

// storedSum turns each CRLF into LF wherever the parts split it, and
// keeps a lone CR.
func TestStoredSum(t *testing.T) {
	for _, parts := range [][]string{
		{"a\r\nb\r\n"},
		{"a\r", "\nb\r\n"},
		{"a\r", "", "\nb\r\n"},
		{"a\rx\r\n", "b", "\r\n"},
		{"a\r", "x\r\nb\r", "\n"},
		{"end\r"},
	} {
		var b []byte
		var in [][]byte
		for _, p := range parts {
			b = append(b, p...)
			in = append(in, []byte(p))
		}
		want := sha256.Sum256([]byte(strings.ReplaceAll(string(b), "\r\n", "\n")))
		if storedSum(in...) != want {
			t.Errorf("storedSum(%q) is not the hash of its LF form", parts)
		}
	}
}
