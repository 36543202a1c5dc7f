//! The baseline optimizers' golden cases (`shared/golden/baselines/`)
//! through frog-cpu: AdamW against `torch.optim.AdamW`, f64 at 1e-9 and
//! f32 at 1e-4 (max-norm relative, every array after every step).

use frog_cpu::baselines::{load_adamw_cases, run_adamw_case};
use frog_cpu::golden::golden_dir;
use frog_cpu::Cpu;

fn adamw<T: frog_cpu::Real>(rtol: f64) {
    let dir = golden_dir().join("baselines");
    let cases = load_adamw_cases(&dir).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cases.len(), 2, "the AdamW cases of {}", dir.display());
    let backend = Cpu::<T>::with_threads(2).unwrap();
    let mut failures = Vec::new();
    for case in &cases {
        match run_adamw_case(&backend, case, rtol) {
            Ok(r) => println!("{:<28} ok  worst {:.2e} at {} ({} arrays)", case.name, r.worst, r.worst_at, r.compared),
            Err(e) => failures.push(format!("{}: {e}", case.name)),
        }
    }
    assert!(failures.is_empty(), "AdamW golden failures ({}):\n{}", std::any::type_name::<T>(), failures.join("\n"));
}

#[test]
fn adamw_f64() {
    adamw::<f64>(1e-9);
}

#[test]
fn adamw_f32() {
    adamw::<f32>(1e-4);
}

fn kfrog<T: frog_cpu::Real>(rtol: f64) {
    let dir = golden_dir().join("baselines");
    let cases = frog_cpu::baselines::load_kfrog_cases(&dir).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cases.len(), 6, "the K-FROG cases of {}", dir.display());
    let backend = Cpu::<T>::with_threads(2).unwrap();
    let mut failures = Vec::new();
    for case in &cases {
        match frog_cpu::baselines::run_kfrog_case(&backend, case, rtol) {
            Ok(r) => println!("{:<32} ok  worst {:.2e} at {} ({} arrays)", case.name, r.worst, r.worst_at, r.compared),
            Err(e) => failures.push(format!("{}: {e}", case.name)),
        }
    }
    assert!(failures.is_empty(), "K-FROG golden failures ({}):\n{}", std::any::type_name::<T>(), failures.join("\n"));
}

#[test]
fn kfrog_f64() {
    kfrog::<f64>(1e-9);
}

#[test]
fn kfrog_f32() {
    kfrog::<f32>(1e-4);
}
