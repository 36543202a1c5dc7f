//! Steps on views (slices of the caller's arrays) against steps on
//! buffers, and hostile views: wrong lengths and out-of-range parts give
//! errors that name them, and change nothing.

use crate::common::{frog_with, Rng, StepData};
use frog_core::{
    frog_step, gather_rows, AdamWConfig, Batch, Config, Conv2d, Error, GroupId, Guard, Layer, Method, ParamState, Params, RegistryError, SgdConfig, ShapeError, Unguarded,
    Backend, ParamGrad, ViewBatch, ViewParamGrad, ViewParams, ViewSource, Workspace, WorkspaceReq,
};
use frog_cpu::{Cpu, CpuError};
use proptest::prelude::*;
use proptest::test_runner::{Config as Runner, RngSeed};

fn layers() -> [Layer; 3] {
    [Layer::conv2d(Conv2d::new(3, 6, 3, [8, 8]).padding(1), true), Layer::conv2d(Conv2d::new(6, 4, 3, [8, 8]).stride(2), false), Layer::linear_tokens(5, 3, 2, true)]
}

/// A framework's flat parameter store: every parameter of a model at its
/// offset in one allocation, the gradients in another.
struct Flat {
    params: Vec<f64>,
    grads: Vec<f64>,
    /// `(offset, len)` of each array, in registration order: every layer's
    /// weight then bias, then the plain parameters.
    parts: Vec<(usize, usize)>,
}

impl Flat {
    fn new(rng: &mut Rng, lens: &[usize]) -> Self {
        // A gap before every array, so that a view's offset matters.
        let mut parts = Vec::new();
        let mut at = 0;
        for &len in lens {
            parts.push((at + 2, len));
            at += 2 + len;
        }
        Self { params: rng.vec(at + 2), grads: rng.vec(at + 2), parts }
    }
}

/// Three steps of FROG layers, FROG's plain path and an SGD group's layer,
/// once on buffers and once on views of one flat store: bitwise equal, and
/// the store's gaps untouched.
#[test]
fn optimizer_steps_on_views_match_steps_on_buffers() {
    let layers = layers();
    let (sample, batch) = (3, 5);
    let cfg = Config { lr: 0.02, momentum: 0.9, weight_decay: 1e-3, sample_size: Some(sample), ..Config::default() };
    let cpu = Cpu::<f64>::with_threads(2).unwrap();
    let build = || {
        let (mut frog, mut layer_ids, other_ids) = frog_with(&cpu, cfg, &layers[..2], &[7], batch, 3).unwrap();
        let sgd = frog.add_group(Method::Sgd(SgdConfig { lr: 0.05, momentum: 0.8, weight_decay: 1e-2, nesterov: true, ..SgdConfig::default() })).unwrap();
        layer_ids.push(frog.add_layer(&cpu, "sgd layer", layers[2], sgd).unwrap());
        (frog, layer_ids, other_ids)
    };
    let mut rng = Rng(5);
    let mut lens: Vec<usize> = Vec::new();
    for l in &layers {
        lens.push(l.rows() * l.weight_cols());
        lens.push(if l.bias { l.rows() } else { 0 });
    }
    lens.push(7);
    let mut flat = Flat::new(&mut rng, &lens);
    let inputs: Vec<_> = layers.iter().map(|l| StepData::random(&mut rng, l, sample, batch)).collect();
    let part = |v: &[f64], k: usize| v[flat.parts[k].0..][..flat.parts[k].1].to_vec();
    // The buffer run: each array copied out of the store.
    let mut arrays: Vec<Vec<f64>> = (0..lens.len()).map(|k| part(&flat.params, k)).collect();
    let grads: Vec<Vec<f64>> = (0..lens.len()).map(|k| part(&flat.grads, k)).collect();
    let (mut a, ids, others) = build();
    let (mut b, view_ids, view_others) = build();
    let mut idx = vec![0; batch];
    for _ in 0..3 {
        a.sample(batch, &mut idx).unwrap();
        b.sample(batch, &mut idx).unwrap();
        for (i, (&id, d)) in ids.iter().zip(&inputs).enumerate() {
            let (w, rest) = arrays[2 * i..].split_first_mut().unwrap();
            let bias = layers[i].bias.then(|| (&mut rest[0], &grads[2 * i + 1]));
            let params = Params { weight: w, grad_weight: &grads[2 * i], bias };
            a.step_layer(&cpu, id, params, Some(Batch { x: &d.x, y: &d.y, sample, batch_size: batch })).unwrap();
        }
        a.step_param(&cpu, others[0], ParamGrad { param: &mut arrays[6], grad: &grads[6] }).unwrap();
        // The view run: parts of the store.
        let mut rest = &mut flat.params[..];
        let mut taken = 0;
        let mut views = Vec::new();
        for &(at, len) in &flat.parts {
            let (_, tail) = rest.split_at_mut(at - taken);
            let (view, tail) = tail.split_at_mut(len);
            views.push(view);
            rest = tail;
            taken = at + len;
        }
        let g = |k: usize| &flat.grads[flat.parts[k].0..][..flat.parts[k].1];
        let mut views = views.into_iter();
        for (i, (&id, d)) in view_ids.iter().zip(&inputs).enumerate() {
            let (w, bv) = (views.next().unwrap(), views.next().unwrap());
            let bias = layers[i].bias.then(|| (bv, g(2 * i + 1)));
            let params = ViewParams { weight: w, grad_weight: g(2 * i), bias };
            b.step_layer(&cpu, id, params, Some(ViewBatch { x: &d.x[..], y: &d.y[..], sample, batch_size: batch })).unwrap();
        }
        b.step_param(&cpu, view_others[0], ViewParamGrad { param: views.next().unwrap(), grad: g(6) }).unwrap();
    }
    for (k, array) in arrays.iter().enumerate() {
        assert_eq!(&part(&flat.params, k), array, "array {k}");
    }
    let mut fresh = Flat::new(&mut Rng(5), &lens);
    for &(at, len) in flat.parts.iter().rev() {
        fresh.params.drain(at..at + len);
        flat.params.drain(at..at + len);
    }
    assert_eq!(flat.params, fresh.params, "an entry between the views changed");
}

