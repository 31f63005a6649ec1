package auth

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ed25519"
	"fmt"
	"io"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/emersion/go-msgauth/dkim"
)

// TestDKIMAgreesWithMsgauth: our verifier and go-msgauth's dkim.Verify
// give the same verdict (pass or not) on messages signed with every
// canonicalization, with bodies that end in empty lines, white space
// lines, no line end at all, nothing, long lines across read chunks,
// folded and repeated (oversigned) header fields; also once each byte of
// the body or a signed field is changed; read whole, a byte at a time,
// and in halves, LF and CRLF, and held in memory (ReadMessageBytes).
func TestDKIMAgreesWithMsgauth(t *testing.T) {
	k := newKeys(t)
	_, r := setup(t, k.zone)
	bodies := []string{
		"Hello.\n",
		"",
		"\n\n\n",
		"no line end",
		"trailing  white space \t \nand\ttabs\t\there\n\n \n\t\n",
		" leading space\n\n\nthree empty lines before\n",
		"lone\rCR inside\n",
		strings.Repeat("x", 40<<10) + "\n" + strings.Repeat("y ", 20<<10) + "\n",
		strings.Repeat("line of text  with  spaces \n", 3000) + "\n\n",
	}
	heads := []string{
		"From: Alice <alice@signer.test>\nTo: bob@example.test\nSubject: hi\n",
		"From: Alice\n  <alice@signer.test>\nTo: bob@example.test,\n\tcarol@example.test\nSubject:   folded\n   subject  \nSubject: second\n",
		"from :  Alice <alice@signer.test>\nTO: bob@example.test\n",
	}
	cans := []dkim.Canonicalization{dkim.CanonicalizationSimple, dkim.CanonicalizationRelaxed}
	n := 0
	for hi, head := range heads {
		for bi, body := range bodies {
			for _, hc := range cans {
				for _, bc := range cans {
					for _, key := range []struct {
						sel string
						s   crypto.Signer
					}{{"rsa", k.rsa}, {"ed", k.ed}} {
						msg := sign(t, head+"\n"+body, "signer.test", key.sel, key.s, func(o *dkim.SignOptions) {
							o.HeaderCanonicalization, o.BodyCanonicalization = hc, bc
							o.HeaderKeys = []string{"From", "To", "Subject", "Subject", "Date"}
						})
						name := fmt.Sprintf("head %d body %d %s/%s %s", hi, bi, hc, bc, key.sel)
						variants := []string{msg}
						if len(body) > 0 && bi != 7 && bi != 8 {
							// Change one byte of the body, and one of a signed field.
							at := strings.Index(msg, "\n\n") + 2 + len(body)/2
							variants = append(variants, msg[:at]+"Z"+msg[at+1:])
						}
						variants = append(variants, strings.Replace(msg, "bob@", "eve@", 1))
						for vi, v := range variants {
							n++
							want := msgauthPass(t, v, r)
							if vi == 0 && !want {
								t.Fatalf("%s: go-msgauth does not pass its own signature", name)
							}
							for ri, rd := range []func(string) io.Reader{
								func(s string) io.Reader { return strings.NewReader(s) },
								func(s string) io.Reader { return iotest.OneByteReader(strings.NewReader(s)) },
								func(s string) io.Reader { return iotest.HalfReader(strings.NewReader(s)) },
								func(s string) io.Reader { return strings.NewReader(strings.ReplaceAll(s, "\n", "\r\n")) },
							} {
								if ri == 1 && len(v) > 20000 {
									continue // a byte at a time: slow, and the halves cover the chunks
								}
								got := VerifyDKIM(context.Background(), r, rd(v))
								if len(got) != 1 || (got[0].Status == Pass) != want {
									t.Errorf("%s variant %d reader %d: %+v, go-msgauth pass=%v", name, vi, ri, got, want)
								}
							}
							// Held in memory (ReadMessageBytes), LF and CRLF.
							for ei, held := range []string{v, strings.ReplaceAll(v, "\n", "\r\n")} {
								got := ReadMessageBytes([]byte(held)).VerifyDKIM(context.Background(), r)
								if len(got) != 1 || (got[0].Status == Pass) != want {
									t.Errorf("%s variant %d in memory %d: %+v, go-msgauth pass=%v", name, vi, ei, got, want)
								}
							}
						}
					}
				}
			}
		}
	}
	t.Logf("%d messages compared", n)
}

