//! GPU tests of the CUDA backend. Each one prints that it was skipped and
//! passes when there is no device (no driver, or the libcuda stub).
//!
//! - `gpu_golden_exact`: every golden layer case in exact mode, rtol 1e-4.
//! - `gpu_golden_split`: the same in 3xTF32 mode, rtol 1e-4.
//! - `gpu_golden_fast`: the same cases in fast (TF32) mode, against the
//!   reference's f64 values, at `FAST_RTOL` for every case whose sampled
//!   Fisher has full rank; prints the errors of the others.
//! - `gpu_muon_golden_f32`, `gpu_muon_golden_bf16`: Muon's golden cases in
//!   each `MuonPrecision` (f32 within 1e-4; bf16 within its measured bound,
//!   and at least the error bf16 rounding gives).
//! - kernels against host arithmetic (GEMM shapes on each tile, split-K,
//!   im2col, `matmul`), errors.

#![deny(clippy::undocumented_unsafe_blocks)]

mod common;

use common::{device, values, TILES};
use frog_core::{Backend, BackendError, BackendErrorKind, Conv2d, Layer, Patches};
use frog_cpu::golden::muon::{load_muon_cases, run_muon_case, MuonCase, MuonRoute};
use frog_cpu::golden::{golden_dir, load_cases, run_case, run_case_view, run_suite, Case, Tally, Target};
use frog_cuda::{Cuda, Error, MuonPrecision, Order, Precision};

/// Tolerance of fast mode against the f64 reference (max-norm relative per
/// array). TF32 rounds the products' inputs to 10 mantissa bits (about 5e-4
/// relative per product); CG amplifies that by the condition number.
const FAST_RTOL: f64 = 3e-2;

/// Whether a case's sampled Fisher has full rank (`r*L >= D'`): where it
/// does not, CG amplifies rounding in the near-null space by about `1/tau`,
/// and TF32 inputs cannot meet a tight tolerance.
fn well_conditioned(case: &Case) -> bool {
    match &case.target {
        Target::Layer(l) => case.sample_size * l.positions() >= l.cols(),
        Target::Other(_) => true,
    }
}

