//! Borrowed views: steps on parts of storage that the caller owns.
//!
//! A framework keeps its parameters, gradients and activations in its own
//! storage: a host slice inside a larger allocation, a sub-range of a
//! device allocation, a tensor value. Every backend's views
//! ([`Backend::View`], [`Backend::ViewMut`]) let FROG's step and the
//! plain-SGD step take exactly such parts, each of exactly the length the
//! step names, without a copy into a backend buffer first. The step's own
//! scratch (the workspace and the states) stays in backend buffers. A step
//! on buffers ([`crate::Params`], [`crate::Batch`]) makes views of them
//! first and then runs the same kernels.

use core::fmt;

use crate::backend::Backend;

/// A layer's parameters and gradients as views (see [`crate::Params`]).
pub struct ViewParams<'a, B: Backend + 'a> {
    /// Weight `R x D`.
    pub weight: B::ViewMut<'a>,
    /// Its gradient.
    pub grad_weight: B::View<'a>,
    /// Bias `R` and its gradient, when the layer has one.
    pub bias: Option<(B::ViewMut<'a>, B::View<'a>)>,
}

/// The sampled rows of a batch as views (see [`crate::Batch`]).
pub struct ViewBatch<'a, B: Backend + 'a> {
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

impl<'a, B: Backend + 'a> fmt::Debug for ViewParams<'a, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ViewParams").field("bias", &self.bias.is_some()).finish_non_exhaustive()
    }
}

impl<'a, B: Backend + 'a> fmt::Debug for ViewBatch<'a, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ViewBatch").field("sample", &self.sample).field("batch_size", &self.batch_size).finish_non_exhaustive()
    }
}
