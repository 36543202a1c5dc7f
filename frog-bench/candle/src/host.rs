//! The host route: FROG on frog-cpu, fed from a candle model's autograd.
//!
//! This module is all the glue a candle user writes (kept in one place
//! because frog-core's optimizer API is being reworked): each step it
//! draws FROG's sample, takes those rows of every layer's input and output
//! gradient, copies them and the parameters to host vectors, runs the
//! optimizer, and writes the parameters back into their `Var`s. One sample
//! serves every layer of a step.

use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};
use frog_core::{Batch, Config, Layer, Params};
use frog_cpu::{Cpu, Frog};

use crate::error::{Error, Result};

/// What FROG needs of one preconditioned layer after a backward pass.
pub struct Tap<'a> {
    /// The weight, in PyTorch layout.
    pub weight: &'a Var,
    /// The bias, when the layer has one.
    pub bias: Option<&'a Var>,
    /// The layer's input over the whole batch, detached from the graph.
    pub input: &'a Tensor,
    /// The zero-valued `Var` added to the layer's output: its gradient is
    /// `dL/d(output)` (candle keeps no gradient of an intermediate tensor).
    pub output: &'a Var,
}

/// FROG (f32, frog-cpu) over a candle model's preconditioned layers, in
/// the order of `layers`, and its other parameters on the plain-SGD path.
pub struct HostFrog {
    frog: Frog<f32>,
}

impl HostFrog {
    /// An optimizer for `layers` and the plain-SGD parameters `others`,
    /// for batches of at most `max_batch`, on `threads` CPU threads (0: all).
    pub fn new(config: Config, layers: &[Layer], others: &[&Var], max_batch: usize, seed: u64, threads: usize) -> Result<Self> {
        let lens: Vec<usize> = others.iter().map(|v| v.elem_count()).collect();
        Ok(Self { frog: Frog::new(Cpu::with_threads(threads)?, config, layers, &lens, max_batch, seed)? })
    }

    /// One optimizer step from the gradients of a batch of `batch` samples:
    /// `taps[i]` is registered layer `i`, `others[i]` plain parameter `i`.
    pub fn step(&mut self, taps: &[Tap<'_>], others: &[&Var], grads: &GradStore, batch: usize) -> Result<()> {
        let sample: Vec<u32> = self.frog.sample(batch)?.iter().map(|&i| i as u32).collect();
        let r = sample.len();
        let Some(first) = taps.first() else { return self.step_others(others, grads) };
        let idx = Tensor::from_vec(sample, r, first.input.device())?;
        for (i, tap) in taps.iter().enumerate() {
            let x = host(&tap.input.detach().index_select(&idx, 0)?)?;
            let y = host(&grad(grads, tap.output, "a layer's output tap")?.index_select(&idx, 0)?)?;
            let (mut w, gw) = (host(tap.weight)?, host(grad(grads, tap.weight, "a layer's weight")?)?);
            let mut b = tap.bias.map(|v| host(v)).transpose()?;
            let gb = tap.bias.map(|v| grad(grads, v, "a layer's bias").and_then(host)).transpose()?;
            let params = Params { weight: &mut w, grad_weight: &gw, bias: b.as_mut().zip(gb.as_ref()) };
            self.frog.step_layer(i, params, Batch { x: &x, y: &y, sample: r, batch_size: batch })?;
            set(tap.weight, w)?;
            if let (Some(v), Some(b)) = (tap.bias, b) {
                set(v, b)?;
            }
        }
        self.step_others(others, grads)
    }

    fn step_others(&mut self, others: &[&Var], grads: &GradStore) -> Result<()> {
        for (i, v) in others.iter().enumerate() {
            let mut p = host(v)?;
            self.frog.step_other(i, &mut p, &host(grad(grads, v, "a plain parameter")?)?)?;
            set(v, p)?;
        }
        Ok(())
    }
}

fn grad<'g>(grads: &'g GradStore, t: &Tensor, what: &'static str) -> Result<&'g Tensor> {
    grads.get(t).ok_or(Error::MissingGrad(what))
}

fn host(t: &Tensor) -> Result<Vec<f32>> {
    Ok(t.flatten_all()?.to_vec1::<f32>()?)
}

fn set(v: &Var, data: Vec<f32>) -> Result<()> {
    Ok(v.set(&Tensor::from_vec(data, v.shape(), v.device())?)?)
}
