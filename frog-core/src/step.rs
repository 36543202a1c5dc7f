//! One FROG step of a preconditioned layer, exactly as the original:
//! momentum, Fisher weights, batched CG, row scale, decoupled decay.

use core::fmt;

use crate::backend::{axpby_buffers, copy_buffers, whole, whole_mut, Backend, CgBuffers, FisherCoefs, FisherOut, Patches, Shape, StepCoefs, Strided};
use crate::config::Config;
use crate::error::{Error, ShapeError};
use crate::guard::{Guard, GuardBackend, RowGuardOut, DIAG_FLAGS, DIAG_RHO0, DIAG_RHOK, DIAG_ROW_SCALE, DIAG_TRACE};
use crate::layer::Layer;
use crate::lowp::{Half, LowpBackend};
use crate::scalar::Scalar;
use crate::sgd::{ParamGrad, ViewParamGrad};
use crate::state::{ParamState, StateError};
use crate::view::{ViewBatch, ViewParams};
use crate::workspace::{Workspace, WorkspaceReq};

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

pub(crate) fn check_len<B: Backend>(backend: &B, buf: &B::Buffer, what: &'static str, expected: usize) -> Result<(), ShapeError> {
    check_count(backend.len(buf), what, expected)
}

/// `actual == expected`, or an error naming the buffer.
pub(crate) fn check_count(actual: usize, what: &'static str, expected: usize) -> Result<(), ShapeError> {
    if actual == expected {
        Ok(())
    } else {
        Err(ShapeError::BufferLength { what, expected, actual })
    }
}

/// `a * b`, or an error naming the product when it overflows `usize`.
pub(crate) fn mul(a: usize, b: usize, what: &'static str) -> Result<usize, ShapeError> {
    a.checked_mul(b).ok_or(ShapeError::TooLarge { what })
}

/// Checks every shape of a step before any kernel runs.
fn check_shapes<B: Backend>(
    backend: &B,
    layer: &Layer,
    state: &ParamState<B>,
    ws: &Workspace<B>,
    params: &impl sealed::Weights<B>,
    batch: &impl sealed::Inputs<B>,
) -> Result<(), ShapeError> {
    layer.validate()?;
    let (sample, batch_size) = batch.rows();
    if sample == 0 || batch_size == 0 {
        return Err(ShapeError::EmptySample);
    }
    if sample > batch_size {
        return Err(ShapeError::SampleExceedsBatch { sample, batch: batch_size });
    }
    let (rows, d) = (layer.rows(), layer.weight_cols());
    let ((w, gw), bias) = params.lens(backend);
    check_count(w, "weight", rows * d)?;
    check_count(gw, "grad_weight", rows * d)?;
    match (bias, layer.bias) {
        (Some((b, gb)), true) => {
            check_count(b, "bias", rows)?;
            check_count(gb, "grad_bias", rows)?;
        }
        (None, false) => {}
        _ => return Err(ShapeError::BiasMismatch),
    }
    let (x_len, y_len) = batch.lens(backend);
    check_count(x_len, "x", mul(sample, layer.input_len(), "x (sample * input entries)")?)?;
    check_count(y_len, "y", mul(sample, layer.output_len(), "y (sample * output entries)")?)?;
    state.check_len(rows * layer.cols())?;
    ws.req.covers(&WorkspaceReq::new(backend, layer, sample)?)
}

/// What a step needs besides its buffers, computed and checked up front.
struct Plan<S> {
    step: u64,
    tau: S,
    eps: S,
    scale: S,
}

/// Runs every check of a step, in the order a bad call should hear of
/// them, and touches nothing.
fn plan<B: Backend>(
    backend: &B,
    cfg: &Config,
    layer: &Layer,
    state: &ParamState<B>,
    ws: &Workspace<B>,
    params: &impl sealed::Weights<B>,
    batch: &impl sealed::Inputs<B>,
) -> Result<Plan<B::Scalar>, Error<B::Error>> {
    cfg.validate_for::<B::Scalar>()?;
    check_shapes(backend, layer, state, ws, params, batch)?;
    state.check_momentum("momentum", cfg.momentum)?;
    let step = state.next_step()?;
    let s = B::Scalar::of_f64;
    let (sample, batch_size) = batch.rows();
    let scale = s(cfg.fisher_scale(batch_size, sample));
    if !scale.as_f64().is_finite() {
        return Err(ShapeError::TooLarge { what: "the Fisher scale batch_size^2 / sample in this scalar type" }.into());
    }
    Ok(Plan { step, tau: s(cfg.tau_at(step)), eps: s(cfg.denom_eps), scale })
}

