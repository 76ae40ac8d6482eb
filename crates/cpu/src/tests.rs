//! Hart behaviour that the differential ISA programs cannot show (QEMU 7.2 differs from the spec
//! or from ftvm's contract there): exact stops, WFI, MMIO stops, the SBI intercept, Sv57, AMO
//! misalignment, and garbage that must trap, never panic.

use crate::hart::irq;
use crate::{Bus, BusFault, Hart, Privilege, Ram, Stop};

const BASE: u64 = 0x8000_0000;

#[derive(Default)]
struct TestBus {
    writes: Vec<(u64, u64)>,
}

impl Bus for TestBus {
    fn mmio_read(&mut self, paddr: u64, _: u8, _: u64) -> Result<u64, BusFault> {
        if paddr == 0x1000_0000 {
            Ok(0x42)
        } else {
            Err(BusFault)
        }
    }
    fn mmio_write(&mut self, paddr: u64, _: u8, value: u64, _: u64) -> Result<(), BusFault> {
        self.writes.push((paddr, value));
        Ok(())
    }
}

fn machine(program: &[u32]) -> (Hart, Ram, TestBus) {
    let mut ram = Ram::new(BASE, 1 << 20);
    for (i, w) in program.iter().enumerate() {
        ram.write(BASE + 4 * i as u64, 4, *w as u64).unwrap();
    }
    let mut h = Hart::new(0);
    h.set_pc(BASE);
    (h, ram, TestBus::default())
}

const ADDI_A0_1: u32 = 0x0015_0513; // addi a0, a0, 1
const JAL_BACK: u32 = 0xffdf_f06f; // jal x0, -4
const WFI: u32 = 0x1050_0073;
const ECALL: u32 = 0x0000_0073;

#[test]
fn stops_at_exactly_the_requested_instruction() {
    let (mut h, mut ram, mut bus) = machine(&[ADDI_A0_1, JAL_BACK]);
    for until in [1, 2, 7, 1000, 1001] {
        assert_eq!(h.run(&mut ram, &mut bus, until), Stop::Reached);
        assert_eq!(h.icount(), until);
    }
    assert_eq!(h.x(10), 501);
}

/// A loop whose branch goes back into its own block runs there (no lookup per iteration) and
/// still stops at exactly the instruction asked, in the state single steps reach.
#[test]
fn a_loop_inside_one_block_stops_exactly_where_single_steps_do() {
    const LOOP: [u32; 5] = [
        0x3e80_0513, // li a0, 1000
        0xfff5_0513, // addi a0, a0, -1
        0x0015_8593, // addi a1, a1, 1
        0xfe05_1ce3, // bne a0, zero, -8
        WFI,
    ];
    for until in [1, 2, 3, 4, 5, 6, 100, 1501, 2999, 3000, 3001, 3002, 5000] {
        let (mut h, mut ram, mut bus) = machine(&LOOP);
        let whole = h.run(&mut ram, &mut bus, until);
        let (mut s, mut sram, mut sbus) = machine(&LOOP);
        let mut stepped = Stop::Reached;
        while s.icount() < until && stepped == Stop::Reached {
            stepped = s.run(&mut sram, &mut sbus, s.icount() + 1);
        }
        assert_eq!(whole, stepped, "until {until}");
        assert_eq!(
            (h.icount(), h.pc(), h.x(10), h.x(11)),
            (s.icount(), s.pc(), s.x(10), s.x(11)),
            "until {until}"
        );
    }
    let (mut h, mut ram, mut bus) = machine(&LOOP);
    assert_eq!(h.run(&mut ram, &mut bus, 10_000), Stop::Wfi);
    assert_eq!((h.icount(), h.x(10), h.x(11)), (3002, 0, 1000));
}

#[test]
fn wfi_waits_until_an_interrupt_is_pending() {
    let (mut h, mut ram, mut bus) = machine(&[WFI, ADDI_A0_1]);
    assert_eq!(h.run(&mut ram, &mut bus, 100), Stop::Wfi);
    assert!(h.is_waiting());
    assert_eq!(h.icount(), 1);
    assert_eq!(
        h.run(&mut ram, &mut bus, 100),
        Stop::Wfi,
        "still nothing pending"
    );
    h.set_csr(0x304, irq::MTIP); // mie.MTIE, global MIE off: wakes without trapping
    h.set_irq_lines(irq::MTIP);
    assert_eq!(h.run(&mut ram, &mut bus, 2), Stop::Reached);
    assert_eq!(h.x(10), 1);
}

#[test]
fn mmio_access_ends_the_batch() {
    // lui a1, 0x10000 ; lb a2, 0(a1) ; sb a2, 1(a1)
    let (mut h, mut ram, mut bus) = machine(&[0x1000_05b7, 0x0005_8603, 0x00c5_80a3, JAL_BACK]);
    assert_eq!(h.run(&mut ram, &mut bus, 100), Stop::Mmio);
    assert_eq!((h.icount(), h.x(12)), (2, 0x42));
    assert_eq!(h.run(&mut ram, &mut bus, 100), Stop::Mmio);
    assert_eq!(bus.writes, vec![(0x1000_0001, 0x42)]);
}

#[test]
fn sbi_intercept_stops_on_supervisor_ecall() {
    let (mut h, mut ram, mut bus) = machine(&[ECALL, ADDI_A0_1]);
    h.sbi_intercept = true;
    h.set_privilege(Privilege::Supervisor);
    assert_eq!(h.run(&mut ram, &mut bus, 100), Stop::SbiCall);
    assert_eq!((h.icount(), h.pc()), (1, BASE + 4));
}

#[test]
fn unsupported_satp_mode_leaves_satp_unchanged() {
    let (mut h, _, _) = machine(&[]);
    h.set_csr(0x180, (8 << 60) | 0x1234);
    h.set_csr(0x180, (10 << 60) | 0x5678); // Sv57
    assert_eq!(h.csr(0x180), Some((8 << 60) | 0x1234));
    h.set_csr(0x180, (9 << 60) | 0x9);
    assert_eq!(h.csr(0x180), Some((9 << 60) | 0x9));
}

#[test]
fn misaligned_amo_is_a_store_amo_misaligned_trap() {
    // li a1, BASE+0x102 via lui/addi ; amoadd.w a2, a0, (a1)
    let (mut h, mut ram, mut bus) = machine(&[0x8000_05b7, 0x1025_859b, 0x00a5_a62f, JAL_BACK]);
    h.set_csr(0x305, BASE + 0x800); // mtvec
    h.run(&mut ram, &mut bus, 3);
    assert_eq!(h.csr(0x342), Some(6));
    assert_eq!(
        h.csr(0x343),
        Some(0xffff_ffff_8000_0102),
        "mtval holds the address"
    );
}

#[test]
fn bad_page_tables_and_garbage_trap_without_panicking() {
    // Random words as code, executed in S-mode under a page table of random words: every
    // outcome must be a trap or a clean stop.
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for round in 0..200 {
        let program: Vec<u32> = (0..1024).map(|_| next() as u32).collect();
        let (mut h, mut ram, mut bus) = machine(&program);
        for off in (0x1000..0x4000).step_by(8) {
            ram.write(BASE + off, 8, next()).unwrap();
        }
        if round % 2 == 1 {
            h.set_csr(0x180, (8 << 60) | ((BASE + 0x1000) >> 12));
            h.set_privilege(Privilege::Supervisor);
        }
        h.set_csr(0x305, BASE + 4 * (next() % 1024));
        for _ in 0..50 {
            if h.run(&mut ram, &mut bus, h.icount() + 200) == Stop::Wfi {
                break;
            }
        }
    }
}
