//! The host route: FROG for any training framework, on plain slices.
//!
//! A framework (candle, burn, a hand-written loop) that keeps its tensors
//! anywhere can run FROG on frog-cpu by copying the tensors to host slices
//! and the parameters back. Everything between those copies is the same
//! for every framework, so it lives here rather than in each framework's
//! glue: register the preconditioned layers and the plain parameters once,
//! then each step hand [`HostFrog::step`] every layer's parameters,
//! gradients, input and output gradient, and every plain parameter with
//! its gradient. The step draws FROG's sample once (one sample serves every
//! layer), takes the sampled rows of each layer's full-batch input and
//! output gradient, steps every layer and parameter on frog-core's
//! optimizer object and writes the parameters back in place.
//!
//! A linear layer whose weight the framework stores `[d_in, d_out]` (burn's
//! layout) is declared so at registration ([`WeightLayout::InOut`]); its
//! weight and gradient are then transposed into FROG's rows and back,
//! rather than preconditioning the wrong rows. An opt-in check
//! ([`HostFrog::check_gradients`]) compares every layer's weight gradient
//! with the one its whole-batch inputs and output gradients imply, and
//! names the layer when they disagree: it catches a transposed weight, a
//! wrong tap and rows of another batch.
//!
//! The steps run on views (slices) of the caller's memory, so nothing is
//! copied into optimizer buffers and back; the gather buffers of the
//! sampled rows are allocated when a layer is registered, so a step
//! allocates nothing (except an error's message). Every length is checked
//! before anything moves: a refused step names the layer or parameter and
//! leaves the parameters, the optimizer's state and the sampler as they
//! were.
//!
//! ```
//! use frog_core::{Config, GroupId, Layer, Method};
//! use frog_cpu::host::{HostFrog, LayerSlices, ParamSlices, Rows};
//! use frog_cpu::Cpu;
//!
//! let cfg = Config { lr: 0.01, sample_size: Some(2), ..Config::default() };
//! let mut frog = HostFrog::new(Cpu::<f32>::with_threads(1)?, Method::Frog(cfg), 4, 0)?;
//! let layer = Layer::linear(3, 2, true);
//! frog.add_layer("fc", layer, GroupId::DEFAULT)?;
//! frog.add_param("scale", 1, GroupId::DEFAULT)?;
//!
//! let (mut w, mut b, mut s) = (vec![0.5f32; 6], vec![0.0f32; 2], vec![1.0f32]);
//! let (gw, gb, gs) = (vec![0.1f32; 6], vec![0.2f32; 2], vec![0.3f32]);
//! // The whole batch of 4 samples: inputs and output gradients.
//! let (x, y) = ([1.0f32, 2.0, 3.0].repeat(4), [0.5f32, -0.5].repeat(4));
//! let mut layers = [LayerSlices { weight: &mut w, grad_weight: &gw, bias: Some((&mut b, &gb)), x: Rows::Batch(&x), y: Rows::Batch(&y) }];
//! let mut params = [ParamSlices { param: &mut s, grad: &gs }];
//! frog.step(4, &mut layers, &mut params)?;
//! assert!(w.iter().all(|&v| v != 0.5));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;

use frog_core::{gather_rows, Config, GroupId, Layer, Method, ParamId, ShapeError, ViewBatch, ViewParamGrad, ViewParams, ViewSource};

use crate::backend::Cpu;
use crate::gemm::Real;
use crate::implied::{implied_gradients, implied_scratch_len, ImpliedGrads, LayerIo};
use crate::optimizer::{Frog, FrogError};

/// How a layer's weight is stored in the caller's memory.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum WeightLayout {
    /// One row per output (`[c_out, c_in, kh, kw]` or `[d_out, d_in]`):
    /// PyTorch's layout and FROG's rows.
    #[default]
    OutIn,
    /// A linear layer's `[d_in, d_out]` (`y = x W`, as burn stores it).
    InOut,
}

