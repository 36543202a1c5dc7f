//! Every golden layer case of the shared directory through the candle
//! backend, in f64 (max-norm relative error 1e-9) and f32 (1e-4), with the
//! worst error of each dtype printed. Every case applies: the backend
//! handles every geometry, token layers and the plain-SGD path.

use candle_core::{Device, WithDType};
use frog_candle::backend::CandleBackend;
use frog_core::Scalar;
use frog_cpu::golden::{golden_dir, load_cases, run_case};

fn run_all<T: Scalar + WithDType>(rtol: f64) {
    let dir = golden_dir();
    let cases = load_cases(&dir).unwrap_or_else(|e| panic!("{e}"));
    assert!(!cases.is_empty(), "no golden layer cases in {}", dir.display());
    let backend = CandleBackend::<T>::new(Device::Cpu);
    let (mut failures, mut worst) = (Vec::new(), (0.0f64, String::new()));
    for case in &cases {
        match run_case(&backend, case, rtol) {
            Ok(r) => {
                println!("{:<28} ok  worst {:.2e} at {}", case.name, r.worst, r.worst_at);
                if r.worst >= worst.0 {
                    worst = (r.worst, format!("{} {}", case.name, r.worst_at));
                }
            }
            Err(e) => failures.push(format!("{}: {e}", case.name)),
        }
    }
    let dtype = std::any::type_name::<T>();
    println!("{} of {} golden cases pass in {dtype}; worst {:.2e} ({})", cases.len() - failures.len(), cases.len(), worst.0, worst.1);
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
