//! The network on a device: parameters, activations, forward and backward.
//!
//! Every buffer is allocated once for the largest batch (`capacity`), so a
//! training step allocates nothing. The forward pass keeps what the
//! backward pass needs (each convolution's output and each stage's output);
//! the backward pass writes every parameter's gradient and, for FROG and
//! K-FROG, the sampled inputs and output gradients of every convolution
//! (K-FROG's two sides from independent samples).

use frog_core::{Conv2d, Scalar};
use rand_xoshiro::rand_core::SeedableRng;
use rand_xoshiro::Xoshiro256PlusPlus;

use crate::arch::{Arch, StageSpec};
use crate::device::{BnGrads, BnParams, BnRunning, BnSaved, BnShape, BnTrainStats, ConvShape, CrossEntropyLoss, Device, Epilogue, LinearGrads, LinearShape, LossStats, BN_EPS, BN_MOMENTUM};
use crate::error::{Error, Result};

/// The batch rows a backward pass gathers for the optimizer: FROG's one
/// sample serves both sides (`x` and `y` are the same slice), K-FROG draws
/// the inputs and the output gradients independently, of different counts.
#[derive(Clone, Copy, Debug)]
pub struct SampledRows<'a> {
    /// Batch indices whose inputs are gathered.
    pub x: &'a [usize],
    /// Batch indices whose output gradients are gathered.
    pub y: &'a [usize],
}

/// The sampled rows the optimizer needs from a convolution: its inputs and
/// its raw output gradients, for the samples [`SampledRows`] names.
pub struct Sampled<B> {
    /// Inputs `[rx, c_in, H, W]`.
    pub x: B,
    /// Output gradients `[ry, c_out, Ho, Wo]`.
    pub y: B,
}

/// A trainable parameter and its gradient.
pub struct Param<D: Device> {
    /// PyTorch's name, like `layer1.0.conv1.weight`.
    pub name: String,
    /// PyTorch's shape.
    pub shape: Vec<usize>,
    /// Values.
    pub value: D::Buffer,
    /// Gradient of the last backward pass (mean over the batch).
    pub grad: D::Buffer,
    /// The convolution this is the weight of; FROG preconditions these.
    pub conv: Option<Conv2d>,
    /// The optimizer's sampled rows (FROG, K-FROG), when sampling is on.
    pub sampled: Option<Sampled<D::Buffer>>,
}

impl<D: Device> Param<D> {
    /// A parameter named `name` of PyTorch's `shape` on `dev`, holding
    /// `init` (its entries), with a zero gradient and no sampled rows.
    pub(crate) fn new(dev: &D, name: String, shape: Vec<usize>, init: &[D::Scalar], conv: Option<Conv2d>) -> Result<Self> {
        let n = shape.iter().product();
        let mut value = dev.zeros(n)?;
        dev.upload(init, &mut value)?;
        Ok(Self { name, shape, value, grad: dev.zeros(n)?, conv, sampled: None })
    }

    /// Allocates the optimizer's sampled rows when this is a convolution's
    /// weight: `rx` samples' inputs and `ry` samples' output gradients.
    pub(crate) fn enable_sampling(&mut self, dev: &D, rx: usize, ry: usize) -> Result<()> {
        if let Some(conv) = self.conv {
            let layer = frog_core::Layer::conv2d(conv, false);
            self.sampled = Some(Sampled { x: dev.zeros(rx * layer.input_len())?, y: dev.zeros(ry * layer.output_len())? });
        }
        Ok(())
    }

