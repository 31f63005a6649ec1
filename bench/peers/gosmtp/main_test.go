package main

import (
	"net"
	"net/smtp"
	"os"
	"path/filepath"
	"strings"
	"testing"

	gosmtp "github.com/emersion/go-smtp"
)

// TestDeliver: a message to box7@bench.test lands in <root>/box7/new/ with
// its size in the name, and an unknown domain is refused.
func TestDeliver(t *testing.T) {
	root := t.TempDir()
	s := gosmtp.NewServer(&backend{root: root, domain: "bench.test", fsync: true, boxes: map[string]bool{}})
	s.Domain = "test"
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = s.Serve(ln) }()
	defer s.Close()
	msg := "Subject: hi\r\n\r\nbody\r\n"
	if err := smtp.SendMail(ln.Addr().String(), nil, "a@example.net", []string{"box7@bench.test"}, []byte(msg)); err != nil {
		t.Fatal(err)
	}
	if err := smtp.SendMail(ln.Addr().String(), nil, "a@example.net", []string{"x@other.test"}, []byte(msg)); err == nil || !strings.Contains(err.Error(), "550") {
		t.Fatalf("other domain: %v, want 550", err)
	}
	files, _ := filepath.Glob(filepath.Join(root, "box7", "new", "*"))
	if len(files) != 1 {
		t.Fatalf("new/ holds %d files, want 1", len(files))
	}
	b, err := os.ReadFile(files[0])
	if err != nil || string(b) != msg || !strings.HasSuffix(files[0], ",S=21") {
		t.Fatalf("%s: %q, %v", files[0], b, err)
	}
}
