//! [`Optimizer`]: the one optimizer object, on any backend.
//!
//! It owns what a training loop would otherwise rebuild by hand: every
//! parameter's state, the one workspace sized for the largest registered
//! layer, the sampler, and the parameter groups. It lives in `no_std`
//! without `alloc`: its registries have fixed capacities (`N` parameters,
//! [`MAX_GROUPS`] groups) and every buffer is a backend buffer, allocated
//! while parameters are registered and never during a step.

use core::fmt;

use heapless::{String, Vec};

use crate::backend::Backend;
use crate::error::{Error, ShapeError};
use crate::guard::{Diagnostics, Guard, GuardBackend};
use crate::layer::Layer;
use crate::method::Method;
use crate::sampler::Sampler;
use crate::sgd::{plain_sgd_step, sgd_step};
use crate::state::ParamState;
use crate::lowp::{Half, LowpBackend};
use crate::step::{frog_step, Batch, Inputs, LowpBatch, Params, RowGuard};
use crate::workspace::{Workspace, WorkspaceReq};

/// Parameter groups an optimizer holds at most.
pub const MAX_GROUPS: usize = 16;
/// Bytes of a parameter's name at most.
pub const NAME_LEN: usize = 64;

/// A registered parameter (or layer), returned by registration; steps and
/// queries name parameters by it, never by position.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ParamId(pub(crate) u32);

/// A parameter group, returned by [`Optimizer::add_group`];
/// [`GroupId::DEFAULT`] is the group the optimizer was made with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GroupId(pub(crate) u8);

impl GroupId {
    /// The group of the method given to [`Optimizer::new`].
    pub const DEFAULT: Self = Self(0);
}

/// What a registered entry is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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
    /// A parameter id this optimizer did not return.
    UnknownParam(u32),
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
}

impl fmt::Display for RegistryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Full { capacity } => write!(f, "the optimizer holds at most {capacity} parameters"),
            Self::TooManyGroups => write!(f, "the optimizer holds at most {MAX_GROUPS} parameter groups"),
            Self::UnknownGroup(g) => write!(f, "group {g} was not made by this optimizer"),
            Self::UnknownParam(p) => write!(f, "parameter {p} was not registered with this optimizer"),
            Self::NameTooLong { len } => write!(f, "parameter name of {len} bytes; at most {NAME_LEN}"),
            Self::DuplicateName => write!(f, "a parameter of this name is already registered"),
            Self::SampleSizeMismatch => write!(f, "every FROG group must have the same sample_size: one sample serves every layer of a step"),
            Self::WrongKind(p) => write!(f, "parameter {p} is of the other kind (step layers with step_layer, plain parameters with step_param)"),
            Self::NoBatch(p) => write!(f, "layer {p} is preconditioned and needs its sampled batch"),
        }
    }
}

impl core::error::Error for RegistryError {}

/// One registered entry.
pub(crate) struct Slot<B: Backend> {
    pub(crate) name: String<NAME_LEN>,
    pub(crate) group: GroupId,
    pub(crate) kind: ParamKind,
    /// A FROG layer's joint `R x D'` state; otherwise the weight's (or the
    /// plain parameter's).
    pub(crate) state: ParamState<B>,
    /// A layer's bias state outside FROG groups.
    pub(crate) bias: Option<ParamState<B>>,
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
    pub(crate) groups: Vec<Method, MAX_GROUPS>,
    pub(crate) slots: Vec<Slot<B>, N>,
    workspace: Option<Workspace<B>>,
    pub(crate) sampler: Sampler,
    max_batch: usize,
    /// The FROG groups' shared sample size (`None` until a FROG group exists).
    sample_size: Option<Option<usize>>,
    /// The opt-in guard, with the guard's row check of this backend (taken
    /// when the guard is set, so that only [`Optimizer::set_guard`] needs
    /// [`GuardBackend`]).
    guard: Option<(Guard, RowGuard<B>)>,
}

type Res<T, B> = Result<T, Error<<B as Backend>::Error>>;

impl<B: Backend, const N: usize> Optimizer<B, N> {
    /// An optimizer whose default group runs `method`, for batches of at
    /// most `max_batch` samples; `seed` fixes the sampling. It allocates
    /// nothing until parameters are registered.
    ///
    /// Errors: settings [`Method::validate_for`] rejects in the backend's
    /// scalar type, and `max_batch = 0`.
    pub fn new(method: Method, max_batch: usize, seed: u64) -> Res<Self, B> {
        if max_batch == 0 {
            return Err(ShapeError::EmptySample.into());
        }
        let mut opt = Self {
            groups: Vec::new(),
            slots: Vec::new(),
            workspace: None,
            sampler: Sampler::new(seed),
            max_batch,
            sample_size: None,
            guard: None,
        };
        opt.add_group(method)?;
        Ok(opt)
    }

