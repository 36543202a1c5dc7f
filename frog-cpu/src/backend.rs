//! `Cpu<T>`: frog-core's `Backend` for host memory, f32 and f64.
//!
//! Layouts: the patch scratch holds `X`, the `N x D'` im2col matrix of the
//! sampled inputs (`N = r*L` rows ordered `(i, l)`, a trailing column of
//! ones with a bias), packed once per step and read by every product. The
//! Fisher weights and `U` are `N x R` (row `i*L + l`, column `j`): each
//! thread computes `U = X V^T` for its own row tiles of `X`, contiguous in
//! both, and scales each tile by `Lambda` while it is in cache. Measured on
//! the ResNet-18 shapes this beat the transposed `R x N` layout by 10-75 %
//! on the first product and matched it on the second.
//!
//! Layers whose products run through Winograd (see [`Algorithm`] and
//! `winograd`) keep the same `u` layout; only their patch scratch differs
//! (the transformed input tiles instead of `X`), and their patch norms are
//! taken from the inputs.
//!
//! The patch scratch's last entry holds the gain of the step's patches
//! ([`frog_core::Backend::pack_patches`]: 1, or the power of two that
//! brings inputs too large for their squares near 1), which every product
//! applies to the inputs it reads and to the bias feature.
//!
//! What the Winograd products and the Gram CG write besides their outputs
//! lives in the step's product scratch ([`Patches`]' `scratch`), sized by
//! [`Backend::product_scratch_len`] for the backend's pool and allocated
//! with the workspace: the backend holds no scratch of its own, so steps
//! on a shared backend (clones share the pool) need no lock, and no step
//! allocates, its first included.

use std::fmt;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use frog_core::{
    Backend, BackendError, BackendErrorKind, CgBuffers, FisherCoefs, FisherOut, Guard, GuardBackend, Half, Layer, LayerKind, LowpBackend, Patches, RowGuardOut, Shape, ShapeError, StepCoefs,
    Strided, ROW_DEAD, ROW_NONFINITE, ROW_REPLACED,
};

use crate::gemm::{matmul, matmul_seq, Real, View};
use crate::im2col::im2col_valid;
use crate::parts::{Rows, Split};
use crate::pool::{PoolFailure, ThreadPool};
use crate::gram;
use crate::winograd::{self, Algorithm};

/// What failed on the CPU backend.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CpuError {
    /// A buffer (or a block in it) is shorter than an operation needs.
    Length {
        /// The operation.
        op: &'static str,
        /// Entries needed.
        needed: usize,
        /// Entries available.
        len: usize,
    },
    /// A buffer of `entries` scalars could not be allocated (or its size
    /// in bytes overflows).
    OutOfMemory {
        /// Entries asked for.
        entries: usize,
    },
    /// The layer geometry is invalid (see `Layer::validate`).
    InvalidLayer(ShapeError),
    /// The thread pool could not be made.
    Threads {
            /// Threads asked for.
        requested: usize,
        /// Why: more than [`crate::pool::MAX_THREADS`], or the system's
        /// reason for refusing a thread.
        reason: PoolFailure,
    },
    /// An algorithm was forced on a layer it cannot run (see
    /// [`Cpu::with_algorithm`]).
    Algorithm {
        /// The algorithm.
        algorithm: Algorithm,
        /// Why it does not apply.
        reason: &'static str,
    },
}

impl fmt::Display for CpuError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Length { op, needed, len } => write!(f, "{op}: buffer of {len} entries, {needed} needed"),
            Self::InvalidLayer(e) => write!(f, "invalid layer: {e}"),
            Self::OutOfMemory { entries } => write!(f, "out of memory allocating a buffer of {entries} entries"),
            Self::Threads { requested, reason } => write!(f, "cannot start a pool of {requested} threads: {reason}"),
            Self::Algorithm { algorithm, reason } => write!(f, "cannot run this layer with {algorithm:?}: {reason}"),
        }
    }
}

impl std::error::Error for CpuError {}

impl BackendError for CpuError {
    fn kind(&self) -> BackendErrorKind {
        match self {
            Self::Length { .. } | Self::InvalidLayer(_) => BackendErrorKind::InvalidBuffer,
            Self::OutOfMemory { .. } => BackendErrorKind::OutOfMemory,
            Self::Threads { .. } | Self::Algorithm { .. } => BackendErrorKind::Unsupported,
        }
    }
}

pub(crate) fn need<T>(op: &'static str, buf: &[T], needed: usize) -> Result<(), CpuError> {
    if buf.len() >= needed {
        Ok(())
    } else {
        Err(CpuError::Length { op, needed, len: buf.len() })
    }
}

/// The error for a layer kind frog-core added after this backend, which
/// has no packing for it.
pub(crate) fn unknown_kind() -> CpuError {
    CpuError::InvalidLayer(ShapeError::Unsupported { what: "a layer kind frog-cpu does not pack" })
}

/// A zero-filled vector of `len` entries, or an error instead of an abort
/// when it cannot be had. The memory comes from `alloc_zeroed`, which maps
/// untouched pages lazily, so a size the system refuses fails here rather
/// than under Linux's overcommit when first touched.
pub fn try_zeros<T: Real>(len: usize) -> Result<Vec<T>, CpuError> {
    // SAFETY: `Real` is sealed to f32 and f64, whose all-zero bytes are
    // the value 0.0 and which are not zero-sized.
    unsafe { zeroed_vec(len) }
}

