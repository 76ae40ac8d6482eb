//! Add, subtract, multiply, fused multiply-add, divide and square root, correctly rounded.
//!
//! Each computes its result exactly, or exactly but for a sticky bit far below the last place,
//! and rounds once in [`round_pack`]. Special operands follow RISC-V: any NaN result is the
//! canonical NaN, and NV is raised for a signaling NaN operand or an invalid operation
//! (inf - inf, 0 * inf, 0/0, inf/inf, the root of a negative number).

use crate::format::{Class, Format, is_signaling_nan, normalize, sign_bit, unpack};
use crate::round::{
    DZ, NV, Rounding, round_pack, round_pack_normal, round_pack_wide, shift_right_jam,
    shift_right_jam_128,
};

/// The canonical NaN, raising NV if any operand is a signaling NaN.
#[inline(always)]
fn propagate_nan<F: Format>(operands: &[u64], flags: &mut u32) -> u64 {
    if operands.iter().any(|&v| is_signaling_nan::<F>(v)) {
        *flags |= NV;
    }
    F::CANONICAL_NAN
}

#[inline(always)]
fn invalid<F: Format>(flags: &mut u32) -> u64 {
    *flags |= NV;
    F::CANONICAL_NAN
}

/// The zero an exact cancellation gives: +0, except -0 when rounding down.
#[inline(always)]
fn cancellation_zero<F: Format>(rounding: Rounding) -> u64 {
    sign_bit::<F>(rounding == Rounding::Down)
}

/// a + b.
pub fn add<F: Format>(a: u64, b: u64, rounding: Rounding, flags: &mut u32) -> u64 {
    let (sa, ca) = unpack::<F>(a);
    let (sb, cb) = unpack::<F>(b);
    match (ca, cb) {
        (Class::Finite { exp: ea, sig: ma }, Class::Finite { exp: eb, sig: mb }) => {
            add_finite::<F>(sa, ea, ma, sb, eb, mb, rounding, flags)
        }
        (Class::Nan { .. }, _) | (_, Class::Nan { .. }) => propagate_nan::<F>(&[a, b], flags),
        (Class::Infinite, Class::Infinite) if sa != sb => invalid::<F>(flags),
        (Class::Infinite, _) => a,
        (_, Class::Infinite) => b,
        (Class::Zero, Class::Zero) if sa != sb => cancellation_zero::<F>(rounding),
        (_, Class::Zero) => a,
        (Class::Zero, _) => b,
    }
}

/// a - b: the sum with b's sign flipped (a NaN's sign does not matter, the result is canonical).
pub fn sub<F: Format>(a: u64, b: u64, rounding: Rounding, flags: &mut u32) -> u64 {
    add::<F>(a, b ^ F::SIGN, rounding, flags)
}

#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn add_finite<F: Format>(
    sa: bool,
    ea: i32,
    ma: u64,
    sb: bool,
    eb: i32,
    mb: u64,
    rounding: Rounding,
    flags: &mut u32,
) -> u64 {
    // Significands up to 2^(FRAC + 1) move up to bit 61: the sum cannot carry out of 63 bits,
    // and 61 - FRAC >= 9 bits below the last place make the alignment's sticky bit harmless.
    // This is fma_finite's sum with a fixed shift instead of normalising both terms: taking
    // the add through fma_finite measured 15% slower on the commonest FP instruction.
    let up = 61 - F::FRAC;
    let (mut sa, mut ea, mut ma, mut sb, mut eb, mut mb) =
        (sa, ea - up as i32, ma << up, sb, eb - up as i32, mb << up);
    if eb > ea || (eb == ea && mb > ma) {
        (sa, ea, ma, sb, eb, mb) = (sb, eb, mb, sa, ea, ma);
    }
    // |a| >= |b| now.
    let mb = shift_right_jam(mb, (ea - eb) as u32);
    let sum = if sa == sb {
        ma + mb
    } else {
        // A difference loses more than a bit only when the exponents differ by at most one,
        // and then the alignment dropped nothing.
        ma - mb
    };
    if sum == 0 {
        return cancellation_zero::<F>(rounding);
    }
    round_pack::<F>(sa, ea, sum, rounding, flags)
}

