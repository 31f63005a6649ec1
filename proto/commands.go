package proto

import "bytes"

// command runs one command line, CRLF included.
func (s *Session) command(line []byte) {
	s.commands++
	if len(line) < 2 || line[len(line)-2] != '\r' {
		// RFC 5321 2.3.8: lines end in CRLF. A bare LF in a command is how
		// smuggling and desynchronisation start, so the session ends.
		s.close(ReplyBareLFCommand)
		return
	}
	if len(line) > s.d.cfg.MaxLineBytes {
		limit := s.d.cfg.MaxLineBytes
		if hasPrefixFold(line, "mail ") || hasPrefixFold(line, "rcpt ") {
			limit = s.d.maxMailLine
		}
		if len(line) > limit {
			s.reject(ReplyLineTooLong)
			return
		}
	}
	line = line[:len(line)-2]
	if badCommandByte(line) {
		s.reject(ReplyBadCharacter)
		return
	}
	verb, arg := splitVerb(line)
	if c := s.d.cfg.Counters; c != nil {
		c.count(verb)
	}
	if s.tooMuchJunk(verb) {
		return
	}
	switch verb {
	case verbEhlo:
		s.handleHelo(arg, true)
	case verbHelo:
		s.handleHelo(arg, false)
	case verbMail:
		s.handleMail(arg)
	case verbRcpt:
		s.handleRcpt(arg)
	case verbData:
		s.handleData(arg)
	case verbBdat:
		s.handleBdat(arg)
	case verbRset:
		s.handleRset(arg)
	case verbNoop:
		s.reply(ReplyOK)
	case verbQuit:
		s.close(ReplyBye)
	case verbVrfy:
		// RFC 5321 3.5.3: 252 for every address, so VRFY confirms nothing.
		if len(arg) == 0 {
			s.reject(ReplyVrfySyntax)
			return
		}
		s.reply(ReplyVrfy)
	case verbHelp:
		s.reply(ReplyHelp)
	case verbStar:
		s.handleStartTLS(arg)
	case verbExpn, verbTurn, verbEtrn, verbAtrn, verbAuth, verbSend, verbSoml, verbSaml:
		s.reject(ReplyNotImplemented)
	default:
		s.reject(ReplyUnknownCommand)
	}
}

// tooMuchJunk counts a junk command (NOOP, RSET, HELP, VRFY, a repeated
// HELO/EHLO) and, past MaxJunkCommands, answers 421 instead of running it
// and closes. Junk commands are harmless one by one but keep a connection
// slot busy without moving mail.
func (s *Session) tooMuchJunk(verb uint32) bool {
	switch verb {
	case verbNoop, verbRset, verbHelp, verbVrfy:
	case verbHelo, verbEhlo:
		if !s.hello {
			return false
		}
	default:
		return false
	}
	s.junk++
	if s.junk <= s.d.maxJunk {
		return false
	}
	if verb == verbHelo || verb == verbEhlo {
		s.close(ReplyTooManyJunkHelo)
	} else {
		s.close(ReplyTooManyJunk)
	}
	return true
}

func (s *Session) handleHelo(arg []byte, esmtp bool) {
	if len(arg) == 0 {
		if esmtp {
			s.reject(ReplyEhloSyntax)
		} else {
			s.reject(ReplyHeloSyntax)
		}
		return
	}
	// Any first token is taken: real clients send underscores, address
	// literals and worse; it is only ever written, sanitised, into the
	// Received header.
	tok, _ := nextToken(arg)
	if len(tok) > maxHeloBytes {
		tok = tok[:maxHeloBytes]
	}
	// The name waits at the end of the arena until the verdict: a refused
	// HELO changes nothing (the transaction and the old name stay).
	s.takeTx()
	mark := len(s.arena)
	s.arena = append(s.arena, tok...)
	r := s.h.CheckHelo(s.arena[mark:], esmtp)
	if r == Pending {
		s.await(pending{stage: stageHelo, mark: int32(mark), esmtp: esmtp})
		return
	}
	s.finishHelo(r, mark, esmtp)
}

func (s *Session) finishHelo(r *Reply, mark int, esmtp bool) {
	if r != nil {
		s.arena = s.arena[:mark]
		s.refuse(r)
		return
	}
	s.helo = append(s.helo[:0], s.arena[mark:]...)
	s.resetTx() // RFC 5321 4.1.4: EHLO/HELO resets the transaction
	s.esmtp = esmtp
	s.hello = true
	s.state = stateReady
	if esmtp && !s.tls {
		s.out = append(s.outBuf(), s.d.ehloPlain...)
	} else if esmtp {
		s.out = append(s.outBuf(), s.d.ehlo...)
	} else {
		s.out = append(s.outBuf(), s.d.helo...)
	}
}

