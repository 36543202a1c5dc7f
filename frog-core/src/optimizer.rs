//! [`Optimizer`]: the one optimizer object, on any backend.
//!
//! It owns what a training loop would otherwise rebuild by hand: every
//! parameter's state, the one workspace sized for the largest registered
//! layer, the sampler, and the parameter groups. It lives in `no_std`
//! without `alloc`: its registries have fixed capacities (`N` parameters,
//! [`MAX_GROUPS`] groups) and every buffer is a backend buffer, allocated
//! while parameters are registered and never during a step.

use core::fmt;
use core::sync::atomic::{AtomicU32, Ordering};

use heapless::{String, Vec};

use crate::adamw::{adamw_step, AdamBackend, AdamState, AdamWConfig};
use crate::backend::Backend;
use crate::config::{Config, NonExhaustive};
use crate::error::{Error, ShapeError};
use crate::guard::{Diagnostics, Guard, GuardBackend};
use crate::kfrog::{kfrog_step, KfrogBackend, KfrogBatch, KfrogConfig, KfrogState};
use crate::layer::Layer;
use crate::lowp::{Half, LowpBackend};
use crate::method::Method;
use crate::sampler::{Sampler, MAX_BATCH};
use crate::sgd::{coupled_sgd, frog_plain, sealed::Operands, SgdConfig};
use crate::state::{ParamState, StateError};
use crate::step::sealed::{Inputs, Weights};
use crate::step::{check_count, step_guarded, Batch, LayerStep, LowpBatch, RowGuard};
use crate::view::ViewBatch;
use crate::workspace::{Workspace, WorkspaceReq};

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
    /// The [`Optimizer`] that returned it (its `id`).
    owner: u32,
    /// Its position in that optimizer's registry.
    index: u32,
}

/// The id of the next optimizer made. Each optimizer takes its own, so
/// that it can tell its handles from another's; 0 is never given out.
/// A 32-bit counter, as `no_std` targets such as `thumbv7em` have no
/// 64-bit atomics.
static NEXT_OPTIMIZER: AtomicU32 = AtomicU32::new(1);

/// A new optimizer id, or an error once every id is taken (ids are never
/// reused, so that no two optimizers share one).
fn next_optimizer_id() -> Result<u32, RegistryError> {
    NEXT_OPTIMIZER.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |id| id.checked_add(1)).map_err(|_| RegistryError::OptimizerIdsExhausted)
}

/// A registered parameter's name, as [`Error::Param`] carries it: a copy
/// of at most [`NAME_LEN`] bytes, so that errors stay allocation-free.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ParamName(String<NAME_LEN>);

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

/// A parameter group, returned by [`Optimizer::add_group`];
/// [`GroupId::DEFAULT`] is the group the optimizer was made with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GroupId(pub(crate) u8);

impl GroupId {
    /// The group of the method given to [`Optimizer::new`].
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
    /// A layer: preconditioned in a FROG group, stepped as two plain
    /// parameters (weight, bias) in any other.
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
    /// [`Optimizer::sample`]: its rows cannot be the drawn ones.
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
    /// A parameter of an AdamW group stepped on views: AdamW's kernel
    /// takes backend buffers.
    NeedsBuffers(u32),
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
            Self::NeedsBuffers(p) => write!(f, "parameter {p} is in an AdamW group, whose steps take backend buffers (step_layer, step_param), not views"),
        }
    }
}

impl core::error::Error for RegistryError {}

/// Settings a parameter group on backend `B` can run: what
/// [`Optimizer::new`] and [`Optimizer::add_group`] take. Implemented by
/// [`Config`] (FROG) and [`SgdConfig`] on every backend, by [`AdamWConfig`]
/// on an [`AdamBackend`], by [`KfrogConfig`] on a [`KfrogBackend`], and by
/// [`Method`] on a backend with both, so that a group a backend cannot run
/// does not compile (rather than fail when made). Sealed.
///
/// Any backend makes FROG and SGD groups:
///
/// ```
/// fn groups<B: frog_core::Backend>(opt: &mut frog_core::Optimizer<B, 4>) {
///     let _ = opt.add_group(frog_core::Config::default());
///     let _ = opt.add_group(frog_core::SgdConfig::default());
/// }
/// ```
///
/// ```compile_fail,E0277
/// // A backend without `AdamBackend` cannot make an AdamW group.
/// fn adamw_group<B: frog_core::Backend>(opt: &mut frog_core::Optimizer<B, 4>) {
///     let _ = opt.add_group(frog_core::AdamWConfig::default());
/// }
/// ```
pub trait IntoMethod<B: Backend>: sealed::IntoMethod<B> {}

impl<B: Backend> IntoMethod<B> for Config {}
impl<B: Backend> IntoMethod<B> for SgdConfig {}
impl<B: AdamBackend> IntoMethod<B> for AdamWConfig {}
impl<B: KfrogBackend> IntoMethod<B> for KfrogConfig {}
impl<B: AdamBackend + KfrogBackend> IntoMethod<B> for Method {}

