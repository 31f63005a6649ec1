package proto

// Handler is what a session asks of its server. Its methods run on the
// goroutine that calls Feed and must not block. Byte slices passed in are
// borrowed: copy what you keep.
type Handler interface {
	// CheckHelo decides a HELO/EHLO name (the first token of its argument,
	// at most 255 octets). nil accepts. A refusal must carry no enhanced
	// status code (RFC 2034 3); a 421 ends the session.
	CheckHelo(name []byte, esmtp bool) *Reply
	// CheckMail decides a transaction's reverse-path (in the canonical
	// form Envelope describes; empty for the null sender) and parameters,
	// e.g. the declared SIZE= against free disk space (RFC 1870: 452
	// 4.3.1). nil accepts.
	CheckMail(from []byte, p MailParams) *Reply
	// CheckRcpt decides one recipient ("local@domain" or "Postmaster", in
	// the canonical form Envelope describes).
	// nil accepts; refusals such as ReplyUnknownUser or ReplyRelayDenied
	// are sent as they are.
	CheckRcpt(addr []byte) *Reply
	// CheckData decides a complete message whose body the handler holds
	// (BeginBody, WriteBody), before it is delivered. nil accepts: the
	// session then waits for delivery (Waiting). A refusal answers the
	// transaction and drops the body (AbortBody).
	CheckData() *Reply
	// BeginBody is called when DATA or the first BDAT chunk starts, with
	// the declared SIZE= or a hint. A non-nil reply refuses the body.
	BeginBody(sizeHint int64) *Reply
	// WriteBody receives decoded message bytes (dot-unstuffed, LF line
	// endings). A non-nil reply makes the session discard the rest and
	// answer that reply once the message ends.
	WriteBody(p []byte) *Reply
	// AbortBody drops the body begun by BeginBody. After BeginBody exactly
	// one of two things happens: AbortBody, or the session waits for
	// delivery (Waiting) and the server takes the body.
	AbortBody()
	// StartTLS is asked when a client sends STARTTLS, e.g. to take one of
	// a bounded number of TLS slots. nil lets the session wait for the
	// handshake (StartingTLS); a reply (454 4.7.0) refuses and the session
	// goes on in plaintext.
	StartTLS() *Reply
}

// The Check methods may also return Pending: the verdict is not known
// yet. The session then reads no further input (Feed consumes nothing,
// so pipelined commands stay with the caller) and produces no reply
// until the caller passes the verdict to Resume; replies keep their
// order. Arguments are borrowed until the method returns, also when it
// returns Pending: copy what the check needs.
