//! The F/D implementation ftvm had before its own: Berkeley SoftFloat (RISC-V specialisation)
//! through `softfloat-wrapper`. Tests only: the differential tests run both on the same
//! instructions and operands and require identical register bits and flags.

use softfloat_wrapper::{ExceptionFlags, F32, F64, Float, RoundingMode};

use crate::{Illegal, Outcome, nan_box_s};

const FFLAGS_MASK: u32 = 0x1f;
const NV: u32 = 0x10;
const CANONICAL_S: u32 = 0x7fc0_0000;
const CANONICAL_D: u64 = 0x7ff8_0000_0000_0000;

/// A single-precision operand: an improperly boxed register reads as the canonical NaN.
#[inline]
fn unbox_s(reg: u64) -> u32 {
    if reg >> 32 == 0xffff_ffff {
        reg as u32
    } else {
        CANONICAL_S
    }
}

fn rounding(rm: u32, fcsr: u32) -> Result<RoundingMode, Illegal> {
    let rm = if rm == 7 { (fcsr >> 5) & 7 } else { rm };
    Ok(match rm {
        0 => RoundingMode::TiesToEven,
        1 => RoundingMode::TowardZero,
        2 => RoundingMode::TowardNegative,
        3 => RoundingMode::TowardPositive,
        4 => RoundingMode::TiesToAway,
        _ => return Err(Illegal),
    })
}

/// Runs `op` with SoftFloat's flags cleared and ORs what it raised into `fcsr` (SoftFloat's
/// flag bits are laid out exactly as fflags).
#[inline]
fn flagged<T>(fcsr: &mut u32, op: impl FnOnce() -> T) -> T {
    ExceptionFlags::default().set();
    let r = op();
    let mut flags = ExceptionFlags::default();
    flags.get();
    *fcsr |= flags.to_bits() as u32 & FFLAGS_MASK;
    r
}

fn is_snan_s(v: u32) -> bool {
    v & 0x7fc0_0000 == 0x7f80_0000 && v & 0x003f_ffff != 0
}
fn is_nan_s(v: u32) -> bool {
    v & 0x7fff_ffff > 0x7f80_0000
}
fn is_snan_d(v: u64) -> bool {
    v & 0x7ff8_0000_0000_0000 == 0x7ff0_0000_0000_0000 && v & 0x0007_ffff_ffff_ffff != 0
}
fn is_nan_d(v: u64) -> bool {
    v & 0x7fff_ffff_ffff_ffff > 0x7ff0_0000_0000_0000
}

/// FCLASS: one bit for the class of the value.
fn classify(
    sign: bool,
    exp_all_ones: bool,
    exp_zero: bool,
    frac_zero: bool,
    quiet_bit: bool,
) -> u64 {
    let bit = match (exp_all_ones, exp_zero, frac_zero) {
        (true, _, true) => {
            if sign {
                0
            } else {
                7
            }
        }
        (true, _, false) => {
            if quiet_bit {
                9
            } else {
                8
            }
        }
        (false, true, true) => {
            if sign {
                3
            } else {
                4
            }
        }
        (false, true, false) => {
            if sign {
                2
            } else {
                5
            }
        }
        _ => {
            if sign {
                1
            } else {
                6
            }
        }
    };
    1 << bit
}

fn fclass_s(v: u32) -> u64 {
    let exp = (v >> 23) & 0xff;
    classify(
        v >> 31 != 0,
        exp == 0xff,
        exp == 0,
        v & 0x7f_ffff == 0,
        v & 0x40_0000 != 0,
    )
}

fn fclass_d(v: u64) -> u64 {
    let exp = (v >> 52) & 0x7ff;
    classify(
        v >> 63 != 0,
        exp == 0x7ff,
        exp == 0,
        v & 0xf_ffff_ffff_ffff == 0,
        v & 0x8_0000_0000_0000 != 0,
    )
}

/// FMIN/FMAX (IEEE 754-2019 minimumNumber/maximumNumber as RISC-V 2.2 specifies).
fn minmax_s(a: u32, b: u32, max: bool, fcsr: &mut u32) -> u32 {
    if is_snan_s(a) || is_snan_s(b) {
        *fcsr |= NV;
    }
    match (is_nan_s(a), is_nan_s(b)) {
        (true, true) => CANONICAL_S,
        (true, false) => b,
        (false, true) => a,
        _ => {
            let (fa, fb) = (F32::from_bits(a), F32::from_bits(b));
            if fa.is_zero() && fb.is_zero() {
                // -0 < +0
                if max { a & b } else { a | b }
            } else if fa.lt_quiet(fb) != max {
                a
            } else {
                b
            }
        }
    }
}

