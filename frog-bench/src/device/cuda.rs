//! The CUDA device (feature `cuda`): frog-cuda's buffers and the kernels of
//! `frog_cuda::nn`, on the same stream as FROG's `Cuda` backend. Every
//! method only launches work, except `upload`/`download` and
//! `cross_entropy`, which returns the loss to the host.

use std::cell::RefCell;

use frog_core::Backend;
use frog_cuda::nn;
use frog_cuda::{Buffer, Cuda, MuonPrecision, Precision};

use super::{backend_err, BnGrads, BnParams, BnRunning, BnSaved, BnShape, BnTrainStats, ConvShape, CrossEntropyLoss, Device, Epilogue, LinearGrads, LinearShape, LossStats, PoolShape};
use crate::error::Result;

/// Training on one GPU, in `f32`.
pub struct CudaDevice {
    cuda: Cuda,
    /// Convolution (im2col) scratch, grown to the largest layer on first
    /// use and then reused.
    scratch: RefCell<Option<Buffer>>,
    /// Per-row loss and correctness of the last cross-entropy.
    loss: RefCell<Option<Buffer>>,
    /// The sampled indices of the last gather.
    indices: RefCell<Option<Buffer>>,
}

impl CudaDevice {
    /// The device on GPU 0, its GEMMs in `precision` (errors when there is
    /// no driver or no device).
    pub fn new(precision: Precision) -> Result<Self> {
        let cuda = Cuda::new(precision).map_err(backend_err)?;
        Ok(Self { cuda, scratch: RefCell::new(None), loss: RefCell::new(None), indices: RefCell::new(None) })
    }

    /// The FROG backend (also `Device::backend`).
    pub fn cuda(&self) -> &Cuda {
        &self.cuda
    }

    /// Runs Muon's Newton-Schulz iteration in `precision` (f32 unless set;
    /// bf16 is the references' arithmetic on a GPU, about 1e-2 from f32).
    pub fn set_muon_precision(&mut self, precision: MuonPrecision) {
        self.cuda.set_muon_precision(precision);
    }

    /// Waits for every launched kernel.
    pub fn synchronize(&self) -> Result<()> {
        self.cuda.synchronize().map_err(backend_err)
    }

    fn with_buffer<R>(
        &self,
        cell: &RefCell<Option<Buffer>>,
        len: usize,
        f: impl FnOnce(&mut Buffer) -> std::result::Result<R, frog_cuda::Error>,
    ) -> Result<R> {
        let mut slot = cell.borrow_mut();
        if slot.as_ref().is_none_or(|b| b.len() < len) {
            *slot = None;
            *slot = Some(self.cuda.zeros(len).map_err(backend_err)?);
        }
        let buf = slot.as_mut().expect("allocated above");
        f(buf).map_err(backend_err)
    }
}

impl Device for CudaDevice {
    type Scalar = f32;
    type Buffer = Buffer;
    /// Class indices as `f32`, one per sample.
    type Labels = Buffer;
    type Backend = Cuda;

    fn backend(&self) -> &Cuda {
        &self.cuda
    }

    fn describe(&self) -> String {
        let muon = if self.cuda.muon_precision() == MuonPrecision::Bf16 { ", Muon in bf16" } else { "" };
        format!("cuda f32 ({:?} GEMMs{muon}) on {}", self.cuda.precision(), self.cuda.device_name())
    }

    /// One launch (and an asynchronous copy of the indices) instead of one
    /// copy per sampled row.
    fn gather(&self, block: usize, indices: &[usize], src: &Buffer, dst: &mut Buffer) -> Result<()> {
        self.with_buffer(&self.indices, indices.len(), |idx| nn::gather(&self.cuda, block, indices, idx, src, dst))
    }

    fn labels(&self, batch: usize) -> Result<Buffer> {
        self.cuda.zeros(batch).map_err(backend_err)
    }

    fn upload_labels(&self, labels: &[u8], dst: &mut Buffer) -> Result<()> {
        let host: Vec<f32> = labels.iter().map(|&l| f32::from(l)).collect();
        self.cuda.write(&host, dst, 0).map_err(backend_err)
    }

    fn conv_forward(&self, shape: ConvShape, x: &Buffer, w: &Buffer, y: &mut Buffer) -> Result<()> {
        self.with_buffer(&self.scratch, nn::conv_scratch_len(shape), |s| nn::conv_forward(&self.cuda, shape, x, w, y, s))
    }

