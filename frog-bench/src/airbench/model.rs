//! The airbench94_muon network on a [`Device`]: a frozen 2x2 whitening
//! convolution (with a trained bias) and GELU, three blocks of (3x3 conv,
//! 2x2 max-pool, BatchNorm, GELU, 3x3 conv, BatchNorm, GELU), a 3x3
//! max-pool and a bias-free linear head whose logits are divided by the
//! last width. The spatial sizes are 32 -> 31 -> 15 -> 7 -> 3 -> 1.
//!
//! Every buffer is allocated once for the largest batch (`capacity`). The
//! forward pass keeps only what the backward pass reads: each max-pool's
//! argmax (not the convolution output it pooled, four times larger), each
//! BatchNorm's and GELU's input, each convolution's input. The first
//! convolution of a block, the largest output of the network (block 1's:
//! `64 x 31 x 31` per image, 123M entries at batch 2000), goes to one
//! scratch buffer shared by the blocks, which the backward pass reuses for
//! its gradient; the other gradients pass between two more scratch
//! buffers.
//!
//! Parameters are named and ordered as the reference's
//! `model.named_parameters()`, frozen ones included; each has a [`Role`]
//! that says how the recipe trains it.

use frog_core::{Conv2d, Scalar};
use rand_xoshiro::rand_core::SeedableRng;
use rand_xoshiro::Xoshiro256PlusPlus;

use super::whiten;
use crate::device::{BnGrads, BnParams, BnRunning, BnSaved, BnShape, BnTrainStats, ConvShape, CrossEntropyLoss, Device, Epilogue, LinearGrads, LinearShape, LossStats, PoolShape, Reduction};
use crate::error::{Error, Result};
use crate::model::{init_bound, uniform_init, Param, SampledRows};

/// The record's block widths.
pub const WIDTHS: [usize; 3] = [64, 256, 256];
/// CIFAR-10's classes.
pub const CLASSES: usize = 10;
/// BatchNorm's `eps`: so small that a channel is normalized by its
/// variance alone.
pub const BN_EPS: f64 = 1e-12;
/// BatchNorm's running-statistics momentum in PyTorch's convention (the
/// weight of the batch's statistic): the reference's `momentum=0.6`
/// keeps 0.6 of the old value. The statistics follow the last few batches,
/// which the short run needs.
pub const BN_MOMENTUM: f64 = 0.4;
/// The recipe's loss: cross-entropy with label smoothing 0.2, summed over
/// the batch (the learning rates are sized for a sum).
pub const LOSS: CrossEntropyLoss = CrossEntropyLoss { label_smoothing: 0.2, reduction: Reduction::Sum };

/// Side of the input images.
const SIDE: usize = 32;
/// Side of the whitening filters.
const WHITEN_KERNEL: usize = 2;
/// The blocks' pooling window.
const BLOCK_POOL: usize = 2;
/// The last pooling window (3 -> 1).
const HEAD_POOL: usize = 3;
/// Index of `whiten.weight`; `whiten.bias` follows.
const WHITEN: usize = 0;

/// What the recipe does with a parameter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Never trained: the whitening weight (set from the data) and the
    /// BatchNorm weights (fixed at 1).
    Frozen,
    /// The whitening convolution's bias: trained for the first epochs only.
    WhitenBias,
    /// A BatchNorm bias.
    NormBias,
    /// A 3x3 convolution's filters, the six weights the filter method
    /// (Muon, FROG, SGD) steps.
    Filter,
    /// The linear head's weight.
    Head,
}

/// A BatchNorm's running statistics and the batch statistics its
/// backward pass reads.
struct Bn<D: Device> {
    running: BnRunning<D::Buffer>,
    saved: BnSaved<D::Buffer>,
}

impl<D: Device> Bn<D> {
    fn new(dev: &D, channels: usize) -> Result<Self> {
        let mut var = dev.zeros(channels)?;
        dev.upload(&vec![D::Scalar::of_f64(1.0); channels], &mut var)?;
        Ok(Self { running: BnRunning { mean: dev.zeros(channels)?, var }, saved: BnSaved { mean: dev.zeros(channels)?, invstd: dev.zeros(channels)? } })
    }

