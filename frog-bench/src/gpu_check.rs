//! `frog-bench gpu-check` (feature `cuda`): the one prepared GPU run.
//!
//! Every golden case on the GPU in each precision (exact and split must
//! meet 1e-4; fast is reported against its measured tolerance), the GEMM
//! kernel's rate on the shapes, operand layouts and split-K settings of
//! FROG's products and of the convolutions in each precision and tile, one
//! FROG optimizer step over all 20 ResNet-18 conv layers at sample `r` per
//! precision and tile, one ResNet-18 training step
//! at batch 512 for SGD and FROG, PyTorch's ResNet-18 step on the same GPU
//! when `python3` has torch, and a short table last. The 16-bit modes
//! (bf16/f16 tensor cores) run the mixed-precision golden cases of their
//! type and time the FROG step from bf16/f16 inputs: the bench's f32
//! activations and output gradients converted once, up front. Muon runs its
//! golden cases as a group of the optimizer object in each `MuonPrecision`
//! (f32 within 1e-4, bf16 within its measured bound and at least bf16's
//! rounding off), and times its step on airbench94_muon's six filters in
//! each.
//!
//! Without a usable device it prints that it was skipped and succeeds;
//! with `FROG_REQUIRE_GPU=1` (the prepared GPU run) that is an error.

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use frog_core::half::{bf16, f16};
use frog_core::{muon_step, Batch, Config, Half, Layer, LowpBatch, MuonConfig, MuonScratch, MuonShape, MuonState, ParamGrad, ParamState, Params, SgdConfig, Unguarded, Workspace, WorkspaceReq};
use frog_cpu::golden::muon::{load_muon_cases, run_muon_case, MuonRoute};
use frog_cpu::golden::{golden_dir, load_cases, run_case, run_case_lowp, Lowp, Target};
use frog_cuda::{Buffer, Cuda, HalfBuffer, MuonPrecision, Order, Precision, Tile};

use crate::arch::Arch;
use crate::device::cuda::CudaDevice;
use crate::error::{Error, Result};
use crate::layers::{filled, resnet18_convs};
use crate::optim::Method;
use crate::throughput::time_steps;

/// Options of `gpu-check`.
#[derive(Clone, Debug, PartialEq)]
pub struct GpuCheckArgs {
    /// Timed repetitions of each measurement.
    pub steps: usize,
    /// FROG's sampled rows `r`.
    pub sample: usize,
    /// Whether to run the golden cases.
    pub golden: bool,
    /// PyTorch's ResNet-18 step script (skipped when missing or without torch).
    pub torch_script: PathBuf,
}

const PRECISIONS: [(Precision, &str, f64); 3] =
    [(Precision::Exact, "exact f32", 1e-4), (Precision::Split, "split 3xTF32", 1e-4), (Precision::Fast, "fast TF32", 3e-2)];

/// The 16-bit tensor-core modes, the input type each takes, and their
/// tolerance on the mixed-precision golden cases (as frog-cuda's tests).
const HALF_PRECISIONS: [(Precision, &str, f64, Feed); 3] = [
    (Precision::Bf16Split, "bf16 split", 1e-4, Feed::Bf16),
    (Precision::Bf16, "bf16", 3e-2, Feed::Bf16),
    (Precision::F16, "f16", 5e-3, Feed::F16),
];

/// Muon's precisions, their tolerance on the golden Muon cases and the
/// least worst error each case must show (bf16's rounding; as frog-cuda's
/// tests).
const MUON_PRECISIONS: [(MuonPrecision, &str, f64, f64); 2] = [(MuonPrecision::F32, "f32", 1e-4, 0.0), (MuonPrecision::Bf16, "bf16", 3e-2, 5e-4)];

/// airbench94_muon's six 3x3 filters as `(c_out, c_in)`: the weights its
/// Muon steps.
const AIRBENCH_FILTERS: [(usize, usize); 6] = [(64, 24), (64, 64), (256, 64), (256, 256), (256, 256), (256, 256)];

/// The inputs a FROG step is fed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Feed {
    F32,
    Bf16,
    F16,
}

const BATCH: usize = 512;

