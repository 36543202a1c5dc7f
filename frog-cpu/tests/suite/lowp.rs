//! Steps on bf16 and f16 sampled inputs: the same step as on their f32
//! values, bf16's range up to 3.4e38 handled, the opt-in overflow check of
//! `y`, and the optimizer object's low-precision twin.

use crate::common::{Rng, StepData};
use frog_core::half::{bf16, f16};
use frog_core::{
    frog_step, Backend, Batch, Config, Conv2d, Error, ErrorKind, Half, Layer, LowpBackend, LowpBatch, Method, ParamState, Params, ShapeError, Unguarded, Workspace, WorkspaceReq,
};
use frog_cpu::{Algorithm, Cpu, CpuError, Frog};

fn layers() -> [Layer; 3] {
    [Layer::conv2d(Conv2d::new(3, 5, 3, [6, 6]).padding(1), true), Layer::linear_tokens(7, 4, 3, true), Layer::linear(9, 6, false)]
}

fn cfg() -> Config {
    Config { lr: 0.05, momentum: 0.9, weight_decay: 1e-3, tau: 1e-3, ..Config::default() }
}

/// `v` rounded to `H`, times `gain` (a power of two, exact), as `H`.
fn halves<H: Half>(v: &[f64], gain: f32) -> Vec<H> {
    v.iter().map(|&x| H::from_f32(H::from_f32(x as f32).to_f32() * gain)).collect()
}

struct Run {
    weight: Vec<f32>,
    bias: Option<Vec<f32>>,
    direction: Vec<f32>,
}

/// Two steps (momentum in use) of `layer` in f32, from `x` and `y` in `H`
/// (`lowp`) or their f32 values.
fn run<H: Half>(layer: &Layer, d: &StepData, x: &[H], y: &[H], lowp: bool, cfg: &Config) -> Result<Run, Error<CpuError>>
where
    Cpu<f32>: LowpBackend<H, LowpBuffer = Vec<H>>,
{
    run_on(None, layer, d, x, y, lowp, cfg)
}

/// [`run`] with the convolution algorithm forced.
fn run_on<H: Half>(algorithm: Option<Algorithm>, layer: &Layer, d: &StepData, x: &[H], y: &[H], lowp: bool, cfg: &Config) -> Result<Run, Error<CpuError>>
where
    Cpu<f32>: LowpBackend<H, LowpBuffer = Vec<H>>,
{
    let cpu = Cpu::<f32>::with_threads(2).unwrap().with_algorithm(algorithm);
    let mut state = ParamState::for_layer(&cpu, layer, cfg).unwrap();
    let mut ws = Workspace::new(&cpu, WorkspaceReq::new(&cpu, layer, d.sample).unwrap()).unwrap();
    let f = |v: &[f64]| v.iter().map(|&x| x as f32).collect::<Vec<f32>>();
    let (mut weight, mut bias, gw, gb) = (f(&d.weight), d.bias.as_deref().map(f), f(&d.grad_weight), d.grad_bias.as_deref().map(f));
    let (xf, yf): (Vec<f32>, Vec<f32>) = (x.iter().map(|h| h.to_f32()).collect(), y.iter().map(|h| h.to_f32()).collect());
    let (x, y) = (x.to_vec(), y.to_vec());
    for _ in 0..2 {
        let params = Params { weight: &mut weight, grad_weight: &gw, bias: bias.as_mut().zip(gb.as_ref()) };
        if lowp {
            let batch = LowpBatch { x: &x, y: &y, sample: d.sample, batch_size: d.batch, check_y: true };
            frog_step(&cpu, cfg, layer, &mut state, &mut ws, params, batch, Unguarded)?;
        } else {
            let batch = Batch { x: &xf, y: &yf, sample: d.sample, batch_size: d.batch };
            frog_step(&cpu, cfg, layer, &mut state, &mut ws, params, batch, Unguarded)?;
        }
    }
    let mut direction = vec![0.0; layer.rows() * layer.cols()];
    cpu.read(ws.direction(), 0, &mut direction).unwrap();
    Ok(Run { weight, bias, direction })
}

fn same_as_f32<H: Half>()
where
    Cpu<f32>: LowpBackend<H, LowpBuffer = Vec<H>>,
{
    for (seed, layer) in layers().iter().enumerate() {
        let d = StepData::random(&mut Rng(3 + seed as u64), layer, 3, 8);
        let (x, y) = (halves::<H>(&d.x, 1.0), halves::<H>(&d.y, 1.0));
        let lowp = run(layer, &d, &x, &y, true, &cfg()).unwrap();
        let full = run(layer, &d, &x, &y, false, &cfg()).unwrap();
        // Converted while packed, then the same arithmetic: bit for bit.
        assert_eq!(lowp.weight, full.weight, "{} on {layer:?}", H::NAME);
        assert_eq!(lowp.bias, full.bias);
        assert_eq!(lowp.direction, full.direction);
    }
}

#[test]
fn bf16_and_f16_inputs_step_exactly_as_their_f32_values() {
    same_as_f32::<bf16>();
    same_as_f32::<f16>();
}