/// a * b.
pub fn mul<F: Format>(a: u64, b: u64, rounding: Rounding, flags: &mut u32) -> u64 {
    let (sa, ca) = unpack::<F>(a);
    let (sb, cb) = unpack::<F>(b);
    let sign = sa != sb;
    match (ca, cb) {
        (Class::Finite { exp: ea, sig: ma }, Class::Finite { exp: eb, sig: mb }) => {
            // The product of two significands is exact in 2 * (FRAC + 1) bits.
            let product = ma as u128 * mb as u128;
            round_pack_wide::<F>(sign, ea + eb, product, rounding, flags)
        }
        (Class::Nan { .. }, _) | (_, Class::Nan { .. }) => propagate_nan::<F>(&[a, b], flags),
        (Class::Infinite, Class::Zero) | (Class::Zero, Class::Infinite) => invalid::<F>(flags),
        (Class::Infinite, _) | (_, Class::Infinite) => sign_bit::<F>(sign) | F::INF,
        (Class::Zero, _) | (_, Class::Zero) => sign_bit::<F>(sign),
    }
}

/// a * b + c with a single rounding. The negated forms (FMSUB, FNMADD, FNMSUB) flip the signs
/// of a and c before calling this.
pub fn fused_mul_add<F: Format>(
    a: u64,
    b: u64,
    c: u64,
    rounding: Rounding,
    flags: &mut u32,
) -> u64 {
    let (sa, ca) = unpack::<F>(a);
    let (sb, cb) = unpack::<F>(b);
    let (sc, cc) = unpack::<F>(c);
    let sp = sa != sb;
    match (ca, cb, cc) {
        (
            Class::Finite { exp: ea, sig: ma },
            Class::Finite { exp: eb, sig: mb },
            Class::Finite { exp: ec, sig: mc },
        ) => {
            if F::FRAC < 32 {
                fma_finite::<F, u64>(sp, ea + eb, ma * mb, sc, ec, mc, rounding, flags)
            } else {
                let product = ma as u128 * mb as u128;
                fma_finite::<F, u128>(sp, ea + eb, product, sc, ec, mc as u128, rounding, flags)
            }
        }
        (Class::Finite { exp: ea, sig: ma }, Class::Finite { exp: eb, sig: mb }, Class::Zero) => {
            let product = ma as u128 * mb as u128;
            round_pack_wide::<F>(sp, ea + eb, product, rounding, flags)
        }
        // A NaN factor, or 0 * inf, gives a NaN whatever the addend (SoftFloat raises NV for
        // 0 * inf even when the addend is a quiet NaN, and so does this).
        (Class::Nan { .. }, _, _) | (_, Class::Nan { .. }, _) => {
            propagate_nan::<F>(&[a, b, c], flags)
        }
        (Class::Infinite, Class::Zero, _) | (Class::Zero, Class::Infinite, _) => {
            invalid::<F>(flags)
        }
        (_, _, Class::Nan { .. }) => propagate_nan::<F>(&[c], flags),
        (Class::Infinite, _, Class::Infinite) | (_, Class::Infinite, Class::Infinite)
            if sp != sc =>
        {
            invalid::<F>(flags)
        }
        (Class::Infinite, _, _) | (_, Class::Infinite, _) => sign_bit::<F>(sp) | F::INF,
        (_, _, Class::Infinite) => c,
        // The product is zero from here on.
        (_, _, Class::Zero) if sp != sc => cancellation_zero::<F>(rounding),
        (_, _, Class::Zero) => c,
        (Class::Zero, _, _) | (_, Class::Zero, _) => c,
    }
}

/// The integer an FMA's exact sum is formed in: u64 for singles, u128 for doubles.
trait Significand: Copy + Ord + std::ops::Add<Output = Self> + std::ops::Sub<Output = Self> {
    const ZERO: Self;
    /// The same value, `sig * 2^exp`, with sig's leading bit three below the top: room for the
    /// sum's carry and a clear bit above it.
    fn lead_below_top(exp: i32, sig: Self) -> (i32, Self);
    fn shift_right_jam(self, n: u32) -> Self;
    fn round_pack<F: Format>(
        negative: bool,
        exp: i32,
        sig: Self,
        r: Rounding,
        flags: &mut u32,
    ) -> u64;
}

