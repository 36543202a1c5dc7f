//! Once the optimizer is built (its workspace sized and allocated at
//! registration), 100 steps of a multi-layer model allocate nothing, the
//! very first included, on any thread (the counting allocator sees every
//! thread): on f32 inputs, guarded, on bf16 inputs with the overflow check
//! of `y`, and on views (slices of the caller's arrays), and through the
//! host route (`frog_cpu::host`) from whole-batch rows. The model has
//! layers whose products run through Winograd and through the Gram CG,
//! whose scratch is the workspace's product scratch.

#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]

#[path = "suite/common/mod.rs"]
mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use common::{frog_with, Rng, StepData};
use frog_core::half::bf16;
use frog_core::{muon_step, Batch, Config, MuonConfig, MuonScratch, MuonShape, MuonState, Conv2d, GroupId, Guard, Layer, LowpBatch, Method, ParamGrad, Params, ViewBatch, ViewParamGrad, ViewParams};
use frog_cpu::host::{HostFrog, LayerSlices, ParamSlices, Rows};
use frog_cpu::{Algorithm, Cpu, Frog};

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every method forwards to `System` with the caller's arguments
// unchanged, so `System`'s guarantees are this allocator's; the counter
// has no bearing on the memory.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::SeqCst);
        // SAFETY: the caller upholds `alloc`'s contract, which we pass on.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from this allocator, that is from `System`.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::SeqCst);
        // SAFETY: as in `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::SeqCst);
        // SAFETY: `ptr` came from `System` with `layout`; the caller
        // upholds `realloc`'s contract for `new_size`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations made while `f` runs, on any thread.
fn allocations(f: impl FnOnce()) -> usize {
    let before = ALLOCATIONS.load(Ordering::SeqCst);
    f();
    ALLOCATIONS.load(Ordering::SeqCst) - before
}

