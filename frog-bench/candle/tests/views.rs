//! Steps on views of a candle user's tensors against the same steps on
//! backend buffers: FROG's step and the optimizer object's, which must
//! agree bit for bit (the view kernels are the buffer kernels' code), and
//! the errors of views of the wrong length or out of range.

use candle_core::{DType, Device, Tensor, Var, WithDType};
use frog_candle::backend::{CandleBackend, CandleError, TensorBuf};
use frog_candle::view::TensorViewMut;
use frog_core::{
    frog_step, gather_rows, Backend, BackendError, BackendErrorKind, Batch, Config, Conv2d, Error, FisherCoefs, FisherOut, GroupId, Layer, Optimizer, ParamGrad, ParamState, Params, Patches, Scalar, SgdConfig,
    Shape, ShapeError, StepCoefs, Strided, Unguarded, ViewBatch, ViewParamGrad, ViewParams, Workspace, WorkspaceReq,
};

/// `n` seeded values in `[-1, 1)` (a 64-bit LCG's top bits).
fn values<T: Scalar>(seed: u64, n: usize) -> Vec<T> {
    let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            T::of_f64((s >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0)
        })
        .collect()
}

fn tensor<T: Scalar + WithDType>(seed: u64, shape: &[usize]) -> Tensor {
    Tensor::from_vec(values::<T>(seed, shape.iter().product()), shape, &Device::Cpu).unwrap()
}

fn entries<T: Scalar + WithDType>(t: &Tensor) -> Vec<T> {
    t.flatten_all().unwrap().to_vec1::<T>().unwrap()
}

fn cfg() -> Config {
    Config { lr: 0.05, momentum: 0.9, weight_decay: 0.01, sample_size: Some(3), ..Config::default() }
}

/// Guard entries on each side of a parameter held in a padded buffer.
const PAD: usize = 2;

/// Where the view side keeps a parameter: each place a writable view writes.
enum Held {
    Var(Var),
    Tensor(Tensor),
    /// The middle of a buffer with [`PAD`] guard entries of 7 on each side.
    Padded(TensorBuf, usize),
}

impl Held {
    fn view<T: Scalar + WithDType>(&mut self, b: &CandleBackend<T>) -> TensorViewMut<'_> {
        match self {
            Self::Var(v) => b.var_view(v).unwrap(),
            Self::Tensor(t) => b.tensor_view_mut(t).unwrap(),
            Self::Padded(buf, len) => b.view_mut(buf, PAD, *len).unwrap(),
        }
    }

    /// The parameter's entries; for a padded one, checks that the guard
    /// entries are untouched.
    fn entries<T: Scalar + WithDType>(&self) -> Vec<T> {
        match self {
            Self::Var(v) => entries(v.as_tensor()),
            Self::Tensor(t) => entries(t),
            Self::Padded(buf, len) => {
                let all = entries::<T>(buf.tensor());
                let guard = [T::of_f64(7.0); PAD];
                assert!(all[..PAD] == guard && all[PAD + len..] == guard, "a write left its view");
                all[PAD..PAD + len].to_vec()
            }
        }
    }
}

/// How the view side keeps a parameter of initial value `t`.
#[derive(Clone, Copy)]
enum Kind {
    Var,
    Tensor,
    Padded,
}

fn held<T: Scalar + WithDType>(b: &CandleBackend<T>, kind: Kind, t: &Tensor) -> Held {
    match kind {
        Kind::Var => Held::Var(Var::from_tensor(t).unwrap()),
        Kind::Tensor => Held::Tensor(t.clone()),
        Kind::Padded => {
            let guard = Tensor::full(T::of_f64(7.0), PAD, &Device::Cpu).unwrap();
            let buf = b.buffer(&Tensor::cat(&[&guard, &t.flatten_all().unwrap(), &guard], 0).unwrap()).unwrap();
            Held::Padded(buf, t.elem_count())
        }
    }
}