    /// The backward pass of the convolution this is the weight of, from
    /// its input `x` and its raw output gradient `dy` over `batch` samples:
    /// the weight's gradient (overwritten); with `sample`, when sampling is
    /// on, the sampled rows of `x` and `dy`; and with `dx` the input's
    /// gradient (written, or added to when its flag is set). An error when
    /// this is not a convolution's weight.
    pub(crate) fn conv_backward(&mut self, dev: &D, batch: usize, sample: Option<SampledRows<'_>>, x: &D::Buffer, dy: &D::Buffer, dx: Option<(&mut D::Buffer, bool)>) -> Result<()> {
        let conv = self.conv.ok_or_else(|| Error::new(format!("{}: not a convolution's weight", self.name)))?;
        let shape = ConvShape { conv, batch };
        dev.conv_backward_weight(shape, x, dy, &mut self.grad)?;
        if let (Some(idx), Some(s)) = (sample, self.sampled.as_mut()) {
            let layer = frog_core::Layer::conv2d(conv, false);
            dev.gather(layer.input_len(), idx.x, x, &mut s.x)?;
            dev.gather(layer.output_len(), idx.y, dy, &mut s.y)?;
        }
        if let Some((dx, accumulate)) = dx {
            dev.conv_backward_data(shape, dy, &self.value, dx, accumulate)?;
        }
        Ok(())
    }

    /// Entries.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    /// Whether the parameter has no entries.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What every unit's backward pass of one batch shares.
struct Pass<'a, D> {
    dev: &'a D,
    batch: usize,
    /// The optimizer's sampled rows, gathered when given.
    sample: Option<SampledRows<'a>>,
}

/// A convolution, its BatchNorm, and an optional ReLU after the BatchNorm
/// (and after the residual add, in a block's second unit).
struct ConvBn<D: Device> {
    conv: Conv2d,
    relu: bool,
    bn_name: String,
    /// Parameter indices: conv weight, BN weight, BN bias (= gamma + 1).
    w: usize,
    gamma: usize,
    running: BnRunning<D::Buffer>,
    saved: BnSaved<D::Buffer>,
    /// Convolution output (BatchNorm input).
    z: D::Buffer,
    /// Unit output.
    out: D::Buffer,
    /// Gradient of the loss with respect to `out`.
    grad: D::Buffer,
}

impl<D: Device> ConvBn<D> {
    fn shape(&self, batch: usize) -> BnShape {
        let [ho, wo] = self.conv.output_hw().expect("validated at build");
        BnShape { batch, channels: self.conv.c_out, hw: ho * wo }
    }

    fn forward(&mut self, dev: &D, params: &[Param<D>], x: &D::Buffer, batch: usize, residual: Option<&D::Buffer>, train: bool) -> Result<()> {
        dev.conv_forward(ConvShape { conv: self.conv, batch }, x, &params[self.w].value, &mut self.z)?;
        let shape = self.shape(batch);
        let bn = BnParams { weight: &params[self.gamma].value, bias: &params[self.gamma + 1].value, eps: BN_EPS };
        let epi = Epilogue { residual, relu: self.relu };
        if train {
            let running = BnRunning { mean: &mut self.running.mean, var: &mut self.running.var };
            let saved = BnSaved { mean: &mut self.saved.mean, invstd: &mut self.saved.invstd };
            dev.bn_train(shape, &self.z, bn, BnTrainStats { running, momentum: BN_MOMENTUM, saved }, epi, &mut self.out)
        } else {
            dev.bn_eval(shape, &self.z, bn, BnRunning { mean: &self.running.mean, var: &self.running.var }, epi, &mut self.out)
        }
    }

    /// Backward from `self.grad` (masked in place by the ReLU) to the
    /// parameters, the sampled rows, and `dx` (written, or added to when
    /// its flag is set). `dz` is scratch of the convolution output's size.
    fn backward(&mut self, pass: &Pass<'_, D>, params: &mut [Param<D>], x: &D::Buffer, dx: Option<(&mut D::Buffer, bool)>, dz: &mut D::Buffer) -> Result<()> {
        let (dev, batch) = (pass.dev, pass.batch);
        let shape = self.shape(batch);
        let (head, tail) = params.split_at_mut(self.gamma + 1);
        let gamma = &mut head[self.gamma];
        let relu_out = self.relu.then_some(&self.out);
        let saved = BnSaved { mean: &self.saved.mean, invstd: &self.saved.invstd };
        let grads = BnGrads { dy: &mut self.grad, dx: &mut *dz, dweight: &mut gamma.grad, dbias: &mut tail[0].grad };
        dev.bn_backward(shape, &self.z, saved, &gamma.value, relu_out, grads)?;
        params[self.w].conv_backward(dev, batch, pass.sample, x, dz, dx)
    }
}

