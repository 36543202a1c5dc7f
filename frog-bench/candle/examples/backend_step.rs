//! Times FROG's step of each convolution of the example network on the
//! candle backend and on frog-cpu, in f32, from the same inputs (a sample of
//! 24 of a batch of 64), with a workspace of the layer's own size and with
//! one shared by all three layers (as an optimizer has; on candle every
//! write of a smaller layer then copies the buffers' tails):
//! `cargo run --release -p frog-candle --example backend_step -- [REPS]`.

use std::time::Instant;

use frog_candle::backend::CandleBackend;
use frog_candle::model::Cnn;
use frog_core::{frog_step, Backend, Batch, Config, Layer, ParamState, Params, Unguarded, Workspace, WorkspaceReq};
use frog_cpu::Cpu;

const BATCH: usize = 64;
const SAMPLE: usize = 24;

/// A buffer of `n` deterministic values in `[-scale, scale]`.
fn filled<B: Backend<Scalar = f32>>(b: &B, n: usize, seed: usize, scale: f32) -> Result<B::Buffer, B::Error> {
    let host: Vec<f32> = (0..n).map(|i| scale * ((i * 7919 + seed * 104_729) as f32 * 0.618).sin()).collect();
    let mut buf = b.zeros(n)?;
    b.write(&host, &mut buf, 0)?;
    Ok(buf)
}

/// Seconds per step of `layer` on `b` with a workspace for `req`, the mean
/// of `reps` steps after one warm-up.
fn time_step<B: Backend<Scalar = f32>>(b: &B, layer: &Layer, req: WorkspaceReq, reps: usize) -> Result<f64, frog_core::Error<B::Error>> {
    let cfg = Config { lr: 0.01, momentum: 0.9, sample_size: Some(SAMPLE), ..Config::default() };
    let (rows, d) = (layer.rows(), layer.weight_cols());
    let mut state = ParamState::for_layer(b, layer, &cfg).map_err(frog_core::Error::Backend)?;
    let mut ws = Workspace::new(b, req).map_err(frog_core::Error::Backend)?;
    let buf = |n, seed, scale| filled(b, n, seed, scale).map_err(frog_core::Error::Backend);
    let (mut w, gw, mut bias, gb) = (buf(rows * d, 1, 0.1)?, buf(rows * d, 2, 1e-3)?, buf(rows, 3, 0.1)?, buf(rows, 4, 1e-3)?);
    let (x, y) = (buf(SAMPLE * layer.input_len(), 5, 1.0)?, buf(SAMPLE * layer.output_len(), 6, 1e-4)?);
    let mut step = || {
        let params = Params { weight: &mut w, grad_weight: &gw, bias: Some((&mut bias, &gb)) };
        frog_step(b, &cfg, layer, &mut state, &mut ws, params, Batch { x: &x, y: &y, sample: SAMPLE, batch_size: BATCH }, Unguarded)
    };
    step()?;
    let start = Instant::now();
    for _ in 0..reps {
        step()?;
    }
    Ok(start.elapsed().as_secs_f64() / reps as f64)
}

/// The workspace of `layer` alone, and the one of all `layers`.
fn reqs<B: Backend>(b: &B, layer: &Layer, layers: &[Layer]) -> Result<[WorkspaceReq; 2], frog_core::ShapeError> {
    let shared = layers.iter().try_fold(WorkspaceReq::default(), |acc, l| Ok::<_, frog_core::ShapeError>(acc.union(WorkspaceReq::new(b, l, SAMPLE)?)))?;
    Ok([WorkspaceReq::new(b, layer, SAMPLE)?, shared])
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let reps = std::env::args().nth(1).map(|s| s.parse()).transpose()?.unwrap_or(10);
    let (candle, cpu) = (CandleBackend::<f32>::new(candle_core::Device::Cpu), Cpu::<f32>::with_threads(0)?);
    let layers = Cnn::new(&candle_core::Device::Cpu, 0)?.layers();
    for (i, layer) in layers.iter().enumerate() {
        for (which, (rc, rp)) in ["own", "shared"].into_iter().zip(reqs(&candle, layer, &layers)?.into_iter().zip(reqs(&cpu, layer, &layers)?)) {
            let (tc, tp) = (time_step(&candle, layer, rc, reps)?, time_step(&cpu, layer, rp, reps)?);
            println!(
                "conv{} (R {}, D' {}, L {}), {which} workspace: candle {:.2} ms, frog-cpu {:.2} ms, ratio {:.2}",
                i + 1,
                layer.rows(),
                layer.cols(),
                layer.positions(),
                1e3 * tc,
                1e3 * tp,
                tc / tp
            );
        }
    }
    Ok(())
}