fn study_frog(sample: usize) -> Config {
    Config { lr: 0.01, lr_other_ratio: 1.0, momentum: 0.9, weight_decay: 1e-5, sample_size: Some(sample), ..Config::default() }
}

/// Golden cases in every precision: one table line each. Rows whose sample
/// has fewer positions than columns (`r*L < D'`) may miss fast mode's
/// tolerance (TF32 rounding, amplified by CG); every other miss fails.
fn golden_lines(cuda: &mut Cuda, table: &mut Vec<String>) -> bool {
    let dir = golden_dir();
    let cases = match load_cases(&dir) {
        Ok(c) => c,
        Err(e) => {
            table.push(format!("golden: cannot load {}: {e}", dir.display()));
            return false;
        }
    };
    let mut ok = true;
    for (precision, name, rtol) in PRECISIONS {
        cuda.set_precision(precision);
        let (mut pass, mut worst, mut outside) = (0, 0.0f64, Vec::new());
        for case in &cases {
            match run_case(&*cuda, case, rtol) {
                Ok(r) => {
                    pass += 1;
                    worst = worst.max(r.worst);
                }
                Err(e) => {
                    println!("golden {name} {}: {e}", case.name);
                    let full_rank = match &case.target {
                        Target::Layer(l) => case.sample_size * l.positions() >= l.cols(),
                        Target::Other(_) => true,
                    };
                    ok &= precision == Precision::Fast && !full_rank;
                    outside.push(case.name.clone());
                }
            }
        }
        let rest = if outside.is_empty() { String::new() } else { format!("; outside: {}", outside.join(", ")) };
        table.push(format!("golden {name:<13} {pass:>2}/{} within {rtol:.0e} (worst {worst:.1e}){rest}", cases.len()));
    }
    ok & lowp_golden_lines(cuda, table)
}

/// The mixed-precision golden cases (`lowp/`, bf16/f16 inputs) in every
/// f32 mode and in each 16-bit mode (the cases of its type): every miss fails.
fn lowp_golden_lines(cuda: &mut Cuda, table: &mut Vec<String>) -> bool {
    let dir = golden_dir().join("lowp");
    let cases = match load_cases(&dir) {
        Ok(c) => c,
        Err(e) => {
            table.push(format!("golden lowp: cannot load {}: {e}", dir.display()));
            return false;
        }
    };
    let f32_modes = PRECISIONS.map(|(p, name, rtol)| (p, name, rtol, Feed::F32));
    let mut ok = true;
    for (precision, name, rtol, feed) in f32_modes.into_iter().chain(HALF_PRECISIONS) {
        cuda.set_precision(precision);
        let takes = |l: Lowp| match feed {
            Feed::F32 => true,
            Feed::Bf16 => l == Lowp::Bf16,
            Feed::F16 => l == Lowp::F16,
        };
        let (mut pass, mut worst, mut run) = (0, 0.0f64, 0);
        for case in cases.iter().filter(|c| c.lowp.is_some_and(takes)) {
            run += 1;
            match run_case_lowp(&*cuda, case, rtol) {
                Ok(r) => {
                    pass += 1;
                    worst = worst.max(r.worst);
                }
                Err(e) => {
                    println!("golden lowp {name} {}: {e}", case.name);
                    ok = false;
                }
            }
        }
        table.push(format!("golden lowp {name:<13} {pass:>2}/{run} within {rtol:.0e} (worst {worst:.1e}; bf16/f16 inputs)"));
    }
    ok
}

/// Muon's golden cases (`muon/`) as a Muon group in each Muon precision:
/// one table line each; every miss fails.
fn muon_golden_lines(cuda: &mut Cuda, table: &mut Vec<String>) -> bool {
    let dir = golden_dir().join("muon");
    let cases = match load_muon_cases(&dir) {
        Ok(c) => c,
        Err(e) => {
            table.push(format!("golden muon: {e}"));
            return false;
        }
    };
    let mut ok = true;
    for (precision, name, rtol, floor) in MUON_PRECISIONS {
        cuda.set_muon_precision(precision);
        let (mut pass, mut least, mut worst) = (0, f64::INFINITY, 0.0f64);
        for case in &cases {
            match run_muon_case(&*cuda, case, rtol, MuonRoute::Group) {
                Ok(r) if r.worst >= floor => {
                    pass += 1;
                    least = least.min(r.worst);
                    worst = worst.max(r.worst);
                }
                Ok(r) => {
                    println!("golden muon {name} {}: worst error {:.2e} below {floor:.0e}", case.name, r.worst);
                    ok = false;
                }
                Err(e) => {
                    println!("golden muon {name} {}: {e}", case.name);
                    ok = false;
                }
            }
        }
        table.push(format!("golden muon {name:<13} {pass:>2}/{} within {rtol:.0e} (worst per case {least:.1e}..{worst:.1e})", cases.len()));
    }
    cuda.set_muon_precision(MuonPrecision::F32);
    ok
}

