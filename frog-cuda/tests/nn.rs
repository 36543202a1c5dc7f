//! frog_cuda::nn against frog_cpu::nn in f64, in exact mode (rtol 1e-5
//! max-norm relative). Prints SKIPPED and passes without a device.

#![deny(clippy::undocumented_unsafe_blocks)]

mod common;

use common::{device, TILES};
use frog_core::{Backend, Conv2d};
use frog_cpu::nn as cpu;
use frog_cpu::pool::ThreadPool;
use frog_cuda::nn::{self, BnGrads, BnParams, BnRunning, BnSaved, BnShape, BnTrainStats, ConvShape, CrossEntropyLoss, Epilogue, LinearGrads, PoolShape, Reduction};
use frog_cuda::{Buffer, Cuda, Error, Precision};

const RTOL: f64 = 1e-5;

/// Values exactly representable in f32, so both sides see the same inputs.
fn values(n: usize, seed: u64) -> Vec<f64> {
    common::values(n, seed).into_iter().map(f64::from).collect()
}

fn up(c: &Cuda, v: &[f64]) -> Buffer {
    c.upload(&v.iter().map(|&x| x as f32).collect::<Vec<_>>()).unwrap()
}

fn check(c: &Cuda, what: &str, buf: &Buffer, want: &[f64]) {
    let got = c.download(buf, want.len()).unwrap();
    let d = got.iter().zip(want).map(|(a, b)| (f64::from(*a) - b).abs()).fold(0.0, f64::max);
    let s = want.iter().map(|b| b.abs()).fold(0.0, f64::max).max(1e-30);
    println!("{what:<28} rel error {:.2e}", d / s);
    assert!(d / s <= RTOL, "{what}: relative error {:.3e}", d / s);
}

#[test]
fn gpu_nn_convolutions() {
    let Some(mut c) = device(Precision::Exact, "gpu_nn_convolutions") else { return };
    for tile in TILES {
        c.set_gemm_tile(tile);
        convolutions_on_tile(&c, &format!("tile {tile:?}"));
    }
}

/// `gpu_nn_convolutions` with the backend's GEMM tile as it is set.
fn convolutions_on_tile(c: &Cuda, tile: &str) {
    let pool = ThreadPool::new(1).unwrap();
    let convs = [
        Conv2d::new(3, 5, 3, [6, 6]).padding(1),
        Conv2d::new(4, 6, 1, [7, 7]).stride(2),
        Conv2d { c_in: 2, c_out: 3, kernel: [2, 3], stride: [2, 1], padding: [1, 0], dilation: [2, 1], groups: 1, input_hw: [7, 8] },
        // Big enough for the 128 tile and a split-K weight gradient.
        Conv2d::new(8, 130, 3, [12, 12]).padding(1),
    ];
    let batch = 3;
    for (k, conv) in convs.iter().enumerate() {
        let [ho, wo] = conv.output_hw().unwrap();
        let (in_len, out_len) = (conv.c_in * conv.input_hw[0] * conv.input_hw[1], conv.c_out * ho * wo);
        let d = conv.c_in * conv.kernel[0] * conv.kernel[1];
        let x = values(batch * in_len, 1 + k as u64);
        let w = values(conv.c_out * d, 20 + k as u64);
        let dy = values(batch * out_len, 40 + k as u64);
        let dx0 = values(batch * in_len, 60 + k as u64);
        let shape = ConvShape { conv: *conv, batch };
        let mut cs = vec![0.0; cpu::conv_scratch_len(shape, 1)];
        // Scratch for 2 samples: the batch of 3 runs in two chunks.
        let mut scratch = c.zeros(2 * ho * wo * (d + conv.c_out)).unwrap();
        assert_eq!(nn::conv_scratch_len(ConvShape { conv: *conv, batch: 2 }), scratch.len());
        let (xb, wb, dyb) = (up(c, &x), up(c, &w), up(c, &dy));

        let mut y = vec![0.0; batch * out_len];
        cpu::conv2d_forward(&pool, shape, &x, &w, &mut y, &mut cs);
        let mut yb = c.zeros(batch * out_len).unwrap();
        nn::conv_forward(c, shape, &xb, &wb, &mut yb, &mut scratch).unwrap();
        check(c, &format!("conv {k} {tile} forward"), &yb, &y);

        for accumulate in [false, true] {
            let mut dx = dx0.clone();
            cpu::conv2d_backward_data(&pool, shape, &dy, &w, &mut dx, accumulate, &mut cs);
            let mut dxb = up(c, &dx0);
            nn::conv_backward_data(c, shape, &dyb, &wb, &mut dxb, accumulate, &mut scratch).unwrap();
            check(c, &format!("conv {k} {tile} backward data {accumulate}"), &dxb, &dx);
        }

        let mut dw = vec![0.0; conv.c_out * d];
        cpu::conv2d_backward_weight(&pool, shape, &x, &dy, &mut dw, &mut cs);
        let mut dwb = c.zeros(conv.c_out * d).unwrap();
        nn::conv_backward_weight(c, shape, &xb, &dyb, &mut dwb, &mut scratch).unwrap();
        check(c, &format!("conv {k} {tile} backward weight"), &dwb, &dw);
    }
}

