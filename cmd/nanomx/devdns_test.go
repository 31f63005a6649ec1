package main

import (
	"context"
	"fmt"
	"net"
	"net/smtp"
	"testing"
	"time"

	"github.com/nanomx/nanomx/server"
	"github.com/nanomx/nanomx/server/resolver/dnstest"
)

// TestDevDefaultNoDNS: the development default (`make run`, `nanomx
// serve` without -config) asks the DNS nothing: a session from connect to
// the 250 after DATA sends no query to the configured resolver (one that
// never answers), and is quick.
func TestDevDefaultNoDNS(t *testing.T) {
	dns := dnstest.New(t, "")
	dns.Drop(true) // a query would wait for a timeout
	fc := defaultFile()
	devDefault(&fc, nil)
	addr := freeAddr(t)
	fc.Listen, fc.MaildirRoot, fc.DNSServers = []string{addr}, t.TempDir(), []string{dns.Addr()}
	cfg, err := toServer(&fc)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := server.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx) }()
	t.Cleanup(func() { cancel(); <-served })
	var c *smtp.Client
	for deadline := time.Now().Add(5 * time.Second); ; {
		if conn, err := net.Dial("tcp", addr); err == nil {
			conn.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("server did not listen")
		}
		time.Sleep(10 * time.Millisecond)
	}
	begin := time.Now()
	if c, err = smtp.Dial(addr); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Hello("client.example.org"); err != nil {
		t.Fatal(err)
	}
	if err := c.Mail("someone@example.org"); err != nil {
		t.Fatal(err)
	}
	if err := c.Rcpt("anyone@localhost"); err != nil {
		t.Fatal(err)
	}
	w, err := c.Data()
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(w, "From: someone@example.org\r\nSubject: dev\r\n\r\nhi\r\n")
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(begin); took > 2*time.Second {
		t.Errorf("session took %v", took)
	}
	if n := dns.Queries(); n != 0 {
		t.Errorf("the development default sent %d DNS queries, want none", n)
	}
}