/// Milliseconds of one Muon step (airbench94_muon's settings: lr 0.24,
/// momentum 0.6, Nesterov, 3 Newton-Schulz steps) over 3x3 filters of
/// `(c_out, c_in)`, sharing one scratch, in each Muon precision: one line.
fn muon_lines(cuda: &mut Cuda, filters: &[(usize, usize)], steps: usize, table: &mut Vec<String>) -> Result<()> {
    let cfg = MuonConfig { lr: 0.24, momentum: 0.6, nesterov: true, ..MuonConfig::airbench() };
    let shapes = filters.iter().map(|&(o, i)| MuonShape::conv2d(o, i, 3, 3)).collect::<std::result::Result<Vec<_>, _>>().map_err(err)?;
    let most = |f: fn(&MuonShape) -> usize| shapes.iter().map(f).max().unwrap_or(0);
    let mut scratch = MuonScratch::new(&*cuda, most(MuonShape::entries), most(MuonShape::side)).map_err(err)?;
    let mut layers = Vec::new();
    for (k, s) in shapes.iter().enumerate() {
        let n = s.entries();
        let state = MuonState::new(&*cuda, n).map_err(err)?;
        layers.push((state, cuda.upload(&filled(n, 300 + k as u64)).map_err(err)?, cuda.upload(&filled(n, 400 + k as u64)).map_err(err)?));
    }
    // Per Newton-Schulz step: A (s x s over b), A A, and B X (s x b over s),
    // s the smaller side and b the larger.
    let flops: f64 = shapes.iter().map(|s| (s.side() * s.side()) as f64 * (4.0 * (s.entries() / s.side().max(1)) as f64 + 2.0 * s.side() as f64) * cfg.ns_steps as f64).sum();
    let mut line = format!("Muon step airbench ({} 3x3 filters, {} Newton-Schulz steps) ms:", shapes.len(), cfg.ns_steps);
    for (precision, name, ..) in MUON_PRECISIONS {
        cuda.set_muon_precision(precision);
        let c = &*cuda;
        let ms = time_ms(c, steps, || {
            for (shape, (state, w, g)) in shapes.iter().zip(layers.iter_mut()) {
                muon_step(c, &cfg, shape, state, &mut scratch, ParamGrad { param: w, grad: g }).map_err(err)?;
            }
            Ok(())
        })?;
        line.push_str(&format!(" {name} {ms:.3} ({:.1} TFLOP/s)", flops / ms / 1e9));
    }
    cuda.set_muon_precision(MuonPrecision::F32);
    table.push(line);
    Ok(())
}

