//! The input kinds of a FROG step and the sealed traits over them: the
//! parameters ([`Params`] or [`ViewParams`]), the sampled rows ([`Batch`],
//! [`LowpBatch`] or [`ViewBatch`]) and the guard ([`Unguarded`] or a
//! [`Guard`]), each with the few calls in which its kind differs. A step
//! makes views of buffers first, so that its arithmetic runs once.

use core::fmt;

use super::RowGuard;
use crate::backend::{whole, whole_mut, Backend, FisherCoefs, FisherOut, Patches, Shape, StepCoefs, Strided};
use crate::error::Error;
use crate::guard::{Guard, GuardBackend};
use crate::layer::Layer;
use crate::lowp::{Half, LowpBackend};
use crate::scalar::Scalar;
use crate::sgd::{ParamGrad, ViewParamGrad};
use crate::view::{ViewBatch, ViewParams};

/// A layer's parameters and their gradients (means over the batch).
pub struct Params<'a, B: Backend> {
    /// Weight `R x D` (`[c_out, c_in, kh, kw]` or `[d_out, d_in]`).
    pub weight: &'a mut B::Buffer,
    /// Its gradient.
    pub grad_weight: &'a B::Buffer,
    /// Bias `R` and its gradient, when the layer has one.
    pub bias: Option<(&'a mut B::Buffer, &'a B::Buffer)>,
}

/// The sampled rows of a batch: inputs and output gradients of the same
/// `sample` samples.
pub struct Batch<'a, B: Backend> {
    /// Sampled inputs, `sample * layer.input_len()` entries.
    pub x: &'a B::Buffer,
    /// Their output gradients `dL/d(output)`, raw as autograd gives them,
    /// `sample * layer.output_len()` entries.
    pub y: &'a B::Buffer,
    /// Sampled rows `r`.
    pub sample: usize,
    /// Samples in the full batch `B`.
    pub batch_size: usize,
}

/// The sampled rows of a batch in the 16-bit type `H`, as autocast hands
/// them over: inputs and output gradients of the same `sample` samples.
/// See [`crate::LowpBackend`] for what may carry a loss scale.
pub struct LowpBatch<'a, B: LowpBackend<H>, H: Half> {
    /// Sampled inputs, `sample * layer.input_len()` entries.
    pub x: &'a B::LowpBuffer,
    /// Their output gradients, `sample * layer.output_len()` entries; may
    /// stay multiplied by a loss scale (the step's direction is invariant
    /// to it up to `denom_eps`).
    pub y: &'a B::LowpBuffer,
    /// Sampled rows `r`.
    pub sample: usize,
    /// Samples in the full batch `B`.
    pub batch_size: usize,
    /// Counts the infinite and NaN entries of `y` first (one read back to
    /// the host) and returns [`Error::NonFiniteInput`] when there are any,
    /// before any state changes: a dynamic loss scaler's overflow check.
    pub check_y: bool,
}

// The step's inputs print their counts, not their buffers (a backend's
// buffers need not be `Debug`).

impl<B: Backend> fmt::Debug for Params<'_, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Params").field("bias", &self.bias.is_some()).finish_non_exhaustive()
    }
}

impl<B: Backend> fmt::Debug for Batch<'_, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Batch").field("sample", &self.sample).field("batch_size", &self.batch_size).finish_non_exhaustive()
    }
}

impl<B: LowpBackend<H>, H: Half> fmt::Debug for LowpBatch<'_, B, H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LowpBatch").field("sample", &self.sample).field("batch_size", &self.batch_size).field("check_y", &self.check_y).finish_non_exhaustive()
    }
}

/// A layer's parameters and gradients as a step takes them: [`Params`]
/// (backend buffers) or [`ViewParams`] (views of the caller's storage).
/// Sealed: a step makes views of buffers first, so that its arithmetic
/// runs once, on views.
pub trait Weights<B: Backend>: sealed::Weights<B> {}

impl<B: Backend> Weights<B> for Params<'_, B> {}
impl<B: Backend> Weights<B> for ViewParams<'_, B> {}

/// The sampled rows of a batch as a step takes them: [`Batch`] (buffers in
/// the backend's scalar type), [`ViewBatch`] (views) or [`LowpBatch`]
/// (16-bit buffers, on a [`LowpBackend`]). Sealed, like [`Weights`]: a
/// [`Batch`] becomes a [`ViewBatch`] first.
pub trait Inputs<B: Backend>: sealed::Inputs<B> {}

impl<B: Backend> Inputs<B> for Batch<'_, B> {}
impl<B: LowpBackend<H>, H: Half> Inputs<B> for LowpBatch<'_, B, H> {}
impl<B: Backend> Inputs<B> for ViewBatch<'_, B> {}

