package server

import (
	"net"
	"runtime"
	"testing"

	"github.com/nanomx/nanomx/bench/smtpc"
)

// TestIdleConnMemory measures the Go heap an idle session holds after its
// greeting and EHLO (server side: gnet's conn, ours, the session), and
// bounds it: idle connections are what a flood or a slowloris piles up.
func TestIdleConnMemory(t *testing.T) {
	const n = 2000
	cfg := testServerConfig(t)
	cfg.MaxConnections = 2 * n
	cfg.MaxConnectionsPerIP = 2 * n
	r := start(t, cfg)
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
			// The client is dropped once EHLO is answered: only c is held.
			if err := smtpc.New(c).Hello("client.example.org"); err != nil {
				t.Fatal(err)
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
	t.Logf("heap per idle session after EHLO: ~%.0f B server side (client side %.0f B)", server, clientSide)
	for _, c := range append(a, b...) {
		c.Close()
	}
	// gnet's own conn is ~0.7 KB of RSS; ours must stay small next to it.
	if server > 1536 {
		t.Errorf("an idle session holds ~%.0f B of heap on the server, want <= 1.5 KB", server)
	}
}