/// [`try_zeros`] for any type.
///
/// # Safety
/// All-zero bytes must be a valid value of `T`, and `T` not zero-sized.
pub(crate) unsafe fn zeroed_vec<T>(len: usize) -> Result<Vec<T>, CpuError> {
    if len == 0 {
        return Ok(Vec::new());
    }
    let oom = CpuError::OutOfMemory { entries: len };
    let layout = std::alloc::Layout::array::<T>(len).map_err(|_| oom.clone())?;
    // SAFETY: the layout's size is nonzero (len > 0, T not zero-sized).
    let ptr = unsafe { std::alloc::alloc_zeroed(layout) }.cast::<T>();
    if ptr.is_null() {
        return Err(oom);
    }
    // SAFETY: the vector takes the allocation with the layout `Vec<T>` uses
    // for a capacity of `len`, all `len` entries initialized to zero bytes,
    // which the caller vouches are a value of `T`.
    Ok(unsafe { Vec::from_raw_parts(ptr, len, len) })
}

/// Rows of `X` per tile of the first product (a multiple of the GEMM
/// kernels' row blocks; small enough that a tile of `U` stays in L2).
const PROJECT_TILE: usize = 1024;

/// Entries that make splitting an elementwise pass across threads worth a
/// wake-up of the pool.
const PAR_MIN: usize = 1 << 15;

/// FROG's CPU backend: host `Vec<T>` buffers, work split over a persistent
/// [`ThreadPool`].
///
/// Each layer runs [`Algorithm::auto`]'s choice for its shape and sample
/// count unless [`Cpu::with_algorithm`] forces one.
pub struct Cpu<T> {
    pool: Arc<ThreadPool>,
    /// The forced algorithm, if any.
    pub(crate) algorithm: Option<Algorithm>,
    /// The scalar type: the backend holds no buffer of it (a step's
    /// scratch is its workspace's).
    _scalar: PhantomData<fn() -> T>,
}

/// A clone shares the pool, so a workspace sized on one serves the other
/// (the product scratch depends on the thread count).
impl<T> Clone for Cpu<T> {
    fn clone(&self) -> Self {
        Self { pool: Arc::clone(&self.pool), algorithm: self.algorithm, _scalar: PhantomData }
    }
}

impl<T: Real> Cpu<T> {
    /// A backend running on `pool`.
    pub fn new(pool: Arc<ThreadPool>) -> Self {
        Self { pool, algorithm: None, _scalar: PhantomData }
    }

    /// A backend with its own pool of `threads` threads (0: all CPUs); an
    /// error when the threads cannot be had (see [`ThreadPool::new`]).
    pub fn with_threads(threads: usize) -> Result<Self, CpuError> {
        Ok(Self::new(Arc::new(ThreadPool::new(threads)?)))
    }

    /// The pool the backend runs on.
    pub fn pool(&self) -> &Arc<ThreadPool> {
        &self.pool
    }

    /// Runs `f(tid, part)` on the parts of the splitting `make(parts)`
    /// makes: split across the pool, or one part on the calling thread when
    /// `work` is too small to be worth a wake-up of the pool.
    pub(crate) fn par<S: Split>(&self, work: usize, make: impl FnOnce(usize) -> S, f: impl Fn(usize, S::Part) + Sync) {
        let parts = if work < PAR_MIN { 1 } else { self.pool.threads() };
        self.pool.split(make(parts), f);
    }

    /// Runs `f(rows, block)` on disjoint row blocks of the `rows x cols`
    /// prefix of `out`, split across the pool when `rows * work_per_row`
    /// is worth it.
    fn par_row_blocks(&self, out: &mut [T], rows: usize, cols: usize, work_per_row: usize, f: impl Fn(std::ops::Range<usize>, &mut [T]) + Sync) {
        let len = rows.checked_mul(cols).filter(|&len| len <= out.len()).expect("row blocks out of bounds");
        self.par(rows.saturating_mul(work_per_row), |parts| Rows::new(&mut out[..len], rows, cols, parts), |_, (r, block)| f(r, block));
    }

    /// `N` and `D'` of the packed patch matrix.
    fn patch_dims(p: &Patches<'_, Self>) -> (usize, usize) {
        (p.r.saturating_mul(p.layer.positions()), p.layer.cols())
    }
}

/// Packs one sample's patches: `L` rows of `D'` entries starting at `out`,
/// from inputs in `T` or in a type that widens to it exactly (bf16 and f16
/// inputs are converted here, as they are read, so the products that
/// follow run on `T` at full speed), times `gain` (see the module docs;
/// the patches are copies of inputs, so scaling them afterwards is exact).
fn pack_sample<S: Copy, T: Real + From<S>>(layer: &Layer, x: &[S], gain: T, out: &mut [T]) {
    let (d, cols, l) = (layer.weight_cols(), layer.cols(), layer.positions());
    match &layer.kind {
        LayerKind::Conv2d(conv) => im2col_valid(conv, x, out, cols),
        LayerKind::Linear { .. } => {
            for t in 0..l {
                widen(&x[t * d..(t + 1) * d], &mut out[t * cols..t * cols + d]);
            }
        }
        // Refused by `pack_from`, which calls this.
        _ => {}
    }
    if gain != T::ONE {
        out[..l * cols].iter_mut().for_each(|v| *v *= gain);
    }
    if layer.bias {
        for t in 0..l {
            out[t * cols + d] = gain;
        }
    }
}

/// `dst = src`, each entry converted to `T` (a plain copy for `S = T`).
fn widen<S: Copy, T: From<S>>(src: &[S], dst: &mut [T]) {
    dst.iter_mut().zip(src).for_each(|(d, &s)| *d = T::from(s));
}

impl<T: Real> Backend for Cpu<T> {
    type Scalar = T;
    type Buffer = Vec<T>;
    type View<'a> = &'a [T];
    type ViewMut<'a> = &'a mut [T];
    type Error = CpuError;

    fn zeros(&self, len: usize) -> Result<Vec<T>, CpuError> {
        try_zeros(len)
    }

    fn len(&self, buf: &Vec<T>) -> usize {
        buf.len()
    }

    fn read(&self, src: &Vec<T>, offset: usize, dst: &mut [T]) -> Result<(), CpuError> {
        need("read", src, offset.saturating_add(dst.len()))?;
        dst.copy_from_slice(&src[offset..offset + dst.len()]);
        Ok(())
    }

