# The simulator's guest: a key-value store on the console and a virtio disk, written for
# ftvm-sim.
#
# Bare metal, M-mode: it sleeps (WFI) until the 16550 raises its receive interrupt through the
# PLIC, reads request lines and answers each with one reply line, so an idle guest costs the
# simulator nothing and every non-deterministic input (console bytes, disk completions) is one
# the FT protocol logs. Key kk lives in sector kk of the virtio-blk disk in slot 0 (its first
# two bytes): a SET writes the sector and is answered once the write completed, a GET reads
# it, so the disk is the store's only copy and the shared disk's faults reach the clients. A
# request that fails with an I/O error is issued again until it succeeds. One request at a time:
# while the disk works, console bytes wait in the UART's FIFO.
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
.equ DISK, 0x10001000       # virtio-mmio slot 0
.equ DISK_IRQ, 1
.equ QUEUE, 4               # descriptors in the request queue

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
    sw t1, 4 * DISK_IRQ(t0) # the disk's
    li t0, PLIC_ENABLE_M
    li t1, 1 << UART_IRQ
    sw t1, 0(t0)            # enabled for hart 0's M mode (threshold 0)
    call disk_init
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
    la s8, sector
    li t1, 'S'
    beq s3, t1, do_set
    li t1, 'G'
    bne s3, t1, drop_line
    li a0, 0                # VIRTIO_BLK_T_IN
    mv a1, s6
    call disk_request
    lhu s7, 0(s8)
    j remember
do_set:
    sh s7, 0(s8)
    li a0, 1                # VIRTIO_BLK_T_OUT
    mv a1, s6
    call disk_request
remember:
    la t3, last             # disk_request keeps no temporaries: last[c] again
    slli t4, s4, 4
    add t3, t3, t4
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

# disk_init: the virtio 1.x driver start-up (virtio-mmio version 2, no legacy), one queue of
# QUEUE descriptors, interrupts on used buffers.
disk_init:
    li t0, DISK
    sw zero, 0x70(t0)       # Status: reset
    li t1, 3
    sw t1, 0x70(t0)         # ACKNOWLEDGE | DRIVER
    li t1, 1
    sw t1, 0x24(t0)         # DriverFeaturesSel: bits 32..63
    sw t1, 0x20(t0)         # VIRTIO_F_VERSION_1 and nothing else
    sw zero, 0x24(t0)
    sw zero, 0x20(t0)
    li t1, 11
    sw t1, 0x70(t0)         # ... | FEATURES_OK
    sw zero, 0x30(t0)       # QueueSel 0
    li t1, QUEUE
    sw t1, 0x38(t0)         # QueueNum
    la t1, desc
    sw t1, 0x80(t0)         # QueueDesc (RAM is below 4 GiB: the high halves stay 0)
    la t1, avail
    sw t1, 0x90(t0)         # QueueDriver
    la t1, used
    sw t1, 0xa0(t0)         # QueueDevice
    li t1, 1
    sw t1, 0x44(t0)         # QueueReady
    li t1, 15
    sw t1, 0x70(t0)         # ... | DRIVER_OK
    # The one request's chain, the same every time: header, the sector's data, status.
    la t0, desc
    la t1, header
    sd t1, 0(t0)
    li t1, 16
    sw t1, 8(t0)
    li t1, 1                # NEXT
    sh t1, 12(t0)
    sh t1, 14(t0)           # next = 1
    la t1, sector
    sd t1, 16(t0)
    li t1, 512
    sw t1, 24(t0)
    li t1, 2
    sh t1, 30(t0)           # next = 2 (flags per request)
    la t1, status
    sd t1, 32(t0)
    li t1, 1
    sw t1, 40(t0)
    li t1, 2                # WRITE (the device writes it)
    sh t1, 44(t0)
    ret

# disk_request(a0 = type, a1 = sector): the sector read into `sector` (type 0) or written from
# it (type 1), waiting for the completion; issued again while it fails. Changes t0-t6 only.
disk_request:
    la t0, header
    sw a0, 0(t0)
    sd a1, 8(t0)
    la t0, desc
    li t1, 1                # NEXT, and WRITE for a read: the device fills the buffer
    bnez a0, 1f
    li t1, 3
1:  sh t1, 28(t0)
    li t0, PLIC_ENABLE_M
    li t1, 1 << DISK_IRQ
    sw t1, 0(t0)            # while the disk works, only it wakes the guest
2:  la t0, status
    li t1, 0xff
    sb t1, 0(t0)
    la t0, avail
    lhu t2, 2(t0)           # avail.idx
    andi t3, t2, QUEUE - 1
    slli t3, t3, 1
    add t3, t3, t0
    sh zero, 4(t3)          # ring[idx % QUEUE] = descriptor 0
    fence w, w
    addi t2, t2, 1
    sh t2, 2(t0)
    fence w, w
    li t4, DISK
    sw zero, 0x50(t4)       # QueueNotify 0
    slli t2, t2, 48
    srli t2, t2, 48         # the used index that means done
3:  fence r, r
    la t0, used
    lhu t3, 2(t0)
    beq t3, t2, 4f
    wfi
    j 3b
4:  lw t1, 0x60(t4)
    sw t1, 0x64(t4)         # InterruptACK: the line drops
    li t0, PLIC_CLAIM_M
    lw t1, 0(t0)
    beqz t1, 5f
    sw t1, 0(t0)
5:  la t0, status
    lbu t1, 0(t0)
    bnez t1, 2b             # an I/O error: again
    li t0, PLIC_ENABLE_M
    li t1, 1 << UART_IRQ
    sw t1, 0(t0)
    ret

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
.align 4
desc:   .space 16 * QUEUE
avail:  .space 6 + 2 * QUEUE
.align 2
used:   .space 6 + 8 * QUEUE
.align 4
header: .space 16
status: .space 8
.align 9
sector: .space 512
