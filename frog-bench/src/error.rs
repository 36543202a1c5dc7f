//! The engine's error: a message that says what failed and where.

use std::fmt;

/// Any failure of the bench: bad flags, unreadable data, a device or
/// optimizer error. The message is meant for the user as is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Error(String);

impl Error {
    /// An error with this message.
    pub fn new(msg: impl Into<String>) -> Self {
        Self(msg.into())
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

impl<E: fmt::Display> From<frog_core::Error<E>> for Error {
    fn from(e: frog_core::Error<E>) -> Self {
        Self(e.to_string())
    }
}

/// Shorthand for results of the bench.
pub type Result<T> = std::result::Result<T, Error>;
