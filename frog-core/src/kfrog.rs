//! K-FROG, the original author's Kronecker-factored variant of FROG (the
//! original's `kfrog.py`): the output side scaled by `1/sqrt(diag(Y^T Y) +
//! eps)`, a CG solve against the activation covariance `X^T X / Bx + eps I`
//! shared by every row, and the input side scaled back by the patches' RMS.
//! The exact rule, the original's quirks included, is the one the golden
//! cases in `frog-cpu/golden/baselines/` pin down, step by step below.
//!
//! Unlike FROG, the output side is not invariant to the scale of `y`: hand
//! K-FROG unscaled output gradients (divide a loss scale out first).

use core::fmt;

use crate::backend::{axpby_buffers, copy_buffers, whole, Backend, Patches, Shape, Strided};
use crate::config::{momentum_ok, non_negative, num_iters_ok, representable, sgd_bound, update_bound_ok, ConfigError, NonExhaustive};
use crate::error::{Error, ShapeError};
use crate::layer::Layer;
use crate::scalar::Scalar;
use crate::state::{check_non_negative, Header, ParamState, StateError};
use crate::step::{cg_iterate, cg_start, mul, CgRun};
use crate::workspace::{Workspace, WorkspaceReq};

/// The CG's denominator epsilon, a constant of the original (not one of
/// its settings).
pub const KFROG_CG_DENOM_EPS: f64 = 1e-10;

/// K-FROG's settings; the defaults are the original's. Write them as
/// `KfrogConfig { lr: 0.1, ..Default::default() }` (see [`NonExhaustive`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct KfrogConfig {
    /// Learning rate (every parameter; there is no separate rate).
    pub lr: f64,
    /// Momentum of the gradient (and of the plain parameters' SGD).
    pub momentum: f64,
    /// Nesterov momentum.
    pub nesterov: bool,
    /// Running-average decay of `diag(Y^T Y)`, bias-corrected (0: none).
    pub y_momentum: f64,
    /// Damping of both sides.
    pub eps: f64,
    /// CG iterations.
    pub num_iters: usize,
    /// Sampled inputs `Bx` (`None`: the whole batch).
    pub sample_size: Option<usize>,
    /// Sampled output gradients, drawn independently of the inputs
    /// (`None`: the whole batch).
    pub y_sample_size: Option<usize>,
    /// The loss is a mean over the batch.
    pub batch_averaged: bool,
    /// Keeps settings addable (see [`NonExhaustive`]).
    pub non_exhaustive: NonExhaustive,
}

impl Default for KfrogConfig {
    fn default() -> Self {
        Self { lr: 1e-3, momentum: 0.0, nesterov: false, y_momentum: 0.0, eps: 1e-6, num_iters: 4, sample_size: Some(256), y_sample_size: None, batch_averaged: true, non_exhaustive: NonExhaustive(()) }
    }
}

impl KfrogConfig {
    /// Checks every setting: `lr >= 0`, `momentum` in `[0, 1]`, Nesterov
    /// only with momentum, `y_momentum` in `[0, 1)` (its bias correction
    /// divides by `1 - y_momentum^t`), `eps > 0` (it keeps both sides'
    /// square roots and the CG away from 0), `num_iters` in
    /// `1..=`[`crate::MAX_NUM_ITERS`], and sample sizes of at least 1.
    pub fn validate(&self) -> Result<(), ConfigError> {
        momentum_ok(self.lr, self.momentum, self.nesterov)?;
        if !(non_negative(self.y_momentum) && self.y_momentum < 1.0) {
            return Err(ConfigError::Beta { which: "y_momentum", value: self.y_momentum });
        }
        if !(self.eps.is_finite() && self.eps > 0.0) {
            return Err(ConfigError::Eps(self.eps));
        }
        num_iters_ok(self.num_iters)?;
        if self.sample_size == Some(0) || self.y_sample_size == Some(0) {
            return Err(ConfigError::SampleSizeZero);
        }
        Ok(())
    }

