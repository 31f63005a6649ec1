package server

import (
	"fmt"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/nanomx/nanomx/bench/smtpc"
)

// TestIdleConnMemory measures the Go heap an idle session holds after its
// greeting and EHLO (server side: gnet's conn, ours, the session), and
// bounds it: idle connections are what a flood or a slowloris piles up.
func TestIdleConnMemory(t *testing.T) {
	t.Run("after EHLO", func(t *testing.T) { testIdleConnMemory(t, 0) })
	// An idle session that once held a transaction of 100 long recipients
	// must cost the same: the buffers it grew are let go (issue 8).
	t.Run("after 100 long recipients", func(t *testing.T) { testIdleConnMemory(t, 100) })
}

func testIdleConnMemory(t *testing.T, rcpts int) {
	const n = 2000
	cfg := testServerConfig(t)
	cfg.MaxConnections = 2 * n
	cfg.MaxConnectionsPerIP = 2 * n
	cfg.CatchAll = map[string]string{"example.test": "bob@example.test"}
	r := start(t, cfg)
	var tx string
	if rcpts > 0 {
		var b strings.Builder
		b.WriteString("MAIL FROM:<a@example.org>\r\n")
		for i := range rcpts {
			fmt.Fprintf(&b, "RCPT TO:<%03d%s@example.test>\r\n", i, strings.Repeat("r", 190))
		}
		b.WriteString("RSET\r\n")
		tx = b.String()
	}
	heap := func() uint64 {
		runtime.GC()
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	dialHalf := func(k int) []net.Conn {
		var conns []net.Conn
		for i := 0; i < k; i++ {
			c, err := net.Dial("tcp", r.addr)
			if err != nil {
				t.Fatal(err)
			}
			// The client is dropped once its replies are read: only c is held.
			sc := smtpc.New(c)
			if err := sc.Hello("client.example.org"); err != nil {
				t.Fatal(err)
			}
			if rcpts > 0 {
				if err := sc.Write([]byte(tx)); err != nil {
					t.Fatal(err)
				}
				for range rcpts + 2 { // MAIL, the RCPTs, RSET
					if _, err := sc.Reply(); err != nil {
						t.Fatal(err)
					}
				}
			}
			conns = append(conns, c)
		}
		return conns
	}
	// The clients live in this process too. Their cost is measured by
	// dialing a listener that never accepts: the connections wait in the
	// kernel's queue and hold nothing but the client side.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	const m = 500
	base := heap()
	var idle []net.Conn
	for range m {
		c, err := net.Dial("tcp", l.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		idle = append(idle, c)
	}
	clientSide := float64(heap()-base) / m
	for _, c := range idle {
		c.Close()
	}

	a := dialHalf(10)
	before := heap()
	b := dialHalf(n)
	after := heap()
	server := float64(after-before)/n - clientSide
	t.Logf("heap per idle session (%d recipients before): ~%.0f B server side (client side %.0f B)", rcpts, server, clientSide)
	for _, c := range append(a, b...) {
		c.Close()
	}
	// gnet's own conn is ~0.7 KB of RSS; ours must stay small next to it.
	if server > 1536 {
		t.Errorf("an idle session holds ~%.0f B of heap on the server, want <= 1.5 KB", server)
	}
}

// TestIdleTLSMemory bounds the goroutine stack an idle TLS session holds
// (after EHLO over TLS): the handshake, which grows its goroutine's stack
// to 16–32 KiB, runs on a goroutine of its own, and the session goes on
// on a fresh one (tls.go serveTLS). The heap it holds is logged, with the
// client's (in this process too) included.
func TestIdleTLSMemory(t *testing.T) {
	const n = 200
	p := newTestPKI(t)
	cfg := tlsServerConfig(t, p)
	cfg.MaxConnections = 2 * n
	cfg.MaxConnectionsPerIP = 2 * n
	cfg.MaxTLSSessions = 2 * n
	r := start(t, cfg)
	mem := func() (heap, stack uint64) {
		runtime.GC()
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapAlloc, m.StackInuse
	}
	open := func(k int) {
		for range k {
			c := dial(t, r.addr)
			c.reply() // greeting
			c.expect("EHLO client.example.org", "250")
			c.starttls(t, p.Client()).expect("EHLO client.example.org", "250")
		}
	}
	open(10) // warm-up: the pools, the ticket keys
	heap0, stack0 := mem()
	open(n)
	// The sessions' goroutines start reading once they answered EHLO;
	// let the last ones get there.
	for deadline := time.Now().Add(5 * time.Second); r.srv.Stats().TLSSessions.Load() < n+10 && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	heap1, stack1 := mem()
	perStack := float64(stack1-stack0) / n
	t.Logf("per idle TLS session: stack %.0f B, heap %.0f B (server and client)", perStack, float64(heap1-heap0)/n)
	if limit := float64(raceStack * 6 << 10); perStack > limit {
		t.Errorf("an idle TLS session holds ~%.0f B of goroutine stack, want <= %.0f", perStack, limit)
	}
}
