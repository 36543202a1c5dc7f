//! frog-core's optimizer object on frog-cpu: groups, handles, the
//! checkpoint of the whole object, row gathering and patch indices.

use crate::common::{step_once, Rng, StepData};
use frog_core::{gather_rows, AdamWConfig, Batch, KfrogBatch, KfrogConfig, Config, Conv2d, Error, GroupId, Layer, Method, ParamGrad, ParamId, Params, RegistryError, SgdConfig, ShapeError, StateError, PATCH_PADDING};
use frog_cpu::im2col::im2col;
use frog_cpu::{Cpu, Frog};

const BATCH: usize = 6;

fn layers() -> [Layer; 2] {
    [Layer::conv2d(Conv2d::new(2, 3, 3, [5, 5]).padding(1), true), Layer::linear(7, 4, true)]
}

fn frog_cfg() -> Config {
    Config { lr: 0.02, momentum: 0.9, weight_decay: 1e-3, sample_size: Some(3), ..Config::default() }
}

/// Full-batch training data of every parameter: (weights, biases) per
/// layer and per-step gradients, inputs and output gradients.
struct Model {
    weights: Vec<(Vec<f64>, Vec<f64>)>,
    plain: Vec<f64>,
    kfrog: Vec<f64>,
}

/// The K-FROG group's layer (K-FROG layers have no bias).
fn kfrog_layer() -> Layer {
    Layer::conv2d(Conv2d::new(2, 3, 3, [5, 5]).padding(1), false)
}

/// An optimizer with five groups: FROG (both layers), FROG without decay
/// (a plain parameter), SGD and AdamW (the linear layer again in each,
/// stepped as weight and bias), K-FROG (a bias-free conv).
fn build(cpu: &Cpu<f64>) -> (Frog<f64>, [ParamId; 6]) {
    let [conv, lin] = layers();
    let mut frog = Frog::<f64>::new(Method::Frog(frog_cfg()), BATCH, 9).unwrap();
    let no_decay = frog.add_group(Method::Frog(Config { weight_decay: 0.0, ..frog_cfg() })).unwrap();
    let sgd = frog.add_group(Method::Sgd(SgdConfig { lr: 0.1, momentum: 0.9, weight_decay: 1e-4, nesterov: true, ..SgdConfig::default() })).unwrap();
    let adam = frog.add_group(AdamWConfig { amsgrad: true, ..AdamWConfig::default() }).unwrap();
    let kf = frog.add_group(KfrogConfig { lr: 0.01, momentum: 0.9, y_momentum: 0.5, sample_size: Some(4), y_sample_size: Some(2), ..KfrogConfig::default() }).unwrap();
    let ids = [
        frog.add_layer(cpu, "conv", conv, GroupId::DEFAULT).unwrap(),
        frog.add_layer(cpu, "fc", lin, GroupId::DEFAULT).unwrap(),
        frog.add_param(cpu, "bn", 5, no_decay).unwrap(),
        frog.add_layer(cpu, "fc_sgd", lin, sgd).unwrap(),
        frog.add_layer(cpu, "fc_adam", lin, adam).unwrap(),
        frog.add_layer(cpu, "conv_kfrog", kfrog_layer(), kf).unwrap(),
    ];
    (frog, ids)
}

fn model() -> Model {
    let mut rng = Rng(5);
    let [conv, lin] = layers();
    let w = |rng: &mut Rng, l: &Layer| (rng.vec(l.rows() * l.weight_cols()), rng.vec(l.rows()));
    let k = kfrog_layer();
    Model { weights: vec![w(&mut rng, &conv), w(&mut rng, &lin), w(&mut rng, &lin), w(&mut rng, &lin)], plain: rng.vec(5), kfrog: rng.vec(k.rows() * k.weight_cols()) }
}