/// Rows of a layer's inputs or output gradients, `[n, len]` row-major.
#[derive(Clone, Copy, Debug)]
pub enum Rows<'a, T> {
    /// The whole batch (`batch` rows): the step takes the sampled ones.
    Batch(&'a [T]),
    /// Only the sampled rows, in the order of the indices
    /// [`HostFrog::sample`] returned for this step: for a framework that
    /// gathers on its device and copies only those rows to the host.
    Sampled(&'a [T]),
}

impl<T> Rows<'_, T> {
    fn len(&self) -> usize {
        match self {
            Self::Batch(s) | Self::Sampled(s) => s.len(),
        }
    }
}

/// One registered layer's data for a step, as host slices.
pub struct LayerSlices<'a, T> {
    /// The weight (`[c_out, c_in, kh, kw]` or `[d_out, d_in]`), updated in place.
    pub weight: &'a mut [T],
    /// Its gradient.
    pub grad_weight: &'a [T],
    /// The bias and its gradient, exactly when the layer was registered with one.
    pub bias: Option<(&'a mut [T], &'a [T])>,
    /// The layer's inputs (`input_len` entries a row). Unread for a layer
    /// in a group that does not run FROG (empty slices do).
    pub x: Rows<'a, T>,
    /// The gradients of the layer's output, raw as autograd gives them
    /// (`output_len` entries a row). Unread as `x` is.
    pub y: Rows<'a, T>,
}

/// One registered plain parameter's data for a step.
pub struct ParamSlices<'a, T> {
    /// The parameter, updated in place.
    pub param: &'a mut [T],
    /// Its gradient.
    pub grad: &'a [T],
}

/// A step or registration the host route refused, or FROG's error.
#[derive(Debug)]
#[non_exhaustive]
pub enum HostError {
    /// A slice of another length than the registered layer or parameter
    /// `name` needs.
    Length {
        /// The layer or parameter, as registered.
        name: String,
        /// Which slice.
        what: &'static str,
        /// Entries it needs.
        expected: usize,
        /// Entries given.
        actual: usize,
    },
    /// A bias given for a layer registered without one, or none for a
    /// layer registered with one.
    Bias {
        /// The layer.
        name: String,
        /// Whether it was registered with a bias.
        registered: bool,
    },
    /// Another number of layers (or plain parameters) than registered.
    Count {
        /// `"layers"` or `"plain parameters"`.
        what: &'static str,
        /// Given.
        given: usize,
        /// Registered.
        registered: usize,
    },
    /// [`Rows::Sampled`] given without a sample drawn for this step's
    /// batch by [`HostFrog::sample`].
    NoSample {
        /// The step's batch.
        batch: usize,
        /// The batch of the sample drawn, if any.
        drawn: Option<usize>,
    },
    /// A linear layer declared [`WeightLayout::InOut`] is a convolution.
    Layout {
        /// The layer.
        name: String,
    },
    /// The gradient `what` of layer `name` differs from the one its
    /// whole-batch inputs and output gradients imply by `error` (largest
    /// difference relative to the implied gradient's largest entry), more
    /// than the check's `tolerance` ([`HostFrog::check_gradients`]).
    Gradient {
        /// The layer.
        name: String,
        /// `"grad_weight"` or `"grad_bias"`.
        what: &'static str,
        /// The relative difference.
        error: f64,
        /// The check's tolerance.
        tolerance: f64,
    },
    /// A registered layer whose input the framework did not record in the
    /// loss's forward pass (it was not run through its tap), so that its
    /// rows are unknown. This and the next three are a framework
    /// optimizer's refusals before it calls the route (frog-candle's and
    /// frog-burn's), shared so that they read the same.
    NotApplied {
        /// The layer.
        name: String,
    },
    /// Autograd gave no gradient for a tensor FROG needs: it is not on the
    /// loss's graph (a parameter the loss does not use, or a tap from
    /// another forward pass than the loss's).
    MissingGrad {
        /// The tensor, and what to do about it.
        what: String,
    },
    /// The layers' recorded inputs are of different batches ([`step_batch`]).
    Batch {
        /// The layer.
        name: String,
        /// Its input's batch (first dimension).
        batch: usize,
        /// The first layer's.
        first: usize,
    },
    /// The loss is not finite, or has grown past the divergence factor
    /// times the first loss ([`LossWatch`]): the learning rate is too high
    /// for the model.
    Diverged {
        /// The loss.
        loss: f64,
        /// The run's first finite loss.
        first: f64,
    },
    /// FROG refused the call or its backend failed; `name` is the layer or
    /// parameter whose step or registration it was, if one.
    Frog {
        /// The layer or parameter.
        name: Option<String>,
        /// FROG's error (boxed: with its parameter name it is large, and
        /// every `Result` of the route carries it).
        source: Box<FrogError>,
    },
}

