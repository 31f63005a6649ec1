package auth

import "golang.org/x/sys/cpu"

// montOK: the assembly needs MULX (BMI2) and ADCX/ADOX (ADX).
var montOK = cpu.X86.HasBMI2 && cpu.X86.HasADX

// montMulADX is the Montgomery multiplication's loop, in
// rsaverify_amd64.s: t (2l limbs, zeroed) ends as a·b·R⁻¹ mod n + c·R in
// t[l:], c returned; l is a positive multiple of 4.
//
//go:noescape
func montMulADX(t, a, b, n *uint64, l int, m0inv uint64) uint64

// montLoop runs the Montgomery multiplication's loop for k.mul.
func (k *rsaMont) montLoop(t, a, b []uint64) uint64 {
	l := len(k.n)
	_, _, _ = t[2*l-1], a[l-1], b[l-1]
	return montMulADX(&t[0], &a[0], &b[0], &k.n[0], l, k.m0inv)
}

// montSqrADX is the Montgomery squaring's loop, in rsaverify_amd64.s: t
// (2l limbs, zeroed) ends as a²·R⁻¹ mod n + c·R in t[l:], c returned; l
// is a positive multiple of 4.
//
//go:noescape
func montSqrADX(t, a, n *uint64, l int, m0inv uint64) uint64

// sqrLoop runs the Montgomery squaring's loop for k.sqr.
func (k *rsaMont) sqrLoop(t, a []uint64) uint64 {
	l := len(k.n)
	_, _ = t[2*l-1], a[l-1]
	return montSqrADX(&t[0], &a[0], &k.n[0], l, k.m0inv)
}
