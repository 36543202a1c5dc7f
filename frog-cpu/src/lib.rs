//! frog-cpu: FROG's CPU backend and reference implementation.

pub mod gemm;
pub mod pool;
