//! The airbench94_muon training recipe on a [`Device`]: the network
//! ([`AirbenchNet`]), its optimizers, the schedule, evaluation with and
//! without test-time augmentation, and a whole run ([`train`]).
//!
//! The optimizers are groups of one frog-core optimizer, as the
//! reference's two `torch.optim` objects: Nesterov SGD (momentum 0.85,
//! coupled weight decay `2e-6 * 2000 / lr0`) for the whitening bias, the
//! BatchNorm biases and the head, each group at its own rate; and a
//! [`FilterMethod`] for the six 3x3 filters: the record's Muon, FROG in its
//! place, or Nesterov SGD. The frozen parameters are not registered. Every
//! rate follows the linear schedule ([`Schedule`]); the whitening bias
//! gets no gradient and no step once its epochs are over.

use std::sync::Arc;
use std::time::Instant;

use frog_core::{Config, GroupId, Layer, MuonConfig, ParamId, Scalar, SgdConfig};

use super::loader::{self, Loader};
use super::model::{AirbenchNet, Role, CLASSES, WIDTHS};
use super::schedule::{self, Schedule};
use super::tta::VIEWS;
use super::{image_count, whiten};
use crate::data::cifar::PIXELS;
use crate::data::Data;
use crate::device::{Device, LossStats};
use crate::error::{Error, Result};
use crate::model::SampledRows;
use crate::optim::step_one;
use crate::progress;
use crate::train::{Divergence, EpochRecord};

/// The initial rate of the whitening bias and of the BatchNorm biases.
pub const BIAS_LR: f64 = 0.053;
/// The initial rate of the head.
pub const HEAD_LR: f64 = 0.67;
/// The SGD groups' Nesterov momentum.
pub const SGD_MOMENTUM: f64 = 0.85;
/// The reference's `wd = 2e-6 * batch_size` at its batch of 2000: each SGD
/// group's weight decay is this over the group's initial rate, so that
/// `lr * wd` starts at `2e-6 * 2000` in every group and decays with the
/// schedule.
pub const DECAY: f64 = 2e-6 * loader::BATCH as f64;

/// Parameters the optimizer registers: 14 (the whitening bias, six
/// BatchNorm biases, six filters and the head).
const PARAMS: usize = 16;
/// Mixed into the run's seed for the network's initialization, so its
/// draws are not those of FROG's sampler (the same generator, seeded with
/// the run's seed).
const INIT_STREAM: u64 = 0x5EED_0FA1_BE7C_4D29;

/// The recipe's Nesterov SGD at initial rate `lr`: momentum 0.85 and
/// weight decay [`DECAY`]` / lr`.
pub fn sgd(lr: f64) -> SgdConfig {
    SgdConfig { lr, momentum: SGD_MOMENTUM, weight_decay: DECAY / lr, nesterov: true, ..SgdConfig::default() }
}

/// What steps the six 3x3 filters.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum FilterMethod {
    /// Muon ([`FilterMethod::record`]: the record's).
    Muon(MuonConfig),
    /// FROG, with these settings except `batch_averaged`, which the recipe
    /// turns off: its loss is summed over the batch, not averaged.
    Frog(Config),
    /// SGD ([`FilterMethod::sgd`]: Nesterov, the first-order line).
    Sgd(SgdConfig),
}

/// The record's Muon: airbench's form at lr 0.24, momentum 0.6, Nesterov,
/// 3 Newton-Schulz steps.
pub fn record_muon() -> MuonConfig {
    MuonConfig { lr: 0.24, momentum: 0.6, nesterov: true, ..MuonConfig::airbench() }
}

impl FilterMethod {
    /// The record's filters: Muon as [`record_muon`].
    pub fn record() -> Self {
        Self::Muon(record_muon())
    }

    /// Nesterov SGD on the filters at initial rate `lr`, with the other
    /// groups' momentum and decay rule ([`sgd`]).
    pub fn sgd(lr: f64) -> Self {
        Self::Sgd(sgd(lr))
    }

