package spool

// Scratch files: when messages are handed to another server (LMTP)
// instead of the Maildirs, the spool still writes large bodies to disk as
// they arrive (a Spill), but into a scratch Maildir, and gives the
// finished file to the caller instead of publishing it (FinishSpill).
// Content gives the same bytes for a message held in memory. Either way
// the bytes are what the Maildir file would hold.

import (
	"errors"
	"os"
)

// ScratchMailbox is where spilled messages bound elsewhere are written:
// <root>/scratch.nanomx.invalid/spill/. The .invalid top-level domain
// (RFC 2606) is never a real domain, so no configured mailbox can be it.
// Configure it (Config.Mailboxes) so that start-up removes the files a
// crash left there.
var ScratchMailbox = Mailbox{Domain: "scratch.nanomx.invalid", User: "spill"}

// Content returns the bytes of m's Maildir file, as segments to be
// written in order: the trace fields, m.Headers, then the body minus the
// Return-Path fields the client sent. The segments share m's memory
// (Trace, Headers, Body). It fails with ErrMailLoop past the hop limit,
// as a delivery would. m must not have a Spill (use FinishSpill).
func Content(m *Message) ([][]byte, error) {
	if m == nil || m.Spill != nil {
		return nil, errors.New("spool: Content needs a message in memory")
	}
	return segments(m)
}

// segments are the bytes of an in-memory message's file, in order: the
// trace fields and the checks' fields, then the client's bytes minus any
// Return-Path it sent, the checks' cuts and the fields DropField names.
func segments(m *Message) ([][]byte, error) {
	var body []byte
	if m.Body != nil {
		body = m.Body.B
	}
	trace := m.Trace
	if len(m.Headers) > 0 {
		trace = append(trace[:len(trace):len(trace)], m.Headers...)
	}
	cut, err := cutSpans(m.Cut, int64(len(body)))
	if err != nil {
		return nil, err
	}
	segs, _, err := fileHeadCut(trace, body, false, cut, m.DropField)
	return segs, err
}

// FinishSpill is Submit for a spilled message (m.Spill set, m.Body its
// tail) that is not to be published: once the tail and m.Headers are
// written, done gets the path of the complete file, which then belongs to
// the caller (it must remove it); or an error, and no file is left. The
// file is not synced: it is a scratch copy, never acknowledged as stored.
// done runs once, on a worker. Like Submit, FinishSpill fails only after
// Close or for a spill already submitted or aborted; done is then never
// called.
func (s *Spool) FinishSpill(m *Message, done func(path string, err error)) error {
	if m == nil || m.Spill == nil {
		return errors.New("spool: FinishSpill needs a spilled message")
	}
	sp := m.Spill
	if sp.s != s {
		s.releaseBody(m)
		return errors.New("spool: spill of another spool")
	}
	j := job{m: m, done: func(err error) { done("", err) }, scratch: done}
	if err := s.acceptSpill(sp, j); err != nil {
		s.releaseBody(m)
		sp.Abort()
		return err
	}
	return nil
}

// finishScratch is Spill.deliver for FinishSpill: it completes the file
// (tail, headers, no sync), closes it and hands its path over.
func (sp *Spill) finishScratch(j job, answered *bool) {
	if !sp.ended {
		if err := sp.complete(j.m.Body, j.m.Headers, j.m.Cut, true); err != nil {
			sp.fail(err)
		}
	}
	sp.s.releaseBody(j.m)
	sp.ended = true
	*answered = true
	if sp.err != nil {
		err := sp.err
		if sp.d != nil {
			err = sp.d.finish(0, err)
		}
		sp.answer(j, err)
		return
	}
	path := sp.d.tmp[0]
	sp.d.tmp = nil
	if j.scratch != nil {
		sp.s.callScratch(j, path)
	}
}

// callScratch runs FinishSpill's callback; a panic there is logged and
// the file removed.
func (s *Spool) callScratch(j job, path string) {
	defer func() {
		if p := recover(); p != nil {
			s.log.Error().Str("id", j.m.ID).Interface("panic", p).Msg("scratch callback panicked")
			_ = os.Remove(path)
		}
	}()
	j.scratch(path, nil)
}

// ScratchDir returns the Maildir that FinishSpill's files are written in.
func (s *Spool) ScratchDir() string { return ScratchMailbox.Path(s.root) }