    /// [`KfrogConfig::validate`], that every setting stays finite (and
    /// nonzero where it is nonzero) in the scalar type `S`, and that the
    /// bound on one update entry, times [`crate::UPDATE_MARGIN`], does not
    /// overflow `S`.
    ///
    /// The bound: the left scaling `1/sqrt(y_eff + eps)` is at most
    /// `1/sqrt(eps)`; CG's iterates from zero never outgrow the solution of
    /// `(X^T X / Bx + eps I) z = P1`, whose norm is at most `|P1| / eps`;
    /// the column RMS is at most the largest `|x|`. So no entry of the step
    /// exceeds `lr / eps^1.5` per unit of the largest `|M|` times the
    /// largest `|x|`. The plain parameters' SGD has `torch.optim.SGD`'s
    /// bound ([`crate::SgdConfig::validate_for`]).
    pub fn validate_for<S: Scalar>(&self) -> Result<(), ConfigError> {
        self.validate()?;
        let settings = [("lr", self.lr), ("momentum", self.momentum), ("y_momentum", self.y_momentum), ("eps", self.eps), ("cg_denom_eps", KFROG_CG_DENOM_EPS)];
        settings.iter().try_for_each(|&(what, v)| representable::<S>(what, v))?;
        update_bound_ok::<S>("lr / eps^1.5", self.lr / (self.eps * libm::sqrt(self.eps)))?;
        update_bound_ok::<S>("lr / (1 - momentum)", sgd_bound(self.lr, self.momentum))
    }
}

/// The products K-FROG needs beside FROG's: sums of squares of the output
/// gradients per row and of the patches per column, and a fill. An
/// extension trait, so that backends without it keep compiling;
/// [`kfrog_step`] requires it.
pub trait KfrogBackend: Backend {
    /// `out[j] = min(scale * sum_{i,l} Y[i,j,l]^2, MAX)` over the `r`
    /// samples of `y` (PyTorch layout, as in [`Backend::fisher_weights`]),
    /// saturating at the scalar's largest finite value.
    fn y_sq_sums(&self, layer: &Layer, r: usize, y: &Self::Buffer, scale: Self::Scalar, out: &mut Self::Buffer) -> Result<(), Self::Error>;
    /// The running average of `diag(Y^T Y)` over `rows` entries:
    /// `avg[j] = min(fresh * y_diag[j] + keep * avg[j], MAX)` (in that
    /// order of operations, as [`Backend::axpby`]), saturating so that the
    /// state stays finite and restorable.
    fn y_average(&self, rows: usize, fresh: Self::Scalar, y_diag: &Self::Buffer, keep: Self::Scalar, avg: &mut Self::Buffer) -> Result<(), Self::Error>;
    /// `out[c] = sqrt(scale * sum_{i,l} P[i,l][c]^2)` for the `D'` columns
    /// of the patches (packed as [`Backend::pack_patches`] left them, its
    /// gain included).
    fn patch_col_norms(&self, p: &Patches<'_, Self>, scale: Self::Scalar, out: &mut Self::Buffer) -> Result<(), Self::Error>;
    /// `out[0] = c`, the power of two [`Backend::pack_patches`] scaled the
    /// step's patches by (1 when it did not scale them).
    fn patch_gain(&self, p: &Patches<'_, Self>, out: &mut Self::Buffer) -> Result<(), Self::Error>;
    /// `buf[..n] = value`.
    fn fill(&self, n: usize, value: Self::Scalar, buf: &mut Self::Buffer) -> Result<(), Self::Error>;
}

/// A K-FROG layer's state: the gradient's momentum buffer and step count,
/// and the running average of `diag(Y^T Y)` (kept in a second
/// [`ParamState`] of `R` entries whose momentum buffer holds it).
pub struct KfrogState<B: Backend> {
    pub(crate) weight: ParamState<B>,
    pub(crate) y: ParamState<B>,
}

impl<B: Backend> fmt::Debug for KfrogState<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KfrogState").field("weight", &self.weight).field("y", &self.y).finish()
    }
}

