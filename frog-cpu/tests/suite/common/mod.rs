//! Helpers shared by the integration tests: a seeded generator, a
//! one-call FROG step on host vectors, and (in [`forward`]) frog-cpu behind
//! a backend with only the required methods and failing allocations.
#![allow(dead_code)]

use frog_core::{frog_step, Batch, Config, Error, Layer, ParamState, Params, Unguarded, Workspace, WorkspaceReq};
use frog_cpu::{Cpu, CpuError};

pub mod distributed;
pub mod forward;

/// A small deterministic generator (SplitMix64), enough for test data.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[lo, hi)`.
    pub fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * ((self.next_u64() >> 11) as f64 / (1u64 << 53) as f64)
    }

    /// Uniform integer in `lo..=hi`.
    pub fn int(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next_u64() % (hi - lo + 1) as u64) as usize
    }

    pub fn vec(&mut self, n: usize) -> Vec<f64> {
        (0..n).map(|_| self.uniform(-1.0, 1.0)).collect()
    }
}

/// Host data of one layer step.
#[derive(Clone)]
pub struct StepData {
    pub weight: Vec<f64>,
    pub bias: Option<Vec<f64>>,
    pub grad_weight: Vec<f64>,
    pub grad_bias: Option<Vec<f64>>,
    pub x: Vec<f64>,
    pub y: Vec<f64>,
    pub sample: usize,
    pub batch: usize,
}

impl StepData {
    pub fn random(rng: &mut Rng, layer: &Layer, sample: usize, batch: usize) -> Self {
        let (rows, d) = (layer.rows(), layer.weight_cols());
        let bias = layer.bias.then(|| rng.vec(rows));
        Self {
            weight: rng.vec(rows * d),
            grad_bias: layer.bias.then(|| rng.vec(rows)),
            bias,
            grad_weight: rng.vec(rows * d),
            x: rng.vec(sample * layer.input_len()),
            y: rng.vec(sample * layer.output_len()),
            sample,
            batch,
        }
    }
}

/// Result of one step from fresh state: new weight and bias, and the
/// workspace's direction.
pub struct Stepped {
    pub weight: Vec<f64>,
    pub bias: Option<Vec<f64>>,
    pub direction: Vec<f64>,
    pub row_scale: Vec<f64>,
}

/// One FROG step in f64 from fresh state.
pub fn step_once(cfg: &Config, layer: &Layer, data: &StepData) -> Result<Stepped, Error<CpuError>> {
    let backend = Cpu::<f64>::with_threads(2).unwrap();
    let mut state = ParamState::for_layer(&backend, layer, cfg).map_err(Error::Backend)?;
    let mut ws = Workspace::new(&backend, WorkspaceReq::new(&backend, layer, data.sample)?).map_err(Error::Backend)?;
    let mut weight = data.weight.clone();
    let mut bias = data.bias.clone();
    let params = Params { weight: &mut weight, grad_weight: &data.grad_weight, bias: bias.as_mut().zip(data.grad_bias.as_ref()) };
    let batch = Batch { x: &data.x, y: &data.y, sample: data.sample, batch_size: data.batch };
    frog_step(&backend, cfg, layer, &mut state, &mut ws, params, batch, Unguarded)?;
    let direction = ws.direction()[..layer.rows() * layer.cols()].to_vec();
    let row_scale = ws.row_scale()[..layer.rows()].to_vec();
    Ok(Stepped { weight, bias, direction, row_scale })
}

/// An optimizer with the handles of its layers and of its plain parameters.
pub type Registered<T> = (frog_cpu::Frog<T>, Vec<frog_core::ParamId>, Vec<frog_core::ParamId>);

/// A [`frog_cpu::Frog`] running FROG with `layers` preconditioned and plain
/// parameters of `others` entries, all in the default group, with their
/// handles in registration order.
pub fn frog_with<T: frog_cpu::Real>(
    backend: &frog_cpu::Cpu<T>,
    cfg: Config,
    layers: &[Layer],
    others: &[usize],
    max_batch: usize,
    seed: u64,
) -> Result<Registered<T>, Error<CpuError>> {
    let mut frog = frog_cpu::Frog::new(frog_core::Method::Frog(cfg), max_batch, seed)?;
    let g = frog_core::GroupId::DEFAULT;
    let layer_ids = layers.iter().enumerate().map(|(i, l)| frog.add_layer(backend, &format!("layer{i}"), *l, g)).collect::<Result<_, _>>()?;
    let other_ids = others.iter().enumerate().map(|(i, &n)| frog.add_param(backend, &format!("param{i}"), n, g)).collect::<Result<_, _>>()?;
    Ok((frog, layer_ids, other_ids))
}
