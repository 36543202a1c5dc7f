//! Hostile input, as a user who tries to break the public API would give
//! it: overflowing sizes, huge allocations, exhausted or corrupt states,
//! values at the edge of the scalar type, out-of-range settings. Each class
//! has a unit test; the property tests (seeded, bounded) drive random
//! mixtures and assert that no call panics, a failing call names the
//! problem and changes nothing, and an accepted call gives finite results.

use crate::common;

use crate::common::forward::RequiredOnly;
use crate::common::{frog_with, Rng, StepData};
use frog_core::{
    adamw_step, frog_step, kfrog_step, plain_sgd_step, AdamState, AdamWConfig, BackendErrorKind, Batch, Config, ConfigError, Conv2d, Error, ErrorKind, GroupId, Guard, KfrogBatch,
    KfrogConfig, KfrogState, Layer, LayerKind, MAX_BATCH, MAX_NUM_ITERS, Method, Optimizer, ParamGrad, ParamId, ParamState, Params, Sampler, SgdConfig, ShapeError, StateError,
    Unguarded, Workspace, WorkspaceReq,
};
use frog_cpu::gemm::matmul_dense;
use frog_cpu::{Algorithm, Cpu, CpuError, Frog, Real};
use proptest::prelude::*;
use proptest::test_runner::{Config as Runner, RngSeed};

/// A seeded runner with `cases` cases and no regression files.
fn runner(cases: u32) -> Runner {
    Runner { cases, rng_seed: RngSeed::Fixed(0xF206_2026), failure_persistence: None, ..Runner::default() }
}

fn cast<T: Real>(v: &[f64], gain: f64) -> Vec<T> {
    v.iter().map(|&x| T::of_f64(x * gain)).collect()
}

fn finite<T: Real>(v: &[T]) -> bool {
    v.iter().all(|x| x.as_f64().is_finite())
}

/// Magnitudes of the data of one step: `x`, `y` and the gradients are
/// scaled by these.
#[derive(Clone, Copy, Debug)]
struct Gains {
    x: f64,
    y: f64,
    g: f64,
}

const UNIT: Gains = Gains { x: 1.0, y: 1.0, g: 1.0 };

/// One step (two, to use the momentum) in `T` from fresh state (or the
/// state `restore` holds); a failing call must leave the weights and the
/// state as they were, an accepted one must give finite weights.
fn step<T: Real>(cfg: &Config, layer: &Layer, d: &StepData, gains: Gains, guard: Option<Guard>) -> Result<Vec<T>, Error<CpuError>> {
    step_on(Cpu::<T>::with_threads(2).unwrap(), cfg, layer, d, gains, guard)
}

/// [`step`] on `backend`.
fn step_on<T: Real>(backend: Cpu<T>, cfg: &Config, layer: &Layer, d: &StepData, gains: Gains, guard: Option<Guard>) -> Result<Vec<T>, Error<CpuError>> {
    let momentum_cfg = Config { momentum: cfg.momentum.clamp(0.0, 1.0), ..Config::default() };
    let mut state = ParamState::with_diagnostics(&backend, layer, &momentum_cfg).unwrap();
    let r = d.sample;
    let mut ws = Workspace::new(&backend, WorkspaceReq::new(&backend, layer, r).unwrap()).unwrap();
    let mut weight = cast::<T>(&d.weight, 1.0);
    let mut bias = d.bias.as_deref().map(|b| cast::<T>(b, 1.0));
    let (gw, gb) = (cast::<T>(&d.grad_weight, gains.g), d.grad_bias.as_deref().map(|b| cast::<T>(b, gains.g)));
    let (x, y) = (cast::<T>(&d.x, gains.x), cast::<T>(&d.y, gains.y));
    for _ in 0..2 {
        let before = (weight.clone(), bias.clone(), export(&backend, &state));
        let params = Params { weight: &mut weight, grad_weight: &gw, bias: bias.as_mut().zip(gb.as_ref()) };
        let batch = Batch { x: &x, y: &y, sample: r, batch_size: d.batch };
        let result = frog_step(&backend, cfg, layer, &mut state, &mut ws, params, batch, guard);
        if let Err(e) = result {
            assert!(!e.to_string().is_empty());
            assert_eq!((weight, bias, export(&backend, &state)), before, "the failing call {e} changed something");
            return Err(e);
        }
        assert!(finite(&weight) && bias.as_deref().is_none_or(finite), "non-finite weights from finite input under {cfg:?}, {gains:?}");
    }
    Ok(weight)
}

fn export<T: Real>(backend: &Cpu<T>, state: &ParamState<Cpu<T>>) -> Vec<u8> {
    let mut out = vec![0; state.export_len()];
    state.export(backend, &mut out).unwrap();
    out
}

fn conv(c_in: usize, c_out: usize, k: usize, hw: usize) -> Layer {
    Layer::conv2d(Conv2d { c_in, c_out, kernel: [k, k], stride: [1, 1], padding: [1, 1], dilation: [1, 1], groups: 1, input_hw: [hw, hw] }, true)
}

fn data(layer: &Layer, seed: u64) -> StepData {
    StepData::random(&mut Rng(seed), layer, 3, 8)
}

fn base() -> Config {
    Config { lr: 1e-2, momentum: 0.9, weight_decay: 1e-4, sample_size: Some(3), ..Config::default() }
}

// ---- 1. sizes that overflow usize ----

#[test]
fn layers_too_large_to_index_are_shape_errors() {
    let huge = Layer::conv2d(Conv2d { c_in: 1 << 40, c_out: 4, kernel: [4096, 4096], stride: [1, 1], padding: [0, 0], dilation: [1, 1], groups: 1, input_hw: [4096, 4096] }, false);
    assert!(matches!(huge.validate(), Err(ShapeError::TooLarge { what }) if what.contains("c_in")));
    let backend = Cpu::<f32>::with_threads(1).unwrap();
    assert!(matches!(WorkspaceReq::new(&backend, &huge, 4), Err(ShapeError::TooLarge { .. })));
    let wide = Layer::linear_tokens(1 << 33, 1 << 31, 1 << 31, false);
    assert!(matches!(wide.validate(), Err(ShapeError::TooLarge { .. })));
    // Valid per sample, but not at this sample size.
    let big = Layer::linear_tokens(1 << 20, 4, 1 << 20, false);
    assert!(big.validate().is_ok());
    assert!(matches!(WorkspaceReq::new(&backend, &big, 1 << 44), Err(ShapeError::TooLarge { .. })));
    let pad = Layer::conv2d(Conv2d { c_in: 1, c_out: 1, kernel: [1, 1], stride: [1, 1], padding: [usize::MAX / 2, 0], dilation: [1, 1], groups: 1, input_hw: [2, 2] }, false);
    assert!(matches!(pad.validate(), Err(ShapeError::TooLarge { .. })));
}

// ---- 2. allocation failure ----

#[test]
fn impossible_allocations_are_errors() {
    let backend = Cpu::<f32>::with_threads(1).unwrap();
    use frog_core::Backend;
    // 2^48 bytes and more fail deterministically (no lazily mapped success).
    assert_eq!(backend.zeros(1 << 46).unwrap_err(), CpuError::OutOfMemory { entries: 1 << 46 });
    assert_eq!(backend.zeros(usize::MAX).unwrap_err(), CpuError::OutOfMemory { entries: usize::MAX });
    let layer = Layer::linear_tokens(1 << 24, 1 << 12, 1, false);
    let err = frog_with::<f32>(&backend, Config::default(), &[layer], &[], 8, 0).err().unwrap();
    assert_eq!(err.kind(), frog_core::ErrorKind::Backend(frog_core::BackendErrorKind::OutOfMemory));
    // The largest maximum batch with a small sample needs only the sample's indices.
    let small = Layer::linear(3, 2, false);
    let cfg = Config { sample_size: Some(4), ..Config::default() };
    let (mut frog, _, _) = frog_with::<f32>(&backend, cfg, &[small], &[], MAX_BATCH, 0).unwrap();
    assert_eq!(frog.sample_rows(10), 4);
    assert_eq!(frog.sample(10, &mut [0; 4]).unwrap().len(), 4);
}

// ---- 3. exhausted and corrupt states ----