    /// `y = BN(x)` with the weight and bias `wb[0]`, `wb[1]`: the batch's
    /// statistics (saved, and the running ones updated) in train mode, the
    /// running ones in eval mode.
    fn forward(&mut self, dev: &D, shape: BnShape, x: &D::Buffer, wb: &[Param<D>], train: bool, y: &mut D::Buffer) -> Result<()> {
        let params = BnParams { weight: &wb[0].value, bias: &wb[1].value, eps: BN_EPS };
        let epi = Epilogue { residual: None, relu: false };
        if train {
            let running = BnRunning { mean: &mut self.running.mean, var: &mut self.running.var };
            let saved = BnSaved { mean: &mut self.saved.mean, invstd: &mut self.saved.invstd };
            dev.bn_train(shape, x, params, BnTrainStats { running, momentum: BN_MOMENTUM, saved }, epi, y)
        } else {
            dev.bn_eval(shape, x, params, BnRunning { mean: &self.running.mean, var: &self.running.var }, epi, y)
        }
    }

    /// Backward of a train-mode [`Bn::forward`] of `x`: from `dy` to `dx`
    /// and the gradients of `wb[0]`, `wb[1]`.
    fn backward(&self, dev: &D, shape: BnShape, x: &D::Buffer, wb: &mut [Param<D>], dy: &mut D::Buffer, dx: &mut D::Buffer) -> Result<()> {
        let (weight, bias) = wb.split_at_mut(1);
        let (weight, bias) = (&mut weight[0], &mut bias[0]);
        let saved = BnSaved { mean: &self.saved.mean, invstd: &self.saved.invstd };
        dev.bn_backward(shape, x, saved, &weight.value, None, BnGrads { dy, dx, dweight: &mut weight.grad, dbias: &mut bias.grad })
    }
}

/// One of the three blocks, and what its backward pass reads.
struct Block<D: Device> {
    /// `c_in -> c` at the input's side, same padding.
    conv1: Conv2d,
    /// `c -> c` at half the side.
    conv2: Conv2d,
    /// Index of `conv1.weight`; `norm1.weight`, `norm1.bias`,
    /// `conv2.weight`, `norm2.weight` and `norm2.bias` follow.
    at: usize,
    bn1: Bn<D>,
    bn2: Bn<D>,
    /// Which entry of its window each pooled output took.
    argmax: D::Buffer,
    /// The pooled `conv1` output (BatchNorm 1's input).
    pooled: D::Buffer,
    /// BatchNorm 1's output (GELU's input).
    n1: D::Buffer,
    /// The GELU's output (`conv2`'s input).
    g1: D::Buffer,
    /// `conv2`'s output (BatchNorm 2's input).
    z2: D::Buffer,
    /// BatchNorm 2's output (GELU's input).
    n2: D::Buffer,
    /// The block's output.
    out: D::Buffer,
}

impl<D: Device> Block<D> {
    fn pool(&self, batch: usize) -> PoolShape {
        PoolShape { planes: batch * self.conv1.c_out, input_hw: self.conv1.input_hw, kernel: BLOCK_POOL }
    }

    /// The layout of everything after the pool.
    fn shape(&self, batch: usize) -> BnShape {
        let [h, w] = self.conv2.input_hw;
        BnShape { batch, channels: self.conv2.c_out, hw: h * w }
    }

    /// The block on `input`, `conv1`'s output in `wide` (scratch).
    fn forward(&mut self, dev: &D, params: &[Param<D>], input: &D::Buffer, batch: usize, train: bool, wide: &mut D::Buffer) -> Result<()> {
        let shape = self.shape(batch);
        dev.conv_forward(ConvShape { conv: self.conv1, batch }, input, &params[self.at].value, wide)?;
        dev.max_pool(self.pool(batch), wide, &mut self.pooled, &mut self.argmax)?;
        self.bn1.forward(dev, shape, &self.pooled, &params[self.at + 1..], train, &mut self.n1)?;
        dev.gelu(shape.len(), &self.n1, &mut self.g1)?;
        dev.conv_forward(ConvShape { conv: self.conv2, batch }, &self.g1, &params[self.at + 3].value, &mut self.z2)?;
        self.bn2.forward(dev, shape, &self.z2, &params[self.at + 4..], train, &mut self.n2)?;
        dev.gelu(shape.len(), &self.n2, &mut self.out)
    }