#[test]
fn winograd_layers_step_on_16_bit_inputs_exactly_as_on_their_f32_values() {
    // Winograd's scratch holds transformed tiles and its norms read x: the
    // 16-bit inputs go through the same transforms, widened as they are read.
    let layer = Layer::conv2d(Conv2d::new(4, 6, 3, [8, 8]).padding(1), false);
    Algorithm::Winograd.supports(&layer).unwrap();
    let d = StepData::random(&mut Rng(17), &layer, 3, 8);
    let (x, y) = (halves::<bf16>(&d.x, 1.0), halves::<bf16>(&d.y, 1.0));
    let lowp = run_on(Some(Algorithm::Winograd), &layer, &d, &x, &y, true, &cfg()).unwrap();
    let full = run_on(Some(Algorithm::Winograd), &layer, &d, &x, &y, false, &cfg()).unwrap();
    assert_eq!(lowp.weight, full.weight);
    assert_eq!(lowp.direction, full.direction);
    let direct = run_on(Some(Algorithm::Direct), &layer, &d, &x, &y, true, &cfg()).unwrap();
    let scale = direct.weight.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let err = direct.weight.iter().zip(&lowp.weight).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max) / scale;
    assert!(err < 1e-4, "Winograd and direct differ by {err:e} on bf16 inputs");
}

#[test]
fn bf16_inputs_far_past_the_square_safe_size_give_finite_steps() {
    // |x| about 1e20 in bf16: their squares overflow f32 unless the patches
    // are rescaled (a power of two, the bias feature with them). The
    // 16-bit step stays the f32 step on the same values, bit for bit, on
    // every algorithm, and it is finite.
    for (seed, layer) in layers().iter().enumerate() {
        let d = StepData::random(&mut Rng(50 + seed as u64), layer, 3, 8);
        let (x, y) = (halves::<bf16>(&d.x, 2f32.powi(66)), halves::<bf16>(&d.y, 1.0));
        let top = x.iter().fold(0.0f32, |m, v| m.max(v.to_f32().abs()));
        assert!(top > 1e19 && top.is_finite(), "largest |x| {top:e}");
        for algorithm in [None, Some(Algorithm::Direct), Some(Algorithm::Gram)].into_iter().chain(Algorithm::Winograd.supports(layer).is_ok().then_some(Some(Algorithm::Winograd))) {
            let lowp = run_on(algorithm, layer, &d, &x, &y, true, &cfg()).unwrap();
            let full = run_on(algorithm, layer, &d, &x, &y, false, &cfg()).unwrap();
            assert!(lowp.weight.iter().chain(&lowp.direction).all(|v| v.is_finite()), "non-finite step from finite bf16 x on {layer:?}, {algorithm:?}");
            assert_eq!(lowp.weight, full.weight, "{algorithm:?} on {layer:?}");
            assert_eq!(lowp.direction, full.direction);
        }
    }
}

#[test]
fn bf16_output_gradients_near_the_top_of_their_range_give_the_same_step() {
    // |y| up to about 3e38: their squares overflow f32 unless the Fisher
    // weights rescale the row, which leaves the direction unchanged (a tiny
    // eps, so that the one difference, eps / c^2, vanishes).
    let cfg = Config { denom_eps: 1e-30, ..cfg() };
    for (seed, layer) in layers().iter().enumerate() {
        let d = StepData::random(&mut Rng(30 + seed as u64), layer, 3, 8);
        let max = d.y.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        let gain = 2f32.powi((3e38 / max).log2().floor() as i32);
        let x = halves::<bf16>(&d.x, 1.0);
        let (y, huge) = (halves::<bf16>(&d.y, 1.0), halves::<bf16>(&d.y, gain));
        let top = huge.iter().fold(0.0f32, |m, v| m.max(v.to_f32().abs()));
        assert!(top > 1.5e38 && top.is_finite(), "largest |y| {top:e}");
        let want = run(layer, &d, &x, &y, true, &cfg).unwrap();
        let got = run(layer, &d, &x, &huge, true, &cfg).unwrap();
        assert!(got.weight.iter().chain(&got.direction).all(|v| v.is_finite()), "non-finite step from finite bf16 y on {layer:?}");
        let scale = want.weight.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let err = want.weight.iter().zip(&got.weight).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max) / scale;
        assert!(err < 1e-5, "weights differ by {err:e} relative on {layer:?}");
    }
}

#[test]
fn f16_output_gradients_with_a_loss_scale_give_the_same_step() {
    let layer = &layers()[0];
    let d = StepData::random(&mut Rng(5), layer, 3, 8);
    let x = halves::<f16>(&d.x, 1.0);
    let want = run(layer, &d, &x, &halves::<f16>(&d.y, 1.0), true, &cfg()).unwrap();
    let got = run(layer, &d, &x, &halves::<f16>(&d.y, 1024.0), true, &cfg()).unwrap();
    let scale = want.weight.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let err = want.weight.iter().zip(&got.weight).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max) / scale;
    // y in f16 rounds differently once scaled (f16 subnormals below 6.1e-5).
    assert!(err < 1e-3, "loss scale 1024 changed the weights by {err:e} relative");
}

