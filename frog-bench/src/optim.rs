//! SGD, AdamW, FROG and K-FROG over a [`Net`], through frog-core's
//! optimizer object.
//!
//! FROG: every convolution weight is a preconditioned layer, stepped with
//! the sampled rows the backward pass gathered (one sample per step serves
//! every layer); every other parameter (BatchNorm, classifier) takes FROG's
//! plain-SGD path. K-FROG, as the original `kfrog.py`: every convolution
//! weight is a K-FROG layer, stepped with inputs and output gradients of
//! two independent samples (one pair per step, drawn by frog-core's
//! `sample_kfrog`, serves every layer); every other parameter takes
//! momentum SGD at the same rate without decay (frog-core's K-FROG group,
//! the original's treatment of what it does not precondition). The convs
//! have no bias, which K-FROG rejects. SGD and AdamW: every parameter
//! takes `torch.optim.SGD`'s or `torch.optim.AdamW`'s step.

pub use frog_core::Method;
use frog_core::{Batch, GroupId, KfrogBatch, Layer, ParamGrad, ParamId, Params};

use crate::device::Device;
use crate::error::{Error, Result};
use crate::model::{Net, Param, SampledRows};

/// Parameters a network may have (ResNet-18 has 62).
const CAPACITY: usize = 256;

/// An optimizer bound to one network and one training batch size.
pub struct Optimizer<D: Device> {
    inner: frog_core::Optimizer<D::Backend, CAPACITY>,
    method: Method,
    /// Each parameter's handle, in the network's parameter order.
    ids: Vec<ParamId>,
    /// The step's input sample (FROG's one sample; K-FROG's X sample),
    /// filled by [`Optimizer::draw_sample`]; empty for SGD and AdamW.
    sample: Vec<usize>,
    /// K-FROG's output-gradient sample, drawn independently (empty
    /// otherwise).
    y_sample: Vec<usize>,
    batch: usize,
}

impl<D: Device> Optimizer<D> {
    /// Optimizer state for `net`'s parameters, for training batches of
    /// `batch`; for FROG and K-FROG also the workspace, the sampled-row
    /// buffers and the sampler (seeded with `seed`).
    pub fn new(dev: &D, method: Method, net: &mut Net<D>, batch: usize, seed: u64) -> Result<Self> {
        method.validate_for::<D::Scalar>().map_err(|e| Error::new(format!("invalid optimizer settings: {e}")))?;
        if batch == 0 || batch > net.capacity {
            return Err(Error::new(format!("training batch {batch} must be between 1 and {}", net.capacity)));
        }
        let backend = dev.backend();
        // Every device's backend runs AdamW and K-FROG, so any method makes the group.
        let mut inner = frog_core::Optimizer::new(method, batch, seed)?;
        let mut ids = Vec::with_capacity(net.params.len());
        for p in &net.params {
            let id = match p.conv {
                Some(conv) => inner.add_layer(backend, &p.name, Layer::conv2d(conv, false), GroupId::DEFAULT)?,
                None => inner.add_param(backend, &p.name, p.len(), GroupId::DEFAULT)?,
            };
            ids.push(id);
        }
        // Rows of each side a step gathers: a sample at or above the batch
        // takes the whole batch, as in frog-core's sampler.
        let rows = |s: Option<usize>| s.map_or(batch, |s| s.min(batch));
        let (rx, ry) = match method {
            Method::Frog(_) => (inner.sample_rows(batch), inner.sample_rows(batch)),
            Method::Kfrog(cfg) => (rows(cfg.sample_size), rows(cfg.y_sample_size)),
            _ => (0, 0),
        };
        if rx > 0 {
            net.enable_sampling(dev, rx, ry)?;
        }
        // FROG's one sample serves both sides; only K-FROG keeps a second.
        let y_len = if matches!(method, Method::Kfrog(_)) { ry } else { 0 };
        Ok(Self { inner, method, ids, sample: vec![0; rx], y_sample: vec![0; y_len], batch })
    }

    /// Sets the learning rate (a schedule's step).
    pub fn set_lr(&mut self, lr: f64) -> Result<()> {
        Ok(self.inner.set_lr(lr)?)
    }

