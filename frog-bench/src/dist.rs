//! Data-parallel training: this rank's shard of every batch, the one
//! all-reduce that sums the ranks' gradients, and the time each part of a
//! step takes.
//!
//! Every rank of a run holds the same network and makes the same global
//! batches (the same seed); rank `k` trains on its [`Shard`] of `b_k` of
//! the `B` samples. Its loss gradient is scaled by `b_k / B` before the
//! backward pass, so that its gradients and its sampled output gradients
//! are its part of the global batch's mean (a mean of the shards' means
//! would be wrong when the ranks' shards differ in size), and one
//! all-reduce sums the gradients, the loss and the correct count. The
//! optimizer then steps every parameter in one
//! [`frog_core::Distributed::step_all`]: every preconditioned layer's
//! sampled rows gathered to its owner rank, the owners' steps at once, the
//! new values broadcast. BatchNorm normalizes each shard by its own
//! statistics and keeps its own running statistics, as torch's
//! `DistributedDataParallel` computes them; the evaluation uses rank 0's.

use std::cell::Cell;
use std::time::{Duration, Instant};

use frog_core::{Backend, Collective, CollectiveError, HostCollective, HostOp, Scalar, Shape, Shard, Strided};

use crate::device::{backend_err, Device, LossStats};
use crate::error::{Error, Result};
use crate::model::Net;
use crate::optim::Optimizer;
use crate::train::Staging;

/// Seconds of the parts of a run's training steps (summed over steps).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Parts {
    /// Forward and backward passes on this rank's shard.
    pub forward_backward: f64,
    /// The all-reduce of the gradients, loss and correct count (and its
    /// status word, where a rank waits for the slowest's passes).
    pub all_reduce: f64,
    /// The optimizer's step, its collectives included.
    pub step: f64,
    /// Of the step: the sampled rows gathered to their layers' owners.
    pub gathers: f64,
    /// Of the step: the owners' new weights broadcast to every rank.
    pub broadcasts: f64,
    /// Of the step: the status words that tell every rank whether another
    /// failed, and the first step's agreement check.
    pub checks: f64,
}

impl Parts {
    /// One line for a log: each part's seconds, the step's collectives as
    /// parts of it (the preconditioning is the rest of the step).
    pub fn line(&self, ranks: usize) -> String {
        if ranks == 1 {
            return format!("parts: forward+backward {:.1} s, optimizer {:.1} s", self.forward_backward, self.step);
        }
        let compute = (self.step - self.gathers - self.broadcasts - self.checks).max(0.0);
        format!(
            "parts (this rank): forward+backward {:.1} s, gradient all-reduce {:.1} s, optimizer {:.1} s (row gathers {:.1}, weight broadcasts {:.1}, status checks {:.1}, preconditioning and updates {:.1})",
            self.forward_backward, self.all_reduce, self.step, self.gathers, self.broadcasts, self.checks, compute
        )
    }
}

/// A communicator that times the optimizer step's calls: the gathers of
/// sampled rows, the broadcasts of new weights, and the host words (status
/// and agreement checks). A wait for a slower rank counts in the call that
/// waits. The gradient all-reduce is timed whole by its caller, its status
/// word included ([`Timed::untimed`]).
pub struct Timed<'c, C> {
    inner: &'c C,
    on: Cell<bool>,
    gathers: Cell<Duration>,
    broadcasts: Cell<Duration>,
    checks: Cell<Duration>,
}

impl<'c, C> Timed<'c, C> {
    /// `inner`, timed from zero.
    pub fn new(inner: &'c C) -> Self {
        Self { inner, on: Cell::new(true), gathers: Cell::default(), broadcasts: Cell::default(), checks: Cell::default() }
    }

    /// Runs `f`, adding its time to `into` while timing is on.
    fn time<T>(&self, into: &Cell<Duration>, f: impl FnOnce() -> T) -> T {
        let start = Instant::now();
        let out = f();
        if self.on.get() {
            into.set(into.get() + start.elapsed());
        }
        out
    }

    /// Runs `f` with this communicator's timing off.
    pub fn untimed<T>(&self, f: impl FnOnce(&Self) -> T) -> T {
        self.on.set(false);
        let out = f(self);
        self.on.set(true);
        out
    }

    /// The collectives' seconds so far, as the parts of [`Parts`] they
    /// are (the others 0), reset to zero.
    pub fn take(&self) -> Parts {
        let s = |c: &Cell<Duration>| c.take().as_secs_f64();
        Parts { gathers: s(&self.gathers), broadcasts: s(&self.broadcasts), checks: s(&self.checks), ..Parts::default() }
    }
}

