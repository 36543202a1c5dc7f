//! [`Distributed`]: the optimizer object's steps on one rank of a
//! data-parallel run, its preconditioning sharded by layer.
//!
//! Every rank holds a [`Shard`] of the global batch, computes its
//! gradients and sums them with one all-reduce (the caller's, through the
//! communicator: a gradient of the global loss on each rank's samples, so
//! that the sum is the single process's gradient). Each registered entry
//! has one owner rank ([`assign_owners`] by its step's cost, the same on
//! every rank), which alone keeps its state: the owner gathers a FROG
//! layer's sampled rows from the ranks that hold them, takes the step as
//! one process would, and broadcasts the new weights. Between the local
//! checks and the first collective, and between the owner's step and the
//! broadcast, every rank learns whether another failed
//! ([`HostCollective::check_status`]), so a rank's error reaches the
//! others as [`CollectiveError::PeerFailed`] instead of leaving them
//! waiting.

use core::fmt::{self, Write};

use super::registry::{GroupId, ParamId, ParamKind, RegistryError};
use super::slot::SlotState;
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

/// What a sharded optimizer keeps: the communicator's shape it was
/// sharded for and the owner's buffers for a FROG layer's gathered rows.
pub(crate) struct DistState<B: Backend> {
    pub(crate) rank: usize,
    pub(crate) ranks: usize,
    /// Registrations when sharded: a later one needs a new sharding.
    registered: usize,
    /// Gathered inputs and output gradients of the largest FROG layer this
    /// rank owns (`None` when it owns none).
    rows: Option<(B::Buffer, B::Buffer)>,
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

impl Write for Fnv {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for b in s.bytes() {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
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
    /// allocates the buffers for the rows of the FROG layers it owns.
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
        // The owned FROG layers' largest gathered rows, allocated before
        // anything is freed (a failed allocation changes nothing).
        let (mut x_len, mut y_len) = (0, 0);
        for (s, &o) in self.slots.iter().zip(&owners) {
            if let (ParamKind::Layer(l), Some(cfg), true) = (s.kind, self.groups[usize::from(s.group.0)].frog(), o == comm.rank()) {
                let r = cfg.sample_rows(self.max_batch);
                x_len = x_len.max(r.saturating_mul(l.input_len()));
                y_len = y_len.max(r.saturating_mul(l.output_len()));
            }
        }
        let mut gathered: [Option<(B::Buffer, B::Buffer)>; N] = [const { None }; N];
        let rows = (|| {
            // Each owned K-FROG layer's, at exactly its step's lengths.
            for ((s, &o), g) in self.slots.iter().zip(&owners).zip(gathered.iter_mut()) {
                if let (ParamKind::Layer(l), Method::Kfrog(cfg), true) = (s.kind, self.groups[usize::from(s.group.0)], o == comm.rank()) {
                    let sampled = |n: Option<usize>| n.map_or(self.max_batch, |n| n.min(self.max_batch));
                    *g = Some((backend.zeros(sampled(cfg.sample_size).saturating_mul(l.input_len()))?, backend.zeros(sampled(cfg.y_sample_size).saturating_mul(l.output_len()))?));
                }
            }
            Ok(if x_len > 0 { Some((backend.zeros(x_len)?, backend.zeros(y_len)?)) } else { None })
        })();
        comm.check_status(rows.is_err())?;
        let rows = rows.map_err(Error::Backend)?;
        for ((s, &o), g) in self.slots.iter_mut().zip(&owners).zip(gathered.iter_mut()) {
            s.gathered = g.take();
            s.owner = o;
            if o != comm.rank() {
                s.state = SlotState::Elsewhere;
                s.bias = s.bias.take().map(|_| SlotState::Elsewhere);
            }
        }
        self.dist = Some(DistState { rank: comm.rank(), ranks: comm.size(), registered: n, rows });
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

