//! The optimizer's registry vocabulary: the handles of registered
//! parameters and groups, their names and kinds, and [`RegistryError`].

use core::fmt;
use core::sync::atomic::{AtomicU32, Ordering};

use heapless::String;

use crate::layer::Layer;

/// Parameter groups an optimizer holds at most.
pub const MAX_GROUPS: usize = 16;
/// Bytes of a parameter's name at most.
pub const NAME_LEN: usize = 64;

/// A registered parameter (or layer), returned by registration; steps and
/// queries name parameters by it, never by position. It belongs to the
/// optimizer that returned it: any other refuses it, rather than step
/// whatever it registered at the same position.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ParamId {
    /// The [`Optimizer`](crate::Optimizer) that returned it (its `id`).
    pub(super) owner: u32,
    /// Its position in that optimizer's registry.
    pub(super) index: u32,
}

/// The id of the next optimizer made. Each optimizer takes its own, so
/// that it can tell its handles from another's; 0 is never given out.
/// A 32-bit counter, as `no_std` targets such as `thumbv7em` have no
/// 64-bit atomics.
static NEXT_OPTIMIZER: AtomicU32 = AtomicU32::new(1);

/// A new optimizer id, or an error once every id is taken (ids are never
/// reused, so that no two optimizers share one).
pub(super) fn next_optimizer_id() -> Result<u32, RegistryError> {
    NEXT_OPTIMIZER.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |id| id.checked_add(1)).map_err(|_| RegistryError::OptimizerIdsExhausted)
}

/// A registered parameter's name, as [`Error::Param`](crate::Error::Param) carries it: a copy
/// of at most [`NAME_LEN`] bytes, so that errors stay allocation-free.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ParamName(pub(super) String<NAME_LEN>);

impl ParamName {
    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ParamName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for ParamName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A parameter group, returned by [`Optimizer::add_group`](crate::Optimizer::add_group);
/// [`GroupId::DEFAULT`] is the group the optimizer was made with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GroupId(pub(crate) u8);

impl GroupId {
    /// The group of the method given to [`Optimizer::new`](crate::Optimizer::new).
    pub const DEFAULT: Self = Self(0);
}

/// What a registered entry is (kinds may be added, so a `match` needs a
/// wildcard arm).
///
/// ```compile_fail,E0004
/// fn is_layer(kind: frog_core::ParamKind) -> bool {
///     match kind {
///         frog_core::ParamKind::Layer(_) => true,
///         frog_core::ParamKind::Plain { .. } => false,
///     }
/// }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ParamKind {
    /// A layer: preconditioned in a FROG group, by its own step in a
    /// K-FROG or Muon group, stepped as two plain parameters (weight,
    /// bias) in any other.
    Layer(Layer),
    /// A plain parameter of `len` entries.
    Plain {
        /// Entries.
        len: usize,
    },
}