/// Runs every golden case; those `must_pass` selects have to meet `rtol`,
/// the others are reported.
fn golden(precision: Precision, rtol: f64, must_pass: fn(&Case) -> bool, test: &str) {
    let Some(cuda) = device(precision, test) else { return };
    let dir = golden_dir();
    let cases = load_cases(&dir).unwrap_or_else(|e| panic!("{e}"));
    assert!(!cases.is_empty(), "no golden layer cases in {}", dir.display());
    let (mut tally, mut excused) = (Tally::default(), 0);
    for case in &cases {
        match run_case(&cuda, case, rtol) {
            Err(e) if !must_pass(case) => {
                excused += 1;
                println!("{test} {:<28} (not required: r*L < D') {e}", case.name);
            }
            outcome => tally.record(&format!("{test} "), &case.name, outcome),
        }
    }
    let summary = format!("{test}: on {}, {excused} rank-deficient cases outside rtol {rtol:.0e} (not required); the others within it", cuda.device_name());
    tally.finish(&summary).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn gpu_golden_exact() {
    golden(Precision::Exact, 1e-4, |_| true, "gpu_golden_exact");
}

#[test]
fn gpu_golden_split() {
    golden(Precision::Split, 1e-4, |_| true, "gpu_golden_split");
}

/// Every golden case through the steps on views (the middles of padded
/// buffers), exact precision: the same tolerance, nothing outside a view
/// written.
#[test]
fn gpu_golden_through_views() {
    let Some(cuda) = device(Precision::Exact, "gpu_golden_through_views") else { return };
    let cases = load_cases(&golden_dir()).unwrap_or_else(|e| panic!("{e}"));
    let summary = format!("gpu_golden_through_views: every case through views on {}", cuda.device_name());
    run_suite(&summary, &cases, |c| &c.name, |c| run_case_view(&cuda, c, 1e-4)).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn gpu_golden_fast() {
    golden(Precision::Fast, FAST_RTOL, well_conditioned, "gpu_golden_fast");
}

/// Every Muon case (`muon/` of the golden directory, at least the
/// committed ones).
fn muon_cases() -> Vec<MuonCase> {
    load_muon_cases(&golden_dir().join("muon")).unwrap_or_else(|e| panic!("{e}"))
}

/// Muon's golden cases in [`MuonPrecision::F32`] within 1e-4 of the f64
/// values, through `muon_step` on buffers and on views and as a Muon group
/// of the optimizer object; the backend's patch products in TF32, which
/// Muon's products do not follow.
#[test]
fn gpu_muon_golden_f32() {
    let test = "gpu_muon_golden_f32";
    let Some(cuda) = device(Precision::Fast, test) else { return };
    let cases = muon_cases();
    for (route, how) in [(MuonRoute::Buffers, "muon_step on buffers"), (MuonRoute::Views, "muon_step through views"), (MuonRoute::Group, "a Muon group")] {
        let summary = format!("{test}: Muon cases, {how}, on {}", cuda.device_name());
        run_suite(&summary, &cases, |c| &c.name, |c| run_muon_case(&cuda, c, 1e-4, route)).unwrap_or_else(|e| panic!("{e}"));
    }
}

/// [`MuonPrecision::Bf16`]'s bound on the golden cases (max-norm relative
/// error of the weight and the momentum after each step; the momentum
/// stays f32). Measured on the emulator: each case's worst, always the
/// weight's, is 1.5e-3..2.0e-2 (`muon_conv1x1_lowrank`, whose zero
/// singular values the iteration's slope of 3.4 at zero per step
/// amplifies bf16 rounding in).
const MUON_BF16_RTOL: f64 = 3e-2;
/// The least worst error of a case in [`MuonPrecision::Bf16`] (a third of
/// the smallest measured): the f32 iteration's is below 1e-6 on every case,
/// so a case at least this far off differs from the f32 result by the
/// order bf16 rounding gives, and an iteration that is f32 after all fails.
const MUON_BF16_FLOOR: f64 = 5e-4;

/// Muon's golden cases in [`MuonPrecision::Bf16`], through `muon_step` and
/// as a Muon group: each case's worst error between [`MUON_BF16_FLOOR`] and
/// [`MUON_BF16_RTOL`].
#[test]
fn gpu_muon_golden_bf16() {
    let test = "gpu_muon_golden_bf16";
    let Some(mut cuda) = device(Precision::Exact, test) else { return };
    cuda.set_muon_precision(MuonPrecision::Bf16);
    let cases = muon_cases();
    for (route, how) in [(MuonRoute::Buffers, "muon_step on buffers"), (MuonRoute::Group, "a Muon group")] {
        let mut tally = Tally::default();
        for case in &cases {
            let outcome = run_muon_case(&cuda, case, MUON_BF16_RTOL, route).and_then(|r| {
                if r.worst >= MUON_BF16_FLOOR {
                    Ok(r)
                } else {
                    Err(format!("worst error {:.2e} below {MUON_BF16_FLOOR:.0e}: no bf16 iteration", r.worst))
                }
            });
            tally.record(&format!("{test} "), &case.name, outcome);
        }
        let summary = format!("{test}: Muon cases in bf16, {how}, within [{MUON_BF16_FLOOR:.0e}, {MUON_BF16_RTOL:.0e}] on {}", cuda.device_name());
        tally.finish(&summary).unwrap_or_else(|e| panic!("{e}"));
    }
}

fn rel(a: &[f32], b: &[f64]) -> f64 {
    let d = a.iter().zip(b).map(|(x, y)| (f64::from(*x) - y).abs()).fold(0.0, f64::max);
    let s = b.iter().map(|y| y.abs()).fold(0.0, f64::max);
    if a.len() != b.len() || a.iter().any(|x| !x.is_finite()) {
        f64::INFINITY
    } else {
        d / s.max(f64::MIN_POSITIVE)
    }
}

/// Host im2col in this backend's layout `[r*L, D']`.
fn host_im2col(c: &Conv2d, bias: bool, r: usize, x: &[f32]) -> Vec<f64> {
    let [ho, wo] = c.output_hw().unwrap();
    let d = c.c_in * c.kernel[0] * c.kernel[1];
    let cols = d + usize::from(bias);
    let mut out = vec![0.0; r * ho * wo * cols];
    for i in 0..r {
        for oy in 0..ho {
            for ox in 0..wo {
                let n = (i * ho + oy) * wo + ox;
                for ci in 0..c.c_in {
                    for ky in 0..c.kernel[0] {
                        for kx in 0..c.kernel[1] {
                            let iy = (oy * c.stride[0] + ky * c.dilation[0]) as isize - c.padding[0] as isize;
                            let ix = (ox * c.stride[1] + kx * c.dilation[1]) as isize - c.padding[1] as isize;
                            let [h, w] = c.input_hw;
                            if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < w {
                                let col = (ci * c.kernel[0] + ky) * c.kernel[1] + kx;
                                out[n * cols + col] = f64::from(x[((i * c.c_in + ci) * h + iy as usize) * w + ix as usize]);
                            }
                        }
                    }
                }
                if bias {
                    out[n * cols + d] = 1.0;
                }
            }
        }
    }
    out
}

fn check_products(precision: Precision, rtol: f64, test: &str) {
    let Some(mut cuda) = device(precision, test) else { return };
    for tile in TILES {
        cuda.set_gemm_tile(tile);
        products_on_tile(&cuda, rtol, &format!("{test} tile {tile:?}"));
    }
}

/// `check_products` with the backend's GEMM tile as it is set.
fn products_on_tile(cuda: &Cuda, rtol: f64, test: &str) {
    // Shapes chosen to cut GEMM tiles unevenly and to trigger split-K.
    let convs = [
        (Conv2d::new(3, 5, 3, [8, 8]).padding(1), true, 3),
        (Conv2d { c_in: 4, c_out: 7, kernel: [2, 3], stride: [2, 1], padding: [1, 0], dilation: [1, 1], groups: 1, input_hw: [7, 10] }, false, 2),
        (Conv2d { c_in: 3, c_out: 70, kernel: [3, 3], stride: [1, 1], padding: [2, 2], dilation: [2, 2], groups: 1, input_hw: [9, 9] }, false, 5),
        (Conv2d::new(64, 64, 3, [32, 32]).padding(1), false, 8),
    ];
    // The host emulator runs a block as 256 fibers: keep its largest case small.
    let emulated = cuda.device_name().contains("emulator");
    for (k, (conv, bias, r)) in convs.into_iter().enumerate() {
        let r = if emulated && k == 3 { 1 } else { r };
        let layer = Layer::conv2d(conv, bias);
        let (rows, cols, l) = (layer.rows(), layer.cols(), layer.positions());
        let n = r * l;
        let x_host = values(r * layer.input_len(), 1 + k as u64);
        let v_host = values(rows * cols, 100 + k as u64);
        let u_in = values(rows * n, 200 + k as u64);
        let x = cuda.upload(&x_host).unwrap();
        let v = cuda.upload(&v_host).unwrap();
        let u_given = cuda.upload(&u_in).unwrap();
        let mut packed = cuda.zeros(cuda.patch_scratch_len(&layer, r)).unwrap();
        let xv = cuda.view(&x, 0, x.len()).unwrap();
        cuda.pack_patches(&layer, r, &xv, &mut packed).unwrap();
        let mut scratch = cuda.zeros(cuda.product_scratch_len(&layer, r)).unwrap();
        let mut p = Patches { layer: &layer, r, x: Some(xv), packed: &packed, scratch: &mut scratch };
        let xm = host_im2col(&conv, bias, r, &x_host);
        let got = cuda.download(&packed, n * cols).unwrap();
        assert!(rel(&got, &xm) == 0.0, "{test}: im2col of case {k} differs");
        // U = X V^T in layout [R, N].
        let mut u = cuda.zeros(rows * n).unwrap();
        cuda.project(&mut p, &v, &mut u).unwrap();
        let mut want = vec![0.0; rows * n];
        for j in 0..rows {
            for q in 0..n {
                want[j * n + q] = (0..cols).map(|c| xm[q * cols + c] * f64::from(v_host[j * cols + c])).sum();
            }
        }
        let e = rel(&cuda.download(&u, rows * n).unwrap(), &want);
        println!("{test} case {k}: project rel error {e:.2e}");
        assert!(e < rtol, "{test}: project of case {k}: {e:.2e}");
        // G = U X.
        let mut g = cuda.zeros(rows * cols).unwrap();
        cuda.back_project(&mut p, &u_given, &mut g).unwrap();
        let mut want = vec![0.0; rows * cols];
        for j in 0..rows {
            for c in 0..cols {
                want[j * cols + c] = (0..n).map(|q| f64::from(u_in[j * n + q]) * xm[q * cols + c]).sum();
            }
        }
        let e = rel(&cuda.download(&g, rows * cols).unwrap(), &want);
        println!("{test} case {k}: back_project rel error {e:.2e}");
        assert!(e < rtol, "{test}: back_project of case {k}: {e:.2e}");
    }
}

#[test]
fn gpu_products_exact() {
    check_products(Precision::Exact, 1e-5, "gpu_products_exact");
}

#[test]
fn gpu_products_split() {
    check_products(Precision::Split, 2e-5, "gpu_products_split");
}

#[test]
fn gpu_products_fast() {
    check_products(Precision::Fast, 5e-3, "gpu_products_fast");
}

/// `Cuda::matmul` in every precision on both tiles against host f64, on
/// shapes that cut the tiles unevenly, one of them split along K; the same
/// products from transposed operands (`matmul_as`, split and not); and the
/// length checks.
#[test]
fn gpu_matmul() {
    for (precision, rtol) in [(Precision::Exact, 1e-5), (Precision::Split, 2e-5), (Precision::Fast, 5e-3)] {
        let Some(mut cuda) = device(precision, "gpu_matmul") else { return };
        for (m, n, k) in [(37, 45, 3000), (130, 129, 33), (1, 200, 7)] {
            let (a, b) = (values(m * k, 7), values(k * n, 8));
            let want: Vec<f64> =
                (0..m * n).map(|e| (0..k).map(|q| f64::from(a[(e / n) * k + q]) * f64::from(b[q * n + e % n])).sum()).collect();
            let transpose = |v: &[f32], rows: usize, cols: usize| (0..rows * cols).map(|e| v[(e % rows) * cols + e / rows]).collect::<Vec<f32>>();
            let (ab, bb) = (cuda.upload(&a).unwrap(), cuda.upload(&b).unwrap());
            let (at, bt) = (cuda.upload(&transpose(&a, m, k)).unwrap(), cuda.upload(&transpose(&b, k, n)).unwrap());
            for tile in TILES {
                cuda.set_gemm_tile(tile);
                let mut c = cuda.upload(&vec![f32::NAN; m * n]).unwrap();
                cuda.matmul((m, n, k), &ab, &bb, &mut c).unwrap();
                let e = rel(&cuda.download(&c, m * n).unwrap(), &want);
                println!("gpu_matmul {precision:?} {tile:?} {m}x{n}x{k}: rel error {e:.2e}");
                assert!(e < rtol, "{precision:?} {tile:?} {m}x{n}x{k}: {e:.2e}");
                for (a, b, split) in [((&at, Order::Transposed), (&bb, Order::RowMajor), true), ((&ab, Order::RowMajor), (&bt, Order::Transposed), false), ((&at, Order::Transposed), (&bt, Order::Transposed), true)] {
                    let mut c = cuda.upload(&vec![f32::NAN; m * n]).unwrap();
                    cuda.matmul_as((m, n, k), a, b, &mut c, split).unwrap();
                    let e = rel(&cuda.download(&c, m * n).unwrap(), &want);
                    assert!(e < rtol, "{precision:?} {tile:?} {m}x{n}x{k} a {:?} b {:?} split {split}: {e:.2e}", a.1, b.1);
                }
            }
            let mut short = cuda.zeros(m * n - 1).unwrap();
            let e = cuda.matmul((m, n, k), &ab, &bb, &mut short).unwrap_err();
            assert!(matches!(e, Error::BufferTooShort { what: "c", .. }), "{e}");
        }
    }
}

#[test]
fn gpu_buffer_errors() {
    let Some(a) = device(Precision::Exact, "gpu_buffer_errors") else { return };
    let b = Cuda::new(Precision::Exact).unwrap();
    let x = a.zeros(8).unwrap();
    let mut y = b.zeros(8).unwrap();
    let e = b.view(&x, 0, 8).unwrap_err();
    assert!(matches!(e, Error::ForeignBuffer { what: "view" }), "{e}");
    assert_eq!(e.kind(), BackendErrorKind::DeviceMismatch);
    let e = b.mul_assign(8, &mut y, &x).unwrap_err();
    assert!(matches!(e, Error::ForeignBuffer { what: "b" }), "{e}");
    let z = y.clone_zeroed(&b);
    let e = b.axpby(9, 1.0, &b.view(&z, 0, 8).unwrap(), 0.0, &mut b.view_mut(&mut y, 0, 8).unwrap()).unwrap_err();
    assert!(matches!(e, Error::BufferTooShort { .. }), "{e}");
    let mut host = [1.0f32; 8];
    b.read(&y, 0, &mut host).unwrap();
    assert_eq!(host, [0.0; 8]);
    assert!(b.read(&y, 1, &mut host).is_err());
    println!("gpu_buffer_errors: foreign and short buffers are errors on {}", a.device_name());
}

trait CloneZeroed {
    fn clone_zeroed(&self, cuda: &Cuda) -> frog_cuda::Buffer;
}

impl CloneZeroed for frog_cuda::Buffer {
    fn clone_zeroed(&self, cuda: &Cuda) -> frog_cuda::Buffer {
        cuda.zeros(self.len()).unwrap()
    }
}

/// A whole FROG step recorded as a CUDA graph (it is launches only) and
/// replayed gives the step's result; a capture of anything else fails.
#[test]
fn gpu_graph_capture() {
    use frog_core::{frog_step, Batch, Config, ParamState, Params, Unguarded, Workspace, WorkspaceReq};
    let Some(cuda) = device(Precision::Exact, "gpu_graph_capture") else { return };
    let layer = Layer::conv2d(Conv2d::new(16, 32, 3, [8, 8]).padding(1), false);
    let cfg = Config { lr: 0.01, momentum: 0.9, weight_decay: 1e-4, num_iters: 4, tau: 1e-3, ..Config::default() };
    let (r, batch) = (4, 16);
    let n = layer.rows() * layer.weight_cols();
    let w0 = values(n, 1);
    let g = cuda.upload(&values(n, 2)).unwrap();
    let x = cuda.upload(&values(r * layer.input_len(), 3)).unwrap();
    let y = cuda.upload(&values(r * layer.output_len(), 4)).unwrap();
    let mut results = Vec::new();
    for graph in [false, true] {
        let mut w = cuda.upload(&w0).unwrap();
        let mut state = ParamState::for_layer(&cuda, &layer, &cfg).unwrap();
        let mut ws = Workspace::new(&cuda, WorkspaceReq::new(&cuda, &layer, r).unwrap()).unwrap();
        let mut step = || {
            let params = Params { weight: &mut w, grad_weight: &g, bias: None };
            let b = Batch { x: &x, y: &y, sample: r, batch_size: batch };
            frog_step(&cuda, &cfg, &layer, &mut state, &mut ws, params, b, Unguarded).map_err(|e| match e {
                frog_core::Error::Backend(e) => e,
                other => panic!("{other}"),
            })
        };
        if graph {
            let recorded = cuda.capture(&mut step).unwrap();
            cuda.launch_graph(&recorded).unwrap();
        } else {
            step().unwrap();
        }
        results.push(cuda.download(&w, n).unwrap());
    }
    let base: Vec<f64> = results[0].iter().map(|&v| f64::from(v)).collect();
    let e = rel(&results[1], &base);
    println!("gpu_graph_capture: graph-replayed step vs direct step, rel error {e:.2e}");
    assert!(e < 1e-6, "graph replay differs: {e:.2e}");
    // What is not a launch cannot be captured: an error, and the stream
    // works as before afterwards.
    let e = cuda.capture(|| cuda.synchronize()).err().expect("a synchronization inside a capture is an error");
    println!("gpu_graph_capture: synchronizing inside a capture: {e}");
    assert_eq!(cuda.download(&g, 3).unwrap(), values(3, 2));
}

/// Running out of device memory is an error value of kind `OutOfMemory`.
#[test]
fn gpu_out_of_memory() {
    let Some(cuda) = device(Precision::Exact, "gpu_out_of_memory") else { return };
    if cuda.device_name().contains("emulator") {
        return common::skip("gpu_out_of_memory", "host emulator");
    }
    let mut held = Vec::new();
    let chunk = (i32::MAX as usize) & !1023; // 8 GiB of f32
    for _ in 0..64 {
        match cuda.zeros(chunk) {
            Ok(b) => held.push(b),
            Err(e) => {
                assert_eq!(e.kind(), BackendErrorKind::OutOfMemory, "{e}");
                println!("gpu_out_of_memory: after {} x 8 GiB: {e}", held.len());
                drop(held);
                cuda.synchronize().unwrap();
                cuda.zeros(16).unwrap();
                return;
            }
        }
    }
    panic!("no allocation failed after 64 x 8 GiB");
}

/// Memory the host can still give, from /proc/meminfo (0 where unknown).
fn host_available_bytes() -> u64 {
    let info = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    info.lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// A buffer of 2^31 - 1024 entries (8 GiB), about the most the kernels'
/// `int` sizes allow, is zeroed whole by the grid-stride fill: its index
/// must not wrap past 2^31 on the last step. On the emulator a wrapped
/// index faults in the inaccessible 8 GiB below the buffer.
#[test]
fn gpu_fill_of_2_31_entries() {
    let Some(cuda) = device(Precision::Exact, "gpu_fill_of_2_31_entries") else { return };
    let need = 16u64 << 30;
    if cuda.device_name().contains("emulator") && host_available_bytes() < need {
        let gib = host_available_bytes() >> 30;
        let why = format!("the host has {gib} GiB of memory available, the emulated 8 GiB buffer needs 16");
        return common::skip("gpu_fill_of_2_31_entries", &why);
    }
    let n = (i32::MAX as usize) & !1023;
    let b = cuda.zeros(n).unwrap();
    let mut ends = [f32::NAN; 8];
    cuda.read(&b, 0, &mut ends[..4]).unwrap();
    cuda.read(&b, n - 4, &mut ends[4..]).unwrap();
    assert_eq!(ends, [0.0; 8], "first and last entries of a zeroed buffer of {n} entries");
    println!("gpu_fill_of_2_31_entries: {n} entries zeroed on {}", cuda.device_name());
}

/// The AdamW golden cases (`golden/baselines/`, from `torch.optim.AdamW`)
/// through the GPU's `adamw_update`, f32 at 1e-4.
#[test]
fn gpu_adamw_golden() {
    let Some(cuda) = device(Precision::Exact, "gpu_adamw_golden") else { return };
    let cases = frog_cpu::baselines::load_adamw_cases(&golden_dir().join("baselines")).unwrap_or_else(|e| panic!("{e}"));
    assert!(cases.len() >= 2, "too few AdamW cases: {}", cases.len());
    run_suite("gpu_adamw_golden", &cases, |c| &c.name, |c| frog_cpu::baselines::run_adamw_case(&cuda, c, 1e-4)).unwrap_or_else(|e| panic!("{e}"));
}

/// The K-FROG golden cases (`golden/baselines/`, from the original's
/// `kfrog.py`) on the GPU, f32 at 1e-4.
#[test]
fn gpu_kfrog_golden() {
    let Some(cuda) = device(Precision::Exact, "gpu_kfrog_golden") else { return };
    let cases = frog_cpu::baselines::load_kfrog_cases(&golden_dir().join("baselines")).unwrap_or_else(|e| panic!("{e}"));
    assert!(cases.len() >= 6, "too few K-FROG cases: {}", cases.len());
    run_suite("gpu_kfrog_golden", &cases, |c| &c.name, |c| frog_cpu::baselines::run_kfrog_case(&cuda, c, 1e-4)).unwrap_or_else(|e| panic!("{e}"));
}
