package spool

import (
	"errors"
	"os"
	"strconv"
	"strings"
	"testing"
)

// cutOf returns the [start, end) range of the first occurrence of field in
// body.
func cutOf(t *testing.T, body, field string) [2]int64 {
	t.Helper()
	i := strings.Index(body, field)
	if i < 0 {
		t.Fatalf("%q not in body", field)
	}
	return [2]int64{int64(i), int64(i + len(field))}
}

// TestCut: Message.Cut leaves its ranges out of the stored file, for a
// message in memory and for a spilled one fed in every way (the cuts fall
// in the first chunk, across chunks, in the tail), merged with the
// Return-Path fields the spool cuts itself (one right before a cut range),
// with the check's Headers after the trace; a message starting with white
// space keeps its unattached field; the file's S= is its size.
func TestCut(t *testing.T) {
	s := newTestSpool(t, nil)
	const (
		rp      = "Return-Path: <forged@evil.test>\n\tfolded\n"
		spam    = "X-Spam: yes\n"
		subject = "Subject: old\n\tsecond line\n"
	)
	head := rp + spam + "To: bob\n" + subject + "From: alice\n\n"
	body := head + strings.Repeat("body line\n", 3000)
	headers := "X-Spam-Score: 1.00 / 15.00\nSubject: new\n"
	cut := [][2]int64{cutOf(t, body, spam), cutOf(t, body, subject)}
	want := testTrace + headers + "To: bob\nFrom: alice\n\n" + strings.Repeat("body line\n", 3000)

	lead := " leading\n\tlines\n"
	wsBody := lead + "X-Spam: yes\nTo: bob\n\nbody\n"
	wsCut := [][2]int64{cutOf(t, wsBody, "X-Spam: yes\n")}
	wsWant := testTrace + headers + string(unattachedField) + lead + "To: bob\n\nbody\n"

	for _, tc := range []struct {
		name       string
		body, want string
		cut        [][2]int64
	}{
		{"fields", body, want, cut},
		{"leading white space", wsBody, wsWant, wsCut},
	} {
		t.Run(tc.name+"/memory", func(t *testing.T) {
			m := newMessage(tc.body, "alice@example.test")
			m.Headers, m.Cut = []byte(headers), tc.cut
			ch := make(chan error, 1)
			if err := s.Submit(m, func(err error) { ch <- err }); err != nil {
				t.Fatal(err)
			}
			if err := wait(t, ch); err != nil {
				t.Fatal(err)
			}
			checkOnly(t, s, "alice@example.test", tc.want)
		})
		for _, f := range []feed{
			{first: len(tc.body), chunk: 1},     // one chunk
			{first: 60, chunk: 7, tail: 100},    // cuts across chunks
			{first: 1, chunk: 1, tail: 1 << 20}, // all in the tail
			{first: 120, chunk: 4096},           // no tail
		} {
			t.Run(tc.name+"/spilled", func(t *testing.T) {
				env := testMessage()
				env.Mailboxes = boxes("carol@other.test")
				w := &writer{sp: s.NewSpill(env)}
				parts, tail := f.chunks(tc.body)
				for _, p := range parts {
					w.write(p)
				}
				m := &Message{Spill: w.sp, Headers: []byte(headers), Cut: tc.cut}
				if tail != "" {
					m.Body = buffer(tail)
				}
				ch := make(chan error, 1)
				if err := s.Submit(m, func(err error) { ch <- err }); err != nil {
					t.Fatal(err)
				}
				if err := wait(t, ch); err != nil {
					t.Fatal(err)
				}
				w.waitWritten(t)
				checkOnly(t, s, "carol@other.test", tc.want)
			})
		}
	}
}

// checkOnly checks that addr's new/ holds one file, with content want and
// a matching S=, and removes it.
func checkOnly(t *testing.T, s *Spool, addr, want string) {
	t.Helper()
	path := only(t, s, addr)
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != want {
		i := 0
		for i < len(got) && i < len(want) && got[i] == want[i] {
			i++
		}
		t.Errorf("stored %d bytes, want %d; from byte %d:\n%.200q\nwant\n%.200q", len(got), len(want), i, got[i:], want[i:])
	}
	if !strings.HasSuffix(path, ",S="+strconv.Itoa(len(want))) {
		t.Errorf("name %s, want S=%d", path, len(want))
	}
	os.Remove(path)
}

// TestBadCut: ranges that overlap, are out of order, empty or past the
// body fail the message, in memory and spilled, and nothing is delivered.
func TestBadCut(t *testing.T) {
	s := newTestSpool(t, nil)
	body := "A: 1\nB: 2\n\nbody\n"
	for _, cut := range [][][2]int64{
		{{0, 5}, {3, 8}},  // overlap
		{{5, 10}, {0, 5}}, // out of order
		{{4, 4}},          // empty
		{{0, int64(len(body)) + 1}},
	} {
		m := newMessage(body, "alice@example.test")
		m.Cut = cut
		ch := make(chan error, 1)
		if err := s.Submit(m, func(err error) { ch <- err }); err != nil {
			t.Fatal(err)
		}
		if err := wait(t, ch); !errors.Is(err, errBadCut) {
			t.Errorf("memory, cut %v: %v, want errBadCut", cut, err)
		}
		w := &writer{sp: s.NewSpill(testMessage())}
		w.write(body[:3])
		w.write(body[3:])
		sm := &Message{Spill: w.sp, Cut: cut}
		ch = make(chan error, 1)
		if err := s.Submit(sm, func(err error) { ch <- err }); err != nil {
			t.Fatal(err)
		}
		if err := wait(t, ch); !errors.Is(err, errBadCut) {
			t.Errorf("spilled, cut %v: %v, want errBadCut", cut, err)
		}
		w.waitWritten(t)
	}
	for _, addr := range []string{"alice@example.test", "bob@example.test"} {
		if got := newFiles(t, s, addr); len(got) != 0 {
			t.Errorf("%s: %d files delivered", addr, len(got))
		}
	}
}

// TestUnion merges sorted span lists, joining spans that touch.
func TestUnion(t *testing.T) {
	for _, tc := range []struct {
		a, b, want []span
	}{
		{nil, nil, nil},
		{[]span{{0, 5}}, nil, []span{{0, 5}}},
		{nil, []span{{2, 3}}, []span{{2, 3}}},
		{[]span{{0, 5}}, []span{{5, 8}}, []span{{0, 8}}},
		{[]span{{0, 2}, {10, 12}}, []span{{4, 6}, {11, 20}}, []span{{0, 2}, {4, 6}, {10, 20}}},
		{[]span{{3, 4}}, []span{{0, 10}}, []span{{0, 10}}},
	} {
		got := union(tc.a, tc.b)
		if len(got) != len(tc.want) {
			t.Errorf("union(%v, %v) = %v, want %v", tc.a, tc.b, got, tc.want)
			continue
		}
		for i := range got {
			if got[i] != tc.want[i] {
				t.Errorf("union(%v, %v) = %v, want %v", tc.a, tc.b, got, tc.want)
				break
			}
		}
	}
}
