//! A GPU test or check on a machine that cannot run the kernels: skipped,
//! or, with `FROG_REQUIRE_GPU=1` (set by the prepared GPU run's `run.sh`),
//! failed, so that a run meant for a GPU cannot pass by skipping.

use frog_core::{BackendError, BackendErrorKind};

use crate::{Cuda, Error, Precision};

/// The environment variable that makes every skip an error (value `1`).
pub const REQUIRE_GPU: &str = "FROG_REQUIRE_GPU";

/// Whether `FROG_REQUIRE_GPU=1`: skips are errors.
pub fn gpu_required() -> bool {
    std::env::var_os(REQUIRE_GPU).is_some_and(|v| v == "1")
}

/// Skips the GPU test or check `what` because of `why`: prints `SKIPPED
/// {what}: {why}`, or, where skips are errors ([`gpu_required`]), returns
/// the error [`Error::Skipped`] naming both.
pub fn skip(what: &str, why: &str) -> Result<(), Error> {
    if gpu_required() {
        return Err(Error::Skipped { what: what.to_string(), why: why.to_string() });
    }
    println!("SKIPPED {what}: {why}");
    Ok(())
}

/// Why the failure `e` to start the backend means that this machine cannot
/// run the kernels (no driver or device, a driver or GPU older than the PTX
/// needs, a module the driver would not load, the driver codes 209 and
/// 222), or `None` for any other failure.
fn unusable(e: &Error) -> Option<String> {
    match e {
        Error::ModuleLoad { .. } => Some(format!("the driver cannot load the kernels ({e})")),
        e if e.kind() == BackendErrorKind::NoDevice => Some(format!("no CUDA device ({e})")),
        _ => None,
    }
}

impl Cuda {
    /// The backend on device 0 for the GPU test or check `what`, or
    /// `Ok(None)` after [`skip`] where this machine cannot run the kernels
    /// (an error where skips are errors). Any other failure to start is an
    /// error too.
    pub fn for_check(precision: Precision, what: &str) -> Result<Option<Cuda>, Error> {
        match Cuda::new(precision) {
            Ok(c) => Ok(Some(c)),
            Err(e) => match unusable(&e) {
                Some(why) => skip(what, &why).map(|()| None),
                None => Err(e),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn machines_that_cannot_run_the_kernels_are_skips_and_nothing_else() {
        let load = Error::ModuleLoad { module: "frog", code: 222, log: String::new() };
        assert!(unusable(&load).unwrap().starts_with("the driver cannot load the kernels"));
        for code in [100, 209, 222, 34] {
            let e = Error::Driver { call: "cuInit", code };
            assert!(unusable(&e).unwrap().starts_with("no CUDA device"), "{e}");
        }
        assert_eq!(unusable(&Error::Driver { call: "cuMemAlloc", code: 2 }), None);
        let e = Error::Skipped { what: "gpu_x".into(), why: "no CUDA device".into() };
        assert_eq!(e.kind(), BackendErrorKind::NoDevice);
        assert!(e.to_string().contains("gpu_x") && e.to_string().contains("no CUDA device") && e.to_string().contains(REQUIRE_GPU), "{e}");
    }
}
