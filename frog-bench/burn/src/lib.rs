//! frog-burn: FROG as an optimizer for burn models, on frog-cpu.
//!
//! Burn's autodiff keeps the gradients of leaf parameters only, and FROG
//! preconditions a layer's step with the layer's input and the gradient of
//! its output: the forward pass runs each preconditioned layer through a
//! [`Taps`] handle (a zero leaf added to the output, marked
//! `require_grad`, so that its gradient is `dL/d(output)`). Register the
//! layers with a [`FrogOptimizer`] and train with `opt.step(&mut model,
//! &loss)?`; every other trainable parameter takes FROG's plain-SGD path.
//! The step itself is frog-cpu's host route ([`frog_cpu::host`]), shared
//! with frog-candle, on host copies of burn's tensors: any burn device
//! works, at the cost of those copies. See [`optim`].
#![forbid(unsafe_code)]

pub mod error;
pub mod optim;
pub mod tap;

pub use error::{Error, Result};
pub use optim::{FrogOptimizer, ParamsFrog};
pub use tap::Taps;
