package server

import (
	"runtime"
	"testing"
)

// TestTLSRaisesProcs checks that a server with TLS runs with GOMAXPROCS of
// at least 2 (procs.go: a thread in syncfs must not hold the only P), and
// that a plaintext server leaves GOMAXPROCS as it was.
func TestTLSRaisesProcs(t *testing.T) {
	old := runtime.GOMAXPROCS(0)
	defer func() {
		runtime.GOMAXPROCS(old)
		procsRaised.Store(false)
	}()

	procsRaised.Store(false)
	runtime.GOMAXPROCS(1)
	r := start(t, testServerConfig(t))
	if n := runtime.GOMAXPROCS(0); n != 1 {
		t.Errorf("plaintext server: GOMAXPROCS %d, want it left at 1", n)
	}
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}

	procsRaised.Store(false)
	runtime.GOMAXPROCS(1)
	p := newTestPKI(t)
	r = start(t, tlsServerConfig(t, p))
	defer r.stop()
	if n := runtime.GOMAXPROCS(0); n != minTLSProcs {
		t.Errorf("TLS server: GOMAXPROCS %d, want %d", n, minTLSProcs)
	}

	// TLS enabled later (a reload): the first STARTTLS raises it.
	procsRaised.Store(false)
	runtime.GOMAXPROCS(1)
	c := dial(t, r.addr)
	c.reply() // greeting
	c.expect("EHLO client.example.org", "250")
	c.starttls(t, p.Client())
	if n := runtime.GOMAXPROCS(0); n != minTLSProcs {
		t.Errorf("after STARTTLS: GOMAXPROCS %d, want %d", n, minTLSProcs)
	}
}
