//! [`FrogOptimizer`]: FROG as a candle-nn [`Optimizer`], on frog-cpu.
//!
//! FROG preconditions a layer's step with the layer's input and the
//! gradient of its output, which candle's autograd does not keep: a
//! [`Tap`] records them. Wrap each preconditioned layer's forward call in
//! [`Tap::apply`], register the taps, and step with
//! [`Optimizer::backward_step`]:
//!
//! ```
//! use candle_core::{DType, Device, Tensor, Var};
//! use candle_nn::Optimizer;
//! use frog_candle::{FrogOptimizer, ParamsFrog, Tap};
//! use frog_core::{Config, Layer};
//!
//! let dev = Device::Cpu;
//! let (w, b) = (Var::ones((2, 3), DType::F32, &dev)?, Var::zeros(2, DType::F32, &dev)?);
//! let scale = Var::ones(1, DType::F32, &dev)?;
//! let fc = Tap::new(&w, Some(&b), Layer::linear(3, 2, true))?;
//! // Every var that no tap holds takes FROG's plain-SGD path.
//! let mut opt = FrogOptimizer::new(vec![w.clone(), b.clone(), scale.clone()], ParamsFrog::new(Config { lr: 0.01, ..Config::default() }, 64))?;
//! opt.add_tap(&fc)?;
//!
//! let x = Tensor::randn(0f32, 1., (8, 3), &dev)?;
//! for _ in 0..3 {
//!     let y = fc.apply(&x, |x| x.matmul(&w.t()?)?.broadcast_add(&b))?;
//!     let loss = y.broadcast_mul(&scale)?.sqr()?.mean_all()?;
//!     opt.backward_step(&loss)?;
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Each step draws FROG's sample once, takes those rows of every tap's
//! input and output gradient on the tensors' device (`index_select`),
//! copies them, the parameters and the gradients to the host, runs
//! frog-cpu's host route ([`frog_cpu::host::HostFrog`]), and sets the
//! `Var`s to the result.
//!
//! # Learning rate and divergence
//!
//! FROG's step is scale-free: `lr` is close to a relative step per weight
//! row, so SGD's learning rates do not carry over. Start near 0.01: on the
//! example network ([`crate::model::Cnn`], no BatchNorm) 0.01 trains and
//! 0.03 diverges. A diverging run is an error by default:
//! [`Optimizer::backward_step`] refuses, before stepping, a loss that is
//! not finite or that has grown past [`ParamsFrog::divergence`] times the
//! first loss it saw (100 by default); set it to `None` to turn the check
//! off (a loss that is meant to grow, such as a negated objective).

use std::sync::{Arc, Mutex, MutexGuard};

use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::Optimizer;
use frog_core::{GroupId, Layer};
use frog_cpu::host::{step_batch, HostError, HostFrog, LayerSlices, LossWatch, ParamSlices, Rows};

use crate::error::{Error, Result};

/// The settings of a [`FrogOptimizer`] (candle's `Optimizer::Config`):
/// those of every framework optimizer on frog-cpu's host route.
pub use frog_cpu::host::ParamsFrog;

/// What a tap holds: its layer's parameters and geometry, and what the
/// last forward pass recorded.
struct TapState {
    weight: Var,
    bias: Option<Var>,
    layer: Layer,
    /// The layer's input, detached from the graph (FROG only reads it).
    input: Option<Tensor>,
    /// The zero `Var` added to the layer's output: its gradient is
    /// `dL/d(output)`, which candle keeps for variables only.
    output: Option<Var>,
}

/// A preconditioned layer's handle, shared by the model (which runs the
/// layer through [`Tap::apply`]) and the optimizer (which reads what the
/// forward pass recorded). Clones share the same tap.
#[derive(Clone)]
pub struct Tap(Arc<Mutex<TapState>>);

impl Tap {
    /// A tap of the layer with parameters `weight` (PyTorch layout) and
    /// `bias`, of geometry `layer`; an error when their entries do not fit it.
    pub fn new(weight: &Var, bias: Option<&Var>, layer: Layer) -> Result<Self> {
        let need = layer.rows() * layer.weight_cols();
        if weight.elem_count() != need {
            return Err(Error::Shape { what: "the weight", expected: need, actual: weight.elem_count() });
        }
        match (bias, layer.bias) {
            (Some(b), true) if b.elem_count() != layer.rows() => return Err(Error::Shape { what: "the bias", expected: layer.rows(), actual: b.elem_count() }),
            (Some(_), false) => return Err(Error::Shape { what: "a bias (the layer has none)", expected: 0, actual: 1 }),
            (None, true) => return Err(Error::Shape { what: "the bias (none given)", expected: layer.rows(), actual: 0 }),
            _ => {}
        }
        let state = TapState { weight: weight.clone(), bias: bias.cloned(), layer, input: None, output: None };
        Ok(Self(Arc::new(Mutex::new(state))))
    }