/// The steps of the extension-trait methods on one backend, as
/// [`IntoMethod`] hands them over.
#[derive(Clone, Copy)]
pub struct ExtensionSteps<B: Backend> {
    adam: Option<AdamStep<B>>,
    kfrog: Option<KfrogStep<B>>,
}

impl<B: Backend> ExtensionSteps<B> {
    const NONE: Self = Self { adam: None, kfrog: None };
    fn adam() -> Self
    where
        B: AdamBackend,
    {
        Self { adam: Some(adamw_step::<B>), kfrog: None }
    }
    fn kfrog() -> Self
    where
        B: KfrogBackend,
    {
        Self { adam: None, kfrog: Some(kfrog_step::<B>) }
    }
}

/// The call behind [`IntoMethod`] (public in a private module: callers
/// can name the trait, not implement it).
pub(crate) mod sealed {
    use super::*;

    /// The method, with the steps of this backend it needs.
    pub trait IntoMethod<B: Backend> {
        /// The group's method and its extension steps.
        fn into_method(self) -> (Method, ExtensionSteps<B>);
    }

    impl<B: Backend> IntoMethod<B> for Config {
        fn into_method(self) -> (Method, ExtensionSteps<B>) {
            (Method::Frog(self), ExtensionSteps::NONE)
        }
    }

    impl<B: Backend> IntoMethod<B> for SgdConfig {
        fn into_method(self) -> (Method, ExtensionSteps<B>) {
            (Method::Sgd(self), ExtensionSteps::NONE)
        }
    }

    impl<B: AdamBackend> IntoMethod<B> for AdamWConfig {
        fn into_method(self) -> (Method, ExtensionSteps<B>) {
            (Method::AdamW(self), ExtensionSteps::adam())
        }
    }

    impl<B: KfrogBackend> IntoMethod<B> for KfrogConfig {
        fn into_method(self) -> (Method, ExtensionSteps<B>) {
            (Method::Kfrog(self), ExtensionSteps::kfrog())
        }
    }

    impl<B: AdamBackend + KfrogBackend> IntoMethod<B> for Method {
        fn into_method(self) -> (Method, ExtensionSteps<B>) {
            match self {
                Method::AdamW(c) => <AdamWConfig as IntoMethod<B>>::into_method(c),
                Method::Kfrog(c) => <KfrogConfig as IntoMethod<B>>::into_method(c),
                m => (m, ExtensionSteps::NONE),
            }
        }
    }
}

/// One step's sample, as [`Optimizer::sample`] drew it: the increasing
/// indices of the rows to gather from the full batch (it derefs to them),
/// and the size of that batch. It builds every layer's batch
/// ([`Sample::batch`], [`Sample::lowp_batch`], [`Sample::view_batch`]), so
/// that the counts a step sees are the draw's rather than restated by
/// hand; the optimizer refuses a FROG step whose counts are not.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sample<'a> {
    indices: &'a [usize],
    batch_size: usize,
}

impl<'a> Sample<'a> {
    /// The drawn row indices, increasing.
    pub fn indices(&self) -> &'a [usize] {
        self.indices
    }

    /// Samples in the full batch the rows were drawn from.
    pub fn batch_size(&self) -> usize {
        self.batch_size
    }

    /// A layer's [`Batch`] of this sample: `x` and `y` hold the drawn rows,
    /// in this order.
    pub fn batch<'b, B: Backend>(&self, x: &'b B::Buffer, y: &'b B::Buffer) -> Batch<'b, B> {
        Batch { x, y, sample: self.indices.len(), batch_size: self.batch_size }
    }

    /// [`Sample::batch`] in the 16-bit type `H` (see [`LowpBatch::check_y`]).
    pub fn lowp_batch<'b, B: LowpBackend<H>, H: Half>(&self, x: &'b B::LowpBuffer, y: &'b B::LowpBuffer, check_y: bool) -> LowpBatch<'b, B, H> {
        LowpBatch { x, y, sample: self.indices.len(), batch_size: self.batch_size, check_y }
    }

    /// [`Sample::batch`] as views.
    pub fn view_batch<'b, B: Backend>(&self, x: B::View<'b>, y: B::View<'b>) -> ViewBatch<'b, B> {
        ViewBatch { x, y, sample: self.indices.len(), batch_size: self.batch_size }
    }
}

impl core::ops::Deref for Sample<'_> {
    type Target = [usize];
    fn deref(&self) -> &[usize] {
        self.indices
    }
}

/// A parameter's state: FROG's and SGD's momentum state, or AdamW's
/// moments, as its group's method needs.
pub(crate) enum SlotState<B: Backend> {
    Momentum(ParamState<B>),
    Adam(AdamState<B>),
    Kfrog(KfrogState<B>),
}

