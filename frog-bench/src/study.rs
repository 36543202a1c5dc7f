//! The study: configurations from the flags (or the defaults of the
//! original study and of its CPU-sized version), the data, the runs, and
//! the reports.

use std::path::PathBuf;

use frog_core::{Config, SgdConfig};

use crate::arch::Arch;
use crate::cli::{OptName, StudyArgs};
use crate::data::{self, DataOptions};
use crate::device::Device;
use crate::error::{Error, Result};
use crate::optim::Method;
use crate::report::{self, RunResult};
use crate::train::{train, RunConfig};

/// Everything the study will do.
#[derive(Clone, Debug)]
pub struct Plan {
    /// The runs, in order.
    pub configs: Vec<RunConfig>,
    /// Test accuracies (percent) of the table.
    pub targets: Vec<f64>,
    /// Output directory.
    pub out: PathBuf,
    /// Where the data comes from.
    pub data: DataOptions,
}

/// A model's study defaults.
struct Defaults {
    epochs: usize,
    milestones: Vec<usize>,
    targets: Vec<f64>,
    frog_batch: usize,
    frog_sample: usize,
    sgd_batches: [usize; 2],
    test_limit: Option<usize>,
}

fn defaults(model: &str) -> Defaults {
    if model == "resnet18" {
        // The original study (DESIGN.md's table): 160 epochs, x0.1 at 80 and 120.
        Defaults {
            epochs: 160,
            milestones: vec![80, 120],
            targets: vec![88.0, 90.0, 92.0, 94.0],
            frog_batch: 512,
            frog_sample: 64,
            sgd_batches: [128, 512],
            test_limit: None,
        }
    } else {
        // The CPU study: the same schedule shape (drops at 1/2 and 3/4 of
        // the budget) over 6 epochs, FROG's sample at the original's 1/8 of
        // the batch, and 2000 test images so evaluation stays cheap.
        Defaults {
            epochs: 6,
            milestones: vec![3, 5],
            targets: vec![40.0, 50.0, 55.0, 60.0],
            frog_batch: 128,
            frog_sample: 16,
            sgd_batches: [128, 512],
            test_limit: Some(2000),
        }
    }
}

fn frog_method(a: &StudyArgs, sample: usize) -> Method {
    Method::Frog(Config {
        lr: a.lr.unwrap_or(0.01),
        lr_other_ratio: a.lr_other_ratio.unwrap_or(1.0),
        momentum: a.momentum.unwrap_or(0.9),
        nesterov: a.nesterov,
        weight_decay: a.weight_decay.unwrap_or(1e-5),
        sample_size: Some(sample),
        num_iters: a.cg_iters.unwrap_or(4),
        tau: a.tau.unwrap_or(1e-6),
        tau_final: a.tau_final,
        tau_steps: a.tau_steps,
        batch_averaged: true,
        denom_eps: 1e-10,
    })
}

fn sgd_method(a: &StudyArgs) -> Method {
    Method::Sgd(SgdConfig {
        lr: a.lr.unwrap_or(0.1),
        momentum: a.momentum.unwrap_or(0.9),
        weight_decay: a.weight_decay.unwrap_or(1e-4),
        nesterov: a.nesterov,
    })
}

/// The flags that set one optimizer's settings, as given.
fn per_optimizer_flags(a: &StudyArgs) -> Vec<&'static str> {
    let given = [
        ("--batch-size", a.batch_size.is_some()),
        ("--sample", a.sample.is_some()),
        ("--lr", a.lr.is_some()),
        ("--lr-other-ratio", a.lr_other_ratio.is_some()),
        ("--momentum", a.momentum.is_some()),
        ("--nesterov", a.nesterov),
        ("--weight-decay", a.weight_decay.is_some()),
        ("--cg-iters", a.cg_iters.is_some()),
        ("--tau", a.tau.is_some()),
        ("--tau-final", a.tau_final.is_some()),
        ("--tau-steps", a.tau_steps.is_some()),
    ];
    given.iter().filter(|(_, g)| *g).map(|(f, _)| *f).collect()
}

