//! Trains the example CNN on CIFAR-10 with candle's autograd and FROG on
//! frog-cpu, printing the loss and the test accuracy after every epoch.
//!
//! `cargo run --release -p frog-candle --example cifar_cnn -- [--epochs N]
//! [--steps N] [--batch N] [--lr X] [--seed N] [--test-limit N]`; the data
//! comes from `$FROG_DATA` or the repository's shared directory.

use std::process::ExitCode;
use std::sync::Arc;

use frog_bench::data::cifar::{load_test, load_train, PIXELS};
use frog_bench::data::Images;
use frog_candle::train::{data_dir, frog_config, TrainConfig, Trainer};

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
    let dir = data_dir();
    let train_set = Arc::new(load_train(&dir)?);
    let mut test = load_test(&dir)?;
    if let Some(n) = a.test_limit.filter(|&n| n < test.len()) {
        test = Images { pixels: test.pixels[..n * PIXELS].to_vec(), labels: test.labels[..n].to_vec() };
    }
    let test = Arc::new(test);
    println!("CIFAR-10 from {}: {} training, {} test images; FROG lr {}, batch {}", dir.display(), train_set.len(), test.len(), a.cfg.frog.lr, a.cfg.batch);
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
