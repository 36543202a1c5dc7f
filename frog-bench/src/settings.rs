//! The range of every flag, checked before any work starts.
//!
//! These checks are plain methods on the settings, independent of the
//! parser (which only checks that a value has its type), so they hold for
//! any caller and are tested without the command line. Limits are far
//! above any real use and keep every size product, allocation and thread
//! count the run derives from a flag in range; what one optimizer accepts
//! (lr, momentum, damping) is frog-core's `validate`, run by the study's
//! plan.

use std::path::Path;

use crate::arch::Arch;
use crate::cli::{GpuCheckArgs, StudyArgs, ThroughputArgs};
use crate::error::{Error, Result};
use crate::layers::LayersArgs;
use crate::runfile::{ModelKind, Settings};

/// Most epochs of a run (the original study runs 160).
pub const MAX_EPOCHS: usize = 100_000;
/// Largest batch, and largest FROG sample: 16 times the original's 512.
pub const MAX_BATCH: usize = 8_192;
/// Most CG iterations per FROG step (the original uses 4).
pub const MAX_CG_ITERS: usize = 1_000;
/// Most Newton-Schulz steps per Muon step (the official Muon takes 5).
pub const MAX_NS_STEPS: usize = 1_000;
/// Widest block of an airbench run file's `widths` (the record's widest is
/// 256).
pub const MAX_WIDTH: usize = 4_096;
/// Most seeds of one study (`--seeds`).
pub const MAX_SEEDS: usize = 10_000;
/// Most CPU threads (`--threads`); 0 means one per CPU.
pub const MAX_THREADS: usize = 1_024;
/// Most timed steps of `throughput` and `gpu-check`.
pub const MAX_STEPS: usize = 1_000_000;

/// Checks that `v`, the value of `flag` (a flag or a run file's key), is
/// between 1 and `max`.
pub(crate) fn at_least_one(flag: &str, v: usize, max: usize) -> Result<()> {
    if (1..=max).contains(&v) {
        Ok(())
    } else {
        Err(Error::new(format!("{flag} must be between 1 and {max}, got {v}")))
    }
}

fn threads(v: usize) -> Result<()> {
    if v <= MAX_THREADS {
        Ok(())
    } else {
        Err(Error::new(format!("--threads must be at most {MAX_THREADS} (0: one per CPU), got {v}")))
    }
}

fn finite(flag: &str, v: Option<f64>) -> Result<()> {
    match v {
        Some(x) if !x.is_finite() => Err(Error::new(format!("{flag} must be a finite number, got {x}"))),
        _ => Ok(()),
    }
}

/// The study-wide settings of a run file or of the flags, `None` where not
/// given, so that both are checked by one set of rules.
pub struct Schedule<'a> {
    /// The model's name.
    pub model: Option<&'a str>,
    /// Epochs.
    pub epochs: Option<usize>,
    /// The schedule's milestones.
    pub milestones: Option<&'a [usize]>,
    /// The schedule's factor.
    pub gamma: Option<f64>,
    /// The table's accuracies.
    pub targets: Option<&'a [f64]>,
    /// Training images kept.
    pub train_limit: Option<usize>,
    /// Test images kept.
    pub test_limit: Option<usize>,
}

impl Schedule<'_> {
    /// Checks every value's range; `name` spells a key (`epochs`) as its
    /// source does (`--epochs`, or a run file's key).
    pub fn validate(&self, name: &dyn Fn(&str) -> String) -> Result<()> {
        let counts = [
            ("epochs", self.epochs, MAX_EPOCHS),
            // Any limit at or above the set's size keeps the whole set.
            ("train_limit", self.train_limit, usize::MAX),
            ("test_limit", self.test_limit, usize::MAX),
        ];
        for (key, v, max) in counts {
            v.map_or(Ok(()), |v| at_least_one(&name(key), v, max))?;
        }
        finite(&name("gamma"), self.gamma)?;
        if let Some(g) = self.gamma.filter(|g| *g <= 0.0) {
            return Err(Error::new(format!("{} must be above 0, got {g}", name("gamma"))));
        }
        if let Some(m) = self.milestones.iter().copied().flatten().find(|&&m| m > MAX_EPOCHS) {
            return Err(Error::new(format!("{}: {m} is above the most epochs, {MAX_EPOCHS}", name("milestones"))));
        }
        if let Some(t) = self.targets.iter().copied().flatten().find(|t| !(0.0..=100.0).contains(*t)) {
            return Err(Error::new(format!("{} are test accuracies in percent, from 0 to 100, got {t}", name("targets"))));
        }
        if self.targets.is_some_and(<[f64]>::is_empty) {
            return Err(Error::new(format!("{} needs at least one accuracy", name("targets"))));
        }
        match self.model {
            Some(m) => ModelKind::check(m).map(drop).map_err(|e| Error::new(format!("{}: {e}", name("model")))),
            None => Ok(()),
        }
    }
}

