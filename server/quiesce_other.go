//go:build !linux

package server

// listenerHold is Linux's (quiesce_linux.go); elsewhere the listeners
// close as gnet closes them.
func listenerHold(int) error { return errNoHold }

// acceptQueue and handshakes are not known here.
func acceptQueue(int) (int, int, error) { return 0, 0, errNoHold }
func handshakes([]int) (int, error)     { return 0, errNoHold }
