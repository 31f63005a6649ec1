package spool

import "errors"

// Outcomes the server branches on with errors.Is. Every other error from
// Deliver or a done callback is temporary (the server answers 451 4.3.0).
var (
	// ErrUnknownUser means the domain is accepted but no mailbox, alias or
	// catch-all takes the local part.
	ErrUnknownUser = errors.New("spool: no such user")
	// ErrNotLocal means the domain is not one this MX accepts mail for.
	ErrNotLocal = errors.New("spool: domain not local")
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
)

// ConfigError names the configuration key that is wrong: "domains",
// "postmaster", "mailboxes", "aliases", "catch_all",
// "subaddress_separator", "maildir_root", "hostname", "workers" or
// "queue_length".
type ConfigError struct {
	Key string
	Err error
}

// Error returns "<key>: <reason>".
func (e *ConfigError) Error() string { return e.Key + ": " + e.Err.Error() }

// Unwrap returns the underlying reason.
func (e *ConfigError) Unwrap() error { return e.Err }