impl Settings {
    /// Checks every setting's own range (what one optimizer accepts is
    /// frog-core's `validate`, run by the plan); `name` spells a key as
    /// its source does.
    pub fn validate(&self, name: &dyn Fn(&str) -> String) -> Result<()> {
        let counts = [
            ("batch_size", self.batch_size, MAX_BATCH),
            ("sample", self.sample, MAX_BATCH),
            ("y_sample", self.y_sample, MAX_BATCH),
            ("cg_iters", self.cg_iters, MAX_CG_ITERS),
            ("ns_steps", self.ns_steps, MAX_NS_STEPS),
        ];
        for (key, v, max) in counts {
            v.map_or(Ok(()), |v| at_least_one(&name(key), v, max))?;
        }
        let numbers = [
            ("lr", self.lr),
            ("lr_other_ratio", self.lr_other_ratio),
            ("momentum", self.momentum),
            ("weight_decay", self.weight_decay),
            ("sgd_lr", self.sgd_lr),
            ("sgd_momentum", self.sgd_momentum),
            ("sgd_weight_decay", self.sgd_weight_decay),
            ("tau", self.tau),
            ("tau_final", self.tau_final),
            ("y_momentum", self.y_momentum),
            ("beta1", self.beta1),
            ("beta2", self.beta2),
            ("eps", self.eps),
        ];
        numbers.iter().try_for_each(|&(key, v)| finite(&name(key), v))
    }
}

/// A key's flag: `--batch-size` for `batch_size`.
pub fn flag(key: &str) -> String {
    format!("--{}", key.replace('_', "-"))
}

impl StudyArgs {
    /// Checks every flag's own range; the study's plan then checks how
    /// they combine with each other and with the run's configurations.
    pub fn validate(&self) -> Result<()> {
        self.settings().validate(&flag)?;
        self.schedule().validate(&flag)?;
        if self.out.as_deref() == Some(Path::new("")) {
            return Err(Error::new("--out must name a directory"));
        }
        if let Some(n) = self.seeds {
            at_least_one("--seeds", n, MAX_SEEDS)?;
            let first = self.seed.unwrap_or(0);
            if first.checked_add(n as u64 - 1).is_none() {
                return Err(Error::new(format!("--seed {first} with --seeds {n} runs past the largest seed, {}", u64::MAX)));
            }
        }
        threads(self.threads.unwrap_or(0))
    }
}

impl ThroughputArgs {
    /// Checks every flag's range.
    pub fn validate(&self) -> Result<()> {
        Arch::by_name(&self.model)?;
        at_least_one("--batch-size", self.batch_size, MAX_BATCH)?;
        at_least_one("--sample", self.sample, MAX_BATCH)?;
        at_least_one("--steps", self.steps, MAX_STEPS)?;
        at_least_one("--kfrog-sample", self.kfrog_sample, MAX_BATCH)?;
        threads(self.threads)
    }
}

impl LayersArgs {
    /// Checks every flag's range.
    pub fn validate(&self) -> Result<()> {
        at_least_one("--sample", self.sample, MAX_BATCH)?;
        at_least_one("--iters", self.iters, MAX_CG_ITERS)?;
        threads(self.threads)
    }
}

