//! Run files: a study as TOML, a list of configurations, each with an
//! optimizer, its settings and its batch size (a flat `--optimizer` list
//! cannot say "SGD at batch 128 and at batch 512").
//!
//! The shipped runs (`runs/*.toml`, embedded in the binary) are the single
//! source of the study's defaults: `frog-bench` with no flags runs `cpu`,
//! `--model resnet18` (and a cuda build) runs `original`. A key a file
//! leaves out takes frog-core's default for that optimizer (the
//! original's), except `batch_size` and `lr`, which every configuration
//! names. Parsing never panics: a bad file is an error naming the file,
//! the configuration and the key.

use std::path::Path;

use frog_core::{AdamWConfig, Config, KfrogConfig, MuonConfig, SgdConfig};
use serde::Deserialize;

use crate::cli::OptName;
use crate::error::{Error, Result};
use crate::optim::Method;

/// The shipped runs, by `--run` name.
pub const SHIPPED: [(&str, &str); 4] = [
    ("cpu", include_str!("../runs/cpu.toml")),
    ("original", include_str!("../runs/original.toml")),
    ("compare", include_str!("../runs/compare.toml")),
    ("original-compare", include_str!("../runs/original-compare.toml")),
];

/// The run a model's study takes when `--run` names none: the original
/// study for ResNet-18, the CPU study otherwise.
pub fn default_run(model: &str) -> &'static str {
    if model == "resnet18" {
        "original"
    } else {
        "cpu"
    }
}

/// A study as a run file gives it.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunFile {
    /// `resnet-small` or `resnet18`.
    pub model: String,
    /// Epochs of every configuration.
    pub epochs: usize,
    /// Epochs after which lr is multiplied by `gamma` (none by default).
    #[serde(default)]
    pub milestones: Vec<usize>,
    /// The schedule's factor (0.1 by default, as the original's).
    #[serde(default = "default_gamma")]
    pub gamma: f64,
    /// Test accuracies (percent) of the table.
    pub targets: Vec<f64>,
    /// Use the first N training images.
    pub train_limit: Option<usize>,
    /// Use the first N test images.
    pub test_limit: Option<usize>,
    /// The configurations, in order (`[[config]]` tables).
    #[serde(rename = "config")]
    pub configs: Vec<Settings>,
}

fn default_gamma() -> f64 {
    0.1
}

/// One configuration's settings, from a run file's `[[config]]` or from
/// the flags (`--lr` is `lr`); `None` where it is not given. Flag names are
/// the keys with `-` for `_`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Label in tables and plots (default: optimizer, batch and sample).
    pub label: Option<String>,
    /// Name for `--config` and the results files (default: the label,
    /// lower case, `-` for every run of other characters).
    pub name: Option<String>,
    /// The optimizer (required in a run file).
    pub optimizer: Option<OptName>,
    /// Training batch size.
    pub batch_size: Option<usize>,
    /// FROG: samples of the Fisher estimate; K-FROG: input samples.
    pub sample: Option<usize>,
    /// K-FROG: output-gradient samples (default: the whole batch).
    pub y_sample: Option<usize>,
    /// Learning rate.
    pub lr: Option<f64>,
    /// FROG: the plain-SGD parameters use `lr * lr_other_ratio`.
    pub lr_other_ratio: Option<f64>,
    /// Momentum (FROG, SGD, K-FROG).
    pub momentum: Option<f64>,
    /// Nesterov momentum.
    pub nesterov: Option<bool>,
    /// Weight decay (FROG, AdamW and Muon: decoupled; SGD: coupled).
    pub weight_decay: Option<f64>,
    /// Muon: Newton-Schulz steps.
    pub ns_steps: Option<usize>,
    /// Muon: the learning rate of the SGD beside it.
    pub sgd_lr: Option<f64>,
    /// Muon: that SGD's momentum.
    pub sgd_momentum: Option<f64>,
    /// Muon: that SGD's Nesterov momentum.
    pub sgd_nesterov: Option<bool>,
    /// Muon: that SGD's (coupled) weight decay.
    pub sgd_weight_decay: Option<f64>,
    /// CG iterations (FROG, K-FROG).
    pub cg_iters: Option<usize>,
    /// FROG: damping.
    pub tau: Option<f64>,
    /// FROG: final damping of a geometric schedule.
    pub tau_final: Option<f64>,
    /// FROG: steps of that schedule.
    pub tau_steps: Option<u64>,
    /// K-FROG: running-average decay of `diag(Y^T Y)`.
    pub y_momentum: Option<f64>,
    /// AdamW: `beta1`.
    pub beta1: Option<f64>,
    /// AdamW: `beta2`.
    pub beta2: Option<f64>,
    /// AdamW's `eps`; K-FROG's damping `eps`.
    pub eps: Option<f64>,
}