    fn write(&self, src: &[T], dst: &mut Vec<T>, offset: usize) -> Result<(), CpuError> {
        need("write", dst, offset.saturating_add(src.len()))?;
        dst[offset..offset + src.len()].copy_from_slice(src);
        Ok(())
    }

    fn view<'a>(&self, buf: &'a Vec<T>, offset: usize, len: usize) -> Result<&'a [T], CpuError> {
        Ok(&buf[Self::part("view", buf.len(), offset, len)?])
    }

    fn view_mut<'a>(&self, buf: &'a mut Vec<T>, offset: usize, len: usize) -> Result<&'a mut [T], CpuError> {
        let range = Self::part("view_mut", buf.len(), offset, len)?;
        Ok(&mut buf[range])
    }

    fn reborrow<'b>(&self, v: &'b &mut [T]) -> &'b [T] {
        v
    }

    fn reborrow_view<'b>(&self, v: &'b &[T]) -> &'b [T] {
        v
    }

    fn view_len(&self, v: &&[T]) -> usize {
        v.len()
    }

    fn patch_scratch_len(&self, layer: &Layer, r: usize) -> usize {
        // Saturates: a size past usize fails to allocate with an error. A
        // forced algorithm that cannot run the layer fails its steps, so
        // the direct size stands in for it. Plus the gain's entry.
        let im2col = |r: usize| r.saturating_mul(layer.positions()).saturating_mul(layer.cols());
        let patches = match self.tiles(layer, r) {
            Ok(Some(tiles)) => tiles.packed_len().max(im2col(self.im2col_samples(layer, r))),
            _ => im2col(r),
        };
        patches.saturating_add(1)
    }

    fn product_scratch_len(&self, layer: &Layer, r: usize) -> usize {
        // Winograd's products at `r` (which cover its smaller samples),
        // and the Gram CG's at the most samples up to `r` that run it: the
        // automatic choice runs it below some sample count, and its scratch
        // can outgrow Winograd's. The direct products need none.
        let threads = self.pool.threads();
        let winograd = match self.tiles(layer, r) {
            Ok(Some(tiles)) => tiles.step_scratch_len(threads),
            _ => 0,
        };
        let gram = match self.gram_samples(layer, r) {
            0 => 0,
            r => gram::scratch_len(layer, r),
        };
        winograd.max(gram)
    }

    fn pack_patches(&self, layer: &Layer, r: usize, x: &&[T], packed: &mut Vec<T>) -> Result<(), CpuError> {
        self.pack_from(layer, r, x, packed)
    }

    fn patch_sq_norms(&self, p: &Patches<'_, Self>, norms: &mut Vec<T>) -> Result<(), CpuError> {
        // Without inputs in `T` (a 16-bit step, which calls the 16-bit
        // twin), only the direct algorithm's norms can be had: Winograd's
        // then fail on the empty `x`.
        self.sq_norms_from::<T>(p, p.x.unwrap_or_default(), norms)
    }

    fn fisher_weights(&self, p: &Patches<'_, Self>, y: &&[T], norms: &Vec<T>, c: FisherCoefs<T>, out: FisherOut<'_, Self>) -> Result<(), CpuError> {
        self.fisher_weights_from(p, y, norms, c, out)
    }

    fn row_rescale(&self, shape: Shape, v: &mut Vec<T>) -> Result<(), CpuError> {
        let Shape { rows, cols } = shape;
        need("row_rescale: v", v, rows.saturating_mul(cols))?;
        self.par_row_blocks(v, rows, cols, cols, |_, block| {
            for row in block.chunks_exact_mut(cols) {
                let gain = pow2_gain(row.iter().copied());
                if gain != T::ONE {
                    row.iter_mut().for_each(|x| *x *= gain);
                }
            }
        });
        Ok(())
    }

    fn project(&self, p: &mut Patches<'_, Self>, v: &Vec<T>, u: &mut Vec<T>) -> Result<(), CpuError> {
        self.project_scaled(p, v, None, u)
    }

    fn back_project(&self, p: &mut Patches<'_, Self>, u: &Vec<T>, g: &mut Vec<T>) -> Result<(), CpuError> {
        self.back_project_into(p, u, false, g)
    }

    fn fisher_matvec(
        &self,
        p: &mut Patches<'_, Self>,
        lambda: &Vec<T>,
        tau: T,
        v: &Vec<T>,
        u: &mut Vec<T>,
        out: &mut Vec<T>,
    ) -> Result<(), CpuError> {
        // out = tau*v, then out += X^T (lambda .* X v^T): the scaling runs on
        // each thread's tile of U while it is in cache, and the damping
        // term is folded into the accumulating product.
        let (rows, cols) = (p.layer.rows(), p.layer.cols());
        if let Some(tiles) = self.tiles(p.layer, p.r)?.filter(|t| t.fuses(self.pool.threads())) {
            // Winograd: both products in one pass over the transformed inputs.
            let n = Self::patch_dims(p).0;
            let len = tiles.matvec_scratch_len(self.pool.threads());
            need("fisher_matvec: scratch", p.packed, tiles.packed_len())?;
            need("fisher_matvec: product scratch", p.scratch, len)?;
            need("fisher_matvec: v", v, rows.saturating_mul(cols))?;
            need("fisher_matvec: lambda", lambda, rows.saturating_mul(n))?;
            self.axpby_slices(rows * cols, tau, v, T::ZERO, out)?;
            let xt = winograd::Packed { pool: &self.pool, t: &tiles, packed: p.packed, gain: gain(p) };
            winograd::matvec(xt, v, lambda, out, &mut p.scratch[..len]);
            return Ok(());
        }
        self.project_scaled(p, v, Some(lambda), u)?;
        self.axpby_slices(rows * cols, tau, v, T::ZERO, out)?;
        self.back_project_into(p, u, true, out)
    }

    fn cg_iteration(&self, p: &mut Patches<'_, Self>, lambda: &Vec<T>, tau: T, eps: T, cg: &mut CgBuffers<'_, Self>) -> Result<(), CpuError> {
        // After the matvec, one pass per row does every vector update of the
        // iteration while the row's four vectors sit in cache, with the same
        // arithmetic (and the same dot products) as the provided method.
        let (rows, cols) = (p.layer.rows(), p.layer.cols());
        self.fisher_matvec(p, lambda, tau, cg.pd, cg.u, cg.ap)?;
        for (what, v) in [("cg: z", &*cg.z), ("cg: rs", &*cg.rs), ("cg: pd", &*cg.pd), ("cg: ap", &*cg.ap)] {
            need(what, v, rows.saturating_mul(cols))?;
        }
        for (what, v) in [("cg: rho", &*cg.rho), ("cg: rho_next", &*cg.rho_next)] {
            need(what, v, rows)?;
        }
        let (ap, rho) = (&cg.ap[..rows * cols], &cg.rho[..rows]);
        let (z, rs, pd, rho_next) = (&mut cg.z[..rows * cols], &mut cg.rs[..rows * cols], &mut cg.pd[..rows * cols], &mut cg.rho_next[..rows]);
        let vectors = move |parts| {
            let [z, rs, pd] = [z, rs, pd].map(|v| Rows::new(v, rows, cols, parts));
            (Rows::new(rho_next, rows, 1, parts), z, rs, pd)
        };
        self.par(rows.saturating_mul(6 * cols), vectors, |_, ((js, rho_next), (_, z), (_, rs), (_, pd))| {
            let start = js.start;
            for (next, j) in rho_next.iter_mut().zip(js) {
                let (at, mine) = (j * cols, (j - start) * cols..(j - start + 1) * cols);
                let (z, rs, pd) = (&mut z[mine.clone()], &mut rs[mine.clone()], &mut pd[mine]);
                let ap = &ap[at..at + cols];
                let alpha = rho[j] / (dot(pd, ap) + eps);
                for k in 0..cols {
                    z[k] += alpha * pd[k];
                    rs[k] += -alpha * ap[k];
                }
                *next = dot(rs, rs);
                let beta = *next / (rho[j] + eps);
                pd.iter_mut().zip(rs.iter()).for_each(|(p, &r)| *p = r + beta * *p);
            }
        });
        std::mem::swap(&mut cg.rho, &mut cg.rho_next);
        Ok(())
    }

    fn cg_solve(&self, p: &mut Patches<'_, Self>, lambda: &Vec<T>, tau: T, eps: T, iters: usize, cg: &mut CgBuffers<'_, Self>) -> Result<(), CpuError> {
        // One iteration costs the Gram path more than the direct one: K and
        // the solution's product besides the iteration's.
        if iters >= 2 && self.algorithm(p.layer, p.r)? == Algorithm::Gram {
            return gram::solve(self, p, lambda, tau, eps, iters, cg);
        }
        (0..iters).try_for_each(|_| self.cg_iteration(p, lambda, tau, eps, cg))
    }

    fn axpby(&self, n: usize, a: T, x: &&[T], b: T, y: &mut &mut [T]) -> Result<(), CpuError> {
        self.axpby_slices(n, a, x, b, y)
    }

    fn mul_assign(&self, n: usize, a: &mut Vec<T>, b: &Vec<T>) -> Result<(), CpuError> {
        need("mul_assign: a", a, n)?;
        need("mul_assign: b", b, n)?;
        self.par_row_blocks(a, n, 1, 1, |r, xs| xs.iter_mut().zip(&b[r]).for_each(|(x, &y)| *x *= y));
        Ok(())
    }

    fn copy_strided(&self, shape: Shape, src: &&[T], src_at: Strided, dst: &mut Vec<T>, dst_at: Strided) -> Result<(), CpuError> {
        let Shape { rows, cols } = shape;
        if rows == 0 || cols == 0 {
            return Ok(());
        }
        need("copy_strided: src", src, src_at.end(rows, cols))?;
        need("copy_strided: dst", dst, dst_at.end(rows, cols))?;
        for j in 0..rows {
            let s = src_at.offset + j * src_at.stride;
            let d = dst_at.offset + j * dst_at.stride;
            dst[d..d + cols].copy_from_slice(&src[s..s + cols]);
        }
        Ok(())
    }

    fn row_dots(&self, shape: Shape, a: &Vec<T>, b: &Vec<T>, out: &mut Vec<T>) -> Result<(), CpuError> {
        let Shape { rows, cols } = shape;
        need("row_dots: a", a, rows.saturating_mul(cols))?;
        need("row_dots: b", b, rows.saturating_mul(cols))?;
        need("row_dots: out", out, rows)?;
        self.par_row_blocks(out, rows, 1, cols, |js, o| {
            for (o, j) in o.iter_mut().zip(js) {
                *o = dot(&a[j * cols..(j + 1) * cols], &b[j * cols..(j + 1) * cols]);
            }
        });
        Ok(())
    }

    fn row_div(&self, rows: usize, num: &Vec<T>, den: &Vec<T>, eps: T, out: &mut Vec<T>) -> Result<(), CpuError> {
        need("row_div: num", num, rows)?;
        need("row_div: den", den, rows)?;
        need("row_div: out", out, rows)?;
        for j in 0..rows {
            out[j] = num[j] / (den[j] + eps);
        }
        Ok(())
    }

    fn row_rsqrt(&self, rows: usize, x: &Vec<T>, eps: T, out: &mut Vec<T>) -> Result<(), CpuError> {
        need("row_rsqrt: x", x, rows)?;
        need("row_rsqrt: out", out, rows)?;
        for j in 0..rows {
            out[j] = T::ONE / frog_core::Scalar::sqrt(x[j] + eps);
        }
        Ok(())
    }

    fn row_axpy(&self, shape: Shape, a: T, coef: &Vec<T>, x: &Vec<T>, y: &mut Vec<T>) -> Result<(), CpuError> {
        let Shape { rows, cols } = shape;
        need("row_axpy: coef", coef, rows)?;
        need("row_axpy: x", x, rows.saturating_mul(cols))?;
        need("row_axpy: y", y, rows.saturating_mul(cols))?;
        self.par_row_blocks(y, rows, cols, cols, |js, ys| {
            for (k, j) in js.enumerate() {
                let c = a * coef[j];
                let yr = &mut ys[k * cols..(k + 1) * cols];
                yr.iter_mut().zip(&x[j * cols..(j + 1) * cols]).for_each(|(y, &x)| *y += c * x);
            }
        });
        Ok(())
    }

    fn row_xpby(&self, shape: Shape, x: &Vec<T>, coef: &Vec<T>, y: &mut Vec<T>) -> Result<(), CpuError> {
        let Shape { rows, cols } = shape;
        need("row_xpby: coef", coef, rows)?;
        need("row_xpby: x", x, rows.saturating_mul(cols))?;
        need("row_xpby: y", y, rows.saturating_mul(cols))?;
        self.par_row_blocks(y, rows, cols, cols, |js, ys| {
            for (k, j) in js.enumerate() {
                let c = coef[j];
                let yr = &mut ys[k * cols..(k + 1) * cols];
                yr.iter_mut().zip(&x[j * cols..(j + 1) * cols]).for_each(|(y, &x)| *y = x + c * *y);
            }
        });
        Ok(())
    }

    fn row_step(&self, shape: Shape, w: &mut &mut [T], c: StepCoefs<T>, scale: &Vec<T>, z: &Vec<T>, z_at: Strided) -> Result<(), CpuError> {
        let (Shape { rows, cols }, StepCoefs { decay, lr }) = (shape, c);
        need("row_step: w", w, rows.saturating_mul(cols))?;
        need("row_step: scale", scale, rows)?;
        need("row_step: z", z, z_at.end(rows, cols))?;
        self.par_row_blocks(w, rows, cols, cols, |js, ws| {
            for (k, j) in js.enumerate() {
                let c = lr * scale[j];
                let zr = &z[z_at.offset + j * z_at.stride..][..cols];
                let wr = &mut ws[k * cols..(k + 1) * cols];
                wr.iter_mut().zip(zr).for_each(|(w, &z)| *w = decay * *w - c * z);
            }
        });
        Ok(())
    }
}

