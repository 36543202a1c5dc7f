//! Matrix products on the pool, through faer's sequential kernels.
//!
//! Only [`Real`] is public: the views and products below hand raw
//! pointers to faer, so they stay inside the crate, and still check every
//! bound with overflow-free arithmetic.
//!
//! Why faer with `Par::Seq`: measured on a 2-core AVX2 machine against gemm
//! 0.19 and matrixmultiply 0.3 on FROG's products of ResNet-18 layers, it
//! reaches 75-100 % of the fastest Rust GEMM when two pool
//! threads each run half of a product, and it allocates nothing after each
//! thread's first call (its packing buffer is per thread), which the
//! allocation-free step requires. `gemm` and `matrixmultiply` allocate on
//! every call. faer is pinned (`=0.24.4`) because the zero-allocation
//! property rests on its internals; the allocation test guards it.

use faer::linalg::matmul::matmul as faer_matmul;
use faer::{Accum, MatMut, MatRef, Par};

use crate::backend::CpuError;
use crate::parts::{Grid, Rows};
use crate::pool::ThreadPool;

/// The scalar types frog-cpu computes in: `f32` and `f64`, and no others.
///
/// Sealed, because unsafe code relies on the list being closed:
/// [`try_zeros`](crate::try_zeros) hands out zeroed memory as values of
/// `T`, which is sound only for types whose all-zero bytes are a value.
pub trait Real: sealed::Sealed + frog_core::Scalar + faer::traits::RealField + Default {}
impl Real for f32 {}
impl Real for f64 {}

mod sealed {
    /// Implemented only here, so no other crate can implement `Real`.
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for f64 {}
}

/// A read-only strided matrix view: entry `(i, j)` is at `i*rs + j*cs`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct View<'a, T> {
    data: &'a [T],
    rows: usize,
    cols: usize,
    rs: usize,
    cs: usize,
}

impl<'a, T> View<'a, T> {
    /// A dense row-major `rows x cols` matrix.
    pub(crate) fn row_major(data: &'a [T], rows: usize, cols: usize) -> Self {
        Self::strided(data, rows, cols, cols, 1)
    }

    /// A dense column-major `rows x cols` matrix.
    #[cfg(test)]
    pub(crate) fn col_major(data: &'a [T], rows: usize, cols: usize) -> Self {
        Self::strided(data, rows, cols, 1, rows)
    }

    /// A general strided view; panics if it reaches past `data`.
    pub(crate) fn strided(data: &'a [T], rows: usize, cols: usize, rs: usize, cs: usize) -> Self {
        if rows > 0 && cols > 0 {
            let last = (rows - 1).checked_mul(rs).zip((cols - 1).checked_mul(cs)).and_then(|(a, b)| a.checked_add(b));
            assert!(last.is_some_and(|last| last < data.len()), "matrix view out of bounds");
        }
        Self { data, rows, cols, rs, cs }
    }

    /// The transpose.
    pub(crate) fn t(self) -> Self {
        Self { rows: self.cols, cols: self.rows, rs: self.cs, cs: self.rs, data: self.data }
    }

    /// Rows `range` of the matrix; panics if it is not inside the view.
    pub(crate) fn rows(self, range: std::ops::Range<usize>) -> Self {
        assert!(range.start <= range.end && range.end <= self.rows, "row range out of the view");
        let data = if range.is_empty() { &self.data[..0] } else { &self.data[range.start * self.rs..] };
        Self { data, rows: range.len(), ..self }
    }

    /// Columns `range` of the matrix; panics if it is not inside the view.
    pub(crate) fn cols(self, range: std::ops::Range<usize>) -> Self {
        assert!(range.start <= range.end && range.end <= self.cols, "column range out of the view");
        let data = if range.is_empty() { &self.data[..0] } else { &self.data[range.start * self.cs..] };
        Self { data, cols: range.len(), ..self }
    }

    fn faer(&self) -> MatRef<'a, T> {
        // SAFETY: `strided` checked that every entry lies inside `data`.
        unsafe { MatRef::from_raw_parts(self.data.as_ptr(), self.rows, self.cols, self.rs as isize, self.cs as isize) }
    }
}

/// `C = A B` (or `C += A B` when `accumulate`) on the calling thread, `C`
/// row-major with row stride `ldc` starting at `c[0]`.
pub(crate) fn matmul_seq<T: Real>(c: &mut [T], ldc: usize, accumulate: bool, a: View<'_, T>, b: View<'_, T>) {
    assert!(a.cols == b.rows, "inner dimensions differ");
    let (m, n) = (a.rows, b.cols);
    if m == 0 || n == 0 {
        return;
    }
    assert!(n <= ldc || m == 1, "output rows overlap");
    let end = (m - 1).checked_mul(ldc).and_then(|v| v.checked_add(n));
    assert!(end.is_some_and(|end| end <= c.len()), "output out of bounds");
    // One row has no stride to speak of; faer's view wants one of at least `n`.
    let ldc = ldc.max(n);
    // The transpose of a column-major view: faer 0.24's row-major
    // constructor with a stride swaps the strides.
    let dst = MatMut::from_column_major_slice_with_stride_mut(&mut c[..end.unwrap_or(0)], n, m, ldc).transpose_mut();
    matmul_into(dst, accumulate, a, b);
}