    /// The filters' frog-core method: FROG's with `batch_averaged` off.
    pub fn method(&self) -> frog_core::Method {
        match *self {
            Self::Muon(c) => c.into(),
            Self::Frog(c) => Config { batch_averaged: false, ..c }.into(),
            Self::Sgd(c) => c.into(),
        }
    }

    /// The initial rate.
    pub fn lr(&self) -> f64 {
        self.method().lr()
    }

    /// Checks the settings in the scalar type `S` the steps run in
    /// (frog-core's `validate_for`), so that a study refuses them before
    /// any work.
    pub fn validate_for<S: Scalar>(&self) -> Result<()> {
        self.method().validate_for::<S>().map_err(|e| Error::new(e.to_string()))
    }
}

/// The group index in [`RecipeOptimizer`] of a trained role.
fn group_index(role: Role) -> Option<usize> {
    match role {
        Role::Frozen => None,
        Role::WhitenBias => Some(0),
        Role::NormBias => Some(1),
        Role::Head => Some(2),
        Role::Filter => Some(3),
    }
}

/// The recipe's optimizers over an [`AirbenchNet`], for one batch size.
pub struct RecipeOptimizer<D: Device> {
    inner: frog_core::Optimizer<D::Backend, PARAMS>,
    /// The groups of the whitening bias, the BatchNorm biases, the head and
    /// the filters, each with its initial rate.
    groups: [(GroupId, f64); 4],
    /// Each parameter's handle and role, in the network's order; `None`
    /// for the frozen ones.
    ids: Vec<Option<(ParamId, Role)>>,
    /// FROG's sample of the step (empty for the other methods).
    sample: Vec<usize>,
    batch: usize,
}

impl<D: Device> RecipeOptimizer<D> {
    /// The optimizers of `net`'s trained parameters for batches of
    /// `batch` (at most the network's capacity), the filters stepped by
    /// `filters`; with FROG, the filters' sampled rows are allocated and
    /// its sampler seeded with `seed`. An error for settings frog-core
    /// rejects.
    pub fn new(dev: &D, filters: FilterMethod, net: &mut AirbenchNet<D>, batch: usize, seed: u64) -> Result<Self> {
        if batch == 0 || batch > net.capacity {
            return Err(Error::new(format!("airbench: training batch {batch} must be between 1 and {}", net.capacity)));
        }
        let mut inner = frog_core::Optimizer::new(sgd(BIAS_LR), batch, seed)?;
        let norm = inner.add_group(sgd(BIAS_LR))?;
        let head = inner.add_group(sgd(HEAD_LR))?;
        // A Muon group is made from its settings, not a `Method`: the
        // optimizer takes Muon only on a backend with its products.
        let filter = match filters {
            FilterMethod::Muon(c) => inner.add_group(c)?,
            _ => inner.add_group(filters.method())?,
        };
        let groups = [(GroupId::DEFAULT, BIAS_LR), (norm, BIAS_LR), (head, HEAD_LR), (filter, filters.lr())];
        let backend = dev.backend();
        let mut ids = Vec::with_capacity(net.params.len());
        for (p, &role) in net.params.iter().zip(net.roles()) {
            let Some(g) = group_index(role) else {
                ids.push(None);
                continue;
            };
            let id = match p.conv {
                Some(conv) => inner.add_layer(backend, &p.name, Layer::conv2d(conv, false), groups[g].0)?,
                None => inner.add_param(backend, &p.name, p.len(), groups[g].0)?,
            };
            ids.push(Some((id, role)));
        }
        let rows = if matches!(filters, FilterMethod::Frog(_)) { inner.sample_rows(batch) } else { 0 };
        if rows > 0 {
            net.enable_sampling(dev, rows)?;
        }
        Ok(Self { inner, groups, ids, sample: vec![0; rows], batch })
    }