#[test]
fn corrupt_or_exhausted_states_are_refused() {
    let backend = Cpu::<f64>::with_threads(1).unwrap();
    let layer = Layer::linear(3, 2, false);
    let cfg = Config { momentum: 0.9, ..Config::default() };
    let mut state = ParamState::for_layer(&backend, &layer, &cfg).unwrap();
    let good = export(&backend, &state);
    let mut bytes = good.clone();
    bytes[16..24].copy_from_slice(&u64::MAX.to_le_bytes());
    state.restore(&backend, &bytes).unwrap();
    let d = StepData::random(&mut Rng(1), &layer, 2, 2);
    let mut ws = Workspace::new(&backend, WorkspaceReq::new(&backend, &layer, 2).unwrap()).unwrap();
    let mut w = d.weight.clone();
    let params = Params { weight: &mut w, grad_weight: &d.grad_weight, bias: None };
    let err = frog_step(&backend, &cfg, &layer, &mut state, &mut ws, params, Batch { x: &d.x, y: &d.y, sample: 2, batch_size: 2 }, Unguarded).unwrap_err();
    assert_eq!(err, Error::State(StateError::StepsExhausted));
    assert_eq!((w, state.steps()), (d.weight.clone(), u64::MAX));
    let mut sgd_state = ParamState::new(&backend, 2, true).unwrap();
    sgd_state.restore(&backend, &{
        let mut b = export(&backend, &sgd_state);
        b[16..24].copy_from_slice(&u64::MAX.to_le_bytes());
        b
    })
    .unwrap();
    let (mut p, g) = (vec![1.0; 2], vec![0.5; 2]);
    assert_eq!(plain_sgd_step(&backend, &cfg, &mut sgd_state, ParamGrad { param: &mut p, grad: &g }).unwrap_err(), Error::State(StateError::StepsExhausted));
    assert_eq!(p, vec![1.0; 2]);

    let fresh = ParamState::for_layer(&backend, &layer, &cfg).unwrap();
    for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        let mut b = good.clone();
        b[24 + 8 * 3..24 + 8 * 4].copy_from_slice(&bad.to_le_bytes());
        let mut s = ParamState::for_layer(&backend, &layer, &cfg).unwrap();
        assert_eq!(s.restore(&backend, &b).unwrap_err(), Error::State(StateError::NonFinite { index: 3 }));
        assert_eq!(export(&backend, &s), export(&backend, &fresh));
    }
    let mut b = good.clone();
    b[7] = 2;
    assert_eq!(state.restore(&backend, &b).unwrap_err(), Error::State(StateError::MomentumFlag(2)));
}

// ---- 4. threads ----

#[test]
fn thread_counts_past_the_limit_are_errors() {
    let err = Cpu::<f32>::with_threads(100_000).err().unwrap();
    assert!(matches!(err, CpuError::Threads { requested: 100_000, .. }));
    assert!(err.to_string().contains("100000"));
}

// ---- 5. the public GEMM checks its lengths ----

#[test]
fn dense_products_check_their_lengths() {
    let backend = Cpu::<f64>::with_threads(2).unwrap();
    let (a, b) = (vec![1.0; 6], vec![2.0; 6]);
    let mut c = vec![0.0; 4];
    matmul_dense(backend.pool(), &mut c, &a, &b, [2, 3, 2]).unwrap();
    assert_eq!(c, vec![6.0; 4]);
    let mut short = vec![0.0; 3];
    assert!(matches!(matmul_dense(backend.pool(), &mut short, &a, &b, [2, 3, 2]), Err(CpuError::Length { .. })));
    assert_eq!(short, vec![0.0; 3]);
    assert!(matmul_dense(backend.pool(), &mut c, &a, &b, [usize::MAX, 3, 2]).is_err());
    assert!(matmul_dense(backend.pool(), &mut c, &a, &b, [2, usize::MAX / 2 + 1, 2]).is_err());
}

// ---- 6, 9, 10. settings ----

#[test]
fn settings_outside_their_range_or_the_scalar_are_rejected() {
    let b = base();
    let cases = [
        (Config { denom_eps: 1e-46, ..b }, "denom_eps"),
        (Config { lr: 1e39, weight_decay: 0.0, ..b }, "lr"),
        (Config { tau: 1e39, ..b }, "tau"),
        (Config { tau: 5e-324, ..b }, "tau"),
    ];
    for (cfg, what) in cases {
        assert!(cfg.validate_for::<f64>().is_ok() || what == "tau" && cfg.tau > 1e300, "{cfg:?}");
        let err = cfg.validate_for::<f32>().unwrap_err();
        assert!(matches!(err, ConfigError::OutOfScalarRange { what: w, .. } if w.starts_with(what)), "{err}");
    }
    for m in [1.5, -0.1, f64::NAN] {
        assert_eq!(Config { momentum: m, ..b }.validate().map_err(|e| e.to_string()).unwrap_err(), ConfigError::Momentum(m).to_string());
    }
    assert!(Config { momentum: 1.0, ..b }.validate().is_ok());
    assert!(matches!(Config { lr: 2.0, weight_decay: 0.6, ..b }.validate(), Err(ConfigError::DecayTooLarge { .. })));
    assert!(matches!(Config { lr: 2.0, weight_decay: 0.4, lr_other_ratio: 4.0, ..b }.validate(), Err(ConfigError::DecayTooLarge { .. })));
    assert!(matches!(Config { lr: 1e300, lr_other_ratio: 1e300, weight_decay: 0.0, ..b }.validate(), Err(ConfigError::OutOfScalarRange { .. })));
    assert_eq!(Config { num_iters: usize::MAX, ..b }.validate(), Err(ConfigError::NumItersTooLarge(usize::MAX)));
    assert!(Config { num_iters: MAX_NUM_ITERS, ..b }.validate().is_ok());
    let sgd = SgdConfig { lr: 0.1, momentum: 0.9, weight_decay: 1e-4, nesterov: false, ..SgdConfig::default() };
    assert!(matches!(SgdConfig { momentum: 1.1, ..sgd }.validate(), Err(ConfigError::Momentum(_))));
    assert!(matches!(SgdConfig { lr: 100.0, weight_decay: 0.1, ..sgd }.validate(), Err(ConfigError::DecayTooLarge { .. })));
    assert!(matches!(SgdConfig { lr: 1e39, weight_decay: 0.0, ..sgd }.validate_for::<f32>(), Err(ConfigError::OutOfScalarRange { .. })));
    // set_lr: a rejected rate changes nothing.
    let (mut frog, _, _) = frog_with::<f32>(&Cpu::with_threads(1).unwrap(), b, &[Layer::linear(2, 2, false)], &[], 4, 0).unwrap();
    assert!(frog.set_lr(1e39).is_err());
    assert!(frog.set_lr(f64::INFINITY).is_err());
    assert_eq!(frog.group(frog_core::GroupId::DEFAULT).unwrap().lr(), b.lr);
    // The default of 4 iterations works on layers with D' < 4, as in the original.
    let tiny = Layer::linear(2, 3, false);
    assert!(step::<f64>(&Config { sample_size: None, ..Config::default() }, &tiny, &StepData::random(&mut Rng(3), &tiny, 2, 2), UNIT, None).is_ok());
}

// ---- 7. the damping schedule ----

#[test]
fn extreme_damping_schedules_stay_finite() {
    let cfg = Config { tau: 5e-324, tau_final: Some(1e-3), tau_steps: Some(10), ..base() };
    for n in 1..=12 {
        let tau = cfg.tau_at(n);
        assert!(tau.is_finite() && (5e-324..=1e-3).contains(&tau), "step {n}: {tau}");
    }
    assert_eq!(cfg.tau_at(11), 1e-3);
    let back = Config { tau: 1e300, tau_final: Some(1e-300), tau_steps: Some(4), ..base() };
    assert!((1..=4).all(|n| back.tau_at(n).is_finite()));
    let layer = conv(2, 3, 3, 4);
    step::<f64>(&cfg, &layer, &data(&layer, 5), UNIT, None).unwrap();
    // f32 cannot represent tau = 5e-324: rejected, not a NaN step.
    assert!(matches!(step::<f32>(&cfg, &layer, &data(&layer, 5), UNIT, None), Err(Error::Config(ConfigError::OutOfScalarRange { .. }))));
}

// ---- 8. huge but finite gradients ----

/// The step of `T` on data scaled by `gains` equals the unscaled step (the
/// update is scale-free; `denom_eps` is the only difference).
fn scale_free<T: Real>(gains: Gains, momentum: f64, tol: f64) {
    for (seed, layer) in [conv(2, 3, 3, 5), Layer::linear_tokens(5, 4, 3, true), Layer::linear(6, 2, false)].iter().enumerate() {
        let d = data(layer, 40 + seed as u64);
        // A tiny eps, so that the one difference of the rescaled path (eps / c^2) vanishes.
        let cfg = Config { weight_decay: 0.0, momentum, denom_eps: 1e-30, ..base() };
        let want = step::<T>(&cfg, layer, &d, UNIT, None).unwrap();
        let got = step::<T>(&cfg, layer, &d, gains, None).unwrap();
        let err = want.iter().zip(&got).map(|(a, b)| (a.as_f64() - b.as_f64()).abs()).fold(0.0, f64::max);
        assert!(err <= tol, "{gains:?} on {layer:?}: max difference {err}");
    }
}

