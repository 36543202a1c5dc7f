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
//!
//! All of that is the default feature `bench`; without it the crate is
//! [`data`] alone (CIFAR-10 from disk, the synthetic set, the loaders, no
//! download), which frog-candle's and frog-burn's tests use.
#![forbid(unsafe_code)]

#[cfg(feature = "bench")]
pub mod airbench;
#[cfg(feature = "bench")]
pub mod arch;
#[cfg(feature = "bench")]
pub mod cli;
pub mod data;
#[cfg(feature = "bench")]
pub mod device;
#[cfg(feature = "bench")]
pub mod dist;
pub mod error;
#[cfg(feature = "cuda")]
pub mod gpu_check;
#[cfg(feature = "bench")]
pub mod layers;
#[cfg(feature = "bench")]
pub mod model;
#[cfg(feature = "bench")]
pub mod optim;
#[cfg(feature = "bench")]
mod plot;
#[cfg(feature = "bench")]
mod progress;
// Beside the data pipeline alone, some of its generators go unused.
#[cfg_attr(not(feature = "bench"), allow(dead_code))]
mod rand;
#[cfg(feature = "bench")]
pub mod report;
#[cfg(feature = "bench")]
pub mod runfile;
#[cfg(feature = "bench")]
pub mod scaling;
#[cfg(feature = "bench")]
pub mod settings;
#[cfg(feature = "bench")]
pub mod study;
#[cfg(feature = "bench")]
pub mod throughput;
#[cfg(feature = "bench")]
pub mod train;