    /// FROG's sample for the next backward pass (sorted batch rows, the
    /// same for the inputs and the output gradients); `None` for the
    /// other methods.
    pub fn draw_sample(&mut self) -> Result<Option<SampledRows<'_>>> {
        if self.sample.is_empty() {
            return Ok(None);
        }
        let x = self.inner.sample(self.batch, &mut self.sample)?.indices();
        Ok(Some(SampledRows { x, y: x }))
    }

    /// Sets every group's rate for the 0-based `step` of `schedule`, then
    /// steps every trained parameter of `net` from its gradient (and FROG
    /// from the sampled rows), the whitening bias only while its schedule
    /// runs. An error once the run's schedule is over.
    pub fn step(&mut self, dev: &D, net: &mut AirbenchNet<D>, schedule: &Schedule, step: usize) -> Result<()> {
        let factor = schedule.lr(step).ok_or_else(|| Error::new(format!("airbench: step {step} is past the schedule's {} steps", schedule.steps())))?;
        let whiten_bias = schedule.whiten_bias_lr(step);
        for (k, &(group, lr0)) in self.groups.iter().enumerate() {
            if let Some(f) = if k == 0 { whiten_bias } else { Some(factor) } {
                self.inner.set_group_lr(group, lr0 * f)?;
            }
        }
        let rows = (self.sample.len(), self.sample.len());
        for (p, entry) in net.params.iter_mut().zip(&self.ids) {
            match *entry {
                Some((_, Role::WhitenBias)) if whiten_bias.is_none() => {}
                Some((id, _)) => step_one(&mut self.inner, dev.backend(), id, p, rows, self.batch, false)?,
                None => {}
            }
        }
        Ok(())
    }
}

/// A run's network, optimizers and schedule, and the steps taken.
pub struct Recipe<D: Device> {
    /// The network.
    pub net: AirbenchNet<D>,
    /// Its optimizers.
    pub opt: RecipeOptimizer<D>,
    /// The learning-rate schedule.
    pub schedule: Schedule,
    batch: usize,
    step: usize,
}

impl<D: Device> Recipe<D> {
    /// A fresh run: the network of `widths` for training batches of
    /// `batch`, initialized from `seed`, its filters stepped by `filters`
    /// on `schedule`. The whitening weight is still to be set
    /// ([`AirbenchNet::set_whitening`]).
    pub fn new(dev: &D, widths: [usize; 3], filters: FilterMethod, batch: usize, schedule: Schedule, seed: u64) -> Result<Self> {
        let mut net = AirbenchNet::new(dev, widths, batch, seed ^ INIT_STREAM)?;
        let opt = RecipeOptimizer::new(dev, filters, &mut net, batch, seed)?;
        Ok(Self { net, opt, schedule, batch, step: 0 })
    }

    /// Steps taken.
    pub fn steps_done(&self) -> usize {
        self.step
    }

    /// One training step on the staged batch `x`, `labels` (the training
    /// batch size): train-mode forward, the summed loss, backward (the
    /// whitening bias's gradient while it trains; FROG's sampled rows),
    /// the step's rates and the optimizer steps. Returns the loss (summed)
    /// and the right predictions of the forward pass. An error once the
    /// schedule is over.
    pub fn train_step(&mut self, dev: &D, x: &D::Buffer, labels: &D::Labels) -> Result<LossStats> {
        if self.schedule.lr(self.step).is_none() {
            return Err(Error::new(format!("airbench: the schedule's {} steps are done", self.schedule.steps())));
        }
        let whiten_bias = self.schedule.whiten_bias_lr(self.step).is_some();
        let sample = self.opt.draw_sample()?;
        self.net.forward(dev, x, self.batch, true)?;
        let stats = self.net.loss(dev, self.batch, labels)?;
        self.net.backward(dev, self.batch, sample, whiten_bias)?;
        self.opt.step(dev, &mut self.net, &self.schedule, self.step)?;
        self.step += 1;
        Ok(stats)
    }
}

/// A batch's staging for evaluation: the device input, and on the host a
/// test-time view and a batch's logits.
struct Views<D: Device> {
    view: Vec<D::Scalar>,
    x: D::Buffer,
    logits: Vec<D::Scalar>,
}

