# The simulator's guest: a key-value store on the console, written for ftvm-sim.
#
# Bare metal, M-mode: it sleeps (WFI) until the 16550 raises its receive interrupt through the
# PLIC, reads request lines and answers each with one reply line, so an idle guest costs the
# simulator nothing and every non-deterministic input is a console input the FT protocol logs.
# Interrupts wake the hart but are never taken (mstatus.MIE stays 0). Lines are fixed-width hex:
#   request  <op><c><ssss><kk><vvvv>\n   op: S (set key kk to vvvv), G (get kk), P (power off)
#   reply    R<c><ssss><kk><vvvv>\n      the value set or read
# c is the client (0-f), ssss its request number. A request repeated with the same number (the
# client retransmits after a lost reply, as TCP would) is answered again from the client's last
# reply without running it twice, so a retried SET never undoes a later one. A malformed line
# is ignored.

.equ UART, 0x10000000
.equ TEST_DEV, 0x100000
.equ PLIC, 0x0c000000
.equ PLIC_ENABLE_M, 0x0c002000
.equ PLIC_CLAIM_M, 0x0c200004
.equ UART_IRQ, 10
.equ LINE, 12

.section .text.init
.globl _start
_start:
    la sp, _stack_top
    la s0, line
    li s1, 0                # bytes of the current line
    li s2, UART
    li t0, 1
    sb t0, 1(s2)            # IER: interrupt when a byte is received
    li t0, PLIC
    li t1, 1
    sw t1, 4 * UART_IRQ(t0) # the UART's priority
    li t0, PLIC_ENABLE_M
    li t1, 1 << UART_IRQ
    sw t1, 0(t0)            # enabled for hart 0's M mode (threshold 0)
    li t0, 1 << 11
    csrs mie, t0            # MEIE: an external interrupt wakes WFI
next_byte:
    lbu t0, 5(s2)           # LSR: bit 0, a byte is waiting
    andi t0, t0, 1
    bnez t0, read_byte
    # Nothing to read: finish the PLIC's claim if one is pending (so the next byte raises it
    # again), look once more, then sleep.
    li t3, PLIC_CLAIM_M
    lw t4, 0(t3)
    beqz t4, sleep
    sw t4, 0(t3)
    j next_byte
sleep:
    wfi
    j next_byte
read_byte:
    lbu t0, 0(s2)
    li t1, '\n'
    beq t0, t1, end_of_line
    li t1, LINE
    bgeu s1, t1, too_long
    add t2, s0, s1
    sb t0, 0(t2)
too_long:
    addi s1, s1, 1
    j next_byte

end_of_line:
    li t1, LINE
    bne s1, t1, drop_line
    lbu s3, 0(s0)           # op
    li t1, 'P'
    beq s3, t1, power_off
    addi a0, s0, 1
    li a1, 1
    call parse_hex
    bnez a2, drop_line
    mv s4, a0               # client
    addi a0, s0, 2
    li a1, 4
    call parse_hex
    bnez a2, drop_line
    mv s5, a0               # request number
    addi a0, s0, 6
    li a1, 2
    call parse_hex
    bnez a2, drop_line
    mv s6, a0               # key
    addi a0, s0, 8
    li a1, 4
    call parse_hex
    bnez a2, drop_line
    mv s7, a0               # value
    # A repeat of the client's last request: its reply again.
    la t3, last
    slli t4, s4, 4
    add t3, t3, t4          # last[c] = { number + 1, value, key }
    ld t5, 0(t3)
    addi t6, s5, 1
    bne t5, t6, run_request
    ld s7, 8(t3)
    j reply
run_request:
    la t4, table
    slli t5, s6, 1
    add t4, t4, t5
    li t1, 'S'
    beq s3, t1, do_set
    li t1, 'G'
    bne s3, t1, drop_line
    lhu s7, 0(t4)
    j remember
do_set:
    sh s7, 0(t4)
remember:
    addi t6, s5, 1
    sd t6, 0(t3)
    sd s7, 8(t3)
reply:
    li a0, 'R'
    call putc
    mv a0, s4
    li a1, 1
    call put_hex
    mv a0, s5
    li a1, 4
    call put_hex
    mv a0, s6
    li a1, 2
    call put_hex
    mv a0, s7
    li a1, 4
    call put_hex
    li a0, '\n'
    call putc
drop_line:
    li s1, 0
    j next_byte

power_off:
    li t0, TEST_DEV
    li t1, 0x5555
    sw t1, 0(t0)
1:  j 1b

# parse_hex(a0 = text, a1 = digits) -> a0 value, a2 = 0, or a2 = 1 if a digit is not hex
# (0-9, a-f).
parse_hex:
    li t0, 0
    li a2, 0
1:  beqz a1, 3f
    lbu t1, 0(a0)
    addi t2, t1, -'0'
    li t3, 10
    bltu t2, t3, 2f
    addi t2, t1, -'a'
    li t3, 6
    bgeu t2, t3, 4f
    addi t2, t2, 10
2:  slli t0, t0, 4
    or t0, t0, t2
    addi a0, a0, 1
    addi a1, a1, -1
    j 1b
3:  mv a0, t0
    ret
4:  li a2, 1
    ret

# put_hex(a0 = value, a1 = digits): the low a1 hex digits, most significant first.
put_hex:
    addi sp, sp, -32
    sd ra, 0(sp)
    sd s8, 8(sp)
    sd s9, 16(sp)
    mv s8, a0
    mv s9, a1
1:  beqz s9, 2f
    addi s9, s9, -1
    slli t0, s9, 2
    srl t0, s8, t0
    andi t0, t0, 15
    la t1, digits
    add t1, t1, t0
    lbu a0, 0(t1)
    call putc
    j 1b
2:  ld ra, 0(sp)
    ld s8, 8(sp)
    ld s9, 16(sp)
    addi sp, sp, 32
    ret

# putc(a0): waits for room in the transmitter (LSR bit 5), then writes.
putc:
    li t0, UART
1:  lbu t1, 5(t0)
    andi t1, t1, 0x20
    beqz t1, 1b
    sb a0, 0(t0)
    ret

.section .rodata
digits: .ascii "0123456789abcdef"

.section .bss
.align 4
line:  .space 16
last:  .space 16 * 16
table: .space 256 * 2
