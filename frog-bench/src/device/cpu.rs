//! The CPU device: host `Vec`s and the kernels of `frog_cpu::nn`, on one
//! persistent thread pool shared with FROG's `Cpu` backend.

use std::cell::RefCell;
use std::sync::Arc;

use frog_core::Conv2d;
use frog_cpu::gemm::Real;
use frog_cpu::nn;
use frog_cpu::pool::ThreadPool;
use frog_cpu::Cpu;

use super::{BnAffine, BnSaved, BnShape, Device, LinearShape, LossStats, BN_EPS, BN_MOMENTUM};
use crate::error::Result;

/// Training on the host, in `f32` or `f64`.
pub struct CpuDevice<T: Real> {
    backend: Cpu<T>,
    pool: Arc<ThreadPool>,
    /// Convolution scratch, grown to the largest layer on first use and
    /// then reused, so steady-state steps allocate nothing here.
    scratch: RefCell<Vec<T>>,
}

impl<T: Real> CpuDevice<T> {
    /// A device on `threads` threads (0: one per CPU); an error when the
    /// threads cannot be had.
    pub fn new(threads: usize) -> std::result::Result<Self, frog_cpu::CpuError> {
        let pool = Arc::new(ThreadPool::new(threads)?);
        Ok(Self { backend: Cpu::new(Arc::clone(&pool)), pool, scratch: RefCell::new(Vec::new()) })
    }

    /// Threads in the pool.
    pub fn threads(&self) -> usize {
        self.pool.threads()
    }

    /// Runs `f` with at least `len` entries of scratch.
    fn with_scratch<R>(&self, len: usize, f: impl FnOnce(&mut [T]) -> R) -> R {
        let mut s = self.scratch.borrow_mut();
        if s.len() < len {
            s.resize(len, T::default());
        }
        f(&mut s[..len])
    }
}

impl<T: Real> Device for CpuDevice<T> {
    type Scalar = T;
    type Buffer = Vec<T>;
    type Labels = Vec<u8>;
    type Backend = Cpu<T>;

    fn backend(&self) -> &Cpu<T> {
        &self.backend
    }

    fn describe(&self) -> String {
        format!("cpu {}, {} threads", std::any::type_name::<T>(), self.threads())
    }

    fn labels(&self, batch: usize) -> Result<Vec<u8>> {
        Ok(Vec::with_capacity(batch))
    }

    fn upload_labels(&self, labels: &[u8], dst: &mut Vec<u8>) -> Result<()> {
        dst.clear();
        dst.extend_from_slice(labels);
        Ok(())
    }

    fn conv_forward(&self, conv: &Conv2d, batch: usize, x: &Vec<T>, w: &Vec<T>, y: &mut Vec<T>) -> Result<()> {
        let len = nn::conv_scratch_len(conv, batch, self.threads());
        self.with_scratch(len, |s| nn::conv2d_forward(&self.pool, conv, batch, x, w, y, s));
        Ok(())
    }

    fn conv_backward_data(&self, conv: &Conv2d, batch: usize, dy: &Vec<T>, w: &Vec<T>, dx: &mut Vec<T>, accumulate: bool) -> Result<()> {
        let len = nn::conv_scratch_len(conv, batch, self.threads());
        self.with_scratch(len, |s| nn::conv2d_backward_data(&self.pool, conv, batch, dy, w, dx, accumulate, s));
        Ok(())
    }

    fn conv_backward_weight(&self, conv: &Conv2d, batch: usize, x: &Vec<T>, dy: &Vec<T>, dw: &mut Vec<T>) -> Result<()> {
        let len = nn::conv_scratch_len(conv, batch, self.threads());
        self.with_scratch(len, |s| nn::conv2d_backward_weight(&self.pool, conv, batch, x, dy, dw, s));
        Ok(())
    }

    fn bn_train(
        &self,
        shape: BnShape,
        x: &Vec<T>,
        affine: BnAffine<'_, Vec<T>>,
        running: (&mut Vec<T>, &mut Vec<T>),
        saved: &mut BnSaved<Vec<T>>,
        residual: Option<&Vec<T>>,
        relu: bool,
        y: &mut Vec<T>,
    ) -> Result<()> {
        let params = nn::BnParams { weight: affine.weight, bias: affine.bias, eps: BN_EPS };
        let epi = nn::Epilogue { residual: residual.map(|r| r.as_slice()), relu };
        let saved = (saved.mean.as_mut_slice(), saved.invstd.as_mut_slice());
        nn::batch_norm_train(&self.pool, shape, x, &params, BN_MOMENTUM, (running.0, running.1), saved, epi, y);
        Ok(())
    }

    fn bn_eval(
        &self,
        shape: BnShape,
        x: &Vec<T>,
        affine: BnAffine<'_, Vec<T>>,
        running: (&Vec<T>, &Vec<T>),
        residual: Option<&Vec<T>>,
        relu: bool,
        y: &mut Vec<T>,
    ) -> Result<()> {
        let params = nn::BnParams { weight: affine.weight, bias: affine.bias, eps: BN_EPS };
        let epi = nn::Epilogue { residual: residual.map(|r| r.as_slice()), relu };
        nn::batch_norm_eval(&self.pool, shape, x, &params, (running.0, running.1), epi, y);
        Ok(())
    }

    fn bn_backward(
        &self,
        shape: BnShape,
        x: &Vec<T>,
        saved: &BnSaved<Vec<T>>,
        weight: &Vec<T>,
        relu_out: Option<&Vec<T>>,
        dy: &mut Vec<T>,
        dx: &mut Vec<T>,
        dweight: &mut Vec<T>,
        dbias: &mut Vec<T>,
    ) -> Result<()> {
        let grads = nn::BnGrads { dx, dweight, dbias };
        let relu_out = relu_out.map(|r| r.as_slice());
        nn::batch_norm_backward(&self.pool, shape, x, (&saved.mean, &saved.invstd), weight, relu_out, dy, grads);
        Ok(())
    }

    fn avg_pool(&self, planes: usize, hw: usize, x: &Vec<T>, y: &mut Vec<T>) -> Result<()> {
        nn::global_avg_pool(planes, hw, x, y);
        Ok(())
    }

    fn avg_pool_backward(&self, planes: usize, hw: usize, dy: &Vec<T>, dx: &mut Vec<T>) -> Result<()> {
        nn::global_avg_pool_backward(planes, hw, dy, dx);
        Ok(())
    }

    fn linear_forward(&self, s: LinearShape, x: &Vec<T>, w: &Vec<T>, b: &Vec<T>, y: &mut Vec<T>) -> Result<()> {
        nn::linear_forward(&self.pool, s, x, w, b, y);
        Ok(())
    }

    fn linear_backward(
        &self,
        s: LinearShape,
        x: &Vec<T>,
        w: &Vec<T>,
        dy: &Vec<T>,
        dx: &mut Vec<T>,
        dw: &mut Vec<T>,
        db: &mut Vec<T>,
    ) -> Result<()> {
        nn::linear_backward(&self.pool, s, x, w, dy, dx, dw, db);
        Ok(())
    }

    fn cross_entropy(&self, batch: usize, classes: usize, logits: &Vec<T>, labels: &Vec<u8>, dlogits: &mut Vec<T>) -> Result<LossStats> {
        Ok(nn::softmax_cross_entropy(classes, logits, &labels[..batch], dlogits))
    }
}
