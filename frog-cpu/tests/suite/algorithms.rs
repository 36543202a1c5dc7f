//! frog-cpu's algorithms against the direct one, through the `Backend`
//! API. The Winograd F(2x2, 3x3) patch products: random shapes with odd
//! sizes, padding 0 to 2 and several channel counts, in f64 and f32; the
//! f32 accuracy on a ResNet-18-sized layer; forcing Winograd where it does
//! not apply. The Gram CG: whole steps on random layers, in f64 and f32,
//! and its f32 accuracy on a ResNet-18-sized layer. The automatic choice.

use crate::common::{Rng, StepData};
use frog_core::{frog_step, Backend, BackendError, BackendErrorKind, Batch, Config, Conv2d, Layer, ParamState, Params, Patches, Unguarded, Workspace, WorkspaceReq};
use frog_cpu::{Algorithm, Cpu, CpuError, Real};

/// The outputs of every product of one layer on one backend, in f64.
struct Products {
    norms: Vec<f64>,
    u: Vec<f64>,
    g: Vec<f64>,
    /// `fisher_matvec` (the scaled, accumulating pair).
    matvec: Vec<f64>,
}

fn upload<T: Real>(cpu: &Cpu<T>, v: &[f64]) -> Vec<T> {
    let mut buf = cpu.zeros(v.len()).unwrap();
    cpu.write(&v.iter().map(|&x| T::of_f64(x)).collect::<Vec<_>>(), &mut buf, 0).unwrap();
    buf
}

fn host<T: Real>(v: &[T]) -> Vec<f64> {
    v.iter().map(|x| x.as_f64()).collect()
}

/// Inputs of the products: `x`, `v` (`R x D'`), `u` and `lambda` (`N x R`).
struct Inputs {
    x: Vec<f64>,
    v: Vec<f64>,
    u: Vec<f64>,
    lambda: Vec<f64>,
}

impl Inputs {
    fn random(rng: &mut Rng, layer: &Layer, r: usize) -> Self {
        let n = r * layer.positions() * layer.rows();
        Self {
            x: rng.vec(r * layer.input_len()),
            v: rng.vec(layer.rows() * layer.cols()),
            u: rng.vec(n),
            lambda: (0..n).map(|_| rng.uniform(0.0, 2.0)).collect(),
        }
    }
}

fn products<T: Real>(cpu: &Cpu<T>, layer: &Layer, r: usize, inp: &Inputs) -> Products {
    let (rows, cols, n) = (layer.rows(), layer.cols(), r * layer.positions());
    let x = upload(cpu, &inp.x);
    let mut packed = cpu.zeros(cpu.patch_scratch_len(layer, r)).unwrap();
    cpu.pack_patches(layer, r, &&x[..], &mut packed).unwrap();
    let mut scratch = cpu.zeros(cpu.product_scratch_len(layer, r)).unwrap();
    let mut p = Patches { layer, r, x: Some(&x[..]), packed: &packed, scratch: &mut scratch };
    let mut norms = cpu.zeros(n).unwrap();
    cpu.patch_sq_norms(&p, &mut norms).unwrap();
    let (v, u_in, lambda) = (upload(cpu, &inp.v), upload(cpu, &inp.u), upload(cpu, &inp.lambda));
    let mut u = cpu.zeros(n * rows).unwrap();
    cpu.project(&mut p, &v, &mut u).unwrap();
    let mut g = cpu.zeros(rows * cols).unwrap();
    cpu.back_project(&mut p, &u_in, &mut g).unwrap();
    let (mut u_scratch, mut matvec) = (cpu.zeros(n * rows).unwrap(), cpu.zeros(rows * cols).unwrap());
    cpu.fisher_matvec(&mut p, &lambda, T::of_f64(0.25), &v, &mut u_scratch, &mut matvec).unwrap();
    Products { norms: host(&norms), u: host(&u), g: host(&g), matvec: host(&matvec) }
}

/// Max-norm relative error.
fn rel(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(0.0f64, |m, v| m.max(v.abs())).max(f64::MIN_POSITIVE);
    a.iter().zip(b).fold(0.0f64, |m, (x, y)| m.max((x - y).abs())) / scale
}

