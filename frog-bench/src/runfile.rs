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
//!
//! A run file of the model `airbench` is the airbench94_muon recipe
//! ([`crate::airbench`]): its configurations choose only what steps the six
//! filters (Muon, FROG or SGD, with that method's settings); the epochs,
//! the batch, the schedule and the other parameters' SGD are the recipe's,
//! and a file or a flag that sets them is refused.

use std::path::Path;

use frog_core::{AdamWConfig, Config, KfrogConfig, MuonConfig, SgdConfig};
use serde::Deserialize;

use crate::airbench::recipe::{self, FilterMethod};
use crate::arch::{Arch, MODELS};
use crate::cli::OptName;
use crate::error::{Error, Result};
use crate::optim::Method;

/// The shipped runs, by `--run` name.
pub const SHIPPED: [(&str, &str); 7] = [
    ("cpu", include_str!("../runs/cpu.toml")),
    ("original", include_str!("../runs/original.toml")),
    ("compare", include_str!("../runs/compare.toml")),
    ("original-compare", include_str!("../runs/original-compare.toml")),
    ("airbench", include_str!("../runs/airbench.toml")),
    ("airbench-frog", include_str!("../runs/airbench-frog.toml")),
    ("airbench-compare", include_str!("../runs/airbench-compare.toml")),
];

/// The run a model's study takes when `--run` names none: the original
/// study for ResNet-18, the record for airbench, the CPU study otherwise.
pub fn default_run(model: &str) -> &'static str {
    match model {
        "resnet18" => "original",
        AIRBENCH => "airbench",
        _ => "cpu",
    }
}

/// The model name of the airbench recipe.
pub const AIRBENCH: &str = "airbench";

/// Why an airbench run refuses a setting: what the recipe keeps for
/// itself, and what such a run may set instead.
pub const AIRBENCH_FIXED: &str = "the airbench recipe fixes its epochs (8), batch (2000), learning-rate schedule and the SGD of \
    the parameters other than the filters; an airbench run sets the targets, the train and test limits, the seeds and the \
    filters' method with its settings (and, in a run file, `widths` and `batch_size` to shrink the recipe for a smoke test)";

/// What a study's configurations train.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModelKind {
    /// One of the engine's networks ([`Arch`]): each configuration an
    /// optimizer for every parameter, at its batch, on the file's epochs
    /// and step schedule.
    Net,
    /// The airbench recipe: each configuration the method of the six 3x3
    /// filters.
    Airbench,
}

impl ModelKind {
    /// The kind of model `name` (any name but [`AIRBENCH`] names a
    /// network, which [`ModelKind::check`] checks).
    pub fn of(name: &str) -> Self {
        if name == AIRBENCH {
            Self::Airbench
        } else {
            Self::Net
        }
    }

    /// The kind of model `name`, an error when the study has no such model.
    pub fn check(name: &str) -> Result<Self> {
        match Self::of(name) {
            Self::Net => {
                Arch::by_name(name).map_err(|_| Error::new(format!("unknown model `{name}`; choose one of: {}, {AIRBENCH}", MODELS.join(", "))))?;
                Ok(Self::Net)
            }
            airbench => Ok(airbench),
        }
    }
}

/// A study as a run file gives it.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunFile {
    /// `resnet-small`, `resnet18` or `airbench`.
    pub model: String,
    /// Epochs of every configuration (required for a network; the
    /// airbench recipe has its own).
    pub epochs: Option<usize>,
    /// Epochs after which lr is multiplied by `gamma` (none by default;
    /// not for airbench).
    pub milestones: Option<Vec<usize>>,
    /// The schedule's factor ([`DEFAULT_GAMMA`] by default; not for
    /// airbench).
    pub gamma: Option<f64>,
    /// Test accuracies (percent) of the table.
    pub targets: Vec<f64>,
    /// Use the first N training images.
    pub train_limit: Option<usize>,
    /// Use the first N test images.
    pub test_limit: Option<usize>,
    /// airbench only: the three blocks' widths (the record's 64, 256, 256
    /// by default); narrower ones shrink the recipe for a smoke test.
    pub widths: Option<[usize; 3]>,
    /// airbench only: the training batch (the record's 2000 by default);
    /// a smaller one lets a smoke test train on a few hundred images.
    pub batch_size: Option<usize>,
    /// The configurations, in order (`[[config]]` tables).
    #[serde(rename = "config")]
    pub configs: Vec<Settings>,
}

