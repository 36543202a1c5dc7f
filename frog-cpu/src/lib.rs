//! frog-cpu: FROG's CPU backend and reference implementation.
//!
//! [`Cpu`] implements frog-core's `Backend` for host memory in `f32` and
//! `f64`, multi-threaded on a persistent [`pool::ThreadPool`], with faer's
//! GEMM kernels; [`Frog`] is a convenience optimizer over a list of layers,
//! and [`host::HostFrog`] steps it on host slices, for any framework's glue.
//!
//! # Example
//!
//! A FROG step through the host route, as in the README: register the
//! layers once, then hand each step every layer's weight, gradient, inputs
//! and output gradients as slices.
//!
//! ```
//! use frog_core::{Config, Conv2d, GroupId, Layer, Method};
//! use frog_cpu::{host::{HostFrog, LayerSlices, Rows}, Cpu};
//!
//! // One 3x3 convolution (3 -> 8 channels, 16x16 images, no bias), batches of 32.
//! let conv = Layer::conv2d(Conv2d::new(3, 8, 3, [16, 16]).padding(1), false);
//! let cfg = Config { lr: 0.01, momentum: 0.9, sample_size: Some(8), ..Config::default() };
//! let mut frog = HostFrog::new(Cpu::<f32>::with_threads(0)?, Method::Frog(cfg), 32, 0)?;
//! frog.add_layer("conv1", conv, GroupId::DEFAULT)?;
//!
//! // A step: the weight, its gradient, and the whole batch's inputs and output gradients.
//! let (mut weight, grad) = (vec![0.01f32; 8 * 3 * 3 * 3], vec![1e-3f32; 8 * 3 * 3 * 3]);
//! let x: Vec<f32> = (0..32 * conv.input_len()).map(|i| (i as f32 * 0.37).sin()).collect();
//! let y: Vec<f32> = (0..32 * conv.output_len()).map(|i| 1e-3 * (i as f32 * 0.11).cos()).collect();
//! let mut layers = [LayerSlices { weight: &mut weight, grad_weight: &grad, bias: None, x: Rows::Batch(&x), y: Rows::Batch(&y) }];
//! frog.step(32, &mut layers, &mut [])?;
//! assert!(weight.iter().all(|w| w.is_finite()));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
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
#[cfg(feature = "mpi")]
pub mod mpi;
mod muon;
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
