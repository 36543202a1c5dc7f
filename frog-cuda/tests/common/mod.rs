//! Helpers shared by the GPU test files.

use frog_core::Backend;
use frog_cuda::{Cuda, Precision, Tile};

/// The backend on device 0, or `None` after printing that `test` was
/// skipped and why: no usable device (no driver, the libcuda stub, a driver
/// or GPU older than the PTX needs), or a module the driver would not load
/// (with its JIT log). Any other failure to start fails the test, and so
/// does a skip under `FROG_REQUIRE_GPU=1` ([`Cuda::for_check`]).
pub fn device(precision: Precision, test: &str) -> Option<Cuda> {
    Cuda::for_check(precision, test).unwrap_or_else(|e| panic!("{e}"))
}

/// Skips `test` because of `why` ([`frog_cuda::skip`]); panics where skips
/// are errors.
#[allow(dead_code)] // not every test file skips for reasons of its own
pub fn skip(test: &str, why: &str) {
    frog_cuda::skip(test, why).unwrap_or_else(|e| panic!("{e}"));
}

/// Every GEMM tile setting: chosen per problem, then each forced.
pub const TILES: [Option<Tile>; 3] = [None, Some(Tile::T64), Some(Tile::T128)];

/// Deterministic pseudo-random values in [-1, 1).
pub fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// A new buffer of `backend` holding `v` (on the CPU or the GPU, so that
/// a test runs the same steps on both).
#[allow(dead_code)] // not every test file compares backends
pub fn upload<B: Backend<Scalar = f32>>(backend: &B, v: &[f32]) -> B::Buffer {
    let mut buf = backend.zeros(v.len()).unwrap();
    backend.write(v, &mut buf, 0).unwrap();
    buf
}

/// Every entry of `buf`.
#[allow(dead_code)] // not every test file compares backends
pub fn download<B: Backend<Scalar = f32>>(backend: &B, buf: &B::Buffer) -> Vec<f32> {
    let mut out = vec![0.0; backend.len(buf)];
    backend.read(buf, 0, &mut out).unwrap();
    out
}
