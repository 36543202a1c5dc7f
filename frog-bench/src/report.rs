//! The study's outputs: the time-to-accuracy table (terminal, CSV, JSON),
//! per-epoch curves (CSV) and two plots (SVG, drawn by hand: two line
//! charts do not justify a plotting crate's compile time).

use std::fmt::Write as _;
use std::path::Path;

use serde_json::json;

use crate::error::{Error, Result};
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

/// A CSV field, quoted when it holds a comma or a quote (labels do).
fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_string()
    }
}

fn write(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).map_err(|e| Error::new(format!("{}: cannot write: {e}", path.display())))
}

/// Writes `results.csv`, `results.json`, `curves.csv`, `loss_vs_time.svg`
/// and `accuracy_vs_time.svg` to `out`.
pub fn write_all(out: &Path, results: &[RunResult], targets: &[f64], source: &str, device: &str) -> Result<()> {
    std::fs::create_dir_all(out).map_err(|e| Error::new(format!("{}: cannot create: {e}", out.display())))?;
    let mut csv = String::from("data,config,model,batch_size,lr,epochs,best_test_acc,train_minutes");
    for t in targets {
        let _ = write!(csv, ",minutes_to_{t}");
    }
    csv.push('\n');
    let mut curves = String::from("data,config,epoch,lr,train_loss,train_acc,test_loss,test_acc,epoch_seconds,train_seconds\n");
    let mut runs = Vec::new();
    let data = csv_field(source);
    for r in results {
        let c = &r.config;
        let label = csv_field(&c.label);
        let total = r.records.last().map_or(0.0, |l| l.train_seconds / 60.0);
        let _ = write!(csv, "{data},{label},{},{},{},{},{:.2},{total:.3}", c.arch.name, c.batch, c.method.lr(), c.epochs, r.best_acc());
        for &t in targets {
            let _ = write!(csv, ",{}", r.minutes_to(t).map_or(String::new(), |m| format!("{m:.3}")));
        }
        csv.push('\n');
        for e in &r.records {
            let _ = writeln!(
                curves,
                "{data},{label},{},{},{:.5},{:.3},{:.5},{:.3},{:.3},{:.3}",
                e.epoch, e.lr, e.train_loss, e.train_acc, e.test_loss, e.test_acc, e.epoch_seconds, e.train_seconds
            );
        }
        runs.push(json!({
            "config": c.label,
            "model": c.arch.name,
            "optimizer": format!("{:?}", c.method),
            "batch_size": c.batch,
            "epochs": c.epochs,
            "milestones": c.milestones,
            "gamma": c.gamma,
            "seed": c.seed,
            "best_test_acc": r.best_acc(),
            "minutes_to_target": targets.iter().map(|&t| json!({"target": t, "minutes": r.minutes_to(t)})).collect::<Vec<_>>(),
            "epochs_run": r.records.iter().map(|e| json!({
                "epoch": e.epoch, "lr": e.lr, "train_loss": e.train_loss, "train_acc": e.train_acc,
                "test_loss": e.test_loss, "test_acc": e.test_acc, "epoch_seconds": e.epoch_seconds, "train_seconds": e.train_seconds,
            })).collect::<Vec<_>>(),
        }));
    }
    let doc = json!({ "data": source, "device": device, "targets": targets, "runs": runs });
    write(&out.join("results.csv"), &csv)?;
    write(&out.join("results.json"), &serde_json::to_string_pretty(&doc).expect("JSON of plain values"))?;
    write(&out.join("curves.csv"), &curves)?;
    let series = |f: fn(&EpochRecord) -> f64| -> Vec<(String, Vec<(f64, f64)>)> {
        results.iter().map(|r| (r.config.label.clone(), r.records.iter().map(|e| (e.train_seconds / 60.0, f(e))).collect())).collect()
    };
    let loss = svg_chart(&format!("Training loss vs time ({source})"), "training loss", &series(|e| e.train_loss));
    write(&out.join("loss_vs_time.svg"), &loss)?;
    let acc = svg_chart(&format!("Test accuracy vs time ({source})"), "test accuracy (%)", &series(|e| e.test_acc));
    write(&out.join("accuracy_vs_time.svg"), &acc)
}

/// About five round tick values covering `lo..hi`.
fn ticks(lo: f64, hi: f64) -> Vec<f64> {
    let raw = (hi - lo) / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0].iter().map(|m| m * mag).find(|s| *s >= raw).unwrap_or(10.0 * mag);
    let mut t = (lo / step).ceil() * step;
    let mut out = Vec::new();
    while t <= hi + 1e-9 * step {
        out.push(t);
        t += step;
    }
    out
}

