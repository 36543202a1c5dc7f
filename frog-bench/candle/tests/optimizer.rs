//! `FrogOptimizer`, candle's `Optimizer`: one step equals frog-cpu's on
//! golden layer cases (f32, 1e-4), with the case's inputs, output gradients
//! and gradients reproduced by a candle graph; a diverging loss is refused
//! (and the refusal can be turned off); a rejected learning rate and
//! misuse are errors, not panics.

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::Optimizer;
use frog_candle::{Error, FrogOptimizer, ParamsFrog, Tap};
use frog_core::{frog_step, Batch, Config, Layer, LayerKind, ParamState, Params, Sampler, Unguarded, Workspace, WorkspaceReq};
use frog_cpu::golden::{golden_dir, load_cases, Case, Target};
use frog_cpu::Cpu;

const SEED: u64 = 11;

fn f32s(v: &[f64]) -> Vec<f32> {
    v.iter().map(|&x| x as f32).collect()
}

/// Weight and bias after the case's first step through frog-cpu's
/// `frog_step` in f32.
fn frog_cpu_step(case: &Case, layer: &Layer) -> (Vec<f32>, Vec<f32>) {
    let cpu = Cpu::<f32>::with_threads(1).unwrap();
    let step = &case.steps[0];
    let mut state = ParamState::for_layer(&cpu, layer, &case.config).unwrap();
    let mut ws = Workspace::new(&cpu, WorkspaceReq::new(&cpu, layer, case.sample_size).unwrap()).unwrap();
    let (mut w, mut b) = (f32s(&case.weight), f32s(case.bias.as_deref().unwrap()));
    let (gw, gb, x, y) = (f32s(&step.grad_weight), f32s(step.grad_bias.as_deref().unwrap()), f32s(&step.x), f32s(&step.y));
    let params = Params { weight: &mut w, grad_weight: &gw, bias: Some((&mut b, &gb)) };
    frog_step(&cpu, &case.config, layer, &mut state, &mut ws, params, Batch { x: &x, y: &y, sample: case.sample_size, batch_size: case.batch_size }, Unguarded).unwrap();
    (w, b)
}

/// The case's first step through `FrogOptimizer::backward_step`. The
/// optimizer draws its sample from its seed, so the case's sampled rows
/// are placed where that sample will take them, in a whole batch whose
/// other rows are arbitrary. The layer runs on the detached parameters and
/// the loss is `sum(out * Y) + sum(W * GW) + sum(b * GB)`: the output's
/// gradient is `Y`, the weight's `GW` and the bias's `GB`, the case's.
fn candle_step(case: &Case, layer: &Layer) -> (Vec<f32>, Vec<f32>) {
    let dev = Device::Cpu;
    let step = &case.steps[0];
    let (bsz, r) = (case.batch_size, case.sample_size);
    let mut sample = vec![0; r];
    Sampler::new(SEED).sample(bsz, Some(r), &mut sample).unwrap();
    let spread = |rows: &[f64], len: usize| {
        let mut full: Vec<f32> = (0..bsz * len).map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.01).collect();
        for (k, &i) in sample.iter().enumerate() {
            full[i * len..(i + 1) * len].copy_from_slice(&f32s(&rows[k * len..(k + 1) * len]));
        }
        full
    };
    let (x, y) = (spread(&step.x, layer.input_len()), spread(&step.y, layer.output_len()));
    let rows = layer.rows();
    let w = Var::from_vec(f32s(&case.weight), (rows, layer.weight_cols()), &dev).unwrap();
    let b = Var::from_vec(f32s(case.bias.as_deref().unwrap()), rows, &dev).unwrap();
    let cfg = Config { sample_size: Some(r), ..case.config };
    let mut opt = FrogOptimizer::new(vec![w.clone(), b.clone()], ParamsFrog { seed: SEED, ..ParamsFrog::new(cfg, bsz) }).unwrap();
    let tap = opt.tap(&w, Some(&b), *layer).unwrap();

    let (out, y) = match layer.kind {
        LayerKind::Linear { d_in, d_out, tokens: 1 } => {
            let x = Tensor::from_vec(x, (bsz, d_in), &dev).unwrap();
            let out = tap.apply(&x, |x| x.matmul(&w.detach().t()?)?.broadcast_add(&b.detach())).unwrap();
            (out, Tensor::from_vec(y, (bsz, d_out), &dev).unwrap())
        }
        LayerKind::Conv2d(c) => {
            let [h, wd] = c.input_hw;
            let x = Tensor::from_vec(x, (bsz, c.c_in, h, wd), &dev).unwrap();
            let kernel = w.detach().reshape((c.c_out, c.c_in, c.kernel[0], c.kernel[1])).unwrap();
            let conv = |x: &Tensor| x.conv2d(&kernel, c.padding[0], c.stride[0], c.dilation[0], 1)?.broadcast_add(&b.detach().reshape((1, (), 1, 1))?);
            let out = tap.apply(&x, conv).unwrap();
            let y = Tensor::from_vec(y, out.shape(), &dev).unwrap();
            (out, y)
        }
        k => panic!("no candle graph for {k:?}"),
    };
    let gw = Tensor::from_vec(f32s(&step.grad_weight), w.shape(), &dev).unwrap();
    let gb = Tensor::from_vec(f32s(step.grad_bias.as_deref().unwrap()), rows, &dev).unwrap();
    let loss = ((out * y).unwrap().sum_all().unwrap() + (w.as_tensor() * gw).unwrap().sum_all().unwrap() + (b.as_tensor() * gb).unwrap().sum_all().unwrap()).unwrap();
    // The loss is arbitrary here: only its gradients matter.
    opt.set_divergence(None);
    opt.backward_step(&loss).unwrap();
    let flat = |v: &Var| v.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    (flat(&w), flat(&b))
}