/// Two FROG steps of `layer` (weight of `shape`, a bias, kept as `kinds`)
/// on views and on buffers, from the same data: every result must agree
/// exactly.
fn views_match_buffers<T: Scalar + WithDType>(layer: Layer, shape: &[usize], x_shape: &[usize], y_shape: &[usize], kinds: (Kind, Kind)) {
    let b = CandleBackend::<T>::new(Device::Cpu);
    let (cfg, r, batch) = (cfg(), x_shape[0], 8);
    let rows = layer.rows();
    let (w0, b0) = (tensor::<T>(1, shape), tensor::<T>(2, &[rows]));
    let (mut wb, mut bb) = (b.buffer(&w0).unwrap(), b.buffer(&b0).unwrap());
    let (mut wv, mut bv) = (held(&b, kinds.0, &w0), held(&b, kinds.1, &b0));
    let new_state = || ParamState::for_layer(&b, &layer, &cfg).unwrap();
    let new_ws = || Workspace::new(&b, WorkspaceReq::new(&b, &layer, r).unwrap()).unwrap();
    let (mut state_b, mut state_v, mut ws_b, mut ws_v) = (new_state(), new_state(), new_ws(), new_ws());
    for step in 0..2 {
        let seed = 10 * (step + 1);
        let (gw, gb, x, y) = (tensor::<T>(seed, shape), tensor::<T>(seed + 1, &[rows]), tensor::<T>(seed + 2, x_shape), tensor::<T>(seed + 3, y_shape));

        let (gwb, gbb, xb, yb) = (b.buffer(&gw).unwrap(), b.buffer(&gb).unwrap(), b.buffer(&x).unwrap(), b.buffer(&y).unwrap());
        let params = Params { weight: &mut wb, grad_weight: &gwb, bias: Some((&mut bb, &gbb)) };
        let batch_b = Batch { x: &xb, y: &yb, sample: r, batch_size: batch };
        frog_step(&b, &cfg, &layer, &mut state_b, &mut ws_b, params, batch_b, Unguarded).unwrap();

        let params = ViewParams { weight: wv.view(&b), grad_weight: b.tensor_view(&gw).unwrap(), bias: Some((bv.view(&b), b.tensor_view(&gb).unwrap())) };
        let batch_v = ViewBatch { x: b.tensor_view(&x).unwrap(), y: b.tensor_view(&y).unwrap(), sample: r, batch_size: batch };
        frog_step(&b, &cfg, &layer, &mut state_v, &mut ws_v, params, batch_v, Unguarded).unwrap();

        let at = |what: &str| format!("{what} after step {} in {}", step + 1, std::any::type_name::<T>());
        assert!(wv.entries::<T>() == entries::<T>(wb.tensor()), "{}", at("weight"));
        assert!(bv.entries::<T>() == entries::<T>(bb.tensor()), "{}", at("bias"));
        let buf = |buf: &TensorBuf| entries::<T>(buf.tensor());
        assert!(buf(state_v.momentum().unwrap()) == buf(state_b.momentum().unwrap()), "{}", at("momentum"));
        for (name, v, bf) in [("trace", ws_v.trace(), ws_b.trace()), ("direction", ws_v.direction(), ws_b.direction()), ("row scale", ws_v.row_scale(), ws_b.row_scale())] {
            assert!(buf(v) == buf(bf), "{}", at(name));
        }
    }
    // The step moved the parameters: the comparison was not of two no-ops.
    assert!(wv.entries::<T>() != entries::<T>(&w0));
}

fn conv() -> Layer {
    Layer::conv2d(Conv2d::new(3, 4, [3, 2], [6, 5]).stride([2, 1]).padding([1, 0]), true)
}

fn both_layers<T: Scalar + WithDType>() {
    // Conv 3 -> 4, kernel 3x2, stride (2, 1), padding (1, 0) on 6x5: 3x4 outputs.
    views_match_buffers::<T>(conv(), &[4, 3, 3, 2], &[3, 3, 6, 5], &[3, 4, 3, 4], (Kind::Var, Kind::Tensor));
    views_match_buffers::<T>(Layer::linear(7, 5, true), &[5, 7], &[3, 7], &[3, 5], (Kind::Padded, Kind::Var));
}

#[test]
fn frog_steps_on_views_equal_steps_on_buffers_f64() {
    both_layers::<f64>();
}

#[test]
fn frog_steps_on_views_equal_steps_on_buffers_f32() {
    both_layers::<f32>();
}