/// Eval-mode logits of `images` (at most the network's capacity) into
/// `out`, through the device input `x`.
fn eval_logits<D: Device>(dev: &D, net: &mut AirbenchNet<D>, x: &mut D::Buffer, images: &[D::Scalar], out: &mut [D::Scalar]) -> Result<()> {
    dev.upload(images, x)?;
    net.forward(dev, x, images.len() / PIXELS, false)?;
    dev.download(net.logits(), out)
}

impl<D: Device> Views<D> {
    /// See [`Evaluator::logits`].
    fn logits(&mut self, dev: &D, net: &mut AirbenchNet<D>, images: &[D::Scalar], tta: bool, out: &mut [D::Scalar]) -> Result<()> {
        let n = image_count(images.len(), "airbench evaluation")?;
        if n > self.logits.len() / CLASSES || out.len() != n * CLASSES {
            return Err(Error::new(format!("airbench evaluation: {n} images, {} logits, batches of up to {}", out.len(), self.logits.len() / CLASSES)));
        }
        if !tta {
            return eval_logits(dev, net, &mut self.x, images, out);
        }
        out.fill(D::Scalar::of_f64(0.0));
        let (view, logits) = (&mut self.view[..images.len()], &mut self.logits[..out.len()]);
        for v in &VIEWS {
            v.write(images, view)?;
            eval_logits(dev, net, &mut self.x, view, logits)?;
            v.accumulate(logits, out)?;
        }
        Ok(())
    }
}

/// Evaluation of a network on normalized images, in batches of up to a
/// capacity (at most the network's), with the staging buffers kept
/// between calls.
pub struct Evaluator<D: Device> {
    views: Views<D>,
    labels: D::Labels,
    /// The augmented logits of a batch.
    sum: Vec<D::Scalar>,
}

/// The class of a row of logits: its first largest entry, as torch's
/// `argmax` takes it from finite logits.
fn predicted<S: Scalar>(row: &[S]) -> usize {
    let mut best = 0;
    for (k, v) in row.iter().enumerate() {
        if v.as_f64() > row[best].as_f64() {
            best = k;
        }
    }
    best
}

impl<D: Device> Evaluator<D> {
    /// Staging for batches of up to `capacity` images.
    pub fn new(dev: &D, capacity: usize) -> Result<Self> {
        let zero = D::Scalar::of_f64(0.0);
        let views = Views { view: vec![zero; capacity * PIXELS], x: dev.zeros(capacity * PIXELS)?, logits: vec![zero; capacity * CLASSES] };
        Ok(Self { views, labels: dev.labels(capacity)?, sum: vec![zero; capacity * CLASSES] })
    }

    /// Batches of `images` (normalized) and their `labels`, of up to the
    /// capacity; an error when they disagree or `images` is not whole
    /// images.
    fn batches<'a>(&self, images: &'a [D::Scalar], labels: &'a [u8]) -> Result<std::iter::Zip<std::slice::Chunks<'a, D::Scalar>, std::slice::Chunks<'a, u8>>> {
        let n = image_count(images.len(), "airbench evaluation")?;
        if n != labels.len() {
            return Err(Error::new(format!("airbench evaluation: {n} images and {} labels", labels.len())));
        }
        let capacity = self.sum.len() / CLASSES;
        Ok(images.chunks(capacity * PIXELS).zip(labels.chunks(capacity)))
    }

    /// The eval-mode logits of `images` (normalized, at most the
    /// capacity) into `out` (`CLASSES` per image): plain, or with `tta`
    /// the weighted average of the six test-time views ([`VIEWS`]), as
    /// the reference's `infer(tta_level=2)`.
    pub fn logits(&mut self, dev: &D, net: &mut AirbenchNet<D>, images: &[D::Scalar], tta: bool, out: &mut [D::Scalar]) -> Result<()> {
        self.views.logits(dev, net, images, tta, out)
    }

    /// The mean loss per image ([`super::model::LOSS`]) and the accuracy
    /// (percent) of `net` in eval mode on `images` (normalized) with their
    /// `labels`.
    pub fn test(&mut self, dev: &D, net: &mut AirbenchNet<D>, images: &[D::Scalar], labels: &[u8]) -> Result<(f64, f64)> {
        let (mut loss, mut correct) = (0.0, 0);
        for (x, l) in self.batches(images, labels)? {
            dev.upload(x, &mut self.views.x)?;
            dev.upload_labels(l, &mut self.labels)?;
            net.forward(dev, &self.views.x, l.len(), false)?;
            let s = net.loss(dev, l.len(), &self.labels)?;
            loss += s.loss;
            correct += s.correct;
        }
        Ok((loss / labels.len() as f64, 100.0 * correct as f64 / labels.len() as f64))
    }

    /// The accuracy (percent) of `net` with test-time augmentation on
    /// `images` (normalized) with their `labels`.
    pub fn tta_accuracy(&mut self, dev: &D, net: &mut AirbenchNet<D>, images: &[D::Scalar], labels: &[u8]) -> Result<f64> {
        let mut correct = 0;
        for (x, l) in self.batches(images, labels)? {
            let out = &mut self.sum[..l.len() * CLASSES];
            self.views.logits(dev, net, x, true, out)?;
            correct += out.chunks(CLASSES).zip(l).filter(|(row, &label)| predicted(row) == usize::from(label)).count();
        }
        Ok(100.0 * correct as f64 / labels.len() as f64)
    }
}

