//! [`Distributed`]: the optimizer object's steps on one rank of a
//! data-parallel run, its preconditioning sharded by layer.
//!
//! Every rank holds a [`Shard`] of the global batch, computes its
//! gradients and sums them with one all-reduce (the caller's, through the
//! communicator: a gradient of the global loss on each rank's samples, so
//! that the sum is the single process's gradient). Each registered entry
//! has one owner rank ([`assign_owners`] by its step's cost, the same on
//! every rank), which alone keeps its state. A step of the entries
//! ([`Distributed::step_all`]) gathers every preconditioned layer's
//! sampled rows to its owner, lets each owner step all its entries as one
//! process would (the owners at once), and broadcasts the new weights.
//! Between the local checks and the first collective, and between the
//! owners' steps and the broadcasts, every rank learns whether another
//! failed ([`HostCollective::check_status`]), so a rank's error reaches
//! the others as [`CollectiveError::PeerFailed`] instead of leaving them
//! waiting.

use core::fmt::{self, Write};

use super::registry::{GroupId, ParamId, ParamKind, RegistryError};
use super::slot::{Slot, SlotState};
use super::{Optimizer, Res, Sample};
use crate::backend::Backend;
use crate::collective::{assign_owners, Collective, CollectiveError, HostOp};
use crate::error::{Error, ShapeError};
use crate::kfrog::KfrogBatch;
use crate::layer::Layer;
use crate::method::Method;
use crate::sgd::ParamGrad;
use crate::step::check::{check_count, check_len};
use crate::step::Params;
use crate::view::ViewBatch;

/// A rank's part of a global batch: samples `offset..offset + len`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    /// The first sample.
    pub offset: usize,
    /// Samples.
    pub len: usize,
}

impl Shard {
    /// Rank `rank`'s part of `batch` samples over `ranks`: consecutive
    /// ranges in rank order, the first `batch % ranks` ranks one sample
    /// larger (so any batch splits, whether `ranks` divides it or not).
    pub fn of(batch: usize, rank: usize, ranks: usize) -> Result<Self, CollectiveError> {
        if rank >= ranks {
            return Err(CollectiveError::BadRank { rank, size: ranks });
        }
        let (q, m) = (batch / ranks, batch % ranks);
        Ok(Self { offset: rank * q + rank.min(m), len: q + usize::from(rank < m) })
    }

    /// One past the last sample.
    pub fn end(&self) -> usize {
        self.offset + self.len
    }

    /// Those of the increasing batch `indices` that fall in this shard
    /// (a draw's rows that a rank holding it gathers).
    pub fn select<'a>(&self, indices: &'a [usize]) -> &'a [usize] {
        let lo = indices.partition_point(|&i| i < self.offset);
        let hi = indices.partition_point(|&i| i < self.end());
        &indices[lo..hi]
    }
}

impl<'a> Sample<'a> {
    /// The drawn rows that fall in `shard` (indices into the global
    /// batch, increasing): the rows a rank holding that shard gathers.
    pub fn in_shard(&self, shard: Shard) -> &'a [usize] {
        shard.select(self.indices)
    }
}

/// A FROG layer's sampled rows on this rank: those of `sample` in the
/// rank's shard, in order (`sample.in_shard(shard)`), their inputs `x`
/// and output gradients `y` (of the global loss), exactly that many rows.
pub struct ShardRows<'a, B: Backend + 'a> {
    /// The step's sample (the whole draw; every rank drew the same).
    pub sample: Sample<'a>,
    /// Inputs of this rank's sampled rows (a view: the prefix of a buffer
    /// sized for the whole sample, say).
    pub x: B::View<'a>,
    /// Their output gradients.
    pub y: B::View<'a>,
}

impl<'a, B: Backend + 'a> fmt::Debug for ShardRows<'a, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShardRows").field("sample", &self.sample).finish_non_exhaustive()
    }
}

/// A K-FROG layer's sampled rows on this rank: the draw's input and
/// output-gradient rows (independent samples, as
/// [`Distributed::sample_kfrog`] returns them) and this rank's part of
/// each, those in its shard, in order.
pub struct KfrogShardRows<'a, B: Backend + 'a> {
    /// The draw's input rows (indices into the global batch).
    pub x_rows: &'a [usize],
    /// The draw's output-gradient rows.
    pub y_rows: &'a [usize],
    /// Samples in the global batch.
    pub batch_size: usize,
    /// Inputs of this rank's input rows.
    pub x: B::View<'a>,
    /// Output gradients of this rank's output-gradient rows.
    pub y: B::View<'a>,
}

