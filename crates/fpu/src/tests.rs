//! Known bit patterns for each instruction group (values checked against the RISC-V spec and
//! QEMU's behaviour).

use super::*;

const ONE_S: u32 = 0x3f80_0000;
const TWO_S: u32 = 0x4000_0000;
const THREE_S: u32 = 0x4040_0000;
const ONE_D: u64 = 0x3ff0_0000_0000_0000;
const CANONICAL_S: u32 = 0x7fc0_0000;

/// Encodes an OP-FP instruction.
fn op(funct7: u32, rs2: u32, rs1: u32, rm: u32, rd: u32) -> u32 {
    (funct7 << 25) | (rs2 << 20) | (rs1 << 15) | (rm << 12) | (rd << 7) | 0x53
}

fn regs() -> [u64; 32] {
    let mut f = [0u64; 32];
    f[1] = nan_box_s(ONE_S);
    f[2] = nan_box_s(THREE_S);
    f[3] = ONE_D;
    f[4] = 0x4008_0000_0000_0000; // 3.0
    f
}

#[test]
fn division_rounds_by_mode_and_flags_inexact() {
    // 1/3 in single precision: RNE and RUP give ...ab, RTZ and RDN give ...aa.
    let expect = [
        (0, 0x3eaa_aaab),
        (1, 0x3eaa_aaaa),
        (2, 0x3eaa_aaaa),
        (3, 0x3eaa_aaab),
        (4, 0x3eaa_aaab),
    ];
    for (rm, want) in expect {
        let mut f = regs();
        let mut fcsr = 0;
        execute(op(0x0c, 2, 1, rm, 5), &mut f, &mut fcsr, 0).unwrap();
        assert_eq!(f[5], nan_box_s(want), "rm {rm}");
        assert_eq!(fcsr, 1, "NX only");
    }
}

#[test]
fn dynamic_rounding_and_reserved_modes() {
    let mut f = regs();
    let mut fcsr = 1 << 5; // frm = RTZ
    execute(op(0x0c, 2, 1, 7, 5), &mut f, &mut fcsr, 0).unwrap();
    assert_eq!(f[5], nan_box_s(0x3eaa_aaaa));
    assert_eq!(
        execute(op(0x00, 2, 1, 5, 5), &mut f, &mut fcsr, 0),
        Err(Illegal)
    );
    let mut bad = 5 << 5;
    assert_eq!(
        execute(op(0x00, 2, 1, 7, 5), &mut f, &mut bad, 0),
        Err(Illegal)
    );
}

#[test]
fn unboxed_single_reads_as_canonical_nan() {
    let mut f = regs();
    f[1] = ONE_S as u64; // upper half not all ones
    let mut fcsr = 0;
    execute(op(0x00, 2, 1, 0, 5), &mut f, &mut fcsr, 0).unwrap();
    assert_eq!(f[5], nan_box_s(CANONICAL_S));
}

#[test]
fn divide_by_zero_and_invalid() {
    let mut f = regs();
    f[6] = nan_box_s(0);
    let mut fcsr = 0;
    execute(op(0x0c, 6, 1, 0, 5), &mut f, &mut fcsr, 0).unwrap();
    assert_eq!(f[5], nan_box_s(0x7f80_0000));
    assert_eq!(fcsr, 0x08);
    fcsr = 0;
    execute(op(0x0c, 6, 6, 0, 5), &mut f, &mut fcsr, 0).unwrap();
    assert_eq!(f[5], nan_box_s(CANONICAL_S), "0/0 is the canonical NaN");
    assert_eq!(fcsr, 0x10);
}

#[test]
fn fcvt_saturates() {
    let mut f = regs();
    f[7] = nan_box_s(0x7fc0_0000); // NaN
    f[8] = nan_box_s(0xcf80_0000); // -2^32
    let mut fcsr = 0;
    assert_eq!(
        execute(op(0x60, 0, 7, 1, 9), &mut f, &mut fcsr, 0),
        Ok(Outcome::IntReg {
            rd: 9,
            value: 0x7fff_ffff
        })
    );
    assert_eq!(fcsr, 0x10);
    assert_eq!(
        execute(op(0x60, 1, 8, 1, 9), &mut f, &mut fcsr, 0),
        Ok(Outcome::IntReg { rd: 9, value: 0 })
    );
    assert_eq!(
        execute(op(0x60, 0, 8, 1, 9), &mut f, &mut fcsr, 0),
        Ok(Outcome::IntReg {
            rd: 9,
            value: 0xffff_ffff_8000_0000
        })
    );
    // WU of a large value is sign-extended from 32 bits.
    f[10] = nan_box_s(0x4f00_0000); // 2^31
    assert_eq!(
        execute(op(0x60, 1, 10, 1, 9), &mut f, &mut fcsr, 0),
        Ok(Outcome::IntReg {
            rd: 9,
            value: 0xffff_ffff_8000_0000
        })
    );
}