impl OptName {
    /// The run-file keys this optimizer takes besides `label`, `name` and
    /// `optimizer`.
    fn keys(self) -> &'static [&'static str] {
        match self {
            Self::Frog => &["batch_size", "sample", "lr", "lr_other_ratio", "momentum", "nesterov", "weight_decay", "cg_iters", "tau", "tau_final", "tau_steps"],
            Self::Sgd => &["batch_size", "lr", "momentum", "nesterov", "weight_decay"],
            Self::AdamW => &["batch_size", "lr", "beta1", "beta2", "eps", "weight_decay"],
            Self::Kfrog => &["batch_size", "sample", "y_sample", "lr", "momentum", "nesterov", "y_momentum", "eps", "cg_iters"],
            Self::Muon => &["batch_size", "lr", "momentum", "nesterov", "weight_decay", "ns_steps", "sgd_lr", "sgd_momentum", "sgd_nesterov", "sgd_weight_decay"],
        }
    }

    /// The keys a configuration of this optimizer must give: the batch
    /// and the rates, which have no default worth running.
    fn required(self) -> &'static [&'static str] {
        match self {
            Self::Muon => &["batch_size", "lr", "sgd_lr"],
            _ => &["batch_size", "lr"],
        }
    }

    /// The name in files and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::Frog => "frog",
            Self::Sgd => "sgd",
            Self::AdamW => "adamw",
            Self::Kfrog => "kfrog",
            Self::Muon => "muon",
        }
    }
}

