//go:build race

package server

// raceAllocs: the race detector makes sync.Pool drop items at random, so
// allocation counts are not asserted under it.
const raceAllocs = true
