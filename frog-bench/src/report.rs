//! The study's outputs. Every run (a configuration at one seed) writes
//! its own results file, `runs/NAME-seed-S.json` ([`RunRecord`]); the
//! table and the other outputs are made from every results file in the
//! output folder, so runs made apart (`--config NAME --seed S`, on
//! several machines or days) add up to one study. Per configuration they
//! give the mean and standard deviation over its seeds ([`Summary`]): the
//! table (terminal, `summary.csv`, `results.json`), one row per run in
//! `results.csv`, per-epoch `curves.csv`, and two plots (SVG) of the
//! curves averaged over the seeds.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::plot::{self, Series};
use crate::study::Job;
use crate::train::EpochRecord;

/// The folder of the results files, under the output folder.
pub const RUNS_DIR: &str = "runs";

/// One run, as its results file holds it: what ran, on what, and every
/// epoch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// The configuration's label.
    pub config: String,
    /// The configuration's name (results files, `--config`).
    pub name: String,
    /// The seed.
    pub seed: u64,
    /// The model.
    pub model: String,
    /// The optimizer and its settings (their `Debug` form).
    pub optimizer: String,
    /// Training batch size.
    pub batch_size: usize,
    /// Initial learning rate (airbench: the filters').
    pub lr: f64,
    /// Epochs.
    pub epochs: usize,
    /// The step schedule's milestones (none for airbench).
    pub milestones: Vec<usize>,
    /// The step schedule's factor; `None` for airbench, whose rates fall
    /// linearly.
    pub gamma: Option<f64>,
    /// Where the data came from.
    pub data: String,
    /// Training images.
    pub train_images: usize,
    /// Test images.
    pub test_images: usize,
    /// The device it trained on.
    pub device: String,
    /// Every epoch.
    pub epochs_run: Vec<EpochRecord>,
}

impl RunRecord {
    /// The record of `job` on data `data` (`train` and `test` images) and
    /// `device`, before any epoch.
    pub fn new(job: &Job, data: &str, (train, test): (usize, usize), device: &str) -> Self {
        let (optimizer, batch_size, lr, epochs, milestones, gamma) = match job {
            Job::Net(c) => (format!("{:?}", c.method), c.batch, c.method.lr(), c.epochs, c.milestones.clone(), Some(c.gamma)),
            Job::Airbench { recipe, .. } => (format!("{:?}", recipe.filters), recipe.batch, recipe.filters.lr(), recipe.epochs.ceil() as usize, Vec::new(), None),
        };
        Self {
            config: job.label().into(),
            name: job.name().into(),
            seed: job.seed(),
            model: job.model(),
            optimizer,
            batch_size,
            lr,
            epochs,
            milestones,
            gamma,
            data: data.into(),
            train_images: train,
            test_images: test,
            device: device.into(),
            epochs_run: Vec::new(),
        }
    }

    /// Training minutes until the test accuracy first reached `target`
    /// percent (measured at epoch ends), if it did.
    pub fn minutes_to(&self, target: f64) -> Option<f64> {
        self.epochs_run.iter().find(|r| r.test_acc >= target).map(|r| r.train_seconds / 60.0)
    }

    fn best_acc(&self) -> f64 {
        self.epochs_run.iter().map(|r| r.test_acc).fold(0.0, f64::max)
    }

    /// Test accuracy after the last epoch.
    pub fn final_acc(&self) -> f64 {
        self.epochs_run.last().map_or(0.0, |r| r.test_acc)
    }

    /// Test accuracy with test-time augmentation after the last epoch,
    /// where the run measured it (the airbench recipe).
    pub fn tta_acc(&self) -> Option<f64> {
        self.epochs_run.last().and_then(|r| r.tta_test_acc)
    }

    /// Training minutes in all.
    pub fn minutes(&self) -> f64 {
        self.epochs_run.last().map_or(0.0, |r| r.train_seconds / 60.0)
    }

    /// The settings in which `other` differs from this run: every field
    /// but the seed, the device and the epochs, which runs of one
    /// configuration may differ in.
    fn differences(&self, other: &Self) -> Vec<&'static str> {
        let same = [
            ("config", self.config == other.config),
            ("model", self.model == other.model),
            ("optimizer", self.optimizer == other.optimizer),
            ("batch_size", self.batch_size == other.batch_size),
            ("lr", self.lr == other.lr),
            ("epochs", self.epochs == other.epochs),
            ("milestones", self.milestones == other.milestones),
            ("gamma", self.gamma == other.gamma),
        ];
        same.iter().filter(|(_, s)| !s).map(|(k, _)| *k).collect()
    }

    /// Whether `other` trained on the same data.
    fn same_data(&self, other: &Self) -> bool {
        (&self.data, self.train_images, self.test_images) == (&other.data, other.train_images, other.test_images)
    }

    /// The results file's name.
    fn file_name(&self) -> String {
        format!("{}-seed-{}.json", self.name, self.seed)
    }
}

