//! The `Backend` trait: buffers and the few kernels FROG needs.
//!
//! Required methods come in three families: memory (`zeros`, `len`,
//! `read`, `write`), products over the sampled patch matrix `X` (whose rows
//! are the patches `P[i,l]`), and elementwise/row-wise updates of row-major
//! `R x D'` buffers with per-row scalars held in backend buffers. Provided
//! methods (`fisher_matvec`, `cg_iteration`, `cg_solve`) are built from those
//! and may be overridden to fuse work.
//!
//! Buffers may be longer than an operation needs: every operation reads and
//! writes only the prefix its sizes name.

use core::fmt;

use crate::layer::Layer;
use crate::scalar::Scalar;

/// The coarse kind of a backend failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum BackendErrorKind {
    /// No driver or no device.
    NoDevice,
    /// An allocation failed.
    OutOfMemory,
    /// A kernel failed to launch or to run.
    Launch,
    /// A buffer is unusable here (wrong length, another device or context).
    InvalidBuffer,
    /// The backend lacks an optional capability, or cannot create a
    /// resource it needs (such as threads).
    Unsupported,
    /// A buffer lives on another device than the backend's.
    DeviceMismatch,
    /// A buffer holds another element type than the operation needs.
    DtypeMismatch,
    /// Anything else.
    Other,
}

/// A backend's error type, classified by [`BackendError::kind`]. It is a
/// `core::error::Error` (and `'static`) so that [`crate::Error`] is one on
/// every backend and its `source()` reaches the backend's error.
pub trait BackendError: core::error::Error + 'static {
    /// The coarse kind of this error.
    fn kind(&self) -> BackendErrorKind;
}

/// Where a row-major block sits inside a larger buffer: row `j`, column `c`
/// is at `offset + j*stride + c`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Strided {
    /// Entries between the starts of two rows.
    pub stride: usize,
    /// Entry of row 0, column 0.
    pub offset: usize,
}

impl Strided {
    /// A dense block with `cols` columns starting at entry 0.
    pub fn dense(cols: usize) -> Self {
        Self { stride: cols, offset: 0 }
    }

    /// One past the last entry of a `rows x cols` block placed here: the
    /// length a buffer needs to hold it, 0 for an empty block. Saturates,
    /// so that a block past `usize` fails every length check.
    pub fn end(&self, rows: usize, cols: usize) -> usize {
        if rows == 0 || cols == 0 {
            return 0;
        }
        (rows - 1).saturating_mul(self.stride).saturating_add(self.offset).saturating_add(cols)
    }
}

/// The shape of a row-wise kernel's operands: `rows x cols`, row-major. A
/// struct, so that the two counts cannot be swapped by position.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    /// Rows.
    pub rows: usize,
    /// Entries per row.
    pub cols: usize,
}

impl Shape {
    /// `rows x cols`.
    pub const fn new(rows: usize, cols: usize) -> Self {
        Self { rows, cols }
    }

    /// `rows * cols`, saturating: a block past `usize` fails every length
    /// check.
    pub const fn entries(&self) -> usize {
        self.rows.saturating_mul(self.cols)
    }
}

/// The two scalars of [`Backend::fisher_weights`]: `Q = scale * Y^2` and
/// `lambda = Q / (trace + eps)`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FisherCoefs<S> {
    /// The Fisher scale `batch_size^2 / sample`.
    pub scale: S,
    /// The denominator's `eps`.
    pub eps: S,
}

/// What [`Backend::fisher_weights`] writes: the per-row traces and the
/// Fisher weights.
pub struct FisherOut<'a, B: Backend + ?Sized> {
    /// `R` traces.
    pub trace: &'a mut B::Buffer,
    /// The Fisher weights, in the backend's product layout.
    pub lambda: &'a mut B::Buffer,
}

/// Buffers only, which print as nothing (they need not be `Debug`).
impl<B: Backend + ?Sized> fmt::Debug for FisherOut<'_, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FisherOut").finish_non_exhaustive()
    }
}

/// The two scalars of [`Backend::row_step`]:
/// `w_j = decay * w_j - lr * scale[j] * z_j`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepCoefs<S> {
    /// The decoupled decay factor `1 - lr * weight_decay` (1 without decay).
    pub decay: S,
    /// The learning rate.
    pub lr: S,
}

