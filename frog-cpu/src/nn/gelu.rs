//! GELU in its exact form, PyTorch's default `nn.GELU()`:
//! `gelu(x) = x * Phi(x)`, `Phi` the standard normal distribution function
//! `(1 + erf(x / sqrt 2)) / 2`. (The tanh form is an approximation, which
//! airbench does not use.)

use core::f64::consts::{FRAC_1_SQRT_2, FRAC_2_SQRT_PI, LN_2, LOG2_E};

use crate::gemm::Real;
use crate::parts::Rows;
use crate::pool::ThreadPool;

/// `1/sqrt(2 pi)`: the standard normal density at 0.
const INV_SQRT_2PI: f64 = FRAC_2_SQRT_PI * FRAC_1_SQRT_2 * 0.5;

/// `(Phi(x), exp(-x^2/2))`: the distribution function and the Gaussian
/// the density is made of.
///
/// In `f64`, libm's `erf` and `exp`, exact to the golden cases' 1e-9.
/// In `f32`, a form without calls or branches, so that the loops over a
/// layer's activations vectorize (libm's scalar `erff` and `expf` took a
/// quarter of an airbench training step): in f64 arithmetic,
/// `erfc(|x|/sqrt 2)` by Abramowitz and Stegun's formula 7.1.26 (absolute
/// error at most 1.5e-7; the formula PyTorch's vectorized f32 `erf` uses on
/// the CPU) times the Gaussian from [`exp_nonpositive`], which the density
/// reuses. `T` is `f32` or `f64` (`Real` is sealed), told apart by size.
#[inline(always)]
fn cdf_and_gaussian<T: Real>(x: T) -> (T, T) {
    let v = x.as_f64();
    if T::BYTES == 8 {
        return (T::of_f64(0.5 * (1.0 + libm::erf(v * FRAC_1_SQRT_2))), T::of_f64(libm::exp(-0.5 * v * v)));
    }
    const P: f64 = 0.327_591_1;
    const A: [f64; 5] = [0.254_829_592, -0.284_496_736, 1.421_413_741, -1.453_152_027, 1.061_405_429];
    let gaussian = exp_nonpositive(-0.5 * v * v);
    let t = 1.0 / (1.0 + P * FRAC_1_SQRT_2 * v.abs());
    let poly = t * (A[0] + t * (A[1] + t * (A[2] + t * (A[3] + t * A[4]))));
    // erfc(|x|/sqrt 2) / 2 is Phi(-|x|).
    let lower = 0.5 * poly * gaussian;
    (T::of_f64(if v >= 0.0 { 1.0 - lower } else { lower }), T::of_f64(gaussian))
}

/// `e^v` for `v <= 0`, to about 1e-10 relative, without calls or branches:
/// `v = n ln 2 + r` with `|r| <= ln 2 / 2`, `e^r` by its Taylor series to
/// degree 9, `2^n` written into the exponent. Below -700 (where `f32`
/// holds 0) it returns `e^-700`.
#[inline(always)]
fn exp_nonpositive(v: f64) -> f64 {
    // Adding 1.5 * 2^52 rounds to an integer, held in the low mantissa bits.
    const ROUND: f64 = 6_755_399_441_055_744.0;
    // ln 2 in two parts: `n * LN_2_HI` is exact for |n| < 2^20.
    const LN_2_HI: f64 = 0.693_147_180_369_123_8;
    const LN_2_LO: f64 = LN_2 - LN_2_HI;
    let v = v.max(-700.0);
    let k = v * LOG2_E + ROUND;
    let n = k - ROUND;
    let r = (v - n * LN_2_HI) - n * LN_2_LO;
    let mut p = 1.0 / 362_880.0;
    for d in [40_320.0, 5_040.0, 720.0, 120.0, 24.0, 6.0, 2.0, 1.0, 1.0] {
        p = p * r + 1.0 / d;
    }
    let n_bits = k.to_bits().wrapping_sub(ROUND.to_bits());
    p * f64::from_bits(n_bits.wrapping_add(1023) << 52)
}

