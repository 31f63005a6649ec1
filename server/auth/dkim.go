package auth

import (
	"bytes"
	"context"
	"crypto/sha256"
	"io"
	"strings"
	"sync"
	"time"
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
	// Head is the header section as read (LF or CRLF line endings),
	// through the empty line. It is valid until VerifyDKIM returns.
	Head   []byte
	fields []field
	pre    []byte // the body bytes read with the header
	rest   io.Reader
	rd     *msgReader // pooled; returned by VerifyDKIM
}

// msgReader holds the buffers of one message being read, pooled: the
// header (and the first body bytes read with it), a chunk of the body,
// and the canonicalized output waiting to be hashed.
type msgReader struct {
	head  []byte
	chunk [32 << 10]byte
	out   [2][]byte
	hdr   []byte // a canonicalized header field
}

var readers = sync.Pool{New: func() any { return &msgReader{head: make([]byte, 0, 32<<10)} }}

// ReadMessage reads the header section of msg (LF or CRLF line endings;
// at most 1 MiB of it is looked at); the body is read later, by
// VerifyDKIM.
func ReadMessage(msg io.Reader) (*Message, error) {
	rd := readers.Get().(*msgReader)
	head := rd.head[:0]
	end := -1
	for end < 0 && len(head) < maxHeadBytes {
		if cap(head)-len(head) < 16<<10 {
			head = append(head, make([]byte, 32<<10)...)[:len(head)]
		}
		n, err := msg.Read(head[len(head):cap(head)])
		from := max(0, len(head)-2)
		head = head[:len(head)+n]
		end = headEnd(head, from)
		if err == io.EOF {
			break
		}
		if err != nil {
			rd.head = head
			rd.release()
			return nil, err
		}
	}
	rd.head = head
	if end < 0 {
		end = min(len(head), maxHeadBytes)
	}
	return &Message{Head: head[:end:end], pre: head[end:], rest: msg, rd: rd}, nil
}

// headEnd returns the end of the header section in b (after the empty
// line), looking at line ends from from on, or -1.
func headEnd(b []byte, from int) int {
	if from == 0 {
		// No header at all: the message starts with the empty line.
		if len(b) > 0 && b[0] == '\n' {
			return 1
		}
		if len(b) > 1 && b[0] == '\r' && b[1] == '\n' {
			return 2
		}
	}
	for i := from; i < len(b); {
		j := bytes.IndexByte(b[i:], '\n')
		if j < 0 {
			return -1
		}
		i += j + 1
		switch {
		case i < len(b) && b[i] == '\n':
			return i + 1
		case i+1 < len(b) && b[i] == '\r' && b[i+1] == '\n':
			return i + 2
		}
	}
	return -1
}

func (rd *msgReader) release() {
	if cap(rd.head) > 64<<10 {
		rd.head = make([]byte, 0, 32<<10) // do not keep a huge header
	}
	readers.Put(rd)
}

// Close releases m's buffers, unless VerifyDKIM did: Head is no longer
// valid after it.
func (m *Message) Close() {
	if m.rd != nil {
		m.rd.release()
	}
	m.rd, m.Head, m.fields, m.pre, m.rest = nil, nil, nil, nil, nil
}

// fieldsOf returns the message's header fields, split once.
func (m *Message) fieldsOf() []field {
	if m.fields == nil {
		m.fields = headerFields(m.Head)
	}
	return m.fields
}

// From returns the message's RFC 5322.From domains.
// The whole header section is searched (fieldsNamed), so that a From
// cannot hide behind maxHeaderFields other fields.
func (m *Message) From() FromDomains { return fromDomains(fieldsNamed(m.Head, "from")) }

// VerifyDKIM is the function VerifyDKIM for m; it reads the body, once,
// and releases m's buffers: m is not to be used after it.
func (m *Message) VerifyDKIM(ctx context.Context, r Resolver) []DKIMResult {
	rd := m.rd
	if rd == nil {
		return nil // used already
	}
	defer m.Close()
	fs := m.fieldsOf()
	var sigs []dkimSig
	var res []DKIMResult
	for _, f := range fieldsNamed(m.Head, "dkim-signature") {
		if len(sigs) == MaxSignatures {
			break
		}
		if nameIs(f.name, "dkim-signature") {
			sigs = append(sigs, dkimSig{field: f})
		}
	}
	if len(sigs) == 0 {
		return nil
	}
	res = make([]DKIMResult, len(sigs))
	now := time.Now()
	var lookups []int
	for i := range sigs {
		s := &sigs[i]
		s.res = &res[i]
		bad := parseSigTags(unfold(s.field.value), &s.tags)
		t := &s.tags
		*s.res = DKIMResult{Domain: strings.ToLower(stripWS(t.d)), Selector: stripWS(t.s), Algorithm: stripWS(t.a), Identifier: stripWS(t.i)}
		if bad == "" {
			bad = t.check(now)
		}
		if bad != "" {
			s.res.Status, s.res.Reason = PermError, "dkim: "+bad
			continue
		}
		lookups = append(lookups, i)
	}
	// The key lookups run at once, each bounded by ctx.
	fetch := func(i int) {
		s := &sigs[i]
		s.key, s.res.Status, s.res.Reason = lookupKey(ctx, r, &s.tags)
	}
	if len(lookups) == 1 {
		fetch(lookups[0])
	} else if len(lookups) > 1 {
		var wg sync.WaitGroup
		for _, i := range lookups {
			wg.Add(1)
			go func() {
				defer wg.Done()
				fetch(i)
			}()
		}
		wg.Wait()
	}
	var need [2]bool
	for _, i := range lookups {
		s := &sigs[i]
		if s.key == nil {
			continue
		}
		if s.res.Status, s.res.Reason = s.withKey(); s.res.Status == "" {
			need[s.body] = true
		}
	}
	if need[0] || need[1] {
		sums, err := m.hashBody(rd, need)
		for _, i := range lookups {
			s := &sigs[i]
			if s.key == nil || s.res.Status != "" {
				continue
			}
			if err != nil {
				s.res.Status, s.res.Reason = TempError, "reading message: "+err.Error()
				continue
			}
			s.res.Status, s.res.Reason = s.finish(fs, sums[s.body], rd.hdr[:0])
		}
	}
	for i := range res {
		if ctx.Err() != nil && res[i].Status != Pass {
			res[i].Status, res[i].Reason = TempError, "deadline passed"
		}
	}
	return res
}

// hashBody streams the body through the canonicalizations needed (0
// simple, 1 relaxed) and returns their SHA-256 sums.
func (m *Message) hashBody(rd *msgReader, need [2]bool) ([2][]byte, error) {
	var cs [2]bodyCanon
	for i := range cs {
		if need[i] {
			if rd.out[i] == nil {
				rd.out[i] = make([]byte, 0, 2*len(rd.chunk)+flushBytes)
			}
			cs[i].reset(sha256.New(), i == 1, rd.out[i])
		}
	}
	feed := func(p []byte) {
		for i := range cs {
			if need[i] {
				cs[i].write(p)
			}
		}
	}
	feed(m.pre)
	var err error
	for m.rest != nil {
		n, rerr := m.rest.Read(rd.chunk[:])
		feed(rd.chunk[:n])
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			err = rerr
			break
		}
	}
	var sums [2][]byte
	for i := range cs {
		if need[i] {
			sums[i] = cs[i].sum()
			rd.out[i] = cs[i].out[:0]
		}
	}
	return sums, err
}

// maxHeadBytes bounds the header section read; a longer one is treated
// as if it ended there.
const maxHeadBytes = 1 << 20

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
