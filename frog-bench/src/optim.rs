//! SGD and FROG over a [`Net`], through frog-core's generic steps.
//!
//! FROG: every convolution weight takes `precondition_step` with the
//! sampled rows the backward pass gathered; every other parameter
//! (BatchNorm, classifier) takes FROG's plain-SGD path. SGD: every
//! parameter takes `torch.optim.SGD`'s step.

use frog_core::{plain_sgd_step, precondition_step, sgd_step, Batch, Config, Layer, ParamState, Params, Sampler, SgdConfig, Workspace, WorkspaceReq};

use crate::device::{backend_err, Device};
use crate::error::{Error, Result};
use crate::model::Net;

/// Which optimizer, with its settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Method {
    /// `torch.optim.SGD` (dampening 0, coupled weight decay).
    Sgd(SgdConfig),
    /// FROG on every convolution, its plain-SGD path elsewhere.
    Frog(Config),
}

impl Method {
    /// The learning rate.
    pub fn lr(&self) -> f64 {
        match self {
            Self::Sgd(c) => c.lr,
            Self::Frog(c) => c.lr,
        }
    }

    fn momentum(&self) -> f64 {
        match self {
            Self::Sgd(c) => c.momentum,
            Self::Frog(c) => c.momentum,
        }
    }

    /// Checks the settings.
    pub fn validate(&self) -> Result<()> {
        match self {
            Self::Sgd(c) => c.validate(),
            Self::Frog(c) => c.validate(),
        }
        .map_err(|e| Error::new(format!("invalid optimizer settings: {e}")))
    }
}

struct FrogParts<D: Device> {
    ws: Workspace<D::Backend>,
    sampler: Sampler,
    indices: Vec<usize>,
    /// Sampled rows per step (fixed by the training batch size).
    r: usize,
}

/// An optimizer bound to one network and one training batch size.
pub struct Optimizer<D: Device> {
    method: Method,
    states: Vec<ParamState<D::Backend>>,
    frog: Option<FrogParts<D>>,
    batch: usize,
}

impl<D: Device> Optimizer<D> {
    /// Optimizer state for `net`'s parameters, for training batches of
    /// `batch`; for FROG also the workspace, the sampled-row buffers and
    /// the sampler (seeded with `seed`).
    pub fn new(dev: &D, method: Method, net: &mut Net<D>, batch: usize, seed: u64) -> Result<Self> {
        method.validate()?;
        if batch == 0 || batch > net.capacity {
            return Err(Error::new(format!("training batch {batch} must be between 1 and {}", net.capacity)));
        }
        let backend = dev.backend();
        let momentum = method.momentum() > 0.0;
        let mut states = Vec::with_capacity(net.params.len());
        for p in &net.params {
            states.push(ParamState::new(backend, p.len(), momentum).map_err(backend_err)?);
        }
        let frog = match &method {
            Method::Sgd(_) => None,
            Method::Frog(cfg) => {
                let r = cfg.sample_rows(batch);
                let mut req = WorkspaceReq::default();
                for p in &net.params {
                    if let Some(conv) = p.conv {
                        let layer_req = WorkspaceReq::new(backend, &Layer::conv2d(conv, false), r).map_err(|e| Error::new(e.to_string()))?;
                        req = req.union(layer_req);
                    }
                }
                net.enable_sampling(dev, r)?;
                let ws = Workspace::new(backend, req).map_err(backend_err)?;
                Some(FrogParts { ws, sampler: Sampler::new(seed), indices: vec![0; r], r })
            }
        };
        Ok(Self { method, states, frog, batch })
    }

    /// Sets the learning rate (a schedule's step).
    pub fn set_lr(&mut self, lr: f64) {
        match &mut self.method {
            Method::Sgd(c) => c.lr = lr,
            Method::Frog(c) => c.lr = lr,
        }
    }

    /// FROG's sampled batch indices for the next step (sorted), drawn
    /// before the backward pass that gathers them; `None` for SGD.
    pub fn draw_sample(&mut self) -> Result<Option<&[usize]>> {
        let Method::Frog(cfg) = &self.method else { return Ok(None) };
        let f = self.frog.as_mut().expect("FROG has its parts");
        let idx = f.sampler.sample(self.batch, cfg.sample_size, &mut f.indices).map_err(|e| Error::new(e.to_string()))?;
        Ok(Some(idx))
    }

    /// Updates every parameter of `net` from its gradient (and, for FROG,
    /// the sampled rows of the last backward pass).
    pub fn step(&mut self, dev: &D, net: &mut Net<D>) -> Result<()> {
        let backend = dev.backend();
        for (p, state) in net.params.iter_mut().zip(&mut self.states) {
            match (&self.method, &mut self.frog, p.conv) {
                (Method::Frog(cfg), Some(f), Some(conv)) => {
                    let s = p.sampled.as_ref().expect("sampling enabled with FROG");
                    let params = Params { weight: &mut p.value, grad_weight: &p.grad, bias: None };
                    let batch = Batch { x: &s.x, y: &s.y, sample: f.r, batch_size: self.batch };
                    precondition_step(backend, cfg, &Layer::conv2d(conv, false), state, &mut f.ws, params, batch)?;
                }
                (Method::Frog(cfg), _, _) => plain_sgd_step(backend, cfg, state, &mut p.value, &p.grad)?,
                (Method::Sgd(cfg), _, _) => sgd_step(backend, cfg, state, &mut p.value, &p.grad)?,
            }
        }
        Ok(())
    }
}