/// The sampled inputs of one step: `r` samples of `layer`'s input in
/// PyTorch layout, the backend's scratch as filled by
/// [`Backend::pack_patches`] (for example an im2col copy of `X`), and the
/// product scratch the products write while the patch scratch is
/// read-only ([`Backend::product_scratch_len`]). The products take it by
/// `&mut`, for that scratch; the other calls by `&`.
pub struct Patches<'a, B: Backend + ?Sized + 'a> {
    /// The layer.
    pub layer: &'a Layer,
    /// Sampled rows.
    pub r: usize,
    /// The sampled inputs in the scalar type, `r * layer.input_len()`
    /// entries, whether the caller gave buffers or views; `None` in a step
    /// on 16-bit inputs ([`crate::LowpBatch`]), where only the patch
    /// scratch holds them (converted). A kernel that reads the inputs
    /// themselves rather than the scratch (patch norms taken from `x`, an
    /// implicit GEMM) reads them here, and must make the 16-bit step's
    /// [`crate::LowpBackend::pack_patches_lowp`] leave what it needs in the
    /// scratch, or override the 16-bit twin.
    pub x: Option<B::View<'a>>,
    /// The backend's patch scratch.
    pub packed: &'a B::Buffer,
    /// The backend's product scratch, at least
    /// [`Backend::product_scratch_len`] entries (a workspace's, sized with
    /// the rest of it): what a product writes besides its output. Its
    /// contents between calls mean nothing.
    pub scratch: &'a mut B::Buffer,
}

/// Buffers and views print as nothing (a backend's need not be `Debug`):
/// the layer, the sample count, and whether `x` is given.
impl<'a, B: Backend + ?Sized + 'a> fmt::Debug for Patches<'a, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Patches").field("layer", self.layer).field("r", &self.r).field("x", &self.x.is_some()).finish_non_exhaustive()
    }
}

/// The vectors of a batched CG solve: `R x D'` row-major blocks, the
/// product scratch `u` (layout of the Fisher weights), and per-row scalars.
pub struct CgBuffers<'a, B: Backend + ?Sized> {
    /// The solution `Z`.
    pub z: &'a mut B::Buffer,
    /// The residual.
    pub rs: &'a mut B::Buffer,
    /// The search direction.
    pub pd: &'a mut B::Buffer,
    /// `A(Pd)`.
    pub ap: &'a mut B::Buffer,
    /// Product scratch, `r*R*L` entries.
    pub u: &'a mut B::Buffer,
    /// `<Rs,Rs>` per row.
    pub rho: &'a mut B::Buffer,
    /// The next `<Rs,Rs>` per row.
    pub rho_next: &'a mut B::Buffer,
    /// `<Pd,Ap>` per row.
    pub pap: &'a mut B::Buffer,
    /// `alpha`, then `beta`, per row.
    pub coef: &'a mut B::Buffer,
}

/// Buffers only, which print as nothing (they need not be `Debug`).
impl<B: Backend + ?Sized> fmt::Debug for CgBuffers<'_, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CgBuffers").finish_non_exhaustive()
    }
}

/// A compute backend for FROG.
///
/// Implement the required methods for your framework's tensors; FROG's
/// whole step is then [`crate::frog_step`] over them.
///
/// ## Buffers and views
///
/// A backend has two kinds of storage: buffers it allocates itself
/// ([`Backend::Buffer`]: the states, the workspace), and views
/// ([`Backend::View`], [`Backend::ViewMut`]): parts of a buffer, or of
/// storage the backend's framework owns (a slice inside a larger
/// allocation, a sub-range of a device allocation, a tensor value), of
/// exactly the entries they were made with. On the host a view is a slice
/// (`&[T]`, `&mut [T]`); on a device, an address and a length.
///
/// The kernels that touch the caller's data (parameters, gradients,
/// sampled inputs and output gradients) take views, once: a step on the
/// caller's buffers makes views of them first ([`Backend::view`], which
/// also checks their lengths), so that each such kernel exists once
/// whether the caller holds buffers or views. Every other kernel runs on
/// the step's own buffers.
pub trait Backend {
    /// Scalar type of every buffer.
    type Scalar: Scalar;
    /// A buffer of scalars on the device.
    type Buffer;
    /// A read-only view of scalars: a part of a buffer or of the
    /// framework's storage.
    type View<'a>
    where
        Self: 'a;
    /// A writable view.
    type ViewMut<'a>
    where
        Self: 'a;
    /// The backend's error.
    type Error: BackendError;

