//! Comparisons, minimum and maximum, and classification.
//!
//! FEQ is a quiet comparison (NV only for a signaling NaN), FLT and FLE signal on any NaN.
//! FMIN and FMAX are IEEE 754-2019's minimumNumber and maximumNumber as RISC-V specifies them:
//! a single NaN operand gives the other, two give the canonical NaN, and -0 < +0.

use crate::format::{Format, is_nan, is_signaling_nan};
use crate::round::NV;

/// Both operands are zeros of any sign.
#[inline(always)]
fn both_zero<F: Format>(a: u64, b: u64) -> bool {
    (a | b) & !F::SIGN == 0
}

/// a < b for two values that are not NaNs.
#[inline(always)]
fn less<F: Format>(a: u64, b: u64) -> bool {
    let (na, nb) = (a & F::SIGN != 0, b & F::SIGN != 0);
    if na != nb {
        na && !both_zero::<F>(a, b)
    } else if na {
        a > b
    } else {
        a < b
    }
}

/// FEQ.
pub fn eq<F: Format>(a: u64, b: u64, flags: &mut u32) -> bool {
    if is_nan::<F>(a) || is_nan::<F>(b) {
        if is_signaling_nan::<F>(a) || is_signaling_nan::<F>(b) {
            *flags |= NV;
        }
        return false;
    }
    a == b || both_zero::<F>(a, b)
}

/// FLT.
pub fn lt<F: Format>(a: u64, b: u64, flags: &mut u32) -> bool {
    if is_nan::<F>(a) || is_nan::<F>(b) {
        *flags |= NV;
        return false;
    }
    less::<F>(a, b)
}

/// FLE.
pub fn le<F: Format>(a: u64, b: u64, flags: &mut u32) -> bool {
    if is_nan::<F>(a) || is_nan::<F>(b) {
        *flags |= NV;
        return false;
    }
    a == b || both_zero::<F>(a, b) || less::<F>(a, b)
}

/// FMIN (`max == false`) and FMAX.
pub fn min_max<F: Format>(a: u64, b: u64, max: bool, flags: &mut u32) -> u64 {
    if is_signaling_nan::<F>(a) || is_signaling_nan::<F>(b) {
        *flags |= NV;
    }
    match (is_nan::<F>(a), is_nan::<F>(b)) {
        (true, true) => F::CANONICAL_NAN,
        (true, false) => b,
        (false, true) => a,
        (false, false) => {
            if both_zero::<F>(a, b) {
                // -0 < +0: the minimum has a sign bit if either has one.
                if max { a & b } else { a | b }
            } else if less::<F>(a, b) != max {
                a
            } else {
                b
            }
        }
    }
}

/// FCLASS: one bit for the class of the value (bit 0 -inf .. bit 9 quiet NaN).
pub fn classify<F: Format>(a: u64) -> u64 {
    let negative = a & F::SIGN != 0;
    let biased = (a >> F::FRAC) as i32 & F::EXP_MAX;
    let frac = a & F::FRAC_MASK;
    let bit = match (biased, frac) {
        (e, 0) if e == F::EXP_MAX => [7, 0][negative as usize],
        (e, f) if e == F::EXP_MAX => [8, 9][(f & F::QUIET != 0) as usize],
        (0, 0) => [4, 3][negative as usize],
        (0, _) => [5, 2][negative as usize],
        _ => [6, 1][negative as usize],
    };
    1 << bit
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::{Double, Single};

    #[test]
    fn zeros_compare_equal_and_order_by_sign_in_min_max() {
        let mut flags = 0;
        assert!(eq::<Single>(0, 0x8000_0000, &mut flags));
        assert!(!lt::<Single>(0x8000_0000, 0, &mut flags));
        assert!(le::<Single>(0, 0x8000_0000, &mut flags));
        assert_eq!(
            min_max::<Single>(0, 0x8000_0000, false, &mut flags),
            0x8000_0000
        );
        assert_eq!(min_max::<Single>(0x8000_0000, 0, true, &mut flags), 0);
        assert_eq!(flags, 0);
    }

    #[test]
    fn negative_values_order_by_magnitude_reversed() {
        let mut flags = 0;
        // -2 < -1 < 1
        assert!(lt::<Double>(
            0xc000_0000_0000_0000,
            0xbff0_0000_0000_0000,
            &mut flags
        ));
        assert!(lt::<Double>(
            0xbff0_0000_0000_0000,
            0x3ff0_0000_0000_0000,
            &mut flags
        ));
        assert!(!le::<Double>(
            0x3ff0_0000_0000_0000,
            0xbff0_0000_0000_0000,
            &mut flags
        ));
        assert_eq!(flags, 0);
    }

    #[test]
    fn nans_in_comparisons() {
        let (qnan, snan) = (0x7fc0_0000, 0x7f80_0001);
        let mut flags = 0;
        assert!(!eq::<Single>(qnan, qnan, &mut flags));
        assert_eq!(flags, 0, "FEQ is quiet");
        assert!(!eq::<Single>(snan, 0, &mut flags));
        assert_eq!(flags, NV);
        let mut flags = 0;
        assert!(!le::<Single>(qnan, 0, &mut flags));
        assert_eq!(flags, NV, "FLE signals");
        let mut flags = 0;
        assert_eq!(
            min_max::<Single>(snan, 0x3f80_0000, false, &mut flags),
            0x3f80_0000
        );
        assert_eq!(flags, NV);
        assert_eq!(min_max::<Single>(qnan, snan, true, &mut flags), 0x7fc0_0000);
    }

    #[test]
    fn every_class_has_its_bit() {
        let cases: [(u64, u32); 10] = [
            (0xff80_0000, 0),
            (0xbf80_0000, 1),
            (0x8000_0001, 2),
            (0x8000_0000, 3),
            (0, 4),
            (1, 5),
            (0x3f80_0000, 6),
            (0x7f80_0000, 7),
            (0x7f80_0001, 8),
            (0x7fc0_0000, 9),
        ];
        for (v, bit) in cases {
            assert_eq!(classify::<Single>(v), 1 << bit, "{v:#x}");
        }
    }
}