impl<B: Backend> KfrogState<B> {
    /// Zero state for `layer` under `cfg`.
    pub fn new(backend: &B, layer: &Layer, cfg: &KfrogConfig) -> Result<Self, B::Error> {
        let weight = ParamState::new(backend, layer.rows().saturating_mul(layer.weight_cols()), cfg.momentum > 0.0)?;
        Ok(Self { weight, y: ParamState::new(backend, layer.rows(), cfg.y_momentum > 0.0)? })
    }

    /// Steps taken.
    pub fn steps(&self) -> u64 {
        self.weight.steps()
    }

    /// The gradient's momentum buffer (`R x D`), if any.
    pub fn momentum(&self) -> Option<&B::Buffer> {
        self.weight.momentum()
    }

    /// The running average of `diag(Y^T Y)` (`R`), with `y_momentum > 0`.
    pub fn y_average(&self) -> Option<&B::Buffer> {
        self.y.momentum()
    }

    /// Bytes [`KfrogState::export`] writes.
    pub fn export_len(&self) -> usize {
        self.weight.export_len() + self.y.export_len()
    }

    /// Writes both parts to `out` (at least [`KfrogState::export_len`]
    /// bytes) and returns the bytes written.
    pub fn export(&self, backend: &B, out: &mut [u8]) -> Result<usize, Error<B::Error>> {
        let needed = self.export_len();
        if out.len() < needed {
            return Err(ShapeError::BufferLength { what: "state bytes", expected: needed, actual: out.len() }.into());
        }
        let w = self.weight.export(backend, out)?;
        Ok(w + self.y.export(backend, &mut out[w..])?)
    }

    /// Restores bytes [`KfrogState::export`] wrote; every byte is checked
    /// first (a NaN or infinite entry, a negative y average, two step
    /// counts), so a rejected buffer changes nothing.
    pub fn restore(&mut self, backend: &B, bytes: &[u8]) -> Result<(), Error<B::Error>> {
        let steps = self.check_bytes(bytes)?;
        self.apply_bytes(backend, bytes, steps).map_err(Error::Backend)
    }

    pub(crate) fn check_bytes(&self, bytes: &[u8]) -> Result<u64, StateError> {
        let w = self.weight.export_len();
        let steps = self.weight.check_bytes(bytes)?;
        let tail = bytes.get(w..).ok_or(StateError::Truncated { needed: self.export_len(), actual: bytes.len() })?;
        let output = self.y.check_bytes_as(tail, "y_momentum")?;
        // The y average is a running mean of squares: a negative one has a
        // NaN square root in the next step.
        check_non_negative::<B::Scalar>(&tail[Header::BYTES..self.y.export_len()], "K-FROG y average", 0)?;
        if output != steps {
            return Err(StateError::StepCounts { weight: steps, output });
        }
        Ok(steps)
    }

    pub(crate) fn apply_bytes(&mut self, backend: &B, bytes: &[u8], steps: u64) -> Result<(), B::Error> {
        let w = self.weight.export_len();
        self.weight.apply_bytes(backend, bytes, steps)?;
        self.y.apply_bytes(backend, &bytes[w..], steps)
    }
}

/// The sampled rows of a K-FROG step: inputs and output gradients drawn
/// independently, possibly of different counts.
pub struct KfrogBatch<'a, B: Backend> {
    /// Sampled inputs, `x_sample * layer.input_len()` entries.
    pub x: &'a B::Buffer,
    /// Sampled inputs `Bx`.
    pub x_sample: usize,
    /// Sampled output gradients, `y_sample * layer.output_len()` entries.
    pub y: &'a B::Buffer,
    /// Sampled output gradients.
    pub y_sample: usize,
    /// Samples in the full batch.
    pub batch_size: usize,
}

