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
    /// FROG (frog-cpu's host route) refused the step or its backend
    /// failed; a wrong length names the layer (`tap0`, ...) or plain
    /// parameter (`param0`, ...). The refusals every framework optimizer
    /// shares are the route's too: a tap not applied since the last step
    /// ([`HostError::NotApplied`]), a missing gradient
    /// ([`HostError::MissingGrad`]), taps of different batches
    /// ([`HostError::Batch`]) and a diverging loss ([`HostError::Diverged`],
    /// see [`crate::ParamsFrog::divergence`]).
    Frog(HostError),
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
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Candle(e) => write!(f, "candle: {e}"),
            Self::Frog(e) => write!(f, "{e}"),
            Self::Shape { what, expected, actual } => write!(f, "{what} has {actual} entries, its layer needs {expected}"),
            Self::Registered => write!(f, "taps must be added before the first step"),
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
pub type Result<T, E = Error> = std::result::Result<T, E>;