    /// Backward from the output's gradient in `grads[0]` to the block's
    /// parameters and, with `input_grad`, the input's gradient in
    /// `grads[0]`; `grads[1]` and `wide` are scratch.
    #[allow(clippy::too_many_arguments)]
    fn backward(
        &self,
        dev: &D,
        params: &mut [Param<D>],
        input: &D::Buffer,
        batch: usize,
        sample: Option<SampledRows<'_>>,
        [ga, gb]: [&mut D::Buffer; 2],
        wide: &mut D::Buffer,
        input_grad: bool,
    ) -> Result<()> {
        let shape = self.shape(batch);
        dev.gelu_backward(shape.len(), &self.n2, ga, gb)?;
        self.bn2.backward(dev, shape, &self.z2, &mut params[self.at + 4..], gb, ga)?;
        params[self.at + 3].conv_backward(dev, batch, sample, &self.g1, ga, Some((&mut *gb, false)))?;
        dev.gelu_backward(shape.len(), &self.n1, gb, ga)?;
        self.bn1.backward(dev, shape, &self.pooled, &mut params[self.at + 1..], ga, gb)?;
        dev.max_pool_backward(self.pool(batch), gb, &self.argmax, wide)?;
        params[self.at].conv_backward(dev, batch, sample, input, wide, input_grad.then_some((ga, false)))
    }
}

/// The airbench94_muon network on a device, for batches of up to
/// `capacity` images `[3, 32, 32]`.
pub struct AirbenchNet<D: Device> {
    /// The blocks' widths.
    pub widths: [usize; 3],
    /// The largest batch the buffers hold.
    pub capacity: usize,
    /// Parameters in the reference's `named_parameters()` order.
    pub params: Vec<Param<D>>,
    roles: Vec<Role>,
    whiten: Conv2d,
    blocks: Vec<Block<D>>,
    /// The whitening convolution's output with its bias (GELU's input).
    w0: D::Buffer,
    /// Its GELU (block 1's input).
    g0: D::Buffer,
    /// Each block's `conv1` output, then its gradient.
    wide: D::Buffer,
    /// The backward pass's gradients, passed between the two.
    ga: D::Buffer,
    gb: D::Buffer,
    /// The last pool's argmax.
    head_argmax: D::Buffer,
    /// The pooled features (the head's input) and their gradient.
    features: D::Buffer,
    dfeatures: D::Buffer,
    /// The head's output before the division, then its gradient.
    head_out: D::Buffer,
    logits: D::Buffer,
    dlogits: D::Buffer,
}

/// `c_out` filters of `c_in x 3 x 3` drawn as PyTorch's default, then the
/// first `min(c_out, c_in)` replaced by the identity (torch's `dirac_`:
/// filter `i` is 1 at the centre of its channel `i`, 0 elsewhere), so that
/// a block starts close to passing its input through.
fn filter_init(rng: &mut Xoshiro256PlusPlus, c_out: usize, c_in: usize) -> Vec<f64> {
    let per = c_in * 9;
    let mut w = uniform_init(rng, c_out * per, init_bound(per));
    for (i, f) in w.chunks_exact_mut(per).take(c_in).enumerate() {
        f.fill(0.0);
        f[i * 9 + 4] = 1.0;
    }
    w
}

/// `v` scaled to unbiased standard deviation 1 (the reference's head:
/// `w *= 1 / w.std()`).
fn unit_std(v: &mut [f64]) {
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let std = (v.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / (n - 1.0)).sqrt();
    for x in v {
        *x /= std;
    }
}

