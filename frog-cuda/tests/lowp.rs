//! GPU tests of bf16 and f16 sampled inputs (each prints that it was
//! skipped and passes without a device):
//!
//! - `gpu_lowp_golden_<mode>`: every mixed-precision golden case (`lowp/`)
//!   from its bf16 or f16 inputs in each precision mode, against the f64
//!   values, at the mode's tolerance (the constants below; the README's
//!   table states the same).
//! - the opt-in overflow check of `y` on the device.

mod common;

use common::device;
use frog_core::half::{bf16, f16};
use frog_core::{precondition_step_lowp, Config, Conv2d, Error as FrogError, Layer, LowpBackend, LowpBatch, ParamState, Params, Workspace, WorkspaceReq};
use frog_cpu::golden::{golden_dir, load_cases, run_case_lowp};
use frog_cuda::{Cuda, Precision};

/// f32 products from the exactly converted inputs: the f32 tolerance.
const EXACT_RTOL: f64 = 1e-4;
/// TF32 products (as `tests/gpu.rs`'s fast mode; every `lowp` case has a
/// full-rank sampled Fisher).
const FAST_RTOL: f64 = 3e-2;

/// Runs every mixed-precision case in `precision`; each must meet `rtol`.
fn golden_lowp(precision: Precision, rtol: f64, test: &str) {
    let Some(cuda) = device(precision, test) else { return };
    let dir = golden_dir().join("lowp");
    let cases = load_cases(&dir).unwrap_or_else(|e| panic!("{e}"));
    assert!(cases.len() >= 15, "too few mixed-precision cases in {}", dir.display());
    let (mut failures, mut worst) = (Vec::new(), 0.0f64);
    for case in &cases {
        match run_case_lowp(&cuda, case, rtol) {
            Ok(r) => {
                worst = worst.max(r.worst);
                println!("{test} {:<28} ok  worst {:.2e} at {}", case.name, r.worst, r.worst_at);
            }
            Err(e) => {
                println!("{test} {:<28} FAILED {e}", case.name);
                failures.push(format!("{}: {e}", case.name));
            }
        }
    }
    println!("{test}: {} of {} mixed-precision cases within rtol {rtol:.0e} on {}; worst error: {worst:.2e}", cases.len() - failures.len(), cases.len(), cuda.device_name());
    assert!(failures.is_empty(), "golden failures:\n{}", failures.join("\n"));
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
    let e = precondition_step_lowp(cuda, &cfg, &layer, &mut state, &mut ws, params, batch).unwrap_err();
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