impl<T: Real> Cpu<T> {
    /// [`Backend::axpby`] on slices (buffers and views alike).
    pub(crate) fn axpby_slices(&self, n: usize, a: T, x: &[T], b: T, y: &mut [T]) -> Result<(), CpuError> {
        need("axpby: x", x, n)?;
        need("axpby: y", y, n)?;
        self.par_row_blocks(y, n, 1, 1, |r, ys| {
            let xs = &x[r];
            if b == T::ZERO {
                ys.iter_mut().zip(xs).for_each(|(y, &x)| *y = a * x);
            } else {
                ys.iter_mut().zip(xs).for_each(|(y, &x)| *y = a * x + b * *y);
            }
        });
        Ok(())
    }



    /// [`Backend::pack_patches`] from inputs in `T` or in a 16-bit type.
    pub(crate) fn pack_from<S: Copy + Sync>(&self, layer: &Layer, r: usize, x: &[S], packed: &mut [T]) -> Result<(), CpuError>
    where
        T: From<S>,
    {
        layer.validate().map_err(CpuError::InvalidLayer)?;
        if !matches!(layer.kind, LayerKind::Linear { .. } | LayerKind::Conv2d(_)) {
            return Err(unknown_kind());
        }
        let (inp, per) = (layer.input_len(), layer.positions() * layer.cols());
        need("pack_patches: x", x, r.saturating_mul(inp))?;
        let x = &x[..r * inp];
        if let Some(tiles) = self.tiles(layer, r)? {
            need("pack_patches: scratch", packed, tiles.packed_len().saturating_add(1))?;
            let gain = self.input_gain(x);
            winograd::pack(&self.pool, &tiles, r, x, gain, packed);
            set_gain(packed, gain);
            return Ok(());
        }
        need("pack_patches: scratch", packed, r.saturating_mul(per).saturating_add(1))?;
        let gain = self.input_gain(x);
        self.par_row_blocks(packed, r, per, per, |samples, block| {
            for (k, i) in samples.enumerate() {
                pack_sample(layer, &x[i * inp..(i + 1) * inp], gain, &mut block[k * per..(k + 1) * per]);
            }
        });
        set_gain(packed, gain);
        Ok(())
    }