impl fmt::Display for HostError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Length { name, what, expected, actual } => write!(f, "{name}: {what} has {actual} entries, {expected} expected"),
            Self::Bias { name, registered: true } => write!(f, "{name}: registered with a bias, none given"),
            Self::Bias { name, registered: false } => write!(f, "{name}: registered without a bias, one given"),
            Self::Count { what, given, registered } => write!(f, "{given} {what} given, {registered} registered"),
            Self::NoSample { batch, drawn: None } => write!(f, "sampled rows given for a batch of {batch}, but no sample was drawn (call sample first)"),
            Self::NoSample { batch, drawn: Some(d) } => write!(f, "sampled rows given for a batch of {batch}, but the sample drawn is of a batch of {d}"),
            Self::Layout { name } => write!(f, "{name}: only a linear layer's weight can be stored [d_in, d_out]"),
            Self::Gradient { name, what, error, tolerance } => write!(
                f,
                "{name}: {what} differs from the gradient its inputs and output gradients imply by {error:.2e} (relative; tolerance {tolerance:.0e}): a transposed weight, a wrong tap, or rows of another batch?"
            ),
            Self::NotApplied { name } => write!(f, "{name} was not run through its tap in the loss's forward pass, so its input is unknown"),
            Self::MissingGrad { what } => write!(f, "no gradient for {what}: it is not on the loss's graph"),
            Self::Batch { name, batch, first } => write!(f, "{name}: input of a batch of {batch}, the first layer's is of {first}"),
            Self::Diverged { loss, first } => write!(
                f,
                "FROG diverged: loss {loss} (first loss {first}); lower the learning rate (0.01 is a safe start), or turn the check off with ParamsFrog::divergence = None"
            ),
            Self::Frog { name: Some(name), source } => write!(f, "{name}: FROG: {source}"),
            Self::Frog { name: None, source } => write!(f, "FROG: {source}"),
        }
    }
}

impl std::error::Error for HostError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Frog { source, .. } => Some(&**source),
            _ => None,
        }
    }
}

impl From<FrogError> for HostError {
    fn from(source: FrogError) -> Self {
        Self::Frog { name: None, source: Box::new(source) }
    }
}

impl From<Diverged> for HostError {
    fn from(d: Diverged) -> Self {
        Self::Diverged { loss: d.loss, first: d.first }
    }
}

impl From<crate::CpuError> for HostError {
    fn from(e: crate::CpuError) -> Self {
        Self::Frog { name: None, source: Box::new(frog_core::Error::Backend(e)) }
    }
}

/// A registered layer: its handle, geometry and gather buffers.
struct HostLayer<T> {
    id: ParamId,
    name: String,
    layer: Layer,
    /// Its group runs FROG: it needs the sampled rows.
    preconditioned: bool,
    /// The sampled inputs and output gradients of a [`Rows::Batch`] step,
    /// sized for the largest sample at registration.
    x: Vec<T>,
    y: Vec<T>,
    layout: WeightLayout,
    /// The weight and its gradient in FROG's rows, for a layer stored
    /// [`WeightLayout::InOut`] (empty otherwise).
    weight_t: Vec<T>,
    grad_t: Vec<T>,
    /// The implied weight gradient, bias gradient and patch scratch of the
    /// gradient check (empty while it is off).
    implied: Vec<T>,
}

/// A registered plain parameter.
struct HostParam {
    id: ParamId,
    name: String,
    len: usize,
}

