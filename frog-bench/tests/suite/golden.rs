//! The engine against `golden/tiny_cnn_sgd_frog.json`: PyTorch's losses,
//! logits, gradients, BatchNorm running statistics and parameters after
//! each of 4 steps, for torch SGD and for FROG, in f64 (1e-9) and f32 (1e-4).

use frog_bench::arch::Arch;
use frog_bench::device::cpu::CpuDevice;
use frog_bench::device::Device;
use frog_bench::model::Net;
use frog_bench::optim::{Method, Optimizer};
use frog_core::{Config, SgdConfig};
use frog_cpu::gemm::Real;
use serde_json::Value;

fn golden() -> Value {
    let path = frog_cpu::golden::golden_dir().join("tiny_cnn_sgd_frog.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_str(&text).expect("valid JSON")
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array().expect("an array").iter().map(|x| x.as_f64().expect("a number")).collect()
}

/// Max-norm relative check, the golden cases' rule, with an absolute floor for
/// all-zero references.
fn check(what: &str, got: &[f64], want: &[f64], rtol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs())).max(1e-12);
    let err = got.iter().zip(want).fold(0.0f64, |m, (a, b)| m.max((a - b).abs()));
    assert!(err <= rtol * scale, "{what}: max error {err:e} > {rtol:e} * {scale:e}");
}

fn download<T: Real>(dev: &CpuDevice<T>, buf: &Vec<T>, n: usize) -> Vec<f64> {
    let mut host = vec![T::of_f64(0.0); n];
    dev.download(buf, &mut host).unwrap();
    host.iter().map(|v| v.as_f64()).collect()
}

fn run<T: Real>(run: &str, rtol: f64) {
    let g = golden();
    let dev = CpuDevice::<T>::new(2).unwrap();
    let mut net = Net::new(&dev, &Arch::tiny_cnn(), 8, 0).unwrap();
    for p in &mut net.params {
        let init: Vec<T> = floats(&g["initial"]["params"][&p.name]).into_iter().map(T::of_f64).collect();
        dev.upload(&init, &mut p.value).unwrap();
    }
    for (name, buf) in net.buffers_mut() {
        let init: Vec<T> = floats(&g["initial"]["buffers"][&name]).into_iter().map(T::of_f64).collect();
        dev.upload(&init, buf).unwrap();
    }
    let o = &g["runs"][run]["optimizer"];
    let f = |k: &str| o[k].as_f64().unwrap();
    let method = match run {
        "sgd" => Method::from(SgdConfig { lr: f("lr"), momentum: f("momentum"), weight_decay: f("weight_decay"), nesterov: false, ..SgdConfig::default() }),
        _ => Method::from(Config {
            lr: f("lr"),
            lr_other_ratio: f("lr_other_ratio"),
            momentum: f("momentum"),
            nesterov: o["nesterov"].as_bool().unwrap(),
            weight_decay: f("weight_decay"),
            sample_size: None,
            num_iters: o["num_iters"].as_u64().unwrap() as usize,
            tau: f("tau"),
            tau_final: None,
            tau_steps: None,
            batch_averaged: o["batch_averaged"].as_bool().unwrap(),
            denom_eps: f("denom_eps"),
            ..Config::default()
        }),
    };
    let mut opt = Optimizer::new(&dev, method, &mut net, 8, 0).unwrap();
    let mut x = dev.zeros(8 * 3 * 64).unwrap();
    let mut labels = dev.labels(8).unwrap();
    for (step, (batch, want)) in g["batches"].as_array().unwrap().iter().zip(g["runs"][run]["steps"].as_array().unwrap()).enumerate() {
        let host: Vec<T> = floats(&batch["x"]).into_iter().map(T::of_f64).collect();
        dev.upload(&host, &mut x).unwrap();
        let l: Vec<u8> = batch["labels"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u8).collect();
        dev.upload_labels(&l, &mut labels).unwrap();
        let at = |what: &str| format!("{run} step {step} {what}");

        let sample = opt.draw_sample().unwrap();
        net.forward(&dev, &x, 8, true).unwrap();
        let stats = net.loss(&dev, 8, &labels).unwrap();
        check(&at("loss"), &[stats.loss], &[want["loss"].as_f64().unwrap()], rtol);
        check(&at("logits"), &download(&dev, net.logits(), 24), &floats(&want["logits"]), rtol);
        net.backward(&dev, &x, 8, sample).unwrap();
        for p in &net.params {
            check(&at(&format!("grad {}", p.name)), &download(&dev, &p.grad, p.len()), &floats(&want["grads"][&p.name]), rtol);
        }
        for (name, buf) in net.buffers_mut() {
            let want = floats(&want["buffers"][&name]);
            check(&at(&name), &download(&dev, buf, want.len()), &want, rtol);
        }
        assert_eq!(net.batches_tracked as f64, floats(&want["buffers"]["bn1.num_batches_tracked"])[0]);
        opt.step(&dev, &mut net).unwrap();
        for p in &net.params {
            check(&at(&format!("param {}", p.name)), &download(&dev, &p.value, p.len()), &floats(&want["params"][&p.name]), rtol);
        }
    }
}

#[test]
fn sgd_f64_matches_pytorch() {
    run::<f64>("sgd", 1e-9);
}

#[test]
fn frog_f64_matches_pytorch() {
    run::<f64>("frog", 1e-9);
}

#[test]
fn sgd_f32_matches_pytorch() {
    run::<f32>("sgd", 1e-4);
}

#[test]
fn frog_f32_matches_pytorch() {
    run::<f32>("frog", 1e-4);
}
