# Privilege and traps: ECALL from each mode, delegation to S, MRET/SRET, illegal instructions
# with mtval, read-only CSR writes, counters, a software interrupt through the CLINT, WFI, TW/TSR.
.include "common.inc"
.equ CLINT_MSIP, 0x2000000
.text
.globl test_main
test_main:
    addi sp, sp, -16
    sd ra, 0(sp)
    la s0, trap_cause
    # ECALL from M
    ecall
    ld s2, 0(s0)
    CHECK s2, 11, 1
    # ECALL from U, back in M
    ENTER_MODE 0, 1f
    ecall
1:  ld s2, 0(s0)
    CHECK s2, 8, 2
    csrr s2, mstatus
    srli s2, s2, 11
    andi s2, s2, 3
    CHECK s2, 0, 3
    # ECALL from S
    ENTER_MODE 1, 1f
    ecall
1:  ld s2, 0(s0)
    CHECK s2, 9, 4
    # illegal instruction: mtval holds the instruction
    .4byte 0xffffffff
    ld s2, 0(s0)
    CHECK s2, 2, 5
    ld s2, 8(s0)
    CHECK s2, 0xffffffff, 6
    # writing a read-only CSR is illegal
    sd zero, 0(s0)
    csrw mvendorid, zero
    ld s2, 0(s0)
    CHECK s2, 2, 7
    # reading mhartid is fine; an unknown CSR is illegal
    sd zero, 0(s0)
    csrr s2, mhartid
    CHECK s2, 0, 8
    csrr s2, 0x7c0
    ld s2, 0(s0)
    CHECK s2, 2, 9
    # S reading an M CSR traps to M as illegal (and leaves S)
    ENTER_MODE 1, 1f
    csrr t0, mstatus
    ecall
1:  ld s2, 0(s0)
    CHECK s2, 2, 10
    # delegate illegal instruction to S: S handles it, then ecall back to M
    la t0, s_handler
    csrw stvec, t0
    li t0, 1 << 2
    csrw medeleg, t0
    ENTER_MODE 1, 1f
    .4byte 0x00000000
    csrr t1, scause
    la t2, s_seen
    ld t2, 0(t2)
    ecall
1:  la t2, s_seen
    ld s2, 0(t2)
    CHECK s2, 2, 11
    csrw medeleg, zero
    # instret and cycle advance
    csrr s3, instret
    nop
    nop
    csrr s4, instret
    # (QEMU without -icount derives instret from host time: only its growth is comparable)
    sltu s2, s3, s4
    CHECK s2, 1, 12
    # a machine software interrupt, vectored
    la t0, vec_table
    ori t0, t0, 1
    csrw mtvec, t0
    li t0, 1 << 3
    csrw mie, t0
    li t1, CLINT_MSIP
    li t2, 1
    sw t2, 0(t1)
    csrsi mstatus, 8
    nop
    nop
    csrci mstatus, 8
    la t0, msi_seen
    ld s2, 0(t0)
    CHECK s2, 0x8000000000000003, 13
    # WFI with the interrupt pending but globally masked just continues
    li t1, CLINT_MSIP
    li t2, 1
    sw t2, 0(t1)
    wfi
    csrr s2, mip
    andi s2, s2, 8
    CHECK s2, 8, 14
    li t1, CLINT_MSIP
    sw zero, 0(t1)
    csrw mie, zero
    la t0, trap_handler
    csrw mtvec, t0
    # TW: WFI in S traps as illegal
    li t0, 1 << 21
    csrs mstatus, t0
    ENTER_MODE 1, 1f
    wfi
    ecall
1:  csrc mstatus, t0
    ld s2, 0(s0)
    CHECK s2, 2, 15
    # TSR: SRET in S traps as illegal
    li t0, 1 << 22
    csrs mstatus, t0
    sd zero, 0(s0)
    ENTER_MODE 1, 1f
    sret
    csrr a0, sscratch
    ecall
1:  li t0, 1 << 22
    csrc mstatus, t0
    ld s2, 0(s0)
    CHECK s2, 2, 16
    # A device's SEIP line must not stick when M-mode read-modify-writes mip: raise the UART's
    # THR-empty interrupt through the PLIC to supervisor context 1, clear STIP with csrc, drop
    # the line, and SEIP must be gone.
    li t0, 0x0c000000 + 4 * 10
    li t1, 1
    sw t1, 0(t0)               # priority of source 10 (UART)
    li t0, 0x0c002080
    li t1, 1 << 10
    sw t1, 0(t0)               # enable it for context 1
    li t0, 0x0c201000
    sw zero, 0(t0)             # threshold 0
    li t0, 0x10000000
    li t1, 2
    sb t1, 1(t0)               # IER: THR empty
    csrr s3, mip
    li t1, 1 << 5
    csrc mip, t1
    li t0, 0x10000000
    sb zero, 1(t0)             # IER off: the line drops
    li t0, 0x0c201004
    lw t1, 0(t0)               # claim and complete whatever was latched in the gateway
    sw t1, 0(t0)
    srli s2, s3, 9
    andi s2, s2, 1
    CHECK s2, 1, 18
    csrr s2, mip
    srli s2, s2, 9
    andi s2, s2, 1
    CHECK s2, 0, 19
    # EBREAK
    ebreak
    ld s2, 0(s0)
    CHECK s2, 3, 17
    ld ra, 0(sp)
    addi sp, sp, 16
    ret

.align 2
s_handler:
    csrr t0, scause
    la t1, s_seen
    sd t0, 0(t1)
    csrr t0, sepc
    addi t0, t0, 4
    csrw sepc, t0
    sret

.align 6
    .option push
    .option norvc
vec_table:
    j trap_handler
    j trap_handler
    j trap_handler
    j msi_handler
    .rept 12
    j trap_handler
    .endr
    .option pop
msi_handler:
    csrr t5, mcause
    la t6, msi_seen
    sd t5, 0(t6)
    li t5, CLINT_MSIP
    sw zero, 0(t5)
    mret

.data
.align 3
s_seen: .dword 0
msi_seen: .dword 0
