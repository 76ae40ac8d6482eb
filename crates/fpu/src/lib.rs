//! RISC-V F and D computational instructions, bit-exact.
//!
//! Job: execute OP-FP, FMADD, FMSUB, FNMSUB and FNMADD instructions on the raw register bits,
//! with ftvm's own IEEE 754 arithmetic: [`format`] takes values apart, [`round`] rounds once
//! and raises RISC-V's flags, [`arith`], [`convert`] and [`compare`] are the operations, each
//! written once for both formats.
//!
//! Invariants: no host floating point is used (it has no rounding-mode control, no flags and
//! other NaN rules) and no state outside the arguments: a result depends on the instruction,
//! the registers and `fcsr` alone. Results, NaN boxing, canonical NaNs and fflags follow the
//! RISC-V spec and equal Berkeley SoftFloat's RISC-V specialisation bit for bit (tininess after
//! rounding), which the differential tests check on millions of operands per operation.
//!
//! Written here rather than taken from a crate: SoftFloat's Rust bindings build C with CMake
//! and only on x86-64 Linux, and the pure-Rust crates checked were wrong on RISC-V's edge cases
//! (float-to-integer overflow, the sign of an FMA's zero, signaling NaNs in sqrt and FEQ).

pub mod arith;
pub mod compare;
pub mod convert;
pub mod format;
pub mod round;

use arith::{add, div, fused_mul_add, mul, sqrt, sub};
use compare::{classify, eq, le, lt, min_max};
use convert::{Int, convert, from_int, to_int};
use format::{Double, Format, Single};
use round::Rounding;

/// `fcsr` bits: fflags in 4..0 (NV DZ OF UF NX), frm in 7..5.
pub const FFLAGS_MASK: u32 = 0x1f;

/// The instruction is not a valid F/D instruction (bad funct/fmt/rs2 field, or a reserved or
/// invalid rounding mode): the hart raises an illegal-instruction exception.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Illegal;

/// What an executed instruction wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// An FP register was written (already done in `f`).
    FpReg,
    /// The integer register `rd` must be set to `value` (FMV.X.*, FCVT.int.*, FEQ/FLT/FLE, FCLASS).
    /// `rd` may be 0, in which case the hart discards it.
    IntReg { rd: usize, value: u64 },
}

/// A single-precision value as it sits in a 64-bit FP register.
#[inline]
pub fn nan_box_s(bits: u32) -> u64 {
    0xffff_ffff_0000_0000 | bits as u64
}

fn sext32(v: u64) -> u64 {
    v as u32 as i32 as i64 as u64
}

/// How a format's values sit in the 64-bit FP registers.
trait Register: Format {
    /// An operand; a single that is not properly NaN-boxed reads as the canonical NaN.
    fn read(reg: u64) -> u64;
    /// A result as the register holds it.
    fn write(bits: u64) -> u64;
    /// FMV.X.W / FMV.X.D: the register's raw low bits, sign-extended.
    fn move_to_int(reg: u64) -> u64;
}

impl Register for Single {
    #[inline(always)]
    fn read(reg: u64) -> u64 {
        if reg >> 32 == 0xffff_ffff {
            reg & 0xffff_ffff
        } else {
            Single::CANONICAL_NAN
        }
    }
    #[inline(always)]
    fn write(bits: u64) -> u64 {
        nan_box_s(bits as u32)
    }
    #[inline(always)]
    fn move_to_int(reg: u64) -> u64 {
        sext32(reg)
    }
}

impl Register for Double {
    #[inline(always)]
    fn read(reg: u64) -> u64 {
        reg
    }
    #[inline(always)]
    fn write(bits: u64) -> u64 {
        bits
    }
    #[inline(always)]
    fn move_to_int(reg: u64) -> u64 {
        reg
    }
}

/// The fields of an F/D instruction.
struct Fields {
    rd: usize,
    rs1: usize,
    rs2: usize,
    rs3: usize,
    rm: u32,
}

impl Fields {
    fn new(insn: u32) -> Fields {
        Fields {
            rd: ((insn >> 7) & 31) as usize,
            rs1: ((insn >> 15) & 31) as usize,
            rs2: ((insn >> 20) & 31) as usize,
            rs3: ((insn >> 27) & 31) as usize,
            rm: (insn >> 12) & 7,
        }
    }

    /// The rounding mode: the instruction's, or `frm` for the dynamic mode 7.
    fn rounding(&self, fcsr: u32) -> Result<Rounding, Illegal> {
        let rm = if self.rm == 7 {
            (fcsr >> 5) & 7
        } else {
            self.rm
        };
        Rounding::from_rm(rm).ok_or(Illegal)
    }
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
    let fields = Fields::new(insn);
    let fmt = (insn >> 25) & 3;
    match (insn & 0x7f, fmt) {
        (0x53, _) => {
            let funct7 = insn >> 25;
            match (funct7, fields.rs2) {
                // FCVT.S.D and FCVT.D.S: the only instructions that read the other format.
                (0x20, 1) => {
                    let r = fields.rounding(*fcsr)?;
                    f[fields.rd] =
                        nan_box_s(convert::<Double, Single>(f[fields.rs1], r, fcsr) as u32);
                    Ok(Outcome::FpReg)
                }
                (0x21, 0) => {
                    let r = fields.rounding(*fcsr)?;
                    let a = Single::read(f[fields.rs1]);
                    f[fields.rd] = convert::<Single, Double>(a, r, fcsr);
                    Ok(Outcome::FpReg)
                }
                _ => match fmt {
                    0 => op_fp::<Single>(funct7 >> 2, &fields, f, fcsr, rs1_int),
                    1 => op_fp::<Double>(funct7 >> 2, &fields, f, fcsr, rs1_int),
                    _ => Err(Illegal),
                },
            }
        }
        (0x43 | 0x47 | 0x4b | 0x4f, 0) => fused::<Single>(insn & 0x7f, &fields, f, fcsr),
        (0x43 | 0x47 | 0x4b | 0x4f, 1) => fused::<Double>(insn & 0x7f, &fields, f, fcsr),
        _ => Err(Illegal),
    }
}

