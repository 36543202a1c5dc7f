//! `FrogOptimizer`: one step equals frog-cpu's on golden layer cases (f32,
//! 1e-4), with the case's inputs, output gradients and gradients
//! reproduced by a burn graph on the Flex CPU backend; a diverging loss is
//! refused (and the refusal can be turned off); misuse is an error, not a
//! panic.

use burn::module::{Module, Param};
use burn::nn::conv::Conv2d;
use burn::nn::{Linear, LinearConfig, PaddingConfig2d};
use burn::tensor::module::conv2d;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{Device, Tensor, TensorData};
use frog_burn::{Error, FrogOptimizer, ParamsFrog, Taps};
use frog_core::{Config, LayerKind};
use frog_cpu::golden::framework::{check_first_steps, FirstStep};
use frog_cpu::host::HostError;

const SEED: u64 = 11;

fn dev() -> Device {
    Device::flex().autodiff()
}

fn tensor<const D: usize>(v: Vec<f32>, shape: [usize; D]) -> Tensor<D> {
    Tensor::from_data(TensorData::new(v, shape), &dev())
}

fn flat<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().try_into_vec::<f32>().unwrap()
}

/// `[rows, cols]` row-major, transposed.
fn transpose(v: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    (0..cols).flat_map(|c| (0..rows).map(move |r| v[r * cols + c])).collect()
}

/// The case's first step through `FrogOptimizer::step`, the weight
/// returned in FROG's rows. The layer runs on the detached parameters and
/// the loss is `sum(out * Y) + sum(W * GW) + sum(b * GB)`: the output's
/// gradient is `Y`, the weight's `GW` and the bias's `GB`, the case's.
fn burn_step(case: &FirstStep) -> (Vec<f32>, Vec<f32>) {
    let (layer, bsz) = (case.layer, case.batch);
    let rows = layer.rows();
    let taps = Taps::new();
    let mut opt = FrogOptimizer::new(ParamsFrog { seed: SEED, ..ParamsFrog::new(case.config, bsz) }, &taps).unwrap();
    // The loss is arbitrary here: only its gradients matter.
    opt.set_divergence(None);
    let b = Param::from_tensor(tensor(case.bias.clone(), [rows]));
    let gb = tensor(case.grad_bias.clone(), [rows]);
    let bias_term = |b: &Param<Tensor<1>>| (b.val() * gb.clone()).sum();
    match layer.kind {
        LayerKind::Linear { d_in, d_out, tokens: 1 } => {
            // Burn's layout, [d_in, d_out].
            let w = Param::from_tensor(tensor(transpose(&case.weight, d_out, d_in), [d_in, d_out]));
            let mut fc = Linear { weight: w, bias: Some(b) };
            opt.add_linear(&fc).unwrap();
            let (wd, bd) = (fc.weight.val().detach(), fc.bias.as_ref().unwrap().val().detach());
            let out = taps.apply(fc.weight.id, tensor(case.x.clone(), [bsz, d_in]), |x| x.matmul(wd) + bd.unsqueeze::<2>());
            let gw = tensor(transpose(&case.grad_weight, d_out, d_in), [d_in, d_out]);
            let loss = (out * tensor(case.y.clone(), [bsz, d_out])).sum() + (fc.weight.val() * gw).sum() + bias_term(fc.bias.as_ref().unwrap());
            opt.step(&mut fc, &loss).unwrap();
            (transpose(&flat(fc.weight.val()), d_in, d_out), flat(fc.bias.unwrap().val()))
        }
        LayerKind::Conv2d(c) => {
            let shape = [c.c_out, c.c_in, c.kernel[0], c.kernel[1]];
            let mut conv = Conv2d {
                weight: Param::from_tensor(tensor(case.weight.clone(), shape)),
                bias: Some(b),
                stride: c.stride,
                kernel_size: c.kernel,
                dilation: c.dilation,
                groups: 1,
                padding: PaddingConfig2d::Explicit(c.padding[0], c.padding[1], c.padding[0], c.padding[1]),
            };
            opt.add_conv2d(&conv).unwrap();
            let (wd, bd) = (conv.weight.val().detach(), conv.bias.as_ref().unwrap().val().detach());
            let [h, wid] = c.input_hw;
            let options = ConvOptions::new(c.stride, c.padding, c.dilation, 1);
            let out = taps.apply(conv.weight.id, tensor(case.x.clone(), [bsz, c.c_in, h, wid]), |x| conv2d(x, wd, Some(bd), options));
            let y = tensor(case.y.clone(), out.dims());
            let loss = (out * y).sum() + (conv.weight.val() * tensor(case.grad_weight.clone(), shape)).sum() + bias_term(conv.bias.as_ref().unwrap());
            opt.step(&mut conv, &loss).unwrap();
            (flat(conv.weight.val()), flat(conv.bias.unwrap().val()))
        }
        k => panic!("no burn graph for {k:?}"),
    }
}

#[test]
fn a_step_through_the_burn_optimizer_is_frog_cpus() {
    check_first_steps(SEED, burn_step).unwrap_or_else(|e| panic!("{e}"));
}

/// A linear model `y = x W` (no bias) on a fixed batch, registered.
#[derive(Module, Debug)]
struct Tiny {
    fc: Linear,
    scale: Param<Tensor<1>>,
    #[module(skip)]
    taps: Taps,
}

