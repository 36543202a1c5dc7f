//! Where the integration tests find the shared real data.
// Each test binary uses its own subset of these helpers.
#![allow(dead_code)]

use std::path::PathBuf;

/// `$FROG_DATA`, else the repository's `../shared/data/cifar-10-batches-bin`.
pub fn cifar_dir() -> PathBuf {
    std::env::var_os("FROG_DATA")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/cifar-10-batches-bin"))
}

/// A fresh empty directory under the system's temp directory.
pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("frog-bench-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
