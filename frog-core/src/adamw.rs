//! AdamW with `torch.optim.AdamW`'s semantics: decoupled weight decay,
//! bias correction, optional amsgrad. The baseline most training code
//! defaults to, beside FROG in the study.

use core::fmt;

use crate::backend::Backend;
use crate::config::{decay_ok, non_negative, representable, update_bound_ok, ConfigError, NonExhaustive};
use crate::error::Error;
use crate::step::check_len;
use crate::scalar::Scalar;
use crate::state::{check_non_negative, check_stored, export_stored, import_stored, stored_len, Header, StateError};

/// `torch.optim.AdamW` settings; the defaults are PyTorch's. Write them
/// as `AdamWConfig { lr: 0.1, ..Default::default() }` (see
/// [`NonExhaustive`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamWConfig {
    /// Learning rate.
    pub lr: f64,
    /// Decay of the first moment (`betas[0]`).
    pub beta1: f64,
    /// Decay of the second moment (`betas[1]`).
    pub beta2: f64,
    /// Added to the denominator.
    pub eps: f64,
    /// Decoupled weight decay: `p *= 1 - lr * weight_decay` every step.
    pub weight_decay: f64,
    /// Divides by the running maximum of the second moment.
    pub amsgrad: bool,
    /// Keeps settings addable (see [`NonExhaustive`]).
    pub non_exhaustive: NonExhaustive,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 1e-2, amsgrad: false, non_exhaustive: NonExhaustive(()) }
    }
}

impl AdamWConfig {
    /// Checks the values as PyTorch does (`lr >= 0`, `eps >= 0`, betas in
    /// `[0, 1)`, `weight_decay >= 0`), and rejects what it accepts but
    /// cannot run: `eps = 0` (a zero gradient divides 0 by 0) and
    /// `lr * weight_decay > 1` (the decay flips the weights' sign).
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !non_negative(self.lr) {
            return Err(ConfigError::Lr(self.lr));
        }
        for (which, v) in [("beta1", self.beta1), ("beta2", self.beta2)] {
            if !(non_negative(v) && v < 1.0) {
                return Err(ConfigError::Beta { which, value: v });
            }
        }
        if !(self.eps.is_finite() && self.eps > 0.0) {
            return Err(ConfigError::Eps(self.eps));
        }
        if !non_negative(self.weight_decay) {
            return Err(ConfigError::WeightDecay(self.weight_decay));
        }
        decay_ok(self.lr, self.weight_decay)
    }

    /// [`AdamWConfig::validate`], that every setting stays finite (and
    /// nonzero where it is nonzero) in the scalar type `S` the step runs in,
    /// and that the bound on one update entry, times
    /// [`crate::UPDATE_MARGIN`], does not overflow `S`.
    ///
    /// The bound: with `rho = beta1^2 / beta2 < 1` (0 when `beta1 = 0`), Cauchy-Schwarz over
    /// `m_t = (1-beta1) sum_k beta1^(t-k) g_k` gives `|m_t| <= (1-beta1) /
    /// sqrt((1-beta2)(1-rho)) * sqrt(v_t)`, and the bias corrections only
    /// lower it (`(1-beta1)/(1-beta1^t) <= 1`, `1-beta2^t <= 1`): no entry of
    /// the step exceeds `lr / sqrt((1-beta2)(1-rho))`. Otherwise only `eps`
    /// bounds the denominator: `lr / ((1-beta1) eps)` per unit of the
    /// largest `|g|`. The decoupled decay only shrinks the weights.
    pub fn validate_for<S: Scalar>(&self) -> Result<(), ConfigError> {
        self.validate()?;
        let settings = [("lr", self.lr), ("beta1", self.beta1), ("beta2", self.beta2), ("eps", self.eps), ("weight_decay", self.weight_decay)];
        settings.iter().try_for_each(|&(what, v)| representable::<S>(what, v))?;
        // beta1 = 0 (m = g) has rho = 0 whatever beta2, 0 included.
        let rho = if self.beta1 == 0.0 { 0.0 } else { self.beta1 * self.beta1 / self.beta2 };
        if rho < 1.0 {
            update_bound_ok::<S>("lr / sqrt((1 - beta2) (1 - beta1^2/beta2))", self.lr / libm::sqrt((1.0 - self.beta2) * (1.0 - rho)))
        } else {
            update_bound_ok::<S>("lr / ((1 - beta1) eps)", self.lr / ((1.0 - self.beta1) * self.eps))
        }
    }
}

