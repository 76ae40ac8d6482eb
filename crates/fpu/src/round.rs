//! Rounding an exact (or sticky-marked) result to a format, with the flags it raises.
//!
//! Every arithmetic operation ends here: it computes its result as `sig * 2^exp` with enough
//! bits below the format's last place that only a sticky bit is lost, and [`round_pack`]
//! rounds once. Tininess is detected after rounding, as RISC-V and SoftFloat's RISC-V
//! specialisation do: a result is tiny if rounding it with an unbounded exponent would still
//! leave it below the smallest normal; underflow is raised only for tiny inexact results.

use crate::format::{Format, sign_bit};

/// The `fflags` bits, laid out as in `fcsr`.
pub const NX: u32 = 0x01;
pub const UF: u32 = 0x02;
pub const OF: u32 = 0x04;
pub const DZ: u32 = 0x08;
pub const NV: u32 = 0x10;

/// The five rounding modes of RISC-V's `frm` and instruction `rm` fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rounding {
    /// RNE: to nearest, ties to even.
    NearestEven,
    /// RTZ: toward zero.
    TowardZero,
    /// RDN: toward negative infinity.
    Down,
    /// RUP: toward positive infinity.
    Up,
    /// RMM: to nearest, ties away from zero.
    NearestMaxMagnitude,
}

impl Rounding {
    /// The mode an `rm` encoding names (0..=4); 5, 6 and 7 (dynamic) are the caller's.
    pub fn from_rm(rm: u32) -> Option<Rounding> {
        Some(match rm {
            0 => Rounding::NearestEven,
            1 => Rounding::TowardZero,
            2 => Rounding::Down,
            3 => Rounding::Up,
            4 => Rounding::NearestMaxMagnitude,
            _ => return None,
        })
    }

    /// What to add below the kept part of a value of this sign before truncating it, for a
    /// dropped field whose half is `half` (all ones in the field is `2 * half - 1`); `odd` is
    /// the kept part's last bit. Rounding by an increment needs no branch on the dropped bits.
    #[inline(always)]
    pub fn increment(self, negative: bool, half: u64, odd: bool) -> u64 {
        let all = half.wrapping_mul(2).wrapping_sub(1);
        match self {
            // A tie rounds up only from an odd kept part: half - 1 + odd.
            Rounding::NearestEven => half - 1 + odd as u64,
            Rounding::NearestMaxMagnitude => half,
            Rounding::TowardZero => 0,
            Rounding::Down => all & (negative as u64).wrapping_neg(),
            Rounding::Up => all & (!negative as u64).wrapping_neg(),
        }
    }

    /// Whether an overflow in this direction gives infinity (else the largest finite value).
    #[inline(always)]
    fn overflows_to_infinity(self, negative: bool) -> bool {
        match self {
            Rounding::NearestEven | Rounding::NearestMaxMagnitude => true,
            Rounding::TowardZero => false,
            Rounding::Down => negative,
            Rounding::Up => !negative,
        }
    }
}

/// `x >> n`, with every bit shifted out ORed into the lowest bit kept (the sticky bit).
#[inline(always)]
pub fn shift_right_jam(x: u64, n: u32) -> u64 {
    if n == 0 {
        x
    } else if n < 64 {
        (x >> n) | ((x << (64 - n)) != 0) as u64
    } else {
        (x != 0) as u64
    }
}

/// [`shift_right_jam`] for 128-bit values.
#[inline(always)]
pub fn shift_right_jam_128(x: u128, n: u32) -> u128 {
    if n == 0 {
        x
    } else if n < 128 {
        (x >> n) | ((x << (128 - n)) != 0) as u128
    } else {
        (x != 0) as u128
    }
}

/// Drops `extra` low bits of `sig` by `rounding`: the kept part (possibly one more than fits,
/// when rounding carries) and whether anything nonzero was dropped.
#[inline(always)]
fn round_bits(sig: u64, extra: u32, negative: bool, rounding: Rounding) -> (u64, bool) {
    let mask = (1u64 << extra) - 1;
    let increment = rounding.increment(negative, 1 << (extra - 1), (sig >> extra) & 1 != 0);
    let (sum, carry) = sig.overflowing_add(increment);
    (
        (sum >> extra) | (carry as u64) << (64 - extra),
        sig & mask != 0,
    )
}

/// The value `sig * 2^exp`, rounded to format `F`, as bits; raises NX, UF and OF in `flags`.
///
/// `sig` must be nonzero. Its lowest bit may be a sticky bit (the OR of bits already dropped)
/// provided it lies at least two places below the format's last place, which holds whenever
/// `sig` has FRAC + 3 or more significant bits.
#[inline(always)]
pub fn round_pack<F: Format>(
    negative: bool,
    exp: i32,
    sig: u64,
    rounding: Rounding,
    flags: &mut u32,
) -> u64 {
    debug_assert!(sig != 0);
    let extra = 63 - F::FRAC;
    let lz = sig.leading_zeros();
    let sig = sig << lz;
    // The biased exponent the result has if its leading bit stays where it is.
    let biased = exp - lz as i32 + 63 + F::BIAS;
    let sign = sign_bit::<F>(negative);
    if biased >= 1 {
        let (mut kept, inexact) = round_bits(sig, extra, negative, rounding);
        let mut biased = biased;
        if kept >> (F::FRAC + 1) != 0 {
            kept >>= 1;
            biased += 1;
        }
        if biased >= F::EXP_MAX {
            *flags |= OF | NX;
            let inf = rounding.overflows_to_infinity(negative);
            return sign | if inf { F::INF } else { F::INF - 1 };
        }
        *flags |= inexact as u32 * NX;
        // `kept` carries the hidden bit, which adds one to the exponent field.
        sign | ((((biased - 1) as u64) << F::FRAC) + kept)
    } else {
        let tiny = biased < 0 || round_bits(sig, extra, negative, rounding).0 >> (F::FRAC + 1) == 0;
        let denormal = shift_right_jam(sig, (1 - biased) as u32);
        // A carry out of the subnormal range lands on the smallest normal's encoding.
        let (kept, inexact) = round_bits(denormal, extra, negative, rounding);
        if inexact {
            *flags |= NX | (tiny as u32 * UF);
        }
        sign | kept
    }
}

