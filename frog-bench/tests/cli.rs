//! The command line: errors for bad flags (exit status 2, clap's format,
//! before any work), for a failing run (exit status 1, one line), `--help`
//! as the README shows it, and the synthetic fallback end to end.

#[path = "suite/common/mod.rs"]
mod common;

use std::process::{Command, Output};

fn bench(args: &[&str], cache: &std::path::Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_frog-bench"))
        .args(args)
        .env_remove("FROG_DATA")
        .env("XDG_CACHE_HOME", cache)
        .output()
        .expect("running frog-bench")
}

/// The first line of stderr of a run that must exit with `code`.
fn failure(args: &[&str], code: i32) -> String {
    let cache = common::temp_dir("cli-errors");
    let out = bench(args, &cache);
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(code), "{args:?}: {err}");
    assert!(err.starts_with("error: "), "{err}");
    assert!(out.stdout.is_empty(), "{args:?} did work before failing");
    err.lines().next().unwrap().to_string()
}

fn usage_error(args: &[&str]) -> String {
    failure(args, 2)
}

/// A study of one run file, in a fresh folder: every run of it writes to
/// the same `--out`.
struct Study {
    cache: std::path::PathBuf,
    run: std::path::PathBuf,
    out: std::path::PathBuf,
}

impl Study {
    /// The run file `text`, in a folder named after `name`.
    fn new(name: &str, text: &str) -> Self {
        let cache = common::temp_dir(name);
        let (run, out) = (cache.join("run.toml"), cache.join("out"));
        std::fs::write(&run, text).unwrap();
        Self { cache, run, out }
    }

    /// The exit status, stdout and stderr of a run on the synthetic set
    /// with the flags `extra`.
    fn run(&self, extra: &[&str]) -> (Option<i32>, String, String) {
        let mut args = vec!["--synthetic", "--run", self.run.to_str().unwrap(), "--out", self.out.to_str().unwrap()];
        args.extend(extra);
        let out = bench(&args, &self.cache);
        (out.status.code(), String::from_utf8(out.stdout).unwrap(), String::from_utf8(out.stderr).unwrap())
    }

    /// The results files in `--out`'s `runs`, sorted.
    fn results_files(&self) -> Vec<String> {
        let mut runs: Vec<String> = std::fs::read_dir(self.out.join("runs")).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        runs.sort();
        runs
    }

    /// The rows of the CSV file `file` in `--out`.
    fn csv(&self, file: &str) -> Vec<csv::StringRecord> {
        csv::Reader::from_path(self.out.join(file)).unwrap().records().map(|r| r.unwrap()).collect()
    }

    fn remove(self) {
        std::fs::remove_dir_all(self.cache).unwrap();
    }
}

