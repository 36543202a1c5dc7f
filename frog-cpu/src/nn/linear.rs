//! A fully connected layer with bias, `y = x W^T + b`, as GEMMs.

use super::operands::{LinearGrads, LinearShape};
use crate::gemm::{matmul, Real, View};
use crate::pool::ThreadPool;

/// `y[B, d_out] = x[B, d_in] W^T + b`, `W` being `[d_out, d_in]`.
pub fn linear_forward<T: Real>(pool: &ThreadPool, s: LinearShape, x: &[T], w: &[T], b: &[T], y: &mut [T]) {
    let xv = View::row_major(&x[..s.batch * s.d_in], s.batch, s.d_in);
    let wv = View::row_major(&w[..s.d_out * s.d_in], s.d_out, s.d_in);
    matmul(pool, y, false, xv, wv.t());
    for row in y[..s.batch * s.d_out].chunks_exact_mut(s.d_out) {
        for (v, &bias) in row.iter_mut().zip(b) {
            *v += bias;
        }
    }
}

/// Gradients of [`linear_forward`]: `dW = dy^T x`, `db` = column sums of
/// `dy`, and, when asked for, `dx = dy W`.
pub fn linear_backward<T: Real>(pool: &ThreadPool, s: LinearShape, x: &[T], w: &[T], dy: &[T], grads: LinearGrads<'_, [T]>) {
    let LinearGrads { dx, dw, db } = grads;
    let dyv = View::row_major(&dy[..s.batch * s.d_out], s.batch, s.d_out);
    let xv = View::row_major(&x[..s.batch * s.d_in], s.batch, s.d_in);
    matmul(pool, dw, false, dyv.t(), xv);
    db[..s.d_out].fill(T::zero());
    for row in dy[..s.batch * s.d_out].chunks_exact(s.d_out) {
        for (g, &v) in db.iter_mut().zip(row) {
            *g += v;
        }
    }
    matmul(pool, dx, false, dyv, View::row_major(&w[..s.d_out * s.d_in], s.d_out, s.d_in));
}
