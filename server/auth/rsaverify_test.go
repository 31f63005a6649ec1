package auth

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"math/big"
	orand "math/rand"
	mrand "math/rand/v2"
	"sync"
	"testing"
)

// rsaTestKeys are generated once: a few sizes, and a 2048-bit key whose
// modulus is 2040 bits (its top limb short, its signatures 255 bytes).
// Generated at first use: other tests (and fuzz workers) do not wait.
var rsaTestKeys = sync.OnceValue(func() []*rsa.PrivateKey {
	var ks []*rsa.PrivateKey
	for _, n := range []int{1024, 2040, 2048, 3072} {
		k, err := rsa.GenerateKey(rand.Reader, n)
		if err != nil {
			panic(err)
		}
		ks = append(ks, k)
	}
	return ks
})

// rawSign returns em^d mod n as a signature: what a signer of any
// encoded message em (valid or not) would send.
func rawSign(k *rsa.PrivateKey, em []byte) []byte {
	m := new(big.Int).SetBytes(em)
	return new(big.Int).Exp(m, k.D, k.N).FillBytes(make([]byte, k.Size()))
}

// emFor is the PKCS #1 v1.5 encoding of a SHA-256 digest for key k.
func emFor(k *rsa.PrivateKey, digest []byte) []byte {
	em := make([]byte, k.Size())
	em[1] = 1
	ps := len(em) - len(sha256Prefix) - len(digest) - 3
	for i := range ps {
		em[2+i] = 0xff
	}
	copy(em[3+ps:], sha256Prefix)
	copy(em[3+ps+len(sha256Prefix):], digest)
	return em
}

// TestRSAVerifyAgrees: the Montgomery verification answers what
// crypto/rsa answers, for good signatures and for every kind of bad one:
// bits flipped, the wrong digest, a representative ≥ n, a wrong length,
// and signatures of malformed encodings (padding, prefix, hash).
func TestRSAVerifyAgrees(t *testing.T) {
	if !montOK {
		noFastPath(t)
		return
	}
	rng := mrand.New(mrand.NewPCG(1, 2))
	for _, k := range rsaTestKeys() {
		m := newRSAMont(&k.PublicKey)
		if m == nil {
			t.Fatalf("%d bits: no fast path", k.N.BitLen())
		}
		if pk := parseKeyRecord("v=DKIM1; p=" + pkixB64(t, &k.PublicKey)); pk.mont == nil {
			t.Fatalf("%d bits: a parsed key record has no fast path", k.N.BitLen())
		}
		check := func(what string, digest, sig []byte) bool {
			t.Helper()
			want := rsa.VerifyPKCS1v15(&k.PublicKey, crypto.SHA256, digest, sig) == nil
			if got := m.verifySHA256(digest, sig); got != want {
				t.Fatalf("%d bits, %s: got %v, crypto/rsa says %v", k.N.BitLen(), what, got, want)
			}
			return want
		}
		for i := range 40 {
			digest := sha256.Sum256([]byte{byte(i), byte(k.N.BitLen())})
			sig, err := rsa.SignPKCS1v15(nil, k, crypto.SHA256, digest[:])
			if err != nil {
				t.Fatal(err)
			}
			if !check("good", digest[:], sig) {
				t.Fatal("a good signature failed")
			}
			bad := append([]byte(nil), sig...)
			bad[rng.IntN(len(bad))] ^= 1 << rng.IntN(8)
			check("a bit flipped", digest[:], bad)
			other := digest
			other[rng.IntN(32)] ^= 0x80
			check("another digest", other[:], sig)
			check("short", digest[:], sig[1:])
			check("long", digest[:], append([]byte{0}, sig...))
		}
		digest := sha256.Sum256([]byte("x"))
		// Representatives n and above, and the extremes below.
		check("n", digest[:], k.N.FillBytes(make([]byte, k.Size())))
		check("n+1", digest[:], new(big.Int).Add(k.N, big.NewInt(1)).FillBytes(make([]byte, k.Size())))
		check("0", digest[:], make([]byte, k.Size()))
		check("1", digest[:], new(big.Int).SetInt64(1).FillBytes(make([]byte, k.Size())))
		check("n-1", digest[:], new(big.Int).Sub(k.N, big.NewInt(1)).FillBytes(make([]byte, k.Size())))
		// Well-formed signatures of malformed encodings.
		good := emFor(k, digest[:])
		if !check("raw good", digest[:], rawSign(k, good)) {
			t.Fatal("the raw encoding does not verify")
		}
		mutate := map[string]func(em []byte){
			"first byte 1":        func(em []byte) { em[0] = 1 },
			"block type 2":        func(em []byte) { em[1] = 2 },
			"a padding byte fe":   func(em []byte) { em[5] = 0xfe },
			"separator not 0":     func(em []byte) { em[len(em)-32-len(sha256Prefix)-1] = 0xff },
			"sha-1 prefix":        func(em []byte) { em[len(em)-32-6] = 0x1a },
			"prefix length":       func(em []byte) { em[len(em)-32-len(sha256Prefix)+1] = 0x30 },
			"digest's last byte":  func(em []byte) { em[len(em)-1] ^= 1 },
			"digest's first byte": func(em []byte) { em[len(em)-32] ^= 1 },
		}
		for what, f := range mutate {
			em := append([]byte(nil), good...)
			f(em)
			if check(what, digest[:], rawSign(k, em)) {
				t.Fatalf("%s verified", what)
			}
		}
		// Short padding: the digest moved left, garbage after it.
		em := make([]byte, k.Size())
		copy(em, good[:2])
		copy(em[2:], good[3:])
		if check("padding one short", digest[:], rawSign(k, em)) {
			t.Fatal("padding one short verified")
		}
	}
}

