//! frog-bench's integration tests, one binary with a module per file: the
//! engine's generic code they share is instantiated and linked once, not
//! once per file (most of their build time). `cli.rs` stays apart: it runs
//! the built binary, instantiates little, and frog-cuda's CI builds it to
//! get a cuda build of the binary.

mod common;

mod airbench;
mod data;
mod golden;
mod gradcheck;
mod training;