#[test]
fn huge_gradients_give_the_scale_free_step() {
    // With momentum 0.9 the buffer holds up to 10x the gradient, so that
    // must stay finite; without momentum, up to the type's maximum.
    for (g, momentum) in [(1e20, 0.9), (1e30, 0.9), (3e37, 0.9), (3.4e38, 0.0)] {
        scale_free::<f32>(Gains { x: 1.0, y: g, g: 1.0 }, momentum, 2e-4);
        scale_free::<f32>(Gains { x: 1.0, y: 1.0, g }, momentum, 2e-4);
        scale_free::<f32>(Gains { x: 1.0, y: g, g }, momentum, 2e-4);
    }
    for (g, momentum) in [(1e158, 0.9), (1e300, 0.9), (1.7e308, 0.0)] {
        scale_free::<f64>(Gains { x: 1.0, y: g, g }, momentum, 1e-9);
    }
}

/// The largest difference of `got` from `want`, relative to `want`'s
/// largest entry.
fn rel_err<T: Real>(want: &[f64], got: &[T]) -> f64 {
    let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    want.iter().zip(got).map(|(a, b)| (a - b.as_f64()).abs()).fold(0.0, f64::max) / scale
}

#[test]
fn huge_inputs_give_the_step_of_the_unscaled_arithmetic() {
    // |x| far past the square-safe size of f32: the patches are scaled by a
    // power of two, the bias feature with them, which changes FROG's step
    // only through denom_eps (tiny here). f64 takes the same inputs on its
    // unscaled path (its threshold is 2^128), so the two agree to f32's
    // precision, on every algorithm and with a bias.
    let cfg = Config { weight_decay: 0.0, denom_eps: 1e-30, ..base() };
    let layers = [(Layer::linear(5, 3, true), 1), (Layer::linear_tokens(5, 4, 3, true), 3), (conv(2, 3, 3, 5), 3), (Layer::linear(6, 2, false), 3)];
    for (seed, (layer, sample)) in layers.iter().enumerate() {
        let d = StepData::random(&mut Rng(60 + seed as u64), layer, *sample, 8);
        for x in [1.0, 1e19, 1e30, 3e37] {
            let gains = Gains { x, y: 1.0, g: 1.0 };
            let want = step::<f64>(&cfg, layer, &d, gains, None).unwrap();
            let algorithms: &[Option<Algorithm>] = if matches!(layer.kind, LayerKind::Conv2d(_)) {
                &[None, Some(Algorithm::Direct), Some(Algorithm::Gram), Some(Algorithm::Winograd)]
            } else {
                &[None, Some(Algorithm::Gram)]
            };
            for &algorithm in algorithms {
                let cpu = Cpu::<f32>::with_threads(2).unwrap().with_algorithm(algorithm);
                let got = step_on(cpu, &cfg, layer, &d, gains, None).unwrap();
                let err = rel_err(&want, &got);
                // f32's own error on the rank-deficient linear case at x = 1 is 1.6e-4.
                assert!(err < 3e-4, "x {x:e}, {algorithm:?} on {layer:?}: {err:e} from f64");
            }
        }
    }
    // Inputs below the threshold keep the unscaled arithmetic to the bit:
    // a gain of 1 multiplies nothing that changes.
    let layer = conv(2, 3, 3, 5);
    let d = data(&layer, 7);
    let at = Gains { x: 60000.0, y: 1.0, g: 1.0 };
    assert_eq!(step::<f32>(&cfg, &layer, &d, at, None).unwrap(), step::<f32>(&cfg, &layer, &d, at, None).unwrap());
}

#[test]
fn kfrog_on_huge_inputs_gives_the_unscaled_step() {
    // x about 1e19 in f32: X^T X would overflow. The patches are scaled,
    // the damping and Fisher weights follow, and the direction matches
    // f64's unscaled one (its X^T X about 1e38 is fine in f64) where the
    // sample spans the inputs (8 samples of 5 features: with fewer, eps is
    // the only curvature of the other directions, and at 1e-44 of X^T X it
    // is below the rounding of either type). Rank-deficient samples stay
    // finite, up to inputs whose update bound overflows f32: those are
    // refused, and the step changes nothing.
    let layer = Layer::linear(5, 3, false);
    let cfg = KfrogConfig { momentum: 0.9, sample_size: None, ..KfrogConfig::default() };
    fn run<T: Real>(layer: &Layer, cfg: &KfrogConfig, d: &StepData, x_gain: f64) -> Result<Vec<T>, Error<CpuError>> {
        let cpu = Cpu::<T>::with_threads(1).unwrap();
        let r = d.sample;
        let mut state = KfrogState::new(&cpu, layer, cfg).unwrap();
        let mut ws = Workspace::new(&cpu, WorkspaceReq::new(&cpu, layer, r).unwrap()).unwrap();
        let (x, y) = (cast::<T>(&d.x, x_gain), cast::<T>(&d.y, 1.0));
        let (mut weight, grad) = (cast::<T>(&d.weight, 1.0), cast::<T>(&d.grad_weight, 1.0));
        for _ in 0..2 {
            let before = (weight.clone(), state.steps());
            let batch = KfrogBatch { x: &x, x_sample: r, y: &y, y_sample: r, batch_size: r };
            if let Err(e) = kfrog_step(&cpu, cfg, layer, &mut state, &mut ws, &mut weight, &grad, batch) {
                assert_eq!((weight, state.steps()), before, "the refused step {e} changed something");
                return Err(e);
            }
            assert!(finite(&weight), "non-finite K-FROG weights at |x| {x_gain:e}, {r} samples");
        }
        let mut direction = vec![T::ZERO; weight.len()];
        frog_core::Backend::read(&cpu, ws.kfrog_outputs().direction, 0, &mut direction).unwrap();
        Ok(direction)
    }
    let full = StepData::random(&mut Rng(12), &layer, 8, 8);
    for x in [1.0, 1e19, 1e30] {
        let want = run::<f64>(&layer, &cfg, &full, x).unwrap();
        let got = run::<f32>(&layer, &cfg, &full, x).unwrap();
        let err = rel_err(&want, &got);
        assert!(err < 1e-4, "x {x:e}: {err:e} from f64");
    }
    let few = StepData::random(&mut Rng(13), &layer, 2, 2);
    for x in [1e19, 1e30] {
        run::<f32>(&layer, &cfg, &few, x).unwrap();
    }
    let err = run::<f32>(&layer, &cfg, &few, 3e37).unwrap_err();
    assert!(matches!(err, Error::Config(ConfigError::UpdateBound { .. })) && err.to_string().contains("largest |x|"), "{err}");
}

// ---- 9. settings whose update bound overflows the scalar ----

/// Whether `result` is the update-bound refusal.
fn bound_refused(result: Result<(), ConfigError>) -> bool {
    matches!(result, Err(ConfigError::UpdateBound { .. }))
}

