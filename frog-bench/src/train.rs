//! The training loop: epochs of optimizer steps, evaluation after each,
//! and a record per epoch. Time counts training only (batches, forward,
//! backward, optimizer), not evaluation, as the original study does.

use std::time::Instant;

use frog_core::{Collective, Scalar, Shard, Solo};
use frog_cpu::host::{Diverged, LossWatch, DIVERGENCE_FACTOR};

use crate::arch::Arch;
use crate::data::loader::{eval_batches, train_batches, HostBatch};
use crate::data::Data;
use crate::device::{Device, LossStats};
use crate::dist::{self, DataParallel};
use crate::error::{Error, Result};
use crate::model::Net;
use crate::optim::{Method, Optimizer};
use crate::progress;

/// One training run.
#[derive(Clone, Debug, PartialEq)]
pub struct RunConfig {
    /// Label in tables and plots ("FROG bs 512, s 64").
    pub label: String,
    /// The configuration's name: `--config` picks it, and its results
    /// files are named after it (`runs/NAME-seed-S.json`).
    pub name: String,
    /// The network.
    pub arch: Arch,
    /// Optimizer and its settings (the learning rate is the initial one).
    pub method: Method,
    /// Training batch size.
    pub batch: usize,
    /// Epochs.
    pub epochs: usize,
    /// Epochs after which the learning rate is multiplied by `gamma`.
    pub milestones: Vec<usize>,
    /// The schedule's factor.
    pub gamma: f64,
    /// Seed of initialization, shuffling, augmentation and FROG's sampler.
    pub seed: u64,
}

impl RunConfig {
    /// The factor of every initial learning rate in 0-based `epoch`
    /// (PyTorch's `MultiStepLR`).
    pub fn lr_factor_at(&self, epoch: usize) -> f64 {
        let drops = self.milestones.iter().filter(|&&m| m <= epoch).count();
        self.gamma.powi(drops as i32)
    }

    /// The learning rate of 0-based `epoch`.
    pub fn lr_at(&self, epoch: usize) -> f64 {
        self.method.lr() * self.lr_factor_at(epoch)
    }
}

/// What one epoch did.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EpochRecord {
    /// 1-based epoch.
    pub epoch: usize,
    /// Learning rate of the epoch.
    pub lr: f64,
    /// Mean training loss over the epoch's batches.
    pub train_loss: f64,
    /// Training accuracy (augmented batches, train mode), percent.
    pub train_acc: f64,
    /// Test loss: the one value that may not be finite (a network whose
    /// running statistics overflow), which JSON writes as `null`, read
    /// back as NaN.
    #[serde(deserialize_with = "nan_for_null")]
    pub test_loss: f64,
    /// Test accuracy, percent.
    pub test_acc: f64,
    /// Training seconds of this epoch.
    pub epoch_seconds: f64,
    /// Training seconds so far.
    pub train_seconds: f64,
    /// Test accuracy with test-time augmentation, percent, where measured
    /// (the airbench recipe's last epoch); `None` elsewhere.
    pub tta_test_acc: Option<f64>,
}

/// A number, or NaN for the `null` JSON writes for a value that is not
/// finite.
fn nan_for_null<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<f64, D::Error> {
    Ok(<Option<f64> as serde::Deserialize>::deserialize(d)?.unwrap_or(f64::NAN))
}

/// Device buffers for one batch.
pub struct Staging<D: Device> {
    host: Vec<D::Scalar>,
    pub(crate) x: D::Buffer,
    pub(crate) labels: D::Labels,
}

impl<D: Device> Staging<D> {
    /// Room for batches of up to `capacity` samples of `arch`'s input.
    pub fn new(dev: &D, arch: &Arch, capacity: usize) -> Result<Self> {
        Ok(Self { host: Vec::with_capacity(capacity * arch.input_len()), x: dev.zeros(capacity * arch.input_len())?, labels: dev.labels(capacity)? })
    }

    /// The staged inputs.
    pub fn x(&self) -> &D::Buffer {
        &self.x
    }

    /// The staged labels.
    pub fn labels(&self) -> &D::Labels {
        &self.labels
    }

