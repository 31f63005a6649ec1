package spool

import (
	"errors"
	"fmt"
)

// Outcomes the server branches on with errors.Is. Every other error from
// Deliver or a done callback is temporary (the server answers 451 4.3.0).
var (
	// ErrQueueFull means every worker is busy and the queue is full; Submit
	// returns it at once instead of blocking.
	ErrQueueFull = errors.New("spool: delivery queue full")
	// ErrNoSpace means the file system or a quota ran out of room (ENOSPC,
	// EDQUOT) during delivery. It is temporary.
	ErrNoSpace = errors.New("spool: no space left for mail")
	// ErrMailLoop means the message already carries more than 50 Received
	// fields: it is looping.
	ErrMailLoop = errors.New("spool: mail loop: too many Received headers")
	// ErrClosed means Submit was called after Close.
	ErrClosed = errors.New("spool: closed")
	// ErrHeaderTooLong means a spilled message with Message.DropField set
	// has a header section that does not end inside its first chunk: the
	// fields past it are never scanned, so a field DropField would drop
	// (a forged one) could not be. It is permanent.
	ErrHeaderTooLong = errors.New("spool: header section longer than the first spilled chunk")
)

// Errors for a message the caller built wrong; both are temporary, as every
// error not listed above is.
var (
	errNoMailboxes = errors.New("spool: message has no mailboxes")
	errBadTrace    = errors.New("spool: trace fields would not stay header fields of their own")
)

// ConfigError names the configuration key that is wrong: "maildir_root",
// "hostname", "workers", "queue_length" or "mailboxes".
type ConfigError struct {
	Key string
	Err error
}

// Error returns "<key>: <reason>".
func (e *ConfigError) Error() string { return e.Key + ": " + e.Err.Error() }

// Unwrap returns the underlying reason.
func (e *ConfigError) Unwrap() error { return e.Err }

func configErr(key, format string, args ...any) error {
	return &ConfigError{Key: key, Err: fmt.Errorf(format, args...)}
}