/// The schedule's factor when a run file gives none: the original's.
pub const DEFAULT_GAMMA: f64 = 0.1;

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
    /// `optimizer` in a study of `kind`; `None` when it is not one of that
    /// kind's methods (AdamW and K-FROG are no filter method of the
    /// airbench recipe). On the airbench filters the batch is the
    /// recipe's, FROG has no plain-SGD parameters (`lr_other_ratio`), and
    /// Muon's is airbench's form, which has no weight decay and no SGD of
    /// its own (`sgd_*`: the recipe's groups).
    fn keys(self, kind: ModelKind) -> Option<&'static [&'static str]> {
        Some(match (kind, self) {
            (ModelKind::Net, Self::Frog) => &["batch_size", "sample", "lr", "lr_other_ratio", "momentum", "nesterov", "weight_decay", "cg_iters", "tau", "tau_final", "tau_steps"],
            (ModelKind::Net, Self::Sgd) => &["batch_size", "lr", "momentum", "nesterov", "weight_decay"],
            (ModelKind::Net, Self::AdamW) => &["batch_size", "lr", "beta1", "beta2", "eps", "weight_decay"],
            (ModelKind::Net, Self::Kfrog) => &["batch_size", "sample", "y_sample", "lr", "momentum", "nesterov", "y_momentum", "eps", "cg_iters"],
            (ModelKind::Net, Self::Muon) => &["batch_size", "lr", "momentum", "nesterov", "weight_decay", "ns_steps", "sgd_lr", "sgd_momentum", "sgd_nesterov", "sgd_weight_decay"],
            (ModelKind::Airbench, Self::Frog) => &["sample", "lr", "momentum", "nesterov", "weight_decay", "cg_iters", "tau", "tau_final", "tau_steps"],
            (ModelKind::Airbench, Self::Sgd) => &["lr", "momentum", "nesterov", "weight_decay"],
            (ModelKind::Airbench, Self::Muon) => &["lr", "momentum", "nesterov", "ns_steps"],
            (ModelKind::Airbench, Self::AdamW | Self::Kfrog) => return None,
        })
    }

    /// The keys a configuration of this optimizer must give in a study of
    /// `kind`: the batch (of a network) and the rates, which have no
    /// default worth running.
    fn required(self, kind: ModelKind) -> &'static [&'static str] {
        match (kind, self) {
            (ModelKind::Airbench, _) => &["lr"],
            (ModelKind::Net, Self::Muon) => &["batch_size", "lr", "sgd_lr"],
            (ModelKind::Net, _) => &["batch_size", "lr"],
        }
    }

    /// Why `key` (spelled as its source spells it: `` `tau` `` or
    /// `--tau`), which `self` does not take in a study of `kind`, is
    /// refused.
    pub fn not_a_setting(self, kind: ModelKind, key: &str) -> String {
        match (kind, self.keys(kind)) {
            (ModelKind::Net, _) => format!("{key} is not a setting of {}", self.name()),
            (ModelKind::Airbench, Some(keys)) => {
                format!("{key} is not a setting of {} on the airbench filters, which takes {}; {AIRBENCH_FIXED}", self.name(), keys.join(", "))
            }
            (ModelKind::Airbench, None) => self.not_a_filter_method(),
        }
    }

    /// Why this optimizer cannot step the airbench filters.
    fn not_a_filter_method(self) -> String {
        format!("{} is not a method of the airbench filters (muon, frog or sgd)", self.name())
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

    /// The keys given that `opt` does not take in a study of `kind` (every
    /// one when `opt` is not one of that kind's methods).
    pub fn foreign(&self, kind: ModelKind, opt: OptName) -> Vec<&'static str> {
        let keys = opt.keys(kind).unwrap_or_default();
        self.given().into_iter().filter(|k| !keys.contains(k)).collect()
    }

    /// The first key `opt` requires in a study of `kind` that these
    /// settings lack.
    pub fn missing(&self, kind: ModelKind, opt: OptName) -> Option<&'static str> {
        let given = self.given();
        opt.required(kind).iter().copied().find(|k| !given.contains(k))
    }

    /// FROG at `lr`, every other key not given at frog-core's default.
    fn frog(&self, lr: f64) -> Config {
        let d = Config::default();
        Config {
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
        }
    }

    /// `base` with the SGD keys given in its place.
    fn sgd_over(&self, base: SgdConfig) -> SgdConfig {
        SgdConfig {
            momentum: self.momentum.unwrap_or(base.momentum),
            weight_decay: self.weight_decay.unwrap_or(base.weight_decay),
            nesterov: self.nesterov.unwrap_or(base.nesterov),
            ..base
        }
    }

    /// `base` with the Muon keys given in its place.
    fn muon_over(&self, base: MuonConfig) -> MuonConfig {
        MuonConfig {
            momentum: self.momentum.unwrap_or(base.momentum),
            nesterov: self.nesterov.unwrap_or(base.nesterov),
            ns_steps: self.ns_steps.unwrap_or(base.ns_steps),
            weight_decay: self.weight_decay.unwrap_or(base.weight_decay),
            ..base
        }
    }

    /// What steps the airbench filters: `opt` with these settings, every
    /// key not given at the recipe's value (the record's Muon; the SGD
    /// groups' momentum and decay rule, [`recipe::sgd`]) or, for FROG,
    /// frog-core's default, with `batch_averaged` off as the recipe runs
    /// it (its loss is summed). `None` when `lr` is missing or `opt` is no
    /// filter method.
    pub fn filter_method(&self, opt: OptName) -> Option<FilterMethod> {
        let lr = self.lr?;
        Some(match opt {
            OptName::Muon => FilterMethod::Muon(self.muon_over(MuonConfig { lr, ..recipe::record_muon() })),
            OptName::Frog => FilterMethod::Frog(Config { batch_averaged: false, ..self.frog(lr) }),
            OptName::Sgd => FilterMethod::Sgd(self.sgd_over(recipe::sgd(lr))),
            OptName::AdamW | OptName::Kfrog => return None,
        })
    }

    /// The optimizer these settings describe for a network, every key not
    /// given at frog-core's default (torch's for SGD); `None` when a key
    /// `opt` requires is missing ([`Settings::missing`]).
    pub fn method(&self, opt: OptName) -> Option<Method> {
        if self.missing(ModelKind::Net, opt).is_some() {
            return None;
        }
        let lr = self.lr?;
        Some(match opt {
            OptName::Frog => Method::from(self.frog(lr)),
            OptName::Sgd => Method::from(self.sgd_over(SgdConfig { lr, ..SgdConfig::default() })),
            OptName::AdamW => {
                let d = AdamWConfig::default();
                Method::from(AdamWConfig {
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
                Method::from(KfrogConfig {
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
                let d = SgdConfig::default();
                Method::Muon {
                    filters: self.muon_over(MuonConfig { lr, ..MuonConfig::default() }),
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
        Method::All(frog_core::Method::Frog(c)) => format!("FROG bs {batch}, s {}", s(c.sample_size)),
        Method::All(frog_core::Method::Kfrog(c)) => match c.y_sample_size {
            Some(y) => format!("K-FROG bs {batch}, s {}, y {}", s(c.sample_size), y.min(batch)),
            None => format!("K-FROG bs {batch}, s {}", s(c.sample_size)),
        },
        Method::All(frog_core::Method::AdamW(_)) => format!("AdamW bs {batch}"),
        Method::All(frog_core::Method::Sgd(_)) => format!("SGD bs {batch}"),
        Method::Muon { .. } => format!("Muon bs {batch}"),
        // A bare Muon (refused when checked) or a method frog-core adds.
        Method::All(_) => format!("bs {batch}"),
    }
}

/// The label an airbench configuration gets when its file names none: the
/// filters' method, and FROG's sample.
pub fn default_filter_label(filters: &FilterMethod) -> String {
    match filters {
        FilterMethod::Muon(_) => "Muon".into(),
        FilterMethod::Frog(c) => c.sample_size.map_or_else(|| "FROG".into(), |s| format!("FROG s {s}")),
        FilterMethod::Sgd(_) => "SGD".into(),
    }
}

impl Settings {
    /// The label and name of a configuration whose default label is
    /// `default`: the ones given, else `default` and [`default_name`] of
    /// the label.
    pub fn identity_or(&self, default: impl FnOnce() -> String) -> (String, String) {
        let label = self.label.clone().unwrap_or_else(default);
        let name = self.name.clone().unwrap_or_else(|| default_name(&label));
        (label, name)
    }

    /// The label and name of this configuration in a study of `kind`
    /// ([`Settings::identity_or`] of [`default_label`] of its method and
    /// batch, or of [`default_filter_label`]); `None` when it has no
    /// optimizer or lacks a key the optimizer requires.
    pub fn identity(&self, kind: ModelKind) -> Option<(String, String)> {
        let opt = self.optimizer?;
        Some(match kind {
            ModelKind::Net => {
                let (method, batch) = (self.method(opt)?, self.batch_size?);
                self.identity_or(|| default_label(&method, batch))
            }
            ModelKind::Airbench => {
                let filters = self.filter_method(opt)?;
                self.identity_or(|| default_filter_label(&filters))
            }
        })
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

    /// What its configurations train.
    pub fn kind(&self) -> ModelKind {
        ModelKind::of(&self.model)
    }

    /// Every configuration's label and name, in order.
    pub fn identities(&self) -> Vec<(String, String)> {
        self.configs.iter().filter_map(|c| c.identity(self.kind())).collect()
    }

    /// Checks every value's range, that the study-wide keys suit the
    /// model, and that every configuration names its optimizer (one of
    /// the model's), its required keys and only keys of that optimizer.
    fn validate(&self, name: &str) -> Result<()> {
        let key = |k: &str| format!("{name}: `{k}`");
        crate::settings::Schedule {
            model: Some(&self.model),
            epochs: self.epochs,
            milestones: self.milestones.as_deref(),
            gamma: self.gamma,
            targets: Some(&self.targets),
            train_limit: self.train_limit,
            test_limit: self.test_limit,
        }
        .validate(&key)?;
        let kind = self.kind();
        match kind {
            ModelKind::Net => {
                if self.epochs.is_none() {
                    return Err(Error::new(format!("{name}: no `epochs`")));
                }
                if let Some(k) = [("widths", self.widths.is_some()), ("batch_size", self.batch_size.is_some())].iter().find_map(|(k, given)| given.then_some(k)) {
                    return Err(Error::new(format!("{name}: `{k}` at the top is for the airbench model (a network's configurations set their own batch_size)")));
                }
            }
            ModelKind::Airbench => {
                let fixed = [("epochs", self.epochs.is_some()), ("milestones", self.milestones.is_some()), ("gamma", self.gamma.is_some())];
                if let Some(k) = fixed.iter().find_map(|(k, given)| given.then_some(k)) {
                    return Err(Error::new(format!("{name}: `{k}`: {AIRBENCH_FIXED}")));
                }
                for w in self.widths.iter().flatten() {
                    crate::settings::at_least_one(&key("widths"), *w, crate::settings::MAX_WIDTH)?;
                }
                if let Some(b) = self.batch_size {
                    crate::settings::at_least_one(&key("batch_size"), b, crate::settings::MAX_BATCH)?;
                }
            }
        }
        if self.configs.is_empty() {
            return Err(Error::new(format!("{name}: no configuration (add a [[config]] table)")));
        }
        for (i, c) in self.configs.iter().enumerate() {
            let at = format!("{name}: configuration {}{}", i + 1, c.label.as_ref().map_or(String::new(), |l| format!(" (`{l}`)")));
            let Some(opt) = c.optimizer else {
                let names = if kind == ModelKind::Airbench { "muon, frog or sgd" } else { "frog, sgd, adamw, kfrog or muon" };
                return Err(Error::new(format!("{at}: no `optimizer` ({names})")));
            };
            if opt.keys(kind).is_none() {
                return Err(Error::new(format!("{at}: {}", opt.not_a_filter_method())));
            }
            if let Some(k) = c.foreign(kind, opt).first() {
                return Err(Error::new(format!("{at}: {}", opt.not_a_setting(kind, &format!("`{k}`")))));
            }
            if let Some(k) = c.missing(kind, opt) {
                return Err(Error::new(format!("{at}: no `{k}`")));
            }
            if let Some(n) = c.name.as_deref().filter(|n| !name_ok(n)) {
                return Err(Error::new(format!("{at}: `name` {n:?} must be 1 to 100 ASCII letters, digits, `-`, `_` or `.`, not starting with `.`")));
            }
            c.validate(&|k: &str| format!("{at}: `{k}`"))?;
        }
        let ids = self.identities();
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
    /// An airbench run file's study-wide part, and a configuration.
    const AIR: &str = "model = \"airbench\"\ntargets = [50.0]\n";
    const AIR_MUON: &str = "\n[[config]]\noptimizer = \"muon\"\nlr = 0.24\n";

    fn error(text: &str) -> String {
        RunFile::parse("test.toml", text).expect_err(text).to_string()
    }

    #[test]
    fn every_shipped_run_parses_with_its_configurations() {
        let labels = |name: &str| {
            let (_, f) = RunFile::load(name).unwrap();
            f.identities().into_iter().map(|(label, _)| label).collect::<Vec<_>>()
        };
        assert_eq!(labels("cpu"), ["FROG bs 128, s 16", "SGD bs 128", "SGD bs 512"]);
        assert_eq!(labels("original"), ["FROG bs 512, s 64", "SGD bs 128", "SGD bs 512"]);
        assert_eq!(labels("compare"), ["FROG bs 128, s 16", "SGD bs 128", "SGD bs 512", "AdamW bs 128", "K-FROG bs 128, s 64", "Muon bs 128"]);
        assert_eq!(labels("original-compare"), ["FROG bs 512, s 64", "SGD bs 128", "SGD bs 512", "AdamW bs 128", "K-FROG bs 512, s 256"]);
        assert_eq!(labels("airbench"), ["Muon (record)"]);
        assert_eq!(labels("airbench-frog"), ["FROG s 64"]);
        assert_eq!(labels("airbench-compare"), ["Muon (record)", "FROG s 64", "SGD"]);
        // The comparisons keep their study's three configurations as they are.
        for (study, compare) in [("cpu", "compare"), ("original", "original-compare")] {
            let (a, b) = (RunFile::load(study).unwrap().1, RunFile::load(compare).unwrap().1);
            assert_eq!(a.configs[..], b.configs[..3], "{compare} starts with {study}'s configurations");
            assert_eq!(a.model, b.model);
        }
        assert!(RunFile::load("nope").unwrap_err().to_string().contains("--run nope: not a shipped run (cpu, original, compare, original-compare, airbench, airbench-frog, airbench-compare)"));
    }

    #[test]
    fn compare_runs_official_muon_beside_its_own_sgd_at_the_batch() {
        let (_, f) = RunFile::load("compare").unwrap();
        let muon = f.configs.iter().find(|c| c.optimizer == Some(OptName::Muon)).unwrap();
        let Some(Method::Muon { filters, rest }) = muon.method(OptName::Muon) else { panic!("a Muon method") };
        // The official form: MuonConfig::default() in all but the swept lr.
        assert_eq!(filters, MuonConfig { lr: 0.05, ..MuonConfig::default() });
        assert_eq!((filters.momentum, filters.nesterov, filters.ns_steps, filters.form), (0.95, true, 5, frog_core::MuonForm::Official));
        // The SGD beside it is the run's SGD configuration of the same batch.
        let sgd = f.configs.iter().find(|c| c.optimizer == Some(OptName::Sgd) && c.batch_size == muon.batch_size).unwrap();
        assert_eq!(Some(Method::from(rest)), sgd.method(OptName::Sgd));
        assert_eq!(muon.identity(ModelKind::Net).unwrap(), ("Muon bs 128".to_string(), "muon-bs-128".to_string()));
    }

    /// The airbench runs: the record's Muon, FROG with `batch_averaged`
    /// off, Nesterov SGD at its swept rate with the recipe's decay rule;
    /// the comparison's Muon and FROG are the other files'.
    #[test]
    fn the_airbench_runs_choose_the_filters_method() {
        let load = |name: &str| RunFile::load(name).unwrap().1;
        let (record, frog, compare) = (load("airbench"), load("airbench-frog"), load("airbench-compare"));
        for f in [&record, &frog, &compare] {
            assert_eq!((f.kind(), f.epochs, f.widths, f.batch_size, f.train_limit, f.test_limit), (ModelKind::Airbench, None, None, None, None, None));
            assert_eq!(f.targets, compare.targets);
        }
        assert_eq!(compare.configs[..2], [record.configs[0].clone(), frog.configs[0].clone()]);
        let filters: Vec<FilterMethod> = compare.configs.iter().map(|c| c.filter_method(c.optimizer.unwrap()).unwrap()).collect();
        assert_eq!(filters[0], FilterMethod::record());
        let FilterMethod::Frog(f) = filters[1] else { panic!("FROG second") };
        assert_eq!((f.lr, f.momentum, f.nesterov, f.sample_size, f.tau, f.num_iters, f.weight_decay, f.batch_averaged), (0.1, 0.6, true, Some(64), 1e-6, 4, 0.0, false));
        // SGD at its swept rate, with the recipe's momentum, Nesterov and decay rule.
        assert_eq!(filters[2], FilterMethod::sgd(0.0015));
        // Keys left out take the recipe's values; a network's method has no meaning here.
        let muon = Settings { lr: Some(0.1), ..Settings::default() };
        assert_eq!(muon.filter_method(OptName::Muon), Some(FilterMethod::Muon(MuonConfig { lr: 0.1, ..recipe::record_muon() })));
        assert_eq!(muon.filter_method(OptName::AdamW), None);
        assert_eq!(Settings::default().filter_method(OptName::Sgd), None, "no lr");
    }

    #[test]
    fn names_default_to_the_label_in_lower_case_words() {
        assert_eq!(default_name("FROG bs 128, s 16"), "frog-bs-128-s-16");
        assert_eq!(default_name("K-FROG bs 128, s 64, y 32"), "k-frog-bs-128-s-64-y-32");
        assert_eq!(default_name("  Ünïcode / 7 "), "n-code-7");
        assert!(name_ok("sgd-128_b.2") && !name_ok("") && !name_ok(".hidden") && !name_ok("a/b") && !name_ok(&"x".repeat(101)));
        let named = RunFile::parse("t.toml", &format!("{SGD}name = \"base\"\nlabel = \"Base SGD\"\n")).unwrap();
        assert_eq!(named.configs[0].identity(ModelKind::Net).unwrap(), ("Base SGD".to_string(), "base".to_string()));
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
            (&format!("widths = [8, 8, 8]\n{SGD}"), "`widths` at the top is for the airbench model"),
            (&format!("batch_size = 64\n{SGD}"), "`batch_size` at the top is for the airbench model"),
            (&SGD.replace("epochs = 2\n", ""), "test.toml: no `epochs`"),
            (&format!("{AIR}epochs = 8\n{AIR_MUON}"), "`epochs`: the airbench recipe fixes its epochs (8), batch (2000)"),
            (&format!("{AIR}milestones = [3]\n{AIR_MUON}"), "`milestones`: the airbench recipe fixes"),
            (&format!("{AIR}gamma = 0.5\n{AIR_MUON}"), "`gamma`: the airbench recipe fixes"),
            (&format!("{AIR}widths = [8, 0, 8]\n{AIR_MUON}"), "`widths` must be between 1 and 4096, got 0"),
            (&format!("{AIR}widths = [8, 8]\n{AIR_MUON}"), "invalid length 2"),
            (&format!("{AIR}batch_size = 0\n{AIR_MUON}"), "`batch_size` must be between 1 and 8192"),
            (&format!("{AIR}{AIR_MUON}batch_size = 500\n"), "configuration 1: `batch_size` is not a setting of muon on the airbench filters, which takes lr, momentum, nesterov, ns_steps; the airbench recipe fixes"),
            (&format!("{AIR}{AIR_MUON}sgd_lr = 0.1\n"), "`sgd_lr` is not a setting of muon on the airbench filters"),
            (&format!("{AIR}{AIR_MUON}weight_decay = 0.1\n"), "`weight_decay` is not a setting of muon on the airbench filters"),
            (&format!("{AIR}{}lr_other_ratio = 1.0\n", AIR_MUON.replace("muon", "frog")), "`lr_other_ratio` is not a setting of frog on the airbench filters"),
            (&format!("{AIR}{}", AIR_MUON.replace("muon", "adamw")), "configuration 1: adamw is not a method of the airbench filters (muon, frog or sgd)"),
            (&format!("{AIR}{}", AIR_MUON.replace("lr = 0.24\n", "")), "configuration 1: no `lr`"),
            (&format!("{AIR}{}", AIR_MUON.replace("optimizer = \"muon\"\n", "")), "no `optimizer` (muon, frog or sgd)"),
            (&format!("{AIR}{AIR_MUON}{AIR_MUON}"), "configurations 1 and 2 have the same label `Muon`"),
            (&format!("{}{AIR_MUON}", AIR.replace("airbench", "airbench18")), "unknown model `airbench18`; choose one of: resnet18, resnet-small, airbench"),
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
