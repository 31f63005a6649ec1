package spool

import (
	"bytes"
	"net/mail"
	"regexp"
	"strings"
	"testing"
	"time"
)

func TestScanHeader(t *testing.T) {
	tests := []struct {
		in       string
		received int
		out      string // in without its Return-Path fields
	}{
		// No trace fields.
		{"Subject: x\n\nbody\n", 0, "Subject: x\n\nbody\n"},
		{"", 0, ""},
		// Received fields count in the header only, any case, with
		// continuation lines and the obsolete space before the colon.
		{"Received: a\nReceived: b\n\tcont\nSubject: x\n\nReceived: in body\n", 2, ""},
		{"received: a\nRECEIVED : b\nX-Received: c\nReceivedX: d\n", 2, ""},
		{"Received: x\r\n\r\nReceived: y\r\n", 1, ""},
		{"\nReceived: body only\n", 0, ""},
		// Leading white-space lines continue no field of the client's: they
		// count and are cut as nothing, and are kept as a field of
		// nanomx's own, so that they cannot continue our Received field.
		{" leading continuation\nReceived: x\n\n", 1, "X-Nanomx-Unattached: leading continuation\nReceived: x\n\n"},
		{" Received: a\n Return-Path: <x>\nReceived: b\n\n", 1, "X-Nanomx-Unattached: Received: a\n Return-Path: <x>\nReceived: b\n\n"},
		{"\tcont\nReturn-Path: <a>\n more\nX: y\n\n", 0, "X-Nanomx-Unattached:\tcont\nX: y\n\n"},
		{" \n\nbody\n", 0, "X-Nanomx-Unattached: \n\nbody\n"},
		{"Return-Path: <a>\n\tmore\nX: y\n", 0, "X: y\n"},
		{"\n body\n", 0, ""},
		// Return-Path fields go, continuation lines included; other fields
		// and the body stay.
		{"Return-Path: <evil@x>\nSubject: x\n\nbody", 0, "Subject: x\n\nbody"},
		{"Subject: x\nreturn-path: <a>\n  folded\n\tmore\nTo: y\n\nReturn-Path: stays\n", 0, "Subject: x\nTo: y\n\nReturn-Path: stays\n"},
		{"Return-Path: a\nRETURN-PATH : b\nX: y\n\n", 0, "X: y\n\n"},
		{"X: y\nReturn-Path: <a>", 0, "X: y\n"},
		{"X: y\nReturn-Path: <a>\n\n", 0, "X: y\n\n"},
		{"Return-Pathology: x\nX-Return-Path: y\n\n", 0, "Return-Pathology: x\nX-Return-Path: y\n\n"},
		{"Received: a\nReturn-Path: <b>\nReceived: c\n\nbody", 2, "Received: a\nReceived: c\n\nbody"},
	}
	for _, tt := range tests {
		received, cuts := scanHeader([]byte(tt.in), nil)
		out := string(bytes.Join(appendKept(nil, []byte(tt.in), cuts), nil))
		if tt.out == "" && len(cuts) == 0 {
			tt.out = tt.in
		}
		if received != tt.received || out != tt.out {
			t.Errorf("scanHeader(%q) = %d, %q; want %d, %q", tt.in, received, out, tt.received, tt.out)
		}
	}
}

// TestClientCannotExtendReceived builds the file's bytes as build does
// (trace fields, then the client's message minus Return-Path) for messages
// starting with white space, and parses the header: our Received field is
// exactly the one given, and the client's leading lines are the value of
// X-Nanomx-Unattached.
func TestClientCannotExtendReceived(t *testing.T) {
	for _, body := range []string{
		" from forged.example (by evil);\nSubject: hi\n\nbody\n",
		"\t(comment)\n\tmore\nReturn-Path: <x@y>\nSubject: hi\n\nbody\n",
	} {
		trace := []byte(testTrace)
		segs, err := fileHead(trace, []byte(body), false, nil)
		if err != nil {
			t.Fatal(err)
		}
		file := bytes.Join(segs, nil)
		msg, err := mail.ReadMessage(bytes.NewReader(file))
		if err != nil {
			t.Fatalf("%q: %v", body, err)
		}
		_, ours, _ := strings.Cut(strings.TrimSuffix(string(trace), "\n"), "\nReceived: ")
		want := strings.ReplaceAll(ours, "\n\t", " ")
		if got := msg.Header["Received"]; len(got) != 1 || got[0] != want {
			t.Errorf("%q: Received %q, want %q", body, got, want)
		}
		if got := msg.Header.Get("X-Nanomx-Unattached"); got == "" || msg.Header.Get("Subject") != "hi" {
			t.Errorf("%q: X-Nanomx-Unattached %q, header %v", body, got, msg.Header)
		}
	}
}

func TestUniqueName(t *testing.T) {
	now := time.Unix(1700000000, 123456789)
	got := uniqueName(now, 4242, 7, escapeNameHost("mx.example.test"), 10240)
	if want := "1700000000.M123456P4242Q7_nanomx.mx.example.test,S=10240"; got != want {
		t.Errorf("uniqueName = %q, want %q", got, want)
	}
	if got := uniqueName(time.Unix(5, 0), 1, 1, "h", 0); got != "5.M0P1Q1_nanomx.h,S=0" {
		t.Errorf("uniqueName = %q", got)
	}
}

func TestEscapeNameHost(t *testing.T) {
	tests := []struct{ in, want string }{
		{"mx.example.test", "mx.example.test"},
		{"a/b:c", `a\057b\072c`},
		{`a,b\c`, `a\054b\134c`},
		{"a b\x00\xff", `a\040b\000\377`},
		{strings.Repeat("h", 300), strings.Repeat("h", 100)},
	}
	for _, tt := range tests {
		if got := escapeNameHost(tt.in); got != tt.want {
			t.Errorf("escapeNameHost(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
	name := uniqueName(time.Now(), 1, 1, escapeNameHost("a/b:c,d"), 1)
	if !regexp.MustCompile(`^\d+\.M\d+P\d+Q\d+_nanomx\.[^/:,]+,S=\d+$`).MatchString(name) {
		t.Errorf("unsafe name %q", name)
	}
}