/// Collects the parameters and their roles while the network is built.
struct Builder<'a, D: Device> {
    dev: &'a D,
    params: Vec<Param<D>>,
    roles: Vec<Role>,
}

impl<D: Device> Builder<'_, D> {
    fn push(&mut self, name: String, shape: Vec<usize>, init: &[f64], conv: Option<Conv2d>, role: Role) -> Result<()> {
        let init: Vec<D::Scalar> = init.iter().map(|&v| D::Scalar::of_f64(v)).collect();
        self.params.push(Param::new(self.dev, name, shape, &init, conv)?);
        self.roles.push(role);
        Ok(())
    }

    fn filter(&mut self, rng: &mut Xoshiro256PlusPlus, name: String, conv: Conv2d) -> Result<()> {
        let shape = vec![conv.c_out, conv.c_in, 3, 3];
        self.push(name, shape, &filter_init(rng, conv.c_out, conv.c_in), Some(conv), Role::Filter)
    }

    fn norm(&mut self, name: String, c: usize) -> Result<()> {
        self.push(format!("{name}.weight"), vec![c], &vec![1.0; c], None, Role::Frozen)?;
        self.push(format!("{name}.bias"), vec![c], &vec![0.0; c], None, Role::NormBias)
    }
}

impl<D: Device> AirbenchNet<D> {
    /// The network of block `widths` ([`WIDTHS`] for the record) on `dev`
    /// for batches of up to `capacity`, initialized as the reference's
    /// `reset()` from `seed`: PyTorch's default `U(+-1/sqrt(fan_in))` for
    /// every convolution, the whitening bias and the head; the identity
    /// on the first filters of every 3x3 convolution; the head scaled to
    /// standard deviation 1; BatchNorm weights 1, biases 0, running
    /// statistics 0 and 1. The whitening weight drawn here is a
    /// placeholder: [`AirbenchNet::set_whitening`] sets it from the data.
    /// An error when a width or `capacity` is 0.
    pub fn new(dev: &D, widths: [usize; 3], capacity: usize, seed: u64) -> Result<Self> {
        if capacity == 0 || widths.contains(&0) {
            return Err(Error::new(format!("airbench network: widths {widths:?} and batch capacity {capacity} must be at least 1")));
        }
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
        let mut b = Builder { dev, params: Vec::new(), roles: Vec::new() };
        let whiten = Conv2d::new(3, whiten::FILTERS, WHITEN_KERNEL, [SIDE, SIDE]);
        let bound = init_bound(whiten::PATCH);
        let (w, bias) = (uniform_init(&mut rng, whiten::FILTERS * whiten::PATCH, bound), uniform_init(&mut rng, whiten::FILTERS, bound));
        b.push("whiten.weight".into(), vec![whiten::FILTERS, 3, WHITEN_KERNEL, WHITEN_KERNEL], &w, Some(whiten), Role::Frozen)?;
        b.push("whiten.bias".into(), vec![whiten::FILTERS], &bias, None, Role::WhitenBias)?;
        let [side, _] = whiten.output_hw().expect("a 2x2 kernel fits 32x32");
        let (mut c_in, mut side) = (whiten::FILTERS, side);
        let (mut grad_len, mut wide_len) = (whiten::FILTERS * side * side, 0);
        let mut blocks = Vec::with_capacity(widths.len());
        for (i, &c) in widths.iter().enumerate() {
            let conv1 = Conv2d::new(c_in, c, 3, [side, side]).padding(1);
            let half = side / BLOCK_POOL;
            let conv2 = Conv2d::new(c, c, 3, [half, half]).padding(1);
            let name = format!("layers.{}", i + 1);
            let at = b.params.len();
            b.filter(&mut rng, format!("{name}.conv1.weight"), conv1)?;
            b.norm(format!("{name}.norm1"), c)?;
            b.filter(&mut rng, format!("{name}.conv2.weight"), conv2)?;
            b.norm(format!("{name}.norm2"), c)?;
            let act = capacity * c * half * half;
            let z = || dev.zeros(act);
            blocks.push(Block { conv1, conv2, at, bn1: Bn::new(dev, c)?, bn2: Bn::new(dev, c)?, argmax: z()?, pooled: z()?, n1: z()?, g1: z()?, z2: z()?, n2: z()?, out: z()? });
            grad_len = grad_len.max(c * half * half);
            wide_len = wide_len.max(c * side * side);
            (c_in, side) = (c, half);
        }
        debug_assert_eq!(side, HEAD_POOL, "the last pool takes the whole 3x3 plane");
        let mut head = uniform_init(&mut rng, CLASSES * c_in, init_bound(c_in));
        unit_std(&mut head);
        b.push("head.weight".into(), vec![CLASSES, c_in], &head, None, Role::Head)?;
        let z = |n: usize| dev.zeros(capacity * n);
        Ok(Self {
            widths,
            capacity,
            whiten,
            blocks,
            w0: z(whiten::FILTERS * (SIDE - 1) * (SIDE - 1))?,
            g0: z(whiten::FILTERS * (SIDE - 1) * (SIDE - 1))?,
            wide: z(wide_len)?,
            ga: z(grad_len)?,
            gb: z(grad_len)?,
            head_argmax: z(c_in)?,
            features: z(c_in)?,
            dfeatures: z(c_in)?,
            head_out: z(CLASSES)?,
            logits: z(CLASSES)?,
            dlogits: z(CLASSES)?,
            params: b.params,
            roles: b.roles,
        })
    }