impl<B: Backend> SlotState<B> {
    /// The state of a plain parameter (or of a layer's weight or bias
    /// outside FROG and K-FROG groups).
    fn new(backend: &B, method: &Method, len: usize) -> Result<Self, B::Error> {
        Ok(match method {
            Method::AdamW(c) => Self::Adam(AdamState::new(backend, len, c.amsgrad)?),
            m => Self::Momentum(ParamState::new(backend, len, m.momentum() > 0.0)?),
        })
    }

    pub(crate) fn export_len(&self) -> usize {
        match self {
            Self::Momentum(s) => s.export_len(),
            Self::Adam(s) => s.export_len(),
            Self::Kfrog(s) => s.export_len(),
        }
    }

    pub(crate) fn export(&self, backend: &B, out: &mut [u8]) -> Res<usize, B> {
        match self {
            Self::Momentum(s) => s.export(backend, out),
            Self::Adam(s) => s.export(backend, out),
            Self::Kfrog(s) => s.export(backend, out),
        }
    }

    pub(crate) fn check_bytes(&self, bytes: &[u8]) -> Result<u64, crate::state::StateError> {
        match self {
            Self::Momentum(s) => s.check_bytes(bytes),
            Self::Adam(s) => s.check_bytes(bytes),
            Self::Kfrog(s) => s.check_bytes(bytes),
        }
    }

    pub(crate) fn apply_bytes(&mut self, backend: &B, bytes: &[u8], steps: u64) -> Result<(), B::Error> {
        match self {
            Self::Momentum(s) => s.apply_bytes(backend, bytes, steps),
            Self::Adam(s) => s.apply_bytes(backend, bytes, steps),
            Self::Kfrog(s) => s.apply_bytes(backend, bytes, steps),
        }
    }

    fn len(&self) -> usize {
        match self {
            Self::Momentum(s) => s.len(),
            Self::Adam(s) => s.len(),
            Self::Kfrog(s) => s.weight.len(),
        }
    }

    /// Checks that the state can take one more step, before a call that
    /// steps several states writes any of them.
    fn check_steps(&self) -> Result<(), StateError> {
        let steps = match self {
            Self::Momentum(s) => s.steps(),
            Self::Adam(s) => s.steps(),
            Self::Kfrog(s) => s.steps(),
        };
        steps.checked_add(1).map(drop).ok_or(StateError::StepsExhausted)
    }
}

impl<B: Backend> fmt::Debug for SlotState<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Momentum(s) => s.fmt(f),
            Self::Adam(s) => s.fmt(f),
            Self::Kfrog(s) => s.fmt(f),
        }
    }
}

/// One registered entry.
pub(crate) struct Slot<B: Backend> {
    pub(crate) name: String<NAME_LEN>,
    pub(crate) group: GroupId,
    pub(crate) kind: ParamKind,
    /// A FROG layer's joint `R x D'` state; otherwise the weight's (or the
    /// plain parameter's).
    pub(crate) state: SlotState<B>,
    /// A layer's bias state outside FROG groups.
    pub(crate) bias: Option<SlotState<B>>,
}

impl<B: Backend> fmt::Debug for Slot<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &mut f.debug_struct("Param");
        s.field("name", &self.name.as_str()).field("group", &self.group).field("kind", &self.kind).field("state", &self.state).field("bias", &self.bias).finish()
    }
}

/// The optimizer object: FROG, SGD (and later optimizers) over registered
/// parameters in groups, on backend `B`, for at most `N` parameters.
///
/// It holds buffers of a backend but not the backend itself: every call
/// that touches buffers takes it, as frog-core's free functions do, so a
/// backend that cannot be cloned (a device context) serves the optimizer
/// and the rest of the training loop alike. Pass the backend that made
/// the buffers.
///
/// A training step draws the sample with [`Optimizer::sample`] (one sample
/// serves every layer of the step), keeps those samples' inputs and output
/// gradients in the forward and backward pass ([`crate::gather_rows`]
/// takes them from full-batch buffers on the device), then calls
/// [`Optimizer::step_layer`] for every layer and [`Optimizer::step_param`]
/// for every other parameter. Steps never allocate.
///
/// Groups work as PyTorch's parameter groups: each has its own method and
/// settings (for example `weight_decay = 0` for biases and BatchNorm).
/// To leave a layer out of preconditioning, register its weight and bias
/// with [`Optimizer::add_param`]: they take the group's plain path.
pub struct Optimizer<B: Backend, const N: usize> {
    /// The id its [`ParamId`]s carry.
    id: u32,
    pub(crate) groups: Vec<Method, MAX_GROUPS>,
    /// Each group's rate as made ([`Optimizer::set_lr`] keeps their
    /// ratios); the program's, as registrations are, so no checkpoint
    /// holds them.
    base_lr: [f64; MAX_GROUPS],
    pub(crate) slots: Vec<Slot<B>, N>,
    workspace: Option<Workspace<B>>,
    pub(crate) sampler: Sampler,
    max_batch: usize,
    /// The FROG groups' shared sample size (`None` until a FROG group exists).
    sample_size: Option<Option<usize>>,
    /// The last [`Optimizer::sample`]'s `(rows, batch)`: a FROG step's
    /// batch must have these counts (`None` before the first draw).
    drawn: Option<(usize, usize)>,
    /// The opt-in guard, with the guard's row check of this backend (taken
    /// when the guard is set, so that only [`Optimizer::set_guard`] needs
    /// [`GuardBackend`]).
    guard: Option<(Guard, RowGuard<B>)>,
    /// [`adamw_step`] of this backend, once an AdamW group exists.
    adam: Option<AdamStep<B>>,
    /// [`kfrog_step`] of this backend, once a K-FROG group exists.
    kfrog: Option<KfrogStep<B>>,
}