    /// The gain of a step's patches: frog-core's `pow2_gain` of the largest
    /// `|x|` of the sampled inputs, found over [`GAIN_CHUNKS`] chunks split
    /// over the pool (one read of the inputs, a small part of a pack).
    fn input_gain<S: Copy + Sync>(&self, x: &[S]) -> T
    where
        T: From<S>,
    {
        let mut maxima = [T::ZERO; GAIN_CHUNKS];
        let chunk = x.len().div_ceil(GAIN_CHUNKS).max(1);
        self.par(x.len(), |parts| Rows::new(&mut maxima[..], GAIN_CHUNKS, 1, parts), |_, (ks, out)| {
            for (k, m) in ks.zip(out) {
                *m = x.chunks(chunk).nth(k).map_or(T::ZERO, |c| largest(c.iter().map(|&v| T::from(v))));
            }
        });
        pow2_gain(maxima.into_iter())
    }

    /// [`Backend::patch_sq_norms`] with the step's inputs `x` in `T` or in
    /// a 16-bit type: Winograd's scratch holds transformed tiles, so its
    /// norms come from `x`; the direct algorithm's from the patches.
    pub(crate) fn sq_norms_from<S: Copy + Sync>(&self, p: &Patches<'_, Self>, x: &[S], norms: &mut [T]) -> Result<(), CpuError>
    where
        T: From<S>,
    {
        let (n, cols) = Self::patch_dims(p);
        if let Some(tiles) = self.tiles(p.layer, p.r)? {
            need("patch_sq_norms: x", x, p.r.saturating_mul(p.layer.input_len()))?;
            need("patch_sq_norms: norms", norms, n)?;
            winograd::sq_norms(&self.pool, &tiles, p.r, x, gain(p), norms);
            return Ok(());
        }
        need("patch_sq_norms: scratch", p.packed, n.saturating_mul(cols))?;
        need("patch_sq_norms: norms", norms, n)?;
        self.par_row_blocks(norms, n, 1, cols, |rows, out| {
            for (o, row) in out.iter_mut().zip(rows) {
                *o = dot(&p.packed[row * cols..(row + 1) * cols], &p.packed[row * cols..(row + 1) * cols]);
            }
        });
        Ok(())
    }

    /// [`Backend::fisher_weights`] from output gradients in `T` or in a
    /// 16-bit type (converted as they are read).
    pub(crate) fn fisher_weights_from<S: Copy + Sync>(&self, p: &Patches<'_, Self>, y: &[S], norms: &[T], c: FisherCoefs<T>, out: FisherOut<'_, Self>) -> Result<(), CpuError>
    where
        T: From<S>,
    {
        let (FisherCoefs { scale, eps }, FisherOut { trace, lambda }) = (c, out);
        let (rows, l, r) = (p.layer.rows(), p.layer.positions(), p.r);
        let n = r * l;
        let d_prime = T::of_f64(p.layer.cols() as f64);
        need("fisher_weights: y", y, n.saturating_mul(rows))?;
        need("fisher_weights: norms", norms, n)?;
        need("fisher_weights: trace", trace, rows)?;
        need("fisher_weights: lambda", lambda, n.saturating_mul(rows))?;
        let (row_stride, pos_stride) = p.layer.output_strides();
        // Y[i, j, l] at position k = i*L + l, walked without divisions.
        let y_row = |i: usize, j: usize| &y[i * rows * l + j * row_stride..];
        let row_gain = |j: usize| pow2_gain((0..r).flat_map(|i| (0..l).map(move |pos| T::from(y_row(i, j)[pos * pos_stride]))));
        // sum_l scale*(g*Y)^2*norm over sample i's part of row j, and its
        // largest |Y|, in SUMS interleaved partial sums (one dependent chain
        // of additions per entry would bound the pass by the adder's latency).
        let part_trace = |i: usize, j: usize, gain: T| {
            let (yi, ni) = (y_row(i, j), &norms[i * l..(i + 1) * l]);
            let (mut acc, mut max) = ([T::ZERO; SUMS], [T::ZERO; SUMS]);
            let mut term = |k: usize, y: S, norm: T| {
                let y = T::from(y);
                max[k] = if abs(y) > max[k] { abs(y) } else { max[k] };
                let v = y * gain;
                acc[k] += scale * v * v * norm;
            };
            let whole = l / SUMS * SUMS;
            for p0 in (0..whole).step_by(SUMS) {
                // Convolutions' Y rows are contiguous: one load of SUMS.
                let ys: [S; SUMS] = match yi[p0..].first_chunk() {
                    Some(ys) if pos_stride == 1 => *ys,
                    _ => std::array::from_fn(|k| yi[(p0 + k) * pos_stride]),
                };
                for (k, y) in ys.into_iter().enumerate() {
                    term(k, y, ni[p0 + k]);
                }
            }
            for pos in whole..l {
                term(pos - whole, yi[pos * pos_stride], ni[pos]);
            }
            (acc.iter().fold(T::ZERO, |s, &a| s + a), max.iter().fold(T::ZERO, |m, &v| if v > m { v } else { m }))
        };
        let rescaled = AtomicBool::new(false);
        self.par_row_blocks(trace, rows, 1, n, |js, tr| {
            // TRACE_GROUP rows at a time, sample by sample: for a convolution
            // their parts of Y_i are one contiguous run, read in order.
            for (g, tr) in js.step_by(TRACE_GROUP).zip(tr.chunks_mut(TRACE_GROUP)) {
                let mut max = [T::ZERO; TRACE_GROUP];
                tr.fill(T::ZERO);
                for i in 0..r {
                    for (k, (t, m)) in tr.iter_mut().zip(&mut max).enumerate() {
                        let (acc, part_max) = part_trace(i, g + k, T::ONE);
                        *t += acc;
                        *m = if part_max > *m { part_max } else { *m };
                    }
                }
                for (k, (t, &m)) in tr.iter_mut().zip(&max).enumerate() {
                    // Gain 1, unless the row's squares could overflow: then
                    // again with the row's gain.
                    let gain = pow2_gain(std::iter::once(m));
                    if gain != T::ONE {
                        rescaled.store(true, Ordering::Relaxed);
                        *t = (0..r).fold(T::ZERO, |s, i| s + part_trace(i, g + k, gain).0);
                    }
                    *t /= d_prime;
                }
            }
        });
        let trace = &trace[..rows];
        if rescaled.into_inner() {
            // Some row was scaled: the rare path, row by row, each with its gain.
            for (j, &tr) in trace.iter().enumerate() {
                let (gain, den) = (row_gain(j), tr + eps);
                for i in 0..r {
                    for pos in 0..l {
                        let v = T::from(y_row(i, j)[pos * pos_stride]) * gain;
                        lambda[(i * l + pos) * rows + j] = scale * v * v / den;
                    }
                }
            }
            return Ok(());
        }
        // One sample's L x R block of lambda at a time (it fits in L2), in
        // tiles of LAMBDA_TILE rows by LAMBDA_TILE positions: each tile's
        // entries are computed along Y's rows (divisions that vectorize),
        // then stored transposed, along lambda's rows.
        self.par_row_blocks(lambda, r, l * rows, l * rows, |is, block| {
            let mut tmp = [T::ZERO; LAMBDA_TILE * LAMBDA_TILE];
            for (i, out) in is.zip(block.chunks_exact_mut(l * rows)) {
                for j0 in (0..rows).step_by(LAMBDA_TILE) {
                    let jn = LAMBDA_TILE.min(rows - j0);
                    for p0 in (0..l).step_by(LAMBDA_TILE) {
                        let pn = LAMBDA_TILE.min(l - p0);
                        for (jj, t) in tmp.chunks_exact_mut(LAMBDA_TILE).take(jn).enumerate() {
                            let (yj, den) = (y_row(i, j0 + jj), trace[j0 + jj] + eps);
                            let t = &mut t[..pn];
                            t.iter_mut().enumerate().for_each(|(pp, t)| *t = T::from(yj[(p0 + pp) * pos_stride]));
                            t.iter_mut().for_each(|v| *v = scale * *v * *v / den);
                        }
                        for pp in 0..pn {
                            let o = &mut out[(p0 + pp) * rows + j0..][..jn];
                            o.iter_mut().enumerate().for_each(|(jj, o)| *o = tmp[jj * LAMBDA_TILE + pp]);
                        }
                    }
                }
            }
        });
        Ok(())
    }
}

impl<T: Real + From<H>, H: Half> LowpBackend<H> for Cpu<T> {
    type LowpBuffer = Vec<H>;