impl<C: HostCollective> HostCollective for Timed<'_, C> {
    fn rank(&self) -> usize {
        self.inner.rank()
    }
    fn size(&self) -> usize {
        self.inner.size()
    }
    fn all_reduce_u64(&self, data: &mut [u64], op: HostOp) -> std::result::Result<(), CollectiveError> {
        self.time(&self.checks, || self.inner.all_reduce_u64(data, op))
    }
    fn broadcast_bytes(&self, data: &mut [u8], root: usize) -> std::result::Result<(), CollectiveError> {
        self.time(&self.checks, || self.inner.broadcast_bytes(data, root))
    }
}

impl<B: Backend, C: Collective<B>> Collective<B> for Timed<'_, C> {
    fn all_reduce_sum(&self, backend: &B, data: &mut B::ViewMut<'_>) -> std::result::Result<(), CollectiveError> {
        self.inner.all_reduce_sum(backend, data)
    }
    fn broadcast(&self, backend: &B, data: &mut B::ViewMut<'_>, root: usize) -> std::result::Result<(), CollectiveError> {
        self.time(&self.broadcasts, || self.inner.broadcast(backend, data, root))
    }
    fn gather(&self, backend: &B, send: &B::View<'_>, recv: Option<&mut B::ViewMut<'_>>, counts: &dyn Fn(usize) -> usize, root: usize) -> std::result::Result<(), CollectiveError> {
        self.time(&self.gathers, || self.inner.gather(backend, send, recv, counts, root))
    }
}

/// Rank `rank`'s shard of a global batch of `batch` over `ranks`, refused
/// when some rank's would be empty (every rank trains on at least one
/// sample: BatchNorm normalizes by its shard's statistics).
pub fn shard_of(batch: usize, rank: usize, ranks: usize) -> Result<Shard> {
    if ranks > batch {
        return Err(Error::new(format!("{ranks} ranks for a batch of {batch}: every rank needs at least one sample of each batch (use at most {batch} ranks)")));
    }
    Shard::of(batch, rank, ranks).map_err(|e| Error::new(format!("rank {rank} of {ranks}: {e}")))
}

/// The buffer the one all-reduce of a data-parallel step sums: every
/// parameter's gradient, then the shard's part of the loss and its
/// correct count (exact in any float type at a batch's counts).
pub struct GradSum<D: Device> {
    flat: D::Buffer,
    /// Entries of the gradients (the loss and count follow).
    len: usize,
}

impl<D: Device> GradSum<D> {
    /// Room for `net`'s gradients.
    pub fn new(dev: &D, net: &Net<D>) -> Result<Self> {
        let len = net.params.iter().map(|p| p.len()).sum();
        Ok(Self { flat: dev.zeros(len + 2)?, len })
    }

    /// Sums every rank's gradients of `net` (each already its part of the
    /// global batch's mean) into every rank's, and returns the global
    /// batch's mean loss (summed in the device's scalar type) and correct
    /// count, from `local`: this rank's forward and backward passes over
    /// its `shard` of `batch` samples, whose loss is its shard's mean.
    /// Every rank first says whether its `local` failed, so that an error
    /// on one rank is an error on all, not a wait.
    pub fn all_reduce<C: Collective<D::Backend>>(&mut self, dev: &D, comm: &C, net: &mut Net<D>, local: Result<LossStats>, shard: Shard, batch: usize) -> Result<LossStats> {
        comm.check_status(local.is_err()).map_err(peer)?;
        let stats = local?;
        let be = dev.backend();
        let mut off = 0;
        for p in &net.params {
            let n = p.len();
            be.copy_strided(Shape::new(1, n), &be.view(&p.grad, 0, n).map_err(backend_err)?, Strided::dense(n), &mut self.flat, Strided { stride: n, offset: off }).map_err(backend_err)?;
            off += n;
        }
        let part = [stats.loss * shard.len as f64 / batch as f64, stats.correct as f64].map(D::Scalar::of_f64);
        be.write(&part, &mut self.flat, self.len).map_err(backend_err)?;
        let all = self.len + 2;
        comm.all_reduce_sum(be, &mut be.view_mut(&mut self.flat, 0, all).map_err(backend_err)?).map_err(peer)?;
        let mut off = 0;
        for p in &mut net.params {
            let n = p.len();
            be.copy_strided(Shape::new(1, n), &be.view(&self.flat, off, n).map_err(backend_err)?, Strided::dense(n), &mut p.grad, Strided::dense(n)).map_err(backend_err)?;
            off += n;
        }
        let mut total = [D::Scalar::ZERO; 2];
        be.read(&self.flat, self.len, &mut total).map_err(backend_err)?;
        let [loss, correct] = total.map(D::Scalar::as_f64);
        Ok(LossStats { loss, correct: correct.round() as usize })
    }
}