    /// How the recipe trains each parameter, in [`AirbenchNet::params`]'
    /// order.
    pub fn roles(&self) -> &[Role] {
        &self.roles
    }

    /// Sets the frozen whitening weight (`[24, 3, 2, 2]`, as
    /// [`whiten::Whitening::weight`]). An error when `weight` has another
    /// length.
    pub fn set_whitening(&mut self, dev: &D, weight: &[f64]) -> Result<()> {
        let p = &mut self.params[WHITEN];
        if weight.len() != p.len() {
            return Err(Error::new(format!("whitening weight: {} values for {}", weight.len(), p.len())));
        }
        let host: Vec<D::Scalar> = weight.iter().map(|&v| D::Scalar::of_f64(v)).collect();
        dev.upload(&host, &mut p.value)
    }

    /// Allocates the sampled rows of the six filters: `rows` samples'
    /// inputs and output gradients, which FROG's step reads.
    pub fn enable_sampling(&mut self, dev: &D, rows: usize) -> Result<()> {
        let mut filters = self.params.iter_mut().zip(&self.roles).filter(|(_, &r)| r == Role::Filter);
        filters.try_for_each(|(p, _)| p.enable_sampling(dev, rows, rows))
    }

    fn check_batch(&self, batch: usize) -> Result<()> {
        if batch == 0 || batch > self.capacity {
            return Err(Error::new(format!("batch of {batch} images; this network holds 1 to {}", self.capacity)));
        }
        Ok(())
    }

    fn whiten_shape(&self, batch: usize) -> BnShape {
        let [h, w] = self.whiten.output_hw().expect("checked at build");
        BnShape { batch, channels: self.whiten.c_out, hw: h * w }
    }

    fn head_pool(&self, batch: usize) -> PoolShape {
        PoolShape { planes: batch * self.widths[2], input_hw: [HEAD_POOL; 2], kernel: HEAD_POOL }
    }

    fn head_shape(&self, batch: usize) -> LinearShape {
        LinearShape { batch, d_in: self.widths[2], d_out: CLASSES }
    }