/// The optimizer's view steps against its buffer steps, two steps of a FROG
/// group (a conv layer and a plain parameter) and of a Nesterov SGD group
/// (a linear layer and a plain parameter), the view side's parameters held
/// as the model's `Var`s and tensors, its sampled rows selected from the
/// full batch by candle.
#[test]
fn optimizer_view_steps_equal_buffer_steps() {
    type B = CandleBackend<f64>;
    let b = B::new(Device::Cpu);
    let batch = 5;
    let sgd = SgdConfig { lr: 0.1, momentum: 0.9, weight_decay: 0.01, nesterov: true, ..SgdConfig::default() };
    let (conv, linear) = (conv(), Layer::linear(7, 5, true));
    let new_opt = || {
        let mut opt = Optimizer::<B, 8>::new(cfg(), batch, 3).unwrap();
        let g = opt.add_group(sgd).unwrap();
        let ids = [
            opt.add_layer(&b, "conv", conv, GroupId::DEFAULT).unwrap(),
            opt.add_param(&b, "gain", 6, GroupId::DEFAULT).unwrap(),
            opt.add_layer(&b, "linear", linear, g).unwrap(),
            opt.add_param(&b, "offset", 6, g).unwrap(),
        ];
        (opt, ids)
    };
    let ((mut ob, ids), (mut ov, view_ids)) = (new_opt(), new_opt());
    // (weight shape, per-sample input and output shapes) of the two layers.
    let layers = [(conv, vec![4, 3, 3, 2], vec![3, 6, 5], vec![4, 3, 4]), (linear, vec![5, 7], vec![7], vec![5])];
    let init = |seed| (tensor::<f64>(seed, &layers[0].1), tensor::<f64>(seed + 1, &[4]), tensor::<f64>(seed + 2, &layers[1].1), tensor::<f64>(seed + 3, &[5]));
    let (w0, b0, w1, b1) = init(1);
    let (p0, p1) = (tensor::<f64>(5, &[2, 3]), tensor::<f64>(6, &[6]));
    let mut bufs: Vec<TensorBuf> = [&w0, &b0, &w1, &b1, &p0, &p1].iter().map(|t| b.buffer(t).unwrap()).collect();
    let (vw0, vw1, vp0) = (Var::from_tensor(&w0).unwrap(), Var::from_tensor(&w1).unwrap(), Var::from_tensor(&p0).unwrap());
    let (mut vb0, mut vb1, mut vp1) = (b0.clone(), b1.clone(), p1.clone());
    let mut sample = [0; 5];
    for step in 0..2u64 {
        let (gw0, gb0, gw1, gb1) = init(10 * (step + 1));
        let (gp0, gp1) = (tensor::<f64>(10 * step + 15, &[2, 3]), tensor::<f64>(10 * step + 16, &[6]));
        let full = |seed, per: &[usize]| tensor::<f64>(seed, &[&[batch][..], per].concat());
        let (x, y) = (full(10 * step + 17, &layers[0].2), full(10 * step + 18, &layers[0].3));
        let rows = ob.sample(batch, &mut sample).unwrap().to_vec();
        assert_eq!(ov.sample(batch, &mut sample).unwrap().indices(), rows, "both optimizers draw the same sample");
        assert!(rows.len() < batch, "the sample is a strict subset of the batch");

        // Buffers: copies of everything, the sampled rows gathered by FROG.
        let g: Vec<TensorBuf> = [&gw0, &gb0, &gw1, &gb1, &gp0, &gp1].iter().map(|t| b.buffer(t).unwrap()).collect();
        let gather = |full: &Tensor, row_len| {
            let mut dst = b.zeros(rows.len() * row_len).unwrap();
            gather_rows(&b, &rows, row_len, &b.buffer(full).unwrap(), &mut dst).unwrap();
            dst
        };
        let (xs, ys) = (gather(&x, conv.input_len()), gather(&y, conv.output_len()));
        let [w0b, b0b, w1b, b1b, p0b, p1b] = &mut bufs[..] else { unreachable!() };
        let frog_batch = Batch { x: &xs, y: &ys, sample: rows.len(), batch_size: batch };
        ob.step_layer(&b, ids[0], Params { weight: w0b, grad_weight: &g[0], bias: Some((b0b, &g[1])) }, Some(frog_batch)).unwrap();
        ob.step_param(&b, ids[1], ParamGrad { param: p0b, grad: &g[4] }).unwrap();
        ob.step_layer(&b, ids[2], Params { weight: w1b, grad_weight: &g[2], bias: Some((b1b, &g[3])) }, None::<Batch<_>>).unwrap();
        ob.step_param(&b, ids[3], ParamGrad { param: p1b, grad: &g[5] }).unwrap();

        // Views: the model's tensors, the sampled rows picked by candle.
        let idx = Tensor::from_vec(rows.iter().map(|&r| r as u32).collect::<Vec<_>>(), rows.len(), &Device::Cpu).unwrap();
        let (xs, ys) = (x.index_select(&idx, 0).unwrap(), y.index_select(&idx, 0).unwrap());
        let view = |t| b.tensor_view(t).unwrap();
        let frog_batch = ViewBatch { x: view(&xs), y: view(&ys), sample: rows.len(), batch_size: batch };
        let params = ViewParams { weight: b.var_view(&vw0).unwrap(), grad_weight: view(&gw0), bias: Some((b.tensor_view_mut(&mut vb0).unwrap(), view(&gb0))) };
        ov.step_layer(&b, view_ids[0], params, Some(frog_batch)).unwrap();
        ov.step_param(&b, view_ids[1], ViewParamGrad { param: b.var_view(&vp0).unwrap(), grad: view(&gp0) }).unwrap();
        let params = ViewParams { weight: b.var_view(&vw1).unwrap(), grad_weight: view(&gw1), bias: Some((b.tensor_view_mut(&mut vb1).unwrap(), view(&gb1))) };
        ov.step_layer(&b, view_ids[2], params, None::<ViewBatch<_>>).unwrap();
        ov.step_param(&b, view_ids[3], ViewParamGrad { param: b.tensor_view_mut(&mut vp1).unwrap(), grad: view(&gp1) }).unwrap();

        let views = [vw0.as_tensor(), &vb0, vw1.as_tensor(), &vb1, vp0.as_tensor(), &vp1];
        for (k, (v, buf)) in views.iter().zip(&bufs).enumerate() {
            assert!(entries::<f64>(v) == entries::<f64>(buf.tensor()), "parameter {k} after step {}", step + 1);
        }
    }
    // The user's tensors keep their shapes.
    assert_eq!(vb0.dims(), &[4]);
    assert_eq!(vp1.dims(), &[6]);
    assert!(entries::<f64>(vw0.as_tensor()) != entries::<f64>(&w0));
}