/// Reads every results file (`*.json`) in `out`'s [`RUNS_DIR`]: none when
/// it does not exist. A file that is not a run, or two files of the same
/// run, is an error naming them.
pub fn load_runs(out: &Path) -> Result<Vec<RunRecord>> {
    let dir = out.join(RUNS_DIR);
    if !dir.exists() {
        return Ok(Vec::new());
    }
    let entries = std::fs::read_dir(&dir).map_err(|e| Error::new(format!("{}: cannot read: {e}", dir.display())))?;
    let mut paths: Vec<PathBuf> = entries
        .map(|e| e.map(|e| e.path()).map_err(|e| Error::new(format!("{}: cannot read: {e}", dir.display()))))
        .collect::<Result<_>>()?;
    paths.retain(|p| p.extension().is_some_and(|x| x == "json"));
    paths.sort();
    let mut runs: Vec<(PathBuf, RunRecord)> = Vec::with_capacity(paths.len());
    for path in paths {
        let text = std::fs::read_to_string(&path).map_err(|e| Error::new(format!("{}: cannot read: {e}", path.display())))?;
        let run: RunRecord = serde_json::from_str(&text).map_err(|e| Error::new(format!("{}: not a run's results file: {e}", path.display())))?;
        if let Some((first, _)) = runs.iter().find(|(_, r)| (&r.name, r.seed) == (&run.name, run.seed)) {
            return Err(Error::new(format!("{} and {} hold the same run ({}, seed {}); remove one", first.display(), path.display(), run.name, run.seed)));
        }
        runs.push((path, run));
    }
    Ok(runs.into_iter().map(|(_, r)| r).collect())
}

/// Checks that the `planned` runs can join the `existing` ones of `out`
/// in one table: all on the same data, and each configuration with the
/// same settings as its runs already there. Called before any training,
/// so that a mix is refused before it costs anything.
pub fn check_fits(out: &Path, existing: &[RunRecord], planned: &[RunRecord]) -> Result<()> {
    let dir = out.join(RUNS_DIR);
    for p in planned {
        for e in existing {
            if !p.same_data(e) {
                return Err(Error::new(format!(
                    "{} holds runs on other data ({}, {} training and {} test images; this study: {}, {} and {}); use another --out, or remove them",
                    dir.display(),
                    e.data,
                    e.train_images,
                    e.test_images,
                    p.data,
                    p.train_images,
                    p.test_images
                )));
            }
            let differ = p.differences(e);
            if p.name == e.name && !differ.is_empty() {
                return Err(Error::new(format!(
                    "{}: a run of `{}` with other settings ({}); use another --out, or remove its runs",
                    dir.join(e.file_name()).display(),
                    e.name,
                    differ.join(", ")
                )));
            }
        }
    }
    Ok(())
}

/// Writes `run`'s results file into `out`'s [`RUNS_DIR`].
pub fn write_run(out: &Path, run: &RunRecord) -> Result<()> {
    let dir = out.join(RUNS_DIR);
    std::fs::create_dir_all(&dir).map_err(|e| Error::new(format!("{}: cannot create: {e}", dir.display())))?;
    let path = dir.join(run.file_name());
    let json = serde_json::to_string_pretty(run).map_err(|e| write_error(&path)(&e))?;
    write(&path, &json)
}

/// Mean, and standard deviation (with Bessel's correction, over two or
/// more values), of some seeds' values.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Stat {
    /// The mean.
    pub mean: f64,
    /// The sample standard deviation; `None` for one value.
    pub sd: Option<f64>,
}

impl Stat {
    /// The statistics of `values`; `None` when there are none.
    pub fn of(values: &[f64]) -> Option<Self> {
        let n = values.len() as f64;
        let mean = values.iter().sum::<f64>() / n;
        let sd = (values.len() > 1).then(|| (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt());
        (!values.is_empty()).then_some(Self { mean, sd })
    }

    /// `mean` or `mean ± sd`, with `digits` decimals.
    fn text(&self, digits: usize) -> String {
        match self.sd {
            Some(sd) => format!("{:.digits$} ± {sd:.digits$}", self.mean),
            None => format!("{:.digits$}", self.mean),
        }
    }
}

/// One configuration's runs.
pub struct Summary<'a> {
    /// The configuration's name.
    pub name: &'a str,
    /// Its label.
    pub label: &'a str,
    /// Its runs, by seed.
    pub runs: Vec<&'a RunRecord>,
}

impl Summary<'_> {
    /// Final test accuracy over the seeds (`None` without runs).
    pub fn final_acc(&self) -> Option<Stat> {
        Stat::of(&self.runs.iter().map(|r| r.final_acc()).collect::<Vec<_>>())
    }

    /// Final test accuracy with test-time augmentation over the seeds
    /// that measured it (the airbench recipe's; `None` for the others).
    pub fn tta_acc(&self) -> Option<Stat> {
        Stat::of(&self.runs.iter().filter_map(|r| r.tta_acc()).collect::<Vec<_>>())
    }

    /// Training minutes over the seeds (`None` without runs).
    pub fn minutes(&self) -> Option<Stat> {
        Stat::of(&self.runs.iter().map(|r| r.minutes()).collect::<Vec<_>>())
    }

    /// Minutes to first reach `target` over the seeds that reached it
    /// (`None` when none did), and how many did.
    pub fn minutes_to(&self, target: f64) -> (Option<Stat>, usize) {
        let reached: Vec<f64> = self.runs.iter().filter_map(|r| r.minutes_to(target)).collect();
        (Stat::of(&reached), reached.len())
    }

    /// The curve of `f` averaged over the seeds, epoch by epoch: `(mean
    /// training minutes, mean value)` for every epoch all runs have.
    fn mean_curve(&self, f: fn(&EpochRecord) -> f64) -> Vec<(f64, f64)> {
        let epochs = self.runs.iter().map(|r| r.epochs_run.len()).min().unwrap_or(0);
        let n = self.runs.len() as f64;
        (0..epochs)
            .map(|e| {
                let minutes = self.runs.iter().map(|r| r.epochs_run[e].train_seconds / 60.0).sum::<f64>() / n;
                (minutes, self.runs.iter().map(|r| f(&r.epochs_run[e])).sum::<f64>() / n)
            })
            .collect()
    }
}