/// Whether a FROG step runs the opt-in guard: [`Unguarded`] on any
/// backend, or a [`Guard`] on a [`GuardBackend`] (the guard's row check is
/// a kernel only those have, so a guarded step on another backend does not
/// compile rather than fail at run time). Sealed.
///
/// Any backend takes an unguarded step:
///
/// ```
/// use frog_core::{frog_step, Backend, Batch, Config, Error, Layer, ParamState, Params, Unguarded, Workspace};
/// fn step<B: Backend>(b: &B, cfg: &Config, layer: &Layer, state: &mut ParamState<B>, ws: &mut Workspace<B>, params: Params<'_, B>, batch: Batch<'_, B>) -> Result<(), Error<B::Error>> {
///     frog_step(b, cfg, layer, state, ws, params, batch, Unguarded)
/// }
/// ```
///
/// but only a [`GuardBackend`] a guarded one:
///
/// ```compile_fail,E0277
/// use frog_core::{frog_step, Backend, Batch, Config, Error, Guard, Layer, ParamState, Params, Workspace};
/// fn step<B: Backend>(b: &B, cfg: &Config, layer: &Layer, state: &mut ParamState<B>, ws: &mut Workspace<B>, params: Params<'_, B>, batch: Batch<'_, B>) -> Result<(), Error<B::Error>> {
///     frog_step(b, cfg, layer, state, ws, params, batch, Guard::default())
/// }
/// ```
pub trait StepGuard<B: Backend>: sealed::StepGuard<B> {}

/// The step without the guard: exactly the original's arithmetic, no
/// diagnostics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Unguarded;

impl<B: Backend> StepGuard<B> for Unguarded {}
impl<B: GuardBackend> StepGuard<B> for Guard {}
/// Guarded when `Some`: a run's guard setting, as
/// [`crate::Optimizer::set_guard`] takes it.
impl<B: GuardBackend> StepGuard<B> for Option<Guard> {}

/// The calls behind the public input traits. Public in a private module:
/// callers can name the public traits but neither implement them nor call
/// these (the kernels' contracts are the backends', not the caller's).
pub(crate) mod sealed {
    use super::*;

    /// How a step reads a layer's gradients and writes its parameters: the
    /// only calls of a step that differ between buffers and views.
    pub trait Weights<B: Backend> {
        /// The weight's (and the bias's) operands in a plain step.
        type Plain: crate::sgd::Operands<B>;
        /// Weight and bias as two plain parameters (a layer outside FROG groups).
        fn split(self) -> (Self::Plain, Option<Self::Plain>);
        /// Entries of the weight and its gradient, and of the bias and its
        /// gradient when given.
        fn lens(&self, backend: &B) -> ((usize, usize), Option<(usize, usize)>);
        /// Copies the gradients into `layer`'s joint `rows x cols` buffer
        /// `m` (weight columns `0..d`, the bias in column `d`).
        fn load_grad(&self, backend: &B, layer: &Layer, m: &mut B::Buffer) -> Result<(), B::Error>;
        /// `w_j = decay * w_j - lr * scale[j] * z_j` for the weight and the
        /// bias, `z` the joint `rows x cols` direction.
        fn apply(self, backend: &B, layer: &Layer, c: StepCoefs<B::Scalar>, scale: &B::Buffer, z: &B::Buffer) -> Result<(), B::Error>;
    }

    /// How a step reads its sampled rows: the only calls of a step that
    /// differ between inputs in the scalar type, in a 16-bit type and views.
    pub trait Inputs<B: Backend> {
        /// `(sample, batch_size)`.
        fn rows(&self) -> (usize, usize);
        /// Entries of `x` and of `y`.
        fn lens(&self, backend: &B) -> (usize, usize);
        /// The opt-in check of `y`, with `scratch` (at least one entry) to
        /// count in; nothing by default.
        fn check(&self, backend: &B, scratch: &mut B::Buffer) -> Result<(), Error<B::Error>> {
            let _ = (backend, scratch);
            Ok(())
        }
        /// Fills the patch scratch.
        fn pack(&self, backend: &B, layer: &Layer, packed: &mut B::Buffer) -> Result<(), B::Error>;
        /// [`Patches::x`]: the inputs in the scalar type, `None` for 16-bit ones.
        fn x(&self, backend: &B) -> Result<Option<B::View<'_>>, B::Error>;
        /// The patch norms.
        fn norms(&self, backend: &B, p: &Patches<'_, B>, norms: &mut B::Buffer) -> Result<(), B::Error> {
            backend.patch_sq_norms(p, norms)
        }
        /// Traces and Fisher weights from `y`.
        fn fisher_weights(&self, backend: &B, p: &Patches<'_, B>, norms: &B::Buffer, c: FisherCoefs<B::Scalar>, out: FisherOut<'_, B>) -> Result<(), B::Error>;
    }

