//! frog-cpu: FROG's CPU backend and reference implementation.

pub mod gemm;
pub mod im2col;
pub mod nn;
pub mod pool;
