//! [`FrogOptimizer`]: FROG for a burn model, on frog-cpu's host route.
//!
//! ```
//! use burn::module::Module;
//! use burn::nn::{Linear, LinearConfig};
//! use burn::tensor::{Device, Tensor};
//! use frog_burn::{FrogOptimizer, ParamsFrog, Taps};
//! use frog_core::Config;
//!
//! #[derive(Module, Debug)]
//! struct Net {
//!     fc: Linear,
//!     #[module(skip)]
//!     taps: Taps,
//! }
//!
//! let dev = Device::flex().autodiff();
//! let mut net = Net { fc: LinearConfig::new(3, 2).init(&dev), taps: Taps::new() };
//! let mut opt = FrogOptimizer::new(ParamsFrog::new(Config { lr: 0.01, ..Config::default() }, 8), &net.taps)?;
//! opt.add_linear(&net.fc)?;
//!
//! let x = Tensor::<2>::ones([8, 3], &dev);
//! for _ in 0..3 {
//!     let loss = net.taps.linear(&net.fc, x.clone()).powi_scalar(2).mean();
//!     opt.step(&mut net, &loss)?;
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Each step runs the backward pass, copies every trainable parameter and
//! its gradient, and every registered layer's whole-batch input and output
//! gradient to the host (`f32`), runs frog-cpu's host route
//! ([`frog_cpu::host::HostFrog`], which draws FROG's sample and takes
//! those rows), and maps the model's parameters to the results (a
//! [`ModuleMapper`] that keeps each parameter's id, device, dtype and
//! `require_grad`). Burn's modules are values, so the step takes the model
//! by `&mut` and replaces it; a refused step leaves it as it was.
//!
//! A linear layer's weight is `[d_in, d_out]` in burn: it is registered as
//! [`WeightLayout::InOut`], so the host route steps it in FROG's rows.
//!
//! # Learning rate and divergence
//!
//! FROG's step is scale-free: `lr` is close to a relative step per weight
//! row, so SGD's learning rates do not carry over; start near 0.01. A
//! diverging run is an error by default: [`FrogOptimizer::step`] refuses,
//! before stepping, a loss that is not finite or that has grown past
//! [`ParamsFrog::divergence`] times the first loss it saw (100 by
//! default); set it to `None` to turn the check off (a loss that is meant
//! to grow, such as a negated objective).

use std::collections::{HashMap, HashSet};

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::nn::conv::Conv2d;
use burn::nn::{Linear, PaddingConfig2d};
use burn::tensor::{Gradients, Tensor, TensorData};
use frog_core::{GroupId, Layer};
use frog_cpu::host::{step_batch, HostError, HostFrog, LayerSlices, LossWatch, ParamSlices, Rows, WeightLayout};

use crate::error::{Error, Result};
use crate::tap::Taps;

/// The settings of a [`FrogOptimizer`]: those of every framework optimizer
/// on frog-cpu's host route.
pub use frog_cpu::host::ParamsFrog;

/// How a registered layer's FROG geometry follows from its recorded input.
#[derive(Clone, Copy, Debug)]
enum Geometry {
    /// `y = x W + b`, `W` of `[d_in, d_out]`.
    Linear { d_in: usize, d_out: usize },
    /// A 2-D convolution (one group); its padding resolved from the input
    /// size as burn's forward resolves it.
    Conv2d { c_in: usize, c_out: usize, kernel: [usize; 2], stride: [usize; 2], dilation: [usize; 2], padding: Padding },
}

#[derive(Clone, Copy, Debug)]
enum Padding {
    Same,
    Fixed([usize; 2]),
}

/// A registered layer.
struct Registered {
    name: String,
    weight: ParamId,
    bias: Option<ParamId>,
    geometry: Geometry,
}

/// FROG (f32, on frog-cpu) over a burn model: the registered layers
/// preconditioned, every other trainable parameter on the plain-SGD path.
/// See the [module](self) documentation.
pub struct FrogOptimizer {
    host: HostFrog<f32>,
    taps: Taps,
    layers: Vec<Registered>,
    /// The plain parameters, registered with FROG at the first step (after
    /// every layer) in the model's visiting order.
    plain: Vec<ParamId>,
    sealed: bool,
    divergence: Option<f64>,
    losses: LossWatch,
}

