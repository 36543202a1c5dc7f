//! Hyperparameters, with the original's names and defaults, and their checks.

use core::fmt;

use crate::scalar::Scalar;

/// The most CG iterations a step may run. The original uses 4; far more
/// than `D'` iterations only repeat rounding, and an unbounded count
/// (`usize::MAX`) would never return.
pub const MAX_NUM_ITERS: usize = 10_000;

/// The last field of every settings struct ([`Config`],
/// [`crate::SgdConfig`], [`crate::AdamWConfig`], [`crate::KfrogConfig`]).
///
/// Its field is private, so code outside frog-core cannot write a settings
/// struct out field by field: it names the settings it changes and takes
/// the rest from the defaults. A setting added later then breaks no
/// caller (faer's parameter structs do the same).
///
/// ```
/// use frog_core::Config;
///
/// let cfg = Config { lr: 0.1, momentum: 0.9, ..Default::default() };
/// assert_eq!((cfg.lr, cfg.momentum, cfg.num_iters), (0.1, 0.9, Config::default().num_iters));
/// ```
///
/// Every field written out, the literal does not compile outside frog-core:
///
/// ```compile_fail,E0423
/// use frog_core::{Config, NonExhaustive};
///
/// let cfg = Config {
///     lr: 1e-3,
///     lr_other_ratio: 0.25,
///     momentum: 0.0,
///     nesterov: false,
///     weight_decay: 0.0,
///     sample_size: Some(24),
///     num_iters: 4,
///     tau: 1e-6,
///     tau_final: None,
///     tau_steps: None,
///     batch_averaged: true,
///     denom_eps: 1e-10,
///     non_exhaustive: NonExhaustive(()),
/// };
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct NonExhaustive(pub(crate) ());

/// FROG's hyperparameters, named and defaulted as the original `Frog`
/// optimizer (and `torch.optim`) names them. Write them as
/// `Config { lr: 0.1, ..Default::default() }` (see [`NonExhaustive`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Config {
    /// Learning rate of the preconditioned layers (default 1e-3).
    pub lr: f64,
    /// The plain-SGD path uses `lr * lr_other_ratio` (default 0.25).
    pub lr_other_ratio: f64,
    /// Momentum `beta`, applied before preconditioning (default 0).
    pub momentum: f64,
    /// Nesterov momentum: `M = g + beta*buf` (default false).
    pub nesterov: bool,
    /// Weight decay: decoupled on preconditioned layers, coupled on the
    /// plain-SGD path (default 0).
    pub weight_decay: f64,
    /// Samples drawn for the Fisher estimate; `None`, or a value at or above
    /// the batch, uses the whole batch (default 24).
    pub sample_size: Option<usize>,
    /// CG iterations per step (default 4).
    pub num_iters: usize,
    /// Damping `tau` (default 1e-6).
    pub tau: f64,
    /// Final damping of the geometric schedule, if any.
    pub tau_final: Option<f64>,
    /// Steps over which `tau` moves to `tau_final`.
    pub tau_steps: Option<u64>,
    /// Whether the loss is a batch mean (scales `Y` by `B`) (default true).
    pub batch_averaged: bool,
    /// The `eps` of every FROG denominator (default 1e-10).
    pub denom_eps: f64,
    /// Keeps settings addable (see [`NonExhaustive`]).
    pub non_exhaustive: NonExhaustive,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            lr: 1e-3,
            lr_other_ratio: 0.25,
            momentum: 0.0,
            nesterov: false,
            weight_decay: 0.0,
            sample_size: Some(24),
            num_iters: 4,
            tau: 1e-6,
            tau_final: None,
            tau_steps: None,
            batch_averaged: true,
            denom_eps: 1e-10,
            non_exhaustive: NonExhaustive(()),
        }
    }
}

