//! ftvm's F/D against Berkeley SoftFloat: the same instruction on the same registers must give
//! the same register bits, the same integer result and the same fflags, for every operation,
//! both formats and every rounding mode (static and dynamic).
//!
//! Operands are random bits biased to where arithmetic goes wrong: zeros, infinities, quiet and
//! signaling NaNs, subnormals, the largest and smallest normals, values a few ulps from the
//! integer limits, halves and ties, sparse significands, operand pairs that nearly cancel (for
//! add and for FMA, an addend near minus the product), and singles that are not NaN-boxed.
//! Each test is seeded, so a failure repeats; `FTVM_FPU_SEED` picks another seed.

use crate::format::{Double, Format, Single};
use crate::{Illegal, Outcome, execute, reference};

/// Cases per operation and format in the normal test run.
const CASES: u64 = 3_000_000;

/// splitmix64: small, fast and good enough to spread test operands.
struct Rng(u64);

impl Rng {
    fn new(stream: u64) -> Rng {
        let seed = std::env::var("FTVM_FPU_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0x5eed_f00d);
        Rng(seed ^ stream.wrapping_mul(0x9e37_79b9_7f4a_7c15))
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A biased operand of format F, as raw bits (a single in the low 32 bits).
fn operand<F: Format>(rng: &mut Rng) -> u64 {
    let sign = if rng.next() & 1 != 0 { F::SIGN } else { 0 };
    let frac = rng.next() & F::FRAC_MASK;
    let width = 1 + F::EXP + F::FRAC;
    let exp = |e: i32| (e as u64) << F::FRAC;
    match rng.below(16) {
        0..=3 => rng.next() & (u64::MAX >> (64 - width)),
        4 => sign,
        5 => sign | F::INF,
        6 => sign | F::INF | F::QUIET | (frac & (F::QUIET - 1)),
        7 => sign | F::INF | (frac & (F::QUIET - 1)).max(1),
        8 => sign | frac,
        9 => sign | exp(1 + rng.below(3) as i32) | frac,
        10 => sign | exp(F::EXP_MAX - 1 - rng.below(3) as i32) | frac,
        // Near 1 and the integer limits: 2^k for k up to 66, with few or many low bits.
        11 => {
            let k = rng.below(67) as i32;
            let low = match rng.below(3) {
                0 => frac,
                1 => rng.below(4),
                _ => F::FRAC_MASK - rng.below(4),
            };
            sign | exp(F::BIAS + k) | low
        }
        // Halves and quarters of small integers: ties for every rounding mode.
        12 => {
            let k = rng.below(F::FRAC as u64) as i32;
            let shift = F::FRAC as i32 - k;
            let top = frac >> shift.max(0) << shift.max(0);
            let tie = 1 << (shift - 1).max(0);
            sign | exp(F::BIAS + k) | top | tie
        }
        // Sparse significands: products and quotients that are exact or land on ties.
        13 => {
            let bits = rng.next() & rng.next() & rng.next() & F::FRAC_MASK;
            sign | exp(F::BIAS - 40 + rng.below(80) as i32) | bits
        }
        // Anywhere in the exponent range, the tails of the significand full or empty.
        14 => {
            let e = rng.below(F::EXP_MAX as u64) as i32;
            let low = if rng.next() & 1 != 0 { F::FRAC_MASK } else { 0 };
            sign | exp(e) | (frac & !0xff) | (low & 0xff)
        }
        _ => sign | exp(F::BIAS - 2 + rng.below(5) as i32) | frac,
    }
}

/// A value near `v`: a few ulps away, the sign flipped or not (cancellation in add and FMA).
fn near<F: Format>(rng: &mut Rng, v: u64) -> u64 {
    let ulps = rng.below(5) as i64 - 2;
    let sign = if rng.next() & 1 != 0 { F::SIGN } else { 0 };
    let magnitude = (v & !F::SIGN) as i64 + ulps;
    (magnitude.clamp(0, (F::INF - 1) as i64) as u64) ^ (v & F::SIGN) ^ sign
}

/// An integer operand biased to the limits of every integer type and to exactness edges.
fn integer(rng: &mut Rng) -> u64 {
    let delta = rng.below(5).wrapping_sub(2);
    match rng.below(8) {
        0..=2 => rng.next(),
        3 => delta,
        4 => (1u64 << rng.below(64)).wrapping_add(delta),
        5 => [
            i32::MAX as u64,
            i32::MIN as u64,
            u32::MAX as u64,
            i64::MAX as u64,
            u64::MAX,
        ][rng.below(5) as usize]
            .wrapping_add(delta),
        6 => rng.next() >> rng.below(64),
        _ => (rng.next() as i32) as u64,
    }
}

/// How the operands of an instruction are chosen.
#[derive(Clone, Copy)]
enum Operands {
    /// rs1 and rs2 independent.
    Two,
    /// rs2 near rs1 half the time (add and sub cancellation, equal compares).
    Close,
    /// Three FMA operands, the addend near minus the product a third of the time.
    Fused,
    /// An integer in rs1.
    Integer,
    /// rs1 * rs2 aimed at the range's edges a third of the time.
    Product,
    /// rs1 / rs2 aimed at the range's edges a third of the time.
    Quotient,
    /// rs1 near the single format's edges a third of the time (for FCVT.S.D).
    Narrowing,
}

/// One OP-FP or fused instruction, its rounding taken from `rm` (7: dynamic).
fn encode(opcode: u32, funct7: u32, rs2: u32, rm: u32) -> u32 {
    let (rd, rs1, rs3) = (3, 1, 4);
    let rs2 = if opcode == 0x53 { rs2 } else { 2 };
    let funct7 = if opcode == 0x53 {
        funct7
    } else {
        (rs3 << 2) | funct7
    };
    (funct7 << 25) | (rs2 << 20) | (rs1 << 15) | (rm << 12) | (rd << 7) | opcode
}

/// Register contents for a value of format F: a single NaN-boxed, except now and then.
fn register<F: Format>(rng: &mut Rng, bits: u64) -> u64 {
    if F::FRAC == Double::FRAC {
        bits
    } else if rng.below(64) == 0 {
        bits | (rng.next() << 32)
    } else {
        crate::nan_box_s(bits as u32)
    }
}

/// A value at an edge of the format's range: around the smallest normal (where tininess after
/// rounding decides underflow), a subnormal, or around the largest finite value (overflow).
fn edge<F: Format>(rng: &mut Rng) -> u64 {
    let sign = if rng.next() & 1 != 0 { F::SIGN } else { 0 };
    let k = rng.below(8);
    let min_normal = F::HIDDEN;
    sign | match rng.below(4) {
        0 => min_normal - 1 - k,
        1 => min_normal + k,
        2 => rng.next() & F::FRAC_MASK,
        _ => F::INF - 1 - k,
    }
}

/// SoftFloat's a * b (`divide`: a / b) in format F, in a random rounding mode: used only to
/// aim operands, so that an exact result lands within an ulp of a chosen value with arbitrary
/// bits below it.
fn aim<F: Format>(rng: &mut Rng, a: u64, b: u64, divide: bool) -> u64 {
    use softfloat_wrapper::{F32, F64, Float, RoundingMode};
    let r = [
        RoundingMode::TiesToEven,
        RoundingMode::TowardZero,
        RoundingMode::TowardNegative,
        RoundingMode::TowardPositive,
    ][rng.below(4) as usize];
    if F::FRAC == Double::FRAC {
        let (a, b) = (F64::from_bits(a), F64::from_bits(b));
        if divide { a.div(b, r) } else { a.mul(b, r) }.to_bits()
    } else {
        let (a, b) = (F32::from_bits(a as u32), F32::from_bits(b as u32));
        (if divide { a.div(b, r) } else { a.mul(b, r) }).to_bits() as u64
    }
}

/// A double whose value is near an edge of the single format (for FCVT.S.D).
fn single_edge_as_double(rng: &mut Rng) -> u64 {
    let single = edge::<Single>(rng);
    let mut flags = 0;
    let wide = crate::convert::convert::<Single, Double>(
        single,
        crate::round::Rounding::NearestEven,
        &mut flags,
    );
    // A double has 29 more fraction bits: anything in them needs rounding.
    let low = rng.next() & ((1 << 30) - 1);
    if rng.next() & 1 != 0 {
        wide.wrapping_add(low)
    } else {
        wide.wrapping_sub(low)
    }
}

/// Runs `cases` random instances of one instruction form through both implementations.
fn run<F: Format>(stream: u64, opcode: u32, funct7: u32, rs2: u32, how: Operands, cases: u64) {
    let mut rng = Rng::new(stream);
    let mut f = [0u64; 32];
    for case in 0..cases {
        let aimed = rng.below(3) == 0;
        let a = match how {
            Operands::Narrowing if aimed => single_edge_as_double(&mut rng),
            _ => operand::<F>(&mut rng),
        };
        let b = match how {
            Operands::Close if rng.next() & 1 != 0 => near::<F>(&mut rng, a),
            // a * b near the edge: b = edge / a. For FMA too, half of its aimed cases.
            Operands::Product | Operands::Fused if aimed => {
                let target = edge::<F>(&mut rng);
                aim::<F>(&mut rng, target, a, true)
            }
            _ => operand::<F>(&mut rng),
        };
        // a / b near the edge: a = edge * b.
        let a = match how {
            Operands::Quotient if aimed => {
                let target = edge::<F>(&mut rng);
                aim::<F>(&mut rng, target, b, false)
            }
            _ => a,
        };
        let c = match (how, rng.below(3)) {
            // The addend nearly cancels the product, or is tiny beside an aimed product.
            (Operands::Fused, 0) => {
                let product = aim::<F>(&mut rng, a, b, false);
                near::<F>(&mut rng, product ^ F::SIGN)
            }
            (Operands::Fused, 1) if aimed => (rng.next() & F::FRAC_MASK) | (a & F::SIGN),
            _ => operand::<F>(&mut rng),
        };
        let int = if matches!(how, Operands::Integer) {
            integer(&mut rng)
        } else {
            rng.next()
        };
        f[1] = register::<F>(&mut rng, a);
        f[2] = register::<F>(&mut rng, b);
        f[4] = register::<F>(&mut rng, c);
        f[3] = rng.next();
        // Static modes, the dynamic mode, and now and then an invalid one (5, 6 or a bad frm).
        let rm = [0, 1, 2, 3, 4, 7, 7, 7, 0, 1, 2, 3, 4, 7, 5, 6][rng.below(16) as usize];
        let frm = if rng.below(32) == 0 {
            5 + rng.below(3) as u32
        } else {
            rng.below(5) as u32
        };
        let fcsr = (frm << 5) | (rng.next() as u32 & 0x1f & [0, 0, 0x1f][rng.below(3) as usize]);
        let insn = encode(opcode, funct7, rs2, rm);

        let (mut f_ours, mut fcsr_ours) = (f, fcsr);
        let ours = execute(insn, &mut f_ours, &mut fcsr_ours, int);
        let (mut f_ref, mut fcsr_ref) = (f, fcsr);
        let theirs = reference::execute(insn, &mut f_ref, &mut fcsr_ref, int);
        if (ours, f_ours[3], fcsr_ours) != (theirs, f_ref[3], fcsr_ref) {
            panic!(
                "case {case} of stream {stream}: insn {insn:#010x} fcsr {fcsr:#x}\n  \
                 rs1 {:#018x} rs2 {:#018x} rs3 {:#018x} int {int:#018x}\n  \
                 ftvm      {ours:?} rd {:#018x} fcsr {fcsr_ours:#x}\n  \
                 softfloat {theirs:?} rd {:#018x} fcsr {fcsr_ref:#x}",
                f[1], f[2], f[4], f_ours[3], f_ref[3]
            );
        }
    }
}

/// Every instruction form the differential tests cover: (name, opcode, funct7 without fmt,
/// rs2 field, operands). funct7's low two bits (fmt) are added per format. The rs2 field is
/// register 2 for two-operand instructions and part of the opcode for the others.
const FORMS: &[(&str, u32, u32, u32, Operands)] = &[
    ("fadd", 0x53, 0x00, 2, Operands::Close),
    ("fsub", 0x53, 0x04, 2, Operands::Close),
    ("fmul", 0x53, 0x08, 2, Operands::Product),
    ("fdiv", 0x53, 0x0c, 2, Operands::Quotient),
    ("fsqrt", 0x53, 0x2c, 0, Operands::Two),
    ("fsgnj", 0x53, 0x10, 2, Operands::Two),
    ("fmin/fmax", 0x53, 0x14, 2, Operands::Close),
    ("fcmp", 0x53, 0x50, 2, Operands::Close),
    ("fcvt.w", 0x53, 0x60, 0, Operands::Two),
    ("fcvt.wu", 0x53, 0x60, 1, Operands::Two),
    ("fcvt.l", 0x53, 0x60, 2, Operands::Two),
    ("fcvt.lu", 0x53, 0x60, 3, Operands::Two),
    ("fcvt.from.w", 0x53, 0x68, 0, Operands::Integer),
    ("fcvt.from.wu", 0x53, 0x68, 1, Operands::Integer),
    ("fcvt.from.l", 0x53, 0x68, 2, Operands::Integer),
    ("fcvt.from.lu", 0x53, 0x68, 3, Operands::Integer),
    ("fmv.x/fclass", 0x53, 0x70, 0, Operands::Two),
    ("fmv.from.x", 0x53, 0x78, 0, Operands::Integer),
    ("fmadd", 0x43, 0, 0, Operands::Fused),
    ("fmsub", 0x47, 0, 0, Operands::Fused),
    ("fnmsub", 0x4b, 0, 0, Operands::Fused),
    ("fnmadd", 0x4f, 0, 0, Operands::Fused),
];

/// The format conversions, named by their funct7 and rs2 (the source format).
const CONVERSIONS: &[(&str, u32, u32)] = &[("fcvt.s.d", 0x20, 1), ("fcvt.d.s", 0x21, 0)];

/// Runs the forms whose name starts with `prefix`, `cases` each per format.
fn run_forms(prefix: &str, cases: u64) -> u64 {
    let mut total = 0;
    for (i, &(name, opcode, funct7, rs2, how)) in FORMS.iter().enumerate() {
        if !name.starts_with(prefix) {
            continue;
        }
        // FMV.X and FCLASS share a funct7 and differ in rm, which `run` varies; rm 0..1 are
        // the valid ones, the rest must be illegal on both sides.
        let fmt_field = |fmt: u32| if opcode == 0x53 { funct7 | fmt } else { fmt };
        run::<Single>(2 * i as u64, opcode, fmt_field(0), rs2, how, cases);
        run::<Double>(2 * i as u64 + 1, opcode, fmt_field(1), rs2, how, cases);
        total += 2 * cases;
    }
    for (i, &(name, funct7, rs2)) in CONVERSIONS.iter().enumerate() {
        if name.starts_with(prefix) {
            // The source format's operands: D for FCVT.S.D, S for FCVT.D.S.
            if rs2 == 1 {
                run::<Double>(
                    100 + i as u64,
                    0x53,
                    funct7,
                    rs2,
                    Operands::Narrowing,
                    2 * cases,
                );
            } else {
                run::<Single>(100 + i as u64, 0x53, funct7, rs2, Operands::Two, 2 * cases);
            }
            total += 2 * cases;
        }
    }
    assert!(total > 0, "no form is named {prefix}*");
    total
}

macro_rules! differential {
    ($($test:ident: $prefix:literal,)*) => {$(
        #[test]
        fn $test() {
            run_forms($prefix, CASES);
        }
    )*};
}

differential! {
    add_matches_softfloat: "fadd",
    sub_matches_softfloat: "fsub",
    mul_matches_softfloat: "fmul",
    div_matches_softfloat: "fdiv",
    sqrt_matches_softfloat: "fsqrt",
    sign_injection_matches_softfloat: "fsgnj",
    min_max_matches_softfloat: "fmin",
    compares_match_softfloat: "fcmp",
    float_to_int_matches_softfloat: "fcvt.w",
    float_to_long_matches_softfloat: "fcvt.l",
    int_to_float_matches_softfloat: "fcvt.from",
    moves_and_class_match_softfloat: "fmv",
    fmadd_matches_softfloat: "fmadd",
    fmsub_matches_softfloat: "fmsub",
    fnmsub_matches_softfloat: "fnmsub",
    fnmadd_matches_softfloat: "fnmadd",
    format_conversions_match_softfloat: "fcvt.s.d",
    widening_matches_softfloat: "fcvt.d.s",
}

/// The long run: `FTVM_FPU_CASES` cases (default a billion) spread over every form and both
/// formats. `cargo test --release -p ftvm-fpu -- --ignored --nocapture a_billion`.
#[test]
#[ignore = "long: a billion differential cases, minutes of CPU"]
fn a_billion_cases_match_softfloat() {
    let total: u64 = std::env::var("FTVM_FPU_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000_000);
    let forms = 2 * (FORMS.len() + CONVERSIONS.len()) as u64;
    let start = std::time::Instant::now();
    let done = run_forms("", total.div_ceil(forms));
    eprintln!(
        "{done} cases, 0 mismatches, in {:.1} s",
        start.elapsed().as_secs_f64()
    );
}

/// Invalid encodings are illegal on both sides (checked above too, by chance; here for every
/// funct7 and rs2 of OP-FP).
#[test]
fn illegal_encodings_agree() {
    let mut rng = Rng::new(999);
    for funct7 in 0..128u32 {
        for rs2 in 0..32u32 {
            for rm in 0..8u32 {
                let insn = (funct7 << 25) | (rs2 << 20) | (1 << 15) | (rm << 12) | (3 << 7) | 0x53;
                let mut f = [0u64; 32];
                for r in f.iter_mut() {
                    *r = operand::<Double>(&mut rng);
                }
                let (mut f_ref, mut fcsr_ref) = (f, 0);
                let theirs = reference::execute(insn, &mut f_ref, &mut fcsr_ref, 7);
                let (mut fo, mut fcsr_o) = (f, 0);
                let ours = execute(insn, &mut fo, &mut fcsr_o, 7);
                assert_eq!(ours.is_err(), theirs.is_err(), "insn {insn:#010x}");
                if theirs == Err(Illegal) {
                    assert_eq!(
                        (fo, fcsr_o),
                        (f, 0),
                        "an illegal instruction changes nothing"
                    );
                } else {
                    assert!(matches!(ours, Ok(Outcome::FpReg | Outcome::IntReg { .. })));
                }
            }
        }
    }
}