    /// One step of registered layer `id` on every rank: its gradients in
    /// `params` already summed over the ranks, and for a FROG layer this
    /// rank's sampled rows, gathered to the owner; the owner steps as
    /// [`Optimizer::step_layer`] would, and the new weight (and bias)
    /// reach every rank's `params`.
    pub fn step_layer<'r>(&mut self, backend: &B, id: ParamId, mut params: Params<'_, B>, rows: Option<ShardRows<'r, B>>) -> Res<(), B>
    where
        B: 'r,
    {
        let (owner, layer, frog) = {
            let slot = self.opt.slot(id)?;
            let ParamKind::Layer(layer) = slot.kind else { return Err(RegistryError::WrongKind(id.index).into()) };
            (slot.owner, layer, self.opt.groups[usize::from(slot.group.0)].frog().is_some())
        };
        let me = self.rank();
        // Local checks, then every rank learns whether one failed.
        let local = check_params(backend, &layer, &params).and_then(|()| self.check_rows(backend, id, &layer, frog, rows.as_ref()));
        self.comm.check_status(local.is_err())?;
        let counts = local?;
        let res = match (rows, counts) {
            (Some(rows), Some(r)) => self.gather_and_step(backend, id, owner, &layer, &mut params, rows, r),
            _ if me == owner => {
                let p = Params { weight: &mut *params.weight, grad_weight: params.grad_weight, bias: params.bias.as_mut().map(|(b, g)| (&mut **b, *g)) };
                self.opt.step_layer(backend, id, p, None::<ViewBatch<'_, B>>)
            }
            _ => Ok(()),
        };
        self.comm.check_status(res.is_err())?;
        res?;
        self.broadcast(backend, params.weight, owner)?;
        match params.bias {
            Some((b, _)) => self.broadcast(backend, b, owner),
            None => Ok(()),
        }
    }

    /// Draws a K-FROG step's two samples of the global batch, as
    /// [`Optimizer::sample_kfrog`]: the same draws on every rank.
    pub fn sample_kfrog<'a, 'b>(&mut self, group: GroupId, batch: usize, x_out: &'a mut [usize], y_out: &'b mut [usize]) -> Res<(&'a [usize], &'b [usize]), B> {
        self.opt.sample_kfrog(group, batch, x_out, y_out)
    }

    /// One K-FROG step of layer `id` on every rank (its gradient summed
    /// over the ranks): this rank's input and output-gradient rows go to
    /// the owner, which steps as [`Optimizer::step_layer_kfrog`] would,
    /// and the new weight reaches every rank. The owner's gathered rows
    /// were sized at sharding for the largest batch's samples: a step of
    /// a smaller batch whose samples are smaller is refused
    /// ([`ShapeError::BufferLength`]), on every rank.
    pub fn step_layer_kfrog<'r>(&mut self, backend: &B, id: ParamId, weight: &mut B::Buffer, grad: &B::Buffer, rows: KfrogShardRows<'r, B>) -> Res<(), B>
    where
        B: 'r,
    {
        let (owner, layer) = {
            let slot = self.opt.slot(id)?;
            let ParamKind::Layer(layer) = slot.kind else { return Err(RegistryError::WrongKind(id.index).into()) };
            (slot.owner, layer)
        };
        let (din, dout, ranks, batch) = (layer.input_len(), layer.output_len(), self.ranks(), rows.batch_size);
        let mine = |idx: &[usize]| self.shard(batch).select(idx).len();
        let local: Res<(), B> = (|| {
            check_len(backend, weight, "weight", layer.rows() * layer.weight_cols())?;
            check_len(backend, grad, "grad_weight", layer.rows() * layer.weight_cols())?;
            check_count(backend.view_len(&rows.x), "x (this rank's input rows)", mine(rows.x_rows).saturating_mul(din))?;
            check_count(backend.view_len(&rows.y), "y (this rank's output-gradient rows)", mine(rows.y_rows).saturating_mul(dout))?;
            // The owner's buffers hold exactly the largest batch's samples.
            let slot = &self.opt.slots[id.index as usize];
            match &slot.gathered {
                Some((gx, gy)) => {
                    check_len(backend, gx, "the owner's gathered input rows (sized for the largest batch's sample)", rows.x_rows.len().saturating_mul(din))?;
                    check_len(backend, gy, "the owner's gathered output-gradient rows (sized for the largest batch's sample)", rows.y_rows.len().saturating_mul(dout))?;
                    Ok(())
                }
                None if owner == self.rank() => Err(RegistryError::WrongMethod(id.index).into()),
                None => Ok(()),
            }
        })();
        self.comm.check_status(local.is_err())?;
        local?;
        let count = |idx: &[usize], k: usize, per: usize| Shard::of(batch, k, ranks).map_or(0, |s| s.select(idx).len() * per);
        let (x, y) = (&rows.x, &rows.y);
        let mut gathered = self.opt.slots[id.index as usize].gathered.take();
        let res = (|| {
            let sizes = (rows.x_rows.len() * din, rows.y_rows.len() * dout);
            let into = gathered.as_mut().map(|(gx, gy)| (gx, gy));
            let owns = into.is_some();
            self.gather_to(backend, (x, y), into, (&|k| count(rows.x_rows, k, din), &|k| count(rows.y_rows, k, dout)), sizes, owner)?;
            match gathered.as_ref() {
                Some((gx, gy)) if owns => {
                    let batch = KfrogBatch { x: gx, x_sample: rows.x_rows.len(), y: gy, y_sample: rows.y_rows.len(), batch_size: batch };
                    self.opt.step_layer_kfrog(backend, id, weight, grad, batch)
                }
                _ => Ok(()),
            }
        })();
        self.opt.slots[id.index as usize].gathered = gathered;
        self.comm.check_status(res.is_err())?;
        res?;
        self.broadcast(backend, weight, owner)
    }