impl Settings {
    /// The optimizer settings given (every key but `label`, `name` and
    /// `optimizer`), in the order of the struct.
    pub fn given(&self) -> Vec<&'static str> {
        let set = [
            ("batch_size", self.batch_size.is_some()),
            ("sample", self.sample.is_some()),
            ("y_sample", self.y_sample.is_some()),
            ("lr", self.lr.is_some()),
            ("lr_other_ratio", self.lr_other_ratio.is_some()),
            ("momentum", self.momentum.is_some()),
            ("nesterov", self.nesterov.is_some()),
            ("weight_decay", self.weight_decay.is_some()),
            ("ns_steps", self.ns_steps.is_some()),
            ("sgd_lr", self.sgd_lr.is_some()),
            ("sgd_momentum", self.sgd_momentum.is_some()),
            ("sgd_nesterov", self.sgd_nesterov.is_some()),
            ("sgd_weight_decay", self.sgd_weight_decay.is_some()),
            ("cg_iters", self.cg_iters.is_some()),
            ("tau", self.tau.is_some()),
            ("tau_final", self.tau_final.is_some()),
            ("tau_steps", self.tau_steps.is_some()),
            ("y_momentum", self.y_momentum.is_some()),
            ("beta1", self.beta1.is_some()),
            ("beta2", self.beta2.is_some()),
            ("eps", self.eps.is_some()),
        ];
        set.iter().filter(|(_, g)| *g).map(|(k, _)| *k).collect()
    }

    /// These settings with every one `over` gives replacing its own (the
    /// flags over a run file's configuration).
    #[must_use]
    pub fn overridden_by(&self, over: &Self) -> Self {
        macro_rules! pick {
            ($($f:ident),*) => { Self { $($f: over.$f.clone().or_else(|| self.$f.clone())),* } };
        }
        pick!(label, name, optimizer, batch_size, sample, y_sample, lr, lr_other_ratio, momentum, nesterov, weight_decay, ns_steps, sgd_lr, sgd_momentum, sgd_nesterov, sgd_weight_decay, cg_iters, tau, tau_final, tau_steps, y_momentum, beta1, beta2, eps)
    }

    /// The keys given that `opt` does not take.
    pub fn foreign(&self, opt: OptName) -> Vec<&'static str> {
        self.given().into_iter().filter(|k| !opt.keys().contains(k)).collect()
    }

    /// The first key `opt` requires that these settings lack.
    pub fn missing(&self, opt: OptName) -> Option<&'static str> {
        let given = self.given();
        opt.required().iter().copied().find(|k| !given.contains(k))
    }

    /// The optimizer these settings describe, every key not given at
    /// frog-core's default (torch's for SGD); `None` when a key `opt`
    /// requires is missing ([`Settings::missing`]).
    pub fn method(&self, opt: OptName) -> Option<Method> {
        if self.missing(opt).is_some() {
            return None;
        }
        let lr = self.lr?;
        Some(match opt {
            OptName::Frog => {
                let d = Config::default();
                Method::Frog(Config {
                    lr,
                    lr_other_ratio: self.lr_other_ratio.unwrap_or(d.lr_other_ratio),
                    momentum: self.momentum.unwrap_or(d.momentum),
                    nesterov: self.nesterov.unwrap_or(d.nesterov),
                    weight_decay: self.weight_decay.unwrap_or(d.weight_decay),
                    sample_size: self.sample.or(d.sample_size),
                    num_iters: self.cg_iters.unwrap_or(d.num_iters),
                    tau: self.tau.unwrap_or(d.tau),
                    tau_final: self.tau_final.or(d.tau_final),
                    tau_steps: self.tau_steps.or(d.tau_steps),
                    ..d
                })
            }
            OptName::Sgd => {
                let d = SgdConfig::default();
                Method::Sgd(SgdConfig {
                    lr,
                    momentum: self.momentum.unwrap_or(d.momentum),
                    weight_decay: self.weight_decay.unwrap_or(d.weight_decay),
                    nesterov: self.nesterov.unwrap_or(d.nesterov),
                    ..d
                })
            }
            OptName::AdamW => {
                let d = AdamWConfig::default();
                Method::AdamW(AdamWConfig {
                    lr,
                    beta1: self.beta1.unwrap_or(d.beta1),
                    beta2: self.beta2.unwrap_or(d.beta2),
                    eps: self.eps.unwrap_or(d.eps),
                    weight_decay: self.weight_decay.unwrap_or(d.weight_decay),
                    ..d
                })
            }
            OptName::Kfrog => {
                let d = KfrogConfig::default();
                Method::Kfrog(KfrogConfig {
                    lr,
                    momentum: self.momentum.unwrap_or(d.momentum),
                    nesterov: self.nesterov.unwrap_or(d.nesterov),
                    y_momentum: self.y_momentum.unwrap_or(d.y_momentum),
                    eps: self.eps.unwrap_or(d.eps),
                    num_iters: self.cg_iters.unwrap_or(d.num_iters),
                    sample_size: self.sample.or(d.sample_size),
                    y_sample_size: self.y_sample.or(d.y_sample_size),
                    ..d
                })
            }
            OptName::Muon => {
                let (m, d) = (MuonConfig::default(), SgdConfig::default());
                Method::Muon {
                    filters: MuonConfig {
                        lr,
                        momentum: self.momentum.unwrap_or(m.momentum),
                        nesterov: self.nesterov.unwrap_or(m.nesterov),
                        ns_steps: self.ns_steps.unwrap_or(m.ns_steps),
                        weight_decay: self.weight_decay.unwrap_or(m.weight_decay),
                        ..m
                    },
                    rest: SgdConfig {
                        lr: self.sgd_lr?,
                        momentum: self.sgd_momentum.unwrap_or(d.momentum),
                        nesterov: self.sgd_nesterov.unwrap_or(d.nesterov),
                        weight_decay: self.sgd_weight_decay.unwrap_or(d.weight_decay),
                        ..d
                    },
                }
            }
        })
    }
}

