# Sv39 and Sv48: gigapage identity map for code, a 3-level 4K map, A/D updates, page faults with
# stval, the U bit with and without SUM, a misaligned superpage, non-canonical addresses.
.include "common.inc"
.equ V, 1
.equ R, 2
.equ W, 4
.equ X, 8
.equ U, 16
.equ A, 64
.equ D, 128
.equ VA_DATA, 0x40001000
.equ VA_INVALID, 0x40002000
.equ VA_RO, 0x40003000
.equ VA_USER, 0x40004000
.equ VA_BADSUPER, 0xc0000000

# PTE for a pointer to the page at \addr (register), into \out
.macro PTE_FOR out, addr, flags
    srli \out, \addr, 12
    slli \out, \out, 10
    ori \out, \out, \flags
.endm

.text
.globl test_main
test_main:
    addi sp, sp, -16
    sd ra, 0(sp)
    la s0, trap_cause
    la s1, root39
    la s2, l1
    la s3, l0
    # root39[2]: 1 GiB identity at 0x80000000 (code, data, stack, UART is not needed in S)
    li t0, (0x80000000 >> 12) << 10 | V | R | W | X | A | D
    sd t0, 16(s1)
    # root39[1] -> l1 -> l0
    PTE_FOR t0, s2, V
    sd t0, 8(s1)
    PTE_FOR t0, s3, V
    sd t0, 0(s2)
    la t1, page_data
    PTE_FOR t0, t1, V | R | W
    sd t0, 8(s3)
    # l0[2]: valid but neither R nor X at the last level: page fault
    li t0, V
    sd t0, 16(s3)
    la t1, page_ro
    PTE_FOR t0, t1, V | R | A
    sd t0, 24(s3)
    la t1, page_user
    PTE_FOR t0, t1, V | R | W | U | A | D
    sd t0, 32(s3)
    # root39[3]: a gigapage leaf whose PPN is not 1 GiB aligned
    li t0, (0x80200000 >> 12) << 10 | V | R | W | A | D
    sd t0, 24(s1)
    # Sv48 root: entry 0 points at the Sv39 root, used as the next level
    la s4, root48
    PTE_FOR t0, s1, V
    sd t0, 0(s4)
    la t1, page_data
    li t0, 0x5a5a
    sd t0, 0(t1)

    # --- Sv39 in S-mode
    srli t0, s1, 12
    li t1, 8 << 60
    or t0, t0, t1
    csrw satp, t0
    sfence.vma
    ENTER_MODE 1, 1f
    li t0, VA_DATA
    ld a3, 0(t0)
    li t1, 0x77
    sd t1, 8(t0)
    ecall
1:  CHECK a3, 0x5a5a, 1
    ld s5, 8(s3)
    andi s5, s5, A | D
    CHECK s5, A | D, 2
    la t1, page_data
    ld s5, 8(t1)
    CHECK s5, 0x77, 3
    # load from an invalid leaf: load page fault, stval = address
    ENTER_MODE 1, 1f
    li t0, VA_INVALID + 8
    ld a3, 0(t0)
    ecall
1:  ld s5, 0(s0)
    CHECK s5, 13, 4
    ld s5, 8(s0)
    CHECK s5, VA_INVALID + 8, 5
    # store to a read-only page: store page fault
    ENTER_MODE 1, 1f
    li t0, VA_RO
    ld a3, 0(t0)
    sd zero, 0(t0)
    ecall
1:  ld s5, 0(s0)
    CHECK s5, 15, 6
    # U page from S without SUM: fault; with SUM: fine
    ENTER_MODE 1, 1f
    li t0, VA_USER
    ld a3, 0(t0)
    ecall
1:  ld s5, 0(s0)
    CHECK s5, 13, 7
    li t0, 1 << 18
    csrs mstatus, t0
    ENTER_MODE 1, 1f
    li t0, VA_USER
    li a3, 0x99
    sd a3, 0(t0)
    ld a3, 0(t0)
    ecall
1:  CHECK a3, 0x99, 8
    li t0, 1 << 18
    csrc mstatus, t0
    # misaligned gigapage: page fault
    ENTER_MODE 1, 1f
    li t0, VA_BADSUPER
    ld a3, 0(t0)
    ecall
1:  ld s5, 0(s0)
    CHECK s5, 13, 9
    # fetch from a non-executable page: instruction page fault
    ENTER_MODE 1, 1f
    li t0, VA_DATA
    jalr t0
    ecall
1:  ld s5, 0(s0)
    CHECK s5, 12, 10
    # (A satp write with MODE = Sv57 must leave satp unchanged on ftvm; QEMU 7.2's virt CPU
    # implements Sv57, so that is checked by ftvm-cpu's unit tests, not here.)
    # --- Sv48: the same data page through four levels
    srli t0, s4, 12
    li t1, 9 << 60
    or t0, t0, t1
    csrw satp, t0
    csrr s5, satp
    srli s5, s5, 60
    CHECK s5, 9, 12
    sfence.vma
    ENTER_MODE 1, 1f
    li t0, VA_DATA
    ld a3, 8(t0)
    ecall
1:  CHECK a3, 0x77, 13
    # non-canonical address under Sv39 faults
    srli t0, s1, 12
    li t1, 8 << 60
    or t0, t0, t1
    csrw satp, t0
    sfence.vma
    ENTER_MODE 1, 1f
    li t0, 0x0000008000000000
    ld a3, 0(t0)
    ecall
1:  ld s5, 0(s0)
    CHECK s5, 13, 14
    csrw satp, zero
    ld ra, 0(sp)
    addi sp, sp, 16
    ret

.bss
.align 12
root39: .space 4096
root48: .space 4096
l1: .space 4096
l0: .space 4096
page_data: .space 4096
page_ro: .space 4096
page_user: .space 4096