fn length(r: Result<impl Sized, CandleError>) -> (usize, usize) {
    match r {
        Err(CandleError::Length { needed, len, .. }) => (needed, len),
        Err(e) => panic!("expected a length error, got {e}"),
        Ok(_) => panic!("expected a length error, got Ok"),
    }
}

#[test]
fn views_out_of_range_are_errors() {
    let b = CandleBackend::<f64>::new(Device::Cpu);
    let mut buf = b.zeros(6).unwrap();
    assert_eq!(length(b.view(&buf, 3, 4)), (7, 6));
    assert_eq!(length(b.view(&buf, usize::MAX, 2)), (usize::MAX, 6));
    assert_eq!(length(b.view_mut(&mut buf, 7, 0)), (7, 6));
    assert_eq!(b.view_len(&b.view(&buf, 6, 0).unwrap()), 0);
    assert_eq!(b.view_mut_len(&b.view_mut(&mut buf, 1, 5).unwrap()), 5);
    assert_eq!(b.view(&buf, 0, 9).unwrap_err().kind(), BackendErrorKind::InvalidBuffer);

    // A user's tensor of another dtype or device is refused, as by `buffer`.
    let f32s = Tensor::zeros((2, 3), DType::F32, &Device::Cpu).unwrap();
    assert_eq!(b.tensor_view(&f32s).unwrap_err().kind(), BackendErrorKind::DtypeMismatch);
    assert_eq!(b.tensor_view_mut(&mut f32s.clone()).unwrap_err().kind(), BackendErrorKind::DtypeMismatch);
    assert_eq!(b.var_view(&Var::from_tensor(&f32s).unwrap()).unwrap_err().kind(), BackendErrorKind::DtypeMismatch);
}