func (s *Session) handleStartTLS(arg []byte) {
	switch {
	case !s.d.cfg.StartTLS:
		s.reject(ReplyNotImplemented)
	case s.tls:
		s.reject(ReplyTLSActive)
	case len(arg) > 0:
		s.reject(ReplyStartTLSSyntax)
	case s.state > stateReady:
		s.reject(ReplyTLSInTransaction)
	default:
		if r := s.h.StartTLS(); r != nil {
			s.reply(r)
			return
		}
		s.state = stateTLS
	}
}

func (s *Session) handleMail(arg []byte) {
	switch {
	case s.state == stateGreeted:
		s.reject(ReplyNeedHelo)
		return
	case s.d.cfg.TLSRequired && !s.tls:
		s.reject(ReplyNeedTLS)
		return
	case s.state != stateReady:
		s.reject(ReplyNestedMail)
		return
	case !hasPrefixFold(arg, "from:"):
		s.reject(ReplyMailSyntax)
		return
	}
	arg = trimSpace(arg[len("from:"):])
	s.takeTx()
	mark := len(s.arena)
	arena, params, p, perr := parsePath(arg, s.arena)
	s.arena = arena
	switch {
	case perr == pathBadUTF8:
		s.arena = s.arena[:mark]
		s.reject(ReplyBadUTF8)
		return
	case perr != pathOK || (p.noDomain && !p.null):
		s.arena = s.arena[:mark]
		s.reject(ReplyBadSenderSyntax)
		return
	}
	var size int64
	var smtputf8, body8 bool
	for len(params) > 0 {
		var tok []byte
		tok, params = nextToken(params)
		key, val, hasVal := bytes.Cut(tok, []byte{'='})
		if !s.esmtp {
			s.arena = s.arena[:mark]
			s.reject(ReplyUnsupportedParam) // HELO advertised nothing
			return
		}
		var r *Reply
		switch {
		case equalFold(key, "size"):
			n, ok := parseDigits(val)
			if !ok {
				r = ReplyBadSizeParam
			}
			size = n
		case equalFold(key, "body"):
			switch {
			case equalFold(val, "7bit"):
			case equalFold(val, "8bitmime"):
				body8 = true
			case equalFold(val, "binarymime"):
				r = ReplyUnsupportedBody // RFC 3030 BINARYMIME is not offered
			default:
				r = ReplyBadBodyParam
			}
		case equalFold(key, "smtputf8") && !hasVal:
			smtputf8 = true
		default:
			r = ReplyUnsupportedParam // DSN's RET=/ENVID=, AUTH=, ...
		}
		if r != nil {
			s.arena = s.arena[:mark]
			s.reject(r)
			return
		}
	}
	if p.utf8 && !smtputf8 {
		s.arena = s.arena[:mark]
		s.reject(ReplyNeedSMTPUTF8) // RFC 6531 3.5
		return
	}
	if size > s.d.cfg.MaxMessageBytes {
		s.arena = s.arena[:mark]
		s.reply(ReplyTooBig) // RFC 1870 6.1
		return
	}
	mp := MailParams{Size: size, SMTPUTF8: smtputf8, Body8Bit: body8}
	r := s.h.CheckMail(s.arena[mark:], mp)
	if r == Pending {
		s.await(pending{stage: stageMail, mark: int32(mark), mail: mp})
		return
	}
	s.finishMail(r, mark, mp)
}

func (s *Session) finishMail(r *Reply, mark int, mp MailParams) {
	if r != nil {
		s.arena = s.arena[:mark]
		s.refuse(r)
		return
	}
	s.from = span{int32(mark), int32(len(s.arena) - mark)}
	s.utf8 = mp.SMTPUTF8
	s.declSize = mp.Size
	s.state = stateMail
	s.reply(ReplyMailOK)
}

