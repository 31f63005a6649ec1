package auth

import (
	"bytes"
	"context"
	"crypto/sha256"
	"hash"
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
	split  bool   // fields holds the header's fields
	pre    []byte // the body bytes read with the header
	rest   io.Reader
	rd     *msgReader // pooled; returned by VerifyDKIM
}

// msgReader holds the buffers of one message being read, pooled: the
// header (and the first body bytes read with it; ReadMessage only), a
// chunk of the body (the same), the canonicalized output waiting to be
// hashed, and the scratch of the verification.
type msgReader struct {
	head   []byte
	chunk  []byte
	out    [2][]byte
	hdr    []byte // a canonicalized header field
	fields []field
	sigs   []dkimSig
	used   []int
	b64    []byte // a base64 value, white space removed
	dec    []byte // decoded bh= and b= values
	bodyH  [2]hash.Hash
	headH  hash.Hash
	sums   [2][sha256.Size]byte
	digest [sha256.Size]byte
}

var readers = sync.Pool{New: func() any { return &msgReader{} }}

// ReadMessage reads the header section of msg (LF or CRLF line endings;
// at most 1 MiB of it is looked at); the body is read later, by
// VerifyDKIM.
func ReadMessage(msg io.Reader) (*Message, error) {
	rd := readers.Get().(*msgReader)
	head := rd.head[:0]
	if head == nil {
		head = make([]byte, 0, 32<<10)
	}
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

// ReadMessageBytes is ReadMessage for a message held in memory: nothing
// is copied, msg must stay unchanged until VerifyDKIM returns (or Close).
func ReadMessageBytes(msg []byte) *Message {
	rd := readers.Get().(*msgReader)
	end := -1
	if len(msg) > maxHeadBytes {
		end = headEnd(msg[:maxHeadBytes], 0)
	} else {
		end = headEnd(msg, 0)
	}
	if end < 0 {
		end = min(len(msg), maxHeadBytes)
	}
	return &Message{Head: msg[:end:end], pre: msg[end:], rd: rd}
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
		rd.head = nil // do not keep a huge header
	}
	// Drop what points into the message, and huge scratch.
	clear(rd.fields[:cap(rd.fields)])
	rd.fields = rd.fields[:0]
	if cap(rd.fields) > 256 {
		rd.fields = nil
	}
	clear(rd.sigs[:cap(rd.sigs)])
	rd.sigs = rd.sigs[:0]
	if cap(rd.hdr) > 64<<10 {
		rd.hdr = nil
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
	if !m.split {
		m.fields, m.split = appendFields(m.rd.fields[:0], m.Head, ""), true
		m.rd.fields = m.fields[:0]
	}
	return m.fields
}

// named returns the fields named name: from fieldsOf when it holds every
// field of the header, else by a scan of the whole header section.
func (m *Message) named(name string, dst []field) []field {
	fs := m.fieldsOf()
	if len(fs) >= maxHeaderFields {
		return append(dst, fieldsNamed(m.Head, name)...)
	}
	for _, f := range fs {
		if nameIs(f.name, name) {
			dst = append(dst, f)
		}
	}
	return dst
}

// From returns the message's RFC 5322.From domains.
// The whole header section is searched (named), so that a From cannot
// hide behind maxHeaderFields other fields.
func (m *Message) From() FromDomains {
	var buf [2]field
	return fromDomains(m.named("from", buf[:0]))
}

// VerifyDKIM is the function VerifyDKIM for m; it reads the body, once,
// and releases m's buffers: m is not to be used after it.
func (m *Message) VerifyDKIM(ctx context.Context, r Resolver) []DKIMResult {
	rd := m.rd
	if rd == nil {
		return nil // used already
	}
	defer m.Close()
	fs := m.fieldsOf()
	if len(fs) >= maxHeaderFields {
		// The fields past the bound still count as signatures.
		fs = fieldsNamed(m.Head, "dkim-signature")
	}
	sigs := rd.sigs[:0]
	for _, f := range fs {
		if len(sigs) == MaxSignatures {
			break
		}
		if nameIs(f.name, "dkim-signature") {
			sigs = append(sigs, dkimSig{field: f})
		}
	}
	rd.sigs = sigs[:0]
	fs = m.fields
	if len(sigs) == 0 {
		return nil
	}
	res := make([]DKIMResult, len(sigs))
	now := time.Now()
	var lookupsBuf [MaxSignatures]int
	lookups := lookupsBuf[:0]
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
	if len(lookups) == 1 {
		s := &sigs[lookups[0]]
		s.key, s.res.Status, s.res.Reason = lookupKey(ctx, r, &s.tags)
	} else if len(lookups) > 1 {
		var wg sync.WaitGroup
		for _, i := range lookups {
			wg.Add(1)
			go func(s *dkimSig) {
				defer wg.Done()
				s.key, s.res.Status, s.res.Reason = lookupKey(ctx, r, &s.tags)
			}(&sigs[i])
		}
		wg.Wait()
	}
	var need [2]bool
	dec := rd.dec[:0]
	for _, i := range lookups {
		s := &sigs[i]
		if s.key == nil {
			continue
		}
		s.res.Status, s.res.Reason, dec = s.withKey(rd, dec)
		if s.res.Status == "" {
			need[s.body] = true
		}
	}
	rd.dec = dec[:0]
	if need[0] || need[1] {
		err := m.hashBody(rd, need)
		for _, i := range lookups {
			s := &sigs[i]
			if s.key == nil || s.res.Status != "" {
				continue
			}
			if err != nil {
				s.res.Status, s.res.Reason = TempError, "reading message: "+err.Error()
				continue
			}
			s.res.Status, s.res.Reason = s.finish(rd, fs, rd.sums[s.body][:])
		}
	}
	for i := range res {
		if ctx.Err() != nil && res[i].Status != Pass {
			res[i].Status, res[i].Reason = TempError, "deadline passed"
		}
	}
	return res
}

// readChunk is the body bytes read, or fed from memory, at a time.
const readChunk = 32 << 10

// hashBody streams the body through the canonicalizations needed (0
// simple, 1 relaxed) into their SHA-256 sums, rd.sums.
func (m *Message) hashBody(rd *msgReader, need [2]bool) error {
	var cs [2]bodyCanon
	for i := range cs {
		if need[i] {
			if rd.out[i] == nil {
				rd.out[i] = make([]byte, 0, 2*readChunk+flushBytes)
			}
			if rd.bodyH[i] == nil {
				rd.bodyH[i] = sha256.New()
			}
			rd.bodyH[i].Reset()
			cs[i].reset(rd.bodyH[i], i == 1, rd.out[i])
		}
	}
	feed := func(p []byte) {
		for len(p) > 0 {
			n := min(len(p), readChunk) // bounds the output pending
			for i := range cs {
				if need[i] {
					cs[i].write(p[:n])
				}
			}
			p = p[n:]
		}
	}
	feed(m.pre)
	var err error
	if m.rest != nil && rd.chunk == nil {
		rd.chunk = make([]byte, readChunk)
	}
	for m.rest != nil {
		n, rerr := m.rest.Read(rd.chunk)
		feed(rd.chunk[:n])
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			err = rerr
			break
		}
	}
	for i := range cs {
		if need[i] {
			cs[i].sum(rd.sums[i][:0])
			rd.out[i] = cs[i].out[:0]
		}
	}
	return err
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