/// One airbench run's settings.
#[derive(Clone, Debug, PartialEq)]
pub struct AirbenchConfig {
    /// Label in tables and plots.
    pub label: String,
    /// What steps the six filters.
    pub filters: FilterMethod,
    /// The blocks' widths.
    pub widths: [usize; 3],
    /// Training batch size (the last partial batch of an epoch is dropped).
    pub batch: usize,
    /// Training length in epochs (fractions round up to whole steps).
    pub epochs: f64,
    /// Epochs the whitening bias trains.
    pub whiten_bias_epochs: f64,
    /// Seed of the initialization, the data's augmentation and order, and
    /// FROG's sampler.
    pub seed: u64,
}

impl AirbenchConfig {
    /// The record's run with `filters` on the six filters: widths
    /// 64/256/256, batch 2000, 8 epochs, the whitening bias trained for 3.
    pub fn record(label: impl Into<String>, filters: FilterMethod, seed: u64) -> Self {
        Self { label: label.into(), filters, widths: WIDTHS, batch: loader::BATCH, epochs: schedule::EPOCHS, whiten_bias_epochs: schedule::WHITEN_BIAS_EPOCHS, seed }
    }
}

/// What one airbench run did.
#[derive(Clone, Debug, PartialEq)]
pub struct AirbenchRun {
    /// Per-epoch records; the last one carries the test-time-augmented
    /// accuracy.
    pub records: Vec<EpochRecord>,
    /// The final test accuracy with test-time augmentation, percent.
    pub tta_test_acc: f64,
    /// Seconds spent on the whitening filters (counted in the training
    /// time, in the first epoch, as the reference times them).
    pub whiten_seconds: f64,
    /// Training seconds: the whitening and every epoch's batches and
    /// steps (the last record's `train_seconds`).
    pub train_seconds: f64,
    /// Seconds of the final test-time-augmented evaluation, which the
    /// reference adds to its time (not in `train_seconds`).
    pub tta_seconds: f64,
}