fn compare<T: Real>(layer: &Layer, r: usize, inp: &Inputs, tol: f64) {
    let direct = products(&Cpu::<T>::with_threads(2).unwrap().with_algorithm(Some(Algorithm::Direct)), layer, r, inp);
    let wino = products(&Cpu::<T>::with_threads(2).unwrap().with_algorithm(Some(Algorithm::Winograd)), layer, r, inp);
    for (what, a, b) in [("norms", &wino.norms, &direct.norms), ("U", &wino.u, &direct.u), ("G", &wino.g, &direct.g), ("matvec", &wino.matvec, &direct.matvec)] {
        let e = rel(a, b);
        assert!(e < tol, "{}: {what} relative error {e:.2e} (r {r}, {layer:?})", std::any::type_name::<T>());
    }
}

#[test]
fn winograd_products_match_direct_on_random_shapes() {
    let mut rng = Rng(5);
    let mut shapes = vec![
        (Conv2d::new(1, 1, 3, [3, 3]), false, 1),
        (Conv2d::new(3, 5, 3, [7, 9]).padding(1), true, 3),
        (Conv2d::new(5, 4, 3, [6, 5]).padding(2), false, 2),
        (Conv2d::new(16, 8, 3, [8, 8]).padding(1), true, 2),
        (Conv2d::new(4, 17, 3, [5, 11]).padding([0, 2]), false, 1),
        (Conv2d::new(2, 3, 3, [3, 4]).padding([2, 1]), true, 4),
        // Rows wider than one run of the squared norms' channel sums.
        (Conv2d::new(2, 3, 3, [4, 131]).padding([1, 2]), true, 1),
    ];
    for _ in 0..8 {
        let conv = Conv2d::new(rng.int(1, 12), rng.int(1, 12), 3, [rng.int(3, 13), rng.int(3, 13)]).padding([rng.int(0, 2), rng.int(0, 2)]);
        shapes.push((conv, rng.int(0, 1) == 1, rng.int(1, 4)));
    }
    for (conv, bias, r) in shapes {
        let layer = Layer::conv2d(conv, bias);
        let inp = Inputs::random(&mut rng, &layer, r);
        compare::<f64>(&layer, r, &inp, 1e-13);
        compare::<f32>(&layer, r, &inp, 2e-6);
    }
}

/// The f32 results of both algorithms against an f64 reference on the
/// ResNet-18 `l1.conv` shape at r = 64: Winograd's error stays within 2x
/// the direct path's.
#[test]
fn winograd_f32_error_on_a_resnet_layer_is_within_twice_direct() {
    let (layer, r) = (Layer::conv2d(Conv2d::new(64, 64, 3, [32, 32]).padding(1), false), 64);
    let mut rng = Rng(9);
    let inp = Inputs::random(&mut rng, &layer, r);
    let reference = products(&Cpu::<f64>::with_threads(2).unwrap().with_algorithm(Some(Algorithm::Direct)), &layer, r, &inp);
    let direct = products(&Cpu::<f32>::with_threads(2).unwrap().with_algorithm(Some(Algorithm::Direct)), &layer, r, &inp);
    let wino = products(&Cpu::<f32>::with_threads(2).unwrap().with_algorithm(Some(Algorithm::Winograd)), &layer, r, &inp);
    for (what, w, d, want) in [("U", &wino.u, &direct.u, &reference.u), ("G", &wino.g, &direct.g, &reference.g), ("matvec", &wino.matvec, &direct.matvec, &reference.matvec)] {
        let (ew, ed) = (rel(w, want), rel(d, want));
        println!("{what}: f32 Winograd error {ew:.3e}, f32 direct {ed:.3e}, ratio {:.2}", ew / ed);
        assert!(ew <= 2.0 * ed, "{what}: f32 Winograd error {ew:.3e} > 2x direct {ed:.3e}");
    }
}

#[test]
fn the_automatic_choice_is_winograd_for_wide_3x3_stride_1_layers_only() {
    let cpu = Cpu::<f32>::with_threads(1).unwrap();
    let wide = Conv2d::new(64, 64, 3, [32, 32]).padding(1);
    assert_eq!(cpu.algorithm(&Layer::conv2d(wide, false), 64).unwrap(), Algorithm::Winograd);
    for other in [wide.stride(2), wide.dilation(2), Conv2d::new(64, 64, 1, [32, 32]), Conv2d::new(3, 64, 3, [32, 32]).padding(1)] {
        assert_eq!(cpu.algorithm(&Layer::conv2d(other, false), 64).unwrap(), Algorithm::Direct, "{other:?}");
    }
    assert_eq!(cpu.algorithm(&Layer::linear(64, 10, true), 64).unwrap(), Algorithm::Direct);
}

