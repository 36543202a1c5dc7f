//! frog-candle: FROG in a candle program, both ways.
//!
//! - [`FrogOptimizer`] is FROG as a candle-nn `Optimizer`, stepping on
//!   frog-cpu through its host route ([`frog_cpu::host`]): run each
//!   preconditioned layer through a [`Tap`] in the forward pass, register
//!   the taps, and train with `opt.backward_step(&loss)?` (see [`optim`]).
//! - [`backend::CandleBackend`] implements frog-core's `Backend` over candle
//!   tensors, so FROG's whole step runs on candle's device; the golden
//!   tests replay every layer case through it.
//! - [`view`] lets that step take the model's own tensors: views of its
//!   parameters (a `Var` is set in place), gradients, sampled inputs and
//!   output gradients, each a tensor of exactly the length the step names,
//!   so none of them is made a buffer first or copied back out of one.
//!
//! [`model::Cnn`] is the example network; `cargo run --release -p
//! frog-candle --example cifar_cnn -- --epochs 1` trains it on CIFAR-10
//! (found as `frog-bench` finds it).
#![forbid(unsafe_code)]

pub mod backend;
pub mod error;
pub mod model;
pub mod optim;
pub mod view;

pub use error::{Error, Result};
pub use optim::{FrogOptimizer, ParamsFrog, Tap};
