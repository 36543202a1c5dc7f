//! The host route (`frog_cpu::host`): one step of every golden layer case
//! through it equals frog-core's direct `frog_step` in f32, from
//! the whole batch's rows and from rows gathered by the caller; and slices
//! of the wrong length are errors that name the layer or parameter and
//! change nothing.

use frog_core::{frog_step, Batch, Config, GroupId, Layer, Method, ParamState, Params, Unguarded, Workspace, WorkspaceReq};
use frog_cpu::golden::{golden_dir, load_cases, Case, Target};
use frog_cpu::host::{HostError, HostFrog, LayerSlices, ParamSlices, Rows, WeightLayout};
use frog_cpu::Cpu;

fn f32s(v: &[f64]) -> Vec<f32> {
    v.iter().map(|&x| x as f32).collect()
}

/// Weight and bias after the case's first step through frog-core's
/// `frog_step` on buffers.
fn direct(cpu: &Cpu<f32>, case: &Case, layer: &Layer) -> (Vec<f32>, Option<Vec<f32>>) {
    let step = &case.steps[0];
    let mut state = ParamState::for_layer(cpu, layer, &case.config).unwrap();
    let mut ws = Workspace::new(cpu, WorkspaceReq::new(cpu, layer, case.sample_size).unwrap()).unwrap();
    let (mut w, mut b) = (f32s(&case.weight), case.bias.as_deref().map(f32s));
    let (gw, gb) = (f32s(&step.grad_weight), step.grad_bias.as_deref().map(f32s));
    let (x, y) = (f32s(&step.x), f32s(&step.y));
    let params = Params { weight: &mut w, grad_weight: &gw, bias: b.as_mut().zip(gb.as_ref()) };
    let batch = Batch { x: &x, y: &y, sample: case.sample_size, batch_size: case.batch_size };
    frog_step(cpu, &case.config, layer, &mut state, &mut ws, params, batch, Unguarded).unwrap();
    (w, b)
}

/// The case's first step through the host route: with `whole_batch`, the
/// case's sampled rows are placed at the drawn sample's positions of a
/// whole batch whose other rows are garbage, and the route gathers them.
fn hosted(cpu: &Cpu<f32>, case: &Case, layer: &Layer, whole_batch: bool) -> (Vec<f32>, Option<Vec<f32>>) {
    let step = &case.steps[0];
    // The cases give their sample size beside the settings, which leave it unset.
    let cfg = Config { sample_size: Some(case.sample_size), ..case.config };
    let mut frog = HostFrog::new(cpu.clone(), Method::Frog(cfg), case.batch_size, 7).unwrap();
    frog.add_layer(&case.name, *layer, GroupId::DEFAULT).unwrap();
    let sample = frog.sample(case.batch_size).unwrap().to_vec();
    assert_eq!(sample.len(), case.sample_size, "{}", case.name);
    let (mut w, mut b) = (f32s(&case.weight), case.bias.as_deref().map(f32s));
    let (gw, gb) = (f32s(&step.grad_weight), step.grad_bias.as_deref().map(f32s));
    let (x, y) = (f32s(&step.x), f32s(&step.y));
    let spread = |rows: &[f32], len: usize| {
        let mut full = vec![1e30f32; case.batch_size * len];
        for (k, &i) in sample.iter().enumerate() {
            full[i * len..(i + 1) * len].copy_from_slice(&rows[k * len..(k + 1) * len]);
        }
        full
    };
    let (fx, fy) = (spread(&x, layer.input_len()), spread(&y, layer.output_len()));
    let (rx, ry) = if whole_batch { (Rows::Batch(&fx[..]), Rows::Batch(&fy[..])) } else { (Rows::Sampled(&x[..]), Rows::Sampled(&y[..])) };
    let bias = b.as_deref_mut().zip(gb.as_deref());
    let mut layers = [LayerSlices { weight: &mut w, grad_weight: &gw, bias, x: rx, y: ry }];
    frog.step(case.batch_size, &mut layers, &mut []).unwrap();
    (w, b)
}

fn max_rel(got: &[f32], want: &[f32]) -> f64 {
    let scale = want.iter().fold(0f64, |m, &v| m.max(f64::from(v).abs())).max(1e-30);
    got.iter().zip(want).fold(0f64, |m, (&g, &w)| m.max(f64::from(g - w).abs() / scale))
}