    /// The guard of a step, with this backend's row check.
    pub trait StepGuard<B: Backend> {
        /// `None` for an unguarded step.
        fn row_guard(self) -> Option<(Guard, RowGuard<B>)>;
    }

    impl<B: Backend> StepGuard<B> for Unguarded {
        fn row_guard(self) -> Option<(Guard, RowGuard<B>)> {
            None
        }
    }

    impl<B: GuardBackend> StepGuard<B> for Guard {
        fn row_guard(self) -> Option<(Guard, RowGuard<B>)> {
            Some((self, B::row_guard))
        }
    }

    impl<B: GuardBackend> StepGuard<B> for Option<Guard> {
        fn row_guard(self) -> Option<(Guard, RowGuard<B>)> {
            self.and_then(<Guard as StepGuard<B>>::row_guard)
        }
    }
}

/// The bias column of the joint `rows x cols` block, after the `d` weight columns.
fn bias_at(d: usize, cols: usize) -> Strided {
    Strided { stride: cols, offset: d }
}

impl<'a, B: Backend> Params<'a, B> {
    /// The parameters and gradients as views of the whole buffers.
    fn views(self, backend: &B) -> Result<ViewParams<'a, B>, B::Error> {
        let bias = match self.bias {
            Some((b, gb)) => Some((whole_mut(backend, b)?, whole(backend, gb)?)),
            None => None,
        };
        Ok(ViewParams { weight: whole_mut(backend, self.weight)?, grad_weight: whole(backend, self.grad_weight)?, bias })
    }
}

/// Copies the gradients `gw` (and `gb`) into `layer`'s joint `rows x cols`
/// buffer `m`: weight columns `0..d`, the bias in column `d`.
fn load_grad<B: Backend>(backend: &B, layer: &Layer, gw: &B::View<'_>, gb: Option<&B::View<'_>>, m: &mut B::Buffer) -> Result<(), B::Error> {
    let (rows, d, cols) = (layer.rows(), layer.weight_cols(), layer.cols());
    backend.copy_strided(Shape::new(rows, d), gw, Strided::dense(d), m, Strided::dense(cols))?;
    match gb {
        Some(gb) => backend.copy_strided(Shape::new(rows, 1), gb, Strided::dense(1), m, bias_at(d, cols)),
        None => Ok(()),
    }
}

impl<'a, B: Backend> sealed::Weights<B> for Params<'a, B> {
    type Plain = ParamGrad<'a, B>;
    fn split(self) -> (Self::Plain, Option<Self::Plain>) {
        (ParamGrad { param: self.weight, grad: self.grad_weight }, self.bias.map(|(param, grad)| ParamGrad { param, grad }))
    }
    fn lens(&self, backend: &B) -> ((usize, usize), Option<(usize, usize)>) {
        let w = (backend.len(self.weight), backend.len(self.grad_weight));
        (w, self.bias.as_ref().map(|(b, gb)| (backend.len(b), backend.len(gb))))
    }
    fn load_grad(&self, backend: &B, layer: &Layer, m: &mut B::Buffer) -> Result<(), B::Error> {
        let gb = match &self.bias {
            Some((_, gb)) => Some(whole(backend, gb)?),
            None => None,
        };
        load_grad(backend, layer, &whole(backend, self.grad_weight)?, gb.as_ref(), m)
    }
    fn apply(self, backend: &B, layer: &Layer, c: StepCoefs<B::Scalar>, scale: &B::Buffer, z: &B::Buffer) -> Result<(), B::Error> {
        self.views(backend)?.apply(backend, layer, c, scale, z)
    }
}

impl<'a, B: Backend> sealed::Weights<B> for ViewParams<'a, B> {
    type Plain = ViewParamGrad<'a, B>;
    fn split(self) -> (Self::Plain, Option<Self::Plain>) {
        (ViewParamGrad { param: self.weight, grad: self.grad_weight }, self.bias.map(|(param, grad)| ViewParamGrad { param, grad }))
    }
    fn lens(&self, backend: &B) -> ((usize, usize), Option<(usize, usize)>) {
        let w = (backend.view_mut_len(&self.weight), backend.view_len(&self.grad_weight));
        (w, self.bias.as_ref().map(|(b, gb)| (backend.view_mut_len(b), backend.view_len(gb))))
    }
    fn load_grad(&self, backend: &B, layer: &Layer, m: &mut B::Buffer) -> Result<(), B::Error> {
        load_grad(backend, layer, &self.grad_weight, self.bias.as_ref().map(|(_, gb)| gb), m)
    }
    fn apply(mut self, backend: &B, layer: &Layer, c: StepCoefs<B::Scalar>, scale: &B::Buffer, z: &B::Buffer) -> Result<(), B::Error> {
        let (rows, d, cols) = (layer.rows(), layer.weight_cols(), layer.cols());
        backend.row_step(Shape::new(rows, d), &mut self.weight, c, scale, z, Strided::dense(cols))?;
        match &mut self.bias {
            Some((b, _)) => backend.row_step(Shape::new(rows, 1), b, c, scale, z, bias_at(d, cols)),
            None => Ok(()),
        }
    }
}

