//! Borrowed views: steps on parts of buffers that the caller owns.
//!
//! A framework keeps its parameters, gradients and activations in its own
//! storage: a host slice inside a larger allocation, a sub-range of a
//! device allocation, a tensor value. [`ViewBackend`] lets FROG's step and
//! the plain-SGD step take exactly such parts, each of exactly the length
//! the step names, without a copy into a backend buffer first. The step's
//! own scratch (the workspace and the states) stays in backend buffers.

use core::fmt;

use crate::backend::{Backend, Patches, Strided};
use crate::layer::Layer;

/// A [`Backend`] whose user-facing steps also take borrowed views.
///
/// A view is a part of a buffer, or of storage the backend's framework
/// owns, of exactly the entries it was made with. The methods below are
/// the view twins of the [`Backend`] kernels that touch the caller's data
/// (parameters, gradients, sampled inputs and output gradients); every
/// other call of a step is the same as on buffers. On the host a view is a
/// slice (`&[T]`, `&mut [T]`); on a device, a pointer and a length.
///
/// The products of a step on views see [`Patches::x`] set to the patch
/// scratch (as in a step on 16-bit inputs): whatever they read must be in
/// the scratch, which [`ViewBackend::pack_patches_view`] fills.
#[allow(clippy::too_many_arguments)]
pub trait ViewBackend: Backend {
    /// A read-only view.
    type View<'a>
    where
        Self: 'a;
    /// A writable view.
    type ViewMut<'a>
    where
        Self: 'a;

    /// Entries `offset..offset + len` of `buf`, or an error when they are
    /// not all in it.
    fn view<'a>(&self, buf: &'a Self::Buffer, offset: usize, len: usize) -> Result<Self::View<'a>, Self::Error>;
    /// Entries `offset..offset + len` of `buf`, writable.
    fn view_mut<'a>(&self, buf: &'a mut Self::Buffer, offset: usize, len: usize) -> Result<Self::ViewMut<'a>, Self::Error>;
    /// The whole of `v`, read-only, for as long as `v` is borrowed.
    fn reborrow<'b>(&self, v: &'b Self::ViewMut<'_>) -> Self::View<'b>;
    /// Entries of `v`.
    fn view_len(&self, v: &Self::View<'_>) -> usize;
    /// Entries of `v`.
    fn view_mut_len(&self, v: &Self::ViewMut<'_>) -> usize;

    /// [`Backend::copy_strided`] from a view.
    fn copy_from_view(&self, rows: usize, cols: usize, src: &Self::View<'_>, src_at: Strided, dst: &mut Self::Buffer, dst_at: Strided) -> Result<(), Self::Error>;
    /// [`Backend::axpby`] on views: `y = a*x + b*y` over `n` entries (with
    /// `b = 0`, `y` is overwritten without being read).
    fn axpby_view(&self, n: usize, a: Self::Scalar, x: &Self::View<'_>, b: Self::Scalar, y: &mut Self::ViewMut<'_>) -> Result<(), Self::Error>;
    /// [`Backend::row_step`] on a parameter view `w`.
    fn row_step_view(
        &self,
        rows: usize,
        cols: usize,
        w: &mut Self::ViewMut<'_>,
        decay: Self::Scalar,
        lr: Self::Scalar,
        scale: &Self::Buffer,
        z: &Self::Buffer,
        z_at: Strided,
    ) -> Result<(), Self::Error>;
    /// [`Backend::pack_patches`] from a view of the sampled inputs: the
    /// scratch must end up holding everything the products read.
    fn pack_patches_view(&self, layer: &Layer, r: usize, x: &Self::View<'_>, packed: &mut Self::Buffer) -> Result<(), Self::Error>;
    /// [`Backend::patch_sq_norms`] in a step on the input view `x`. The
    /// default reads the patch scratch through `patch_sq_norms`; a backend
    /// whose norms read `x` itself overrides it.
    fn patch_sq_norms_view(&self, p: &Patches<'_, Self>, x: &Self::View<'_>, norms: &mut Self::Buffer) -> Result<(), Self::Error> {
        let _ = x;
        self.patch_sq_norms(p, norms)
    }
    /// [`Backend::fisher_weights`] from a view of the output gradients
    /// (same layout, same contract).
    fn fisher_weights_view(
        &self,
        p: &Patches<'_, Self>,
        y: &Self::View<'_>,
        norms: &Self::Buffer,
        scale: Self::Scalar,
        eps: Self::Scalar,
        trace: &mut Self::Buffer,
        lambda: &mut Self::Buffer,
    ) -> Result<(), Self::Error>;

    /// [`Backend::copy_rows`] from a view: row `k` of `dst` becomes row
    /// `rows[k]` of `src`. Call it through [`crate::gather_rows`] (with a [`crate::ViewSource`]),
    /// which checks every index and length first. The default copies row by
    /// row; override it to gather in one kernel.
    fn copy_rows_from_view(&self, rows: &[usize], row_len: usize, src: &Self::View<'_>, dst: &mut Self::Buffer) -> Result<(), Self::Error> {
        let at = |row: usize| Strided { stride: row_len, offset: row * row_len };
        rows.iter().enumerate().try_for_each(|(k, &row)| self.copy_from_view(1, row_len, src, at(row), dst, at(k)))
    }
}

/// A layer's parameters and gradients as views (see [`crate::Params`]).
pub struct ViewParams<'a, B: ViewBackend + 'a> {
    /// Weight `R x D`.
    pub weight: B::ViewMut<'a>,
    /// Its gradient.
    pub grad_weight: B::View<'a>,
    /// Bias `R` and its gradient, when the layer has one.
    pub bias: Option<(B::ViewMut<'a>, B::View<'a>)>,
}

/// The sampled rows of a batch as views (see [`crate::Batch`]).
pub struct ViewBatch<'a, B: ViewBackend + 'a> {
    /// Sampled inputs, `sample * layer.input_len()` entries.
    pub x: B::View<'a>,
    /// Their output gradients, `sample * layer.output_len()` entries.
    pub y: B::View<'a>,
    /// Sampled rows `r`.
    pub sample: usize,
    /// Samples in the full batch `B`.
    pub batch_size: usize,
}

// Views print their counts, not their entries (views need not be `Debug`).

impl<'a, B: ViewBackend + 'a> fmt::Debug for ViewParams<'a, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ViewParams").field("bias", &self.bias.is_some()).finish_non_exhaustive()
    }
}

impl<'a, B: ViewBackend + 'a> fmt::Debug for ViewBatch<'a, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ViewBatch").field("sample", &self.sample).field("batch_size", &self.batch_size).finish_non_exhaustive()
    }
}
