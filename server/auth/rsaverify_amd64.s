#include "textflag.h"

// STEP4 adds x[0:4]·DX into t[0:4] (x at SI, t at DI) and moves SI and
// DI past them: CF (ADCX) adds each product's high limb into the next low
// limb, OF (ADOX) adds t's limb, and the last high limb is left in BX (the
// first one added is BX's on entry).
#define STEP4 \
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
	LEAQ  32(DI), DI

// ROW adds x[0:l]·DX into t[0:l] (x at SI, t at DI, l/4 in CX, at least
// 1) and leaves the carry limb in BX; it moves SI and DI past the row.
// The two carry chains of STEP4 run through the whole row: LEAQ and JCXZQ
// leave both flags alone. t + x·DX < 2^(64(l+1)), so the carry limb
// cannot overflow.
#define ROW(label, done) \
	XORQ  BX, BX \
label: \
	STEP4 \
	LEAQ  -1(CX), CX \
	JCXZQ done \
	JMP   label \
done: \
	MOVQ  $0, R8 \
	ADCXQ R8, BX \
	ADOXQ R8, BX

// REDUCE is one row of Montgomery reduction at the window R10 (t[i]):
// Y = t[i]·m0inv mod 2^64, then ROW adds n·Y into t[i:i+l], which makes
// t[i] zero, and leaves its carry limb in BX and DI at t[i+l].
#define REDUCE(m0inv, n, l, label, done) \
	MOVQ  (R10), DX \
	IMULQ m0inv, DX \
	MOVQ  n, SI \
	MOVQ  R10, DI \
	MOVQ  l, CX \
	SHRQ  $2, CX \
	ROW(label, done)

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
	REDUCE(m0inv+40(FP), n+24(FP), l+32(FP), rowB, rowBdone)

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

// STEP1 is one limb of a row, for the rows whose length is not a
// multiple of 4: t[0] += x[0]·DX plus the previous high limb (BX) on the
// CF chain and t's limb on the OF chain; the new high limb goes to BX.
#define STEP1 \
	MULXQ 0(SI), R8, R9 \
	ADCXQ BX, R8 \
	ADOXQ 0(DI), R8 \
	MOVQ  R8, 0(DI) \
	MOVQ  R9, BX \
	LEAQ  8(SI), SI \
	LEAQ  8(DI), DI

// func montSqrADX(t, a, n *uint64, l int, m0inv uint64) uint64
//
// The Montgomery square of a modulo n (l limbs, l > 0, l % 4 == 0) in
// separate steps (Koç, Acar and Kaliski's SOS): the square itself, about
// half the products of a multiplication since a[i]·a[j] = a[j]·a[i], then
// the reduction. t holds 2l zeroed limbs; a²·R⁻¹ mod n, less than 2n, is
// left in t[l:2l] plus the returned carry times R.
TEXT ·montSqrADX(SB), NOSPLIT, $0-48
	// 1. The products above the diagonal: for i < l-1, t[2i+1:i+l] +=
	// a[i+1:l]·a[i], the row's carry limb into t[i+l], still zero then
	// (row i-1 ended one limb lower).
	MOVQ t+0(FP), R10  // t[2i+1]
	ADDQ $8, R10
	MOVQ a+8(FP), R11  // a[i]
	MOVQ l+24(FP), R12
	DECQ R12           // the row's length, l-1-i

offdiag:
	TESTQ R12, R12
	JZ    double
	MOVQ  R12, R13
	ANDQ  $3, R13      // single limbs first
	MOVQ  R12, R14
	SHRQ  $2, R14      // then fours
	MOVQ  (R11), DX
	LEAQ  8(R11), SI
	MOVQ  R10, DI
	XORQ  BX, BX       // and CF and OF
	MOVQ  R13, CX

ones:
	JCXZQ fours0
	STEP1
	LEAQ  -1(CX), CX
	JMP   ones

fours0:
	MOVQ R14, CX

fours:
	JCXZQ rowdone
	STEP4
	LEAQ  -1(CX), CX
	JMP   fours

rowdone:
	MOVQ  $0, R8
	ADCXQ R8, BX
	ADOXQ R8, BX
	MOVQ  BX, (DI)     // t[i+l]
	LEAQ  16(R10), R10
	LEAQ  8(R11), R11
	DECQ  R12
	JMP   offdiag

double:
	// 2. t = 2t + the squares on the diagonal: CF carries the doubling
	// (ADCX of a limb with itself shifts it left through CF), OF the
	// squares' additions. a² < R², so nothing carries out of t[2l-1].
	MOVQ t+0(FP), DI
	MOVQ a+8(FP), SI
	MOVQ l+24(FP), CX
	XORQ AX, AX

diag:
	MOVQ  (SI), DX
	MULXQ DX, R8, R9
	MOVQ  0(DI), R10
	MOVQ  8(DI), R11
	ADCXQ R10, R10
	ADCXQ R11, R11
	ADOXQ R8, R10
	ADOXQ R9, R11
	MOVQ  R10, 0(DI)
	MOVQ  R11, 8(DI)
	LEAQ  8(SI), SI
	LEAQ  16(DI), DI
	LEAQ  -1(CX), CX
	JCXZQ reduce
	JMP   diag

reduce:
	// 3. The reduction, one limb of t at a time: Y = t[i]·m0inv, t[i:i+l]
	// += n·Y (t[i] becomes zero), the row's carry limb and the previous
	// one's carry into t[i+l], whose carry goes on to t[i+l+1].
	MOVQ t+0(FP), R10
	MOVQ l+24(FP), R12
	XORQ R13, R13

red:
	REDUCE(m0inv+32(FP), n+16(FP), l+24(FP), redrow, redrowdone)
	XORQ  R9, R9
	ADDQ  R13, BX
	ADCQ  $0, R9
	ADDQ  BX, (DI)
	ADCQ  $0, R9
	MOVQ  R9, R13
	LEAQ  8(R10), R10
	DECQ  R12
	JNZ   red

	MOVQ R13, ret+40(FP)
	RET