/// The label a configuration gets when its file names none: optimizer,
/// batch and the sample sizes that tell runs apart.
pub fn default_label(method: &Method, batch: usize) -> String {
    let s = |n: Option<usize>| n.map_or(batch, |n| n.min(batch));
    match method {
        Method::Frog(c) => format!("FROG bs {batch}, s {}", s(c.sample_size)),
        Method::Kfrog(c) => match c.y_sample_size {
            Some(y) => format!("K-FROG bs {batch}, s {}, y {}", s(c.sample_size), y.min(batch)),
            None => format!("K-FROG bs {batch}, s {}", s(c.sample_size)),
        },
        Method::AdamW(_) => format!("AdamW bs {batch}"),
        Method::Sgd(_) => format!("SGD bs {batch}"),
        Method::Muon { .. } => format!("Muon bs {batch}"),
    }
}

impl Settings {
    /// The label and name of a configuration of `method` at `batch`: the
    /// ones given, else [`default_label`] and [`default_name`] of that
    /// label.
    pub fn identity_of(&self, method: &Method, batch: usize) -> (String, String) {
        let label = self.label.clone().unwrap_or_else(|| default_label(method, batch));
        let name = self.name.clone().unwrap_or_else(|| default_name(&label));
        (label, name)
    }

    /// [`Settings::identity_of`] its own method and batch; `None` when it
    /// has no optimizer or lacks a key the optimizer requires.
    pub fn identity(&self) -> Option<(String, String)> {
        Some(self.identity_of(&self.method(self.optimizer?)?, self.batch_size?))
    }
}

/// The name of a configuration that gives none: its label in lower case,
/// each run of characters other than ASCII letters and digits one `-`
/// ("FROG bs 128, s 16" is `frog-bs-128-s-16`).
pub fn default_name(label: &str) -> String {
    let lower = label.to_ascii_lowercase();
    lower.split(|c: char| !c.is_ascii_alphanumeric()).filter(|w| !w.is_empty()).collect::<Vec<_>>().join("-")
}