#[test]
fn settings_whose_update_bound_overflows_the_scalar_are_refused() {
    let b = Config { weight_decay: 0.0, ..base() };
    // FROG: no entry exceeds lr / sqrt(tau_min); f32 lr = 3e38 would give
    // infinite weights after one step.
    let huge = Config { lr: 3e38, ..b };
    assert!(bound_refused(huge.validate_for::<f32>()) && huge.validate_for::<f64>().is_ok());
    let layer = Layer::linear(5, 3, true);
    let d = StepData::random(&mut Rng(9), &layer, 3, 3);
    assert!(matches!(step::<f32>(&huge, &layer, &d, UNIT, None), Err(Error::Config(ConfigError::UpdateBound { .. }))));
    // The schedule's smallest damping counts, and a bound just inside the
    // margin steps finitely.
    let edge = f64::from(f32::MAX) / frog_core::UPDATE_MARGIN * 1e-3 * 0.99;
    assert!(Config { lr: edge * 1.1, tau: 1.0, ..b }.validate_for::<f32>().is_ok());
    assert!(bound_refused(Config { lr: edge * 1.1, tau: 1.0, tau_final: Some(1e-6), tau_steps: Some(3), ..b }.validate_for::<f32>()));
    step::<f32>(&Config { lr: edge, ..b }, &layer, &d, UNIT, None).unwrap();
    assert!(bound_refused(Config { lr: edge * 1.1, ..b }.validate_for::<f32>()));
    // The plain-SGD path: lr * lr_other_ratio / (1 - momentum).
    assert!(bound_refused(Config { lr: 1e36, tau: 1e6, lr_other_ratio: 100.0, ..b }.validate_for::<f32>()));
    // SGD: lr / (1 - momentum) per unit of the gradient.
    let sgd = SgdConfig { lr: 1e37, momentum: 0.9, weight_decay: 0.0, nesterov: false, ..SgdConfig::default() };
    assert!(bound_refused(sgd.validate_for::<f32>()) && sgd.validate_for::<f64>().is_ok());
    assert!(SgdConfig { momentum: 0.0, ..sgd }.validate_for::<f32>().is_ok());
    // AdamW: lr / sqrt((1 - beta2)(1 - beta1^2/beta2)), or lr / ((1 - beta1) eps).
    let adam = AdamWConfig { lr: 2e36, weight_decay: 0.0, ..AdamWConfig::default() };
    assert!(bound_refused(adam.validate_for::<f32>()) && adam.validate_for::<f64>().is_ok());
    assert!(AdamWConfig { lr: 1e35, ..adam }.validate_for::<f32>().is_ok());
    assert!(bound_refused(AdamWConfig { lr: 1e29, beta1: 0.99, beta2: 0.9, ..adam }.validate_for::<f32>()));
    assert!(AdamWConfig { lr: 1e37, beta1: 0.0, beta2: 0.0, ..adam }.validate_for::<f32>().is_ok());
    // K-FROG: lr / eps^1.5 per unit of |M| * |x|.
    let kfrog = KfrogConfig { lr: 1e30, ..KfrogConfig::default() };
    assert!(bound_refused(kfrog.validate_for::<f32>()) && kfrog.validate_for::<f64>().is_ok());
    assert!(KfrogConfig { lr: 1e27, ..kfrog }.validate_for::<f32>().is_ok());
    let err = huge.validate_for::<f32>().unwrap_err().to_string();
    assert!(err.contains("lr / sqrt(tau_min)") && err.contains("32-bit"), "{err}");
}

// ---- 10. running means of squares stay finite and restorable ----

#[test]
fn adamw_state_saturates_and_its_checkpoint_restores() {
    let cpu = Cpu::<f32>::with_threads(1).unwrap();
    for amsgrad in [false, true] {
        let cfg = AdamWConfig { amsgrad, ..AdamWConfig::default() };
        let mut state = AdamState::new(&cpu, 3, amsgrad).unwrap();
        let mut param = vec![1.0f32, -1.0, 0.5];
        let grad = vec![1e21f32, -3e38, 1.0];
        let mut previous = param.clone();
        for _ in 0..3 {
            adamw_step(&cpu, &cfg, &mut state, &mut param, &grad).unwrap();
            let (_, v, vmax) = state.moments();
            assert!(finite(&param) && finite(v) && vmax.is_none_or(|b| finite(b)), "{param:?} {v:?}");
            assert_eq!(v[0], f32::MAX);
            // The huge entries keep moving against their gradient.
            assert!(param[0] < previous[0] - 1e-4 && param[1] > previous[1] + 1e-4, "{previous:?} -> {param:?}");
            previous = param.clone();
        }
        let mut bytes = vec![0; state.export_len()];
        state.export(&cpu, &mut bytes).unwrap();
        let mut fresh = AdamState::new(&cpu, 3, amsgrad).unwrap();
        fresh.restore(&cpu, &bytes).unwrap();
        assert_eq!(fresh.moments().1, state.moments().1);
    }
    // Gradients of opposite signs at the maximum: `g - m` overflows, the
    // first moment stays finite (and between them).
    let cfg = AdamWConfig { beta1: 0.5, weight_decay: 0.0, ..AdamWConfig::default() };
    let mut state = AdamState::new(&cpu, 1, false).unwrap();
    let mut param = vec![0.0f32];
    for g in [f32::MAX, -f32::MAX, f32::MAX] {
        adamw_step(&cpu, &cfg, &mut state, &mut param, &vec![g]).unwrap();
        let (m, v, _) = state.moments();
        assert!(finite(m) && finite(v) && finite(&param) && m[0].abs() < f32::MAX / 1.5, "{m:?} {v:?} {param:?}");
    }
}

/// A K-FROG layer, its fresh state (with a y average) and workspace.
fn kfrog_setup(cpu: &Cpu<f32>, layer: &Layer, cfg: &KfrogConfig) -> (KfrogState<Cpu<f32>>, Workspace<Cpu<f32>>) {
    let state = KfrogState::new(cpu, layer, cfg).unwrap();
    (state, Workspace::new(cpu, WorkspaceReq::new(cpu, layer, 2).unwrap()).unwrap())
}

fn kfrog_export(cpu: &Cpu<f32>, state: &KfrogState<Cpu<f32>>) -> Vec<u8> {
    let mut out = vec![0; state.export_len()];
    state.export(cpu, &mut out).unwrap();
    out
}

#[test]
fn kfrog_y_average_saturates_and_its_checkpoint_restores() {
    let cpu = Cpu::<f32>::with_threads(1).unwrap();
    let layer = Layer::linear(5, 3, false);
    let cfg = KfrogConfig { y_momentum: 0.9, momentum: 0.9, sample_size: Some(2), ..KfrogConfig::default() };
    let (mut state, mut ws) = kfrog_setup(&cpu, &layer, &cfg);
    let d = StepData::random(&mut Rng(11), &layer, 2, 2);
    let (x, y) = (cast::<f32>(&d.x, 1.0), cast::<f32>(&d.y, 1e20));
    let (mut weight, grad) = (cast::<f32>(&d.weight, 1.0), cast::<f32>(&d.grad_weight, 1.0));
    for _ in 0..3 {
        kfrog_step(&cpu, &cfg, &layer, &mut state, &mut ws, &mut weight, &grad, KfrogBatch { x: &x, x_sample: 2, y: &y, y_sample: 2, batch_size: 2 }).unwrap();
        let avg = state.y_average().unwrap();
        assert!(finite(&weight) && finite(avg), "{weight:?} {avg:?}");
    }
    let bytes = kfrog_export(&cpu, &state);
    let (mut fresh, _) = kfrog_setup(&cpu, &layer, &cfg);
    fresh.restore(&cpu, &bytes).unwrap();
    assert_eq!(fresh.y_average(), state.y_average());
}

#[test]
fn kfrog_negative_y_average_is_refused() {
    let cpu = Cpu::<f32>::with_threads(1).unwrap();
    let layer = Layer::linear(5, 3, false);
    let cfg = KfrogConfig { y_momentum: 0.9, ..KfrogConfig::default() };
    let (state, _) = kfrog_setup(&cpu, &layer, &cfg);
    // A negative y average (the last R entries) is refused, naming it, and
    // changes nothing; the step on it would take the square root of it.
    let mut bad = kfrog_export(&cpu, &state);
    let at = bad.len() - 4 * layer.rows();
    bad[at..at + 4].copy_from_slice(&(-1.0f32).to_le_bytes());
    let (mut target, _) = kfrog_setup(&cpu, &layer, &cfg);
    let before = kfrog_export(&cpu, &target);
    let err = target.restore(&cpu, &bad).unwrap_err();
    assert_eq!(err, Error::State(StateError::Negative { what: "K-FROG y average", index: 0 }), "{err}");
    assert!(err.to_string().contains("K-FROG y average entry 0 is negative"), "{err}");
    assert_eq!(kfrog_export(&cpu, &target), before);
}

// ---- 11, 12. state and index mismatches ----

