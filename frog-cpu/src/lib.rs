//! frog-cpu: FROG's CPU backend and reference implementation.
//!
//! [`Cpu`] implements frog-core's `Backend` for host memory in `f32` and
//! `f64`, multi-threaded on a persistent [`pool::ThreadPool`], with faer's
//! GEMM kernels; [`Frog`] is a convenience optimizer over a list of layers,
//! and [`host::HostFrog`] steps it on host slices, for any framework's glue.
//!
//! # Features
//!
//! The backend is the crate; two optional features add what other crates
//! of the workspace build on, off by default:
//!
//! - `nn`: `frog_cpu::nn`, the CPU training kernels of frog-bench's engine
//!   (convolutions, BatchNorm, pooling, linear layers, cross-entropy) and
//!   the shapes and operand groups (`BnShape`, `ConvShape`, `BnParams`, ...)
//!   that frog-cuda's `nn` kernels take too.
//! - `golden`: `frog_cpu::golden`, the harness that replays the golden
//!   cases on any backend (and `frog_cpu::baselines`, the reference SGD
//!   and AdamW steps), for other backends' tests.
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]

mod adamw;
mod backend;
#[cfg(feature = "golden")]
pub mod baselines;
#[cfg(feature = "golden")]
pub mod golden;
pub mod gemm;
mod gram;
pub mod host;
pub mod im2col;
pub mod implied;
mod kfrog;
#[cfg(feature = "nn")]
pub mod nn;
mod optimizer;
mod parts;
pub mod pool;
mod view;
mod winograd;

pub use backend::{try_zeros, Cpu, CpuError};
pub use gemm::Real;
pub use pool::{PoolFailure, MAX_THREADS};
pub use winograd::Algorithm;
pub use optimizer::{Frog, FrogError, FROG_CAPACITY};

/// The README's example, compiled and run as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeExample;
