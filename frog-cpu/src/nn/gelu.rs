//! GELU in its exact form, PyTorch's default `nn.GELU()`:
//! `gelu(x) = x * Phi(x)`, `Phi` the standard normal distribution function
//! `(1 + erf(x / sqrt 2)) / 2`. (The tanh form is an approximation, which
//! airbench does not use.)

use core::f64::consts::{FRAC_1_SQRT_2, FRAC_2_SQRT_PI};

use crate::gemm::Real;
use crate::parts::Rows;
use crate::pool::ThreadPool;

/// `1/sqrt(2 pi)`: the standard normal density at 0.
const INV_SQRT_2PI: f64 = FRAC_2_SQRT_PI * FRAC_1_SQRT_2 * 0.5;

/// `f(v)` in `T`'s own precision, from libm's pair for the two widths:
/// the `f32` one (`erff`, `expf`: what PyTorch's f32 GELU rounds to, at
/// about half the cost) for `f32`, the `f64` one for `f64`. `T` is `f32`
/// or `f64` (`Real` is sealed), told apart by size.
#[inline]
fn libm_in<T: Real>(v: T, single: impl Fn(f32) -> f32, double: impl Fn(f64) -> f64) -> T {
    if T::BYTES == 4 {
        T::of_f64(f64::from(single(v.as_f64() as f32)))
    } else {
        T::of_f64(double(v.as_f64()))
    }
}

/// `Phi(x)`.
#[inline]
fn cdf<T: Real>(x: T) -> T {
    let half = T::of_f64(0.5);
    half * (T::one() + libm_in(x * T::of_f64(FRAC_1_SQRT_2), libm::erff, libm::erf))
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
            *y = x * cdf(x);
        }
    });
}

/// Backward of [`gelu`] over the first `n` entries:
/// `dx = dy * (Phi(x) + x * phi(x))`, `phi` the standard normal density
/// `exp(-x^2/2) / sqrt(2 pi)`.
pub fn gelu_backward<T: Real>(pool: &ThreadPool, n: usize, x: &[T], dy: &[T], dx: &mut [T]) {
    assert!(x.len() >= n && dy.len() >= n && dx.len() >= n, "gelu backward: x, dy or dx shorter than {n}");
    let (minus_half, inv_sqrt_2pi) = (T::of_f64(-0.5), T::of_f64(INV_SQRT_2PI));
    pool.split(parts(pool, n, dx), |_, (range, dx)| {
        for ((dx, &x), &g) in dx.iter_mut().zip(&x[range.clone()]).zip(&dy[range]) {
            let pdf = libm_in(minus_half * x * x, libm::expf, libm::exp) * inv_sqrt_2pi;
            *dx = g * (cdf(x) + x * pdf);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

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
