//! Every layer case of the golden directory through frog-cpu, in f64
//! (max-norm relative error 1e-9) and f32 (1e-4); the mixed-precision
//! cases of `lowp/` from bf16 and f16 inputs, to the same tolerances (the
//! inputs are exact in their type, and frog-cpu converts them exactly).

use frog_core::half::{bf16, f16};
use frog_cpu::golden::{golden_dir, load_cases, run_case, run_case_lowp, run_case_view, run_suite};
use frog_cpu::Cpu;

fn run_all<T: frog_cpu::gemm::Real>(rtol: f64) {
    let dir = golden_dir();
    let cases = load_cases(&dir).unwrap_or_else(|e| panic!("{e}"));
    assert!(!cases.is_empty(), "no golden layer cases in {}", dir.display());
    let backend = Cpu::<T>::with_threads(2).unwrap();
    let summary = format!("golden cases in {} from {}", std::any::type_name::<T>(), dir.display());
    run_suite(&summary, &cases, |c| &c.name, |c| run_case(&backend, c, rtol)).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn golden_f64() {
    run_all::<f64>(1e-9);
}

#[test]
fn golden_f32() {
    run_all::<f32>(1e-4);
}

/// Every case again through the steps on views (slices of the middle of
/// larger buffers), at the same tolerances; the entries around each view
/// must come out unchanged.
#[test]
fn golden_cases_through_views() {
    fn on<T: frog_cpu::gemm::Real>(rtol: f64) {
        let cases = load_cases(&golden_dir()).unwrap_or_else(|e| panic!("{e}"));
        let backend = Cpu::<T>::with_threads(2).unwrap();
        let summary = format!("golden cases through views in {}", std::any::type_name::<T>());
        run_suite(&summary, &cases, |c| &c.name, |c| run_case_view(&backend, c, rtol)).unwrap_or_else(|e| panic!("{e}"));
    }
    on::<f64>(1e-9);
    on::<f32>(1e-4);
}

fn run_lowp<T: frog_cpu::gemm::Real + From<bf16> + From<f16>>(rtol: f64) {
    let dir = golden_dir().join("lowp");
    let cases = load_cases(&dir).unwrap_or_else(|e| panic!("{e}"));
    assert!(cases.len() >= 15, "too few mixed-precision cases in {}", dir.display());
    assert!(cases.iter().all(|c| c.lowp.is_some()), "a case of {} has no x_dtype", dir.display());
    let backend = Cpu::<T>::with_threads(2).unwrap();
    let summary = format!("mixed-precision cases in {} from {}", std::any::type_name::<T>(), dir.display());
    run_suite(&summary, &cases, |c| &c.name, |c| run_case_lowp(&backend, c, rtol)).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn golden_lowp_f64() {
    run_lowp::<f64>(1e-9);
}

#[test]
fn golden_lowp_f32() {
    run_lowp::<f32>(1e-4);
}

/// Every 3x3 stride-1 dilation-1 case with each algorithm forced, in f64
/// and f32 at the same tolerances (the automatic choice keeps these small
/// layers direct, so this is where Winograd meets the original's numbers).
#[test]
fn golden_3x3_cases_with_each_algorithm() {
    use frog_core::LayerKind;
    use frog_cpu::golden::{Tally, Target};
    use frog_cpu::Algorithm;
    let cases = load_cases(&golden_dir()).unwrap_or_else(|e| panic!("{e}"));
    let winograd_cases: Vec<_> = cases
        .iter()
        .filter(|c| matches!(&c.target, Target::Layer(l) if matches!(l.kind, LayerKind::Conv2d(_)) && Algorithm::Winograd.supports(l).is_ok()))
        .collect();
    assert!(winograd_cases.len() >= 10, "only {} 3x3 stride-1 golden cases", winograd_cases.len());
    let mut tally = Tally::default();
    for algorithm in [Algorithm::Direct, Algorithm::Winograd] {
        let f64s = Cpu::<f64>::with_threads(2).unwrap().with_algorithm(Some(algorithm));
        let f32s = Cpu::<f32>::with_threads(2).unwrap().with_algorithm(Some(algorithm));
        for case in &winograd_cases {
            tally.record(&format!("{algorithm:?} f64 "), &case.name, run_case(&f64s, case, 1e-9));
            tally.record(&format!("{algorithm:?} f32 "), &case.name, run_case(&f32s, case, 1e-4));
        }
    }
    tally.finish("3x3 stride-1 cases, each algorithm, f64 and f32").unwrap_or_else(|e| panic!("{e}"));
}

/// Every layer case with the Gram CG forced, in f64 and f32 at the same
/// tolerances (the automatic choice takes it only where patch rows are few).
#[test]
fn golden_cases_with_the_gram_cg() {
    use frog_cpu::golden::Target;
    use frog_cpu::Algorithm;
    let cases = load_cases(&golden_dir()).unwrap_or_else(|e| panic!("{e}"));
    let layer_cases: Vec<_> = cases.iter().filter(|c| matches!(c.target, Target::Layer(_))).cloned().collect();
    let f64s = Cpu::<f64>::with_threads(2).unwrap().with_algorithm(Some(Algorithm::Gram));
    let f32s = Cpu::<f32>::with_threads(2).unwrap().with_algorithm(Some(Algorithm::Gram));
    run_suite("golden layer cases, Gram CG, f64", &layer_cases, |c| &c.name, |c| run_case(&f64s, c, 1e-9)).unwrap_or_else(|e| panic!("{e}"));
    run_suite("golden layer cases, Gram CG, f32", &layer_cases, |c| &c.name, |c| run_case(&f32s, c, 1e-4)).unwrap_or_else(|e| panic!("{e}"));
}