/// An invalid hyperparameter: each value the original rejects, and those
/// it accepts that would give NaN or infinity.
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub enum ConfigError {
    /// `lr < 0` or not finite.
    Lr(f64),
    /// `lr_other_ratio < 0` or not finite.
    LrOtherRatio(f64),
    /// `momentum` outside `[0, 1]` or not finite (above 1 the buffer grows
    /// geometrically).
    Momentum(f64),
    /// Nesterov needs a positive momentum.
    NesterovWithoutMomentum,
    /// `weight_decay < 0` or not finite.
    WeightDecay(f64),
    /// `sample_size = 0`.
    SampleSizeZero,
    /// `num_iters = 0`.
    NumItersZero,
    /// `num_iters` above [`MAX_NUM_ITERS`].
    NumItersTooLarge(usize),
    /// `lr * weight_decay > 1`: the decay factor `1 - lr*wd` (decoupled, or
    /// coupled on a plain-SGD path at `lr * lr_other_ratio`) turns negative
    /// and the weights grow in magnitude every step.
    DecayTooLarge {
        /// The learning rate of the path (`lr`, or `lr * lr_other_ratio`).
        lr: f64,
        /// The weight decay.
        weight_decay: f64,
    },
    /// A setting is finite in `f64` but not once rounded to the scalar
    /// type the step runs in (it overflows to infinity, or a positive
    /// value rounds to zero).
    OutOfScalarRange {
        /// Which setting.
        what: &'static str,
        /// Its value.
        value: f64,
        /// Bytes of the scalar type (4 for `f32`).
        scalar_bytes: usize,
    },
    /// `tau < 0` or not finite.
    Tau(f64),
    /// `denom_eps <= 0` or not finite (0 divides 0 by 0 on a dead row).
    DenomEps(f64),
    /// A schedule with `tau = 0` (its geometric formula divides by zero).
    ScheduleTauZero,
    /// `tau_final <= 0` or not finite.
    TauFinal(f64),
    /// `tau_steps = 0`.
    TauStepsZero,
    /// Only one of `tau_final` and `tau_steps` is set.
    ScheduleIncomplete,
    /// An AdamW beta outside `[0, 1)`.
    Beta {
        /// `beta1` or `beta2`.
        which: &'static str,
        /// Its value.
        value: f64,
    },
    /// An `eps` that is not finite and positive.
    Eps(f64),
    /// Muon's `ns_steps = 0` (no orthogonalization at all).
    NsStepsZero,
    /// A weight decay in a Muon form that has none (airbench's): refused
    /// rather than ignored.
    DecayNotInForm(f64),
    /// The method's bound on one update entry (see each method's
    /// `validate_for`), times [`UPDATE_MARGIN`], overflows the scalar type
    /// the step runs in: a finite input could give infinite weights.
    UpdateBound {
        /// The bound's formula.
        what: &'static str,
        /// Its value for these settings.
        bound: f64,
        /// Bytes of the scalar type (4 for `f32`).
        scalar_bytes: usize,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Lr(v) => write!(f, "lr must be a finite value >= 0, got {v}"),
            Self::LrOtherRatio(v) => write!(f, "lr_other_ratio must be a finite value >= 0, got {v}"),
            Self::Momentum(v) => write!(f, "momentum must be a finite value in [0, 1], got {v}"),
            Self::NesterovWithoutMomentum => write!(f, "nesterov requires momentum > 0"),
            Self::WeightDecay(v) => write!(f, "weight_decay must be a finite value >= 0, got {v}"),
            Self::SampleSizeZero => write!(f, "sample_size must be at least 1 (or none for the whole batch)"),
            Self::NumItersZero => write!(f, "num_iters must be at least 1"),
            Self::NumItersTooLarge(n) => write!(f, "num_iters must be at most {MAX_NUM_ITERS}, got {n}"),
            Self::DecayTooLarge { lr, weight_decay } => write!(
                f,
                "lr * weight_decay must be at most 1 (the decay factor 1 - lr*wd would be negative), got {lr} * {weight_decay} = {}",
                lr * weight_decay
            ),
            Self::OutOfScalarRange { what, value, scalar_bytes } => {
                write!(f, "{what} = {value} is outside the range of the {}-bit scalar the step runs in", 8 * scalar_bytes)
            }
            Self::Tau(v) => write!(f, "tau must be a finite value >= 0, got {v}"),
            Self::DenomEps(v) => write!(f, "denom_eps must be a finite value > 0, got {v}"),
            Self::ScheduleTauZero => write!(f, "a damping schedule needs tau > 0"),
            Self::TauFinal(v) => write!(f, "tau_final must be a finite value > 0, got {v}"),
            Self::TauStepsZero => write!(f, "tau_steps must be at least 1"),
            Self::ScheduleIncomplete => write!(f, "tau_final and tau_steps must be given together"),
            Self::Beta { which, value } => write!(f, "{which} must be a finite value in [0, 1), got {value}"),
            Self::Eps(v) => write!(f, "eps must be a finite value > 0, got {v}"),
            Self::NsStepsZero => write!(f, "ns_steps must be at least 1"),
            Self::DecayNotInForm(v) => write!(f, "the airbench form of Muon has no weight decay: weight_decay must be 0, got {v}"),
            Self::UpdateBound { what, bound, scalar_bytes } => write!(
                f,
                "the bound on one update entry, {what} = {bound:e}, exceeds 1/{UPDATE_MARGIN} of the largest {}-bit scalar the step runs in: lower lr",
                8 * scalar_bytes
            ),
        }
    }
}

