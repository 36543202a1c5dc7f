//! The prepared GPU run of frog-cuda: every golden case in each precision,
//! then one FROG optimizer step over all ResNet-18 (CIFAR) conv layers at
//! r = 64 timed in each precision, and a short table last.
//!
//! `FROG_GOLDEN_DIR=DIR gpu_check [--steps N] [--r R] [--layers N] [--no-golden]`
//! (defaults 10, 64, all 20); exits 0 with a message when
//! there is no device, 1 when a required golden case fails.

use std::time::Instant;

use frog_core::{precondition_step, BackendError, BackendErrorKind, Batch, Config, Conv2d, Layer, ParamState, Params, Workspace, WorkspaceReq};
use frog_cpu::golden::{golden_dir, load_cases, run_case, Target};
use frog_cuda::{Buffer, Cuda, Precision};

const PRECISIONS: [(Precision, &str, f64); 3] =
    [(Precision::Exact, "exact f32", 1e-4), (Precision::Split, "split 3xTF32", 1e-4), (Precision::Fast, "fast TF32", 3e-2)];

/// The conv layers of the CIFAR ResNet-18 (3x3 stem, four stages of two
/// basic blocks, 1x1 stride-2 shortcuts): `(c_in, c_out, k, stride, pad, input size)`.
fn resnet18_convs() -> Vec<Conv2d> {
    let mut v = vec![Conv2d::new(3, 64, 3, 1, 1, [32, 32])];
    let mut c_in = 64;
    let mut hw = 32;
    for (stage, c) in [64usize, 128, 256, 512].into_iter().enumerate() {
        for block in 0..2 {
            let stride = if stage > 0 && block == 0 { 2 } else { 1 };
            v.push(Conv2d::new(c_in, c, 3, stride, 1, [hw, hw]));
            let out = if stride == 2 { hw / 2 } else { hw };
            v.push(Conv2d::new(c, c, 3, 1, 1, [out, out]));
            if stride == 2 || c_in != c {
                v.push(Conv2d::new(c_in, c, 1, stride, 0, [hw, hw]));
            }
            c_in = c;
            hw = out;
        }
    }
    v
}

fn values(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0) * scale
        })
        .collect()
}

struct LayerRun {
    layer: Layer,
    state: ParamState<Cuda>,
    w: Buffer,
    g: Buffer,
    x: Buffer,
    y: Buffer,
}

/// Milliseconds per FROG step over all layers (mean of `steps` after a warm-up).
fn time_frog(cuda: &Cuda, cfg: &Config, runs: &mut [LayerRun], ws: &mut Workspace<Cuda>, r: usize, batch: usize, steps: usize) -> Result<f64, String> {
    let e = |e: frog_core::Error<frog_cuda::Error>| e.to_string();
    let mut one = |runs: &mut [LayerRun]| -> Result<(), String> {
        for lr in runs.iter_mut() {
            let params = Params { weight: &mut lr.w, grad_weight: &lr.g, bias: None };
            let b = Batch { x: &lr.x, y: &lr.y, sample: r, batch_size: batch };
            precondition_step(cuda, cfg, &lr.layer, &mut lr.state, ws, params, b).map_err(e)?;
        }
        Ok(())
    };
    one(runs)?;
    cuda.synchronize().map_err(|e| e.to_string())?;
    let t = Instant::now();
    for _ in 0..steps {
        one(runs)?;
    }
    cuda.synchronize().map_err(|e| e.to_string())?;
    Ok(t.elapsed().as_secs_f64() * 1e3 / steps as f64)
}

