//! Hostile input on the GPU backend (run on the host emulator in CI): the
//! f32 squares of huge gradients and output gradients, the running means
//! of squares of AdamW and K-FROG, and the opt-in guard, against frog-cpu's
//! f32 backend on the same data; sampled inputs whose squares overflow f32
//! (the patches' power-of-two gain), against frog-cpu's f64 backend;
//! `write_async` keeping its values until the copy ran.

#![deny(clippy::undocumented_unsafe_blocks)]

mod common;

use common::{device, download, frog_f32, get, put, rel_diff, upload, values, TILES};
use frog_core::half::f16;
use frog_core::{
    adamw_step, frog_step, kfrog_step, AdamBackend, AdamState, AdamWConfig, Backend, Batch, Config, Conv2d, Guard, GuardBackend, KfrogBackend, KfrogBatch, KfrogConfig,
    KfrogState, Layer, ParamState, Params, Patches, Workspace, WorkspaceReq,
};
use frog_cpu::Cpu;
use frog_cuda::{Cuda, Precision};

/// Two steps (momentum 0.9) of `layer` on `backend` with the output
/// gradients scaled by `gy` and the gradients by `gg`, guarded when asked;
/// the weights after, and the diagnostics' (dead, non-finite, replaced).
fn run<B: GuardBackend<Scalar = f32>>(backend: &B, layer: &Layer, gy: f32, gg: f32, dead_row: bool, guard: Option<Guard>) -> (Vec<f32>, (usize, usize, usize))
where
    B::Error: std::fmt::Debug,
{
    let cfg = Config { lr: 0.01, momentum: 0.9, sample_size: None, denom_eps: 1e-30, ..Config::default() };
    let (r, batch) = (3, 3);
    let n = layer.rows() * layer.weight_cols();
    let up = |v: &[f32]| {
        let mut b = backend.zeros(v.len()).unwrap();
        backend.write(v, &mut b, 0).unwrap();
        b
    };
    let scaled = |len, seed, s: f32| values(len, seed).into_iter().map(|v| v * s).collect::<Vec<_>>();
    let mut y_host = scaled(r * layer.output_len(), 4, gy);
    if dead_row {
        // Row 1's output gradients are zero in every sample: a dead row.
        let l = layer.positions();
        for i in 0..r {
            y_host[(i * layer.rows() + 1) * l..(i * layer.rows() + 2) * l].fill(0.0);
        }
    }
    let (g, x, y) = (up(&scaled(n, 2, gg)), up(&values(r * layer.input_len(), 3)), up(&y_host));
    let mut w = up(&values(n, 1));
    let mut state = ParamState::with_diagnostics(backend, layer, &cfg).unwrap();
    let mut ws = Workspace::new(backend, WorkspaceReq::new(backend, layer, r).unwrap()).unwrap();
    for _ in 0..2 {
        let params = Params { weight: &mut w, grad_weight: &g, bias: None };
        let b = Batch { x: &x, y: &y, sample: r, batch_size: batch };
        frog_step(backend, &cfg, layer, &mut state, &mut ws, params, b, guard).unwrap();
    }
    let mut out = vec![0.0; n];
    backend.read(&w, 0, &mut out).unwrap();
    let counts = state.diagnostics(backend).unwrap().map_or((0, 0, 0), |d| (d.dead_rows, d.nonfinite_rows, d.replaced_rows));
    (out, counts)
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// Output gradients and gradients near f32's maximum give the step of
/// ordinary ones (FROG's update is scale-free), as on the CPU, on every
/// GEMM tile.
#[test]
fn gpu_huge_gradients_give_the_scale_free_step() {
    let Some(mut cuda) = device(Precision::Exact, "gpu_huge_gradients_give_the_scale_free_step") else { return };
    let cpu = Cpu::<f32>::with_threads(1).unwrap();
    let layer = Layer::conv2d(Conv2d::new(3, 5, 3, [6, 6]).padding(1), false);
    let (on_cpu, _) = run(&cpu, &layer, 1.0, 1.0, false, None);
    for tile in TILES {
        cuda.set_gemm_tile(tile);
        let (base, _) = run(&cuda, &layer, 1.0, 1.0, false, None);
        assert!(max_diff(&base, &on_cpu) < 1e-5);
        for (gy, gg) in [(1e20, 1.0), (1.0, 1e20), (3e37, 3e37)] {
            let (w, _) = run(&cuda, &layer, gy, gg, false, None);
            assert!(w.iter().all(|v| v.is_finite()), "non-finite step at y x{gy:e}, g x{gg:e}");
            let d = max_diff(&w, &base);
            println!("gpu_huge_gradients ({tile:?}): y x{gy:e}, g x{gg:e}: max difference {d:.2e}");
            assert!(d < 2e-4, "y x{gy:e}, g x{gg:e}: {d:e}");
        }
    }
}

/// The guard counts the dead row and replaces it as the CPU's does.
#[test]
fn gpu_guard_matches_the_cpu() {
    let Some(cuda) = device(Precision::Exact, "gpu_guard_matches_the_cpu") else { return };
    let cpu = Cpu::<f32>::with_threads(1).unwrap();
    let layer = Layer::conv2d(Conv2d::new(2, 4, 3, [5, 5]).padding(1), false);
    for guard in [Guard::default(), Guard { nonfinite: true, dead_rows: true }] {
        let (gw, gcounts) = run(&cuda, &layer, 1.0, 1.0, true, Some(guard));
        let (cw, ccounts) = run(&cpu, &layer, 1.0, 1.0, true, Some(guard));
        assert_eq!(gcounts, ccounts, "{guard:?}");
        assert_eq!(gcounts.0, 1);
        assert_eq!(gcounts.2, usize::from(guard.dead_rows));
        let d = max_diff(&gw, &cw);
        assert!(d < 1e-5, "{guard:?}: GPU and CPU differ by {d:e}");
    }
}

/// `write_async` owns the values it copies until a synchronize has waited
/// for the copy: the host emulator runs such a copy only at the stream's
/// next operation (as a device may, from page-locked memory), after the
/// caller has given the values away and the allocator has handed their
/// memory out again; the values that land are the ones given, in several
/// copies queued back to back and through the backend's drop.
#[test]
fn gpu_write_async_owns_its_values_until_the_copy_ran() {
    let Some(cuda) = device(Precision::Exact, "gpu_write_async_owns_its_values_until_the_copy_ran") else { return };
    let want = values(1024, 5);
    let mut buf = cuda.zeros(2048).unwrap();
    cuda.write_async(want.clone(), &mut buf, 0).unwrap();
    cuda.write_async(want[..512].to_vec(), &mut buf, 1024).unwrap();
    let noise: Vec<Vec<f32>> = (0..8).map(|_| vec![f32::NAN; 1024]).collect();
    let got = cuda.download(&buf, 2048).unwrap();
    drop(noise);
    assert_eq!(got[..1024], want[..]);
    assert_eq!(got[1024..1536], want[..512]);
    // Dropped with a copy queued: the drop waits for it before freeing.
    cuda.write_async(want.clone(), &mut buf, 0).unwrap();
    drop(cuda);
    println!("gpu_write_async_owns_its_values_until_the_copy_ran: 3 queued copies landed as given");
}

/// Three AdamW steps (amsgrad) on gradients whose squares overflow f32:
/// the parameter and the second moments, and whether the state's own
/// checkpoint restores.
fn adamw_huge<B: AdamBackend<Scalar = f32>>(backend: &B) -> (Vec<f32>, Vec<f32>, bool) {
    let cfg = AdamWConfig { amsgrad: true, ..AdamWConfig::default() };
    let mut state = AdamState::new(backend, 3, true).unwrap();
    let (mut p, g) = (upload(backend, &[1.0, -1.0, 0.5]), upload(backend, &[1e21, -3e38, 1.0]));
    for _ in 0..3 {
        adamw_step(backend, &cfg, &mut state, &mut p, &g).unwrap();
    }
    let mut bytes = vec![0; state.export_len()];
    state.export(backend, &mut bytes).unwrap();
    let restores = AdamState::new(backend, 3, true).unwrap().restore(backend, &bytes).is_ok();
    (download(backend, &p), download(backend, state.moments().1), restores)
}

/// Three K-FROG steps with output gradients whose squares overflow f32:
/// the weights and the y average, and whether the state restores.
fn kfrog_huge_y<B: KfrogBackend<Scalar = f32>>(backend: &B) -> (Vec<f32>, Vec<f32>, bool) {
    let layer = Layer::linear(5, 3, false);
    let cfg = KfrogConfig { y_momentum: 0.9, momentum: 0.9, sample_size: Some(2), ..KfrogConfig::default() };
    let mut state = KfrogState::new(backend, &layer, &cfg).unwrap();
    let mut ws = Workspace::new(backend, WorkspaceReq::new(backend, &layer, 2).unwrap()).unwrap();
    let y: Vec<f32> = values(2 * 3, 6).into_iter().map(|v| v * 1e20).collect();
    let (x, y, g) = (upload(backend, &values(2 * 5, 5)), upload(backend, &y), upload(backend, &values(15, 7)));
    let mut w = upload(backend, &values(15, 8));
    for _ in 0..3 {
        kfrog_step(backend, &cfg, &layer, &mut state, &mut ws, &mut w, &g, KfrogBatch { x: &x, x_sample: 2, y: &y, y_sample: 2, batch_size: 2 }).unwrap();
    }
    let mut bytes = vec![0; state.export_len()];
    state.export(backend, &mut bytes).unwrap();
    let restores = KfrogState::new(backend, &layer, &cfg).unwrap().restore(backend, &bytes).is_ok();
    (download(backend, &w), download(backend, state.y_average().unwrap()), restores)
}

/// AdamW's second moment and K-FROG's y average saturate at f32's maximum
/// on the GPU as on the CPU: finite states that restore, moving weights.
#[test]
fn gpu_running_means_of_squares_saturate() {
    let Some(cuda) = device(Precision::Exact, "gpu_running_means_of_squares_saturate") else { return };
    let cpu = Cpu::<f32>::with_threads(1).unwrap();
    let rel = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| ((x - y) / x.abs().max(1.0)).abs()).fold(0.0, f32::max);
    let (p, v, restores) = adamw_huge(&cuda);
    let (p_cpu, v_cpu, _) = adamw_huge(&cpu);
    assert!(restores && v.iter().all(|e| e.is_finite()) && v[0] == f32::MAX, "{v:?}");
    assert!(rel(&p, &p_cpu) < 1e-5 && rel(&v, &v_cpu) < 1e-6, "{p:?} vs {p_cpu:?}, {v:?} vs {v_cpu:?}");
    assert!(p[0] < 1.0 - 1e-3 && p[1] > -1.0 + 1e-3, "the huge entries stopped moving: {p:?}");
    let (w, avg, restores) = kfrog_huge_y(&cuda);
    let (w_cpu, avg_cpu, _) = kfrog_huge_y(&cpu);
    assert!(restores && w.iter().chain(&avg).all(|e| e.is_finite()), "{w:?} {avg:?}");
    assert!(rel(&w, &w_cpu) < 1e-5 && rel(&avg, &avg_cpu) < 1e-6, "{w:?} vs {w_cpu:?}, {avg:?} vs {avg_cpu:?}");
}

