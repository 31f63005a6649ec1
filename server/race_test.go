//go:build race

package server

// raceStack scales stack bounds: the race detector grows stacks.
const raceStack = 2