#[test]
fn a_step_through_the_host_route_is_the_direct_step() {
    let cpu = Cpu::<f32>::with_threads(1).unwrap();
    let cases = load_cases(&golden_dir()).unwrap_or_else(|e| panic!("{e}"));
    let (mut checked, mut worst) = (0, 0f64);
    for case in cases.iter().filter(|c| c.lowp.is_none()) {
        let Target::Layer(layer) = &case.target else { continue };
        let (w, b) = direct(&cpu, case, layer);
        for whole_batch in [true, false] {
            let (hw, hb) = hosted(&cpu, case, layer, whole_batch);
            let err = max_rel(&hw, &w).max(b.as_ref().map_or(0.0, |b| max_rel(hb.as_ref().unwrap(), b)));
            assert!(err <= 1e-4, "{} (whole batch: {whole_batch}): max-norm relative error {err:e}", case.name);
            (checked, worst) = (checked + 1, worst.max(err));
        }
    }
    println!("{checked} host-route steps of golden layer cases, worst max-norm relative error {worst:e}");
    assert!(checked >= 2, "no golden layer case checked");
}

/// A step whose every slice but one is right: the error names the entry,
/// and the parameters, the optimizer's state and the sampler are as before
/// (the next good step is the one a fresh optimizer takes).
#[test]
fn wrong_lengths_name_the_layer_and_change_nothing() {
    let cpu = Cpu::<f32>::with_threads(1).unwrap();
    let cfg = Config { lr: 0.05, momentum: 0.9, sample_size: Some(2), ..Config::default() };
    let layer = Layer::linear(3, 2, true);
    let make = || {
        let mut f = HostFrog::new(cpu.clone(), Method::Frog(cfg), 4, 3).unwrap();
        f.add_layer("stem", layer, GroupId::DEFAULT).unwrap();
        f.add_layer("head", Layer::linear(2, 1, false), GroupId::DEFAULT).unwrap();
        f.add_param("gain", 2, GroupId::DEFAULT).unwrap();
        f
    };
    let x: Vec<f32> = (0..12).map(|i| i as f32 * 0.3 - 1.0).collect();
    let y: Vec<f32> = (0..8).map(|i| (i as f32 * 0.7).sin()).collect();
    let (x2, y2) = (vec![0.5f32; 8], vec![0.25f32; 4]);
    let (gw, gb, gw2, gg) = (vec![0.1f32; 6], vec![0.2f32; 2], vec![-0.1f32; 2], vec![0.3f32; 2]);
    let init = || (vec![0.5f32; 6], vec![0.1f32; 2], vec![1.0f32; 2], vec![2.0f32; 2]);

    // What the bad step may change, and the step afterwards, which must be
    // a fresh optimizer's first.
    #[allow(clippy::type_complexity)]
    let good_step = |f: &mut HostFrog<f32>, p: &mut (Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>)| -> Result<(), HostError> {
        let (w, b, w2, g) = p;
        let mut layers = [
            LayerSlices { weight: w, grad_weight: &gw, bias: Some((b, &gb)), x: Rows::Batch(&x), y: Rows::Batch(&y) },
            LayerSlices { weight: w2, grad_weight: &gw2, bias: None, x: Rows::Batch(&x2), y: Rows::Batch(&y2) },
        ];
        f.step(4, &mut layers, &mut [ParamSlices { param: g, grad: &gg }])
    };
    let mut fresh = make();
    let mut want = init();
    good_step(&mut fresh, &mut want).unwrap();
    good_step(&mut fresh, &mut want).unwrap();

    // (layer or parameter, slice, what the error must name): each breaks
    // one slice of an otherwise good step.
    let bads = [("head", "x"), ("stem", "y"), ("head", "grad_weight"), ("stem", "grad_bias"), ("gain", "grad"), ("stem", "sampled y")];
    let short = [0.0f32; 1];
    for (name, slice) in bads {
        let mut f = make();
        let mut p = init();
        let err = {
            let (w, b, w2, g) = &mut p;
            let mut layers = [
                LayerSlices { weight: w, grad_weight: &gw, bias: Some((b, &gb)), x: Rows::Batch(&x), y: Rows::Batch(&y) },
                LayerSlices { weight: w2, grad_weight: &gw2, bias: None, x: Rows::Batch(&x2), y: Rows::Batch(&y2) },
            ];
            let mut params = [ParamSlices { param: g, grad: &gg }];
            match (name, slice) {
                ("head", "x") => layers[1].x = Rows::Batch(&x2[..7]),
                ("stem", "y") => layers[0].y = Rows::Batch(&y[..7]),
                ("head", "grad_weight") => layers[1].grad_weight = &short,
                ("stem", "grad_bias") => layers[0].bias.as_mut().unwrap().1 = &short,
                ("gain", "grad") => params[0].grad = &short,
                // The right length for the sample, but no sample was drawn.
                _ => layers[0].y = Rows::Sampled(&y[..4]),
            }
            f.step(4, &mut layers, &mut params).unwrap_err()
        };
        let msg = err.to_string();
        match &err {
            HostError::Length { name: n, what, .. } => assert_eq!((n.as_str(), *what), (name, slice), "{msg}"),
            HostError::NoSample { batch: 4, drawn: None } => assert_eq!(slice, "sampled y", "{msg}"),
            e => panic!("{name} {slice}: unexpected error {e}"),
        }
        assert!(msg.contains(name) || slice == "sampled y", "the message does not name {name}: {msg}");
        assert_eq!(p, init(), "{name} {slice}: the refused step moved a parameter");
        // The good steps after the refused one are a fresh optimizer's.
        good_step(&mut f, &mut p).unwrap();
        good_step(&mut f, &mut p).unwrap();
        assert_eq!(p, want, "{name} {slice}: the refused step changed the optimizer's state or its sampler");
    }

    // Too few layers, or a bias where none was registered: refused as well.
    let mut f = make();
    assert!(matches!(f.step(4, &mut [], &mut []), Err(HostError::Count { what: "layers", given: 0, registered: 2 })));
    let mut p = init();
    let (w, b, w2, g) = &mut p;
    let mut extra = [0.0f32; 1];
    let mut layers = [
        LayerSlices { weight: w, grad_weight: &gw, bias: Some((b, &gb)), x: Rows::Batch(&x), y: Rows::Batch(&y) },
        LayerSlices { weight: w2, grad_weight: &gw2, bias: Some((&mut extra, &short)), x: Rows::Batch(&x2), y: Rows::Batch(&y2) },
    ];
    let err = f.step(4, &mut layers, &mut [ParamSlices { param: g, grad: &gg }]).unwrap_err();
    assert!(matches!(&err, HostError::Bias { name, registered: false } if name == "head"), "{err}");
    assert_eq!(p, init());
}

