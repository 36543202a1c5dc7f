//! frog-candle: FROG in a candle program, both ways the issue asks for.
//!
//! - [`backend::CandleBackend`] implements frog-core's `Backend` over candle
//!   tensors, so FROG's whole step runs on candle's device; the golden
//!   tests replay every layer case through it.
//! - [`view`] lets that step take the model's own tensors: views of its
//!   parameters (a `Var` is set in place), gradients, sampled inputs and
//!   output gradients, each a tensor of exactly the length the step names,
//!   so none of them is made a buffer first or copied back out of one.
//! - [`host::HostFrog`] is the host route: a candle model trained with
//!   candle's autograd ([`model::Cnn`], [`train::Trainer`]) and FROG on
//!   frog-cpu, fed the sampled rows of each convolution's input and output
//!   gradient.
//!
//! `cargo run --release -p frog-candle --example cifar_cnn -- --epochs 1`
//! trains the example network on CIFAR-10 (found as `frog-bench` finds it).
#![forbid(unsafe_code)]

pub mod backend;
pub mod error;
pub mod host;
pub mod model;
pub mod train;
pub mod view;

pub use error::{Error, Result};
