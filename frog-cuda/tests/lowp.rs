//! GPU tests of bf16 and f16 sampled inputs (each prints that it was
//! skipped and passes without a device):
//!
//! - `gpu_lowp_golden_<mode>`: every mixed-precision golden case (`lowp/`)
//!   from its bf16 or f16 inputs in each precision mode, against the f64
//!   values, at the mode's tolerance (the constants below; the README's
//!   table states the same).
//! - the opt-in overflow check of `y` on the device.
//! - `gpu_kfrog_<mode>_matches_the_cpu`: K-FROG in each 16-bit mode from
//!   inputs of its type against frog-cpu's f32 K-FROG on the same values.
//! - sampled inputs whose squares overflow f32, or (packed in f16) beyond
//!   f16's range: the patches' power-of-two gain, against frog-cpu's f64
//!   backend on the values unscaled.

#![deny(clippy::undocumented_unsafe_blocks)]

mod common;

use common::{device, frog_f32, frog_update, rel_diff, upload, values};
use frog_core::half::{bf16, f16};
use frog_core::{
    frog_step, kfrog_step, Backend, Config, Conv2d, Error as FrogError, KfrogBackend, KfrogBatch, KfrogConfig, KfrogState, Layer, LowpBackend, LowpBatch, ParamState, Params,
    Patches, Unguarded, Workspace, WorkspaceReq,
};
use frog_cpu::golden::{golden_dir, load_cases, run_case_lowp, Lowp, Tally};
use frog_cuda::{Cuda, Precision};

/// f32 products from the exactly converted inputs: the f32 tolerance.
const EXACT_RTOL: f64 = 1e-4;
/// TF32 products (as `tests/gpu.rs`'s fast mode; every `lowp` case has a
/// full-rank sampled Fisher).
const FAST_RTOL: f64 = 3e-2;