#[test]
fn steps_allocate_nothing_from_the_first() {
    let layers = [
        Layer::conv2d(Conv2d::new(3, 8, 3, [16, 16]).padding(1), true),
        Layer::conv2d(Conv2d::new(8, 16, 3, [16, 16]).stride(2).padding(1), false),
        Layer::conv2d(Conv2d::new(8, 16, 1, [16, 16]).stride(2), false),
        Layer::linear_tokens(16, 12, 5, true),
        Layer::linear(64, 10, false),
        // Winograd products (the automatic choice for it, checked below),
        // odd output size and a bias.
        Layer::conv2d(Conv2d::new(16, 12, 3, [9, 9]).padding(1), true),
    ];
    let (batch, sample) = (16, 8);
    let auto = Cpu::<f32>::with_threads(1).unwrap();
    assert_eq!(auto.algorithm(&layers[5], sample).unwrap(), Algorithm::Winograd);
    // The Gram CG (the automatic choice for the linear layers at 8 samples).
    assert_eq!(auto.algorithm(&layers[4], sample).unwrap(), Algorithm::Gram);
    let others = [8, 8, 10];
    let cfg = Config { lr: 1e-2, momentum: 0.9, nesterov: true, weight_decay: 1e-4, sample_size: Some(sample), ..Config::default() };
    let cpu = Cpu::with_threads(2).unwrap();
    let (mut frog, layer_ids, other_ids) = frog_with::<f32>(&cpu, cfg, &layers, &others, batch, 7).unwrap();
    let mut idx = vec![0; frog.sample_rows(batch)];
    // An AdamW group (amsgrad on: every buffer it has).
    let adam = frog.add_group(frog_core::AdamWConfig { amsgrad: true, ..Default::default() }).unwrap();
    let adam_id = frog.add_param(&cpu, "adam", 64, adam).unwrap();
    // A K-FROG group: a bias-free conv with every buffer (momentum, y average).
    let kcfg = frog_core::KfrogConfig { momentum: 0.9, y_momentum: 0.9, sample_size: Some(sample), y_sample_size: Some(4), ..Default::default() };
    let kf = frog.add_group(kcfg).unwrap();
    let klayer = Layer::conv2d(Conv2d::new(3, 8, 3, [16, 16]).padding(1), false);
    let kfrog_id = frog.add_layer(&cpu, "kfrog", klayer, kf).unwrap();
    let (mut kx_idx, mut ky_idx) = (vec![0; batch], vec![0; batch]);

    let mut rng = Rng(11);
    let to32 = |v: &[f64]| v.iter().map(|&x| x as f32).collect::<Vec<f32>>();
    let mut data: Vec<_> = layers
        .iter()
        .map(|l| {
            let d = StepData::random(&mut rng, l, sample, batch);
            (to32(&d.weight), d.bias.as_deref().map(to32), to32(&d.grad_weight), d.grad_bias.as_deref().map(to32), to32(&d.x), to32(&d.y))
        })
        .collect();
    let mut other: Vec<(Vec<f32>, Vec<f32>)> = others.iter().map(|&n| (to32(&rng.vec(n)), to32(&rng.vec(n)))).collect();
    let (mut adam_p, adam_g) = (to32(&rng.vec(64)), to32(&rng.vec(64)));
    let kd = StepData::random(&mut rng, &klayer, batch, batch);
    let (mut kw, kg, kx_full, ky_full) = (to32(&kd.weight), to32(&kd.grad_weight), to32(&kd.x), to32(&kd.y));
    let (mut kx, mut ky) = (vec![0.0f32; sample * klayer.input_len()], vec![0.0f32; 4 * klayer.output_len()]);

    // faer's GEMM kernels keep a packing buffer per thread, which a
    // thread's first product allocates (see frog-cpu's gemm module): one
    // step of the model's layers on another backend over the same pool
    // allocates those. That backend shares nothing else with `cpu` (no
    // scratch: a step's is its workspace's), so what the steps below
    // allocate is their own.
    let warm = Cpu::<f32>::new(Arc::clone(cpu.pool()));
    let (mut warm_frog, warm_ids, _) = frog_with::<f32>(&warm, cfg, &layers, &[], batch, 7).unwrap();
    warm_frog.sample(batch, &mut idx).unwrap();
    for (&id, (w, b, gw, gb, x, y)) in warm_ids.iter().zip(&mut data) {
        let params = Params { weight: w, grad_weight: gw, bias: b.as_mut().zip(gb.as_ref()) };
        warm_frog.step_layer(&warm, id, params, Some(Batch { x, y, sample, batch_size: batch })).unwrap();
    }

    let mut step = |frog: &mut Frog<f32>| {
        assert_eq!(frog.sample(batch, &mut idx).unwrap().len(), sample);
        for (&id, (w, b, gw, gb, x, y)) in layer_ids.iter().zip(&mut data) {
            let params = Params { weight: w, grad_weight: gw, bias: b.as_mut().zip(gb.as_ref()) };
            frog.step_layer(&cpu, id, params, Some(Batch { x, y, sample, batch_size: batch })).unwrap();
        }
        for (&id, (p, g)) in other_ids.iter().zip(&mut other) {
            frog.step_param(&cpu, id, ParamGrad { param: p, grad: g }).unwrap();
        }
        frog.step_param(&cpu, adam_id, ParamGrad { param: &mut adam_p, grad: &adam_g }).unwrap();
        let (xs, ys) = frog.sample_kfrog(kf, batch, &mut kx_idx, &mut ky_idx).unwrap();
        frog_core::gather_rows(&cpu, xs, klayer.input_len(), &kx_full, &mut kx).unwrap();
        frog_core::gather_rows(&cpu, ys, klayer.output_len(), &ky_full, &mut ky).unwrap();
        let kbatch = frog_core::KfrogBatch { x: &kx, x_sample: sample, y: &ky, y_sample: 4, batch_size: batch };
        frog.step_layer_kfrog(&cpu, kfrog_id, &mut kw, &kg, kbatch).unwrap();
    };
    // The counter sees allocations at all (so a zero below means something).
    assert!(allocations(|| drop(std::hint::black_box(vec![0u8; 16]))) > 0);
    // The guard off (the original's step), then on (diagnostics and
    // replaced rows): neither allocates, from the first step.
    for guard in [None, Some(Guard { nonfinite: true, dead_rows: true })] {
        frog.set_guard(&cpu, guard).unwrap();
        let n = allocations(|| (0..100).for_each(|_| step(&mut frog)));
        assert_eq!(n, 0, "100 steps (guard {guard:?}), the first included, allocated {n} times");
    }
    // The same model on bf16 inputs (converted while packed), guarded and
    // with the overflow check of y (one read of a count): no allocation.
    let halves = |v: &[f32]| v.iter().map(|&x| bf16::from_f32(x)).collect::<Vec<bf16>>();
    let lowp: Vec<(Vec<bf16>, Vec<bf16>)> = data.iter().map(|d| (halves(&d.4), halves(&d.5))).collect();
    let mut lowp_step = |frog: &mut Frog<f32>| {
        assert_eq!(frog.sample(batch, &mut idx).unwrap().len(), sample);
        for ((&id, (w, b, gw, gb, _, _)), (x, y)) in layer_ids.iter().zip(&mut data).zip(&lowp) {
            let params = Params { weight: w, grad_weight: gw, bias: b.as_mut().zip(gb.as_ref()) };
            frog.step_layer(&cpu, id, params, Some(LowpBatch { x, y, sample, batch_size: batch, check_y: true })).unwrap();
        }
    };
    let n = allocations(|| (0..100).for_each(|_| lowp_step(&mut frog)));
    assert_eq!(n, 0, "100 bf16 steps, the first included, allocated {n} times");
    // The same model on views: slices of the caller's arrays.
    let mut view_step = |frog: &mut Frog<f32>| {
        assert_eq!(frog.sample(batch, &mut idx).unwrap().len(), sample);
        for (&id, (w, b, gw, gb, x, y)) in layer_ids.iter().zip(&mut data) {
            let bias = b.as_deref_mut().zip(gb.as_deref());
            let params = ViewParams { weight: &mut w[..], grad_weight: &gw[..], bias };
            frog.step_layer(&cpu, id, params, Some(ViewBatch { x: &x[..], y: &y[..], sample, batch_size: batch })).unwrap();
        }
        for (&id, (p, g)) in other_ids.iter().zip(&mut other) {
            frog.step_param(&cpu, id, ViewParamGrad { param: &mut p[..], grad: &g[..] }).unwrap();
        }
    };
    let n = allocations(|| (0..100).for_each(|_| view_step(&mut frog)));
    assert_eq!(n, 0, "100 steps on views, the first included, allocated {n} times");
    // The host route: its gathers of the whole batch's rows go to buffers
    // allocated at registration, and its checks allocate nothing.
    let mut host = HostFrog::new(cpu.clone(), Method::Frog(cfg), batch, 5).unwrap();
    host.add_layer("conv", layers[0], GroupId::DEFAULT).unwrap();
    host.add_layer("fc", layers[4], GroupId::DEFAULT).unwrap();
    host.add_param("plain", 8, GroupId::DEFAULT).unwrap();
    let whole = |l: &Layer, rng: &mut Rng| {
        let d = StepData::random(rng, l, batch, batch);
        (to32(&d.weight), d.bias.as_deref().map(to32).unwrap_or_default(), to32(&d.grad_weight), d.grad_bias.as_deref().map(to32).unwrap_or_default(), to32(&d.x), to32(&d.y))
    };
    let (mut conv, mut fc) = (whole(&layers[0], &mut rng), whole(&layers[4], &mut rng));
    let (mut plain, plain_grad) = (to32(&rng.vec(8)), to32(&rng.vec(8)));
    let mut host_step = |host: &mut HostFrog<f32>| {
        let (w, b, gw, gb, x, y) = &mut conv;
        let (w1, _, gw1, _, x1, y1) = &mut fc;
        let mut ls = [
            LayerSlices { weight: w, grad_weight: gw, bias: Some((b, gb)), x: Rows::Batch(x), y: Rows::Batch(y) },
            LayerSlices { weight: w1, grad_weight: gw1, bias: None, x: Rows::Batch(x1), y: Rows::Batch(y1) },
        ];
        host.step(batch, &mut ls, &mut [ParamSlices { param: &mut plain, grad: &plain_grad }]).unwrap();
    };
    let n = allocations(|| (0..100).for_each(|_| host_step(&mut host)));
    assert_eq!(n, 0, "100 steps through the host route, the first included, allocated {n} times");
    assert!(conv.0.iter().chain(&fc.0).all(|v| v.is_finite()));
    assert!(data.iter().all(|d| d.0.iter().all(|v| v.is_finite())));
    assert!(frog.diagnostics(&cpu, layer_ids[0]).unwrap().is_some_and(|d| d.nonfinite_rows == 0));
    // Muon, both forms, on buffers and views: its state and scratch are
    // built up front, and its products run on the same pool.
    let (conv_shape, tall) = (MuonShape::conv2d(16, 8, 3, 3).unwrap(), MuonShape::matrix(40, 12).unwrap());
    let mut scratch = MuonScratch::new(&cpu, 16 * 72, 16).unwrap();
    for (shape, cfg) in [(conv_shape, MuonConfig::default()), (tall, MuonConfig { lr: 0.1, momentum: 0.6, nesterov: true, ..MuonConfig::airbench() })] {
        let n = shape.entries();
        let mut state = MuonState::new(&cpu, n).unwrap();
        let (mut w, g) = (to32(&rng.vec(n)), to32(&rng.vec(n)));
        let allocated = allocations(|| {
            for k in 0..50 {
                if k % 2 == 0 {
                    muon_step(&cpu, &cfg, &shape, &mut state, &mut scratch, ParamGrad { param: &mut w, grad: &g }).unwrap();
                } else {
                    muon_step(&cpu, &cfg, &shape, &mut state, &mut scratch, ViewParamGrad::<Cpu<f32>> { param: &mut w[..], grad: &g[..] }).unwrap();
                }
            }
        });
        assert_eq!(allocated, 0, "50 Muon steps ({:?}), the first included, allocated {allocated} times", cfg.form);
        assert!(w.iter().all(|v| v.is_finite()));
    }
    // The same through the optimizer object's Muon group, whose scratch
    // was grown when its layer was registered.
    let muon = frog.add_group(MuonConfig::default()).unwrap();
    let muon_id = frog.add_layer(&cpu, "muon", Layer::conv2d(Conv2d::new(8, 16, 3, [16, 16]).padding(1), false), muon).unwrap();
    let (mut w, g) = (to32(&rng.vec(16 * 72)), to32(&rng.vec(16 * 72)));
    let allocated = allocations(|| (0..20).for_each(|_| frog.step_layer(&cpu, muon_id, Params { weight: &mut w, grad_weight: &g, bias: None }, None::<Batch<Cpu<f32>>>).unwrap()));
    assert_eq!(allocated, 0, "20 steps of a Muon group, the first included, allocated {allocated} times");
    assert_eq!(frog.muon_state(muon_id).unwrap().steps(), 20);
}