/// The counts, not the buffers (they need not be `Debug`).
impl<B: Backend> fmt::Debug for KfrogBatch<'_, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &mut f.debug_struct("KfrogBatch");
        s.field("x_sample", &self.x_sample).field("y_sample", &self.y_sample).field("batch_size", &self.batch_size).finish_non_exhaustive()
    }
}

/// The last K-FROG step's intermediate results, in the workspace.
pub struct KfrogOutputs<'a, B: Backend> {
    /// `diag(Y^T Y)` scaled by `Bx` or `1/Bx` (`R`).
    pub y_diag: &'a B::Buffer,
    /// `M_j / sqrt(y_eff[j] + eps)` (`R x D`).
    pub left_scaled: &'a B::Buffer,
    /// The CG solution (`R x D`); `1/c` times the original's on inputs the
    /// backend scaled by `c` ([`KfrogBackend::patch_gain`]).
    pub cg_solution: &'a B::Buffer,
    /// The patches' column RMS (`D`); `c` times the original's on scaled
    /// inputs, so that the direction is the original's.
    pub x_scaling: &'a B::Buffer,
    /// The direction, `cg_solution * x_scaling` (`R x D`).
    pub direction: &'a B::Buffer,
}

/// Buffers only, which print as nothing (they need not be `Debug`).
impl<B: Backend> fmt::Debug for KfrogOutputs<'_, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KfrogOutputs").finish_non_exhaustive()
    }
}

impl<B: Backend> Workspace<B> {
    /// Where the last [`kfrog_step`] left its intermediate results.
    pub fn kfrog_outputs(&self) -> KfrogOutputs<'_, B> {
        KfrogOutputs { y_diag: &self.zm, left_scaled: &self.m, cg_solution: &self.z, x_scaling: &self.rs, direction: &self.pd }
    }
}

/// Every check of a K-FROG step (`(weight, grad)` its parameter and
/// gradient); the step number it takes.
fn check<B: Backend>(
    backend: &B,
    cfg: &KfrogConfig,
    layer: &Layer,
    state: &KfrogState<B>,
    ws: &Workspace<B>,
    (weight, grad): (&B::Buffer, &B::Buffer),
    batch: &KfrogBatch<'_, B>,
) -> Result<u64, Error<B::Error>> {
    cfg.validate_for::<B::Scalar>()?;
    layer.validate()?;
    if layer.bias {
        return Err(ShapeError::Unsupported { what: "a bias on a K-FROG layer (the original has none): step the bias as a plain parameter" }.into());
    }
    for (sample, what) in [(batch.x_sample, "x"), (batch.y_sample, "y")] {
        if sample == 0 || batch.batch_size == 0 {
            return Err(ShapeError::EmptySample.into());
        }
        if sample > batch.batch_size {
            return Err(ShapeError::SampleExceedsBatch { sample, batch: batch.batch_size }.into());
        }
        let per = if what == "x" { layer.input_len() } else { layer.output_len() };
        let expected = mul(sample, per, what)?;
        let actual = backend.len(if what == "x" { batch.x } else { batch.y });
        if actual != expected {
            return Err(ShapeError::BufferLength { what, expected, actual }.into());
        }
    }
    let n = layer.rows() * layer.weight_cols();
    for (what, buf) in [("weight", weight), ("grad_weight", grad)] {
        let actual = backend.len(buf);
        if actual != n {
            return Err(ShapeError::BufferLength { what, expected: n, actual }.into());
        }
    }
    state.weight.check_len(n)?;
    state.y.check_len(layer.rows())?;
    state.weight.check_momentum("momentum", cfg.momentum)?;
    state.y.check_momentum("y_momentum", cfg.y_momentum)?;
    ws.req.covers(&WorkspaceReq::new(backend, layer, batch.x_sample)?)?;
    Ok(state.weight.next_step()?)
}

