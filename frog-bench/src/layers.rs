//! The `layers` benchmark: one FROG preconditioning step of each conv layer
//! of the CIFAR-10 ResNet-18 on frog-cpu, in f32, from f32 inputs and, beside
//! them, from bf16 inputs (the f32 activations and output gradients
//! converted to bf16 once, up front, as autocast would hand them over; the
//! step converts them while packing and computes in f32).
//!
//! Each step starts from sampled inputs, output gradients and the gradient
//! already in memory and runs the whole rule (momentum, patch packing,
//! trace, Lambda, the K CG iterations, row scale, update), not the
//! forward/backward pass. FLOP counts are the analytic `4*K*N*D*R` of the
//! CG products (`N` = sample x Ho x Wo positions, `D = C_in*kh*kw`,
//! `R = C_out`) of the direct algorithm, whichever algorithm runs: the
//! rate is the effective one, comparable with the GEMM rate printed beside
//! it even where Winograd does fewer multiplications. `--direct` forces
//! the im2col path everywhere, so both are measured in the same build.

use std::time::{Duration, Instant};

use serde::Serialize;

use frog_core::half::bf16;
use frog_core::{frog_step, Batch, Config, Conv2d, Layer, LowpBatch, ParamState, Params, Unguarded, Workspace, WorkspaceReq};
use frog_cpu::gemm::matmul_dense;
use frog_cpu::{Algorithm, Cpu};

/// Options of the `layers` subcommand.
#[derive(Clone, Debug, PartialEq, clap::Args)]
pub struct LayersArgs {
    /// Sampled rows r
    #[arg(long, value_name = "N", default_value_t = 64)]
    pub sample: usize,
    /// CG iterations K
    #[arg(long, value_name = "N", default_value_t = 4)]
    pub iters: usize,
    /// CPU threads (0: all)
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub threads: usize,
    /// JSON lines instead of a table
    #[arg(long)]
    pub json: bool,
    /// Run every layer's products as im2col GEMMs (no Winograd)
    #[arg(long)]
    pub direct: bool,
}

impl Default for LayersArgs {
    fn default() -> Self {
        Self { sample: 64, iters: 4, threads: 0, json: false, direct: false }
    }
}

/// One layer's line of `--json`.
#[derive(Serialize)]
struct LayerLine<'a> {
    name: &'a str,
    c_in: usize,
    c_out: usize,
    hw: usize,
    stride: usize,
    kernel: usize,
    count: usize,
    sample: usize,
    median_ms: f64,
    gflops: f64,
    algorithm: &'a str,
    gemm_fraction: f64,
    /// The same step from bf16 inputs.
    bf16_median_ms: f64,
}

/// The last line of `--json`.
#[derive(Serialize)]
struct TotalLine {
    total_ms: f64,
    total_bf16_ms: f64,
    total_gflop: f64,
    gflops: f64,
    gemm_2048_gflops: f64,
}

/// One JSON line on stdout.
fn print_json(value: &impl Serialize) -> Result<(), String> {
    println!("{}", serde_json::to_string(value).map_err(|e| e.to_string())?);
    Ok(())
}

/// One distinct conv layer of ResNet-18 and how often it occurs.
#[derive(Clone, Debug)]
pub struct ResnetConv {
    /// Short name.
    pub name: &'static str,
    /// Geometry.
    pub conv: Conv2d,
    /// Occurrences in the network.
    pub count: usize,
}

/// The conv layers of the CIFAR-10 ResNet-18 (3x3 stem, no max-pool,
/// BasicBlocks `[2, 2, 2, 2]`, 1x1 stride-2 shortcuts): 11 shapes, 20 layers.
pub fn resnet18_convs() -> Vec<ResnetConv> {
    let c = |name, c_in, c_out, k, stride, hw: usize, count| ResnetConv {
        name,
        conv: Conv2d::new(c_in, c_out, k, [hw, hw]).stride(stride).padding(k / 2),
        count,
    };
    vec![
        c("stem", 3, 64, 3, 1, 32, 1),
        c("l1.conv", 64, 64, 3, 1, 32, 4),
        c("l2.down", 64, 128, 3, 2, 32, 1),
        c("l2.conv", 128, 128, 3, 1, 16, 3),
        c("l2.short", 64, 128, 1, 2, 32, 1),
        c("l3.down", 128, 256, 3, 2, 16, 1),
        c("l3.conv", 256, 256, 3, 1, 8, 3),
        c("l3.short", 128, 256, 1, 2, 16, 1),
        c("l4.down", 256, 512, 3, 2, 8, 1),
        c("l4.conv", 512, 512, 3, 1, 4, 3),
        c("l4.short", 256, 512, 1, 2, 8, 1),
    ]
}

