//! The study's outputs: the time-to-accuracy table (terminal, CSV, JSON),
//! per-epoch curves (CSV) and two plots (SVG).

use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::plot::{self, Series};
use crate::train::{EpochRecord, RunConfig};

/// One configuration's finished run.
pub struct RunResult {
    /// What ran.
    pub config: RunConfig,
    /// Per-epoch records.
    pub records: Vec<EpochRecord>,
}

impl RunResult {
    /// Training minutes until the test accuracy first reached `target`
    /// percent (measured at epoch ends), if it did.
    pub fn minutes_to(&self, target: f64) -> Option<f64> {
        self.records.iter().find(|r| r.test_acc >= target).map(|r| r.train_seconds / 60.0)
    }

    fn best_acc(&self) -> f64 {
        self.records.iter().map(|r| r.test_acc).fold(0.0, f64::max)
    }
}

/// The table as text: one row per configuration, minutes to each target.
pub fn table(results: &[RunResult], targets: &[f64], source: &str) -> String {
    let mut s = format!("Minutes of training to first reach each test accuracy ({source}):\n");
    let width = results.iter().map(|r| r.config.label.len()).max().unwrap_or(6).max(6);
    let _ = write!(s, "{:width$}", "config");
    for t in targets {
        let _ = write!(s, " | {:>7}", format!("{t}%"));
    }
    let _ = writeln!(s, " | {:>7} | {:>7}", "best", "minutes");
    for r in results {
        let _ = write!(s, "{:width$}", r.config.label);
        for &t in targets {
            let cell = r.minutes_to(t).map_or("-".into(), |m| format!("{m:.2}"));
            let _ = write!(s, " | {cell:>7}");
        }
        let total = r.records.last().map_or(0.0, |l| l.train_seconds / 60.0);
        let _ = writeln!(s, " | {:>6.2}% | {total:>7.2}", r.best_acc());
    }
    s
}

/// `results.json`: the table and every epoch of every run.
#[derive(Serialize)]
struct Results<'a> {
    data: &'a str,
    device: &'a str,
    targets: &'a [f64],
    runs: Vec<RunSummary<'a>>,
}

/// One configuration in `results.json`.
#[derive(Serialize)]
struct RunSummary<'a> {
    config: &'a str,
    model: &'a str,
    optimizer: String,
    batch_size: usize,
    epochs: usize,
    milestones: &'a [usize],
    gamma: f64,
    seed: u64,
    best_test_acc: f64,
    minutes_to_target: Vec<TargetMinutes>,
    epochs_run: &'a [EpochRecord],
}

/// When a run first reached a target, if it did.
#[derive(Serialize)]
struct TargetMinutes {
    target: f64,
    minutes: Option<f64>,
}