    /// Copies a host batch to the device.
    pub fn upload(&mut self, dev: &D, b: &HostBatch) -> Result<()> {
        self.upload_shard(dev, b, Shard { offset: 0, len: b.len() })
    }

    /// Copies the samples of `shard` of a host batch to the device (a
    /// rank's part of a global batch).
    pub fn upload_shard(&mut self, dev: &D, b: &HostBatch, shard: Shard) -> Result<()> {
        let per = b.x.len() / b.len().max(1);
        let (x, labels) = (b.x.get(shard.offset * per..shard.end() * per), b.labels.get(shard.offset..shard.end()));
        let (Some(x), Some(labels)) = (x, labels) else {
            return Err(Error::new(format!("samples {}..{} of a batch of {}", shard.offset, shard.end(), b.len())));
        };
        self.host.clear();
        self.host.extend(x.iter().map(|&v| D::Scalar::of_f64(f64::from(v))));
        dev.upload(&self.host, &mut self.x)?;
        dev.upload_labels(labels, &mut self.labels)
    }
}

/// One training step in one process on the staged batch of `batch`
/// samples: forward, loss, backward (gathering the optimizer's sampled
/// rows), optimizer step.
pub fn train_step<D: Device>(dev: &D, net: &mut Net<D>, opt: &mut Optimizer<D>, st: &Staging<D>, batch: usize) -> Result<LossStats> {
    DataParallel::new(dev, &Solo, batch, net)?.train_step(dev, net, opt, st)
}

/// Mean loss and accuracy (percent) of `net` on `data.test`, eval mode.
pub fn evaluate<D: Device>(dev: &D, net: &mut Net<D>, data: &Data, staging_batch: usize) -> Result<(f64, f64)> {
    let mut st = Staging::new(dev, &net.arch, staging_batch)?;
    let (mut loss, mut correct, mut n) = (0.0, 0, 0);
    for b in eval_batches(data.test.clone(), staging_batch)? {
        let b = b?;
        st.upload(dev, &b)?;
        net.forward(dev, &st.x, b.len(), false)?;
        let s = net.loss(dev, b.len(), &st.labels)?;
        loss += s.loss * b.len() as f64;
        correct += s.correct;
        n += b.len();
    }
    Ok((loss / n as f64, 100.0 * correct as f64 / n as f64))
}

/// Watches a run's training losses for a divergence with frog-cpu's
/// [`LossWatch`] (the rule FROG's framework optimizers refuse a step by: a
/// loss above [`DIVERGENCE_FACTOR`] times the first's magnitude, since a
/// scale-free optimizer at too high a rate, FROG's `lr` being a per-row
/// relative step, can climb to 1e4 while staying finite), reporting it once
/// per run.
#[derive(Debug, Default)]
pub(crate) struct Divergence {
    watch: LossWatch,
    reported: bool,
}

impl Divergence {
    /// The warning for `loss`, the first time the watch refuses one.
    pub(crate) fn check(&mut self, loss: f64) -> Option<String> {
        if self.reported {
            return None;
        }
        let Diverged { loss, first } = self.watch.check(loss, DIVERGENCE_FACTOR).err()?;
        self.reported = true;
        Some(format!("the training loss went from {first:.4} to {loss:.4e}: the run is diverging; lower lr (FROG's lr is a per-row relative step, not SGD's: see the README's learning rates)"))
    }
}

/// Trains `cfg` on `data` in one process, calling `on_epoch` after every
/// epoch, and returns the records. A non-finite loss stops the run with an
/// error; a finite loss [`DIVERGENCE_FACTOR`] times the first prints a
/// warning.
pub fn train<D: Device>(dev: &D, data: &Data, cfg: &RunConfig, on_epoch: impl FnMut(&EpochRecord)) -> Result<Vec<EpochRecord>> {
    train_on(dev, &Solo, data, cfg, on_epoch)
}

