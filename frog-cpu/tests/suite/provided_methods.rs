//! frog-core's provided `fisher_matvec` and `cg_iteration` (what a new
//! backend gets before it fuses anything) against the golden cases, on a
//! backend that forwards only the required methods to frog-cpu.

use crate::common::forward::RequiredOnly;
use frog_cpu::golden::{golden_dir, load_cases, run_case};

#[test]
fn provided_methods_pass_every_golden_case() {
    let cases = load_cases(&golden_dir()).unwrap_or_else(|e| panic!("{e}"));
    assert!(!cases.is_empty());
    let backend = RequiredOnly::new(2);
    for case in &cases {
        run_case(&backend, case, 1e-9).unwrap_or_else(|e| panic!("{}: {e}", case.name));
    }
    println!("{} golden cases through the provided methods", cases.len());
}
