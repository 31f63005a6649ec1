package lmtp_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nanomx/nanomx/proto"
	"github.com/nanomx/nanomx/server/lmtp"
	"github.com/nanomx/nanomx/server/lmtp/dovecottest"
)

func send(t *testing.T, p *lmtp.Pool, from string, rcpts []string, body lmtp.Body) ([]*proto.Reply, error) {
	t.Helper()
	type res struct {
		rs  []*proto.Reply
		err error
	}
	ch := make(chan res, 1)
	err := p.Submit(&lmtp.Message{ID: "t", From: from, Rcpts: rcpts, Body: func() (lmtp.Body, error) { return body, nil }},
		func(rs []*proto.Reply, err error) { ch <- res{rs, err} })
	if err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-ch:
		return r.rs, r.err
	case <-time.After(20 * time.Second):
		t.Fatal("no answer")
	}
	return nil, nil
}

// TestSendStuffed: two recipients, one message each, LF turned into CRLF
// on the wire and back, lines starting with "." intact (dot-stuffed), a
// body without a final newline completed.
func TestSendStuffed(t *testing.T) {
	d := dovecottest.Start(t, "alice@example.test", "bob@example.test")
	for _, addr := range []string{d.Addr, "unix:" + d.Socket} {
		p := lmtp.New(lmtp.Config{Addr: addr, Hostname: "mx.test", Connections: 2, Timeout: 5 * time.Second})
		body := "Subject: dots " + addr + "\n\n.\n..two\n.leading dot\nend"
		rs, err := send(t, p, "sender@remote.test", []string{"alice@example.test", "bob@example.test"},
			lmtp.Body{Segs: [][]byte{[]byte(body[:20]), []byte(body[20:])}})
		if err != nil || len(rs) != 2 || rs[0] != nil || rs[1] != nil {
			t.Fatalf("%s: replies %v, err %v", addr, rs, err)
		}
		if lmtp.Outcome(rs, err) != nil {
			t.Fatal("outcome not nil")
		}
		p.Close()
	}
	for _, u := range []string{"alice@example.test", "bob@example.test"} {
		msgs := d.Messages(u)
		if len(msgs) != 2 {
			t.Fatalf("%s has %d messages, want 2", u, len(msgs))
		}
		for _, m := range msgs {
			got := dovecottest.Stored(m, "Subject:")
			if !bytes.HasSuffix(got, []byte("\n\n.\n..two\n.leading dot\nend\n")) {
				t.Errorf("%s: stored %q", u, got)
			}
		}
	}
}

