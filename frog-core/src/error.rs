//! Error values: every invalid input gets its own, never a panic or a NaN.

use core::fmt;

use crate::backend::{BackendError, BackendErrorKind};
use crate::collective::CollectiveError;
use crate::config::ConfigError;
use crate::optimizer::{ParamName, RegistryError};
use crate::state::StateError;

/// Mismatched shapes and lengths between layer, buffers, workspace and state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ShapeError {
    /// A layer dimension, stride or dilation is zero.
    ZeroDimension,
    /// The kernel does not fit the padded input.
    EmptyOutput,
    /// A buffer has the wrong number of entries.
    BufferLength {
        /// Which buffer.
        what: &'static str,
        /// Entries required.
        expected: usize,
        /// Entries given.
        actual: usize,
    },
    /// More sampled rows than the batch has samples.
    SampleExceedsBatch {
        /// Sampled rows given.
        sample: usize,
        /// Batch size.
        batch: usize,
    },
    /// No sampled rows, or an empty batch.
    EmptySample,
    /// The workspace was sized for a smaller layer or sample.
    WorkspaceTooSmall {
        /// Which part of the workspace.
        what: &'static str,
        /// Entries required.
        required: usize,
        /// Entries available.
        available: usize,
    },
    /// A bias buffer was given for a layer without bias, or none for one with.
    BiasMismatch,
    /// The parameter state belongs to a parameter of another size.
    StateMismatch {
        /// Entries the parameter has.
        expected: usize,
        /// Entries the state was made for.
        actual: usize,
    },
    /// A size derived from the layer (or the layer and the sample) does not
    /// fit in `usize`: the layer is too large to index.
    TooLarge {
        /// Which size.
        what: &'static str,
    },
    /// An index names no registered entry.
    IndexOutOfRange {
        /// What was indexed.
        what: &'static str,
        /// The index given.
        index: usize,
        /// Entries registered.
        len: usize,
    },
    /// A layer FROG cannot precondition.
    Unsupported {
        /// What is not supported, and what to do instead.
        what: &'static str,
    },
    /// A batch (or an optimizer's largest batch) above
    /// [`crate::MAX_BATCH`]: a draw of the sample takes time linear in the
    /// batch.
    BatchAboveLimit {
        /// Samples in the batch.
        batch: usize,
    },
    /// A batch larger than the optimizer was built for.
    BatchExceedsMax {
        /// Samples in the batch.
        batch: usize,
        /// The largest batch the optimizer takes.
        max: usize,
    },
}

impl fmt::Display for ShapeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ZeroDimension => write!(f, "a layer dimension, stride or dilation is zero"),
            Self::EmptyOutput => write!(f, "the kernel does not fit the padded input"),
            Self::BufferLength { what, expected, actual } => {
                write!(f, "buffer `{what}` has {actual} entries, expected {expected}")
            }
            Self::SampleExceedsBatch { sample, batch } => {
                write!(f, "{sample} sampled rows but the batch has only {batch} samples")
            }
            Self::EmptySample => write!(f, "the sample (or the batch) is empty"),
            Self::WorkspaceTooSmall { what, required, available } => {
                write!(f, "workspace `{what}` holds {available} entries, the step needs {required}")
            }
            Self::BiasMismatch => write!(f, "bias buffers do not match the layer's bias flag"),
            Self::StateMismatch { expected, actual } => {
                write!(f, "state made for {actual} entries used with a parameter of {expected}")
            }
            Self::TooLarge { what } => write!(f, "layer too large to index: {what} overflows usize"),
            Self::IndexOutOfRange { what, index, len } => write!(f, "{what} {index} is out of range ({len} registered)"),
            Self::Unsupported { what } => write!(f, "not supported: {what}"),
            Self::BatchAboveLimit { batch } => {
                write!(f, "batch of {batch} samples is above the limit of {} (2^24): sampling takes time linear in the batch", crate::sampler::MAX_BATCH)
            }
            Self::BatchExceedsMax { batch, max } => {
                write!(f, "batch of {batch} samples exceeds the {max} the optimizer was built for")
            }
        }
    }
}