/// The groups, the registered parameters with their states' sizes and
/// step counts, the guard and the workspace's sizes; no buffer (a
/// backend's buffers need not be `Debug`).
impl<B: Backend, const N: usize> fmt::Debug for Optimizer<B, N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Optimizer")
            .field("groups", &self.groups)
            .field("params", &self.slots)
            .field("max_batch", &self.max_batch)
            .field("guard", &self.guard.as_ref().map(|(g, _)| g))
            .field("workspace", &self.workspace)
            .finish_non_exhaustive()
    }
}

type Res<T, B> = Result<T, Error<<B as Backend>::Error>>;

/// [`adamw_step`] for one backend.
type AdamStep<B> = fn(&B, &AdamWConfig, &mut AdamState<B>, &mut <B as Backend>::Buffer, &<B as Backend>::Buffer) -> Res<(), B>;

/// [`kfrog_step`] for one backend.
type KfrogStep<B> = for<'a> fn(&B, &KfrogConfig, &Layer, &mut KfrogState<B>, &mut Workspace<B>, &mut <B as Backend>::Buffer, &<B as Backend>::Buffer, KfrogBatch<'a, B>) -> Res<(), B>;

impl<B: Backend, const N: usize> Optimizer<B, N> {
    /// An optimizer whose default group runs `method` (any settings struct,
    /// or a [`Method`]; see [`IntoMethod`]), for batches of at most
    /// `max_batch` samples; `seed` fixes the sampling. It allocates nothing
    /// until parameters are registered.
    ///
    /// Errors: settings [`Method::validate_for`] rejects in the backend's
    /// scalar type, and `max_batch` of 0 or above [`MAX_BATCH`].
    pub fn new(method: impl IntoMethod<B>, max_batch: usize, seed: u64) -> Res<Self, B> {
        let mut opt = Self::empty(max_batch, seed)?;
        opt.add_group(method)?;
        Ok(opt)
    }

    fn empty(max_batch: usize, seed: u64) -> Res<Self, B> {
        if max_batch == 0 {
            return Err(ShapeError::EmptySample.into());
        }
        if max_batch > MAX_BATCH {
            return Err(ShapeError::BatchAboveLimit { batch: max_batch }.into());
        }
        Ok(Self {
            id: next_optimizer_id()?,
            groups: Vec::new(),
            base_lr: [0.0; MAX_GROUPS],
            slots: Vec::new(),
            workspace: None,
            sampler: Sampler::new(seed),
            max_batch,
            sample_size: None,
            drawn: None,
            guard: None,
            adam: None,
            kfrog: None,
        })
    }

    /// A new parameter group running `method` (any settings struct, or a
    /// [`Method`]; see [`IntoMethod`]). A K-FROG group's layers step with
    /// [`Optimizer::step_layer_kfrog`] on samples from
    /// [`Optimizer::sample_kfrog`]; its plain parameters take momentum SGD
    /// at the same rate, without decay, as in the original.
    pub fn add_group(&mut self, method: impl IntoMethod<B>) -> Res<GroupId, B> {
        let (method, steps) = method.into_method();
        let id = self.push_group(method)?;
        // A step of this backend for each extension-trait method, kept
        // where the bound was seen (every later step needs only `Backend`).
        self.adam = self.adam.or(steps.adam);
        self.kfrog = self.kfrog.or(steps.kfrog);
        Ok(id)
    }

    /// Adds a group; a refused one changes nothing (the shared sample size
    /// is set only once the group is in).
    fn push_group(&mut self, method: Method) -> Res<GroupId, B> {
        method.validate_for::<B::Scalar>()?;
        let sample_size = match (method.frog(), self.sample_size) {
            (Some(cfg), Some(s)) if s != cfg.sample_size => return Err(RegistryError::SampleSizeMismatch.into()),
            (Some(cfg), _) => Some(cfg.sample_size),
            (None, s) => s,
        };
        let id = GroupId(self.groups.len() as u8);
        self.groups.push(method).map_err(|_| RegistryError::TooManyGroups)?;
        self.base_lr[usize::from(id.0)] = method.lr();
        self.sample_size = sample_size;
        Ok(id)
    }