#[test]
fn bad_flags_are_clear_errors() {
    assert!(usage_error(&["--bogus"]).contains("unexpected argument '--bogus'"));
    assert!(usage_error(&["--epochs", "many"]).contains("invalid value 'many' for '--epochs <N>'"));
    assert!(usage_error(&["--epochs"]).contains("a value is required for '--epochs <N>'"));
    assert!(usage_error(&["--optimizer", "adam"]).contains("invalid value 'adam' for '--optimizer <NAME>'"));
    assert!(usage_error(&["--model", "vgg"]).contains("unknown model `vgg`"));
    assert!(usage_error(&["--lr", "0.1"]).contains("add --config NAME or --optimizer NAME"));
    assert!(usage_error(&["--config", "sgd-bs-128", "--optimizer", "sgd"]).contains("cannot be used with"));
    assert!(usage_error(&["--config", "nope"]).contains("run `cpu` has no configuration named or labelled `nope`"));
    assert!(usage_error(&["--seeds", "0"]).contains("--seeds must be between 1"));
    assert!(usage_error(&["--run", "compare", "--config", "muon-bs-128", "--sgd-momentum", "1.5"]).contains("the SGD beside Muon: momentum"));
    assert!(usage_error(&["--optimizer", "sgd", "--sample", "8"]).contains("--sample is not a setting of sgd"));
    assert!(usage_error(&["--run", "nope"]).contains("not a shipped run"));
    assert!(usage_error(&["--optimizer", "adamw"]).contains("run `cpu` has no adamw configuration"));
    assert!(usage_error(&["--model", "airbench", "--epochs", "2"]).contains("--epochs: the airbench recipe fixes its epochs (8), batch (2000)"));
    assert!(usage_error(&["--run", "airbench", "--config", "muon", "--batch-size", "500"]).contains("--batch-size: the airbench recipe fixes"));
    assert!(usage_error(&["--run", "airbench", "--config", "muon", "--sgd-lr", "0.1"]).contains("--sgd-lr is not a setting of muon on the airbench filters"));
    assert!(usage_error(&["--run", "airbench-compare", "--optimizer", "kfrog"]).contains("run `airbench-compare` has no kfrog configuration"));
    assert!(usage_error(&["--run", "airbench-compare", "--model", "resnet-small"]).contains("--model resnet-small does not fit run `airbench-compare` (model airbench)"));
    assert!(usage_error(&["--optimizer", "frog", "--tau", "-1"]).contains("tau"));
    assert!(usage_error(&["--optimizer=frog", "--lr=nan"]).contains("--lr must be a finite number"));
    assert!(usage_error(&["--nesterov=yes"]).contains("unexpected value 'yes' for '--nesterov'"));
    assert!(usage_error(&["frobnicate"]).contains("unrecognized subcommand 'frobnicate'"));
    assert!(usage_error(&["throughput", "--epochs", "3"]).contains("unexpected argument '--epochs'"));
    assert!(usage_error(&["--precision", "bf16"]).contains("invalid value 'bf16' for '--precision <P>'"));
    assert!(usage_error(&["--muon-precision", "f16"]).contains("invalid value 'f16' for '--muon-precision <P>'"));
    #[cfg(not(feature = "cuda"))]
    {
        assert!(usage_error(&["throughput", "--precision", "fast"]).contains("this build trains on the CPU"));
        assert!(usage_error(&["--muon-precision", "bf16"]).contains("--muon-precision sets Muon's arithmetic on the GPU; this build trains on the CPU"));
    }
}

#[test]
fn out_of_range_values_are_refused_before_any_work() {
    assert!(usage_error(&["--epochs", "18446744073709551615"]).contains("--epochs must be between 1 and 100000"));
    assert!(usage_error(&["--epochs", "1099511627776"]).contains("--epochs must be between 1 and 100000"));
    assert!(usage_error(&["--epochs", "0"]).contains("--epochs"));
    assert!(usage_error(&["--targets", "nan"]).contains("--targets are test accuracies in percent"));
    assert!(usage_error(&["--threads", "100000"]).contains("--threads must be at most 1024"));
    assert!(usage_error(&["--optimizer", "frog", "--batch-size", "16", "--sample", "17"]).contains("more than the batch"));
    assert!(usage_error(&["throughput", "--steps", "0"]).contains("--steps must be between 1"));
    assert!(usage_error(&["throughput", "--threads", "100000"]).contains("--threads"));
    assert!(usage_error(&["layers", "--iters", "0"]).contains("--iters must be between 1"));
    assert!(usage_error(&["layers", "--sample", "18014398509481984"]).contains("--sample"));
    assert!(usage_error(&["gpu-check", "--steps", "0"]).contains("--steps"));
}