// TestRSAMontExp: s^e mod n for random s and exponents other than 65537
// (crypto/rsa's keys all have that one), against math/big.
func TestRSAMontExp(t *testing.T) {
	if !montOK {
		noFastPath(t)
		return
	}
	rng := orand.New(orand.NewSource(3))
	for _, k := range rsaTestKeys() {
		for _, e := range []int{3, 5, 17, 65537, 1<<31 - 1, 0x7654321} {
			m := newRSAMont(&rsa.PublicKey{N: k.N, E: e})
			for range 10 {
				s := new(big.Int).Rand(rng, k.N)
				want := new(big.Int).Exp(s, big.NewInt(int64(e)), k.N)
				limbs := make([]uint64, len(m.n))
				fromBytes(limbs, s.FillBytes(make([]byte, m.size)))
				got := new(big.Int).SetBytes(toBytes(make([]byte, m.size), m.exp(limbs, make([]uint64, 4*len(m.n)))))
				if got.Cmp(want) != 0 {
					t.Fatalf("%d bits, e=%d: s^e mod n differs from math/big", k.N.BitLen(), e)
				}
			}
		}
	}
	// Keys the fast path leaves to crypto/rsa.
	k := rsaTestKeys()[0]
	for _, pub := range []*rsa.PublicKey{
		{N: k.N, E: 2}, {N: k.N, E: 1}, {N: new(big.Int).Lsh(k.N, 1), E: 65537},
		{N: new(big.Int).Rsh(k.N, 64), E: 65537}, // 960 bits: not a multiple of 256
	} {
		if newRSAMont(pub) != nil {
			t.Errorf("e=%d, %d bits: took the fast path", pub.E, pub.N.BitLen())
		}
	}
}

