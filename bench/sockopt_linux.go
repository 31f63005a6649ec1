package bench

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// dialControl sets IP_BIND_ADDRESS_NO_PORT (Linux 4.2+) on a socket about
// to be bound to a source address: the kernel then picks the source port
// at connect time, per destination, instead of at bind time from the ports
// free on that address for any destination. Without it, binding many
// sockets to a few source addresses exhausts ports sooner.
func dialControl(network, address string, c syscall.RawConn) error {
	var serr error
	err := c.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_BIND_ADDRESS_NO_PORT, 1)
	})
	if err != nil {
		return err
	}
	// An old kernel without the option still works, with fewer ports.
	_ = serr
	return nil
}