fn main() {
    let arg = |name: &str, default: usize| std::env::args().skip_while(|a| a != name).nth(1).and_then(|s| s.parse().ok()).unwrap_or(default);
    let steps = arg("--steps", 10);
    let r = arg("--r", 64);
    let layers = arg("--layers", usize::MAX);
    let golden = !std::env::args().any(|a| a == "--no-golden");
    let mut cuda = match Cuda::new(Precision::Exact) {
        Ok(c) => c,
        Err(e) if e.kind() == BackendErrorKind::NoDevice => {
            println!("gpu_check: SKIPPED, no CUDA device ({e})");
            return;
        }
        Err(e) => {
            eprintln!("gpu_check: the backend failed to start: {e}");
            std::process::exit(1);
        }
    };
    let mut table = Vec::new();
    let mut failed = false;
    table.push(format!("frog-cuda gpu_check on {} ({} SMs)", cuda.device_name(), cuda.sm_count()));

    // 1. Golden cases.
    let dir = golden_dir();
    match load_cases(&dir).map(|c| if golden { c } else { Vec::new() }) {
        Err(e) => {
            failed = true;
            table.push(format!("golden: cannot load {}: {e}", dir.display()));
        }
        Ok(cases) => {
            for (precision, name, rtol) in PRECISIONS {
                cuda.set_precision(precision);
                let (mut pass, mut worst, mut bad) = (0, 0.0f64, Vec::new());
                for case in &cases {
                    let full_rank = match &case.target {
                        Target::Layer(l) => case.sample_size * l.positions() >= l.cols(),
                        Target::Other(_) => true,
                    };
                    match run_case(&cuda, case, rtol) {
                        Ok(r) => {
                            pass += 1;
                            worst = worst.max(r.worst);
                        }
                        Err(e) => {
                            println!("golden {name} {}: {e}", case.name);
                            if precision != Precision::Fast || full_rank {
                                failed = true;
                            }
                            bad.push(case.name.clone());
                        }
                    }
                }
                table.push(format!(
                    "golden {name:<13} {pass:>2}/{} within {rtol:.0e} (worst {worst:.1e}){}",
                    cases.len(),
                    if bad.is_empty() { String::new() } else { format!("; outside: {}", bad.join(", ")) }
                ));
            }
        }
    }

    // 2. One FROG step over every ResNet-18 conv layer, r = 64 of a batch of 512.
    let batch = 512;
    let cfg = Config {
        lr: 0.01,
        momentum: 0.9,
        weight_decay: 1e-5,
        sample_size: Some(r),
        num_iters: 4,
        tau: 1e-6,
        lr_other_ratio: 1.0,
        ..Config::default()
    };
    let mut convs = resnet18_convs();
    convs.truncate(layers);
    let flops: f64 = convs.iter().map(|c| Layer::conv2d(*c, false).cg_flops(r, cfg.num_iters)).sum();
    let setup = || -> Result<(Vec<LayerRun>, Workspace<Cuda>), String> {
        let s = |e: frog_cuda::Error| e.to_string();
        let mut req = WorkspaceReq::default();
        let mut runs = Vec::new();
        for (k, c) in convs.iter().enumerate() {
            let layer = Layer::conv2d(*c, false);
            req = req.union(WorkspaceReq::new(&cuda, &layer, r));
            let n = layer.rows() * layer.weight_cols();
            runs.push(LayerRun {
                layer,
                state: ParamState::for_layer(&cuda, &layer, &cfg).map_err(s)?,
                w: cuda.upload(&values(n, 10 + k as u64, 0.05)).map_err(s)?,
                g: cuda.upload(&values(n, 50 + k as u64, 1e-3)).map_err(s)?,
                x: cuda.upload(&values(r * layer.input_len(), 90 + k as u64, 1.0)).map_err(s)?,
                y: cuda.upload(&values(r * layer.output_len(), 130 + k as u64, 1e-4)).map_err(s)?,
            });
        }
        let ws = Workspace::new(&cuda, req).map_err(s)?;
        Ok((runs, ws))
    };
    match setup() {
        Err(e) => {
            failed = true;
            table.push(format!("FROG step setup failed: {e}"));
        }
        Ok((mut runs, mut ws)) => {
            for (precision, name, _) in PRECISIONS {
                cuda.set_precision(precision);
                match time_frog(&cuda, &cfg, &mut runs, &mut ws, r, batch, steps) {
                    Ok(ms) => table.push(format!(
                        "FROG step {name:<13} {ms:>8.2} ms  ({} conv layers, r {r}, k {}, {:.2} TFLOP/s in the CG products)",
                        convs.len(),
                        cfg.num_iters,
                        flops / (ms * 1e-3) / 1e12
                    )),
                    Err(e) => {
                        failed = true;
                        table.push(format!("FROG step {name}: {e}"));
                    }
                }
            }
        }
    }

    println!("\n==== frog-cuda gpu_check ====");
    for line in &table {
        println!("{line}");
    }
    if failed {
        std::process::exit(1);
    }
}
