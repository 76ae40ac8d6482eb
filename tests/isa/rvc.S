# RV64C: the compressed forms, written out explicitly.
.include "common.inc"
.text
.globl test_main
test_main:
    addi sp, sp, -32
    sd ra, 24(sp)
    c.li s0, -5
    CHECK s0, -5, 1
    c.addi s0, 7
    CHECK s0, 2, 2
    c.lui s1, 0x1f
    CHECK s1, 0x1f000, 3
    c.addiw s1, -1
    CHECK s1, 0x1efff, 4
    c.slli s1, 36
    CHECK s1, 0x1efff000000000, 5
    c.srli s1, 32
    CHECK s1, 0x1efff0, 6
    li s1, -64
    c.srai s1, 3
    CHECK s1, -8, 7
    c.andi s1, 0x1d
    CHECK s1, 0x18, 8
    c.mv a3, s1
    c.add a3, s0
    CHECK a3, 0x1a, 9
    li a4, 3
    c.sub a3, a4
    CHECK a3, 0x17, 10
    c.xor a3, a4
    CHECK a3, 0x14, 11
    c.or a3, a4
    CHECK a3, 0x17, 12
    c.and a3, a4
    CHECK a3, 3, 13
    li a3, 0x7fffffff
    c.addw a3, a4
    CHECK a3, 0xffffffff80000002, 14
    c.subw a3, a4
    CHECK a3, 0x7fffffff, 15
    c.addi16sp sp, -64
    c.addi4spn a5, sp, 8
    sub s2, a5, sp
    CHECK s2, 8, 16
    li s3, 0x1234567890abcdef
    c.sdsp s3, 16(sp)
    c.ldsp s4, 16(sp)
    CHECK s4, 0x1234567890abcdef, 17
    c.swsp s3, 0(sp)
    c.lwsp s4, 0(sp)
    CHECK s4, 0xffffffff90abcdef, 18
    mv a5, sp
    mv s1, s3
    c.sd s1, 8(a5)
    c.ld a4, 8(a5)
    CHECK a4, 0x1234567890abcdef, 19
    c.sw s1, 4(a5)
    c.lw a4, 4(a5)
    CHECK a4, 0xffffffff90abcdef, 20
    c.addi16sp sp, 64
    li s0, 0
    c.beqz s0, 1f
    li s0, 99
1:  c.bnez s0, 2f
    li s0, 1
2:  CHECK s0, 1, 21
    c.j 3f
    li s0, 2
3:  la a1, 4f
    c.jr a1
    li s0, 3
4:  CHECK s0, 1, 22
    la a1, 5f
    c.jalr a1
6:  j 7f
5:  la a2, 6b
    sub s2, ra, a2
    CHECK s2, 0, 23
    la a1, 6b
    c.jr a1
7:  # compressed FP loads and stores
    li t0, 1 << 13
    csrs mstatus, t0
    la a2, fpbuf
    li s3, 0x400921fb54442d18
    sd s3, 0(a2)
    c.fld fa0, 0(a2)
    c.fsd fa0, 8(a2)
    ld s4, 8(a2)
    CHECK s4, 0x400921fb54442d18, 24
    c.fsdsp fa0, 0(sp)
    c.fldsp fa1, 0(sp)
    fmv.x.d s4, fa1
    CHECK s4, 0x400921fb54442d18, 25
    # an illegal all-zero instruction traps with mtval 0
    .2byte 0
    la t0, trap_cause
    ld s2, 0(t0)
    CHECK s2, 2, 26
    ld ra, 24(sp)
    addi sp, sp, 32
    ret
.data
.align 3
fpbuf: .space 16