// msgauthPass verifies msg (LF endings) with go-msgauth.
func msgauthPass(t *testing.T, msg string, r Resolver) bool {
	vs, err := dkim.VerifyWithOptions(strings.NewReader(strings.ReplaceAll(msg, "\n", "\r\n")), &dkim.VerifyOptions{
		LookupTXT: func(name string) ([]string, error) { return r.LookupTXT(context.Background(), name) },
	})
	if err != nil {
		t.Fatal(err)
	}
	return len(vs) == 1 && vs[0].Err == nil
}

// TestDKIMKeyCache: a key record is parsed once, and a changed record
// (another text) is parsed anew: a revoked key stops passing at once.
func TestDKIMKeyCache(t *testing.T) {
	k := newKeys(t)
	s, r := setup(t, k.zone)
	msg := sign(t, plainMsg, "signer.test", "ed", k.ed, nil)
	for range 2 {
		if got := VerifyDKIM(context.Background(), r, strings.NewReader(msg)); got[0].Status != Pass {
			t.Fatalf("%+v", got)
		}
	}
	keyCache.Lock()
	var cached *dkimKey
	for txt, key := range keyCache.m {
		if strings.Contains(txt, "k=ed25519") && bytes.Equal(key.ed, k.ed.Public().(ed25519.PublicKey)) {
			cached = key
		}
	}
	keyCache.Unlock()
	if cached == nil {
		t.Fatal("key not cached")
	}
	if err := s.Set(`ed._domainkey.signer.test. TXT "v=DKIM1; k=ed25519; p="`); err != nil {
		t.Fatal(err)
	}
	if got := VerifyDKIM(context.Background(), r, strings.NewReader(msg)); got[0].Status != PermError || !strings.Contains(got[0].Reason, "revoked") {
		t.Fatalf("revoked key: %+v", got)
	}
}

// TestBodyCanon: the canonical forms of RFC 6376 3.4.5's example, and
// the empty body of each.
func TestBodyCanon(t *testing.T) {
	for _, tc := range []struct {
		in            string
		simple, relax string
	}{
		{" C \r\nD \t E\r\n\r\n\r\n", " C \r\nD \t E\r\n", " C\r\nD E\r\n"},
		{"", "\r\n", ""},
		{"\n \n\t\n", "\r\n \r\n\t\r\n", ""},
		{"a\n\n\nb", "a\r\n\r\n\r\nb\r\n", "a\r\n\r\n\r\nb\r\n"},
		{"a\r", "a\r\r\n", "a\r\r\n"},
	} {
		for i, want := range []string{tc.simple, tc.relax} {
			var got bytes.Buffer
			var c bodyCanon
			c.reset(rawHash{&got}, i == 1, nil)
			for j := 0; j < len(tc.in); j++ {
				c.write([]byte{tc.in[j]}) // a byte at a time: every boundary
			}
			c.sum(nil)
			if got.String() != want {
				t.Errorf("%q canon %d: %q, want %q", tc.in, i, got.String(), want)
			}
		}
	}
}

// rawHash is a hash.Hash that keeps what it is fed.
type rawHash struct{ *bytes.Buffer }

func (rawHash) Sum(b []byte) []byte { return b }
func (rawHash) Size() int           { return 0 }
func (rawHash) BlockSize() int      { return 1 }

// FuzzBodyCanon checks the streaming canonicalizations, fed in chunks of
// every size from 1 to 7 and whole, against refCanon, which applies RFC
// 6376 3.4.3 and 3.4.4 to the whole body at once. The seeds cover the
// relaxed fast path (text whose white space runs are single spaces) and
// its edges: a space ending a chunk, a run split across chunks, tabs;
// and the lines hashed from where they are (bodyCanon.lines): a space
// ending a CRLF line, a line of one space, empty lines between, a bare LF.
func FuzzBodyCanon(f *testing.F) {
	for _, s := range []string{
		"", "a", " C \r\nD \t E\r\n\r\n\r\n", "one two three \nfour  five\tsix\n\n",
		"lorem ipsum dolor sit \r\namet cons ectetur\r\n", "a \n b\n  \n\t\n", "x\r\ry \r\n", " \r\n", "a b",
		"ab cd \r\nef\r\n \r\ngh \r\n\r\n\r\nij\r\nk \r\n", "a\r\nb\nc \r\n\r\n", "a\r\r\n b \r\n",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		for relaxed := range 2 {
			want := refCanon(in, relaxed == 1)
			for chunk := 1; chunk <= len(in)+1 && chunk <= 8; chunk++ {
				size := chunk
				if chunk == 8 {
					size = len(in) + 1 // whole
				}
				var got bytes.Buffer
				var c bodyCanon
				c.reset(rawHash{&got}, relaxed == 1, nil)
				for p := []byte(in); len(p) > 0; {
					n := min(size, len(p))
					c.write(p[:n])
					p = p[n:]
				}
				c.sum(nil)
				if got.String() != want {
					t.Fatalf("%q relaxed=%d in chunks of %d: %q, want %q", in, relaxed, size, got.String(), want)
				}
			}
		}
	})
}

