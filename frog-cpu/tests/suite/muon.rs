//! Muon on frog-cpu: every case of `muon/` in the golden directory
//! (`FROG_GOLDEN_DIR` overrides it), whatever its file name, dispatched on
//! its `optimizer` (`muon` the official form, `muon_airbench` airbench's),
//! each 3-step chain in f64 (max-norm relative error 1e-9) and f32 (1e-4),
//! on buffers, through views and as a Muon group of the optimizer object
//! (frog-cpu's shared harness, `golden::muon`); then the misuse a caller
//! can make, and Muon groups beside FROG and SGD groups.

use frog_core::{muon_step, plain_sgd_step, sgd_step, Batch, Config, ConfigError, Conv2d, Error, GroupId, Layer, MatmulBackend, Method, MuonConfig, MuonForm, MuonScratch, MuonShape, MuonState, ParamGrad, ParamId, ParamState, Params, RegistryError, SgdConfig, ShapeError, StateError, ViewParamGrad, ViewParams};
use frog_cpu::gemm::Real;
use frog_cpu::golden::muon::{load_muon_cases, run_muon_case, MuonCase, MuonRoute};
use frog_cpu::golden::{golden_dir, run_suite};
use frog_cpu::{Cpu, Frog};

/// Every case of `muon/`, at least the committed ones.
fn cases() -> Vec<MuonCase> {
    load_muon_cases(&golden_dir().join("muon")).unwrap_or_else(|e| panic!("{e}"))
}