/// The Gram CG where few patch rows face many columns: ResNet-18's
/// 512-channel 3x3 layer at the bench's 64 samples and the study's 16, its
/// 256-channel one at 8 but not at 16, and no layer at enough samples.
#[test]
fn the_automatic_choice_is_gram_where_patch_rows_are_few() {
    let cpu = Cpu::<f32>::with_threads(1).unwrap();
    let l4 = Layer::conv2d(Conv2d::new(512, 512, 3, [4, 4]).padding(1), false);
    let l3 = Layer::conv2d(Conv2d::new(256, 256, 3, [8, 8]).padding(1), false);
    assert_eq!(cpu.algorithm(&l4, 64).unwrap(), Algorithm::Gram);
    assert_eq!(cpu.algorithm(&l4, 16).unwrap(), Algorithm::Gram);
    assert_eq!(cpu.algorithm(&l4, 1024).unwrap(), Algorithm::Winograd);
    assert_eq!(cpu.algorithm(&l3, 8).unwrap(), Algorithm::Gram);
    assert_eq!(cpu.algorithm(&l3, 16).unwrap(), Algorithm::Winograd);
    assert_eq!(cpu.algorithm(&Layer::linear(512, 10, true), 16).unwrap(), Algorithm::Gram);
    assert_eq!(cpu.algorithm(&Layer::linear(512, 10, true), 4096).unwrap(), Algorithm::Direct);
}

/// Forcing Winograd on a layer it cannot run is an error value from the
/// step (and from `pack_patches`), never a panic, and changes nothing.
#[test]
fn forcing_winograd_where_it_does_not_apply_is_an_error() {
    let cpu = Cpu::<f64>::with_threads(2).unwrap().with_algorithm(Some(Algorithm::Winograd));
    let base = Conv2d::new(4, 6, 3, [8, 8]).padding(1);
    let layers = [
        Layer::conv2d(base.stride(2), false),
        Layer::conv2d(base.dilation(2).padding(2), false),
        Layer::conv2d(Conv2d::new(4, 6, 1, [8, 8]), false),
        Layer::conv2d(Conv2d::new(4, 6, [3, 5], [8, 8]), false),
        Layer::linear(20, 7, true),
    ];
    let cfg = Config { sample_size: Some(2), ..Config::default() };
    let mut rng = Rng(3);
    for layer in layers {
        let err = cpu.algorithm(&layer, 2).unwrap_err();
        assert!(matches!(err, CpuError::Algorithm { algorithm: Algorithm::Winograd, .. }), "{err:?}");
        assert_eq!(err.kind(), BackendErrorKind::Unsupported);
        assert!(err.to_string().contains("Winograd"), "{err}");
        let data = StepData::random(&mut rng, &layer, 2, 4);
        let mut state = ParamState::for_layer(&cpu, &layer, &cfg).unwrap();
        let mut ws = Workspace::new(&cpu, WorkspaceReq::new(&cpu, &layer, 2).unwrap()).unwrap();
        let (mut weight, mut bias) = (data.weight.clone(), data.bias.clone());
        let params = Params { weight: &mut weight, grad_weight: &data.grad_weight, bias: bias.as_mut().zip(data.grad_bias.as_ref()) };
        let batch = Batch { x: &data.x, y: &data.y, sample: 2, batch_size: 4 };
        let got = frog_step(&cpu, &cfg, &layer, &mut state, &mut ws, params, batch, Unguarded);
        assert!(matches!(got, Err(frog_core::Error::Backend(CpuError::Algorithm { .. }))), "{layer:?}: {:?}", got.err());
        assert_eq!(weight, data.weight, "a failed step leaves the weight alone");
    }
}