/// [`train`] as rank `comm.rank()` of a data-parallel run on `comm`'s
/// ranks (every rank calls it alike; see [`crate::dist`]): each trains on
/// its shard of every batch; rank 0 evaluates (with its BatchNorm running
/// statistics), calls `on_epoch` and prints the time of each part of the
/// steps; every rank returns rank 0's records but for the epoch times,
/// which are its own.
pub fn train_on<D: Device, C: Collective<D::Backend>>(dev: &D, comm: &C, data: &Data, cfg: &RunConfig, mut on_epoch: impl FnMut(&EpochRecord)) -> Result<Vec<EpochRecord>> {
    if data.train.len() < cfg.batch {
        return Err(Error::new(format!("{}: {} training images, fewer than one batch of {}", cfg.label, data.train.len(), cfg.batch)));
    }
    let (lead, ranks) = (comm.rank() == 0, comm.size());
    let shard = dist::shard_of(cfg.batch, comm.rank(), ranks)?;
    let mut net = Net::new(dev, &cfg.arch, shard.len, cfg.seed)?;
    let mut opt = Optimizer::new(dev, cfg.method, &mut net, cfg.batch, cfg.seed)?;
    let mut st = Staging::new(dev, &cfg.arch, shard.len)?;
    let mut dp = DataParallel::new(dev, comm, cfg.batch, &net)?;
    let mut records = Vec::with_capacity(cfg.epochs);
    let mut total = 0.0;
    let mut divergence = Divergence::default();
    for epoch in 0..cfg.epochs {
        let lr = cfg.lr_at(epoch);
        opt.set_lr_factor(cfg.lr_factor_at(epoch))?;
        let start = Instant::now();
        let batches = train_batches(data.train.clone(), cfg.batch, cfg.seed, epoch as u64)?;
        let progress = progress::bar((batches.total() * cfg.batch) as u64, progress::EPOCH, lead).with_prefix((epoch + 1).to_string());
        let (mut loss_sum, mut correct, mut seen) = (0.0, 0, 0);
        for (i, b) in batches.enumerate() {
            let b = b?;
            st.upload_shard(dev, &b, shard)?;
            let s = dp.train_step(dev, &mut net, &mut opt, &st)?;
            if !s.loss.is_finite() {
                return Err(Error::new(format!("{}: training diverged (loss {} at epoch {}, step {})", cfg.label, s.loss, epoch + 1, i + 1)));
            }
            if let Some(warning) = divergence.check(s.loss).filter(|_| lead) {
                progress.suspend(|| eprintln!("warning: {}: epoch {}, step {}: {warning}", cfg.label, epoch + 1, i + 1));
            }
            loss_sum += s.loss * cfg.batch as f64;
            correct += s.correct;
            seen += cfg.batch;
            progress.inc(cfg.batch as u64);
            progress.set_message(format!("{:.4}", loss_sum / seen as f64));
        }
        let seconds = start.elapsed().as_secs_f64();
        total += seconds;
        progress.finish_and_clear();
        let parts = dp.take_parts();
        let mut test = [0.0; 2];
        let eval = if lead { evaluate(dev, &mut net, data, shard.len).map(|(l, a)| test = [l, a]) } else { Ok(()) };
        if ranks > 1 {
            dist::share_from_lead(comm, eval.is_err(), &mut test)?;
        }
        eval?;
        let [test_loss, test_acc] = test;
        let rec = EpochRecord {
            epoch: epoch + 1,
            lr,
            train_loss: loss_sum / seen as f64,
            train_acc: 100.0 * correct as f64 / seen as f64,
            test_loss,
            test_acc,
            epoch_seconds: seconds,
            train_seconds: total,
            tta_test_acc: None,
        };
        if lead {
            on_epoch(&rec);
            println!("{}", parts.line(ranks));
        }
        records.push(rec);
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_exploding_loss_is_reported_once() {
        let mut d = Divergence::default();
        assert_eq!(d.check(2.3), None);
        assert_eq!(d.check(50.0), None);
        let warning = d.check(2.7e4).unwrap();
        assert!(warning.contains("2.3000") && warning.contains("lower lr"), "{warning}");
        assert_eq!(d.check(3e4), None, "reported once per run");
    }
}