#[test]
fn gpu_nn_batchnorm_pool_linear_loss() {
    let Some(c) = device(Precision::Exact, "gpu_nn_batchnorm_pool_linear_loss") else { return };
    let pool = ThreadPool::new(1).unwrap();
    // A tiny shape (one part per channel), and one whose channels are
    // reduced in several parts (the two-stage reductions' atomics).
    for s in [BnShape { batch: 3, channels: 5, hw: 12 }, BnShape { batch: 8, channels: 3, hw: 1000 }] {
        let n = s.len();
        let x: Vec<f64> = values(n, 1).iter().map(|v| v * 3.0 + 0.5).collect();
        let res = values(n, 2);
        let gamma: Vec<f64> = values(s.channels, 3).iter().map(|v| 1.0 + 0.5 * v).collect();
        let beta = values(s.channels, 4);
        let (rm0, rv0): (Vec<f64>, Vec<f64>) = (values(s.channels, 5), values(s.channels, 6).iter().map(|v| 1.0 + v.abs()).collect());
        let eps = 1e-5;
        for (residual, relu) in [(false, false), (true, true), (false, true)] {
            let (mut rm, mut rv) = (rm0.clone(), rv0.clone());
            let (mut mean, mut invstd) = (vec![0.0; s.channels], vec![0.0; s.channels]);
            let mut y = vec![0.0; n];
            let params = BnParams { weight: &gamma[..], bias: &beta[..], eps };
            let epi = Epilogue { residual: residual.then_some(&res[..]), relu };
            let stats = BnTrainStats { running: BnRunning { mean: &mut rm[..], var: &mut rv[..] }, momentum: 0.1, saved: BnSaved { mean: &mut mean[..], invstd: &mut invstd[..] } };
            cpu::batch_norm_train(&pool, s, &x, params, stats, epi, &mut y);
            let (xb, gb, bb, resb) = (up(&c, &x), up(&c, &gamma), up(&c, &beta), up(&c, &res));
            let (mut rmb, mut rvb) = (up(&c, &rm0), up(&c, &rv0));
            let (mut meanb, mut invb) = (c.zeros(s.channels).unwrap(), c.zeros(s.channels).unwrap());
            let mut yb = c.zeros(n).unwrap();
            let p = BnParams { weight: &gb, bias: &bb, eps };
            let stats = BnTrainStats { running: BnRunning { mean: &mut rmb, var: &mut rvb }, momentum: 0.1, saved: BnSaved { mean: &mut meanb, invstd: &mut invb } };
            nn::bn_train(&c, s, &xb, p, stats, Epilogue { residual: residual.then_some(&resb), relu }, &mut yb).unwrap();
            let tag = format!("bn {}x{}x{} r{} relu{}", s.batch, s.channels, s.hw, u8::from(residual), u8::from(relu));
            check(&c, &format!("{tag} train y"), &yb, &y);
            check(&c, &format!("{tag} running mean"), &rmb, &rm);
            check(&c, &format!("{tag} running var"), &rvb, &rv);
            check(&c, &format!("{tag} saved mean"), &meanb, &mean);
            check(&c, &format!("{tag} saved invstd"), &invb, &invstd);

            let mut ye = vec![0.0; n];
            cpu::batch_norm_eval(&pool, s, &x, params, BnRunning { mean: &rm, var: &rv }, epi, &mut ye);
            let mut yeb = c.zeros(n).unwrap();
            nn::bn_eval(&c, s, &xb, p, BnRunning { mean: &rmb, var: &rvb }, Epilogue { residual: residual.then_some(&resb), relu }, &mut yeb).unwrap();
            check(&c, &format!("{tag} eval y"), &yeb, &ye);

            let dy0 = values(n, 7);
            let mut dy = dy0.clone();
            let (mut dx, mut dg, mut db) = (vec![0.0; n], vec![0.0; s.channels], vec![0.0; s.channels]);
            let grads = BnGrads { dy: &mut dy[..], dx: &mut dx[..], dweight: &mut dg[..], dbias: &mut db[..] };
            cpu::batch_norm_backward(&pool, s, &x, BnSaved { mean: &mean, invstd: &invstd }, &gamma, relu.then_some(&y[..]), grads);
            let mut dyb = up(&c, &dy0);
            let (mut dxb, mut dgb, mut dbb) = (c.zeros(n).unwrap(), c.zeros(s.channels).unwrap(), c.zeros(s.channels).unwrap());
            let grads = BnGrads { dy: &mut dyb, dx: &mut dxb, dweight: &mut dgb, dbias: &mut dbb };
            nn::bn_backward(&c, s, &xb, BnSaved { mean: &meanb, invstd: &invb }, &gb, relu.then_some(&yb), grads).unwrap();
            check(&c, &format!("{tag} backward dy masked"), &dyb, &dy);
            check(&c, &format!("{tag} backward dx"), &dxb, &dx);
            check(&c, &format!("{tag} backward dweight"), &dgb, &dg);
            check(&c, &format!("{tag} backward dbias"), &dbb, &db);
        }
    }

    // Pooling.
    let (planes, hw) = (7, 16);
    let x = values(planes * hw, 8);
    let mut y = vec![0.0; planes];
    cpu::global_avg_pool(planes, hw, &x, &mut y);
    let mut yb = c.zeros(planes).unwrap();
    nn::avg_pool(&c, planes, hw, &up(&c, &x), &mut yb).unwrap();
    check(&c, "avg pool", &yb, &y);
    let mut dx = vec![0.0; planes * hw];
    cpu::global_avg_pool_backward(planes, hw, &y, &mut dx);
    let mut dxb = c.zeros(planes * hw).unwrap();
    nn::avg_pool_backward(&c, planes, hw, &yb, &mut dxb).unwrap();
    check(&c, "avg pool backward", &dxb, &dx);

    // Linear.
    let ls = nn::LinearShape { batch: 9, d_in: 70, d_out: 10 };
    let (x, w, b, dy) = (values(9 * 70, 9), values(10 * 70, 10), values(10, 11), values(9 * 10, 12));
    let mut y = vec![0.0; 90];
    cpu::linear_forward(&pool, ls, &x, &w, Some(&b[..]), &mut y);
    let (xb, wb, bb, dyb) = (up(&c, &x), up(&c, &w), up(&c, &b), up(&c, &dy));
    let mut yb = c.zeros(90).unwrap();
    nn::linear_forward(&c, ls, &xb, &wb, Some(&bb), &mut yb).unwrap();
    check(&c, "linear forward", &yb, &y);
    let (mut dx, mut dw, mut db) = (vec![0.0; 9 * 70], vec![0.0; 700], vec![0.0; 10]);
    cpu::linear_backward(&pool, ls, &x, &w, &dy, LinearGrads { dx: &mut dx[..], dw: &mut dw[..], db: Some(&mut db[..]) });
    let (mut dxb, mut dwb, mut dbb) = (c.zeros(9 * 70).unwrap(), c.zeros(700).unwrap(), c.zeros(10).unwrap());
    nn::linear_backward(&c, ls, &xb, &wb, &dyb, LinearGrads { dx: &mut dxb, dw: &mut dwb, db: Some(&mut dbb) }).unwrap();
    check(&c, "linear backward dx", &dxb, &dx);
    check(&c, "linear backward dw", &dwb, &dw);
    check(&c, "linear backward db", &dbb, &db);

    // Cross-entropy.
    let (batch, classes) = (9, 10);
    let logits: Vec<f64> = values(batch * classes, 13).iter().map(|v| v * 4.0).collect();
    let labels: Vec<u8> = (0..batch).map(|i| (i * 7 % classes) as u8).collect();
    let mut dl = vec![0.0; batch * classes];
    let stats = cpu::softmax_cross_entropy(classes, CrossEntropyLoss::default(), &logits, &labels, &mut dl);
    let lb = c.upload(&labels.iter().map(|&l| f32::from(l)).collect::<Vec<_>>()).unwrap();
    let mut dlb = c.zeros(batch * classes).unwrap();
    let mut sc = c.zeros(nn::cross_entropy_scratch_len(batch)).unwrap();
    let got = nn::cross_entropy(&c, batch, classes, CrossEntropyLoss::default(), &up(&c, &logits), &lb, &mut dlb, &mut sc).unwrap();
    println!("cross entropy loss {} (cpu {}), correct {} (cpu {})", got.loss, stats.loss, got.correct, stats.correct);
    assert!((got.loss - stats.loss).abs() <= 1e-6 * stats.loss.abs());
    assert_eq!(got.correct, stats.correct);
    check(&c, "cross entropy dlogits", &dlb, &dl);
}

