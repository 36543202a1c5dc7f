//! The optimizer's steps: drawing a step's samples, and each registered
//! entry's step, dispatched to its group's method.

use super::registry::{GroupId, ParamId, ParamKind, ParamName, RegistryError};
use super::slot::SlotState;
use super::{AdamStep, Optimizer, Res, Sample};
use crate::backend::Backend;
use crate::config::NonExhaustive;
use crate::error::{Error, ShapeError};
use crate::kfrog::KfrogBatch;
use crate::method::Method;
use crate::sampler::Sampler;
use crate::sgd::{coupled_sgd, frog_plain, sealed::Operands};
use crate::step::sealed::{Inputs, Weights};
use crate::step::{check_count, step_guarded, LayerStep};

impl<B: Backend, const N: usize> Optimizer<B, N> {
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
    /// turned the guard on), Muon's step of the weight in a Muon group,
    /// the group's plain step of weight and bias otherwise (`batch`
    /// unused outside FROG groups: `None::<Batch<B>>`).
    ///
    /// `params` are [`crate::Params`] (buffers) or [`crate::ViewParams`] (views of
    /// the caller's storage), `batch` a [`Batch`](crate::Batch), [`crate::ViewBatch`] or
    /// [`crate::LowpBatch`] (16-bit inputs, on a [`crate::LowpBackend`]),
    /// as [`crate::frog_step`] takes them. AdamW and Muon groups step on
    /// buffers only ([`RegistryError::NeedsBuffers`]).
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
        slot.here(id.index)?;
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
            (Method::Muon(cfg), SlotState::Muon(state)) => {
                if params.lens(backend).1.is_some() {
                    return Err(ShapeError::BiasMismatch.into());
                }
                let shape = super::muon_shape(&layer)?;
                let (mut weight, _) = params.split();
                match (self.muon, self.muon_scratch.as_mut(), weight.buffers()) {
                    (Some(step), Some((scratch, _)), Some((param, grad))) => step(backend, &cfg, &shape, state, scratch, param, grad),
                    (Some(_), Some(_), None) => Err(RegistryError::NeedsBuffers(id.index).into()),
                    // Registration in a Muon group made both.
                    _ => Err(RegistryError::WrongMethod(id.index).into()),
                }
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
        slot.here(id.index)?;
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
        slot.here(id.index)?;
        let ParamKind::Layer(layer) = slot.kind else { return Err(RegistryError::WrongKind(id.index).into()) };
        self.check_batch(batch.batch_size)?;
        let method = self.groups[usize::from(slot.group.0)];
        match (method, &mut self.slots[id.index as usize].state, self.kfrog, self.workspace.as_mut()) {
            (Method::Kfrog(cfg), SlotState::Kfrog(state), Some(step), Some(ws)) => step(backend, &cfg, &layer, state, ws, weight, grad, batch),
            _ => Err(RegistryError::WrongMethod(id.index).into()),
        }
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