/// The first `n` of `values`, or an error naming `what` when the memory
/// for them cannot be had (at the largest samples the inputs alone take
/// gigabytes: a refused allocation is a message, not an abort).
fn try_collect<T>(what: &str, n: usize, values: impl Iterator<Item = T>) -> Result<Vec<T>, String> {
    let mut v = Vec::new();
    v.try_reserve_exact(n).map_err(|_| format!("out of memory for {what} ({n} entries of {} bytes)", std::mem::size_of::<T>()))?;
    v.extend(values.take(n));
    Ok(v)
}

/// Deterministic pseudo-random values in `[-1, 1)`, one a call (the data's
/// values do not change the work done).
fn values(seed: u64) -> impl FnMut() -> f32 {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
}

/// `n` of [`values`] of `seed` (gpu-check's operands).
#[cfg(feature = "cuda")]
pub(crate) fn filled(n: usize, seed: u64) -> Vec<f32> {
    std::iter::repeat_with(values(seed)).take(n).collect()
}

/// `n` of [`values`] of `seed`, or an error naming `what` when they do not
/// fit in memory.
fn try_filled(what: &str, n: usize, seed: u64) -> Result<Vec<f32>, String> {
    try_collect(what, n, std::iter::repeat_with(values(seed)))
}

/// One layer's FROG step with its data, state and workspace in memory,
/// ready to be timed (here and by the criterion bench), with the study's
/// hyperparameters.
pub struct LayerStep {
    backend: Cpu<f32>,
    cfg: Config,
    layer: Layer,
    sample: usize,
    x: Vec<f32>,
    y: Vec<f32>,
    /// `x` and `y` rounded to bf16 once, for [`LayerStep::step_bf16`].
    x_bf16: Vec<bf16>,
    y_bf16: Vec<bf16>,
    weight: Vec<f32>,
    grad: Vec<f32>,
    state: ParamState<Cpu<f32>>,
    ws: Workspace<Cpu<f32>>,
}

impl LayerStep {
    /// Allocates everything a step of `layer` at sample `r` needs; memory
    /// that cannot be had is an error naming what it was for.
    pub fn new(backend: &Cpu<f32>, layer: Layer, sample: usize, iters: usize) -> Result<Self, String> {
        let cfg = Config { lr: 0.01, momentum: 0.9, weight_decay: 1e-5, sample_size: Some(sample), num_iters: iters, lr_other_ratio: 1.0, ..Config::default() };
        let n = layer.rows() * layer.weight_cols();
        let len = |per_row: usize| sample.checked_mul(per_row).ok_or_else(|| format!("sample {sample} overflows the input size"));
        let (x, y) = (try_filled("the sampled inputs", len(layer.input_len())?, 1)?, try_filled("the output gradients", len(layer.output_len())?, 2)?);
        let half = |what, v: &[f32]| try_collect(what, v.len(), v.iter().map(|&e| bf16::from_f32(e)));
        let (x_bf16, y_bf16) = (half("the bf16 inputs", &x)?, half("the bf16 output gradients", &y)?);
        let (weight, grad) = (try_filled("the weight", n, 3)?, try_filled("the gradient", n, 4)?);
        let state = ParamState::for_layer(backend, &layer, &cfg).map_err(|e| e.to_string())?;
        let req = WorkspaceReq::new(backend, &layer, sample).map_err(|e| e.to_string())?;
        let ws = Workspace::new(backend, req).map_err(|e| e.to_string())?;
        Ok(Self { backend: backend.clone(), cfg, layer, sample, x_bf16, y_bf16, x, y, weight, grad, state, ws })
    }

    /// One FROG step.
    pub fn step(&mut self) -> Result<(), String> {
        let params = Params { weight: &mut self.weight, grad_weight: &self.grad, bias: None };
        let batch = Batch { x: &self.x, y: &self.y, sample: self.sample, batch_size: 512.max(self.sample) };
        frog_step(&self.backend, &self.cfg, &self.layer, &mut self.state, &mut self.ws, params, batch, Unguarded).map_err(|e| e.to_string())
    }

    /// One FROG step from the bf16 copies of the inputs.
    pub fn step_bf16(&mut self) -> Result<(), String> {
        let params = Params { weight: &mut self.weight, grad_weight: &self.grad, bias: None };
        let batch = LowpBatch { x: &self.x_bf16, y: &self.y_bf16, sample: self.sample, batch_size: 512.max(self.sample), check_y: false };
        frog_step(&self.backend, &self.cfg, &self.layer, &mut self.state, &mut self.ws, params, batch, Unguarded).map_err(|e| e.to_string())
    }
}

/// Median wall time of `f`: at least 3 timed calls after a warm-up, more
/// for fast ones, up to about a second of timing.
fn median_time(mut f: impl FnMut() -> Result<(), String>) -> Result<Duration, String> {
    f()?;
    let mut times = Vec::new();
    let budget = Instant::now();
    while times.len() < 3 || (times.len() < 15 && budget.elapsed() < Duration::from_secs(1)) {
        let t = Instant::now();
        f()?;
        times.push(t.elapsed());
    }
    times.sort();
    Ok(times[times.len() / 2])
}