impl<'a> RunSummary<'a> {
    fn new(r: &'a RunResult, targets: &[f64]) -> Self {
        let c = &r.config;
        Self {
            config: &c.label,
            model: &c.arch.name,
            optimizer: format!("{:?}", c.method),
            batch_size: c.batch,
            epochs: c.epochs,
            milestones: &c.milestones,
            gamma: c.gamma,
            seed: c.seed,
            best_test_acc: r.best_acc(),
            minutes_to_target: targets.iter().map(|&target| TargetMinutes { target, minutes: r.minutes_to(target) }).collect(),
            epochs_run: &r.records,
        }
    }
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

/// Writes `results.csv`, `results.json`, `curves.csv`, `loss_vs_time.svg`
/// and `accuracy_vs_time.svg` to `out`.
pub fn write_all(out: &Path, results: &[RunResult], targets: &[f64], source: &str, device: &str) -> Result<()> {
    std::fs::create_dir_all(out).map_err(|e| Error::new(format!("{}: cannot create: {e}", out.display())))?;
    let owned = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let mut header = owned(&["data", "config", "model", "batch_size", "lr", "epochs", "best_test_acc", "train_minutes"]);
    header.extend(targets.iter().map(|t| format!("minutes_to_{t}")));
    header.push("tta_test_acc".into());
    let table: Vec<Vec<String>> = results
        .iter()
        .map(|r| {
            let c = &r.config;
            let total = r.records.last().map_or(0.0, |l| l.train_seconds / 60.0);
            let mut row = vec![source.into(), c.label.clone(), c.arch.name.clone(), c.batch.to_string(), c.method.lr().to_string(), c.epochs.to_string()];
            row.extend([format!("{:.2}", r.best_acc()), format!("{total:.3}")]);
            row.extend(targets.iter().map(|&t| r.minutes_to(t).map_or(String::new(), |m| format!("{m:.3}"))));
            row.push(r.records.last().and_then(|l| l.tta_test_acc).map_or(String::new(), |a| format!("{a:.2}")));
            row
        })
        .collect();
    write_csv(&out.join("results.csv"), &header, &table)?;
    let curve_header =
        owned(&["data", "config", "epoch", "lr", "train_loss", "train_acc", "test_loss", "test_acc", "epoch_seconds", "train_seconds"]);
    let curves: Vec<Vec<String>> = results
        .iter()
        .flat_map(|r| {
            r.records.iter().map(|e| {
                let mut row = vec![source.to_string(), r.config.label.clone(), e.epoch.to_string(), e.lr.to_string()];
                row.extend([e.train_loss, e.train_acc, e.test_loss, e.test_acc, e.epoch_seconds, e.train_seconds].map(|v| format!("{v:.5}")));
                row
            })
        })
        .collect();
    write_csv(&out.join("curves.csv"), &curve_header, &curves)?;
    let doc = Results { data: source, device, targets, runs: results.iter().map(|r| RunSummary::new(r, targets)).collect() };
    let json = serde_json::to_string_pretty(&doc).map_err(|e| write_error(&out.join("results.json"))(&e))?;
    write(&out.join("results.json"), &json)?;
    let series = |f: fn(&EpochRecord) -> f64| -> Vec<Series> {
        results.iter().map(|r| (r.config.label.clone(), r.records.iter().map(|e| (e.train_seconds / 60.0, f(e))).collect())).collect()
    };
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
    use frog_core::SgdConfig;

    fn result(label: &str, accs: &[f64]) -> RunResult {
        let config = RunConfig {
            label: label.into(),
            arch: Arch::tiny_cnn(),
            method: Method::Sgd(SgdConfig { lr: 0.1, momentum: 0.9, weight_decay: 0.0, nesterov: false, ..SgdConfig::default() }),
            batch: 8,
            epochs: accs.len(),
            milestones: vec![],
            gamma: 0.1,
            seed: 0,
        };
        let records = accs
            .iter()
            .enumerate()
            .map(|(i, &a)| EpochRecord {
                epoch: i + 1,
                lr: 0.1,
                train_loss: 2.0 - i as f64 * 0.1,
                train_acc: a,
                test_loss: 1.0,
                test_acc: a,
                epoch_seconds: 30.0,
                train_seconds: 30.0 * (i + 1) as f64,
                tta_test_acc: None,
            })
            .collect();
        RunResult { config, records }
    }

    #[test]
    fn minutes_to_target_is_the_first_epoch_reaching_it() {
        let r = result("x", &[30.0, 55.0, 50.0, 61.0]);
        assert_eq!(r.minutes_to(50.0), Some(1.0));
        assert_eq!(r.minutes_to(60.0), Some(2.0));
        assert_eq!(r.minutes_to(70.0), None);
        let t = table(&[r], &[50.0, 70.0], "test data");
        assert!(t.contains("test data") && t.contains("1.00") && t.contains(" - "), "{t}");
    }

    #[test]
    fn outputs_quote_labels_and_draw_one_line_per_config() {
        let out = std::env::temp_dir().join(format!("frog-bench-report-{}", std::process::id()));
        let labels = ["FROG bs 8, s 2", "SGD bs 8", "SGD \"bs\" 32", "FROG bs 32, s 8", "SGD bs 128"];
        let mut results: Vec<RunResult> = labels.iter().enumerate().map(|(i, l)| result(l, &[40.0 + i as f64, 52.0])).collect();
        results[1].records[1].tta_test_acc = Some(93.456);
        write_all(&out, &results, &[50.0, 99.0], "SYNTHETIC, seed 0", "cpu").unwrap();
        let csv = std::fs::read_to_string(out.join("results.csv")).unwrap();
        assert!(csv.lines().nth(1).unwrap().starts_with("\"SYNTHETIC, seed 0\",\"FROG bs 8, s 2\",tiny-cnn,8,"), "{csv}");
        // Read back by a CSV reader, every field is what was written.
        let mut rows = csv::Reader::from_path(out.join("results.csv")).unwrap();
        assert_eq!(rows.headers().unwrap().iter().skip(9).collect::<Vec<_>>(), ["minutes_to_99", "tta_test_acc"]);
        let rows: Vec<csv::StringRecord> = rows.records().map(|r| r.unwrap()).collect();
        assert_eq!(rows.iter().map(|r| r[1].to_string()).collect::<Vec<_>>(), labels);
        assert_eq!((&rows[0][8], &rows[0][9], &rows[0][10]), ("1.000", "", ""), "no test-time augmentation measured: empty");
        assert_eq!(&rows[1][10], "93.46");
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
    fn the_five_configurations_of_the_comparison_all_show_and_fit() {
        let a = crate::cli::StudyArgs { run: Some("original-compare".into()), ..crate::cli::StudyArgs::default() };
        let plan = crate::study::plan::<f32>(&a, false, "resnet-small").unwrap();
        let results: Vec<RunResult> = plan
            .configs
            .iter()
            .enumerate()
            .map(|(i, c)| RunResult { config: c.clone(), records: result("x", &[80.0 + i as f64, 89.0 + i as f64, 95.0]).records })
            .collect();
        let labels: Vec<&str> = plan.configs.iter().map(|c| c.label.as_str()).collect();
        assert_eq!(labels.len(), 5);
        // The table: one row per configuration, every row as wide as the header.
        let t = table(&results, &plan.targets, "CIFAR-10");
        let lines: Vec<&str> = t.lines().skip(1).collect();
        assert_eq!(lines.len(), 6);
        assert!(lines.iter().all(|l| l.len() == lines[0].len()), "{t}");
        for (l, label) in lines[1..].iter().zip(&labels) {
            assert!(l.starts_with(label), "{l}");
        }
        let out = std::env::temp_dir().join(format!("frog-bench-report-five-{}", std::process::id()));
        write_all(&out, &results, &plan.targets, "CIFAR-10", "cpu").unwrap();
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
        let base = std::env::temp_dir().join(format!("frog-bench-report-out-{}", std::process::id()));
        std::fs::create_dir_all(&base).unwrap();
        prepare_out(&base.join("fresh/nested")).unwrap();
        let file = base.join("a-file");
        std::fs::write(&file, b"x").unwrap();
        let e = prepare_out(&file.join("out")).unwrap_err().to_string();
        assert!(e.starts_with("--out ") && e.contains("cannot create"), "{e}");
        std::fs::remove_dir_all(base).unwrap();
    }
}