    /// A new parameter group running `method`.
    pub fn add_group(&mut self, method: Method) -> Res<GroupId, B> {
        method.validate_for::<B::Scalar>()?;
        if let Some(cfg) = method.frog() {
            match self.sample_size {
                Some(s) if s != cfg.sample_size => return Err(RegistryError::SampleSizeMismatch.into()),
                _ => self.sample_size = Some(cfg.sample_size),
            }
        }
        let id = GroupId(self.groups.len() as u8);
        self.groups.push(method).map_err(|_| RegistryError::TooManyGroups)?;
        Ok(id)
    }

    /// Registers a layer named `name` in `group`: preconditioned when the
    /// group runs FROG (the workspace grows to cover it), two plain
    /// parameters otherwise.
    ///
    /// Errors: a layer [`Layer::validate`] rejects (grouped convolutions
    /// among them), an unknown group, a name too long or taken, a full
    /// registry, and memory the backend cannot allocate. A failed call
    /// registers nothing.
    pub fn add_layer(&mut self, backend: &B, name: &str, layer: Layer, group: GroupId) -> Res<ParamId, B> {
        layer.validate()?;
        let method = *self.method(group)?;
        let name = self.check_name(name)?;
        let rows = layer.rows();
        let (state, bias) = match method {
            Method::Frog(cfg) => {
                let need = WorkspaceReq::new(backend, &layer, cfg.sample_rows(self.max_batch))?;
                self.grow_workspace(backend, need)?;
                let mut state = ParamState::for_layer(backend, &layer, &cfg).map_err(Error::Backend)?;
                if self.guard.is_some() {
                    state.enable_diagnostics(backend, &layer)?;
                }
                (state, None)
            }
            Method::Sgd(cfg) => {
                let has = cfg.momentum > 0.0;
                let weight = ParamState::new(backend, rows * layer.weight_cols(), has).map_err(Error::Backend)?;
                let bias = if layer.bias { Some(ParamState::new(backend, rows, has).map_err(Error::Backend)?) } else { None };
                (weight, bias)
            }
        };
        self.push(Slot { name, group, kind: ParamKind::Layer(layer), state, bias })
    }

    /// Registers a plain parameter of `len` entries named `name` in
    /// `group` (FROG's plain-SGD path in a FROG group). Errors as
    /// [`Optimizer::add_layer`].
    pub fn add_param(&mut self, backend: &B, name: &str, len: usize, group: GroupId) -> Res<ParamId, B> {
        let method = *self.method(group)?;
        let name = self.check_name(name)?;
        let state = ParamState::new(backend, len, method.momentum() > 0.0).map_err(Error::Backend)?;
        self.push(Slot { name, group, kind: ParamKind::Plain { len }, state, bias: None })
    }

    fn push(&mut self, slot: Slot<B>) -> Res<ParamId, B> {
        let id = ParamId(self.slots.len() as u32);
        self.slots.push(slot).map_err(|_| RegistryError::Full { capacity: N })?;
        Ok(id)
    }

    fn check_name(&self, name: &str) -> Result<String<NAME_LEN>, RegistryError> {
        if self.find(name).is_some() {
            return Err(RegistryError::DuplicateName);
        }
        String::try_from(name).map_err(|_| RegistryError::NameTooLong { len: name.len() })
    }

    /// Reallocates the workspace when `need` is more than it covers (only
    /// while registering).
    fn grow_workspace(&mut self, backend: &B, need: WorkspaceReq) -> Res<(), B> {
        let have = self.workspace.as_ref().map_or_else(WorkspaceReq::default, |ws| ws.req);
        let want = have.union(need);
        if self.workspace.is_none() || want != have {
            self.workspace = None;
            self.workspace = Some(Workspace::new(backend, want).map_err(Error::Backend)?);
        }
        Ok(())
    }

    /// The registered parameter named `name`.
    pub fn find(&self, name: &str) -> Option<ParamId> {
        self.slots.iter().position(|s| s.name == name).map(|i| ParamId(i as u32))
    }

    fn method(&self, group: GroupId) -> Result<&Method, RegistryError> {
        self.groups.get(usize::from(group.0)).ok_or(RegistryError::UnknownGroup(group.0))
    }

    fn slot(&self, id: ParamId) -> Result<&Slot<B>, RegistryError> {
        self.slots.get(id.0 as usize).ok_or(RegistryError::UnknownParam(id.0))
    }

    /// The settings of `group`.
    pub fn group(&self, group: GroupId) -> Res<&Method, B> {
        Ok(self.method(group)?)
    }

    /// Sets every group's learning rate (a schedule's step); a rate some
    /// group's settings reject changes nothing.
    pub fn set_lr(&mut self, lr: f64) -> Res<(), B> {
        for m in &self.groups {
            m.with_lr(lr).validate_for::<B::Scalar>()?;
        }
        for m in &mut self.groups {
            *m = m.with_lr(lr);
        }
        Ok(())
    }