    /// One step of plain parameter `id` on every rank (its gradient
    /// summed over the ranks): the owner steps, every rank gets the new
    /// values.
    pub fn step_param(&mut self, backend: &B, id: ParamId, param: ParamGrad<'_, B>) -> Res<(), B> {
        let slot = self.opt.slot(id)?;
        let (owner, ParamKind::Plain { len }) = (slot.owner, slot.kind) else { return Err(RegistryError::WrongKind(id.index).into()) };
        let local = check_len(backend, param.param, "param", len).and_then(|()| check_len(backend, param.grad, "grad", len));
        self.comm.check_status(local.is_err())?;
        local?;
        let res = if self.rank() == owner { self.opt.step_param(backend, id, ParamGrad { param: &mut *param.param, grad: param.grad }) } else { Ok(()) };
        self.comm.check_status(res.is_err())?;
        res?;
        self.broadcast(backend, param.param, owner)
    }

    /// For a FROG layer, this rank's rows checked against the layer: the
    /// global sample size `r`. `None` for other layers.
    fn check_rows(&self, backend: &B, id: ParamId, layer: &Layer, frog: bool, rows: Option<&ShardRows<'_, B>>) -> Res<Option<usize>, B> {
        let Some(rows) = rows.filter(|_| frog) else {
            return if frog { Err(RegistryError::NoBatch(id.index).into()) } else { Ok(None) };
        };
        let mine = rows.sample.in_shard(self.shard(rows.sample.batch_size)).len();
        check_count(backend.view_len(&rows.x), "x (this rank's sampled rows)", mine.saturating_mul(layer.input_len()))?;
        check_count(backend.view_len(&rows.y), "y (this rank's sampled rows)", mine.saturating_mul(layer.output_len()))?;
        Ok(Some(rows.sample.len()))
    }

    #[allow(clippy::too_many_arguments)]
    fn gather_and_step(&mut self, backend: &B, id: ParamId, owner: usize, layer: &Layer, params: &mut Params<'_, B>, rows: ShardRows<'_, B>, r: usize) -> Res<(), B> {
        let (sample, ranks) = (rows.sample, self.ranks());
        let batch = sample.batch_size;
        let count = |k: usize, per: usize| Shard::of(batch, k, ranks).map_or(0, |s| sample.in_shard(s).len() * per);
        let (din, dout) = (layer.input_len(), layer.output_len());
        let mine = self.rank() == owner;
        let mut bufs = if mine { self.opt.dist.as_mut().and_then(|d| d.rows.take()) } else { None };
        let res = (|| {
            if mine && bufs.is_none() {
                return Err(RegistryError::WrongMethod(id.index).into());
            }
            let into = bufs.as_mut().map(|(gx, gy)| (gx, gy));
            self.gather_to(backend, (&rows.x, &rows.y), into, (&|k| count(k, din), &|k| count(k, dout)), (r * din, r * dout), owner)?;
            match bufs.as_ref() {
                Some((gx, gy)) => {
                    let batch = ViewBatch { x: backend.view(gx, 0, r * din).map_err(Error::Backend)?, y: backend.view(gy, 0, r * dout).map_err(Error::Backend)?, sample: r, batch_size: batch };
                    let p = Params { weight: &mut *params.weight, grad_weight: params.grad_weight, bias: params.bias.as_mut().map(|(b, g)| (&mut **b, *g)) };
                    self.opt.step_layer(backend, id, p, Some(batch))
                }
                None => Ok(()),
            }
        })();
        if let (Some(d), Some(b)) = (self.opt.dist.as_mut(), bufs) {
            d.rows = Some(b);
        }
        res
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