/// One K-FROG step of a bias-free preconditioned layer (the original's
/// steps 1 to 8), in the FROG workspace of `layer` at `x_sample` rows;
/// the intermediate results stay there ([`Workspace::kfrog_outputs`]).
///
/// Unlike FROG's step it reads one scalar back from the backend, the gain
/// of its patches ([`KfrogBackend::patch_gain`]): sampled inputs so large
/// that `X^T X` could overflow are scaled by a power of two, and the damping
/// and Fisher weights follow it, so that the step stays the original's.
/// K-FROG's update grows with the inputs (see [`KfrogConfig::validate_for`]):
/// inputs for which its bound overflows the scalar are refused
/// ([`ConfigError::UpdateBound`]).
///
/// Rejects, before any kernel runs and so changing nothing: settings
/// [`KfrogConfig::validate_for`] rejects, a layer [`Layer::validate`]
/// rejects or one with a bias, empty or too large samples, buffers of the
/// wrong length, a workspace too small, a state of another size or
/// momentum setting, an exhausted step count, inputs too large for the
/// update bound (only the workspace's patch scratch has changed then).
// K-FROG's public entry point, as `frog_step`: each part a distinct type
// but `weight` and `grad`, which differ in mutability (a swap does not
// compile either).
#[allow(clippy::too_many_arguments)]
pub fn kfrog_step<B: KfrogBackend>(
    backend: &B,
    cfg: &KfrogConfig,
    layer: &Layer,
    state: &mut KfrogState<B>,
    ws: &mut Workspace<B>,
    weight: &mut B::Buffer,
    grad: &B::Buffer,
    batch: KfrogBatch<'_, B>,
) -> Result<(), Error<B::Error>> {
    let t = check(backend, cfg, layer, state, ws, (weight, grad), &batch)?;
    let gain = pack(backend, cfg, layer, ws, &batch)?;
    run(backend, (cfg, layer), state, ws, (weight, grad), batch, (t, gain)).map_err(Error::Backend)
}

/// Packs the sampled inputs and reads back the gain the backend scaled
/// them by ([`Backend::pack_patches`]); refuses, before anything but the
/// scratch changed, inputs so large that the step's bound (see
/// [`KfrogConfig::validate_for`]) with their largest `|x|`, below `1/c`,
/// overflows the scalar.
fn pack<B: KfrogBackend>(backend: &B, cfg: &KfrogConfig, layer: &Layer, ws: &mut Workspace<B>, batch: &KfrogBatch<'_, B>) -> Result<f64, Error<B::Error>> {
    let x = whole(backend, batch.x).map_err(Error::Backend)?;
    backend.pack_patches(layer, batch.x_sample, &x, &mut ws.packed).map_err(Error::Backend)?;
    let p = Patches { layer, r: batch.x_sample, x: Some(x), packed: &ws.packed, scratch: &mut ws.scratch };
    backend.patch_gain(&p, &mut ws.coef).map_err(Error::Backend)?;
    let mut gain = [B::Scalar::ONE];
    backend.read(&ws.coef, 0, &mut gain).map_err(Error::Backend)?;
    let c = gain[0].as_f64();
    if c < 1.0 {
        update_bound_ok::<B::Scalar>("lr / eps^1.5 * the sampled inputs' largest |x|", cfg.lr / (cfg.eps * libm::sqrt(cfg.eps)) / c)?;
        representable::<B::Scalar>("the Fisher weight 1 / (Bx * c) of these inputs", 1.0 / (batch.x_sample as f64 * c))?;
    }
    Ok(c)
}