/// Builds the plan from the flags, checking them all before anything runs;
/// `data_from_env` says `a.data` came from `$FROG_DATA` rather than
/// `--data`, and `default_model` is the model of the device's default
/// study (`resnet-small` on the CPU, the original's `resnet18` on a GPU).
pub fn plan(a: &StudyArgs, data_from_env: bool, default_model: &str) -> Result<Plan> {
    a.validate()?;
    let model = a.model.clone().unwrap_or_else(|| default_model.into());
    let arch = Arch::by_name(&model)?;
    let d = defaults(&model);
    let epochs = a.epochs.unwrap_or(d.epochs);
    let gamma = a.gamma.unwrap_or(0.1);
    let run = |label: String, method: Method, batch: usize| -> Result<RunConfig> {
        method.validate().map_err(|e| Error::new(format!("invalid optimizer settings: {e}")))?;
        let milestones = a.milestones.clone().unwrap_or_else(|| d.milestones.clone());
        Ok(RunConfig { label, arch: arch.clone(), method, batch, epochs, milestones, gamma, seed: a.seed.unwrap_or(0) })
    };
    let configs = match a.optimizer {
        Some(OptName::Frog) => {
            let (batch, sample) = (a.batch_size.unwrap_or(d.frog_batch), a.sample.unwrap_or(d.frog_sample));
            if sample > batch {
                return Err(Error::new(format!("--sample {sample} is more than the batch of {batch}")));
            }
            vec![run(format!("FROG bs {batch}, s {sample}"), frog_method(a, sample), batch)?]
        }
        Some(OptName::Sgd) => {
            if a.sample.is_some() || a.cg_iters.is_some() || a.tau.is_some() || a.tau_final.is_some() || a.tau_steps.is_some() || a.lr_other_ratio.is_some() {
                return Err(Error::new("--sample, --cg-iters, --tau, --tau-final, --tau-steps and --lr-other-ratio are FROG settings; drop them for --optimizer sgd"));
            }
            let batch = a.batch_size.unwrap_or(d.sgd_batches[0]);
            vec![run(format!("SGD bs {batch}"), sgd_method(a), batch)?]
        }
        None => {
            let given = per_optimizer_flags(a);
            if !given.is_empty() {
                return Err(Error::new(format!("{} set one optimizer's settings; add --optimizer frog or --optimizer sgd", given.join(", "))));
            }
            let mut c = vec![run(format!("FROG bs {}, s {}", d.frog_batch, d.frog_sample), frog_method(a, d.frog_sample), d.frog_batch)?];
            for b in d.sgd_batches {
                c.push(run(format!("SGD bs {b}"), sgd_method(a), b)?);
            }
            c
        }
    };
    let data = DataOptions {
        dir: a.data.clone().filter(|_| !data_from_env),
        env_dir: a.data.clone().filter(|_| data_from_env),
        cache: data::default_cache(),
        download: !a.no_download,
        synthetic: a.synthetic,
        seed: a.seed.unwrap_or(0),
        train_limit: a.train_limit,
        test_limit: a.test_limit.or(d.test_limit),
    };
    Ok(Plan { configs, targets: a.targets.clone().unwrap_or(d.targets), out: a.out.clone().unwrap_or_else(|| "frog-results".into()), data })
}

