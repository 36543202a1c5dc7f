//! The engine's `Device`: buffers on some memory and the training kernels
//! over them.
//!
//! Why a trait of its own rather than frog-core's `Backend`: training
//! needs convolutions, BatchNorm and a loss, which FROG does not. The two
//! meet through [`Device::Backend`], a frog-core backend over the same
//! buffers, so FROG's step and the SGD baselines run on the device's
//! parameters and gradients in place. Nothing in the interface is a host
//! slice except [`Device::upload`], [`Device::download`] and the labels, so
//! a GPU device (device buffers, kernels launched on a stream) fits it.

use frog_core::{Backend, Scalar};
pub use frog_cpu::nn::{BnGrads, BnParams, BnRunning, BnSaved, BnShape, BnTrainStats, ConvShape, Epilogue, LinearGrads, LinearShape, LossStats};

use crate::error::{Error, Result};

pub mod cpu;
#[cfg(feature = "cuda")]
pub mod cuda;

/// Converts a backend's error into the engine's.
pub fn backend_err<E: std::fmt::Display>(e: E) -> Error {
    Error::new(format!("device error: {e}"))
}

/// BatchNorm's `eps`, PyTorch's default.
pub const BN_EPS: f64 = 1e-5;
/// BatchNorm's running-statistics momentum, PyTorch's default.
pub const BN_MOMENTUM: f64 = 0.1;

/// A compute device for training: memory, and the forward and backward
/// kernels of the layers the models use. Every kernel works on the prefix
/// of its buffers that its sizes name; the kernels take frog-cpu's shapes
/// and operand groups (`frog_cpu::nn`) over [`Device::Buffer`].
pub trait Device {
    /// Scalar of every buffer.
    type Scalar: Scalar;
    /// A buffer of scalars on the device.
    type Buffer;
    /// Class labels of a batch on the device.
    type Labels;
    /// The frog-core backend over the same buffers (every optimizer's steps).
    type Backend: Backend<Scalar = Self::Scalar, Buffer = Self::Buffer> + frog_core::AdamBackend + frog_core::KfrogBackend + frog_core::MatmulBackend;

    /// The FROG backend.
    fn backend(&self) -> &Self::Backend;
    /// A short description for reports ("cpu f32, 2 threads").
    fn describe(&self) -> String;

    /// A zero-filled buffer.
    fn zeros(&self, len: usize) -> Result<Self::Buffer> {
        self.backend().zeros(len).map_err(backend_err)
    }
    /// Copies host values to the front of `dst`.
    fn upload(&self, src: &[Self::Scalar], dst: &mut Self::Buffer) -> Result<()> {
        self.backend().write(src, dst, 0).map_err(backend_err)
    }
    /// Copies the front of `src` to the host.
    fn download(&self, src: &Self::Buffer, dst: &mut [Self::Scalar]) -> Result<()> {
        self.backend().read(src, 0, dst).map_err(backend_err)
    }
    /// Copies the blocks `indices[k]` (of `block` entries each) of `src` to
    /// block `k` of `dst`: the optimizer's sampled rows of a batch
    /// (frog-core's checked `gather_rows`, unless a device has a faster way).
    fn gather(&self, block: usize, indices: &[usize], src: &Self::Buffer, dst: &mut Self::Buffer) -> Result<()> {
        Ok(frog_core::gather_rows(self.backend(), indices, block, src, dst)?)
    }
    /// `y = a*x + b*y` over `n` entries.
    fn axpby(&self, n: usize, a: f64, x: &Self::Buffer, b: f64, y: &mut Self::Buffer) -> Result<()> {
        let (s, be) = (Self::Scalar::of_f64, self.backend());
        let (x, mut y) = (be.view(x, 0, n).map_err(backend_err)?, be.view_mut(y, 0, n).map_err(backend_err)?);
        be.axpby(n, s(a), &x, s(b), &mut y).map_err(backend_err)
    }

    /// Room for the labels of `batch` samples.
    fn labels(&self, batch: usize) -> Result<Self::Labels>;
    /// Sets the labels of a batch.
    fn upload_labels(&self, labels: &[u8], dst: &mut Self::Labels) -> Result<()>;

    /// `y = conv(x, w)`, PyTorch layouts, no bias.
    fn conv_forward(&self, shape: ConvShape, x: &Self::Buffer, w: &Self::Buffer, y: &mut Self::Buffer) -> Result<()>;
    /// The input gradient of a convolution, written or added to `dx`.
    fn conv_backward_data(&self, shape: ConvShape, dy: &Self::Buffer, w: &Self::Buffer, dx: &mut Self::Buffer, accumulate: bool) -> Result<()>;
    /// The weight gradient of a convolution (overwritten).
    fn conv_backward_weight(&self, shape: ConvShape, x: &Self::Buffer, dy: &Self::Buffer, dw: &mut Self::Buffer) -> Result<()>;

    /// Train-mode BatchNorm (batch statistics saved, running statistics
    /// updated), then the epilogue (`+ residual`, then ReLU).
    fn bn_train(
        &self,
        shape: BnShape,
        x: &Self::Buffer,
        params: BnParams<'_, Self::Buffer>,
        stats: BnTrainStats<'_, Self::Buffer>,
        epi: Epilogue<'_, Self::Buffer>,
        y: &mut Self::Buffer,
    ) -> Result<()>;
    /// Eval-mode BatchNorm with the running statistics, same epilogue.
    fn bn_eval(
        &self,
        shape: BnShape,
        x: &Self::Buffer,
        params: BnParams<'_, Self::Buffer>,
        running: BnRunning<&Self::Buffer>,
        epi: Epilogue<'_, Self::Buffer>,
        y: &mut Self::Buffer,
    ) -> Result<()>;
    /// Backward of [`Device::bn_train`]. With `relu_out` the ReLU's mask is
    /// applied to `grads.dy` in place first, so it then is also the
    /// residual's gradient. `dx`, `dweight`, `dbias` are overwritten.
    fn bn_backward(
        &self,
        shape: BnShape,
        x: &Self::Buffer,
        saved: BnSaved<&Self::Buffer>,
        weight: &Self::Buffer,
        relu_out: Option<&Self::Buffer>,
        grads: BnGrads<'_, Self::Buffer>,
    ) -> Result<()>;

    /// Global average pooling of `planes` planes of `hw` entries.
    fn avg_pool(&self, planes: usize, hw: usize, x: &Self::Buffer, y: &mut Self::Buffer) -> Result<()>;
    /// Backward of [`Device::avg_pool`] (overwrites `dx`).
    fn avg_pool_backward(&self, planes: usize, hw: usize, dy: &Self::Buffer, dx: &mut Self::Buffer) -> Result<()>;

    /// `y = x W^T + b`.
    fn linear_forward(&self, s: LinearShape, x: &Self::Buffer, w: &Self::Buffer, b: &Self::Buffer, y: &mut Self::Buffer) -> Result<()>;
    /// Gradients of [`Device::linear_forward`], all overwritten.
    fn linear_backward(&self, s: LinearShape, x: &Self::Buffer, w: &Self::Buffer, dy: &Self::Buffer, grads: LinearGrads<'_, Self::Buffer>) -> Result<()>;

    /// Mean softmax cross-entropy of `batch` rows of `classes` logits, its
    /// gradient in `dlogits`, and the number of correct predictions.
    fn cross_entropy(
        &self,
        batch: usize,
        classes: usize,
        logits: &Self::Buffer,
        labels: &Self::Labels,
        dlogits: &mut Self::Buffer,
    ) -> Result<LossStats>;
}
