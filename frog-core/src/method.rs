//! The optimizer a parameter group runs, with its settings.

use crate::config::{Config, ConfigError};
use crate::scalar::Scalar;
use crate::sgd::SgdConfig;

/// Which optimizer a parameter group runs.
///
/// FROG preconditions the group's registered layers and steps its plain
/// parameters (BatchNorm, the classifier) on its plain-SGD path at
/// `lr * lr_other_ratio`; `torch.optim.SGD` steps every parameter alike.
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub enum Method {
    /// FROG.
    Frog(Config),
    /// `torch.optim.SGD` (dampening 0, coupled weight decay).
    Sgd(SgdConfig),
}

impl Method {
    /// The learning rate.
    pub fn lr(&self) -> f64 {
        match self {
            Self::Frog(c) => c.lr,
            Self::Sgd(c) => c.lr,
        }
    }

    /// The same settings at learning rate `lr`.
    #[must_use]
    pub fn with_lr(mut self, lr: f64) -> Self {
        match &mut self {
            Self::Frog(c) => c.lr = lr,
            Self::Sgd(c) => c.lr = lr,
        }
        self
    }

    /// The momentum (0 for none).
    pub fn momentum(&self) -> f64 {
        match self {
            Self::Frog(c) => c.momentum,
            Self::Sgd(c) => c.momentum,
        }
    }

    /// The FROG settings, for a FROG group.
    pub fn frog(&self) -> Option<&Config> {
        match self {
            Self::Frog(c) => Some(c),
            Self::Sgd(_) => None,
        }
    }

    /// Checks the settings ([`Config::validate`], [`SgdConfig::validate`]).
    pub fn validate(&self) -> Result<(), ConfigError> {
        match self {
            Self::Frog(c) => c.validate(),
            Self::Sgd(c) => c.validate(),
        }
    }

    /// Checks the settings in the scalar type `S` the steps run in
    /// ([`Config::validate_for`], [`SgdConfig::validate_for`]).
    pub fn validate_for<S: Scalar>(&self) -> Result<(), ConfigError> {
        match self {
            Self::Frog(c) => c.validate_for::<S>(),
            Self::Sgd(c) => c.validate_for::<S>(),
        }
    }
}
