package resolver

import (
	"sync"
	"time"

	"github.com/miekg/dns"
)

// entry is one cached answer. Immutable once cached, except the list
// links, which the cache's lock guards.
type entry struct {
	key     key
	name    string // canonical name
	rrs     []dns.RR
	txt     []string // for TXT: the strings of each record joined
	rcode   int
	ad, aa  bool
	server  string
	expires time.Time
	size    int // approximate bytes held

	prev, next *entry
}

// cache is a bounded LRU of entries: at most maxEntries and about
// maxBytes (wire size of the answers) together.
type cache struct {
	mu         sync.Mutex
	m          map[key]*entry
	head       entry // sentinel: head.next is the most recently used
	bytes      int
	maxEntries int
	maxBytes   int
}

func newCache(maxEntries, maxBytes int) *cache {
	c := &cache{m: make(map[key]*entry), maxEntries: maxEntries, maxBytes: maxBytes}
	c.head.next, c.head.prev = &c.head, &c.head
	return c
}

// get returns the entry for k if it has not expired at now.
func (c *cache) get(k key, now time.Time) *entry {
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.m[k]
	if e == nil {
		return nil
	}
	if !now.Before(e.expires) {
		c.remove(e)
		return nil
	}
	c.unlink(e)
	c.pushFront(e)
	return e
}

// put stores e (replacing any entry for its key) and evicts the least
// recently used past the bounds.
func (c *cache) put(k key, e *entry) {
	if e.size > c.maxBytes {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if old := c.m[k]; old != nil {
		c.remove(old)
	}
	c.m[k] = e
	c.bytes += e.size
	c.pushFront(e)
	for len(c.m) > c.maxEntries || c.bytes > c.maxBytes {
		c.remove(c.head.prev)
	}
}

// len returns the number of entries and their bytes.
func (c *cache) len() (int, int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.m), c.bytes
}

func (c *cache) remove(e *entry) {
	c.unlink(e)
	delete(c.m, e.key)
	c.bytes -= e.size
}

func (c *cache) unlink(e *entry) {
	e.prev.next = e.next
	e.next.prev = e.prev
	e.prev, e.next = nil, nil
}

func (c *cache) pushFront(e *entry) {
	e.next = c.head.next
	e.prev = &c.head
	c.head.next.prev = e
	c.head.next = e
}
