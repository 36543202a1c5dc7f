//! The checks of a FROG step, run before any kernel so that a bad call
//! changes nothing, and the length checks every step of the crate shares.

use super::sealed;
use crate::backend::Backend;
use crate::config::Config;
use crate::error::{Error, ShapeError};
use crate::layer::Layer;
use crate::scalar::Scalar;
use crate::state::ParamState;
use crate::workspace::{Workspace, WorkspaceReq};

/// `buf` holds `expected` entries, or an error naming it.
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
pub(super) struct Plan<S> {
    pub(super) step: u64,
    pub(super) tau: S,
    pub(super) eps: S,
    pub(super) scale: S,
}

/// Runs every check of a step, in the order a bad call should hear of
/// them, and touches nothing.
pub(super) fn plan<B: Backend>(
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