#[test]
fn mismatched_momentum_states_and_indices_name_the_problem() {
    let backend = Cpu::<f64>::with_threads(1).unwrap();
    let layer = Layer::linear(3, 2, false);
    let mut state = ParamState::for_layer(&backend, &layer, &Config::default()).unwrap();
    let d = StepData::random(&mut Rng(2), &layer, 2, 2);
    let mut ws = Workspace::new(&backend, WorkspaceReq::new(&backend, &layer, 2).unwrap()).unwrap();
    let mut w = d.weight.clone();
    let params = Params { weight: &mut w, grad_weight: &d.grad_weight, bias: None };
    let err = frog_step(&backend, &base(), &layer, &mut state, &mut ws, params, Batch { x: &d.x, y: &d.y, sample: 2, batch_size: 2 }, Unguarded).unwrap_err();
    assert_eq!(err, Error::State(StateError::MomentumSetting { setting: "momentum", state_has_buffer: false }));
    assert_eq!((state.steps(), &w), (0, &d.weight));

    let (mut frog, layers, others) = frog_with::<f64>(&backend, base(), &[layer, layer], &[2], 4, 0).unwrap();
    // A handle of another optimizer with more registrations names nothing here.
    let (_, foreign, _) = frog_with::<f64>(&backend, base(), &[layer; 4], &[], 4, 0).unwrap();
    let params = Params { weight: &mut w, grad_weight: &d.grad_weight, bias: None };
    let err = frog.step_layer(&backend, foreign[3], params, Some(Batch { x: &d.x, y: &d.y, sample: 2, batch_size: 2 })).unwrap_err();
    assert_eq!(err.to_string(), "optimizer registry: parameter 3 was not registered with this optimizer (its handle comes from another)");
    let params = Params { weight: &mut w, grad_weight: &d.grad_weight, bias: None };
    let err = frog.step_layer(&backend, others[0], params, None::<Batch<_>>).unwrap_err();
    assert_eq!(err.to_string(), "optimizer registry: parameter 2 is of the other kind (step layers with step_layer, plain parameters with step_param)");
    let params = Params { weight: &mut w, grad_weight: &d.grad_weight, bias: None };
    assert_eq!(frog.step_layer(&backend, layers[0], params, None::<Batch<_>>).unwrap_err().to_string(), "optimizer registry: layer 0 is preconditioned and needs its sampled batch");
    let err = frog.step_param(&backend, layers[1], ParamGrad { param: &mut vec![0.0; 2], grad: &vec![0.0; 2] }).unwrap_err();
    assert!(matches!(err, Error::Registry(frog_core::RegistryError::WrongKind(1))));
    assert_eq!(frog.sample(5, &mut [0; 5]).unwrap_err().to_string(), "shape mismatch: batch of 5 samples exceeds the 4 the optimizer was built for");
    assert_eq!(frog.add_param(&backend, "param0", 3, frog_core::GroupId::DEFAULT).unwrap_err(), Error::Registry(frog_core::RegistryError::DuplicateName));
    assert_eq!(frog.params().count(), 3, "a failed registration registers nothing");
}

// ---- the opt-in guard ----

#[test]
fn the_guard_counts_and_replaces_bad_rows() {
    let backend = Cpu::<f64>::with_threads(1).unwrap();
    let layer = Layer::linear(4, 3, false);
    let mut d = StepData::random(&mut Rng(9), &layer, 2, 2);
    // Row 1's sampled output gradients are all zero: a dead row.
    for i in 0..2 {
        d.y[i * 3 + 1] = 0.0;
    }
    let cfg = Config { sample_size: None, tau: 1e-6, ..Config::default() };
    let run = |guard: Guard| {
        let mut state = ParamState::with_diagnostics(&backend, &layer, &cfg).unwrap();
        let mut ws = Workspace::new(&backend, WorkspaceReq::new(&backend, &layer, 2).unwrap()).unwrap();
        let mut w = d.weight.clone();
        let params = Params { weight: &mut w, grad_weight: &d.grad_weight, bias: None };
        frog_step(&backend, &cfg, &layer, &mut state, &mut ws, params, Batch { x: &d.x, y: &d.y, sample: 2, batch_size: 2 }, guard).unwrap();
        (w, state.diagnostics(&backend).unwrap().unwrap())
    };
    let (plain, diag) = run(Guard::default());
    assert_eq!((diag.rows, diag.dead_rows, diag.nonfinite_rows, diag.replaced_rows), (3, 1, 0, 0));
    assert!(diag.max_residual.is_finite() && diag.row_scale_min > 0.0 && diag.row_scale_max >= diag.row_scale_min);
    // Unguarded, the dead row moves by about lr / sqrt(tau).
    let moved = |w: &[f64]| (0..4).map(|c| (w[4 + c] - d.weight[4 + c]).powi(2)).sum::<f64>().sqrt();
    assert!((moved(&plain) / (cfg.lr / cfg.tau.sqrt()) - 1.0).abs() < 0.05);
    assert_eq!(plain, common::step_once(&cfg, &layer, &d).unwrap().weight);
    let (guarded, diag) = run(Guard { dead_rows: true, nonfinite: true });
    assert_eq!((diag.dead_rows, diag.replaced_rows), (1, 1));
    assert!((moved(&guarded) - cfg.lr).abs() < 1e-12);
    assert_eq!(guarded[..4], plain[..4]);
    // Non-finite inputs: counted, and replaced when asked.
    let mut bad = d.clone();
    bad.x[0] = f64::NAN;
    let mut state = ParamState::with_diagnostics(&backend, &layer, &cfg).unwrap();
    let mut ws = Workspace::new(&backend, WorkspaceReq::new(&backend, &layer, 2).unwrap()).unwrap();
    let mut w = bad.weight.clone();
    let params = Params { weight: &mut w, grad_weight: &bad.grad_weight, bias: None };
    frog_step(&backend, &cfg, &layer, &mut state, &mut ws, params, Batch { x: &bad.x, y: &bad.y, sample: 2, batch_size: 2 }, Guard { nonfinite: true, dead_rows: false }).unwrap();
    let diag = state.diagnostics(&backend).unwrap().unwrap();
    assert!(diag.nonfinite_rows >= 1 && diag.replaced_rows >= 1, "{diag:?}");
    assert!(finite(&w));
    // A guarded step needs the diagnostics buffers.
    let mut plain_state = ParamState::for_layer(&backend, &layer, &cfg).unwrap();
    let params = Params { weight: &mut w, grad_weight: &d.grad_weight, bias: None };
    let err = frog_step(&backend, &cfg, &layer, &mut plain_state, &mut ws, params, Batch { x: &d.x, y: &d.y, sample: 2, batch_size: 2 }, Guard::default()).unwrap_err();
    assert_eq!(err, Error::State(StateError::NoDiagnostics));
}

// ---- 13. the optimizer object: refused calls change nothing ----

/// An SGD group's method, without decay.
fn sgd(momentum: f64) -> Method {
    Method::Sgd(SgdConfig { lr: 0.1, momentum, weight_decay: 0.0, nesterov: false, ..SgdConfig::default() })
}

/// What a refused call could change on an optimizer over [`RequiredOnly`]:
/// its checkpoint (states, step counts, rates, sampler), its registrations,
/// and its workspace's size and last results.
type Snapshot = (Vec<u8>, Vec<String>, Option<(WorkspaceReq, [Vec<f64>; 3])>);

fn snapshot<const N: usize>(b: &RequiredOnly, opt: &Optimizer<RequiredOnly, N>) -> Snapshot {
    let mut bytes = vec![0; opt.checkpoint_len()];
    opt.checkpoint(b, &mut bytes).unwrap();
    let names = opt.params().map(|id| opt.name(id).unwrap().to_string()).collect();
    let ws = opt.workspace().map(|ws| (ws.req(), [ws.trace().clone(), ws.direction().clone(), ws.row_scale().clone()]));
    (bytes, names, ws)
}

/// One guarded FROG step of `layer` (registered as `id`) with data of `seed`.
fn frog_step_of<const N: usize>(b: &RequiredOnly, opt: &mut Optimizer<RequiredOnly, N>, id: ParamId, layer: &Layer, seed: u64) -> Result<(), Error<CpuError>> {
    let d = StepData::random(&mut Rng(seed), layer, 3, 8);
    let (mut w, mut bias) = (d.weight.clone(), d.bias.clone());
    let params = Params { weight: &mut w, grad_weight: &d.grad_weight, bias: bias.as_mut().zip(d.grad_bias.as_ref()) };
    opt.step_layer(b, id, params, Some(Batch { x: &d.x, y: &d.y, sample: 3, batch_size: 8 }))
}

/// Runs `register` with its first allocation failing, then its second,
/// and so on until it succeeds: every failure must be the backend's
/// `OutOfMemory` and leave the optimizer as it was.
fn fail_at_every_allocation<const N: usize>(
    b: &RequiredOnly,
    opt: &mut Optimizer<RequiredOnly, N>,
    what: &str,
    mut register: impl FnMut(&mut Optimizer<RequiredOnly, N>) -> Result<ParamId, Error<CpuError>>,
) {
    for k in 0.. {
        let before = snapshot(b, opt);
        b.allow(Some(k));
        let result = register(opt);
        b.allow(None);
        match result {
            Ok(_) => return assert!(k > 0, "{what} allocates"),
            Err(e) => {
                assert_eq!(e.kind(), ErrorKind::Backend(BackendErrorKind::OutOfMemory), "{what}: {e}");
                assert_eq!(snapshot(b, opt), before, "{what}: failing at allocation {k} changed the optimizer");
            }
        }
    }
}