/// The runs grouped by configuration, in `order` (configuration names:
/// the run file's), then the others by name; each group's runs by seed.
pub fn summarize<'a>(runs: &'a [RunRecord], order: &[String]) -> Vec<Summary<'a>> {
    let mut groups: Vec<Summary<'a>> = Vec::new();
    for r in runs {
        match groups.iter_mut().find(|g| g.name == r.name) {
            Some(g) => g.runs.push(r),
            None => groups.push(Summary { name: &r.name, label: &r.config, runs: vec![r] }),
        }
    }
    let rank = |name: &str| order.iter().position(|o| o == name).unwrap_or(order.len());
    groups.sort_by(|a, b| (rank(a.name), a.name).cmp(&(rank(b.name), b.name)));
    for g in &mut groups {
        g.runs.sort_by_key(|r| r.seed);
    }
    groups
}

/// The table as text: one row per configuration, minutes to each target,
/// final test accuracy, with test-time augmentation where a configuration
/// measured it (airbench's `TTA acc`, a column only when one did), and
/// training minutes, each the mean ± standard deviation over the seeds
/// (over those that reached a target, `(k/n)` when only k of n did).
pub fn table(summaries: &[Summary<'_>], targets: &[f64], source: &str) -> String {
    let tta = summaries.iter().any(|s| s.tta_acc().is_some());
    let mut header = vec!["config".to_string(), "seeds".into()];
    header.extend(targets.iter().map(|t| format!("{t}%")));
    header.push("final acc".into());
    if tta {
        header.push("TTA acc".into());
    }
    header.push("minutes".into());
    let rows: Vec<Vec<String>> = summaries
        .iter()
        .map(|s| {
            let n = s.runs.len();
            let mut row = vec![s.label.to_string(), n.to_string()];
            row.extend(targets.iter().map(|&t| match s.minutes_to(t) {
                (Some(m), k) if k < n => format!("{} ({k}/{n})", m.text(2)),
                (Some(m), _) => m.text(2),
                (None, _) => "-".into(),
            }));
            let percent = |a: Option<Stat>| a.map_or("-".into(), |a| format!("{}%", a.text(2)));
            row.push(percent(s.final_acc()));
            if tta {
                row.push(percent(s.tta_acc()));
            }
            row.push(s.minutes().map_or("-".into(), |m| m.text(2)));
            row
        })
        .collect();
    let widths: Vec<usize> = (0..header.len()).map(|c| std::iter::once(&header).chain(&rows).map(|r| r[c].chars().count()).max().unwrap_or(0)).collect();
    let line = |cells: &[String]| {
        let mut l = format!("{:w$}", cells[0], w = widths[0]);
        for (cell, w) in cells.iter().zip(&widths).skip(1) {
            let _ = write!(l, " | {cell:>w$}");
        }
        l
    };
    let mut s = format!("Minutes of training to first reach each test accuracy ({source}); mean ± standard deviation over the seeds (k/n: only k of n seeds reached it):\n");
    for r in std::iter::once(&header).chain(&rows) {
        let _ = writeln!(s, "{}", line(r));
    }
    s
}

/// One run in `results.json`: its record, with what the table takes from it.
#[derive(Serialize)]
struct RunSummary<'a> {
    #[serde(flatten)]
    run: &'a RunRecord,
    best_test_acc: f64,
    final_test_acc: f64,
    tta_test_acc: Option<f64>,
    minutes_to_target: Vec<TargetMinutes>,
}

/// When a run first reached a target, if it did.
#[derive(Serialize)]
struct TargetMinutes {
    target: f64,
    minutes: Option<f64>,
}

/// One configuration in `results.json`.
#[derive(Serialize)]
struct ConfigSummary<'a> {
    config: &'a str,
    name: &'a str,
    seeds: Vec<u64>,
    final_test_acc: Option<Stat>,
    tta_test_acc: Option<Stat>,
    train_minutes: Option<Stat>,
    minutes_to_target: Vec<TargetStat>,
}

/// Minutes to a target over the seeds that reached it.
#[derive(Serialize)]
struct TargetStat {
    target: f64,
    minutes: Option<Stat>,
    reached: usize,
}