impl core::error::Error for ConfigError {}

/// Finite and at least 0: what every rate, momentum and decay must be.
pub(crate) fn non_negative(v: f64) -> bool {
    v.is_finite() && v >= 0.0
}

/// The checks every momentum method shares (FROG, SGD, K-FROG): `lr >= 0`,
/// `momentum` in `[0, 1]`, and Nesterov only with momentum.
pub(crate) fn momentum_ok(lr: f64, momentum: f64, nesterov: bool) -> Result<(), ConfigError> {
    if !non_negative(lr) {
        return Err(ConfigError::Lr(lr));
    }
    if !(non_negative(momentum) && momentum <= 1.0) {
        return Err(ConfigError::Momentum(momentum));
    }
    if nesterov && momentum == 0.0 {
        return Err(ConfigError::NesterovWithoutMomentum);
    }
    Ok(())
}

/// `num_iters` in `1..=MAX_NUM_ITERS` (FROG's and K-FROG's CG).
pub(crate) fn num_iters_ok(num_iters: usize) -> Result<(), ConfigError> {
    match num_iters {
        0 => Err(ConfigError::NumItersZero),
        n if n > MAX_NUM_ITERS => Err(ConfigError::NumItersTooLarge(n)),
        _ => Ok(()),
    }
}

/// Rejects `lr * weight_decay > 1` (shared with [`crate::SgdConfig`]).
pub(crate) fn decay_ok(lr: f64, weight_decay: f64) -> Result<(), ConfigError> {
    if lr * weight_decay > 1.0 {
        Err(ConfigError::DecayTooLarge { lr, weight_decay })
    } else {
        Ok(())
    }
}

/// The headroom a method's bound on one update entry must leave below the
/// largest value of the scalar type the step runs in.
pub const UPDATE_MARGIN: f64 = 4.0;

/// Refuses settings whose bound on one update entry (`bound`, named by the
/// formula `what`) times [`UPDATE_MARGIN`] is not below `S::MAX`.
pub(crate) fn update_bound_ok<S: Scalar>(what: &'static str, bound: f64) -> Result<(), ConfigError> {
    if bound * UPDATE_MARGIN <= S::MAX.as_f64() {
        Ok(())
    } else {
        Err(ConfigError::UpdateBound { what, bound, scalar_bytes: S::BYTES })
    }
}

/// The bound on one entry of a coupled-decay momentum-SGD update at rate
/// `lr`, per unit of the largest `|g + wd*W|` (the gradient with its
/// decay term): the buffer `buf = beta*buf + g + wd*W` stays below
/// `1/(1 - beta)` of it, and so does Nesterov's `g + wd*W + beta*buf`; at
/// `beta = 1` the buffer grows with the step count, and the bound is per
/// unit of the buffer. The decay's own part, `lr*wd*|W|`, is at most `|W|`
/// ([`ConfigError::DecayTooLarge`]).
pub(crate) fn sgd_bound(lr: f64, momentum: f64) -> f64 {
    if momentum < 1.0 {
        lr / (1.0 - momentum)
    } else {
        lr
    }
}

/// Checks that `value` stays finite, and nonzero when it is nonzero, once
/// rounded to `S`.
pub(crate) fn representable<S: Scalar>(what: &'static str, value: f64) -> Result<(), ConfigError> {
    let rounded = S::of_f64(value).as_f64();
    if rounded.is_finite() && (rounded != 0.0 || value == 0.0) {
        Ok(())
    } else {
        Err(ConfigError::OutOfScalarRange { what, value, scalar_bytes: S::BYTES })
    }
}

impl Config {
    /// Checks every hyperparameter.
    pub fn validate(&self) -> Result<(), ConfigError> {
        momentum_ok(self.lr, self.momentum, self.nesterov)?;
        if !non_negative(self.lr_other_ratio) {
            return Err(ConfigError::LrOtherRatio(self.lr_other_ratio));
        }
        if !non_negative(self.weight_decay) {
            return Err(ConfigError::WeightDecay(self.weight_decay));
        }
        if self.sample_size == Some(0) {
            return Err(ConfigError::SampleSizeZero);
        }
        num_iters_ok(self.num_iters)?;
        representable::<f64>("lr * lr_other_ratio", self.lr * self.lr_other_ratio)?;
        decay_ok(self.lr, self.weight_decay)?;
        decay_ok(self.lr * self.lr_other_ratio, self.weight_decay)?;
        if !non_negative(self.tau) {
            return Err(ConfigError::Tau(self.tau));
        }
        if !(self.denom_eps.is_finite() && self.denom_eps > 0.0) {
            return Err(ConfigError::DenomEps(self.denom_eps));
        }
        match (self.tau_final, self.tau_steps) {
            (None, None) => Ok(()),
            (Some(tf), Some(steps)) => {
                if self.tau == 0.0 {
                    Err(ConfigError::ScheduleTauZero)
                } else if !(tf.is_finite() && tf > 0.0) {
                    Err(ConfigError::TauFinal(tf))
                } else if steps == 0 {
                    Err(ConfigError::TauStepsZero)
                } else {
                    Ok(())
                }
            }
            _ => Err(ConfigError::ScheduleIncomplete),
        }
    }