/// FROG on frog-cpu over a framework's layers and parameters, stepped on
/// host slices: see the [module](self) documentation.
pub struct HostFrog<T: Real> {
    cpu: Cpu<T>,
    frog: Frog<T>,
    layers: Vec<HostLayer<T>>,
    params: Vec<HostParam>,
    /// The sample's indices; the first `drawn.1` are this step's.
    sample: Vec<usize>,
    /// The batch and rows of a sample drawn by [`HostFrog::sample`] and not
    /// yet stepped.
    drawn: Option<(usize, usize)>,
    /// The gradient check's tolerance, when it is on.
    check_tolerance: Option<f64>,
}

impl<T: Real> HostFrog<T> {
    /// An optimizer whose default group runs `method` (FROG or SGD) on
    /// `cpu`, for batches of at most `max_batch` samples, its sampling
    /// fixed by `seed`.
    pub fn new(cpu: Cpu<T>, method: Method, max_batch: usize, seed: u64) -> Result<Self, HostError> {
        let frog = Frog::new(method, max_batch, seed)?;
        Ok(Self { cpu, frog, layers: Vec::new(), params: Vec::new(), sample: Vec::new(), drawn: None, check_tolerance: None })
    }

    /// An optimizer with a framework optimizer's settings: FROG with
    /// `params.frog` on frog-cpu with `params.threads` threads.
    pub fn with_params(params: &ParamsFrog) -> Result<Self, HostError> {
        Self::new(Cpu::with_threads(params.threads)?, Method::Frog(params.frog), params.max_batch, params.seed)
    }

    /// A new parameter group running `method` (FROG or SGD).
    pub fn add_group(&mut self, method: Method) -> Result<GroupId, HostError> {
        Ok(self.frog.add_group(method)?)
    }

    /// Registers layer `name` in `group`, after the layers registered
    /// before it: [`HostFrog::step`] takes the layers in this order. Its
    /// gather buffers are allocated here, so that steps allocate nothing.
    pub fn add_layer(&mut self, name: &str, layer: Layer, group: GroupId) -> Result<ParamId, HostError> {
        self.add_layer_as(name, layer, group, WeightLayout::OutIn)
    }

    /// [`HostFrog::add_layer`] for a weight stored in `layout`.
    pub fn add_layer_as(&mut self, name: &str, layer: Layer, group: GroupId, layout: WeightLayout) -> Result<ParamId, HostError> {
        let named = |source| HostError::Frog { name: Some(name.to_owned()), source: Box::new(source) };
        if layout == WeightLayout::InOut && !matches!(layer.kind, frog_core::LayerKind::Linear { .. }) {
            return Err(HostError::Layout { name: name.to_owned() });
        }
        let alloc = |len: usize| crate::try_zeros(len).map_err(|e| named(frog_core::Error::Backend(e)));
        let weight_len = if layout == WeightLayout::InOut { layer.rows().saturating_mul(layer.weight_cols()) } else { 0 };
        let (weight_t, grad_t) = (alloc(weight_len)?, alloc(weight_len)?);
        let implied = alloc(if self.check_tolerance.is_some() { implied_len(&layer) } else { 0 })?;
        let preconditioned = self.frog.group(group).map_err(named)?.frog().is_some();
        let rows = if preconditioned { self.frog.sample_rows(self.frog.max_batch()) } else { 0 };
        let x = crate::try_zeros(rows.saturating_mul(layer.input_len())).map_err(|e| named(frog_core::Error::Backend(e)))?;
        let y = crate::try_zeros(rows.saturating_mul(layer.output_len())).map_err(|e| named(frog_core::Error::Backend(e)))?;
        let sample = self.frog.sample_rows(self.frog.max_batch());
        if self.sample.len() < sample {
            self.sample.resize(sample, 0);
        }
        let id = self.frog.add_layer(&self.cpu, name, layer, group).map_err(named)?;
        self.layers.push(HostLayer { id, name: name.to_owned(), layer, preconditioned, x, y, layout, weight_t, grad_t, implied });
        Ok(id)
    }

