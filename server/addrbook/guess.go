package addrbook

import (
	"errors"

	"github.com/nanomx/nanomx/spool"
)

// Guess is Lookup for a server that asks the mailbox server about the
// users it does not know (lmtp_check_rcpt): where Lookup answers
// ErrUnknownUser, Guess makes the address itself the mailbox, its local
// part lowercased and cut at the subaddress separator, as a configured
// mailbox would be reached. Only a name spool.Mailbox.Valid accepts, in a
// configured domain, becomes one (an ASCII domain: a U-label domain's
// users must be configured); anything else stays ErrUnknownUser. Guess
// allocates for a guessed mailbox; configured addresses cost what Lookup
// costs.
func (d *Book) Guess(addr []byte) (Targets, error) {
	t, err := d.Lookup(addr)
	if !errors.Is(err, ErrUnknownUser) {
		return t, err
	}
	at := lastIndexByte(addr, '@')
	if at <= 0 || !isASCII(addr[at+1:]) {
		return Targets{}, ErrUnknownUser
	}
	local, domain := make([]byte, at), make([]byte, len(addr)-at-1)
	lowerInto(local, addr[:at])
	lowerInto(domain, addr[at+1:])
	if d.sep != 0 {
		if i := indexByte(local, d.sep); i > 0 {
			local = local[:i]
		}
	}
	m := spool.Mailbox{Domain: string(domain), User: string(local)}
	if _, ok := d.domains[m.Domain]; !ok || !m.Valid() {
		return Targets{}, ErrUnknownUser
	}
	return Targets{b: &Book{boxes: []spool.Mailbox{m}}, ids: []int32{0}}, nil
}