/// FMADD, FMSUB, FNMSUB, FNMADD: -(a*b) is computed as (-a)*b, -c as c with its sign flipped.
#[inline(always)]
fn fused<F: Register>(
    opcode: u32,
    fields: &Fields,
    f: &mut [u64; 32],
    fcsr: &mut u32,
) -> Result<Outcome, Illegal> {
    let r = fields.rounding(*fcsr)?;
    let (negate_product, negate_addend) = match opcode {
        0x43 => (false, false),
        0x47 => (false, true),
        0x4b => (true, false),
        _ => (true, true),
    };
    let a = F::read(f[fields.rs1]) ^ if negate_product { F::SIGN } else { 0 };
    let b = F::read(f[fields.rs2]);
    let c = F::read(f[fields.rs3]) ^ if negate_addend { F::SIGN } else { 0 };
    f[fields.rd] = F::write(fused_mul_add::<F>(a, b, c, r, fcsr));
    Ok(Outcome::FpReg)
}

/// The OP-FP instructions of one format, by funct5 (funct7 without its fmt bits).
#[inline(always)]
fn op_fp<F: Register>(
    funct5: u32,
    fields: &Fields,
    f: &mut [u64; 32],
    fcsr: &mut u32,
    rs1_int: u64,
) -> Result<Outcome, Illegal> {
    let (rd, rs2, rm) = (fields.rd, fields.rs2, fields.rm);
    let (a, b) = (F::read(f[fields.rs1]), F::read(f[rs2]));
    let int = |value: u64| Ok(Outcome::IntReg { rd, value });
    let result = match funct5 {
        0x00 => add::<F>(a, b, fields.rounding(*fcsr)?, fcsr),
        0x01 => sub::<F>(a, b, fields.rounding(*fcsr)?, fcsr),
        0x02 => mul::<F>(a, b, fields.rounding(*fcsr)?, fcsr),
        0x03 => div::<F>(a, b, fields.rounding(*fcsr)?, fcsr),
        0x0b if rs2 == 0 => sqrt::<F>(a, fields.rounding(*fcsr)?, fcsr),
        // Sign injection: FSGNJ, FSGNJN, FSGNJX.
        0x04 => {
            let sign = match rm {
                0 => b,
                1 => !b,
                2 => a ^ b,
                _ => return Err(Illegal),
            } & F::SIGN;
            (a & !F::SIGN) | sign
        }
        0x05 if rm < 2 => min_max::<F>(a, b, rm == 1, fcsr),
        0x14 => {
            let v = match rm {
                2 => eq::<F>(a, b, fcsr),
                1 => lt::<F>(a, b, fcsr),
                0 => le::<F>(a, b, fcsr),
                _ => return Err(Illegal),
            };
            return int(v as u64);
        }
        0x18 => {
            let kind = Int::from_rs2(rs2).ok_or(Illegal)?;
            let v = to_int::<F>(a, kind, fields.rounding(*fcsr)?, fcsr);
            // FCVT.W and FCVT.WU both sign-extend their 32-bit result.
            return int(if matches!(kind, Int::I32 | Int::U32) {
                sext32(v)
            } else {
                v
            });
        }
        0x1a => {
            let kind = Int::from_rs2(rs2).ok_or(Illegal)?;
            from_int::<F>(rs1_int, kind, fields.rounding(*fcsr)?, fcsr)
        }
        0x1c if rs2 == 0 && rm == 0 => return int(F::move_to_int(f[fields.rs1])),
        0x1c if rs2 == 0 && rm == 1 => return int(classify::<F>(a)),
        0x1e if rs2 == 0 && rm == 0 => rs1_int,
        _ => return Err(Illegal),
    };
    f[rd] = F::write(result);
    Ok(Outcome::FpReg)
}

/// The body of the `fpu_execute` fuzz target: any bytes as an instruction, its registers, fcsr
/// and the integer operand (the guest chooses all of them). Execution must never panic.
pub fn fuzz_execute(data: &[u8]) {
    let mut bytes = [0u8; 4 + 3 * 8 + 8 + 1];
    let n = data.len().min(bytes.len());
    bytes[..n].copy_from_slice(&data[..n]);
    let word = |i: usize| u64::from_le_bytes(bytes[i..i + 8].try_into().unwrap());
    let insn = u32::from_le_bytes(bytes[..4].try_into().unwrap());
    let mut f = [0u64; 32];
    // The instruction's own rs1, rs2 and rs3 fields pick which registers hold the operands.
    for (k, shift) in [15, 20, 27].into_iter().enumerate() {
        f[((insn >> shift) & 31) as usize] = word(4 + 8 * k);
    }
    let mut fcsr = bytes[36] as u32;
    let before = fcsr;
    let _ = execute(insn, &mut f, &mut fcsr, word(28));
    assert_eq!(
        fcsr & !FFLAGS_MASK,
        before & !FFLAGS_MASK,
        "only fflags change"
    );
}

#[cfg(test)]
mod differential;
#[cfg(test)]
mod reference;
#[cfg(test)]
mod tests;
