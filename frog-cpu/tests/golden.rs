//! Every layer case of the golden directory through frog-cpu, in f64
//! (max-norm relative error 1e-9) and f32 (1e-4).

use frog_cpu::golden::{golden_dir, load_cases, run_case};
use frog_cpu::Cpu;

fn run_all<T: frog_cpu::gemm::Real>(rtol: f64) {
    let dir = golden_dir();
    let cases = load_cases(&dir).unwrap_or_else(|e| panic!("{e}"));
    assert!(!cases.is_empty(), "no golden layer cases in {}", dir.display());
    let backend = Cpu::<T>::with_threads(2).unwrap();
    let mut failures = Vec::new();
    for case in &cases {
        match run_case(&backend, case, rtol) {
            Ok(r) => println!("{:<28} ok  worst {:.2e} at {}", case.name, r.worst, r.worst_at),
            Err(e) => failures.push(format!("{}: {e}", case.name)),
        }
    }
    println!("{} golden cases run in {} from {}", cases.len(), std::any::type_name::<T>(), dir.display());
    assert!(failures.is_empty(), "golden failures:\n{}", failures.join("\n"));
}

#[test]
fn golden_f64() {
    run_all::<f64>(1e-9);
}

#[test]
fn golden_f32() {
    run_all::<f32>(1e-4);
}