/// A collective's error as the engine's.
pub fn peer(e: CollectiveError) -> Error {
    Error::new(format!("data-parallel run: {e}"))
}

/// Rank 0's `values` on every rank (the evaluation's results), after
/// every rank has said whether it failed (`failed` on rank 0: its
/// evaluation's error).
pub fn share_from_lead<C: HostCollective>(comm: &C, failed: bool, values: &mut [f64]) -> Result<()> {
    comm.check_status(failed).map_err(peer)?;
    let mut bytes = [0u8; 64];
    let n = values.len() * 8;
    let bytes = bytes.get_mut(..n).ok_or_else(|| Error::new("at most 8 values are shared"))?;
    for (b, v) in bytes.chunks_exact_mut(8).zip(values.iter()) {
        b.copy_from_slice(&v.to_le_bytes());
    }
    comm.broadcast_bytes(bytes, 0).map_err(peer)?;
    for (b, v) in bytes.chunks_exact(8).zip(values.iter_mut()) {
        let mut word = [0u8; 8];
        word.copy_from_slice(b);
        *v = f64::from_le_bytes(word);
    }
    Ok(())
}

/// One rank of a run, as its training steps see it: the communicator
/// (timed), this rank's shard of the global batch, the gradient sum, and
/// the time of each part of the steps so far. With one rank ([`frog_core::Solo`]),
/// a step is the single process's, with nothing summed or gathered.
pub struct DataParallel<'c, D: Device, C> {
    comm: Timed<'c, C>,
    shard: Shard,
    batch: usize,
    /// `None` with one rank.
    sum: Option<GradSum<D>>,
    forward_backward: Duration,
    all_reduce: Duration,
    step: Duration,
}

impl<'c, D: Device, C: Collective<D::Backend>> DataParallel<'c, D, C> {
    /// `comm.rank()`'s part of a run with global batches of `batch`, for
    /// `net` (built for this rank's shard, [`shard_of`]).
    pub fn new(dev: &D, comm: &'c C, batch: usize, net: &Net<D>) -> Result<Self> {
        let shard = shard_of(batch, comm.rank(), comm.size())?;
        let sum = if comm.size() > 1 { Some(GradSum::new(dev, net)?) } else { None };
        Ok(Self { comm: Timed::new(comm), shard, batch, sum, forward_backward: Duration::ZERO, all_reduce: Duration::ZERO, step: Duration::ZERO })
    }

    /// This rank's shard of every batch.
    pub fn shard(&self) -> Shard {
        self.shard
    }

    /// The communicator, timed.
    pub fn comm(&self) -> &Timed<'c, C> {
        &self.comm
    }

    /// The parts' seconds since the last call.
    pub fn take_parts(&mut self) -> Parts {
        let s = |d: &mut Duration| std::mem::take(d).as_secs_f64();
        Parts { forward_backward: s(&mut self.forward_backward), all_reduce: s(&mut self.all_reduce), step: s(&mut self.step), ..self.comm.take() }
    }

    /// One training step on this rank's shard of the global batch, staged
    /// in `st`: forward, loss (its gradient scaled by `b_k / B`), backward
    /// (gathering the optimizer's sampled rows in the shard), the
    /// gradients summed over the ranks, the optimizer's step. Returns the
    /// global batch's mean loss and correct count, the same on every rank.
    pub fn train_step(&mut self, dev: &D, net: &mut Net<D>, opt: &mut Optimizer<D>, st: &Staging<D>) -> Result<LossStats> {
        let Self { comm, shard, batch, sum, forward_backward, all_reduce, step } = self;
        let (shard, batch) = (*shard, *batch);
        let start = Instant::now();
        let (mut passes, mut reduce) = (Duration::ZERO, Duration::ZERO);
        let stats = opt.train_step(dev, net, &*comm, shard, |net, rows| {
            let t = Instant::now();
            let local = (|| {
                net.forward(dev, &st.x, shard.len, true)?;
                let s = net.loss(dev, shard.len, &st.labels)?;
                if shard.len != batch {
                    net.scale_loss_gradient(dev, shard.len, shard.len as f64 / batch as f64)?;
                }
                net.backward(dev, &st.x, shard.len, rows)?;
                Ok(s)
            })();
            passes = t.elapsed();
            let t = Instant::now();
            let out = match sum {
                Some(sum) => comm.untimed(|comm| sum.all_reduce(dev, comm, net, local, shard, batch)),
                None => local,
            };
            reduce = t.elapsed();
            out
        })?;
        *forward_backward += passes;
        *all_reduce += reduce;
        *step += start.elapsed().saturating_sub(passes + reduce);
        Ok(stats)
    }
}
