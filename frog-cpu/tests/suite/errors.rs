//! Every invalid input gets its own error value: config, shapes, state.

use crate::common::{frog_with, step_once, Rng, StepData};
use frog_core::{Backend, CgBuffers, Config, ConfigError, Conv2d, Error, ErrorKind, Layer, ParamState, Patches, Sampler, ShapeError, StateError, Unguarded, Workspace, WorkspaceReq};
use frog_cpu::{Algorithm, Cpu, CpuError};

fn conv() -> Layer {
    Layer::conv2d(Conv2d::new(3, 4, 3, [5, 5]).padding(1), true)
}

#[test]
fn each_invalid_config_value_has_its_error() {
    let base = Config { momentum: 0.9, ..Config::default() };
    let cases: Vec<(Config, ConfigError)> = vec![
        (Config { lr: -1e-3, ..base }, ConfigError::Lr(-1e-3)),
        (Config { lr_other_ratio: -0.5, ..base }, ConfigError::LrOtherRatio(-0.5)),
        (Config { momentum: -0.1, ..base }, ConfigError::Momentum(-0.1)),
        (Config { momentum: 0.0, nesterov: true, ..base }, ConfigError::NesterovWithoutMomentum),
        (Config { weight_decay: -1.0, ..base }, ConfigError::WeightDecay(-1.0)),
        (Config { sample_size: Some(0), ..base }, ConfigError::SampleSizeZero),
        (Config { num_iters: 0, ..base }, ConfigError::NumItersZero),
        (Config { tau: -1e-6, ..base }, ConfigError::Tau(-1e-6)),
        (Config { denom_eps: -1e-10, ..base }, ConfigError::DenomEps(-1e-10)),
        (Config { denom_eps: 0.0, ..base }, ConfigError::DenomEps(0.0)),
        (Config { tau: 0.0, tau_final: Some(1e-4), tau_steps: Some(10), ..base }, ConfigError::ScheduleTauZero),
        (Config { tau_final: Some(0.0), tau_steps: Some(10), ..base }, ConfigError::TauFinal(0.0)),
        (Config { tau_final: Some(1e-4), tau_steps: Some(0), ..base }, ConfigError::TauStepsZero),
        (Config { tau_final: Some(1e-4), ..base }, ConfigError::ScheduleIncomplete),
        (Config { lr: f64::NAN, ..base }, ConfigError::Lr(f64::NAN)),
    ];
    let layer = conv();
    let data = StepData::random(&mut Rng(1), &layer, 2, 4);
    for (cfg, want) in cases {
        let got = cfg.validate().unwrap_err();
        // NaN != NaN: compare the variant through its message.
        assert_eq!(got.to_string(), want.to_string());
        let err = step_once(&cfg, &layer, &data).err().expect("a step with an invalid config fails");
        assert_eq!(err.kind(), ErrorKind::Config, "{err}");
    }
    assert!(base.validate().is_ok());
    assert!(Config::default().validate().is_ok());
}

fn shape_err(layer: &Layer, data: &StepData) -> ShapeError {
    match step_once(&Config::default(), layer, data) {
        Err(Error::Shape(e)) => e,
        other => panic!("expected a shape error, got {:?}", other.err()),
    }
}

#[test]
fn each_shape_mismatch_has_its_error() {
    let layer = conv();
    let good = StepData::random(&mut Rng(2), &layer, 2, 4);
    assert!(step_once(&Config::default(), &layer, &good).is_ok());

    let mut d = good.clone();
    d.weight.pop();
    assert_eq!(shape_err(&layer, &d), ShapeError::BufferLength { what: "weight", expected: 108, actual: 107 });
    let mut d = good.clone();
    d.grad_weight.push(0.0);
    assert_eq!(shape_err(&layer, &d), ShapeError::BufferLength { what: "grad_weight", expected: 108, actual: 109 });
    let mut d = good.clone();
    d.bias.as_mut().unwrap().pop();
    assert_eq!(shape_err(&layer, &d), ShapeError::BufferLength { what: "bias", expected: 4, actual: 3 });
    let mut d = good.clone();
    d.bias = None;
    assert_eq!(shape_err(&layer, &d), ShapeError::BiasMismatch);
    let mut d = good.clone();
    d.x.pop();
    assert_eq!(shape_err(&layer, &d), ShapeError::BufferLength { what: "x", expected: 150, actual: 149 });
    let mut d = good.clone();
    d.y.truncate(10);
    assert_eq!(shape_err(&layer, &d), ShapeError::BufferLength { what: "y", expected: 200, actual: 10 });
    let mut d = good.clone();
    d.batch = 1;
    assert_eq!(shape_err(&layer, &d), ShapeError::SampleExceedsBatch { sample: 2, batch: 1 });
    let mut d = good.clone();
    d.sample = 0;
    d.x.clear();
    d.y.clear();
    assert_eq!(shape_err(&layer, &d), ShapeError::EmptySample);

    let zero = Layer::conv2d(Conv2d::new(3, 0, 3, [5, 5]).padding(1), false);
    assert_eq!(shape_err(&zero, &good), ShapeError::ZeroDimension);
    let empty = Layer::conv2d(Conv2d::new(3, 4, 7, [5, 5]), false);
    assert_eq!(shape_err(&empty, &good), ShapeError::EmptyOutput);
}

