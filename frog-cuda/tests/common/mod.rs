//! Helpers shared by the GPU test files.

use frog_core::{frog_step, Backend, Batch, Config, Error, Layer, ParamState, Params, Scalar, Unguarded, Workspace, WorkspaceReq};
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

/// `v` in `backend`'s scalar (f32, or f64 for a reference), in a new buffer.
#[allow(dead_code)] // not every test file compares with an f64 reference
pub fn put<B: Backend>(backend: &B, v: &[f32]) -> B::Buffer {
    let v: Vec<B::Scalar> = v.iter().map(|&e| B::Scalar::of_f64(e.into())).collect();
    let mut buf = backend.zeros(v.len()).unwrap();
    backend.write(&v, &mut buf, 0).unwrap();
    buf
}

/// The first `n` entries of `buf`, widened to f64.
#[allow(dead_code)] // not every test file compares with an f64 reference
pub fn get<B: Backend>(backend: &B, buf: &B::Buffer, n: usize) -> Vec<f64> {
    let mut out = vec![B::Scalar::ZERO; n];
    backend.read(buf, 0, &mut out).unwrap();
    out.into_iter().map(Scalar::as_f64).collect()
}

/// Max-norm relative difference of `a` from the reference `b`.
#[allow(dead_code)] // not every test file compares with an f64 reference
pub fn rel_diff(a: &[f64], b: &[f64]) -> f64 {
    let diff = a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max);
    diff / b.iter().fold(0.0f64, |m, v| m.max(v.abs()))
}

/// One FROG step of `layer` on `backend` (lr 1, no momentum, the whole
/// sample of `r` rows, a negligible `denom_eps`) from weights and
/// gradients of [`values`], the batch given by `step` (which runs it with
/// the settings, state, workspace and parameters it is handed): the change
/// of the weights, then of the bias, in f64.
#[allow(dead_code)] // not every test file compares with an f64 reference
pub fn frog_update<B: Backend>(
    backend: &B,
    layer: &Layer,
    r: usize,
    step: impl FnOnce(&Config, &mut ParamState<B>, &mut Workspace<B>, Params<'_, B>) -> Result<(), Error<B::Error>>,
) -> Vec<f64> {
    let cfg = Config { lr: 1.0, sample_size: None, denom_eps: 1e-30, ..Config::default() };
    let n = layer.rows() * layer.weight_cols();
    let before = values(n + layer.rows(), 1);
    let (g, gb) = (put(backend, &values(n, 2)), put(backend, &values(layer.rows(), 3)));
    let (mut w, mut b) = (put(backend, &before[..n]), put(backend, &before[n..]));
    let mut state = ParamState::for_layer(backend, layer, &cfg).unwrap();
    let mut ws = Workspace::new(backend, WorkspaceReq::new(backend, layer, r).unwrap()).unwrap();
    let bias = layer.bias.then_some((&mut b, &gb));
    step(&cfg, &mut state, &mut ws, Params { weight: &mut w, grad_weight: &g, bias }).unwrap();
    let mut after = get(backend, &w, n);
    if layer.bias {
        after.extend(get(backend, &b, layer.rows()));
    }
    after.iter().zip(&before).map(|(a, &s)| a - f64::from(s)).collect()
}

/// [`frog_update`] from f32 sampled inputs `x` and output gradients `y`.
#[allow(dead_code)] // not every test file compares with an f64 reference
pub fn frog_f32<B: Backend>(backend: &B, layer: &Layer, x: &[f32], y: &[f32]) -> Vec<f64> {
    let r = x.len() / layer.input_len();
    let (x, y) = (put(backend, x), put(backend, y));
    frog_update(backend, layer, r, |cfg, state, ws, params| frog_step(backend, cfg, layer, state, ws, params, Batch { x: &x, y: &y, sample: r, batch_size: r }, Unguarded))
}
