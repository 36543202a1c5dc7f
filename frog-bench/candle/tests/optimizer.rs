//! `FrogOptimizer`, candle's `Optimizer`: one step equals frog-cpu's on
//! golden layer cases (f32, 1e-4), with the case's inputs, output gradients
//! and gradients reproduced by a candle graph; a diverging loss is refused
//! (and the refusal can be turned off); a rejected learning rate and
//! misuse are errors, not panics.

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::Optimizer;
use frog_candle::{Error, FrogOptimizer, ParamsFrog, Tap};
use frog_core::{Config, Layer, LayerKind};
use frog_cpu::golden::framework::{check_first_steps, FirstStep};
use frog_cpu::host::HostError;

const SEED: u64 = 11;

/// The case's first step through `FrogOptimizer::backward_step`. The layer
/// runs on the detached parameters and the loss is `sum(out * Y) + sum(W *
/// GW) + sum(b * GB)`: the output's gradient is `Y`, the weight's `GW` and
/// the bias's `GB`, the case's.
fn candle_step(case: &FirstStep) -> (Vec<f32>, Vec<f32>) {
    let dev = Device::Cpu;
    let (layer, bsz) = (case.layer, case.batch);
    let rows = layer.rows();
    let w = Var::from_vec(case.weight.clone(), (rows, layer.weight_cols()), &dev).unwrap();
    let b = Var::from_vec(case.bias.clone(), rows, &dev).unwrap();
    let mut opt = FrogOptimizer::new(vec![w.clone(), b.clone()], ParamsFrog { seed: SEED, ..ParamsFrog::new(case.config, bsz) }).unwrap();
    let tap = opt.tap(&w, Some(&b), layer).unwrap();

    let (out, y) = match layer.kind {
        LayerKind::Linear { d_in, d_out, tokens: 1 } => {
            let x = Tensor::from_vec(case.x.clone(), (bsz, d_in), &dev).unwrap();
            let out = tap.apply(&x, |x| x.matmul(&w.detach().t()?)?.broadcast_add(&b.detach())).unwrap();
            (out, Tensor::from_vec(case.y.clone(), (bsz, d_out), &dev).unwrap())
        }
        LayerKind::Conv2d(c) => {
            let [h, wd] = c.input_hw;
            let x = Tensor::from_vec(case.x.clone(), (bsz, c.c_in, h, wd), &dev).unwrap();
            let kernel = w.detach().reshape((c.c_out, c.c_in, c.kernel[0], c.kernel[1])).unwrap();
            let conv = |x: &Tensor| x.conv2d(&kernel, c.padding[0], c.stride[0], c.dilation[0], 1)?.broadcast_add(&b.detach().reshape((1, (), 1, 1))?);
            let out = tap.apply(&x, conv).unwrap();
            let y = Tensor::from_vec(case.y.clone(), out.shape(), &dev).unwrap();
            (out, y)
        }
        k => panic!("no candle graph for {k:?}"),
    };
    let gw = Tensor::from_vec(case.grad_weight.clone(), w.shape(), &dev).unwrap();
    let gb = Tensor::from_vec(case.grad_bias.clone(), rows, &dev).unwrap();
    let loss = ((out * y).unwrap().sum_all().unwrap() + (w.as_tensor() * gw).unwrap().sum_all().unwrap() + (b.as_tensor() * gb).unwrap().sum_all().unwrap()).unwrap();
    // The loss is arbitrary here: only its gradients matter.
    opt.set_divergence(None);
    opt.backward_step(&loss).unwrap();
    let flat = |v: &Var| v.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    (flat(&w), flat(&b))
}

#[test]
fn a_step_through_the_candle_optimizer_is_frog_cpus() {
    check_first_steps(SEED, candle_step).unwrap_or_else(|e| panic!("{e}"));
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
    let Error::Frog(HostError::Diverged { loss, first }) = err else { panic!("not a divergence: {err}") };
    assert!(loss > 100.0 * first, "{loss} {first}");
    assert_eq!(w.as_tensor().to_vec2::<f32>().unwrap(), before);
    // A non-finite loss too; through candle's trait, the message says what to do.
    let err = opt.backward_step(&loss_of(&w, &tap, &x, f64::NAN)).unwrap_err();
    assert!(err.to_string().contains("FROG diverged: loss NaN") && err.to_string().contains("lower the learning rate"), "{err}");
    assert!(matches!(opt.try_backward_step(&loss_of(&w, &tap, &x, f64::INFINITY)), Err(Error::Frog(HostError::Diverged { .. }))));
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
    assert!(matches!(&err, Error::Frog(HostError::NotApplied { name }) if name == "tap0"), "{err}");

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