/// One FROG step of a preconditioned layer: updates `params` in place and
/// leaves the trace, direction and row scale in `ws`. The one entry point
/// of every FROG step: `params` are [`Params`] or [`ViewParams`], `batch`
/// is a [`Batch`], [`LowpBatch`] or [`ViewBatch`], and `guard` is
/// [`Unguarded`], a [`Guard`] or an `Option<Guard>`; each combination
/// needs only the extension traits its parts need, and the arithmetic is
/// the same for all.
///
/// Never allocates and never reads back to the host: every per-row scalar
/// stays in a backend buffer.
///
/// Rejects, before any kernel runs and so changing nothing (the step count
/// included): a config that [`Config::validate_for`] rejects in the
/// backend's scalar type; a layer that [`Layer::validate`] rejects; an empty
/// sample, or one larger than the batch; a buffer of the wrong length (or
/// whose length overflows `usize`); a workspace too small for the layer; a
/// state of another size, whose momentum buffer does not match `momentum >
/// 0`, or whose step count is exhausted; with a [`Guard`], a state made
/// without diagnostics. A backend error in the middle of a step leaves the
/// step count advanced, and the momentum buffer and parameters possibly
/// updated: restore a checkpoint (or treat the layer's state as lost)
/// after one.
///
/// Finite inputs give finite results: a row of the gradient whose largest
/// entry is so large that its squares could overflow is first scaled by a
/// power of two ([`Backend::row_rescale`]), and backends do the same for
/// the output gradients in [`Backend::fisher_weights`]. Both are exact and
/// FROG's direction does not depend on them, except through `denom_eps`: on
/// a row scaled by `c`, the step is that of `eps / c^2` in the row scale.
/// Rows below that size take exactly the original's arithmetic.
///
/// ## The guard
///
/// With a [`Guard`] the step records its per-row diagnostics in `state`
/// (made with [`ParamState::with_diagnostics`], read with
/// [`ParamState::diagnostics`]) and replaces the rows `guard` names by the
/// normalized momentum step. With both of `guard`'s options off the update
/// is the original's.
///
/// ## 16-bit inputs
///
/// A [`LowpBatch`] holds the sampled inputs and output gradients in the
/// 16-bit type `H` (bf16 or f16, as autocast produces them): the same step,
/// in the backend's scalar type from the patches on, with the same checks,
/// plus the opt-in overflow check of `y` ([`LowpBatch::check_y`]), which
/// runs after them and before anything changes. `y` may stay multiplied by
/// a loss scale (the direction is invariant to it up to `denom_eps`); the
/// gradients in `params` must be unscaled (see [`crate::LowpBackend`]).
///
/// ## Views
///
/// [`ViewParams`] and [`ViewBatch`] are views of the caller's parameters,
/// gradients, sampled inputs and output gradients (see [`Backend::View`]):
/// the same checks, the same arithmetic, no copy of them into backend
/// buffers. A step on [`Params`] and [`Batch`] makes views of their
/// buffers first and runs the same kernels.
// The one public step: each of its parts is a distinct type (a swap does not
// compile), and callers name all of them at every step.
#[allow(clippy::too_many_arguments)]
pub fn frog_step<B: Backend>(
    backend: &B,
    cfg: &Config,
    layer: &Layer,
    state: &mut ParamState<B>,
    ws: &mut Workspace<B>,
    params: impl Weights<B>,
    batch: impl Inputs<B>,
    guard: impl StepGuard<B>,
) -> Result<(), Error<B::Error>> {
    step_guarded(backend, LayerStep { cfg, layer, state, ws }, params, &batch, guard.row_guard())
}

