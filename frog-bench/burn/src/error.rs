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
    /// FROG (frog-cpu's host route) refused a call or its backend failed;
    /// a wrong length names the layer (`layer0`, ...) or plain parameter
    /// (`param0`, ...).
    Frog(HostError),
    /// Autograd gave no gradient for a tensor FROG needs: it is not on the
    /// loss's graph (a parameter the loss does not use, or a tap from
    /// another forward pass than the loss's).
    MissingGrad(String),
    /// A registered layer was not run through its [`crate::Taps`] in the
    /// loss's forward pass, so its input is unknown.
    NotApplied(String),
    /// The taps' recorded inputs are of different batches.
    Batch {
        /// The layer.
        name: String,
        /// Its input's batch (first dimension).
        batch: usize,
        /// The first layer's.
        first: usize,
    },
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
    /// The loss is not finite, or has grown past the divergence factor
    /// times the first loss: the learning rate is too high for the model
    /// (see [`crate::ParamsFrog::divergence`]).
    Diverged {
        /// The loss.
        loss: f64,
        /// The first loss the optimizer saw.
        first: f64,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Read(e) => write!(f, "burn: reading a tensor failed: {e}"),
            Self::Frog(e) => write!(f, "{e}"),
            Self::MissingGrad(what) => write!(f, "no gradient for {what}: it is not on the loss's graph"),
            Self::NotApplied(name) => write!(f, "{name} was not run through Taps in the loss's forward pass"),
            Self::Batch { name, batch, first } => write!(f, "{name}: input of a batch of {batch}, the first layer's is of {first}"),
            Self::Unsupported(what) => write!(f, "FROG cannot precondition {what}; leave the layer unregistered (it then takes the plain-SGD path)"),
            Self::Registered(what) => write!(f, "{what}: layers are registered once, before the first step, which registers every trainable parameter"),
            Self::NotTracked => write!(f, "the loss is not on an autodiff graph (is the model on an autodiff device?)"),
            Self::Diverged { loss, first } => write!(
                f,
                "FROG diverged: loss {loss} (first loss {first}); lower the learning rate (0.01 is a safe start), or turn the check off with ParamsFrog::divergence = None"
            ),
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

impl From<frog_cpu::CpuError> for Error {
    fn from(e: frog_cpu::CpuError) -> Self {
        Self::Frog(e.into())
    }
}

/// The crate's result.
pub type Result<T, E = Error> = std::result::Result<T, E>;
