package auth

import (
	"bufio"
	"context"
	"errors"
	"io"
	"strings"
	"sync"

	"github.com/emersion/go-msgauth/dkim"
)

// MaxSignatures bounds the DKIM signatures verified per message: each
// costs a key lookup and a hash of the body, so more are a DoS vector.
// Signatures past it are not reported.
const MaxSignatures = 5

// DKIMResult is the verdict on one DKIM signature.
type DKIMResult struct {
	Status Status
	// Domain is the signing domain (d=), Selector its s=, Algorithm its a=.
	Domain, Selector, Algorithm string
	// Identifier is the AUID (i=), when given.
	Identifier string
	Reason     string
}

// VerifyDKIM verifies the DKIM signatures of msg (a message with LF or
// CRLF line endings), at most MaxSignatures, fetching keys through r
// under ctx. rsa-sha256 keys need at least 1024 bits (RFC 8301), rsa-sha1
// is refused, ed25519-sha256 is supported (RFC 8463). An expired signature
// (x= in the past) is a permerror, a key that does not exist too (RFC
// 6376 6.1.2), DNS trouble a temperror; a signature with l= (a body
// length, which leaves what follows unsigned) is "policy": not trusted.
// A message without signatures yields none (an empty slice).
func VerifyDKIM(ctx context.Context, r Resolver, msg io.Reader) []DKIMResult {
	m, err := ReadMessage(msg)
	if err != nil {
		return []DKIMResult{{Status: TempError, Reason: "reading message: " + err.Error()}}
	}
	return m.VerifyDKIM(ctx, r)
}

// Message is a message being checked, its header section read.
type Message struct {
	// Head is the header section, CRLF line endings, through the empty
	// line.
	Head []byte
	rest io.Reader
	rd   *msgReader // pooled; returned by VerifyDKIM
}

// msgReader is the buffered LF-to-CRLF reader of one message, pooled:
// its 40 KB would otherwise be allocated (and zeroed) for every message.
type msgReader struct {
	c  crlfReader
	br *bufio.Reader
}

var readers = sync.Pool{New: func() any {
	m := &msgReader{}
	m.br = bufio.NewReaderSize(&m.c, 16<<10)
	return m
}}

// ReadMessage reads the header section of msg (LF or CRLF line endings;
// at most 1 MiB of it is looked at); the body is read later, by
// VerifyDKIM.
func ReadMessage(msg io.Reader) (*Message, error) {
	rd := readers.Get().(*msgReader)
	rd.c.r, rd.c.prevCR, rd.c.out = msg, false, nil
	rd.br.Reset(&rd.c)
	head, err := readHead(rd.br, maxHeadBytes)
	if err != nil {
		rd.release()
		return nil, err
	}
	return &Message{Head: head, rest: rd.br, rd: rd}, nil
}

func (rd *msgReader) release() {
	rd.c.r = nil
	rd.br.Reset(nil)
	readers.Put(rd)
}

// From returns the message's RFC 5322.From domains.
func (m *Message) From() FromDomains { return fromDomains(fieldsNamed(m.Head, "from")) }

// VerifyDKIM is the function VerifyDKIM for m; it reads the body, once.
func (m *Message) VerifyDKIM(ctx context.Context, r Resolver) []DKIMResult {
	head, br := m.Head, m.rest
	m.rest = strings.NewReader("")
	if m.rd != nil {
		defer m.rd.release()
		m.rd = nil
	}
	var sigs []DKIMResult
	for _, f := range fieldsNamed(head, "dkim-signature") {
		if strings.EqualFold(f.name, "dkim-signature") && len(sigs) < MaxSignatures {
			tags := parseTags(unfold(f.value))
			sigs = append(sigs, DKIMResult{Domain: strings.ToLower(tags["d"]), Selector: tags["s"], Algorithm: tags["a"], Identifier: tags["i"]})
		}
	}
	if len(sigs) == 0 {
		return nil
	}
	lookup := func(name string) ([]string, error) {
		txt, err := r.LookupTXT(ctx, name)
		return txt, normalizeErr(name, err)
	}
	vs, err := dkim.VerifyWithOptions(io.MultiReader(strings.NewReader(string(head)), br),
		&dkim.VerifyOptions{LookupTXT: lookup, MaxVerifications: MaxSignatures})
	if err != nil && !errors.Is(err, dkim.ErrTooManySignatures) {
		for i := range sigs {
			sigs[i].Status, sigs[i].Reason = PermError, err.Error()
		}
		return sigs
	}
	for i := range sigs {
		if i >= len(vs) {
			sigs[i].Status, sigs[i].Reason = PermError, "not verified"
			continue
		}
		v := vs[i]
		if v.Domain != "" {
			sigs[i].Domain = strings.ToLower(v.Domain)
		}
		sigs[i].Status, sigs[i].Reason = dkimStatus(v.Err)
		if ctx.Err() != nil && sigs[i].Status != Pass {
			sigs[i].Status, sigs[i].Reason = TempError, "deadline passed"
		}
	}
	return sigs
}

// dkimStatus maps a verification error to a result.
func dkimStatus(err error) (Status, string) {
	switch {
	case err == nil:
		return Pass, ""
	case dkim.IsTempFail(err):
		return TempError, err.Error()
	case dkim.IsPermFail(err):
		return PermError, err.Error()
	case strings.Contains(err.Error(), "body length tag"):
		return Policy, "l= tag: part of the body is unsigned"
	}
	return Fail, err.Error()
}

// maxHeadBytes bounds the header section read; a longer one is treated
// as if it ended there.
const maxHeadBytes = 1 << 20

// readHead returns the header section (through the empty line, if any)
// from br, at most limit bytes.
func readHead(br *bufio.Reader, limit int) ([]byte, error) {
	var head []byte
	for len(head) < limit {
		line, err := br.ReadSlice('\n')
		head = append(head, line...)
		if err == bufio.ErrBufferFull {
			continue
		}
		if err != nil {
			if err == io.EOF {
				return head, nil
			}
			return head, err
		}
		if len(line) <= 2 && strings.TrimRight(string(line), "\r\n") == "" {
			return head, nil
		}
	}
	return head, nil
}

// parseTags parses a tag=value list (RFC 6376 3.2); white space inside
// values is removed.
func parseTags(s string) map[string]string {
	m := make(map[string]string)
	for _, kv := range strings.Split(s, ";") {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			continue
		}
		m[strings.TrimSpace(k)] = strings.Join(strings.Fields(v), "")
	}
	return m
}

// crlfReader turns LF line endings into CRLF, which DKIM's canonical form
// has (RFC 6376 3.4); CRLF stays as it is.
type crlfReader struct {
	r      io.Reader
	prevCR bool
	buf    [8 << 10]byte
	outBuf [16 << 10]byte // a read of buf grows at most twice
	out    []byte
}

func (c *crlfReader) Read(p []byte) (int, error) {
	for len(c.out) == 0 {
		n, err := c.r.Read(c.buf[:min(len(c.buf), max(len(p)/2, 1))])
		o := c.outBuf[:0]
		for _, b := range c.buf[:n] {
			if b == '\n' && !c.prevCR {
				o = append(o, '\r')
			}
			o = append(o, b)
			c.prevCR = b == '\r'
		}
		c.out = o
		if n == 0 && err != nil {
			return 0, err
		}
	}
	n := copy(p, c.out)
	c.out = c.out[n:]
	return n, nil
}