/// What a preconditioned layer's step works on besides its inputs: the
/// settings, the layer, its state and the workspace.
pub(crate) struct LayerStep<'s, B: Backend> {
    pub(crate) cfg: &'s Config,
    pub(crate) layer: &'s Layer,
    pub(crate) state: &'s mut ParamState<B>,
    pub(crate) ws: &'s mut Workspace<B>,
}

/// Every check, then the step: the one path of every public step.
fn step_with<B: Backend>(backend: &B, step: LayerStep<'_, B>, params: impl sealed::Weights<B>, batch: &impl sealed::Inputs<B>, check: Option<RowCheck<'_, B>>) -> Result<(), Error<B::Error>> {
    let LayerStep { cfg, layer, state, ws } = step;
    let plan = plan(backend, cfg, layer, state, ws, &params, batch)?;
    if check.is_some() && state.diag.is_none() {
        return Err(StateError::NoDiagnostics.into());
    }
    batch.check(backend, &mut ws.coef)?;
    run_step(backend, LayerStep { cfg, layer, state, ws }, params, batch, &plan, check).map_err(Error::Backend)
}

/// A backend's [`GuardBackend::row_guard`], kept where the bound is not.
pub(crate) type RowGuard<B> = fn(&B, Shape, Guard, &<B as Backend>::Buffer, &<B as Backend>::Buffer, RowGuardOut<'_, B>) -> Result<(), <B as Backend>::Error>;

/// A step, guarded when `guard` is given: what [`frog_step`] and the
/// optimizer object run (the latter holds the guard's row check once
/// [`crate::Optimizer::set_guard`] saw the [`GuardBackend`] bound).
pub(crate) fn step_guarded<B: Backend>(
    backend: &B,
    step: LayerStep<'_, B>,
    params: impl sealed::Weights<B>,
    batch: &impl sealed::Inputs<B>,
    guard: Option<(Guard, RowGuard<B>)>,
) -> Result<(), Error<B::Error>> {
    let Some((guard, row_guard)) = guard else { return step_with(backend, step, params, batch, None) };
    let shape = Shape::new(step.layer.rows(), step.layer.cols());
    let check = |ws: &mut Workspace<B>| row_guard(backend, shape, guard, &ws.m, &ws.trace, RowGuardOut { z: &mut ws.z, row_scale: &mut ws.row_scale, flags: &mut ws.flags });
    step_with(backend, step, params, batch, Some(&check))
}

/// The guard's check of a step's rows, run after the row scale.
type RowCheck<'a, B> = &'a dyn Fn(&mut Workspace<B>) -> Result<(), <B as Backend>::Error>;

/// Copies the first `rows` entries of `src` into part `part` of a state's
/// diagnostics buffer.
fn record<B: Backend>(backend: &B, rows: usize, src: &B::Buffer, diag: &mut B::Buffer, part: usize) -> Result<(), B::Error> {
    copy_buffers(backend, Shape::new(1, rows), src, Strided::dense(rows), diag, Strided { stride: rows, offset: part * rows })
}

fn run_step<B: Backend>(
    backend: &B,
    step: LayerStep<'_, B>,
    params: impl sealed::Weights<B>,
    batch: &impl sealed::Inputs<B>,
    plan: &Plan<B::Scalar>,
    check: Option<RowCheck<'_, B>>,
) -> Result<(), B::Error> {
    let LayerStep { cfg, layer, state, ws } = step;
    let s = B::Scalar::of_f64;
    let (rows, cols) = (layer.rows(), layer.cols());
    let n = rows * cols;
    let (eps, tau) = (plan.eps, plan.tau);
    state.steps = plan.step;

    // 1. Momentum on the joint [W | b] gradient M.
    params.load_grad(backend, layer, &mut ws.m)?;
    if let Some(buf) = &mut state.momentum {
        let beta = s(cfg.momentum);
        axpby_buffers(backend, n, B::Scalar::ONE, &ws.m, beta, buf)?;
        if cfg.nesterov {
            axpby_buffers(backend, n, beta, buf, B::Scalar::ONE, &mut ws.m)?;
        } else {
            backend.copy(n, buf, &mut ws.m)?;
        }
    }
    // Rows too large for their squares are scaled by a power of two; the
    // direction is invariant to it (up to eps).
    backend.row_rescale(Shape::new(rows, cols), &mut ws.m)?;

    // 2-4. Patches, traces and Fisher weights.
    batch.pack(backend, layer, &mut ws.packed)?;
    {
        let p = Patches { layer, r: batch.rows().0, x: batch.x(backend)?, packed: &ws.packed, scratch: &mut ws.scratch };
        batch.norms(backend, &p, &mut ws.norms)?;
        let out = FisherOut { trace: &mut ws.trace, lambda: &mut ws.lambda };
        batch.fisher_weights(backend, &p, &ws.norms, FisherCoefs { scale: plan.scale, eps }, out)?;
    }

    // 5-6. Batched CG from zero, exactly num_iters iterations.
    cg_start(backend, Shape::new(rows, cols), ws)?;
    if let (Some(_), Some(diag)) = (check, &mut state.diag) {
        record(backend, rows, &ws.rho, diag, DIAG_RHO0)?;
    }
    let rho = cg_iterate(backend, (layer, batch.rows().0, batch.x(backend)?), CgRun { tau, eps, iters: cfg.num_iters }, ws)?;
    if let (Some(_), Some(diag)) = (check, &mut state.diag) {
        record(backend, rows, rho, diag, DIAG_RHOK)?;
    }

    // 7-8. Row scale (and the guard's check of it), decoupled decay, the step.
    backend.row_dots(Shape::new(rows, cols), &ws.z, &ws.m, &mut ws.zm)?;
    backend.row_rsqrt(rows, &ws.zm, eps, &mut ws.row_scale)?;
    if let (Some(check), Some(diag)) = (check, &mut state.diag) {
        check(ws)?;
        record(backend, rows, &ws.trace, diag, DIAG_TRACE)?;
        record(backend, rows, &ws.row_scale, diag, DIAG_ROW_SCALE)?;
        record(backend, rows, &ws.flags, diag, DIAG_FLAGS)?;
    }
    state.diag_written = check.is_some();
    let decay = if cfg.weight_decay > 0.0 { s(1.0 - cfg.lr * cfg.weight_decay) } else { B::Scalar::ONE };
    params.apply(backend, layer, StepCoefs { decay, lr: s(cfg.lr) }, &ws.row_scale, &ws.z)
}

/// Gathers the sampled rows of a full batch on the backend: row `k` of
/// `dst` becomes row `rows[k]` of `src` (rows of `row_len` entries, such as
/// a layer's [`Layer::input_len`] or [`Layer::output_len`]). One sample
/// serves every layer of a FROG step: gather each layer's input and output
/// gradient with the same [`crate::Optimizer::sample`].
///
/// `src` is a buffer (`&B::Buffer`) or a view of the caller's storage such
/// as a framework's activation tensor ([`ViewSource`]).
///
/// Rejects, before copying anything, an index past the rows of `src`, a
/// `dst` shorter than the rows gathered, and sizes that overflow `usize`.
pub fn gather_rows<B: Backend>(backend: &B, rows: &[usize], row_len: usize, src: impl GatherSource<B>, dst: &mut B::Buffer) -> Result<(), Error<B::Error>> {
    check_gather(backend, rows, row_len, src.len(backend), dst)?;
    src.copy_rows(backend, rows, row_len, dst).map_err(Error::Backend)
}

/// What [`gather_rows`] takes rows from: a buffer (`&B::Buffer`) or a
/// [`ViewSource`]. Sealed.
pub trait GatherSource<B: Backend>: sealed_gather::GatherSource<B> {}

impl<B: Backend> GatherSource<B> for &B::Buffer {}
impl<B: Backend> GatherSource<B> for ViewSource<'_, B> {}

/// A view of a full batch to gather rows from (see [`gather_rows`]): a
/// wrapper, as a view type and a buffer type of the same backend cannot be
/// told apart by the trait system.
pub struct ViewSource<'a, B: Backend + 'a>(pub B::View<'a>);

impl<'a, B: Backend + 'a> fmt::Debug for ViewSource<'a, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ViewSource").finish_non_exhaustive()
    }
}

