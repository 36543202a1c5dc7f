//! The overflow-safe power-of-two rescaling of rows whose squares could
//! overflow, defined once for every backend: its threshold per scalar type
//! and its gain. Backends apply it to the gradient's rows
//! ([`crate::Backend::row_rescale`]) and to the output gradients' rows in
//! [`crate::Backend::fisher_weights`]; frog-cuda's `frog.cu` writes the f32
//! threshold as `SQUARE_SAFE_MAX` (a test there checks that it is this one).

use crate::scalar::Scalar;

/// The largest `|v|` of a row that takes the unscaled path: its squares,
/// their sums over long rows, the Fisher scale and the CG's products stay
/// far from overflow below it (2^16 in `f32`, 2^128 in `f64`), and real
/// gradients lie far below it.
pub fn square_safe_max<S: Scalar>() -> f64 {
    if S::BYTES == 4 {
        65536.0
    } else {
        libm::ldexp(1.0, 128)
    }
}

/// The gain of a row whose largest `|v|` is `max`: 1 when `max` is at most
/// [`square_safe_max`] (or not finite), else the power of two `2^-e` that
/// brings `max` into `[0.5, 1)`. Multiplying by it is exact, and FROG's
/// direction does not depend on it except through `denom_eps`.
pub fn pow2_gain<S: Scalar>(max: f64) -> f64 {
    if !(max.is_finite() && max > square_safe_max::<S>()) {
        return 1.0;
    }
    // max = f * 2^e with f in [0.5, 1): e from the f64 exponent bits (max is
    // normal, e in 17..=1024); 2^-e is built from its bits, since it may be
    // subnormal (2^-1024 for f64::MAX), where `powi` would round to 0.
    let e = ((max.to_bits() >> 52) & 0x7ff) as i64 - 1022;
    if e <= 1022 {
        f64::from_bits(((1023 - e) as u64) << 52)
    } else {
        f64::from_bits(1 << (52 - (e - 1022)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gains_are_powers_of_two_that_bring_the_maximum_near_one() {
        assert_eq!(pow2_gain::<f32>(65536.0), 1.0);
        assert_eq!(pow2_gain::<f32>(f64::INFINITY), 1.0);
        assert_eq!(pow2_gain::<f32>(65537.0), libm::ldexp(1.0, -17));
        assert_eq!(pow2_gain::<f64>(libm::ldexp(1.0, 128)), 1.0);
        for max in [1e5, 3e37, f64::from(f32::MAX), 1e300, f64::MAX] {
            let g = pow2_gain::<f32>(max);
            assert!((0.5..1.0).contains(&(max * g)), "{max}: {g}");
        }
        assert_eq!(pow2_gain::<f64>(f64::MAX), libm::ldexp(1.0, -1024));
    }
}
