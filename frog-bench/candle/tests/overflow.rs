//! Huge but finite inputs, output gradients and gradients give finite
//! steps on candle, equal to frog-cpu's f64 steps on the same values: the
//! power-of-two rescales of frog-core (inputs in `pack_patches`, gradient
//! rows in `row_rescale`, output-gradient rows in `fisher_weights`) change
//! FROG's step only through `denom_eps`, which is tiny here.

use candle_core::Device;
use frog_candle::backend::CandleBackend;
use frog_core::{frog_step, Backend, Batch, Config, Conv2d, Layer, ParamState, Params, Scalar, Unguarded, Workspace, WorkspaceReq};
use frog_cpu::Cpu;

/// A value in [-1, 1) from a seeded sequence.
fn values(seed: u64, n: usize) -> Vec<f64> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 11) as f64 / (1u64 << 52) as f64 - 1.0
        })
        .collect()
}

/// Two steps of `layer` on `backend`, from data of `seed` scaled by
/// `gains` (inputs, output gradients, gradients); the weights after them.
fn steps<B: Backend>(backend: &B, layer: &Layer, seed: u64, [gx, gy, gg]: [f64; 3]) -> Vec<f64> {
    let (r, batch) = (2, 4);
    let cfg = Config { lr: 0.01, momentum: 0.9, weight_decay: 0.0, denom_eps: 1e-30, sample_size: Some(r), ..Config::default() };
    let buf = |v: Vec<f64>, gain: f64| {
        let mut b = backend.zeros(v.len()).unwrap();
        backend.write(&v.iter().map(|&x| B::Scalar::of_f64(x * gain)).collect::<Vec<_>>(), &mut b, 0).unwrap();
        b
    };
    let (rows, d) = (layer.rows(), layer.weight_cols());
    let mut weight = buf(values(seed, rows * d), 1.0);
    let mut bias = buf(values(seed + 1, rows), 1.0);
    let (gw, gb) = (buf(values(seed + 2, rows * d), gg), buf(values(seed + 3, rows), gg));
    let (x, y) = (buf(values(seed + 4, r * layer.input_len()), gx), buf(values(seed + 5, r * layer.output_len()), gy));
    let mut state = ParamState::for_layer(backend, layer, &cfg).unwrap();
    let mut ws = Workspace::new(backend, WorkspaceReq::new(backend, layer, r).unwrap()).unwrap();
    for _ in 0..2 {
        let params = Params { weight: &mut weight, grad_weight: &gw, bias: Some((&mut bias, &gb)) };
        frog_step(backend, &cfg, layer, &mut state, &mut ws, params, Batch { x: &x, y: &y, sample: r, batch_size: batch }, Unguarded).unwrap();
    }
    let mut out = vec![B::Scalar::ZERO; rows * d];
    backend.read(&weight, 0, &mut out).unwrap();
    out.iter().map(|v| v.as_f64()).collect()
}

#[test]
fn huge_finite_data_gives_the_unscaled_step() {
    let candle = CandleBackend::<f32>::new(Device::Cpu);
    let cpu = Cpu::<f64>::with_threads(1).unwrap();
    let layers = [Layer::linear(5, 3, true), Layer::conv2d(Conv2d::new(2, 3, 3, [4, 4]).padding(1), true)];
    for (seed, layer) in layers.iter().enumerate() {
        for gains in [[1e19, 1.0, 1.0], [3e37, 1.0, 1.0], [1.0, 1e20, 1.0], [1.0, 1.0, 1e30], [1e25, 1e25, 1e25]] {
            let seed = 10 * seed as u64;
            let (want, got) = (steps(&cpu, layer, seed, gains), steps(&candle, layer, seed, gains));
            assert!(got.iter().all(|v| v.is_finite()), "non-finite candle step at {gains:?} on {layer:?}");
            let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
            let err = want.iter().zip(&got).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max) / scale;
            assert!(err < 1e-4, "{gains:?} on {layer:?}: {err:e} from frog-cpu's f64 step");
        }
    }
}
