//! Helpers shared by the integration tests.
// Each test binary uses its own subset of these helpers.
#![allow(dead_code)]

use std::path::PathBuf;

/// A fresh empty directory under the system's temp directory.
pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("frog-bench-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