#[test]
fn workspace_and_state_must_fit_the_layer() {
    let backend = Cpu::<f64>::with_threads(1).unwrap();
    let small = Layer::linear(4, 3, false);
    let big = Layer::linear(8, 3, false);
    let cfg = Config::default();
    let (mut frog, _, _) = frog_with(&backend, cfg, &[small], &[], 4, 0).unwrap();
    // Sampling more rows than the optimizer was built for is an error.
    let mut idx = [0; 4];
    assert_eq!(frog.sample(5, &mut idx).unwrap_err(), Error::Shape(ShapeError::BatchExceedsMax { batch: 5, max: 4 }));
    assert_eq!(frog.sample(4, &mut idx).unwrap().indices(), &[0, 1, 2, 3]);

    let mut state = ParamState::for_layer(&backend, &big, &cfg).unwrap();
    let req = frog_core::WorkspaceReq::new(&backend, &small, 2).unwrap();
    let mut ws = frog_core::Workspace::new(&backend, req).unwrap();
    let data = StepData::random(&mut Rng(3), &big, 2, 2);
    let mut w = data.weight.clone();
    let params = frog_core::Params { weight: &mut w, grad_weight: &data.grad_weight, bias: None };
    let batch = frog_core::Batch { x: &data.x, y: &data.y, sample: 2, batch_size: 2 };
    let err = frog_core::frog_step(&backend, &cfg, &big, &mut state, &mut ws, params, batch, Unguarded).unwrap_err();
    assert_eq!(err, Error::Shape(ShapeError::WorkspaceTooSmall { what: "vector", required: 24, available: 12 }));
    assert_eq!(w, data.weight, "a failed step changes nothing");

    let mut small_state = ParamState::for_layer(&backend, &small, &cfg).unwrap();
    let mut ws = frog_core::Workspace::new(&backend, frog_core::WorkspaceReq::new(&backend, &big, 2).unwrap()).unwrap();
    let params = frog_core::Params { weight: &mut w, grad_weight: &data.grad_weight, bias: None };
    let batch = frog_core::Batch { x: &data.x, y: &data.y, sample: 2, batch_size: 2 };
    let err = frog_core::frog_step(&backend, &cfg, &big, &mut small_state, &mut ws, params, batch, Unguarded).unwrap_err();
    assert_eq!(err, Error::Shape(ShapeError::StateMismatch { expected: 24, actual: 12 }));
}