    /// Registers a layer named `name` in `group`: preconditioned when the
    /// group runs FROG (the workspace grows to cover it), two plain
    /// parameters otherwise.
    ///
    /// Errors: a layer [`Layer::validate`] rejects (grouped convolutions
    /// among them), an unknown group, a name too long or taken, a full
    /// registry, and memory the backend cannot allocate. A failed call
    /// changes nothing: everything is checked, then the grown workspace
    /// and the new state are allocated beside the old, and only then
    /// committed.
    pub fn add_layer(&mut self, backend: &B, name: &str, layer: Layer, group: GroupId) -> Res<ParamId, B> {
        layer.validate()?;
        let (method, name) = self.check_registration(name, group)?;
        let rows = layer.rows();
        let (workspace, state, bias) = match method {
            Method::Frog(cfg) => {
                let workspace = self.grown_workspace(backend, WorkspaceReq::new(backend, &layer, cfg.sample_rows(self.max_batch))?)?;
                let mut state = ParamState::for_layer(backend, &layer, &cfg).map_err(Error::Backend)?;
                if self.guard.is_some() {
                    state.enable_diagnostics(backend, &layer)?;
                }
                (workspace, SlotState::Momentum(state), None)
            }
            Method::Kfrog(cfg) => {
                if layer.bias {
                    return Err(ShapeError::Unsupported { what: "a bias on a K-FROG layer (the original has none): register the bias as a plain parameter" }.into());
                }
                let need = WorkspaceReq::new(backend, &layer, cfg.sample_size.map_or(self.max_batch, |s| s.min(self.max_batch)))?;
                let workspace = self.grown_workspace(backend, need)?;
                (workspace, SlotState::Kfrog(KfrogState::new(backend, &layer, &cfg).map_err(Error::Backend)?), None)
            }
            m => {
                let weight = SlotState::new(backend, &m, rows * layer.weight_cols()).map_err(Error::Backend)?;
                let bias = if layer.bias { Some(SlotState::new(backend, &m, rows).map_err(Error::Backend)?) } else { None };
                (None, weight, bias)
            }
        };
        let id = self.push(Slot { name, group, kind: ParamKind::Layer(layer), state, bias })?;
        if workspace.is_some() {
            self.workspace = workspace;
        }
        Ok(id)
    }

    /// Registers a plain parameter of `len` entries named `name` in
    /// `group` (FROG's plain-SGD path in a FROG group). Errors as
    /// [`Optimizer::add_layer`].
    pub fn add_param(&mut self, backend: &B, name: &str, len: usize, group: GroupId) -> Res<ParamId, B> {
        let (method, name) = self.check_registration(name, group)?;
        let state = SlotState::new(backend, &method, len).map_err(Error::Backend)?;
        self.push(Slot { name, group, kind: ParamKind::Plain { len }, state, bias: None })
    }

    /// The checks of a registration that need no allocation: the group
    /// (its method returned), the name (returned as stored), a free slot.
    fn check_registration(&self, name: &str, group: GroupId) -> Result<(Method, String<NAME_LEN>), RegistryError> {
        let method = *self.method(group)?;
        if self.find(name).is_some() {
            return Err(RegistryError::DuplicateName);
        }
        let name = String::try_from(name).map_err(|_| RegistryError::NameTooLong { len: name.len() })?;
        if self.slots.is_full() {
            return Err(RegistryError::Full { capacity: N });
        }
        Ok((method, name))
    }

    fn push(&mut self, slot: Slot<B>) -> Res<ParamId, B> {
        let id = self.param_id(self.slots.len());
        self.slots.push(slot).map_err(|_| RegistryError::Full { capacity: N })?;
        Ok(id)
    }

    /// A workspace covering the current one and `need`, allocated beside
    /// the current one (committed by the caller once nothing else can
    /// fail); `None` when the current one covers `need`.
    fn grown_workspace(&self, backend: &B, need: WorkspaceReq) -> Res<Option<Workspace<B>>, B> {
        let have = self.workspace.as_ref().map(|ws| ws.req);
        let want = have.unwrap_or_default().union(need);
        if have == Some(want) {
            return Ok(None);
        }
        Ok(Some(Workspace::new(backend, want).map_err(Error::Backend)?))
    }

    /// The registered parameter named `name`.
    pub fn find(&self, name: &str) -> Option<ParamId> {
        self.slots.iter().position(|s| s.name == name).map(|i| self.param_id(i))
    }

    /// The handle of registry position `index` (below `N`, so it fits `u32`).
    fn param_id(&self, index: usize) -> ParamId {
        ParamId { owner: self.id, index: index as u32 }
    }

    fn method(&self, group: GroupId) -> Result<&Method, RegistryError> {
        self.groups.get(usize::from(group.0)).ok_or(RegistryError::UnknownGroup(group.0))
    }

    fn slot(&self, id: ParamId) -> Result<&Slot<B>, RegistryError> {
        let slot = if id.owner == self.id { self.slots.get(id.index as usize) } else { None };
        slot.ok_or(RegistryError::UnknownParam(id.index))
    }