/// The two widths differ only in which jam and which rounding entry they use.
macro_rules! significand {
    ($t:ty, $jam:ident, $round:ident) => {
        impl Significand for $t {
            const ZERO: $t = 0;
            #[inline(always)]
            fn lead_below_top(exp: i32, sig: $t) -> (i32, $t) {
                let shift = sig.leading_zeros() - 2;
                (exp - shift as i32, sig << shift)
            }
            #[inline(always)]
            fn shift_right_jam(self, n: u32) -> $t {
                $jam(self, n)
            }
            #[inline(always)]
            fn round_pack<F: Format>(
                negative: bool,
                exp: i32,
                sig: $t,
                r: Rounding,
                flags: &mut u32,
            ) -> u64 {
                $round::<F>(negative, exp, sig, r, flags)
            }
        }
    };
}

significand!(u64, shift_right_jam, round_pack);
significand!(u128, shift_right_jam_128, round_pack_wide);

/// product * 2^ep + mc * 2^ec, signed, rounded once. In S, a single's 48-bit product and
/// 24-bit addend fit a u64 with room to spare, a double's 106 and 53 bits a u128.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn fma_finite<F: Format, S: Significand>(
    sp: bool,
    ep: i32,
    product: S,
    sc: bool,
    ec: i32,
    mc: S,
    rounding: Rounding,
    flags: &mut u32,
) -> u64 {
    // Both terms move so their leading bits sit three below the top. Aligning the smaller one
    // then drops bits only when the larger leads by more than the smaller's width: the
    // difference then loses at most one leading bit and the sticky bit stays far below the
    // last place.
    let (ep, product) = S::lead_below_top(ep, product);
    let (ec, mc) = S::lead_below_top(ec, mc);
    let ((s_hi, e_hi, m_hi), (s_lo, e_lo, m_lo)) = if ec > ep || (ec == ep && mc > product) {
        ((sc, ec, mc), (sp, ep, product))
    } else {
        ((sp, ep, product), (sc, ec, mc))
    };
    let m_lo = m_lo.shift_right_jam((e_hi - e_lo) as u32);
    let sum = if s_hi == s_lo {
        m_hi + m_lo
    } else {
        m_hi - m_lo
    };
    if sum == S::ZERO {
        return cancellation_zero::<F>(rounding);
    }
    S::round_pack::<F>(s_hi, e_hi, sum, rounding, flags)
}

/// a / b.
pub fn div<F: Format>(a: u64, b: u64, rounding: Rounding, flags: &mut u32) -> u64 {
    let (sa, ca) = unpack::<F>(a);
    let (sb, cb) = unpack::<F>(b);
    let sign = sa != sb;
    match (ca, cb) {
        (Class::Finite { exp: ea, sig: ma }, Class::Finite { exp: eb, sig: mb }) => {
            let (ea, ma) = normalize::<F>(ea, ma);
            let (eb, mb) = normalize::<F>(eb, mb);
            // Both significands lie in [2^FRAC, 2^(FRAC + 1)), so a quotient of ma * 2^shift
            // has at least shift + 1 bits: FRAC + 3 or more, and a remainder is a sticky bit.
            let (quotient, exact, shift) = if F::FRAC < 32 {
                let shift = 62 - F::FRAC - 1;
                let n = ma << shift;
                (n / mb, n % mb == 0, shift)
            } else {
                let shift = 63;
                let n = (ma as u128) << shift;
                let q = n / mb as u128;
                (q as u64, q * mb as u128 == n, shift)
            };
            let sig = quotient | !exact as u64;
            round_pack::<F>(sign, ea - eb - shift as i32, sig, rounding, flags)
        }
        (Class::Nan { .. }, _) | (_, Class::Nan { .. }) => propagate_nan::<F>(&[a, b], flags),
        (Class::Infinite, Class::Infinite) | (Class::Zero, Class::Zero) => invalid::<F>(flags),
        (Class::Infinite, _) => sign_bit::<F>(sign) | F::INF,
        (_, Class::Infinite) | (Class::Zero, _) => sign_bit::<F>(sign),
        (_, Class::Zero) => {
            *flags |= DZ;
            sign_bit::<F>(sign) | F::INF
        }
    }
}