fn suite<T: Real>(rtol: f64, route: MuonRoute) {
    let cases = cases();
    let cpu = Cpu::<T>::with_threads(2).unwrap();
    let how = match route {
        MuonRoute::Buffers => "on buffers",
        MuonRoute::Views => "through views",
        MuonRoute::Group => "through a Muon group",
    };
    let summary = format!("Muon cases {how} in {} from {}", std::any::type_name::<T>(), golden_dir().join("muon").display());
    run_suite(&summary, &cases, |c| &c.name, |c| run_muon_case(&cpu, c, rtol, route)).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn muon_golden_f64() {
    suite::<f64>(1e-9, MuonRoute::Buffers);
}

#[test]
fn muon_golden_f32() {
    suite::<f32>(1e-4, MuonRoute::Buffers);
}

#[test]
fn muon_golden_through_views() {
    suite::<f64>(1e-9, MuonRoute::Views);
    suite::<f32>(1e-4, MuonRoute::Views);
}

/// The optimizer object's Muon group gives the cases' values too.
#[test]
fn muon_golden_through_a_group() {
    suite::<f64>(1e-9, MuonRoute::Group);
    suite::<f32>(1e-4, MuonRoute::Group);
}

/// Both forms run their cases' rules: a case with the other form's rule
/// is far off (so the dispatch on `optimizer` is what the suite checks).
#[test]
fn the_forms_differ() {
    let cpu = Cpu::<f64>::with_threads(1).unwrap();
    for case in cases() {
        let other = match case.cfg.form {
            MuonForm::Official => MuonConfig { form: MuonForm::Airbench, weight_decay: 0.0, ..case.cfg },
            _ => MuonConfig { form: MuonForm::Official, ..case.cfg },
        };
        let swapped = MuonCase { cfg: other, ..case.clone() };
        assert!(run_muon_case(&cpu, &swapped, 1e-3, MuonRoute::Buffers).is_err(), "{} passes under the other form", case.name);
    }
}

#[test]
fn bad_settings_are_refused() {
    let official = MuonConfig::default();
    let bad = [
        (MuonConfig { ns_steps: 0, ..official }, ConfigError::NsStepsZero),
        (MuonConfig { ns_steps: 10_001, ..official }, ConfigError::NumItersTooLarge(10_001)),
        (MuonConfig { lr: -1.0, ..official }, ConfigError::Lr(-1.0)),
        (MuonConfig { momentum: 1.5, ..official }, ConfigError::Momentum(1.5)),
        (MuonConfig { momentum: 0.0, ..official }, ConfigError::NesterovWithoutMomentum),
        (MuonConfig { weight_decay: -0.1, ..official }, ConfigError::WeightDecay(-0.1)),
        (MuonConfig { lr: 2.0, weight_decay: 1.0, ..official }, ConfigError::DecayTooLarge { lr: 2.0, weight_decay: 1.0 }),
        (MuonConfig { weight_decay: 0.1, ..MuonConfig::airbench() }, ConfigError::DecayNotInForm(0.1)),
    ];
    for (cfg, want) in bad {
        assert_eq!(cfg.validate(), Err(want), "{cfg:?}");
        assert!(!want.to_string().is_empty());
    }
    assert_eq!(MuonConfig::default().validate(), Ok(()));
    assert_eq!(MuonConfig::airbench().validate(), Ok(()));
    // Past the update bound in f32, fine in f64.
    let huge = MuonConfig { lr: 1e38, ..official };
    assert!(matches!(huge.validate_for::<f32>(), Err(ConfigError::UpdateBound { .. })));
    assert_eq!(huge.validate_for::<f64>(), Ok(()));
    // A rejected step changes nothing.
    let cpu = Cpu::<f32>::with_threads(1).unwrap();
    let shape = MuonShape::matrix(3, 4).unwrap();
    let mut state = MuonState::new(&cpu, 12).unwrap();
    let mut scratch = MuonScratch::for_shape(&cpu, &shape).unwrap();
    let (mut w, g) = (vec![0.5f32; 12], vec![0.25f32; 12]);
    let r = muon_step(&cpu, &huge, &shape, &mut state, &mut scratch, ParamGrad { param: &mut w, grad: &g });
    assert!(matches!(r, Err(Error::Config(ConfigError::UpdateBound { .. }))), "{r:?}");
    assert_eq!((state.steps(), w, state.momentum().clone()), (0, vec![0.5; 12], vec![0.0; 12]));
    // The shape scale counts too: a 3x1 kernel's sqrt(3).
    let conv = MuonShape::conv2d(1, 1, 3, 1).unwrap();
    let near = MuonConfig { lr: f32::MAX as f64 / 4.0 / 1.21 / 1.5, ..official };
    assert_eq!(near.validate_for::<f32>(), Ok(()));
    let mut state = MuonState::new(&cpu, 3).unwrap();
    let (mut w, g) = (vec![0.5f32; 3], vec![0.25f32; 3]);
    let r = muon_step(&cpu, &near, &conv, &mut state, &mut MuonScratch::for_shape(&cpu, &conv).unwrap(), ParamGrad { param: &mut w, grad: &g });
    assert!(matches!(r, Err(Error::Config(ConfigError::UpdateBound { .. }))), "{r:?}");
}

#[test]
fn wrong_lengths_change_nothing() {
    let cpu = Cpu::<f64>::with_threads(1).unwrap();
    let cfg = MuonConfig::default();
    let shape = MuonShape::matrix(4, 6).unwrap();
    let mut state = MuonState::new(&cpu, 24).unwrap();
    let mut scratch = MuonScratch::for_shape(&cpu, &shape).unwrap();
    let (mut w, g) = (vec![0.5; 24], vec![0.25; 24]);
    let (short_w, short_g) = (vec![0.5; 23], vec![0.25; 23]);
    let expect = |r: Result<(), Error<_>>, what: &str| match r {
        Err(Error::Shape(ShapeError::BufferLength { what: w, expected: 24, actual: 23 })) => assert_eq!(w, what),
        other => panic!("{what}: {other:?}"),
    };
    expect(muon_step(&cpu, &cfg, &shape, &mut state, &mut scratch, ParamGrad { param: &mut w, grad: &short_g }), "grad");
    let mut sw = short_w.clone();
    expect(muon_step(&cpu, &cfg, &shape, &mut state, &mut scratch, ViewParamGrad::<Cpu<f64>> { param: &mut sw[..], grad: &g[..] }), "param");
    let mut small_state = MuonState::new(&cpu, 23).unwrap();
    expect(muon_step(&cpu, &cfg, &shape, &mut small_state, &mut scratch, ParamGrad { param: &mut w, grad: &g }), "Muon state");
    // A scratch sized for a smaller weight.
    let mut small = MuonScratch::for_shape(&cpu, &MuonShape::matrix(4, 5).unwrap()).unwrap();
    let r = muon_step(&cpu, &cfg, &shape, &mut state, &mut small, ParamGrad { param: &mut w, grad: &g });
    assert!(matches!(r, Err(Error::Shape(ShapeError::WorkspaceTooSmall { .. }))), "{r:?}");
    assert_eq!((state.steps(), &w, state.momentum()), (0, &vec![0.5; 24], &vec![0.0; 24]));
    // One scratch serves every weight that fits: a bigger one takes a smaller weight.
    let mut big = MuonScratch::new(&cpu, 100, 10).unwrap();
    muon_step(&cpu, &cfg, &shape, &mut state, &mut big, ParamGrad { param: &mut w, grad: &g }).unwrap();
    assert_eq!(state.steps(), 1);
    assert_eq!(MuonScratch::<Cpu<f64>>::entries(&shape), Some(2 * 24 + 2 * 16 + 1));
    assert!(matches!(MuonShape::conv2d(usize::MAX, 2, 1, 1), Err(ShapeError::TooLarge { .. })));
}

#[test]
fn state_round_trip_and_corrupt_bytes() {
    let cpu = Cpu::<f64>::with_threads(1).unwrap();
    let cfg = MuonConfig { weight_decay: 0.1, ..MuonConfig::default() };
    let shape = MuonShape::conv2d(4, 2, 3, 1).unwrap();
    let n = shape.entries();
    let mut scratch = MuonScratch::for_shape(&cpu, &shape).unwrap();
    let grads: Vec<Vec<f64>> = (0..3).map(|s| (0..n).map(|i| ((i * 7 + s * 3) % 11) as f64 / 10.0 - 0.5).collect()).collect();
    let mut state = MuonState::new(&cpu, n).unwrap();
    let mut w: Vec<f64> = (0..n).map(|i| (i % 5) as f64 / 5.0 - 0.4).collect();
    for g in &grads[..2] {
        muon_step(&cpu, &cfg, &shape, &mut state, &mut scratch, ParamGrad { param: &mut w, grad: g }).unwrap();
    }
    let mut bytes = vec![0u8; state.export_len()];
    assert_eq!(state.export(&cpu, &mut bytes).unwrap(), bytes.len());
    let mut restored = MuonState::new(&cpu, n).unwrap();
    restored.restore(&cpu, &bytes).unwrap();
    assert_eq!((restored.steps(), restored.momentum()), (2, state.momentum()));
    let mut w2 = w.clone();
    muon_step(&cpu, &cfg, &shape, &mut state, &mut scratch, ParamGrad { param: &mut w, grad: &grads[2] }).unwrap();
    muon_step(&cpu, &cfg, &shape, &mut restored, &mut scratch, ParamGrad { param: &mut w2, grad: &grads[2] }).unwrap();
    assert_eq!((w, restored.momentum()), (w2, state.momentum()));

    // Corrupt bytes are refused, and the state keeps what it had.
    let mut fresh = MuonState::new(&cpu, n).unwrap();
    let mut bad_magic = bytes.clone();
    bad_magic[0] ^= 1;
    assert!(matches!(fresh.restore(&cpu, &bad_magic), Err(Error::State(StateError::BadMagic))));
    assert!(matches!(fresh.restore(&cpu, &bytes[..bytes.len() - 1]), Err(Error::State(StateError::Truncated { .. }))));
    let mut nan = bytes.clone();
    let at = nan.len() - 8;
    nan[at..].copy_from_slice(&f64::NAN.to_le_bytes());
    assert!(matches!(fresh.restore(&cpu, &nan), Err(Error::State(StateError::NonFinite { .. }))));
    assert!(matches!(MuonState::new(&cpu, n + 1).unwrap().restore(&cpu, &bytes), Err(Error::State(StateError::Length { .. }))));
    let f32_cpu = Cpu::<f32>::with_threads(1).unwrap();
    assert!(matches!(MuonState::new(&f32_cpu, n).unwrap().restore(&f32_cpu, &bytes), Err(Error::State(StateError::ScalarSize(8)))));
    assert_eq!((fresh.steps(), fresh.momentum()), (0, &vec![0.0; n]));
    assert!(matches!(state.export(&cpu, &mut [0u8; 10]), Err(Error::Shape(ShapeError::BufferLength { .. }))));
}

/// A norm whose sum of squares overflows (or underflows) the scalar is
/// still the norm: airbench's renormalization of a huge f32 weight gives
/// the weight of norm `sqrt(rows)`, not zeros.
#[test]
fn norms_past_the_square_range() {
    let cpu = Cpu::<f32>::with_threads(1).unwrap();
    let mut out = vec![0.0f32];
    for (x, want) in [([3e20f32, -4e20], 5e20f32), ([3e-25, 4e-25], 5e-25), ([0.0, 0.0], 0.0), ([3.0, 4.0], 5.0)] {
        cpu.frobenius_norm(2, &&x[..], &mut out).unwrap();
        assert!((out[0] - want).abs() <= 1e-6 * want, "{x:?}: {} != {want}", out[0]);
    }
    let shape = MuonShape::matrix(4, 3).unwrap();
    let cfg = MuonConfig { lr: 0.0, ..MuonConfig::airbench() };
    let mut w: Vec<f32> = (0..12).map(|i| (i as f32 - 5.5) * 1e19).collect();
    let g = vec![0.1f32; 12];
    let mut state = MuonState::new(&cpu, 12).unwrap();
    muon_step(&cpu, &cfg, &shape, &mut state, &mut MuonScratch::for_shape(&cpu, &shape).unwrap(), ParamGrad { param: &mut w, grad: &g }).unwrap();
    let norm = w.iter().map(|&v| f64::from(v) * f64::from(v)).sum::<f64>().sqrt();
    assert!((norm - 2.0).abs() < 1e-5, "renormalized norm {norm}");
}

#[test]
fn a_zero_weight_stays_finite() {
    // airbench renormalizes the weight to norm sqrt(rows) first: an all-zero
    // weight (norm 0) would give 0 * inf = NaN in the references; here it
    // stays zero and takes the orthogonalized update, finite.
    let cpu = Cpu::<f64>::with_threads(1).unwrap();
    let shape = MuonShape::matrix(4, 3).unwrap();
    let cfg = MuonConfig { lr: 0.1, momentum: 0.6, nesterov: true, ..MuonConfig::airbench() };
    let (mut w, g) = (vec![0.0f64; 12], (0..12).map(|i| (i as f64 * 0.7).sin()).collect::<Vec<_>>());
    let mut state = MuonState::new(&cpu, 12).unwrap();
    let mut scratch = MuonScratch::for_shape(&cpu, &shape).unwrap();
    muon_step(&cpu, &cfg, &shape, &mut state, &mut scratch, ParamGrad { param: &mut w, grad: &g }).unwrap();
    assert!(w.iter().all(|v| v.is_finite()) && w.iter().any(|&v| v != 0.0), "{w:?}");
}

/// The optimizer object's groups: FROG (a plain parameter), SGD (a linear
/// layer with bias), official Muon (a conv and a wide linear layer) and
/// airbench's Muon (a tall linear layer), each with its settings.
fn group_cfgs() -> (Config, SgdConfig, MuonConfig, MuonConfig) {
    let frog = Config { lr: 0.02, momentum: 0.9, weight_decay: 1e-3, ..Config::default() };
    let sgd = SgdConfig { lr: 0.1, momentum: 0.9, weight_decay: 1e-4, nesterov: true, ..SgdConfig::default() };
    let official = MuonConfig { lr: 0.05, weight_decay: 0.1, ..MuonConfig::default() };
    let airbench = MuonConfig { lr: 0.24, momentum: 0.6, nesterov: true, ..MuonConfig::airbench() };
    (frog, sgd, official, airbench)
}

/// The Muon layers: a 3x3 conv (4 x 27), a wide and a tall linear layer.
fn muon_layers() -> [(Layer, MuonShape); 3] {
    [
        (Layer::conv2d(Conv2d::new(3, 4, 3, [5, 5]).padding(1), false), MuonShape::conv2d(4, 3, 3, 3).unwrap()),
        (Layer::linear(7, 5, false), MuonShape::matrix(5, 7).unwrap()),
        (Layer::linear(3, 6, false), MuonShape::matrix(6, 3).unwrap()),
    ]
}

const BN: usize = 5;
const FC: (usize, usize) = (5, 7);

/// An optimizer with the four groups; the Muon layers are registered last
/// (the airbench one at the very end).
fn muon_optimizer(cpu: &Cpu<f64>) -> (Frog<f64>, [ParamId; 5]) {
    let (frog, sgd, official, airbench) = group_cfgs();
    let mut opt = Frog::<f64>::new(frog, 4, 3).unwrap();
    let sgd = opt.add_group(sgd).unwrap();
    let official = opt.add_group(official).unwrap();
    let airbench = opt.add_group(airbench).unwrap();
    let [conv, wide, tall] = muon_layers();
    let ids = [
        opt.add_param(cpu, "bn", BN, GroupId::DEFAULT).unwrap(),
        opt.add_layer(cpu, "fc_sgd", Layer::linear(FC.1, FC.0, true), sgd).unwrap(),
        opt.add_layer(cpu, "conv_muon", conv.0, official).unwrap(),
        opt.add_layer(cpu, "fc_muon", wide.0, official).unwrap(),
        opt.add_layer(cpu, "tall_muon", tall.0, airbench).unwrap(),
    ];
    (opt, ids)
}

fn wave(n: usize, seed: usize) -> Vec<f64> {
    (0..n).map(|i| ((i * 7 + seed * 13) as f64 * 0.37).sin() * 0.5).collect()
}

/// Every parameter of the mixed optimizer: bn, the SGD layer's weight and
/// bias, the three Muon weights.
#[derive(Clone, Debug, PartialEq)]
struct Weights(Vec<Vec<f64>>);

fn sizes() -> Vec<usize> {
    let mut n = vec![BN, FC.0 * FC.1, FC.0];
    n.extend(muon_layers().iter().map(|(_, s)| s.entries()));
    n
}

fn initial() -> Weights {
    Weights(sizes().iter().enumerate().map(|(k, &n)| wave(n, k + 100)).collect())
}

fn grads(step: usize) -> Vec<Vec<f64>> {
    sizes().iter().enumerate().map(|(k, &n)| wave(n, 10 * step + k)).collect()
}

/// One step of every parameter through the optimizer object.
fn step_object(cpu: &Cpu<f64>, opt: &mut Frog<f64>, ids: &[ParamId; 5], w: &mut Weights, step: usize) {
    let g = grads(step);
    let [bn, fc, fc_bias, muon @ ..] = &mut w.0[..] else { panic!("{} parameters, not 6", w.0.len()) };
    opt.step_param(cpu, ids[0], ParamGrad { param: bn, grad: &g[0] }).unwrap();
    let params = Params { weight: fc, grad_weight: &g[1], bias: Some((fc_bias, &g[2])) };
    opt.step_layer(cpu, ids[1], params, None::<Batch<Cpu<f64>>>).unwrap();
    for (k, weight) in muon.iter_mut().enumerate() {
        let params = Params { weight, grad_weight: &g[3 + k], bias: None };
        opt.step_layer(cpu, ids[2 + k], params, None::<Batch<Cpu<f64>>>).unwrap();
    }
}

#[test]
fn muon_groups_step_as_muon_step() {
    let cpu = Cpu::<f64>::with_threads(2).unwrap();
    let (mut opt, ids) = muon_optimizer(&cpu);
    let (frog, sgd, official, airbench) = group_cfgs();
    let mut w = initial();
    let mut direct = initial();
    let mut bn = ParamState::new(&cpu, BN, true).unwrap();
    let mut fc = [ParamState::new(&cpu, FC.0 * FC.1, true).unwrap(), ParamState::new(&cpu, FC.0, true).unwrap()];
    let shapes = muon_layers().map(|(_, s)| s);
    let mut states = shapes.map(|s| MuonState::new(&cpu, s.entries()).unwrap());
    let mut scratch = shapes.map(|s| MuonScratch::for_shape(&cpu, &s).unwrap());
    let cfgs = [official, official, airbench];
    for step in 0..3 {
        step_object(&cpu, &mut opt, &ids, &mut w, step);
        let g = grads(step);
        let d = &mut direct.0;
        plain_sgd_step(&cpu, &frog, &mut bn, ParamGrad { param: &mut d[0], grad: &g[0] }).unwrap();
        for k in 0..2 {
            sgd_step(&cpu, &sgd, &mut fc[k], ParamGrad { param: &mut d[1 + k], grad: &g[1 + k] }).unwrap();
        }
        for k in 0..3 {
            muon_step(&cpu, &cfgs[k], &shapes[k], &mut states[k], &mut scratch[k], ParamGrad { param: &mut d[3 + k], grad: &g[3 + k] }).unwrap();
        }
        assert_eq!(w, direct, "step {step}");
        for k in 0..3 {
            let s = opt.muon_state(ids[2 + k]).unwrap();
            assert_eq!((s.steps(), s.momentum()), (states[k].steps(), states[k].momentum()), "step {step}, Muon layer {k}");
        }
    }
    assert!(w.0.iter().zip(&initial().0).all(|(a, b)| a != b), "every parameter moved");

    // set_lr scales a Muon group's rate as any other's (made at 0.05
    // beside the default group's 0.02), and set_group_lr sets one.
    let official_group = opt.group_of(ids[2]).unwrap();
    opt.set_lr(0.01).unwrap();
    assert_eq!(opt.group(official_group).unwrap().lr(), 0.05 * (0.01 / 0.02));
    opt.set_group_lr(official_group, 0.3).unwrap();
    assert_eq!(opt.group(official_group).unwrap(), &Method::Muon(MuonConfig { lr: 0.3, ..official }));
    assert!(matches!(opt.set_group_lr(official_group, -1.0), Err(Error::Config(ConfigError::Lr(_)))));
}

#[test]
fn muon_checkpoint_round_trip() {
    let cpu = Cpu::<f64>::with_threads(2).unwrap();
    let (mut opt, ids) = muon_optimizer(&cpu);
    let mut w = initial();
    step_object(&cpu, &mut opt, &ids, &mut w, 0);
    let mut bytes = vec![0u8; opt.checkpoint_len()];
    assert_eq!(opt.checkpoint(&cpu, &mut bytes).unwrap(), bytes.len());

    let (mut fresh, fresh_ids) = muon_optimizer(&cpu);
    // Corrupt bytes are refused and change nothing: a Muon state's last
    // entry (the airbench layer is registered last) made NaN, a Muon
    // group's method tag changed, the bytes cut short.
    let mut nan = bytes.clone();
    let at = nan.len() - 8;
    nan[at..].copy_from_slice(&f64::NAN.to_le_bytes());
    assert!(matches!(fresh.restore(&cpu, &nan), Err(Error::State(StateError::NonFinite { .. }))));
    let mut tag = bytes.clone();
    let group_at = 8 + 2 + 1 + 1 + 4 + 4 + 32 + 2 * 9;
    assert_eq!(tag[group_at], 4, "the Muon tag");
    tag[group_at] = 1;
    assert!(matches!(fresh.restore(&cpu, &tag), Err(Error::State(StateError::Registrations { what: "a group's method", index: 2 }))));
    assert!(matches!(fresh.restore(&cpu, &bytes[..bytes.len() - 1]), Err(Error::State(StateError::Truncated { .. }))));
    assert_eq!(fresh.muon_state(fresh_ids[4]).unwrap().steps(), 0);

    fresh.restore(&cpu, &bytes).unwrap();
    assert_eq!(fresh.muon_state(fresh_ids[4]).unwrap().steps(), 1);
    let mut w2 = w.clone();
    for step in 1..3 {
        step_object(&cpu, &mut opt, &ids, &mut w, step);
        step_object(&cpu, &mut fresh, &fresh_ids, &mut w2, step);
        assert_eq!(w, w2, "step {step}");
    }
}

#[test]
fn muon_groups_refuse_what_muon_does_not_step() {
    let cpu = Cpu::<f64>::with_threads(1).unwrap();
    let (mut opt, ids) = muon_optimizer(&cpu);
    let muon = opt.group_of(ids[2]).unwrap();
    let registry = |r: Result<ParamId, Error<_>>| match r {
        Err(Error::Registry(e)) => e,
        other => panic!("{other:?}"),
    };
    let e = registry(opt.add_layer(&cpu, "with_bias", Layer::linear(3, 2, true), muon));
    assert_eq!(e, RegistryError::MuonMatrixOnly { what: "a layer's bias" });
    assert!(e.to_string().contains("SGD or AdamW group"), "{e}");
    assert_eq!(registry(opt.add_param(&cpu, "scale", 4, muon)), RegistryError::MuonMatrixOnly { what: "a plain parameter" });
    assert!(opt.find("with_bias").is_none() && opt.find("scale").is_none());
    // A Muon group from a Method: the Method's bound cannot require MatmulBackend.
    assert!(matches!(opt.add_group(Method::Muon(MuonConfig::default())), Err(Error::Registry(RegistryError::MuonFromMethod))));
    assert_eq!(Method::from(MuonConfig::default()), Method::Muon(MuonConfig::default()));

    // Steps: a bias given to a bias-free Muon layer, views, a plain step,
    // a short gradient; none changes the weight or the state.
    let (n, g) = (FC.0 * FC.1, wave(FC.0 * FC.1, 1));
    let (mut w, mut b, gb) = (wave(n, 2), vec![0.0; FC.0], vec![0.1; FC.0]);
    let params = Params { weight: &mut w, grad_weight: &g, bias: Some((&mut b, &gb)) };
    assert!(matches!(opt.step_layer(&cpu, ids[3], params, None::<Batch<Cpu<f64>>>), Err(Error::Param { error: ShapeError::BiasMismatch, .. })));
    let views = ViewParams::<Cpu<f64>> { weight: &mut w[..], grad_weight: &g[..], bias: None };
    assert!(matches!(opt.step_layer(&cpu, ids[3], views, None::<Batch<Cpu<f64>>>), Err(Error::Registry(RegistryError::NeedsBuffers(3)))));
    assert!(matches!(opt.step_param(&cpu, ids[3], ParamGrad { param: &mut w, grad: &g }), Err(Error::Registry(RegistryError::WrongKind(3)))));
    let short = g[..n - 1].to_vec();
    assert!(matches!(opt.step_layer(&cpu, ids[3], Params { weight: &mut w, grad_weight: &short, bias: None }, None::<Batch<Cpu<f64>>>), Err(Error::Param { error: ShapeError::BufferLength { .. }, .. })));
    assert_eq!((opt.muon_state(ids[3]).unwrap().steps(), w), (0, wave(n, 2)));
    assert!(matches!(opt.muon_state(ids[0]), Err(Error::Registry(RegistryError::WrongKind(0)))));
}