/// A product scratch one entry short of what the products need: refused
/// with an error naming it, before anything changes. Through a step (the
/// workspace's check, also what a workspace sized for a smaller pool gets:
/// Winograd's scratch grows with the threads), and through each product of
/// the backend (its own check, for callers that hand it a scratch).
#[test]
fn a_short_product_scratch_is_refused_and_changes_nothing() {
    let (sample, cfg) = (8, Config::default());
    let cpu = Cpu::<f64>::with_threads(2).unwrap();
    let winograd = Layer::conv2d(Conv2d::new(16, 12, 3, [9, 9]).padding(1), true);
    let gram = Layer::linear(64, 10, false);
    assert_eq!(cpu.algorithm(&winograd, sample).unwrap(), Algorithm::Winograd);
    assert_eq!(cpu.algorithm(&gram, sample).unwrap(), Algorithm::Gram);
    let one_thread = Cpu::<f64>::with_threads(1).unwrap();
    assert!(one_thread.product_scratch_len(&winograd, sample) < cpu.product_scratch_len(&winograd, sample));
    for layer in [winograd, gram] {
        let data = StepData::random(&mut Rng(5), &layer, sample, 16);
        let need = WorkspaceReq::new(&cpu, &layer, sample).unwrap();
        assert!(need.scratch > 0);
        let short = WorkspaceReq { scratch: need.scratch - 1, ..need };
        // One thread's is short for Winograd (checked above), not for Gram.
        let others = [WorkspaceReq::new(&one_thread, &layer, sample).unwrap()];
        for req in [short].into_iter().chain(others.into_iter().filter(|r| r.scratch < need.scratch)) {
            let mut state = ParamState::for_layer(&cpu, &layer, &cfg).unwrap();
            let mut ws = Workspace::new(&cpu, req).unwrap();
            let (mut w, mut b) = (data.weight.clone(), data.bias.clone());
            let params = frog_core::Params { weight: &mut w, grad_weight: &data.grad_weight, bias: b.as_mut().zip(data.grad_bias.as_ref()) };
            let batch = frog_core::Batch { x: &data.x, y: &data.y, sample, batch_size: 16 };
            let err = frog_core::frog_step(&cpu, &cfg, &layer, &mut state, &mut ws, params, batch, Unguarded).unwrap_err();
            assert_eq!(err, Error::Shape(ShapeError::WorkspaceTooSmall { what: "scratch", required: need.scratch, available: req.scratch }));
            assert_eq!((w, b, state.steps()), (data.weight.clone(), data.bias.clone(), 0), "a refused step changes nothing");
        }
    }

    // The backend's own checks, on the products of a Winograd layer, and
    // on the Gram CG's solve.
    let short = |cpu: &Cpu<f64>, layer: &Layer| vec![0.5; cpu.product_scratch_len(layer, sample) - 1];
    let refused = |op: &'static str, scratch: &[f64], err: CpuError| {
        assert!(matches!(err, CpuError::Length { op: o, len, .. } if o == op && len == scratch.len()), "{op}: {err}");
        assert!(err.to_string().starts_with(&format!("{op}: buffer of {} entries", scratch.len())), "{err}");
        assert!(scratch.iter().all(|&v| v == 0.5), "{op} wrote its scratch");
    };
    let (rows, cols, n) = (winograd.rows(), winograd.cols(), sample * winograd.positions());
    let x = Rng(6).vec(sample * winograd.input_len());
    let mut packed = cpu.zeros(cpu.patch_scratch_len(&winograd, sample)).unwrap();
    cpu.pack_patches(&winograd, sample, &&x[..], &mut packed).unwrap();
    let (v, lambda) = (vec![1.0; rows * cols], vec![1.0; n * rows]);
    let (mut u, mut g) = (vec![0.5; n * rows], vec![0.5; rows * cols]);
    // The fused matvec needs all of it; each product alone needs less
    // (no partial sums), and refuses a scratch of one entry.
    let mut scratch = short(&cpu, &winograd);
    let mut p = Patches { layer: &winograd, r: sample, x: Some(&x[..]), packed: &packed, scratch: &mut scratch };
    let err = cpu.fisher_matvec(&mut p, &lambda, 0.1, &v, &mut u, &mut g).unwrap_err();
    refused("fisher_matvec: product scratch", p.scratch, err);
    let mut scratch = vec![0.5];
    let mut p = Patches { layer: &winograd, r: sample, x: Some(&x[..]), packed: &packed, scratch: &mut scratch };
    let err = cpu.project(&mut p, &v, &mut u).unwrap_err();
    refused("project: product scratch", p.scratch, err);
    let err = cpu.back_project(&mut p, &lambda, &mut g).unwrap_err();
    refused("back_project: product scratch", p.scratch, err);
    assert!(u.iter().chain(&g).all(|&v| v == 0.5), "a refused product wrote its output");

    let (rows, cols, n) = (gram.rows(), gram.cols(), sample);
    let x = Rng(7).vec(sample * gram.input_len());
    let mut packed = cpu.zeros(cpu.patch_scratch_len(&gram, sample)).unwrap();
    cpu.pack_patches(&gram, sample, &&x[..], &mut packed).unwrap();
    let mut scratch = short(&cpu, &gram);
    let mut p = Patches { layer: &gram, r: sample, x: Some(&x[..]), packed: &packed, scratch: &mut scratch };
    let [mut z, mut rs, mut pd, mut ap] = [(); 4].map(|_| vec![0.5; rows * cols]);
    let [mut rho, mut rho_next, mut pap, mut coef] = [(); 4].map(|_| vec![0.5; rows]);
    let mut u = vec![0.5; n * rows];
    let mut cg = CgBuffers { z: &mut z, rs: &mut rs, pd: &mut pd, ap: &mut ap, u: &mut u, rho: &mut rho, rho_next: &mut rho_next, pap: &mut pap, coef: &mut coef };
    let err = cpu.cg_solve(&mut p, &vec![1.0; n * rows], 0.1, 1e-8, 4, &mut cg).unwrap_err();
    refused("gram: product scratch", p.scratch, err);
    assert!(z.iter().chain(&rho).all(|&v| v == 0.5), "a refused solve wrote its solution");
}

