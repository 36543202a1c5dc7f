//! Steps on borrowed views on the GPU (run on the emulator in CI; each test
//! prints that it was skipped and passes without a device):
//!
//! - `gpu_view_steps_match_buffer_steps`: FROG steps on views of the
//!   middles of larger buffers give the weights, bias and momentum of steps
//!   on exact buffers bit for bit, in each packed element type, and leave
//!   the rest of the buffers alone.
//! - `gpu_view_optimizer_matches_buffers`: the optimizer object's
//!   steps, with the sample gathered from a view, match its buffer steps.
//! - `gpu_view_errors`: out-of-range views, short views in the kernels and
//!   wrong lengths in a step are errors, and the step changes nothing.
//! - `gpu_views_of_another_backend_are_refused`, as its buffers are.
//! - `nccl::gpu_nccl_*` (`tests/nccl/`): frog-core's collectives over
//!   NCCL on views, one rank.
//!
//! The layers keep `r*L` at most 128, one GEMM K chunk: no split-K, whose
//! atomic sums could differ in the last bit from run to run on a GPU.

#![deny(clippy::undocumented_unsafe_blocks)]

#[allow(dead_code)] // the GEMM tiles are for the product tests
mod common;
mod nccl;

use common::{device, values};
use frog_core::{
    frog_step, gather_rows, Backend, BackendError, BackendErrorKind, Batch, Config, Conv2d, Error as FrogError, GroupId, Layer, Method, Optimizer, ParamGrad, ParamId, ParamState, Params,
    Shape, ShapeError, StepCoefs, Strided, Unguarded, ViewBatch, ViewParamGrad, ViewParams, ViewSource, Workspace, WorkspaceReq,
};
use frog_cuda::{Buffer, Cuda, CudaView, CudaViewMut, Error, Precision};

/// Entries before and after every viewed part of a larger buffer, so that
/// each view starts at a nonzero offset and has neighbours to spoil.
const PAD: usize = 7;

/// A buffer holding `v` at `PAD`, between paddings of other values.
fn padded(cuda: &Cuda, v: &[f32]) -> Buffer {
    let pad = values(PAD, 99);
    cuda.upload(&[&pad[..], v, &pad[..]].concat()).unwrap()
}

