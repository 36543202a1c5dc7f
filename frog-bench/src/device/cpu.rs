//! The CPU device: host `Vec`s and the kernels of `frog_cpu::nn`, on one
//! persistent thread pool shared with FROG's `Cpu` backend.

use std::cell::RefCell;
use std::sync::Arc;

use frog_cpu::gemm::Real;
use frog_cpu::nn;
use frog_cpu::pool::ThreadPool;
use frog_cpu::Cpu;

use super::{BnGrads, BnParams, BnRunning, BnSaved, BnShape, BnTrainStats, ConvShape, CrossEntropyLoss, Device, Epilogue, LinearGrads, LinearShape, LossStats, PoolShape};
use crate::error::{Error, Result};

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
        let n = self.threads();
        format!("cpu {}, {n} thread{}", std::any::type_name::<T>(), if n == 1 { "" } else { "s" })
    }

    fn labels(&self, batch: usize) -> Result<Vec<u8>> {
        Ok(Vec::with_capacity(batch))
    }

    fn upload_labels(&self, labels: &[u8], dst: &mut Vec<u8>) -> Result<()> {
        dst.clear();
        dst.extend_from_slice(labels);
        Ok(())
    }

    fn conv_forward(&self, shape: ConvShape, x: &Vec<T>, w: &Vec<T>, y: &mut Vec<T>) -> Result<()> {
        let len = nn::conv_scratch_len(shape, self.threads());
        self.with_scratch(len, |s| nn::conv2d_forward(&self.pool, shape, x, w, y, s));
        Ok(())
    }

    fn conv_backward_data(&self, shape: ConvShape, dy: &Vec<T>, w: &Vec<T>, dx: &mut Vec<T>, accumulate: bool) -> Result<()> {
        let len = nn::conv_scratch_len(shape, self.threads());
        self.with_scratch(len, |s| nn::conv2d_backward_data(&self.pool, shape, dy, w, dx, accumulate, s));
        Ok(())
    }

    fn conv_backward_weight(&self, shape: ConvShape, x: &Vec<T>, dy: &Vec<T>, dw: &mut Vec<T>) -> Result<()> {
        let len = nn::conv_scratch_len(shape, self.threads());
        self.with_scratch(len, |s| nn::conv2d_backward_weight(&self.pool, shape, x, dy, dw, s));
        Ok(())
    }

    fn bn_train(&self, shape: BnShape, x: &Vec<T>, params: BnParams<'_, Vec<T>>, stats: BnTrainStats<'_, Vec<T>>, epi: Epilogue<'_, Vec<T>>, y: &mut Vec<T>) -> Result<()> {
        let BnTrainStats { running, momentum, saved } = stats;
        let stats = BnTrainStats { running: BnRunning { mean: &mut running.mean[..], var: &mut running.var[..] }, momentum, saved: BnSaved { mean: &mut saved.mean[..], invstd: &mut saved.invstd[..] } };
        nn::batch_norm_train(&self.pool, shape, x, slices(params), stats, slice_epi(epi), y);
        Ok(())
    }

    fn bn_eval(&self, shape: BnShape, x: &Vec<T>, params: BnParams<'_, Vec<T>>, running: BnRunning<&Vec<T>>, epi: Epilogue<'_, Vec<T>>, y: &mut Vec<T>) -> Result<()> {
        let running = BnRunning { mean: &running.mean[..], var: &running.var[..] };
        nn::batch_norm_eval(&self.pool, shape, x, slices(params), running, slice_epi(epi), y);
        Ok(())
    }

    fn bn_backward(&self, shape: BnShape, x: &Vec<T>, saved: BnSaved<&Vec<T>>, weight: &Vec<T>, relu_out: Option<&Vec<T>>, grads: BnGrads<'_, Vec<T>>) -> Result<()> {
        let saved = BnSaved { mean: &saved.mean[..], invstd: &saved.invstd[..] };
        let grads = BnGrads { dy: &mut grads.dy[..], dx: &mut grads.dx[..], dweight: &mut grads.dweight[..], dbias: &mut grads.dbias[..] };
        nn::batch_norm_backward(&self.pool, shape, x, saved, weight, relu_out.map(Vec::as_slice), grads);
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

    fn max_pool(&self, s: PoolShape, x: &Vec<T>, y: &mut Vec<T>, argmax: &mut Vec<T>) -> Result<()> {
        check_pool(s)?;
        nn::max_pool2d(&self.pool, s, x, y, argmax);
        Ok(())
    }

    fn max_pool_backward(&self, s: PoolShape, dy: &Vec<T>, argmax: &Vec<T>, dx: &mut Vec<T>) -> Result<()> {
        check_pool(s)?;
        nn::max_pool2d_backward(&self.pool, s, dy, argmax, dx);
        Ok(())
    }

    fn gelu(&self, n: usize, x: &Vec<T>, y: &mut Vec<T>) -> Result<()> {
        nn::gelu(&self.pool, n, x, y);
        Ok(())
    }

    fn gelu_backward(&self, n: usize, x: &Vec<T>, dy: &Vec<T>, dx: &mut Vec<T>) -> Result<()> {
        nn::gelu_backward(&self.pool, n, x, dy, dx);
        Ok(())
    }

    fn add_channel_bias(&self, s: BnShape, bias: &Vec<T>, y: &mut Vec<T>) -> Result<()> {
        nn::add_channel_bias(&self.pool, s, bias, y);
        Ok(())
    }

    fn channel_bias_backward(&self, s: BnShape, dy: &Vec<T>, db: &mut Vec<T>) -> Result<()> {
        nn::channel_bias_backward(&self.pool, s, dy, db);
        Ok(())
    }

    fn linear_forward(&self, s: LinearShape, x: &Vec<T>, w: &Vec<T>, b: Option<&Vec<T>>, y: &mut Vec<T>) -> Result<()> {
        nn::linear_forward(&self.pool, s, x, w, b.map(Vec::as_slice), y);
        Ok(())
    }

    fn linear_backward(&self, s: LinearShape, x: &Vec<T>, w: &Vec<T>, dy: &Vec<T>, grads: LinearGrads<'_, Vec<T>>) -> Result<()> {
        let grads = LinearGrads { dx: &mut grads.dx[..], dw: &mut grads.dw[..], db: grads.db.map(Vec::as_mut_slice) };
        nn::linear_backward(&self.pool, s, x, w, dy, grads);
        Ok(())
    }

    fn cross_entropy(&self, batch: usize, classes: usize, loss: CrossEntropyLoss, logits: &Vec<T>, labels: &Vec<u8>, dlogits: &mut Vec<T>) -> Result<LossStats> {
        if !loss.is_valid() {
            return Err(Error::new(format!("label smoothing {} is outside [0, 1]", loss.label_smoothing)));
        }
        Ok(nn::softmax_cross_entropy(classes, loss, logits, &labels[..batch], dlogits))
    }
}