/// A ResNet BasicBlock: `relu(bn2(conv2(relu(bn1(conv1 x)))) + shortcut(x))`.
struct Block<D: Device> {
    c1: ConvBn<D>,
    c2: ConvBn<D>,
    shortcut: Option<ConvBn<D>>,
}

enum Stage<D: Device> {
    Plain(ConvBn<D>),
    Block(Box<Block<D>>),
}

impl<D: Device> Stage<D> {
    fn last(&self) -> &ConvBn<D> {
        match self {
            Self::Plain(u) => u,
            Self::Block(b) => &b.c2,
        }
    }

    /// Its conv-BN units, in parameter order.
    fn units(&mut self) -> Vec<&mut ConvBn<D>> {
        match self {
            Self::Plain(u) => vec![u],
            Self::Block(b) => [Some(&mut b.c1), Some(&mut b.c2), b.shortcut.as_mut()].into_iter().flatten().collect(),
        }
    }

    /// The stage's output and the gradient buffer of that output.
    fn out_and_grad(&mut self) -> (&D::Buffer, &mut D::Buffer) {
        let u = match self {
            Self::Plain(u) => u,
            Self::Block(b) => &mut b.c2,
        };
        (&u.out, &mut u.grad)
    }

    fn forward(&mut self, dev: &D, params: &[Param<D>], x: &D::Buffer, batch: usize, train: bool) -> Result<()> {
        match self {
            Self::Plain(u) => u.forward(dev, params, x, batch, None, train),
            Self::Block(b) => {
                b.c1.forward(dev, params, x, batch, None, train)?;
                let residual = match &mut b.shortcut {
                    Some(sc) => {
                        sc.forward(dev, params, x, batch, None, train)?;
                        &sc.out
                    }
                    None => x,
                };
                b.c2.forward(dev, params, &b.c1.out, batch, Some(residual), train)
            }
        }
    }

    fn backward(&mut self, pass: &Pass<'_, D>, params: &mut [Param<D>], x: &D::Buffer, mut dx: Option<&mut D::Buffer>, dz: &mut D::Buffer) -> Result<()> {
        let b = match self {
            Self::Plain(u) => return u.backward(pass, params, x, dx.map(|d| (d, false)), dz),
            Self::Block(b) => b,
        };
        b.c2.backward(pass, params, &b.c1.out, Some((&mut b.c1.grad, false)), dz)?;
        // b.c2.grad is now the masked gradient of the block output, which
        // is also the gradient of the shortcut's output.
        let n = b.c2.shape(pass.batch).len();
        if let Some(sc) = &mut b.shortcut {
            pass.dev.axpby(n, 1.0, &b.c2.grad, 0.0, &mut sc.grad)?;
            sc.backward(pass, params, x, dx.as_deref_mut().map(|d| (d, false)), dz)?;
        } else if let Some(d) = dx.as_deref_mut() {
            pass.dev.axpby(n, 1.0, &b.c2.grad, 0.0, d)?;
        }
        // dx now holds the shortcut branch's gradient; add the main branch's.
        b.c1.backward(pass, params, x, dx.map(|d| (d, true)), dz)
    }
}

/// A network on a device, ready to train with batches of up to `capacity`.
pub struct Net<D: Device> {
    /// The architecture.
    pub arch: Arch,
    /// The largest batch the buffers hold.
    pub capacity: usize,
    /// Parameters in PyTorch's `model.parameters()` order.
    pub params: Vec<Param<D>>,
    stages: Vec<Stage<D>>,
    /// Training forward passes so far (BatchNorm's `num_batches_tracked`).
    pub batches_tracked: u64,
    pooled: D::Buffer,
    dpooled: D::Buffer,
    logits: D::Buffer,
    dlogits: D::Buffer,
    /// Scratch of [`Net::scale_loss_gradient`].
    dlogits_scaled: D::Buffer,
    /// Scratch for a convolution output's gradient.
    dz: D::Buffer,
    fc: usize,
}

