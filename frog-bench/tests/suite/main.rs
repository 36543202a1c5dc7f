//! frog-bench's integration tests, one binary with a module per file: the
//! engine's generic code they share is instantiated and linked once, not
//! once per file (most of their build time).

mod common;

mod airbench;
mod cli;
mod data;
mod golden;
mod gradcheck;
mod training;