/// Settings that only `f64` holds are refused in the scalar type the run
/// computes in (f32), with exit status 2, before `--out` is made or any
/// data is read.
#[test]
fn settings_the_run_cannot_hold_are_usage_errors_before_any_work() {
    let cache = common::temp_dir("cli-f32");
    let out = cache.join("out");
    let out_arg = out.to_str().unwrap();
    let e = usage_error(&["--synthetic", "--optimizer", "frog", "--tau", "1e-46", "--out", out_arg]);
    assert!(e.contains("tau"), "{e}");
    let schedule = ["--synthetic", "--optimizer", "frog", "--tau", "5e-324", "--tau-final", "1e-3", "--tau-steps", "5", "--out", out_arg];
    assert!(usage_error(&schedule).contains("tau"));
    let run = cache.join("huge-lr.toml");
    std::fs::write(&run, "model = \"resnet-small\"\nepochs = 1\n\n[[config]]\noptimizer = \"sgd\"\nbatch_size = 32\nlr = 1e39\n").unwrap();
    let e = usage_error(&["--synthetic", "--run", run.to_str().unwrap(), "--out", out_arg]);
    assert!(e.contains("lr"), "{e}");
    assert!(!out.exists(), "--out was created before the settings were refused");
    std::fs::remove_dir_all(cache).unwrap();
}

/// `layers` at its largest sample under an 8 GB address-space limit: its
/// inputs and workspace do not fit together, which is a one-line error and
/// exit status 1, not an abort.
#[cfg(target_os = "linux")]
#[test]
fn layers_out_of_memory_is_an_error() {
    let cache = common::temp_dir("cli-layers-oom");
    let out = Command::new("sh")
        .args(["-c", "ulimit -v 8000000 && exec \"$0\" layers --sample 8192 --threads 1", env!("CARGO_BIN_EXE_frog-bench")])
        .env("XDG_CACHE_HOME", &cache)
        .output()
        .expect("running frog-bench under sh");
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.starts_with("error: ") && err.contains("out of memory"), "{err}");
    std::fs::remove_dir_all(cache).unwrap();
}

#[test]
fn a_bad_out_fails_before_training() {
    let cache = common::temp_dir("cli-out");
    let file = cache.join("a-file");
    std::fs::write(&file, b"x").unwrap();
    let under_file = file.join("results");
    let e = failure(&["--synthetic", "--epochs", "1", "--out", under_file.to_str().unwrap()], 1);
    assert!(e.contains("--out") && e.contains("cannot create"), "{e}");
    std::fs::remove_dir_all(cache).unwrap();
}

#[test]
fn missing_data_is_an_error_when_named() {
    let err = failure(&["--data", "/nonexistent/cifar", "--epochs", "1"], 1);
    assert!(err.contains("--data: /nonexistent/cifar: not a directory"), "{err}");
    let cache = common::temp_dir("cli-env");
    let out = Command::new(env!("CARGO_BIN_EXE_frog-bench"))
        .args(["--epochs", "1"])
        .env("FROG_DATA", "/nonexistent/env")
        .env("XDG_CACHE_HOME", &cache)
        .output()
        .expect("running frog-bench");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8(out.stderr).unwrap().starts_with("error: FROG_DATA: /nonexistent/env: not a directory"));
}

#[test]
fn version_is_the_crate_version() {
    let out = bench(&["--version"], &common::temp_dir("cli-version"));
    assert!(out.status.success());
    assert_eq!(String::from_utf8(out.stdout).unwrap(), format!("frog-bench {}\n", env!("CARGO_PKG_VERSION")));
}

/// The README's command-line section: the text between its `--help`
/// fence and the closing one.
fn readme_help() -> String {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    let start = readme.find("```text\n$ frog-bench --help\n").expect("the README shows --help") + "```text\n$ frog-bench --help\n".len();
    let len = readme[start..].find("```").unwrap();
    readme[start..start + len].to_string()
}

#[test]
fn the_readme_shows_help_as_it_is() {
    let out = bench(&["--help"], &common::temp_dir("cli-readme"));
    assert_eq!(readme_help(), String::from_utf8(out.stdout).unwrap());
}

