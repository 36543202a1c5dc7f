//! The crate's error: whatever burn or FROG reported, or a misuse of the
//! optimizer that the step can name. Every misuse burn itself would panic
//! on (a backward pass from an untracked loss, a read that fails) is
//! checked first and returned here, so that a training loop can report it.

use std::fmt;

use frog_cpu::host::HostError;

/// A failure of [`crate::FrogOptimizer`].
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// Burn could not read a tensor back to the host.
    Read(String),
    /// FROG (frog-cpu's host route) refused the step or its backend
    /// failed; a wrong length names the layer (`layer0`, ...) or plain
    /// parameter (`param0`, ...). The refusals every framework optimizer
    /// shares are the route's too: a registered layer not run through its
    /// [`crate::Taps`] in the loss's forward pass
    /// ([`HostError::NotApplied`]), a missing gradient
    /// ([`HostError::MissingGrad`]), taps of different batches
    /// ([`HostError::Batch`]) and a diverging loss ([`HostError::Diverged`],
    /// see [`crate::ParamsFrog::divergence`]).
    Frog(HostError),
    /// A layer FROG cannot precondition (grouped convolution, asymmetric
    /// padding, a weight of an unexpected rank); leave it unregistered and
    /// it takes the plain-SGD path.
    Unsupported(String),
    /// A layer registered twice, after the first step, or a trainable
    /// parameter that appeared after the first step (the parameters are
    /// registered with FROG then, once).
    Registered(String),
    /// The loss is not on an autodiff graph (the model is not on an
    /// autodiff device, or the loss was detached): burn's `backward` would
    /// panic.
    NotTracked,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Read(e) => write!(f, "burn: reading a tensor failed: {e}"),
            Self::Frog(e) => write!(f, "{e}"),
            Self::Unsupported(what) => write!(f, "FROG cannot precondition {what}; leave the layer unregistered (it then takes the plain-SGD path)"),
            Self::Registered(what) => write!(f, "{what}: layers are registered once, before the first step, which registers every trainable parameter"),
            Self::NotTracked => write!(f, "the loss is not on an autodiff graph (is the model on an autodiff device?)"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Frog(e) => Some(e),
            _ => None,
        }
    }
}

impl From<HostError> for Error {
    fn from(e: HostError) -> Self {
        Self::Frog(e)
    }
}

/// The crate's result.
pub type Result<T, E = Error> = std::result::Result<T, E>;