/// The guarded step on views (a dead row replaced, diagnostics recorded)
/// is bitwise the guarded step on buffers.
#[test]
fn guarded_steps_on_views_match_guarded_steps_on_buffers() {
    let layer = layers()[0];
    let (sample, batch) = (3, 6);
    let cfg = Config { momentum: 0.9, sample_size: Some(sample), ..Config::default() };
    let guard = Guard { nonfinite: true, dead_rows: true };
    let cpu = Cpu::<f64>::with_threads(2).unwrap();
    let mut d = StepData::random(&mut Rng(9), &layer, sample, batch);
    // Channel 1's output gradients are zero: a dead row (trace 0).
    let l = layer.positions();
    d.y.chunks_mut(layer.rows() * l).for_each(|yi| yi[l..2 * l].iter_mut().for_each(|v| *v = 0.0));
    let run = |views: bool| {
        let mut state = ParamState::with_diagnostics(&cpu, &layer, &cfg).unwrap();
        let mut ws = Workspace::new(&cpu, WorkspaceReq::new(&cpu, &layer, sample).unwrap()).unwrap();
        let (mut w, mut b) = (d.weight.clone(), d.bias.clone().unwrap());
        let gb = d.grad_bias.as_ref().unwrap();
        for _ in 0..2 {
            if views {
                let params = ViewParams { weight: &mut w[..], grad_weight: &d.grad_weight[..], bias: Some((&mut b[..], &gb[..])) };
                let batch = ViewBatch { x: &d.x[..], y: &d.y[..], sample, batch_size: batch };
                frog_step(&cpu, &cfg, &layer, &mut state, &mut ws, params, batch, guard).unwrap();
            } else {
                let params = Params { weight: &mut w, grad_weight: &d.grad_weight, bias: Some((&mut b, gb)) };
                let batch = Batch { x: &d.x, y: &d.y, sample, batch_size: batch };
                frog_step(&cpu, &cfg, &layer, &mut state, &mut ws, params, batch, guard).unwrap();
            }
        }
        let diag = state.diagnostics(&cpu).unwrap().unwrap();
        (w, b, diag.replaced_rows, ws.row_scale()[..layer.rows()].to_vec())
    };
    let (on_views, on_buffers) = (run(true), run(false));
    assert!(on_buffers.2 >= 1, "no row was replaced");
    assert_eq!(on_views, on_buffers);
}

/// An AdamW group's kernel takes buffers: a step on views is refused, and
/// the parameter is left as it was.
#[test]
fn adamw_groups_refuse_views() {
    let cpu = Cpu::<f32>::with_threads(1).unwrap();
    let mut opt = frog_cpu::Frog::<f32>::new(AdamWConfig::default(), 4, 1).unwrap();
    let id = opt.add_param(&cpu, "p", 3, GroupId::DEFAULT).unwrap();
    let (mut p, g) = ([1.0f32, 2.0, 3.0], [0.5f32; 3]);
    let err = opt.step_param(&cpu, id, ViewParamGrad { param: &mut p[..], grad: &g[..] }).unwrap_err();
    assert!(matches!(err, Error::Registry(RegistryError::NeedsBuffers(_))), "{err}");
    assert!(err.to_string().contains("AdamW"), "{err}");
    assert_eq!(p, [1.0, 2.0, 3.0]);
}

