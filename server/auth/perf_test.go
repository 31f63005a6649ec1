package auth

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rsa"
	"crypto/sha256"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/nanomx/nanomx/server/resolver"
	"github.com/nanomx/nanomx/server/resolver/dnstest"
)

// benchSetup: a DNS server with the keys, SPF and DMARC of signer.test, a
// caching resolver asking it, and a 10 KB message signed with rsa-sha256.
func benchSetup(b *testing.B) (*resolver.Resolver, keys, []byte) {
	return benchSetupBody(b, strings.Repeat(strings.Repeat("b", 98)+"\n", 100))
}

// benchText is 10 KB of text as the bench tool sends it: words of 2 to 9
// letters between single spaces, lines of 76 bytes, some ending in a space.
func benchText() string {
	var sb strings.Builder
	words := []string{"lorem", "ip", "dolorsit", "amet", "cons", "ectetur", "adipis", "cingeli"}
	for i := 0; sb.Len() < 10<<10; i++ {
		line := ""
		for j := i; len(line) < 76; j++ {
			line += words[j%len(words)] + " "
		}
		sb.WriteString(line[:76] + "\n")
	}
	return sb.String()
}

func benchSetupBody(b *testing.B, text string) (*resolver.Resolver, keys, []byte) {
	k := newKeys(&testing.T{})
	zone := k.zone + "signer.test. TXT \"v=spf1 ip4:192.0.2.0/24 -all\"\n_dmarc.signer.test. TXT \"v=DMARC1; p=reject\"\n" +
		"1.2.0.192.in-addr.arpa. PTR c1.signer.test.\nc1.signer.test. A 192.0.2.1\n"
	s := dnstest.New(b, zone)
	r, err := resolver.New(resolver.Config{Servers: []string{s.Addr()}, Timeout: time.Second})
	if err != nil {
		b.Fatal(err)
	}
	body := "From: Alice <alice@signer.test>\nTo: bob@example.test\nSubject: bench\n\n" + text
	msg := sign(&testing.T{}, body, "signer.test", "rsa", k.rsa, nil)
	return r, k, []byte(msg)
}

func BenchmarkVerifyDKIM(b *testing.B) {
	b.Run("letters", func(b *testing.B) { benchVerify(b, benchSetup) })
	b.Run("text", func(b *testing.B) {
		benchVerify(b, func(b *testing.B) (*resolver.Resolver, keys, []byte) { return benchSetupBody(b, benchText()) })
	})
}

// BenchmarkBodyHash is the relaxed body canonicalization and its SHA-256
// over 10 KB of text, without the signature check.
func BenchmarkBodyHash(b *testing.B) {
	text := []byte(strings.ReplaceAll(benchText(), "\n", "\r\n"))
	var c bodyCanon
	out := make([]byte, 0, 64<<10)
	b.SetBytes(int64(len(text)))
	b.ReportAllocs()
	for range b.N {
		c.reset(sha256.New(), true, out)
		c.write(text)
		c.sum(nil)
	}
}

func benchVerify(b *testing.B, setup func(*testing.B) (*resolver.Resolver, keys, []byte)) {
	r, _, msg := setup(b)
	ctx := context.Background()
	if got := VerifyDKIM(ctx, r, strings.NewReader(string(msg))); len(got) != 1 || got[0].Status != Pass {
		b.Fatal(got)
	}
	b.Run("reader", func(b *testing.B) {
		b.ReportAllocs()
		for range b.N {
			m, _ := ReadMessage(bytes.NewReader(msg))
			m.VerifyDKIM(ctx, r)
		}
	})
	b.Run("bytes", func(b *testing.B) {
		b.ReportAllocs()
		for range b.N {
			ReadMessageBytes(msg).VerifyDKIM(ctx, r)
		}
	})
}

func BenchmarkRSAVerifyOnly(b *testing.B) {
	_, k, msg := benchSetup(b)
	h := sha256.Sum256(msg)
	sig, _ := rsa.SignPKCS1v15(nil, k.rsa, crypto.SHA256, h[:])
	b.ReportAllocs()
	for range b.N {
		h := sha256.Sum256(msg)
		if err := rsa.VerifyPKCS1v15(&k.rsa.PublicKey, crypto.SHA256, h[:], sig); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkSPFCached(b *testing.B) {
	r, _, _ := benchSetup(b)
	ctx := context.Background()
	ip := netip.MustParseAddr("192.0.2.1")
	b.ReportAllocs()
	for range b.N {
		if res := CheckSPF(ctx, r, ip, "c1.signer.test", "alice@signer.test"); res.Status != Pass {
			b.Fatal(res)
		}
	}
}

func BenchmarkDMARCCached(b *testing.B) {
	r, _, _ := benchSetup(b)
	ctx := context.Background()
	b.ReportAllocs()
	for range b.N {
		if rec := LookupDMARC(ctx, r, "signer.test"); rec.Status != Pass {
			b.Fatal(rec)
		}
	}
}

func BenchmarkIPRevCached(b *testing.B) {
	r, _, _ := benchSetup(b)
	ctx := context.Background()
	ip := netip.MustParseAddr("192.0.2.1")
	b.ReportAllocs()
	for range b.N {
		if res := CheckIPRev(ctx, r, ip); res.Status != Pass {
			b.Fatal(res)
		}
	}
}

func BenchmarkFormatResults(b *testing.B) {
	ip := netip.MustParseAddr("192.0.2.1")
	res := Results{IPRev: &IPRevResult{Status: Pass, IP: ip, Name: "c1.signer.test"},
		SPF:  &SPFResult{Status: Pass, Identity: "alice@signer.test", Domain: "signer.test"},
		DKIM: []DKIMResult{{Status: Pass, Domain: "signer.test", Selector: "rsa", Algorithm: "rsa-sha256"}}, DKIMChecked: true,
		DMARC: []DMARCResult{{Status: Pass, Domain: "signer.test", Policy: "reject"}}, DMARCChecked: true}
	b.ReportAllocs()
	for range b.N {
		FormatResults("mx.example.test", res)
	}
}

// BenchmarkRSAVerify: one rsa-sha256 verification of a 2048-bit key's
// signature, by crypto/rsa and by the key's cached Montgomery constants.
func BenchmarkRSAVerify(b *testing.B) {
	_, k, _ := benchSetup(b)
	digest := sha256.Sum256([]byte("bench"))
	sig, _ := rsa.SignPKCS1v15(nil, k.rsa, crypto.SHA256, digest[:])
	b.Run("crypto-rsa", func(b *testing.B) {
		b.ReportAllocs()
		for range b.N {
			if err := rsa.VerifyPKCS1v15(&k.rsa.PublicKey, crypto.SHA256, digest[:], sig); err != nil {
				b.Fatal(err)
			}
		}
	})
	m := newRSAMont(&k.rsa.PublicKey)
	if m == nil {
		b.Skip("no MULX/ADX on this CPU")
	}
	b.Run("cached", func(b *testing.B) {
		b.ReportAllocs()
		for range b.N {
			if !m.verifySHA256(digest[:], sig) {
				b.Fatal("did not verify")
			}
		}
	})
}