fn minmax_d(a: u64, b: u64, max: bool, fcsr: &mut u32) -> u64 {
    if is_snan_d(a) || is_snan_d(b) {
        *fcsr |= NV;
    }
    match (is_nan_d(a), is_nan_d(b)) {
        (true, true) => CANONICAL_D,
        (true, false) => b,
        (false, true) => a,
        _ => {
            let (fa, fb) = (F64::from_bits(a), F64::from_bits(b));
            if fa.is_zero() && fb.is_zero() {
                if max { a & b } else { a | b }
            } else if fa.lt_quiet(fb) != max {
                a
            } else {
                b
            }
        }
    }
}

fn sext32(v: u32) -> u64 {
    v as i32 as i64 as u64
}

/// Executes one computational F/D instruction. `rs1_int` is the integer register rs1 (for
/// FMV.*.X and FCVT.*.int). Accrued exception flags are ORed into `fcsr`; the dynamic rounding
/// mode is read from it. Loads and stores (FLW/FLD/FSW/FSD) are the hart's; use [`nan_box_s`].
pub fn execute(
    insn: u32,
    f: &mut [u64; 32],
    fcsr: &mut u32,
    rs1_int: u64,
) -> Result<Outcome, Illegal> {
    let opcode = insn & 0x7f;
    let rd = ((insn >> 7) & 31) as usize;
    let rs1 = ((insn >> 15) & 31) as usize;
    let rs2 = ((insn >> 20) & 31) as usize;
    let rs3 = ((insn >> 27) & 31) as usize;
    let rm = (insn >> 12) & 7;
    let fmt = (insn >> 25) & 3;
    let int = |value: u64| Ok(Outcome::IntReg { rd, value });

    if opcode != 0x53 {
        // Fused multiply-add family: -(a*b) is computed as (-a)*b.
        let r = rounding(rm, *fcsr)?;
        let (neg_prod, neg_add) = match opcode {
            0x43 => (false, false),
            0x47 => (false, true),
            0x4b => (true, false),
            0x4f => (true, true),
            _ => return Err(Illegal),
        };
        match fmt {
            0 => {
                let (mut a, b, mut c) = (
                    F32::from_bits(unbox_s(f[rs1])),
                    F32::from_bits(unbox_s(f[rs2])),
                    F32::from_bits(unbox_s(f[rs3])),
                );
                if neg_prod {
                    a = a.neg();
                }
                if neg_add {
                    c = c.neg();
                }
                f[rd] = nan_box_s(flagged(fcsr, || a.fused_mul_add(b, c, r)).to_bits());
            }
            1 => {
                let (mut a, b, mut c) = (
                    F64::from_bits(f[rs1]),
                    F64::from_bits(f[rs2]),
                    F64::from_bits(f[rs3]),
                );
                if neg_prod {
                    a = a.neg();
                }
                if neg_add {
                    c = c.neg();
                }
                f[rd] = flagged(fcsr, || a.fused_mul_add(b, c, r)).to_bits();
            }
            _ => return Err(Illegal),
        }
        return Ok(Outcome::FpReg);
    }

    let funct7 = insn >> 25;
    let (s1, s2) = (unbox_s(f[rs1]), unbox_s(f[rs2]));
    let (d1, d2) = (f[rs1], f[rs2]);
    match funct7 {
        // Arithmetic.
        0x00 | 0x04 | 0x08 | 0x0c | 0x2c => {
            let r = rounding(rm, *fcsr)?;
            let (a, b) = (F32::from_bits(s1), F32::from_bits(s2));
            if funct7 == 0x2c && rs2 != 0 {
                return Err(Illegal);
            }
            let v = flagged(fcsr, || match funct7 {
                0x00 => a.add(b, r),
                0x04 => a.sub(b, r),
                0x08 => a.mul(b, r),
                0x0c => a.div(b, r),
                _ => a.sqrt(r),
            });
            f[rd] = nan_box_s(v.to_bits());
        }
        0x01 | 0x05 | 0x09 | 0x0d | 0x2d => {
            let r = rounding(rm, *fcsr)?;
            let (a, b) = (F64::from_bits(d1), F64::from_bits(d2));
            if funct7 == 0x2d && rs2 != 0 {
                return Err(Illegal);
            }
            let v = flagged(fcsr, || match funct7 {
                0x01 => a.add(b, r),
                0x05 => a.sub(b, r),
                0x09 => a.mul(b, r),
                0x0d => a.div(b, r),
                _ => a.sqrt(r),
            });
            f[rd] = v.to_bits();
        }
        // Sign injection.
        0x10 => {
            let sign = match rm {
                0 => s2 & 0x8000_0000,
                1 => !s2 & 0x8000_0000,
                2 => (s1 ^ s2) & 0x8000_0000,
                _ => return Err(Illegal),
            };
            f[rd] = nan_box_s((s1 & 0x7fff_ffff) | sign);
        }
        0x11 => {
            let sign = match rm {
                0 => d2 & (1 << 63),
                1 => !d2 & (1 << 63),
                2 => (d1 ^ d2) & (1 << 63),
                _ => return Err(Illegal),
            };
            f[rd] = (d1 & !(1 << 63)) | sign;
        }
        0x14 if rm < 2 => f[rd] = nan_box_s(minmax_s(s1, s2, rm == 1, fcsr)),
        0x15 if rm < 2 => f[rd] = minmax_d(d1, d2, rm == 1, fcsr),
        // Conversions between formats.
        0x20 if rs2 == 1 => {
            let r = rounding(rm, *fcsr)?;
            f[rd] = nan_box_s(flagged(fcsr, || F64::from_bits(d1).to_f32(r)).to_bits());
        }
        0x21 if rs2 == 0 => {
            let r = rounding(rm, *fcsr)?;
            f[rd] = flagged(fcsr, || F32::from_bits(s1).to_f64(r)).to_bits();
        }
        // Comparisons: FEQ is quiet, FLT and FLE signal on any NaN.
        0x50 => {
            let (a, b) = (F32::from_bits(s1), F32::from_bits(s2));
            let v = match rm {
                2 => flagged(fcsr, || a.eq(b)),
                1 => flagged(fcsr, || a.lt(b)),
                0 => flagged(fcsr, || a.le(b)),
                _ => return Err(Illegal),
            };
            return int(v as u64);
        }
        0x51 => {
            let (a, b) = (F64::from_bits(d1), F64::from_bits(d2));
            let v = match rm {
                2 => flagged(fcsr, || a.eq(b)),
                1 => flagged(fcsr, || a.lt(b)),
                0 => flagged(fcsr, || a.le(b)),
                _ => return Err(Illegal),
            };
            return int(v as u64);
        }
        // Float to integer (SoftFloat's RISC-V build saturates and raises NV as RISC-V does).
        0x60 | 0x61 => {
            let r = rounding(rm, *fcsr)?;
            let v = if funct7 == 0x60 {
                let a = F32::from_bits(s1);
                match rs2 {
                    0 => sext32(flagged(fcsr, || a.to_i32(r, true)) as u32),
                    1 => sext32(flagged(fcsr, || a.to_u32(r, true))),
                    2 => flagged(fcsr, || a.to_i64(r, true)) as u64,
                    3 => flagged(fcsr, || a.to_u64(r, true)),
                    _ => return Err(Illegal),
                }
            } else {
                let a = F64::from_bits(d1);
                match rs2 {
                    0 => sext32(flagged(fcsr, || a.to_i32(r, true)) as u32),
                    1 => sext32(flagged(fcsr, || a.to_u32(r, true))),
                    2 => flagged(fcsr, || a.to_i64(r, true)) as u64,
                    3 => flagged(fcsr, || a.to_u64(r, true)),
                    _ => return Err(Illegal),
                }
            };
            return int(v);
        }
        // Integer to float.
        0x68 => {
            let r = rounding(rm, *fcsr)?;
            let v = match rs2 {
                0 => flagged(fcsr, || F32::from_i32(rs1_int as i32, r)),
                1 => flagged(fcsr, || F32::from_u32(rs1_int as u32, r)),
                2 => flagged(fcsr, || F32::from_i64(rs1_int as i64, r)),
                3 => flagged(fcsr, || F32::from_u64(rs1_int, r)),
                _ => return Err(Illegal),
            };
            f[rd] = nan_box_s(v.to_bits());
        }
        0x69 => {
            let r = rounding(rm, *fcsr)?;
            let v = match rs2 {
                0 => flagged(fcsr, || F64::from_i32(rs1_int as i32, r)),
                1 => flagged(fcsr, || F64::from_u32(rs1_int as u32, r)),
                2 => flagged(fcsr, || F64::from_i64(rs1_int as i64, r)),
                3 => flagged(fcsr, || F64::from_u64(rs1_int, r)),
                _ => return Err(Illegal),
            };
            f[rd] = v.to_bits();
        }
        // Moves and classification.
        0x70 if rs2 == 0 && rm == 0 => return int(sext32(f[rs1] as u32)),
        0x70 if rs2 == 0 && rm == 1 => return int(fclass_s(s1)),
        0x71 if rs2 == 0 && rm == 0 => return int(d1),
        0x71 if rs2 == 0 && rm == 1 => return int(fclass_d(d1)),
        0x78 if rs2 == 0 && rm == 0 => f[rd] = nan_box_s(rs1_int as u32),
        0x79 if rs2 == 0 && rm == 0 => f[rd] = rs1_int,
        _ => return Err(Illegal),
    }
    Ok(Outcome::FpReg)
}