/// The packed patches of `x` (two samples of `linear(3, 2)` with a bias) in
/// `cuda`'s precision, as the scratch's f32 words, and the gain
/// `patch_gain` reads back.
fn packed_and_gain(cuda: &Cuda, x: &[f32]) -> (Vec<f32>, f32) {
    let layer = Layer::linear(3, 2, true);
    let xb = upload(cuda, x);
    let mut packed = cuda.zeros(cuda.patch_scratch_len(&layer, 2)).unwrap();
    let xv = cuda.view(&xb, 0, xb.len()).unwrap();
    cuda.pack_patches(&layer, 2, &xv, &mut packed).unwrap();
    let (mut gain, mut scratch) = (cuda.zeros(1).unwrap(), cuda.zeros(cuda.product_scratch_len(&layer, 2)).unwrap());
    cuda.patch_gain(&Patches { layer: &layer, r: 2, x: Some(xv), packed: &packed, scratch: &mut scratch }, &mut gain).unwrap();
    (download(cuda, &packed), download(cuda, &gain)[0])
}

/// The packed patches are those of `c x`, the bias column holding `c`, for
/// `c` frog-core's gain of the largest `|x|` (NaN entries skipped), which
/// `patch_gain` reads back: 1 at frog-core's threshold and for an infinite
/// entry, `2^-17` just above it, the subnormal `2^-128` at f32's maximum
/// (exact). Patches packed in f16 are scaled above f16's largest finite
/// value, where f32 inputs would round to infinity.
#[test]
fn gpu_patches_take_frog_cores_gain() {
    let Some(mut cuda) = device(Precision::Exact, "gpu_patches_take_frog_cores_gain") else { return };
    let with_peak = |peak: f32| vec![0.5, -0.25, 3.0, peak, 1.0, -7.0];
    let mut with_nan = with_peak(7e4);
    with_nan[1] = f32::NAN;
    let cases = [(with_peak(65536.0), 1.0), (with_peak(65537.0), 2f32.powi(-17)), (with_peak(1e19), 2f32.powi(-64)), (with_peak(f32::MAX), f32::from_bits(1 << 21)), (with_peak(f32::INFINITY), 1.0), (with_nan, 2f32.powi(-17))];
    for (x, want) in &cases {
        let max = x.iter().filter(|v| !v.is_nan()).fold(0.0f32, |m, v| m.max(v.abs()));
        assert_eq!(f64::from(*want), frog_core::pow2_gain::<f32>(max.into()), "the test's gain for {x:?}");
        let (packed, gain) = packed_and_gain(&cuda, x);
        assert_eq!(gain.to_bits(), want.to_bits(), "{x:?}");
        for (n, row) in packed[..8].chunks(4).enumerate() {
            let wanted = x[n * 3..n * 3 + 3].iter().map(|v| v * want).chain([*want]);
            for (c, (got, w)) in row.iter().zip(wanted).enumerate() {
                assert!(got.to_bits() == w.to_bits() || (got.is_nan() && w.is_nan()), "{x:?}: entry ({n}, {c}) is {got:e}, not {w:e}");
            }
        }
    }
    cuda.set_precision(Precision::F16);
    for (peak, want) in [(65504.0, 1.0), (65520.0, 2f32.powi(-16))] {
        let x = with_peak(peak);
        let (words, gain) = packed_and_gain(&cuda, &x);
        assert_eq!(gain, want, "f16 patches, peak {peak}");
        let half = |e: usize| f16::from_bits((words[e / 2].to_bits() >> (16 * (e % 2))) as u16);
        for e in 0..8 {
            let w = if e % 4 == 3 { want } else { x[e / 4 * 3 + e % 4] * want };
            assert_eq!(half(e), f16::from_f32(w), "f16 patches, peak {peak}: entry {e}");
        }
    }
    println!("gpu_patches_take_frog_cores_gain: f32 and f16 patches scaled by frog-core's gain on {}", cuda.device_name());
}