/// PyTorch's default initialization bound for a weight with `fan_in`
/// inputs: `kaiming_uniform_(a=sqrt(5))` gives `1/sqrt(fan_in)`, as does
/// the linear bias.
pub(crate) fn init_bound(fan_in: usize) -> f64 {
    1.0 / (fan_in as f64).sqrt()
}

/// `n` draws of `U(-bound, bound)` from `rng`, PyTorch's default
/// initialization at [`init_bound`] (in `f64`, rounded by the caller).
pub(crate) fn uniform_init(rng: &mut Xoshiro256PlusPlus, n: usize, bound: f64) -> Vec<f64> {
    (0..n).map(|_| (2.0 * crate::rand::uniform(rng) - 1.0) * bound).collect()
}

struct Builder<'a, D: Device> {
    dev: &'a D,
    rng: Xoshiro256PlusPlus,
    capacity: usize,
    params: Vec<Param<D>>,
    max_act: usize,
}

impl<D: Device> Builder<'_, D> {
    fn uniform(&mut self, n: usize, bound: f64) -> Vec<D::Scalar> {
        uniform_init(&mut self.rng, n, bound).into_iter().map(D::Scalar::of_f64).collect()
    }

    fn param(&mut self, name: String, shape: Vec<usize>, init: &[D::Scalar], conv: Option<Conv2d>) -> Result<usize> {
        self.params.push(Param::new(self.dev, name, shape, init, conv)?);
        Ok(self.params.len() - 1)
    }

    fn conv_bn(&mut self, conv: Conv2d, relu: bool, conv_name: String, bn_name: String) -> Result<ConvBn<D>> {
        conv.output_hw().ok_or_else(|| Error::new(format!("{conv_name}: the kernel does not fit the input")))?;
        let fan_in = conv.c_in * conv.kernel[0] * conv.kernel[1];
        let c = conv.c_out;
        let w_init = self.uniform(c * fan_in, init_bound(fan_in));
        let shape = vec![c, conv.c_in, conv.kernel[0], conv.kernel[1]];
        let w = self.param(format!("{conv_name}.weight"), shape, &w_init, Some(conv))?;
        let one = D::Scalar::of_f64(1.0);
        let gamma = self.param(format!("{bn_name}.weight"), vec![c], &vec![one; c], None)?;
        self.param(format!("{bn_name}.bias"), vec![c], &vec![D::Scalar::of_f64(0.0); c], None)?;
        let [ho, wo] = conv.output_hw().expect("checked above");
        let act = self.capacity * c * ho * wo;
        self.max_act = self.max_act.max(act);
        let mut running_var = self.dev.zeros(c)?;
        self.dev.upload(&vec![one; c], &mut running_var)?;
        let dev = self.dev;
        Ok(ConvBn {
            conv,
            relu,
            bn_name,
            w,
            gamma,
            running: BnRunning { mean: dev.zeros(c)?, var: running_var },
            saved: BnSaved { mean: dev.zeros(c)?, invstd: dev.zeros(c)? },
            z: dev.zeros(act)?,
            out: dev.zeros(act)?,
            grad: dev.zeros(act)?,
        })
    }
}

