package bench

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"

	"github.com/emersion/go-msgauth/dkim"
)

// signer DKIM-signs the run's messages (Config.DKIMKey): rsa-sha256 or
// ed25519-sha256 by the key's type, relaxed/relaxed, over the fields that
// are the same in every message of a run (From, To, Date, MIME-Version,
// Content-Type) and the body. So a signature depends only on the
// recipient and the body's length, and is made once for each: signing
// costs the load nothing, and the server verifies every message in full.
type signer struct {
	key      crypto.Signer
	from     string
	domain   string
	selector string
	size     int // length of a DKIM-Signature field, CRLF included

	mu   sync.Mutex
	sigs map[sigKey][]byte
}

type sigKey struct {
	to      string
	bodyLen int
}

// dkimHeaderKeys are the fields signed.
var dkimHeaderKeys = []string{"From", "To", "Date", "MIME-Version", "Content-Type"}

// newSigner loads the PEM private key (PKCS #8, or PKCS #1 RSA) from
// path, for the domain of from.
func newSigner(path, selector, from string) (*signer, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, fmt.Errorf("%s: no PEM block", path)
	}
	var key any
	if key, err = x509.ParsePKCS8PrivateKey(blk.Bytes); err != nil {
		if key, err = x509.ParsePKCS1PrivateKey(blk.Bytes); err != nil {
			return nil, fmt.Errorf("%s: %v", path, err)
		}
	}
	cs, ok := key.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("%s: not a signing key", path)
	}
	at := strings.LastIndexByte(from, '@')
	if at < 0 {
		return nil, errors.New("-dkim-key needs a -from address with a domain")
	}
	if selector == "" {
		selector = DefaultDKIMSelector
	}
	s := &signer{key: cs, from: from, domain: from[at+1:], selector: selector, sigs: make(map[sigKey][]byte)}
	f, err := s.sign("x@x", "", nil)
	if err != nil {
		return nil, err
	}
	s.size = len(f)
	return s, nil
}

// DefaultDKIMSelector is the selector of -dkim-key without -dkim-selector.
const DefaultDKIMSelector = "bench"

// field returns the DKIM-Signature field for a message to to with body.
func (s *signer) field(to, date string, body []byte) []byte {
	k := sigKey{to, len(body)}
	s.mu.Lock()
	f := s.sigs[k]
	s.mu.Unlock()
	if f != nil {
		return f
	}
	f, err := s.sign(to, date, body)
	if err != nil {
		return nil // the message goes unsigned: the server says dkim=none
	}
	s.mu.Lock()
	if len(s.sigs) < 10000 {
		s.sigs[k] = f
	}
	s.mu.Unlock()
	return f
}

// sign makes the field: the signed fields as appendHeader writes them.
func (s *signer) sign(to, date string, body []byte) ([]byte, error) {
	var in bytes.Buffer
	in.WriteString("From: <" + s.from + ">\r\nTo: <" + to + ">\r\nDate: " + date +
		"\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n")
	in.Write(body)
	in.WriteString("\r\n") // the end of data's first CRLF ends the body
	var out bytes.Buffer
	err := dkim.Sign(&out, &in, &dkim.SignOptions{
		Domain: s.domain, Selector: s.selector, Signer: s.key,
		HeaderCanonicalization: dkim.CanonicalizationRelaxed, BodyCanonicalization: dkim.CanonicalizationRelaxed,
		HeaderKeys: dkimHeaderKeys,
	})
	if err != nil {
		return nil, err
	}
	b := out.Bytes()
	end := bytes.Index(b, []byte("\r\nFrom: "))
	if end < 0 {
		return nil, errors.New("dkim: no signature field")
	}
	return append([]byte(nil), b[:end+2]...), nil
}