impl GpuCheckArgs {
    /// Checks every flag's range.
    pub fn validate(&self) -> Result<()> {
        at_least_one("--steps", self.steps, MAX_STEPS)?;
        at_least_one("--sample", self.sample, MAX_BATCH)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn study_error(a: StudyArgs) -> String {
        a.validate().expect_err("out of range").to_string()
    }

    #[test]
    fn study_defaults_and_edges_are_accepted() {
        StudyArgs::default().validate().unwrap();
        let edges = StudyArgs {
            epochs: Some(MAX_EPOCHS),
            batch_size: Some(MAX_BATCH),
            threads: Some(MAX_THREADS),
            train_limit: Some(usize::MAX),
            targets: Some(vec![0.0, 100.0]),
            milestones: Some(vec![0, MAX_EPOCHS]),
            ..StudyArgs::default()
        };
        edges.validate().unwrap();
    }

    #[test]
    fn study_counts_out_of_range_are_refused() {
        let e = study_error(StudyArgs { epochs: Some(usize::MAX), ..StudyArgs::default() });
        assert!(e.contains("--epochs must be between 1 and 100000, got 18446744073709551615"), "{e}");
        assert!(study_error(StudyArgs { epochs: Some(1 << 40), ..StudyArgs::default() }).contains("--epochs"));
        assert!(study_error(StudyArgs { epochs: Some(0), ..StudyArgs::default() }).contains("--epochs"));
        assert!(study_error(StudyArgs { batch_size: Some(0), ..StudyArgs::default() }).contains("--batch-size"));
        assert!(study_error(StudyArgs { sample: Some(MAX_BATCH + 1), ..StudyArgs::default() }).contains("--sample"));
        assert!(study_error(StudyArgs { cg_iters: Some(0), ..StudyArgs::default() }).contains("--cg-iters"));
        assert!(study_error(StudyArgs { train_limit: Some(0), ..StudyArgs::default() }).contains("--train-limit"));
        assert!(study_error(StudyArgs { test_limit: Some(0), ..StudyArgs::default() }).contains("--test-limit"));
        let e = study_error(StudyArgs { threads: Some(100_000), ..StudyArgs::default() });
        assert!(e.contains("--threads must be at most 1024"), "{e}");
        assert!(study_error(StudyArgs { milestones: Some(vec![3, MAX_EPOCHS + 1]), ..StudyArgs::default() }).contains("--milestones"));
    }

    #[test]
    fn study_numbers_must_be_finite_and_in_range() {
        assert!(study_error(StudyArgs { lr: Some(f64::NAN), ..StudyArgs::default() }).contains("--lr must be a finite number"));
        assert!(study_error(StudyArgs { tau_final: Some(f64::INFINITY), ..StudyArgs::default() }).contains("--tau-final"));
        assert!(study_error(StudyArgs { gamma: Some(0.0), ..StudyArgs::default() }).contains("--gamma must be above 0"));
        assert!(study_error(StudyArgs { gamma: Some(f64::NAN), ..StudyArgs::default() }).contains("--gamma"));
        for bad in [f64::NAN, -1.0, 100.5] {
            let e = study_error(StudyArgs { targets: Some(vec![50.0, bad]), ..StudyArgs::default() });
            assert!(e.contains("--targets"), "{e}");
        }
        assert!(study_error(StudyArgs { targets: Some(vec![]), ..StudyArgs::default() }).contains("--targets"));
    }

    #[test]
    fn study_names_are_checked() {
        assert!(study_error(StudyArgs { model: Some("vgg".into()), ..StudyArgs::default() }).contains("unknown model `vgg`"));
        assert!(study_error(StudyArgs { out: Some("".into()), ..StudyArgs::default() }).contains("--out"));
    }

    #[test]
    fn subcommand_ranges_are_checked() {
        let t = ThroughputArgs { model: "resnet-small".into(), batch_size: 128, sample: 16, kfrog_sample: 64, steps: 3, threads: 0, precision: None };
        t.validate().unwrap();
        assert!(ThroughputArgs { steps: 0, ..t.clone() }.validate().unwrap_err().to_string().contains("--steps"));
        assert!(ThroughputArgs { threads: MAX_THREADS + 1, ..t.clone() }.validate().unwrap_err().to_string().contains("--threads"));
        assert!(ThroughputArgs { model: "x".into(), ..t }.validate().is_err());
        LayersArgs::default().validate().unwrap();
        assert!(LayersArgs { iters: 0, ..LayersArgs::default() }.validate().unwrap_err().to_string().contains("--iters"));
        assert!(LayersArgs { sample: 1 << 54, ..LayersArgs::default() }.validate().unwrap_err().to_string().contains("--sample"));
        let g = GpuCheckArgs { steps: 5, sample: 64, no_golden: false, torch_script: "x".into() };
        g.validate().unwrap();
        assert!(GpuCheckArgs { sample: 0, ..g }.validate().unwrap_err().to_string().contains("--sample"));
    }
}
