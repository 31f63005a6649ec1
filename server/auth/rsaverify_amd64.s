#include "textflag.h"

// ROW adds x[0:l]·DX into t[0:l] (x at SI, t at DI, l/4 in CX) and
// leaves the carry limb in BX; it moves SI and DI past the row. Two carry
// chains run side by side: CF (ADCX) adds each product's high limb into
// the next low limb, OF (ADOX) adds t's limb; LEAQ and JCXZQ leave both
// flags alone, so the chains survive the loop. t + x·DX < 2^(64(l+1)), so
// the carry limb cannot overflow.
#define ROW(label, done) \
	XORQ  BX, BX \
label: \
	MULXQ 0(SI), R8, R9 \
	ADCXQ BX, R8 \
	ADOXQ 0(DI), R8 \
	MOVQ  R8, 0(DI) \
	MULXQ 8(SI), R8, BX \
	ADCXQ R9, R8 \
	ADOXQ 8(DI), R8 \
	MOVQ  R8, 8(DI) \
	MULXQ 16(SI), R8, R9 \
	ADCXQ BX, R8 \
	ADOXQ 16(DI), R8 \
	MOVQ  R8, 16(DI) \
	MULXQ 24(SI), R8, BX \
	ADCXQ R9, R8 \
	ADOXQ 24(DI), R8 \
	MOVQ  R8, 24(DI) \
	LEAQ  32(SI), SI \
	LEAQ  32(DI), DI \
	LEAQ  -1(CX), CX \
	JCXZQ done \
	JMP   label \
done: \
	MOVQ  $0, R8 \
	ADCXQ R8, BX \
	ADOXQ R8, BX

// func montMulADX(t, a, b, n *uint64, l int, m0inv uint64) uint64
//
// The word-by-word Montgomery multiplication of a and b modulo n, all of
// l limbs (l > 0, l % 4 == 0): for each limb b[i], t[i:] += a·b[i], then
// t[i:] += Y·n with Y = t[i]·m0inv, which makes t[i] zero; the window
// then slides one limb. t holds 2l zeroed limbs; a·b·R⁻¹ mod n, less than
// 2n, is left in t[l:2l] plus the returned carry times R.
TEXT ·montMulADX(SB), NOSPLIT, $0-56
	MOVQ t+0(FP), R10  // the window, t[i:]
	MOVQ b+16(FP), R11 // b[i]
	MOVQ l+32(FP), R12 // limbs left in b
	XORQ R13, R13      // the carry out of the previous t[l+i]

outer:
	// t[i:i+l] += a·b[i]; its carry limb to AX.
	MOVQ (R11), DX
	MOVQ a+8(FP), SI
	MOVQ R10, DI
	MOVQ l+32(FP), CX
	SHRQ $2, CX
	ROW(rowA, rowAdone)
	MOVQ BX, AX

	// Y = t[i]·m0inv mod 2^64; t[i:i+l] += n·Y; its carry limb in BX.
	MOVQ  (R10), DX
	IMULQ m0inv+40(FP), DX
	MOVQ  n+24(FP), SI
	MOVQ  R10, DI
	MOVQ  l+32(FP), CX
	SHRQ  $2, CX
	ROW(rowB, rowBdone)

	// t[l+i] = both carry limbs plus the previous carry; DI is at t[i+l].
	MOVQ $0, R9
	ADDQ AX, BX
	ADCQ $0, R9
	ADDQ R13, BX
	ADCQ $0, R9
	MOVQ BX, (DI)
	MOVQ R9, R13

	LEAQ 8(R10), R10
	LEAQ 8(R11), R11
	DECQ R12
	JNZ  outer

	MOVQ R13, ret+48(FP)
	RET