fn max_rel(got: &[f32], want: &[f32]) -> f64 {
    assert_eq!(got.len(), want.len());
    let scale = want.iter().fold(0f64, |m, &v| m.max(f64::from(v).abs())).max(1e-30);
    got.iter().zip(want).fold(0f64, |m, (&g, &w)| m.max(f64::from(g - w).abs() / scale))
}

#[test]
fn a_step_through_the_candle_optimizer_is_frog_cpus() {
    let cases = load_cases(&golden_dir()).unwrap_or_else(|e| panic!("{e}"));
    for name in ["linear_20x7_bias", "conv3x3_bias"] {
        let case = cases.iter().find(|c| c.name == name).unwrap_or_else(|| panic!("no golden case {name}"));
        let Target::Layer(layer) = &case.target else { panic!("{name} is not a layer case") };
        let (w, b) = frog_cpu_step(case, layer);
        let (cw, cb) = candle_step(case, layer);
        let err = max_rel(&cw, &w).max(max_rel(&cb, &b));
        println!("{name}: max-norm relative error {err:e}");
        assert!(err <= 1e-4, "{name}: the candle optimizer's step differs from frog-cpu's by {err:e}");
        assert!(max_rel(&cw, &f32s(&case.weight)) > 1e-3, "{name}: the step did not move the weight");
    }
}

/// A linear model `y = x W^T` on a fixed batch, its tap registered.
fn tiny(lr: f64) -> (Var, Tap, FrogOptimizer, Tensor) {
    let dev = Device::Cpu;
    let w = Var::from_vec((0..12).map(|i| (i as f32 * 0.37).sin()).collect::<Vec<_>>(), (3, 4), &dev).unwrap();
    let mut opt = FrogOptimizer::new(vec![w.clone()], ParamsFrog::new(Config { lr, sample_size: Some(4), ..Config::default() }, 8)).unwrap();
    let tap = opt.tap(&w, None, Layer::linear(4, 3, false)).unwrap();
    let x = Tensor::from_vec((0..32).map(|i| (i as f32 * 0.91).cos()).collect::<Vec<_>>(), (8, 4), &dev).unwrap();
    (w, tap, opt, x)
}

fn loss_of(w: &Var, tap: &Tap, x: &Tensor, scale: f64) -> Tensor {
    let y = tap.apply(x, |x| x.matmul(&w.t()?)).unwrap();
    (y.sqr().unwrap().mean_all().unwrap() * scale).unwrap()
}

