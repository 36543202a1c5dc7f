//! [`Optimizer`]: the one optimizer object, on any backend.
//!
//! It owns what a training loop would otherwise rebuild by hand: every
//! parameter's state, the one workspace sized for the largest registered
//! layer, the sampler, and the parameter groups. It lives in `no_std`
//! without `alloc`: its registries have fixed capacities (`N` parameters,
//! [`MAX_GROUPS`] groups) and every buffer is a backend buffer, allocated
//! while parameters are registered and never during a step.
//!
//! The object and its registration are here; the registry's handles and
//! errors are in `registry`, [`IntoMethod`] in `into_method`, [`Sample`] in
//! `sample`, a registered entry's state in `slot`, and the steps with their
//! dispatch to each group's method in `steps`.

mod distributed;
mod into_method;
mod registry;
mod sample;
mod slot;
mod steps;

pub use distributed::{Distributed, Entry, KfrogShardRows, Shard, ShardRows};
pub use into_method::IntoMethod;
pub use registry::{GroupId, ParamId, ParamKind, ParamName, RegistryError, MAX_GROUPS, NAME_LEN};
pub use sample::Sample;
pub(crate) use slot::{Slot, SlotState};

use core::fmt;

use heapless::{String, Vec};

use crate::adamw::{AdamState, AdamWConfig};
use crate::backend::Backend;
use crate::error::{Error, ShapeError};
use crate::guard::{Diagnostics, Guard, GuardBackend};
use crate::kfrog::{KfrogBatch, KfrogConfig, KfrogState};
use crate::layer::{Layer, LayerKind};
use crate::method::Method;
use crate::muon::{MuonConfig, MuonScratch, MuonShape, MuonState};
use crate::sampler::{Sampler, MAX_BATCH};
use crate::state::ParamState;
use crate::step::RowGuard;
use crate::workspace::{Workspace, WorkspaceReq};
use registry::next_optimizer_id;

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
    /// [`adamw_step`](crate::adamw_step) of this backend, once an AdamW group exists.
    adam: Option<AdamStep<B>>,
    /// [`kfrog_step`](crate::kfrog_step) of this backend, once a K-FROG group exists.
    kfrog: Option<KfrogStep<B>>,
    /// [`muon_step`](crate::muon_step) of this backend, once a Muon group exists.
    muon: Option<MuonStep<B>>,
    /// The Muon groups' shared scratch, sized for the largest registered
    /// Muon weight; `None` before the first.
    muon_scratch: Option<SizedScratch<B>>,
    /// How a data-parallel run sharded it ([`Optimizer::distributed`]);
    /// `None` in one process.
    pub(crate) dist: Option<distributed::DistState>,
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

/// [`adamw_step`](crate::adamw_step) for one backend.
type AdamStep<B> = fn(&B, &AdamWConfig, &mut AdamState<B>, &mut <B as Backend>::Buffer, &<B as Backend>::Buffer) -> Res<(), B>;

/// [`kfrog_step`](crate::kfrog_step) for one backend.
type KfrogStep<B> = for<'a> fn(&B, &KfrogConfig, &Layer, &mut KfrogState<B>, &mut Workspace<B>, &mut <B as Backend>::Buffer, &<B as Backend>::Buffer, KfrogBatch<'a, B>) -> Res<(), B>;

/// A Muon scratch with the entries and smaller dimension it was made for,
/// kept to tell when a new weight needs a larger one.
type SizedScratch<B> = (MuonScratch<B>, (usize, usize));

