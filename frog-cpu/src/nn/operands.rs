//! The shapes and operand groups of the training kernels, shared by every
//! backend's: this module's kernels take them over host slices (`B = [T]`),
//! frog-cuda's `nn` over its device buffers, frog-bench's `Device` over
//! either.
//!
//! Why groups: a kernel of ten positional arguments, several of them
//! buffers of one type, compiles just as well with two of them swapped.
//! Named fields say which buffer is which, and keep every kernel to a few
//! arguments.

use frog_core::Conv2d;

/// A convolution applied to a batch: PyTorch's layouts, input
/// `[batch, c_in, H, W]`, weight `[c_out, c_in, kh, kw]`, output
/// `[batch, c_out, Ho, Wo]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvShape {
    /// The layer's geometry.
    pub conv: Conv2d,
    /// Samples.
    pub batch: usize,
}

/// The sizes of a linear layer applied to a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinearShape {
    /// Samples.
    pub batch: usize,
    /// Input features.
    pub d_in: usize,
    /// Output features.
    pub d_out: usize,
}

/// The layout `[batch, channels, hw]` of a per-channel operation's input
/// (PyTorch's `[B, C, H, W]` with `hw = H*W`): a BatchNorm2d, or a
/// convolution's bias.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BnShape {
    /// Samples.
    pub batch: usize,
    /// Channels.
    pub channels: usize,
    /// Positions per channel plane (`H*W`).
    pub hw: usize,
}

impl BnShape {
    /// Entries of the whole input.
    pub fn len(&self) -> usize {
        self.batch * self.channels * self.hw
    }

    /// Whether the input is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The entries of the plane of sample `b`, channel `c`.
    pub fn plane(&self, b: usize, c: usize) -> core::ops::Range<usize> {
        let start = (b * self.channels + c) * self.hw;
        start..start + self.hw
    }
}

/// A BatchNorm layer's affine parameters and `eps`.
pub struct BnParams<'a, B: ?Sized> {
    /// `gamma` `[C]`.
    pub weight: &'a B,
    /// `beta` `[C]`.
    pub bias: &'a B,
    /// `eps` of the variance.
    pub eps: f64,
}

/// BatchNorm's running statistics `[C]` each: read in eval mode (`R` a
/// shared reference), updated in train mode (`R` a mutable one).
pub struct BnRunning<R> {
    /// Running mean.
    pub mean: R,
    /// Running (unbiased) variance.
    pub var: R,
}

/// The batch statistics a train-mode BatchNorm saves for its backward
/// pass, `[C]` each: written by the forward pass, read by the backward.
pub struct BnSaved<R> {
    /// Batch mean.
    pub mean: R,
    /// `1/sqrt(var + eps)` of the biased batch variance.
    pub invstd: R,
}

/// Every per-channel statistic a train-mode BatchNorm writes: the running
/// ones it updates with `momentum` (`running = (1-m)*running + m*stat`,
/// PyTorch's rule) and the batch ones it saves.
pub struct BnTrainStats<'a, B: ?Sized> {
    /// The running statistics, updated.
    pub running: BnRunning<&'a mut B>,
    /// The weight `m` of the batch statistic in the update.
    pub momentum: f64,
    /// The batch statistics, overwritten.
    pub saved: BnSaved<&'a mut B>,
}

/// What follows the normalization: an optional residual input added to
/// it, then an optional ReLU.
pub struct Epilogue<'a, B: ?Sized> {
    /// Added after the affine transform (a ResNet shortcut), shaped like the input.
    pub residual: Option<&'a B>,
    /// Apply `max(0, .)` last.
    pub relu: bool,
}

/// `Clone` and `Copy` for a group of shared references, whatever `B`: a
/// derive would ask `B: Clone`, which `[T]` and a device buffer are not.
macro_rules! copy_refs {
    ($($t:ident),*) => {$(
        impl<B: ?Sized> Clone for $t<'_, B> {
            fn clone(&self) -> Self {
                *self
            }
        }

        impl<B: ?Sized> Copy for $t<'_, B> {}
    )*};
}

