package proto

import "bytes"

// dataState tracks where DATA's dot handling stands relative to line
// starts. Only CRLF starts a line, so only <CRLF>.<CRLF> ends the message;
// inside a line the newline decoder (decode) carries its own state.
type dataState uint8

const (
	dsLineStart dataState = iota // after CRLF (or at the start of DATA)
	dsMid                        // inside a line: decode's
	dsDot                        // saw '.' at a line start
	dsDotCR                      // saw ".\r" at a line start
)

// feedBdat reads octets of the current chunk.
func (s *Session) feedBdat(p []byte) int {
	n := len(p)
	if int64(n) > s.bdatLeft {
		n = int(s.bdatLeft)
	}
	s.bdatLeft -= int64(n)
	if s.bdatRefuse == nil {
		s.decode(p[:n], false) // BDAT has no dot stuffing (RFC 3030 2)
	}
	if s.bdatLeft == 0 {
		s.endChunk()
	}
	return n
}

// endChunk answers a chunk whose octets have all been read.
func (s *Session) endChunk() {
	if r := s.bdatRefuse; r != nil {
		s.bdatRefuse = nil
		s.state = s.bdatPrev
		if r.Code >= 500 {
			s.reject(r)
		} else {
			s.reply(r)
		}
		return
	}
	if !s.bdatLast {
		s.state = stateRcpt
		s.out = appendChunkOK(s.outBuf(), s.bdatSize)
		return
	}
	if s.heldCR { // the message ends in CR
		s.heldCR = false
		s.bareCR()
	}
	s.endMessage()
}

var lf = []byte{'\n'}

// indexCRLF returns the index of the first CR or LF in b, or -1. Both
// searches are the runtime's vectorised IndexByte.
func indexCRLF(b []byte) int {
	j := bytes.IndexByte(b, '\n')
	if j < 0 {
		return bytes.IndexByte(b, '\r')
	}
	if k := bytes.IndexByte(b[:j], '\r'); k >= 0 {
		return k
	}
	return j
}

// decode is the newline decoder DATA and BDAT share: it turns CRLF into
// LF and reports a bare LF or CR under the BareNewline policy. A CR that
// ends p is held (heldCR) until the next octet tells whether it is bare,
// so any split of the input decodes the same. With dots (DATA) decode
// returns right after a CRLF that a '.' or the end of p follows,
// reporting dot, for DATA to look at that line start; otherwise it
// consumes all of p.
func (s *Session) decode(p []byte, dots bool) (n int, dot bool) {
	i := 0
	if s.heldCR && len(p) > 0 {
		s.heldCR = false
		if p[0] == '\n' {
			s.emit(lf)
			i = 1
			if dots && (i == len(p) || p[i] == '.') {
				return i, true
			}
		} else {
			s.bareCR()
		}
	}
	for i < len(p) {
		rest := p[i:]
		j := indexCRLF(rest)
		if j < 0 {
			s.emit(rest)
			return len(p), false
		}
		s.emit(rest[:j])
		i += j + 1
		switch {
		case rest[j] == '\n':
			s.bareLF()
		case i == len(p):
			s.heldCR = true
		case p[i] != '\n':
			s.bareCR()
		default:
			s.emit(lf)
			i++
			if dots && (i == len(p) || p[i] == '.') {
				return i, true
			}
		}
	}
	return i, false
}

// feedData decodes DATA octets: the newline decoder inside lines, and at
// line starts dot-unstuffing (RFC 5321 4.5.2) and the end at <CRLF>.<CRLF>
// only. It works on any split of the input, carrying its position in s.ds.
func (s *Session) feedData(p []byte) int {
	i := 0
	for i < len(p) {
		switch s.ds {
		case dsMid:
			n, dot := s.decode(p[i:], true)
			i += n
			if dot {
				s.ds = dsLineStart
			}
		case dsLineStart:
			if p[i] == '.' {
				s.ds = dsDot // dropped: a stuffed dot or the terminator
				i++
			} else {
				s.ds = dsMid
			}
		case dsDot:
			if p[i] == '\r' {
				s.ds = dsDotCR
				i++
			} else {
				s.ds = dsMid
			}
		case dsDotCR:
			if p[i] == '\n' {
				s.endMessage()
				return i + 1
			}
			// ".\rX": the CR goes to the decoder, which finds it bare.
			s.heldCR = true
			s.ds = dsMid
		}
	}
	return i
}

// emit stores decoded octets unless the message is being discarded.
func (s *Session) emit(p []byte) {
	if len(p) == 0 || s.tooBig || (s.bare && s.d.cfg.BareNewline == BareNewlineReject) {
		return
	}
	// Count on after a WriteBody refusal: a message over the limit gets
	// 552 however its data was cut into reads, not the handler's reply.
	s.bodyLen += int64(len(p))
	if s.bodyLen > s.d.cfg.MaxMessageBytes {
		s.tooBig = true
		return
	}
	if s.bodyErr != nil {
		return
	}
	if r := s.h.WriteBody(p); r != nil {
		s.bodyErr = r
	}
}

func (s *Session) bareLF() {
	if s.d.cfg.BareNewline == BareNewlineNormalize {
		s.emit(lf)
		return
	}
	s.bare = true
}

func (s *Session) bareCR() {
	if s.d.cfg.BareNewline == BareNewlineNormalize {
		s.emit(cr)
		return
	}
	s.bare = true
}

var cr = []byte{'\r'}

// endMessage runs when DATA's terminator or BDAT LAST's octets are read.
func (s *Session) endMessage() {
	s.inBdat = false
	switch {
	case s.bare && s.d.cfg.BareNewline == BareNewlineReject:
		s.close(ReplyBareNewline)
	case s.tooBig:
		s.state = stateReady
		s.resetTx()
		s.reply(ReplyTooBig)
	case s.bodyErr != nil:
		r := s.bodyErr
		s.state = stateReady
		s.resetTx()
		s.reply(r)
	default:
		r := s.h.CheckData()
		if r == Pending {
			s.state = stateRcpt // where the verdict returns to
			s.await(pending{stage: stageData})
			return
		}
		s.finishData(r)
	}
}

func (s *Session) finishData(r *Reply) {
	if r != nil {
		s.state = stateReady
		s.resetTx() // drops the body
		s.reply(r)
		return
	}
	s.state = stateWait
}