/// One training step at step number `t`: gradients and full-batch inputs
/// from `t`, the sampled rows gathered on the backend.
fn train_step(cpu: &Cpu<f64>, frog: &mut Frog<f64>, ids: &[ParamId; 6], m: &mut Model, t: u64) -> Vec<usize> {
    let mut rng = Rng(100 + t);
    let [conv, lin] = layers();
    let mut idx = vec![0; frog.sample_rows(BATCH)];
    let sample = frog.sample(BATCH, &mut idx).unwrap();
    let r = sample.len();
    // The handles of the layers, in the order of `m.weights`.
    let layer_ids = [ids[0], ids[1], ids[3], ids[4]];
    for (k, layer) in [conv, lin, lin, lin].iter().enumerate() {
        let full = StepData::random(&mut rng, layer, BATCH, BATCH);
        let (mut x, mut y) = (vec![0.0; r * layer.input_len()], vec![0.0; r * layer.output_len()]);
        gather_rows(cpu, &sample, layer.input_len(), &full.x, &mut x).unwrap();
        gather_rows(cpu, &sample, layer.output_len(), &full.y, &mut y).unwrap();
        let (w, b) = &mut m.weights[k];
        let params = Params { weight: w, grad_weight: &full.grad_weight, bias: Some((b, full.grad_bias.as_ref().unwrap())) };
        frog.step_layer(cpu, layer_ids[k], params, Some(sample.batch(&x, &y))).unwrap();
    }
    frog.step_param(cpu, ids[2], ParamGrad { param: &mut m.plain, grad: &rng.vec(5) }).unwrap();
    // K-FROG: inputs and output gradients sampled independently.
    let k = kfrog_layer();
    let full = StepData::random(&mut rng, &k, BATCH, BATCH);
    let (mut xi, mut yi) = ([0; BATCH], [0; BATCH]);
    let (xs, ys) = frog.sample_kfrog(frog.group_of(ids[5]).unwrap(), BATCH, &mut xi, &mut yi).unwrap();
    let (xs, ys) = (xs.to_vec(), ys.to_vec());
    let (mut x, mut y) = (vec![0.0; xs.len() * k.input_len()], vec![0.0; ys.len() * k.output_len()]);
    gather_rows(cpu, &xs, k.input_len(), &full.x, &mut x).unwrap();
    gather_rows(cpu, &ys, k.output_len(), &full.y, &mut y).unwrap();
    let batch = KfrogBatch { x: &x, x_sample: xs.len(), y: &y, y_sample: ys.len(), batch_size: BATCH };
    frog.step_layer_kfrog(cpu, ids[5], &mut m.kfrog, &full.grad_weight, batch).unwrap();
    sample.to_vec()
}

/// A FROG step takes its counts from the drawn sample: a batch restated
/// with other counts cannot hold the drawn rows, and is refused before
/// anything moves; the batch the sample builds steps.
#[test]
fn a_frog_step_takes_its_counts_from_the_drawn_sample() {
    let cpu = &Cpu::<f64>::with_threads(1).unwrap();
    let layer = Layer::linear(3, 2, true);
    let mut frog = Frog::<f64>::new(frog_cfg(), 4, 1).unwrap();
    let id = frog.add_layer(cpu, "fc", layer, GroupId::DEFAULT).unwrap();
    let mut idx = [0; 3];
    let sample = frog.sample(4, &mut idx).unwrap();
    assert_eq!((sample.len(), sample.batch_size()), (3, 4));
    let d = StepData::random(&mut Rng(3), &layer, 3, 4);
    let (mut w, mut b) = (d.weight.clone(), d.bias.clone().unwrap());
    let gb = d.grad_bias.as_ref().unwrap();
    // The sampled rows restated as a whole batch of 3.
    let params = Params { weight: &mut w, grad_weight: &d.grad_weight, bias: Some((&mut b, gb)) };
    let err = frog.step_layer(cpu, id, params, Some(Batch { x: &d.x, y: &d.y, sample: 3, batch_size: 3 })).unwrap_err();
    assert_eq!(err, Error::Registry(RegistryError::NotTheSample { drawn: 3, drawn_batch: 4, sample: 3, batch: 3 }));
    assert_eq!((frog.state(id).unwrap().steps(), &w, &b), (0, &d.weight, d.bias.as_ref().unwrap()));
    let params = Params { weight: &mut w, grad_weight: &d.grad_weight, bias: Some((&mut b, gb)) };
    frog.step_layer(cpu, id, params, Some(sample.batch(&d.x, &d.y))).unwrap();
    assert_eq!(frog.state(id).unwrap().steps(), 1);
    assert_ne!(w, d.weight);
}

fn bits(m: &Model) -> Vec<u64> {
    m.weights.iter().flat_map(|(w, b)| w.iter().chain(b)).chain(&m.plain).chain(&m.kfrog).map(|v| v.to_bits()).collect()
}