/// One timed product: its name, `(m, n, k)`, how `A` and `B` are stored,
/// and whether a long K may be split.
type Gemm = (&'static str, (usize, usize, usize), Order, Order, bool);

use Order::{RowMajor as N, Transposed as T};

/// The GEMMs of one FROG step and one training step of ResNet-18 at batch
/// 512 (r = 64; convolutions in chunks of 512 MiB of scratch) as the
/// backend launches them: FROG's projection `V X^T` (X the `[r*L, D']`
/// patches, not split) and back-projection `U X` (split); a convolution's
/// forward `W col^T`, data gradient `T^T W` (neither split) and weight
/// gradient `T col` (split); and a square one for the device's peak.
const GEMMS: [Gemm; 7] = [
    ("square 4096", (4096, 4096, 4096), N, N, true),
    ("FROG project layer1", (64, 65_536, 577), N, T, false),
    ("FROG back-project layer1", (64, 577, 65_536), N, N, true),
    ("FROG project layer4", (512, 1024, 4609), N, T, false),
    ("conv forward layer1", (64, 208_896, 576), N, T, false),
    ("conv data grad layer3", (32_768, 2304, 256), T, N, false),
    ("conv weight grad layer3", (256, 2304, 32_768), N, N, true),
];

const TILES: [(Option<Tile>, &str); 3] = [(None, "auto"), (Some(Tile::T64), "64"), (Some(Tile::T128), "128")];

/// A backend or step error as the check's error, with the same message.
fn err(e: impl std::fmt::Display) -> Error {
    Error::new(e.to_string())
}

/// Milliseconds of `f` (mean of `steps` after a warm-up, synchronized at
/// both ends).
fn time_ms(cuda: &Cuda, steps: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    f()?;
    cuda.synchronize().map_err(err)?;
    let t = Instant::now();
    for _ in 0..steps {
        f()?;
    }
    cuda.synchronize().map_err(err)?;
    Ok(t.elapsed().as_secs_f64() * 1e3 / steps as f64)
}

/// TFLOP/s of `Cuda::matmul_as` on each of `shapes`, per precision and
/// forced tile: one table line per shape.
fn gemm_lines(cuda: &mut Cuda, shapes: &[Gemm], steps: usize, table: &mut Vec<String>) -> Result<()> {
    for &(name, (m, n, k), a_order, b_order, split) in shapes {
        let a = cuda.upload(&filled(m * k, 1)).map_err(err)?;
        let b = cuda.upload(&filled(k * n, 2)).map_err(err)?;
        let mut c = cuda.upload(&vec![0.0; m * n]).map_err(err)?;
        let layout = |o| if o == N { "N" } else { "T" };
        let mut line = format!("GEMM {name:<25} {m}x{n}x{k} {}{}{} TFLOP/s:", layout(a_order), layout(b_order), if split { " split-K" } else { "" });
        for (precision, pname, _) in PRECISIONS {
            cuda.set_precision(precision);
            line.push_str(&format!(" {}", pname.split(' ').next().unwrap_or(pname)));
            for (tile, tname) in &TILES[1..] {
                cuda.set_gemm_tile(*tile);
                let ms = time_ms(cuda, steps, || cuda.matmul_as((m, n, k), (&a, a_order), (&b, b_order), &mut c, split).map_err(err))?;
                line.push_str(&format!(" {tname}:{:.1}", 2.0 * (m * n * k) as f64 / ms / 1e9));
            }
        }
        cuda.set_gemm_tile(None);
        table.push(line);
    }
    Ok(())
}

struct LayerRun {
    layer: Layer,
    state: ParamState<Cuda>,
    w: Buffer,
    g: Buffer,
    x: Buffer,
    y: Buffer,
    /// `x` and `y` converted once, up front, for the 16-bit modes.
    bf16: (HalfBuffer<bf16>, HalfBuffer<bf16>),
    f16: (HalfBuffer<f16>, HalfBuffer<f16>),
}

/// One FROG optimizer step over all of `runs` (launches only), fed `feed`.
fn frog_step(cuda: &Cuda, cfg: &Config, runs: &mut [LayerRun], ws: &mut Workspace<Cuda>, feed: Feed) -> Result<()> {
    let r = cfg.sample_rows(BATCH);
    for lr in runs.iter_mut() {
        let params = Params { weight: &mut lr.w, grad_weight: &lr.g, bias: None };
        let (layer, state) = (&lr.layer, &mut lr.state);
        match feed {
            Feed::F32 => frog_core::frog_step(cuda, cfg, layer, state, ws, params, Batch { x: &lr.x, y: &lr.y, sample: r, batch_size: BATCH }, Unguarded),
            Feed::Bf16 => {
                let batch = LowpBatch { x: &lr.bf16.0, y: &lr.bf16.1, sample: r, batch_size: BATCH, check_y: false };
                frog_core::frog_step(cuda, cfg, layer, state, ws, params, batch, Unguarded)
            }
            Feed::F16 => {
                let batch = LowpBatch { x: &lr.f16.0, y: &lr.f16.1, sample: r, batch_size: BATCH, check_y: false };
                frog_core::frog_step(cuda, cfg, layer, state, ws, params, batch, Unguarded)
            }
        }
        .map_err(err)?;
    }
    Ok(())
}

/// Milliseconds of [`frog_step`] replayed from a CUDA graph of it (the
/// launch overhead gone; the graph keeps the host values of capture time,
/// which does not matter for timing).
fn time_frog_graph(cuda: &Cuda, cfg: &Config, runs: &mut [LayerRun], ws: &mut Workspace<Cuda>, steps: usize) -> Result<f64> {
    let mut failed = None;
    let graph = cuda
        .capture(|| {
            failed = frog_step(cuda, cfg, runs, ws, Feed::F32).err();
            Ok(())
        })
        .map_err(|e| Error::new(format!("capture: {e}")))?;
    if let Some(e) = failed {
        return Err(e);
    }
    time_ms(cuda, steps, || cuda.launch_graph(&graph).map_err(err))
}

/// `layers` with data on the device, and a workspace for all.
fn frog_setup(cuda: &Cuda, cfg: &Config, layers: impl Iterator<Item = Layer>) -> Result<(Vec<LayerRun>, Workspace<Cuda>)> {
    let scaled = |n: usize, seed: u64, s: f32| filled(n, seed).into_iter().map(|v| v * s).collect::<Vec<f32>>();
    let r = cfg.sample_rows(BATCH);
    let (mut req, mut runs) = (WorkspaceReq::default(), Vec::new());
    for (k, layer) in layers.enumerate() {
        let k = k as u64;
        req = req.union(WorkspaceReq::new(cuda, &layer, r).map_err(|e| Error::new(e.to_string()))?);
        let n = layer.rows() * layer.weight_cols();
        let (x, y) = (filled(r * layer.input_len(), 90 + k), scaled(r * layer.output_len(), 130 + k, 1e-4));
        runs.push(LayerRun {
            layer,
            state: ParamState::for_layer(cuda, &layer, cfg).map_err(err)?,
            w: cuda.upload(&scaled(n, 10 + k, 0.05)).map_err(err)?,
            g: cuda.upload(&scaled(n, 50 + k, 1e-3)).map_err(err)?,
            x: cuda.upload(&x).map_err(err)?,
            y: cuda.upload(&y).map_err(err)?,
            bf16: (halves(cuda, &x)?, halves(cuda, &y)?),
            f16: (halves(cuda, &x)?, halves(cuda, &y)?),
        });
    }
    let ws = Workspace::new(cuda, req).map_err(err)?;
    Ok((runs, ws))
}

/// `v` rounded to `H` once and uploaded.
fn halves<H: Half>(cuda: &Cuda, v: &[f32]) -> Result<HalfBuffer<H>>
where
    Cuda: frog_core::LowpBackend<H, LowpBuffer = HalfBuffer<H>, Error = frog_cuda::Error>,
{
    cuda.upload_half(&v.iter().map(|&e| H::from_f32(e)).collect::<Vec<H>>()).map_err(err)
}

/// PyTorch's one-line result, if its script runs here.
fn torch_line(script: &PathBuf) -> String {
    if !script.exists() {
        return format!("PyTorch: no script at {}", script.display());
    }
    match Command::new("python3").arg(script).output() {
        Ok(out) => String::from_utf8_lossy(&out.stdout).lines().last().unwrap_or("PyTorch: no output").to_string(),
        Err(e) => format!("PyTorch: python3 did not run ({e})"),
    }
}

/// Runs the check; `Ok(false)` when a required check failed. Without a
/// usable device it says so and succeeds, or, with `FROG_REQUIRE_GPU=1`,
/// fails naming why.
pub fn run(args: &GpuCheckArgs) -> Result<bool> {
    if args.steps == 0 || args.sample == 0 {
        return Err(Error::new("gpu-check: --steps and --sample must be at least 1"));
    }
    let mut cuda = match Cuda::for_check(Precision::Exact, "gpu-check") {
        Ok(Some(c)) => c,
        Ok(None) => return Ok(true),
        Err(e @ frog_cuda::Error::Skipped { .. }) => return Err(Error::new(e.to_string())),
        Err(e) => return Err(Error::new(format!("gpu-check: the CUDA backend failed to start: {e}"))),
    };
    let ((cc_major, cc_minor), (drv_major, drv_minor)) = (cuda.compute_capability(), cuda.driver_version());
    let head = format!(
        "frog-bench gpu-check on {} ({} SMs, compute capability {cc_major}.{cc_minor}, driver for CUDA {drv_major}.{drv_minor})",
        cuda.device_name(),
        cuda.sm_count()
    );
    println!("{head}");
    let mut table = vec![head];
    let mut ok = !args.golden || golden_lines(&mut cuda, &mut table);
    ok &= !args.golden || muon_golden_lines(&mut cuda, &mut table);

    let cfg = study_frog(args.sample);
    let (mut frog_ms, mut graph_ms) = (f64::NAN, f64::NAN);
    let convs = resnet18_convs().into_iter().flat_map(|rc| std::iter::repeat_n(Layer::conv2d(rc.conv, false), rc.count));
    match frog_setup(&cuda, &cfg, convs) {
        Err(e) => {
            ok = false;
            table.push(format!("FROG step setup failed: {e}"));
        }
        Ok((mut runs, mut ws)) => {
            let flops: f64 = runs.iter().map(|r| r.layer.cg_flops(args.sample, cfg.num_iters)).sum();
            let f32_modes = PRECISIONS.map(|(p, name, rtol)| (p, name, rtol, Feed::F32));
            for (precision, name, _, feed) in f32_modes.into_iter().chain(HALF_PRECISIONS) {
                cuda.set_precision(precision);
                let from = match feed {
                    Feed::F32 => "",
                    Feed::Bf16 => ", bf16 x/y converted once up front",
                    Feed::F16 => ", f16 x/y converted once up front",
                };
                let mut line = format!("FROG step {name:<13} (20 conv layers, r {}{from}) ms:", args.sample);
                for (tile, tname) in TILES {
                    cuda.set_gemm_tile(tile);
                    match time_ms(&cuda, args.steps, || frog_step(&cuda, &cfg, &mut runs, &mut ws, feed)) {
                        Ok(ms) => {
                            if precision == Precision::Fast && tile.is_none() {
                                frog_ms = ms;
                            }
                            line.push_str(&format!(" {tname} {ms:.2} ({:.1} TFLOP/s)", flops / ms / 1e9));
                        }
                        Err(e) => {
                            ok = false;
                            line.push_str(&format!(" {tname} failed: {e}"));
                        }
                    }
                }
                cuda.set_gemm_tile(None);
                table.push(line);
            }
            cuda.set_precision(Precision::Fast);
            match time_frog_graph(&cuda, &cfg, &mut runs, &mut ws, args.steps) {
                Ok(ms) => {
                    graph_ms = ms;
                    table.push(format!("FROG step fast TF32 replayed from a CUDA graph: {ms:.2} ms"));
                }
                Err(e) => {
                    ok = false;
                    table.push(format!("FROG step from a CUDA graph failed: {e}"));
                }
            }
        }
    }
    if let Err(e) = gemm_lines(&mut cuda, &GEMMS, args.steps, &mut table) {
        ok = false;
        table.push(format!("GEMM rates: {e}"));
    }
    if let Err(e) = muon_lines(&mut cuda, &AIRBENCH_FILTERS, args.steps, &mut table) {
        ok = false;
        table.push(format!("Muon step: {e}"));
    }
    drop(cuda);

    let arch = Arch::by_name("resnet18")?;
    let sgd = Method::from(SgdConfig { lr: 0.1, momentum: 0.9, weight_decay: 1e-4, nesterov: false, ..SgdConfig::default() });
    for (precision, name) in [(Precision::Split, "split 3xTF32"), (Precision::Fast, "fast TF32")] {
        let dev = CudaDevice::new(precision)?;
        let timed = time_steps(&dev, &arch, sgd, BATCH, args.steps).and_then(|s| Ok((s, time_steps(&dev, &arch, Method::from(cfg), BATCH, args.steps)?)));
        match timed {
            Ok((s, f)) => {
                let share = if precision == Precision::Fast {
                    format!("; FROG optimizer step (fast) {:.1} % of the SGD step, {:.1} % from a graph", 100.0 * frog_ms / (s * 1e3), 100.0 * graph_ms / (s * 1e3))
                } else {
                    String::new()
                };
                table.push(format!(
                    "ResNet-18 bs {BATCH} {name:<13} SGD {:7.1} ms ({:6.0} img/s)  FROG s {} {:7.1} ms  FROG/SGD {:.2}x{share}",
                    s * 1e3,
                    BATCH as f64 / s,
                    args.sample,
                    f * 1e3,
                    f / s
                ));
            }
            Err(e) => {
                ok = false;
                table.push(format!("ResNet-18 step {name}: {e}"));
            }
        }
    }
    table.push(torch_line(&args.torch_script));

    println!("\n==== frog-bench gpu-check ====");
    for line in &table {
        println!("{line}");
    }
    Ok(ok)
}

#[cfg(test)]
mod tests {
    use frog_core::Conv2d;

    use super::*;

    /// The check's sections on small shapes, so that the prepared GPU run
    /// does not meet their first error on the GPU: GEMM rates, FROG steps
    /// (finite weights that moved) and their graph replay. In CI this runs
    /// on the host emulator; without a device it prints SKIPPED.
    #[test]
    fn gpu_check_sections_run() {
        let test = "gpu_check_sections_run";
        let Some(mut cuda) = Cuda::for_check(Precision::Exact, test).unwrap_or_else(|e| panic!("{e}")) else { return };
        let mut table = Vec::new();
        let small = [("small", (70, 130, 40), N, T, false), ("small split", (70, 130, 400), T, N, true)];
        gemm_lines(&mut cuda, &small, 1, &mut table).unwrap();
        assert_eq!(table.len(), 2);
        for line in &table {
            assert_eq!(line.matches(':').count(), 1 + PRECISIONS.len() * 2, "{line}");
            println!("gpu_check_sections_run: {line}");
        }

        let cfg = study_frog(2);
        let layers = [Conv2d::new(4, 8, 3, [6, 6]).padding(1), Conv2d::new(8, 16, 1, [6, 6]).stride(2)].map(|c| Layer::conv2d(c, false));
        let (mut runs, mut ws) = frog_setup(&cuda, &cfg, layers.into_iter()).unwrap();
        let before = cuda.download(&runs[1].w, 16 * 8).unwrap();
        let ms = time_ms(&cuda, 1, || frog_step(&cuda, &cfg, &mut runs, &mut ws, Feed::F32)).unwrap();
        let after = cuda.download(&runs[1].w, 16 * 8).unwrap();
        assert!(ms > 0.0 && after.iter().all(|v| v.is_finite()) && after != before);
        // Each 16-bit mode from its inputs, converted once up front.
        for (precision, _, _, feed) in HALF_PRECISIONS {
            cuda.set_precision(precision);
            let before = cuda.download(&runs[0].w, 8 * 36).unwrap();
            time_ms(&cuda, 1, || frog_step(&cuda, &cfg, &mut runs, &mut ws, feed)).unwrap();
            let after = cuda.download(&runs[0].w, 8 * 36).unwrap();
            assert!(after.iter().all(|v| v.is_finite()) && after != before, "{precision:?}");
        }
        cuda.set_precision(Precision::Exact);
        let ms = time_frog_graph(&cuda, &cfg, &mut runs, &mut ws, 1).unwrap();
        assert!(ms > 0.0 && cuda.download(&runs[1].w, 16 * 8).unwrap().iter().all(|v| v.is_finite()));

        // Muon: the golden cases in each precision, and the timed step on a
        // wide and a tall filter.
        let mut table = Vec::new();
        assert!(muon_golden_lines(&mut cuda, &mut table), "{table:?}");
        muon_lines(&mut cuda, &[(8, 4), (40, 2)], 1, &mut table).unwrap();
        assert_eq!(table.len(), MUON_PRECISIONS.len() + 1);
        assert_eq!(table[2].matches("TFLOP/s").count(), MUON_PRECISIONS.len(), "{}", table[2]);
        for line in &table {
            println!("gpu_check_sections_run: {line}");
        }
    }
}