impl FrogOptimizer {
    /// FROG with `params`, reading the forward passes `taps` records.
    pub fn new(params: ParamsFrog, taps: &Taps) -> Result<Self> {
        let host = HostFrog::with_params(&params)?;
        Ok(Self { host, taps: taps.clone(), layers: Vec::new(), plain: Vec::new(), sealed: false, divergence: params.divergence, losses: LossWatch::default() })
    }

    /// The taps this optimizer reads.
    pub fn taps(&self) -> &Taps {
        &self.taps
    }

    /// Registers a linear layer for preconditioning (run it through
    /// [`Taps::linear`]).
    pub fn add_linear(&mut self, layer: &Linear) -> Result<()> {
        let [d_in, d_out] = layer.weight.shape().dims();
        self.add_layer(layer.weight.id, layer.bias.as_ref().map(|b| b.id), Geometry::Linear { d_in, d_out })
    }

    /// Registers a convolution for preconditioning (run it through
    /// [`Taps::conv2d`]). FROG preconditions one group, and a padding the
    /// same on both sides of an axis.
    pub fn add_conv2d(&mut self, layer: &Conv2d) -> Result<()> {
        let [c_out, c_in, kh, kw] = layer.weight.shape().dims();
        if layer.groups != 1 {
            return Err(Error::Unsupported(format!("a convolution of {} groups", layer.groups)));
        }
        let padding = match layer.padding {
            PaddingConfig2d::Valid => Padding::Fixed([0, 0]),
            PaddingConfig2d::Same => Padding::Same,
            PaddingConfig2d::Explicit(top, left, bottom, right) if top == bottom && left == right => Padding::Fixed([top, left]),
            PaddingConfig2d::Explicit(..) => return Err(Error::Unsupported(format!("the asymmetric padding {:?}", layer.padding))),
        };
        let geometry = Geometry::Conv2d { c_in, c_out, kernel: [kh, kw], stride: layer.stride, dilation: layer.dilation, padding };
        self.add_layer(layer.weight.id, layer.bias.as_ref().map(|b| b.id), geometry)
    }

    fn add_layer(&mut self, weight: ParamId, bias: Option<ParamId>, geometry: Geometry) -> Result<()> {
        let name = format!("layer{}", self.layers.len());
        if self.sealed {
            return Err(Error::Registered(format!("{name} after the first step")));
        }
        if self.layers.iter().any(|l| l.weight == weight) {
            return Err(Error::Registered(format!("{name}: the layer is already registered")));
        }
        self.layers.push(Registered { name, weight, bias, geometry });
        Ok(())
    }

    /// Sets the learning rate of every parameter (the plain ones step at
    /// `lr * lr_other_ratio`); a rate FROG rejects changes nothing.
    pub fn set_lr(&mut self, lr: f64) -> Result<()> {
        Ok(self.host.set_lr(lr)?)
    }

    /// The learning rate.
    pub fn lr(&self) -> Result<f64> {
        Ok(self.host.lr(GroupId::DEFAULT)?)
    }

    /// Turns the divergence check of [`FrogOptimizer::step`] on (at
    /// `factor` times the first loss) or off (`None`).
    pub fn set_divergence(&mut self, factor: Option<f64>) {
        self.divergence = factor;
    }

    /// The host route underneath, for what this type does not wrap (the
    /// gradient check, the guard, checkpoints).
    pub fn host(&mut self) -> &mut HostFrog<f32> {
        &mut self.host
    }

    /// One step: checks the loss (see [`ParamsFrog::divergence`]), runs
    /// its backward pass and steps `model` from the gradients. A refused
    /// step leaves `model` as it was.
    pub fn step<M: Module, const D: usize>(&mut self, model: &mut M, loss: &Tensor<D>) -> Result<()> {
        if !loss.is_tracked() {
            return Err(Error::NotTracked);
        }
        self.check_loss(loss)?;
        let grads = loss.backward();
        let result = self.step_grads(model, &grads);
        // A record is of one forward pass: the next step needs a new one.
        self.taps.clear();
        result
    }

    /// Refuses a loss that is not finite or has exploded.
    fn check_loss<const D: usize>(&mut self, loss: &Tensor<D>) -> Result<()> {
        let Some(factor) = self.divergence else { return Ok(()) };
        let v = host(&loss.clone().sum())?.iter().map(|&v| f64::from(v)).sum::<f64>();
        Ok(self.losses.check(v, factor).map_err(HostError::from)?)
    }

