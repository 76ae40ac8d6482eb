//! Conversions between the formats and to and from 32- and 64-bit integers.
//!
//! Float to integer follows RISC-V's saturating rules: a NaN or a too large positive value
//! gives the largest integer, a too large negative value the smallest (0 for unsigned), each
//! raising NV and not NX; otherwise NX if the value was not an integer.

use crate::format::{Class, Format, is_signaling_nan, sign_bit, unpack};
use crate::round::{NV, NX, Rounding, round_pack, shift_right_jam_128};

/// An integer type a float converts to or from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Int {
    I32,
    U32,
    I64,
    U64,
}

impl Int {
    /// The encodings of FCVT's rs2 field: W, WU, L, LU.
    pub fn from_rs2(rs2: usize) -> Option<Int> {
        Some(match rs2 {
            0 => Int::I32,
            1 => Int::U32,
            2 => Int::I64,
            3 => Int::U64,
            _ => return None,
        })
    }

    fn signed(self) -> bool {
        matches!(self, Int::I32 | Int::I64)
    }

    fn bits(self) -> u32 {
        match self {
            Int::I32 | Int::U32 => 32,
            Int::I64 | Int::U64 => 64,
        }
    }

    /// The largest magnitude a value of this sign may have.
    fn limit(self, negative: bool) -> u128 {
        match (self.signed(), negative) {
            (true, false) => (1 << (self.bits() - 1)) - 1,
            (true, true) => 1 << (self.bits() - 1),
            (false, false) => (1 << self.bits()) - 1,
            (false, true) => 0,
        }
    }

    /// A value of this sign and magnitude (within the limit), as the low `bits()` of a u64.
    fn encode(self, negative: bool, magnitude: u128) -> u64 {
        let mask = u64::MAX >> (64 - self.bits());
        let v = magnitude as u64;
        (if negative { v.wrapping_neg() } else { v }) & mask
    }

    /// What an invalid conversion saturates to: NaNs count as positive.
    fn saturated(self, negative: bool) -> u64 {
        self.encode(negative, self.limit(negative))
    }
}

/// Float to integer, as the low bits of the result (the hart sign-extends 32-bit results).
pub fn to_int<F: Format>(a: u64, int: Int, rounding: Rounding, flags: &mut u32) -> u64 {
    let (negative, class) = unpack::<F>(a);
    let (exp, sig) = match class {
        Class::Zero => return 0,
        Class::Finite { exp, sig } => (exp, sig),
        Class::Infinite => {
            *flags |= NV;
            return int.saturated(negative);
        }
        Class::Nan { .. } => {
            *flags |= NV;
            return int.saturated(false);
        }
    };
    let (magnitude, inexact) = round_to_integer(negative, exp, sig, rounding);
    if magnitude > int.limit(negative) {
        *flags |= NV;
        return int.saturated(negative);
    }
    *flags |= inexact as u32 * NX;
    int.encode(negative, magnitude)
}

/// `sig * 2^exp` rounded to an integer magnitude (saturating far above any integer type), and
/// whether rounding dropped anything.
#[inline(always)]
fn round_to_integer(negative: bool, exp: i32, sig: u64, rounding: Rounding) -> (u128, bool) {
    if exp >= 0 {
        // Any exponent above 64 overflows every integer type; the value is exact.
        return ((sig as u128) << exp.min(65), false);
    }
    // Fixed point with 64 fraction bits; anything shifted out of those is a sticky bit.
    let fixed = shift_right_jam_128((sig as u128) << 64, (-exp) as u32);
    let (whole, fraction) = ((fixed >> 64) as u64, fixed as u64);
    let increment = rounding.increment(negative, 1 << 63, whole & 1 != 0);
    let (_, up) = fraction.overflowing_add(increment);
    (whole as u128 + up as u128, fraction != 0)
}

/// Integer (the low bits of `value`, as `int` reads them) to float.
pub fn from_int<F: Format>(value: u64, int: Int, rounding: Rounding, flags: &mut u32) -> u64 {
    let (negative, magnitude) = match int {
        Int::I32 => ((value as i32) < 0, (value as i32).unsigned_abs() as u64),
        Int::U32 => (false, value as u32 as u64),
        Int::I64 => ((value as i64) < 0, (value as i64).unsigned_abs()),
        Int::U64 => (false, value),
    };
    if magnitude == 0 {
        return 0;
    }
    round_pack::<F>(negative, 0, magnitude, rounding, flags)
}