    fn conv_backward_data(&self, shape: ConvShape, dy: &Buffer, w: &Buffer, dx: &mut Buffer, accumulate: bool) -> Result<()> {
        self.with_buffer(&self.scratch, nn::conv_scratch_len(shape), |s| nn::conv_backward_data(&self.cuda, shape, dy, w, dx, accumulate, s))
    }

    fn conv_backward_weight(&self, shape: ConvShape, x: &Buffer, dy: &Buffer, dw: &mut Buffer) -> Result<()> {
        self.with_buffer(&self.scratch, nn::conv_scratch_len(shape), |s| nn::conv_backward_weight(&self.cuda, shape, x, dy, dw, s))
    }

    fn bn_train(&self, shape: BnShape, x: &Buffer, params: BnParams<'_, Buffer>, stats: BnTrainStats<'_, Buffer>, epi: Epilogue<'_, Buffer>, y: &mut Buffer) -> Result<()> {
        nn::bn_train(&self.cuda, shape, x, params, stats, epi, y).map_err(backend_err)
    }

    fn bn_eval(&self, shape: BnShape, x: &Buffer, params: BnParams<'_, Buffer>, running: BnRunning<&Buffer>, epi: Epilogue<'_, Buffer>, y: &mut Buffer) -> Result<()> {
        nn::bn_eval(&self.cuda, shape, x, params, running, epi, y).map_err(backend_err)
    }

    fn bn_backward(&self, shape: BnShape, x: &Buffer, saved: BnSaved<&Buffer>, weight: &Buffer, relu_out: Option<&Buffer>, grads: BnGrads<'_, Buffer>) -> Result<()> {
        nn::bn_backward(&self.cuda, shape, x, saved, weight, relu_out, grads).map_err(backend_err)
    }

    fn avg_pool(&self, planes: usize, hw: usize, x: &Buffer, y: &mut Buffer) -> Result<()> {
        nn::avg_pool(&self.cuda, planes, hw, x, y).map_err(backend_err)
    }

    fn avg_pool_backward(&self, planes: usize, hw: usize, dy: &Buffer, dx: &mut Buffer) -> Result<()> {
        nn::avg_pool_backward(&self.cuda, planes, hw, dy, dx).map_err(backend_err)
    }

    fn max_pool(&self, s: PoolShape, x: &Buffer, y: &mut Buffer, argmax: &mut Buffer) -> Result<()> {
        nn::max_pool(&self.cuda, s, x, y, argmax).map_err(backend_err)
    }

    fn max_pool_backward(&self, s: PoolShape, dy: &Buffer, argmax: &Buffer, dx: &mut Buffer) -> Result<()> {
        nn::max_pool_backward(&self.cuda, s, dy, argmax, dx).map_err(backend_err)
    }

    fn gelu(&self, n: usize, x: &Buffer, y: &mut Buffer) -> Result<()> {
        nn::gelu(&self.cuda, n, x, y).map_err(backend_err)
    }

    fn gelu_backward(&self, n: usize, x: &Buffer, dy: &Buffer, dx: &mut Buffer) -> Result<()> {
        nn::gelu_backward(&self.cuda, n, x, dy, dx).map_err(backend_err)
    }

    fn add_channel_bias(&self, s: BnShape, bias: &Buffer, y: &mut Buffer) -> Result<()> {
        nn::add_channel_bias(&self.cuda, s, bias, y).map_err(backend_err)
    }

    fn channel_bias_backward(&self, s: BnShape, dy: &Buffer, db: &mut Buffer) -> Result<()> {
        nn::channel_bias_backward(&self.cuda, s, dy, db).map_err(backend_err)
    }

    fn linear_forward(&self, s: LinearShape, x: &Buffer, w: &Buffer, b: Option<&Buffer>, y: &mut Buffer) -> Result<()> {
        nn::linear_forward(&self.cuda, s, x, w, b, y).map_err(backend_err)
    }

    fn linear_backward(&self, s: LinearShape, x: &Buffer, w: &Buffer, dy: &Buffer, grads: LinearGrads<'_, Buffer>) -> Result<()> {
        nn::linear_backward(&self.cuda, s, x, w, dy, grads).map_err(backend_err)
    }