// refCanon canonicalizes a whole body: a line ends at LF, with the CR
// before it (a lone CR is text); relaxed turns each run of SP and HTAB
// into one SP and drops it at the end of a line; empty lines at the end go;
// every line ends in CRLF; an empty body is CRLF in simple, nothing in
// relaxed.
func refCanon(in string, relaxed bool) string {
	lines := strings.Split(in, "\n")
	if strings.HasSuffix(in, "\n") || in == "" {
		lines = lines[:len(lines)-1] // no line after the last LF
	}
	for i, l := range lines {
		if i < len(lines)-1 || strings.HasSuffix(in, "\n") {
			l = strings.TrimSuffix(l, "\r")
		}
		if relaxed {
			var b strings.Builder
			ws := false
			for _, c := range []byte(l) {
				if c == ' ' || c == '\t' {
					ws = true
					continue
				}
				if ws {
					b.WriteByte(' ')
					ws = false
				}
				b.WriteByte(c)
			}
			l = b.String()
		}
		lines[i] = l
	}
	for len(lines) > 0 && lines[len(lines)-1] == "" {
		lines = lines[:len(lines)-1]
	}
	if len(lines) == 0 {
		if relaxed {
			return ""
		}
		return "\r\n"
	}
	return strings.Join(lines, "\r\n") + "\r\n"
}

// TestCanonHeaderEmptyB: the DKIM-Signature field canonicalized with its
// b= value left out in place is the field whose value had it cut out
// first, for b= first, in the middle, last, folded, absent, and a tag
// whose name only ends in b.
func TestCanonHeaderEmptyB(t *testing.T) {
	withoutB := func(v []byte) []byte {
		at, end, ok := bValue(v)
		if !ok {
			return v
		}
		return append(append([]byte{}, v[:at]...), v[end:]...)
	}
	values := []string{
		" v=1; a=rsa-sha256; d=example.org; s=sel; h=from; bh=AAAA; b=QUJD\n\tREVG\n",
		" b=QUJDREVG; v=1; d=example.org\r\n",
		" v=1;\n b = QU JD\n ; d=example.org; bh=AAAA\n",
		" v=1; bb=x; xb=y; d=example.org\n",
		" v=1;\tb=\n",
		" v=1; b=QUJD",
		"",
	}
	for _, v := range values {
		f := field{name: []byte("DKIM-Signature"), raw: []byte("DKIM-Signature "), value: []byte(v)}
		cut := f
		cut.value = withoutB([]byte(v))
		for _, relaxed := range []bool{false, true} {
			got := canonHeader(nil, f, relaxed, true)
			want := canonHeader(nil, cut, relaxed, false)
			if !bytes.Equal(got, want) {
				t.Errorf("%q relaxed=%v:\n got %q\nwant %q", v, relaxed, got, want)
			}
		}
	}
}

// TestUnfoldIsTagB: unfold and isTagB answer as their plain definitions
// (every CR and LF dropped, then trimmed; trimmed equal to "b").
func TestUnfoldIsTagB(t *testing.T) {
	for _, v := range []string{"", "b", " b ", "\tb\r\n", "bb", "b b", "xb", " \r\n", "a\r\n b\n\tc\r", "\rx\ry\n", "  lone\rcr  ", "v=1;\r\n\ta=b;\r\r\n c\n\nd\r"} {
		if got, want := isTagB([]byte(v)), strings.Trim(v, " \t\r\n") == "b"; got != want {
			t.Errorf("isTagB(%q) = %v", v, got)
		}
		want := strings.TrimSpace(strings.NewReplacer("\r", "", "\n", "").Replace(strings.TrimSpace(v)))
		if got := unfold([]byte(v)); got != want {
			t.Errorf("unfold(%q) = %q, want %q", v, got, want)
		}
	}
}