impl Tiny {
    fn loss(&self, x: &Tensor<2>, factor: f32) -> Tensor<1> {
        let y = self.taps.linear(&self.fc, x.clone()) * self.scale.val().unsqueeze::<2>();
        y.powi_scalar(2).mean() * factor
    }
}

fn tiny(lr: f64) -> (Tiny, FrogOptimizer, Tensor<2>) {
    let fc = LinearConfig::new(4, 3).with_bias(false).init(&dev());
    let model = Tiny { fc, scale: Param::from_tensor(Tensor::ones([1], &dev())), taps: Taps::new() };
    let mut opt = FrogOptimizer::new(ParamsFrog::new(Config { lr, sample_size: Some(4), ..Config::default() }, 8), &model.taps).unwrap();
    opt.add_linear(&model.fc).unwrap();
    let x = tensor((0..32).map(|i| (i as f32 * 0.91).cos()).collect(), [8, 4]);
    (model, opt, x)
}

/// One step on the loss of `x` times `factor`.
fn step(opt: &mut FrogOptimizer, m: &mut Tiny, x: &Tensor<2>, factor: f32) -> frog_burn::Result<()> {
    let loss = m.loss(x, factor);
    opt.step(m, &loss)
}

fn weights(m: &Tiny) -> Vec<f32> {
    flat(m.fc.weight.val())
}

#[test]
fn the_model_steps_and_keeps_its_parameter_ids() {
    let (mut m, mut opt, x) = tiny(0.01);
    let (ids, before, scale) = ((m.fc.weight.id, m.scale.id), weights(&m), flat(m.scale.val()));
    step(&mut opt, &mut m, &x, 1.0).unwrap();
    assert_eq!((m.fc.weight.id, m.scale.id), ids);
    assert_ne!(weights(&m), before);
    // The plain parameter took the SGD path.
    assert_ne!(flat(m.scale.val()), scale);
    // The new parameters are trainable: a second step runs.
    let second = weights(&m);
    step(&mut opt, &mut m, &x, 1.0).unwrap();
    assert_ne!(weights(&m), second);
}

#[test]
fn a_diverging_loss_is_refused_unless_the_check_is_off() {
    let (mut m, mut opt, x) = tiny(0.01);
    step(&mut opt, &mut m, &x, 1.0).unwrap();
    let before = weights(&m);
    // 1000x the first loss: refused, and nothing moves.
    let err = step(&mut opt, &mut m, &x, 1000.0).unwrap_err();
    let Error::Frog(HostError::Diverged { loss, first }) = err else { panic!("not a divergence: {err}") };
    assert!(loss > 100.0 * first, "{loss} {first}");
    assert_eq!(weights(&m), before);
    // A non-finite loss too; the message says what to do.
    let err = step(&mut opt, &mut m, &x, f32::NAN).unwrap_err();
    assert!(err.to_string().contains("FROG diverged: loss NaN") && err.to_string().contains("lower the learning rate"), "{err}");
    assert_eq!(weights(&m), before);
    // Turned off, the same loss steps.
    opt.set_divergence(None);
    step(&mut opt, &mut m, &x, 1000.0).unwrap();
    assert_ne!(weights(&m), before);
}

#[test]
fn misuse_is_an_error_not_a_panic() {
    // A layer never run through its taps: the step names it.
    let (mut m, mut opt, x) = tiny(0.01);
    let loss = m.fc.forward(x.clone()).sum();
    let err = opt.step(&mut m, &loss).unwrap_err();
    assert!(matches!(&err, Error::Frog(HostError::NotApplied { name }) if name == "layer0"), "{err}");

    // A loss off the autodiff graph.
    let (mut m, mut opt, x) = tiny(0.01);
    let loss = m.loss(&x, 1.0).detach();
    assert!(matches!(opt.step(&mut m, &loss), Err(Error::NotTracked)));
    let plain = Tensor::<1>::ones([1], &Device::flex());
    assert!(matches!(opt.step(&mut m, &plain), Err(Error::NotTracked)));

    // A batch above the optimizer's largest: FROG's error, nothing moves.
    let (mut m, mut opt, _) = tiny(0.01);
    let big = Tensor::<2>::ones([9, 4], &dev());
    let before = weights(&m);
    let err = step(&mut opt, &mut m, &big, 1.0).unwrap_err();
    assert!(matches!(err, Error::Frog(_)), "{err}");
    assert_eq!(weights(&m), before);

    // A rejected learning rate changes nothing.
    let (mut m, mut opt, x) = tiny(0.02);
    assert!(matches!(opt.set_lr(-1.0), Err(Error::Frog(_))));
    assert_eq!(opt.lr().unwrap(), 0.02);

    // Layers: registered twice, after the first step, or unsupported.
    step(&mut opt, &mut m, &x, 1.0).unwrap();
    assert!(matches!(opt.add_linear(&m.fc), Err(Error::Registered(_))));
    let (m, mut opt, _) = tiny(0.01);
    assert!(matches!(opt.add_linear(&m.fc), Err(Error::Registered(_))));
    let grouped = burn::nn::conv::Conv2dConfig::new([4, 4], [3, 3]).with_groups(2).init(&dev());
    assert!(matches!(opt.add_conv2d(&grouped), Err(Error::Unsupported(_))));
    let asym = burn::nn::conv::Conv2dConfig::new([4, 4], [3, 3]).with_padding(PaddingConfig2d::Explicit(1, 1, 0, 1)).init(&dev());
    assert!(matches!(opt.add_conv2d(&asym), Err(Error::Unsupported(_))));
}
