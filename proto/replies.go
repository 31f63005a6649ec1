package proto

import "strconv"

// Reply is one SMTP reply: a code, an RFC 3463 enhanced status code (empty
// where RFC 2034 3 has none: the greeting, every reply to HELO or EHLO,
// and 3xx such as 354) and a text. A Reply is also an error, so a lower
// layer can return "this 4xx" and the caller writes it as is. Replies are
// shared values: never modify one.
type Reply struct {
	Code int
	Enh  string
	Text string
	// line is the preformatted "CODE ENH TEXT\r\n", built once.
	line []byte
}

// NewReply builds a reply and preformats its wire form.
func NewReply(code int, enh, text string) *Reply {
	r := &Reply{Code: code, Enh: enh, Text: text}
	b := strconv.AppendInt(nil, int64(code), 10)
	b = append(b, ' ')
	if enh != "" {
		b = append(b, enh...)
		b = append(b, ' ')
	}
	b = append(b, text...)
	r.line = append(b, '\r', '\n')
	return r
}

// Error returns the reply as text without CRLF.
func (r *Reply) Error() string { return string(r.line[:len(r.line)-2]) }

// Bytes returns the wire form, CRLF included. The slice is shared: do not
// modify it.
func (r *Reply) Bytes() []byte { return r.line }

// Temporary reports a 4xx reply.
func (r *Reply) Temporary() bool { return r.Code >= 400 && r.Code < 500 }