/// Runs every mixed-precision case in `precision`; each must meet `rtol`.
/// A 16-bit mode takes the cases of its own type and refuses the others
/// with [`frog_cuda::Error::InputType`].
fn golden_lowp(precision: Precision, rtol: f64, test: &str) {
    let Some(cuda) = device(precision, test) else { return };
    let dir = golden_dir().join("lowp");
    let cases = load_cases(&dir).unwrap_or_else(|e| panic!("{e}"));
    assert!(cases.len() >= 15, "too few mixed-precision cases in {}", dir.display());
    let takes = |l: Lowp| match precision {
        Precision::Bf16Split | Precision::Bf16 => l == Lowp::Bf16,
        Precision::F16 => l == Lowp::F16,
        _ => true,
    };
    let mut tally = Tally::default();
    for case in &cases {
        if takes(case.lowp.expect("x_dtype")) {
            tally.record(&format!("{test} "), &case.name, run_case_lowp(&cuda, case, rtol));
        } else {
            let e = run_case_lowp(&cuda, case, rtol).unwrap_err();
            assert!(e.contains("16-bit type"), "{test} {}: {e}", case.name);
        }
    }
    let summary = format!("{test}: mixed-precision cases within rtol {rtol:.0e} on {}", cuda.device_name());
    tally.finish(&summary).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn gpu_lowp_golden_exact() {
    golden_lowp(Precision::Exact, EXACT_RTOL, "gpu_lowp_golden_exact");
}

#[test]
fn gpu_lowp_golden_split() {
    golden_lowp(Precision::Split, EXACT_RTOL, "gpu_lowp_golden_split");
}

#[test]
fn gpu_lowp_golden_fast() {
    golden_lowp(Precision::Fast, FAST_RTOL, "gpu_lowp_golden_fast");
}

/// The 16-bit modes: bf16 with the direction split in two parts.
const BF16_SPLIT_RTOL: f64 = 1e-4;
/// bf16 with the direction rounded once.
const BF16_RTOL: f64 = 3e-2;
/// f16 with the direction's rows scaled and rounded once.
const F16_RTOL: f64 = 5e-3;

#[test]
fn gpu_lowp_golden_bf16_split() {
    golden_lowp(Precision::Bf16Split, BF16_SPLIT_RTOL, "gpu_lowp_golden_bf16_split");
}

#[test]
fn gpu_lowp_golden_bf16() {
    golden_lowp(Precision::Bf16, BF16_RTOL, "gpu_lowp_golden_bf16");
}

#[test]
fn gpu_lowp_golden_f16() {
    golden_lowp(Precision::F16, F16_RTOL, "gpu_lowp_golden_f16");
}

/// A step of a small conv layer from 16-bit `y` holding `bad` non-finite
/// entries, with the check on: the error, and nothing changed.
fn refused<H: frog_core::Half>(cuda: &Cuda, bad: H, test: &str)
where
    Cuda: LowpBackend<H, LowpBuffer = frog_cuda::HalfBuffer<H>, Error = frog_cuda::Error>,
{
    let layer = Layer::conv2d(Conv2d::new(3, 4, 3, [6, 6]).padding(1), false);
    let (r, batch) = (2, 4);
    let cfg = Config { lr: 0.1, momentum: 0.9, ..Config::default() };
    let mut state = ParamState::for_layer(cuda, &layer, &cfg).unwrap();
    let mut ws = Workspace::new(cuda, WorkspaceReq::new(cuda, &layer, r).unwrap()).unwrap();
    let w0 = common::values(layer.rows() * layer.weight_cols(), 1);
    let mut weight = cuda.upload(&w0).unwrap();
    let grad = cuda.upload(&common::values(w0.len(), 2)).unwrap();
    let x: Vec<H> = common::values(r * layer.input_len(), 3).iter().map(|&v| H::from_f32(v)).collect();
    let mut y: Vec<H> = common::values(r * layer.output_len(), 4).iter().map(|&v| H::from_f32(v * 1e-3)).collect();
    y[5] = bad;
    let (x, y) = (cuda.upload_half(&x).unwrap(), cuda.upload_half(&y).unwrap());
    let params = Params { weight: &mut weight, grad_weight: &grad, bias: None };
    let batch = LowpBatch { x: &x, y: &y, sample: r, batch_size: batch, check_y: true };
    let e = frog_step(cuda, &cfg, &layer, &mut state, &mut ws, params, batch, Unguarded).unwrap_err();
    assert_eq!(e, FrogError::NonFiniteInput { what: "y", entries: 1 }, "{test}");
    assert_eq!(state.steps(), 0);
    assert_eq!(cuda.download(&weight, w0.len()).unwrap(), w0);
}

#[test]
fn gpu_lowp_overflow_check_refuses_the_step() {
    let Some(cuda) = device(Precision::Exact, "gpu_lowp_overflow_check_refuses_the_step") else { return };
    refused(&cuda, bf16::INFINITY, "bf16 inf");
    refused(&cuda, f16::NAN, "f16 NaN");
    println!("gpu_lowp_overflow_check_refuses_the_step: bf16 inf and f16 NaN in y refused before any change on {}", cuda.device_name());
}

/// Max-norm relative error of `a` against `b`.
fn rel(a: &[f32], b: &[f64]) -> f64 {
    let diff = a.iter().zip(b).map(|(&x, &y)| (f64::from(x) - y).abs()).fold(0.0, f64::max);
    diff / b.iter().fold(0.0f64, |m, v| m.max(v.abs()))
}

/// The two patch products of a 16-bit mode on every tile, from inputs of
/// its type, against f64 host products of the same values; the direction
/// as small as real ones (1e-7), so f16's row scaling is needed.
fn half_products<H: frog_core::Half>(precision: Precision, rtol: f64, test: &str)
where
    Cuda: LowpBackend<H, LowpBuffer = frog_cuda::HalfBuffer<H>, Error = frog_cuda::Error>,
{
    let Some(mut cuda) = device(precision, test) else { return };
    let conv = Conv2d::new(5, 7, 3, [9, 9]).padding(1);
    let layer = Layer::conv2d(conv, true);
    let r = 3;
    let (rows, cols, l) = (layer.rows(), layer.cols(), layer.positions());
    let n = r * l;
    let x: Vec<H> = common::values(r * layer.input_len(), 7).iter().map(|&v| H::from_f32(v)).collect();
    let xf: Vec<f32> = x.iter().map(|h| h.to_f32()).collect();
    let mut host = vec![0.0f32; n * cols];
    for i in 0..r {
        let block = &mut host[i * l * cols..(i + 1) * l * cols];
        frog_cpu::im2col::im2col(&conv, &xf[i * layer.input_len()..(i + 1) * layer.input_len()], block, cols).unwrap();
        block.chunks_mut(cols).for_each(|row| row[cols - 1] = 1.0);
    }
    let v: Vec<f32> = common::values(rows * cols, 8).iter().map(|&e| e * 1e-7).collect();
    let u: Vec<f32> = common::values(rows * n, 9).iter().map(|&e| e * 1e-6).collect();
    let want_u: Vec<f64> = (0..rows).flat_map(|j| (0..n).map(move |p| (j, p))).map(|(j, p)| (0..cols).map(|c| f64::from(v[j * cols + c]) * f64::from(host[p * cols + c])).sum()).collect();
    let want_g: Vec<f64> = (0..rows).flat_map(|j| (0..cols).map(move |c| (j, c))).map(|(j, c)| (0..n).map(|p| f64::from(u[j * n + p]) * f64::from(host[p * cols + c])).sum()).collect();
    let xb = cuda.upload_half(&x).unwrap();
    let (vb, ub0) = (cuda.upload(&v).unwrap(), cuda.upload(&u).unwrap());
    for tile in common::TILES {
        cuda.set_gemm_tile(tile);
        let mut packed = cuda.zeros(cuda.patch_scratch_len(&layer, r)).unwrap();
        cuda.pack_patches_lowp(&layer, r, &xb, &mut packed).unwrap();
        let mut scratch = cuda.zeros(cuda.product_scratch_len(&layer, r)).unwrap();
        let mut p = Patches { layer: &layer, r, x: None, packed: &packed, scratch: &mut scratch };
        let mut ub = cuda.zeros(rows * n).unwrap();
        cuda.project(&mut p, &vb, &mut ub).unwrap();
        let eu = rel(&cuda.download(&ub, rows * n).unwrap(), &want_u);
        let mut gb = cuda.zeros(rows * cols).unwrap();
        cuda.back_project(&mut p, &ub0, &mut gb).unwrap();
        let eg = rel(&cuda.download(&gb, rows * cols).unwrap(), &want_g);
        println!("{test} tile {tile:?}: project {eu:.2e}, back_project {eg:.2e} (rtol {rtol:.0e})");
        assert!(eu < rtol && eg < rtol, "{test} tile {tile:?}: project {eu:.2e}, back_project {eg:.2e}");
    }
}

#[test]
fn gpu_lowp_products_bf16_split() {
    half_products::<bf16>(Precision::Bf16Split, 2e-5, "gpu_lowp_products_bf16_split");
}

#[test]
fn gpu_lowp_products_bf16() {
    half_products::<bf16>(Precision::Bf16, 5e-3, "gpu_lowp_products_bf16");
}

#[test]
fn gpu_lowp_products_f16() {
    half_products::<f16>(Precision::F16, 1e-3, "gpu_lowp_products_f16");
}

/// Two K-FROG steps of a conv layer in a 16-bit mode, from inputs holding
/// values of its type, against frog-cpu's f32 K-FROG on the same values:
/// the patches' column norms (`x_scaling`, read from the 16-bit packed
/// patches) within 1e-5, the direction within `rtol` (the mode's products).
fn kfrog_16bit<H: frog_core::Half>(precision: Precision, rtol: f64, test: &str) {
    let Some(cuda) = device(precision, test) else { return };
    let cpu = frog_cpu::Cpu::<f32>::with_threads(1).unwrap();
    let layer = Layer::conv2d(Conv2d::new(5, 7, 3, [6, 6]).padding(1), false);
    let cfg = KfrogConfig { lr: 0.1, momentum: 0.9, y_momentum: 0.5, eps: 1e-3, num_iters: 6, sample_size: Some(3), ..KfrogConfig::default() };
    let (bx, by, batch) = (3, 4, 8);
    let halves = |n: usize, seed: u64, s: f32| common::values(n, seed).iter().map(|&v| H::from_f32(v * s).to_f32()).collect::<Vec<f32>>();
    let n = layer.rows() * layer.weight_cols();
    let w0 = common::values(n, 1);
    let steps: Vec<[Vec<f32>; 3]> = (0..2).map(|k| [common::values(n, 10 + k), halves(bx * layer.input_len(), 20 + k, 1.0), halves(by * layer.output_len(), 30 + k, 1e-2)]).collect();
    let (gpu_out, cpu_out) = (kfrog_run(&cuda, &layer, &cfg, &w0, &steps, batch), kfrog_run(&cpu, &layer, &cfg, &w0, &steps, batch));
    for (k, ((gs, gd), (cs, cd))) in gpu_out.iter().zip(&cpu_out).enumerate() {
        let wide = |v: &[f32]| v.iter().map(|&e| f64::from(e)).collect::<Vec<f64>>();
        let (es, ed) = (rel(gs, &wide(cs)), rel(gd, &wide(cd)));
        println!("{test} step {}: x_scaling {es:.2e} (rtol 1e-5), direction {ed:.2e} (rtol {rtol:.0e}) from frog-cpu's f32", k + 1);
        assert!(es <= 1e-5 && ed <= rtol, "{test} step {}: x_scaling {es:.2e}, direction {ed:.2e}", k + 1);
    }
}

/// `steps` (gradient, x, y) of K-FROG on `backend`: each step's
/// `x_scaling` and direction.
fn kfrog_run<B: KfrogBackend<Scalar = f32>>(backend: &B, layer: &Layer, cfg: &KfrogConfig, w0: &[f32], steps: &[[Vec<f32>; 3]], batch: usize) -> Vec<(Vec<f32>, Vec<f32>)> {
    let up = |v: &[f32]| upload(backend, v);
    let down = |b: &B::Buffer, len: usize| {
        let mut v = vec![0.0; len];
        backend.read(b, 0, &mut v).unwrap();
        v
    };
    let (x_sample, y_sample) = (steps[0][1].len() / layer.input_len(), steps[0][2].len() / layer.output_len());
    let mut ws = Workspace::new(backend, WorkspaceReq::new(backend, layer, x_sample).unwrap()).unwrap();
    let mut state = KfrogState::new(backend, layer, cfg).unwrap();
    let mut weight = up(w0);
    let mut out = Vec::new();
    for [g, x, y] in steps {
        let (g, x, y) = (up(g), up(x), up(y));
        let b = KfrogBatch { x: &x, x_sample, y: &y, y_sample, batch_size: batch };
        kfrog_step(backend, cfg, layer, &mut state, &mut ws, &mut weight, &g, b).unwrap();
        let o = ws.kfrog_outputs();
        out.push((down(o.x_scaling, layer.weight_cols()), down(o.direction, w0.len())));
    }
    out
}

#[test]
fn gpu_kfrog_bf16_split_matches_the_cpu() {
    kfrog_16bit::<bf16>(Precision::Bf16Split, BF16_SPLIT_RTOL, "gpu_kfrog_bf16_split_matches_the_cpu");
}

#[test]
fn gpu_kfrog_bf16_matches_the_cpu() {
    kfrog_16bit::<bf16>(Precision::Bf16, BF16_RTOL, "gpu_kfrog_bf16_matches_the_cpu");
}

#[test]
fn gpu_kfrog_f16_matches_the_cpu() {
    kfrog_16bit::<f16>(Precision::F16, F16_RTOL, "gpu_kfrog_f16_matches_the_cpu");
}

/// Sampled bf16 inputs whose squares overflow f32 (1e20) in one sample
/// beside ordinary ones give, widened (the f32 mode) or packed in bf16 (the
/// bf16-split mode), the FROG step frog-cpu's f64 backend takes on the same
/// values unscaled.
#[test]
fn gpu_lowp_huge_bf16_inputs_give_the_unscaled_step() {
    let test = "gpu_lowp_huge_bf16_inputs_give_the_unscaled_step";
    let cpu = frog_cpu::Cpu::<f64>::with_threads(1).unwrap();
    let bf16s = |n: usize, seed: u64, scale: f32, from: usize| values(n, seed).iter().enumerate().map(|(e, &v)| bf16::from_f32(if e < from { v } else { v * scale })).collect::<Vec<bf16>>();
    let wide = |v: &[bf16]| v.iter().map(|h| h.to_f32()).collect::<Vec<f32>>();
    for (precision, rtol) in [(Precision::Exact, EXACT_RTOL), (Precision::Bf16Split, BF16_SPLIT_RTOL)] {
        let Some(cuda) = device(precision, test) else { return };
        for layer in [Layer::linear(5, 3, true), Layer::conv2d(Conv2d::new(2, 3, 3, [5, 5]).padding(1), true)] {
            let r = 2;
            let (x, y) = (bf16s(r * layer.input_len(), 3, 1e20, layer.input_len()), bf16s(r * layer.output_len(), 4, 1.0, 0));
            let want = frog_f32(&cpu, &layer, &wide(&x), &wide(&y));
            let (xb, yb) = (cuda.upload_half(&x).unwrap(), cuda.upload_half(&y).unwrap());
            let batch = LowpBatch { x: &xb, y: &yb, sample: r, batch_size: r, check_y: false };
            let got = frog_update(&cuda, &layer, r, |cfg, state, ws, params| frog_step(&cuda, cfg, &layer, state, ws, params, batch, Unguarded));
            let e = rel_diff(&got, &want);
            println!("{test} ({precision:?}, bias {}): the step within {e:.2e} of f64's (rtol {rtol:.0e})", layer.bias);
            assert!(got.iter().all(|v| v.is_finite()) && e < rtol, "{precision:?}: {e:e} from {want:?}: {got:?}");
        }
    }
}

/// f32 inputs above f16's largest finite value (65520 rounds to infinity
/// in f16) are scaled before the f16 mode packs them: the step is the one
/// frog-cpu's f64 backend takes on the values the patches hold, unscaled,
/// within the mode's tolerance.
#[test]
fn gpu_f16_mode_scales_f32_inputs_beyond_f16s_range() {
    let test = "gpu_f16_mode_scales_f32_inputs_beyond_f16s_range";
    let Some(cuda) = device(Precision::F16, test) else { return };
    let cpu = frog_cpu::Cpu::<f64>::with_threads(1).unwrap();
    let layer = Layer::conv2d(Conv2d::new(2, 3, 3, [5, 5]).padding(1), true);
    let r = 2;
    let mut x: Vec<f32> = values(r * layer.input_len(), 3).iter().map(|v| v * 6e4).collect();
    x[7] = 65520.0;
    let y = values(r * layer.output_len(), 4);
    // The gain 2^-16 brings 65520 into [0.5, 1); the patches hold each
    // value so scaled, rounded to f16.
    let c = 2f32.powi(-16);
    let held: Vec<f32> = x.iter().map(|&v| f16::from_f32(v * c).to_f32() / c).collect();
    let want = frog_f32(&cpu, &layer, &held, &y);
    let got = frog_f32(&cuda, &layer, &x, &y);
    let e = rel_diff(&got, &want);
    println!("{test}: the step within {e:.2e} of f64's on the packed values (rtol {F16_RTOL:.0e})");
    assert!(got.iter().all(|v| v.is_finite()) && e < F16_RTOL, "{e:e} from {want:?}: {got:?}");
}