/// [`round_pack`] for a result known to be normal and in range, whose `sig` has exactly
/// FRAC + 1 + `extra` bits (its lowest possibly sticky): a square root's. It skips the search
/// for the leading bit and the range checks.
#[inline(always)]
pub fn round_pack_normal<F: Format>(
    biased: i32,
    sig: u64,
    extra: u32,
    rounding: Rounding,
    flags: &mut u32,
) -> u64 {
    debug_assert!(sig >> (F::FRAC + extra) == 1 && biased >= 1 && biased < F::EXP_MAX - 1);
    let (kept, inexact) = round_bits(sig, extra, false, rounding);
    *flags |= inexact as u32 * NX;
    // A carry out of the significand moves into the exponent field.
    (((biased - 1) as u64) << F::FRAC) + kept
}

/// [`round_pack`] for a 128-bit significand: the bits below the top 64 become a sticky bit.
#[inline(always)]
pub fn round_pack_wide<F: Format>(
    negative: bool,
    exp: i32,
    sig: u128,
    rounding: Rounding,
    flags: &mut u32,
) -> u64 {
    debug_assert!(sig != 0);
    let high = (sig >> 64) as u64;
    if high == 0 {
        return round_pack::<F>(negative, exp, sig as u64, rounding, flags);
    }
    let lz = high.leading_zeros();
    let top = sig << lz;
    let narrow = (top >> 64) as u64 | (top as u64 != 0) as u64;
    round_pack::<F>(negative, exp + 64 - lz as i32, narrow, rounding, flags)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::{Double, Single};

    #[test]
    fn jam_keeps_every_dropped_bit() {
        assert_eq!(shift_right_jam(0b1000, 3), 1);
        assert_eq!(shift_right_jam(0b1001, 3), 1);
        assert_eq!(shift_right_jam(0b10001, 3), 0b11);
        assert_eq!(shift_right_jam(5, 64), 1);
        assert_eq!(shift_right_jam(0, 200), 0);
        assert_eq!(shift_right_jam_128(1 << 100, 101), 1);
        assert_eq!(shift_right_jam_128(3 << 100, 101), 1);
    }

    #[test]
    fn ties_by_mode() {
        // 2^24 + 1 is a tie between 2^24 and 2^24 + 2 in single precision.
        let expect = [
            (Rounding::NearestEven, 0x4b80_0000),
            (Rounding::TowardZero, 0x4b80_0000),
            (Rounding::Down, 0x4b80_0000),
            (Rounding::Up, 0x4b80_0001),
            (Rounding::NearestMaxMagnitude, 0x4b80_0001),
        ];
        for (rounding, want) in expect {
            let mut flags = 0;
            let bits = round_pack::<Single>(false, 0, (1 << 24) + 1, rounding, &mut flags);
            assert_eq!(bits, want, "{rounding:?}");
            assert_eq!(flags, NX);
        }
    }

    #[test]
    fn overflow_goes_to_infinity_or_the_largest_finite() {
        let mut flags = 0;
        let big = round_pack::<Double>(true, 1024, 1, Rounding::NearestEven, &mut flags);
        assert_eq!((big, flags), (0xfff0_0000_0000_0000, OF | NX));
        let mut flags = 0;
        let big = round_pack::<Double>(false, 1024, 1, Rounding::TowardZero, &mut flags);
        assert_eq!((big, flags), (0x7fef_ffff_ffff_ffff, OF | NX));
    }

    #[test]
    fn tininess_is_detected_after_rounding() {
        // Just below the smallest normal single, rounding up reaches it: inexact, not tiny.
        let sig = (1u64 << 48) - 1; // 0.111...1 (48 ones) * 2^-126
        let mut flags = 0;
        let bits = round_pack::<Single>(false, -126 - 48, sig, Rounding::NearestEven, &mut flags);
        assert_eq!((bits, flags), (0x0080_0000, NX));
        // Toward zero it stays subnormal: tiny and inexact.
        let mut flags = 0;
        let bits = round_pack::<Single>(false, -126 - 48, sig, Rounding::TowardZero, &mut flags);
        assert_eq!((bits, flags), (0x007f_ffff, NX | UF));
        // An exact subnormal raises nothing.
        let mut flags = 0;
        let bits = round_pack::<Single>(false, -149, 3, Rounding::NearestEven, &mut flags);
        assert_eq!((bits, flags), (3, 0));
    }
}
