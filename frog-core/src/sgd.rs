//! The plain-SGD paths: FROG's path for every parameter it does not
//! precondition, and `torch.optim.SGD` for the baseline.

use crate::backend::Backend;
use crate::config::{decay_ok, momentum_ok, non_negative, representable, Config, ConfigError};
use crate::error::Error;
use crate::scalar::Scalar;
use crate::state::ParamState;
use crate::step::check_len;

/// `torch.optim.SGD` settings (dampening 0).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SgdConfig {
    /// Learning rate.
    pub lr: f64,
    /// Momentum.
    pub momentum: f64,
    /// Coupled weight decay (added to the gradient).
    pub weight_decay: f64,
    /// Nesterov momentum.
    pub nesterov: bool,
}

impl SgdConfig {
    /// Checks the values as `torch.optim.SGD` does, and rejects what it
    /// accepts but diverges on every input: `momentum > 1` and
    /// `lr * weight_decay > 1`.
    pub fn validate(&self) -> Result<(), ConfigError> {
        momentum_ok(self.lr, self.momentum, self.nesterov)?;
        if !non_negative(self.weight_decay) {
            return Err(ConfigError::WeightDecay(self.weight_decay));
        }
        decay_ok(self.lr, self.weight_decay)
    }

    /// [`SgdConfig::validate`], and that every setting stays finite (and
    /// nonzero where it is nonzero) in the scalar type `S` the step runs in.
    pub fn validate_for<S: Scalar>(&self) -> Result<(), ConfigError> {
        self.validate()?;
        let settings = [("lr", self.lr), ("momentum", self.momentum), ("weight_decay", self.weight_decay), ("lr * weight_decay", self.lr * self.weight_decay)];
        settings.iter().try_for_each(|&(what, v)| representable::<S>(what, v))
    }
}

/// Coupled-decay SGD with momentum. The two callers differ only in
/// whether a Nesterov buffer also accumulates `wd*W` (torch's does, FROG's
/// plain path does not); without Nesterov both store `g + wd*W` in it.
fn coupled_sgd<B: Backend>(
    backend: &B,
    cfg: &SgdConfig,
    nesterov_buffer_has_decay: bool,
    state: &mut ParamState<B>,
    param: &mut B::Buffer,
    grad: &B::Buffer,
) -> Result<(), Error<B::Error>> {
    cfg.validate_for::<B::Scalar>()?;
    let n = state.len;
    check_len(backend, param, "param", n)?;
    check_len(backend, grad, "grad", n)?;
    state.check_momentum(cfg.momentum)?;
    state.steps = state.next_step()?;
    let s = B::Scalar::of_f64;
    let (lr, beta, wd) = (s(cfg.lr), s(cfg.momentum), s(cfg.weight_decay));
    let one = B::Scalar::ONE;
    let decayed = s(1.0 - cfg.lr * cfg.weight_decay);
    let go = |r: Result<(), B::Error>| r.map_err(Error::Backend);
    match &mut state.momentum {
        None => {
            // W = W - lr*(g + wd*W)
            go(backend.axpby(n, -lr, grad, decayed, param))?;
        }
        Some(buf) if !cfg.nesterov => {
            // buf = beta*buf + g + wd*W;  W = W - lr*buf
            go(backend.axpby(n, one, grad, beta, buf))?;
            if cfg.weight_decay > 0.0 {
                go(backend.axpby(n, wd, param, one, buf))?;
            }
            go(backend.axpby(n, -lr, buf, one, param))?;
        }
        Some(buf) => {
            // buf = beta*buf + g (+ wd*W);  W = W - lr*(g + wd*W + beta*buf)
            go(backend.axpby(n, one, grad, beta, buf))?;
            if nesterov_buffer_has_decay && cfg.weight_decay > 0.0 {
                go(backend.axpby(n, wd, param, one, buf))?;
            }
            go(backend.axpby(n, -lr, grad, decayed, param))?;
            go(backend.axpby(n, -lr * beta, buf, one, param))?;
        }
    }
    Ok(())
}

/// FROG's plain-SGD path for a parameter it does not precondition
/// (BatchNorm, the classifier): it steps at `lr * lr_other_ratio` (default
/// 0.25, so the classifier moves at a quarter of FROG's rate), with coupled
/// decay and the original's in-place quirks (see `golden/FORMAT.md`).
///
/// Rejects what [`Config::validate_for`] rejects (so also
/// `lr * lr_other_ratio * weight_decay > 1`), a gradient or parameter
/// whose length differs from the state's, a state whose momentum buffer
/// does not match `momentum > 0`, and a state whose step count is
/// exhausted; a rejected call changes nothing.
pub fn plain_sgd_step<B: Backend>(
    backend: &B,
    cfg: &Config,
    state: &mut ParamState<B>,
    param: &mut B::Buffer,
    grad: &B::Buffer,
) -> Result<(), Error<B::Error>> {
    cfg.validate_for::<B::Scalar>()?;
    let sgd = SgdConfig {
        lr: cfg.lr * cfg.lr_other_ratio,
        momentum: cfg.momentum,
        weight_decay: cfg.weight_decay,
        nesterov: cfg.nesterov,
    };
    coupled_sgd(backend, &sgd, false, state, param, grad)
}

/// One `torch.optim.SGD` step (dampening 0), the baseline of the study.
pub fn sgd_step<B: Backend>(
    backend: &B,
    cfg: &SgdConfig,
    state: &mut ParamState<B>,
    param: &mut B::Buffer,
    grad: &B::Buffer,
) -> Result<(), Error<B::Error>> {
    coupled_sgd(backend, cfg, true, state, param, grad)
}