/// The calls behind [`GatherSource`] (see [`sealed`]).
pub(crate) mod sealed_gather {
    use super::*;

    /// A gather's source.
    pub trait GatherSource<B: Backend> {
        /// Entries of the source.
        fn len(&self, backend: &B) -> usize;
        /// The copy, once the indices are checked.
        fn copy_rows(&self, backend: &B, rows: &[usize], row_len: usize, dst: &mut B::Buffer) -> Result<(), B::Error>;
    }

    impl<B: Backend> GatherSource<B> for &B::Buffer {
        fn len(&self, backend: &B) -> usize {
            backend.len(self)
        }
        fn copy_rows(&self, backend: &B, rows: &[usize], row_len: usize, dst: &mut B::Buffer) -> Result<(), B::Error> {
            ViewSource::<B>(whole(backend, self)?).copy_rows(backend, rows, row_len, dst)
        }
    }

    impl<B: Backend> GatherSource<B> for ViewSource<'_, B> {
        fn len(&self, backend: &B) -> usize {
            backend.view_len(&self.0)
        }
        fn copy_rows(&self, backend: &B, rows: &[usize], row_len: usize, dst: &mut B::Buffer) -> Result<(), B::Error> {
            backend.copy_rows(rows, row_len, &self.0, dst)
        }
    }
}

