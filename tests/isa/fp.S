# F and D: every rounding mode, fflags, NaN boxing and canonical NaNs, min/max with signed zeros
# and sNaN, conversions with saturation, FCLASS, fused multiply-add signs, FS=Off.
.include "common.inc"

# FLAGS n: check fflags against \expected, then clear them
.macro FLAGS expected, n
    frflags s5
    CHECK s5, \expected, \n
    fsflags zero
.endm

.text
.globl test_main
test_main:
    addi sp, sp, -16
    sd ra, 0(sp)
    li t0, 1 << 13
    csrs mstatus, t0
    fsflags zero
    li t0, 0x3f800000
    fmv.w.x f1, t0          # 1.0f
    li t0, 0x40400000
    fmv.w.x f2, t0          # 3.0f
    fdiv.s f3, f1, f2, rne
    fmv.x.w s2, f3
    CHECK s2, 0x3eaaaaab, 1
    FLAGS 1, 2
    fdiv.s f3, f1, f2, rtz
    fmv.x.w s2, f3
    CHECK s2, 0x3eaaaaaa, 3
    fdiv.s f3, f1, f2, rdn
    fmv.x.w s2, f3
    CHECK s2, 0x3eaaaaaa, 4
    fdiv.s f3, f1, f2, rup
    fmv.x.w s2, f3
    CHECK s2, 0x3eaaaaab, 5
    fdiv.s f3, f1, f2, rmm
    fmv.x.w s2, f3
    CHECK s2, 0x3eaaaaab, 6
    # -1/3 rounds the other way for RDN/RUP
    fneg.s f4, f1
    fdiv.s f3, f4, f2, rdn
    fmv.x.w s2, f3
    CHECK s2, 0xffffffffbeaaaaab, 7
    fdiv.s f3, f4, f2, rup
    fmv.x.w s2, f3
    CHECK s2, 0xffffffffbeaaaaaa, 8
    # dynamic rounding from frm
    fsrmi 1
    fdiv.s f3, f1, f2
    fmv.x.w s2, f3
    CHECK s2, 0x3eaaaaaa, 9
    fsrmi 0
    fsflags zero
    # divide by zero, invalid
    fmv.w.x f5, zero
    fdiv.s f3, f1, f5
    fmv.x.w s2, f3
    CHECK s2, 0x7f800000, 10
    FLAGS 8, 11
    fdiv.s f3, f5, f5
    fmv.x.w s2, f3
    CHECK s2, 0x7fc00000, 12
    FLAGS 0x10, 13
    # overflow and underflow
    li t0, 0x7f7fffff
    fmv.w.x f6, t0
    fmul.s f3, f6, f6
    FLAGS 5, 14
    li t0, 0x00800000
    fmv.w.x f6, t0
    fmul.s f3, f6, f6
    FLAGS 3, 15
    # NaN boxing: an unboxed single reads as the canonical NaN
    li t0, 0x3f800000
    fmv.d.x f7, t0
    fadd.s f3, f7, f1
    fmv.x.d s2, f3
    CHECK s2, 0xffffffff7fc00000, 16
    fsgnj.s f3, f1, f1
    fmv.x.d s2, f3
    CHECK s2, 0xffffffff3f800000, 17
    # min/max with signed zeros and NaNs
    li t0, 0x80000000
    fmv.w.x f8, t0           # -0
    fmin.s f3, f5, f8
    fmv.x.w s2, f3
    CHECK s2, 0xffffffff80000000, 18
    fmax.s f3, f8, f5
    fmv.x.w s2, f3
    CHECK s2, 0, 19
    li t0, 0x7f800001
    fmv.w.x f9, t0           # sNaN
    fmin.s f3, f9, f1
    fmv.x.w s2, f3
    CHECK s2, 0x3f800000, 20
    FLAGS 0x10, 21
    fmax.s f3, f9, f9
    fmv.x.w s2, f3
    CHECK s2, 0x7fc00000, 22
    fsflags zero
    # compares: FEQ quiet, FLT signalling
    li t0, 0x7fc00000
    fmv.w.x f10, t0          # qNaN
    feq.s s2, f10, f1
    CHECK s2, 0, 23
    FLAGS 0, 24
    flt.s s2, f10, f1
    FLAGS 0x10, 25
    fle.s s2, f8, f5
    CHECK s2, 1, 26
    # conversions and saturation
    fcvt.w.s s2, f10, rtz
    CHECK s2, 0x7fffffff, 27
    FLAGS 0x10, 28
    fcvt.wu.s s2, f4, rtz
    CHECK s2, 0, 29
    FLAGS 0x10, 30
    li t0, 0x4f000000        # 2^31
    fmv.w.x f11, t0
    fcvt.wu.s s2, f11, rtz
    CHECK s2, 0xffffffff80000000, 31
    fcvt.l.s s2, f11, rtz
    CHECK s2, 0x80000000, 32
    li t0, 0x3fc00000        # 1.5
    fmv.w.x f12, t0
    fcvt.w.s s2, f12, rne
    CHECK s2, 2, 33
    fcvt.w.s s2, f12, rtz
    CHECK s2, 1, 34
    FLAGS 1, 35
    li t0, -7
    fcvt.s.l f3, t0
    fmv.x.w s2, f3
    CHECK s2, 0xffffffffc0e00000, 36
    # FCLASS
    fclass.s s2, f8
    CHECK s2, 1 << 3, 37
    fclass.s s2, f9
    CHECK s2, 1 << 8, 38
    fclass.s s2, f10
    CHECK s2, 1 << 9, 39
    fclass.s s2, f4
    CHECK s2, 1 << 1, 40
    # fused multiply-add signs: 1*3+3, -(1*3)+3, -(1*3)-3
    fmadd.s f3, f1, f2, f2
    fmv.x.w s2, f3
    CHECK s2, 0x40c00000, 41
    fnmsub.s f3, f1, f2, f2
    fmv.x.w s2, f3
    CHECK s2, 0, 42
    fnmadd.s f3, f1, f2, f2
    fmv.x.w s2, f3
    CHECK s2, 0xffffffffc0c00000, 43
    fsflags zero
    # double precision
    li t0, 0x3ff0000000000000
    fmv.d.x f20, t0
    li t0, 0x4008000000000000
    fmv.d.x f21, t0
    fdiv.d f22, f20, f21, rtz
    fmv.x.d s2, f22
    CHECK s2, 0x3fd5555555555555, 44
    fdiv.d f22, f20, f21, rup
    fmv.x.d s2, f22
    CHECK s2, 0x3fd5555555555556, 45
    li t0, 0x4000000000000000
    fmv.d.x f23, t0
    fsqrt.d f22, f23
    fmv.x.d s2, f22
    CHECK s2, 0x3ff6a09e667f3bcd, 46
    FLAGS 1, 47
    li t0, 0x44b52d02c7e14af6   # 1e23
    fmv.d.x f24, t0
    fcvt.l.d s2, f24, rtz
    CHECK s2, 0x7fffffffffffffff, 48
    FLAGS 0x10, 49
    fcvt.s.d f3, f22
    fmv.x.w s2, f3
    CHECK s2, 0x3fb504f3, 50
    fcvt.d.s f22, f12
    fmv.x.d s2, f22
    CHECK s2, 0x3ff8000000000000, 51
    fmin.d f22, f20, f21
    fmv.x.d s2, f22
    CHECK s2, 0x3ff0000000000000, 52
    fclass.d s2, f24
    CHECK s2, 1 << 6, 53
    # FS = Off: FP instructions are illegal
    li t0, 3 << 13
    csrc mstatus, t0
    la s0, trap_cause
    sd zero, 0(s0)
    fadd.s f3, f1, f1
    ld s2, 0(s0)
    CHECK s2, 2, 54
    sd zero, 0(s0)
    frflags s2
    ld s2, 0(s0)
    CHECK s2, 2, 55
    ld ra, 0(sp)
    addi sp, sp, 16
    ret