    fn cross_entropy(&self, batch: usize, classes: usize, loss: CrossEntropyLoss, logits: &Buffer, labels: &Buffer, dlogits: &mut Buffer) -> Result<LossStats> {
        let scratch = nn::cross_entropy_scratch_len(batch);
        self.with_buffer(&self.loss, scratch, |s| nn::cross_entropy(&self.cuda, batch, classes, loss, logits, labels, dlogits, s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::Arch;
    use crate::device::cpu::CpuDevice;
    use crate::model::Net;

    /// Whether the GPU tests can run here: `false` after printing that
    /// `test` was skipped ([`Cuda::for_check`]; a panic where skips are
    /// errors).
    fn has_device(test: &str) -> bool {
        Cuda::for_check(Precision::Exact, test).unwrap_or_else(|e| panic!("{e}")).is_some()
    }

    /// The tiny CNN's forward, loss and backward on the GPU against the f64
    /// CPU device (rtol 1e-4). Skips without a device.
    #[test]
    fn gpu_tiny_cnn_matches_the_cpu() {
        if !has_device("gpu_tiny_cnn_matches_the_cpu") {
            return;
        }
        let gpu = CudaDevice::new(Precision::Exact).unwrap();
        let cpu = CpuDevice::<f64>::new(1).unwrap();
        let batch = 8;
        let arch = Arch::tiny_cnn();
        let mut gnet = Net::new(&gpu, &arch, batch, 3).unwrap();
        let mut cnet = Net::new(&cpu, &arch, batch, 3).unwrap();
        // Same parameters on both (the GPU's, rounded to f32, copied over).
        for (g, c) in gnet.params.iter().zip(cnet.params.iter_mut()) {
            let mut host = vec![0f32; g.len()];
            gpu.download(&g.value, &mut host).unwrap();
            let wide: Vec<f64> = host.iter().map(|&v| f64::from(v)).collect();
            cpu.upload(&wide, &mut c.value).unwrap();
        }
        let n = batch * arch.input_len();
        let x: Vec<f32> = (0..n).map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0).collect();
        let labels: Vec<u8> = (0..batch).map(|i| (i % 3) as u8).collect();
        let mut gx = gpu.zeros(n).unwrap();
        gpu.upload(&x, &mut gx).unwrap();
        let mut cx = cpu.zeros(n).unwrap();
        cpu.upload(&x.iter().map(|&v| f64::from(v)).collect::<Vec<_>>(), &mut cx).unwrap();
        let mut gl = gpu.labels(batch).unwrap();
        gpu.upload_labels(&labels, &mut gl).unwrap();
        let mut cl = cpu.labels(batch).unwrap();
        cpu.upload_labels(&labels, &mut cl).unwrap();

        gnet.forward(&gpu, &gx, batch, true).unwrap();
        cnet.forward(&cpu, &cx, batch, true).unwrap();
        let gs = gnet.loss(&gpu, batch, &gl).unwrap();
        let cs = cnet.loss(&cpu, batch, &cl).unwrap();
        println!("loss gpu {} cpu {}", gs.loss, cs.loss);
        assert!((gs.loss - cs.loss).abs() <= 1e-4 * cs.loss.abs(), "loss {} vs {}", gs.loss, cs.loss);
        assert_eq!(gs.correct, cs.correct);
        gnet.backward(&gpu, &gx, batch, None).unwrap();
        cnet.backward(&cpu, &cx, batch, None).unwrap();
        for (g, c) in gnet.params.iter().zip(cnet.params.iter()) {
            let mut gh = vec![0f32; g.len()];
            gpu.download(&g.grad, &mut gh).unwrap();
            let mut ch = vec![0f64; c.len()];
            cpu.download(&c.grad, &mut ch).unwrap();
            let d = gh.iter().zip(&ch).map(|(a, b)| (f64::from(*a) - b).abs()).fold(0.0, f64::max);
            let s = ch.iter().map(|b| b.abs()).fold(0.0, f64::max).max(1e-30);
            println!("grad {:<24} rel error {:.2e}", g.name, d / s);
            assert!(d / s <= 1e-4, "grad {}: {:.2e}", g.name, d / s);
        }
    }

    /// ResNet-18 training steps at batch 512 on the GPU, SGD and FROG (s 64),
    /// with the GEMMs in each precision: the study's step times. Skips
    /// without a device and on the host emulator (far too slow there).
    #[test]
    fn gpu_resnet18_throughput() {
        if !has_device("gpu_resnet18_throughput") {
            return;
        }
        if CudaDevice::new(Precision::Exact).unwrap().cuda().device_name().contains("emulator") {
            return frog_cuda::skip("gpu_resnet18_throughput", "host emulator").unwrap_or_else(|e| panic!("{e}"));
        }
        let args = crate::throughput::ThroughputArgs { model: "resnet18".into(), batch_size: 512, sample: 64, kfrog_sample: 256, steps: 5, threads: 0, precision: None };
        for precision in [Precision::Fast, Precision::Split, Precision::Exact] {
            let dev = CudaDevice::new(precision).unwrap();
            crate::throughput::run(&dev, &args).unwrap();
        }
    }

    /// The airbench layers through `Device` on the GPU and on the f64 CPU
    /// device, forward and back: a whitening-style 2x2 convolution
    /// (3 -> 6, no padding) with its channel bias, GELU, max-pooling 8 -> 4
    /// and 4 -> 1, the bias-free head 6 -> 10, the loss smoothed by 0.2 and
    /// summed; the loss and the gradients of the head and of the bias
    /// agree (rtol 1e-4). Skips without a device.
    #[test]
    fn gpu_airbench_layers_match_the_cpu() {
        use frog_core::{Conv2d, Scalar};

        use crate::device::{CrossEntropyLoss, PoolShape, Reduction};

        fn run<D: Device>(dev: &D, [x, w, bias, head]: &[Vec<f64>; 4], labels: &[u8]) -> (LossStats, Vec<f64>, Vec<f64>) {
            let put = |v: &[f64]| {
                let h: Vec<D::Scalar> = v.iter().map(|&e| D::Scalar::of_f64(e)).collect();
                let mut b = dev.zeros(h.len()).unwrap();
                dev.upload(&h, &mut b).unwrap();
                b
            };
            let get = |b: &D::Buffer, n: usize| {
                let mut h = vec![D::Scalar::ZERO; n];
                dev.download(b, &mut h).unwrap();
                h.into_iter().map(Scalar::as_f64).collect::<Vec<_>>()
            };
            let zeros = |n: usize| dev.zeros(n).unwrap();
            let batch = labels.len();
            let s = BnShape { batch, channels: 6, hw: 64 };
            let (xb, wb, bb, hb) = (put(x), put(w), put(bias), put(head));
            let mut z = zeros(s.len());
            dev.conv_forward(ConvShape { conv: Conv2d::new(3, 6, 2, [9, 9]), batch }, &xb, &wb, &mut z).unwrap();
            dev.add_channel_bias(s, &bb, &mut z).unwrap();
            let mut a = zeros(s.len());
            dev.gelu(s.len(), &z, &mut a).unwrap();
            let p1 = PoolShape { planes: batch * 6, input_hw: [8, 8], kernel: 2 };
            let p2 = PoolShape { planes: batch * 6, input_hw: [4, 4], kernel: 4 };
            let (mut m1, mut am1, mut m2, mut am2) = (zeros(batch * 96), zeros(batch * 96), zeros(batch * 6), zeros(batch * 6));
            dev.max_pool(p1, &a, &mut m1, &mut am1).unwrap();
            dev.max_pool(p2, &m1, &mut m2, &mut am2).unwrap();
            let ls = LinearShape { batch, d_in: 6, d_out: 10 };
            let mut logits = zeros(batch * 10);
            dev.linear_forward(ls, &m2, &hb, None, &mut logits).unwrap();
            let mut lab = dev.labels(batch).unwrap();
            dev.upload_labels(labels, &mut lab).unwrap();
            let mut dl = zeros(batch * 10);
            let loss = CrossEntropyLoss { label_smoothing: 0.2, reduction: Reduction::Sum };
            let stats = dev.cross_entropy(batch, 10, loss, &logits, &lab, &mut dl).unwrap();
            let (mut dm2, mut dhead) = (zeros(batch * 6), zeros(60));
            dev.linear_backward(ls, &m2, &hb, &dl, LinearGrads { dx: &mut dm2, dw: &mut dhead, db: None }).unwrap();
            let (mut dm1, mut da, mut dz, mut dbias) = (zeros(batch * 96), zeros(s.len()), zeros(s.len()), zeros(6));
            dev.max_pool_backward(p2, &dm2, &am2, &mut dm1).unwrap();
            dev.max_pool_backward(p1, &dm1, &am1, &mut da).unwrap();
            dev.gelu_backward(s.len(), &z, &da, &mut dz).unwrap();
            dev.channel_bias_backward(s, &dz, &mut dbias).unwrap();
            (stats, get(&dhead, 60), get(&dbias, 6))
        }

        if !has_device("gpu_airbench_layers_match_the_cpu") {
            return;
        }
        // Values exactly representable in f32, so both devices see the same.
        let v = |n: usize, k: f64| (0..n).map(|i| f64::from(((i as f64 * k).sin() * 2.0) as f32)).collect::<Vec<f64>>();
        let inputs = [v(4 * 3 * 81, 0.37), v(6 * 12, 0.73), v(6, 1.3), v(60, 0.91)];
        let labels = [3u8, 0, 9, 5];
        let (gs, gh, gb) = run(&CudaDevice::new(Precision::Exact).unwrap(), &inputs, &labels);
        let (cs, ch, cb) = run(&CpuDevice::<f64>::new(1).unwrap(), &inputs, &labels);
        println!("airbench layers: loss gpu {} cpu {}; head grad {:.2e}, bias grad {:.2e} from f64", gs.loss, cs.loss, rel(&gh, &ch), rel(&gb, &cb));
        assert!((gs.loss - cs.loss).abs() <= 1e-5 * cs.loss.abs(), "loss {} vs {}", gs.loss, cs.loss);
        assert_eq!(gs.correct, cs.correct);
        assert!(rel(&gh, &ch) <= 1e-4 && rel(&gb, &cb) <= 1e-4);
    }

    /// The airbench recipe's golden case (torch's float64 run) replayed on
    /// the GPU in f32, Muon's products included: within 1e-4 relative, as
    /// the f32 CPU device. Skips without a device.
    #[test]
    fn gpu_airbench_recipe_matches_torch() {
        if !has_device("gpu_airbench_recipe_matches_torch") {
            return;
        }
        let g = crate::airbench::golden::case();
        let summary = "airbench recipe on the GPU";
        frog_cpu::golden::run_suite(summary, &["airbench gpu f32"], |c| c, |_| crate::airbench::golden::replay(&CudaDevice::new(Precision::Exact).unwrap(), &g, 1e-4))
            .unwrap_or_else(|e| panic!("{e}"));
    }

    /// The same replay with Muon's iteration in bf16 (`--muon-precision
    /// bf16`): the mode is in effect (worse than f32's 1e-4). Its error of
    /// about 1e-2 per Muon update (frog-cuda's Muon cases) feeds the next
    /// steps' forward passes, so by the case's last step a small BatchNorm
    /// bias is 3.1e-1 off torch's float64 run; the bound here only catches
    /// a mode gone wrong. Skips without a device.
    #[test]
    fn gpu_airbench_recipe_with_bf16_muon() {
        if !has_device("gpu_airbench_recipe_with_bf16_muon") {
            return;
        }
        let g = crate::airbench::golden::case();
        let mut dev = CudaDevice::new(Precision::Exact).unwrap();
        dev.set_muon_precision(MuonPrecision::Bf16);
        assert!(dev.describe().contains("Muon in bf16"), "{}", dev.describe());
        let report = crate::airbench::golden::replay(&dev, &g, 0.5).unwrap_or_else(|e| panic!("bf16 Muon: {e}"));
        println!("airbench recipe, Muon in bf16: worst {:.2e} at {}", report.worst, report.worst_at);
        assert!(report.worst > 1e-4, "bf16 Newton-Schulz is not f32's: {:.2e}", report.worst);
    }

    /// Params of `net` on the host, in f64.
    fn params_f64<D: Device>(dev: &D, net: &Net<D>) -> Vec<Vec<f64>> {
        use frog_core::Scalar;
        net.params
            .iter()
            .map(|p| {
                let mut h = vec![D::Scalar::ZERO; p.len()];
                dev.download(&p.value, &mut h).unwrap();
                h.into_iter().map(Scalar::as_f64).collect()
            })
            .collect()
    }

    fn rel(a: &[f64], b: &[f64]) -> f64 {
        let d = a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max);
        d / b.iter().map(|y| y.abs()).fold(0.0, f64::max).max(1e-30)
    }

    /// How far from f64 (largest difference over largest entry) an f32 run
    /// of [`gpu_frog_steps_match_the_cpu`] may land on every parameter.
    /// Why not the f32 CPU's own distance: one f32 rounding at the edge of a
    /// discrete event moves the near-zero BatchNorm biases and, through
    /// FROG's scale-free step, rows of the weights, by up to 2.5e-2. The f32
    /// CPU lands on either side depending only on how its BatchNorm variance
    /// adds up: 2.45e-2 from f64 with 1 or 4 interleaved partial sums,
    /// 1.7e-6 with its 16; the GPU 2.45e-2, within 1e-6 of the CPU's
    /// 1-sum run on every parameter.
    const F32_EDGE: f64 = 3e-2;

    /// Two FROG training steps (sampled rows gathered on the device) of the
    /// small ResNet on the GPU, the f32 CPU device and the f64 CPU device
    /// from the same parameters and sample: the GPU's losses within 1e-5 of
    /// f64, and its parameters within 3x the f32 CPU device's distance from
    /// f64, or within [`F32_EDGE`] of f64 where a discrete event decides
    /// (see there). Skips without a device.
    #[test]
    fn gpu_frog_steps_match_the_cpu() {
        use std::sync::Arc;

        use frog_core::Config;

        use crate::data::loader::eval_batches;
        use crate::data::synthetic;
        use crate::optim::{Method, Optimizer};
        use crate::train::{train_step, Staging};

        fn run<D: Device>(dev: &D, init: &[Vec<f64>]) -> (Vec<f64>, Vec<Vec<f64>>) {
            use frog_core::Scalar;
            let (batch, sample) = (4, 2);
            let arch = Arch::by_name("resnet-small").unwrap();
            let host = eval_batches(Arc::new(synthetic::generate(0, 0, batch)), batch).unwrap().next().unwrap().unwrap();
            let cfg = Config { lr: 0.01, lr_other_ratio: 1.0, momentum: 0.9, weight_decay: 1e-5, tau: 1e-2, sample_size: Some(sample), ..Config::default() };
            let mut net = Net::new(dev, &arch, batch, 5).unwrap();
            for (p, v) in net.params.iter_mut().zip(init) {
                let h: Vec<D::Scalar> = v.iter().map(|&x| D::Scalar::of_f64(x)).collect();
                dev.upload(&h, &mut p.value).unwrap();
            }
            let mut opt = Optimizer::new(dev, Method::from(cfg), &mut net, batch, 9).unwrap();
            let mut st = Staging::new(dev, &arch, batch).unwrap();
            st.upload(dev, &host).unwrap();
            let losses = (0..2).map(|_| train_step(dev, &mut net, &mut opt, &st, batch).unwrap().loss).collect();
            (losses, params_f64(dev, &net))
        }

        if !has_device("gpu_frog_steps_match_the_cpu") {
            return;
        }
        let gpu = CudaDevice::new(Precision::Exact).unwrap();
        let init = params_f64(&gpu, &Net::new(&gpu, &Arch::by_name("resnet-small").unwrap(), 4, 5).unwrap());
        let (gl, gp) = run(&gpu, &init);
        let (fl, fp) = run(&CpuDevice::<f32>::new(1).unwrap(), &init);
        let (dl, dp) = run(&CpuDevice::<f64>::new(1).unwrap(), &init);
        for k in 0..2 {
            println!("step {k}: loss gpu {} cpu f32 {} cpu f64 {}", gl[k], fl[k], dl[k]);
            assert!((gl[k] - dl[k]).abs() <= 1e-5 * dl[k].abs(), "loss {} vs {}", gl[k], dl[k]);
        }
        for ((g, f), d) in gp.iter().zip(&fp).zip(&dp) {
            let (eg, ef) = (rel(g, d), rel(f, d));
            assert!(eg <= (3.0 * ef + 1e-5).max(F32_EDGE), "GPU params {eg:.2e} from f64, the f32 CPU's {ef:.2e}");
        }
        let worst = |p: &[Vec<f64>]| p.iter().zip(&dp).map(|(a, b)| rel(a, b)).fold(0.0, f64::max);
        println!("gpu_frog_steps_match_the_cpu: params from f64: gpu {:.2e}, cpu f32 {:.2e}", worst(&gp), worst(&fp));
    }
}
