//! frog-bench: a small CNN training engine and the time-to-accuracy study
//! of FROG against SGD, AdamW and K-FROG on CIFAR-10.
//!
//! The engine's [`device::Device`] trait carries buffers and training
//! kernels; [`model::Net`] builds a network from an [`arch::Arch`] on any
//! device; [`optim::Optimizer`] steps it with SGD, AdamW, FROG or K-FROG
//! through frog-core; a study is a [`runfile::RunFile`] of configurations.
//! [`airbench`] holds the airbench94_muon record recipe: its data, its
//! network on a device, its training and evaluation; the study runs it as
//! the model `airbench`, whose configurations choose the filters' method.
//!
//! `cargo run -p frog-bench --release` runs the study (see `--help`): on
//! the CPU the scaled-down one, on CIFAR-10 from `--data`, `$FROG_DATA`,
//! the cache or a download, else on a labelled synthetic set. Results go to
//! `frog-results/` (table as `results.csv`/`results.json`, per-epoch
//! `curves.csv`, `loss_vs_time.svg`, `accuracy_vs_time.svg`).
#![forbid(unsafe_code)]

pub mod airbench;
pub mod arch;
pub mod cli;
pub mod data;
pub mod device;
pub mod dist;
pub mod error;
#[cfg(feature = "cuda")]
pub mod gpu_check;
pub mod layers;
pub mod model;
pub mod optim;
mod plot;
mod progress;
mod rand;
pub mod report;
pub mod runfile;
pub mod scaling;
pub mod settings;
pub mod study;
pub mod throughput;
pub mod train;