    /// The batch rows the next backward pass gathers (sorted), drawn
    /// before it: FROG's one sample for both sides, K-FROG's two
    /// independent ones; `None` for SGD and AdamW.
    pub fn draw_sample(&mut self) -> Result<Option<SampledRows<'_>>> {
        match self.method {
            Method::Frog(_) => {
                let x = self.inner.sample(self.batch, &mut self.sample)?.indices();
                Ok(Some(SampledRows { x, y: x }))
            }
            Method::Kfrog(_) => {
                let (x, y) = self.inner.sample_kfrog(GroupId::DEFAULT, self.batch, &mut self.sample, &mut self.y_sample)?;
                Ok(Some(SampledRows { x, y }))
            }
            _ => Ok(None),
        }
    }

    /// Updates every parameter of `net` from its gradient (and, for FROG
    /// and K-FROG, the sampled rows of the last backward pass).
    pub fn step(&mut self, dev: &D, net: &mut Net<D>) -> Result<()> {
        let kfrog = matches!(self.method, Method::Kfrog(_));
        let rows = (self.sample.len(), self.y_sample.len());
        for (p, &id) in net.params.iter_mut().zip(&self.ids) {
            step_one(&mut self.inner, dev.backend(), id, p, rows, self.batch, kfrog)?;
        }
        Ok(())
    }
}