// Replies, grouped by the command or condition that produces them. Codes
// follow RFC 5321 4.2 and enhanced codes RFC 3463.
var (
	// Positive replies.
	ReplyOK        = NewReply(250, "2.0.0", "OK")
	ReplyMailOK    = NewReply(250, "2.1.0", "Sender OK")
	ReplyRcptOK    = NewReply(250, "2.1.5", "Recipient OK")
	ReplyStartData = NewReply(354, "", "End data with <CR><LF>.<CR><LF>")
	ReplyBye       = NewReply(221, "2.0.0", "Bye")
	ReplyVrfy      = NewReply(252, "2.5.0", "Cannot VRFY user, but will accept message and attempt delivery")
	ReplyHelp      = NewReply(214, "2.0.0", "Commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY HELP")

	// Command syntax (RFC 5321 4.2.4, RFC 3463 X.5.x).
	ReplyUnknownCommand    = NewReply(500, "5.5.1", "Command unrecognized")
	ReplyNotImplemented    = NewReply(502, "5.5.1", "Command not implemented")
	ReplyLineTooLong       = NewReply(500, "5.5.2", "Line too long")
	ReplyBareLFCommand     = NewReply(500, "5.5.2", "Bare LF in command, closing connection")
	ReplyBadCharacter      = NewReply(501, "5.5.2", "Invalid character in command")
	ReplyMailSyntax        = NewReply(501, "5.5.4", "Syntax: MAIL FROM:<address> [parameters]")
	ReplyRcptSyntax        = NewReply(501, "5.5.4", "Syntax: RCPT TO:<address>")
	ReplyBdatSyntax        = NewReply(501, "5.5.4", "Syntax: BDAT size [LAST], closing connection")
	ReplyVrfySyntax        = NewReply(501, "5.5.4", "Syntax: VRFY address")
	ReplyNoParams          = NewReply(501, "5.5.4", "No parameters allowed")
	ReplyBadSizeParam      = NewReply(501, "5.5.4", "Bad SIZE= value")
	ReplyBadBodyParam      = NewReply(501, "5.5.4", "Bad BODY= value")
	ReplyUnsupportedParam  = NewReply(555, "5.5.4", "Unsupported parameter")
	ReplyUnsupportedBody   = NewReply(555, "5.5.4", "Unsupported BODY= value")
	ReplyBadSenderSyntax   = NewReply(501, "5.1.7", "Bad sender address syntax")
	ReplyBadRcptSyntax     = NewReply(501, "5.1.3", "Bad recipient address syntax")
	ReplyNeedSMTPUTF8      = NewReply(553, "5.6.7", "Non-ASCII address requires SMTPUTF8")
	ReplyBadUTF8           = NewReply(553, "5.6.7", "Address is not valid UTF-8")
	ReplyTooBig            = NewReply(552, "5.3.4", "Message size exceeds fixed limit") // MAIL SIZE= (RFC 1870 6.1) or data
	ReplyTooManyRcpts      = NewReply(452, "4.5.3", "Too many recipients")
	ReplyBareNewline       = NewReply(550, "5.5.2", "Bare CR or LF in message data, closing connection")
	ReplyTooManyErrors     = NewReply(421, "4.7.0", "Too many errors, closing connection")
	ReplyTooManyJunk       = NewReply(421, "4.7.0", "Too many junk commands, closing connection")
	ReplyNeedHelo          = NewReply(503, "5.5.1", "Send HELO or EHLO first")
	ReplyNestedMail        = NewReply(503, "5.5.1", "Sender already specified")
	ReplyNeedMail          = NewReply(503, "5.5.1", "Need MAIL command first")
	ReplyNeedRcpt          = NewReply(554, "5.5.1", "No valid recipients")
	ReplyDataInBdat        = NewReply(503, "5.5.1", "DATA not allowed in a BDAT transaction")
	ReplyCommandInBdat     = NewReply(503, "5.5.1", "Command not allowed in a BDAT transaction")
	ReplyBdatAfterHelo     = NewReply(503, "5.5.1", "BDAT not offered after HELO, send EHLO first")
	ReplyUnknownUser       = NewReply(550, "5.1.1", "No such user here")
	ReplyRelayDenied       = NewReply(550, "5.7.1", "Relaying denied")
	ReplyNoStorageMemory   = NewReply(452, "4.3.1", "Insufficient system storage, try again later")
	ReplyNoSpace           = NewReply(452, "4.3.1", "Insufficient system storage")
	ReplyQueueFull         = NewReply(451, "4.3.2", "Delivery queue full, try again later")
	ReplyLocalError        = NewReply(451, "4.3.0", "Local error in processing, try again later")
	ReplyMailLoop          = NewReply(554, "5.4.6", "Too many Received headers: mail loop")
	ReplyTimeout           = NewReply(421, "4.4.2", "Timeout, closing connection")
	ReplyShutdown          = NewReply(421, "4.3.2", "Service shutting down, try again later")
	ReplyInternal          = NewReply(421, "4.3.0", "Internal error, closing connection")
	ReplyTooManyConns      = NewReply(421, "4.7.0", "Too many connections, try again later")
	ReplyTooManyConnsPerIP = NewReply(421, "4.7.0", "Too many connections from your address, try again later")
	ReplyPipelineOverflow  = NewReply(421, "4.7.0", "Too much pipelined input, closing connection")
	ReplyEarlyTalker       = NewReply(554, "5.5.1", "Protocol error: data sent before the greeting")

	// Replies to HELO and EHLO, which carry no enhanced status code (RFC
	// 2034 3: the client does not know yet that they are offered).
	ReplyHeloSyntax      = NewReply(501, "", "Syntax: HELO hostname")
	ReplyEhloSyntax      = NewReply(501, "", "Syntax: EHLO hostname")
	ReplyTooManyJunkHelo = NewReply(421, "", "Too many junk commands, closing connection")

	// STARTTLS (RFC 3207).
	ReplyReadyTLS         = NewReply(220, "2.0.0", "Ready to start TLS")
	ReplyTLSUnavailable   = NewReply(454, "4.7.0", "TLS not available now, continue in plaintext")
	ReplyTLSActive        = NewReply(503, "5.5.1", "TLS already active")
	ReplyStartTLSSyntax   = NewReply(501, "5.5.4", "Syntax: STARTTLS")
	ReplyTLSInTransaction = NewReply(503, "5.5.1", "STARTTLS not allowed in a mail transaction")
	ReplyNeedTLS          = NewReply(530, "5.7.0", "Must issue a STARTTLS command first")
)

// Replies with a variable part are appended to the output by a function,
// so that answering them allocates nothing.

// appendQueued appends "250 2.0.0 OK: queued as <id>", the answer to a
// delivered message.
func appendQueued(b []byte, id string) []byte {
	b = append(b, "250 2.0.0 OK: queued as "...)
	b = append(b, id...)
	return append(b, '\r', '\n')
}

// appendChunkOK appends "250 2.0.0 <n> octets received", the answer to a
// BDAT chunk that is not the LAST (RFC 3030 2).
func appendChunkOK(b []byte, n int64) []byte {
	b = append(b, "250 2.0.0 "...)
	b = strconv.AppendInt(b, n, 10)
	return append(b, " octets received\r\n"...)
}