/// `dst = A B` (or `dst += A B` when `accumulate`) on the calling thread.
fn matmul_into<T: Real>(mut dst: MatMut<'_, T>, accumulate: bool, a: View<'_, T>, b: View<'_, T>) {
    if dst.nrows() == 0 || dst.ncols() == 0 {
        return;
    }
    if a.cols == 0 {
        if !accumulate {
            dst.fill(T::ZERO);
        }
        return;
    }
    let beta = if accumulate { Accum::Add } else { Accum::Replace };
    faer_matmul(dst, beta, a.faer(), b.faer(), T::ONE, Par::Seq);
}

/// `C = A B` for dense row-major `A` (`m x k`), `B` (`k x n`) and `C`
/// (`m x n`) on `pool`: the products FROG runs, for measuring a machine's
/// GEMM rate. Lengths that do not match the sizes (or sizes whose products
/// overflow) are an error and write nothing.
pub fn matmul_dense<T: Real>(pool: &ThreadPool, c: &mut [T], a: &[T], b: &[T], [m, k, n]: [usize; 3]) -> Result<(), CpuError> {
    for (what, buf, rows, cols) in [("matmul: a", a.len(), m, k), ("matmul: b", b.len(), k, n), ("matmul: c", c.len(), m, n)] {
        let needed = rows.checked_mul(cols).ok_or(CpuError::Length { op: what, needed: usize::MAX, len: buf })?;
        if buf != needed {
            return Err(CpuError::Length { op: what, needed, len: buf });
        }
    }
    matmul(pool, c, false, View::row_major(a, m, k), View::row_major(b, k, n));
    Ok(())
}

/// `C = A B` (or `C += A B`) for a dense row-major `C`, split across the
/// pool: by rows of `C` when it has at least as many rows as columns, else
/// by columns, so every thread writes its own block and none reduces.
pub(crate) fn matmul<T: Real>(pool: &ThreadPool, c: &mut [T], accumulate: bool, a: View<'_, T>, b: View<'_, T>) {
    assert!(a.cols == b.rows, "inner dimensions differ");
    let (m, n) = (a.rows, b.cols);
    assert!(m.checked_mul(n).is_some_and(|mn| mn <= c.len()), "output out of bounds");
    let threads = pool.threads();
    let work = m.saturating_mul(n).saturating_mul(a.cols.max(1));
    if threads == 1 || work < 1 << 16 {
        return matmul_seq(c, n, accumulate, a, b);
    }
    if m >= n {
        pool.split(Rows::new(&mut c[..m * n], m, n, threads), |_, (r, block)| matmul_seq(block, n, accumulate, a.rows(r), b));
    } else {
        pool.split(Grid::new(&mut c[..m * n], [m, n, 1], [1, threads]), |_, mut part| {
            let r = part.rows();
            matmul_into(part.matrix(), accumulate, a, b.cols(r));
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(a: View<'_, f64>, b: View<'_, f64>) -> Vec<f64> {
        let mut c = vec![0.0; a.rows * b.cols];
        for i in 0..a.rows {
            for j in 0..b.cols {
                for k in 0..a.cols {
                    c[i * b.cols + j] += a.data[i * a.rs + k * a.cs] * b.data[k * b.rs + j * b.cs];
                }
            }
        }
        c
    }

    #[test]
    fn parallel_products_match_naive() {
        let pool = ThreadPool::new(2).unwrap();
        for (m, k, n) in [(1, 1, 1), (70, 33, 5), (5, 200, 90), (64, 0, 3)] {
            let a: Vec<f64> = (0..m * k).map(|i| ((i * 7) % 13) as f64 - 6.0).collect();
            let b: Vec<f64> = (0..k * n).map(|i| ((i * 5) % 11) as f64 * 0.5).collect();
            let av = View::row_major(&a, m, k);
            let bv = View::col_major(&b, k, n);
            let want = naive(av, bv);
            let mut c = vec![1.0; m * n];
            matmul(&pool, &mut c, false, av, bv);
            assert_eq!(c, want);
            matmul(&pool, &mut c, true, av, bv);
            let twice: Vec<f64> = want.iter().map(|v| 2.0 * v).collect();
            assert_eq!(c, twice);
        }
    }
}