    /// Forward pass of `batch` images `x` (`[B, 3, 32, 32]`, normalized)
    /// to the logits: train mode (batch statistics, running ones updated)
    /// or eval mode (running statistics).
    pub fn forward(&mut self, dev: &D, x: &D::Buffer, batch: usize, train: bool) -> Result<()> {
        self.check_batch(batch)?;
        let shape = self.whiten_shape(batch);
        dev.conv_forward(ConvShape { conv: self.whiten, batch }, x, &self.params[WHITEN].value, &mut self.w0)?;
        dev.add_channel_bias(shape, &self.params[WHITEN + 1].value, &mut self.w0)?;
        dev.gelu(shape.len(), &self.w0, &mut self.g0)?;
        for i in 0..self.blocks.len() {
            let (before, rest) = self.blocks.split_at_mut(i);
            let input = before.last().map_or(&self.g0, |b| &b.out);
            rest[0].forward(dev, &self.params, input, batch, train, &mut self.wide)?;
        }
        let last = &self.blocks.last().expect("three blocks").out;
        dev.max_pool(self.head_pool(batch), last, &mut self.features, &mut self.head_argmax)?;
        let head = &self.params[self.params.len() - 1];
        dev.linear_forward(self.head_shape(batch), &self.features, &head.value, None, &mut self.head_out)?;
        dev.axpby(batch * CLASSES, 1.0 / self.widths[2] as f64, &self.head_out, 0.0, &mut self.logits)
    }

    /// The logits of the last forward pass.
    pub fn logits(&self) -> &D::Buffer {
        &self.logits
    }

    /// The recipe's loss ([`LOSS`], summed) of the last forward pass
    /// against `labels`, and the number of right predictions; also leaves
    /// the loss gradient for [`AirbenchNet::backward`].
    pub fn loss(&mut self, dev: &D, batch: usize, labels: &D::Labels) -> Result<LossStats> {
        dev.cross_entropy(batch, CLASSES, LOSS, &self.logits, labels, &mut self.dlogits)
    }

    /// Backward pass after a train-mode [`AirbenchNet::forward`] and
    /// [`AirbenchNet::loss`] of the same batch: the gradient of every
    /// parameter the recipe trains, and with `sample` (when sampling is
    /// on) the sampled rows of the six filters. The whitening bias's
    /// gradient only with `whiten_bias` (the epochs it trains): without
    /// it the pass stops at block 1's first convolution, whose input
    /// gradient is its most expensive product. The frozen parameters'
    /// gradients are not meaningful.
    pub fn backward(&mut self, dev: &D, batch: usize, sample: Option<SampledRows<'_>>, whiten_bias: bool) -> Result<()> {
        self.check_batch(batch)?;
        dev.axpby(batch * CLASSES, 1.0 / self.widths[2] as f64, &self.dlogits, 0.0, &mut self.head_out)?;
        let (shape, pool) = (self.head_shape(batch), self.head_pool(batch));
        let head = self.params.last_mut().expect("the head");
        dev.linear_backward(shape, &self.features, &head.value, &self.head_out, LinearGrads { dx: &mut self.dfeatures, dw: &mut head.grad, db: None })?;
        dev.max_pool_backward(pool, &self.dfeatures, &self.head_argmax, &mut self.ga)?;
        for i in (0..self.blocks.len()).rev() {
            let (before, rest) = self.blocks.split_at(i);
            let input = before.last().map_or(&self.g0, |b| &b.out);
            rest[0].backward(dev, &mut self.params, input, batch, sample, [&mut self.ga, &mut self.gb], &mut self.wide, i > 0 || whiten_bias)?;
        }
        if whiten_bias {
            let shape = self.whiten_shape(batch);
            dev.gelu_backward(shape.len(), &self.w0, &self.ga, &mut self.gb)?;
            dev.channel_bias_backward(shape, &self.gb, &mut self.params[WHITEN + 1].grad)?;
        }
        Ok(())
    }

