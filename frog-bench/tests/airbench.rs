//! The airbench94_muon recipe against `airbench/recipe.json` of the golden
//! folder (torch's float64 run of the reference at widths 8/16/16; see its
//! README): the train-mode logits and summed loss, four steps of Nesterov
//! SGD and Muon under the schedules with every parameter and BatchNorm
//! statistic after each, then the plain and the test-time-augmented
//! logits; f64 within 1e-9 and f32 within 1e-4 relative. Then a short run
//! of the whole recipe for each filter method.

use std::sync::Arc;

use frog_bench::airbench::loader::{self, normalize};
use frog_bench::airbench::model::{Role, BN_EPS, BN_MOMENTUM, LOSS};
use frog_bench::airbench::recipe::{self, sgd, AirbenchConfig, Evaluator, FilterMethod, Recipe};
use frog_bench::airbench::schedule::Schedule;
use frog_bench::data::{Data, Images};
use frog_bench::device::cpu::CpuDevice;
use frog_bench::device::{Device, Reduction};
use frog_core::Config;
use frog_cpu::gemm::Real;
use frog_cpu::golden::{golden_dir, run_suite, Checker, Report};
use serde_json::Value;

/// The case's images per step, its batch.
const BATCH: usize = 16;
/// Values of one image.
const PIXELS: usize = 3 * 32 * 32;

fn case() -> Value {
    let path = golden_dir().join("airbench/recipe.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_str(&text).expect("valid JSON")
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array().unwrap_or_else(|| panic!("an array: {v}")).iter().map(|x| x.as_f64().expect("a number")).collect()
}

fn num(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("a number: {v}"))
}

/// The case's images (hex of the raw bytes) normalized in `T`.
fn images<T: Real>(hex: &Value) -> Vec<T> {
    let hex = hex.as_str().expect("hex").as_bytes();
    let pixels: Vec<u8> = hex.chunks(2).map(|h| u8::from_str_radix(std::str::from_utf8(h).unwrap(), 16).unwrap()).collect();
    let mut out = vec![T::of_f64(0.0); pixels.len()];
    normalize(&pixels, &mut out).unwrap();
    out
}

fn host<T: Real>(v: &[f64]) -> Vec<T> {
    v.iter().map(|&x| T::of_f64(x)).collect()
}

fn download<T: Real>(dev: &CpuDevice<T>, buf: &Vec<T>, n: usize) -> Vec<f64> {
    let mut out = vec![T::of_f64(0.0); n];
    dev.download(buf, &mut out).unwrap();
    out.iter().map(|v| v.as_f64()).collect()
}

/// The settings the case ran with are the recipe's: BatchNorm, the loss,
/// the three SGD groups, Muon and the schedule's lengths.
#[test]
fn the_case_runs_the_recipes_settings() {
    let g = case();
    let a = &g["architecture"];
    assert_eq!((num(&a["bn_eps"]), num(&a["bn_momentum"])), (BN_EPS, BN_MOMENTUM));
    assert_eq!((num(&a["loss"]["label_smoothing"]), a["loss"]["reduction"].as_str()), (LOSS.label_smoothing, Some("sum")));
    assert_eq!(LOSS.reduction, Reduction::Sum);
    assert_eq!(num(&a["batch_size_for_wd"]) as usize, loader::BATCH);
    let groups: Vec<(&str, f64)> = vec![("whiten_bias", recipe::BIAS_LR), ("norm_biases", recipe::BIAS_LR), ("head", recipe::HEAD_LR)];
    for (group, (name, lr)) in g["optimizers"]["sgd"].as_array().unwrap().iter().zip(groups) {
        let want = sgd(lr);
        assert_eq!(group["group"].as_str(), Some(name));
        assert_eq!((num(&group["lr"]), num(&group["momentum"]), group["nesterov"].as_bool(), num(&group["dampening"])), (want.lr, want.momentum, Some(want.nesterov), 0.0));
        assert_eq!(num(&group["weight_decay"]), want.weight_decay, "{name}");
    }
    let muon = &g["optimizers"]["muon"];
    let FilterMethod::Muon(m) = FilterMethod::record() else { panic!("the record runs Muon") };
    assert_eq!((num(&muon["lr"]), num(&muon["momentum"]), muon["nesterov"].as_bool(), muon["ns_steps"].as_u64()), (m.lr, m.momentum, Some(m.nesterov), Some(m.ns_steps as u64)));
    let s = Schedule::new(1, 8.0, 3.0).unwrap();
    assert_eq!((s.steps(), s.whiten_bias_steps()), (g["optimizers"]["schedule"]["total_train_steps"].as_u64().unwrap() as usize, 3));
}