    /// The step from `grads`, computed by the loss of a forward pass that
    /// ran the registered layers through [`Taps`].
    pub fn step_grads<M: Module>(&mut self, model: &mut M, grads: &Gradients) -> Result<()> {
        let mut visit = Collect { grads, params: HashMap::new(), order: Vec::new(), failed: None };
        model.visit(&mut visit);
        if let Some(e) = visit.failed {
            return Err(e);
        }
        let Collect { mut params, order, .. } = visit;

        // Each layer's recorded input and output gradient, and the batch.
        let records = self.layers.iter().map(|l| self.taps.get(l.weight).ok_or_else(|| HostError::NotApplied { name: l.name.clone() })).collect::<Result<Vec<_>, _>>()?;
        let batch = step_batch(records.iter().map(|r| r.input_dims.first().copied().unwrap_or(1)), |i| self.layers[i].name.clone())?;
        let mut rows = Vec::with_capacity(self.layers.len());
        for (l, rec) in self.layers.iter().zip(records) {
            let y = rec.output.grad(grads).ok_or_else(|| HostError::MissingGrad { what: format!("{}'s output (run the loss's forward pass through Taps)", l.name) })?;
            rows.push((host(&rec.input)?, host(&y)?, rec.input_dims));
        }
        self.seal(&order, &params, &rows)?;

        let mut take = |id: ParamId, what: &str| -> Result<(Vec<f32>, Vec<f32>)> {
            let p = params.remove(&id).ok_or_else(|| HostError::MissingGrad { what: format!("{what} (not a trainable parameter of the model)") })?;
            Ok((p.value, p.grad.ok_or_else(|| HostError::MissingGrad { what: what.to_owned() })?))
        };
        let mut layer_data = Vec::with_capacity(self.layers.len());
        for l in &self.layers {
            let w = take(l.weight, &format!("{}'s weight", l.name))?;
            let b = l.bias.map(|b| take(b, &format!("{}'s bias", l.name))).transpose()?;
            layer_data.push((w, b));
        }
        let mut plain_data = Vec::with_capacity(self.plain.len());
        for (i, &id) in self.plain.iter().enumerate() {
            plain_data.push(take(id, &format!("param{i}"))?);
        }
        if let Some(id) = params.keys().next() {
            return Err(Error::Registered(format!("a trainable parameter ({id}) that was not in the model at the first step")));
        }

        let mut layers: Vec<LayerSlices<'_, f32>> = layer_data
            .iter_mut()
            .zip(&rows)
            .map(|(((w, gw), b), (x, y, _))| LayerSlices { weight: w, grad_weight: gw, bias: b.as_mut().map(|(b, gb)| (&mut b[..], &gb[..])), x: Rows::Batch(x), y: Rows::Batch(y) })
            .collect();
        let mut plain: Vec<ParamSlices<'_, f32>> = plain_data.iter_mut().map(|(p, g)| ParamSlices { param: p, grad: g }).collect();
        self.host.step(batch, &mut layers, &mut plain)?;
        drop((layers, plain));

        let mut updated = HashMap::with_capacity(self.layers.len() * 2 + self.plain.len());
        for (l, ((w, _), b)) in self.layers.iter().zip(layer_data) {
            updated.insert(l.weight, w);
            if let (Some(id), Some((b, _))) = (l.bias, b) {
                updated.insert(id, b);
            }
        }
        updated.extend(self.plain.iter().copied().zip(plain_data.into_iter().map(|(p, _)| p)));
        *model = model.clone().map(&mut Write { updated });
        Ok(())
    }

    /// Registers the layers (their geometry completed by the recorded
    /// inputs) and then the plain parameters, at the first step.
    fn seal(&mut self, order: &[ParamId], params: &HashMap<ParamId, HostParam>, rows: &[(Vec<f32>, Vec<f32>, Vec<usize>)]) -> Result<()> {
        if self.sealed {
            return Ok(());
        }
        // Every geometry first: a layer refused here registers nothing.
        let geometries = self.layers.iter().zip(rows).map(|(l, (_, _, dims))| frog_layer(l, dims)).collect::<Result<Vec<_>>>()?;
        for (l, layer) in self.layers.iter().zip(geometries) {
            let layout = if matches!(l.geometry, Geometry::Linear { .. }) { WeightLayout::InOut } else { WeightLayout::OutIn };
            self.host.add_layer_as(&l.name, layer, GroupId::DEFAULT, layout)?;
        }
        let held: HashSet<ParamId> = self.layers.iter().flat_map(|l| [Some(l.weight), l.bias]).flatten().collect();
        let plain: Vec<ParamId> = order.iter().copied().filter(|id| !held.contains(id)).collect();
        for (i, &id) in plain.iter().enumerate() {
            let len = params.get(&id).map_or(0, |p| p.value.len());
            self.host.add_param(&format!("param{i}"), len, GroupId::DEFAULT)?;
        }
        self.plain = plain;
        self.sealed = true;
        Ok(())
    }
}

