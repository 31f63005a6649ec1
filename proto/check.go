package proto

// Pending is what a Handler's Check method returns when its verdict is
// not known yet (a DNS lookup, a content scan): the session waits, reading
// nothing, until Resume. It is a sentinel, never written to a client.
var Pending = &Reply{Code: 0, Text: "pending"}

// MailParams are the MAIL parameters a check sees (RFC 1870, 6152, 6531).
type MailParams struct {
	Size     int64 // SIZE=, 0 when absent
	SMTPUTF8 bool  // SMTPUTF8
	Body8Bit bool  // BODY=8BITMIME
}

// stage is the command whose check is pending.
type stage uint8

const (
	stageHelo stage = iota + 1
	stageMail
	stageRcpt
	stageData
)

// pending is what a session keeps while a check's verdict is awaited: the
// state to return to and what finishing the command needs.
type pending struct {
	stage stage
	prev  state
	esmtp bool  // HELO: EHLO rather than HELO
	mark  int32 // where the command's argument starts in the arena
	mail  MailParams
}

// Pending reports that the session awaits a check's verdict (Resume).
func (s *Session) Pending() bool { return s.state == statePending }

// await enters statePending for p; the state to return to is the current.
func (s *Session) await(p pending) {
	p.prev = s.state
	s.pend = p
	s.state = statePending
}

// Resume passes the verdict of the pending check: nil accepts, any other
// reply (4xx or 5xx; Pending is not allowed) refuses, exactly as if the
// Check method had returned it. The command's reply is then in Output and
// Feed goes on with the input that waited. Resume does nothing when no
// check is pending (e.g. after Abort).
func (s *Session) Resume(r *Reply) {
	if s.state != statePending {
		return
	}
	if r == Pending {
		r = ReplyLocalError // a bug in the caller must not hang the session
	}
	p := s.pend
	s.pend = pending{}
	s.state = p.prev
	s.commands++ // a command completed: the caller restarts its deadline
	switch p.stage {
	case stageHelo:
		s.finishHelo(r, int(p.mark), p.esmtp)
	case stageMail:
		s.finishMail(r, int(p.mark), p.mail)
	case stageRcpt:
		s.finishRcpt(r, int(p.mark))
	case stageData:
		s.finishData(r)
	}
	s.tidy()
}

// refuse answers a check's refusal: a 421 ends the session, a 5xx counts
// against MaxBadCommands, a 4xx is only answered.
func (s *Session) refuse(r *Reply) {
	switch {
	case r.Code == 421:
		s.close(r)
	case r.Code >= 500:
		s.reject(r)
	default:
		s.reply(r)
	}
}
