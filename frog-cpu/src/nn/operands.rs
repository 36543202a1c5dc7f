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

/// The layout of a BatchNorm2d input `[batch, channels, hw]` (PyTorch's
/// `[B, C, H, W]` with `hw = H*W`).
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
    /// `dL/db` `[d_out]`.
    pub db: &'a mut B,
}

/// The loss of a batch and how many predictions were right.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LossStats {
    /// Mean cross-entropy over the batch.
    pub loss: f64,
    /// Samples whose largest logit is their label's.
    pub correct: usize,
}