func (s *Session) handleRcpt(arg []byte) {
	switch {
	case s.state == stateGreeted:
		s.reject(ReplyNeedHelo)
		return
	case s.state == stateReady:
		s.reject(ReplyNeedMail)
		return
	case s.inBdat:
		s.reject(ReplyCommandInBdat)
		return
	case !hasPrefixFold(arg, "to:"):
		s.reject(ReplyRcptSyntax)
		return
	case len(s.rcpts) >= s.d.cfg.MaxRcpts:
		s.reply(ReplyTooManyRcpts) // RFC 5321 4.5.3.1.10
		return
	}
	arg = trimSpace(arg[len("to:"):])
	mark := len(s.arena)
	arena, params, p, perr := parsePath(arg, s.arena)
	s.arena = arena
	addr := s.arena[mark:]
	var r *Reply
	switch {
	case perr == pathBadUTF8:
		r = ReplyBadUTF8
	case perr != pathOK || p.null || (p.noDomain && !equalFold(addr, "postmaster")):
		r = ReplyBadRcptSyntax
	case len(params) > 0:
		r = ReplyUnsupportedParam // no RCPT parameter is advertised (no DSN)
	case p.utf8 && !s.utf8:
		r = ReplyNeedSMTPUTF8
	default:
		r = s.h.CheckRcpt(addr)
		if r == Pending {
			s.await(pending{stage: stageRcpt, mark: int32(mark)})
			return
		}
	}
	s.finishRcpt(r, mark)
}

func (s *Session) finishRcpt(r *Reply, mark int) {
	if r != nil {
		s.arena = s.arena[:mark]
		s.refuse(r) // counts 550 5.1.1 against address guessing
		return
	}
	s.rcpts = append(s.rcpts, span{int32(mark), int32(len(s.arena) - mark)})
	s.state = stateRcpt
	s.reply(ReplyRcptOK)
}

func (s *Session) handleRset(arg []byte) {
	if len(arg) > 0 {
		s.reject(ReplyNoParams)
		return
	}
	s.resetTx()
	s.reply(ReplyOK)
}

func (s *Session) handleData(arg []byte) {
	switch {
	case len(arg) > 0:
		s.reject(ReplyNoParams)
		return
	case s.state == stateGreeted:
		s.reject(ReplyNeedHelo)
		return
	case s.state == stateReady:
		s.reject(ReplyNeedMail)
		return
	case s.inBdat:
		s.reject(ReplyDataInBdat) // RFC 3030 3: no DATA in a BDAT transaction
		return
	case s.state == stateMail:
		s.reject(ReplyNeedRcpt) // RFC 5321 3.3 allows 503 or 554
		return
	}
	if r := s.h.BeginBody(s.declSize); r != nil {
		s.reply(r)
		return
	}
	s.bodyBegun = true
	s.bodyLen = 0
	s.tooBig, s.bare, s.bodyErr = false, false, nil
	s.ds = dsLineStart
	s.heldCR = false
	s.state = stateData
	s.reply(ReplyStartData)
}

func (s *Session) handleBdat(arg []byte) {
	tok, rest := nextToken(arg)
	size, ok := parseDigits(tok)
	last := false
	if len(rest) > 0 {
		if equalFold(rest, "last") {
			last = true
		} else {
			ok = false
		}
	}
	if !ok {
		// Without a size the chunk's end is unknown, and its octets would
		// be read as commands: the session cannot go on (RFC 3030 2).
		s.close(ReplyBdatSyntax)
		return
	}
	s.bdatSize, s.bdatLeft, s.bdatLast = size, size, last
	s.bdatRefuse = nil
	s.bdatPrev = s.state
	switch {
	case s.state == stateGreeted:
		s.bdatRefuse = ReplyNeedHelo
	case !s.esmtp:
		// HELO advertised no CHUNKING (RFC 3030 2 needs EHLO), as it
		// advertised no MAIL parameter. An open transaction stays as it
		// is: the command was refused, no chunk failed.
		s.bdatRefuse = ReplyBdatAfterHelo
	case s.state == stateReady:
		s.bdatRefuse = ReplyNeedMail
	case s.state == stateMail:
		s.bdatRefuse = ReplyNeedRcpt
	case !s.inBdat:
		hint := s.declSize
		if hint == 0 {
			hint = size
		}
		if r := s.h.BeginBody(hint); r != nil {
			// RFC 3030 3: a failed chunk fails the transaction.
			s.resetTx()
			s.bdatPrev = stateReady
			s.bdatRefuse = r
			break
		}
		s.bodyBegun = true
		s.inBdat = true
		s.bodyLen = 0
		s.tooBig, s.bare, s.bodyErr = false, false, nil
		s.heldCR = false
	}
	// The chunk's octets are always read, even when refused, so that the
	// payload is never run as commands.
	s.state = stateBdat
	if size == 0 {
		s.endChunk()
	}
}