/// The scalars of one AdamW step at step count `t`, computed on the host
/// in `f64` as PyTorch computes them in Python floats.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamCoefs<S> {
    /// `1 - lr * weight_decay`.
    pub decay: S,
    /// `1 - beta1`, the weight of the gradient in the first moment.
    pub one_minus_beta1: S,
    /// `beta2`.
    pub beta2: S,
    /// `1 - beta2`.
    pub one_minus_beta2: S,
    /// `lr / (1 - beta1^t)`.
    pub step_size: S,
    /// `sqrt(1 - beta2^t)`.
    pub bias_correction2_sqrt: S,
    /// `eps`.
    pub eps: S,
}

impl<S: Scalar> AdamCoefs<S> {
    fn new(cfg: &AdamWConfig, t: u64) -> Self {
        let s = S::of_f64;
        // t beyond i32 leaves beta^t at its limit of 0 (beta < 1).
        let pow = |b: f64| libm::pow(b, t.min(i32::MAX as u64) as f64);
        Self {
            decay: s(1.0 - cfg.lr * cfg.weight_decay),
            one_minus_beta1: s(1.0 - cfg.beta1),
            beta2: s(cfg.beta2),
            one_minus_beta2: s(1.0 - cfg.beta2),
            step_size: s(cfg.lr / (1.0 - pow(cfg.beta1))),
            bias_correction2_sqrt: s(libm::sqrt(1.0 - pow(cfg.beta2))),
            eps: s(cfg.eps),
        }
    }
}

/// Backends that run AdamW: its update needs an elementwise square root,
/// division and maximum, which [`Backend`] does not have. An extension
/// trait, so that backends without it keep compiling; [`adamw_step`]
/// requires it.
pub trait AdamBackend: Backend {
    /// One AdamW update of the first `n` entries, in PyTorch's order:
    ///
    /// ```text
    /// p  = decay * p
    /// m  = m + one_minus_beta1 * (g - m)           (see below where g - m overflows)
    /// v  = min(beta2 * v + one_minus_beta2 * g * g, MAX)
    /// vmax = max(vmax, v)                          (amsgrad: vmax given)
    /// p  = p - step_size * m / (sqrt(vmax or v) / bias_correction2_sqrt + eps)
    /// ```
    ///
    /// `v` saturates at the scalar's largest finite value (`MAX`), so that a
    /// gradient whose square overflows keeps every state finite (and
    /// restorable) and the parameter moving; where `g - m` overflows
    /// (opposite signs near `MAX`), `m` is the same convex combination
    /// `m - one_minus_beta1 * m + one_minus_beta1 * g`, clamped to `[-MAX, MAX]`.
    fn adamw_update(&self, n: usize, c: &AdamCoefs<Self::Scalar>, param: &mut Self::Buffer, grad: &Self::Buffer, moments: AdamMoments<'_, Self>) -> Result<(), Self::Error>;
}

/// The moments [`AdamBackend::adamw_update`] updates: a struct, so that
/// `m` and `v` cannot be swapped by position.
pub struct AdamMoments<'a, B: Backend + ?Sized> {
    /// The first moment.
    pub m: &'a mut B::Buffer,
    /// The second moment.
    pub v: &'a mut B::Buffer,
    /// The amsgrad maximum of `v`, when on.
    pub vmax: Option<&'a mut B::Buffer>,
}

/// Buffers only, which print as nothing (they need not be `Debug`).
impl<B: Backend + ?Sized> fmt::Debug for AdamMoments<'_, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdamMoments").field("amsgrad", &self.vmax.is_some()).finish_non_exhaustive()
    }
}

/// The state of one AdamW parameter: both moments, the amsgrad maximum
/// and the step count.
pub struct AdamState<B: Backend> {
    m: B::Buffer,
    v: B::Buffer,
    vmax: Option<B::Buffer>,
    len: usize,
    steps: u64,
}

const MAGIC: [u8; 4] = *b"FRAW";
/// The per-parameter state header; its flag says amsgrad.
const HEADER: usize = Header::BYTES;

impl<B: Backend> fmt::Debug for AdamState<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdamState").field("len", &self.len).field("steps", &self.steps).field("amsgrad", &self.vmax.is_some()).finish()
    }
}