const COLORS: [&str; 6] = ["#d62728", "#1f77b4", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b"];

/// A line chart: x is training minutes, one line per named series.
fn svg_chart(title: &str, y_label: &str, series: &[(String, Vec<(f64, f64)>)]) -> String {
    // The legend sits in the right margin, clear of every line.
    let (w, h, left, right, top, bottom) = (900.0, 460.0, 70.0, 210.0, 40.0, 50.0);
    let points = series.iter().flat_map(|(_, p)| p.iter());
    let (mut x1, mut y0, mut y1) = (0.0f64, f64::INFINITY, f64::NEG_INFINITY);
    for &(x, y) in points {
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    if !y0.is_finite() {
        (y0, y1) = (0.0, 1.0);
    }
    if y1 - y0 < 1e-9 {
        y1 = y0 + 1.0;
    }
    let x1 = if x1 > 0.0 { x1 } else { 1.0 };
    let pad = 0.05 * (y1 - y0);
    let (y0, y1) = (y0 - pad, y1 + pad);
    let px = |x: f64| left + x / x1 * (w - left - right);
    let py = |y: f64| top + (y1 - y) / (y1 - y0) * (h - top - bottom);
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{}\" y=\"22\" text-anchor=\"middle\" font-size=\"15\">{}</text>\n",
        w / 2.0,
        escape(title)
    );
    for t in ticks(0.0, x1) {
        let x = px(t);
        let _ = writeln!(s, "<line x1=\"{x:.1}\" y1=\"{top}\" x2=\"{x:.1}\" y2=\"{}\" stroke=\"#ddd\"/>", h - bottom);
        let _ = writeln!(s, "<text x=\"{x:.1}\" y=\"{}\" text-anchor=\"middle\">{t}</text>", h - bottom + 16.0);
    }
    for t in ticks(y0, y1) {
        let y = py(t);
        let _ = writeln!(s, "<line x1=\"{left}\" y1=\"{y:.1}\" x2=\"{}\" y2=\"{y:.1}\" stroke=\"#ddd\"/>", w - right);
        let _ = writeln!(s, "<text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>", left - 6.0, y + 4.0, (t * 1e6).round() / 1e6);
    }
    let _ = writeln!(s, "<rect x=\"{left}\" y=\"{top}\" width=\"{}\" height=\"{}\" fill=\"none\" stroke=\"black\"/>", w - left - right, h - top - bottom);
    let _ = writeln!(s, "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">training time (minutes)</text>", (left + w - right) / 2.0, h - 12.0);
    let _ = writeln!(s, "<text transform=\"translate(16 {}) rotate(-90)\" text-anchor=\"middle\">{}</text>", (top + h - bottom) / 2.0, escape(y_label));
    for (i, (name, pts)) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let path: Vec<String> = pts.iter().map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y))).collect();
        let _ = writeln!(s, "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"2\" points=\"{}\"/>", path.join(" "));
        for &(x, y) in pts {
            let _ = writeln!(s, "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"2.5\" fill=\"{color}\"/>", px(x), py(y));
        }
        let ly = top + 16.0 + 18.0 * i as f64;
        let _ = writeln!(s, "<line x1=\"{}\" y1=\"{ly}\" x2=\"{}\" y2=\"{ly}\" stroke=\"{color}\" stroke-width=\"3\"/>", w - right + 12.0, w - right + 32.0);
        let _ = writeln!(s, "<text x=\"{}\" y=\"{}\">{}</text>", w - right + 38.0, ly + 4.0, escape(name));
    }
    s.push_str("</svg>\n");
    s
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
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
            method: Method::Sgd(SgdConfig { lr: 0.1, momentum: 0.9, weight_decay: 0.0, nesterov: false }),
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
        let results = [result("FROG bs 8, s 2", &[40.0, 52.0]), result("SGD bs 8", &[45.0, 48.0])];
        write_all(&out, &results, &[50.0], "SYNTHETIC", "cpu").unwrap();
        let csv = std::fs::read_to_string(out.join("results.csv")).unwrap();
        assert!(csv.lines().nth(1).unwrap().starts_with("SYNTHETIC,\"FROG bs 8, s 2\",tiny-cnn,8,"), "{csv}");
        let curves = std::fs::read_to_string(out.join("curves.csv")).unwrap();
        assert_eq!(curves.lines().count(), 5);
        let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
        assert_eq!(json["runs"][0]["minutes_to_target"][0]["minutes"], 1.0);
        for svg in ["loss_vs_time.svg", "accuracy_vs_time.svg"] {
            let text = std::fs::read_to_string(out.join(svg)).unwrap();
            assert_eq!(text.matches("<polyline").count(), 2);
            assert!(text.ends_with("</svg>\n") && text.contains("SYNTHETIC"));
        }
        std::fs::remove_dir_all(out).unwrap();
    }
}
