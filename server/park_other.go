//go:build !linux

package server

// parker is Linux's epoll (park_linux.go); elsewhere a parked session
// waits on a goroutine of its own (blocking.wait).
type parker struct{}

func (p *parker) park(b *blocking) bool { return false }
func (p *parker) wake(key uint64) bool  { return false }
func (p *parker) close()                {}
func (p *parker) count() int            { return 0 }
