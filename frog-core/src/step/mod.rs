//! One FROG step of a preconditioned layer, exactly as the original:
//! momentum, Fisher weights, batched CG, row scale, decoupled decay.
//!
//! The step itself is here; its input kinds and sealed traits are in
//! `inputs`, its checks in `check`, the batched CG it shares with K-FROG in
//! `cg`, and [`gather_rows`] in `gather`.

mod cg;
pub(crate) mod check;
mod gather;
mod inputs;

pub(crate) use cg::{cg_iterate, cg_start, CgRun};
pub(crate) use check::{check_count, check_len, mul};
pub use gather::{gather_rows, GatherSource, ViewSource};
pub(crate) use inputs::sealed;
pub use inputs::{Batch, Inputs, LowpBatch, Params, StepGuard, Unguarded, Weights};

use check::{plan, Plan};
use crate::backend::{axpby_buffers, copy_buffers, Backend, FisherCoefs, FisherOut, Patches, Shape, StepCoefs, Strided};
use crate::config::Config;
use crate::error::Error;
use crate::guard::{Guard, RowGuardOut, DIAG_FLAGS, DIAG_RHO0, DIAG_RHOK, DIAG_ROW_SCALE, DIAG_TRACE};
use crate::layer::Layer;
use crate::scalar::Scalar;
use crate::state::{ParamState, StateError};
use crate::workspace::Workspace;

/// One FROG step of a preconditioned layer: updates `params` in place and
/// leaves the trace, direction and row scale in `ws`. The one entry point
/// of every FROG step: `params` are [`Params`] or [`ViewParams`](crate::ViewParams), `batch`
/// is a [`Batch`], [`LowpBatch`] or [`ViewBatch`](crate::ViewBatch), and `guard` is
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
/// [`ViewParams`](crate::ViewParams) and [`ViewBatch`](crate::ViewBatch) are views of the caller's parameters,
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

/// A backend's [`GuardBackend::row_guard`](crate::GuardBackend::row_guard), kept where the bound is not.
pub(crate) type RowGuard<B> = fn(&B, Shape, Guard, &<B as Backend>::Buffer, &<B as Backend>::Buffer, RowGuardOut<'_, B>) -> Result<(), <B as Backend>::Error>;

/// A step, guarded when `guard` is given: what [`frog_step`] and the
/// optimizer object run (the latter holds the guard's row check once
/// [`crate::Optimizer::set_guard`] saw the [`GuardBackend`](crate::GuardBackend) bound).
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