#[test]
fn a_restored_checkpoint_continues_bit_for_bit() {
    let cpu = &Cpu::<f64>::with_threads(2).unwrap();
    let (mut frog, ids) = build(cpu);
    let mut m = model();
    for t in 0..3 {
        train_step(cpu, &mut frog, &ids, &mut m, t);
    }
    frog.set_lr(0.015).unwrap();
    let mut bytes = vec![0; frog.checkpoint_len()];
    assert_eq!(frog.checkpoint(cpu, &mut bytes).unwrap(), bytes.len());
    let mut resumed = Model { weights: m.weights.clone(), plain: m.plain.clone(), kfrog: m.kfrog.clone() };
    let (mut uninterrupted, mut samples) = (Vec::new(), Vec::new());
    for t in 3..6 {
        samples.push(train_step(cpu, &mut frog, &ids, &mut m, t));
        uninterrupted.push(bits(&m));
    }

    let (mut fresh, fresh_ids) = build(cpu);
    fresh.restore(cpu, &bytes).unwrap();
    assert_eq!(fresh.group(GroupId::DEFAULT).unwrap().lr(), 0.015);
    assert_eq!(fresh.state(fresh_ids[0]).unwrap().steps(), 3);
    assert_eq!(fresh.adam_state(fresh_ids[4]).unwrap().steps(), 3);
    assert_eq!(fresh.kfrog_state(fresh_ids[5]).unwrap().steps(), 3);
    for (i, t) in (3..6).enumerate() {
        assert_eq!(train_step(cpu, &mut fresh, &fresh_ids, &mut resumed, t), samples[i], "the sampler resumes where it was");
        assert_eq!(bits(&resumed), uninterrupted[i], "step {t} differs after the restore");
    }
}

#[test]
fn corrupt_or_foreign_checkpoints_change_nothing() {
    let cpu = &Cpu::<f64>::with_threads(2).unwrap();
    let (mut frog, ids) = build(cpu);
    let mut m = model();
    train_step(cpu, &mut frog, &ids, &mut m, 0);
    let mut good = vec![0; frog.checkpoint_len()];
    frog.checkpoint(cpu, &mut good).unwrap();
    let (mut target, _) = build(cpu);
    let mut before = vec![0; target.checkpoint_len()];
    target.checkpoint(cpu, &mut before).unwrap();
    let unchanged = |t: &Frog<f64>| {
        let mut now = vec![0; t.checkpoint_len()];
        t.checkpoint(cpu, &mut now).unwrap();
        now == before
    };
    // Every truncation is an error.
    for n in 0..good.len() {
        assert!(matches!(target.restore(cpu, &good[..n]), Err(Error::State(StateError::Truncated { .. }))), "prefix of {n} bytes");
    }
    let corrupt = |at: usize, byte: u8| {
        let mut b = good.clone();
        b[at] = byte;
        b
    };
    assert_eq!(target.restore(cpu, &corrupt(0, b'X')).unwrap_err(), Error::State(StateError::BadMagic));
    assert_eq!(target.restore(cpu, &corrupt(8, 9)).unwrap_err(), Error::State(StateError::Version(9)));
    assert_eq!(target.restore(cpu, &corrupt(10, 4)).unwrap_err(), Error::State(StateError::ScalarSize(4)));
    let mut zero_sampler = good.clone();
    zero_sampler[20..52].fill(0);
    assert_eq!(target.restore(cpu, &zero_sampler).unwrap_err(), Error::State(StateError::SamplerState));
    let mut nan_lr = good.clone();
    // The first group's rate, after its method tag.
    nan_lr[53..61].copy_from_slice(&f64::NAN.to_le_bytes());
    assert!(matches!(target.restore(cpu, &nan_lr), Err(Error::Config(_))));
    // The first name's first byte ("conv" -> "xonv"), after 5 groups'
    // methods and rates and the parameter's kind, group and name length.
    let name_at = 52 + 5 * 9 + 3;
    assert_eq!(target.restore(cpu, &corrupt(name_at, b'x')).unwrap_err(), Error::State(StateError::Registrations { what: "a parameter's name", index: 0 }));
    // A NaN in the last state (the K-FROG layer's running average of
    // diag(Y^T Y)) is caught before any earlier state is written.
    let mut nan_momentum = good.clone();
    let end = nan_momentum.len();
    nan_momentum[end - 8..].copy_from_slice(&f64::NAN.to_le_bytes());
    assert!(matches!(target.restore(cpu, &nan_momentum), Err(Error::State(StateError::NonFinite { .. }))));
    // Another optimizer's registrations.
    let mut other = Frog::<f64>::new(Method::Frog(frog_cfg()), BATCH, 9).unwrap();
    other.add_layer(cpu, "conv", layers()[0], GroupId::DEFAULT).unwrap();
    assert!(matches!(other.restore(cpu, &good), Err(Error::State(StateError::Registrations { .. }))));
    assert!(unchanged(&target), "no rejected checkpoint changed anything");
    target.restore(cpu, &good).unwrap();
    assert!(!unchanged(&target));
}