/// Whether `name` can name a configuration's results files: ASCII
/// letters, digits, `-`, `_` and `.`, not starting with `.`, at most 100
/// characters.
fn name_ok(name: &str) -> bool {
    (1..=100).contains(&name.len()) && !name.starts_with('.') && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

/// The `[[config]]` table (1-based) that byte `at` of `text` lies in, if
/// any: what a TOML error's span says about which configuration is bad.
fn config_at(text: &str, at: usize) -> Option<usize> {
    let before = text.get(..at)?;
    let n = before.lines().filter(|l| l.trim_start().starts_with("[[config]]")).count();
    (n > 0).then_some(n)
}

impl RunFile {
    /// Parses run file `text`; `name` (the path, or "run `cpu`") starts
    /// every error.
    pub fn parse(name: &str, text: &str) -> Result<Self> {
        let file: Self = toml::from_str(text).map_err(|e| {
            let within = e.span().and_then(|s| config_at(text, s.start)).map_or(String::new(), |n| format!(" (configuration {n})"));
            Error::new(format!("{name}{within}: {}", e.to_string().trim_end()))
        })?;
        file.validate(name)?;
        Ok(file)
    }

    /// A shipped run by name, or a run file by path.
    pub fn load(run: &str) -> Result<(String, Self)> {
        if let Some((n, text)) = SHIPPED.iter().find(|(n, _)| *n == run) {
            let name = format!("run `{n}`");
            return Ok((name.clone(), Self::parse(&name, text)?));
        }
        let names: Vec<&str> = SHIPPED.iter().map(|(n, _)| *n).collect();
        let text = std::fs::read_to_string(Path::new(run))
            .map_err(|e| Error::new(format!("--run {run}: not a shipped run ({}) and not a readable file: {e}", names.join(", "))))?;
        Ok((run.to_string(), Self::parse(run, &text)?))
    }

    /// Checks every value's range and that every configuration names its
    /// optimizer, batch and rate and only keys of that optimizer.
    fn validate(&self, name: &str) -> Result<()> {
        let key = |k: &str| format!("{name}: `{k}`");
        crate::settings::Schedule {
            model: Some(&self.model),
            epochs: Some(self.epochs),
            milestones: Some(&self.milestones),
            gamma: Some(self.gamma),
            targets: Some(&self.targets),
            train_limit: self.train_limit,
            test_limit: self.test_limit,
        }
        .validate(&key)?;
        if self.configs.is_empty() {
            return Err(Error::new(format!("{name}: no configuration (add a [[config]] table)")));
        }
        for (i, c) in self.configs.iter().enumerate() {
            let at = format!("{name}: configuration {}{}", i + 1, c.label.as_ref().map_or(String::new(), |l| format!(" (`{l}`)")));
            let Some(opt) = c.optimizer else { return Err(Error::new(format!("{at}: no `optimizer` (frog, sgd, adamw, kfrog or muon)"))) };
            if let Some(k) = c.foreign(opt).first() {
                return Err(Error::new(format!("{at}: `{k}` is not a setting of {}", opt.name())));
            }
            if let Some(k) = c.missing(opt) {
                return Err(Error::new(format!("{at}: no `{k}`")));
            }
            if let Some(n) = c.name.as_deref().filter(|n| !name_ok(n)) {
                return Err(Error::new(format!("{at}: `name` {n:?} must be 1 to 100 ASCII letters, digits, `-`, `_` or `.`, not starting with `.`")));
            }
            c.validate(&|k: &str| format!("{at}: `{k}`"))?;
        }
        let ids: Vec<(String, String)> = self.configs.iter().filter_map(Settings::identity).collect();
        for (i, (label, id)) in ids.iter().enumerate() {
            if let Some(j) = ids[..i].iter().position(|(l, n)| l == label || n == id) {
                let what = if ids[j].0 == *label { format!("label `{label}`") } else { format!("name `{id}`") };
                return Err(Error::new(format!("{name}: configurations {} and {} have the same {what} (their rows and results files would mix); give one a `label` or a `name`", j + 1, i + 1)));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const SGD: &str = "model = \"resnet-small\"\nepochs = 2\ntargets = [50.0]\n\n[[config]]\noptimizer = \"sgd\"\nbatch_size = 128\nlr = 0.1\n";

    fn error(text: &str) -> String {
        RunFile::parse("test.toml", text).expect_err(text).to_string()
    }

    #[test]
    fn every_shipped_run_parses_with_its_configurations() {
        let labels = |name: &str| {
            let (_, f) = RunFile::load(name).unwrap();
            f.configs.iter().map(|c| c.identity().unwrap().0).collect::<Vec<_>>()
        };
        assert_eq!(labels("cpu"), ["FROG bs 128, s 16", "SGD bs 128", "SGD bs 512"]);
        assert_eq!(labels("original"), ["FROG bs 512, s 64", "SGD bs 128", "SGD bs 512"]);
        assert_eq!(labels("compare"), ["FROG bs 128, s 16", "SGD bs 128", "SGD bs 512", "AdamW bs 128", "K-FROG bs 128, s 64", "Muon bs 128"]);
        assert_eq!(labels("original-compare"), ["FROG bs 512, s 64", "SGD bs 128", "SGD bs 512", "AdamW bs 128", "K-FROG bs 512, s 256"]);
        // The comparisons keep their study's three configurations as they are.
        for (study, compare) in [("cpu", "compare"), ("original", "original-compare")] {
            let (a, b) = (RunFile::load(study).unwrap().1, RunFile::load(compare).unwrap().1);
            assert_eq!(a.configs[..], b.configs[..3], "{compare} starts with {study}'s configurations");
            assert_eq!(a.model, b.model);
        }
        assert!(RunFile::load("nope").unwrap_err().to_string().contains("--run nope: not a shipped run (cpu, original, compare, original-compare)"));
    }

    #[test]
    fn compare_runs_official_muon_beside_its_own_sgd_at_the_batch() {
        let (_, f) = RunFile::load("compare").unwrap();
        let muon = f.configs.iter().find(|c| c.optimizer == Some(OptName::Muon)).unwrap();
        let Some(Method::Muon { filters, rest }) = muon.method(OptName::Muon) else { panic!("a Muon method") };
        // The official form: MuonConfig::default() in all but nothing.
        assert_eq!(filters, MuonConfig { lr: 0.02, ..MuonConfig::default() });
        assert_eq!((filters.momentum, filters.nesterov, filters.ns_steps, filters.form), (0.95, true, 5, frog_core::MuonForm::Official));
        // The SGD beside it is the run's SGD configuration of the same batch.
        let sgd = f.configs.iter().find(|c| c.optimizer == Some(OptName::Sgd) && c.batch_size == muon.batch_size).unwrap();
        assert_eq!(Some(Method::Sgd(rest)), sgd.method(OptName::Sgd));
        assert_eq!(muon.identity().unwrap(), ("Muon bs 128".to_string(), "muon-bs-128".to_string()));
    }

    #[test]
    fn names_default_to_the_label_in_lower_case_words() {
        assert_eq!(default_name("FROG bs 128, s 16"), "frog-bs-128-s-16");
        assert_eq!(default_name("K-FROG bs 128, s 64, y 32"), "k-frog-bs-128-s-64-y-32");
        assert_eq!(default_name("  Ünïcode / 7 "), "n-code-7");
        assert!(name_ok("sgd-128_b.2") && !name_ok("") && !name_ok(".hidden") && !name_ok("a/b") && !name_ok(&"x".repeat(101)));
        let named = RunFile::parse("t.toml", &format!("{SGD}name = \"base\"\nlabel = \"Base SGD\"\n")).unwrap();
        assert_eq!(named.configs[0].identity().unwrap(), ("Base SGD".to_string(), "base".to_string()));
    }

    #[test]
    fn the_readme_example_is_a_run_file() {
        let readme = include_str!("../../README.md");
        let start = readme.find("```toml\n").expect("README shows a run file") + "```toml\n".len();
        let text = &readme[start..start + readme[start..].find("```").unwrap()];
        let f = RunFile::parse("README.md", text).unwrap();
        assert_eq!(f.configs.iter().map(|c| c.optimizer.unwrap()).collect::<Vec<_>>(), [OptName::Frog, OptName::Kfrog, OptName::Muon]);
    }

    #[test]
    fn malformed_run_files_are_errors_naming_file_configuration_and_key() {
        let cases: &[(&str, &str)] = &[
            ("", "missing field `model`"),
            ("model = ", "TOML parse error"),
            (&SGD.replace("epochs = 2", "epoch = 2"), "unknown field `epoch`"),
            (&format!("{SGD}sampel = 3\n"), "(configuration 1)"),
            (&format!("{SGD}sampel = 3\n"), "unknown field `sampel`"),
            (&SGD.replace("\"sgd\"", "\"adam\""), "unknown variant `adam`"),
            (&format!("{SGD}sample = 3\n"), "configuration 1: `sample` is not a setting of sgd"),
            (&SGD.replace("lr = 0.1\n", ""), "configuration 1: no `lr`"),
            (&SGD.replace("batch_size = 128\n", ""), "configuration 1: no `batch_size`"),
            (&SGD.replace("optimizer = \"sgd\"\n", ""), "configuration 1: no `optimizer`"),
            (&SGD.replace("batch_size = 128", "batch_size = 0"), "configuration 1: `batch_size` must be between 1 and 8192, got 0"),
            (&SGD.replace("batch_size = 128", "batch_size = -1"), "invalid value"),
            (&SGD.replace("batch_size = 128", "batch_size = 1.5"), "invalid type"),
            (&SGD.replace("lr = 0.1", "lr = nan"), "configuration 1: `lr` must be a finite number"),
            (&SGD.replace("lr = 0.1", "lr = \"fast\""), "invalid type"),
            (&SGD.replace("epochs = 2", "epochs = 0"), "`epochs` must be between 1 and 100000"),
            (&SGD.replace("[50.0]", "[101.0]"), "`targets` are test accuracies in percent"),
            (&SGD.replace("[50.0]", "[]"), "`targets` needs at least one accuracy"),
            (&SGD.replace("resnet-small", "vgg"), "`model`: unknown model `vgg`"),
            ("model = \"resnet-small\"\nepochs = 2\ntargets = [50.0]\nconfig = []\n", "no configuration"),
            (&format!("{SGD}\n[[config]]\noptimizer = \"kfrog\"\nbatch_size = 64\nlr = 0.001\ntau = 1e-3\n"), "configuration 2: `tau` is not a setting of kfrog"),
            (&format!("{SGD}label = 7\n"), "invalid type"),
            (&format!("{SGD}name = \"../up\"\n"), "configuration 1: `name` \"../up\" must be 1 to 100 ASCII letters"),
            (&format!("{SGD}\n[[config]]\noptimizer = \"sgd\"\nbatch_size = 128\nlr = 0.2\n"), "configurations 1 and 2 have the same label `SGD bs 128`"),
            (&format!("{SGD}\n[[config]]\nlabel = \"sgd bs 128\"\noptimizer = \"sgd\"\nbatch_size = 64\nlr = 0.2\n"), "configurations 1 and 2 have the same name `sgd-bs-128`"),
            (&SGD.replace("\"sgd\"", "\"muon\""), "configuration 1: no `sgd_lr`"),
            (&format!("{}sample = 4\n", SGD.replace("\"sgd\"", "\"muon\""))  , "`sample` is not a setting of muon"),
            (&format!("{SGD}sgd_lr = 0.1\n"), "`sgd_lr` is not a setting of sgd"),
            (&format!("{}sgd_lr = inf\n", SGD.replace("\"sgd\"", "\"muon\"")), "configuration 1: `sgd_lr` must be a finite number"),
            (&format!("{}sgd_lr = 0.1\nns_steps = 0\n", SGD.replace("\"sgd\"", "\"muon\"")), "configuration 1: `ns_steps` must be between 1 and 1000"),
        ];
        for (text, want) in cases {
            let e = error(text);
            assert!(e.starts_with("test.toml"), "{e}");
            assert!(e.contains(want), "{text:?}: {e:?} lacks {want:?}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        /// Any text is a run file or an error, never a panic.
        #[test]
        fn arbitrary_text_never_panics(text in ".{0,200}") {
            let _ = RunFile::parse("p.toml", &text);
        }

        /// The shipped file with any span replaced by other text.
        #[test]
        fn a_damaged_run_file_never_panics(at in 0usize..SHIPPED[2].1.len(), len in 0usize..40, with in "[a-z0-9_=\\[\\]\". \\n-]{0,20}") {
            let text = SHIPPED[2].1;
            let (at, end) = (at.min(text.len()), (at + len).min(text.len()));
            if let (Some(head), Some(tail)) = (text.get(..at), text.get(end..)) {
                let _ = RunFile::parse("p.toml", &format!("{head}{with}{tail}"));
            }
        }
    }
}