/// Sampled inputs whose squares overflow f32 (1e19, and up to 3e38, whose
/// gain 2^-128 is subnormal) in one sample beside ordinary ones give the
/// FROG step frog-cpu's f64 backend takes on the same values unscaled, on
/// every tile, with a bias (whose feature the gain scales too) and without.
#[test]
fn gpu_huge_inputs_give_the_unscaled_step() {
    let Some(mut cuda) = device(Precision::Exact, "gpu_huge_inputs_give_the_unscaled_step") else { return };
    let cpu = Cpu::<f64>::with_threads(1).unwrap();
    for layer in [Layer::linear(5, 3, true), Layer::conv2d(Conv2d::new(2, 3, 3, [5, 5]).padding(1), true), Layer::conv2d(Conv2d::new(2, 3, 3, [5, 5]), false)] {
        let (d, r) = (layer.input_len(), 2);
        let y = values(r * layer.output_len(), 4);
        for scale in [1e19, 3e38] {
            // Sample 0 ordinary, sample 1 huge.
            let x: Vec<f32> = values(r * d, 3).iter().enumerate().map(|(e, &v)| if e < d { v } else { v * scale }).collect();
            let want = frog_f32(&cpu, &layer, &x, &y);
            for tile in TILES {
                cuda.set_gemm_tile(tile);
                let got = frog_f32(&cuda, &layer, &x, &y);
                let e = rel_diff(&got, &want);
                println!("gpu_huge_inputs ({tile:?}, bias {}): x x{scale:e}: the step within {e:.2e} of f64's", layer.bias);
                assert!(got.iter().all(|v| v.is_finite()) && e < 1e-4, "x x{scale:e}, {tile:?}: {e:e} from {want:?}: {got:?}");
            }
        }
    }
}

