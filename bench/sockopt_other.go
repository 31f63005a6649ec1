//go:build !linux

package bench

import "syscall"

// dialControl does nothing outside Linux.
func dialControl(network, address string, c syscall.RawConn) error { return nil }
