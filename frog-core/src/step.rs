//! One FROG step of a preconditioned layer, exactly as the original:
//! momentum, Fisher weights, batched CG, row scale, decoupled decay.

use crate::backend::{Backend, CgBuffers, Patches, Strided};
use crate::config::Config;
use crate::error::{Error, ShapeError};
use crate::layer::Layer;
use crate::scalar::Scalar;
use crate::state::ParamState;
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

fn check_len<B: Backend>(backend: &B, buf: &B::Buffer, what: &'static str, expected: usize) -> Result<(), ShapeError> {
    let actual = backend.len(buf);
    if actual == expected {
        Ok(())
    } else {
        Err(ShapeError::BufferLength { what, expected, actual })
    }
}

/// Checks every shape of a step before any kernel runs.
fn check_shapes<B: Backend>(
    backend: &B,
    layer: &Layer,
    state: &ParamState<B>,
    ws: &Workspace<B>,
    params: &Params<'_, B>,
    batch: &Batch<'_, B>,
) -> Result<(), ShapeError> {
    layer.validate()?;
    if batch.sample == 0 || batch.batch_size == 0 {
        return Err(ShapeError::EmptySample);
    }
    if batch.sample > batch.batch_size {
        return Err(ShapeError::SampleExceedsBatch { sample: batch.sample, batch: batch.batch_size });
    }
    let (rows, d) = (layer.rows(), layer.weight_cols());
    check_len(backend, params.weight, "weight", rows * d)?;
    check_len(backend, params.grad_weight, "grad_weight", rows * d)?;
    match (&params.bias, layer.bias) {
        (Some((b, gb)), true) => {
            check_len(backend, b, "bias", rows)?;
            check_len(backend, gb, "grad_bias", rows)?;
        }
        (None, false) => {}
        _ => return Err(ShapeError::BiasMismatch),
    }
    check_len(backend, batch.x, "x", batch.sample * layer.input_len())?;
    check_len(backend, batch.y, "y", batch.sample * layer.output_len())?;
    state.check_len(rows * layer.cols())?;
    ws.req.covers(&WorkspaceReq::new(backend, layer, batch.sample))
}

/// One FROG step of a preconditioned layer: updates `params` in place and
/// leaves the trace, direction and row scale in `ws`.
///
/// Never allocates and never reads back to the host: every per-row scalar
/// stays in a backend buffer. Shapes, lengths and the config are checked
/// first, so a bad call changes nothing.
pub fn precondition_step<B: Backend>(
    backend: &B,
    cfg: &Config,
    layer: &Layer,
    state: &mut ParamState<B>,
    ws: &mut Workspace<B>,
    params: Params<'_, B>,
    batch: Batch<'_, B>,
) -> Result<(), Error<B::Error>> {
    cfg.validate()?;
    check_shapes(backend, layer, state, ws, &params, &batch)?;
    run_step(backend, cfg, layer, state, ws, params, batch).map_err(Error::Backend)
}

fn run_step<B: Backend>(
    backend: &B,
    cfg: &Config,
    layer: &Layer,
    state: &mut ParamState<B>,
    ws: &mut Workspace<B>,
    params: Params<'_, B>,
    batch: Batch<'_, B>,
) -> Result<(), B::Error> {
    let s = B::Scalar::from_f64;
    let (rows, d, cols) = (layer.rows(), layer.weight_cols(), layer.cols());
    let n = rows * cols;
    let eps = s(cfg.denom_eps);
    state.steps += 1;
    let tau = s(cfg.tau_at(state.steps));

    // 1. Momentum on the joint [W | b] gradient M.
    backend.copy_strided(rows, d, params.grad_weight, Strided::dense(d), &mut ws.m, Strided::dense(cols))?;
    if let Some((_, gb)) = &params.bias {
        backend.copy_strided(rows, 1, gb, Strided::dense(1), &mut ws.m, Strided { stride: cols, offset: d })?;
    }
    if let Some(buf) = &mut state.momentum {
        let beta = s(cfg.momentum);
        backend.axpby(n, B::Scalar::ONE, &ws.m, beta, buf)?;
        if cfg.nesterov {
            backend.axpby(n, beta, buf, B::Scalar::ONE, &mut ws.m)?;
        } else {
            backend.copy(n, buf, &mut ws.m)?;
        }
    }

    // 2-4. Patches, traces and Fisher weights.
    backend.pack_patches(layer, batch.sample, batch.x, &mut ws.packed)?;
    let p = Patches { layer, r: batch.sample, x: batch.x, packed: &ws.packed };
    backend.patch_sq_norms(&p, &mut ws.norms)?;
    let scale = s(cfg.fisher_scale(batch.batch_size, batch.sample));
    backend.fisher_weights(&p, batch.y, &ws.norms, scale, eps, &mut ws.trace, &mut ws.lambda)?;

    // 5-6. Batched CG from zero, exactly num_iters iterations.
    backend.axpby(n, B::Scalar::ZERO, &ws.m, B::Scalar::ZERO, &mut ws.z)?;
    backend.copy(n, &ws.m, &mut ws.rs)?;
    backend.copy(n, &ws.m, &mut ws.pd)?;
    backend.row_dots(rows, cols, &ws.m, &ws.m, &mut ws.rho)?;
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
    for _ in 0..cfg.num_iters {
        backend.cg_iteration(&p, &ws.lambda, tau, eps, &mut cg)?;
    }

    // 7-8. Row scale, decoupled decay, the step.
    backend.row_dots(rows, cols, &ws.z, &ws.m, &mut ws.zm)?;
    backend.row_rsqrt(rows, &ws.zm, eps, &mut ws.row_scale)?;
    let decay = if cfg.weight_decay > 0.0 { s(1.0 - cfg.lr * cfg.weight_decay) } else { B::Scalar::ONE };
    let lr = s(cfg.lr);
    backend.row_step(rows, d, params.weight, decay, lr, &ws.row_scale, &ws.z, Strided::dense(cols))?;
    if let Some((b, _)) = params.bias {
        backend.row_step(rows, 1, b, decay, lr, &ws.row_scale, &ws.z, Strided { stride: cols, offset: d })?;
    }
    Ok(())
}
