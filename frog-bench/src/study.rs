//! The study: configurations from a run file (a shipped one, by default
//! the original study or its CPU-sized version) and the flags, the data,
//! the runs, and the reports. A configuration trains one of the engine's
//! networks under an optimizer, or the airbench recipe with a method for
//! its filters ([`Job`]); both write the same outputs.

use std::path::PathBuf;

use frog_core::{Collective, Scalar, Solo};

use crate::airbench::loader;
use crate::airbench::model::WIDTHS;
use crate::airbench::recipe::{self, AirbenchConfig};
use crate::arch::Arch;
use crate::cli::StudyArgs;
use crate::data::{self, DataOptions};
use crate::device::Device;
use crate::dist;
use crate::error::{Error, Result};
use crate::report::{self, RunRecord};
use crate::runfile::{self, ModelKind, RunFile, Settings, AIRBENCH, AIRBENCH_FIXED, DEFAULT_GAMMA};
use crate::settings::flag;
use crate::train::{train_on, EpochRecord, RunConfig};

/// One configuration of a study, at one seed.
#[derive(Clone, Debug, PartialEq)]
pub enum Job {
    /// One of the engine's networks under an optimizer ([`crate::train::train`]).
    Net(RunConfig),
    /// The airbench recipe ([`recipe::train`]).
    Airbench {
        /// The configuration's name (`--config`, the results files).
        name: String,
        /// The run: label, filter method, widths, batch, epochs, seed.
        recipe: AirbenchConfig,
    },
}

impl Job {
    /// Label in tables and plots.
    pub fn label(&self) -> &str {
        match self {
            Self::Net(c) => &c.label,
            Self::Airbench { recipe, .. } => &recipe.label,
        }
    }

    /// The configuration's name.
    pub fn name(&self) -> &str {
        match self {
            Self::Net(c) => &c.name,
            Self::Airbench { name, .. } => name,
        }
    }

    /// The seed.
    pub fn seed(&self) -> u64 {
        match self {
            Self::Net(c) => c.seed,
            Self::Airbench { recipe, .. } => recipe.seed,
        }
    }

    /// The same configuration at `seed`.
    #[must_use]
    pub fn at_seed(&self, seed: u64) -> Self {
        match self {
            Self::Net(c) => Self::Net(RunConfig { seed, ..c.clone() }),
            Self::Airbench { name, recipe } => Self::Airbench { name: name.clone(), recipe: AirbenchConfig { seed, ..recipe.clone() } },
        }
    }

    /// The model as results files name it: the network's, or `airbench`
    /// with any widths other than the record's, so that a shrunk
    /// recipe's runs never join the recipe's.
    pub fn model(&self) -> String {
        match self {
            Self::Net(c) => c.arch.name.clone(),
            Self::Airbench { recipe, .. } if recipe.widths == WIDTHS => AIRBENCH.into(),
            Self::Airbench { recipe, .. } => format!("{AIRBENCH} widths {}", recipe.widths.map(|w| w.to_string()).join("/")),
        }
    }

    /// What a run prints before its epochs.
    fn heading(&self) -> String {
        let what = match self {
            Self::Net(c) => format!("{} epochs, lr {}, milestones {:?}", c.epochs, c.method.lr(), c.milestones),
            Self::Airbench { recipe, .. } => format!("batch {}, {} epochs, the filters' lr {}", recipe.batch, recipe.epochs, recipe.filters.lr()),
        };
        format!("== {}, seed {} ({}, {what}) ==", self.label(), self.seed(), self.model())
    }
}

/// Everything the study will do.
#[derive(Clone, Debug)]
pub struct Plan {
    /// The configurations, in order, each at the first seed.
    pub configs: Vec<Job>,
    /// The seeds every configuration runs with.
    pub seeds: Vec<u64>,
    /// The names of every configuration of the run file, in its order:
    /// the table's order (with `--config`, the other configurations'
    /// runs already in `out` keep their rows).
    pub order: Vec<String>,
    /// Test accuracies (percent) of the table.
    pub targets: Vec<f64>,
    /// Output directory.
    pub out: PathBuf,
    /// Where the data comes from.
    pub data: DataOptions,
}