/// `results.json`: every run and every configuration's summary.
#[derive(Serialize)]
struct Results<'a> {
    data: &'a str,
    device: &'a str,
    targets: &'a [f64],
    runs: Vec<RunSummary<'a>>,
    summary: Vec<ConfigSummary<'a>>,
}

fn write_error(path: &Path) -> impl Fn(&dyn std::fmt::Display) -> Error + '_ {
    move |e| Error::new(format!("{}: cannot write: {e}", path.display()))
}

fn write(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).map_err(|e| write_error(path)(&e))
}

/// Writes a CSV file of `header` and `rows`.
fn write_csv(path: &Path, header: &[String], rows: &[Vec<String>]) -> Result<()> {
    let fail = write_error(path);
    let mut w = csv::Writer::from_path(path).map_err(|e| fail(&e))?;
    for row in std::iter::once(header).chain(rows.iter().map(Vec::as_slice)) {
        w.write_record(row).map_err(|e| fail(&e))?;
    }
    w.flush().map_err(|e| fail(&e))
}

/// Creates `out` and checks that files can be written there, so a bad
/// `--out` is reported before any training rather than after it.
pub fn prepare_out(out: &Path) -> Result<()> {
    std::fs::create_dir_all(out).map_err(|e| Error::new(format!("--out {}: cannot create the directory: {e}", out.display())))?;
    let probe = out.join(".frog-bench-write-test");
    std::fs::write(&probe, b"").map_err(|e| Error::new(format!("--out {}: cannot write there: {e}", out.display())))?;
    std::fs::remove_file(&probe).map_err(|e| Error::new(format!("--out {}: cannot remove {}: {e}", out.display(), probe.display())))
}

/// `mean` and `sd` cells of a CSV row (`sd` empty for one value, both for none).
fn stat_cells(s: Option<Stat>, digits: usize) -> [String; 2] {
    match s {
        Some(s) => [format!("{:.digits$}", s.mean), s.sd.map_or(String::new(), |sd| format!("{sd:.digits$}"))],
        None => [String::new(), String::new()],
    }
}

