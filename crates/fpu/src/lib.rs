//! RISC-V F and D computational instructions, bit-exact.
//!
//! STUB: the FPU work replaces the bodies; the signatures are the contract with `ftvm-cpu`.
//!
//! Job: execute OP-FP, FMADD, FMSUB, FNMSUB and FNMADD instructions on the raw register bits.
//! Invariants: no host floating point is used (it has no rounding-mode control or RISC-V NaN
//! rules); results, NaN boxing, canonical NaNs and fflags match the RISC-V specification.

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

/// Executes one computational F/D instruction. `rs1_int` is the integer register rs1 (for
/// FMV.*.X and FCVT.*.int). Accrued exception flags are ORed into `fcsr`; the dynamic rounding
/// mode is read from it. Loads and stores (FLW/FLD/FSW/FSD) are the hart's; use [`nan_box_s`].
pub fn execute(insn: u32, f: &mut [u64; 32], fcsr: &mut u32, rs1_int: u64) -> Result<Outcome, Illegal> {
    let _ = (insn, f, fcsr, rs1_int);
    Err(Illegal)
}

/// A single-precision value as it sits in a 64-bit FP register.
#[inline]
pub fn nan_box_s(bits: u32) -> u64 {
    0xffff_ffff_0000_0000 | bits as u64
}