    /// The BatchNorm running statistics, named as the reference's
    /// `named_buffers()` (`num_batches_tracked` aside, which the recipe
    /// never reads).
    pub fn buffers_mut(&mut self) -> Vec<(String, &mut D::Buffer)> {
        let mut out = Vec::with_capacity(4 * self.blocks.len());
        for (i, b) in self.blocks.iter_mut().enumerate() {
            for (norm, bn) in [("norm1", &mut b.bn1), ("norm2", &mut b.bn2)] {
                out.push((format!("layers.{}.{norm}.running_mean", i + 1), &mut bn.running.mean));
                out.push((format!("layers.{}.{norm}.running_var", i + 1), &mut bn.running.var));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::cpu::CpuDevice;

    fn values(dev: &CpuDevice<f64>, p: &Param<CpuDevice<f64>>) -> Vec<f64> {
        let mut v = vec![0.0; p.len()];
        dev.download(&p.value, &mut v).unwrap();
        v
    }

    /// The reference's names, shapes and roles, in its order.
    #[test]
    fn parameters_are_the_references() {
        let dev = CpuDevice::<f64>::new(1).unwrap();
        let net = AirbenchNet::new(&dev, [8, 16, 12], 2, 0).unwrap();
        let got: Vec<(&str, &[usize], Role)> = net.params.iter().zip(net.roles()).map(|(p, &r)| (p.name.as_str(), &p.shape[..], r)).collect();
        let mut want: Vec<(String, Vec<usize>, Role)> = vec![("whiten.weight".into(), vec![24, 3, 2, 2], Role::Frozen), ("whiten.bias".into(), vec![24], Role::WhitenBias)];
        for (i, (c_in, c)) in [(24, 8), (8, 16), (16, 12)].into_iter().enumerate() {
            let l = format!("layers.{}", i + 1);
            want.push((format!("{l}.conv1.weight"), vec![c, c_in, 3, 3], Role::Filter));
            want.push((format!("{l}.norm1.weight"), vec![c], Role::Frozen));
            want.push((format!("{l}.norm1.bias"), vec![c], Role::NormBias));
            want.push((format!("{l}.conv2.weight"), vec![c, c, 3, 3], Role::Filter));
            want.push((format!("{l}.norm2.weight"), vec![c], Role::Frozen));
            want.push((format!("{l}.norm2.bias"), vec![c], Role::NormBias));
        }
        want.push(("head.weight".into(), vec![10, 12], Role::Head));
        let want: Vec<(&str, &[usize], Role)> = want.iter().map(|(n, s, r)| (n.as_str(), &s[..], *r)).collect();
        assert_eq!(got, want);
    }

    /// The identity on the first filters, PyTorch's bounds elsewhere, the
    /// head at standard deviation 1, BatchNorm at 1 and 0.
    #[test]
    fn initialization_is_the_references() {
        let dev = CpuDevice::<f64>::new(1).unwrap();
        let net = AirbenchNet::new(&dev, [32, 16, 16], 1, 5).unwrap();
        for (p, &role) in net.params.iter().zip(net.roles()) {
            let v = values(&dev, p);
            match role {
                Role::Filter => {
                    let (c_out, c_in) = (p.shape[0], p.shape[1]);
                    let bound = 1.0 / ((c_in * 9) as f64).sqrt();
                    for (i, f) in v.chunks(c_in * 9).enumerate() {
                        if i < c_in {
                            let want: Vec<f64> = (0..c_in * 9).map(|k| if k == i * 9 + 4 { 1.0 } else { 0.0 }).collect();
                            assert_eq!(f, &want[..], "{} filter {i}: the identity", p.name);
                        } else {
                            assert!(f.iter().all(|x| x.abs() <= bound) && f.iter().any(|&x| x != 0.0), "{} filter {i} of {c_out}", p.name);
                        }
                    }
                }
                Role::Head => {
                    let mean = v.iter().sum::<f64>() / v.len() as f64;
                    let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (v.len() - 1) as f64;
                    assert!((var - 1.0).abs() < 1e-12, "head variance {var}");
                }
                Role::WhitenBias => assert!(v.iter().all(|x| x.abs() <= 1.0 / 12f64.sqrt()) && v.iter().any(|&x| x != 0.0)),
                Role::NormBias => assert!(v.iter().all(|&x| x == 0.0)),
                Role::Frozen if p.name.contains("norm") => assert!(v.iter().all(|&x| x == 1.0)),
                Role::Frozen => assert_eq!(p.name, "whiten.weight"),
            }
        }
        // Block 1's first conv (32 filters on 24 channels) keeps 8 drawn
        // filters; block 2's (16 on 32) is the identity on its first 16
        // channels throughout.
        let mut net2 = AirbenchNet::new(&dev, [32, 16, 16], 1, 5).unwrap();
        assert_eq!(values(&dev, &net.params[2]), values(&dev, &net2.params[2]), "the same seed draws the same");
        assert!(net2.buffers_mut().iter().all(|(name, b)| b.iter().all(|&x| x == if name.ends_with("var") { 1.0 } else { 0.0 })));
        assert_ne!(values(&dev, &AirbenchNet::new(&dev, [32, 16, 16], 1, 6).unwrap().params[20]), values(&dev, &net.params[20]));
    }

    /// The sampled rows of every filter are its input and its output
    /// gradient: over the whole batch they give its weight gradient; a
    /// sample holds the same rows of them.
    #[test]
    fn sampled_rows_are_each_filters_input_and_output_gradient() {
        const B: usize = 4;
        let dev = CpuDevice::<f64>::new(1).unwrap();
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(1);
        let xs: Vec<f64> = uniform_init(&mut rng, B * 3 * SIDE * SIDE, 2.0);
        let mut x = dev.zeros(xs.len()).unwrap();
        dev.upload(&xs, &mut x).unwrap();
        let mut labels = dev.labels(B).unwrap();
        dev.upload_labels(&[3, 1, 4, 1], &mut labels).unwrap();
        let pass = |rows: &[usize]| {
            let mut net = AirbenchNet::new(&dev, [8, 8, 8], B, 2).unwrap();
            net.enable_sampling(&dev, rows.len()).unwrap();
            net.forward(&dev, &x, B, true).unwrap();
            net.loss(&dev, B, &labels).unwrap();
            net.backward(&dev, B, Some(SampledRows { x: rows, y: rows }), false).unwrap();
            net
        };
        let all = pass(&[0, 1, 2, 3]);
        let some = pass(&[1, 3]);
        let mut filters = 0;
        for ((p, q), &role) in all.params.iter().zip(&some.params).zip(all.roles()) {
            let (Some(s), Some(t)) = (&p.sampled, &q.sampled) else {
                assert_ne!(role, Role::Filter, "{}", p.name);
                continue;
            };
            let conv = p.conv.unwrap();
            let mut grad = vec![0.0; p.len()];
            dev.conv_backward_weight(ConvShape { conv, batch: B }, &s.x, &s.y, &mut grad).unwrap();
            let scale = grad.iter().fold(0.0f64, |m, g| m.max(g.abs()));
            assert!(scale > 0.0 && grad.iter().zip(&p.grad).all(|(a, b)| (a - b).abs() <= 1e-12 * scale), "{}", p.name);
            let (nx, ny) = (s.x.len() / B, s.y.len() / B);
            for (k, r) in [1, 3].into_iter().enumerate() {
                assert_eq!(&t.x[k * nx..][..nx], &s.x[r * nx..][..nx], "{} input row {r}", p.name);
                assert_eq!(&t.y[k * ny..][..ny], &s.y[r * ny..][..ny], "{} output-gradient row {r}", p.name);
            }
            filters += 1;
        }
        assert_eq!(filters, 6);
    }

    #[test]
    fn bad_sizes_are_errors() {
        let dev = CpuDevice::<f64>::new(1).unwrap();
        assert!(AirbenchNet::new(&dev, [8, 0, 8], 2, 0).is_err());
        assert!(AirbenchNet::new(&dev, [8, 8, 8], 0, 0).is_err());
        let mut net = AirbenchNet::new(&dev, [8, 8, 8], 2, 0).unwrap();
        let x = dev.zeros(3 * 3072).unwrap();
        assert!(net.forward(&dev, &x, 3, false).is_err());
        assert!(net.forward(&dev, &x, 0, false).is_err());
        assert!(net.backward(&dev, 3, None, true).is_err());
        assert!(net.set_whitening(&dev, &[0.0; 287]).is_err());
    }
}