#[test]
fn registrations_failing_at_any_allocation_change_nothing() {
    let b = RequiredOnly::new(1);
    let mut opt = Optimizer::<RequiredOnly, 16>::new(Method::Frog(base()), 8, 0).unwrap();
    let sgd = opt.add_group(sgd(0.9)).unwrap();
    let kfrog = opt.add_group(KfrogConfig { momentum: 0.9, y_momentum: 0.9, sample_size: Some(3), ..KfrogConfig::default() }).unwrap();
    let adam = opt.add_group(AdamWConfig { amsgrad: true, ..AdamWConfig::default() }).unwrap();
    // With the guard on, a FROG layer also allocates its diagnostics.
    opt.set_guard(&b, Some(Guard::default())).unwrap();
    let first = Layer::linear(3, 2, true);
    let id = opt.add_layer(&b, "first", first, GroupId::DEFAULT).unwrap();
    frog_step_of(&b, &mut opt, id, &first, 1).unwrap();
    let g = GroupId::DEFAULT;
    let layers = [("frog", conv(2, 4, 3, 5), g), ("kfrog", Layer::conv2d(Conv2d::new(3, 5, 3, [6, 6]).padding(1), false), kfrog), ("sgd", Layer::linear(5, 4, true), sgd), ("adam", Layer::linear(5, 4, true), adam)];
    for (name, layer, group) in layers {
        fail_at_every_allocation(&b, &mut opt, name, |opt| opt.add_layer(&b, name, layer, group));
    }
    for (name, group) in [("p_frog", g), ("p_sgd", sgd), ("p_kfrog", kfrog), ("p_adam", adam)] {
        fail_at_every_allocation(&b, &mut opt, name, |opt| opt.add_param(&b, name, 7, group));
    }
    // The layer registered first still steps.
    frog_step_of(&b, &mut opt, id, &first, 2).unwrap();
}

#[test]
fn a_full_registry_refuses_before_allocating() {
    let b = RequiredOnly::new(1);
    let mut opt = Optimizer::<RequiredOnly, 1>::new(sgd(0.0), 8, 0).unwrap();
    opt.add_param(&b, "a", 1, GroupId::DEFAULT).unwrap();
    let frog = opt.add_group(Method::Frog(base())).unwrap();
    // Every allocation would fail: the full registry is found first.
    b.allow(Some(0));
    let err = opt.add_layer(&b, "big", Layer::linear(1000, 1000, true), frog).unwrap_err();
    assert_eq!(err.to_string(), "optimizer registry: the optimizer holds at most 1 parameters");
    assert!(opt.workspace().is_none(), "no workspace grew for a refused layer");
    // A FROG group refused for want of room sets no shared sample size.
    let mut sgd_only = Optimizer::<RequiredOnly, 1>::new(sgd(0.0), 8, 0).unwrap();
    for _ in 1..frog_core::MAX_GROUPS {
        sgd_only.add_group(sgd(0.0)).unwrap();
    }
    let err = sgd_only.add_group(Method::Frog(Config { sample_size: Some(2), ..base() })).unwrap_err();
    assert_eq!(err.to_string(), "optimizer registry: the optimizer holds at most 16 parameter groups");
    assert_eq!(sgd_only.sample_rows(8), 8, "the refused FROG group set the sample size");
}

#[test]
fn a_layer_whose_bias_state_is_exhausted_refuses_before_the_weight_moves() {
    let cpu = Cpu::<f64>::with_threads(1).unwrap();
    let mut frog = Frog::<f64>::new(sgd(0.9), 4, 0).unwrap();
    let layer = Layer::linear(3, 2, true);
    let id = frog.add_layer(&cpu, "l", layer, GroupId::DEFAULT).unwrap();
    let mut bytes = vec![0; frog.checkpoint_len()];
    frog.checkpoint(&cpu, &mut bytes).unwrap();
    // The bias state comes last: its step count, then its 2 momentum entries.
    let at = bytes.len() - 8 - 2 * 8;
    bytes[at..at + 8].copy_from_slice(&u64::MAX.to_le_bytes());
    frog.restore(&cpu, &bytes).unwrap();
    let d = StepData::random(&mut Rng(3), &layer, 2, 4);
    let (mut w, mut bias) = (d.weight.clone(), d.bias.clone().unwrap());
    let params = Params { weight: &mut w, grad_weight: &d.grad_weight, bias: Some((&mut bias, d.grad_bias.as_ref().unwrap())) };
    let err = frog.step_layer(&cpu, id, params, None::<Batch<_>>).unwrap_err();
    assert_eq!(err, Error::State(StateError::StepsExhausted));
    assert_eq!((&w, Some(&bias)), (&d.weight, d.bias.as_ref()), "the weight moved before the bias was refused");
    assert_eq!(frog.state(id).unwrap().steps(), 0);
}

#[test]
fn k_frog_sampling_and_steps_check_everything_first() {
    let cfg = KfrogConfig { sample_size: Some(2), y_sample_size: Some(3), ..KfrogConfig::default() };
    let (mut a, mut b) = (Frog::<f64>::new(cfg, 8, 5).unwrap(), Frog::<f64>::new(cfg, 8, 5).unwrap());
    let g = GroupId::DEFAULT;
    let err = a.sample_kfrog(g, 8, &mut [0; 2], &mut [0; 1]).unwrap_err();
    assert_eq!(err, Error::Shape(ShapeError::BufferLength { what: "sample indices", expected: 3, actual: 1 }));
    let (mut xa, mut ya, mut xb, mut yb) = ([0; 2], [0; 3], [0; 2], [0; 3]);
    assert_eq!(a.sample_kfrog(g, 8, &mut xa, &mut ya).unwrap(), b.sample_kfrog(g, 8, &mut xb, &mut yb).unwrap(), "the refused call moved the sampler");
    // A batch above the optimizer's largest.
    let cpu = Cpu::<f64>::with_threads(1).unwrap();
    let layer = Layer::linear(3, 2, false);
    let id = a.add_layer(&cpu, "l", layer, g).unwrap();
    let d = StepData::random(&mut Rng(4), &layer, 2, 9);
    let mut w = d.weight.clone();
    let batch = KfrogBatch { x: &d.x, x_sample: 2, y: &d.y, y_sample: 2, batch_size: 9 };
    let err = a.step_layer_kfrog(&cpu, id, &mut w, &d.grad_weight, batch).unwrap_err();
    assert_eq!(err.to_string(), "parameter `l`: shape mismatch: batch of 9 samples exceeds the 8 the optimizer was built for");
    assert_eq!(w, d.weight);
}

#[test]
fn optimizer_errors_name_the_method_and_the_setting() {
    let cpu = Cpu::<f64>::with_threads(1).unwrap();
    let mut frog = Frog::<f64>::new(Method::Frog(base()), 8, 0).unwrap();
    let err = frog.sample_kfrog(GroupId::DEFAULT, 8, &mut [0; 8], &mut [0; 8]).unwrap_err();
    assert_eq!(err.to_string(), "optimizer registry: group 0 runs FROG, not K-FROG");
    // State bytes of another amsgrad or y_momentum setting.
    let mut bytes = vec![0; 1024];
    let n = AdamState::new(&cpu, 4, true).unwrap().export(&cpu, &mut bytes).unwrap();
    let err = AdamState::new(&cpu, 4, false).unwrap().restore(&cpu, &bytes[..n]).unwrap_err();
    assert_eq!(err.to_string(), "invalid optimizer state: the bytes hold the amsgrad buffer, which the state does not keep (written under another amsgrad setting)");
    let layer = Layer::linear(3, 2, false);
    let averaged = KfrogConfig { momentum: 0.9, y_momentum: 0.9, ..KfrogConfig::default() };
    let plain = KfrogConfig { y_momentum: 0.0, ..averaged };
    let n = KfrogState::new(&cpu, &layer, &plain).unwrap().export(&cpu, &mut bytes).unwrap();
    let mut state = KfrogState::new(&cpu, &layer, &averaged).unwrap();
    let err = state.restore(&cpu, &bytes[..n]).unwrap_err();
    assert_eq!(err.to_string(), "invalid optimizer state: the state keeps the y_momentum buffer but the bytes have none (written under another y_momentum setting)");
    // A K-FROG state with a running y average stepped without one.
    let d = StepData::random(&mut Rng(5), &layer, 2, 2);
    let mut ws = Workspace::new(&cpu, WorkspaceReq::new(&cpu, &layer, 2).unwrap()).unwrap();
    let mut w = d.weight.clone();
    let batch = KfrogBatch { x: &d.x, x_sample: 2, y: &d.y, y_sample: 2, batch_size: 2 };
    let err = kfrog_step(&cpu, &plain, &layer, &mut state, &mut ws, &mut w, &d.grad_weight, batch).unwrap_err();
    assert_eq!(err.to_string(), "invalid optimizer state: the state has a y_momentum buffer but y_momentum = 0");
}

