//! The two binary interchange formats F and D use, and how a value's bits come apart.
//!
//! Every operation is written once, generic over [`Format`]; the constants fold at compile time,
//! so `add::<Single>` and `add::<Double>` are separate straight-line functions. Values travel as
//! raw bits in a `u64` (a single in its low 32 bits), never as host floats.

/// An IEEE 754 binary format: its field widths and the constants derived from them.
pub trait Format {
    /// Stored fraction bits (the significand has one more, the hidden bit).
    const FRAC: u32;
    /// Exponent field bits.
    const EXP: u32;

    /// The sign bit.
    const SIGN: u64 = 1 << (Self::FRAC + Self::EXP);
    /// The biased exponent of infinities and NaNs.
    const EXP_MAX: i32 = (1 << Self::EXP) - 1;
    const BIAS: i32 = (1 << (Self::EXP - 1)) - 1;
    const FRAC_MASK: u64 = (1 << Self::FRAC) - 1;
    const HIDDEN: u64 = 1 << Self::FRAC;
    /// Positive infinity; one less is the largest finite value.
    const INF: u64 = (Self::EXP_MAX as u64) << Self::FRAC;
    /// The quiet bit of a NaN's fraction.
    const QUIET: u64 = 1 << (Self::FRAC - 1);
    /// RISC-V's canonical NaN: positive, quiet, zero payload.
    const CANONICAL_NAN: u64 = Self::INF | Self::QUIET;
    /// The exponent of the significand's last place for a subnormal: value = sig * 2^this.
    const SUBNORMAL_EXP: i32 = 1 - Self::BIAS - Self::FRAC as i32;
    /// A square root is taken of a significand in [2^62, 2^64) scaled by 2^(2 * this), so the
    /// root, at least 2^(31 + this), has FRAC + 3 bits: enough for rounding with a sticky bit
    /// below them.
    const SQRT_EXTRA: i32 = Self::FRAC as i32 + 3 - 32;
}

/// binary32, the F extension's format.
pub struct Single;
/// binary64, the D extension's format.
pub struct Double;

impl Format for Single {
    const FRAC: u32 = 23;
    const EXP: u32 = 8;
}

impl Format for Double {
    const FRAC: u32 = 52;
    const EXP: u32 = 11;
}

/// What a value is, with a finite nonzero value as `sig * 2^exp` (sig < 2^(FRAC + 1), not
/// necessarily normalised: a subnormal's sig has no hidden bit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Zero,
    Finite { exp: i32, sig: u64 },
    Infinite,
    Nan { signaling: bool },
}

/// Splits `bits` into its sign and class.
#[inline(always)]
pub fn unpack<F: Format>(bits: u64) -> (bool, Class) {
    let sign = bits & F::SIGN != 0;
    let biased = ((bits >> F::FRAC) as i32) & F::EXP_MAX;
    let frac = bits & F::FRAC_MASK;
    let class = if biased == F::EXP_MAX {
        if frac == 0 {
            Class::Infinite
        } else {
            Class::Nan {
                signaling: frac & F::QUIET == 0,
            }
        }
    } else if biased == 0 {
        if frac == 0 {
            Class::Zero
        } else {
            Class::Finite {
                exp: F::SUBNORMAL_EXP,
                sig: frac,
            }
        }
    } else {
        Class::Finite {
            exp: biased - F::BIAS - F::FRAC as i32,
            sig: frac | F::HIDDEN,
        }
    };
    (sign, class)
}

/// The same value with its significand's leading bit at bit FRAC (a subnormal made normal
/// by an exponent below the format's range).
#[inline(always)]
pub fn normalize<F: Format>(exp: i32, sig: u64) -> (i32, u64) {
    debug_assert!(sig != 0 && sig < F::HIDDEN << 1);
    let shift = sig.leading_zeros() - (63 - F::FRAC);
    (exp - shift as i32, sig << shift)
}

#[inline(always)]
pub fn sign_bit<F: Format>(negative: bool) -> u64 {
    if negative { F::SIGN } else { 0 }
}

#[inline(always)]
pub fn is_nan<F: Format>(bits: u64) -> bool {
    bits & !F::SIGN > F::INF
}

#[inline(always)]
pub fn is_signaling_nan<F: Format>(bits: u64) -> bool {
    is_nan::<F>(bits) && bits & F::QUIET == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constants_are_the_interchange_formats() {
        assert_eq!(Single::INF, 0x7f80_0000);
        assert_eq!(Single::CANONICAL_NAN, 0x7fc0_0000);
        assert_eq!(Single::SIGN, 0x8000_0000);
        assert_eq!(Double::INF, 0x7ff0_0000_0000_0000);
        assert_eq!(Double::CANONICAL_NAN, 0x7ff8_0000_0000_0000);
        assert_eq!(Double::SUBNORMAL_EXP, -1074);
        assert_eq!(Single::SUBNORMAL_EXP, -149);
    }

    #[test]
    fn unpack_every_class() {
        assert_eq!(unpack::<Single>(0x8000_0000), (true, Class::Zero));
        assert_eq!(unpack::<Single>(0x7f80_0000), (false, Class::Infinite));
        assert_eq!(
            unpack::<Single>(0x7f80_0001),
            (false, Class::Nan { signaling: true })
        );
        assert_eq!(
            unpack::<Single>(0xffc0_0000),
            (true, Class::Nan { signaling: false })
        );
        // 1.0 = 2^23 * 2^-23; the smallest subnormal = 1 * 2^-149.
        assert_eq!(
            unpack::<Single>(0x3f80_0000),
            (
                false,
                Class::Finite {
                    exp: -23,
                    sig: 1 << 23
                }
            )
        );
        assert_eq!(
            unpack::<Single>(1),
            (false, Class::Finite { exp: -149, sig: 1 })
        );
        assert_eq!(normalize::<Single>(-149, 1), (-172, 1 << 23));
    }
}