/// A seeded value in [-1, 1).
fn vals(seed: u64, n: usize) -> Vec<f32> {
    (0..n).map(|k| ((k as f64 + 0.5) * (0.37 + seed as f64 * 0.11)).sin() as f32).collect()
}

/// A linear layer with a bias, its whole-batch inputs and output gradients,
/// and the weight and bias gradients they imply (autograd's), `[d_out, d_in]`.
struct Linear {
    layer: Layer,
    x: Vec<f32>,
    y: Vec<f32>,
    gw: Vec<f32>,
    gb: Vec<f32>,
}

fn linear(batch: usize) -> Linear {
    let layer = Layer::linear(5, 3, true);
    let (x, y) = (vals(1, batch * 5), vals(2, batch * 3));
    let (mut gw, mut gb) = (vec![0.0f32; 15], vec![0.0f32; 3]);
    for i in 0..batch {
        for j in 0..3 {
            gb[j] += y[i * 3 + j];
            for c in 0..5 {
                gw[j * 5 + c] += y[i * 3 + j] * x[i * 5 + c];
            }
        }
    }
    Linear { layer, x, y, gw, gb }
}

fn transposed(v: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    (0..rows * cols).map(|k| v[(k % rows) * cols + k / rows]).collect()
}

fn host(batch: usize) -> HostFrog<f32> {
    let cfg = Config { lr: 0.01, momentum: 0.9, sample_size: Some(2), ..Config::default() };
    HostFrog::new(Cpu::with_threads(1).unwrap(), Method::Frog(cfg), batch, 3).unwrap()
}

#[test]
fn a_weight_stored_in_out_is_stepped_in_frogs_rows_and_written_back() {
    let (batch, l) = (4, linear(4));
    let w0 = vals(3, 15);
    // PyTorch's layout.
    let mut a = host(batch);
    a.add_layer("fc", l.layer, GroupId::DEFAULT).unwrap();
    let (mut w, mut b) = (w0.clone(), vec![0.0f32; 3]);
    let mut layers = [LayerSlices { weight: &mut w, grad_weight: &l.gw, bias: Some((&mut b, &l.gb)), x: Rows::Batch(&l.x), y: Rows::Batch(&l.y) }];
    a.step(batch, &mut layers, &mut []).unwrap();
    // The same weight and gradient stored [d_in, d_out], declared so.
    let mut t = host(batch);
    t.add_layer_as("fc", l.layer, GroupId::DEFAULT, WeightLayout::InOut).unwrap();
    let (mut wt, mut bt, gwt) = (transposed(&w0, 3, 5), vec![0.0f32; 3], transposed(&l.gw, 3, 5));
    let mut layers = [LayerSlices { weight: &mut wt, grad_weight: &gwt, bias: Some((&mut bt, &l.gb)), x: Rows::Batch(&l.x), y: Rows::Batch(&l.y) }];
    t.step(batch, &mut layers, &mut []).unwrap();
    assert_ne!(w, w0);
    assert_eq!(wt, transposed(&w, 3, 5), "the InOut step is the OutIn step, transposed");
    assert_eq!(bt, b);
    // A convolution has no [d_in, d_out] layout.
    let conv = Layer::conv2d(frog_core::Conv2d::new(2, 3, 3, [4, 4]), false);
    let e = host(batch).add_layer_as("conv", conv, GroupId::DEFAULT, WeightLayout::InOut).unwrap_err();
    assert!(matches!(&e, HostError::Layout { name } if name == "conv"), "{e}");
}