/// FROG's geometry of `l` on an input of shape `dims`.
fn frog_layer(l: &Registered, dims: &[usize]) -> Result<Layer> {
    let bias = l.bias.is_some();
    match l.geometry {
        Geometry::Linear { d_in, d_out } => {
            let tokens = dims.get(1..dims.len().saturating_sub(1)).map_or(1, |m| m.iter().product());
            Ok(Layer::linear_tokens(d_in, d_out, tokens, bias))
        }
        Geometry::Conv2d { c_in, c_out, kernel, stride, dilation, padding } => {
            let &[_, _, h, w] = dims else { return Err(Error::Unsupported(format!("{}: a convolution input of shape {dims:?}", l.name))) };
            let padding = match padding {
                Padding::Fixed(p) => p,
                Padding::Same => {
                    let (top, bottom) = same_padding(kernel[0], stride[0], h);
                    let (left, right) = same_padding(kernel[1], stride[1], w);
                    if top != bottom || left != right {
                        return Err(Error::Unsupported(format!("{}: 'same' padding that is asymmetric on a {h}x{w} input", l.name)));
                    }
                    [top, left]
                }
            };
            let layer = Layer::conv2d(frog_core::Conv2d { c_in, c_out, kernel, stride, padding, dilation, groups: 1, input_hw: [h, w] }, bias);
            layer.validate().map_err(|e| Error::Unsupported(format!("{}: {e}", l.name)))?;
            Ok(layer)
        }
    }
}

/// Burn's 'same' padding of one axis (`burn_nn`'s, which is private):
/// `(before, after)`.
fn same_padding(kernel: usize, stride: usize, size: usize) -> (usize, usize) {
    let out = size.div_ceil(stride.max(1));
    let total = if out > 0 { ((out - 1) * stride + kernel).saturating_sub(size) } else { 0 };
    (total / 2, total - total / 2)
}

/// A trainable parameter's value and gradient on the host.
struct HostParam {
    value: Vec<f32>,
    grad: Option<Vec<f32>>,
}

/// Copies every trainable parameter (`require_grad`) and its gradient to
/// the host, in the model's visiting order.
struct Collect<'a> {
    grads: &'a Gradients,
    params: HashMap<ParamId, HostParam>,
    order: Vec<ParamId>,
    failed: Option<Error>,
}

impl ModuleVisitor for Collect<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if self.failed.is_some() || !param.is_require_grad() {
            return;
        }
        let t = param.val();
        let read = || -> Result<HostParam> { Ok(HostParam { value: host(&t)?, grad: t.grad(self.grads).map(|g| host(&g)).transpose()? }) };
        match read() {
            Ok(p) => {
                self.order.push(param.id);
                self.params.insert(param.id, p);
            }
            Err(e) => self.failed = Some(e),
        }
    }
}

/// Replaces the stepped parameters' values, keeping each one's id,
/// device, dtype and `require_grad`.
struct Write {
    updated: HashMap<ParamId, Vec<f32>>,
}

impl ModuleMapper for Write {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let Some(data) = self.updated.remove(&param.id) else { return param };
        let (id, old, mapper) = param.consume();
        let new = Tensor::<D>::from_data(TensorData::new(data, old.shape()), &old.device()).cast(old.dtype()).detach().set_require_grad(old.is_require_grad());
        Param::from_mapped_value(id, new, mapper)
    }
}

/// `t`'s entries, row-major, as f32 on the host.
fn host<const D: usize>(t: &Tensor<D>) -> Result<Vec<f32>> {
    let data = t.try_to_data_as::<f32>().map_err(|e| Error::Read(e.to_string()))?;
    data.try_into_vec::<f32>().map_err(|e| Error::Read(format!("{e:?}")))
}
