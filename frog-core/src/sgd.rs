//! The plain-SGD paths: FROG's path for every parameter it does not
//! precondition, and `torch.optim.SGD` for the baseline.

use core::fmt;

use crate::backend::{axpby_buffers, whole_mut, Backend};
use crate::config::{decay_ok, momentum_ok, non_negative, representable, sgd_bound, update_bound_ok, Config, ConfigError, NonExhaustive};
use crate::error::{Error, ShapeError};
use crate::step::check_count;
use crate::scalar::Scalar;
use crate::state::ParamState;

/// `torch.optim.SGD` settings (dampening 0); the defaults are PyTorch's.
/// Write them as `SgdConfig { lr: 0.1, ..Default::default() }` (see
/// [`NonExhaustive`]).
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
    /// Keeps settings addable (see [`NonExhaustive`]).
    pub non_exhaustive: NonExhaustive,
}

impl Default for SgdConfig {
    fn default() -> Self {
        Self { lr: 1e-3, momentum: 0.0, weight_decay: 0.0, nesterov: false, non_exhaustive: NonExhaustive(()) }
    }
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

    /// [`SgdConfig::validate`], that every setting stays finite (and
    /// nonzero where it is nonzero) in the scalar type `S` the step runs in,
    /// and that the bound on one update entry, times
    /// [`crate::UPDATE_MARGIN`], does not overflow `S`: `lr / (1 - momentum)`
    /// per unit of the largest `|g + wd*W|` (the momentum buffer stays below
    /// `1/(1 - momentum)` of it, Nesterov's step too), or `lr` per unit of
    /// the buffer at `momentum = 1`; the decay's own part `lr*wd*|W|` is at
    /// most `|W|`.
    pub fn validate_for<S: Scalar>(&self) -> Result<(), ConfigError> {
        self.validate()?;
        let settings = [("lr", self.lr), ("momentum", self.momentum), ("weight_decay", self.weight_decay), ("lr * weight_decay", self.lr * self.weight_decay)];
        settings.iter().try_for_each(|&(what, v)| representable::<S>(what, v))?;
        update_bound_ok::<S>("lr / (1 - momentum)", sgd_bound(self.lr, self.momentum))
    }
}

/// Coupled-decay SGD with momentum. The two callers differ only in
/// whether a Nesterov buffer also accumulates `wd*W` (torch's does, FROG's
/// plain path does not); without Nesterov both store `g + wd*W` in it.
pub(crate) fn coupled_sgd<B: Backend>(
    backend: &B,
    cfg: &SgdConfig,
    nesterov_buffer_has_decay: bool,
    state: &mut ParamState<B>,
    mut ops: impl sealed::Operands<B>,
) -> Result<(), Error<B::Error>> {
    cfg.validate_for::<B::Scalar>()?;
    let n = state.len;
    ops.check(backend, n)?;
    state.check_momentum("momentum", cfg.momentum)?;
    state.steps = state.next_step()?;
    let s = B::Scalar::of_f64;
    let (lr, beta, wd) = (s(cfg.lr), s(cfg.momentum), s(cfg.weight_decay));
    let one = B::Scalar::ONE;
    let decayed = s(1.0 - cfg.lr * cfg.weight_decay);
    let go = |r: Result<(), B::Error>| r.map_err(Error::Backend);
    match &mut state.momentum {
        None => {
            // W = W - lr*(g + wd*W)
            go(ops.grad_to_param(backend, n, -lr, decayed))?;
        }
        Some(buf) if !cfg.nesterov => {
            // buf = beta*buf + g + wd*W;  W = W - lr*buf
            go(ops.grad_to_buf(backend, n, one, beta, buf))?;
            if cfg.weight_decay > 0.0 {
                go(ops.param_to_buf(backend, n, wd, one, buf))?;
            }
            go(ops.buf_to_param(backend, n, -lr, buf, one))?;
        }
        Some(buf) => {
            // buf = beta*buf + g (+ wd*W);  W = W - lr*(g + wd*W + beta*buf)
            go(ops.grad_to_buf(backend, n, one, beta, buf))?;
            if nesterov_buffer_has_decay && cfg.weight_decay > 0.0 {
                go(ops.param_to_buf(backend, n, wd, one, buf))?;
            }
            go(ops.grad_to_param(backend, n, -lr, decayed))?;
            go(ops.buf_to_param(backend, n, -lr * beta, buf, one))?;
        }
    }
    Ok(())
}