/// The checked step: `t` its number, `c` the gain of its patches.
fn run<B: KfrogBackend>(
    backend: &B,
    (cfg, layer): (&KfrogConfig, &Layer),
    state: &mut KfrogState<B>,
    ws: &mut Workspace<B>,
    (weight, grad): (&mut B::Buffer, &B::Buffer),
    batch: KfrogBatch<'_, B>,
    (t, c): (u64, f64),
) -> Result<(), B::Error> {
    let s = B::Scalar::of_f64;
    let (one, zero) = (B::Scalar::ONE, B::Scalar::ZERO);
    let (rows, d) = (layer.rows(), layer.weight_cols());
    let n = rows * d;
    let bx = batch.x_sample as f64;
    state.weight.steps = t;
    state.y.steps = t;

    // 1. Momentum, as FROG's: M in ws.m.
    backend.copy(n, grad, &mut ws.m)?;
    if let Some(buf) = &mut state.weight.momentum {
        let beta = s(cfg.momentum);
        axpby_buffers(backend, n, one, &ws.m, beta, buf)?;
        if cfg.nesterov {
            axpby_buffers(backend, n, beta, buf, one, &mut ws.m)?;
        } else {
            backend.copy(n, buf, &mut ws.m)?;
        }
    }
    // 2-3. diag(Y^T Y) (scaled by the X sample count, as the original),
    // then its bias-corrected running average: y_eff in ws.trace.
    let y_scale = if cfg.batch_averaged { bx } else { 1.0 / bx };
    backend.y_sq_sums(layer, batch.y_sample, batch.y, s(y_scale), &mut ws.zm)?;
    match &mut state.y.momentum {
        Some(avg) => {
            let gamma = cfg.y_momentum;
            backend.y_average(rows, s(1.0 - gamma), &ws.zm, s(gamma), avg)?;
            let correction = 1.0 - libm::pow(gamma, t.min(i32::MAX as u64) as f64);
            axpby_buffers(backend, rows, s(1.0 / correction), avg, zero, &mut ws.trace)?;
        }
        None => backend.copy(rows, &ws.zm, &mut ws.trace)?,
    }
    // 4. The left-scaled right-hand side P1 = M_j / sqrt(y_eff[j] + eps),
    // built in ws.z and kept in ws.m.
    let eps = s(cfg.eps);
    backend.row_rsqrt(rows, &ws.trace, eps, &mut ws.row_scale)?;
    axpby_buffers(backend, n, zero, &ws.m, zero, &mut ws.z)?;
    backend.row_axpy(Shape::new(rows, d), one, &ws.row_scale, &ws.m, &mut ws.z)?;
    backend.copy(n, &ws.z, &mut ws.m)?;

    // 5. CG from zero with the one shared matrix X^T X / Bx + eps I: the
    // Fisher product with constant weights 1/Bx, over the patches `pack`
    // left. On patches the backend scaled by c (inputs so large that X^T X
    // could overflow), the system solved is c times it, (c^2 X^T X / (c Bx)
    // + c eps I) z' = P1, whose solution z' = z / c times the scaled
    // patches' RMS (c times the original's) is the original's direction:
    // exact, but for the CG's denominator eps.
    backend.fill(batch.x_sample * layer.output_len(), s(1.0 / (bx * c)), &mut ws.lambda)?;
    cg_start(backend, Shape::new(rows, d), ws)?;
    let run = CgRun { tau: s(cfg.eps * c), eps: s(KFROG_CG_DENOM_EPS), iters: cfg.num_iters };
    cg_iterate(backend, (layer, batch.x_sample, Some(whole(backend, batch.x)?)), run, ws)?;

    // 6-8. The patches' column RMS (in ws.rs), broadcast over the rows
    // (ws.pd), times the solution: the direction; then the step.
    let p = Patches { layer, r: batch.x_sample, x: Some(whole(backend, batch.x)?), packed: &ws.packed, scratch: &mut ws.scratch };
    backend.patch_col_norms(&p, s(1.0 / bx), &mut ws.rs)?;
    copy_buffers(backend, Shape::new(rows, d), &ws.rs, Strided { stride: 0, offset: 0 }, &mut ws.pd, Strided::dense(d))?;
    backend.mul_assign(n, &mut ws.pd, &ws.z)?;
    axpby_buffers(backend, n, -s(cfg.lr), &ws.pd, one, weight)
}