/// A gather's checks: every index within the `src_len / row_len` rows of
/// its source, and room in `dst` for the rows gathered.
fn check_gather<B: Backend>(backend: &B, rows: &[usize], row_len: usize, src_len: usize, dst: &B::Buffer) -> Result<(), ShapeError> {
    let src_rows = src_len / row_len.max(1);
    if let Some(&index) = rows.iter().find(|&&i| i >= src_rows) {
        return Err(ShapeError::IndexOutOfRange { what: "gathered row", index, len: src_rows });
    }
    let needed = mul(rows.len(), row_len, "gathered entries (rows * row length)")?;
    if backend.len(dst) < needed {
        return Err(ShapeError::BufferLength { what: "gather destination", expected: needed, actual: backend.len(dst) });
    }
    Ok(())
}

/// A batched CG solve's damping `tau`, denominators' `eps` and iterations.
pub(crate) struct CgRun<S> {
    pub(crate) tau: S,
    pub(crate) eps: S,
    pub(crate) iters: usize,
}

/// Starts batched CG from zero on the right-hand side in `ws.m`: `Z = 0`,
/// `Rs = Pd = M`, `rho = <M, M>` per row (FROG's and K-FROG's solves).
pub(crate) fn cg_start<B: Backend>(backend: &B, shape: Shape, ws: &mut Workspace<B>) -> Result<(), B::Error> {
    let n = shape.rows * shape.cols;
    axpby_buffers(backend, n, B::Scalar::ZERO, &ws.m, B::Scalar::ZERO, &mut ws.z)?;
    backend.copy(n, &ws.m, &mut ws.rs)?;
    backend.copy(n, &ws.m, &mut ws.pd)?;
    backend.row_dots(shape, &ws.m, &ws.m, &mut ws.rho)
}

/// `iters` CG iterations against the Fisher weights in `ws.lambda` over the
/// patches `pack_patches` left in `ws.packed`; returns the final `<Rs,Rs>`
/// per row (in `ws.rho` or `ws.rho_next`, as the iterations swapped them).
pub(crate) fn cg_iterate<'w, B: Backend>(backend: &B, (layer, r, x): (&'w Layer, usize, Option<B::View<'w>>), run: CgRun<B::Scalar>, ws: &'w mut Workspace<B>) -> Result<&'w B::Buffer, B::Error> {
    let mut p = Patches { layer, r, x, packed: &ws.packed, scratch: &mut ws.scratch };
    let mut cg = CgBuffers {
        z: &mut ws.z,
        rs: &mut ws.rs,
        pd: &mut ws.pd,
        ap: &mut ws.ap,
        u: &mut ws.u,
        rho: &mut ws.rho,
        rho_next: &mut ws.rho_next,
        pap: &mut ws.pap,
        coef: &mut ws.coef,
    };
    backend.cg_solve(&mut p, &ws.lambda, run.tau, run.eps, run.iters, &mut cg)?;
    Ok(cg.rho)
}
