package proto

import "sync/atomic"

// Verb names a command for Counters. Verbs nanomx does not know are
// VerbOther; lines refused before their verb is read (too long, a bad
// character, a bare LF) are not counted as commands.
type Verb uint8

// The verbs Counters tells apart.
const (
	VerbHelo Verb = iota
	VerbEhlo
	VerbMail
	VerbRcpt
	VerbData
	VerbBdat
	VerbRset
	VerbNoop
	VerbQuit
	VerbVrfy
	VerbHelp
	VerbStartTLS
	VerbOther // anything else, the not implemented verbs included
	NumVerbs  // the number of Verb values
)

// String is the verb in lower case ("starttls", "other").
func (v Verb) String() string {
	switch v {
	case VerbHelo:
		return "helo"
	case VerbEhlo:
		return "ehlo"
	case VerbMail:
		return "mail"
	case VerbRcpt:
		return "rcpt"
	case VerbData:
		return "data"
	case VerbBdat:
		return "bdat"
	case VerbRset:
		return "rset"
	case VerbNoop:
		return "noop"
	case VerbQuit:
		return "quit"
	case VerbVrfy:
		return "vrfy"
	case VerbHelp:
		return "help"
	case VerbStartTLS:
		return "starttls"
	}
	return "other"
}

// Counters counts the commands of every session of a Dialect whose Config
// names it: one atomic add per command line, nothing else. It is safe for
// concurrent use and is read while sessions run (metrics).
type Counters struct {
	Commands [NumVerbs]atomic.Uint64 // command lines by Verb
}

// count counts one command line of the packed verb v (splitVerb).
func (c *Counters) count(v uint32) {
	var i Verb
	switch v {
	case verbHelo:
		i = VerbHelo
	case verbEhlo:
		i = VerbEhlo
	case verbMail:
		i = VerbMail
	case verbRcpt:
		i = VerbRcpt
	case verbData:
		i = VerbData
	case verbBdat:
		i = VerbBdat
	case verbRset:
		i = VerbRset
	case verbNoop:
		i = VerbNoop
	case verbQuit:
		i = VerbQuit
	case verbVrfy:
		i = VerbVrfy
	case verbHelp:
		i = VerbHelp
	case verbStar:
		i = VerbStartTLS
	default:
		i = VerbOther
	}
	c.Commands[i].Add(1)
}
