//! frog-cpu's integration tests, one binary with a module per file: the
//! generic optimizer code they share is instantiated and linked once, not
//! once per file (most of their build time). `no_alloc.rs` stays apart,
//! as it replaces the global allocator.

mod common;

mod algorithms;
mod api;
mod baselines;
mod distributed;
mod errors;
mod golden;
mod host;
mod hostile;
mod lowp;
mod muon;
mod optimizer;
mod properties;
mod provided_methods;
mod views;