/// The pool's f32 GEMM rate on a 2048^3 product, measured in the same run
/// so the step's rate can be read as a fraction of what the machine gives
/// at that moment (these machines are shared and noisy).
fn gemm_reference(backend: &Cpu<f32>) -> Result<f64, String> {
    let n = 2048;
    let (a, b) = (try_filled("the GEMM's operands", n * n, 5)?, try_filled("the GEMM's operands", n * n, 6)?);
    let mut c = try_collect("the GEMM's product", n * n, std::iter::repeat(0.0f32))?;
    let t = median_time(|| {
        matmul_dense(backend.pool(), &mut c, &a, &b, [n, n, n]).map_err(|e| e.to_string())?;
        Ok(())
    })?;
    Ok(2.0 * (n * n * n) as f64 / t.as_secs_f64() / 1e9)
}

/// Runs the benchmark and prints a table (or JSON lines), ending with
/// `TOTAL_MS <sum over all 20 conv layers>`.
pub fn run(args: &LayersArgs) -> Result<(), String> {
    args.validate().map_err(|e| e.to_string())?;
    let forced = args.direct.then_some(Algorithm::Direct);
    let backend = Cpu::<f32>::with_threads(args.threads).map_err(|e| e.to_string())?.with_algorithm(forced);
    let threads = backend.pool().threads();
    // Measured first, so every line can give its fraction of it.
    let gemm = gemm_reference(&backend)?;
    if !args.json {
        println!("FROG step per ResNet-18 conv layer, f32, frog-cpu, {threads} threads, sample {}, {} CG iterations", args.sample, args.iters);
        println!("f32 GEMM 2048^3 on the same pool: {gemm:.1} GFLOP/s; GFLOP/s below counts the direct algorithm's FLOP");
        println!("bf16_ms: the same step from bf16 x and y (the f32 values converted once, up front), f32 math");
        println!(
            "{:<9} {:>5} {:>5} {:>3} {:>3} {:>3} {:>6} {:>9} {:>10} {:>8} {:>6} {:>9} {:>8}",
            "layer", "c_in", "c_out", "hw", "k", "s", "count", "algorithm", "median_ms", "GFLOP/s", "%GEMM", "total_ms", "bf16_ms"
        );
    }
    let (mut total_ms, mut total_flop, mut total_bf16_ms) = (0.0, 0.0, 0.0);
    for rc in resnet18_convs() {
        let layer = Layer::conv2d(rc.conv, false);
        let algorithm = format!("{:?}", backend.algorithm(&layer, args.sample).map_err(|e| e.to_string())?).to_lowercase();
        let mut step = LayerStep::new(&backend, layer, args.sample, args.iters)?;
        let median = median_time(|| step.step())?;
        let ms = median.as_secs_f64() * 1e3;
        let bf16_ms = median_time(|| step.step_bf16())?.as_secs_f64() * 1e3;
        total_bf16_ms += bf16_ms * rc.count as f64;
        let flop = layer.cg_flops(args.sample, args.iters);
        let gflops = flop / median.as_secs_f64() / 1e9;
        total_ms += ms * rc.count as f64;
        total_flop += flop * rc.count as f64;
        let (c, hw) = (&rc.conv, rc.conv.input_hw[0]);
        if args.json {
            let (stride, kernel) = (c.stride[0], c.kernel[0]);
            let (c_in, c_out, count, sample) = (c.c_in, c.c_out, rc.count, args.sample);
            let line = LayerLine {
                name: rc.name,
                c_in,
                c_out,
                hw,
                stride,
                kernel,
                count,
                sample,
                median_ms: ms,
                gflops,
                algorithm: &algorithm,
                gemm_fraction: gflops / gemm,
                bf16_median_ms: bf16_ms,
            };
            print_json(&line)?;
        } else {
            let (name, pct, total) = (rc.name, 100.0 * gflops / gemm, ms * rc.count as f64);
            println!(
                "{name:<9} {:>5} {:>5} {hw:>3} {:>3} {:>3} {:>6} {algorithm:>9} {ms:>10.2} {gflops:>8.1} {pct:>6.0} {total:>9.1} {bf16_ms:>8.2}",
                c.c_in, c.c_out, c.kernel[0], c.stride[0], rc.count
            );
        }
    }
    let rate = total_flop / total_ms / 1e6;
    if args.json {
        print_json(&TotalLine { total_ms, total_bf16_ms, total_gflop: total_flop / 1e9, gflops: rate, gemm_2048_gflops: gemm })?;
    } else {
        println!("{:.1} GFLOP in all, {rate:.1} GFLOP/s overall ({:.0} % of the GEMM rate)", total_flop / 1e9, 100.0 * rate / gemm);
    }
    println!("TOTAL_MS {total_ms:.1}");
    println!("TOTAL_MS_BF16_INPUTS {total_bf16_ms:.1}");
    Ok(())
}
