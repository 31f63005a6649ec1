package server

import (
	"net"
	"os"
	"syscall"
	"testing"
)

// BenchmarkDetachedConn: what a STARTTLS costs to take a socket off the
// loop, from gnet's duplicate to a connection ready for crypto/tls and
// back to closed: newFDConn (fdconn.go) against the net.FileConn it
// replaced, which duplicated the descriptor again and set it up as a
// net.TCPConn.
func BenchmarkDetachedConn(b *testing.B) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	defer client.Close()
	server, err := ln.Accept()
	if err != nil {
		b.Fatal(err)
	}
	defer server.Close()
	raw, _ := server.(*net.TCPConn).SyscallConn()
	var sfd int
	_ = raw.Control(func(fd uintptr) { sfd = int(fd) })
	dup := func(b *testing.B) int {
		fd, err := syscall.Dup(sfd) // gnet's Dup: F_DUPFD_CLOEXEC, non-blocking shared
		if err != nil {
			b.Fatal(err)
		}
		return fd
	}
	b.Run("fdConn", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			c, err := newFDConn(dup(b))
			if err != nil {
				b.Fatal(err)
			}
			c.Close()
		}
	})
	b.Run("net.FileConn", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			f := os.NewFile(uintptr(dup(b)), "smtp")
			c, err := net.FileConn(f)
			f.Close()
			if err != nil {
				b.Fatal(err)
			}
			c.Close()
		}
	})
}