impl<'a, B: Backend + 'a> fmt::Debug for KfrogShardRows<'a, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KfrogShardRows").field("x_rows", &self.x_rows).field("y_rows", &self.y_rows).field("batch_size", &self.batch_size).finish_non_exhaustive()
    }
}

/// One registered entry's part of a [`Distributed::step_all`] on this
/// rank: its parameters, their gradients already summed over the ranks,
/// and this rank's rows of a preconditioned layer's sample.
/// Non-exhaustive: entries of other kinds (views, 16-bit rows) may come.
#[non_exhaustive]
pub enum Entry<'p, 'r, B: Backend + 'r> {
    /// A layer of any group but K-FROG's, as [`Distributed::step_layer`]
    /// takes it.
    Layer {
        /// The layer.
        id: ParamId,
        /// Its weight (and bias) and their gradients.
        params: Params<'p, B>,
        /// This rank's sampled rows of a FROG layer (ignored in the other
        /// methods' groups).
        rows: Option<ShardRows<'r, B>>,
    },
    /// A K-FROG layer, as [`Distributed::step_layer_kfrog`] takes it.
    Kfrog {
        /// The layer.
        id: ParamId,
        /// Its weight, updated in place.
        weight: &'p mut B::Buffer,
        /// Its gradient.
        grad: &'p B::Buffer,
        /// This rank's input and output-gradient rows of the draw.
        rows: KfrogShardRows<'r, B>,
    },
    /// A plain parameter, as [`Distributed::step_param`] takes it.
    Param {
        /// The parameter.
        id: ParamId,
        /// Its values and gradient.
        param: ParamGrad<'p, B>,
    },
}

impl<B: Backend> Entry<'_, '_, B> {
    /// The registered entry stepped.
    pub fn id(&self) -> ParamId {
        match self {
            Self::Layer { id, .. } | Self::Kfrog { id, .. } | Self::Param { id, .. } => *id,
        }
    }

    /// Its registry position (checked against the registry before use).
    fn index(&self) -> usize {
        self.id().index as usize
    }

    /// What every rank must pass alike: the entry, its kind, the sample
    /// its rows were drawn in.
    fn describe(&self, h: &mut Fnv) {
        match self {
            Self::Layer { id, rows, .. } => {
                h.words(&[0, u64::from(id.index)]);
                if let Some(r) = rows {
                    h.words(&[r.sample.batch_size as u64]);
                    r.sample.indices.iter().for_each(|&i| h.words(&[i as u64]));
                }
            }
            Self::Kfrog { id, rows, .. } => {
                h.words(&[1, u64::from(id.index), rows.batch_size as u64, rows.x_rows.len() as u64]);
                rows.x_rows.iter().chain(rows.y_rows).for_each(|&i| h.words(&[i as u64]));
            }
            Self::Param { id, .. } => h.words(&[2, u64::from(id.index)]),
        }
    }
}

impl<B: Backend> fmt::Debug for Entry<'_, '_, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self {
            Self::Layer { .. } => "Layer",
            Self::Kfrog { .. } => "Kfrog",
            Self::Param { .. } => "Param",
        };
        f.debug_struct(kind).field("id", &self.id()).finish_non_exhaustive()
    }
}

/// `p` borrowed for one step.
fn reborrow<'a, B: Backend>(p: &'a mut Params<'_, B>) -> Params<'a, B> {
    Params { weight: &mut *p.weight, grad_weight: p.grad_weight, bias: p.bias.as_mut().map(|(b, g)| (&mut **b, *g)) }
}

/// What a sharded optimizer keeps: the communicator's shape it was
/// sharded for (the owners' gathered rows are in their slots).
pub(crate) struct DistState {
    pub(crate) rank: usize,
    pub(crate) ranks: usize,
    /// Registrations when sharded: a later one needs a new sharding.
    registered: usize,
}

/// The optimizer object on rank [`Distributed::rank`] of a data-parallel
/// run (see the module docs): made by [`Optimizer::distributed`], it
/// steps every registered entry as the single process would, with the
/// ranks' collectives in between. Every rank makes the same calls in the
/// same order.
pub struct Distributed<'o, B: Backend, C: Collective<B>, const N: usize> {
    opt: &'o mut Optimizer<B, N>,
    comm: &'o C,
}