    fn zeros_lowp(&self, len: usize) -> Result<Vec<H>, CpuError> {
        // SAFETY: all-zero bytes are the value +0.0 of bf16 and f16, neither
        // zero-sized.
        unsafe { zeroed_vec(len) }
    }

    fn lowp_len(&self, buf: &Vec<H>) -> usize {
        buf.len()
    }

    fn write_lowp(&self, src: &[H], dst: &mut Vec<H>, offset: usize) -> Result<(), CpuError> {
        need("write_lowp", dst, offset.saturating_add(src.len()))?;
        dst[offset..offset + src.len()].copy_from_slice(src);
        Ok(())
    }

    fn pack_patches_lowp(&self, layer: &Layer, r: usize, x: &Vec<H>, packed: &mut Vec<T>) -> Result<(), CpuError> {
        self.pack_from(layer, r, x, packed)
    }

    fn patch_sq_norms_lowp(&self, p: &Patches<'_, Self>, x: &Vec<H>, norms: &mut Vec<T>) -> Result<(), CpuError> {
        self.sq_norms_from(p, x, norms)
    }

    fn fisher_weights_lowp(&self, p: &Patches<'_, Self>, y: &Vec<H>, norms: &Vec<T>, c: FisherCoefs<T>, out: FisherOut<'_, Self>) -> Result<(), CpuError> {
        self.fisher_weights_from(p, y, norms, c, out)
    }

