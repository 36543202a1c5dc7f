//! The crate's error: whatever candle or FROG reported, or a misuse of the
//! optimizer that the step can name.

use std::fmt;

use frog_cpu::host::HostError;

/// A failure of [`crate::FrogOptimizer`] or of the example network.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// A candle operation failed.
    Candle(candle_core::Error),
    /// FROG (frog-cpu's host route) refused a call or its backend failed;
    /// a wrong length names the layer (`tap0`, ...) or plain parameter
    /// (`param0`, ...).
    Frog(HostError),
    /// Autograd gave no gradient for a tensor FROG needs: it is not on the
    /// loss's graph (a plain parameter the loss does not use, or a tap's
    /// output from another forward pass than the loss's).
    MissingGrad(String),
    /// A tap whose layer was not run through [`crate::Tap::apply`] since
    /// the last step, so its input is unknown.
    NotApplied(String),
    /// The taps' recorded inputs are of different batches.
    Batch {
        /// The tap.
        name: String,
        /// Its input's batch (first dimension).
        batch: usize,
        /// The first tap's.
        first: usize,
    },
    /// A tap's weight or bias does not have the entries its layer needs.
    Shape {
        /// Which `Var`.
        what: &'static str,
        /// Entries the layer needs.
        expected: usize,
        /// Entries of the `Var`.
        actual: usize,
    },
    /// A tap registered after the first step (the plain parameters are
    /// registered then, after every layer).
    Registered,
    /// The loss `backward_step` was given is not finite, or has grown past
    /// the divergence factor times the first loss: the learning rate is too
    /// high for the model (see [`crate::ParamsFrog::divergence`]).
    Diverged {
        /// The loss.
        loss: f64,
        /// The first loss `backward_step` saw.
        first: f64,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Candle(e) => write!(f, "candle: {e}"),
            Self::Frog(e) => write!(f, "{e}"),
            Self::MissingGrad(what) => write!(f, "no gradient for {what}: it is not on the loss's graph"),
            Self::NotApplied(name) => write!(f, "{name} was not applied (Tap::apply) in a forward pass since the last step"),
            Self::Batch { name, batch, first } => write!(f, "{name}: input of a batch of {batch}, the first tap's is of {first}"),
            Self::Shape { what, expected, actual } => write!(f, "{what} has {actual} entries, its layer needs {expected}"),
            Self::Registered => write!(f, "taps must be added before the first step"),
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
            Self::Candle(e) => Some(e),
            Self::Frog(e) => Some(e),
            _ => None,
        }
    }
}

impl From<candle_core::Error> for Error {
    fn from(e: candle_core::Error) -> Self {
        Self::Candle(e)
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

impl From<frog_cpu::FrogError> for Error {
    fn from(e: frog_cpu::FrogError) -> Self {
        Self::Frog(e.into())
    }
}

/// Into candle's error, for candle's `Optimizer` trait, keeping the
/// message (`candle_core::Error::Wrapped` holds it for display only: the
/// optimizer's `try_` methods return [`Error`] itself).
impl From<Error> for candle_core::Error {
    fn from(e: Error) -> Self {
        match e {
            Error::Candle(e) => e,
            e => candle_core::Error::wrap(e),
        }
    }
}

/// Shorthand for the crate's results.
pub type Result<T> = std::result::Result<T, Error>;