#[test]
fn foreign_handles_oversized_batches_and_mismatched_checkpoints_are_refused() {
    let cpu = Cpu::<f64>::with_threads(1).unwrap();
    let layer = Layer::linear(3, 2, false);
    let (mut a, ids, _) = frog_with::<f64>(&cpu, base(), &[layer], &[], 4, 0).unwrap();
    let (mut b, _, _) = frog_with::<f64>(&cpu, base(), &[layer], &[], 4, 0).unwrap();
    let checkpoint = |opt: &Frog<f64>| {
        let mut bytes = vec![0; opt.checkpoint_len()];
        opt.checkpoint(&cpu, &mut bytes).unwrap();
        bytes
    };
    let d = StepData::random(&mut Rng(6), &layer, 3, 4);
    let mut w = d.weight.clone();
    let step = |opt: &mut Frog<f64>, w: &mut Vec<f64>, batch_size| {
        let params = Params { weight: w, grad_weight: &d.grad_weight, bias: None };
        opt.step_layer(&cpu, ids[0], params, Some(Batch { x: &d.x, y: &d.y, sample: 3, batch_size }))
    };
    // A handle of another optimizer, registered there at the same position.
    let before = checkpoint(&b);
    let err = step(&mut b, &mut w, 4).unwrap_err();
    assert_eq!(err.to_string(), "optimizer registry: parameter 0 was not registered with this optimizer (its handle comes from another)");
    assert!(b.name(ids[0]).is_err() && b.state(ids[0]).is_err());
    assert_eq!((&checkpoint(&b), &w), (&before, &d.weight));
    // A batch above the optimizer's largest.
    let err = step(&mut a, &mut w, 5).unwrap_err();
    assert_eq!(err.to_string(), "parameter `layer0`: shape mismatch: batch of 5 samples exceeds the 4 the optimizer was built for");
    assert_eq!(w, d.weight);
    step(&mut a, &mut w, 4).unwrap();
    // A FROG checkpoint into an SGD group of the same registrations and sizes.
    let good = checkpoint(&a);
    let mut sgd = Frog::<f64>::new(sgd(0.9), 4, 0).unwrap();
    sgd.add_layer(&cpu, "layer0", layer, GroupId::DEFAULT).unwrap();
    let err = sgd.restore(&cpu, &good).unwrap_err();
    assert_eq!(err.to_string(), "invalid optimizer state: the checkpoint was written for other registrations: a group's method differs at 0");
    assert_eq!(sgd.state(sgd.find("layer0").unwrap()).unwrap().steps(), 0);
    // The same layer registered in another FROG group.
    let mut regrouped = Frog::<f64>::new(Method::Frog(base()), 4, 0).unwrap();
    let second = regrouped.add_group(Method::Frog(base())).unwrap();
    regrouped.add_layer(&cpu, "layer0", layer, second).unwrap();
    let mut two_groups = Frog::<f64>::new(Method::Frog(base()), 4, 0).unwrap();
    two_groups.add_group(Method::Frog(base())).unwrap();
    two_groups.add_layer(&cpu, "layer0", layer, GroupId::DEFAULT).unwrap();
    let err = regrouped.restore(&cpu, &checkpoint(&two_groups)).unwrap_err();
    assert_eq!(err.to_string(), "invalid optimizer state: the checkpoint was written for other registrations: a parameter's group differs at 0");
    // The reserved byte after the scalar size.
    let mut reserved = good.clone();
    reserved[11] = 1;
    let err = b.restore(&cpu, &reserved).unwrap_err();
    assert_eq!(err.to_string(), "invalid optimizer state: the checkpoint's reserved byte is 1, expected 0");
    assert_eq!(checkpoint(&b), before);
    b.restore(&cpu, &good).unwrap();
}

#[test]
fn batches_above_the_sampling_limit_are_refused_at_once() {
    assert_eq!(MAX_BATCH, 1 << 24);
    let err = Frog::<f32>::new(Method::Frog(base()), MAX_BATCH + 1, 0).err().unwrap();
    assert_eq!(err.to_string(), "shape mismatch: batch of 16777217 samples is above the limit of 16777216 (2^24): sampling takes time linear in the batch");
    assert!(Frog::<f32>::new(KfrogConfig::default(), usize::MAX, 0).is_err());
    let mut frog = Frog::<f32>::new(Method::Frog(base()), MAX_BATCH, 0).unwrap();
    assert_eq!(frog.sample(MAX_BATCH, &mut [0; 3]).unwrap().len(), 3);
    // The sampler on its own: 2^40 samples took about half an hour.
    assert_eq!(Sampler::new(0).sample(1 << 40, Some(3), &mut [0; 3]).unwrap_err(), ShapeError::BatchAboveLimit { batch: 1 << 40 });
}

// ---- property tests ----

fn hostile_f64() -> impl Strategy<Value = f64> {
    prop_oneof![
        4 => (-7i32..0).prop_map(|e| 10f64.powi(e)),
        1 => Just(0.0),
        1 => prop::sample::select(vec![1.0, 1.5, 2.0, 1e39, 1e300, -1.0, f64::NAN, f64::INFINITY, 5e-324, 1e-46]),
    ]
}

fn hostile_config() -> impl Strategy<Value = Config> {
    (
        (hostile_f64(), hostile_f64(), prop::sample::select(vec![0.0, 0.5, 0.9, 1.0, 1.5, -0.1, f64::NAN]), any::<bool>()),
        (hostile_f64(), prop::sample::select(vec![1usize, 2, 4, 7, 0, MAX_NUM_ITERS + 1, usize::MAX])),
        (hostile_f64(), prop::option::of((hostile_f64(), prop::sample::select(vec![0u64, 1, 3, 1000])))),
        (prop::sample::select(vec![1e-10, 1e-6, 1e-12, 1e-46, 0.0, -1e-10]), any::<bool>(), prop::option::of(0usize..5)),
    )
        .prop_map(|((lr, ratio, momentum, nesterov), (wd, num_iters), (tau, schedule), (denom_eps, batch_averaged, sample_size))| Config {
            lr,
            lr_other_ratio: ratio,
            momentum,
            nesterov,
            weight_decay: wd,
            sample_size,
            num_iters,
            tau,
            tau_final: schedule.map(|s| s.0),
            tau_steps: schedule.map(|s| s.1),
            batch_averaged,
            denom_eps,
            ..Config::default()
        })
}

fn gains(max_exp: i32) -> impl Strategy<Value = Gains> {
    ((-20i32..4), (-max_exp..max_exp), (-max_exp..max_exp)).prop_map(|(x, y, g)| Gains { x: 10f64.powi(x), y: 10f64.powi(y), g: 10f64.powi(g) })
}

fn small_layer() -> impl Strategy<Value = Layer> {
    prop_oneof![
        (1usize..4, 1usize..5, 1usize..4, 3usize..7).prop_map(|(ci, co, k, hw)| conv(ci, co, k, hw)),
        (1usize..7, 1usize..5, 1usize..4, any::<bool>()).prop_map(|(di, dout, t, b)| Layer::linear_tokens(di, dout, t, b)),
    ]
}

proptest! {
    #![proptest_config(runner(300))]

    /// Configs: rejected with a reason (and nothing changed), or a finite step.
    #[test]
    fn configs_are_rejected_or_step_finitely(cfg in hostile_config(), layer in small_layer(), seed in 0u64..1000, g in gains(30), guarded in any::<bool>()) {
        let d = data(&layer, seed);
        let guard = guarded.then_some(Guard { nonfinite: true, dead_rows: true });
        let _ = step::<f32>(&cfg, &layer, &d, g, guard);
        let _ = step::<f64>(&cfg, &layer, &d, Gains { y: g.y.powi(5), g: g.g.powi(5), ..g }, guard);
    }
}