/// A registration or step that does not fit the optimizer's registry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RegistryError {
    /// Every one of the optimizer's `capacity` slots is taken.
    Full {
        /// Parameters it holds at most.
        capacity: usize,
    },
    /// All [`MAX_GROUPS`] groups exist.
    TooManyGroups,
    /// A group id this optimizer did not return.
    UnknownGroup(u8),
    /// A parameter id this optimizer did not return (another optimizer
    /// did; its position there).
    UnknownParam(u32),
    /// Every optimizer id has been given out in this process (all but two
    /// of the `u32` values): a new optimizer could not tell its handles
    /// from another's.
    OptimizerIdsExhausted,
    /// A call for one method on a group running another: `sample_kfrog`
    /// on a group that does not run K-FROG.
    GroupMethod {
        /// The group.
        group: u8,
        /// The method it runs.
        runs: &'static str,
        /// The method the call needs.
        needs: &'static str,
    },
    /// A name longer than [`NAME_LEN`] bytes.
    NameTooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// A name registered twice.
    DuplicateName,
    /// A FROG group whose `sample_size` differs from the first FROG
    /// group's: one sample serves every layer of a step.
    SampleSizeMismatch,
    /// A step of the other kind: `step_layer` on a plain parameter, or
    /// `step_param` on a layer.
    WrongKind(u32),
    /// A preconditioned layer stepped without its sampled batch.
    NoBatch(u32),
    /// A FROG step whose batch's counts are not those of the last
    /// [`Optimizer::sample`](crate::Optimizer::sample): its rows cannot be the drawn ones.
    NotTheSample {
        /// Rows drawn.
        drawn: usize,
        /// The batch they were drawn from.
        drawn_batch: usize,
        /// The step batch's `sample`.
        sample: usize,
        /// The step batch's `batch_size`.
        batch: usize,
    },
    /// A K-FROG layer stepped with `step_layer` or a FROG layer with
    /// `step_layer_kfrog`.
    WrongMethod(u32),
    /// A parameter of an AdamW or Muon group stepped on views: their steps
    /// reach the optimizer as functions of backend buffers.
    NeedsBuffers(u32),
    /// What Muon does not step registered in a Muon group: a layer's bias
    /// or a plain parameter (the official Muon refuses parameters that
    /// are not matrices; register them in an SGD or AdamW group).
    MuonMatrixOnly {
        /// What was registered.
        what: &'static str,
    },
    /// A Muon group made from a [`Method`](crate::Method): make it from
    /// its [`MuonConfig`](crate::MuonConfig), whose
    /// [`IntoMethod`](crate::IntoMethod) requires the backend's
    /// [`MatmulBackend`](crate::MatmulBackend).
    MuonFromMethod,
    /// A single-process step, state read or checkpoint of an entry whose
    /// state another rank keeps (the optimizer is sharded: see
    /// [`Optimizer::distributed`](crate::Optimizer::distributed)).
    Elsewhere {
        /// The entry's registry position.
        index: u32,
        /// The rank that owns it.
        owner: usize,
    },
    /// An entry given twice to one
    /// [`Distributed::step_all`](crate::Distributed::step_all): its
    /// gathered rows have room for one step.
    SteppedTwice(u32),
    /// [`Optimizer::distributed`](crate::Optimizer::distributed) again
    /// after a registration, or on a communicator of another shape: the
    /// states this rank freed cannot be had back (restore a checkpoint
    /// into a new optimizer instead).
    Resharded,
}

impl fmt::Display for RegistryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Full { capacity } => write!(f, "the optimizer holds at most {capacity} parameters"),
            Self::TooManyGroups => write!(f, "the optimizer holds at most {MAX_GROUPS} parameter groups"),
            Self::UnknownGroup(g) => write!(f, "group {g} was not made by this optimizer"),
            Self::UnknownParam(p) => write!(f, "parameter {p} was not registered with this optimizer (its handle comes from another)"),
            Self::OptimizerIdsExhausted => write!(f, "every optimizer id has been given out in this process ({} optimizers made)", u32::MAX - 1),
            Self::GroupMethod { group, runs, needs } => write!(f, "group {group} runs {runs}, not {needs}"),
            Self::NameTooLong { len } => write!(f, "parameter name of {len} bytes; at most {NAME_LEN}"),
            Self::DuplicateName => write!(f, "a parameter of this name is already registered"),
            Self::SampleSizeMismatch => write!(f, "every FROG group must have the same sample_size: one sample serves every layer of a step"),
            Self::WrongKind(p) => write!(f, "parameter {p} is of the other kind (step layers with step_layer, plain parameters with step_param)"),
            Self::NoBatch(p) => write!(f, "layer {p} is preconditioned and needs its sampled batch"),
            Self::NotTheSample { drawn, drawn_batch, sample, batch } => {
                write!(f, "a batch of {sample} sampled rows of {batch}, but the last sample drew {drawn} of {drawn_batch}: build the step's batch from its Sample")
            }
            Self::WrongMethod(p) => write!(f, "layer {p} runs another method (K-FROG layers step with step_layer_kfrog, the others with step_layer)"),
            Self::NeedsBuffers(p) => write!(f, "parameter {p} is in an AdamW or Muon group, whose steps take backend buffers (step_layer, step_param), not views"),
            Self::MuonMatrixOnly { what } => write!(f, "{what} in a Muon group: Muon steps matrix weights only (bias-free layers); register it in an SGD or AdamW group"),
            Self::MuonFromMethod => write!(f, "a Muon group made from a Method: make it from its MuonConfig (which checks that the backend has MatmulBackend)"),
            Self::Elsewhere { index, owner } => write!(f, "parameter {index}'s state is on rank {owner} (the optimizer is sharded: step it through distributed())"),
            Self::SteppedTwice(p) => write!(f, "parameter {p} is given twice to one step_all"),
            Self::Resharded => write!(f, "the optimizer was sharded for another communicator or fewer registrations; its freed states cannot be had back"),
        }
    }
}

impl core::error::Error for RegistryError {}
