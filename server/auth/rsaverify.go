package auth

import (
	"bytes"
	"crypto/rsa"
	"math/big"
	"math/bits"
)

// This file verifies RSASSA-PKCS1-v1_5 signatures with SHA-256 (RFC 8017
// 8.2.2), the rsa-sha256 of DKIM, with the key's Montgomery constants
// computed once per key record and kept with the parsed key.
//
// Why not crypto/rsa alone: rsa.VerifyPKCS1v15 rebuilds the modulus from
// the *rsa.PublicKey on every call, and that includes R² mod N, about a
// third of an RSA-2048 verification (profiled: 0.38 s of 1.02 s). A DKIM
// key is used for many messages and is cached here by its record's text,
// so those constants are worth keeping. Verification is a public-key
// operation: nothing here is secret, and variable time is fine.
//
// The arithmetic is the word-by-word Montgomery multiplication that
// crypto/internal/fips140/bigmod also uses (Gueron, "Efficient Software
// Implementations of Modular Exponentiation", Algorithm 4), on 64-bit
// limbs, its loop in assembly (montMulADX) where the CPU has MULX and
// ADX; elsewhere rsaMont is nil and crypto/rsa verifies. Squarings, 16 of
// the 18 steps for e = 65537, have a loop of their own (montSqrADX) that
// computes each cross product once: about a quarter fewer products.
// TestRSAVerifyAgrees checks it against crypto/rsa on random and mutated
// signatures.

// rsaMont is an RSA public key made ready for repeated verification.
type rsaMont struct {
	n     []uint64 // the modulus, least significant limb first
	rr    []uint64 // R² mod n, R = 2^(64·len(n))
	m0inv uint64   // -n⁻¹ mod 2^64
	e     uint64   // public exponent
	size  int      // the modulus's length in bytes, a signature's length
}

// sha256Prefix is the DER DigestInfo header of a SHA-256 digest (RFC 8017
// 9.2, note 1).
var sha256Prefix = []byte{0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00, 0x04, 0x20}

// newRSAMont prepares pub, or returns nil when this CPU or key is not one
// the fast path takes: then crypto/rsa verifies.
func newRSAMont(pub *rsa.PublicKey) *rsaMont {
	if !montOK || pub.E < 3 || pub.E&1 == 0 || pub.N.Sign() <= 0 || pub.N.Bit(0) == 0 {
		return nil
	}
	words := pub.N.Bits()
	if bits.UintSize != 64 || len(words)%4 != 0 || len(words) < 16 || len(words) > 128 {
		// 16 to 128 limbs in fours: every key size in use, 1,024 to 8,192
		// bits (parseKeyRecord refuses shorter ones); 16 limbs also leave
		// room for the 11 bytes of padding the encoding needs.
		return nil
	}
	k := &rsaMont{n: make([]uint64, len(words)), e: uint64(pub.E), size: pub.Size()}
	for i, w := range words {
		k.n[i] = uint64(w)
	}
	// -n⁻¹ mod 2^64 by Newton's iteration: each step doubles the bits
	// that are right, and n[0]·n[0] ≡ 1 mod 8 gives three to start.
	inv := k.n[0]
	for range 5 {
		inv *= 2 - k.n[0]*inv
	}
	k.m0inv = -inv
	// R² mod n, once per key; math/big is fine for a one-off.
	r2 := new(big.Int).Lsh(big.NewInt(1), uint(2*64*len(k.n)))
	k.rr = make([]uint64, len(k.n))
	for i, w := range r2.Mod(r2, pub.N).Bits() {
		k.rr[i] = uint64(w)
	}
	return k
}