impl<B: Backend, C: Collective<B>, const N: usize> fmt::Debug for Distributed<'_, B, C, N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Distributed").field("rank", &self.comm.rank()).field("ranks", &self.comm.size()).finish_non_exhaustive()
    }
}

/// FNV-1a over what is written to it: a hash of registrations and
/// settings that every rank computes alike, without allocating.
struct Fnv(u64);

impl Fnv {
    fn bytes(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn words(&mut self, words: &[u64]) {
        words.iter().for_each(|w| self.bytes(&w.to_le_bytes()));
    }
}

impl Write for Fnv {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.bytes(s.as_bytes());
        Ok(())
    }
}

fn hash(f: impl FnOnce(&mut Fnv) -> fmt::Result) -> u64 {
    let mut h = Fnv(0xcbf2_9ce4_8422_2325);
    // Writing to an `Fnv` never fails.
    let _ = f(&mut h);
    h.0
}

impl<B: Backend, const N: usize> Optimizer<B, N> {
    /// The optimizer's steps on rank `comm.rank()` of `comm.size()`. A
    /// collective call, as every step of the result: every rank makes it.
    ///
    /// The first call checks that every rank built the same optimizer (the registrations, the groups' settings, the
    /// largest batch, the sampler's seed and position), refusing with
    /// [`CollectiveError::Mismatch`] naming the first difference on every
    /// rank; then assigns every registered entry its owner and frees the
    /// states this rank does not own (optimizer memory sharded), and
    /// allocates, for each FROG and K-FROG layer it owns, a buffer for its
    /// gathered rows at the largest batch's sample (a layer's rows are
    /// held from the gathers to its step, as one process holds them
    /// from the backward pass).
    /// From then on the states it does not own are elsewhere: a
    /// single-process step or checkpoint of them is refused
    /// ([`RegistryError::Elsewhere`]), and so is a later call after a
    /// registration or on a communicator of another shape
    /// ([`RegistryError::Resharded`]). A rank that cannot allocate fails,
    /// and the others return [`CollectiveError::PeerFailed`].
    pub fn distributed<'o, C: Collective<B>>(&'o mut self, backend: &B, comm: &'o C) -> Res<Distributed<'o, B, C, N>, B> {
        let fresh = self.dist.as_ref().is_some_and(|d| d.ranks == comm.size() && d.rank == comm.rank() && d.registered == self.slots.len());
        if !fresh {
            self.shard(backend, comm)?;
        }
        Ok(Distributed { opt: self, comm })
    }

    fn shard<C: Collective<B>>(&mut self, backend: &B, comm: &C) -> Res<(), B> {
        if self.dist.is_some() {
            return Err(RegistryError::Resharded.into());
        }
        let registrations = hash(|h| {
            self.slots.iter().try_for_each(|s| write!(h, "{}|{:?}|{:?};", s.name, s.kind, s.group))?;
            self.groups.iter().try_for_each(|m| write!(h, "{m:?};"))
        });
        let sampler = self.sampler.state();
        let words = [self.slots.len() as u64, registrations, self.max_batch as u64, sampler[0] ^ sampler[1].rotate_left(17) ^ sampler[2].rotate_left(31) ^ sampler[3].rotate_left(47)];
        comm.check_agree(&words, &["the number of registered parameters", "the registrations and the groups' settings", "the largest batch", "the sampler's seed and position"])?;
        let mut costs = [0.0; N];
        for (c, s) in costs.iter_mut().zip(&self.slots) {
            *c = cost(&self.groups[usize::from(s.group.0)], &s.kind, self.max_batch);
        }
        let mut owners = [0usize; N];
        let n = self.slots.len();
        assign_owners(&costs[..n], comm.size(), &mut owners[..n])?;
        // Each owned FROG and K-FROG layer's gathered rows, at its step's
        // lengths for the largest batch (so that every owned layer's rows
        // can arrive before any is stepped), allocated before anything is
        // freed: a failed allocation changes nothing.
        let mut gathered: [Option<(B::Buffer, B::Buffer)>; N] = [const { None }; N];
        let rows = (|| {
            for ((s, &o), g) in self.slots.iter().zip(&owners).zip(gathered.iter_mut()) {
                let sampled = |n: Option<usize>| n.map_or(self.max_batch, |n| n.min(self.max_batch));
                let rows = match self.groups[usize::from(s.group.0)] {
                    Method::Frog(cfg) => (cfg.sample_size, cfg.sample_size),
                    Method::Kfrog(cfg) => (cfg.sample_size, cfg.y_sample_size),
                    _ => continue,
                };
                if let (ParamKind::Layer(l), true) = (s.kind, o == comm.rank()) {
                    *g = Some((backend.zeros(sampled(rows.0).saturating_mul(l.input_len()))?, backend.zeros(sampled(rows.1).saturating_mul(l.output_len()))?));
                }
            }
            Ok(())
        })();
        comm.check_status(rows.is_err())?;
        rows.map_err(Error::Backend)?;
        for ((s, &o), g) in self.slots.iter_mut().zip(&owners).zip(gathered.iter_mut()) {
            s.gathered = g.take();
            s.owner = o;
            if o != comm.rank() {
                s.state = SlotState::Elsewhere;
                s.bias = s.bias.take().map(|_| SlotState::Elsewhere);
            }
        }
        self.dist = Some(DistState { rank: comm.rank(), ranks: comm.size(), registered: n });
        Ok(())
    }
}