/// Writes `results.csv` (a row per run, `tta_test_acc` last), `summary.csv`
/// (a row per configuration, `tta_test_acc_mean` and `_sd` last; the
/// test-time-augmented columns are empty where a run measured none),
/// `results.json`, `curves.csv`, `loss_vs_time.svg` and
/// `accuracy_vs_time.svg` to `out`, from `runs` (every run in `out`, all on
/// data `source`), the configurations in `order` (see [`summarize`]).
pub fn write_all(out: &Path, runs: &[RunRecord], order: &[String], targets: &[f64], source: &str, device: &str) -> Result<()> {
    std::fs::create_dir_all(out).map_err(|e| Error::new(format!("{}: cannot create: {e}", out.display())))?;
    let summaries = summarize(runs, order);
    let in_order: Vec<&RunRecord> = summaries.iter().flat_map(|s| s.runs.iter().copied()).collect();
    let owned = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    // results.csv: the columns of a one-seed study first, as before there were seeds.
    let mut header = owned(&["data", "config", "model", "batch_size", "lr", "epochs", "best_test_acc", "train_minutes"]);
    header.extend(targets.iter().map(|t| format!("minutes_to_{t}")));
    header.extend(owned(&["name", "seed", "final_test_acc", "tta_test_acc"]));
    let table: Vec<Vec<String>> = in_order
        .iter()
        .map(|r| {
            let mut row = vec![source.into(), r.config.clone(), r.model.clone(), r.batch_size.to_string(), r.lr.to_string(), r.epochs.to_string()];
            row.extend([format!("{:.2}", r.best_acc()), format!("{:.3}", r.minutes())]);
            row.extend(targets.iter().map(|&t| r.minutes_to(t).map_or(String::new(), |m| format!("{m:.3}"))));
            row.extend([r.name.clone(), r.seed.to_string(), format!("{:.2}", r.final_acc())]);
            row.push(r.tta_acc().map_or(String::new(), |a| format!("{a:.2}")));
            row
        })
        .collect();
    write_csv(&out.join("results.csv"), &header, &table)?;
    let mut header = owned(&["data", "config", "name", "seeds", "final_test_acc_mean", "final_test_acc_sd", "train_minutes_mean", "train_minutes_sd"]);
    for t in targets {
        header.extend([format!("minutes_to_{t}_mean"), format!("minutes_to_{t}_sd"), format!("reached_{t}")]);
    }
    header.extend(owned(&["tta_test_acc_mean", "tta_test_acc_sd"]));
    let rows: Vec<Vec<String>> = summaries
        .iter()
        .map(|s| {
            let mut row = vec![source.into(), s.label.into(), s.name.into(), s.runs.len().to_string()];
            row.extend(stat_cells(s.final_acc(), 2));
            row.extend(stat_cells(s.minutes(), 3));
            for &t in targets {
                let (m, k) = s.minutes_to(t);
                row.extend(stat_cells(m, 3));
                row.push(k.to_string());
            }
            row.extend(stat_cells(s.tta_acc(), 2));
            row
        })
        .collect();
    write_csv(&out.join("summary.csv"), &header, &rows)?;
    let curve_header =
        owned(&["data", "config", "epoch", "lr", "train_loss", "train_acc", "test_loss", "test_acc", "epoch_seconds", "train_seconds", "seed"]);
    let curves: Vec<Vec<String>> = in_order
        .iter()
        .flat_map(|r| {
            r.epochs_run.iter().map(|e| {
                let mut row = vec![source.to_string(), r.config.clone(), e.epoch.to_string(), e.lr.to_string()];
                row.extend([e.train_loss, e.train_acc, e.test_loss, e.test_acc, e.epoch_seconds, e.train_seconds].map(|v| format!("{v:.5}")));
                row.push(r.seed.to_string());
                row
            })
        })
        .collect();
    write_csv(&out.join("curves.csv"), &curve_header, &curves)?;
    let doc = Results {
        data: source,
        device,
        targets,
        runs: in_order
            .iter()
            .map(|r| RunSummary {
                run: r,
                best_test_acc: r.best_acc(),
                final_test_acc: r.final_acc(),
                tta_test_acc: r.tta_acc(),
                minutes_to_target: targets.iter().map(|&target| TargetMinutes { target, minutes: r.minutes_to(target) }).collect(),
            })
            .collect(),
        summary: summaries
            .iter()
            .map(|s| ConfigSummary {
                config: s.label,
                name: s.name,
                seeds: s.runs.iter().map(|r| r.seed).collect(),
                final_test_acc: s.final_acc(),
                tta_test_acc: s.tta_acc(),
                train_minutes: s.minutes(),
                minutes_to_target: targets
                    .iter()
                    .map(|&target| {
                        let (minutes, reached) = s.minutes_to(target);
                        TargetStat { target, minutes, reached }
                    })
                    .collect(),
            })
            .collect(),
    };
    let json = serde_json::to_string_pretty(&doc).map_err(|e| write_error(&out.join("results.json"))(&e))?;
    write(&out.join("results.json"), &json)?;
    let series = |f: fn(&EpochRecord) -> f64| -> Vec<Series> { summaries.iter().map(|s| (s.label.to_string(), s.mean_curve(f))).collect() };
    let loss = plot::line_chart(&format!("Training loss vs time ({source})"), "training loss", &series(|e| e.train_loss))?;
    write(&out.join("loss_vs_time.svg"), &loss)?;
    let acc = plot::line_chart(&format!("Test accuracy vs time ({source})"), "test accuracy (%)", &series(|e| e.test_acc))?;
    write(&out.join("accuracy_vs_time.svg"), &acc)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::Arch;
    use crate::optim::Method;
    use crate::train::RunConfig;
    use frog_core::SgdConfig;

    /// A run of configuration `label` at `seed`: an epoch per accuracy,
    /// 30 s each (times `pace`).
    fn record(label: &str, seed: u64, accs: &[f64], pace: f64) -> RunRecord {
        let config = RunConfig {
            label: label.into(),
            name: crate::runfile::default_name(label),
            arch: Arch::tiny_cnn(),
            method: Method::from(SgdConfig { lr: 0.1, momentum: 0.9, weight_decay: 0.0, nesterov: false, ..SgdConfig::default() }),
            batch: 8,
            epochs: accs.len(),
            milestones: vec![],
            gamma: 0.1,
            seed,
        };
        let mut r = RunRecord::new(&Job::Net(config), "SYNTHETIC, seed 0", (100, 50), "cpu");
        r.epochs_run = accs
            .iter()
            .enumerate()
            .map(|(i, &a)| EpochRecord {
                epoch: i + 1,
                lr: 0.1,
                train_loss: 2.0 - i as f64 * 0.1,
                train_acc: a,
                test_loss: 1.0,
                test_acc: a,
                epoch_seconds: 30.0 * pace,
                train_seconds: 30.0 * pace * (i + 1) as f64,
                tta_test_acc: None,
            })
            .collect();
        r
    }

    fn out_dir(name: &str) -> PathBuf {
        let out = std::env::temp_dir().join(format!("frog-bench-report-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&out);
        out
    }

    #[test]
    fn minutes_to_target_is_the_first_epoch_reaching_it() {
        let r = record("x", 0, &[30.0, 55.0, 50.0, 61.0], 1.0);
        assert_eq!(r.minutes_to(50.0), Some(1.0));
        assert_eq!(r.minutes_to(60.0), Some(2.0));
        assert_eq!(r.minutes_to(70.0), None);
        assert_eq!((r.final_acc(), r.best_acc(), r.minutes()), (61.0, 61.0, 2.0));
        let runs = [r];
        let t = table(&summarize(&runs, &[]), &[50.0, 70.0], "test data");
        assert!(t.contains("test data") && t.contains("1.00") && t.contains(" - ") && t.contains("61.00%"), "{t}");
        assert!(!t.lines().nth(2).unwrap().contains('±'), "one seed has no deviation: {t}");
        assert!(!t.contains("TTA"), "no column of test-time augmentation without it: {t}");
    }

    #[test]
    fn statistics_are_the_mean_and_sample_deviation() {
        let s = Stat::of(&[1.0, 2.0, 3.0, 6.0]).unwrap();
        assert_eq!(s.mean, 3.0);
        approx::assert_abs_diff_eq!(s.sd.unwrap(), (14.0f64 / 3.0).sqrt(), epsilon = 1e-12);
        assert_eq!(Stat::of(&[4.0]), Some(Stat { mean: 4.0, sd: None }));
        assert_eq!(Stat::of(&[]), None);
        assert_eq!(s.text(2), "3.00 ± 2.16");
    }

    #[test]
    fn seeds_of_a_configuration_make_one_row_of_means_and_deviations() {
        // B is listed first in the run file's order; C is not in it.
        let mut runs = vec![
            record("A x", 1, &[40.0, 52.0], 1.0),
            record("A x", 0, &[30.0, 56.0], 2.0),
            record("C", 0, &[10.0, 20.0], 1.0),
            record("B", 0, &[50.0, 60.0], 1.0),
            record("A x", 2, &[45.0, 48.0], 1.0),
        ];
        // A x measured the final accuracy with test-time augmentation, as airbench does.
        for (i, tta) in [(0, 94.0), (1, 93.0), (4, 95.0)] {
            runs[i].epochs_run[1].tta_test_acc = Some(tta);
        }
        let order = vec!["b".to_string(), "a-x".to_string()];
        let s = summarize(&runs, &order);
        assert_eq!(s.iter().map(|s| s.label).collect::<Vec<_>>(), ["B", "A x", "C"]);
        assert_eq!(s[1].runs.iter().map(|r| r.seed).collect::<Vec<_>>(), [0, 1, 2]);
        let acc = s[1].final_acc().unwrap();
        approx::assert_abs_diff_eq!(acc.mean, 52.0, epsilon = 1e-12);
        approx::assert_abs_diff_eq!(acc.sd.unwrap(), 4.0, epsilon = 1e-12);
        let minutes = s[1].minutes().unwrap();
        approx::assert_abs_diff_eq!(minutes.mean, 4.0 / 3.0, epsilon = 1e-12);
        // 50 %: seed 0 at 2 minutes, seed 1 at 1; seed 2 never.
        let (m, reached) = s[1].minutes_to(50.0);
        assert_eq!((m.unwrap().mean, reached), (1.5, 2));
        assert_eq!(s[1].minutes_to(70.0), (None, 0));
        assert_eq!((s[1].tta_acc(), s[0].tta_acc()), (Some(Stat { mean: 94.0, sd: Some(1.0) }), None));
        let t = table(&s, &[50.0, 70.0], "data");
        let lines: Vec<&str> = t.lines().skip(1).collect();
        assert_eq!(lines[0].split('|').map(str::trim).skip(4).collect::<Vec<_>>(), ["final acc", "TTA acc", "minutes"], "{t}");
        assert!(lines[2].starts_with("A x") && lines[2].contains("1.50 ± 0.71 (2/3)") && lines[2].contains("52.00 ± 4.00% | 94.00 ± 1.00%"), "{t}");
        assert!(lines[1].contains("60.00% |             - |"), "{t}");
        assert!(lines.iter().all(|l| l.chars().count() == lines[0].chars().count()), "{t}");
        // The plots average the seeds epoch by epoch.
        assert_eq!(s[1].mean_curve(|e| e.test_acc), vec![(2.0 / 3.0, 115.0 / 3.0), (4.0 / 3.0, 52.0)]);

        let out = out_dir("seeds");
        write_all(&out, &runs, &order, &[50.0, 70.0], "data", "cpu").unwrap();
        let rows: Vec<csv::StringRecord> = csv::Reader::from_path(out.join("summary.csv")).unwrap().records().map(|r| r.unwrap()).collect();
        assert_eq!(rows.iter().map(|r| r[1].to_string()).collect::<Vec<_>>(), ["B", "A x", "C"]);
        assert_eq!(&rows[1].iter().collect::<Vec<_>>()[3..], ["3", "52.00", "4.00", "1.333", "0.577", "1.500", "0.707", "2", "", "", "0", "94.00", "1.00"]);
        assert_eq!(&rows[0].iter().collect::<Vec<_>>()[14..], ["", ""]);
        assert_eq!(&rows[0].iter().collect::<Vec<_>>()[3..6], ["1", "60.00", ""]);
        let mut per_run = csv::Reader::from_path(out.join("results.csv")).unwrap();
        let header: Vec<String> = per_run.headers().unwrap().iter().map(String::from).collect();
        assert_eq!(&header[header.len() - 4..], ["name", "seed", "final_test_acc", "tta_test_acc"]);
        let per_run: Vec<csv::StringRecord> = per_run.records().map(|r| r.unwrap()).collect();
        let seeds: Vec<(&str, &str)> = per_run.iter().map(|r| (&r[1], &r[11])).collect();
        assert_eq!(seeds, [("B", "0"), ("A x", "0"), ("A x", "1"), ("A x", "2"), ("C", "0")]);
        let curves: Vec<csv::StringRecord> = csv::Reader::from_path(out.join("curves.csv")).unwrap().records().map(|r| r.unwrap()).collect();
        assert_eq!((curves.len(), &curves[3][1], &curves[3][10]), (10, "A x", "0"));
        let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
        assert_eq!(json["summary"][1]["seeds"], serde_json::json!([0, 1, 2]));
        assert_eq!(json["summary"][1]["minutes_to_target"][0]["reached"], 2);
        assert_eq!(json["summary"][0]["final_test_acc"]["sd"], serde_json::Value::Null);
        assert_eq!((&json["summary"][1]["tta_test_acc"]["mean"], &json["summary"][0]["tta_test_acc"]), (&serde_json::json!(94.0), &serde_json::Value::Null));
        assert_eq!((&json["runs"][1]["tta_test_acc"], &json["runs"][0]["tta_test_acc"]), (&serde_json::json!(93.0), &serde_json::Value::Null));
        assert_eq!(json["runs"].as_array().unwrap().len(), 5);
        for svg in ["loss_vs_time.svg", "accuracy_vs_time.svg"] {
            let chart = crate::plot::svg::parse(&std::fs::read_to_string(out.join(svg)).unwrap());
            assert_eq!(chart.legend_texts, ["B", "A x", "C"], "one line per configuration");
        }
        std::fs::remove_dir_all(out).unwrap();
    }

    #[test]
    fn outputs_quote_labels_and_draw_one_line_per_config() {
        let out = out_dir("quote");
        let labels = ["FROG bs 8, s 2", "SGD bs 8", "SGD \"bs\" 32", "FROG bs 32, s 8", "SGD bs 128"];
        let mut results: Vec<RunRecord> = labels.iter().enumerate().map(|(i, l)| record(l, 0, &[40.0 + i as f64, 52.0], 1.0)).collect();
        results[1].epochs_run[1].tta_test_acc = Some(93.456);
        let order: Vec<String> = results.iter().map(|r| r.name.clone()).collect();
        write_all(&out, &results, &order, &[50.0, 99.0], "SYNTHETIC, seed 0", "cpu").unwrap();
        let csv = std::fs::read_to_string(out.join("results.csv")).unwrap();
        assert!(csv.lines().nth(1).unwrap().starts_with("\"SYNTHETIC, seed 0\",\"FROG bs 8, s 2\",tiny-cnn,8,"), "{csv}");
        // Read back by a CSV reader, every field is what was written.
        let mut rows = csv::Reader::from_path(out.join("results.csv")).unwrap();
        assert_eq!(rows.headers().unwrap().iter().skip(9).collect::<Vec<_>>(), ["minutes_to_99", "name", "seed", "final_test_acc", "tta_test_acc"]);
        let rows: Vec<csv::StringRecord> = rows.records().map(|r| r.unwrap()).collect();
        assert_eq!(rows.iter().map(|r| r[1].to_string()).collect::<Vec<_>>(), labels);
        assert_eq!((&rows[0][8], &rows[0][9], &rows[0][13]), ("1.000", "", ""), "no test-time augmentation measured: empty");
        assert_eq!(&rows[1][13], "93.46");
        let curves: Vec<csv::StringRecord> = csv::Reader::from_path(out.join("curves.csv")).unwrap().records().map(|r| r.unwrap()).collect();
        assert_eq!(curves.len(), 10);
        assert_eq!((&curves[2][1], &curves[2][2], &curves[2][4]), ("SGD bs 8", "1", "2.00000"));
        let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
        assert_eq!(json["runs"][0]["minutes_to_target"][0]["minutes"], 1.0);
        assert_eq!(json["runs"][0]["minutes_to_target"][1]["minutes"], serde_json::Value::Null);
        assert_eq!(json["runs"][2]["config"], labels[2]);
        assert_eq!(json["runs"][1]["epochs_run"][1]["train_seconds"], 60.0);
        for svg in ["loss_vs_time.svg", "accuracy_vs_time.svg"] {
            let chart = crate::plot::svg::parse(&std::fs::read_to_string(out.join(svg)).unwrap());
            assert_eq!((chart.data_lines.len(), chart.legend_texts.clone()), (5, labels.map(String::from).to_vec()));
            assert!(chart.texts.iter().any(|t| t.contains("SYNTHETIC")));
        }
        std::fs::remove_dir_all(out).unwrap();
    }

    #[test]
    fn results_files_round_trip_and_refuse_a_mix() {
        let out = out_dir("runs");
        assert_eq!(load_runs(&out).unwrap(), vec![], "no folder, no runs");
        let (a0, a1) = (record("A", 0, &[40.0, 50.0], 1.0), record("A", 1, &[42.0, 51.0], 1.0));
        write_run(&out, &a0).unwrap();
        write_run(&out, &a1).unwrap();
        assert!(out.join("runs/a-seed-0.json").exists());
        let existing = load_runs(&out).unwrap();
        assert_eq!(existing, vec![a0.clone(), a1.clone()]);
        // A test loss that is not finite is written as JSON's null and read back as NaN.
        let mut lost = record("L", 0, &[10.0], 1.0);
        lost.epochs_run[0].test_loss = f64::INFINITY;
        write_run(&out, &lost).unwrap();
        let back = load_runs(&out).unwrap().pop().unwrap();
        assert!(back.epochs_run[0].test_loss.is_nan() && back.epochs_run[0].test_acc == 10.0);
        std::fs::remove_file(out.join("runs/l-seed-0.json")).unwrap();
        // Another seed or configuration joins them; other settings or data do not.
        check_fits(&out, &existing, &[record("A", 2, &[1.0, 2.0], 1.0), record("B", 0, &[1.0], 1.0)]).unwrap();
        let mut other = record("A", 2, &[1.0, 2.0], 1.0);
        other.lr = 0.2;
        other.epochs = 3;
        let e = check_fits(&out, &existing, &[other]).unwrap_err().to_string();
        assert!(e.contains("a-seed-0.json: a run of `a` with other settings (lr, epochs)"), "{e}");
        let mut elsewhere = record("B", 0, &[], 1.0);
        elsewhere.data = "CIFAR-10 (x)".into();
        let e = check_fits(&out, &existing, &[elsewhere]).unwrap_err().to_string();
        assert!(e.contains("holds runs on other data (SYNTHETIC, seed 0, 100 training and 50 test images; this study: CIFAR-10 (x)"), "{e}");
        // A damaged file, and a second copy of a run, are errors naming the files.
        std::fs::copy(out.join("runs/a-seed-1.json"), out.join("runs/copy.json")).unwrap();
        let e = load_runs(&out).unwrap_err().to_string();
        assert!(e.contains("a-seed-1.json and") && e.contains("copy.json hold the same run (a, seed 1)"), "{e}");
        std::fs::write(out.join("runs/copy.json"), "{\"config\": 3}").unwrap();
        let e = load_runs(&out).unwrap_err().to_string();
        assert!(e.contains("copy.json: not a run's results file"), "{e}");
        std::fs::remove_dir_all(out).unwrap();
    }

    #[test]
    fn the_five_configurations_of_the_comparison_all_show_and_fit() {
        let a = crate::cli::StudyArgs { run: Some("original-compare".into()), ..crate::cli::StudyArgs::default() };
        let plan = crate::study::plan::<f32>(&a, false, "resnet-small").unwrap();
        let results: Vec<RunRecord> = plan
            .configs
            .iter()
            .enumerate()
            .map(|(i, c)| RunRecord { epochs_run: record("x", 0, &[80.0 + i as f64, 89.0 + i as f64, 95.0], 1.0).epochs_run, ..RunRecord::new(c, "CIFAR-10", (1, 1), "cpu") })
            .collect();
        let labels: Vec<&str> = plan.configs.iter().map(Job::label).collect();
        assert_eq!(labels.len(), 5);
        // The table: one row per configuration, every row as wide as the header.
        let t = table(&summarize(&results, &plan.order), &plan.targets, "CIFAR-10");
        let lines: Vec<&str> = t.lines().skip(1).collect();
        assert_eq!(lines.len(), 6);
        assert!(lines.iter().all(|l| l.chars().count() == lines[0].chars().count()), "{t}");
        for (l, label) in lines[1..].iter().zip(&labels) {
            assert!(l.starts_with(label), "{l}");
        }
        let out = out_dir("five");
        write_all(&out, &results, &plan.order, &plan.targets, "CIFAR-10", "cpu").unwrap();
        let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
        let optimizers: Vec<String> = json["runs"].as_array().unwrap().iter().map(|r| r["optimizer"].as_str().unwrap().split('(').next().unwrap().to_string()).collect();
        assert_eq!(optimizers, ["Frog", "Sgd", "Sgd", "AdamW", "Kfrog"]);
        let rows: Vec<csv::StringRecord> = csv::Reader::from_path(out.join("results.csv")).unwrap().records().map(|r| r.unwrap()).collect();
        assert_eq!(rows.iter().map(|r| r[1].to_string()).collect::<Vec<_>>(), labels);
        for svg in ["loss_vs_time.svg", "accuracy_vs_time.svg"] {
            let chart = crate::plot::svg::parse(&std::fs::read_to_string(out.join(svg)).unwrap());
            assert_eq!(chart.legend_texts, labels);
            let colors: std::collections::BTreeSet<&str> = chart.data_lines.iter().map(|l| l.stroke.as_str()).collect();
            assert_eq!((chart.data_lines.len(), colors.len()), (5, 5), "five lines in five colours");
            // Every label fits the legend box at a generous width per character.
            let (x0, _, x1, _) = chart.legend_box;
            let longest = labels.iter().map(|l| l.chars().count()).max().unwrap() as f64;
            assert!(46.0 + longest * crate::plot::LEGEND_CHAR_WIDTH <= x1 - x0 + 4.0, "{longest} characters in {}", x1 - x0);
        }
        std::fs::remove_dir_all(out).unwrap();
    }

    #[test]
    fn a_bad_out_is_found_before_any_work() {
        let base = out_dir("out");
        std::fs::create_dir_all(&base).unwrap();
        prepare_out(&base.join("fresh/nested")).unwrap();
        let file = base.join("a-file");
        std::fs::write(&file, b"x").unwrap();
        let e = prepare_out(&file.join("out")).unwrap_err().to_string();
        assert!(e.starts_with("--out ") && e.contains("cannot create"), "{e}");
        std::fs::remove_dir_all(base).unwrap();
    }
}