    /// The settings of `group`.
    pub fn group(&self, group: GroupId) -> Res<&Method, B> {
        Ok(self.method(group)?)
    }

    /// Sets the base learning rate (a schedule's step), as a PyTorch
    /// scheduler does: the default group's rate becomes `lr`, and every
    /// group keeps its ratio to it as made (at [`Optimizer::new`] and
    /// `add_group`). Groups made at `0.1` and `0.01` run at `0.05` and
    /// `0.005` after `set_lr(0.05)`; a group made at the default group's
    /// rate runs at `lr` exactly. When the default group was made at rate
    /// 0 there is no ratio to keep, and every group runs at `lr`. A rate
    /// some group's settings reject changes nothing.
    pub fn set_lr(&mut self, lr: f64) -> Res<(), B> {
        let base = self.base_lr[0];
        let rate = |g: usize| {
            let made = self.base_lr[g];
            if made == base || base == 0.0 {
                lr
            } else {
                made * (lr / base)
            }
        };
        for (g, m) in self.groups.iter().enumerate() {
            m.with_lr(rate(g)).validate_for::<B::Scalar>()?;
        }
        for (g, m) in self.groups.iter_mut().enumerate() {
            *m = m.with_lr(rate(g));
        }
        Ok(())
    }

    /// Sets `group`'s learning rate, until the next [`Optimizer::set_lr`]
    /// (which rates groups by their rates as made); a rejected rate
    /// changes nothing.
    pub fn set_group_lr(&mut self, group: GroupId, lr: f64) -> Res<(), B> {
        let m = self.method(group)?.with_lr(lr);
        m.validate_for::<B::Scalar>()?;
        self.groups[usize::from(group.0)] = m;
        Ok(())
    }

    /// Sampled rows of a batch of `batch` samples: the length of the slice
    /// [`Optimizer::sample`] fills (`batch` when no group runs FROG).
    pub fn sample_rows(&self, batch: usize) -> usize {
        self.sample_size.flatten().map_or(batch, |s| s.min(batch))
    }