copy_refs!(BnParams, Epilogue);

/// The gradients of a train-mode BatchNorm: the output gradient in, the
/// others out.
pub struct BnGrads<'a, B: ?Sized> {
    /// `dL/dy`; with the forward's ReLU output given, masked by it in
    /// place, so that afterwards it is also the residual input's gradient.
    pub dy: &'a mut B,
    /// `dL/dx`, overwritten.
    pub dx: &'a mut B,
    /// `dL/dgamma`, overwritten.
    pub dweight: &'a mut B,
    /// `dL/dbeta`, overwritten.
    pub dbias: &'a mut B,
}

/// The gradients a linear layer's backward pass writes, all overwritten.
pub struct LinearGrads<'a, B: ?Sized> {
    /// `dL/dx` `[batch, d_in]`.
    pub dx: &'a mut B,
    /// `dL/dW` `[d_out, d_in]`.
    pub dw: &'a mut B,
    /// `dL/db` `[d_out]`; `None` for a layer without bias (airbench's
    /// `Linear(256, 10, bias=False)` head).
    pub db: Option<&'a mut B>,
}

/// Max-pooling over `k x k` windows at stride `k`, without padding, the
/// rows and columns past the last whole window dropped: PyTorch's
/// `MaxPool2d(k)` (floor mode), e.g. 31 -> 15 at `k = 2`, 3 -> 1 at `k = 3`.
/// Input `[planes, H, W]` (`planes = batch * channels`), output
/// `[planes, H/k, W/k]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolShape {
    /// Planes pooled, `batch * channels`.
    pub planes: usize,
    /// The input plane `[H, W]`.
    pub input_hw: [usize; 2],
    /// The window's side `k`, also its stride.
    pub kernel: usize,
}

impl PoolShape {
    /// The output plane `[H/k, W/k]`; `None` when no window fits (`k` is 0
    /// or larger than a side, PyTorch's error) or when a window has more
    /// than 2^24 entries. Why that bound: the forward pass records which
    /// entry of its window each output took as the offset `r*k + c` in a
    /// buffer of the kernels' own scalar, exact in `f32` only up to 2^24.
    pub fn output_hw(&self) -> Option<[usize; 2]> {
        let [h, w] = self.input_hw;
        let k = self.kernel;
        let fits = k > 0 && k <= h && k <= w && k.checked_mul(k).is_some_and(|n| n <= 1 << 24);
        fits.then(|| [h / k, w / k])
    }
}

/// How a batch's per-sample losses are combined: PyTorch's `reduction`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Reduction {
    /// Their mean (PyTorch's default).
    #[default]
    Mean,
    /// Their sum (airbench's loss).
    Sum,
}

/// Softmax cross-entropy as PyTorch's `F.cross_entropy(logits, labels,
/// label_smoothing, reduction)`: sample `i`'s loss is `-sum_k q_k log p_k`
/// against the target `q = (1 - eps) onehot(label) + eps / C` over the `C`
/// classes. The default is plain cross-entropy averaged over the batch.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct CrossEntropyLoss {
    /// `eps`, in `[0, 1]`: airbench's 0.2 targets 0.82 on the true class
    /// and 0.02 on each of the other 9.
    pub label_smoothing: f64,
    /// Mean or sum over the batch.
    pub reduction: Reduction,
}

impl CrossEntropyLoss {
    /// Whether `label_smoothing` is in `[0, 1]` (PyTorch's check; NaN is not).
    pub fn is_valid(&self) -> bool {
        (0.0..=1.0).contains(&self.label_smoothing)
    }
}

/// The loss of a batch and how many predictions were right.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LossStats {
    /// Cross-entropy over the batch, reduced as asked: the mean of the
    /// samples' losses, or their sum.
    pub loss: f64,
    /// Samples whose largest logit is their label's.
    pub correct: usize,
}