/// [`muon_step`](crate::muon_step) for one backend, on buffers.
type MuonStep<B> = fn(&B, &MuonConfig, &MuonShape, &mut MuonState<B>, &mut MuonScratch<B>, &mut <B as Backend>::Buffer, &<B as Backend>::Buffer) -> Res<(), B>;

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
            muon: None,
            muon_scratch: None,
            dist: None,
        })
    }

    /// A new parameter group running `method` (any settings struct, or a
    /// [`Method`]; see [`IntoMethod`]). A K-FROG group's layers step with
    /// [`Optimizer::step_layer_kfrog`] on samples from
    /// [`Optimizer::sample_kfrog`]; its plain parameters take momentum SGD
    /// at the same rate, without decay, as in the original. A Muon group
    /// takes bias-free layers only ([`Optimizer::add_layer`]), and is made
    /// from its [`MuonConfig`], not a [`Method`]
    /// ([`RegistryError::MuonFromMethod`]; see [`IntoMethod`]).
    pub fn add_group(&mut self, method: impl IntoMethod<B>) -> Res<GroupId, B> {
        let (method, steps) = method.into_method();
        if matches!(method, Method::Muon(_)) && steps.muon.is_none() {
            return Err(RegistryError::MuonFromMethod.into());
        }
        let id = self.push_group(method)?;
        // A step of this backend for each extension-trait method, kept
        // where the bound was seen (every later step needs only `Backend`).
        self.adam = self.adam.or(steps.adam);
        self.kfrog = self.kfrog.or(steps.kfrog);
        self.muon = self.muon.or(steps.muon);
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
    /// group runs FROG (the workspace grows to cover it), orthogonalized
    /// when it runs Muon (a conv's filter `[c_out, c_in, kh, kw]` as a
    /// `c_out x c_in*kh*kw` matrix, a linear layer's weight as itself; the
    /// Muon scratch grows to cover it), two plain parameters otherwise.
    ///
    /// Errors: a layer [`Layer::validate`] rejects (grouped convolutions
    /// among them), a layer with a bias in a Muon group
    /// ([`RegistryError::MuonMatrixOnly`]: as the official Muon, which
    /// refuses parameters that are not matrices, Muon steps weights only;
    /// register the bias with [`Optimizer::add_param`] in an SGD or AdamW
    /// group, as airbench does), an unknown group, a name too long or
    /// taken, a full registry, and memory the backend cannot allocate. A
    /// failed call changes nothing: everything is checked, then the grown
    /// workspace (or scratch) and the new state are allocated beside the
    /// old, and only then committed.
    pub fn add_layer(&mut self, backend: &B, name: &str, layer: Layer, group: GroupId) -> Res<ParamId, B> {
        layer.validate()?;
        let (method, name) = self.check_registration(name, group)?;
        let rows = layer.rows();
        let mut muon_scratch = None;
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
            Method::Muon(_) => {
                if layer.bias {
                    return Err(RegistryError::MuonMatrixOnly { what: "a layer's bias" }.into());
                }
                let shape = muon_shape(&layer)?;
                muon_scratch = self.grown_muon_scratch(backend, &shape)?;
                (None, SlotState::Muon(MuonState::new(backend, shape.entries()).map_err(Error::Backend)?), None)
            }
            m => {
                let weight = SlotState::new(backend, &m, rows * layer.weight_cols()).map_err(Error::Backend)?;
                let bias = if layer.bias { Some(SlotState::new(backend, &m, rows).map_err(Error::Backend)?) } else { None };
                (None, weight, bias)
            }
        };
        let id = self.push(Slot { name, group, kind: ParamKind::Layer(layer), state, bias, owner: 0, gathered: None })?;
        if workspace.is_some() {
            self.workspace = workspace;
        }
        if muon_scratch.is_some() {
            self.muon_scratch = muon_scratch;
        }
        Ok(id)
    }

    /// Registers a plain parameter of `len` entries named `name` in
    /// `group` (FROG's plain-SGD path in a FROG group). Errors as
    /// [`Optimizer::add_layer`]; a Muon group takes no plain parameter
    /// ([`RegistryError::MuonMatrixOnly`]: Muon needs a weight's matrix
    /// shape, which a layer gives).
    pub fn add_param(&mut self, backend: &B, name: &str, len: usize, group: GroupId) -> Res<ParamId, B> {
        let (method, name) = self.check_registration(name, group)?;
        if let Method::Muon(_) = method {
            return Err(RegistryError::MuonMatrixOnly { what: "a plain parameter" }.into());
        }
        let state = SlotState::new(backend, &method, len).map_err(Error::Backend)?;
        self.push(Slot { name, group, kind: ParamKind::Plain { len }, state, bias: None, owner: 0, gathered: None })
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

    /// A Muon scratch covering the current one and `shape`, allocated
    /// beside the current one (committed by the caller); `None` when the
    /// current one covers it.
    fn grown_muon_scratch(&self, backend: &B, shape: &MuonShape) -> Res<Option<SizedScratch<B>>, B> {
        let have = self.muon_scratch.as_ref().map(|(_, need)| *need);
        let (entries, side) = have.unwrap_or_default();
        let want = (entries.max(shape.entries()), side.max(shape.side()));
        if have == Some(want) {
            return Ok(None);
        }
        Ok(Some((MuonScratch::new(backend, want.0, want.1)?, want)))
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

    /// The Muon state of layer `id`.
    pub fn muon_state(&self, id: ParamId) -> Res<&MuonState<B>, B> {
        match &self.slot(id)?.state {
            SlotState::Muon(s) => Ok(s),
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

/// The matrix Muon sees `layer`'s weight as (validated, so not grouped).
fn muon_shape(layer: &Layer) -> Result<MuonShape, ShapeError> {
    match layer.kind {
        LayerKind::Linear { d_in, d_out, .. } => MuonShape::matrix(d_out, d_in),
        LayerKind::Conv2d(c) => MuonShape::conv2d(c.c_out, c.c_in, c.kernel[0], c.kernel[1]),
    }
}