    /// Draws this step's sample of a batch of `batch` samples into the
    /// front of `out` (at least [`Optimizer::sample_rows`] entries):
    /// increasing indices, all of them when the sample covers the batch.
    ///
    /// The [`Sample`] fixes the step's counts: gather its rows
    /// ([`crate::gather_rows`] takes it as the indices) and build every
    /// layer's batch from it ([`Sample::batch`] and its twins). Once a
    /// sample is drawn, a FROG step whose batch has other counts (another
    /// batch size, another sample size) is refused as
    /// [`RegistryError::NotTheSample`], before anything changes.
    pub fn sample<'a>(&mut self, batch: usize, out: &'a mut [usize]) -> Res<Sample<'a>, B> {
        self.check_batch(batch)?;
        let indices = self.sampler.sample(batch, self.sample_size.flatten(), out)?;
        self.drawn = Some((indices.len(), batch));
        Ok(Sample { indices, batch_size: batch })
    }

    /// Refuses a batch larger than the optimizer was built for.
    fn check_batch(&self, batch: usize) -> Result<(), ShapeError> {
        if batch > self.max_batch {
            return Err(ShapeError::BatchExceedsMax { batch, max: self.max_batch });
        }
        Ok(())
    }

    /// One step of registered layer `id`: FROG's preconditioned step in a
    /// FROG group (`batch` required; guarded when [`Optimizer::set_guard`]
    /// turned the guard on), the group's plain step of weight and bias
    /// otherwise (`batch` unused: `None::<Batch<B>>`).
    ///
    /// `params` are [`crate::Params`] (buffers) or [`crate::ViewParams`] (views of
    /// the caller's storage), `batch` a [`Batch`], [`crate::ViewBatch`] or
    /// [`crate::LowpBatch`] (16-bit inputs, on a [`crate::LowpBackend`]),
    /// as [`crate::frog_step`] takes them. AdamW groups step on buffers
    /// only ([`RegistryError::NeedsBuffers`]).
    ///
    /// A shape error names the layer: [`Error::Param`] (as do those of
    /// every step of the optimizer object).
    pub fn step_layer(&mut self, backend: &B, id: ParamId, params: impl crate::step::Weights<B>, batch: Option<impl crate::step::Inputs<B>>) -> Res<(), B> {
        let res = self.step_layer_with(backend, id, params, batch.as_ref());
        self.named(id, res)
    }

    /// `res` with a shape error named by parameter `id`'s registered name
    /// ([`Error::Param`]), so that a mismatch says which parameter.
    fn named<T>(&self, id: ParamId, res: Res<T, B>) -> Res<T, B> {
        res.map_err(|e| match (e, self.slot(id)) {
            (Error::Shape(error), Ok(slot)) => Error::Param { name: ParamName(slot.name.clone()), error },
            (e, _) => e,
        })
    }

    fn step_layer_with(&mut self, backend: &B, id: ParamId, params: impl Weights<B>, batch: Option<&impl Inputs<B>>) -> Res<(), B> {
        let slot = self.slot(id)?;
        let ParamKind::Layer(layer) = slot.kind else { return Err(RegistryError::WrongKind(id.index).into()) };
        if let Some(b) = batch {
            self.check_batch(b.rows().1)?;
        }
        let method = self.groups[usize::from(slot.group.0)];
        let slot = &mut self.slots[id.index as usize];
        match (method, &mut slot.state) {
            (Method::Kfrog(_), _) => Err(RegistryError::WrongMethod(id.index).into()),
            (Method::Frog(cfg), SlotState::Momentum(state)) => {
                let batch = batch.ok_or(RegistryError::NoBatch(id.index))?;
                if let Some((drawn, drawn_batch)) = self.drawn.filter(|&d| d != batch.rows()) {
                    let (sample, batch) = batch.rows();
                    return Err(RegistryError::NotTheSample { drawn, drawn_batch, sample, batch }.into());
                }
                let ws = self.workspace.as_mut().ok_or(RegistryError::NoBatch(id.index))?;
                step_guarded(backend, LayerStep { cfg: &cfg, layer: &layer, state, ws }, params, batch, self.guard)
            }
            (method, state) => {
                // Check the bias pairing and its state before the weight moves.
                match (params.lens(backend).1, &mut slot.bias) {
                    (Some((b, gb)), Some(state)) => {
                        check_count(b, "bias", state.len())?;
                        check_count(gb, "grad_bias", state.len())?;
                        state.check_steps()?;
                    }
                    (None, None) => {}
                    _ => return Err(ShapeError::BiasMismatch.into()),
                }
                let (weight, bias) = params.split();
                plain_step(backend, &method, self.adam, id, state, weight)?;
                match (bias, &mut slot.bias) {
                    (Some(bias), Some(state)) => plain_step(backend, &method, self.adam, id, state, bias),
                    _ => Ok(()),
                }
            }
        }
    }

    /// One step of plain parameter `id`: FROG's plain-SGD path in a FROG
    /// group (at `lr * lr_other_ratio`), the group's step otherwise.
    /// `param` is a [`crate::ParamGrad`] of buffers or a
    /// [`crate::ViewParamGrad`] of views (AdamW groups step on buffers only).
    pub fn step_param(&mut self, backend: &B, id: ParamId, param: impl crate::sgd::Operands<B>) -> Res<(), B> {
        let slot = self.slot(id)?;
        if !matches!(slot.kind, ParamKind::Plain { .. }) {
            return Err(RegistryError::WrongKind(id.index).into());
        }
        let method = self.groups[usize::from(slot.group.0)];
        let res = plain_step(backend, &method, self.adam, id, &mut self.slots[id.index as usize].state, param);
        self.named(id, res)
    }

    /// Draws a K-FROG step's samples for `group`'s layers from the
    /// optimizer's sampler: `sample_size` input rows into `x_out`, then,
    /// independently as in the original, `y_sample_size` output-gradient
    /// rows into `y_out` (each at least its count, or the batch).
    ///
    /// Both outputs are checked before either draw, so a refused call
    /// leaves the sampler where it was.
    pub fn sample_kfrog<'a, 'b>(&mut self, group: GroupId, batch: usize, x_out: &'a mut [usize], y_out: &'b mut [usize]) -> Res<(&'a [usize], &'b [usize]), B> {
        let cfg = match *self.method(group)? {
            Method::Kfrog(cfg) => cfg,
            m => return Err(RegistryError::GroupMethod { group: group.0, runs: m.name(), needs: "K-FROG" }.into()),
        };
        self.check_batch(batch)?;
        Sampler::check(batch, cfg.sample_size, x_out.len())?;
        Sampler::check(batch, cfg.y_sample_size, y_out.len())?;
        let x = self.sampler.sample(batch, cfg.sample_size, x_out)?;
        let y = self.sampler.sample(batch, cfg.y_sample_size, y_out)?;
        Ok((x, y))
    }

    /// One K-FROG step of layer `id` (registered in a K-FROG group).
    pub fn step_layer_kfrog(&mut self, backend: &B, id: ParamId, weight: &mut B::Buffer, grad: &B::Buffer, batch: KfrogBatch<'_, B>) -> Res<(), B> {
        let res = self.step_kfrog_with(backend, id, weight, grad, batch);
        self.named(id, res)
    }

    fn step_kfrog_with(&mut self, backend: &B, id: ParamId, weight: &mut B::Buffer, grad: &B::Buffer, batch: KfrogBatch<'_, B>) -> Res<(), B> {
        let slot = self.slot(id)?;
        let ParamKind::Layer(layer) = slot.kind else { return Err(RegistryError::WrongKind(id.index).into()) };
        self.check_batch(batch.batch_size)?;
        let method = self.groups[usize::from(slot.group.0)];
        match (method, &mut self.slots[id.index as usize].state, self.kfrog, self.workspace.as_mut()) {
            (Method::Kfrog(cfg), SlotState::Kfrog(state), Some(step), Some(ws)) => step(backend, &cfg, &layer, state, ws, weight, grad, batch),
            _ => Err(RegistryError::WrongMethod(id.index).into()),
        }
    }

    /// Turns the opt-in guard on (see [`crate::frog_step`] with a [`Guard`]): every
    /// preconditioned step then records its diagnostics, read with
    /// [`Optimizer::diagnostics`], and replaces the rows `guard` names.
    /// `None` turns it off (steps are then exactly the original's).
    pub fn set_guard(&mut self, backend: &B, guard: Option<Guard>) -> Res<(), B>
    where
        B: GuardBackend,
    {
        if guard.is_some() {
            for slot in &mut self.slots {
                if let (ParamKind::Layer(layer), SlotState::Momentum(state)) = (slot.kind, &mut slot.state) {
                    if self.groups[usize::from(slot.group.0)].frog().is_some() {
                        state.enable_diagnostics(backend, &layer)?;
                    }
                }
            }
        }
        self.guard = guard.map(|g| (g, B::row_guard as RowGuard<B>));
        Ok(())
    }

    /// The diagnostics of layer `id`'s last guarded step (`None` before
    /// one, or for a parameter FROG does not precondition).
    pub fn diagnostics(&self, backend: &B, id: ParamId) -> Res<Option<Diagnostics>, B> {
        match &self.slot(id)?.state {
            SlotState::Momentum(s) => s.diagnostics(backend),
            _ => Ok(None),
        }
    }

    /// The FROG or SGD state of `id` (for a layer outside FROG groups, its
    /// weight's); an AdamW parameter's is [`Optimizer::adam_state`].
    pub fn state(&self, id: ParamId) -> Res<&ParamState<B>, B> {
        match &self.slot(id)?.state {
            SlotState::Momentum(s) => Ok(s),
            _ => Err(RegistryError::WrongKind(id.index).into()),
        }
    }

    /// The AdamW state of `id` (for a layer, its weight's).
    pub fn adam_state(&self, id: ParamId) -> Res<&AdamState<B>, B> {
        match &self.slot(id)?.state {
            SlotState::Adam(s) => Ok(s),
            _ => Err(RegistryError::WrongKind(id.index).into()),
        }
    }

    /// The K-FROG state of layer `id`.
    pub fn kfrog_state(&self, id: ParamId) -> Res<&KfrogState<B>, B> {
        match &self.slot(id)?.state {
            SlotState::Kfrog(s) => Ok(s),
            _ => Err(RegistryError::WrongKind(id.index).into()),
        }
    }

    /// The group `id` was registered in.
    pub fn group_of(&self, id: ParamId) -> Res<GroupId, B> {
        Ok(self.slot(id)?.group)
    }

    /// What `id` is.
    pub fn kind(&self, id: ParamId) -> Res<ParamKind, B> {
        Ok(self.slot(id)?.kind)
    }

    /// The name `id` was registered under.
    pub fn name(&self, id: ParamId) -> Res<&str, B> {
        Ok(self.slot(id)?.name.as_str())
    }

    /// The registered parameters, in registration order.
    pub fn params(&self) -> impl Iterator<Item = ParamId> + '_ {
        (0..self.slots.len()).map(|i| self.param_id(i))
    }

    /// The workspace (the last preconditioned step's trace, direction and
    /// row scale); `None` before a layer joins a FROG group.
    pub fn workspace(&self) -> Option<&Workspace<B>> {
        self.workspace.as_ref()
    }

    /// The largest batch the optimizer takes.
    pub fn max_batch(&self) -> usize {
        self.max_batch
    }
}

