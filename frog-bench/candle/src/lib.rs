//! frog-candle: FROG in a candle program, both ways the issue asks for.
//!
//! - [`backend::CandleBackend`] implements frog-core's `Backend` over candle
//!   tensors, so FROG's whole step runs on candle's device; the golden
//!   tests replay every layer case through it.
//! - [`host::HostFrog`] is the host route: a candle model trained with
//!   candle's autograd ([`model::Cnn`], [`train::train`]) and FROG on
//!   frog-cpu, fed the sampled rows of each convolution's input and output
//!   gradient.
//!
//! `cargo run --release -p frog-candle --example cifar_cnn -- --epochs 1`
//! trains the example network on CIFAR-10 (`$FROG_DATA`, or the shared data).

pub mod backend;
pub mod error;
pub mod host;
pub mod model;
pub mod train;

pub use error::{Error, Result};