#[test]
fn a_diverging_loss_is_refused_unless_the_check_is_off() {
    let (w, tap, mut opt, x) = tiny(0.01);
    opt.backward_step(&loss_of(&w, &tap, &x, 1.0)).unwrap();
    let before = w.as_tensor().to_vec2::<f32>().unwrap();
    // 1000x the first loss: refused, and nothing moves.
    let err = opt.try_backward_step(&loss_of(&w, &tap, &x, 1000.0)).unwrap_err();
    let Error::Diverged { loss, first } = err else { panic!("not a divergence: {err}") };
    assert!(loss > 100.0 * first, "{loss} {first}");
    assert_eq!(w.as_tensor().to_vec2::<f32>().unwrap(), before);
    // A non-finite loss too; through candle's trait, the message says what to do.
    let err = opt.backward_step(&loss_of(&w, &tap, &x, f64::NAN)).unwrap_err();
    assert!(err.to_string().contains("FROG diverged: loss NaN") && err.to_string().contains("lower the learning rate"), "{err}");
    assert!(matches!(opt.try_backward_step(&loss_of(&w, &tap, &x, f64::INFINITY)), Err(Error::Diverged { .. })));
    // Turned off, the same loss steps.
    opt.set_divergence(None);
    opt.backward_step(&loss_of(&w, &tap, &x, 1000.0)).unwrap();
    assert_ne!(w.as_tensor().to_vec2::<f32>().unwrap(), before);
}

#[test]
fn the_learning_rate_is_frogs_and_a_rejected_one_is_an_error() {
    let (w, tap, mut opt, x) = tiny(0.02);
    assert_eq!(opt.learning_rate(), 0.02);
    opt.set_learning_rate(0.005);
    assert_eq!(opt.learning_rate(), 0.005);
    opt.set_learning_rate(-1.0);
    assert_eq!(opt.learning_rate(), 0.005, "a rejected rate changed the rate");
    let before = w.as_tensor().to_vec2::<f32>().unwrap();
    let err = opt.try_backward_step(&loss_of(&w, &tap, &x, 1.0)).unwrap_err();
    assert!(matches!(err, Error::Frog(_)), "{err}");
    assert_eq!(w.as_tensor().to_vec2::<f32>().unwrap(), before);
    // Reported once; the next step runs at the rate kept.
    opt.backward_step(&loss_of(&w, &tap, &x, 1.0)).unwrap();
    assert_ne!(w.as_tensor().to_vec2::<f32>().unwrap(), before);
}

#[test]
fn misuse_is_an_error_not_a_panic() {
    let dev = Device::Cpu;
    let w = Var::zeros((3, 4), DType::F32, &dev).unwrap();
    assert!(matches!(Tap::new(&w, None, Layer::linear(5, 3, false)), Err(Error::Shape { expected: 15, actual: 12, .. })));
    assert!(matches!(Tap::new(&w, None, Layer::linear(4, 3, true)), Err(Error::Shape { .. })));

    // A tap never applied: the step names it.
    let (w, _tap, mut opt, x) = tiny(0.01);
    let loss = x.matmul(&w.t().unwrap()).unwrap().sum_all().unwrap();
    let err = opt.try_backward_step(&loss).unwrap_err();
    assert!(matches!(&err, Error::NotApplied(n) if n == "tap0"), "{err}");

    // A batch above the optimizer's largest: FROG's error, nothing moves.
    let (w, tap, mut opt, _) = tiny(0.01);
    let big = Tensor::ones((9, 4), DType::F32, &dev).unwrap();
    let before = w.as_tensor().to_vec2::<f32>().unwrap();
    let err = opt.try_backward_step(&loss_of(&w, &tap, &big, 1.0)).unwrap_err();
    assert!(matches!(err, Error::Frog(_)), "{err}");
    assert_eq!(w.as_tensor().to_vec2::<f32>().unwrap(), before);

    // Taps after the first step are refused.
    let (w, tap, mut opt, x) = tiny(0.01);
    opt.backward_step(&loss_of(&w, &tap, &x, 1.0)).unwrap();
    assert!(matches!(opt.tap(&w, None, Layer::linear(4, 3, false)), Err(Error::Registered)));
}