/// FROG's plain-SGD path for a parameter it does not precondition
/// (BatchNorm, the classifier): it steps at `lr * lr_other_ratio` (default
/// 0.25, so the classifier moves at a quarter of FROG's rate), with coupled
/// decay and the original's in-place quirks (pinned by the golden cases'
/// `other_*` files). `param` is a [`ParamGrad`] of buffers or a
/// [`ViewParamGrad`] of views.
///
/// Rejects what [`Config::validate_for`] rejects (so also
/// `lr * lr_other_ratio * weight_decay > 1`), a gradient or parameter
/// whose length differs from the state's, a state whose momentum buffer
/// does not match `momentum > 0`, and a state whose step count is
/// exhausted; a rejected call changes nothing.
pub fn plain_sgd_step<B: Backend>(backend: &B, cfg: &Config, state: &mut ParamState<B>, param: impl Operands<B>) -> Result<(), Error<B::Error>> {
    frog_plain(backend, cfg, state, param)
}

/// FROG's plain path on either kind of operands.
pub(crate) fn frog_plain<B: Backend>(backend: &B, cfg: &Config, state: &mut ParamState<B>, ops: impl sealed::Operands<B>) -> Result<(), Error<B::Error>> {
    cfg.validate_for::<B::Scalar>()?;
    coupled_sgd(backend, &other_sgd(cfg), false, state, ops)
}

/// The SGD settings of FROG's plain path: `lr * lr_other_ratio`, FROG's
/// momentum and decay.
fn other_sgd(cfg: &Config) -> SgdConfig {
    SgdConfig {
        lr: cfg.lr * cfg.lr_other_ratio,
        momentum: cfg.momentum,
        weight_decay: cfg.weight_decay,
        nesterov: cfg.nesterov,
        non_exhaustive: NonExhaustive(()),
    }
}

/// One `torch.optim.SGD` step (dampening 0), the baseline of the study, on
/// a [`ParamGrad`] of buffers or a [`ViewParamGrad`] of views.
pub fn sgd_step<B: Backend>(backend: &B, cfg: &SgdConfig, state: &mut ParamState<B>, param: impl Operands<B>) -> Result<(), Error<B::Error>> {
    coupled_sgd(backend, cfg, true, state, param)
}

/// A parameter and its gradient as the plain steps take them: a
/// [`ParamGrad`] of buffers or a [`ViewParamGrad`] of views. Sealed: the
/// SGD rule's updates are the same for both, each one [`Backend::axpby`]
/// on views (of the buffers, for a [`ParamGrad`]).
pub trait Operands<B: Backend>: sealed::Operands<B> {}

impl<B: Backend> Operands<B> for ParamGrad<'_, B> {}
impl<B: Backend> Operands<B> for ViewParamGrad<'_, B> {}

/// A parameter and its gradient in backend buffers.
pub struct ParamGrad<'a, B: Backend> {
    /// The parameter, updated in place.
    pub param: &'a mut B::Buffer,
    /// Its gradient.
    pub grad: &'a B::Buffer,
}

/// A parameter and its gradient as views of the caller's storage (see
/// [`Backend::View`]).
pub struct ViewParamGrad<'a, B: Backend + 'a> {
    /// The parameter, updated in place.
    pub param: B::ViewMut<'a>,
    /// Its gradient.
    pub grad: B::View<'a>,
}

// Operands print nothing of their buffers (a backend's need not be `Debug`).

impl<B: Backend> fmt::Debug for ParamGrad<'_, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ParamGrad").finish_non_exhaustive()
    }
}

impl<'a, B: Backend + 'a> fmt::Debug for ViewParamGrad<'a, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ViewParamGrad").finish_non_exhaustive()
    }
}

/// The calls behind [`Operands`]. Public in a private module: callers can
/// name [`Operands`] but neither implement it nor call these.
pub(crate) mod sealed {
    use super::*;

