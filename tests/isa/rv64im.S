# RV64I and M: ALU, shifts, W forms, compares, branches, jumps, loads/stores, mul/div corners.
.include "common.inc"
.text
.globl test_main
test_main:
    addi sp, sp, -16
    sd ra, 0(sp)
    li s0, 0x7fffffffffffffff
    li s1, -1
    add s2, s0, s1
    CHECK s2, 0x7ffffffffffffffe, 1
    addi s2, s0, 1
    CHECK s2, 0x8000000000000000, 2
    sub s2, zero, s0
    CHECK s2, 0x8000000000000001, 3
    addiw s2, s0, 1
    CHECK s2, 0, 4
    li s3, 0x7fffffff
    addw s2, s3, s3
    CHECK s2, 0xfffffffffffffffe, 5
    subw s2, zero, s3
    CHECK s2, 0xffffffff80000001, 6
    li s3, 0x123456789abcdef0
    slli s2, s3, 4
    CHECK s2, 0x23456789abcdef00, 7
    srli s2, s3, 60
    CHECK s2, 1, 8
    srai s2, s1, 63
    CHECK s2, -1, 9
    li s4, 0x80000000
    sraiw s2, s4, 4
    CHECK s2, 0xfffffffff8000000, 10
    srliw s2, s4, 4
    CHECK s2, 0x08000000, 11
    slliw s2, s3, 8
    CHECK s2, 0xffffffffbcdef000, 12
    li t4, 68
    sll s2, s3, t4
    CHECK s2, 0x23456789abcdef00, 13
    sraw s2, s4, t4
    CHECK s2, 0xfffffffff8000000, 14
    slt s2, s1, zero
    CHECK s2, 1, 15
    sltu s2, s1, zero
    CHECK s2, 0, 16
    sltiu s2, zero, -1
    CHECK s2, 1, 17
    xori s2, s3, -1
    CHECK s2, 0xedcba9876543210f, 18
    lui s2, 0x80000
    CHECK s2, 0xffffffff80000000, 19
here:
    auipc s2, 0
    la s5, here
    sub s2, s5, s2
    CHECK s2, 0, 20
    # branches
    li s2, 0
    blt s1, zero, 1f
    ori s2, s2, 1
1:  bltu s1, zero, 1f
    ori s2, s2, 2
1:  bge zero, s1, 1f
    ori s2, s2, 4
1:  bgeu s1, zero, 1f
    ori s2, s2, 8
1:  bne s1, s1, 1f
    ori s2, s2, 16
1:  CHECK s2, 0x12, 21
    # jal/jalr link values
    jal s6, 1f
2:  j 3f
1:  la s7, 2b
    sub s2, s6, s7
    CHECK s2, 0, 22
    la s7, 4f
    addi s7, s7, 1
    jalr s6, 0(s7)
3:  j 5f
4:  j 3b
5:  # loads and stores of every width
    la s8, buf
    li s9, 0x8182838485868788
    sd s9, 0(s8)
    lb s2, 0(s8)
    CHECK s2, 0xffffffffffffff88, 23
    lbu s2, 7(s8)
    CHECK s2, 0x81, 24
    lh s2, 2(s8)
    CHECK s2, 0xffffffffffff8586, 25
    lhu s2, 6(s8)
    CHECK s2, 0x8182, 26
    lw s2, 4(s8)
    CHECK s2, 0xffffffff81828384, 27
    lwu s2, 0(s8)
    CHECK s2, 0x85868788, 28
    sb zero, 1(s8)
    sh zero, 4(s8)
    ld s2, 0(s8)
    CHECK s2, 0x8182000085860088, 29
    sw s1, 0(s8)
    ld s2, 0(s8)
    CHECK s2, 0x81820000ffffffff, 30
    # misaligned loads and stores
    li s9, 0x1122334455667788
    sd s9, 3(s8)
    ld s2, 3(s8)
    CHECK s2, 0x1122334455667788, 31
    lw s2, 5(s8)
    CHECK s2, 0x33445566, 32
    lhu s2, 7(s8)
    CHECK s2, 0x3344, 33
    # M extension
    li s0, 0x8000000000000000
    li s1, -1
    mul s2, s0, s1
    CHECK s2, 0x8000000000000000, 40
    mulh s2, s0, s1
    CHECK s2, 0, 41
    mulhu s2, s1, s1
    CHECK s2, 0xfffffffffffffffe, 42
    mulhsu s2, s1, s1
    CHECK s2, 0xffffffffffffffff, 43
    div s2, s0, s1
    CHECK s2, 0x8000000000000000, 44
    rem s2, s0, s1
    CHECK s2, 0, 45
    div s2, s0, zero
    CHECK s2, -1, 46
    divu s2, s0, zero
    CHECK s2, -1, 47
    rem s2, s0, zero
    CHECK s2, 0x8000000000000000, 48
    remu s2, s1, zero
    CHECK s2, -1, 49
    li s3, -7
    li s4, 2
    div s2, s3, s4
    CHECK s2, -3, 50
    rem s2, s3, s4
    CHECK s2, -1, 51
    divu s2, s3, s4
    CHECK s2, 0x7ffffffffffffffc, 52
    li s0, 0x80000000
    divw s2, s0, s1
    CHECK s2, 0xffffffff80000000, 53
    remw s2, s0, s1
    CHECK s2, 0, 54
    divuw s2, s3, s4
    CHECK s2, 0x7ffffffc, 55
    remuw s2, s3, zero
    CHECK s2, -7, 56
    mulw s2, s0, s4
    CHECK s2, 0, 57
    ld ra, 0(sp)
    addi sp, sp, 16
    ret
.data
.align 3
buf: .space 32
