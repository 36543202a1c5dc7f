//! Muon's products on the CPU (frog-core's `MatmulBackend`): the
//! Newton-Schulz products through faer on the pool, as FROG's own
//! products run ([`crate::gemm`]).

use frog_core::{MatmulBackend, MatmulOp, NormScale};

use crate::backend::{dot, need, Cpu, CpuError};
use crate::gemm::{matmul, Real, View};

/// Entries of a `rows x cols` operand, or an error naming it when the
/// product overflows.
fn entries(op: &'static str, rows: usize, cols: usize) -> Result<usize, CpuError> {
    rows.checked_mul(cols).ok_or(CpuError::Length { op, needed: usize::MAX, len: 0 })
}

impl<T: Real> MatmulBackend for Cpu<T> {
    fn matmul(&self, p: MatmulOp, a: &Vec<T>, b: &Vec<T>, c: &mut Vec<T>) -> Result<(), CpuError> {
        let MatmulOp { m, n, k, trans_a, trans_b, accumulate } = p;
        need("matmul: a", a, entries("matmul: a", m, k)?)?;
        need("matmul: b", b, entries("matmul: b", k, n)?)?;
        need("matmul: c", c, entries("matmul: c", m, n)?)?;
        // A stored k x m (trans_a) is the transpose of a row-major view.
        let av = if trans_a { View::row_major(a, k, m).t() } else { View::row_major(a, m, k) };
        let bv = if trans_b { View::row_major(b, n, k).t() } else { View::row_major(b, k, n) };
        matmul(self.pool(), c, accumulate, av, bv);
        Ok(())
    }

    /// The plain sum of squares (the references' arithmetic); only where
    /// it overflows (or underflows to zero with nonzero entries) a second
    /// pass divides by the largest entry first.
    fn frobenius_norm(&self, n: usize, x: &&[T], out: &mut Vec<T>) -> Result<(), CpuError> {
        need("frobenius_norm: x", x, n)?;
        need("frobenius_norm: out", out, 1)?;
        let x = &x[..n];
        let sq = dot(x, x);
        let big = x.iter().fold(T::ZERO, |m, &v| {
            let a = if v < T::ZERO { -v } else { v };
            if a > m { a } else { m }
        });
        let finite = |v: T| v.as_f64().is_finite();
        out[0] = if (finite(sq) && (sq > T::ZERO || big == T::ZERO)) || !finite(big) {
            sq.sqrt()
        } else {
            let scaled: T = x.iter().map(|&v| (v / big) * (v / big)).fold(T::ZERO, |a, b| a + b);
            big * scaled.sqrt()
        };
        Ok(())
    }

    fn scale_by_norm(&self, n: usize, norm: &Vec<T>, s: NormScale<T>, x: &mut &mut [T]) -> Result<(), CpuError> {
        need("scale_by_norm: norm", norm, 1)?;
        need("scale_by_norm: x", x, n)?;
        let den = norm[0] + s.eps;
        // A zero denominator is the norm of an all-zero `x` (eps = 0):
        // unchanged, rather than the references' 0 * inf = NaN.
        if den != T::ZERO {
            let factor = s.num / den;
            x[..n].iter_mut().for_each(|v| *v *= factor);
        }
        Ok(())
    }
}