/// What went wrong, coarsely, for callers that branch on it (kinds may
/// be added, so a `match` needs a wildcard arm).
///
/// ```compile_fail,E0004
/// fn retry(kind: frog_core::ErrorKind) -> bool {
///     use frog_core::ErrorKind::*;
///     match kind {
///         Config | Shape | State | Registry | NonFinite => false,
///         Backend(_) => true,
///     }
/// }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// An invalid hyperparameter.
    Config,
    /// Mismatched shapes or buffer lengths.
    Shape,
    /// A corrupt, truncated or mismatched state buffer.
    State,
    /// A registration or handle the optimizer object cannot take.
    Registry,
    /// A checked input holds infinities or NaNs (a loss scaler's overflow).
    NonFinite,
    /// The backend failed.
    Backend(BackendErrorKind),
    /// A collective failed, or the ranks disagree.
    Collective,
}

/// Every error a FROG call can return.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Error<E> {
    /// An invalid hyperparameter.
    Config(ConfigError),
    /// Mismatched shapes or buffer lengths.
    Shape(ShapeError),
    /// Mismatched shapes or buffer lengths in a step of the optimizer
    /// object, named by the parameter (or layer) it steps.
    Param {
        /// The parameter's registered name.
        name: ParamName,
        /// The mismatch.
        error: ShapeError,
    },
    /// A corrupt, truncated or mismatched state buffer.
    State(StateError),
    /// A registration or handle the optimizer object cannot take.
    Registry(RegistryError),
    /// The opt-in check of a low-precision step found non-finite entries
    /// in an input: with a dynamic loss scale, the scaled backward pass
    /// overflowed, and the caller should skip the step (nothing was
    /// touched) and lower the scale.
    NonFiniteInput {
        /// Which input.
        what: &'static str,
        /// How many of its entries are infinite or NaN.
        entries: usize,
    },
    /// The backend failed.
    Backend(E),
    /// A collective of a distributed step failed, or the ranks disagree.
    Collective(CollectiveError),
}

impl<E: BackendError> Error<E> {
    /// The coarse kind of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Config(_) => ErrorKind::Config,
            Self::Shape(_) | Self::Param { .. } => ErrorKind::Shape,
            Self::State(_) => ErrorKind::State,
            Self::Registry(_) => ErrorKind::Registry,
            Self::NonFiniteInput { .. } => ErrorKind::NonFinite,
            Self::Backend(e) => ErrorKind::Backend(e.kind()),
            Self::Collective(_) => ErrorKind::Collective,
        }
    }
}

impl<E: fmt::Display> fmt::Display for Error<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Config(e) => write!(f, "invalid FROG config: {e}"),
            Self::Shape(e) => write!(f, "shape mismatch: {e}"),
            Self::Param { name, error } => write!(f, "parameter `{name}`: shape mismatch: {error}"),
            Self::State(e) => write!(f, "invalid optimizer state: {e}"),
            Self::Registry(e) => write!(f, "optimizer registry: {e}"),
            Self::NonFiniteInput { what, entries } => {
                write!(f, "`{what}` holds {entries} infinite or NaN entries (a loss-scale overflow: skip the step)")
            }
            Self::Backend(e) => write!(f, "backend error: {e}"),
            Self::Collective(e) => write!(f, "collective: {e}"),
        }
    }
}

/// The source of a backend failure is the backend's error, so that error
/// reports (`anyhow`'s chain, `tracing`) reach its own causes.
impl<E: BackendError> core::error::Error for Error<E> {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        match self {
            Self::Backend(e) => Some(e),
            Self::Collective(e) => Some(e),
            _ => None,
        }
    }
}

impl core::error::Error for ShapeError {}

impl<E> From<ConfigError> for Error<E> {
    fn from(e: ConfigError) -> Self {
        Self::Config(e)
    }
}

impl<E> From<ShapeError> for Error<E> {
    fn from(e: ShapeError) -> Self {
        Self::Shape(e)
    }
}

impl<E> From<StateError> for Error<E> {
    fn from(e: StateError) -> Self {
        Self::State(e)
    }
}

impl<E> From<CollectiveError> for Error<E> {
    fn from(e: CollectiveError) -> Self {
        Self::Collective(e)
    }
}

impl<E> From<RegistryError> for Error<E> {
    fn from(e: RegistryError) -> Self {
        Self::Registry(e)
    }
}
