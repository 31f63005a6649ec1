package server

import (
	"runtime"
	"testing"
)

// TestRaisesProcs checks that a server runs with GOMAXPROCS of at least 2
// (procs.go: a thread in syncfs must not hold the only P), plaintext or
// TLS, and leaves a larger GOMAXPROCS as it was.
func TestRaisesProcs(t *testing.T) {
	old := runtime.GOMAXPROCS(0)
	defer func() {
		runtime.GOMAXPROCS(old)
		procsRaised.Store(false)
	}()

	procsRaised.Store(false)
	runtime.GOMAXPROCS(1)
	r := start(t, testServerConfig(t))
	if n := runtime.GOMAXPROCS(0); n != minProcs {
		t.Errorf("plaintext server: GOMAXPROCS %d, want %d", n, minProcs)
	}
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}

	procsRaised.Store(false)
	runtime.GOMAXPROCS(1)
	p := newTestPKI(t)
	r = start(t, tlsServerConfig(t, p))
	if n := runtime.GOMAXPROCS(0); n != minProcs {
		t.Errorf("TLS server: GOMAXPROCS %d, want %d", n, minProcs)
	}
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}

	procsRaised.Store(false)
	runtime.GOMAXPROCS(3)
	r = start(t, testServerConfig(t))
	defer r.stop()
	if n := runtime.GOMAXPROCS(0); n != 3 {
		t.Errorf("GOMAXPROCS 3 before: %d after start, want it left at 3", n)
	}
}
