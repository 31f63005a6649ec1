package screen

import (
	"net/netip"
	"testing"
	"time"
)

// TestRatesLimit: each kind is refused past its own limit within a
// minute, the other kinds and other addresses unaffected; a kind without
// a limit is never refused.
func TestRatesLimit(t *testing.T) {
	r := NewRates(0, 3, 2, 0)
	a, b := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")
	now := time.Unix(1_000_000*60, 0) // the start of a window
	for i := range 3 {
		if !r.Allow(a, Connections, now.Add(time.Duration(i)*time.Second)) {
			t.Fatalf("connection %d refused", i+1)
		}
	}
	if r.Allow(a, Connections, now.Add(5*time.Second)) {
		t.Fatal("4th connection in a minute allowed")
	}
	if !r.Allow(b, Connections, now.Add(5*time.Second)) {
		t.Fatal("another address refused")
	}
	for i := range 2 {
		if !r.Allow(a, Messages, now.Add(6*time.Second)) {
			t.Fatalf("message %d refused", i+1)
		}
	}
	if r.Allow(a, Messages, now.Add(7*time.Second)) {
		t.Fatal("3rd message allowed")
	}
	for range 1000 {
		if !r.Allow(a, Recipients, now) {
			t.Fatal("recipients are not limited, yet refused")
		}
	}
	if r.Len() != 2 {
		t.Fatalf("%d entries", r.Len())
	}
}

// TestRatesSliding: the previous minute still counts for the part of it
// within the last minute, so a burst at the end of one window and the
// start of the next cannot pass twice the limit; two minutes later all
// is forgotten.
func TestRatesSliding(t *testing.T) {
	r := NewRates(0, 10, 0, 0)
	a := netip.MustParseAddr("2001:db8::1")
	w := time.Unix(2_000_000*60, 0)
	for range 10 {
		if !r.Allow(a, Connections, w.Add(59*time.Second)) {
			t.Fatal("refused within the limit")
		}
	}
	// 1 s into the next window, 59/60 of the last 10 still count: 9.83,
	// so nothing fits.
	if r.Allow(a, Connections, w.Add(61*time.Second)) {
		t.Fatal("allowed right after a full window")
	}
	// Halfway into the next window, 5 of them count: 5 more fit.
	n := 0
	for r.Allow(a, Connections, w.Add(90*time.Second)) && n < 100 {
		n++
	}
	if n != 5 {
		t.Fatalf("halfway: %d allowed, want 5", n)
	}
	n = 0
	for r.Allow(a, Connections, w.Add(180*time.Second)) && n < 100 {
		n++
	}
	if n != 10 {
		t.Fatalf("after two windows: %d allowed, want 10", n)
	}
}

// TestRatesBounded: 100,000 distinct addresses through a table of 16,384
// leave 16,384 entries, the newest; an address forgotten starts afresh,
// and once the table is full a call allocates nothing.
func TestRatesBounded(t *testing.T) {
	r := NewRates(DefaultRateEntries, 1, 0, 0)
	now := time.Unix(3_000_000*60, 0)
	addr := func(i int) netip.Addr {
		return netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
	}
	for i := range 100_000 {
		if !r.Allow(addr(i), Connections, now) {
			t.Fatalf("new address %d refused", i)
		}
	}
	if r.Len() != DefaultRateEntries || len(r.ents) != DefaultRateEntries {
		t.Fatalf("%d entries (%d slots) after 100k addresses, want %d", r.Len(), len(r.ents), DefaultRateEntries)
	}
	if r.Allow(addr(99_999), Connections, now) {
		t.Fatal("the newest address was forgotten")
	}
	if !r.Allow(addr(0), Connections, now) {
		t.Fatal("the oldest address was kept")
	}
	i := 100_000
	allocs := testing.AllocsPerRun(20_000, func() {
		r.Allow(addr(i), Connections, now)
		r.Allow(addr(i), Connections, now) // refused: an entry found
		i++
	})
	if allocs > 0.01 {
		t.Fatalf("%.3f allocations per call on a full table", allocs)
	}
	if r.Len() != DefaultRateEntries {
		t.Fatalf("%d entries", r.Len())
	}
	// The use list holds every entry once.
	seen := 0
	for j := r.head; j >= 0; j = r.ents[j].next {
		if seen++; seen > DefaultRateEntries {
			t.Fatal("the use list loops")
		}
	}
	if seen != DefaultRateEntries {
		t.Fatalf("use list of %d", seen)
	}
}

func BenchmarkRatesAllow(b *testing.B) {
	r := NewRates(DefaultRateEntries, 1000, 0, 0)
	now := time.Now()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		r.Allow(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), Connections, now)
		i++
	}
}