#[test]
fn view_kernels_reject_short_views_and_change_nothing() {
    let b = CandleBackend::<f64>::new(Device::Cpu);
    let (four, five) = (tensor::<f64>(1, &[4]), tensor::<f64>(2, &[5]));
    let var = Var::from_tensor(&five).unwrap();
    let mut t = five.clone();
    let (x4, x5) = (b.tensor_view(&four).unwrap(), b.tensor_view(&five).unwrap());
    assert_eq!(length(b.axpby(5, 1.0, &x4, 0.5, &mut b.var_view(&var).unwrap())), (5, 4));
    assert_eq!(length(b.axpby(5, 1.0, &x5, 0.0, &mut b.tensor_view_mut(&mut t.narrow(0, 0, 4).unwrap()).unwrap())), (5, 4));
    let mut dst = b.zeros(8).unwrap();
    assert_eq!(length(b.copy_strided(Shape::new(2, 2), &x4, Strided { stride: 3, offset: 0 }, &mut dst, Strided::dense(2))), (5, 4));
    let (scale, z) = (b.zeros(2).unwrap(), b.zeros(6).unwrap());
    assert_eq!(length(b.row_step(Shape::new(2, 3), &mut b.tensor_view_mut(&mut t).unwrap(), StepCoefs { decay: 1.0, lr: 0.1 }, &scale, &z, Strided::dense(3))), (6, 5));

    let layer = Layer::linear(2, 3, false);
    let mut packed = b.zeros(b.patch_scratch_len(&layer, 3)).unwrap();
    assert_eq!(length(b.pack_patches(&layer, 3, &x4, &mut packed)), (6, 4));
    let (norms, mut trace, mut lambda) = (b.zeros(3).unwrap(), b.zeros(3).unwrap(), b.zeros(9).unwrap());
    let mut scratch = b.zeros(b.product_scratch_len(&layer, 3)).unwrap();
    let p = Patches { layer: &layer, r: 3, x: None, packed: &packed, scratch: &mut scratch };
    assert_eq!(length(b.fisher_weights(&p, &x5, &norms, FisherCoefs { scale: 1.0, eps: 1e-10 }, FisherOut { trace: &mut trace, lambda: &mut lambda })), (9, 5));
    assert!(entries::<f64>(var.as_tensor()) == entries::<f64>(&five) && entries::<f64>(&t) == entries::<f64>(&five), "a failed kernel changed its parameter");
}

fn shape(r: Result<(), Error<CandleError>>) -> ShapeError {
    match r {
        Err(Error::Shape(e) | Error::Param { error: e, .. }) => e,
        other => panic!("expected a shape error, got {other:?}"),
    }
}

/// A step's views of the wrong length are shape errors, caught before
/// anything changes.
#[test]
fn steps_on_views_of_the_wrong_length_are_errors() {
    let b = CandleBackend::<f64>::new(Device::Cpu);
    let (layer, cfg) = (Layer::linear(3, 2, false), cfg());
    let mut state = ParamState::for_layer(&b, &layer, &cfg).unwrap();
    let mut ws = Workspace::new(&b, WorkspaceReq::new(&b, &layer, 2).unwrap()).unwrap();
    let (w, g, short) = (Var::from_tensor(&tensor::<f64>(1, &[2, 3])).unwrap(), tensor::<f64>(2, &[2, 3]), tensor::<f64>(3, &[5]));
    let (x, y) = (tensor::<f64>(4, &[2, 3]), tensor::<f64>(5, &[2, 2]));
    let step = |grad: &Tensor, x: &Tensor, state: &mut ParamState<_>, ws: &mut Workspace<_>| {
        let params = ViewParams { weight: b.var_view(&w).unwrap(), grad_weight: b.tensor_view(grad).unwrap(), bias: None };
        frog_step(&b, &cfg, &layer, state, ws, params, ViewBatch { x: b.tensor_view(x).unwrap(), y: b.tensor_view(&y).unwrap(), sample: 2, batch_size: 4 }, Unguarded)
    };
    let before = entries::<f64>(w.as_tensor());
    assert_eq!(shape(step(&short, &x, &mut state, &mut ws)), ShapeError::BufferLength { what: "grad_weight", expected: 6, actual: 5 });
    assert_eq!(shape(step(&g, &short, &mut state, &mut ws)), ShapeError::BufferLength { what: "x", expected: 6, actual: 5 });
    assert_eq!((state.steps(), entries::<f64>(w.as_tensor())), (0, before), "a rejected step changed something");
    step(&g, &x, &mut state, &mut ws).unwrap();
    assert_eq!(state.steps(), 1);

    let mut opt = Optimizer::<CandleBackend<f64>, 2>::new(cfg, 4, 1).unwrap();
    let id = opt.add_param(&b, "p", 6, GroupId::DEFAULT).unwrap();
    let r = opt.step_param(&b, id, ViewParamGrad { param: b.var_view(&w).unwrap(), grad: b.tensor_view(&short).unwrap() });
    assert_eq!(shape(r), ShapeError::BufferLength { what: "grad", expected: 6, actual: 5 });
}