/// Runs the plan on `dev`: loads the data, trains every configuration
/// with a line per epoch, and writes the table, CSV/JSON and plots to
/// `plan.out` after each configuration.
pub fn run<D: Device>(dev: &D, plan: &Plan) -> Result<Vec<RunResult>> {
    report::prepare_out(&plan.out)?;
    let data = data::load(&plan.data)?;
    let source = data.source.clone();
    println!(
        "study on {source}: {} training / {} test images, {}, results in {}",
        data.train.len(),
        data.test.len(),
        dev.describe(),
        plan.out.display()
    );
    let mut results = Vec::new();
    for cfg in &plan.configs {
        println!("== {} ({}, {} epochs, lr {}, milestones {:?}) ==", cfg.label, cfg.arch.name, cfg.epochs, cfg.method.lr(), cfg.milestones);
        let tag = if data.synthetic { " [SYNTHETIC]" } else { "" };
        let records = train(dev, &data, cfg, |r| {
            println!(
                "epoch {:3}  lr {:.5}  train loss {:.4} acc {:6.2}%  test loss {:.4} acc {:6.2}%  epoch {:6.1}s  train {:7.1}s{tag}",
                r.epoch, r.lr, r.train_loss, r.train_acc, r.test_loss, r.test_acc, r.epoch_seconds, r.train_seconds
            );
        })?;
        results.push(RunResult { config: cfg.clone(), records });
        report::write_all(&plan.out, &results, &plan.targets, &source, &dev.describe())?;
    }
    print!("{}", report::table(&results, &plan.targets, &source));
    Ok(results)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The default CPU study's plan, written out as the flag defaults of
    /// `study.rs` produced it before the run files replaced them: the
    /// embedded `cpu` run file must give exactly this (same three
    /// configurations, same settings, so the same time).
    fn cpu_study_before_run_files() -> (Vec<RunConfig>, Vec<f64>, Option<usize>) {
        let arch = Arch::by_name("resnet-small").unwrap();
        let run = |label: &str, method: Method, batch: usize| RunConfig { label: label.into(), arch: arch.clone(), method, batch, epochs: 6, milestones: vec![3, 5], gamma: 0.1, seed: 0 };
        let frog = Config {
            lr: 0.01,
            lr_other_ratio: 1.0,
            momentum: 0.9,
            nesterov: false,
            weight_decay: 1e-5,
            sample_size: Some(16),
            num_iters: 4,
            tau: 1e-6,
            tau_final: None,
            tau_steps: None,
            batch_averaged: true,
            denom_eps: 1e-10,
        };
        let sgd = SgdConfig { lr: 0.1, momentum: 0.9, weight_decay: 1e-4, nesterov: false };
        let configs = vec![run("FROG bs 128, s 16", Method::Frog(frog), 128), run("SGD bs 128", Method::Sgd(sgd), 128), run("SGD bs 512", Method::Sgd(sgd), 512)];
        (configs, vec![40.0, 50.0, 55.0, 60.0], Some(2000))
    }

    #[test]
    fn the_default_cpu_study_is_unchanged() {
        let p = plan(&StudyArgs::default(), false, "resnet-small").unwrap();
        let (configs, targets, test_limit) = cpu_study_before_run_files();
        assert_eq!(p.configs, configs);
        assert_eq!((p.targets, p.data.test_limit, p.data.train_limit), (targets, test_limit, None));
    }

    #[test]
    fn resnet18_defaults_are_the_original_study() {
        let a = StudyArgs { model: Some("resnet18".into()), ..StudyArgs::default() };
        let p = plan(&a, false, "resnet-small").unwrap();
        assert_eq!(p.targets, vec![88.0, 90.0, 92.0, 94.0]);
        let labels: Vec<&str> = p.configs.iter().map(|c| c.label.as_str()).collect();
        assert_eq!(labels, ["FROG bs 512, s 64", "SGD bs 128", "SGD bs 512"]);
        for c in &p.configs {
            assert_eq!((c.epochs, c.milestones.as_slice(), c.gamma), (160, &[80, 120][..], 0.1));
        }
        let Method::Frog(f) = p.configs[0].method else { panic!("FROG first") };
        assert_eq!((f.lr, f.momentum, f.weight_decay, f.lr_other_ratio), (0.01, 0.9, 1e-5, 1.0));
        assert_eq!((f.sample_size, f.num_iters, f.tau, f.denom_eps, f.nesterov), (Some(64), 4, 1e-6, 1e-10, false));
        let Method::Sgd(s) = p.configs[2].method else { panic!("SGD last") };
        assert_eq!((s.lr, s.momentum, s.weight_decay, s.nesterov), (0.1, 0.9, 1e-4, false));
        assert_eq!(p.data.test_limit, None);
    }

    #[test]
    fn one_configuration_takes_the_optimizer_flags() {
        let a = StudyArgs {
            optimizer: Some(OptName::Frog),
            batch_size: Some(64),
            sample: Some(8),
            lr: Some(0.02),
            tau: Some(1e-3),
            tau_final: Some(1e-5),
            tau_steps: Some(100),
            epochs: Some(2),
            data: Some("/data".into()),
            ..StudyArgs::default()
        };
        let p = plan(&a, true, "resnet-small").unwrap();
        assert_eq!(p.configs.len(), 1);
        let c = &p.configs[0];
        assert_eq!((c.label.as_str(), c.batch, c.epochs), ("FROG bs 64, s 8", 64, 2));
        let Method::Frog(f) = c.method else { panic!("FROG") };
        assert_eq!((f.lr, f.sample_size, f.tau, f.tau_final, f.tau_steps), (0.02, Some(8), 1e-3, Some(1e-5), Some(100)));
        assert_eq!((p.data.dir.as_ref(), p.data.env_dir), (None, Some("/data".into())));
        // An incomplete damping schedule is refused before anything runs.
        let bad = StudyArgs { tau_steps: None, ..a.clone() };
        assert!(plan(&bad, false, "resnet-small").unwrap_err().to_string().contains("tau_final and tau_steps"));
        // So is a sample larger than the batch, and a flag out of range.
        let big = StudyArgs { sample: Some(65), tau_steps: None, tau_final: None, ..a.clone() };
        assert!(plan(&big, false, "resnet-small").unwrap_err().to_string().contains("--sample 65 is more than the batch of 64"));
        let many = StudyArgs { epochs: Some(1 << 40), ..a };
        assert!(plan(&many, false, "resnet-small").unwrap_err().to_string().contains("--epochs"));
    }
}
