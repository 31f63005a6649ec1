//go:build !race

package server

// raceAllocs: see authalloc_race_test.go.
const raceAllocs = false
