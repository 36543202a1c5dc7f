//! Trains the example CNN on CIFAR-10 with candle's autograd and FROG on
//! frog-cpu, printing the loss and the test accuracy after every epoch.
//!
//! `cargo run --release -p frog-candle --example cifar_cnn -- [--epochs N]
//! [--steps N] [--batch N] [--lr X] [--seed N] [--test-limit N]`; the data
//! is found as `frog-bench` finds it: `$FROG_DATA`, else its cache, else a
//! download, else (said on stderr) the synthetic set.

use std::process::ExitCode;
use std::sync::Arc;

use frog_bench::data::{default_cache, load, DataOptions};
use frog_candle::train::{frog_config, TrainConfig, Trainer};

/// What the command line asks for.
struct Args {
    cfg: TrainConfig,
    epochs: usize,
    steps: Option<usize>,
    test_limit: Option<usize>,
}

fn parse(args: &[String]) -> Result<Args, String> {
    let mut a = Args { cfg: TrainConfig { frog: frog_config(), batch: 64, seed: 0, threads: 0 }, epochs: 1, steps: None, test_limit: None };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let int = || value.parse::<usize>().map_err(|e| format!("{flag} {value}: {e}"));
        match flag.as_str() {
            "--epochs" => a.epochs = int()?,
            "--steps" => a.steps = Some(int()?),
            "--batch" => a.cfg.batch = int()?,
            "--seed" => a.cfg.seed = int()? as u64,
            "--test-limit" => a.test_limit = Some(int()?),
            "--lr" => a.cfg.frog.lr = value.parse().map_err(|e| format!("--lr {value}: {e}"))?,
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    Ok(a)
}

fn run(args: &[String]) -> Result<(), Box<dyn std::error::Error>> {
    let a = parse(args)?;
    let env_dir = std::env::var_os("FROG_DATA").filter(|v| !v.is_empty()).map(Into::into);
    let opts = DataOptions { env_dir, cache: default_cache(), download: true, seed: a.cfg.seed, test_limit: a.test_limit, ..DataOptions::default() };
    let data = load(&opts)?;
    let (train_set, test) = (data.train, data.test);
    println!("{}: {} training, {} test images; FROG lr {}, batch {}", data.source, train_set.len(), test.len(), a.cfg.frog.lr, a.cfg.batch);
    let mut trainer = Trainer::new(a.cfg)?;
    let mut left = a.steps;
    for epoch in 0..a.epochs {
        if left == Some(0) {
            break;
        }
        let stats = trainer.epoch(Arc::clone(&train_set), epoch as u64, left)?;
        left = left.map(|l| l - stats.len());
        let n = stats.len().max(1) as f64;
        let loss = stats.iter().map(|s| f64::from(s.loss)).sum::<f64>() / n;
        let (secs, frog) = (stats.iter().map(|s| s.secs).sum::<f64>(), stats.iter().map(|s| s.frog_secs).sum::<f64>());
        let acc = trainer.accuracy(Arc::clone(&test), 500)?;
        println!(
            "epoch {}: {} steps, mean loss {loss:.4}, test accuracy {acc:.2} %, {secs:.1} s, {:.1} % of it in the FROG step",
            epoch + 1,
            stats.len(),
            100.0 * frog / secs.max(1e-12)
        );
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
