//! Training and evaluation of [`Cnn`] on CIFAR-10 with FROG on the host:
//! a plain candle training loop with one call to [`HostFrog::step`].

use std::sync::Arc;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use frog_bench::data::loader::{eval_batches, train_batches, HostBatch};
use frog_bench::data::Images;
use frog_core::Config;

use crate::error::{Error, Result};
use crate::host::HostFrog;
use crate::model::Cnn;

/// FROG's settings for this net: lr 0.01 trains it, 0.03 diverges (the
/// step is scale-free, so SGD's learning rates do not carry over); the
/// classifier trains at `lr * lr_other_ratio`.
pub fn frog_config() -> Config {
    Config { lr: 0.01, momentum: 0.9, ..Config::default() }
}

/// The settings of a training run.
#[derive(Clone, Debug)]
pub struct TrainConfig {
    /// FROG's hyperparameters.
    pub frog: Config,
    /// Samples per batch.
    pub batch: usize,
    /// Seed of the initialization, the shuffle and FROG's sampler.
    pub seed: u64,
    /// Threads of frog-cpu (0: all CPUs).
    pub threads: usize,
}

/// One training step's numbers.
#[derive(Clone, Copy, Debug)]
pub struct StepStats {
    /// The batch's mean cross-entropy before the step.
    pub loss: f32,
    /// Seconds of the whole step (batch upload, forward, backward, FROG).
    pub secs: f64,
    /// Seconds of the FROG step, copies to and from the host included.
    pub frog_secs: f64,
}

fn to_tensors(b: HostBatch, dev: &Device) -> Result<(Tensor, Tensor)> {
    let n = b.len();
    let labels: Vec<u32> = b.labels.iter().map(|&l| u32::from(l)).collect();
    Ok((Tensor::from_vec(b.x, (n, 3, 32, 32), dev)?, Tensor::from_vec(labels, n, dev)?))
}

/// The network and its optimizer, which keeps its state (momentum, the
/// sampler) across epochs.
pub struct Trainer {
    /// The network.
    pub model: Cnn,
    frog: HostFrog,
    cfg: TrainConfig,
}

impl Trainer {
    /// A freshly initialized network and optimizer.
    pub fn new(cfg: TrainConfig) -> Result<Self> {
        if cfg.batch == 0 {
            return Err(Error::Data("the batch must hold at least one sample".into()));
        }
        let model = Cnn::new(&Device::Cpu, cfg.seed)?;
        let frog = HostFrog::new(cfg.frog, &model.layers(), &model.others(), cfg.batch, cfg.seed, cfg.threads)?;
        Ok(Self { model, frog, cfg })
    }

    /// Epoch `epoch` over `images` (shuffled and augmented from the seed and
    /// the epoch), or its first `max_steps` steps.
    pub fn epoch(&mut self, images: Arc<Images>, epoch: u64, max_steps: Option<usize>) -> Result<Vec<StepStats>> {
        let batch = self.cfg.batch;
        if images.len() < batch {
            return Err(Error::Data(format!("a batch of {batch} needs at least that many images ({} given)", images.len())));
        }
        let mut stats = Vec::new();
        for b in train_batches(images, batch, self.cfg.seed, epoch)?.take(max_steps.unwrap_or(usize::MAX)) {
            let start = Instant::now();
            let (x, labels) = to_tensors(b?, &Device::Cpu)?;
            let fwd = self.model.forward_train(&x)?;
            let loss = candle_nn::loss::cross_entropy(&fwd.logits, &labels)?;
            let grads = loss.backward()?;
            let frog_start = Instant::now();
            self.frog.step(&self.model.taps(&fwd), &self.model.others(), &grads, batch)?;
            stats.push(StepStats { loss: loss.to_scalar::<f32>()?, secs: start.elapsed().as_secs_f64(), frog_secs: frog_start.elapsed().as_secs_f64() });
        }
        Ok(stats)
    }

    /// Top-1 accuracy on `images`, in percent.
    pub fn accuracy(&self, images: Arc<Images>, batch: usize) -> Result<f64> {
        let (n, mut correct) = (images.len(), 0usize);
        if n == 0 || batch == 0 {
            return Err(Error::Data("evaluation needs a non-empty set and batch".into()));
        }
        for b in eval_batches(images, batch)? {
            let (x, labels) = to_tensors(b?, &Device::Cpu)?;
            let pred = self.model.forward(&x)?.argmax(1)?;
            correct += pred.eq(&labels)?.to_dtype(DType::U32)?.sum_all()?.to_scalar::<u32>()? as usize;
        }
        Ok(100.0 * correct as f64 / n as f64)
    }
}