/// A layer's parameters and gradients have its lengths (every rank checks
/// before the first collective: a broadcast of another length would fail
/// in the engine).
fn check_params<B: Backend>(backend: &B, layer: &Layer, p: &Params<'_, B>) -> Res<(), B> {
    let n = layer.rows() * layer.weight_cols();
    check_len(backend, p.weight, "weight", n)?;
    check_len(backend, p.grad_weight, "grad_weight", n)?;
    match (&p.bias, layer.bias) {
        (Some((b, g)), true) => {
            check_len(backend, b, "bias", layer.rows())?;
            Ok(check_len(backend, g, "grad_bias", layer.rows())?)
        }
        (None, false) => Ok(()),
        _ => Err(ShapeError::BiasMismatch.into()),
    }
}

/// This rank's rows of a preconditioned layer: `counts` rows of inputs
/// and of output gradients.
fn check_rows<B: Backend>(backend: &B, (x, y): (&B::View<'_>, &B::View<'_>), counts: (usize, usize), layer: &Layer) -> Res<(), B> {
    check_count(backend.view_len(x), "x (this rank's sampled rows)", counts.0.saturating_mul(layer.input_len()))?;
    Ok(check_count(backend.view_len(y), "y (this rank's sampled rows)", counts.1.saturating_mul(layer.output_len()))?)
}

/// The owner's gathered buffers of a FROG layer hold the whole sample of
/// `r` rows (they were sized for the largest batch's).
fn check_room<B: Backend>(backend: &B, slot: &Slot<B>, r: usize, layer: &Layer) -> Res<(), B> {
    let Some((gx, gy)) = &slot.gathered else { return Err(ShapeError::BufferLength { what: "the owner's gathered rows (none)", expected: r, actual: 0 }.into()) };
    for (buf, len) in [(gx, r.saturating_mul(layer.input_len())), (gy, r.saturating_mul(layer.output_len()))] {
        if backend.len(buf) < len {
            return Err(ShapeError::BufferLength { what: "the owner's gathered rows (sized for the largest batch's sample)", expected: len, actual: backend.len(buf) }.into());
        }
    }
    Ok(())
}

/// The step cost an owner is chosen by: FROG's and K-FROG's CG products
/// ([`Layer::cg_flops`]), Muon's Newton-Schulz products, and the entries
/// of any other step (elementwise work, far smaller).
fn cost(method: &Method, kind: &ParamKind, max_batch: usize) -> f64 {
    let entries = |l: &Layer| (l.rows() * l.cols()) as f64;
    match (method, kind) {
        (Method::Frog(cfg), ParamKind::Layer(l)) => l.cg_flops(cfg.sample_rows(max_batch), cfg.num_iters),
        (Method::Kfrog(cfg), ParamKind::Layer(l)) => l.cg_flops(cfg.sample_size.map_or(max_batch, |s| s.min(max_batch)), cfg.num_iters),
        (Method::Muon(cfg), ParamKind::Layer(l)) => {
            let (m, n) = (l.rows().min(l.weight_cols()) as f64, l.rows().max(l.weight_cols()) as f64);
            cfg.ns_steps as f64 * (4.0 * m * m * n + 2.0 * m * m * m)
        }
        (_, ParamKind::Layer(l)) => entries(l),
        (_, ParamKind::Plain { len }) => *len as f64,
    }
}

