//! Short runs of the whole airbench94_muon recipe, one per filter method,
//! and the whitening bias's freeze. The recipe's golden case (torch's
//! float64 run) is replayed by the crate's unit tests on every device
//! (`airbench::golden`).

use std::sync::Arc;

use frog_bench::airbench::loader::normalize;
use frog_bench::airbench::model::Role;
use frog_bench::airbench::recipe::{self, AirbenchConfig, FilterMethod, Recipe};
use frog_bench::airbench::schedule::Schedule;
use frog_bench::data::cifar::PIXELS;
use frog_bench::data::{Data, Images};
use frog_bench::device::cpu::CpuDevice;
use frog_bench::device::Device;
use frog_core::Config;

/// `n` images whose class sets a colour and a bright square's place, with
/// noise: a task the recipe learns within a few steps.
fn images_of(n: usize, seed: u64) -> Images {
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    let mut next = move || {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (state >> 33) as u32
    };
    let labels: Vec<u8> = (0..n).map(|_| (next() % 10) as u8).collect();
    let mut pixels = Vec::with_capacity(n * PIXELS);
    for &l in &labels {
        let (l, top) = (usize::from(l), usize::from(l) % 5 * 6);
        for c in 0..3 {
            for y in 0..32 {
                for x in 0..32 {
                    let square = (top..top + 8).contains(&y) && (top..top + 8).contains(&x);
                    let base = 60 + 40 * ((l + c) % 3) + if square { 80 } else { 0 };
                    pixels.push((base + (next() % 40) as usize) as u8);
                }
            }
        }
    }
    Images { pixels, labels }
}

/// A short run of the whole recipe with `filters` at reduced widths: the
/// records, a falling loss, the test-time-augmented accuracy above chance,
/// and the whitening bias frozen after its epoch.
fn smoke(filters: FilterMethod) {
    let dev = CpuDevice::<f32>::new(2).unwrap();
    let data = Data { train: Arc::new(images_of(220, 1)), test: Arc::new(images_of(100, 2)), source: "smoke".into(), synthetic: true };
    // 5 steps an epoch (the last 20 images dropped), 10 in all.
    let cfg = AirbenchConfig { label: "smoke".into(), filters, widths: [16, 32, 32], batch: 40, epochs: 2.0, whiten_bias_epochs: 1.0, seed: 3 };
    let mut epochs = 0;
    let run = recipe::train(&dev, &data, &cfg, |_| epochs += 1).unwrap();
    assert_eq!((epochs, run.records.len()), (2, 2));
    let (first, last) = (&run.records[0], &run.records[1]);
    assert!(last.train_loss < 0.8 * first.train_loss, "{filters:?}: loss {} -> {}", first.train_loss, last.train_loss);
    assert!(run.tta_test_acc > 40.0, "{filters:?}: {:?}", run.records);
    assert_eq!((first.tta_test_acc, last.tta_test_acc), (None, Some(run.tta_test_acc)));
    assert!(run.whiten_seconds > 0.0 && run.tta_seconds > 0.0 && run.train_seconds == last.train_seconds);
    assert!(first.lr == filters.lr() && last.lr < first.lr);
}

#[test]
fn the_record_trains() {
    smoke(FilterMethod::record());
}

#[test]
fn frog_on_the_filters_trains() {
    smoke(FilterMethod::Frog(Config { lr: 0.05, momentum: 0.6, nesterov: true, sample_size: Some(16), ..Config::default() }));
}

#[test]
fn sgd_on_the_filters_trains() {
    smoke(FilterMethod::sgd(0.02));
}

/// After its schedule, the whitening bias neither moves nor keeps a
/// gradient the optimizer reads, while the rest trains on.
#[test]
fn the_whitening_bias_freezes_after_its_steps() {
    let dev = CpuDevice::<f64>::new(2).unwrap();
    let schedule = Schedule::new(1, 4.0, 1.0).unwrap();
    let mut r = Recipe::new(&dev, [8, 8, 8], FilterMethod::record(), 10, schedule, 0).unwrap();
    let set = images_of(10, 5);
    let mut xs = vec![0.0f64; 10 * PIXELS];
    normalize(&set.pixels, &mut xs).unwrap();
    let (mut x, mut y) = (dev.zeros(10 * PIXELS).unwrap(), dev.labels(10).unwrap());
    dev.upload(&xs, &mut x).unwrap();
    dev.upload_labels(&set.labels, &mut y).unwrap();
    let bias = r.net.roles().iter().position(|&role| role == Role::WhitenBias).unwrap();
    let value = |r: &Recipe<CpuDevice<f64>>, i: usize| r.net.params[i].value.clone();
    let before = value(&r, bias);
    r.train_step(&dev, &x, &y).unwrap();
    let trained = value(&r, bias);
    assert_ne!(trained, before, "the bias trains in its epoch");
    let head = r.net.params.len() - 1;
    for _ in 0..3 {
        let head_before = value(&r, head);
        r.train_step(&dev, &x, &y).unwrap();
        assert_eq!(value(&r, bias), trained, "frozen after its epoch");
        assert_ne!(value(&r, head), head_before, "the head trains on");
    }
    assert!(r.train_step(&dev, &x, &y).is_err(), "the schedule is over");
}
