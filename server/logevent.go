package server

import "github.com/rs/zerolog"

// event starts a log event at level l with the session's fields, the same
// line c.log() would give, but without building a sub-logger first: when
// l is disabled (log_level above it) it returns nil, on which zerolog's
// methods do nothing, and costs no allocation. For the per-message and
// per-connection lines.
func (c *conn) event(l zerolog.Level) *zerolog.Event {
	ev := c.srv.log.WithLevel(l)
	if ev == nil {
		return nil
	}
	ev = ev.Str("sid", c.sid()).Stringer("remote", c.remote)
	if c.proxy != nil {
		ev = ev.Stringer("proxy", c.proxy)
	}
	if c.tlsInfo != "" {
		ev = ev.Str("tls", c.tlsInfo)
	}
	return ev
}