impl<'a, B: Backend> Batch<'a, B> {
    /// The inputs and output gradients as views of the whole buffers.
    fn views(&self, backend: &B) -> Result<ViewBatch<'a, B>, B::Error> {
        Ok(ViewBatch { x: whole(backend, self.x)?, y: whole(backend, self.y)?, sample: self.sample, batch_size: self.batch_size })
    }
}

impl<B: Backend> sealed::Inputs<B> for Batch<'_, B> {
    fn rows(&self) -> (usize, usize) {
        (self.sample, self.batch_size)
    }
    fn lens(&self, backend: &B) -> (usize, usize) {
        (backend.len(self.x), backend.len(self.y))
    }
    fn pack(&self, backend: &B, layer: &Layer, packed: &mut B::Buffer) -> Result<(), B::Error> {
        self.views(backend)?.pack(backend, layer, packed)
    }
    fn x(&self, backend: &B) -> Result<Option<B::View<'_>>, B::Error> {
        whole(backend, self.x).map(Some)
    }
    fn fisher_weights(&self, backend: &B, p: &Patches<'_, B>, norms: &B::Buffer, c: FisherCoefs<B::Scalar>, out: FisherOut<'_, B>) -> Result<(), B::Error> {
        self.views(backend)?.fisher_weights(backend, p, norms, c, out)
    }
}

impl<B: LowpBackend<H>, H: Half> sealed::Inputs<B> for LowpBatch<'_, B, H> {
    fn rows(&self) -> (usize, usize) {
        (self.sample, self.batch_size)
    }
    fn lens(&self, backend: &B) -> (usize, usize) {
        (backend.lowp_len(self.x), backend.lowp_len(self.y))
    }
    fn check(&self, backend: &B, scratch: &mut B::Buffer) -> Result<(), Error<B::Error>> {
        if !self.check_y {
            return Ok(());
        }
        let mut count = [B::Scalar::ZERO];
        backend.count_nonfinite_lowp(backend.lowp_len(self.y), self.y, scratch).map_err(Error::Backend)?;
        backend.read(scratch, 0, &mut count).map_err(Error::Backend)?;
        match count[0].as_f64() {
            0.0 => Ok(()),
            n => Err(Error::NonFiniteInput { what: "y", entries: n as usize }),
        }
    }
    fn pack(&self, backend: &B, layer: &Layer, packed: &mut B::Buffer) -> Result<(), B::Error> {
        backend.pack_patches_lowp(layer, self.sample, self.x, packed)
    }
    fn x(&self, _: &B) -> Result<Option<B::View<'_>>, B::Error> {
        Ok(None)
    }
    fn norms(&self, backend: &B, p: &Patches<'_, B>, norms: &mut B::Buffer) -> Result<(), B::Error> {
        backend.patch_sq_norms_lowp(p, self.x, norms)
    }
    fn fisher_weights(&self, backend: &B, p: &Patches<'_, B>, norms: &B::Buffer, c: FisherCoefs<B::Scalar>, out: FisherOut<'_, B>) -> Result<(), B::Error> {
        backend.fisher_weights_lowp(p, self.y, norms, c, out)
    }
}

impl<B: Backend> sealed::Inputs<B> for ViewBatch<'_, B> {
    fn rows(&self) -> (usize, usize) {
        (self.sample, self.batch_size)
    }
    fn lens(&self, backend: &B) -> (usize, usize) {
        (backend.view_len(&self.x), backend.view_len(&self.y))
    }
    fn pack(&self, backend: &B, layer: &Layer, packed: &mut B::Buffer) -> Result<(), B::Error> {
        backend.pack_patches(layer, self.sample, &self.x, packed)
    }
    fn x(&self, backend: &B) -> Result<Option<B::View<'_>>, B::Error> {
        Ok(Some(backend.reborrow_view(&self.x)))
    }
    fn fisher_weights(&self, backend: &B, p: &Patches<'_, B>, norms: &B::Buffer, c: FisherCoefs<B::Scalar>, out: FisherOut<'_, B>) -> Result<(), B::Error> {
        backend.fisher_weights(p, &self.y, norms, c, out)
    }
}
