//! SGD and FROG over a [`Net`], through frog-core's optimizer object.
//!
//! FROG: every convolution weight is a preconditioned layer, stepped with
//! the sampled rows the backward pass gathered; every other parameter
//! (BatchNorm, classifier) takes FROG's plain-SGD path. SGD and AdamW:
//! every parameter takes `torch.optim.SGD`'s or `torch.optim.AdamW`'s step.

pub use frog_core::Method;
use frog_core::{Batch, GroupId, Layer, ParamId, Params};

use crate::device::Device;
use crate::error::{Error, Result};
use crate::model::Net;

/// Parameters a network may have (ResNet-18 has 62).
const CAPACITY: usize = 256;

/// An optimizer bound to one network and one training batch size.
pub struct Optimizer<D: Device> {
    inner: frog_core::Optimizer<D::Backend, CAPACITY>,
    /// Each parameter's handle, in the network's parameter order.
    ids: Vec<ParamId>,
    /// The step's sample (FROG only), filled by [`Optimizer::draw_sample`].
    sample: Vec<usize>,
    batch: usize,
}

impl<D: Device> Optimizer<D> {
    /// Optimizer state for `net`'s parameters, for training batches of
    /// `batch`; for FROG also the workspace, the sampled-row buffers and
    /// the sampler (seeded with `seed`).
    pub fn new(dev: &D, method: Method, net: &mut Net<D>, batch: usize, seed: u64) -> Result<Self> {
        method.validate_for::<D::Scalar>().map_err(|e| Error::new(format!("invalid optimizer settings: {e}")))?;
        if batch == 0 || batch > net.capacity {
            return Err(Error::new(format!("training batch {batch} must be between 1 and {}", net.capacity)));
        }
        let backend = dev.backend();
        let mut inner = match method {
            Method::AdamW(cfg) => frog_core::Optimizer::new_adamw(cfg, batch, seed)?,
            m => frog_core::Optimizer::new(m, batch, seed)?,
        };
        let frog = method.frog().is_some();
        let mut ids = Vec::with_capacity(net.params.len());
        for p in &net.params {
            let id = match p.conv {
                Some(conv) => inner.add_layer(backend, &p.name, Layer::conv2d(conv, false), GroupId::DEFAULT)?,
                None => inner.add_param(backend, &p.name, p.len(), GroupId::DEFAULT)?,
            };
            ids.push(id);
        }
        let r = if frog { inner.sample_rows(batch) } else { 0 };
        if frog {
            net.enable_sampling(dev, r)?;
        }
        Ok(Self { inner, ids, sample: vec![0; r], batch })
    }

    /// Sets the learning rate (a schedule's step).
    pub fn set_lr(&mut self, lr: f64) -> Result<()> {
        Ok(self.inner.set_lr(lr)?)
    }

    /// FROG's sampled batch indices for the next step (sorted), drawn
    /// before the backward pass that gathers them; `None` for SGD.
    pub fn draw_sample(&mut self) -> Result<Option<&[usize]>> {
        if self.sample.is_empty() {
            return Ok(None);
        }
        Ok(Some(self.inner.sample(self.batch, &mut self.sample)?))
    }

    /// Updates every parameter of `net` from its gradient (and, for FROG,
    /// the sampled rows of the last backward pass).
    pub fn step(&mut self, dev: &D, net: &mut Net<D>) -> Result<()> {
        let backend = dev.backend();
        let r = self.sample.len();
        for (p, &id) in net.params.iter_mut().zip(&self.ids) {
            match p.conv {
                Some(_) => {
                    let batch = p.sampled.as_ref().map(|s| Batch { x: &s.x, y: &s.y, sample: r, batch_size: self.batch });
                    let params = Params { weight: &mut p.value, grad_weight: &p.grad, bias: None };
                    self.inner.step_layer(backend, id, params, batch)?;
                }
                None => self.inner.step_param(backend, id, &mut p.value, &p.grad)?,
            }
        }
        Ok(())
    }
}
