//! The optimizer a parameter group runs, with its settings.

use crate::adamw::AdamWConfig;
use crate::config::{Config, ConfigError};
use crate::kfrog::KfrogConfig;
use crate::muon::MuonConfig;
use crate::scalar::Scalar;
use crate::sgd::SgdConfig;

/// Which optimizer a parameter group runs.
///
/// FROG preconditions the group's registered layers and steps its plain
/// parameters (BatchNorm, the classifier) on its plain-SGD path at
/// `lr * lr_other_ratio`; `torch.optim.SGD` and `torch.optim.AdamW` step
/// every parameter alike; Muon steps only matrix weights (layers without
/// bias), as the official Muon refuses other parameters. Each settings
/// struct converts into its method (`Method::from(cfg)`, `cfg.into()`).
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub enum Method {
    /// FROG.
    Frog(Config),
    /// `torch.optim.SGD` (dampening 0, coupled weight decay).
    Sgd(SgdConfig),
    /// `torch.optim.AdamW` (needs a backend with [`crate::AdamBackend`]).
    AdamW(AdamWConfig),
    /// K-FROG on the group's layers, momentum SGD at the same rate on its
    /// plain parameters (needs a backend with [`crate::KfrogBackend`]).
    Kfrog(KfrogConfig),
    /// Muon on the group's layers, bias-free (needs a backend with
    /// [`crate::MatmulBackend`], made from the [`MuonConfig`] itself: see
    /// [`crate::IntoMethod`]).
    Muon(MuonConfig),
}

impl From<Config> for Method {
    fn from(c: Config) -> Self {
        Self::Frog(c)
    }
}

impl From<SgdConfig> for Method {
    fn from(c: SgdConfig) -> Self {
        Self::Sgd(c)
    }
}

impl From<AdamWConfig> for Method {
    fn from(c: AdamWConfig) -> Self {
        Self::AdamW(c)
    }
}

impl From<KfrogConfig> for Method {
    fn from(c: KfrogConfig) -> Self {
        Self::Kfrog(c)
    }
}

impl From<MuonConfig> for Method {
    fn from(c: MuonConfig) -> Self {
        Self::Muon(c)
    }
}

impl Method {
    /// The learning rate.
    pub fn lr(&self) -> f64 {
        match self {
            Self::Frog(c) => c.lr,
            Self::Sgd(c) => c.lr,
            Self::AdamW(c) => c.lr,
            Self::Kfrog(c) => c.lr,
            Self::Muon(c) => c.lr,
        }
    }

    /// The same settings at learning rate `lr`.
    #[must_use]
    pub fn with_lr(mut self, lr: f64) -> Self {
        match &mut self {
            Self::Frog(c) => c.lr = lr,
            Self::Sgd(c) => c.lr = lr,
            Self::AdamW(c) => c.lr = lr,
            Self::Kfrog(c) => c.lr = lr,
            Self::Muon(c) => c.lr = lr,
        }
        self
    }

    /// The momentum of FROG, SGD, K-FROG and Muon (0 for none, and for
    /// AdamW, whose moments are its own).
    pub fn momentum(&self) -> f64 {
        match self {
            Self::Frog(c) => c.momentum,
            Self::Sgd(c) => c.momentum,
            Self::AdamW(_) => 0.0,
            Self::Kfrog(c) => c.momentum,
            Self::Muon(c) => c.momentum,
        }
    }

    /// The method's name, for messages.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Self::Frog(_) => "FROG",
            Self::Sgd(_) => "SGD",
            Self::AdamW(_) => "AdamW",
            Self::Kfrog(_) => "K-FROG",
            Self::Muon(_) => "Muon",
        }
    }

    /// The FROG settings, for a FROG group.
    pub fn frog(&self) -> Option<&Config> {
        match self {
            Self::Frog(c) => Some(c),
            _ => None,
        }
    }

    /// Checks the settings ([`Config::validate`], [`SgdConfig::validate`]).
    pub fn validate(&self) -> Result<(), ConfigError> {
        match self {
            Self::Frog(c) => c.validate(),
            Self::Sgd(c) => c.validate(),
            Self::AdamW(c) => c.validate(),
            Self::Kfrog(c) => c.validate(),
            Self::Muon(c) => c.validate(),
        }
    }

    /// Checks the settings in the scalar type `S` the steps run in
    /// ([`Config::validate_for`], [`SgdConfig::validate_for`]).
    pub fn validate_for<S: Scalar>(&self) -> Result<(), ConfigError> {
        match self {
            Self::Frog(c) => c.validate_for::<S>(),
            Self::Sgd(c) => c.validate_for::<S>(),
            Self::AdamW(c) => c.validate_for::<S>(),
            Self::Kfrog(c) => c.validate_for::<S>(),
            Self::Muon(c) => c.validate_for::<S>(),
        }
    }
}