/// The layers of airbench94_muon against frog-cpu's in f64: the exact
/// GELU, max-pooling (31 -> 15 at k = 2, 3 -> 1 at k = 3, ties, a NaN),
/// the whitening convolution's channel bias, the bias-free head and the
/// smoothed, summed loss; and the errors of bad arguments.
#[test]
fn gpu_nn_airbench_layers() {
    let Some(c) = device(Precision::Exact, "gpu_nn_airbench_layers") else { return };
    let pool = ThreadPool::new(1).unwrap();

    // GELU over [-6, 6), its tails included.
    let n = 3000;
    let x: Vec<f64> = values(n, 31).iter().map(|v| v * 6.0).collect();
    let dy = values(n, 32);
    let (mut y, mut dx) = (vec![0.0; n], vec![0.0; n]);
    cpu::gelu(&pool, n, &x, &mut y);
    cpu::gelu_backward(&pool, n, &x, &dy, &mut dx);
    let (xb, dyb) = (up(&c, &x), up(&c, &dy));
    let (mut yb, mut dxb) = (c.zeros(n).unwrap(), c.zeros(n).unwrap());
    nn::gelu(&c, n, &xb, &mut yb).unwrap();
    nn::gelu_backward(&c, n, &xb, &dyb, &mut dxb).unwrap();
    check(&c, "gelu", &yb, &y);
    check(&c, "gelu backward", &dxb, &dx);

    // Max-pooling: the maxima, the argmax and the routed gradient are
    // exact. Values on a coarse grid, so windows hold ties.
    for (planes, hw, k) in [(6, [31, 31], 2), (4, [3, 3], 3), (3, [8, 7], 3)] {
        let s = PoolShape { planes, input_hw: hw, kernel: k };
        let [ho, wo] = s.output_hw().unwrap();
        let (in_len, out_len) = (planes * hw[0] * hw[1], planes * ho * wo);
        let x: Vec<f64> = values(in_len, 33).iter().map(|v| (v * 4.0).round()).collect();
        let dy = values(out_len, 34);
        let (mut y, mut am, mut dx) = (vec![0.0; out_len], vec![0.0; out_len], vec![0.0; in_len]);
        cpu::max_pool2d(&pool, s, &x, &mut y, &mut am);
        cpu::max_pool2d_backward(&pool, s, &dy, &am, &mut dx);
        let (mut yb, mut amb, mut dxb) = (c.zeros(out_len).unwrap(), c.zeros(out_len).unwrap(), up(&c, &vec![7.0; in_len]));
        nn::max_pool(&c, s, &up(&c, &x), &mut yb, &mut amb).unwrap();
        nn::max_pool_backward(&c, s, &up(&c, &dy), &amb, &mut dxb).unwrap();
        let tag = format!("max pool {hw:?} k {k}");
        let exact = |what: &str, buf: &Buffer, want: &[f64]| {
            let got: Vec<f64> = c.download(buf, want.len()).unwrap().into_iter().map(f64::from).collect();
            assert!(got == want, "{tag}: {what} differs from the CPU's");
        };
        exact("y", &yb, &y);
        exact("argmax", &amb, &am);
        exact("dx", &dxb, &dx);
        println!("{tag}: y, argmax and dx exact");
    }
    // PyTorch's rule: a NaN wins, the last of several.
    let s = PoolShape { planes: 1, input_hw: [3, 3], kernel: 3 };
    let x = [1.0, f32::NAN, 9.0, 5.0, 2.0, f32::NAN, 9.0, 0.0, 1.0];
    let (mut yb, mut amb) = (c.zeros(1).unwrap(), c.zeros(1).unwrap());
    nn::max_pool(&c, s, &c.upload(&x).unwrap(), &mut yb, &mut amb).unwrap();
    assert!(c.download(&yb, 1).unwrap()[0].is_nan() && c.download(&amb, 1).unwrap() == [5.0], "the last NaN takes the window");

    // The whitening convolution's bias: 24 channels of 4 x 31 x 31, reduced
    // in several parts per channel.
    let s = BnShape { batch: 4, channels: 24, hw: 961 };
    let (y0, bias, dy) = (values(s.len(), 35), values(s.channels, 36), values(s.len(), 37));
    let (mut y, mut db) = (y0.clone(), vec![0.0; s.channels]);
    cpu::add_channel_bias(&pool, s, &bias, &mut y);
    cpu::channel_bias_backward(&pool, s, &dy, &mut db);
    let (mut yb, mut dbb) = (up(&c, &y0), up(&c, &vec![3.0; s.channels]));
    nn::add_channel_bias(&c, s, &up(&c, &bias), &mut yb).unwrap();
    nn::channel_bias_backward(&c, s, &up(&c, &dy), &mut dbb).unwrap();
    check(&c, "channel bias", &yb, &y);
    check(&c, "channel bias backward", &dbb, &db);

    // The head: Linear(256, 10, bias=False).
    let ls = nn::LinearShape { batch: 9, d_in: 256, d_out: 10 };
    let (x, w, dy) = (values(9 * 256, 38), values(10 * 256, 39), values(9 * 10, 40));
    let mut y = vec![0.0; 90];
    cpu::linear_forward(&pool, ls, &x, &w, None, &mut y);
    let (xb, wb) = (up(&c, &x), up(&c, &w));
    let mut yb = c.zeros(90).unwrap();
    nn::linear_forward(&c, ls, &xb, &wb, None, &mut yb).unwrap();
    check(&c, "linear without bias", &yb, &y);
    let (mut dx, mut dw) = (vec![0.0; 9 * 256], vec![0.0; 10 * 256]);
    cpu::linear_backward(&pool, ls, &x, &w, &dy, LinearGrads { dx: &mut dx[..], dw: &mut dw[..], db: None });
    let (mut dxb, mut dwb) = (c.zeros(9 * 256).unwrap(), c.zeros(10 * 256).unwrap());
    nn::linear_backward(&c, ls, &xb, &wb, &up(&c, &dy), LinearGrads { dx: &mut dxb, dw: &mut dwb, db: None }).unwrap();
    check(&c, "linear without bias dx", &dxb, &dx);
    check(&c, "linear without bias dw", &dwb, &dw);

    // airbench's loss: smoothing 0.2, summed; and averaged.
    let (batch, classes) = (9, 10);
    let logits: Vec<f64> = values(batch * classes, 41).iter().map(|v| v * 4.0).collect();
    let labels: Vec<u8> = (0..batch).map(|i| (i * 3 % classes) as u8).collect();
    let lb = c.upload(&labels.iter().map(|&l| f32::from(l)).collect::<Vec<_>>()).unwrap();
    let mut sc = c.zeros(nn::cross_entropy_scratch_len(batch)).unwrap();
    for reduction in [Reduction::Sum, Reduction::Mean] {
        let loss = CrossEntropyLoss { label_smoothing: 0.2, reduction };
        let mut dl = vec![0.0; batch * classes];
        let want = cpu::softmax_cross_entropy(classes, loss, &logits, &labels, &mut dl);
        let mut dlb = c.zeros(batch * classes).unwrap();
        let got = nn::cross_entropy(&c, batch, classes, loss, &up(&c, &logits), &lb, &mut dlb, &mut sc).unwrap();
        println!("smoothed cross entropy {reduction:?}: loss {} (cpu {})", got.loss, want.loss);
        assert!((got.loss - want.loss).abs() <= 1e-6 * want.loss.abs(), "{reduction:?}: loss {} vs {}", got.loss, want.loss);
        assert_eq!(got.correct, want.correct);
        check(&c, &format!("smoothed cross entropy {reduction:?} dlogits"), &dlb, &dl);
    }

    // Bad arguments are errors.
    let mut dlb = c.zeros(batch * classes).unwrap();
    let bad = CrossEntropyLoss { label_smoothing: 1.5, reduction: Reduction::Sum };
    let e = nn::cross_entropy(&c, batch, classes, bad, &up(&c, &logits), &lb, &mut dlb, &mut sc).unwrap_err();
    assert!(matches!(e, Error::Kernel { name: "cross_entropy", .. }), "{e}");
    let (xb, mut yb, mut amb) = (c.zeros(10).unwrap(), c.zeros(5).unwrap(), c.zeros(5).unwrap());
    for k in [0, 3] {
        let e = nn::max_pool(&c, PoolShape { planes: 1, input_hw: [2, 5], kernel: k }, &xb, &mut yb, &mut amb).unwrap_err();
        assert!(matches!(e, Error::Kernel { name: "max_pool", .. }), "k {k}: {e}");
    }
    let e = nn::max_pool(&c, PoolShape { planes: 2, input_hw: [2, 5], kernel: 2 }, &xb, &mut yb, &mut amb).unwrap_err();
    assert!(matches!(e, Error::BufferTooShort { what: "x", needed: 20, len: 10 }), "{e}");
    let e = nn::gelu(&c, 11, &xb, &mut yb).unwrap_err();
    assert!(matches!(e, Error::BufferTooShort { what: "x", needed: 11, len: 10 }), "{e}");
    let s = BnShape { batch: 1, channels: 6, hw: 1 };
    let e = nn::channel_bias_backward(&c, s, &xb, &mut yb).unwrap_err();
    assert!(matches!(e, Error::BufferTooShort { what: "db", needed: 6, len: 5 }), "{e}");
}

#[test]
fn gpu_nn_gather() {
    let Some(c) = device(Precision::Exact, "gpu_nn_gather") else { return };
    let (block, rows) = (37, 9);
    let src = values(block * rows, 21);
    let indices = [7usize, 0, 3, 8];
    let want: Vec<f64> = indices.iter().flat_map(|&k| src[k * block..(k + 1) * block].to_vec()).collect();
    let mut idx = c.zeros(indices.len()).unwrap();
    let mut dst = c.zeros(indices.len() * block).unwrap();
    nn::gather(&c, block, &indices, &mut idx, &up(&c, &src), &mut dst).unwrap();
    check(&c, "gather", &dst, &want);
}