/// The step of `p`, registered in `inner` as `id`, after a backward pass
/// of `batch` samples: a convolution's weight with its sampled rows takes
/// K-FROG's step on `rows` (input and output-gradient rows) when `kfrog`,
/// else FROG's on `rows.0` rows; one without takes its group's step of a
/// bias-free layer (Muon, SGD, AdamW); any other parameter its group's
/// plain step.
pub(crate) fn step_one<D: Device, const N: usize>(
    inner: &mut frog_core::Optimizer<D::Backend, N>,
    backend: &D::Backend,
    id: ParamId,
    p: &mut Param<D>,
    (rx, ry): (usize, usize),
    batch: usize,
    kfrog: bool,
) -> Result<()> {
    match (p.conv, p.sampled.as_ref()) {
        (Some(_), Some(s)) if kfrog => {
            let batch = KfrogBatch { x: &s.x, x_sample: rx, y: &s.y, y_sample: ry, batch_size: batch };
            inner.step_layer_kfrog(backend, id, &mut p.value, &p.grad, batch)?;
        }
        (Some(_), sampled) => {
            let batch = sampled.map(|s| Batch { x: &s.x, y: &s.y, sample: rx, batch_size: batch });
            let params = Params { weight: &mut p.value, grad_weight: &p.grad, bias: None };
            inner.step_layer(backend, id, params, batch)?;
        }
        (None, _) => inner.step_param(backend, id, ParamGrad { param: &mut p.value, grad: &p.grad })?,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use frog_core::KfrogConfig;
    use rand_xoshiro::rand_core::SeedableRng;
    use rand_xoshiro::Xoshiro256PlusPlus;

    use super::*;
    use crate::arch::Arch;
    use crate::data::loader::HostBatch;
    use crate::device::cpu::CpuDevice;
    use crate::train::{train_step, Staging};

    const B: usize = 8;

    /// K-FROG with independent samples of different sizes, both below the
    /// batch, so gathering the wrong rows changes the step.
    fn kfrog() -> KfrogConfig {
        KfrogConfig { lr: 0.02, momentum: 0.9, sample_size: Some(5), y_sample_size: Some(3), ..KfrogConfig::default() }
    }

    /// A fixed random batch for the tiny CNN, staged on `dev`.
    fn staged(dev: &CpuDevice<f64>, arch: &Arch) -> Staging<CpuDevice<f64>> {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(3);
        let x = (0..B * arch.input_len()).map(|_| crate::rand::uniform(&mut rng) as f32 - 0.5).collect();
        let labels = (0..B).map(|i| (i % arch.classes) as u8).collect();
        let mut st = Staging::new(dev, arch, B).unwrap();
        st.upload(dev, &HostBatch { x, labels }).unwrap();
        st
    }

    fn values(net: &Net<CpuDevice<f64>>) -> Vec<Vec<f64>> {
        net.params.iter().map(|p| p.value[..p.len()].to_vec()).collect()
    }

    #[test]
    fn kfrog_steps_every_conv_on_its_own_x_rows_and_y_rows() {
        let dev = CpuDevice::<f64>::new(1).unwrap();
        let arch = Arch::tiny_cnn();
        let st = staged(&dev, &arch);
        // The engine: the optimizer draws the two samples, the backward
        // pass gathers them, the optimizer steps.
        let mut net = Net::new(&dev, &arch, B, 0).unwrap();
        let mut opt = Optimizer::new(&dev, Method::Kfrog(kfrog()), &mut net, B, 7).unwrap();
        let rows = opt.draw_sample().unwrap().expect("K-FROG samples");
        let (xi, yi) = (rows.x.to_vec(), rows.y.to_vec());
        assert_eq!((xi.len(), yi.len()), (5, 3));
        net.forward(&dev, &st.x, B, true).unwrap();
        net.loss(&dev, B, &st.labels).unwrap();
        net.backward(&dev, &st.x, B, Some(rows)).unwrap();
        // The reference: the same pass keeping every row, then frog-core's
        // K-FROG step on the rows the engine should have gathered.
        let mut full = Net::new(&dev, &arch, B, 0).unwrap();
        full.enable_sampling(&dev, B, B).unwrap();
        let all: Vec<usize> = (0..B).collect();
        full.forward(&dev, &st.x, B, true).unwrap();
        full.loss(&dev, B, &st.labels).unwrap();
        full.backward(&dev, &st.x, B, Some(SampledRows { x: &all, y: &all })).unwrap();
        let cpu = dev.backend();
        let mut reference = frog_core::Optimizer::<_, CAPACITY>::new(kfrog(), B, 7).unwrap();
        let mut convs = 0;
        for (p, e) in full.params.iter_mut().zip(&net.params) {
            match (p.conv, p.sampled.as_ref(), e.sampled.as_ref()) {
                (Some(conv), Some(s), Some(es)) => {
                    let layer = Layer::conv2d(conv, false);
                    let id = reference.add_layer(cpu, &p.name, layer, GroupId::DEFAULT).unwrap();
                    let (mut x, mut y) = (vec![0.0; xi.len() * layer.input_len()], vec![0.0; yi.len() * layer.output_len()]);
                    dev.gather(layer.input_len(), &xi, &s.x, &mut x).unwrap();
                    dev.gather(layer.output_len(), &yi, &s.y, &mut y).unwrap();
                    assert_eq!((&x, &y), (&es.x, &es.y), "{}: the engine's gathered rows", p.name);
                    let batch = KfrogBatch { x: &x, x_sample: xi.len(), y: &y, y_sample: yi.len(), batch_size: B };
                    reference.step_layer_kfrog(cpu, id, &mut p.value, &p.grad, batch).unwrap();
                    convs += 1;
                }
                _ => {
                    let id = reference.add_param(cpu, &p.name, p.len(), GroupId::DEFAULT).unwrap();
                    reference.step_param(cpu, id, ParamGrad { param: &mut p.value, grad: &p.grad }).unwrap();
                }
            }
        }
        assert_eq!(convs, 2);
        let before = values(&net);
        opt.step(&dev, &mut net).unwrap();
        assert_ne!(values(&net), before, "the step moved the weights");
        assert_eq!(values(&net), values(&full), "the engine's step is frog-core's on the gathered rows");
    }

    /// Losses of `steps` K-FROG training steps on the fixed batch.
    fn kfrog_losses(seed: u64, steps: usize) -> Vec<f64> {
        let dev = CpuDevice::<f64>::new(1).unwrap();
        let arch = Arch::tiny_cnn();
        let st = staged(&dev, &arch);
        let mut net = Net::new(&dev, &arch, B, seed).unwrap();
        let mut opt = Optimizer::new(&dev, Method::Kfrog(kfrog()), &mut net, B, seed).unwrap();
        (0..steps).map(|_| train_step(&dev, &mut net, &mut opt, &st, B).unwrap().loss).collect()
    }

    #[test]
    fn a_short_kfrog_training_lowers_the_loss_and_repeats_for_a_seed() {
        let losses = kfrog_losses(1, 30);
        assert!(losses[29] < 0.8 * losses[0], "loss {} -> {}", losses[0], losses[29]);
        assert_eq!(losses, kfrog_losses(1, 30), "the same seed trains the same");
        assert_ne!(losses, kfrog_losses(2, 30), "another seed samples other rows");
    }
}
