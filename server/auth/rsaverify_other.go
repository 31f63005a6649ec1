//go:build !amd64

package auth

// montOK: without the amd64 assembly, crypto/rsa verifies every signature.
const montOK = false

func (k *rsaMont) montLoop(t, a, b []uint64) uint64 {
	panic("auth: no Montgomery loop on this architecture")
}

func (k *rsaMont) sqrLoop(t, a []uint64) uint64 {
	panic("auth: no Montgomery loop on this architecture")
}
