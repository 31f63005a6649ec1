package screen

import (
	"net/netip"
	"sync"
	"time"
)

// Kind is what a rate counts.
type Kind uint8

// The kinds of events a rate limit counts, per client address.
const (
	Connections Kind = iota
	Messages         // MAIL commands
	Recipients       // RCPT commands the address book accepted
	numKinds
)

// DefaultRateEntries is the default size of a rate table: 16,384
// addresses, about 2.3 MB (64-byte entries and the index).
const DefaultRateEntries = 16384

// windowMs is the unit rates are counted in: a minute, in milliseconds.
const windowMs = int64(time.Minute / time.Millisecond)

// Rates counts events per client address over the last minute, like
// Postfix's anvil, in a table of fixed size: when it is full the address
// used least recently is forgotten, so a flood of addresses costs no more
// memory than a few (and the addresses forgotten first are the ones not
// sending). It is safe for concurrent use; a call takes one short lock
// and, once the table is full, allocates nothing.
//
// The rate is a sliding estimate over two fixed one-minute windows
// (the count of the current window plus the previous window's, weighted
// by how much of it the last minute still covers), so a client cannot
// send twice its limit across a window boundary.
type Rates struct {
	limits [numKinds]int // 0: that kind is not limited

	mu    sync.Mutex
	index map[netip.Addr]int32
	ents  []rateEntry
	// The entries in use form a list by last use: head is the newest,
	// tail the oldest (the next to go when the table is full).
	head, tail int32
}

// rateEntry is one client address's counts.
type rateEntry struct {
	key        netip.Addr
	prev, next int32 // the use list; -1 ends it
	// win is the number of the current window (Unix time / rateWindow);
	// cur counts its events, last those of the window before.
	win       int64
	cur, last [numKinds]uint32
}

// NewRates returns a table of at most size addresses (DefaultRateEntries
// if size <= 0) enforcing limits: events of each kind per minute, 0 for
// none.
func NewRates(size int, connections, messages, recipients int) *Rates {
	if size <= 0 {
		size = DefaultRateEntries
	}
	return &Rates{
		limits: [numKinds]int{connections, messages, recipients},
		index:  make(map[netip.Addr]int32, size),
		ents:   make([]rateEntry, 0, size),
		head:   -1,
		tail:   -1,
	}
}

// Limit returns the limit for k (0: none).
func (r *Rates) Limit(k Kind) int { return r.limits[k] }

// Allow counts one event of kind k for key at now, if that keeps key
// within its limit for k, and reports whether it did. Events refused are
// not counted: the limit is on what is let through. A kind without a
// limit is always allowed and not counted.
func (r *Rates) Allow(key netip.Addr, k Kind, now time.Time) bool {
	limit := r.limits[k]
	if limit <= 0 {
		return true
	}
	ms := now.UnixMilli()
	win := ms / windowMs
	into := ms % windowMs // how far into the window
	r.mu.Lock()
	defer r.mu.Unlock()
	e := r.entry(key)
	switch {
	case e.win == win:
	case e.win == win-1:
		e.last, e.cur, e.win = e.cur, [numKinds]uint32{}, win
	default:
		e.last, e.cur, e.win = [numKinds]uint32{}, [numKinds]uint32{}, win
	}
	// The previous window counts for the share of it still within the
	// last minute (in milliseconds, so that no fraction is lost).
	est := uint64(e.cur[k])*uint64(windowMs) + uint64(e.last[k])*uint64(windowMs-into)
	if est+uint64(windowMs) > uint64(limit)*uint64(windowMs) { // one more would pass the limit
		return false
	}
	e.cur[k]++
	return true
}

// Len returns the number of addresses in the table.
func (r *Rates) Len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.index)
}

// entry returns key's entry, first in the use list: found, new, or the
// oldest one reused. r.mu is held.
func (r *Rates) entry(key netip.Addr) *rateEntry {
	if i, ok := r.index[key]; ok {
		r.touch(i)
		return &r.ents[i]
	}
	var i int32
	if len(r.ents) < cap(r.ents) {
		i = int32(len(r.ents))
		r.ents = r.ents[:i+1]
	} else {
		i = r.tail
		r.unlink(i)
		delete(r.index, r.ents[i].key)
	}
	r.ents[i] = rateEntry{key: key, prev: -1, next: -1}
	r.index[key] = i
	r.pushFront(i)
	return &r.ents[i]
}

func (r *Rates) touch(i int32) {
	if r.head != i {
		r.unlink(i)
		r.pushFront(i)
	}
}

func (r *Rates) unlink(i int32) {
	e := &r.ents[i]
	if e.prev >= 0 {
		r.ents[e.prev].next = e.next
	} else {
		r.head = e.next
	}
	if e.next >= 0 {
		r.ents[e.next].prev = e.prev
	} else {
		r.tail = e.prev
	}
	e.prev, e.next = -1, -1
}

func (r *Rates) pushFront(i int32) {
	e := &r.ents[i]
	e.prev, e.next = -1, r.head
	if r.head >= 0 {
		r.ents[r.head].prev = i
	}
	r.head = i
	if r.tail < 0 {
		r.tail = i
	}
}