/// The part of a padded buffer at `PAD`, after checking that its paddings
/// still hold what [`padded`] put there.
fn middle(cuda: &Cuda, b: &Buffer) -> Vec<f32> {
    let all = cuda.download(b, b.len()).unwrap();
    let (pad, n) = (values(PAD, 99), all.len() - 2 * PAD);
    assert_eq!((&all[..PAD], &all[PAD + n..]), (&pad[..], &pad[..]), "a view step wrote outside its view");
    all[PAD..PAD + n].to_vec()
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// A layer's parameters: exact buffers, or padded ones for views.
struct Weights {
    w: Buffer,
    b: Option<Buffer>,
}

impl Weights {
    fn new(cuda: &Cuda, layer: &Layer, pad: bool) -> Self {
        let up = |v: Vec<f32>| if pad { padded(cuda, &v) } else { cuda.upload(&v).unwrap() };
        Self { w: up(values(layer.rows() * layer.weight_cols(), 1)), b: layer.bias.then(|| up(values(layer.rows(), 2))) }
    }
}

/// Two FROG steps of `layer` (`r` sampled rows of 8) on exact buffers and
/// on views of padded ones (the inputs' view made by `from_raw`): the
/// weights, bias and momentum after each step, bit for bit.
fn steps_agree(cuda: &Cuda, layer: &Layer, r: usize) {
    let cfg = Config { lr: 0.05, momentum: 0.9, weight_decay: 1e-2, sample_size: None, ..Config::default() };
    let (rows, d, batch_size) = (layer.rows(), layer.weight_cols(), 8);
    let (nx, ny) = (r * layer.input_len(), r * layer.output_len());
    let fresh = || (ParamState::for_layer(cuda, layer, &cfg).unwrap(), Workspace::new(cuda, WorkspaceReq::new(cuda, layer, r).unwrap()).unwrap());
    let ((mut state, mut ws), (mut vstate, mut vws)) = (fresh(), fresh());
    let (mut on_buffers, mut on_views) = (Weights::new(cuda, layer, false), Weights::new(cuda, layer, true));
    for t in 0..2 {
        let (gw, gb, x, y) = (values(rows * d, 10 + t), values(rows, 20 + t), values(nx, 30 + t), values(ny, 40 + t));

        let (gwb, gbb, xb, yb) = (cuda.upload(&gw).unwrap(), cuda.upload(&gb).unwrap(), cuda.upload(&x).unwrap(), cuda.upload(&y).unwrap());
        let m = &mut on_buffers;
        let params = Params { weight: &mut m.w, grad_weight: &gwb, bias: m.b.as_mut().map(|b| (b, &gbb)) };
        frog_step(cuda, &cfg, layer, &mut state, &mut ws, params, Batch { x: &xb, y: &yb, sample: r, batch_size }, Unguarded).unwrap();

        let (gwv, gbv, xv, yv) = (padded(cuda, &gw), padded(cuda, &gb), padded(cuda, &x), padded(cuda, &y));
        let m = &mut on_views;
        let weight = cuda.view_mut(&mut m.w, PAD, rows * d).unwrap();
        let bias = m.b.as_mut().map(|b| (cuda.view_mut(b, PAD, rows).unwrap(), cuda.view(&gbv, PAD, rows).unwrap()));
        let params = ViewParams { weight, grad_weight: cuda.view(&gwv, PAD, rows * d).unwrap(), bias };
        // SAFETY: `xv` holds `nx` entries at PAD in this backend's context
        // and outlives the step, whose launches the downloads below wait for.
        let x = unsafe { CudaView::from_raw(cuda, xv.device_ptr() + 4 * PAD as u64, nx) };
        let batch = ViewBatch { x, y: cuda.view(&yv, PAD, ny).unwrap(), sample: r, batch_size };
        frog_step(cuda, &cfg, layer, &mut vstate, &mut vws, params, batch, Unguarded).unwrap();

        let what = format!("{:?}, step {t}", cuda.precision());
        assert_eq!(bits(&middle(cuda, &on_views.w)), bits(&cuda.download(&on_buffers.w, rows * d).unwrap()), "{what}: weight");
        if let (Some(vb), Some(b)) = (&on_views.b, &on_buffers.b) {
            assert_eq!(bits(&middle(cuda, vb)), bits(&cuda.download(b, rows).unwrap()), "{what}: bias");
        }
        let momentum = |s: &ParamState<Cuda>| bits(&cuda.download(s.momentum().unwrap(), s.len()).unwrap());
        assert_eq!(momentum(&vstate), momentum(&state), "{what}: momentum");
    }
}

#[test]
fn gpu_view_steps_match_buffer_steps() {
    let Some(mut cuda) = device(Precision::Exact, "gpu_view_steps_match_buffer_steps") else { return };
    let conv = Layer::conv2d(Conv2d::new(3, 5, 3, [6, 6]).padding(1), true);
    let linear = Layer::linear_tokens(9, 6, 4, false);
    // One precision of each packed element type: f32, bf16, f16 patches.
    for precision in [Precision::Exact, Precision::Bf16Split, Precision::F16] {
        cuda.set_precision(precision);
        steps_agree(&cuda, &conv, 3);
        steps_agree(&cuda, &linear, 5);
    }
    println!("gpu_view_steps_match_buffer_steps: conv with bias and linear, 2 steps in 3 precisions, bit for bit on {}", cuda.device_name());
}

const BATCH: usize = 8;

fn opt_conv() -> Layer {
    Layer::conv2d(Conv2d::new(3, 4, 3, [5, 5]).padding(1), true)
}

/// A FROG group with the conv layer and a plain parameter of 6 entries.
fn build(cuda: &Cuda) -> (Optimizer<Cuda, 4>, [ParamId; 2]) {
    let cfg = Config { lr: 0.01, momentum: 0.9, weight_decay: 1e-3, sample_size: Some(3), ..Config::default() };
    let mut opt = Optimizer::new(Method::Frog(cfg), BATCH, 5).unwrap();
    let ids = [opt.add_layer(cuda, "conv", opt_conv(), GroupId::DEFAULT).unwrap(), opt.add_param(cuda, "bn", 6, GroupId::DEFAULT).unwrap()];
    (opt, ids)
}

/// Two optimizer steps through `step_layer`/`step_param` on exact buffers
/// and through the same calls on views of padded buffers, the sample
/// gathered by `gather_rows` from a buffer and from a `ViewSource`: the parameters and
/// the checkpoints agree bit for bit.
#[test]
fn gpu_view_optimizer_matches_buffers() {
    let Some(cuda) = device(Precision::Exact, "gpu_view_optimizer_matches_buffers") else { return };
    let l = opt_conv();
    let (rows, d, (ni, no)) = (l.rows(), l.weight_cols(), (l.input_len(), l.output_len()));
    let ((mut opt, ids), (mut vopt, vids)) = (build(&cuda), build(&cuda));
    let (mut w, mut b, mut p) = (cuda.upload(&values(rows * d, 1)).unwrap(), cuda.upload(&values(rows, 2)).unwrap(), cuda.upload(&values(6, 3)).unwrap());
    let (mut vw, mut vb, mut vp) = (padded(&cuda, &values(rows * d, 1)), padded(&cuda, &values(rows, 2)), padded(&cuda, &values(6, 3)));
    for t in 0..2 {
        let (full_x, full_y) = (values(BATCH * ni, 10 + t), values(BATCH * no, 20 + t));
        let (gw, gb, gp) = (values(rows * d, 30 + t), values(rows, 40 + t), values(6, 50 + t));

        let mut idx = vec![0; opt.sample_rows(BATCH)];
        let sample = opt.sample(BATCH, &mut idx).unwrap();
        let r = sample.len();
        let (mut x, mut y) = (cuda.zeros(r * ni).unwrap(), cuda.zeros(r * no).unwrap());
        gather_rows(&cuda, &sample, ni, &cuda.upload(&full_x).unwrap(), &mut x).unwrap();
        gather_rows(&cuda, &sample, no, &cuda.upload(&full_y).unwrap(), &mut y).unwrap();
        let (gwb, gbb, gpb) = (cuda.upload(&gw).unwrap(), cuda.upload(&gb).unwrap(), cuda.upload(&gp).unwrap());
        let params = Params { weight: &mut w, grad_weight: &gwb, bias: Some((&mut b, &gbb)) };
        opt.step_layer(&cuda, ids[0], params, Some(sample.batch(&x, &y))).unwrap();
        opt.step_param(&cuda, ids[1], ParamGrad { param: &mut p, grad: &gpb }).unwrap();

        let mut vidx = vec![0; vopt.sample_rows(BATCH)];
        let vsample = vopt.sample(BATCH, &mut vidx).unwrap();
        assert_eq!(vsample, sample);
        let (full_xv, full_yv) = (padded(&cuda, &full_x), padded(&cuda, &full_y));
        let (mut xv, mut yv) = (cuda.zeros(r * ni).unwrap(), cuda.zeros(r * no).unwrap());
        gather_rows(&cuda, &vsample, ni, ViewSource(cuda.view(&full_xv, PAD, BATCH * ni).unwrap()), &mut xv).unwrap();
        gather_rows(&cuda, &vsample, no, ViewSource(cuda.view(&full_yv, PAD, BATCH * no).unwrap()), &mut yv).unwrap();
        let (gwv, gbv, gpv) = (padded(&cuda, &gw), padded(&cuda, &gb), padded(&cuda, &gp));
        let bias = Some((cuda.view_mut(&mut vb, PAD, rows).unwrap(), cuda.view(&gbv, PAD, rows).unwrap()));
        let params = ViewParams { weight: cuda.view_mut(&mut vw, PAD, rows * d).unwrap(), grad_weight: cuda.view(&gwv, PAD, rows * d).unwrap(), bias };
        let batch = vsample.view_batch(cuda.view(&xv, 0, r * ni).unwrap(), cuda.view(&yv, 0, r * no).unwrap());
        vopt.step_layer(&cuda, vids[0], params, Some(batch)).unwrap();
        vopt.step_param(&cuda, vids[1], ViewParamGrad { param: cuda.view_mut(&mut vp, PAD, 6).unwrap(), grad: cuda.view(&gpv, PAD, 6).unwrap() }).unwrap();

        for (v, buf, what) in [(&vw, &w, "conv weight"), (&vb, &b, "conv bias"), (&vp, &p, "plain parameter")] {
            assert_eq!(bits(&middle(&cuda, v)), bits(&cuda.download(buf, buf.len()).unwrap()), "step {t}: {what}");
        }
    }
    let checkpoint = |o: &Optimizer<Cuda, 4>| {
        let mut bytes = vec![0; o.checkpoint_len()];
        o.checkpoint(&cuda, &mut bytes).unwrap();
        bytes
    };
    assert_eq!(checkpoint(&vopt), checkpoint(&opt), "the optimizer states differ");
    println!("gpu_view_optimizer_matches_buffers: step_layer and step_param on views match the buffer steps bit for bit on {}", cuda.device_name());
}

/// `r` is the short-buffer error naming `what`.
fn too_short<T: std::fmt::Debug>(r: Result<T, Error>, what: &'static str, needed: usize, len: usize) {
    let e = r.unwrap_err();
    assert_eq!(e, Error::BufferTooShort { what, needed, len });
    assert_eq!(e.kind(), BackendErrorKind::InvalidBuffer);
}

#[test]
fn gpu_view_errors() {
    let Some(cuda) = device(Precision::Exact, "gpu_view_errors") else { return };
    let mut buf = cuda.upload(&values(8, 1)).unwrap();
    too_short(cuda.view(&buf, 5, 4), "view", 9, 8);
    too_short(cuda.view(&buf, usize::MAX, 2), "view", usize::MAX, 8);
    too_short(cuda.view_mut(&mut buf, 1, 8), "view_mut", 9, 8);
    too_short(cuda.view_mut(&mut buf, 2, usize::MAX), "view_mut", usize::MAX, 8);
    assert_eq!(cuda.view_len(&cuda.view(&buf, 8, 0).unwrap()), 0);
    let v = cuda.view(&buf, 3, 5).unwrap();
    assert_eq!((cuda.view_len(&v), v.device_ptr()), (5, buf.device_ptr() + 12));

    // The kernels need as many entries of a view as of a buffer.
    let src = cuda.upload(&values(8, 2)).unwrap();
    let mut dst = cuda.zeros(16).unwrap();
    let x = cuda.view(&src, 2, 6).unwrap();
    let mut y = cuda.view_mut(&mut dst, 4, 6).unwrap();
    assert_eq!(cuda.view_len(&cuda.reborrow(&y)), 6);
    too_short(cuda.axpby(7, 1.0, &x, 0.0, &mut y), "x", 7, 6);
    let x7 = cuda.view(&src, 1, 7).unwrap();
    too_short(cuda.axpby(7, 1.0, &x7, 0.0, &mut y), "y", 7, 6);
    let (scale, z) = (cuda.zeros(3).unwrap(), cuda.zeros(9).unwrap());
    too_short(cuda.row_step(Shape::new(3, 3), &mut y, StepCoefs { decay: 1.0, lr: 0.1 }, &scale, &z, Strided::dense(3)), "w", 9, 6);
    let mut out = cuda.zeros(8).unwrap();
    too_short(cuda.copy_strided(Shape::new(2, 3), &x, Strided { stride: 4, offset: 0 }, &mut out, Strided::dense(3)), "src", 7, 6);
    let layer = Layer::linear(3, 2, false);
    let mut packed = cuda.zeros(cuda.patch_scratch_len(&layer, 2)).unwrap();
    too_short(cuda.pack_patches(&layer, 3, &x, &mut packed), "x", 9, 6);
    cuda.axpby(6, 2.0, &x, 0.0, &mut y).unwrap();
    let want: Vec<f32> = values(8, 2)[2..].iter().map(|v| 2.0 * v).collect();
    assert_eq!(cuda.download(&dst, 16).unwrap()[4..10], want[..]);

    // A step given views of the wrong lengths refuses before any change.
    let layer = Layer::conv2d(Conv2d::new(2, 3, 3, [4, 4]).padding(1), false);
    let (n, r) = (layer.rows() * layer.weight_cols(), 2);
    let cfg = Config { lr: 0.1, momentum: 0.9, sample_size: None, ..Config::default() };
    let mut state = ParamState::for_layer(&cuda, &layer, &cfg).unwrap();
    let mut ws = Workspace::new(&cuda, WorkspaceReq::new(&cuda, &layer, r).unwrap()).unwrap();
    let w0 = values(n, 3);
    let mut w = padded(&cuda, &w0);
    let (g, x, y) = (padded(&cuda, &values(n, 4)), padded(&cuda, &values(r * layer.input_len(), 5)), padded(&cuda, &values(r * layer.output_len(), 6)));
    for (what, wn, xn) in [("weight", n - 1, r * layer.input_len()), ("x", n, r * layer.input_len() + 1)] {
        let params = ViewParams { weight: cuda.view_mut(&mut w, PAD, wn).unwrap(), grad_weight: cuda.view(&g, PAD, n).unwrap(), bias: None };
        let batch = ViewBatch { x: cuda.view(&x, PAD, xn).unwrap(), y: cuda.view(&y, PAD, r * layer.output_len()).unwrap(), sample: r, batch_size: 4 };
        let e = frog_step(&cuda, &cfg, &layer, &mut state, &mut ws, params, batch, Unguarded).unwrap_err();
        let (expected, actual) = if what == "weight" { (n, wn) } else { (xn - 1, xn) };
        assert_eq!(e, FrogError::Shape(ShapeError::BufferLength { what, expected, actual }));
    }
    assert_eq!(state.steps(), 0);
    assert_eq!(middle(&cuda, &w), w0);

    // The plain step as well.
    let (mut opt, ids) = build(&cuda);
    let (mut p, gp) = (cuda.zeros(6).unwrap(), cuda.zeros(6).unwrap());
    let e = opt.step_param(&cuda, ids[1], ViewParamGrad { param: cuda.view_mut(&mut p, 0, 6).unwrap(), grad: cuda.view(&gp, 1, 5).unwrap() }).unwrap_err();
    assert!(matches!(e, FrogError::Param { error: ShapeError::BufferLength { what: "grad", expected: 6, actual: 5 }, .. }), "{e}");
    println!("gpu_view_errors: out-of-range views, short views and wrong lengths are errors on {}", cuda.device_name());
}

/// Views of another backend's memory are refused as its buffers are
/// (`tests/gpu.rs`'s `gpu_buffer_errors`): at the view and at every launch.
#[test]
fn gpu_views_of_another_backend_are_refused() {
    let Some(cuda) = device(Precision::Exact, "gpu_views_of_another_backend_are_refused") else { return };
    let other = Cuda::new(Precision::Exact).unwrap();
    let mut theirs = other.zeros(8).unwrap();
    let mut ours = cuda.zeros(8).unwrap();
    let foreign = |e: Error, what: &'static str| {
        assert_eq!(e, Error::ForeignBuffer { what });
        assert_eq!(e.kind(), BackendErrorKind::DeviceMismatch);
    };
    foreign(cuda.view(&theirs, 0, 8).unwrap_err(), "view");
    foreign(cuda.view_mut(&mut theirs, 0, 8).unwrap_err(), "view_mut");
    let x = other.view(&theirs, 0, 8).unwrap();
    foreign(cuda.axpby(8, 1.0, &x, 0.0, &mut cuda.view_mut(&mut ours, 0, 8).unwrap()).unwrap_err(), "x");
    foreign(cuda.copy_strided(Shape::new(1, 8), &x, Strided::dense(8), &mut ours, Strided::dense(8)).unwrap_err(), "src");
    // SAFETY: `theirs` holds 8 entries in `other`'s context and outlives
    // the view; nothing is launched on it (the check refuses first).
    let mut raw = unsafe { CudaViewMut::from_raw(&other, theirs.device_ptr(), 8) };
    let ours_view = cuda.view(&ours, 0, 8).unwrap();
    foreign(cuda.axpby(8, 1.0, &ours_view, 0.0, &mut raw).unwrap_err(), "y");
    println!("gpu_views_of_another_backend_are_refused: on {}", cuda.device_name());
}
