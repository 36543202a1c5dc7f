//! The recipe against `airbench/recipe.json` of the golden folder (torch's
//! float64 run of the reference at widths 8/16/16; see its README): the
//! train-mode logits and summed loss, four steps of Nesterov SGD and Muon
//! under the schedules with every parameter and BatchNorm statistic after
//! each, then the plain and the test-time-augmented logits. Generic over
//! the [`Device`], so the CPU device (f64 within 1e-9, f32 within 1e-4)
//! and the GPU device (`device::cuda`'s tests, on the emulator in CI)
//! replay the same case.

use frog_core::Scalar;
use frog_cpu::golden::{golden_dir, Checker, Report};
use serde_json::Value;

use super::loader::{self, normalize};
use super::model::{BN_EPS, BN_MOMENTUM, LOSS};
use super::recipe::{self, sgd, Evaluator, FilterMethod, Recipe};
use super::schedule::Schedule;
use crate::data::cifar::PIXELS;
use crate::device::{Device, Reduction};

/// The case's images per step, its batch.
const BATCH: usize = 16;

/// The parsed case.
pub(crate) fn case() -> Value {
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
fn images<T: Scalar>(hex: &Value) -> Vec<T> {
    let hex = hex.as_str().expect("hex").as_bytes();
    let pixels: Vec<u8> = hex.chunks(2).map(|h| u8::from_str_radix(std::str::from_utf8(h).unwrap(), 16).unwrap()).collect();
    let mut out = vec![T::ZERO; pixels.len()];
    normalize(&pixels, &mut out).unwrap();
    out
}

fn host<T: Scalar>(v: &[f64]) -> Vec<T> {
    v.iter().map(|&x| T::of_f64(x)).collect()
}

fn download<D: Device>(dev: &D, buf: &D::Buffer, n: usize) -> Vec<f64> {
    let mut out = vec![D::Scalar::ZERO; n];
    dev.download(buf, &mut out).unwrap();
    out.iter().map(|v| v.as_f64()).collect()
}

/// Replays the case `g` on `dev` at tolerance `rtol`.
pub(crate) fn replay<D: Device>(dev: &D, g: &Value, rtol: f64) -> Result<Report, String> {
    let widths: Vec<usize> = g["architecture"]["widths"].as_array().unwrap().iter().map(|w| w.as_u64().unwrap() as usize).collect();
    let widths = [widths[0], widths[1], widths[2]];
    // One batch per epoch: 8 steps, the whitening bias trained for 3.
    let schedule = Schedule::new(1, 8.0, 3.0).map_err(|e| e.to_string())?;
    let mut r = Recipe::new(dev, widths, FilterMethod::record(), BATCH, schedule, 0).map_err(|e| e.to_string())?;
    let names: Vec<&str> = g["param_names"].as_array().unwrap().iter().map(|n| n.as_str().unwrap()).collect();
    assert_eq!(r.net.params.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(), names, "the reference's parameters");
    // The whitening weight comes from the file: its eigenvectors' signs
    // are the solver's (the whitening itself is checked in the crate).
    for p in &mut r.net.params {
        dev.upload(&host::<D::Scalar>(&floats(&g["initial"]["params"][&p.name])), &mut p.value).unwrap();
    }
    for (name, buf) in r.net.buffers_mut() {
        dev.upload(&host::<D::Scalar>(&floats(&g["initial"]["buffers"][&name])), buf).unwrap();
    }
    let train: Vec<D::Scalar> = images(&g["data"]["train_images"]);
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
        let stats = r.train_step(dev, &x, &y).map_err(|e| at(&e.to_string()))?;
        ck.check(at("loss"), &[stats.loss], &[num(&want["loss"])]);
        ck.check(at("logits"), &download(dev, r.net.logits(), BATCH * 10), &floats(&want["logits"]));
        for p in &r.net.params {
            ck.check(at(&p.name), &download(dev, &p.value, p.len()), &floats(&want["params"][&p.name]));
        }
        for (name, buf) in r.net.buffers_mut() {
            let want = floats(&want["buffers"][&name]);
            ck.check(at(&name), &download(dev, buf, want.len()), &want);
        }
    }
    let test: Vec<D::Scalar> = images(&g["data"]["test_images"]);
    let mut eval = Evaluator::new(dev, BATCH).unwrap();
    for (tta, key) in [(false, "logits"), (true, "tta_logits")] {
        let mut out = vec![D::Scalar::ZERO; test.len() / PIXELS * 10];
        eval.logits(dev, &mut r.net, &test, tta, &mut out).map_err(|e| e.to_string())?;
        ck.check(format!("eval.{key}"), &out.iter().map(|v| v.as_f64()).collect::<Vec<_>>(), &floats(&g["eval"][key]));
    }
    ck.finish()
}

#[cfg(test)]
mod tests {
    use frog_cpu::golden::run_suite;

    use super::*;
    use crate::device::cpu::CpuDevice;

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

    #[test]
    fn the_recipe_matches_torch() {
        let g = case();
        let cases = [("airbench f64", 1e-9), ("airbench f32", 1e-4)];
        let summary = format!("airbench recipe from {}", golden_dir().join("airbench").display());
        run_suite(&summary, &cases, |c| c.0, |&(name, rtol)| {
            let dev = |e: frog_cpu::CpuError| e.to_string();
            if name.ends_with("f64") {
                replay(&CpuDevice::<f64>::new(2).map_err(dev)?, &g, rtol)
            } else {
                replay(&CpuDevice::<f32>::new(2).map_err(dev)?, &g, rtol)
            }
        })
        .unwrap_or_else(|e| panic!("{e}"));
    }
}