/// `view`/`view_mut` of a range past the buffer (or whose end overflows)
/// are errors naming the lengths.
#[test]
fn out_of_range_views_are_errors() {
    let cpu = Cpu::<f64>::with_threads(1).unwrap();
    let mut buf = vec![0.0; 8];
    assert_eq!(cpu.view(&buf, 2, 6).unwrap().len(), 6);
    for (offset, len) in [(0, 9), (8, 1), (3, 6), (usize::MAX, 2), (1, usize::MAX)] {
        let err = cpu.view(&buf, offset, len).unwrap_err();
        assert!(matches!(err, CpuError::Length { len: 8, .. }), "{err}");
        assert!(err.to_string().contains("8 entries"), "{err}");
        assert!(cpu.view_mut(&mut buf, offset, len).is_err());
    }
}

/// Rows gathered from a view of the full batch are those gathered from a
/// buffer; an index past the view's rows is an error.
#[test]
fn gathering_from_a_view_matches_gathering_from_a_buffer() {
    let cpu = Cpu::<f32>::with_threads(1).unwrap();
    let full: Vec<f32> = (0..40).map(|v| v as f32).collect();
    let (mut a, mut b) = (vec![0.0f32; 12], vec![0.0f32; 12]);
    gather_rows(&cpu, &[4, 0, 2], 4, &full[8..28].to_vec(), &mut a).unwrap();
    gather_rows(&cpu, &[4, 0, 2], 4, ViewSource(&full[8..28]), &mut b).unwrap();
    assert_eq!(a, b);
    assert_eq!(&b[..4], &full[24..28]);
    let err = gather_rows(&cpu, &[5], 4, ViewSource(&full[8..28]), &mut b).unwrap_err();
    assert!(matches!(err, Error::Shape(ShapeError::IndexOutOfRange { index: 5, len: 5, .. })), "{err}");
}

fn small_layer() -> impl Strategy<Value = Layer> {
    prop_oneof![
        (1usize..4, 1usize..4, 1usize..4, 3usize..6, any::<bool>()).prop_map(|(ci, co, k, hw, b)| Layer::conv2d(Conv2d::new(ci, co, k, [hw, hw]), b)),
        (1usize..6, 1usize..4, 1usize..3, any::<bool>()).prop_map(|(di, dout, t, b)| Layer::linear_tokens(di, dout, t, b)),
    ]
}

proptest! {
    #![proptest_config(Runner { cases: 200, rng_seed: RngSeed::Fixed(0xF206_2026), failure_persistence: None, ..Runner::default() })]

    /// A view of the wrong length (one of weight, grad_weight, bias,
    /// grad_bias, x, y, shorter or longer by up to 3): the step's error
    /// names it, and neither the parameters nor the state change.
    #[test]
    fn wrong_view_lengths_are_named_errors(layer in small_layer(), which in 0usize..6, delta in prop::sample::select(vec![-3isize, -1, 1, 3]), seed in 0u64..100) {
        let (sample, batch) = (2, 3);
        let cpu = Cpu::<f64>::with_threads(1).unwrap();
        let cfg = Config { sample_size: Some(sample), ..Config::default() };
        let d = StepData::random(&mut Rng(seed), &layer, sample, batch);
        let mut state = ParamState::for_layer(&cpu, &layer, &cfg).unwrap();
        let mut ws = Workspace::new(&cpu, WorkspaceReq::new(&cpu, &layer, sample).unwrap()).unwrap();
        let names = ["weight", "grad_weight", "bias", "grad_bias", "x", "y"];
        let resize = |k: usize, v: &[f64]| {
            let mut v = v.to_vec();
            if k == which {
                v.resize(v.len().saturating_add_signed(delta), 0.5);
            }
            v
        };
        let (mut w, gw, x, y) = (resize(0, &d.weight), resize(1, &d.grad_weight), resize(4, &d.x), resize(5, &d.y));
        let mut b = d.bias.as_deref().map(|b| resize(2, b));
        let gb = d.grad_bias.as_deref().map(|g| resize(3, g));
        let before = (w.clone(), b.clone());
        let bias = b.as_deref_mut().zip(gb.as_deref());
        let params = ViewParams { weight: &mut w[..], grad_weight: &gw[..], bias };
        let batch_views = ViewBatch { x: &x[..], y: &y[..], sample, batch_size: batch };
        let res = frog_step(&cpu, &cfg, &layer, &mut state, &mut ws, params, batch_views, Unguarded);
        if (which == 2 || which == 3) && !layer.bias {
            prop_assert!(res.is_ok(), "{res:?}");
        } else {
            let err = res.unwrap_err();
            prop_assert!(matches!(err, Error::Shape(ShapeError::BufferLength { what, .. }) if what == names[which]), "{err}");
            prop_assert_eq!((w, b), before);
            prop_assert_eq!(state.steps(), 0);
        }
    }
}