#[test]
fn sampler_errors_and_reproducibility() {
    let mut out = [0usize; 4];
    assert_eq!(Sampler::new(1).sample(0, None, &mut out).unwrap_err(), ShapeError::EmptySample);
    assert!(matches!(Sampler::new(1).sample(10, Some(5), &mut out), Err(ShapeError::BufferLength { .. })));
    let a = Sampler::new(42).sample(100, Some(4), &mut out).unwrap().to_vec();
    let mut out2 = [0usize; 4];
    let b = Sampler::new(42).sample(100, Some(4), &mut out2).unwrap().to_vec();
    assert_eq!(a, b);
    assert!(a.windows(2).all(|w| w[0] < w[1]) && a.iter().all(|&i| i < 100));
    // The stream is fixed across platforms: these are the first draws of seed 42.
    assert_eq!(a, FIRST_DRAWS_SEED_42);
    // At or above the batch: the whole batch.
    assert_eq!(Sampler::new(7).sample(3, Some(24), &mut out).unwrap(), &[0, 1, 2]);
}

/// Recorded from the first run of this test on x86-64; Xoshiro256++ and
/// the selection rule are integer and IEEE arithmetic only, so every
/// platform reproduces them.
const FIRST_DRAWS_SEED_42: [usize; 4] = [44, 59, 69, 76];

#[test]
fn state_round_trips_and_rejects_bad_buffers() {
    let backend = Cpu::<f64>::with_threads(1).unwrap();
    let layer = Layer::linear(3, 2, true);
    let cfg = Config { momentum: 0.9, ..Config::default() };
    let mut state = ParamState::for_layer(&backend, &layer, &cfg).unwrap();
    let (mut frog, ids, _) = frog_with(&backend, cfg, &[layer], &[], 2, 0).unwrap();
    let data = StepData::random(&mut Rng(4), &layer, 2, 2);
    let (mut w, mut b) = (data.weight.clone(), data.bias.clone().unwrap());
    let params = frog_core::Params { weight: &mut w, grad_weight: &data.grad_weight, bias: Some((&mut b, data.grad_bias.as_ref().unwrap())) };
    frog.step_layer(&backend, ids[0], params, Some(frog_core::Batch { x: &data.x, y: &data.y, sample: 2, batch_size: 2 })).unwrap();
    let stepped = frog.state(ids[0]).unwrap();
    let mut bytes = vec![0u8; stepped.export_len()];
    assert_eq!(stepped.export(&backend, &mut bytes).unwrap(), bytes.len());
    state.restore(&backend, &bytes).unwrap();
    assert_eq!(state.steps(), 1);
    assert_eq!(state.momentum(), stepped.momentum());

    let truncated = &bytes[..bytes.len() - 1];
    assert_eq!(state.restore(&backend, truncated).unwrap_err(), Error::State(StateError::Truncated { needed: bytes.len(), actual: bytes.len() - 1 }));
    assert_eq!(state.restore(&backend, &bytes[..10]).unwrap_err(), Error::State(StateError::Truncated { needed: 24, actual: 10 }));
    let mut bad = bytes.clone();
    bad[0] = b'X';
    assert_eq!(state.restore(&backend, &bad).unwrap_err(), Error::State(StateError::BadMagic));
    let mut bad = bytes.clone();
    bad[4] = 99;
    assert_eq!(state.restore(&backend, &bad).unwrap_err(), Error::State(StateError::Version(99)));
    let f32_backend = Cpu::<f32>::with_threads(1).unwrap();
    let mut f32_state = ParamState::for_layer(&f32_backend, &layer, &cfg).unwrap();
    assert_eq!(f32_state.restore(&f32_backend, &bytes).unwrap_err(), Error::State(StateError::ScalarSize(8)));
    let mut other = ParamState::for_layer(&backend, &Layer::linear(4, 2, true), &cfg).unwrap();
    assert_eq!(other.restore(&backend, &bytes).unwrap_err(), Error::State(StateError::Length { expected: 10, actual: 8 }));
    let mut no_momentum = ParamState::for_layer(&backend, &layer, &Config::default()).unwrap();
    assert_eq!(no_momentum.restore(&backend, &bytes).unwrap_err(), Error::State(StateError::OptionalBuffer { setting: "momentum", state_has_buffer: false }));
    let mut small = vec![0u8; 5];
    assert!(matches!(state.export(&backend, &mut small), Err(Error::Shape(ShapeError::BufferLength { .. }))));
}