    fn count_nonfinite_lowp(&self, n: usize, v: &Vec<H>, out: &mut Vec<T>) -> Result<(), CpuError> {
        need("count_nonfinite_lowp: v", v, n)?;
        need("count_nonfinite_lowp: out", out, 1)?;
        out[0] = T::of_f64(v[..n].iter().filter(|h| !h.to_f32().is_finite()).count() as f64);
        Ok(())
    }
}

impl<T: Real> GuardBackend for Cpu<T> {
    fn row_guard(&self, shape: Shape, guard: Guard, m: &Vec<T>, trace: &Vec<T>, out: RowGuardOut<'_, Self>) -> Result<(), CpuError> {
        let (Shape { rows, cols }, RowGuardOut { z, row_scale, flags }) = (shape, out);
        need("row_guard: m", m, rows.saturating_mul(cols))?;
        need("row_guard: z", z, rows.saturating_mul(cols))?;
        for (what, v) in [("row_guard: trace", trace), ("row_guard: row_scale", &*row_scale), ("row_guard: flags", &*flags)] {
            need(what, v, rows)?;
        }
        for j in 0..rows {
            let (mj, zj) = (&m[j * cols..(j + 1) * cols], &mut z[j * cols..(j + 1) * cols]);
            let nonfinite = !row_scale[j].as_f64().is_finite() || zj.iter().any(|v| !v.as_f64().is_finite());
            let dead = trace[j] == T::ZERO;
            let replace = (nonfinite && guard.nonfinite) || (dead && guard.dead_rows);
            if replace {
                let norm = norm2(mj);
                if norm.is_finite() && norm > 0.0 {
                    zj.copy_from_slice(mj);
                    row_scale[j] = T::of_f64(1.0 / norm);
                } else {
                    zj.fill(T::ZERO);
                    row_scale[j] = T::ZERO;
                }
            }
            let bits = u8::from(nonfinite) * ROW_NONFINITE + u8::from(dead) * ROW_DEAD + u8::from(replace) * ROW_REPLACED;
            flags[j] = T::of_f64(f64::from(bits));
        }
        Ok(())
    }
}

/// The Euclidean norm in f64, scaled by the largest entry so that it
/// cannot overflow for finite entries (NaN or infinity when one is).
fn norm2<T: Real>(v: &[T]) -> f64 {
    if v.iter().any(|x| !x.as_f64().is_finite()) {
        return f64::NAN;
    }
    let max = v.iter().map(|&x| abs(x).as_f64()).fold(0.0, f64::max);
    if max == 0.0 {
        return 0.0;
    }
    max * v.iter().map(|&x| (x.as_f64() / max).powi(2)).sum::<f64>().sqrt()
}

impl<T: Real> Cpu<T> {
    /// `U = X V^T` (`N x R`), times `lambda` entrywise when given,
    /// computed in row tiles per thread so the scaling finds its tile in
    /// cache.
    fn project_scaled(&self, p: &mut Patches<'_, Self>, v: &[T], lambda: Option<&Vec<T>>, u: &mut [T]) -> Result<(), CpuError> {
        let (n, cols) = Self::patch_dims(p);
        let rows = p.layer.rows();
        need("project: v", v, rows.saturating_mul(cols))?;
        need("project: u", u, rows.saturating_mul(n))?;
        if let Some(l) = lambda {
            need("project: lambda", l, rows.saturating_mul(n))?;
        }
        if let Some(tiles) = self.tiles(p.layer, p.r)? {
            let len = tiles.scratch_len(self.pool.threads());
            need("project: scratch", p.packed, tiles.packed_len())?;
            need("project: product scratch", p.scratch, len)?;
            let xt = winograd::Packed { pool: &self.pool, t: &tiles, packed: p.packed, gain: gain(p) };
            winograd::project(xt, v, lambda.map(|l| &l[..]), u, &mut p.scratch[..len]);
            return Ok(());
        }
        need("project: scratch", p.packed, n.saturating_mul(cols))?;
        let vt = View::row_major(&v[..rows * cols], rows, cols).t();
        let x = View::row_major(&p.packed[..n * cols], n, cols);
        self.par_row_blocks(u, n, rows, rows * cols, |range, block| {
            for (t, tile) in block.chunks_mut(PROJECT_TILE * rows).enumerate() {
                let start = range.start + t * PROJECT_TILE;
                let len = tile.len() / rows;
                matmul_seq(tile, rows, false, x.rows(start..start + len), vt);
                if let Some(l) = lambda {
                    tile.iter_mut().zip(&l[start * rows..(start + len) * rows]).for_each(|(u, &s)| *u *= s);
                }
            }
        });
        Ok(())
    }

