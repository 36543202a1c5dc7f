//! A fully connected layer, `y = x W^T (+ b)`, as GEMMs; the bias is
//! optional (airbench's head has none).

use super::bias::{add_channel_bias, channel_bias_backward};
use super::operands::{BnShape, LinearGrads, LinearShape};
use crate::gemm::{matmul, Real, View};
use crate::pool::ThreadPool;

/// The bias of `s`'s output `[batch, d_out]` as a per-channel bias of
/// planes of one entry.
fn bias_shape(s: LinearShape) -> BnShape {
    BnShape { batch: s.batch, channels: s.d_out, hw: 1 }
}

/// `y[B, d_out] = x[B, d_in] W^T (+ b)`, `W` being `[d_out, d_in]`.
pub fn linear_forward<T: Real>(pool: &ThreadPool, s: LinearShape, x: &[T], w: &[T], b: Option<&[T]>, y: &mut [T]) {
    let xv = View::row_major(&x[..s.batch * s.d_in], s.batch, s.d_in);
    let wv = View::row_major(&w[..s.d_out * s.d_in], s.d_out, s.d_in);
    matmul(pool, y, false, xv, wv.t());
    if let Some(b) = b {
        add_channel_bias(pool, bias_shape(s), b, y);
    }
}

/// Gradients of [`linear_forward`]: `dW = dy^T x`, `db` (when the layer
/// has a bias) = column sums of `dy`, and `dx = dy W`.
pub fn linear_backward<T: Real>(pool: &ThreadPool, s: LinearShape, x: &[T], w: &[T], dy: &[T], grads: LinearGrads<'_, [T]>) {
    let LinearGrads { dx, dw, db } = grads;
    let dyv = View::row_major(&dy[..s.batch * s.d_out], s.batch, s.d_out);
    let xv = View::row_major(&x[..s.batch * s.d_in], s.batch, s.d_in);
    matmul(pool, dw, false, dyv.t(), xv);
    if let Some(db) = db {
        channel_bias_backward(pool, bias_shape(s), dy, db);
    }
    matmul(pool, dx, false, dyv, View::row_major(&w[..s.d_out * s.d_in], s.d_out, s.d_in));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// With and without bias against the definitions, in f64 and f32.
    #[test]
    fn forward_and_backward_match_the_definitions() {
        fn check<T: Real>(tol: f64) {
            let pool = ThreadPool::new(2).unwrap();
            let s = LinearShape { batch: 4, d_in: 5, d_out: 3 };
            let v = |n: usize, k: f64| -> Vec<T> { (0..n).map(|i| T::of_f64((i as f64 * k).sin())).collect() };
            let (x, w, b, dy) = (v(20, 0.37), v(15, 0.73), v(3, 1.1), v(12, 0.19));
            let f = |t: &T| t.as_f64();
            let xw = |i: usize, o: usize| (0..s.d_in).map(|k| f(&x[i * s.d_in + k]) * f(&w[o * s.d_in + k])).sum::<f64>();
            for bias in [Some(&b[..]), None] {
                let mut y = vec![T::zero(); 12];
                linear_forward(&pool, s, &x, &w, bias, &mut y);
                let (mut dx, mut dw, mut db) = (vec![T::zero(); 20], vec![T::zero(); 15], vec![T::of_f64(5.0); 3]);
                let grads = LinearGrads { dx: &mut dx[..], dw: &mut dw[..], db: bias.is_some().then_some(&mut db[..]) };
                linear_backward(&pool, s, &x, &w, &dy, grads);
                for i in 0..s.batch {
                    for o in 0..s.d_out {
                        let want = xw(i, o) + bias.map_or(0.0, |b| f(&b[o]));
                        assert!((f(&y[i * s.d_out + o]) - want).abs() < tol, "y[{i}, {o}]");
                    }
                    for k in 0..s.d_in {
                        let want: f64 = (0..s.d_out).map(|o| f(&dy[i * s.d_out + o]) * f(&w[o * s.d_in + k])).sum();
                        assert!((f(&dx[i * s.d_in + k]) - want).abs() < tol, "dx[{i}, {k}]");
                    }
                }
                for o in 0..s.d_out {
                    for k in 0..s.d_in {
                        let want: f64 = (0..s.batch).map(|i| f(&dy[i * s.d_out + o]) * f(&x[i * s.d_in + k])).sum();
                        assert!((f(&dw[o * s.d_in + k]) - want).abs() < tol, "dw[{o}, {k}]");
                    }
                    let want = if bias.is_some() { (0..s.batch).map(|i| f(&dy[i * s.d_out + o])).sum() } else { 5.0 };
                    assert!((f(&db[o]) - want).abs() < tol, "db[{o}]: written with a bias, untouched without");
                }
            }
        }
        check::<f64>(1e-14);
        check::<f32>(1e-5);
    }
}