// TestRSAMontSqr: the squaring loop answers what the multiplication does
// with both operands the same, on random values and on those that carry
// the most (n-1, limbs of all ones), for every key size up to 8,192 bits;
// and s^65537 mod n is math/big's.
func TestRSAMontSqr(t *testing.T) {
	if !montOK {
		noFastPath(t)
		return
	}
	rng := orand.New(orand.NewSource(4))
	pubs := []*rsa.PublicKey{}
	for _, k := range rsaTestKeys() {
		pubs = append(pubs, &k.PublicKey)
	}
	// Odd moduli of the largest sizes, too long to generate keys for:
	// the squaring and multiplication need only an odd n, and exp is
	// checked against math/big on them.
	for _, bits := range []int{4096, 8192} {
		n := new(big.Int).Rand(rng, new(big.Int).Lsh(big.NewInt(1), uint(bits)))
		n.SetBit(n, bits-1, 1).SetBit(n, 0, 1)
		pubs = append(pubs, &rsa.PublicKey{N: n, E: 65537})
	}
	for _, k := range pubs {
		m := newRSAMont(k)
		l := len(m.n)
		limbs := func(v *big.Int) []uint64 {
			z := make([]uint64, l)
			fromBytes(z, v.FillBytes(make([]byte, m.size)))
			return z
		}
		ones := new(big.Int).Sub(new(big.Int).Lsh(big.NewInt(1), uint(k.N.BitLen()-1)), big.NewInt(1))
		values := []*big.Int{big.NewInt(0), big.NewInt(1), new(big.Int).Sub(k.N, big.NewInt(1)), ones}
		for range 50 {
			values = append(values, new(big.Int).Rand(rng, k.N))
		}
		for _, v := range values {
			a := limbs(v)
			want, got := make([]uint64, l), make([]uint64, l)
			m.mul(want, a, a, make([]uint64, 2*l))
			m.sqr(got, a, make([]uint64, 2*l))
			for i := range want {
				if got[i] != want[i] {
					t.Fatalf("%d bits: sqr(%x) differs from mul at limb %d", k.N.BitLen(), v, i)
				}
			}
		}
		s := new(big.Int).Rand(rng, k.N)
		got := new(big.Int).SetBytes(toBytes(make([]byte, m.size), m.exp(limbs(s), make([]uint64, 4*l))))
		if want := new(big.Int).Exp(s, big.NewInt(65537), k.N); got.Cmp(want) != 0 {
			t.Fatalf("%d bits: s^65537 mod n differs from math/big", k.N.BitLen())
		}
	}
}

// noFastPath: on a CPU without MULX and ADX every key is left to
// crypto/rsa, and a parsed key says so.
func noFastPath(t *testing.T) {
	for _, k := range rsaTestKeys() {
		if newRSAMont(&k.PublicKey) != nil {
			t.Fatal("a fast path without the instructions it needs")
		}
		if pk := parseKeyRecord("v=DKIM1; p=" + pkixB64(t, &k.PublicKey)); pk.rsa == nil || pk.mont != nil {
			t.Fatalf("parsed key: rsa %v, mont %v", pk.rsa != nil, pk.mont != nil)
		}
	}
}

func pkixB64(t *testing.T, pub *rsa.PublicKey) string {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(der)
}

// FuzzRSAVerify: any signature bytes get crypto/rsa's answer.
func FuzzRSAVerify(f *testing.F) {
	k := rsaTestKeys()[2]
	digest := sha256.Sum256([]byte("fuzz"))
	sig, _ := rsa.SignPKCS1v15(nil, k, crypto.SHA256, digest[:])
	f.Add(sig, false)
	f.Add(emFor(k, digest[:]), true)
	m := newRSAMont(&k.PublicKey)
	if m == nil {
		f.Skip("no MULX/ADX")
	}
	f.Fuzz(func(t *testing.T, b []byte, raw bool) {
		if raw && len(b) == k.Size() {
			// b as an encoding, signed: reaches the padding checks.
			b = rawSign(k, b)
			if b == nil {
				return
			}
		}
		want := rsa.VerifyPKCS1v15(&k.PublicKey, crypto.SHA256, digest[:], b) == nil
		if got := m.verifySHA256(digest[:], b); got != want {
			t.Fatalf("got %v, crypto/rsa says %v", got, want)
		}
	})
}