/// One K-FROG step (no momentum, the whole sample) of `layer` on
/// `backend` from the sampled inputs `x`: the direction, in f64.
fn kfrog_direction<B: KfrogBackend>(backend: &B, layer: &Layer, x: &[f32]) -> Vec<f64> {
    let cfg = KfrogConfig { sample_size: None, ..KfrogConfig::default() };
    let (r, n) = (x.len() / layer.input_len(), layer.rows() * layer.weight_cols());
    let (g, x, y) = (put(backend, &values(n, 2)), put(backend, x), put(backend, &values(r * layer.output_len(), 4)));
    let mut w = put(backend, &values(n, 1));
    let mut state = KfrogState::new(backend, layer, &cfg).unwrap();
    let mut ws = Workspace::new(backend, WorkspaceReq::new(backend, layer, r).unwrap()).unwrap();
    kfrog_step(backend, &cfg, layer, &mut state, &mut ws, &mut w, &g, KfrogBatch { x: &x, x_sample: r, y: &y, y_sample: r, batch_size: r }).unwrap();
    get(backend, ws.kfrog_outputs().direction, n)
}

/// K-FROG from sampled inputs about 1e19 (X^T X overflows f32) takes the
/// direction frog-cpu's f64 backend takes on the same values unscaled (the
/// backend's gain read back, the damping following it), on every tile; the
/// sampled X has full column rank, so the CG's denominator eps, which the
/// gain does not follow, stays negligible.
#[test]
fn gpu_kfrog_huge_inputs_give_the_unscaled_direction() {
    let Some(mut cuda) = device(Precision::Exact, "gpu_kfrog_huge_inputs_give_the_unscaled_direction") else { return };
    let cpu = Cpu::<f64>::with_threads(1).unwrap();
    for (layer, r) in [(Layer::linear(5, 3, false), 8), (Layer::conv2d(Conv2d::new(2, 3, 3, [5, 5]).padding(1), false), 2)] {
        let x: Vec<f32> = values(r * layer.input_len(), 3).iter().map(|v| v * 1e19).collect();
        let want = kfrog_direction(&cpu, &layer, &x);
        for tile in TILES {
            cuda.set_gemm_tile(tile);
            let got = kfrog_direction(&cuda, &layer, &x);
            let e = rel_diff(&got, &want);
            println!("gpu_kfrog_huge_inputs ({tile:?}, {} x {}): the direction within {e:.2e} of f64's", layer.rows(), layer.weight_cols());
            assert!(got.iter().all(|v| v.is_finite()) && e < 1e-4, "{tile:?}: {e:e} from {want:?}: {got:?}");
        }
    }
}