impl<B: Backend> AdamState<B> {
    /// Zero moments for a parameter of `len` entries.
    pub fn new(backend: &B, len: usize, amsgrad: bool) -> Result<Self, B::Error> {
        let vmax = if amsgrad { Some(backend.zeros(len)?) } else { None };
        Ok(Self { m: backend.zeros(len)?, v: backend.zeros(len)?, vmax, len, steps: 0 })
    }

    /// Steps taken.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// Entries of the parameter.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the parameter has no entries.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The first moment (`exp_avg`), the second (`exp_avg_sq`) and, with
    /// amsgrad, its running maximum (`max_exp_avg_sq`).
    pub fn moments(&self) -> (&B::Buffer, &B::Buffer, Option<&B::Buffer>) {
        (&self.m, &self.v, self.vmax.as_ref())
    }

    fn buffers(&self) -> usize {
        2 + usize::from(self.vmax.is_some())
    }

    /// Bytes [`AdamState::export`] writes.
    pub fn export_len(&self) -> usize {
        stored_len::<B::Scalar>(self.len, self.buffers())
    }

    /// Writes the state to `out` (at least [`AdamState::export_len`] bytes)
    /// and returns the bytes written.
    pub fn export(&self, backend: &B, out: &mut [u8]) -> Result<usize, Error<B::Error>> {
        let header = Header { magic: MAGIC, flag: self.vmax.is_some(), len: self.len, steps: self.steps };
        match &self.vmax {
            Some(vmax) => export_stored(backend, &header, &[&self.m, &self.v, vmax], out),
            None => export_stored(backend, &header, &[&self.m, &self.v], out),
        }
    }

    /// Restores bytes [`AdamState::export`] wrote for a parameter of the
    /// same size, scalar type and amsgrad setting; every byte is checked
    /// first (a NaN or infinite moment, or a negative second moment, is an
    /// error), so a rejected buffer changes nothing.
    pub fn restore(&mut self, backend: &B, bytes: &[u8]) -> Result<(), Error<B::Error>> {
        let steps = self.check_bytes(bytes)?;
        self.apply_bytes(backend, bytes, steps).map_err(Error::Backend)
    }

    pub(crate) fn check_bytes(&self, bytes: &[u8]) -> Result<u64, StateError> {
        let steps = check_stored::<B::Scalar>(bytes, MAGIC, self.len, (self.vmax.is_some(), "amsgrad"), self.buffers())?;
        let needed = self.export_len();
        let part = self.len * B::Scalar::BYTES;
        check_non_negative::<B::Scalar>(&bytes[HEADER + part..needed], "AdamW second-moment", self.len)?;
        Ok(steps)
    }

    pub(crate) fn apply_bytes(&mut self, backend: &B, bytes: &[u8], steps: u64) -> Result<(), B::Error> {
        import_stored(backend, bytes, self.len, [&mut self.m, &mut self.v].into_iter().chain(self.vmax.as_mut()))?;
        self.steps = steps;
        Ok(())
    }
}

/// One `torch.optim.AdamW` step of a parameter.
///
/// Rejects, changing nothing: settings [`AdamWConfig::validate_for`]
/// rejects in the backend's scalar type, a parameter or gradient of
/// another length than the state's, a state whose amsgrad buffer does not
/// match the setting, and an exhausted step count.
pub fn adamw_step<B: AdamBackend>(backend: &B, cfg: &AdamWConfig, state: &mut AdamState<B>, param: &mut B::Buffer, grad: &B::Buffer) -> Result<(), Error<B::Error>> {
    cfg.validate_for::<B::Scalar>()?;
    let n = state.len;
    check_len(backend, param, "param", n)?;
    check_len(backend, grad, "grad", n)?;
    if cfg.amsgrad != state.vmax.is_some() {
        return Err(StateError::AmsgradSetting { state_has_buffer: state.vmax.is_some() }.into());
    }
    let t = state.steps.checked_add(1).ok_or(StateError::StepsExhausted)?;
    state.steps = t;
    let c = AdamCoefs::new(cfg, t);
    let moments = AdamMoments { m: &mut state.m, v: &mut state.v, vmax: state.vmax.as_mut() };
    backend.adamw_update(n, &c, param, grad, moments).map_err(Error::Backend)
}
