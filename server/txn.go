package server

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/bytebufferpool"

	"github.com/nanomx/nanomx/server/addrbook"
	"github.com/nanomx/nanomx/spool"
)

// txn is what a session holds for a transaction only, from MAIL until the
// message is answered or the transaction given up: an idle session holds
// none. txns are kept in a bounded stock (txns) and reused, so that a busy
// session allocates none per message.
type txn struct {
	// During a transfer (DATA/BDAT): when it began and when bytes last
	// arrived (Unix ns), and how many arrived.
	xferStart, xferLast int64
	xferBytes           int64

	// book is the address book of the current transaction, taken at MAIL;
	// rcpts are the mailboxes its accepted recipients reach, resolved at
	// RCPT, which the spool is given: a reload between RCPT and the end of
	// data cannot change what was accepted.
	book  *addrbook.Book
	rcpts addrbook.Set

	// body is the message being received; reserved is the budget it holds.
	body     *bytebufferpool.ByteBuffer
	reserved int64
	hint     int64 // the declared size, for sizing the buffer only
	// Past SpillThreshold the body goes to disk as it arrives: spill
	// writes it, and spillMsg is the message it will be submitted as.
	spill    *spool.Spill
	spillMsg *outgoing

	// While a message is with the spool (conn.waiting): result is stored
	// by the worker's callback, then the loop is woken.
	pending *outgoing
	size    int64 // decoded size of the pending message
	started time.Time
	// dataEnd is when the data ended, if a data check ran before the
	// spool took the message (else started is that time).
	dataEnd time.Time
	result  atomic.Pointer[deliveryResult]
}

// txns is the stock of spare txns, bounded (256: the transactions a busy
// server has open at once; more are left to the collector). Not a
// sync.Pool, whose behaviour the race detector changes (it drops a quarter
// of what it is given), so the tests that count allocations hold there
// too.
var txns struct {
	mu    sync.Mutex
	spare []*txn
}

func init() { txns.spare = make([]*txn, 0, 256) }

// tx makes sure the session holds a txn.
func (c *conn) tx() {
	if c.txn != nil {
		return
	}
	txns.mu.Lock()
	if n := len(txns.spare) - 1; n >= 0 {
		c.txn = txns.spare[n]
		txns.spare[n] = nil
		txns.spare = txns.spare[:n]
	}
	txns.mu.Unlock()
	if c.txn == nil {
		c.txn = new(txn)
	}
}

// idleTxn gives the txn back once the transaction is over: the session
// is idle (no MAIL, no check pending), no transfer runs, no message is
// with the spool and no body is held.
func (c *conn) idleTxn() {
	if t := c.txn; t != nil && !c.waiting && !c.inTransfer && c.sess.Idle() && t.body == nil && t.spill == nil {
		c.putTxn()
	}
}

// putTxn gives the txn back to the stock. Nothing may refer to it any
// more: no message with the spool, no body.
func (c *conn) putTxn() {
	t := c.txn
	if t == nil {
		return
	}
	c.txn = nil
	t.rcpts.Reset()
	*t = txn{rcpts: t.rcpts} // the set's storage is reused, its entries cleared
	txns.mu.Lock()
	if len(txns.spare) < cap(txns.spare) {
		txns.spare = append(txns.spare, t)
	}
	txns.mu.Unlock()
}
