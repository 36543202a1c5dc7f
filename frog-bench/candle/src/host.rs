//! The host route: FROG on frog-cpu, fed from a candle model's autograd.
//!
//! This module is all the glue a candle user writes: each step it draws
//! FROG's sample, takes those rows of every layer's input and output
//! gradient, copies them and the parameters to host vectors, runs
//! frog-core's optimizer object on frog-cpu, and writes the parameters
//! back into their `Var`s. One sample serves every layer of a step.

use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};
use frog_core::{Batch, Config, GroupId, Layer, Method, ParamId, Params};
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
    cpu: Cpu<f32>,
    frog: Frog<f32>,
    /// The handles of the layers and of the plain parameters, in order.
    layers: Vec<ParamId>,
    others: Vec<ParamId>,
    /// The step's sample.
    sample: Vec<usize>,
}

impl HostFrog {
    /// An optimizer for `layers` and the plain-SGD parameters `others`,
    /// for batches of at most `max_batch`, on `threads` CPU threads (0: all).
    pub fn new(config: Config, layers: &[Layer], others: &[&Var], max_batch: usize, seed: u64, threads: usize) -> Result<Self> {
        let cpu = Cpu::with_threads(threads)?;
        let mut frog = Frog::new(Method::Frog(config), max_batch, seed)?;
        let g = GroupId::DEFAULT;
        let layers = layers.iter().enumerate().map(|(i, l)| frog.add_layer(&cpu, &format!("layer{i}"), *l, g)).collect::<std::result::Result<_, _>>()?;
        let others = others.iter().enumerate().map(|(i, v)| frog.add_param(&cpu, &format!("param{i}"), v.elem_count(), g)).collect::<std::result::Result<_, _>>()?;
        let sample = vec![0; frog.sample_rows(max_batch)];
        Ok(Self { cpu, frog, layers, others, sample })
    }

    /// One optimizer step from the gradients of a batch of `batch` samples:
    /// `taps[i]` is registered layer `i`, `others[i]` plain parameter `i`.
    pub fn step(&mut self, taps: &[Tap<'_>], others: &[&Var], grads: &GradStore, batch: usize) -> Result<()> {
        if taps.len() != self.layers.len() {
            return Err(Error::Taps { given: taps.len(), registered: self.layers.len() });
        }
        let sample: Vec<u32> = self.frog.sample(batch, &mut self.sample)?.iter().map(|&i| i as u32).collect();
        let r = sample.len();
        let Some(first) = taps.first() else { return self.step_others(others, grads) };
        let idx = Tensor::from_vec(sample, r, first.input.device())?;
        for (&id, tap) in self.layers.iter().zip(taps) {
            let x = host(&tap.input.detach().index_select(&idx, 0)?)?;
            let y = host(&grad(grads, tap.output, "a layer's output tap")?.index_select(&idx, 0)?)?;
            let (mut w, gw) = (host(tap.weight)?, host(grad(grads, tap.weight, "a layer's weight")?)?);
            let mut b = tap.bias.map(|v| host(v)).transpose()?;
            let gb = tap.bias.map(|v| grad(grads, v, "a layer's bias").and_then(host)).transpose()?;
            let params = Params { weight: &mut w, grad_weight: &gw, bias: b.as_mut().zip(gb.as_ref()) };
            self.frog.step_layer(&self.cpu, id, params, Some(Batch { x: &x, y: &y, sample: r, batch_size: batch }))?;
            set(tap.weight, w)?;
            if let (Some(v), Some(b)) = (tap.bias, b) {
                set(v, b)?;
            }
        }
        self.step_others(others, grads)
    }

    fn step_others(&mut self, others: &[&Var], grads: &GradStore) -> Result<()> {
        for (&id, v) in self.others.iter().zip(others) {
            let mut p = host(v)?;
            self.frog.step_param(&self.cpu, id, &mut p, &host(grad(grads, v, "a plain parameter")?)?)?;
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