    /// Runs the layer: `f(x)`, plus a fresh zero `Var` of the output's
    /// shape whose gradient will be the output's; records `x` (detached).
    /// The last call before a step is the one the step uses. Evaluation
    /// passes may call `f` directly.
    pub fn apply(&self, x: &Tensor, f: impl FnOnce(&Tensor) -> candle_core::Result<Tensor>) -> candle_core::Result<Tensor> {
        let y = f(x)?;
        let out = Var::zeros(y.shape(), y.dtype(), y.device())?;
        let y = (y + out.as_tensor())?;
        let mut s = self.lock();
        s.input = Some(x.detach());
        s.output = Some(out);
        Ok(y)
    }

    /// The layer's geometry.
    pub fn layer(&self) -> Layer {
        self.lock().layer
    }

    /// A poisoned lock held only plain data, which a panic elsewhere
    /// cannot leave half-written: take it.
    fn lock(&self) -> MutexGuard<'_, TapState> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// FROG (f32, on frog-cpu) over a candle model: the [taps](Tap)' layers
/// preconditioned, every other `Var` given to [`Optimizer::new`] on the
/// plain-SGD path. See the [module](self) documentation.
pub struct FrogOptimizer {
    host: HostFrog<f32>,
    taps: Vec<Tap>,
    /// The plain parameters, registered with FROG at the first step (after
    /// every tap, which takes its `Var`s out of this list).
    plain: Vec<Var>,
    sealed: bool,
    divergence: Option<f64>,
    losses: LossWatch,
    /// A learning rate FROG rejected in `set_learning_rate`, which cannot
    /// return it: the next step does.
    rejected: Option<Error>,
}

impl FrogOptimizer {
    /// Registers `tap`'s layer for preconditioning: its weight and bias
    /// leave the plain-SGD path. Taps come before the first step.
    pub fn add_tap(&mut self, tap: &Tap) -> Result<()> {
        if self.sealed {
            return Err(Error::Registered);
        }
        let (layer, ids) = {
            let s = tap.lock();
            (s.layer, [Some(s.weight.id()), s.bias.as_ref().map(|b| b.id())])
        };
        self.host.add_layer(&format!("tap{}", self.taps.len()), layer, GroupId::DEFAULT)?;
        self.plain.retain(|v| !ids.contains(&Some(v.id())));
        self.taps.push(tap.clone());
        Ok(())
    }

    /// [`Tap::new`] and [`FrogOptimizer::add_tap`] in one call.
    pub fn tap(&mut self, weight: &Var, bias: Option<&Var>, layer: Layer) -> Result<Tap> {
        let tap = Tap::new(weight, bias, layer)?;
        self.add_tap(&tap)?;
        Ok(tap)
    }

    /// Sets the learning rate of every parameter (the plain ones step at
    /// `lr * lr_other_ratio`); a rate FROG rejects changes nothing.
    pub fn try_set_learning_rate(&mut self, lr: f64) -> Result<()> {
        Ok(self.host.set_lr(lr)?)
    }

    /// Turns the divergence check of `backward_step` on (at `factor` times
    /// the first loss) or off (`None`).
    pub fn set_divergence(&mut self, factor: Option<f64>) {
        self.divergence = factor;
    }

    /// The host route underneath, for what this type does not wrap (the
    /// guard and its diagnostics, checkpoints).
    pub fn host(&mut self) -> &mut HostFrog<f32> {
        &mut self.host
    }

    /// [`Optimizer::backward_step`] with this crate's error, whose kind a
    /// caller can match (candle's error keeps only its message).
    pub fn try_backward_step(&mut self, loss: &Tensor) -> Result<()> {
        self.check_loss(loss)?;
        let grads = loss.backward()?;
        self.try_step(&grads)
    }

    /// Refuses a loss that is not finite or has exploded (see
    /// [`ParamsFrog::divergence`]).
    fn check_loss(&mut self, loss: &Tensor) -> Result<()> {
        let Some(factor) = self.divergence else { return Ok(()) };
        let v = loss.to_dtype(DType::F64)?.sum_all()?.to_scalar::<f64>()?;
        Ok(self.losses.check(v, factor).map_err(HostError::from)?)
    }

    /// Registers the plain parameters, after every tap.
    fn seal(&mut self) -> Result<()> {
        if !self.sealed {
            for (i, v) in self.plain.iter().enumerate() {
                self.host.add_param(&format!("param{i}"), v.elem_count(), GroupId::DEFAULT)?;
            }
            self.sealed = true;
        }
        Ok(())
    }