/// The first `n` entries of `out` split across the pool, each part with
/// its range of entries.
fn parts<'a, T>(pool: &ThreadPool, n: usize, out: &'a mut [T]) -> Rows<'a, T> {
    Rows::new(&mut out[..n], n, 1, pool.threads())
}

/// `y = x * Phi(x)` over the first `n` entries.
pub fn gelu<T: Real>(pool: &ThreadPool, n: usize, x: &[T], y: &mut [T]) {
    assert!(x.len() >= n && y.len() >= n, "gelu: x or y shorter than {n}");
    pool.split(parts(pool, n, y), |_, (range, y)| {
        for (y, &x) in y.iter_mut().zip(&x[range]) {
            *y = x * cdf_and_gaussian(x).0;
        }
    });
}

/// Backward of [`gelu`] over the first `n` entries:
/// `dx = dy * (Phi(x) + x * phi(x))`, `phi` the standard normal density
/// `exp(-x^2/2) / sqrt(2 pi)`.
pub fn gelu_backward<T: Real>(pool: &ThreadPool, n: usize, x: &[T], dy: &[T], dx: &mut [T]) {
    assert!(x.len() >= n && dy.len() >= n && dx.len() >= n, "gelu backward: x, dy or dx shorter than {n}");
    let inv_sqrt_2pi = T::of_f64(INV_SQRT_2PI);
    pool.split(parts(pool, n, dx), |_, (range, dx)| {
        for ((dx, &x), &g) in dx.iter_mut().zip(&x[range.clone()]).zip(&dy[range]) {
            let (cdf, gaussian) = cdf_and_gaussian(x);
            *dx = g * (cdf + x * (gaussian * inv_sqrt_2pi));
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The f32 form against libm's f64 functions on a dense grid: `Phi`
    /// within A&S 7.1.26's 1.5e-7 / 2 plus f32 rounding, the Gaussian to
    /// f32 rounding, `exp_nonpositive` to 1e-10 down to -700.
    #[test]
    fn the_f32_form_follows_libm() {
        let (mut worst_cdf, mut worst_gauss) = (0.0f64, 0.0f64);
        for i in -100_000..=100_000 {
            let x = i as f32 * 1e-4;
            let (cdf, gaussian) = cdf_and_gaussian(x);
            let v = f64::from(x);
            worst_cdf = worst_cdf.max((f64::from(cdf) - 0.5 * (1.0 + libm::erf(v * FRAC_1_SQRT_2))).abs());
            let want = libm::exp(-0.5 * v * v);
            worst_gauss = worst_gauss.max((f64::from(gaussian) - want).abs() / want);
        }
        assert!(worst_cdf < 1.5e-7, "Phi: {worst_cdf:e}");
        assert!(worst_gauss < 1e-7, "the Gaussian: {worst_gauss:e}");
        for i in 0..=70_000 {
            let v = -f64::from(i) * 1e-2;
            let (got, want) = (exp_nonpositive(v), libm::exp(v));
            assert!((got - want).abs() <= 1e-10 * want, "e^{v}: {got:e} vs {want:e}");
        }
        assert_eq!(exp_nonpositive(0.0), 1.0);
        assert!(cdf_and_gaussian(f32::NAN).0.is_nan(), "NaN stays NaN");
        assert_eq!(cdf_and_gaussian(f32::INFINITY), (1.0, 0.0));
    }

    /// Hand-computed values: `gelu(0) = 0`, `gelu(x) - gelu(-x) = x`
    /// (`Phi(x) + Phi(-x) = 1`), and at `x = sqrt 2`, where
    /// `Phi = (1 + erf 1) / 2` with `erf 1 = 0.8427007929497149`; the
    /// tails 0 and `x`; `gelu'(0) = Phi(0) = 1/2`, `gelu'(x) + gelu'(-x) = 1`
    /// and `gelu'(sqrt 2) = Phi(sqrt 2) + sqrt 2 phi(sqrt 2)`. Each in f64
    /// and f32.
    #[test]
    fn values_by_hand() {
        fn check<T: Real>(tol: f64) {
            let pool = ThreadPool::new(2).unwrap();
            let s2 = core::f64::consts::SQRT_2;
            let xs: Vec<T> = [0.0, 1.5, -1.5, s2, -30.0, 30.0].map(T::of_f64).to_vec();
            let mut y = vec![T::zero(); xs.len()];
            gelu(&pool, xs.len(), &xs, &mut y);
            let y: Vec<f64> = y.iter().map(|v| v.as_f64()).collect();
            let erf1 = 0.842_700_792_949_714_9;
            let want_s2 = s2 * 0.5 * (1.0 + erf1);
            assert_eq!(y[0], 0.0);
            assert!((y[1] - y[2] - 1.5).abs() < tol, "gelu(x) - gelu(-x) = x");
            assert!((y[3] - want_s2).abs() < tol * want_s2, "gelu(sqrt 2) {} vs {want_s2}", y[3]);
            assert!(y[4].abs() < tol && (y[5] - 30.0).abs() < tol * 30.0, "the tails: 0 and x");
            let (dy, mut dx) = (vec![T::of_f64(2.0); xs.len()], vec![T::zero(); xs.len()]);
            gelu_backward(&pool, xs.len(), &xs, &dy, &mut dx);
            assert!((dx[0].as_f64() - 1.0).abs() < tol, "2 * gelu'(0) = 1");
            // gelu'(x) + gelu'(-x) = 1 (Phi symmetric, x phi(x) odd).
            assert!((dx[1].as_f64() + dx[2].as_f64() - 2.0).abs() < tol);
            let phi = (-1.0f64).exp() / (2.0 * core::f64::consts::PI).sqrt();
            let want = 2.0 * (0.5 * (1.0 + erf1) + s2 * phi);
            assert!((dx[3].as_f64() - want).abs() < tol * want, "2 gelu'(sqrt 2) {} vs {want}", dx[3].as_f64());
        }
        check::<f64>(1e-15);
        check::<f32>(1e-6);
    }

    /// The backward pass is the derivative of the forward pass (central
    /// differences in f64), and the f32 kernels round the f64 ones, over
    /// more entries than a thread's part.
    #[test]
    fn backward_is_the_derivative_and_f32_follows_f64() {
        let pool = ThreadPool::new(2).unwrap();
        let n = 1001;
        let x: Vec<f64> = (0..n).map(|i| (i as f64 * 0.37).sin() * 4.0).collect();
        let dy: Vec<f64> = (0..n).map(|i| (i as f64 * 0.61).cos()).collect();
        let mut dx = vec![0.0; n];
        gelu_backward(&pool, n, &x, &dy, &mut dx);
        let h = 1e-6;
        let (mut plus, mut minus) = (vec![0.0; n], vec![0.0; n]);
        gelu(&pool, n, &x.iter().map(|v| v + h).collect::<Vec<_>>(), &mut plus);
        gelu(&pool, n, &x.iter().map(|v| v - h).collect::<Vec<_>>(), &mut minus);
        for i in 0..n {
            let fd = dy[i] * (plus[i] - minus[i]) / (2.0 * h);
            assert!((dx[i] - fd).abs() < 1e-8, "entry {i}: {} vs {fd}", dx[i]);
        }
        let mut y = vec![0.0; n];
        gelu(&pool, n, &x, &mut y);
        let (x32, dy32): (Vec<f32>, Vec<f32>) = (x.iter().map(|&v| v as f32).collect(), dy.iter().map(|&v| v as f32).collect());
        let (mut y32, mut dx32) = (vec![0f32; n], vec![0f32; n]);
        gelu(&pool, n, &x32, &mut y32);
        gelu_backward(&pool, n, &x32, &dy32, &mut dx32);
        for i in 0..n {
            assert!((f64::from(y32[i]) - y[i]).abs() < 2e-6 * (1.0 + y[i].abs()), "f32 gelu, entry {i}");
            assert!((f64::from(dx32[i]) - dx[i]).abs() < 2e-6 * (1.0 + dx[i].abs()), "f32 gelu backward, entry {i}");
        }
    }

    #[test]
    #[should_panic(expected = "gelu: x or y shorter")]
    fn a_short_output_panics() {
        let pool = ThreadPool::new(1).unwrap();
        gelu(&pool, 3, &[0.0f64; 3], &mut [0.0; 2]);
    }
}