// TestRefusals: an unknown recipient is refused at RCPT (550 5.1.1) while
// the other is delivered; every recipient unknown gives their refusals;
// Probe answers per recipient and delivers nothing.
func TestRefusals(t *testing.T) {
	d := dovecottest.Start(t, "alice@example.test")
	p := lmtp.New(lmtp.Config{Addr: d.Addr, Connections: 1, Timeout: 5 * time.Second})
	defer p.Close()
	rs, err := send(t, p, "", []string{"nobody@example.test", "alice@example.test"}, lmtp.Body{Segs: [][]byte{[]byte("Subject: x\n\nhi\n")}})
	if err != nil || rs[0] == nil || rs[0].Code != 550 || rs[0].Enh != "5.1.1" || rs[1] != nil {
		t.Fatalf("replies %v, err %v", rs, err)
	}
	if r := lmtp.Outcome(rs, err); r == nil || !strings.HasPrefix(r.Error(), "451 4.3.0") {
		t.Fatalf("mixed outcome %v, want 451 4.3.0", r)
	}
	rs, err = send(t, p, "", []string{"nobody@example.test"}, lmtp.Body{Segs: [][]byte{[]byte("x\n")}})
	if err != nil || len(rs) != 1 || rs[0] == nil || rs[0].Code != 550 {
		t.Fatalf("all refused: %v, %v", rs, err)
	}
	var r *proto.Reply
	if !errors.As(lmtp.Outcome(rs, err), &r) || r.Code != 550 || r.Enh != "5.1.1" {
		t.Fatalf("all refused outcome %v", lmtp.Outcome(rs, err))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	rs, err = p.Probe(ctx, "x@remote.test", []string{"alice@example.test", "nobody@example.test"})
	if err != nil || rs[0] != nil || rs[1] == nil || rs[1].Code != 550 {
		t.Fatalf("probe %v, %v", rs, err)
	}
	if n := len(d.Messages("alice@example.test")); n != 1 {
		t.Fatalf("alice has %d messages, want 1", n)
	}
	if p.Dials() != 1 || d.Connections() != 1 {
		t.Fatalf("dials %d, dovecot saw %d connections; want 1 reused", p.Dials(), d.Connections())
	}
}

// TestReuse: many messages from several goroutines over a pool of 3
// connections: Dovecot sees at most 3 connections, every message lands.
func TestReuse(t *testing.T) {
	d := dovecottest.Start(t, "alice@example.test")
	p := lmtp.New(lmtp.Config{Addr: d.Addr, Connections: 3, Timeout: 5 * time.Second})
	defer p.Close()
	const n = 60
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			done := make(chan error, 1)
			body := []byte("Subject: m\n\nmessage " + string(rune('A'+i%26)) + "\n")
			for {
				err := p.Submit(&lmtp.Message{From: "s@r.test", Rcpts: []string{"alice@example.test"}, Body: func() (lmtp.Body, error) { return lmtp.Body{Segs: [][]byte{body}}, nil }},
					func(rs []*proto.Reply, err error) { done <- lmtp.Outcome(rs, err) })
				if err == nil {
					break
				}
				time.Sleep(time.Millisecond)
			}
			errs <- <-done
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if got := len(d.Messages("alice@example.test")); got != n {
		t.Fatalf("%d messages stored, want %d", got, n)
	}
	if c := d.Connections(); c > 3 || p.Dials() > 3 {
		t.Fatalf("%d connections (%d dials) for %d messages, want at most 3", c, p.Dials(), n)
	}
}

// TestDown: a stopped server gives an unknown outcome (451 4.4.1); a
// restarted one is used again, the dead idle connection replaced.
func TestDown(t *testing.T) {
	d := dovecottest.Start(t, "alice@example.test")
	p := lmtp.New(lmtp.Config{Addr: d.Addr, Connections: 1, Timeout: 2 * time.Second})
	defer p.Close()
	msg := lmtp.Body{Segs: [][]byte{[]byte("x\n")}}
	if rs, err := send(t, p, "", []string{"alice@example.test"}, msg); lmtp.Outcome(rs, err) != nil {
		t.Fatal(err)
	}
	d.Stop()
	rs, err := send(t, p, "", []string{"alice@example.test"}, msg)
	if r := lmtp.Outcome(rs, err); r == nil || !strings.HasPrefix(r.Error(), "451 4.4.1") {
		t.Fatalf("down: %v (%v)", r, err)
	}
	d.Restart()
	if rs, err := send(t, p, "", []string{"alice@example.test"}, msg); lmtp.Outcome(rs, err) != nil {
		t.Fatalf("after restart: %v", err)
	}
	if n := len(d.Messages("alice@example.test")); n != 2 {
		t.Fatalf("%d stored, want 2", n)
	}
}

// TestOutcome: the one SMTP reply for a transaction's LMTP replies (see
// Outcome's table).
func TestOutcome(t *testing.T) {
	ok := (*proto.Reply)(nil)
	full := proto.NewReply(552, "5.2.2", "<bob@example.test> Mailbox is full")
	unknown := proto.NewReply(550, "5.1.1", "<x@example.test> User doesn't exist")
	temp := proto.NewReply(451, "4.3.0", "<bob@example.test> Temporary internal error")
	for _, tt := range []struct {
		name string
		rs   []*proto.Reply
		err  error
		want string // prefix; "" for nil
	}{
		{"all accepted", []*proto.Reply{ok, ok}, nil, ""},
		{"one temporary", []*proto.Reply{ok, temp}, nil, "451 4.3.0 <bob@"},
		{"temporary beats permanent", []*proto.Reply{full, temp}, nil, "451 4.3.0 <bob@"},
		{"all permanent", []*proto.Reply{unknown, full}, nil, "550 5.1.1"},
		{"mixed accepted and permanent", []*proto.Reply{ok, full}, nil, "451 4.3.0 Not every recipient was accepted (552 5.2.2"},
		{"connection lost", nil, io.ErrUnexpectedEOF, "451 4.4.1"},
		{"MAIL refused temporarily", nil, proto.NewReply(421, "4.3.2", "shutting down"), "421 4.3.2"},
		{"MAIL refused permanently", nil, proto.NewReply(554, "5.5.1", "no"), "451 4.3.0"},
		{"queue full", nil, lmtp.ReplyQueueFull, "451 4.3.2"},
		{"body failed", nil, &lmtp.BodyError{Err: errLoop}, "loop"},
	} {
		got := lmtp.Outcome(tt.rs, tt.err)
		switch {
		case tt.want == "" && got != nil:
			t.Errorf("%s: %v, want nil", tt.name, got)
		case tt.want != "" && (got == nil || !strings.HasPrefix(got.Error(), tt.want)):
			t.Errorf("%s: %v, want %q...", tt.name, got, tt.want)
		}
	}
}

var errLoop = errors.New("loop")
