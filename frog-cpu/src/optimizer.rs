//! `Frog`: a convenience optimizer over registered layers on the CPU.

use frog_core::{plain_sgd_step, precondition_step, Batch, Config, Error, Layer, ParamState, Params, Sampler, ShapeError, Workspace, WorkspaceReq};

use crate::backend::{Cpu, CpuError};
use crate::gemm::Real;

/// FROG over a fixed list of preconditioned layers and plain-SGD
/// parameters, with one workspace sized for the largest of them, allocated
/// once in [`Frog::new`]: steps never allocate.
///
/// A training step draws the sample with [`Frog::sample`], keeps those
/// samples' inputs and output gradients in the forward and backward pass,
/// and calls [`Frog::step_layer`] for every layer and [`Frog::step_other`]
/// for every other parameter.
pub struct Frog<T: Real> {
    backend: Cpu<T>,
    config: Config,
    layers: Vec<Layer>,
    layer_states: Vec<ParamState<Cpu<T>>>,
    other_states: Vec<ParamState<Cpu<T>>>,
    workspace: Workspace<Cpu<T>>,
    sampler: Sampler,
    indices: Vec<usize>,
}

/// FROG's error on this backend.
pub type FrogError = Error<CpuError>;

impl<T: Real> Frog<T> {
    /// An optimizer for `layers` (preconditioned) and plain-SGD parameters
    /// of `other_lens` entries, for batches of at most `max_batch` samples;
    /// `seed` fixes the subsampling.
    pub fn new(backend: Cpu<T>, config: Config, layers: &[Layer], other_lens: &[usize], max_batch: usize, seed: u64) -> Result<Self, FrogError> {
        config.validate()?;
        if max_batch == 0 {
            return Err(ShapeError::EmptySample.into());
        }
        let r = config.sample_rows(max_batch);
        let mut req = WorkspaceReq::default();
        let mut layer_states = Vec::with_capacity(layers.len());
        for layer in layers {
            layer.validate()?;
            req = req.union(WorkspaceReq::new(&backend, layer, r));
            layer_states.push(ParamState::for_layer(&backend, layer, &config).map_err(Error::Backend)?);
        }
        let other_states = other_lens
            .iter()
            .map(|&len| ParamState::new(&backend, len, config.momentum > 0.0))
            .collect::<Result<_, _>>()
            .map_err(Error::Backend)?;
        let workspace = Workspace::new(&backend, req).map_err(Error::Backend)?;
        Ok(Self {
            backend,
            config,
            layers: layers.to_vec(),
            layer_states,
            other_states,
            workspace,
            sampler: Sampler::new(seed),
            indices: vec![0; max_batch],
        })
    }

    /// The hyperparameters.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Sets the learning rate (for a schedule).
    pub fn set_lr(&mut self, lr: f64) -> Result<(), FrogError> {
        let mut c = self.config;
        c.lr = lr;
        c.validate()?;
        self.config = c;
        Ok(())
    }

    /// The backend.
    pub fn backend(&self) -> &Cpu<T> {
        &self.backend
    }

    /// Draws this step's sample of a batch of `batch` samples: increasing
    /// indices, all of them when `sample_size` is none or at least `batch`.
    pub fn sample(&mut self, batch: usize) -> Result<&[usize], FrogError> {
        if batch > self.indices.len() {
            return Err(ShapeError::SampleExceedsBatch { sample: batch, batch: self.indices.len() }.into());
        }
        Ok(self.sampler.sample(batch, self.config.sample_size, &mut self.indices)?)
    }

    fn index<S>(list: &[S], i: usize) -> Result<&S, FrogError> {
        list.get(i).ok_or_else(|| ShapeError::BufferLength { what: "layer index", expected: list.len(), actual: i }.into())
    }

    /// One FROG step of registered layer `i`.
    pub fn step_layer(&mut self, i: usize, params: Params<'_, Cpu<T>>, batch: Batch<'_, Cpu<T>>) -> Result<(), FrogError> {
        let layer = *Self::index(&self.layers, i)?;
        let state = &mut self.layer_states[i];
        precondition_step(&self.backend, &self.config, &layer, state, &mut self.workspace, params, batch)
    }

    /// One plain-SGD step of registered parameter `i`.
    pub fn step_other(&mut self, i: usize, param: &mut Vec<T>, grad: &Vec<T>) -> Result<(), FrogError> {
        Self::index(&self.other_states, i)?;
        plain_sgd_step(&self.backend, &self.config, &mut self.other_states[i], param, grad)
    }

    /// The workspace (the last step's trace, direction and row scale).
    pub fn workspace(&self) -> &Workspace<Cpu<T>> {
        &self.workspace
    }

    /// The state of registered layer `i`, for checkpoints
    /// (`ParamState::export` / `restore`).
    pub fn layer_state_mut(&mut self, i: usize) -> Option<&mut ParamState<Cpu<T>>> {
        self.layer_states.get_mut(i)
    }

    /// The state of plain-SGD parameter `i`, for checkpoints.
    pub fn other_state_mut(&mut self, i: usize) -> Option<&mut ParamState<Cpu<T>>> {
        self.other_states.get_mut(i)
    }
}