impl<D: Device> Net<D> {
    /// Builds `arch` on `dev` for batches of up to `capacity`, initialized
    /// as PyTorch does by default, from `seed`.
    pub fn new(dev: &D, arch: &Arch, capacity: usize, seed: u64) -> Result<Self> {
        if capacity == 0 {
            return Err(Error::new("the batch capacity must be at least 1"));
        }
        let mut b = Builder { dev, rng: Xoshiro256PlusPlus::seed_from_u64(seed), capacity, params: Vec::new(), max_act: 0 };
        let (mut c_in, mut hw) = (arch.in_channels, arch.input_hw);
        let mut stages = Vec::new();
        for spec in &arch.stages {
            let conv3 = |c_in, c_out, stride, hw| Conv2d::new(c_in, c_out, 3, hw).stride(stride).padding(1);
            let stage = match spec {
                StageSpec::Plain { conv, bn, c_out, stride } => {
                    Stage::Plain(b.conv_bn(conv3(c_in, *c_out, *stride, hw), true, conv.clone(), bn.clone())?)
                }
                StageSpec::Block { prefix, c_out, stride } => {
                    let c1 = b.conv_bn(conv3(c_in, *c_out, *stride, hw), true, format!("{prefix}.conv1"), format!("{prefix}.bn1"))?;
                    let mid = c1.conv.output_hw().expect("checked");
                    let c2 = b.conv_bn(conv3(*c_out, *c_out, 1, mid), true, format!("{prefix}.conv2"), format!("{prefix}.bn2"))?;
                    let shortcut = if *stride != 1 || c_in != *c_out {
                        let conv = Conv2d::new(c_in, *c_out, 1, hw).stride(*stride);
                        Some(b.conv_bn(conv, false, format!("{prefix}.shortcut.0"), format!("{prefix}.shortcut.1"))?)
                    } else {
                        None
                    };
                    Stage::Block(Box::new(Block { c1, c2, shortcut }))
                }
            };
            let last = stage.last().conv;
            c_in = last.c_out;
            hw = last.output_hw().expect("checked");
            stages.push(stage);
        }
        let bound = init_bound(c_in);
        let (w, bias) = (b.uniform(arch.classes * c_in, bound), b.uniform(arch.classes, bound));
        let fc = b.param(format!("{}.weight", arch.head), vec![arch.classes, c_in], &w, None)?;
        b.param(format!("{}.bias", arch.head), vec![arch.classes], &bias, None)?;
        Ok(Self {
            arch: arch.clone(),
            capacity,
            pooled: dev.zeros(capacity * c_in)?,
            dpooled: dev.zeros(capacity * c_in)?,
            logits: dev.zeros(capacity * arch.classes)?,
            dlogits: dev.zeros(capacity * arch.classes)?,
            dlogits_scaled: dev.zeros(capacity * arch.classes)?,
            dz: dev.zeros(b.max_act)?,
            params: b.params,
            stages,
            batches_tracked: 0,
            fc,
        })
    }

    /// Allocates the sampled rows of every convolution: `rx` samples' inputs
    /// and `ry` samples' output gradients (FROG: `rx = ry`).
    pub fn enable_sampling(&mut self, dev: &D, rx: usize, ry: usize) -> Result<()> {
        self.params.iter_mut().try_for_each(|p| p.enable_sampling(dev, rx, ry))
    }

    fn check_batch(&self, batch: usize) -> Result<()> {
        if batch == 0 || batch > self.capacity {
            return Err(Error::new(format!("batch of {batch} samples; this network holds 1 to {}", self.capacity)));
        }
        Ok(())
    }

    fn head_shape(&self, batch: usize) -> (LinearShape, usize) {
        let last = self.stages.last().expect("a network has stages").last();
        let [ho, wo] = last.conv.output_hw().expect("checked");
        (LinearShape { batch, d_in: last.conv.c_out, d_out: self.arch.classes }, ho * wo)
    }

    /// Forward pass of `batch` samples `x` (`[B, C, H, W]`) to the logits,
    /// in train mode (batch statistics) or eval mode (running statistics).
    pub fn forward(&mut self, dev: &D, x: &D::Buffer, batch: usize, train: bool) -> Result<()> {
        self.check_batch(batch)?;
        for i in 0..self.stages.len() {
            let (before, rest) = self.stages.split_at_mut(i);
            let input = before.last().map_or(x, |s| &s.last().out);
            rest[0].forward(dev, &self.params, input, batch, train)?;
        }
        if train {
            self.batches_tracked += 1;
        }
        let (s, hw) = self.head_shape(batch);
        let last = &self.stages.last().expect("a network has stages").last().out;
        dev.avg_pool(batch * s.d_in, hw, last, &mut self.pooled)?;
        let (w, b) = (&self.params[self.fc].value, &self.params[self.fc + 1].value);
        dev.linear_forward(s, &self.pooled, w, Some(b), &mut self.logits)
    }