#[test]
fn help_lists_every_study_flag() {
    let cache = common::temp_dir("cli-help");
    let out = bench(&["--help"], &cache);
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for flag in [
        "--model", "--optimizer", "--batch-size", "--sample", "--lr", "--lr-other-ratio", "--epochs", "--milestones", "--gamma",
        "--weight-decay", "--momentum", "--nesterov", "--cg-iters", "--tau", "--tau-final", "--tau-steps", "--train-limit",
        "--test-limit", "--seed", "--threads", "--precision", "--muon-precision", "--out", "--data", "--run", "--y-sample", "--y-momentum", "--beta1",
        "--beta2", "--eps",
    ] {
        assert!(help.contains(flag), "--help lacks {flag}");
    }
}

#[test]
fn without_data_the_study_runs_on_the_labelled_synthetic_set() {
    let cache = common::temp_dir("cli-synthetic");
    let out_dir = cache.join("out");
    let out_arg = out_dir.to_str().unwrap();
    let args = ["--no-download", "--optimizer", "sgd", "--batch-size", "32", "--epochs", "1", "--train-limit", "128", "--test-limit", "64", "--out", out_arg];
    let out = bench(&args, &cache);
    let (stdout, stderr) = (String::from_utf8(out.stdout).unwrap(), String::from_utf8(out.stderr).unwrap());
    assert!(out.status.success(), "{stderr}");
    let notice: Vec<&str> = stderr.lines().collect();
    assert_eq!(notice.len(), 1, "one line on stderr: {stderr}");
    assert!(notice[0].starts_with("no CIFAR-10 data"));
    assert!(notice[0].contains("--data") && notice[0].contains("FROG_DATA") && notice[0].contains("SYNTHETIC"));
    assert!(stdout.contains("study on SYNTHETIC"), "{stdout}");
    assert!(stdout.lines().any(|l| l.starts_with("epoch   1") && l.ends_with("[SYNTHETIC]")), "{stdout}");
    for file in ["results.csv", "results.json", "curves.csv", "loss_vs_time.svg", "accuracy_vs_time.svg"] {
        let text = std::fs::read_to_string(out_dir.join(file)).unwrap();
        assert!(text.contains("SYNTHETIC"), "{file} is not labelled synthetic");
    }
    std::fs::remove_dir_all(cache).unwrap();
}