    /// Sets `group`'s learning rate; a rejected rate changes nothing.
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
    pub fn sample<'a>(&mut self, batch: usize, out: &'a mut [usize]) -> Res<&'a [usize], B> {
        if batch > self.max_batch {
            return Err(ShapeError::BatchExceedsMax { batch, max: self.max_batch }.into());
        }
        Ok(self.sampler.sample(batch, self.sample_size.flatten(), out)?)
    }

    /// One step of registered layer `id`: FROG's preconditioned step in a
    /// FROG group (`batch` required; guarded when [`Optimizer::set_guard`]
    /// turned the guard on), the group's plain step of weight and bias
    /// otherwise (`batch` unused).
    pub fn step_layer(&mut self, backend: &B, id: ParamId, params: Params<'_, B>, batch: Option<Batch<'_, B>>) -> Res<(), B> {
        self.step_layer_with(backend, id, params, batch.as_ref())
    }

    /// [`Optimizer::step_layer`] on sampled inputs and output gradients in
    /// the 16-bit type `H` (see [`crate::precondition_step_lowp`]; guarded
    /// as well when the guard is on).
    pub fn step_layer_lowp<H: Half>(&mut self, backend: &B, id: ParamId, params: Params<'_, B>, batch: Option<LowpBatch<'_, B, H>>) -> Res<(), B>
    where
        B: LowpBackend<H>,
    {
        self.step_layer_with(backend, id, params, batch.as_ref())
    }

    fn step_layer_with(&mut self, backend: &B, id: ParamId, params: Params<'_, B>, batch: Option<&impl Inputs<B>>) -> Res<(), B> {
        let slot = self.slot(id)?;
        let ParamKind::Layer(layer) = slot.kind else { return Err(RegistryError::WrongKind(id.0).into()) };
        let method = self.groups[usize::from(slot.group.0)];
        let slot = &mut self.slots[id.0 as usize];
        match method {
            Method::Frog(cfg) => {
                let batch = batch.ok_or(RegistryError::NoBatch(id.0))?;
                let ws = self.workspace.as_mut().ok_or(RegistryError::NoBatch(id.0))?;
                frog_step(backend, &cfg, &layer, &mut slot.state, ws, params, batch, self.guard)
            }
            Method::Sgd(cfg) => {
                // Check the bias pairing before the weight moves.
                match (&params.bias, &mut slot.bias) {
                    (Some((b, gb)), Some(state)) => {
                        for (what, buf) in [("bias", &**b), ("grad_bias", &**gb)] {
                            let actual = backend.len(buf);
                            if actual != state.len() {
                                return Err(ShapeError::BufferLength { what, expected: state.len(), actual }.into());
                            }
                        }
                    }
                    (None, None) => {}
                    _ => return Err(ShapeError::BiasMismatch.into()),
                }
                sgd_step(backend, &cfg, &mut slot.state, params.weight, params.grad_weight)?;
                match (params.bias, &mut slot.bias) {
                    (Some((b, gb)), Some(state)) => sgd_step(backend, &cfg, state, b, gb),
                    _ => Ok(()),
                }
            }
        }
    }

    /// One step of plain parameter `id`: FROG's plain-SGD path in a FROG
    /// group (at `lr * lr_other_ratio`), the group's step otherwise.
    pub fn step_param(&mut self, backend: &B, id: ParamId, param: &mut B::Buffer, grad: &B::Buffer) -> Res<(), B> {
        let slot = self.slot(id)?;
        if !matches!(slot.kind, ParamKind::Plain { .. }) {
            return Err(RegistryError::WrongKind(id.0).into());
        }
        let method = self.groups[usize::from(slot.group.0)];
        let state = &mut self.slots[id.0 as usize].state;
        match method {
            Method::Frog(cfg) => plain_sgd_step(backend, &cfg, state, param, grad),
            Method::Sgd(cfg) => sgd_step(backend, &cfg, state, param, grad),
        }
    }

    /// Turns the opt-in guard on (see [`crate::guarded_step`]): every
    /// preconditioned step then records its diagnostics, read with
    /// [`Optimizer::diagnostics`], and replaces the rows `guard` names.
    /// `None` turns it off (steps are then exactly the original's).
    pub fn set_guard(&mut self, backend: &B, guard: Option<Guard>) -> Res<(), B>
    where
        B: GuardBackend,
    {
        if guard.is_some() {
            for slot in &mut self.slots {
                if let (ParamKind::Layer(layer), Method::Frog(_)) = (slot.kind, self.groups[usize::from(slot.group.0)]) {
                    slot.state.enable_diagnostics(backend, &layer)?;
                }
            }
        }
        self.guard = guard.map(|g| (g, B::row_guard as RowGuard<B>));
        Ok(())
    }

    /// The diagnostics of layer `id`'s last guarded step (`None` before
    /// one, or for a parameter FROG does not precondition).
    pub fn diagnostics(&self, backend: &B, id: ParamId) -> Res<Option<Diagnostics>, B> {
        self.slot(id)?.state.diagnostics(backend)
    }

    /// The state of `id` (for a layer outside FROG groups, its weight's).
    pub fn state(&self, id: ParamId) -> Res<&ParamState<B>, B> {
        Ok(&self.slot(id)?.state)
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
        (0..self.slots.len() as u32).map(ParamId)
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
