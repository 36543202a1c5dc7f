//! The crate's error: whatever candle, FROG or the data loader reported.

use std::fmt;

/// A failure of the example: candle, FROG (on frog-cpu) or the data.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// A candle operation failed.
    Candle(candle_core::Error),
    /// FROG rejected a call or its backend failed.
    Frog(frog_cpu::FrogError),
    /// The CIFAR-10 data could not be loaded, or a setting is unusable.
    Data(String),
    /// Autograd gave no gradient for a tensor FROG needs (it is not on the
    /// loss's graph).
    MissingGrad(&'static str),
    /// A step was given another number of layer taps than layers were
    /// registered.
    Taps {
        /// Taps given.
        given: usize,
        /// Layers registered.
        registered: usize,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Candle(e) => write!(f, "candle: {e}"),
            Self::Frog(e) => write!(f, "FROG: {e}"),
            Self::Data(e) => write!(f, "data: {e}"),
            Self::MissingGrad(what) => write!(f, "no gradient for {what}: it is not on the loss's graph"),
            Self::Taps { given, registered } => write!(f, "{given} layer taps given, {registered} layers registered"),
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

impl From<frog_cpu::FrogError> for Error {
    fn from(e: frog_cpu::FrogError) -> Self {
        Self::Frog(e)
    }
}

impl From<frog_cpu::CpuError> for Error {
    fn from(e: frog_cpu::CpuError) -> Self {
        Self::Frog(frog_core::Error::Backend(e))
    }
}

impl From<frog_bench::error::Error> for Error {
    fn from(e: frog_bench::error::Error) -> Self {
        Self::Data(e.to_string())
    }
}

/// Shorthand for the crate's results.
pub type Result<T> = std::result::Result<T, Error>;