    /// Registers plain parameter `name` of `len` entries in `group` (FROG's
    /// plain-SGD path in a FROG group), after those registered before it.
    pub fn add_param(&mut self, name: &str, len: usize, group: GroupId) -> Result<ParamId, HostError> {
        let id = self.frog.add_param(&self.cpu, name, len, group).map_err(|source| HostError::Frog { name: Some(name.to_owned()), source: Box::new(source) })?;
        self.params.push(HostParam { id, name: name.to_owned(), len });
        Ok(id)
    }

    /// Draws this step's sample of a batch of `batch` samples ahead of
    /// [`HostFrog::step`], for a framework that gathers the sampled rows
    /// itself ([`Rows::Sampled`]): increasing indices into the batch, the
    /// same for every layer. Without it, the step draws its own.
    pub fn sample(&mut self, batch: usize) -> Result<&[usize], HostError> {
        self.ensure_sample_room();
        let r = self.frog.sample(batch, &mut self.sample)?.len();
        self.drawn = Some((batch, r));
        Ok(&self.sample[..r])
    }

    /// A layer registered before any FROG group existed leaves the sample
    /// buffer short: make room (registration time, not a step's).
    fn ensure_sample_room(&mut self) {
        let need = self.frog.sample_rows(self.frog.max_batch());
        if self.sample.len() < need {
            self.sample.resize(need, 0);
        }
    }

