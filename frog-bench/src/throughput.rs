//! `frog-bench throughput`: training samples per second of SGD, AdamW,
//! FROG and K-FROG steps on one model, from a few timed steps on generated batches
//! (no loader, no evaluation), and each one's step time against SGD's.

use std::sync::Arc;
use std::time::Instant;

use frog_core::{AdamWConfig, Config, KfrogConfig, SgdConfig};

use crate::arch::Arch;
pub use crate::cli::ThroughputArgs;
use crate::data::loader::eval_batches;
use crate::data::synthetic;
use crate::device::Device;
use crate::error::{Error, Result};
use crate::model::Net;
use crate::optim::{Method, Optimizer};
use crate::train::{train_step, Staging};

/// Seconds per step of one optimizer.
pub fn time_steps<D: Device>(dev: &D, arch: &Arch, method: Method, batch: usize, steps: usize) -> Result<f64> {
    let images = Arc::new(synthetic::generate(0, 0, batch));
    let host = eval_batches(images, batch)?.next().ok_or_else(|| Error::new("no batch generated"))??;
    let mut net = Net::new(dev, arch, batch, 0)?;
    let mut opt = Optimizer::new(dev, method, &mut net, batch, 0)?;
    let mut st = Staging::new(dev, arch, batch)?;
    st.upload(dev, &host)?;
    train_step(dev, &mut net, &mut opt, &st, batch)?;
    let start = Instant::now();
    for _ in 0..steps {
        train_step(dev, &mut net, &mut opt, &st, batch)?;
    }
    Ok(start.elapsed().as_secs_f64() / steps as f64)
}

/// Measures and prints SGD's, AdamW's, FROG's and K-FROG's training
/// throughput (K-FROG with the original's defaults at `--kfrog-sample`).
pub fn run<D: Device>(dev: &D, args: &ThroughputArgs) -> Result<()> {
    args.validate()?;
    let arch = Arch::by_name(&args.model)?;
    let macs = Net::new(dev, &arch, 1, 0)?.forward_macs();
    let sgd = Method::from(SgdConfig { lr: 0.1, momentum: 0.9, weight_decay: 1e-4, nesterov: false, ..SgdConfig::default() });
    let frog = Method::from(Config {
        lr: 0.01,
        lr_other_ratio: 1.0,
        momentum: 0.9,
        weight_decay: 1e-5,
        sample_size: Some(args.sample),
        ..Config::default()
    });
    println!("{} on {}, batch {}, {} timed steps each", args.model, dev.describe(), args.batch_size, args.steps);
    let t_sgd = time_steps(dev, &arch, sgd, args.batch_size, args.steps)?;
    // Forward, input and weight gradients: 3 products of 2 FLOP per MAC.
    let gflops = 6.0 * macs * args.batch_size as f64 / t_sgd / 1e9;
    println!("  SGD:            {:8.1} samples/s  {:8.1} ms/step  ({gflops:.0} GFLOP/s in fwd+bwd)", args.batch_size as f64 / t_sgd, t_sgd * 1e3);
    // Every other optimizer's line (with its sample, if it takes one): its
    // step time beside SGD's.
    let report = |name: &str, sample: Option<usize>, t: f64| {
        let label = sample.map_or(format!("{name}:"), |s| format!("{name} (s {:3}):", s.min(args.batch_size)));
        println!("  {label:<15} {:8.1} samples/s  {:8.1} ms/step  {name}/SGD step time {:.2}x", args.batch_size as f64 / t, t * 1e3, t / t_sgd);
    };
    let adamw = Method::from(AdamWConfig { weight_decay: 5e-2, ..AdamWConfig::default() });
    report("AdamW", None, time_steps(dev, &arch, adamw, args.batch_size, args.steps)?);
    report("FROG", Some(args.sample), time_steps(dev, &arch, frog, args.batch_size, args.steps)?);
    let kfrog = Method::from(KfrogConfig { sample_size: Some(args.kfrog_sample), ..KfrogConfig::default() });
    report("K-FROG", Some(args.kfrog_sample), time_steps(dev, &arch, kfrog, args.batch_size, args.steps)?);
    Ok(())
}