    /// `G = U^T X` (`R x D'`), added to `g` when `accumulate`.
    fn back_project_into(&self, p: &mut Patches<'_, Self>, u: &[T], accumulate: bool, g: &mut [T]) -> Result<(), CpuError> {
        let (n, cols) = Self::patch_dims(p);
        let rows = p.layer.rows();
        need("back_project: u", u, rows.saturating_mul(n))?;
        need("back_project: g", g, rows.saturating_mul(cols))?;
        if let Some(tiles) = self.tiles(p.layer, p.r)? {
            let len = tiles.scratch_len(self.pool.threads());
            need("back_project: scratch", p.packed, tiles.packed_len())?;
            need("back_project: product scratch", p.scratch, len)?;
            let xt = winograd::Packed { pool: &self.pool, t: &tiles, packed: p.packed, gain: gain(p) };
            winograd::back_project(xt, u, accumulate, g, &mut p.scratch[..len]);
            return Ok(());
        }
        need("back_project: scratch", p.packed, n.saturating_mul(cols))?;
        let ut = View::row_major(&u[..rows * n], n, rows).t();
        let x = View::row_major(&p.packed[..n * cols], n, cols);
        matmul(&self.pool, &mut g[..rows * cols], accumulate, ut, x);
        Ok(())
    }
}

/// Interleaved partial sums of the Fisher traces.
const SUMS: usize = 8;

/// Rows of the Fisher traces summed together, sample by sample.
const TRACE_GROUP: usize = 32;

/// Rows and positions per tile of the Fisher weights' transposing pass.
const LAMBDA_TILE: usize = 16;

/// `v` clamped to the finite range `[-MAX, MAX]`: running means (AdamW's
/// moments, K-FROG's y average) saturate there, so that their state stays
/// finite.
pub(crate) fn saturate<T: Real>(v: T) -> T {
    let max = <T as frog_core::Scalar>::MAX;
    if v > max {
        max
    } else if v < -max {
        -max
    } else {
        v
    }
}

/// `|v|` (NaN stays NaN).
pub(crate) fn abs<T: Real>(v: T) -> T {
    if v < T::ZERO {
        -v
    } else {
        v
    }
}

/// The largest `|v|` of `vals` (0 for none; NaNs are passed over).
fn largest<T: Real>(vals: impl Iterator<Item = T>) -> T {
    vals.map(abs).fold(T::ZERO, |m, v| if v > m { v } else { m })
}

/// The gain of a row with entries `vals` ([`frog_core::pow2_gain`] of its
/// largest `|v|`).
fn pow2_gain<T: Real>(vals: impl Iterator<Item = T>) -> T {
    T::of_f64(frog_core::pow2_gain::<T>(largest(vals).as_f64()))
}

/// Chunks of the sampled inputs whose largest `|x|` are found apart (and
/// on the pool's threads) for a step's gain.
const GAIN_CHUNKS: usize = 16;

/// Stores a step's gain in the patch scratch's last entry (the scratch is
/// at least one entry longer than its patches).
fn set_gain<T: Real>(packed: &mut [T], gain: T) {
    if let Some(last) = packed.last_mut() {
        *last = gain;
    }
}

/// The gain of the patches `p` ([`set_gain`]; 1 for an empty scratch).
pub(crate) fn gain<T: Real>(p: &Patches<'_, Cpu<T>>) -> T {
    p.packed.last().copied().unwrap_or(T::ONE)
}

/// A dot product in four independent lanes, so the compiler can keep it in
/// vector registers.
pub(crate) fn dot<T: Real>(a: &[T], b: &[T]) -> T {
    let mut acc = [T::ZERO; 4];
    let (ca, cb) = (a.chunks_exact(4), b.chunks_exact(4));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for k in 0..4 {
            acc[k] += x[k] * y[k];
        }
    }
    let mut s = (acc[0] + acc[1]) + (acc[2] + acc[3]);
    for (&x, &y) in ra.iter().zip(rb) {
        s += x * y;
    }
    s
}