proptest! {
    #![proptest_config(runner(200))]

    /// Geometries: an error, an out-of-memory error for what cannot be
    /// allocated, or a workspace of exactly the size asked for.
    #[test]
    fn geometries_are_validated_or_sized(
        dims in prop::collection::vec(prop::sample::select(vec![0usize, 1, 2, 3, 5, 1 << 20, 1 << 32, 1 << 40, usize::MAX]), 11),
        r in prop::sample::select(vec![1usize, 2, 1 << 20, usize::MAX]),
        bias in any::<bool>(),
    ) {
        let c = Conv2d { c_in: dims[0], c_out: dims[1], kernel: [dims[2], dims[3]], stride: [dims[4], dims[5]], padding: [dims[6], dims[7]], dilation: [dims[8], 1], groups: 1, input_hw: [dims[9], dims[10]] };
        let backend = Cpu::<f32>::with_threads(1).unwrap();
        for layer in [Layer::conv2d(c, bias), Layer::linear_tokens(dims[0], dims[1], dims[2], bias)] {
            let Ok(req) = WorkspaceReq::new(&backend, &layer, r) else { continue };
            prop_assert!(layer.validate().is_ok());
            // A part of 2^46 bytes or more cannot be had: an error, not an abort.
            if [req.vector, req.fisher, req.norms, req.packed].iter().any(|&n| n >= 1 << 44) {
                let err = Workspace::new(&backend, req).err().unwrap();
                prop_assert!(matches!(err, CpuError::OutOfMemory { .. }), "{}", err);
            }
        }
    }

    /// Buffer lengths off by a few: a length error naming the buffer, and
    /// nothing changed.
    #[test]
    fn wrong_lengths_name_the_buffer(layer in small_layer(), which in 0usize..6, delta in prop::sample::select(vec![-2isize, -1, 1, 3])) {
        let mut d = data(&layer, 7);
        let resize = |v: &mut Vec<f64>| { let n = (v.len() as isize + delta).max(0) as usize; v.resize(n, 0.5); };
        match which {
            0 => resize(&mut d.weight),
            1 => resize(&mut d.grad_weight),
            2 => resize(&mut d.x),
            3 => resize(&mut d.y),
            4 => if let Some(b) = &mut d.bias { resize(b) } else { resize(&mut d.y) },
            _ => if let Some(b) = &mut d.grad_bias { resize(b) } else { resize(&mut d.x) },
        }
        let err = step::<f64>(&base(), &layer, &d, UNIT, None).unwrap_err();
        prop_assert!(matches!(err, Error::Shape(ShapeError::BufferLength { .. })), "{}", err);
    }

    /// Corrupt state bytes: refused with a reason and nothing changed, or
    /// restored and then stepped finitely.
    #[test]
    fn state_bytes_are_checked(flips in prop::collection::vec((0usize..24 + 8 * 12, any::<u8>()), 1..4), cut in prop::option::of(0usize..120)) {
        let backend = Cpu::<f64>::with_threads(1).unwrap();
        let layer = Layer::linear(4, 3, false);
        let cfg = base();
        let mut state = ParamState::for_layer(&backend, &layer, &cfg).unwrap();
        let mut bytes = export(&backend, &state);
        for (at, v) in flips {
            bytes[at] = v;
        }
        if let Some(n) = cut {
            bytes.truncate(n);
        }
        let before = export(&backend, &state);
        match state.restore(&backend, &bytes) {
            Err(e) => {
                prop_assert!(!e.to_string().is_empty());
                prop_assert_eq!(export(&backend, &state), before);
            }
            Ok(()) => {
                let d = StepData::random(&mut Rng(4), &layer, 3, 3);
                let mut ws = Workspace::new(&backend, WorkspaceReq::new(&backend, &layer, 3).unwrap()).unwrap();
                let mut w = d.weight.clone();
                let params = Params { weight: &mut w, grad_weight: &d.grad_weight, bias: None };
                let res = frog_step(&backend, &cfg, &layer, &mut state, &mut ws, params, Batch { x: &d.x, y: &d.y, sample: 3, batch_size: 3 }, Unguarded);
                prop_assert!(res.is_err() || finite(&w));
            }
        }
    }
}


/// A huge `nn` shape whose size overflows `usize`: the kernel panics naming
/// the overflow before it touches the output, instead of letting a wrapped
/// size pass its length check and writing past an empty output slice.
/// `y` is the empty front of `guard`, so a write past it lands in `guard`.
#[test]
fn batch_norm_shape_that_overflows_writes_nothing() {
    use frog_cpu::nn::{batch_norm_eval, BnParams, BnRunning, BnShape, Epilogue};
    let pool = frog_cpu::pool::ThreadPool::new(1).unwrap();
    let shape = BnShape { batch: 1 << 32, channels: 1 << 32, hw: 1 };
    let (x, weight, bias, rmean, rvar) = ([1.0f32], [1.0f32], [0.0f32], [0.0f32], [1.0f32]);
    let params = BnParams { weight: &weight[..], bias: &bias[..], eps: 1e-5 };
    let mut guard = [7.0f32; 4];
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let (y, _) = guard.split_at_mut(0);
        batch_norm_eval(&pool, shape, &x, params, BnRunning { mean: &rmean, var: &rvar }, Epilogue { residual: None, relu: false }, y);
    }));
    let message = outcome.expect_err("an overflowing shape must panic");
    let message = message.downcast_ref::<String>().map_or("", String::as_str);
    assert!(message.contains("overflow usize"), "{message}");
    assert_eq!(guard, [7.0; 4], "nothing written");
}

/// The backward pass's per-channel gradients must fit the channels: a
/// short `dweight` is a panic, not a write past it (into `guard`).
#[test]
fn batch_norm_backward_with_short_gradients_writes_nothing() {
    use frog_cpu::nn::{batch_norm_backward, BnGrads, BnSaved, BnShape};
    let pool = frog_cpu::pool::ThreadPool::new(1).unwrap();
    let shape = BnShape { batch: 1, channels: 2, hw: 3 };
    let (x, (mean, invstd), weight) = ([0.5f32, 1.0, 2.0, -1.0, 0.0, 3.0], ([0.0f32; 2], [1.0f32; 2]), [1.0f32; 2]);
    let (mut dy, mut dx, mut db) = ([1.0f32; 6], [0.0f32; 6], [0.0f32; 2]);
    let mut guard = [7.0f32; 3];
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let (dweight, _) = guard.split_at_mut(1);
        let grads = BnGrads { dy: &mut dy[..], dx: &mut dx[..], dweight, dbias: &mut db[..] };
        batch_norm_backward(&pool, shape, &x, BnSaved { mean: &mean, invstd: &invstd }, &weight, None, grads);
    }));
    let message = outcome.expect_err("a short dweight must panic");
    let message = message.downcast_ref::<&str>().copied().unwrap_or("");
    assert!(message.contains("dweight"), "{message}");
    assert_eq!(guard[1..], [7.0; 2], "nothing written past dweight");
}

/// Convolution sizes whose products wrap (`batch * c_in*H*W = 2^64`) are a
/// panic naming the overflow, on the im2col path and on the Winograd one,
/// not a length check passed by a wrapped size.
#[test]
fn convolution_sizes_that_overflow_panic_naming_it() {
    use frog_cpu::nn::{conv2d_backward_data, conv2d_forward, ConvShape};
    let pool = frog_cpu::pool::ThreadPool::new(1).unwrap();
    let message = |f: &dyn Fn()| {
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).expect_err("an overflowing size must panic");
        outcome.downcast_ref::<String>().cloned().unwrap_or_default()
    };
    // 1x1 kernel on a 1x2 input: 2 entries per sample, in and out.
    let conv = Conv2d::new(1, 1, 1, [1, 2]);
    let (w, scratch) = ([1.0f32], vec![0.0f32; 4096]);
    let got = message(&|| conv2d_forward(&pool, ConvShape { conv, batch: 1 << 63 }, &[], &w, &mut [], &mut scratch.clone()));
    assert!(got.contains("convolution") && got.contains("overflow usize"), "{got}");
    // 3x3 on 16 channels of 16x16, padding 1 (Winograd): 2^12 entries a sample.
    let conv = Conv2d::new(16, 16, 3, [16, 16]).padding(1);
    let w = vec![0.5f32; 16 * 16 * 9];
    let got = message(&|| conv2d_backward_data(&pool, ConvShape { conv, batch: 1 << 52 }, &[], &w, &mut [], false, &mut scratch.clone()));
    assert!(got.contains("winograd convolution") && got.contains("overflow usize"), "{got}");
}

/// `split_range` with no parts is an empty range, not a division by zero,
/// and a part past the last is empty too.
#[test]
fn split_range_without_parts_is_empty() {
    use frog_cpu::pool::split_range;
    assert!(split_range(10, 0, 0).is_empty());
    assert!(split_range(10, 3, 3).is_empty());
    assert_eq!(split_range(10, 3, 2), 7..10);
}