impl Plan {
    /// Every run, seed by seed (the first seed of every configuration,
    /// then the second, ...), so that a study cut short has whole seeds.
    pub fn runs(&self) -> Vec<Job> {
        self.seeds.iter().flat_map(|&seed| self.configs.iter().map(move |c| c.at_seed(seed))).collect()
    }
}

/// Builds the plan from the run file and the flags, checking them all
/// before anything runs; `data_from_env` says `a.data` came from
/// `$FROG_DATA` rather than `--data`, and `default_model` is the model of
/// the device's default study (`resnet-small` on the CPU, the original's
/// `resnet18` on a GPU), whose run ([`runfile::default_run`]) applies
/// when `--run` names none. Every optimizer's settings are checked in
/// `S`, the scalar type the training device computes in, so that a value
/// only `f64` holds (`--tau 1e-46`, `lr = 1e39` in f32) is refused here,
/// before the output folder or the data are touched. An airbench run
/// refuses the flags of what its recipe fixes (`--epochs`, `--batch-size`,
/// ...), and `--model` cannot turn a network's run into the recipe's or
/// back.
pub fn plan<S: Scalar>(a: &StudyArgs, data_from_env: bool, default_model: &str) -> Result<Plan> {
    a.validate()?;
    let run = a.run.clone().unwrap_or_else(|| runfile::default_run(a.model.as_deref().unwrap_or(default_model)).into());
    let (name, file) = RunFile::load(&run)?;
    let model = a.model.as_deref().unwrap_or(&file.model);
    let kind = file.kind();
    if ModelKind::of(model) != kind {
        return Err(Error::new(format!(
            "--model {model} does not fit {name} (model {}): the airbench recipe's runs (airbench, airbench-frog, airbench-compare) and the networks' are not interchangeable",
            file.model
        )));
    }
    if kind == ModelKind::Airbench {
        let fixed = [("epochs", a.epochs.is_some()), ("milestones", a.milestones.is_some()), ("gamma", a.gamma.is_some()), ("batch_size", a.batch_size.is_some())];
        if let Some(k) = fixed.iter().find_map(|(k, given)| given.then_some(k)) {
            return Err(Error::new(format!("{}: {AIRBENCH_FIXED}", flag(k))));
        }
    }
    let flags = a.settings();
    let given = flags.given();
    let ids = file.identities();
    // One configuration, picked by `--config` or `--optimizer`, with the flags over its settings.
    let picked = match (&a.config, a.optimizer) {
        (Some(want), _) => {
            let i = ids.iter().position(|(label, id)| label == want || id == want).ok_or_else(|| {
                let names: Vec<&str> = ids.iter().map(|(_, id)| id.as_str()).collect();
                Error::new(format!("{name} has no configuration named or labelled `{want}` (its names: {})", names.join(", ")))
            })?;
            Some((i, format!("--config {want}")))
        }
        (None, Some(opt)) => {
            let i = file
                .configs
                .iter()
                .position(|c| c.optimizer == Some(opt))
                .ok_or_else(|| Error::new(format!("{name} has no {} configuration for --optimizer {}", opt.name(), opt.name())))?;
            Some((i, format!("--optimizer {}", opt.name())))
        }
        (None, None) => None,
    };
    let chosen: Vec<(usize, Settings)> = match picked {
        Some((i, by)) => {
            let c = &file.configs[i];
            let opt = c.optimizer.ok_or_else(|| Error::new(format!("{name}: configuration {} has no `optimizer`", i + 1)))?;
            if let Some(k) = flags.foreign(kind, opt).first() {
                return Err(Error::new(format!("{}; drop it for {by}", opt.not_a_setting(kind, &flag(k)))));
            }
            // A label or name the file gave names its own settings, not the flags'.
            let (label, id) = if given.is_empty() { (c.label.clone(), c.name.clone()) } else { (None, None) };
            vec![(i, Settings { label, name: id, ..c.overridden_by(&flags) })]
        }
        None if !given.is_empty() => {
            let flags: Vec<String> = given.iter().map(|k| flag(k)).collect();
            return Err(Error::new(format!("{} set one configuration's settings; add --config NAME or --optimizer NAME to run that configuration with them", flags.join(", "))));
        }
        None => file.configs.iter().cloned().enumerate().collect(),
    };
    let mut configs = Vec::with_capacity(chosen.len());
    let first_seed = a.seed.unwrap_or(0);
    for (i, c) in chosen {
        // Where a value came from: the flag, else the file's configuration.
        let at = |k: &str| if given.contains(&k) { flag(k) } else { format!("{name}: configuration {}: `{k}`", i + 1) };
        let opt = c.optimizer.ok_or_else(|| Error::new(format!("{name}: configuration {} has no `optimizer`", i + 1)))?;
        let missing = |k: &str| Error::new(format!("{name}: configuration {}: no `{k}`", i + 1));
        let batch = match kind {
            ModelKind::Net => c.batch_size.ok_or_else(|| missing("batch_size"))?,
            ModelKind::Airbench => file.batch_size.unwrap_or(loader::BATCH),
        };
        for (k, s) in [("sample", c.sample), ("y_sample", c.y_sample)] {
            if let Some(s) = s.filter(|&s| s > batch) {
                return Err(Error::new(format!("{} {s} is more than the batch of {batch}", at(k))));
            }
        }
        let invalid = |e: Error| Error::new(format!("{name}: configuration {}: invalid optimizer settings: {e}", i + 1));
        configs.push(match kind {
            ModelKind::Net => {
                let method = c.method(opt).ok_or_else(|| missing(c.missing(kind, opt).unwrap_or("lr")))?;
                method.validate_for::<S>().map_err(invalid)?;
                let (label, id) = c.identity_or(|| runfile::default_label(&method, batch));
                Job::Net(RunConfig {
                    label,
                    name: id,
                    arch: Arch::by_name(model)?,
                    method,
                    batch,
                    epochs: a.epochs.or(file.epochs).ok_or_else(|| missing("epochs"))?,
                    milestones: a.milestones.clone().or_else(|| file.milestones.clone()).unwrap_or_default(),
                    gamma: a.gamma.or(file.gamma).unwrap_or(DEFAULT_GAMMA),
                    seed: first_seed,
                })
            }
            ModelKind::Airbench => {
                let filters = c.filter_method(opt).ok_or_else(|| missing(c.missing(kind, opt).unwrap_or("lr")))?;
                filters.validate_for::<S>().map_err(invalid)?;
                let (label, id) = c.identity_or(|| runfile::default_filter_label(&filters));
                let recipe = AirbenchConfig { widths: file.widths.unwrap_or(WIDTHS), batch, ..AirbenchConfig::record(label, filters, first_seed) };
                Job::Airbench { name: id, recipe }
            }
        });
    }
    let data = DataOptions {
        dir: a.data.clone().filter(|_| !data_from_env),
        env_dir: a.data.clone().filter(|_| data_from_env),
        cache: data::default_cache(),
        download: !a.no_download,
        synthetic: a.synthetic,
        // One synthetic set for every seed, so that seeds differ in
        // training only and runs made apart share their data.
        seed: 0,
        train_limit: a.train_limit.or(file.train_limit),
        test_limit: a.test_limit.or(file.test_limit),
    };
    // (validate checked that the last seed fits in u64.)
    let seeds = (0..a.seeds.unwrap_or(1) as u64).map(|k| first_seed + k).collect();
    Ok(Plan {
        configs,
        seeds,
        order: ids.into_iter().map(|(_, id)| id).collect(),
        targets: a.targets.clone().unwrap_or(file.targets),
        out: a.out.clone().unwrap_or_else(|| "frog-results".into()),
        data,
    })
}