#[test]
fn the_gradient_check_names_a_layer_whose_tensors_disagree() {
    let (batch, l) = (4, linear(4));
    let mut frog = host(batch);
    frog.add_layer("fc", l.layer, GroupId::DEFAULT).unwrap();
    frog.check_gradients(Some(1e-4)).unwrap();
    let w0 = vals(3, 15);
    let step = |frog: &mut HostFrog<f32>, gw: &[f32], x: &[f32], y: &[f32]| {
        let (mut w, mut b) = (w0.clone(), vec![0.0f32; 3]);
        let mut layers = [LayerSlices { weight: &mut w, grad_weight: gw, bias: Some((&mut b, &l.gb)), x: Rows::Batch(x), y: Rows::Batch(y) }];
        let result = frog.step(batch, &mut layers, &mut []);
        (result, w)
    };
    // A transposed gradient has the right length: only the check sees it.
    let (e, w) = step(&mut frog, &transposed(&l.gw, 3, 5), &l.x, &l.y);
    let e = e.unwrap_err();
    assert!(matches!(&e, HostError::Gradient { name, what: "grad_weight", .. } if name == "fc"), "{e}");
    assert!(e.to_string().contains("fc: grad_weight differs"), "{e}");
    assert_eq!(w, w0, "a refused step changes nothing");
    // Output gradients of another batch (rows shuffled).
    let shuffled: Vec<f32> = l.y.chunks(3).rev().flatten().copied().collect();
    assert!(matches!(step(&mut frog, &l.gw, &l.x, &shuffled).0, Err(HostError::Gradient { .. })));
    // Matching tensors step; with the check off, anything goes.
    let (ok, w) = step(&mut frog, &l.gw, &l.x, &l.y);
    ok.unwrap();
    assert_ne!(w, w0);
    frog.check_gradients(None).unwrap();
    step(&mut frog, &transposed(&l.gw, 3, 5), &l.x, &l.y).0.unwrap();
}

#[test]
fn the_loss_watch_refuses_non_finite_and_exploding_losses() {
    use frog_cpu::host::{Diverged, LossWatch};
    let mut watch = LossWatch::default();
    assert_eq!(watch.check(f64::NAN, 100.0).map_err(|d| d.first.is_nan()), Err(true), "no first loss yet: the refused one stands in");
    watch.check(2.3, 100.0).unwrap();
    watch.check(200.0, 100.0).unwrap();
    assert_eq!(watch.check(2.7e4, 100.0), Err(Diverged { loss: 2.7e4, first: 2.3 }));
    assert_eq!(watch.check(f64::INFINITY, 100.0), Err(Diverged { loss: f64::INFINITY, first: 2.3 }));
    let mut zero = LossWatch::default();
    zero.check(0.0, 100.0).unwrap();
    zero.check(1e9, 100.0).unwrap();
}

#[test]
fn the_step_batch_is_the_layers_common_one() {
    use frog_cpu::host::step_batch;
    let name = |i: usize| format!("layer{i}");
    assert_eq!(step_batch([], name).unwrap(), 1, "no layers: the plain path does not read it");
    assert_eq!(step_batch([8, 8, 8], name).unwrap(), 8);
    let e = step_batch([8, 8, 6, 5], name).unwrap_err();
    assert!(matches!(&e, HostError::Batch { name, batch: 6, first: 8 } if name == "layer2"), "{e}");
    assert!(e.to_string().contains("layer2: input of a batch of 6, the first layer's is of 8"), "{e}");
}

#[test]
fn a_divergence_reads_the_same_in_every_framework() {
    use frog_cpu::host::{Diverged, ParamsFrog, DIVERGENCE_FACTOR};
    let e = HostError::from(Diverged { loss: 2.7e4, first: 2.3 });
    assert!(matches!(e, HostError::Diverged { loss, first } if loss == 2.7e4 && first == 2.3));
    assert!(e.to_string().contains("FROG diverged: loss 27000 (first loss 2.3); lower the learning rate"), "{e}");
    assert_eq!(ParamsFrog::new(Config::default(), 8).divergence, Some(DIVERGENCE_FACTOR));
}
