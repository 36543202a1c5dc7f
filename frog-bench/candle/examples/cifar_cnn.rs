//! Trains the example CNN on CIFAR-10 with candle's autograd and FROG on
//! frog-cpu (`frog_candle::FrogOptimizer`), printing the loss and the test
//! accuracy after every epoch.
//!
//! `cargo run --release -p frog-candle --example cifar_cnn -- [--epochs N]
//! [--steps N] [--batch N] [--lr X] [--seed N] [--test-limit N]`; the data
//! is found as `frog-bench` finds it: `$FROG_DATA`, else its cache, else a
//! download, else (said on stderr) the synthetic set. FROG's lr 0.01 trains
//! this BatchNorm-free net; 0.03 diverges, which the optimizer reports.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use candle_nn::{ModuleT, Optimizer};
use frog_bench::data::loader::{eval_batches, train_batches, HostBatch};
use frog_bench::data::{default_cache, load, DataOptions, Images};
use frog_candle::model::Cnn;
use frog_candle::{FrogOptimizer, ParamsFrog};
use frog_core::Config;

/// What the command line asks for.
struct Args {
    lr: f64,
    batch: usize,
    seed: u64,
    epochs: usize,
    steps: Option<usize>,
    test_limit: Option<usize>,
}

fn parse(args: &[String]) -> Result<Args, String> {
    let mut a = Args { lr: 0.01, batch: 64, seed: 0, epochs: 1, steps: None, test_limit: None };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let int = || value.parse::<usize>().map_err(|e| format!("{flag} {value}: {e}"));
        match flag.as_str() {
            "--epochs" => a.epochs = int()?,
            "--steps" => a.steps = Some(int()?),
            "--batch" => a.batch = int()?,
            "--seed" => a.seed = int()? as u64,
            "--test-limit" => a.test_limit = Some(int()?),
            "--lr" => a.lr = value.parse().map_err(|e| format!("--lr {value}: {e}"))?,
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    if a.batch == 0 {
        return Err("--batch must be at least 1".into());
    }
    Ok(a)
}

fn to_tensors(b: HostBatch, dev: &Device) -> candle_core::Result<(Tensor, Tensor)> {
    let n = b.len();
    let labels: Vec<u32> = b.labels.iter().map(|&l| u32::from(l)).collect();
    Ok((Tensor::from_vec(b.x, (n, 3, 32, 32), dev)?, Tensor::from_vec(labels, n, dev)?))
}

/// Top-1 accuracy of `model` on `images`, in percent.
fn accuracy(model: &Cnn, images: Arc<Images>) -> Result<f64, Box<dyn std::error::Error>> {
    let (n, mut correct) = (images.len().max(1), 0usize);
    for b in eval_batches(images, 500)? {
        let (x, labels) = to_tensors(b?, &Device::Cpu)?;
        let pred = model.forward_t(&x, false)?.argmax(1)?;
        correct += pred.eq(&labels)?.to_dtype(DType::U32)?.sum_all()?.to_scalar::<u32>()? as usize;
    }
    Ok(100.0 * correct as f64 / n as f64)
}

fn run(args: &[String]) -> Result<(), Box<dyn std::error::Error>> {
    let a = parse(args)?;
    let env_dir = std::env::var_os("FROG_DATA").filter(|v| !v.is_empty()).map(Into::into);
    let opts = DataOptions { env_dir, cache: default_cache(), download: true, seed: a.seed, test_limit: a.test_limit, ..DataOptions::default() };
    let data = load(&opts)?;
    println!("{}: {} training, {} test images; FROG lr {}, batch {}", data.source, data.train.len(), data.test.len(), a.lr, a.batch);

    // FROG's glue: the model's taps, the optimizer, and backward_step below.
    let model = Cnn::new(&Device::Cpu, a.seed)?;
    let frog = Config { lr: a.lr, momentum: 0.9, ..Config::default() };
    let mut opt = FrogOptimizer::new(model.vars(), ParamsFrog { seed: a.seed, ..ParamsFrog::new(frog, a.batch) })?;
    for tap in model.taps() {
        opt.add_tap(tap)?;
    }

    let mut left = a.steps.unwrap_or(usize::MAX);
    for epoch in 0..a.epochs {
        let (start, mut steps, mut loss_sum) = (Instant::now(), 0usize, 0f64);
        for b in train_batches(Arc::clone(&data.train), a.batch, a.seed, epoch as u64)?.take(left) {
            let (x, labels) = to_tensors(b?, &Device::Cpu)?;
            let loss = candle_nn::loss::cross_entropy(&model.forward_t(&x, true)?, &labels)?;
            opt.backward_step(&loss)?;
            (steps, loss_sum) = (steps + 1, loss_sum + f64::from(loss.to_scalar::<f32>()?));
        }
        left -= steps;
        let acc = accuracy(&model, Arc::clone(&data.test))?;
        println!("epoch {}: {steps} steps, mean loss {:.4}, test accuracy {acc:.2} %, {:.1} s", epoch + 1, loss_sum / steps.max(1) as f64, start.elapsed().as_secs_f64());
        if left == 0 {
            break;
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