/// Runs the plan on `dev`: loads the data, checks that its runs fit the
/// results already in `plan.out`, trains every configuration at every
/// seed with a line per epoch, and after each run writes its results
/// file and remakes the table, CSV/JSON and plots from every results file
/// in `plan.out`. Returns this invocation's runs.
pub fn run<D: Device>(dev: &D, plan: &Plan) -> Result<Vec<RunRecord>> {
    run_on(dev, &Solo, plan)
}

/// [`run`] as rank `comm.rank()` of a data-parallel run (every rank calls
/// it alike): every rank loads the data and trains its shard of every
/// batch ([`train_on`]); rank 0 alone checks and writes `plan.out` and
/// prints. The airbench recipe trains in one process only.
pub fn run_on<D: Device, C: Collective<D::Backend>>(dev: &D, comm: &C, plan: &Plan) -> Result<Vec<RunRecord>> {
    let (lead, ranks) = (comm.rank() == 0, comm.size());
    if ranks > 1 && plan.configs.iter().any(|c| matches!(c, Job::Airbench { .. })) {
        return Err(Error::new(format!("the airbench recipe trains in one process; its runs cannot be split over {ranks} ranks (run it without mpirun)")));
    }
    let data = data::load(&plan.data)?;
    let source = data.source.clone();
    let device = if ranks > 1 { format!("{ranks} ranks x {}", dev.describe()) } else { dev.describe() };
    let runs = plan.runs();
    let sizes = (data.train.len(), data.test.len());
    let planned: Vec<RunRecord> = runs.iter().map(|job| RunRecord::new(job, &source, sizes, &device)).collect();
    // Rank 0 checks the output folder; every rank learns whether it could.
    let setup: Result<Vec<RunRecord>> = if lead {
        (|| {
            report::prepare_out(&plan.out)?;
            let all = report::load_runs(&plan.out)?;
            report::check_fits(&plan.out, &all, &planned)?;
            Ok(all)
        })()
    } else {
        Ok(Vec::new())
    };
    if ranks > 1 {
        comm.check_status(setup.is_err()).map_err(dist::peer)?;
    }
    let mut all = setup?;
    if lead {
        println!("study on {source}: {} training / {} test images, {device}, results in {}", data.train.len(), data.test.len(), plan.out.display());
    }
    let mut done = Vec::with_capacity(runs.len());
    for (job, mut record) in runs.iter().zip(planned) {
        if lead {
            println!("{}", job.heading());
        }
        let tag = if data.synthetic { " [SYNTHETIC]" } else { "" };
        let print = |r: &EpochRecord| {
            let tta = r.tta_test_acc.map_or(String::new(), |a| format!("  tta acc {a:6.2}%"));
            println!(
                "epoch {:3}  lr {:.5}  train loss {:.4} acc {:6.2}%  test loss {:.4} acc {:6.2}%  epoch {:6.1}s  train {:7.1}s{tta}{tag}",
                r.epoch, r.lr, r.train_loss, r.train_acc, r.test_loss, r.test_acc, r.epoch_seconds, r.train_seconds
            );
        };
        record.epochs_run = match job {
            Job::Net(cfg) => train_on(dev, comm, &data, cfg, print)?,
            Job::Airbench { recipe, .. } => {
                let run = recipe::train(dev, &data, recipe, print)?;
                println!("whitening {:.1} s (in the first epoch's time), test-time augmentation {:.1} s (in no epoch's)", run.whiten_seconds, run.tta_seconds);
                run.records
            }
        };
        if lead {
            report::write_run(&plan.out, &record)?;
            all.retain(|r| (&r.name, r.seed) != (&record.name, record.seed));
            all.push(record.clone());
            report::write_all(&plan.out, &all, &plan.order, &plan.targets, &source, &device)?;
        }
        done.push(record);
    }
    if lead {
        print!("{}", report::table(&report::summarize(&all, &plan.order), &plan.targets, &source));
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::OptName;
    use crate::optim::Method;
    use frog_core::{Config, SgdConfig};

    /// The network configurations of a plan.
    fn nets(p: &Plan) -> Vec<&RunConfig> {
        p.configs.iter().map(|c| if let Job::Net(c) = c { c } else { panic!("not a network: {c:?}") }).collect()
    }

    /// The default CPU study's plan, written out as the flag defaults of
    /// `study.rs` produced it before the run files replaced them: the
    /// embedded `cpu` run file must give exactly this (same three
    /// configurations, same settings, so the same time).
    fn cpu_study_before_run_files() -> (Vec<RunConfig>, Vec<f64>, Option<usize>) {
        let arch = Arch::by_name("resnet-small").unwrap();
        let run = |label: &str, method: Method, batch: usize| RunConfig {
            label: label.into(),
            name: runfile::default_name(label),
            arch: arch.clone(),
            method,
            batch,
            epochs: 6,
            milestones: vec![3, 5],
            gamma: 0.1,
            seed: 0,
        };
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
            ..Config::default()
        };
        let sgd = SgdConfig { lr: 0.1, momentum: 0.9, weight_decay: 1e-4, nesterov: false, ..SgdConfig::default() };
        let configs = vec![run("FROG bs 128, s 16", Method::from(frog), 128), run("SGD bs 128", Method::from(sgd), 128), run("SGD bs 512", Method::from(sgd), 512)];
        (configs, vec![40.0, 50.0, 55.0, 60.0], Some(2000))
    }

    #[test]
    fn the_default_cpu_study_is_unchanged() {
        let p = plan::<f32>(&StudyArgs::default(), false, "resnet-small").unwrap();
        let (configs, targets, test_limit) = cpu_study_before_run_files();
        assert_eq!(p.configs, configs.into_iter().map(Job::Net).collect::<Vec<_>>());
        assert_eq!((p.targets, p.data.test_limit, p.data.train_limit), (targets, test_limit, None));
        assert_eq!((p.seeds, p.order), (vec![0], vec!["frog-bs-128-s-16".to_string(), "sgd-bs-128".into(), "sgd-bs-512".into()]));
    }

    #[test]
    fn resnet18_defaults_are_the_original_study() {
        let a = StudyArgs { model: Some("resnet18".into()), ..StudyArgs::default() };
        let p = plan::<f32>(&a, false, "resnet-small").unwrap();
        assert_eq!(p.targets, vec![88.0, 90.0, 92.0, 94.0]);
        let labels: Vec<&str> = p.configs.iter().map(Job::label).collect();
        assert_eq!(labels, ["FROG bs 512, s 64", "SGD bs 128", "SGD bs 512"]);
        for c in nets(&p) {
            assert_eq!((c.epochs, c.milestones.as_slice(), c.gamma), (160, &[80, 120][..], 0.1));
        }
        let Method::All(frog_core::Method::Frog(f)) = nets(&p)[0].method else { panic!("FROG first") };
        assert_eq!((f.lr, f.momentum, f.weight_decay, f.lr_other_ratio), (0.01, 0.9, 1e-5, 1.0));
        assert_eq!((f.sample_size, f.num_iters, f.tau, f.denom_eps, f.nesterov), (Some(64), 4, 1e-6, 1e-10, false));
        let Method::All(frog_core::Method::Sgd(s)) = nets(&p)[2].method else { panic!("SGD last") };
        assert_eq!((s.lr, s.momentum, s.weight_decay, s.nesterov), (0.1, 0.9, 1e-4, false));
        assert_eq!(p.data.test_limit, None);
    }

    #[test]
    fn run_files_are_chosen_by_name_or_path_and_flags_override_them() {
        let compare = plan::<f32>(&StudyArgs { run: Some("compare".into()), ..StudyArgs::default() }, false, "resnet-small").unwrap();
        let labels: Vec<&str> = compare.configs.iter().map(Job::label).collect();
        assert_eq!(labels, ["FROG bs 128, s 16", "SGD bs 128", "SGD bs 512", "AdamW bs 128", "K-FROG bs 128, s 64", "Muon bs 128"]);
        assert_eq!((compare.data.train_limit, compare.data.test_limit, nets(&compare)[4].epochs), (Some(10000), Some(2000), 4));
        let Method::Muon { filters, rest } = nets(&compare)[5].method else { panic!("Muon last") };
        assert_eq!((filters.lr, filters.momentum, rest.lr, rest.momentum, rest.weight_decay), (0.05, 0.95, 0.1, 0.9, 1e-4));
        let Method::All(frog_core::Method::AdamW(w)) = nets(&compare)[3].method else { panic!("AdamW fourth") };
        assert_eq!((w.lr, w.weight_decay, w.beta1, w.beta2, w.eps), (1e-3, 5e-2, 0.9, 0.999, 1e-8));
        let Method::All(frog_core::Method::Kfrog(k)) = nets(&compare)[4].method else { panic!("K-FROG last") };
        assert_eq!((k.lr, k.momentum, k.sample_size, k.y_sample_size, k.eps, k.num_iters), (1e-3, 0.0, Some(64), None, 1e-6, 4));
        // Study-wide flags apply to every configuration.
        let short = StudyArgs { run: Some("compare".into()), epochs: Some(1), train_limit: Some(512), ..StudyArgs::default() };
        let p = plan::<f32>(&short, false, "resnet-small").unwrap();
        assert!(nets(&p).iter().all(|c| c.epochs == 1 && c.milestones == [2, 3]));
        assert_eq!(p.data.train_limit, Some(512));
        // --optimizer takes the run's first configuration of it, with the flags.
        let one = StudyArgs { run: Some("compare".into()), optimizer: Some(OptName::Kfrog), y_sample: Some(32), ..StudyArgs::default() };
        let p = plan::<f32>(&one, false, "resnet-small").unwrap();
        assert_eq!(p.configs.len(), 1);
        assert_eq!(p.configs[0].label(), "K-FROG bs 128, s 64, y 32");
        let adamw = StudyArgs { optimizer: Some(OptName::AdamW), ..StudyArgs::default() };
        assert!(plan::<f32>(&adamw, false, "resnet-small").unwrap_err().to_string().contains("run `cpu` has no adamw configuration"));
        let foreign = StudyArgs { optimizer: Some(OptName::Sgd), sample: Some(8), ..StudyArgs::default() };
        assert!(plan::<f32>(&foreign, false, "resnet-small").unwrap_err().to_string().contains("--sample is not a setting of sgd"));
        let big = StudyArgs { y_sample: Some(129), ..one };
        assert!(plan::<f32>(&big, false, "resnet-small").unwrap_err().to_string().contains("--y-sample 129 is more than the batch of 128"));
        // A path: the file's own configurations and labels.
        let path = std::env::temp_dir().join(format!("frog-bench-run-{}.toml", std::process::id()));
        let text = "model = \"resnet-small\"\nepochs = 2\ntargets = [30.0]\n\n[[config]]\nlabel = \"mine\"\noptimizer = \"sgd\"\nbatch_size = 64\nlr = 0.05\n\n[[config]]\noptimizer = \"kfrog\"\nbatch_size = 64\nlr = 0.002\nsample = 128\n";
        std::fs::write(&path, text).unwrap();
        let file = StudyArgs { run: Some(path.to_str().unwrap().into()), ..StudyArgs::default() };
        let e = plan::<f32>(&file, false, "resnet-small").unwrap_err().to_string();
        assert!(e.contains("configuration 2: `sample` 128 is more than the batch of 64") && e.starts_with(path.to_str().unwrap()), "{e}");
        std::fs::write(&path, text.replace("sample = 128", "sample = 16")).unwrap();
        let p = plan::<f32>(&file, false, "resnet-small").unwrap();
        let labels: Vec<&str> = p.configs.iter().map(Job::label).collect();
        assert_eq!((labels, nets(&p)[0].batch, p.data.test_limit), (vec!["mine", "K-FROG bs 64, s 16"], 64, None));
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn a_configuration_is_picked_by_name_or_label_and_seeds_follow_the_first() {
        let pick = |config: &str| StudyArgs { run: Some("compare".into()), config: Some(config.into()), ..StudyArgs::default() };
        for by in ["muon-bs-128", "Muon bs 128"] {
            let p = plan::<f32>(&pick(by), false, "resnet-small").unwrap();
            assert_eq!(p.configs.iter().map(|c| (c.label(), c.name())).collect::<Vec<_>>(), [("Muon bs 128", "muon-bs-128")]);
            // The table keeps the run file's order for the runs already there.
            assert_eq!(p.order.len(), 6);
        }
        let e = plan::<f32>(&pick("muon"), false, "resnet-small").unwrap_err().to_string();
        assert!(e.contains("run `compare` has no configuration named or labelled `muon` (its names: frog-bs-128-s-16, sgd-bs-128,"), "{e}");
        // The flags apply to it, the optimizer's own only.
        let faster = StudyArgs { lr: Some(0.05), sgd_lr: Some(0.2), ns_steps: Some(3), seed: Some(4), seeds: Some(3), ..pick("muon-bs-128") };
        let p = plan::<f32>(&faster, false, "resnet-small").unwrap();
        let Method::Muon { filters, rest } = nets(&p)[0].method else { panic!("Muon") };
        assert_eq!((filters.lr, filters.ns_steps, rest.lr, rest.momentum), (0.05, 3, 0.2, 0.9));
        assert_eq!((&p.seeds[..], p.configs[0].seed()), (&[4, 5, 6][..], 4));
        let runs: Vec<u64> = p.runs().iter().map(Job::seed).collect();
        assert_eq!(runs, [4, 5, 6]);
        let e = plan::<f32>(&StudyArgs { tau: Some(1e-3), ..pick("sgd-bs-512") }, false, "resnet-small").unwrap_err().to_string();
        assert!(e.contains("--tau is not a setting of sgd; drop it for --config sgd-bs-512"), "{e}");
        // A Muon setting out of range is refused naming its part.
        let e = plan::<f32>(&StudyArgs { sgd_momentum: Some(2.0), ..pick("muon-bs-128") }, false, "resnet-small").unwrap_err().to_string();
        assert!(e.contains("configuration 6: invalid optimizer settings: the SGD beside Muon: momentum"), "{e}");
        let e = plan::<f32>(&StudyArgs { lr: Some(-1.0), ..pick("muon-bs-128") }, false, "resnet-small").unwrap_err().to_string();
        assert!(e.contains("invalid optimizer settings: Muon: lr"), "{e}");
        // Seeds run seed by seed: every configuration's first, then the second.
        let all = StudyArgs { run: Some("cpu".into()), seeds: Some(2), ..StudyArgs::default() };
        let runs: Vec<(String, u64)> = plan::<f32>(&all, false, "resnet-small").unwrap().runs().into_iter().map(|r| (r.name().to_string(), r.seed())).collect();
        assert_eq!(runs.iter().map(|(_, s)| *s).collect::<Vec<_>>(), [0, 0, 0, 1, 1, 1]);
        assert_eq!((runs[0].0.as_str(), runs[3].0.as_str()), ("frog-bs-128-s-16", "frog-bs-128-s-16"));
        assert!(plan::<f32>(&StudyArgs { seeds: Some(0), ..all.clone() }, false, "resnet-small").unwrap_err().to_string().contains("--seeds must be between 1"));
        let past = StudyArgs { seed: Some(u64::MAX), seeds: Some(2), ..all };
        assert!(plan::<f32>(&past, false, "resnet-small").unwrap_err().to_string().contains("runs past the largest seed"));
    }

    /// `--model airbench` runs the record; a configuration takes its
    /// method's flags over the recipe's values; what the recipe fixes, a
    /// method it has not and a switch between the recipe and a network
    /// are refused.
    #[test]
    fn airbench_runs_take_the_filters_settings_only() {
        let p = plan::<f32>(&StudyArgs { model: Some("airbench".into()), ..StudyArgs::default() }, false, "resnet-small").unwrap();
        let record = AirbenchConfig::record("Muon (record)", recipe::FilterMethod::record(), 0);
        assert_eq!(p.configs, [Job::Airbench { name: "muon".into(), recipe: record }]);
        assert_eq!((p.order, p.targets, p.data.train_limit, p.data.test_limit), (vec!["muon".to_string()], vec![80.0, 85.0, 90.0, 93.0], None, None));
        assert_eq!((p.configs[0].model(), p.configs[0].at_seed(5).seed()), ("airbench".to_string(), 5));
        let pick = |config: &str| StudyArgs { run: Some("airbench-compare".into()), config: Some(config.into()), ..StudyArgs::default() };
        let p = plan::<f64>(&StudyArgs { lr: Some(0.1), seed: Some(2), seeds: Some(2), train_limit: Some(4000), ..pick("sgd") }, false, "resnet18").unwrap();
        let Job::Airbench { name, recipe } = &p.runs()[1] else { panic!("airbench") };
        assert_eq!((name.as_str(), recipe.label.as_str(), recipe.seed, recipe.batch, recipe.epochs), ("sgd", "SGD", 3, 2000, 8.0));
        assert_eq!((recipe.filters, p.data.train_limit), (recipe::FilterMethod::sgd(0.1), Some(4000)), "the decay rule follows the rate");
        let frog = plan::<f32>(&StudyArgs { sample: Some(128), tau: Some(1e-3), ..pick("frog") }, false, "resnet-small").unwrap();
        let Job::Airbench { recipe: r, .. } = &frog.configs[0] else { panic!("airbench") };
        let recipe::FilterMethod::Frog(f) = r.filters else { panic!("FROG") };
        assert_eq!((f.lr, f.sample_size, f.tau, f.batch_averaged, r.label.as_str()), (0.1, Some(128), 1e-3, false, "FROG s 128"));
        let refused = [
            (StudyArgs { epochs: Some(2), ..pick("muon") }, "--epochs: the airbench recipe fixes its epochs (8)"),
            (StudyArgs { batch_size: Some(100), ..pick("muon") }, "--batch-size: the airbench recipe fixes"),
            (StudyArgs { milestones: Some(vec![1]), ..pick("muon") }, "--milestones: the airbench recipe fixes"),
            (StudyArgs { gamma: Some(0.5), ..pick("muon") }, "--gamma: the airbench recipe fixes"),
            (StudyArgs { sgd_lr: Some(0.1), ..pick("muon") }, "--sgd-lr is not a setting of muon on the airbench filters"),
            (StudyArgs { lr_other_ratio: Some(1.0), ..pick("frog") }, "--lr-other-ratio is not a setting of frog on the airbench filters"),
            (StudyArgs { sample: Some(2001), ..pick("frog") }, "--sample 2001 is more than the batch of 2000"),
            (StudyArgs { tau: Some(-1.0), ..pick("frog") }, "configuration 2: invalid optimizer settings: "),
            (StudyArgs { momentum: Some(2.0), ..pick("sgd") }, "configuration 3: invalid optimizer settings: "),
            (StudyArgs { run: Some("airbench".into()), optimizer: Some(OptName::AdamW), ..StudyArgs::default() }, "run `airbench` has no adamw configuration"),
            (StudyArgs { run: Some("airbench".into()), model: Some("resnet18".into()), ..StudyArgs::default() }, "--model resnet18 does not fit run `airbench` (model airbench)"),
            (StudyArgs { run: Some("compare".into()), model: Some("airbench".into()), ..StudyArgs::default() }, "--model airbench does not fit run `compare` (model resnet-small)"),
        ];
        for (a, want) in refused {
            let e = plan::<f32>(&a, false, "resnet-small").unwrap_err().to_string();
            assert!(e.contains(want), "{e:?} lacks {want:?}");
        }
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
        let p = plan::<f32>(&a, true, "resnet-small").unwrap();
        assert_eq!(p.configs.len(), 1);
        let c = nets(&p)[0];
        assert_eq!((c.label.as_str(), c.batch, c.epochs), ("FROG bs 64, s 8", 64, 2));
        let Method::All(frog_core::Method::Frog(f)) = c.method else { panic!("FROG") };
        assert_eq!((f.lr, f.sample_size, f.tau, f.tau_final, f.tau_steps), (0.02, Some(8), 1e-3, Some(1e-5), Some(100)));
        assert_eq!((p.data.dir.as_ref(), p.data.env_dir), (None, Some("/data".into())));
        // An incomplete damping schedule is refused before anything runs.
        let bad = StudyArgs { tau_steps: None, ..a.clone() };
        assert!(plan::<f32>(&bad, false, "resnet-small").unwrap_err().to_string().contains("tau_final and tau_steps"));
        // So is a sample larger than the batch, and a flag out of range.
        let big = StudyArgs { sample: Some(65), tau_steps: None, tau_final: None, ..a.clone() };
        assert!(plan::<f32>(&big, false, "resnet-small").unwrap_err().to_string().contains("--sample 65 is more than the batch of 64"));
        let many = StudyArgs { epochs: Some(1 << 40), ..a };
        assert!(plan::<f32>(&many, false, "resnet-small").unwrap_err().to_string().contains("--epochs"));
    }
}
