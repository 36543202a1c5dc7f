//! After one warm-up step, 100 steps of a multi-layer model allocate
//! nothing, on any thread (the counting allocator sees every thread): on
//! f32 inputs, guarded, and on bf16 inputs with the overflow check of `y`.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use common::{frog_with, Rng, StepData};
use frog_core::half::bf16;
use frog_core::{Batch, Config, Conv2d, Guard, Layer, LowpBatch, Params};
use frog_cpu::{Cpu, Frog};

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::SeqCst);
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::SeqCst);
        System.alloc_zeroed(layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::SeqCst);
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn steady_state_steps_allocate_nothing() {
    let layers = [
        Layer::conv2d(Conv2d::new(3, 8, 3, [16, 16]).padding(1), true),
        Layer::conv2d(Conv2d::new(8, 16, 3, [16, 16]).stride(2).padding(1), false),
        Layer::conv2d(Conv2d::new(8, 16, 1, [16, 16]).stride(2), false),
        Layer::linear_tokens(16, 12, 5, true),
        Layer::linear(64, 10, false),
    ];
    let others = [8, 8, 10];
    let (batch, sample) = (16, 8);
    let cfg = Config { lr: 1e-2, momentum: 0.9, nesterov: true, weight_decay: 1e-4, sample_size: Some(sample), ..Config::default() };
    let cpu = Cpu::with_threads(2).unwrap();
    let (mut frog, layer_ids, other_ids) = frog_with::<f32>(&cpu, cfg, &layers, &others, batch, 7).unwrap();
    let mut idx = vec![0; frog.sample_rows(batch)];

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

    let mut step = |frog: &mut Frog<f32>| {
        assert_eq!(frog.sample(batch, &mut idx).unwrap().len(), sample);
        for (&id, (w, b, gw, gb, x, y)) in layer_ids.iter().zip(&mut data) {
            let params = Params { weight: w, grad_weight: gw, bias: b.as_mut().zip(gb.as_ref()) };
            frog.step_layer(&cpu, id, params, Some(Batch { x, y, sample, batch_size: batch })).unwrap();
        }
        for (&id, (p, g)) in other_ids.iter().zip(&mut other) {
            frog.step_param(&cpu, id, p, g).unwrap();
        }
    };
    // The guard off (the original's step), then on (diagnostics and
    // replaced rows): after a warm-up step, neither allocates.
    for guard in [None, Some(Guard { nonfinite: true, dead_rows: true })] {
        frog.set_guard(&cpu, guard).unwrap();
        step(&mut frog);
        // The counter sees allocations at all (so a zero below means something).
        let probe = ALLOCATIONS.load(Ordering::SeqCst);
        drop(std::hint::black_box(vec![0u8; 16]));
        assert!(ALLOCATIONS.load(Ordering::SeqCst) > probe);
        let before = ALLOCATIONS.load(Ordering::SeqCst);
        for _ in 0..100 {
            step(&mut frog);
        }
        let allocations = ALLOCATIONS.load(Ordering::SeqCst) - before;
        assert_eq!(allocations, 0, "100 steady-state steps (guard {guard:?}) allocated {allocations} times");
    }
    // The same model on bf16 inputs (converted while packed), guarded and
    // with the overflow check of y (one read of a count): no allocation.
    let halves = |v: &[f32]| v.iter().map(|&x| bf16::from_f32(x)).collect::<Vec<bf16>>();
    let lowp: Vec<(Vec<bf16>, Vec<bf16>)> = data.iter().map(|d| (halves(&d.4), halves(&d.5))).collect();
    let mut lowp_step = |frog: &mut Frog<f32>| {
        assert_eq!(frog.sample(batch, &mut idx).unwrap().len(), sample);
        for ((&id, (w, b, gw, gb, _, _)), (x, y)) in layer_ids.iter().zip(&mut data).zip(&lowp) {
            let params = Params { weight: w, grad_weight: gw, bias: b.as_mut().zip(gb.as_ref()) };
            frog.step_layer_lowp(&cpu, id, params, Some(LowpBatch { x, y, sample, batch_size: batch, check_y: true })).unwrap();
        }
    };
    lowp_step(&mut frog);
    let before = ALLOCATIONS.load(Ordering::SeqCst);
    for _ in 0..100 {
        lowp_step(&mut frog);
    }
    let allocations = ALLOCATIONS.load(Ordering::SeqCst) - before;
    assert_eq!(allocations, 0, "100 steady-state bf16 steps allocated {allocations} times");
    assert!(data.iter().all(|d| d.0.iter().all(|v| v.is_finite())));
    assert!(frog.diagnostics(&cpu, layer_ids[0]).unwrap().is_some_and(|d| d.nonfinite_rows == 0));
}
