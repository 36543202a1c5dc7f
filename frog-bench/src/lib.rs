//! frog-bench: a small CNN training engine and the FROG-vs-SGD
//! time-to-accuracy study on CIFAR-10.
//!
//! The engine's [`device::Device`] trait carries buffers and training
//! kernels; [`model::Net`] builds a network from an [`arch::Arch`] on any
//! device; [`optim::Optimizer`] steps it with SGD or FROG through frog-core.

pub mod arch;
pub mod cli;
pub mod data;
pub mod device;
pub mod error;
pub mod layers;
pub mod model;
pub mod optim;
pub mod report;
pub mod study;
pub mod throughput;
pub mod train;