/// Replays the case in `T` at tolerance `rtol`.
fn replay<T: Real>(g: &Value, rtol: f64) -> Result<Report, String> {
    let dev = CpuDevice::<T>::new(2).map_err(|e| e.to_string())?;
    let widths: Vec<usize> = g["architecture"]["widths"].as_array().unwrap().iter().map(|w| w.as_u64().unwrap() as usize).collect();
    let widths = [widths[0], widths[1], widths[2]];
    // One batch per epoch: 8 steps, the whitening bias trained for 3.
    let schedule = Schedule::new(1, 8.0, 3.0).map_err(|e| e.to_string())?;
    let mut r = Recipe::new(&dev, widths, FilterMethod::record(), BATCH, schedule, 0).map_err(|e| e.to_string())?;
    let names: Vec<&str> = g["param_names"].as_array().unwrap().iter().map(|n| n.as_str().unwrap()).collect();
    assert_eq!(r.net.params.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(), names, "the reference's parameters");
    // The whitening weight comes from the file: its eigenvectors' signs
    // are the solver's (the whitening itself is checked in the crate).
    for p in &mut r.net.params {
        dev.upload(&host(&floats(&g["initial"]["params"][&p.name])), &mut p.value).unwrap();
    }
    for (name, buf) in r.net.buffers_mut() {
        dev.upload(&host(&floats(&g["initial"]["buffers"][&name])), buf).unwrap();
    }
    let train: Vec<T> = images(&g["data"]["train_images"]);
    let labels: Vec<u8> = g["data"]["train_labels"].as_array().unwrap().iter().map(|l| l.as_u64().unwrap() as u8).collect();
    let (mut x, mut y) = (dev.zeros(BATCH * PIXELS).unwrap(), dev.labels(BATCH).unwrap());
    let mut ck = Checker::new(rtol);
    for (k, want) in g["steps"].as_array().unwrap().iter().enumerate() {
        let at = |what: &str| format!("step{k}.{what}");
        let rows: Vec<usize> = want["images"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as usize).collect();
        assert_eq!(rows, [BATCH * k, BATCH * (k + 1)]);
        dev.upload(&train[rows[0] * PIXELS..rows[1] * PIXELS], &mut x).unwrap();
        dev.upload_labels(&labels[rows[0]..rows[1]], &mut y).unwrap();
        // The schedule: each group's rate, and whether the bias trains.
        let (f, fb) = (schedule.lr(k).unwrap(), schedule.whiten_bias_lr(k));
        let lr = &want["lr"];
        ck.check(at("lr"), &[recipe::BIAS_LR * fb.unwrap_or(0.0), recipe::BIAS_LR * f, recipe::HEAD_LR * f, FilterMethod::record().lr() * f], &["whiten_bias", "norm_biases", "head", "muon"].map(|key| num(&lr[key])));
        if want["whiten_bias_grad"].as_bool() != Some(fb.is_some()) {
            ck.fail(at("whiten_bias_grad"));
        }
        let stats = r.train_step(&dev, &x, &y).map_err(|e| at(&e.to_string()))?;
        ck.check(at("loss"), &[stats.loss], &[num(&want["loss"])]);
        ck.check(at("logits"), &download(&dev, r.net.logits(), BATCH * 10), &floats(&want["logits"]));
        for p in &r.net.params {
            ck.check(at(&p.name), &download(&dev, &p.value, p.len()), &floats(&want["params"][&p.name]));
        }
        for (name, buf) in r.net.buffers_mut() {
            let want = floats(&want["buffers"][&name]);
            ck.check(at(&name), &download(&dev, buf, want.len()), &want);
        }
    }
    let test: Vec<T> = images(&g["data"]["test_images"]);
    let mut eval = Evaluator::new(&dev, BATCH).unwrap();
    for (tta, key) in [(false, "logits"), (true, "tta_logits")] {
        let mut out = vec![T::of_f64(0.0); test.len() / PIXELS * 10];
        eval.logits(&dev, &mut r.net, &test, tta, &mut out).map_err(|e| e.to_string())?;
        ck.check(format!("eval.{key}"), &out.iter().map(|v| v.as_f64()).collect::<Vec<_>>(), &floats(&g["eval"][key]));
    }
    ck.finish()
}

#[test]
fn the_recipe_matches_torch() {
    let g = case();
    let cases = [("airbench f64", 1e-9), ("airbench f32", 1e-4)];
    let summary = format!("airbench recipe from {}", golden_dir().join("airbench").display());
    run_suite(&summary, &cases, |c| c.0, |&(name, rtol)| if name.ends_with("f64") { replay::<f64>(&g, rtol) } else { replay::<f32>(&g, rtol) })
        .unwrap_or_else(|e| panic!("{e}"));
}

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
