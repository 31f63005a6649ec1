package server

import (
	"os"
	"sync"
	"sync/atomic"
	"syscall"
)

// testHookParkEvents, nil in production, is called by the parker's loop
// when epoll returned events, before it wakes their sessions.
var testHookParkEvents atomic.Pointer[func()]

// testHookParkError, nil in production, replaces the error of the
// parker's epoll_wait when it returns non-nil (a failing epoll).
var testHookParkError atomic.Pointer[func() error]

// parker holds the parked TLS sessions of a server (park.go): their
// sockets are in an epoll instance of its own, one-shot and
// level-triggered, so that input that arrived before a socket was added
// is seen; that instance is itself watched by Go's poller (an epoll file
// is pollable), so waiting costs one goroutine for every parked session
// together and no thread. Sessions are keyed by their connection number,
// which the epoll event carries.
type parker struct {
	mu     sync.Mutex
	ep     *os.File // nil until the first park
	epfd   int      // ep's descriptor (ep.Fd would make it blocking)
	closed bool     // after close, or when epoll could not be set up
	parked map[uint64]*blocking
}

// park hands b's session to the parker; false when it cannot, and the
// caller waits itself.
func (p *parker) park(b *blocking) bool {
	p.mu.Lock()
	if p.ep == nil && !p.closed {
		p.start()
	}
	if p.closed {
		p.mu.Unlock()
		return false
	}
	key := b.c.n
	ev := syscall.EpollEvent{
		Events: syscall.EPOLLIN | syscall.EPOLLRDHUP | syscall.EPOLLONESHOT,
		Fd:     int32(uint32(key)),
		Pad:    int32(uint32(key >> 32)),
	}
	if err := syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_ADD, b.fd, &ev); err != nil {
		p.mu.Unlock()
		return false
	}
	p.parked[key] = b
	p.mu.Unlock()
	return true
}

// start sets up the epoll instance and its goroutine; with p.mu held.
func (p *parker) start() {
	fd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		p.closed = true
		return
	}
	if err := syscall.SetNonblock(fd, true); err != nil {
		syscall.Close(fd)
		p.closed = true
		return
	}
	f := os.NewFile(uintptr(fd), "park-epoll") // non-blocking: Go's poller watches it
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		p.closed = true
		return
	}
	p.ep, p.epfd, p.parked = f, fd, make(map[uint64]*blocking)
	go p.loop(rc)
}

// loop starts the sessions whose sockets became readable, until close.
func (p *parker) loop(rc syscall.RawConn) {
	events := make([]syscall.EpollEvent, 128)
	_ = rc.Read(func(fd uintptr) bool {
		for {
			n, err := syscall.EpollWait(int(fd), events, 0)
			if hook := testHookParkError.Load(); hook != nil {
				if e := (*hook)(); e != nil {
					err = e
				}
			}
			if err == syscall.EINTR {
				continue
			}
			if err != nil {
				return true // closed under us: end
			}
			if hook := testHookParkEvents.Load(); hook != nil {
				(*hook)()
			}
			for _, ev := range events[:n] {
				p.wake(uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32)
			}
			if n < len(events) {
				return false // none left: wait until there are
			}
		}
	})
	// The loop ended: closed, or epoll failed. Nobody watches the set any
	// more, so no session may stay parked in it.
	p.closeAndWake()
}

// closeAndWake marks p closed (later sessions wait on goroutines of
// their own) and starts every session still parked again.
func (p *parker) closeAndWake() {
	p.mu.Lock()
	p.closed = true
	left := make([]uint64, 0, len(p.parked))
	for key := range p.parked {
		left = append(left, key)
	}
	p.mu.Unlock()
	for _, key := range left {
		p.wake(key)
	}
}

// wake starts the parked session numbered key again, if it is parked;
// exactly one caller (an event, a kick) does.
func (p *parker) wake(key uint64) bool {
	p.mu.Lock()
	b := p.parked[key]
	if b == nil {
		p.mu.Unlock()
		return false
	}
	delete(p.parked, key)
	_ = syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_DEL, b.fd, nil)
	p.mu.Unlock()
	go b.c.serveTLSSession(b)
	return true
}

// close ends the parker after the drain: any session still parked is
// started again (to end), and later ones wait on goroutines of their own.
func (p *parker) close() {
	p.closeAndWake()
	// Not under mu: Close waits for the loop to leave epoll, and the loop
	// may be about to wake (stale events: nothing is parked any more).
	p.mu.Lock()
	ep := p.ep
	p.mu.Unlock()
	if ep != nil {
		ep.Close()
	}
}

// count is how many sessions are parked.
func (p *parker) count() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.parked)
}