/// A value of format `From` in format `To` (exact when widening).
pub fn convert<From: Format, To: Format>(a: u64, rounding: Rounding, flags: &mut u32) -> u64 {
    match unpack::<From>(a) {
        (negative, Class::Finite { exp, sig }) => {
            round_pack::<To>(negative, exp, sig, rounding, flags)
        }
        (negative, Class::Zero) => sign_bit::<To>(negative),
        (negative, Class::Infinite) => sign_bit::<To>(negative) | To::INF,
        (_, Class::Nan { .. }) => {
            if is_signaling_nan::<From>(a) {
                *flags |= NV;
            }
            To::CANONICAL_NAN
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::{Double, Single};

    #[test]
    fn float_to_int_saturates_and_flags() {
        let r = Rounding::NearestEven;
        let cases: [(u64, Int, u64, u32); 8] = [
            (0x7ff8_0000_0000_0000, Int::I32, 0x7fff_ffff, NV),
            (0xfff0_0000_0000_0000, Int::I64, 1 << 63, NV),
            (0xfff0_0000_0000_0000, Int::U64, 0, NV),
            (0x7ff8_0000_0000_0000, Int::U32, 0xffff_ffff, NV),
            // -0.4 rounds to -0: no invalid for unsigned, just inexact.
            (0xbfd9_9999_9999_999a, Int::U32, 0, NX),
            // -0.6 rounds to -1: invalid for unsigned.
            (0xbfe3_3333_3333_3333, Int::U64, 0, NV),
            // 2^31 does not fit an i32 but -2^31 does.
            (0x41e0_0000_0000_0000, Int::I32, 0x7fff_ffff, NV),
            (0xc1e0_0000_0000_0000, Int::I32, 0x8000_0000, 0),
        ];
        for (a, int, want, want_flags) in cases {
            let mut flags = 0;
            assert_eq!(
                to_int::<Double>(a, int, r, &mut flags),
                want,
                "{a:#x} {int:?}"
            );
            assert_eq!(flags, want_flags, "{a:#x} {int:?}");
        }
    }

    #[test]
    fn halves_round_by_mode() {
        // 2.5 in single precision.
        let a = 0x4020_0000;
        let expect = [
            (Rounding::NearestEven, 2),
            (Rounding::TowardZero, 2),
            (Rounding::Down, 2),
            (Rounding::Up, 3),
            (Rounding::NearestMaxMagnitude, 3),
        ];
        for (rounding, want) in expect {
            let mut flags = 0;
            assert_eq!(to_int::<Single>(a, Int::I64, rounding, &mut flags), want);
            assert_eq!(flags, NX);
        }
    }

    #[test]
    fn int_to_float_rounds() {
        let mut flags = 0;
        // 2^24 + 1 is not a single.
        let v = from_int::<Single>((1 << 24) + 1, Int::I32, Rounding::NearestEven, &mut flags);
        assert_eq!((v, flags), (0x4b80_0000, NX));
        let mut flags = 0;
        let v = from_int::<Double>(i64::MIN as u64, Int::I64, Rounding::NearestEven, &mut flags);
        assert_eq!((v, flags), (0xc3e0_0000_0000_0000, 0));
        let mut flags = 0;
        let v = from_int::<Double>(u32::MAX as u64, Int::I32, Rounding::NearestEven, &mut flags);
        assert_eq!((v, flags), (0xbff0_0000_0000_0000, 0));
    }

    #[test]
    fn narrowing_rounds_and_widening_is_exact() {
        let mut flags = 0;
        // The smallest double subnormal becomes +0 in single, inexact and underflowing.
        assert_eq!(
            convert::<Double, Single>(1, Rounding::NearestEven, &mut flags),
            0
        );
        assert_eq!(flags, NX | crate::round::UF);
        let mut flags = 0;
        // The smallest single subnormal, 2^-149, widens exactly.
        assert_eq!(
            convert::<Single, Double>(1, Rounding::NearestEven, &mut flags),
            0x36a0_0000_0000_0000
        );
        assert_eq!(flags, 0);
    }
}
