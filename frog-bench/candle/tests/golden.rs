//! Every golden layer case of the shared directory through the candle
//! backend, in f64 (max-norm relative error 1e-9) and f32 (1e-4), with the
//! worst error of each dtype printed; then again through the steps on
//! views. Every case applies: the backend handles every geometry, token
//! layers and the plain-SGD path.

use candle_core::{Device, WithDType};
use frog_candle::backend::CandleBackend;
use frog_core::Scalar;
use frog_cpu::golden::{golden_dir, load_cases, run_case, run_case_view, run_suite, Case, Report};

fn run_all<T: Scalar + WithDType>(rtol: f64, how: &str, run: fn(&CandleBackend<T>, &Case, f64) -> Result<Report, String>) {
    let dir = golden_dir();
    let cases = load_cases(&dir).unwrap_or_else(|e| panic!("{e}"));
    assert!(!cases.is_empty(), "no golden layer cases in {}", dir.display());
    let backend = CandleBackend::<T>::new(Device::Cpu);
    let summary = format!("golden cases through candle{how} in {}", std::any::type_name::<T>());
    run_suite(&summary, &cases, |c| &c.name, |c| run(&backend, c, rtol)).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn golden_f64() {
    run_all::<f64>(1e-9, "", run_case);
}

#[test]
fn golden_f32() {
    run_all::<f32>(1e-4, "", run_case);
}

/// Views of the middle of larger buffers: the entries around each view
/// must come out of every step unchanged.
#[test]
fn golden_cases_through_views() {
    run_all::<f64>(1e-9, " views", run_case_view);
    run_all::<f32>(1e-4, " views", run_case_view);
}