    // ---- memory ----

    /// A new zero-filled buffer (the only allocating call; FROG makes it
    /// only when the caller builds state or a workspace).
    fn zeros(&self, len: usize) -> Result<Self::Buffer, Self::Error>;
    /// Number of entries in `buf`.
    fn len(&self, buf: &Self::Buffer) -> usize;
    /// Copies `dst.len()` entries from `src[offset..]` to the host.
    fn read(&self, src: &Self::Buffer, offset: usize, dst: &mut [Self::Scalar]) -> Result<(), Self::Error>;
    /// Copies host entries to `dst[offset..]`.
    fn write(&self, src: &[Self::Scalar], dst: &mut Self::Buffer, offset: usize) -> Result<(), Self::Error>;

    // ---- views ----

    /// Entries `offset..offset + len` of `buf`, or an error when they are
    /// not all in it.
    fn view<'a>(&self, buf: &'a Self::Buffer, offset: usize, len: usize) -> Result<Self::View<'a>, Self::Error>;
    /// Entries `offset..offset + len` of `buf`, writable.
    fn view_mut<'a>(&self, buf: &'a mut Self::Buffer, offset: usize, len: usize) -> Result<Self::ViewMut<'a>, Self::Error>;
    /// The whole of `v`, read-only, for as long as `v` is borrowed.
    fn reborrow<'b>(&self, v: &'b Self::ViewMut<'_>) -> Self::View<'b>;
    /// The whole of `v`, for as long as `v` is borrowed: a view of a
    /// shorter life, which the trait system cannot make by itself (an
    /// associated type's lifetime is invariant). On the host `*v`.
    fn reborrow_view<'b>(&self, v: &'b Self::View<'_>) -> Self::View<'b>;
    /// Entries of `v`.
    fn view_len(&self, v: &Self::View<'_>) -> usize;
    /// Entries of `v`.
    fn view_mut_len(&self, v: &Self::ViewMut<'_>) -> usize {
        self.view_len(&self.reborrow(v))
    }

    // ---- products over the sampled patch matrix X ----

    /// Entries of patch scratch a step of `layer` with `r` samples needs.
    fn patch_scratch_len(&self, layer: &Layer, r: usize) -> usize {
        let _ = (layer, r);
        0
    }
    /// Entries of product scratch ([`Patches::scratch`]) the products of a
    /// step of `layer` with `r` samples need ([`Backend::project`],
    /// [`Backend::back_project`], [`Backend::fisher_matvec`],
    /// [`Backend::cg_iteration`], [`Backend::cg_solve`]), in the style of
    /// rustfft's `get_inplace_scratch_len`: [`crate::WorkspaceReq`] sizes
    /// it and [`crate::Workspace`] allocates it with every other buffer,
    /// so that no step allocates, its first included. It must cover every
    /// sample count up to `r` (a workspace sized at `r` serves smaller
    /// samples). The default, for backends whose products need nothing
    /// besides their outputs and `u`, is 0.
    fn product_scratch_len(&self, layer: &Layer, r: usize) -> usize {
        let _ = (layer, r);
        0
    }
    /// Prepares `packed` from `x` once per step (for example an im2col
    /// copy), so every product of the step can reuse it.
    ///
    /// For finite `x` the products must stay finite: when the largest `|x|`
    /// of the `r` sampled inputs exceeds [`crate::square_safe_max`], the
    /// step's patches are those of `c * x` with `c` the power of two
    /// [`crate::pow2_gain`] of it, every entry scaled, the bias feature's 1
    /// included (it becomes `c`), in every product and norm of the step
    /// (the backend keeps `c` beside its scratch, so it is found once per
    /// step). This is exact: FROG's Fisher weights are inversely
    /// proportional to `|P|^2`, so its direction does not depend on `c`
    /// except through `eps` (the step is that of `eps / c^2` in the Fisher
    /// weights). Inputs below that size take exactly the unscaled patches.
    /// The default, without scratch, does not rescale.
    fn pack_patches(&self, layer: &Layer, r: usize, x: &Self::View<'_>, packed: &mut Self::Buffer) -> Result<(), Self::Error> {
        let _ = (layer, r, x, packed);
        Ok(())
    }
    /// `norms[i*L + l] = ||P[i,l]||^2`, the bias feature's 1 included
    /// (times the step's gain). A backend whose norms read the inputs
    /// rather than the scratch reads [`Patches::x`].
    fn patch_sq_norms(&self, p: &Patches<'_, Self>, norms: &mut Self::Buffer) -> Result<(), Self::Error>;
    /// With `Q = scale * Y^2` (`y` in PyTorch layout, `[r, R, Ho, Wo]` or
    /// `[r, T, R]`; see [`Layer::output_strides`]):
    /// `trace[j] = sum_{i,l} Q[i,j,l] * norms[i*L+l] / D'` and
    /// `lambda = Q / (trace[j] + eps)`, in the backend's product layout.
    ///
    /// For finite `y` the results must be finite: a row whose largest
    /// `|Y|` is so large that `Q` or the trace could overflow should be
    /// scaled by a power of two first (exact; `lambda` does not depend on
    /// it except through `eps`), and `trace[j]` then holds the scaled row's
    /// trace. Rows below that size must take exactly the formula above.
    fn fisher_weights(&self, p: &Patches<'_, Self>, y: &Self::View<'_>, norms: &Self::Buffer, c: FisherCoefs<Self::Scalar>, out: FisherOut<'_, Self>) -> Result<(), Self::Error>;
    /// `U = X V^T` for the `R x D'` rows `v`: `u[(i,j,l)] = <P[i,l], v_j>`,
    /// in the same backend layout as the Fisher weights.
    fn project(&self, p: &mut Patches<'_, Self>, v: &Self::Buffer, u: &mut Self::Buffer) -> Result<(), Self::Error>;
    /// `G = U^T X`: `g_j = sum_{i,l} u[(i,j,l)] P[i,l]`, overwriting the
    /// `R x D'` buffer `g`.
    fn back_project(&self, p: &mut Patches<'_, Self>, u: &Self::Buffer, g: &mut Self::Buffer) -> Result<(), Self::Error>;

    // ---- elementwise ----

    /// `y = a*x + b*y` over `n` entries; with `b = 0`, `y` is overwritten
    /// without being read. On views, as it updates the caller's parameters
    /// in the plain-SGD steps; a step's own buffers come as views of them.
    fn axpby(&self, n: usize, a: Self::Scalar, x: &Self::View<'_>, b: Self::Scalar, y: &mut Self::ViewMut<'_>) -> Result<(), Self::Error>;
    /// `a *= b` over `n` entries.
    fn mul_assign(&self, n: usize, a: &mut Self::Buffer, b: &Self::Buffer) -> Result<(), Self::Error>;
    /// Copies a `rows x cols` block between two strided places, from a view
    /// (the caller's gradients, or a view of a buffer).
    fn copy_strided(&self, shape: Shape, src: &Self::View<'_>, src_at: Strided, dst: &mut Self::Buffer, dst_at: Strided) -> Result<(), Self::Error>;

    // ---- row-wise, per-row scalars in buffers ----

    /// `out[j] = <a_j, b_j>` over `rows x cols` row-major blocks.
    fn row_dots(&self, shape: Shape, a: &Self::Buffer, b: &Self::Buffer, out: &mut Self::Buffer) -> Result<(), Self::Error>;
    /// `out[j] = num[j] / (den[j] + eps)`.
    fn row_div(&self, rows: usize, num: &Self::Buffer, den: &Self::Buffer, eps: Self::Scalar, out: &mut Self::Buffer) -> Result<(), Self::Error>;
    /// `out[j] = 1 / sqrt(x[j] + eps)`.
    fn row_rsqrt(&self, rows: usize, x: &Self::Buffer, eps: Self::Scalar, out: &mut Self::Buffer) -> Result<(), Self::Error>;
    /// `y_j += a * coef[j] * x_j`.
    fn row_axpy(&self, shape: Shape, a: Self::Scalar, coef: &Self::Buffer, x: &Self::Buffer, y: &mut Self::Buffer) -> Result<(), Self::Error>;
    /// `y_j = x_j + coef[j] * y_j`.
    fn row_xpby(&self, shape: Shape, x: &Self::Buffer, coef: &Self::Buffer, y: &mut Self::Buffer) -> Result<(), Self::Error>;
    /// The final step on a dense `rows x cols` parameter:
    /// `w_j = decay * w_j - lr * scale[j] * z_j`, with `z` strided (a
    /// weight's columns, or a bias's one column, of the `R x D'` direction)
    /// and `w` a view of the caller's parameter.
    fn row_step(&self, shape: Shape, w: &mut Self::ViewMut<'_>, c: StepCoefs<Self::Scalar>, scale: &Self::Buffer, z: &Self::Buffer, z_at: Strided) -> Result<(), Self::Error>;

    // ---- provided ----

    /// `out = (X^T diag(lambda) X + tau I) v`, row by row, using `u` as
    /// product scratch. Override to fuse the `lambda` scaling into a product.
    fn fisher_matvec(
        &self,
        p: &mut Patches<'_, Self>,
        lambda: &Self::Buffer,
        tau: Self::Scalar,
        v: &Self::Buffer,
        u: &mut Self::Buffer,
        out: &mut Self::Buffer,
    ) -> Result<(), Self::Error> {
        let n = p.r * p.layer.output_len();
        self.project(p, v, u)?;
        self.mul_assign(n, u, lambda)?;
        self.back_project(p, u, out)?;
        axpby_buffers(self, p.layer.rows() * p.layer.cols(), tau, v, Self::Scalar::ONE, out)
    }

    /// One iteration of batched CG (every row on its own, `eps` in both
    /// denominators), leaving the new `<Rs,Rs>` in `cg.rho`. Override to
    /// fuse the vector updates.
    fn cg_iteration(
        &self,
        p: &mut Patches<'_, Self>,
        lambda: &Self::Buffer,
        tau: Self::Scalar,
        eps: Self::Scalar,
        cg: &mut CgBuffers<'_, Self>,
    ) -> Result<(), Self::Error> {
        let (shape, rows) = (Shape::new(p.layer.rows(), p.layer.cols()), p.layer.rows());
        self.fisher_matvec(p, lambda, tau, cg.pd, cg.u, cg.ap)?;
        self.row_dots(shape, cg.pd, cg.ap, cg.pap)?;
        self.row_div(rows, cg.rho, cg.pap, eps, cg.coef)?;
        self.row_axpy(shape, Self::Scalar::ONE, cg.coef, cg.pd, cg.z)?;
        self.row_axpy(shape, -Self::Scalar::ONE, cg.coef, cg.ap, cg.rs)?;
        self.row_dots(shape, cg.rs, cg.rs, cg.rho_next)?;
        self.row_div(rows, cg.rho_next, cg.rho, eps, cg.coef)?;
        self.row_xpby(shape, cg.rs, cg.coef, cg.pd)?;
        core::mem::swap(&mut cg.rho, &mut cg.rho_next);
        Ok(())
    }

    /// `iters` iterations of batched CG from the state the step starts it
    /// in (`z = 0`, `rs = pd = M`, `rho = <M, M>`), leaving the solution in
    /// `cg.z` and the final `<Rs, Rs>` per row in `cg.rho`. The default
    /// runs [`Backend::cg_iteration`] `iters` times. Override to solve in
    /// another space with the same iterates (frog-cpu solves in the span of
    /// the sampled patches where they are few); an override may leave
    /// `rs`, `pd`, `ap`, `u` and the product scratch holding anything.
    fn cg_solve(&self, p: &mut Patches<'_, Self>, lambda: &Self::Buffer, tau: Self::Scalar, eps: Self::Scalar, iters: usize, cg: &mut CgBuffers<'_, Self>) -> Result<(), Self::Error> {
        (0..iters).try_for_each(|_| self.cg_iteration(p, lambda, tau, eps, cg))
    }

    /// Scales every row of the `rows x cols` right-hand side `v` whose
    /// largest `|v|` is so large that the CG's dot products could overflow
    /// by a power of two that brings it near 1 (exact; FROG's direction
    /// does not depend on it except through `eps`), and leaves every other
    /// row untouched. The default does nothing, which keeps a backend's
    /// steps exactly as before; override it so that huge finite gradients
    /// give finite steps.
    fn row_rescale(&self, shape: Shape, v: &mut Self::Buffer) -> Result<(), Self::Error> {
        let _ = (shape, v);
        Ok(())
    }

    /// Row `k` of `dst` becomes row `rows[k]` of `src`, rows of `row_len`
    /// entries: the step's sampled rows of a full-batch input or output
    /// gradient (a view of a buffer, or of a framework's activation
    /// tensor), taken on the device. Call it through
    /// [`crate::gather_rows`], which checks every index and length first.
    /// The default copies row by row; override it to gather in one kernel.
    fn copy_rows(&self, rows: &[usize], row_len: usize, src: &Self::View<'_>, dst: &mut Self::Buffer) -> Result<(), Self::Error> {
        let at = |row: usize| Strided { stride: row_len, offset: row * row_len };
        rows.iter().enumerate().try_for_each(|(k, &row)| self.copy_strided(Shape::new(1, row_len), src, at(row), dst, at(k)))
    }

    /// Copies the first `n` entries of `src` to `dst`.
    fn copy(&self, n: usize, src: &Self::Buffer, dst: &mut Self::Buffer) -> Result<(), Self::Error> {
        copy_buffers(self, Shape::new(1, n), src, Strided::dense(n), dst, Strided::dense(n))
    }
}

// The view kernels on the step's own buffers: each lowers its buffers to
// views of exactly the entries it touches (which also checks that they
// hold them), so that every kernel exists once.

/// [`Backend::axpby`] on two buffers.
pub(crate) fn axpby_buffers<B: Backend + ?Sized>(backend: &B, n: usize, a: B::Scalar, x: &B::Buffer, b: B::Scalar, y: &mut B::Buffer) -> Result<(), B::Error> {
    backend.axpby(n, a, &backend.view(x, 0, n)?, b, &mut backend.view_mut(y, 0, n)?)
}

/// [`Backend::copy_strided`] from a buffer.
pub(crate) fn copy_buffers<B: Backend + ?Sized>(backend: &B, shape: Shape, src: &B::Buffer, src_at: Strided, dst: &mut B::Buffer, dst_at: Strided) -> Result<(), B::Error> {
    backend.copy_strided(shape, &backend.view(src, 0, src_at.end(shape.rows, shape.cols))?, src_at, dst, dst_at)
}

/// All of `buf` as a view.
pub(crate) fn whole<'a, B: Backend + ?Sized>(backend: &B, buf: &'a B::Buffer) -> Result<B::View<'a>, B::Error> {
    backend.view(buf, 0, backend.len(buf))
}

/// All of `buf` as a writable view.
pub(crate) fn whole_mut<'a, B: Backend + ?Sized>(backend: &B, buf: &'a mut B::Buffer) -> Result<B::ViewMut<'a>, B::Error> {
    let len = backend.len(buf);
    backend.view_mut(buf, 0, len)
}

#[cfg(test)]
mod tests {
    use super::Strided;

    #[test]
    fn block_ends_saturate() {
        assert_eq!(Strided::dense(5).end(0, 5), 0);
        assert_eq!(Strided::dense(4).end(3, 0), 0);
        assert_eq!(Strided::dense(4).end(3, 4), 12);
        assert_eq!(Strided { stride: 10, offset: 9 }.end(3, 1), 30);
        // Past usize: saturates, so that no buffer is long enough.
        assert_eq!(Strided { stride: usize::MAX / 2, offset: 7 }.end(4, 1), usize::MAX);
        assert_eq!(Strided { stride: 0, offset: usize::MAX }.end(1, 2), usize::MAX);
    }
}