/// The square root of a.
pub fn sqrt<F: Format>(a: u64, rounding: Rounding, flags: &mut u32) -> u64 {
    match unpack::<F>(a) {
        (false, Class::Finite { exp, sig }) => {
            let (exp, sig) = normalize::<F>(exp, sig);
            // m = sig * 2^shift in [2^62, 2^64), with exp - shift even so it halves exactly.
            let shift = 62 - F::FRAC + ((exp - (62 - F::FRAC) as i32) & 1) as u32;
            let (root, exact) = sqrt_significand(sig << shift, F::SQRT_EXTRA);
            // The root has FRAC + 3 bits: its leading bit weighs 2^((exp - shift) / 2 + FRAC + 2).
            let biased = ((exp - shift as i32) >> 1) + F::FRAC as i32 + 2 - F::SQRT_EXTRA + F::BIAS;
            round_pack_normal::<F>(biased, root | !exact as u64, 2, rounding, flags)
        }
        (_, Class::Nan { .. }) => propagate_nan::<F>(&[a], flags),
        (_, Class::Zero) => a,
        (false, Class::Infinite) => a,
        (true, _) => invalid::<F>(flags),
    }
}

/// floor(sqrt(m * 2^(2 * extra))) for m in [2^62, 2^64) and whether it is exact (`extra` is
/// -6 for a single, 23 for a double: roots of 26 and 55 bits), in 64-bit arithmetic but for
/// three widening products and no branch on the data.
///
/// y ~ 1/sqrt(m) is interpolated in a table (2^-19), and for a double refined by one Newton
/// step, y' = y (3 - m y^2) / 2, in 32-bit fixed point (about 2^-29); r0 = m y ~ sqrt(m) to as
/// many bits; then one Newton step on the root itself, r0 + (m - r0^2) y / 2, at the scale of
/// the result. That is within a unit or two of the root (the error is about
/// sqrt(m) 2^extra * 1.5 e^2 for y's error e, plus the rounding), and one exact square decides
/// the last units: the squares' differences are small, so 64-bit wrapping arithmetic gets them
/// exactly. Should an estimate ever be further off, a slow exact search still gives the right
/// root (the tests check every single significand and millions of doubles never need it).
#[inline(always)]
fn sqrt_significand(m: u64, extra: i32) -> (u64, bool) {
    debug_assert!(m >> 62 != 0 && (-6..=24).contains(&extra));
    // A single's 26-bit root needs y to 2^-19 only: no Newton step.
    let y = rsqrt_q31(m, extra > 0);
    // sqrt(m) = M y 2^32, for M = m / 2^64; then (r0 + rem / (2 r0)) 2^extra, with
    // 1 / (2 r0) ~ y 2^-64, rounded.
    let r0 = ((m as u128 * y as u128) >> 63) as u64;
    let rem = m.wrapping_sub(r0.wrapping_mul(r0)) as i64;
    let shift = (64 - extra) as u32;
    let scaled = ((r0 as i128) << 64) + rem as i128 * y as i64 as i128 + (1 << (shift - 1));
    let estimate = (scaled >> shift) as i64;
    // The operand's low 64 bits are enough for the small differences of squares.
    let x = if extra >= 0 {
        m << (2 * extra)
    } else {
        m >> (-2 * extra)
    };
    let diff = x.wrapping_sub((estimate as u64).wrapping_mul(estimate as u64)) as i64;
    let r = estimate;
    let k = (diff > 2 * r) as i64 + (diff >= 4 * r + 4) as i64
        - (diff < 0) as i64
        - (diff < 1 - 2 * r) as i64;
    let root = r + k;
    // x - root^2 = x - r^2 - k (2r + k)
    let rest = diff.wrapping_sub(k.wrapping_mul(2 * r + k));
    if rest < 0 || rest > 2 * root {
        return sqrt_by_search(m, extra, root as u64);
    }
    (root as u64, rest == 0)
}

