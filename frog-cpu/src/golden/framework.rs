//! The exactness test of a framework optimizer on the host route
//! (frog-candle's and frog-burn's `FrogOptimizer`): its first step on a
//! golden layer case must equal frog-cpu's `frog_step` in f32, within
//! 1e-4. Both tests build the same whole batch around the case's sampled
//! rows and compare the same way; only the framework's graph differs.

use frog_core::{frog_step, Batch, Config, Layer, ParamState, Params, Sampler, Unguarded, Workspace, WorkspaceReq};

use super::{golden_dir, load_cases, rel_error, Case, Target};
use crate::Cpu;

/// The layer cases the test steps: a linear layer and a convolution, each
/// with a bias.
pub const FIRST_STEP_CASES: [&str; 2] = ["linear_20x7_bias", "conv3x3_bias"];

/// Largest max-norm relative difference allowed from frog-cpu's step.
pub const FIRST_STEP_TOLERANCE: f64 = 1e-4;

/// A golden layer case's first step, in f32, laid out for a framework
/// optimizer whose sampling is seeded with the test's seed.
#[derive(Clone, Debug)]
pub struct FirstStep {
    /// The case's name.
    pub name: String,
    /// The layer.
    pub layer: Layer,
    /// The case's settings, its sample size fixed.
    pub config: Config,
    /// The whole batch's size.
    pub batch: usize,
    /// The whole batch's inputs (`input_len` entries a row): the case's
    /// sampled rows where the optimizer's sample will take them, arbitrary
    /// values in the other rows (which FROG must not read).
    pub x: Vec<f32>,
    /// The whole batch's output gradients (`output_len` a row), likewise.
    pub y: Vec<f32>,
    /// The weight before the step, `[rows, weight_cols]` (PyTorch's layout).
    pub weight: Vec<f32>,
    /// Its gradient.
    pub grad_weight: Vec<f32>,
    /// The bias before the step.
    pub bias: Vec<f32>,
    /// Its gradient.
    pub grad_bias: Vec<f32>,
}

fn f32s(v: &[f64]) -> Vec<f32> {
    v.iter().map(|&x| x as f32).collect()
}

fn f64s(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| f64::from(x)).collect()
}

impl FirstStep {
    /// `case`'s first step for an optimizer seeded with `seed`.
    fn new(case: &Case, seed: u64) -> Result<Self, String> {
        let name = &case.name;
        let Target::Layer(layer) = case.target else { return Err(format!("{name} is not a layer case")) };
        let step = case.steps.first().ok_or_else(|| format!("{name} has no step"))?;
        let (Some(bias), Some(grad_bias)) = (&case.bias, &step.grad_bias) else { return Err(format!("{name} has no bias")) };
        let (batch, r) = (case.batch_size, case.sample_size);
        let mut sample = vec![0; r];
        Sampler::new(seed).sample(batch, Some(r), &mut sample).map_err(|e| format!("{name}: {e}"))?;
        let spread = |rows: &[f64], len: usize| {
            let mut full: Vec<f32> = (0..batch * len).map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.01).collect();
            for (k, &i) in sample.iter().enumerate() {
                full[i * len..(i + 1) * len].copy_from_slice(&f32s(&rows[k * len..(k + 1) * len]));
            }
            full
        };
        Ok(Self {
            name: name.clone(),
            layer,
            config: Config { sample_size: Some(r), ..case.config },
            batch,
            x: spread(&step.x, layer.input_len()),
            y: spread(&step.y, layer.output_len()),
            weight: f32s(&case.weight),
            grad_weight: f32s(&step.grad_weight),
            bias: f32s(bias),
            grad_bias: f32s(grad_bias),
        })
    }

    /// Weight and bias after frog-cpu's `frog_step` in f32 on the case's
    /// sampled rows.
    fn frog_cpu(&self, case: &Case) -> Result<(Vec<f32>, Vec<f32>), String> {
        fn fail(name: &str) -> impl Fn(&dyn std::fmt::Display) -> String + '_ {
            move |e| format!("{name}: frog-cpu: {e}")
        }
        let fail = fail(&self.name);
        let step = &case.steps[0];
        let cpu = Cpu::<f32>::with_threads(1).map_err(|e| fail(&e))?;
        let mut state = ParamState::for_layer(&cpu, &self.layer, &case.config).map_err(|e| fail(&e))?;
        let req = WorkspaceReq::new(&cpu, &self.layer, case.sample_size).map_err(|e| fail(&e))?;
        let mut ws = Workspace::new(&cpu, req).map_err(|e| fail(&e))?;
        let (mut w, mut b) = (self.weight.clone(), self.bias.clone());
        let (x, y) = (f32s(&step.x), f32s(&step.y));
        let params = Params { weight: &mut w, grad_weight: &self.grad_weight, bias: Some((&mut b, &self.grad_bias)) };
        let batch = Batch { x: &x, y: &y, sample: case.sample_size, batch_size: case.batch_size };
        frog_step(&cpu, &case.config, &self.layer, &mut state, &mut ws, params, batch, Unguarded).map_err(|e| fail(&e))?;
        Ok((w, b))
    }
}

/// Runs `step`, a framework optimizer's first step seeded with `seed`
/// (returning the weight in PyTorch's layout and the bias), on every case
/// of [`FIRST_STEP_CASES`], and compares it with frog-cpu's: an error
/// naming the case when they differ by more than
/// [`FIRST_STEP_TOLERANCE`], or when the step did not move the weight.
pub fn check_first_steps(seed: u64, mut step: impl FnMut(&FirstStep) -> (Vec<f32>, Vec<f32>)) -> Result<(), String> {
    let cases = load_cases(&golden_dir())?;
    for name in FIRST_STEP_CASES {
        let case = cases.iter().find(|c| c.name == name).ok_or_else(|| format!("no golden case {name}"))?;
        let first = FirstStep::new(case, seed)?;
        let (w, b) = first.frog_cpu(case)?;
        let (fw, fb) = step(&first);
        let err = rel_error(&f64s(&fw), &f64s(&w)).max(rel_error(&f64s(&fb), &f64s(&b)));
        println!("{name}: max-norm relative error {err:e}");
        if err > FIRST_STEP_TOLERANCE {
            return Err(format!("{name}: the framework optimizer's step differs from frog-cpu's by {err:e}"));
        }
        if rel_error(&f64s(&fw), &f64s(&first.weight)) <= 1e-3 {
            return Err(format!("{name}: the step did not move the weight"));
        }
    }
    Ok(())
}