#[test]
fn overflowed_output_gradients_are_refused_before_anything_changes() {
    let layer = &layers()[0];
    let d = StepData::random(&mut Rng(9), layer, 3, 8);
    let cpu = Cpu::<f32>::with_threads(1).unwrap();
    let cfg = cfg();
    let mut state = ParamState::for_layer(&cpu, layer, &cfg).unwrap();
    let mut ws = Workspace::new(&cpu, WorkspaceReq::new(&cpu, layer, d.sample).unwrap()).unwrap();
    let mut weight: Vec<f32> = d.weight.iter().map(|&v| v as f32).collect();
    let mut bias: Vec<f32> = d.bias.as_deref().unwrap().iter().map(|&v| v as f32).collect();
    let gw: Vec<f32> = d.grad_weight.iter().map(|&v| v as f32).collect();
    let gb: Vec<f32> = d.grad_bias.as_deref().unwrap().iter().map(|&v| v as f32).collect();
    let x = halves::<f16>(&d.x, 1.0);
    let mut y = halves::<f16>(&d.y, 1.0);
    y[3] = f16::INFINITY;
    y[10] = f16::NAN;
    let before = (weight.clone(), bias.clone(), state.steps());
    let params = Params { weight: &mut weight, grad_weight: &gw, bias: Some((&mut bias, &gb)) };
    let batch = LowpBatch { x: &x, y: &y, sample: d.sample, batch_size: d.batch, check_y: true };
    let e = frog_step(&cpu, &cfg, layer, &mut state, &mut ws, params, batch, Unguarded).unwrap_err();
    assert_eq!(e, Error::NonFiniteInput { what: "y", entries: 2 });
    assert_eq!(e.kind(), ErrorKind::NonFinite);
    assert!(e.to_string().contains("skip the step"), "{e}");
    assert_eq!((weight.clone(), bias.clone(), state.steps()), before);
    // Unchecked, the step runs (and the non-finite rows show in the weights).
    let params = Params { weight: &mut weight, grad_weight: &gw, bias: Some((&mut bias, &gb)) };
    let batch = LowpBatch { x: &x, y: &y, sample: d.sample, batch_size: d.batch, check_y: false };
    frog_step(&cpu, &cfg, layer, &mut state, &mut ws, params, batch, Unguarded).unwrap();
    assert_eq!(state.steps(), 1);
    // Wrong lengths of the 16-bit buffers are shape errors too.
    let params = Params { weight: &mut weight, grad_weight: &gw, bias: Some((&mut bias, &gb)) };
    let short = x[1..].to_vec();
    let batch = LowpBatch { x: &short, y: &y, sample: d.sample, batch_size: d.batch, check_y: true };
    let e = frog_step(&cpu, &cfg, layer, &mut state, &mut ws, params, batch, Unguarded).unwrap_err();
    assert!(matches!(e, Error::Shape(ShapeError::BufferLength { what: "x", .. })), "{e}");
}

#[test]
fn the_optimizer_object_steps_on_bf16_inputs_as_on_their_f32_values() {
    let layer = layers()[1];
    let d = StepData::random(&mut Rng(21), &layer, 4, 6);
    let cpu = Cpu::<f32>::with_threads(2).unwrap();
    let method = Method::Frog(Config { sample_size: Some(4), ..cfg() });
    let x = halves::<bf16>(&d.x, 1.0);
    let y = halves::<bf16>(&d.y, 1.0);
    let (xf, yf): (Vec<f32>, Vec<f32>) = (x.iter().map(|h| h.to_f32()).collect(), y.iter().map(|h| h.to_f32()).collect());
    let mut out = Vec::new();
    for lowp in [false, true] {
        let mut frog = Frog::<f32>::new(method, 6, 1).unwrap();
        let id = frog.add_layer(&cpu, "fc", layer, frog_core::GroupId::DEFAULT).unwrap();
        let mut weight: Vec<f32> = d.weight.iter().map(|&v| v as f32).collect();
        let mut bias: Vec<f32> = d.bias.as_deref().unwrap().iter().map(|&v| v as f32).collect();
        let gw: Vec<f32> = d.grad_weight.iter().map(|&v| v as f32).collect();
        let gb: Vec<f32> = d.grad_bias.as_deref().unwrap().iter().map(|&v| v as f32).collect();
        for _ in 0..3 {
            let params = Params { weight: &mut weight, grad_weight: &gw, bias: Some((&mut bias, &gb)) };
            if lowp {
                let batch = LowpBatch { x: &x, y: &y, sample: 4, batch_size: 6, check_y: false };
                frog.step_layer(&cpu, id, params, Some(batch)).unwrap();
            } else {
                frog.step_layer(&cpu, id, params, Some(Batch { x: &xf, y: &yf, sample: 4, batch_size: 6 })).unwrap();
            }
        }
        out.push((weight, bias));
    }
    assert_eq!(out[0], out[1]);
}
