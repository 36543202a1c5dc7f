//! Every invalid input gets its own error value: config, shapes, state.

mod common;

use common::{frog_with, step_once, Rng, StepData};
use frog_core::{Config, ConfigError, Conv2d, Error, ErrorKind, Layer, ParamState, Sampler, ShapeError, StateError, Unguarded};
use frog_cpu::Cpu;

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