/// 1/sqrt(M) for M = m / 2^64 in [1/4, 1), in Q31: linear interpolation in [`RSQRT_TABLE`]
/// (the chord lies above the convex curve, by at most 2^-19.4), then, if asked, one Newton
/// step to about 2^-29, which lands below 1/sqrt(M) from any start.
#[inline(always)]
fn rsqrt_q31(m: u64, newton: bool) -> u64 {
    let i = (m >> 54) as usize - 256;
    let fraction = (m >> 22) & 0xffff_ffff;
    let (left, right) = (RSQRT_TABLE[i] as u64, RSQRT_TABLE[i + 1] as u64);
    let y = left - (((left - right) * fraction) >> 32);
    if !newton {
        return y;
    }
    // y may exceed 2^32 by a hair near M = 1/4, so y^2 is taken in 128 bits.
    let y_squared = ((y as u128 * y as u128) >> 32) as u64; // Q30
    let t3 = (3 << 30) - (((m >> 32) * y_squared) >> 32);
    (y * t3) >> 31
}

/// The exact root from any starting point: the slow path behind [`sqrt_significand`]'s
/// estimate, which the tests show is never taken.
#[cold]
fn sqrt_by_search(m: u64, extra: i32, mut root: u64) -> (u64, bool) {
    debug_assert!(false, "square root estimate off by more than two");
    let x = if extra >= 0 {
        (m as u128) << (2 * extra)
    } else {
        (m >> (-2 * extra)) as u128
    };
    while root as u128 * root as u128 > x {
        root -= 1;
    }
    while (root as u128 + 1) * (root as u128 + 1) <= x {
        root += 1;
    }
    (root, root as u128 * root as u128 == x)
}

/// 1/sqrt(j / 1024) in Q31 for j in 256..=1024 (2^32 at j = 256 is held as 2^32 - 1), computed
/// at compile time with integers only: the grid [`rsqrt_q31`] interpolates on.
static RSQRT_TABLE: [u32; 769] = {
    let mut table = [0u32; 769];
    let mut i = 0;
    while i < 769 {
        // 2^31 / sqrt(j / 1024) = sqrt(2^72 / j)
        let q = (1u128 << 72) / (i as u128 + 256);
        let mut root = 0u128;
        let mut bit = 1u128 << 32;
        while bit != 0 {
            if (root + bit) * (root + bit) <= q {
                root += bit;
            }
            bit >>= 1;
        }
        table[i] = if root > u32::MAX as u128 {
            u32::MAX
        } else {
            root as u32
        };
        i += 1;
    }
    table
};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::{Double, Single};

    fn check(m: u64, extra: i32) {
        let (root, exact) = sqrt_significand(m, extra);
        let x = if extra >= 0 {
            (m as u128) << (2 * extra)
        } else {
            (m >> (-2 * extra)) as u128
        };
        let r = root as u128;
        assert!(r * r <= x && (r + 1) * (r + 1) > x, "sqrt({x}) = {r}");
        assert_eq!(exact, r * r == x, "sqrt({x}) exactness");
    }

    #[test]
    fn single_roots_are_exact_for_every_significand() {
        // A single's sqrt takes sig * 2^39 or sig * 2^40: every one of them.
        for sig in 1u64 << 23..1 << 24 {
            check(sig << 39, Single::SQRT_EXTRA);
            check(sig << 40, Single::SQRT_EXTRA);
        }
    }

    #[test]
    fn double_roots_are_exact() {
        // A double's takes sig * 2^10 or 2^11: the ends, squares and their neighbours, and
        // pseudo-random significands.
        let extra = Double::SQRT_EXTRA;
        let mut z = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..4_000_000 {
            z ^= z << 13;
            z ^= z >> 7;
            z ^= z << 17;
            let sig = (1 << 52) | (z & ((1 << 52) - 1));
            check(sig << (10 + (z >> 63)), extra);
        }
        for m in [1u64 << 62, u64::MAX, 1 << 63, (1 << 63) - 1] {
            check(m, extra);
        }
        // Perfect squares, m = k^2, and their neighbours, for both formats' scales.
        for k in [1u64 << 31, (1 << 31) + 1, 0xb504_f333, 0xffff_ffff, 3 << 30] {
            for m in [k * k, k * k + 1, k * k - 1] {
                if m >> 62 != 0 {
                    check(m, extra);
                    check(m >> 12 << 12, Single::SQRT_EXTRA);
                }
            }
        }
    }
}