/// The error of a pooling whose window does not fit (the kernels would
/// panic: they take it for the caller's bug).
fn check_pool(s: PoolShape) -> Result<()> {
    match s.output_hw() {
        Some(_) => Ok(()),
        None => Err(Error::new(format!("max pool: no {k}x{k} window fits {:?}", s.input_hw, k = s.kernel))),
    }
}

/// The parameters of `Vec`s as the kernels' slices.
fn slices<T>(p: BnParams<'_, Vec<T>>) -> BnParams<'_, [T]> {
    BnParams { weight: p.weight, bias: p.bias, eps: p.eps }
}

/// The epilogue of `Vec`s as the kernels' slices.
fn slice_epi<T>(e: Epilogue<'_, Vec<T>>) -> Epilogue<'_, [T]> {
    Epilogue { residual: e.residual.map(Vec::as_slice), relu: e.relu }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Settings a run file could hold that the kernels take for the
    /// caller's bug are the device's errors, not panics.
    #[test]
    fn bad_pooling_and_smoothing_are_errors() {
        let dev = CpuDevice::<f32>::new(1).unwrap();
        let (x, mut y, mut argmax) = (vec![0.0; 8], vec![0.0; 4], vec![0.0; 4]);
        for kernel in [0, 3] {
            let s = PoolShape { planes: 1, input_hw: [2, 4], kernel };
            let e = dev.max_pool(s, &x, &mut y, &mut argmax).unwrap_err().to_string();
            assert!(e.contains(&format!("no {kernel}x{kernel} window fits [2, 4]")), "{e}");
            assert!(dev.max_pool_backward(s, &y, &argmax, &mut vec![0.0; 8]).is_err());
        }
        let loss = CrossEntropyLoss { label_smoothing: -0.1, ..Default::default() };
        let e = dev.cross_entropy(1, 2, loss, &vec![0.0; 2], &vec![0], &mut vec![0.0; 2]).unwrap_err().to_string();
        assert!(e.contains("label smoothing -0.1 is outside [0, 1]"), "{e}");
        let nan = CrossEntropyLoss { label_smoothing: f64::NAN, ..Default::default() };
        assert!(dev.cross_entropy(1, 2, nan, &vec![0.0; 2], &vec![0], &mut vec![0.0; 2]).is_err());
    }
}