    /// One optimizer step from a batch of `batch` samples: `layers[i]` is
    /// the `i`-th registered layer, `params[i]` the `i`-th registered plain
    /// parameter; each is updated in place.
    ///
    /// Every slice's length is checked first; a refused step changes
    /// nothing (no parameter, no state, not the sampler).
    pub fn step(&mut self, batch: usize, layers: &mut [LayerSlices<'_, T>], params: &mut [ParamSlices<'_, T>]) -> Result<(), HostError> {
        self.check(batch, layers, params)?;
        if let Some(tolerance) = self.check_tolerance {
            self.check_implied(batch, layers, tolerance)?;
        }
        let r = match self.drawn {
            Some((b, r)) if b == batch => r,
            _ => {
                self.ensure_sample_room();
                self.frog.sample(batch, &mut self.sample)?.len()
            }
        };
        self.drawn = None;
        let sample = &self.sample[..r];
        for (l, s) in self.layers.iter_mut().zip(layers.iter_mut()) {
            let named = |source| HostError::Frog { name: Some(l.name.clone()), source: Box::new(source) };
            let (rows, d) = (l.layer.rows(), l.layer.weight_cols());
            let (weight, grad_weight): (&mut [T], &[T]) = match l.layout {
                WeightLayout::OutIn => (&mut *s.weight, s.grad_weight),
                WeightLayout::InOut => {
                    transpose(s.weight, d, rows, &mut l.weight_t);
                    transpose(s.grad_weight, d, rows, &mut l.grad_t);
                    (&mut l.weight_t, &l.grad_t)
                }
            };
            let params = ViewParams { weight, grad_weight, bias: s.bias.as_mut().map(|(b, gb)| (&mut **b, *gb)) };
            if !l.preconditioned {
                self.frog.step_layer(&self.cpu, l.id, params, None::<ViewBatch<'_, Cpu<T>>>).map_err(named)?;
                if l.layout == WeightLayout::InOut {
                    transpose(&l.weight_t, rows, d, s.weight);
                }
                continue;
            }
            let (xn, yn) = (r * l.layer.input_len(), r * l.layer.output_len());
            let x = match s.x {
                Rows::Batch(x) => {
                    gather_rows(&self.cpu, sample, l.layer.input_len(), ViewSource(x), &mut l.x).map_err(named)?;
                    &l.x[..xn]
                }
                Rows::Sampled(x) => x,
            };
            let y = match s.y {
                Rows::Batch(y) => {
                    gather_rows(&self.cpu, sample, l.layer.output_len(), ViewSource(y), &mut l.y).map_err(named)?;
                    &l.y[..yn]
                }
                Rows::Sampled(y) => y,
            };
            let sampled = ViewBatch { x, y, sample: r, batch_size: batch };
            self.frog.step_layer(&self.cpu, l.id, params, Some(sampled)).map_err(named)?;
            if l.layout == WeightLayout::InOut {
                transpose(&l.weight_t, rows, d, s.weight);
            }
        }
        for (p, s) in self.params.iter().zip(params.iter_mut()) {
            self.frog.step_param(&self.cpu, p.id, ViewParamGrad { param: &mut *s.param, grad: s.grad }).map_err(|source| HostError::Frog { name: Some(p.name.clone()), source: Box::new(source) })?;
        }
        Ok(())
    }

    /// Every check of a step that can be made before anything moves.
    fn check(&self, batch: usize, layers: &[LayerSlices<'_, T>], params: &[ParamSlices<'_, T>]) -> Result<(), HostError> {
        if layers.len() != self.layers.len() {
            return Err(HostError::Count { what: "layers", given: layers.len(), registered: self.layers.len() });
        }
        if params.len() != self.params.len() {
            return Err(HostError::Count { what: "plain parameters", given: params.len(), registered: self.params.len() });
        }
        if batch == 0 {
            return Err(frog_core::Error::from(ShapeError::EmptySample).into());
        }
        if batch > self.frog.max_batch() {
            return Err(frog_core::Error::from(ShapeError::BatchExceedsMax { batch, max: self.frog.max_batch() }).into());
        }
        let len = |name: &str, what, expected: usize, actual: usize| match expected == actual {
            true => Ok(()),
            false => Err(HostError::Length { name: name.to_owned(), what, expected, actual }),
        };
        for (l, s) in self.layers.iter().zip(layers) {
            let (n, w) = (&l.name, l.layer.rows().saturating_mul(l.layer.weight_cols()));
            len(n, "weight", w, s.weight.len())?;
            len(n, "grad_weight", w, s.grad_weight.len())?;
            match (&s.bias, l.layer.bias) {
                (Some((b, gb)), true) => {
                    len(n, "bias", l.layer.rows(), b.len())?;
                    len(n, "grad_bias", l.layer.rows(), gb.len())?;
                }
                (None, false) => {}
                (_, registered) => return Err(HostError::Bias { name: n.clone(), registered }),
            }
            if !l.preconditioned {
                continue;
            }
            for (rows, what, row_len) in [(&s.x, "x", l.layer.input_len()), (&s.y, "y", l.layer.output_len())] {
                let n_rows = match rows {
                    Rows::Batch(_) => batch,
                    Rows::Sampled(_) => match self.drawn {
                        Some((b, r)) if b == batch => r,
                        drawn => return Err(HostError::NoSample { batch, drawn: drawn.map(|d| d.0) }),
                    },
                };
                len(n, what, n_rows.saturating_mul(row_len), rows.len())?;
            }
        }
        for (p, s) in self.params.iter().zip(params) {
            len(&p.name, "param", p.len, s.param.len())?;
            len(&p.name, "grad", p.len, s.grad.len())?;
        }
        Ok(())
    }

    /// Turns on (`Some(tolerance)`) or off the gradient check: before a step
    /// moves anything, every layer whose inputs and output gradients are
    /// given for the whole batch ([`Rows::Batch`]) has its weight (and
    /// bias) gradient compared with the one they imply (what autograd
    /// computes); a relative difference above `tolerance` refuses the step
    /// with [`HostError::Gradient`] naming the layer. About `1e-3` suits
    /// f32 gradients. It costs a weight-gradient product per layer and
    /// step, and allocates its scratch here.
    pub fn check_gradients(&mut self, tolerance: Option<f64>) -> Result<(), HostError> {
        for l in &mut self.layers {
            let len = if tolerance.is_some() { implied_len(&l.layer) } else { 0 };
            if l.implied.len() != len {
                l.implied = crate::try_zeros(len).map_err(|e| HostError::Frog { name: Some(l.name.clone()), source: Box::new(frog_core::Error::Backend(e)) })?;
            }
        }
        self.check_tolerance = tolerance;
        Ok(())
    }

    /// The gradient check of a step (see [`HostFrog::check_gradients`]).
    fn check_implied(&mut self, batch: usize, layers: &[LayerSlices<'_, T>], tolerance: f64) -> Result<(), HostError> {
        for (l, s) in self.layers.iter_mut().zip(layers) {
            let (Rows::Batch(x), Rows::Batch(y)) = (s.x, s.y) else { continue };
            let (rows, d) = (l.layer.rows(), l.layer.weight_cols());
            let (weight, rest) = l.implied.split_at_mut(rows * d);
            let (bias, scratch) = rest.split_at_mut(rows);
            let bias = l.layer.bias.then_some(bias);
            implied_gradients(self.cpu.pool(), &l.layer, batch, LayerIo { x, y }, scratch, ImpliedGrads { weight, bias })
                .map_err(|e| HostError::Frog { name: Some(l.name.clone()), source: Box::new(e.into()) })?;
            // The given gradient in FROG's rows, entry (j, c).
            let given = |j: usize, c: usize| match l.layout {
                WeightLayout::OutIn => s.grad_weight[j * d + c],
                WeightLayout::InOut => s.grad_weight[c * rows + j],
            };
            let weight = rel_diff((0..rows * d).map(|k| (given(k / d, k % d), l.implied[k])));
            let bias = s.bias.as_ref().map_or(0.0, |(_, gb)| rel_diff(gb.iter().copied().zip(l.implied[rows * d..].iter().copied())));
            for (what, error) in [("grad_weight", weight), ("grad_bias", bias)] {
                if error.is_nan() || error > tolerance {
                    return Err(HostError::Gradient { name: l.name.clone(), what, error, tolerance });
                }
            }
        }
        Ok(())
    }

    /// Sets every group's learning rate; a rate FROG rejects changes nothing.
    pub fn set_lr(&mut self, lr: f64) -> Result<(), HostError> {
        Ok(self.frog.set_lr(lr)?)
    }

    /// Sets `group`'s learning rate; a rejected rate changes nothing.
    pub fn set_group_lr(&mut self, group: GroupId, lr: f64) -> Result<(), HostError> {
        Ok(self.frog.set_group_lr(group, lr)?)
    }

    /// The learning rate of `group`.
    pub fn lr(&self, group: GroupId) -> Result<f64, HostError> {
        Ok(self.frog.group(group)?.lr())
    }

    /// The optimizer object underneath, for what the host route does not
    /// wrap (the guard, diagnostics, checkpoints).
    pub fn frog(&self) -> &Frog<T> {
        &self.frog
    }

    /// [`HostFrog::frog`], writable. Register layers and parameters through
    /// the host route only: [`HostFrog::step`] steps only those.
    pub fn frog_mut(&mut self) -> &mut Frog<T> {
        &mut self.frog
    }

    /// The backend the steps run on.
    pub fn cpu(&self) -> &Cpu<T> {
        &self.cpu
    }

    /// Layers registered.
    pub fn layers(&self) -> usize {
        self.layers.len()
    }

    /// Plain parameters registered.
    pub fn params(&self) -> usize {
        self.params.len()
    }
}

/// The factor past which a run's loss counts as diverging ([`LossWatch`]):
/// [`ParamsFrog::new`]'s and frog-bench's.
pub const DIVERGENCE_FACTOR: f64 = 100.0;

/// The settings of a framework optimizer built on the host route
/// (frog-candle's and frog-burn's `FrogOptimizer`, which re-export it).
#[derive(Clone, Copy, Debug)]
pub struct ParamsFrog {
    /// FROG's hyperparameters; the plain parameters step at
    /// `lr * lr_other_ratio`.
    pub frog: Config,
    /// The largest batch a step takes (the optimizer's buffers are sized
    /// for its sample).
    pub max_batch: usize,
    /// Seed of FROG's sampling.
    pub seed: u64,
    /// Threads of frog-cpu (0: all CPUs).
    pub threads: usize,
    /// The optimizer refuses, before stepping, a loss above this many times
    /// the first loss (and any non-finite loss) with
    /// [`HostError::Diverged`]; `None` turns the check off (a loss that is
    /// meant to grow, such as a negated objective).
    pub divergence: Option<f64>,
}

impl ParamsFrog {
    /// `frog` for batches of at most `max_batch`, seed 0, all CPUs, the
    /// divergence check on at [`DIVERGENCE_FACTOR`] times the first loss.
    pub fn new(frog: Config, max_batch: usize) -> Self {
        Self { frog, max_batch, seed: 0, threads: 0, divergence: Some(DIVERGENCE_FACTOR) }
    }
}

/// The batch of a step from the first dimensions of the layers' recorded
/// inputs, which must agree (a layer recorded in another forward pass is
/// [`HostError::Batch`], named by `name(index)`); 1 without layers, whose
/// plain parameters do not read it.
pub fn step_batch(batches: impl IntoIterator<Item = usize>, name: impl Fn(usize) -> String) -> Result<usize, HostError> {
    let mut first = None;
    for (i, batch) in batches.into_iter().enumerate() {
        match first {
            Some(first) if first != batch => return Err(HostError::Batch { name: name(i), batch, first }),
            _ => first = Some(batch),
        }
    }
    Ok(first.unwrap_or(1))
}

/// A run's losses, watched for a divergence: the check the framework
/// optimizers built on the host route (frog-candle's and frog-burn's) make
/// before each step, and frog-bench's training loop after each, since a
/// scale-free step at too high a rate can climb to 1e4 while staying
/// finite.
#[derive(Clone, Copy, Debug, Default)]
pub struct LossWatch {
    /// The first finite loss seen.
    first: Option<f64>,
}

/// A loss [`LossWatch::check`] refused, and the run's first loss.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Diverged {
    /// The loss refused.
    pub loss: f64,
    /// The run's first finite loss (the refused one, if none came before).
    pub first: f64,
}

impl LossWatch {
    /// Refuses `loss` if it is not finite, or if its magnitude is above
    /// `factor` times the first finite loss's (which the first call
    /// records; a first loss of 0 disables the comparison).
    pub fn check(&mut self, loss: f64, factor: f64) -> Result<(), Diverged> {
        if !loss.is_finite() {
            return Err(Diverged { loss, first: self.first.unwrap_or(loss) });
        }
        let first = *self.first.get_or_insert(loss);
        if first != 0.0 && loss.abs() > factor * first.abs() {
            return Err(Diverged { loss, first });
        }
        Ok(())
    }
}

/// Entries of a layer's gradient-check buffer: the implied weight and
/// bias gradients and the patch scratch.
fn implied_len(layer: &Layer) -> usize {
    let (rows, d) = (layer.rows(), layer.weight_cols());
    rows.saturating_mul(d).saturating_add(rows).saturating_add(implied_scratch_len(layer))
}

/// `dst[c][r] = src[r][c]` for a row-major `rows x cols` `src`.
fn transpose<T: Copy>(src: &[T], rows: usize, cols: usize, dst: &mut [T]) {
    for (r, row) in src.chunks_exact(cols).take(rows).enumerate() {
        for (c, &v) in row.iter().enumerate() {
            dst[c * rows + r] = v;
        }
    }
}

/// The largest `|given - implied|` of `pairs` relative to their largest
/// entry (0 when all are 0; NaN, which every check refuses, when one is).
fn rel_diff<T: Real>(pairs: impl Iterator<Item = (T, T)> + Clone) -> f64 {
    let scale = pairs.clone().fold(0.0f64, |m, (a, b)| m.max(a.as_f64().abs()).max(b.as_f64().abs()));
    let diff = pairs.fold(0.0f64, |m, (a, b)| {
        let d = (a.as_f64() - b.as_f64()).abs();
        if d.is_nan() || m.is_nan() { f64::NAN } else { m.max(d) }
    });
    if scale == 0.0 && diff == 0.0 { 0.0 } else { diff / scale }
}