/// One FROG step of `layer` from fresh state on `cpu` (the data in f64,
/// converted), with `iters` CG iterations: the direction `z`, in f64.
fn direction<T: Real>(cpu: &Cpu<T>, layer: &Layer, d: &StepData, iters: usize) -> Vec<f64> {
    let cfg = Config { num_iters: iters, tau: 0.05, sample_size: Some(d.sample), ..Config::default() };
    let mut state = ParamState::for_layer(cpu, layer, &cfg).unwrap();
    let mut ws = Workspace::new(cpu, WorkspaceReq::new(cpu, layer, d.sample).unwrap()).unwrap();
    let (mut w, gw, x, y) = (upload(cpu, &d.weight), upload(cpu, &d.grad_weight), upload(cpu, &d.x), upload(cpu, &d.y));
    let mut bias = d.bias.as_ref().map(|b| upload(cpu, b)).zip(d.grad_bias.as_ref().map(|g| upload(cpu, g)));
    let params = Params { weight: &mut w, grad_weight: &gw, bias: bias.as_mut().map(|(b, g)| (b, &*g)) };
    frog_step(cpu, &cfg, layer, &mut state, &mut ws, params, Batch { x: &x, y: &y, sample: d.sample, batch_size: d.batch }, Unguarded).unwrap();
    host(&ws.direction()[..layer.rows() * layer.cols()])
}

fn forced<T: Real>(algorithm: Algorithm) -> Cpu<T> {
    Cpu::<T>::with_threads(2).unwrap().with_algorithm(Some(algorithm))
}

/// The Gram CG's direction equals the direct CG's on random convolutions
/// and linear layers (with and without bias, tokens, several iteration
/// counts, one iteration taking the direct path), in f64 and f32.
#[test]
fn gram_steps_match_direct_on_random_layers() {
    let mut rng = Rng(11);
    let mut layers = vec![
        (Layer::linear(40, 7, true), 3),
        (Layer::linear_tokens(9, 5, 4, false), 2),
        (Layer::conv2d(Conv2d::new(6, 5, 3, [5, 4]).padding(1), true), 2),
        (Layer::conv2d(Conv2d::new(24, 9, 3, [4, 4]).stride(2).padding(1), false), 5),
        (Layer::conv2d(Conv2d::new(64, 48, 3, [4, 4]).padding(1), false), 16),
        (Layer::conv2d(Conv2d::new(5, 4, [5, 3], [6, 5]).padding([4, 1]).dilation([2, 1]), true), 3),
        (Layer::conv2d(Conv2d::new(7, 3, 3, [5, 6]).padding([1, 0]), false), 2),
    ];
    for _ in 0..6 {
        layers.push((Layer::linear(rng.int(1, 60), rng.int(1, 12), rng.int(0, 1) == 1), rng.int(1, 8)));
    }
    for (layer, r) in layers {
        let d = StepData::random(&mut rng, &layer, r, 2 * r);
        for iters in [1, 2, 5] {
            let (f64_direct, f64_gram) = (direction(&forced::<f64>(Algorithm::Direct), &layer, &d, iters), direction(&forced::<f64>(Algorithm::Gram), &layer, &d, iters));
            let e = rel(&f64_gram, &f64_direct);
            assert!(e < 1e-10, "f64: Gram direction off by {e:.2e} (r {r}, {iters} iterations, {layer:?})");
            let f32_gram = direction(&forced::<f32>(Algorithm::Gram), &layer, &d, iters);
            let e = rel(&f32_gram, &f64_direct);
            assert!(e < 1e-4, "f32: Gram direction off by {e:.2e} (r {r}, {iters} iterations, {layer:?})");
        }
    }
}

/// The f32 directions of both CGs against an f64 reference on the
/// ResNet-18 `l4.conv` shape at the study's 16 samples, where the automatic
/// choice is the Gram CG: its error stays within 2x the direct CG's.
#[test]
fn gram_f32_error_on_a_resnet_layer_is_within_twice_direct() {
    let (layer, r) = (Layer::conv2d(Conv2d::new(512, 512, 3, [4, 4]).padding(1), false), 16);
    assert_eq!(Cpu::<f32>::with_threads(1).unwrap().algorithm(&layer, r).unwrap(), Algorithm::Gram);
    let d = StepData::random(&mut Rng(13), &layer, r, 128);
    let reference = direction(&forced::<f64>(Algorithm::Direct), &layer, &d, 4);
    let direct = rel(&direction(&forced::<f32>(Algorithm::Direct), &layer, &d, 4), &reference);
    let gram = rel(&direction(&forced::<f32>(Algorithm::Gram), &layer, &d, 4), &reference);
    println!("l4.conv r 16: f32 Gram error {gram:.3e}, f32 direct {direct:.3e}, ratio {:.2}", gram / direct);
    assert!(gram <= 2.0 * direct, "f32 Gram error {gram:.3e} > 2x direct {direct:.3e}");
}