/// Trains `cfg` on `data` as airbench94_muon does, calling `on_epoch`
/// after every epoch: the whitening filters from the first
/// [`whiten::IMAGES`] training images (all of them when there are
/// fewer), then the schedule's steps on the augmented batches, the plain
/// test accuracy after every epoch and the test-time-augmented one after
/// the last. Losses in the records are per image (the summed loss over the
/// batch size), and each record's `lr` is the filters' rate at the epoch's
/// first step. A non-finite training loss stops the run with an error; a
/// diverging finite one prints a warning.
pub fn train<D: Device>(dev: &D, data: &Data, cfg: &AirbenchConfig, mut on_epoch: impl FnMut(&EpochRecord)) -> Result<AirbenchRun> {
    let mut loader = Loader::<D::Scalar>::new(Arc::clone(&data.train), cfg.batch, cfg.seed)?;
    let schedule = Schedule::new(loader.batches(), cfg.epochs, cfg.whiten_bias_epochs)?;
    let mut recipe = Recipe::new(dev, cfg.widths, cfg.filters, cfg.batch, schedule, cfg.seed)?;
    let zero = D::Scalar::of_f64(0.0);
    let mut test = vec![zero; data.test.pixels.len()];
    loader::normalize(&data.test.pixels, &mut test).map_err(|e| Error::new(format!("{}: the test set: {e}", cfg.label)))?;
    let mut eval = Evaluator::new(dev, cfg.batch)?;
    let (mut host_x, mut host_labels) = (vec![zero; cfg.batch * PIXELS], vec![0u8; cfg.batch]);
    let (mut x, mut labels) = (dev.zeros(cfg.batch * PIXELS)?, dev.labels(cfg.batch)?);

    let start = Instant::now();
    let first = &data.train.pixels[..data.train.len().min(whiten::IMAGES) * PIXELS];
    let mut images = vec![zero; first.len()];
    loader::normalize(first, &mut images)?;
    recipe.net.set_whitening(dev, &whiten::whitening(&images)?.weight)?;
    let whiten_seconds = start.elapsed().as_secs_f64();

    let mut records = Vec::with_capacity(schedule.epochs());
    let (mut total, mut tta_seconds, mut tta_test_acc) = (0.0, 0.0, 0.0);
    let mut divergence = Divergence::default();
    for epoch in 0..schedule.epochs() {
        let start = Instant::now();
        let lr = cfg.filters.lr() * schedule.lr(recipe.steps_done()).unwrap_or(0.0);
        let batches = loader.epoch();
        let steps = batches.len().min(schedule.steps() - recipe.steps_done());
        let progress = progress::bar((steps * cfg.batch) as u64, progress::EPOCH, true).with_prefix((epoch + 1).to_string());
        let (mut loss_sum, mut correct) = (0.0, 0);
        for k in 0..steps {
            batches.write(k, &mut host_x, &mut host_labels)?;
            dev.upload(&host_x, &mut x)?;
            dev.upload_labels(&host_labels, &mut labels)?;
            let s = recipe.train_step(dev, &x, &labels)?;
            let loss = s.loss / cfg.batch as f64;
            if !loss.is_finite() {
                return Err(Error::new(format!("{}: training diverged (loss {loss} at epoch {}, step {})", cfg.label, epoch + 1, k + 1)));
            }
            if let Some(warning) = divergence.check(loss) {
                progress.suspend(|| eprintln!("warning: {}: epoch {}, step {}: {warning}", cfg.label, epoch + 1, k + 1));
            }
            loss_sum += loss;
            correct += s.correct;
            progress.inc(cfg.batch as u64);
            progress.set_message(format!("{:.4}", loss_sum / (k + 1) as f64));
        }
        let seconds = start.elapsed().as_secs_f64() + if epoch == 0 { whiten_seconds } else { 0.0 };
        total += seconds;
        progress.finish_and_clear();
        let (test_loss, test_acc) = eval.test(dev, &mut recipe.net, &test, &data.test.labels)?;
        let tta = if epoch + 1 == schedule.epochs() {
            let start = Instant::now();
            tta_test_acc = eval.tta_accuracy(dev, &mut recipe.net, &test, &data.test.labels)?;
            tta_seconds = start.elapsed().as_secs_f64();
            Some(tta_test_acc)
        } else {
            None
        };
        let rec = EpochRecord {
            epoch: epoch + 1,
            lr,
            train_loss: loss_sum / steps as f64,
            train_acc: 100.0 * correct as f64 / (steps * cfg.batch) as f64,
            test_loss,
            test_acc,
            epoch_seconds: seconds,
            train_seconds: total,
            tta_test_acc: tta,
        };
        on_epoch(&rec);
        records.push(rec);
    }
    Ok(AirbenchRun { records, tta_test_acc, whiten_seconds, train_seconds: total, tta_seconds })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::cpu::CpuDevice;

    #[test]
    fn the_sgd_groups_are_the_references() {
        let s = sgd(BIAS_LR);
        assert_eq!((s.lr, s.momentum, s.nesterov), (0.053, 0.85, true));
        assert_eq!(s.weight_decay, 2e-6 * 2000.0 / 0.053);
        assert_eq!(FilterMethod::sgd(0.1).lr(), 0.1);
        let FilterMethod::Muon(m) = FilterMethod::record() else { panic!("the record runs Muon") };
        assert_eq!((m.form, m.lr, m.momentum, m.nesterov, m.ns_steps), (frog_core::MuonForm::Airbench, 0.24, 0.6, true, 3));
    }

    #[test]
    fn predictions_take_the_first_largest_logit() {
        assert_eq!(predicted(&[0.0f64, 2.0, 2.0, -1.0]), 1);
        assert_eq!(predicted(&[3.0f32, 2.0]), 0);
        assert_eq!(predicted(&[f64::NAN, 1.0]), 0, "a NaN in first place stays, as in torch");
    }

    /// The record's widths on a batch of 2: every trained parameter
    /// moves, the frozen ones do not.
    #[test]
    fn the_record_widths_take_a_step() {
        let dev = CpuDevice::<f32>::new(2).unwrap();
        let schedule = Schedule::new(1, 1.0, 1.0).unwrap();
        let mut r = Recipe::new(&dev, WIDTHS, FilterMethod::record(), 2, schedule, 0).unwrap();
        let xs: Vec<f32> = (0..2 * PIXELS).map(|i| ((i * 7919) % 255) as f32 / 64.0 - 2.0).collect();
        let (mut x, mut labels) = (dev.zeros(2 * PIXELS).unwrap(), dev.labels(2).unwrap());
        dev.upload(&xs, &mut x).unwrap();
        dev.upload_labels(&[7, 2], &mut labels).unwrap();
        let before: Vec<Vec<f32>> = r.net.params.iter().map(|p| p.value.clone()).collect();
        assert!(r.train_step(&dev, &x, &labels).unwrap().loss.is_finite());
        for ((p, &role), b) in r.net.params.iter().zip(r.net.roles()).zip(&before) {
            assert_eq!(p.value == *b, role == Role::Frozen, "{}", p.name);
        }
    }

    /// Registration: every trained parameter in its group, none of the
    /// frozen ones; FROG allocates the filters' sampled rows and turns
    /// `batch_averaged` off.
    #[test]
    fn groups_hold_the_trained_parameters() {
        let dev = CpuDevice::<f64>::new(1).unwrap();
        let mut net = AirbenchNet::new(&dev, [8, 8, 8], 4, 0).unwrap();
        let frog = Config { lr: 0.1, sample_size: Some(2), batch_averaged: true, ..Config::default() };
        let opt = RecipeOptimizer::new(&dev, FilterMethod::Frog(frog), &mut net, 4, 0).unwrap();
        assert_eq!(opt.ids.iter().flatten().count(), 14);
        for ((p, &role), id) in net.params.iter().zip(net.roles()).zip(&opt.ids) {
            assert_eq!(id.is_none(), role == Role::Frozen, "{}", p.name);
            assert_eq!(p.sampled.is_some(), role == Role::Filter, "{}", p.name);
            if let Some((id, _)) = id {
                let group = opt.inner.group_of(*id).unwrap();
                assert_eq!(group, opt.groups[group_index(role).unwrap()].0, "{}", p.name);
            }
        }
        let filters = opt.inner.group(opt.groups[3].0).unwrap();
        assert_eq!(filters.frog().map(|c| c.batch_averaged), Some(false));
        assert_eq!(opt.sample.len(), 2);
        assert!(RecipeOptimizer::new(&dev, FilterMethod::record(), &mut net, 5, 0).is_err(), "a batch above the capacity");
    }
}