#[test]
fn min_max_zeros_and_nans() {
    let mut f = regs();
    f[11] = nan_box_s(0x8000_0000); // -0
    f[12] = nan_box_s(0); // +0
    f[13] = nan_box_s(0x7f80_0001); // sNaN
    let mut fcsr = 0;
    execute(op(0x14, 12, 11, 0, 5), &mut f, &mut fcsr, 0).unwrap();
    assert_eq!(f[5], nan_box_s(0x8000_0000));
    execute(op(0x14, 12, 11, 1, 5), &mut f, &mut fcsr, 0).unwrap();
    assert_eq!(f[5], nan_box_s(0));
    assert_eq!(fcsr, 0);
    execute(op(0x14, 13, 1, 0, 5), &mut f, &mut fcsr, 0).unwrap();
    assert_eq!(f[5], nan_box_s(ONE_S));
    assert_eq!(fcsr, 0x10);
    execute(op(0x14, 13, 13, 0, 5), &mut f, &mut fcsr, 0).unwrap();
    assert_eq!(f[5], nan_box_s(CANONICAL_S));
}

#[test]
fn compares_signal_as_specified() {
    let mut f = regs();
    f[13] = nan_box_s(0x7fc0_0000); // qNaN
    let mut fcsr = 0;
    assert_eq!(
        execute(op(0x50, 13, 1, 2, 5), &mut f, &mut fcsr, 0),
        Ok(Outcome::IntReg { rd: 5, value: 0 })
    );
    assert_eq!(fcsr, 0, "FEQ is quiet on qNaN");
    execute(op(0x50, 13, 1, 1, 5), &mut f, &mut fcsr, 0).unwrap();
    assert_eq!(fcsr, 0x10, "FLT signals");
    assert_eq!(
        execute(op(0x51, 4, 3, 1, 5), &mut f, &mut 0, 0),
        Ok(Outcome::IntReg { rd: 5, value: 1 })
    );
}

#[test]
fn classify_every_class() {
    let cases: [(u32, u64); 10] = [
        (0xff80_0000, 1 << 0),
        (0xbf80_0000, 1 << 1),
        (0x8000_0001, 1 << 2),
        (0x8000_0000, 1 << 3),
        (0x0000_0000, 1 << 4),
        (0x0000_0001, 1 << 5),
        (0x3f80_0000, 1 << 6),
        (0x7f80_0000, 1 << 7),
        (0x7f80_0001, 1 << 8),
        (0x7fc0_0000, 1 << 9),
    ];
    for (bits, class) in cases {
        let mut f = regs();
        f[1] = nan_box_s(bits);
        assert_eq!(
            execute(op(0x70, 0, 1, 1, 5), &mut f, &mut 0, 0),
            Ok(Outcome::IntReg {
                rd: 5,
                value: class
            }),
            "{bits:#x}"
        );
    }
}

#[test]
fn fused_multiply_add_signs() {
    // fnmsub: -(1*3) + 3 = 0 ; fnmadd: -(1*3) - 3 = -6
    let r4 = |opc: u32| (2 << 27) | (2 << 20) | (1 << 15) | (5 << 7) | opc; // rs3 = f2
    let mut f = regs();
    execute(r4(0x4b), &mut f, &mut 0, 0).unwrap();
    assert_eq!(f[5], nan_box_s(0));
    execute(r4(0x4f), &mut f, &mut 0, 0).unwrap();
    assert_eq!(f[5], nan_box_s(0xc0c0_0000));
    execute(r4(0x43), &mut f, &mut 0, 0).unwrap();
    assert_eq!(f[5], nan_box_s(0x40c0_0000));
}

#[test]
fn moves_and_format_conversions() {
    let mut f = regs();
    assert_eq!(
        execute(op(0x70, 0, 1, 0, 5), &mut f, &mut 0, 0),
        Ok(Outcome::IntReg {
            rd: 5,
            value: ONE_S as u64
        })
    );
    execute(op(0x78, 0, 0, 0, 5), &mut f, &mut 0, 0xdead_beef_4000_0000).unwrap();
    assert_eq!(f[5], nan_box_s(TWO_S));
    execute(op(0x21, 0, 1, 0, 6), &mut f, &mut 0, 0).unwrap();
    assert_eq!(f[6], ONE_D);
    execute(op(0x20, 1, 3, 0, 6), &mut f, &mut 0, 0).unwrap();
    assert_eq!(f[6], nan_box_s(ONE_S));
    execute(op(0x69, 2, 0, 0, 6), &mut f, &mut 0, (-3i64) as u64).unwrap();
    assert_eq!(f[6], 0xc008_0000_0000_0000);
}

#[test]
fn random_bytes_never_panic_the_fuzz_body() {
    let mut x = 0x0123_4567_89ab_cdefu64;
    let mut data = [0u8; 37];
    for _ in 0..200_000 {
        for b in data.iter_mut() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
        // Half of the cases get a valid F/D major opcode.
        if x & 1 == 0 {
            data[0] = (data[0] & 0x80) | [0x53, 0x43, 0x47, 0x4b, 0x4f][(x >> 8) as usize % 5];
        }
        fuzz_execute(&data[..(x >> 16) as usize % 38]);
    }
}