#[test]
fn the_object_steps_exactly_as_the_bare_step() {
    let cpu = &Cpu::<f64>::with_threads(2).unwrap();
    let layer = layers()[0];
    let cfg = Config { sample_size: None, ..frog_cfg() };
    let data = StepData::random(&mut Rng(8), &layer, 4, 4);
    let bare = step_once(&cfg, &layer, &data).unwrap();
    let mut frog = Frog::<f64>::new(Method::Frog(cfg), 4, 1).unwrap();
    let id = frog.add_layer(cpu, "conv", layer, GroupId::DEFAULT).unwrap();
    let (mut w, mut b) = (data.weight.clone(), data.bias.clone().unwrap());
    let params = Params { weight: &mut w, grad_weight: &data.grad_weight, bias: Some((&mut b, data.grad_bias.as_ref().unwrap())) };
    frog.step_layer(cpu, id, params, Some(Batch { x: &data.x, y: &data.y, sample: 4, batch_size: 4 })).unwrap();
    assert_eq!(w, bare.weight);
    assert_eq!(Some(b), bare.bias);
}

#[test]
fn groups_carry_their_own_settings() {
    let cpu = &Cpu::<f64>::with_threads(2).unwrap();
    let cfg = frog_cfg();
    let mut frog = Frog::<f64>::new(Method::Frog(cfg), 4, 1).unwrap();
    let no_decay = frog.add_group(Method::Frog(Config { weight_decay: 0.0, lr: 0.04, ..cfg })).unwrap();
    let a = frog.add_param(cpu, "a", 3, GroupId::DEFAULT).unwrap();
    let b = frog.add_param(cpu, "b", 3, no_decay).unwrap();
    let (mut pa, mut pb, g) = (vec![1.0; 3], vec![1.0; 3], vec![0.0; 3]);
    frog.step_param(cpu, a, ParamGrad { param: &mut pa, grad: &g }).unwrap();
    frog.step_param(cpu, b, ParamGrad { param: &mut pb, grad: &g }).unwrap();
    // Zero gradient: only the decay moves a (at lr * lr_other_ratio); b has none.
    assert_eq!(pa, vec![1.0 - 0.02 * 0.25 * 1e-3; 3]);
    assert_eq!(pb, vec![1.0; 3]);
    frog.set_group_lr(no_decay, 0.5).unwrap();
    assert_eq!((frog.group(GroupId::DEFAULT).unwrap().lr(), frog.group(no_decay).unwrap().lr()), (0.02, 0.5));
    assert!(frog.set_group_lr(no_decay, -1.0).is_err());
    // On a backend with AdamBackend and KfrogBackend (Cpu) a `Method` makes
    // any group, and its AdamW group steps as AdamW: decay 1 - lr*wd, then
    // the bias-corrected first step lr * g / (|g| + eps).
    let adam = frog.add_group(Method::AdamW(AdamWConfig::default())).unwrap();
    let pa = frog.add_param(cpu, "adam", 3, adam).unwrap();
    let mut p = vec![1.0; 3];
    frog.step_param(cpu, pa, ParamGrad { param: &mut p, grad: &[1.0; 3].to_vec() }).unwrap();
    assert_eq!(frog.adam_state(pa).unwrap().steps(), 1);
    assert!(p.iter().all(|&v| (v - (1.0 - 1e-5 - 1e-3 / (1.0 + 1e-8))).abs() < 1e-12), "{p:?}");
    let kf = frog.add_group(Method::Kfrog(KfrogConfig::default())).unwrap();
    let with_bias = Layer::conv2d(Conv2d::new(2, 2, 3, [4, 4]), true);
    assert!(matches!(frog.add_layer(cpu, "kb", with_bias, kf), Err(Error::Shape(ShapeError::Unsupported { .. }))));
    assert!(frog.add_group(AdamWConfig { beta1: 1.0, ..AdamWConfig::default() }).is_err());
    // One sample serves every layer: FROG groups share the sample size.
    let err = frog.add_group(Method::Frog(Config { sample_size: Some(2), ..cfg })).unwrap_err();
    assert_eq!(err, Error::Registry(RegistryError::SampleSizeMismatch));
    assert_eq!(frog.find("b"), Some(b));
    assert_eq!(frog.name(b).unwrap(), "b");
    assert_eq!(frog.add_param(cpu, &"n".repeat(65), 1, GroupId::DEFAULT).unwrap_err(), Error::Registry(RegistryError::NameTooLong { len: 65 }));
    let grouped = Layer::conv2d(Conv2d::new(4, 4, 3, [6, 6]).groups(2), false);
    assert!(matches!(frog.add_layer(cpu, "dw", grouped, GroupId::DEFAULT), Err(Error::Shape(ShapeError::Unsupported { .. }))));
}