/// The step of a parameter FROG does not precondition, by its group's
/// method: FROG's plain-SGD path, SGD, or AdamW.
fn plain_step<B: Backend>(backend: &B, method: &Method, adam: Option<AdamStep<B>>, id: ParamId, state: &mut SlotState<B>, mut ops: impl Operands<B>) -> Res<(), B> {
    match (method, state, adam) {
        (Method::Frog(cfg), SlotState::Momentum(s), _) => frog_plain(backend, cfg, s, ops),
        (Method::Sgd(cfg), SlotState::Momentum(s), _) => coupled_sgd(backend, cfg, true, s, ops),
        (Method::AdamW(cfg), SlotState::Adam(s), Some(step)) => match ops.buffers() {
            Some((param, grad)) => step(backend, cfg, s, param, grad),
            None => Err(RegistryError::NeedsBuffers(id.index).into()),
        },
        (Method::Kfrog(cfg), SlotState::Momentum(s), _) => {
            let sgd = crate::sgd::SgdConfig { lr: cfg.lr, momentum: cfg.momentum, weight_decay: 0.0, nesterov: cfg.nesterov, non_exhaustive: NonExhaustive(()) };
            coupled_sgd(backend, &sgd, true, s, ops)
        }
        // States are made for their group's method, which never changes.
        _ => Err(RegistryError::WrongKind(id.index).into()),
    }
}