    /// [`Optimizer::step`] with this crate's error (see
    /// [`FrogOptimizer::try_backward_step`]).
    pub fn try_step(&mut self, grads: &GradStore) -> Result<()> {
        if let Some(e) = self.rejected.take() {
            return Err(e);
        }
        self.seal()?;
        let taps: Vec<MutexGuard<'_, TapState>> = self.taps.iter().map(Tap::lock).collect();
        let recorded = taps
            .iter()
            .enumerate()
            .map(|(i, t)| match (&t.input, &t.output) {
                (Some(input), Some(output)) => Ok((input, output)),
                _ => Err(HostError::NotApplied { name: format!("tap{i}") }),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let batch = step_batch(recorded.iter().map(|(x, _)| x.dims().first().copied().unwrap_or(1)), |i| format!("tap{i}"))?;
        let mut rows = Vec::with_capacity(taps.len());
        if let Some((first, _)) = recorded.first() {
            let sample: Vec<u32> = self.host.sample(batch)?.iter().map(|&i| i as u32).collect();
            let r = sample.len();
            let idx = Tensor::from_vec(sample, r, first.device())?;
            for (i, (input, output)) in recorded.iter().enumerate() {
                let y = grads.get(output).ok_or_else(|| HostError::MissingGrad { what: format!("tap{i}'s output (run the loss's forward pass through Tap::apply)") })?;
                rows.push((host(&input.index_select(&idx, 0)?)?, host(&y.index_select(&idx, 0)?)?));
            }
        }
        let grad = |v: &Var, what: String| grads.get(v).ok_or(Error::Frog(HostError::MissingGrad { what })).and_then(host);
        let mut layer_data = Vec::with_capacity(taps.len());
        for (i, t) in taps.iter().enumerate() {
            let w = (host(&t.weight)?, grad(&t.weight, format!("tap{i}'s weight"))?);
            let b = t.bias.as_ref().map(|b| Ok::<_, Error>((host(b)?, grad(b, format!("tap{i}'s bias"))?))).transpose()?;
            layer_data.push((w, b));
        }
        let mut plain_data = Vec::with_capacity(self.plain.len());
        for (i, v) in self.plain.iter().enumerate() {
            plain_data.push((host(v)?, grad(v, format!("param{i}"))?));
        }

        let mut layers: Vec<LayerSlices<'_, f32>> = layer_data
            .iter_mut()
            .zip(&rows)
            .map(|(((w, gw), b), (x, y))| LayerSlices { weight: w, grad_weight: gw, bias: b.as_mut().map(|(b, gb)| (&mut b[..], &gb[..])), x: Rows::Sampled(x), y: Rows::Sampled(y) })
            .collect();
        let mut params: Vec<ParamSlices<'_, f32>> = plain_data.iter_mut().map(|(p, g)| ParamSlices { param: p, grad: g }).collect();
        self.host.step(batch, &mut layers, &mut params)?;
        drop((layers, params));

        for (t, ((w, _), b)) in taps.iter().zip(layer_data) {
            set(&t.weight, w)?;
            if let (Some(v), Some((b, _))) = (&t.bias, b) {
                set(v, b)?;
            }
        }
        for (v, (p, _)) in self.plain.iter().zip(plain_data) {
            set(v, p)?;
        }
        Ok(())
    }
}

impl Optimizer for FrogOptimizer {
    type Config = ParamsFrog;

    /// FROG over `vars` (the floating-point ones): each takes the plain-SGD
    /// path unless a tap added later holds it.
    fn new(vars: Vec<Var>, config: ParamsFrog) -> candle_core::Result<Self> {
        let make = || -> Result<Self> {
            let host = HostFrog::with_params(&config)?;
            let plain = vars.into_iter().filter(|v| v.dtype().is_float()).collect();
            Ok(Self { host, taps: Vec::new(), plain, sealed: false, divergence: config.divergence, losses: LossWatch::default(), rejected: None })
        };
        Ok(make()?)
    }

    fn step(&mut self, grads: &GradStore) -> candle_core::Result<()> {
        Ok(self.try_step(grads)?)
    }

    fn learning_rate(&self) -> f64 {
        self.host.lr(GroupId::DEFAULT).unwrap_or(f64::NAN)
    }

    /// A rate FROG rejects (negative, not finite) changes nothing, and the
    /// next step returns the error (the trait's method cannot);
    /// [`FrogOptimizer::try_set_learning_rate`] returns it at once.
    fn set_learning_rate(&mut self, lr: f64) {
        self.rejected = self.try_set_learning_rate(lr).err();
    }

    /// Checks the loss (see [`ParamsFrog::divergence`]), then steps from
    /// its gradients: a refused loss changes nothing.
    fn backward_step(&mut self, loss: &Tensor) -> candle_core::Result<()> {
        Ok(self.try_backward_step(loss)?)
    }
}

/// `t`'s entries, flattened, as f32 on the host.
fn host(t: &Tensor) -> Result<Vec<f32>> {
    Ok(t.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?)
}

/// Sets `v` to `data` (f32), in `v`'s shape, dtype and device.
fn set(v: &Var, data: Vec<f32>) -> Result<()> {
    let t = Tensor::from_vec(data, v.shape(), &Device::Cpu)?.to_dtype(v.dtype())?.to_device(v.device())?;
    Ok(v.set(&t)?)
}