#[test]
fn a_full_registry_is_an_error() {
    let cpu = &Cpu::<f32>::with_threads(1).unwrap();
    let mut opt = frog_core::Optimizer::<Cpu<f32>, 2>::new(Method::Frog(frog_cfg()), 4, 0).unwrap();
    opt.add_param(cpu, "a", 1, GroupId::DEFAULT).unwrap();
    opt.add_param(cpu, "b", 1, GroupId::DEFAULT).unwrap();
    assert_eq!(opt.add_param(cpu, "c", 1, GroupId::DEFAULT).unwrap_err(), Error::Registry(RegistryError::Full { capacity: 2 }));
    for _ in 1..frog_core::MAX_GROUPS {
        opt.add_group(Method::Frog(frog_cfg())).unwrap();
    }
    assert_eq!(opt.add_group(Method::Frog(frog_cfg())).unwrap_err(), Error::Registry(RegistryError::TooManyGroups));
}

#[test]
fn gather_rows_checks_every_index() {
    let backend = Cpu::<f32>::with_threads(1).unwrap();
    let src: Vec<f32> = (0..12).map(|v| v as f32).collect();
    let mut dst = vec![0.0; 6];
    gather_rows(&backend, &[3, 1], 3, &src, &mut dst).unwrap();
    assert_eq!(dst, [9.0, 10.0, 11.0, 3.0, 4.0, 5.0]);
    let err = gather_rows(&backend, &[4], 3, &src, &mut dst).unwrap_err();
    assert_eq!(err, Error::Shape(ShapeError::IndexOutOfRange { what: "gathered row", index: 4, len: 4 }));
    assert!(matches!(gather_rows(&backend, &[0, 1, 2], 3, &src, &mut dst), Err(Error::Shape(ShapeError::BufferLength { .. }))));
    assert!(matches!(gather_rows(&backend, &[0, 0], usize::MAX, &src, &mut dst), Err(Error::Shape(ShapeError::IndexOutOfRange { .. }))));
}

#[test]
fn patch_indices_build_the_im2col_patches() {
    let mut rng = Rng(3);
    let convs = [
        Conv2d::new(2, 3, 3, [5, 6]).padding(1),
        Conv2d::new(3, 2, [2, 3], [7, 5]).stride([2, 1]).padding([1, 0]).dilation([1, 2]),
        Conv2d::new(1, 1, 1, [4, 4]).stride(2),
    ];
    for conv in convs {
        let layer = Layer::conv2d(conv, false);
        let (r, l, d) = (2, layer.positions(), layer.weight_cols());
        let x = rng.vec(r * layer.input_len());
        let mut idx = vec![0; r * l * d];
        layer.patch_indices(r, &mut idx).unwrap();
        let gathered: Vec<f64> = idx.iter().map(|&i| if i == PATCH_PADDING { 0.0 } else { x[i] }).collect();
        let mut expected = vec![0.0; r * l * d];
        for i in 0..r {
            let xi = &x[i * layer.input_len()..(i + 1) * layer.input_len()];
            im2col(&conv, xi, &mut expected[i * l * d..(i + 1) * l * d], d).unwrap();
        }
        assert_eq!(gathered, expected, "{conv:?}");
        assert!(matches!(layer.patch_indices(r, &mut idx[1..]), Err(ShapeError::BufferLength { .. })));
    }
    let lin = Layer::linear_tokens(3, 2, 2, true);
    let mut idx = vec![0; 2 * 2 * 3];
    lin.patch_indices(2, &mut idx).unwrap();
    assert_eq!(idx, (0..12).collect::<Vec<_>>());
}
