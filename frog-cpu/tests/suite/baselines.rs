//! The baseline optimizers' golden cases (`baselines/` of the golden folder)
//! through frog-cpu: AdamW against `torch.optim.AdamW`, f64 at 1e-9 and
//! f32 at 1e-4 (max-norm relative, every array after every step).

use frog_cpu::baselines::{load_adamw_cases, load_kfrog_cases, run_adamw_case, run_kfrog_case};
use frog_cpu::golden::{golden_dir, run_suite};
use frog_cpu::Cpu;

fn adamw<T: frog_cpu::Real>(rtol: f64) {
    let dir = golden_dir().join("baselines");
    let cases = load_adamw_cases(&dir).unwrap_or_else(|e| panic!("{e}"));
    assert!(cases.len() >= 2, "too few AdamW cases in {}", dir.display());
    let backend = Cpu::<T>::with_threads(2).unwrap();
    let summary = format!("AdamW cases in {}", std::any::type_name::<T>());
    run_suite(&summary, &cases, |c| &c.name, |c| run_adamw_case(&backend, c, rtol)).unwrap_or_else(|e| panic!("{e}"));
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
    let cases = load_kfrog_cases(&dir).unwrap_or_else(|e| panic!("{e}"));
    assert!(cases.len() >= 6, "too few K-FROG cases in {}", dir.display());
    let backend = Cpu::<T>::with_threads(2).unwrap();
    let summary = format!("K-FROG cases in {}", std::any::type_name::<T>());
    run_suite(&summary, &cases, |c| &c.name, |c| run_kfrog_case(&backend, c, rtol)).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn kfrog_f64() {
    kfrog::<f64>(1e-9);
}

#[test]
fn kfrog_f32() {
    kfrog::<f32>(1e-4);
}

/// A K-FROG state whose two parts (weight side, output side) record
/// different step counts is refused whole, naming both counts.
#[test]
fn kfrog_state_with_two_step_counts_is_refused() {
    use frog_core::{Conv2d, Error, KfrogConfig, KfrogState, Layer, StateError};
    let cpu = Cpu::<f64>::with_threads(1).unwrap();
    let layer = Layer::conv2d(Conv2d::new(2, 3, 3, [5, 5]), false);
    let cfg = KfrogConfig { momentum: 0.9, y_momentum: 0.5, ..KfrogConfig::default() };
    let mut state = KfrogState::new(&cpu, &layer, &cfg).unwrap();
    let mut bytes = vec![0; state.export_len()];
    state.export(&cpu, &mut bytes).unwrap();
    // The weight side's header: has-momentum at byte 7, the entry count at
    // bytes 8..16; its entries follow the 24-byte header.
    let entries = u64::from_le_bytes(bytes[8..16].try_into().unwrap()) as usize;
    let output_side = 24 + if bytes[7] == 1 { entries * 8 } else { 0 };
    bytes[output_side + 16..output_side + 24].copy_from_slice(&5u64.to_le_bytes());
    let err = state.restore(&cpu, &bytes).unwrap_err();
    assert_eq!(err, Error::State(StateError::StepCounts { weight: 0, output: 5 }));
    assert_eq!(state.steps(), 0, "a refused buffer changes nothing");
}