// verifySHA256 reports whether sig is a valid signature of digest (a
// SHA-256) under the key.
func (k *rsaMont) verifySHA256(digest, sig []byte) bool {
	if len(sig) != k.size || len(digest) != 32 {
		return false
	}
	l := len(k.n)
	// The temporaries live on the stack for keys up to 4096 bits.
	var stack [5 * 64]uint64
	buf := stack[:]
	if 5*l > len(buf) {
		buf = make([]uint64, 5*l)
	}
	s := buf[4*l : 5*l]
	fromBytes(s, sig)
	if !less(s, k.n) {
		return false // RFC 8017 5.2.2: the representative must be < n
	}
	y := k.exp(s, buf[:4*l])

	// RFC 8017 9.2: EM = 0x00 0x01 PS(0xff…) 0x00 DigestInfo digest,
	// compared whole, as crypto/rsa does: no parsing of what was signed.
	var emStack [512]byte
	em := emStack[:]
	if k.size > len(em) {
		em = make([]byte, k.size)
	}
	em = toBytes(em[:k.size], y)
	ps := k.size - len(sha256Prefix) - 32 - 3
	if em[0] != 0 || em[1] != 1 || em[2+ps] != 0 {
		return false
	}
	for _, c := range em[2 : 2+ps] {
		if c != 0xff {
			return false
		}
	}
	rest := em[3+ps:]
	return bytes.Equal(rest[:len(sha256Prefix)], sha256Prefix) && bytes.Equal(rest[len(sha256Prefix):], digest)
}

// exp returns s^e mod n, s < n (limbs, least significant first), in buf,
// scratch of 4·len(n) limbs.
func (k *rsaMont) exp(s, buf []uint64) []uint64 {
	l := len(k.n)
	x, y, t := buf[:l], buf[l:2*l], buf[2*l:4*l]
	k.mul(x, s, k.rr, t) // x = s·R mod n
	copy(y, x)
	// Left to right over e's bits after the first; e is public. e is odd,
	// so the last step multiplies, by s itself: y·R·s·R⁻¹ = y·s leaves the
	// Montgomery domain without a multiplication of its own.
	for b := 62 - bits.LeadingZeros64(k.e); b >= 0; b-- {
		k.sqr(y, y, t)
		switch {
		case b == 0:
			k.mul(y, y, s, t)
		case k.e>>uint(b)&1 == 1:
			k.mul(y, y, x, t)
		}
	}
	return y
}

// mul sets z = a·b·R⁻¹ mod n; a and b are < n, z may alias either; t is
// scratch of 2·len(n) limbs.
func (k *rsaMont) mul(z, a, b, t []uint64) {
	t = t[:2*len(k.n)]
	clear(t)
	k.reduced(z, t, k.montLoop(t, a, b))
}

// sqr sets z = a²·R⁻¹ mod n, as mul(z, a, a, t) does with about three
// quarters of its work; z may alias a.
func (k *rsaMont) sqr(z, a, t []uint64) {
	t = t[:2*len(k.n)]
	clear(t)
	k.reduced(z, t, k.sqrLoop(t, a))
}

// reduced sets z to the loops' result, t[l:] + c·R < 2n, less n if it is
// n or more: one conditional subtraction.
func (k *rsaMont) reduced(z, t []uint64, c uint64) {
	copy(z, t[len(k.n):])
	if c != 0 || !less(z, k.n) {
		var borrow uint64
		for i := range z {
			z[i], borrow = bits.Sub64(z[i], k.n[i], borrow)
		}
	}
}

// less reports whether a < b, both of len(b) limbs.
func less(a, b []uint64) bool {
	for i := len(b) - 1; i >= 0; i-- {
		if a[i] != b[i] {
			return a[i] < b[i]
		}
	}
	return false
}

// fromBytes sets z (limbs, least significant first) to the big-endian b,
// which fills it exactly or less.
func fromBytes(z []uint64, b []byte) {
	clear(z)
	for i := range b {
		j := len(b) - 1 - i // byte j from the end is bits 8j to 8j+7
		z[j/8] |= uint64(b[i]) << (8 * uint(j%8))
	}
}

// toBytes writes x big-endian into b, which has room for x's value, and
// returns b.
func toBytes(b []byte, x []uint64) []byte {
	for i := range b {
		j := len(b) - 1 - i
		b[i] = byte(x[j/8] >> (8 * uint(j%8)))
	}
	return b
}