    /// The updates of the SGD rule, each named for its operands.
    pub trait Operands<B: Backend> {
        /// Both of `n` entries, or an error naming the one that is not.
        fn check(&self, backend: &B, n: usize) -> Result<(), ShapeError>;
        /// `buf = a * grad + b * buf`.
        fn grad_to_buf(&self, backend: &B, n: usize, a: B::Scalar, b: B::Scalar, buf: &mut B::Buffer) -> Result<(), B::Error>;
        /// `buf = a * param + b * buf`.
        fn param_to_buf(&self, backend: &B, n: usize, a: B::Scalar, b: B::Scalar, buf: &mut B::Buffer) -> Result<(), B::Error>;
        /// `param = a * grad + b * param`.
        fn grad_to_param(&mut self, backend: &B, n: usize, a: B::Scalar, b: B::Scalar) -> Result<(), B::Error>;
        /// `param = a * buf + b * param`.
        fn buf_to_param(&mut self, backend: &B, n: usize, a: B::Scalar, buf: &B::Buffer, b: B::Scalar) -> Result<(), B::Error>;
        /// The operands as buffers, for steps that take only buffers (AdamW's
        /// kernel); `None` for views.
        fn buffers(&mut self) -> Option<(&mut B::Buffer, &B::Buffer)>;
        /// Runs `f` on the parameter as a writable view (Muon's in-place
        /// renormalization and its norm).
        fn with_param_mut<F>(&mut self, backend: &B, f: F) -> Result<(), B::Error>
        where
            F: FnOnce(&mut B::ViewMut<'_>) -> Result<(), B::Error>;
    }

    impl<B: Backend> Operands<B> for ParamGrad<'_, B> {
        fn check(&self, backend: &B, n: usize) -> Result<(), ShapeError> {
            check_count(backend.len(self.param), "param", n)?;
            check_count(backend.len(self.grad), "grad", n)
        }
        fn grad_to_buf(&self, backend: &B, n: usize, a: B::Scalar, b: B::Scalar, buf: &mut B::Buffer) -> Result<(), B::Error> {
            axpby_buffers(backend, n, a, self.grad, b, buf)
        }
        fn param_to_buf(&self, backend: &B, n: usize, a: B::Scalar, b: B::Scalar, buf: &mut B::Buffer) -> Result<(), B::Error> {
            axpby_buffers(backend, n, a, self.param, b, buf)
        }
        fn grad_to_param(&mut self, backend: &B, n: usize, a: B::Scalar, b: B::Scalar) -> Result<(), B::Error> {
            axpby_buffers(backend, n, a, self.grad, b, self.param)
        }
        fn buf_to_param(&mut self, backend: &B, n: usize, a: B::Scalar, buf: &B::Buffer, b: B::Scalar) -> Result<(), B::Error> {
            axpby_buffers(backend, n, a, buf, b, self.param)
        }
        fn buffers(&mut self) -> Option<(&mut B::Buffer, &B::Buffer)> {
            Some((self.param, self.grad))
        }
        fn with_param_mut<F>(&mut self, backend: &B, f: F) -> Result<(), B::Error>
        where
            F: FnOnce(&mut B::ViewMut<'_>) -> Result<(), B::Error>,
        {
            f(&mut whole_mut(backend, self.param)?)
        }
    }

    impl<B: Backend> Operands<B> for ViewParamGrad<'_, B> {
        fn check(&self, backend: &B, n: usize) -> Result<(), ShapeError> {
            check_count(backend.view_mut_len(&self.param), "param", n)?;
            check_count(backend.view_len(&self.grad), "grad", n)
        }
        fn grad_to_buf(&self, backend: &B, n: usize, a: B::Scalar, b: B::Scalar, buf: &mut B::Buffer) -> Result<(), B::Error> {
            backend.axpby(n, a, &self.grad, b, &mut backend.view_mut(buf, 0, n)?)
        }
        fn param_to_buf(&self, backend: &B, n: usize, a: B::Scalar, b: B::Scalar, buf: &mut B::Buffer) -> Result<(), B::Error> {
            backend.axpby(n, a, &backend.reborrow(&self.param), b, &mut backend.view_mut(buf, 0, n)?)
        }
        fn grad_to_param(&mut self, backend: &B, n: usize, a: B::Scalar, b: B::Scalar) -> Result<(), B::Error> {
            backend.axpby(n, a, &self.grad, b, &mut self.param)
        }
        fn buf_to_param(&mut self, backend: &B, n: usize, a: B::Scalar, buf: &B::Buffer, b: B::Scalar) -> Result<(), B::Error> {
            backend.axpby(n, a, &backend.view(buf, 0, n)?, b, &mut self.param)
        }
        fn buffers(&mut self) -> Option<(&mut B::Buffer, &B::Buffer)> {
            None
        }
        fn with_param_mut<F>(&mut self, _backend: &B, f: F) -> Result<(), B::Error>
        where
            F: FnOnce(&mut B::ViewMut<'_>) -> Result<(), B::Error>,
        {
            f(&mut self.param)
        }
    }
}