    /// [`Config::validate`], and that every setting a step uses keeps its
    /// meaning in the scalar type `S` it runs in: `denom_eps = 1e-46`
    /// rounds to 0 in `f32` (the 0/0 validation exists to prevent), `lr` or
    /// `tau` above `f32::MAX` become infinite.
    ///
    /// It also refuses settings whose bound on one update entry, times
    /// [`UPDATE_MARGIN`], overflows `S`. A preconditioned row's direction
    /// `z / sqrt(<z, M> + eps)` has unit `A`-norm (CG's iterates from zero
    /// satisfy `<z, M> = <z, A z>`) and `A >= tau I`, so no entry of `lr`
    /// times it exceeds `lr / sqrt(tau_min)`, `tau_min` the smallest damping
    /// of the schedule; the decoupled decay only shrinks the weights (`lr *
    /// weight_decay <= 1`). With `tau = 0` the direction's size depends on
    /// the data, and `lr` is checked per unit of it. The plain-SGD path's
    /// bound is that of `torch.optim.SGD` at `lr * lr_other_ratio` (see
    /// [`crate::SgdConfig::validate_for`]).
    pub fn validate_for<S: Scalar>(&self) -> Result<(), ConfigError> {
        self.validate()?;
        let settings = [
            ("lr", self.lr),
            ("lr * lr_other_ratio", self.lr * self.lr_other_ratio),
            ("momentum", self.momentum),
            ("weight_decay", self.weight_decay),
            ("lr * weight_decay", self.lr * self.weight_decay),
            ("tau", self.tau),
            ("tau_final", self.tau_final.unwrap_or(0.0)),
            ("denom_eps", self.denom_eps),
        ];
        settings.iter().try_for_each(|&(what, v)| representable::<S>(what, v))?;
        let tau_min = self.tau_final.map_or(self.tau, |tf| tf.min(self.tau));
        let (what, bound) = if tau_min > 0.0 { ("lr / sqrt(tau_min)", self.lr / libm::sqrt(tau_min)) } else { ("lr (tau = 0)", self.lr) };
        update_bound_ok::<S>(what, bound)?;
        update_bound_ok::<S>("lr * lr_other_ratio / (1 - momentum)", sgd_bound(self.lr * self.lr_other_ratio, self.momentum))
    }

    /// The damping at the 1-based step `n` of a parameter: `tau`, or with a
    /// schedule `tau * (tau_final/tau)^(n/tau_steps)`, and `tau_final` once
    /// `n/tau_steps > 1` (so step 1 already moves, as the original does).
    ///
    /// The original's formula is used whenever its ratio `tau_final/tau`
    /// is a normal number (bit for bit the original's damping); for ratios
    /// that overflow or underflow (`tau = 5e-324`, `tau_final = 1e-3`) the
    /// same geometric interpolation is taken in logarithms, which cannot
    /// overflow and stays between `tau` and `tau_final`.
    pub fn tau_at(&self, n: u64) -> f64 {
        match (self.tau_final, self.tau_steps) {
            (Some(tf), Some(steps)) => {
                let f = n as f64 / steps as f64;
                let ratio = tf / self.tau;
                if f > 1.0 {
                    tf
                } else if ratio.is_normal() {
                    self.tau * libm::pow(ratio, f)
                } else {
                    let (lo, hi) = if tf < self.tau { (tf, self.tau) } else { (self.tau, tf) };
                    libm::exp(libm::log(self.tau) + f * (libm::log(tf) - libm::log(self.tau))).clamp(lo, hi)
                }
            }
            _ => self.tau,
        }
    }

    /// The number of samples a batch of `batch` gives the Fisher estimate.
    pub fn sample_rows(&self, batch: usize) -> usize {
        self.sample_size.map_or(batch, |s| s.min(batch))
    }

    /// The `Q = s*Y^2` scale: `B^2/r` for a batch-averaged loss, else `1/r`.
    pub fn fisher_scale(&self, batch: usize, r: usize) -> f64 {
        let (b, r) = (batch as f64, r as f64);
        if self.batch_averaged {
            b * b / r
        } else {
            1.0 / r
        }
    }
}