    /// The logits of the last forward pass.
    pub fn logits(&self) -> &D::Buffer {
        &self.logits
    }

    /// Loss and accuracy of the last forward pass against `labels`; also
    /// leaves the loss gradient for [`Net::backward`].
    pub fn loss(&mut self, dev: &D, batch: usize, labels: &D::Labels) -> Result<LossStats> {
        dev.cross_entropy(batch, self.arch.classes, CrossEntropyLoss::default(), &self.logits, labels, &mut self.dlogits)
    }

    /// Multiplies the loss gradient [`Net::loss`] left by `factor` (a rank's
    /// `b_k / B` in a data-parallel step, which turns the gradient of its
    /// shard's mean loss into its part of the global batch's), so that the
    /// backward pass's gradients and sampled output gradients come scaled.
    pub fn scale_loss_gradient(&mut self, dev: &D, batch: usize, factor: f64) -> Result<()> {
        self.check_batch(batch)?;
        dev.axpby(batch * self.arch.classes, factor, &self.dlogits, 0.0, &mut self.dlogits_scaled)?;
        std::mem::swap(&mut self.dlogits, &mut self.dlogits_scaled);
        Ok(())
    }

    /// Backward pass after [`Net::forward`] (train mode) and [`Net::loss`]:
    /// every parameter's gradient, and with `sample` the optimizer's
    /// sampled rows of every convolution.
    pub fn backward(&mut self, dev: &D, x: &D::Buffer, batch: usize, sample: Option<SampledRows<'_>>) -> Result<()> {
        self.check_batch(batch)?;
        let (s, hw) = self.head_shape(batch);
        let (head, tail) = self.params.split_at_mut(self.fc + 1);
        let fcw = &mut head[self.fc];
        let grads = LinearGrads { dx: &mut self.dpooled, dw: &mut fcw.grad, db: Some(&mut tail[0].grad) };
        dev.linear_backward(s, &self.pooled, &fcw.value, &self.dlogits, grads)?;
        let (_, last_grad) = self.stages.last_mut().expect("a network has stages").out_and_grad();
        dev.avg_pool_backward(batch * s.d_in, hw, &self.dpooled, last_grad)?;
        let pass = Pass { dev, batch, sample };
        for i in (0..self.stages.len()).rev() {
            let (before, rest) = self.stages.split_at_mut(i);
            let (input, dx) = match before.last_mut() {
                Some(prev) => {
                    let (out, grad) = prev.out_and_grad();
                    (out, Some(grad))
                }
                None => (x, None),
            };
            rest[0].backward(&pass, &mut self.params, input, dx, &mut self.dz)?;
        }
        Ok(())
    }

    /// The BatchNorm running statistics, named as PyTorch's buffers:
    /// `(name, running_mean or running_var)`.
    pub fn buffers_mut(&mut self) -> Vec<(String, &mut D::Buffer)> {
        let mut out = Vec::new();
        for s in &mut self.stages {
            for u in s.units() {
                out.push((format!("{}.running_mean", u.bn_name), &mut u.running.mean));
                out.push((format!("{}.running_var", u.bn_name), &mut u.running.var));
            }
        }
        out
    }

    /// Multiply-adds of one forward pass per sample (for throughput reports).
    pub fn forward_macs(&self) -> f64 {
        let convs = self.params.iter().filter_map(|p| p.conv);
        let conv: f64 = convs
            .map(|c| {
                let [ho, wo] = c.output_hw().expect("checked");
                (c.c_out * c.c_in * c.kernel[0] * c.kernel[1] * ho * wo) as f64
            })
            .sum();
        conv + self.params[self.fc].len() as f64
    }
}