/// Runs of single configurations and seeds, made apart, add up to one
/// table in `--out`; a run with other settings than its configuration's
/// runs there is refused before it trains. Muon trains end to end.
#[test]
fn single_runs_add_up_to_one_study_with_means_over_seeds() {
    let study = Study::new(
        "cli-seeds",
        "model = \"resnet-small\"\nepochs = 1\ntargets = [5.0, 99.0]\ntrain_limit = 64\ntest_limit = 32\n\n\
         [[config]]\nname = \"sgd\"\noptimizer = \"sgd\"\nbatch_size = 32\nlr = 0.05\n\n\
         [[config]]\noptimizer = \"muon\"\nbatch_size = 32\nlr = 0.02\nsgd_lr = 0.05\n",
    );
    let (code, _, err) = study.run(&["--config", "sgd", "--seed", "1"]);
    assert_eq!(code, Some(0), "{err}");
    let (code, stdout, err) = study.run(&["--config", "SGD bs 32", "--seed", "0"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(stdout.lines().any(|l| l.starts_with("SGD bs 32") && l.contains(" 2 | ") && l.contains('±')), "two seeds, one row:\n{stdout}");
    let (code, stdout, err) = study.run(&["--config", "muon-bs-32"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(stdout.contains("== Muon bs 32, seed 0"), "{stdout}");
    assert_eq!(study.results_files(), ["muon-bs-32-seed-0.json", "sgd-seed-0.json", "sgd-seed-1.json"]);
    let rows = study.csv("summary.csv");
    let rows: Vec<(&str, &str)> = rows.iter().map(|r| (&r[1], &r[3])).collect();
    assert_eq!(rows, [("SGD bs 32", "2"), ("Muon bs 32", "1")], "the run file's order, seeds counted");
    // Another epoch count for `sgd` would mix two settings in its row.
    let (code, stdout, err) = study.run(&["--config", "sgd", "--seed", "2", "--epochs", "2"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("sgd-seed-0.json: a run of `sgd` with other settings (epochs)"), "{err}");
    assert!(stdout.is_empty(), "refused before training: {stdout}");
    study.remove();
}

/// A run file of the airbench recipe, shrunk to a smoke by its
/// `widths` and `batch_size` (4 steps of 50 of 200 synthetic images an
/// epoch, the recipe's 8 epochs): the run of every configuration writes the
/// outputs with the final test-time-augmented accuracy, and `--config`
/// with `--seed` adds a seed to a configuration's row.
#[test]
fn an_airbench_run_file_trains_the_recipe() {
    let study = Study::new(
        "cli-airbench",
        "model = \"airbench\"\ntargets = [20.0, 99.0]\ntrain_limit = 200\ntest_limit = 100\nwidths = [8, 16, 16]\nbatch_size = 50\n\n\
         [[config]]\nname = \"muon\"\noptimizer = \"muon\"\nlr = 0.24\n\n\
         [[config]]\noptimizer = \"sgd\"\nlr = 0.053\n",
    );
    let (code, stdout, err) = study.run(&[]);
    assert_eq!(code, Some(0), "{err}");
    assert!(stdout.contains("== Muon, seed 0 (airbench widths 8/16/16, batch 50, 8 epochs, the filters' lr 0.24) =="), "{stdout}");
    assert!(stdout.contains("== SGD, seed 0 (airbench widths 8/16/16, batch 50, 8 epochs, the filters' lr 0.053) =="), "{stdout}");
    let epochs: Vec<&str> = stdout.lines().filter(|l| l.starts_with("epoch ")).collect();
    assert_eq!(epochs.len(), 16, "{stdout}");
    assert!(epochs.iter().all(|l| l.contains("tta acc") == l.starts_with("epoch   8")), "test-time augmentation after the last epoch:\n{stdout}");
    let (code, stdout, err) = study.run(&["--config", "muon", "--seed", "1"]);
    assert_eq!(code, Some(0), "{err}");
    let row = stdout.lines().find(|l| l.starts_with("Muon ")).unwrap_or_else(|| panic!("no Muon row:\n{stdout}"));
    let cells: Vec<&str> = row.split('|').map(str::trim).collect();
    assert_eq!((cells[1], cells.len()), ("2", 7), "{stdout}");
    assert!(cells[4].ends_with('%') && cells[5].contains('±') && cells[5].ends_with('%'), "final and TTA accuracy over two seeds:\n{stdout}");
    assert_eq!(study.results_files(), ["muon-seed-0.json", "muon-seed-1.json", "sgd-seed-0.json"]);
    let mut per_run = csv::Reader::from_path(study.out.join("results.csv")).unwrap();
    assert_eq!(per_run.headers().unwrap().iter().next_back(), Some("tta_test_acc"));
    for r in per_run.records() {
        let r = r.unwrap();
        assert_eq!(&r[2], "airbench widths 8/16/16");
        let tta: f64 = r[r.len() - 1].parse().unwrap();
        assert!((0.0..=100.0).contains(&tta), "{r:?}");
    }
    let summary = study.csv("summary.csv");
    let tta: Vec<(&str, bool, bool)> = summary.iter().map(|r| (&r[2], !r[r.len() - 2].is_empty(), !r[r.len() - 1].is_empty())).collect();
    assert_eq!(tta, [("muon", true, true), ("sgd", true, false)], "TTA mean of each, sd of two seeds");
    for file in ["results.json", "curves.csv", "loss_vs_time.svg", "accuracy_vs_time.svg"] {
        assert!(study.out.join(file).exists(), "{file}");
    }
    study.remove();
}
