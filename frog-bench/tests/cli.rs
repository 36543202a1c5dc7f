//! The command line: errors for bad flags and missing data (exit status
//! 2, one clear line), and the synthetic fallback end to end.

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

fn error_of(args: &[&str]) -> String {
    let cache = common::temp_dir("cli-errors");
    let out = bench(args, &cache);
    assert_eq!(out.status.code(), Some(2), "{args:?} should fail");
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.starts_with("error: "), "{err}");
    err
}

#[test]
fn bad_flags_are_clear_errors() {
    assert!(error_of(&["--bogus"]).contains("unknown flag --bogus"));
    assert!(error_of(&["--epochs", "many"]).contains("--epochs: expected a whole number, got `many`"));
    assert!(error_of(&["--epochs"]).contains("--epochs needs a value"));
    assert!(error_of(&["--optimizer", "adam"]).contains("expected frog or sgd"));
    assert!(error_of(&["--model", "vgg"]).contains("unknown model `vgg`"));
    assert!(error_of(&["--lr", "0.1"]).contains("add --optimizer"));
    assert!(error_of(&["--optimizer", "sgd", "--sample", "8"]).contains("FROG settings"));
    assert!(error_of(&["--optimizer", "frog", "--tau", "-1"]).contains("tau"));
    assert!(error_of(&["--optimizer=frog", "--lr=nan"]).contains("finite"));
    assert!(error_of(&["--nesterov=yes"]).contains("takes no value"));
    assert!(error_of(&["frobnicate"]).contains("unknown command"));
    assert!(error_of(&["throughput", "--epochs", "3"]).contains("unknown flag --epochs for throughput"));
    assert!(error_of(&["--precision", "bf16"]).contains("--precision: expected exact, split or fast, got `bf16`"));
    #[cfg(not(feature = "cuda"))]
    assert!(error_of(&["throughput", "--precision", "fast"]).contains("this build trains on the CPU"));
}

#[test]
fn missing_data_is_an_error_when_named() {
    let err = error_of(&["--data", "/nonexistent/cifar", "--epochs", "1"]);
    assert!(err.contains("--data: /nonexistent/cifar: not a directory"), "{err}");
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
        "--test-limit", "--seed", "--threads", "--precision", "--out", "--data",
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