impl<B: Backend, C: Collective<B>, const N: usize> Distributed<'_, B, C, N> {
    /// This rank.
    pub fn rank(&self) -> usize {
        self.comm.rank()
    }

    /// Ranks in the run.
    pub fn ranks(&self) -> usize {
        self.comm.size()
    }

    /// The rank that owns (steps, and keeps the state of) entry `id`.
    pub fn owner(&self, id: ParamId) -> Res<usize, B> {
        Ok(self.opt.slot(id)?.owner)
    }

    /// The group `id` was registered in.
    pub fn group_of(&self, id: ParamId) -> Res<GroupId, B> {
        self.opt.group_of(id)
    }

    /// This rank's shard of a global batch of `batch` samples.
    pub fn shard(&self, batch: usize) -> Shard {
        // The communicator's rank is below its size.
        Shard::of(batch, self.rank(), self.ranks()).unwrap_or(Shard { offset: 0, len: 0 })
    }

    /// Draws the step's sample of the global batch, as
    /// [`Optimizer::sample`]: the same draw on every rank (their
    /// samplers agree, as the first sharding checked).
    pub fn sample<'a>(&mut self, batch: usize, out: &'a mut [usize]) -> Res<Sample<'a>, B> {
        self.opt.sample(batch, out)
    }

    /// Draws a K-FROG step's two samples of the global batch, as
    /// [`Optimizer::sample_kfrog`]: the same draws on every rank.
    pub fn sample_kfrog<'a, 'b>(&mut self, group: GroupId, batch: usize, x_out: &'a mut [usize], y_out: &'b mut [usize]) -> Res<(&'a [usize], &'b [usize]), B> {
        self.opt.sample_kfrog(group, batch, x_out, y_out)
    }

    /// One step of every entry of `entries` on every rank, each as its
    /// single-process step would take it, in phases: every rank checks
    /// its entries (and that every rank passes the same ones in the same
    /// order, with the same samples), then the sampled rows of every
    /// preconditioned layer reach its owner, then each rank steps the
    /// entries it owns with no collective in between (so the owners'
    /// steps run at once), then the new values reach every rank. Every
    /// rank makes the call with the same entries; a step of many layers
    /// belongs in one call, since stepping them one call each serializes
    /// their owners.
    ///
    /// A refusal in the checks changes nothing on any rank (the others
    /// get [`CollectiveError::PeerFailed`], or all
    /// [`CollectiveError::Mismatch`] when the ranks' entries differ). A
    /// step that fails on its owner (a backend error) makes every rank
    /// return an error before any value is sent: the entries already
    /// stepped then differ between their owners and the other ranks, so
    /// restore a checkpoint.
    pub fn step_all(&mut self, backend: &B, entries: &mut [Entry<'_, '_, B>]) -> Res<(), B> {
        let words = [hash(|h| {
            entries.iter().for_each(|e| e.describe(h));
            Ok(())
        })];
        self.comm.check_agree(&words, &["the entries of a step (ids, kinds and samples)"])?;
        let local = self.check_entries(backend, entries);
        self.comm.check_status(local.is_err())?;
        local?;
        for e in entries.iter() {
            self.gather(backend, e)?;
        }
        let me = self.rank();
        let res = entries.iter_mut().try_for_each(|e| if self.opt.slots[e.index()].owner == me { self.step_owned(backend, e) } else { Ok(()) });
        self.comm.check_status(res.is_err())?;
        res?;
        entries.iter_mut().try_for_each(|e| self.broadcast_entry(backend, e))
    }

    /// One step of registered layer `id` on every rank: [`Distributed::step_all`]
    /// of this one entry ([`Entry::Layer`]).
    pub fn step_layer<'r>(&mut self, backend: &B, id: ParamId, params: Params<'_, B>, rows: Option<ShardRows<'r, B>>) -> Res<(), B>
    where
        B: 'r,
    {
        self.step_all(backend, &mut [Entry::Layer { id, params, rows }])
    }

    /// One K-FROG step of layer `id` on every rank: [`Distributed::step_all`]
    /// of this one entry ([`Entry::Kfrog`]).
    pub fn step_layer_kfrog<'r>(&mut self, backend: &B, id: ParamId, weight: &mut B::Buffer, grad: &B::Buffer, rows: KfrogShardRows<'r, B>) -> Res<(), B>
    where
        B: 'r,
    {
        self.step_all(backend, &mut [Entry::Kfrog { id, weight, grad, rows }])
    }

    /// One step of plain parameter `id` on every rank:
    /// [`Distributed::step_all`] of this one entry ([`Entry::Param`]).
    pub fn step_param(&mut self, backend: &B, id: ParamId, param: ParamGrad<'_, B>) -> Res<(), B> {
        self.step_all(backend, &mut [Entry::Param { id, param }])
    }

    /// Every entry checked against its registration before the first
    /// collective that moves data (a gather or broadcast of another length
    /// would fail in the engine), each id at most once.
    fn check_entries(&self, backend: &B, entries: &[Entry<'_, '_, B>]) -> Res<(), B> {
        let mut seen = [false; N];
        for e in entries {
            let id = e.id();
            let slot = self.opt.slot(id)?;
            if core::mem::replace(&mut seen[id.index as usize], true) {
                return Err(RegistryError::SteppedTwice(id.index).into());
            }
            self.check_entry(backend, slot, e)?;
        }
        Ok(())
    }

    fn check_entry(&self, backend: &B, slot: &Slot<B>, e: &Entry<'_, '_, B>) -> Res<(), B> {
        let index = e.id().index;
        let method = &self.opt.groups[usize::from(slot.group.0)];
        let kfrog = matches!(method, Method::Kfrog(_));
        let owns = slot.owner == self.rank();
        match (e, slot.kind) {
            (Entry::Param { param, .. }, ParamKind::Plain { len }) => {
                check_len(backend, param.param, "param", len)?;
                Ok(check_len(backend, param.grad, "grad", len)?)
            }
            (Entry::Layer { .. } | Entry::Kfrog { .. }, ParamKind::Layer(_)) if kfrog != matches!(e, Entry::Kfrog { .. }) => Err(RegistryError::WrongMethod(index).into()),
            (Entry::Layer { params, rows, .. }, ParamKind::Layer(layer)) => {
                check_params(backend, &layer, params)?;
                match (method.frog(), rows) {
                    (Some(_), Some(rows)) => {
                        let (mine, r) = (rows.sample.in_shard(self.shard(rows.sample.batch_size)).len(), rows.sample.len());
                        check_rows(backend, (&rows.x, &rows.y), (mine, mine), &layer)?;
                        if owns {
                            check_room(backend, slot, r, &layer)?;
                        }
                        Ok(())
                    }
                    (Some(_), None) => Err(RegistryError::NoBatch(index).into()),
                    (None, _) => Ok(()),
                }
            }
            (Entry::Kfrog { weight, grad, rows, .. }, ParamKind::Layer(layer)) => {
                check_len(backend, weight, "weight", layer.rows() * layer.weight_cols())?;
                check_len(backend, grad, "grad_weight", layer.rows() * layer.weight_cols())?;
                let shard = self.shard(rows.batch_size);
                check_rows(backend, (&rows.x, &rows.y), (shard.select(rows.x_rows).len(), shard.select(rows.y_rows).len()), &layer)?;
                if !owns {
                    return Ok(());
                }
                // The owner's buffers hold exactly the largest batch's samples.
                let (din, dout) = (layer.input_len(), layer.output_len());
                let Some((gx, gy)) = &slot.gathered else { return Err(RegistryError::WrongMethod(index).into()) };
                check_len(backend, gx, "the owner's gathered input rows (sized for the largest batch's sample)", rows.x_rows.len().saturating_mul(din))?;
                Ok(check_len(backend, gy, "the owner's gathered output-gradient rows (sized for the largest batch's sample)", rows.y_rows.len().saturating_mul(dout))?)
            }
            _ => Err(RegistryError::WrongKind(index).into()),
        }
    }

    /// A preconditioned layer's rows on this rank to its owner, into the
    /// owner's gathered buffers (nothing for other entries).
    fn gather(&mut self, backend: &B, e: &Entry<'_, '_, B>) -> Res<(), B> {
        let (rows, (xs, ys), batch) = match e {
            Entry::Layer { rows: Some(rows), .. } if self.opt.groups[usize::from(self.opt.slots[e.index()].group.0)].frog().is_some() => {
                ((&rows.x, &rows.y), (rows.sample.indices, rows.sample.indices), rows.sample.batch_size)
            }
            Entry::Kfrog { rows, .. } => ((&rows.x, &rows.y), (rows.x_rows, rows.y_rows), rows.batch_size),
            _ => return Ok(()),
        };
        let slot = &mut self.opt.slots[e.index()];
        let ParamKind::Layer(layer) = slot.kind else { return Ok(()) };
        let (din, dout, owner, ranks) = (layer.input_len(), layer.output_len(), slot.owner, self.comm.size());
        let count = |idx: &[usize], k: usize, per: usize| Shard::of(batch, k, ranks).map_or(0, |s| s.select(idx).len() * per);
        let mut gathered = slot.gathered.take();
        let res = self.gather_to(backend, rows, gathered.as_mut().map(|(gx, gy)| (gx, gy)), (&|k| count(xs, k, din), &|k| count(ys, k, dout)), (xs.len() * din, ys.len() * dout), owner);
        self.opt.slots[e.index()].gathered = gathered;
        res
    }

    /// The step of an entry this rank owns, on the rows gathered to it.
    fn step_owned(&mut self, backend: &B, e: &mut Entry<'_, '_, B>) -> Res<(), B> {
        let k = e.index();
        let slot = &mut self.opt.slots[k];
        let frog = self.opt.groups[usize::from(slot.group.0)].frog().is_some();
        let (din, dout) = match slot.kind {
            ParamKind::Layer(l) => (l.input_len(), l.output_len()),
            ParamKind::Plain { .. } => (0, 0),
        };
        let gathered = slot.gathered.take();
        let res = match (e, &gathered) {
            (Entry::Layer { id, params, rows: Some(rows) }, Some((gx, gy))) if frog => {
                let (r, batch_size) = (rows.sample.len(), rows.sample.batch_size);
                match (backend.view(gx, 0, r * din), backend.view(gy, 0, r * dout)) {
                    (Ok(x), Ok(y)) => self.opt.step_layer(backend, *id, reborrow(params), Some(ViewBatch { x, y, sample: r, batch_size })),
                    (Err(err), _) | (_, Err(err)) => Err(Error::Backend(err)),
                }
            }
            (Entry::Layer { id, params, .. }, _) => self.opt.step_layer(backend, *id, reborrow(params), None::<ViewBatch<'_, B>>),
            (Entry::Kfrog { id, weight, grad, rows }, Some((gx, gy))) => {
                let batch = KfrogBatch { x: gx, x_sample: rows.x_rows.len(), y: gy, y_sample: rows.y_rows.len(), batch_size: rows.batch_size };
                self.opt.step_layer_kfrog(backend, *id, weight, grad, batch)
            }
            (Entry::Kfrog { id, .. }, None) => Err(RegistryError::WrongMethod(id.index).into()),
            (Entry::Param { id, param }, _) => self.opt.step_param(backend, *id, ParamGrad { param: &mut *param.param, grad: param.grad }),
        };
        self.opt.slots[k].gathered = gathered;
        res
    }

    /// An entry's new values from its owner to every rank.
    fn broadcast_entry(&self, backend: &B, e: &mut Entry<'_, '_, B>) -> Res<(), B> {
        let owner = self.opt.slots[e.index()].owner;
        match e {
            Entry::Layer { params, .. } => {
                self.broadcast(backend, params.weight, owner)?;
                match &mut params.bias {
                    Some((b, _)) => self.broadcast(backend, b, owner),
                    None => Ok(()),
                }
            }
            Entry::Kfrog { weight, .. } => self.broadcast(backend, weight, owner),
            Entry::Param { param, .. } => self.broadcast(backend, param.param, owner),
        }
    }

    /// Gathers this rank's rows `x` and `y` to `owner`, rank `k` sending
    /// `counts.0(k)` and `counts.1(k)` entries, into the first `sizes` of
    /// the owner's buffers `into` (`None` on the other ranks).
    #[allow(clippy::type_complexity)]
    fn gather_to(
        &self,
        backend: &B,
        (x, y): (&B::View<'_>, &B::View<'_>),
        into: Option<(&mut B::Buffer, &mut B::Buffer)>,
        counts: (&dyn Fn(usize) -> usize, &dyn Fn(usize) -> usize),
        sizes: (usize, usize),
        owner: usize,
    ) -> Res<(), B> {
        match into {
            Some((gx, gy)) => {
                let mut vx = backend.view_mut(gx, 0, sizes.0).map_err(Error::Backend)?;
                self.comm.gather(backend, x, Some(&mut vx), counts.0, owner)?;
                let mut vy = backend.view_mut(gy, 0, sizes.1).map_err(Error::Backend)?;
                Ok(self.comm.gather(backend, y, Some(&mut vy), counts.1, owner)?)
            }
            None => {
                self.comm.gather(backend, x, None, counts.0, owner)?;
                Ok(self.comm.gather(backend, y, None, counts.1, owner)?)
            }
        }
    }

    /// Bytes [`Distributed::checkpoint`] writes (the same on every rank).
    pub fn checkpoint_len(&self) -> Res<usize, B> {
        let (w, b) = self.state_lens()?;
        Ok(self.opt.checkpoint_len_with(|i| self.len_of(&w, &b, i)))
    }

    /// The whole optimizer's checkpoint, in [`Optimizer::checkpoint`]'s
    /// format, into every rank's `out` (at least
    /// [`Distributed::checkpoint_len`] bytes): each state is exported by
    /// its owner and broadcast, so any rank (rank 0, say) can write the
    /// file. Restore it with [`Optimizer::restore`] into an optimizer
    /// built the same way, before [`Optimizer::distributed`] shards it:
    /// on any number of ranks, or in one process.
    pub fn checkpoint(&self, backend: &B, out: &mut [u8]) -> Res<usize, B> {
        let (w, b) = self.state_lens()?;
        let lens = |i| self.len_of(&w, &b, i);
        let needed = self.opt.checkpoint_len_with(lens);
        let short = out.len() < needed;
        self.comm.check_status(short)?;
        if short {
            return Err(ShapeError::BufferLength { what: "checkpoint bytes", expected: needed, actual: out.len() }.into());
        }
        let opt: &Optimizer<B, N> = self.opt;
        opt.write_checkpoint(out, lens, |i, bytes| {
            let (k, bias) = opt.locate_state(i);
            let slot = &opt.slots[k];
            let res = match (slot.owner == self.rank(), bias, &slot.bias) {
                (false, ..) => Ok(()),
                (true, false, _) => slot.state.export(backend, bytes).map(drop),
                (true, true, Some(st)) => st.export(backend, bytes).map(drop),
                (true, true, None) => Ok(()),
            };
            self.comm.check_status(res.is_err())?;
            res?;
            Ok(self.comm.broadcast_bytes(bytes, slot.owner)?)
        })
    }

    /// Every state's export length, weights' and biases' apart, as their
    /// owners know them: each rank fills in its own and one sum each
    /// gives every rank all of them.
    fn state_lens(&self) -> Res<([u64; N], [u64; N]), B> {
        let (mut w, mut b) = ([0u64; N], [0u64; N]);
        let n = self.opt.slots.len();
        for (k, s) in self.opt.slots.iter().enumerate().filter(|(_, s)| s.owner == self.rank()) {
            w[k] = s.state.export_len() as u64;
            b[k] = s.bias.as_ref().map_or(0, |st| st.export_len() as u64);
        }
        self.comm.all_reduce_u64(&mut w[..n], HostOp::Sum)?;
        self.comm.all_reduce_u64(&mut b[..n], HostOp::Sum)?;
        Ok((w, b))
    }

    /// The export length of the `i`-th state.
    fn len_of(&self, w: &[u64; N], b: &[u64; N], i: usize) -> usize {
        match self.opt.locate_state(i) {
            (k, false) => w.get(k).map_or(0, |&l| l as usize),
            (k, true) => b.get(k).map_or(0, |&l| l as usize),
        }
    }

    /// The owner's values of `buf` to every rank.
    fn broadcast(&self, backend: &B, buf: &mut B::Buffer, owner: usize) -> Res<(), B> {
        let len = backend.len(buf);
        let mut v = backend.view_mut(buf, 0, len).map_err(Error::Backend)?;
        Ok(self.comm.broadcast(backend, &mut v, owner)?)
    }
}
