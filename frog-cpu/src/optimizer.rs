//! `Frog`: a convenience optimizer over registered layers on the CPU.

use frog_core::{guarded_step, plain_sgd_step, precondition_step, Batch, Config, Diagnostics, Error, Guard, Layer, ParamState, Params, Sampler, ShapeError, Workspace, WorkspaceReq};

use crate::backend::{zeroed_vec, Cpu, CpuError};
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
    /// The sample's indices: as many as a sample of the largest batch has.
    indices: Vec<usize>,
    max_batch: usize,
    /// The opt-in guard; `None` steps exactly as the original.
    guard: Option<Guard>,
}

/// FROG's error on this backend.
pub type FrogError = Error<CpuError>;

impl<T: Real> Frog<T> {
    /// An optimizer for `layers` (preconditioned) and plain-SGD parameters
    /// of `other_lens` entries, for batches of at most `max_batch` samples;
    /// `seed` fixes the subsampling.
    ///
    /// Errors: a config [`Config::validate_for`] rejects, `max_batch = 0`,
    /// an invalid layer or one too large to index, and memory that cannot
    /// be allocated (an `OutOfMemory` error, never an abort).
    pub fn new(backend: Cpu<T>, config: Config, layers: &[Layer], other_lens: &[usize], max_batch: usize, seed: u64) -> Result<Self, FrogError> {
        config.validate_for::<T>()?;
        if max_batch == 0 {
            return Err(ShapeError::EmptySample.into());
        }
        let r = config.sample_rows(max_batch);
        let mut req = WorkspaceReq::default();
        let mut layer_states = Vec::with_capacity(layers.len());
        for layer in layers {
            req = req.union(WorkspaceReq::new(&backend, layer, r)?);
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
            // SAFETY: all-zero bytes are the usize 0.
            indices: unsafe { zeroed_vec::<usize>(r) }.map_err(Error::Backend)?,
            max_batch,
            guard: None,
        })
    }

    /// Turns the opt-in guard on (see [`frog_core::guarded_step`]): every
    /// layer step then records its diagnostics, read with
    /// [`Frog::diagnostics`], and replaces the rows `guard` names. `None`
    /// turns it off again (steps are then exactly the original's).
    pub fn set_guard(&mut self, guard: Option<Guard>) -> Result<(), FrogError> {
        if guard.is_some() {
            for (state, layer) in self.layer_states.iter_mut().zip(&self.layers) {
                state.enable_diagnostics(&self.backend, layer)?;
            }
        }
        self.guard = guard;
        Ok(())
    }

    /// The diagnostics of registered layer `i`'s last guarded step (`None`
    /// before one).
    pub fn diagnostics(&self, i: usize) -> Result<Option<Diagnostics>, FrogError> {
        Self::index(&self.layer_states, i, "layer index")?.diagnostics(&self.backend)
    }

    /// The hyperparameters.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Sets the learning rate (for a schedule); a rate the config rejects
    /// (see [`Config::validate_for`]) is an error and changes nothing.
    pub fn set_lr(&mut self, lr: f64) -> Result<(), FrogError> {
        let mut c = self.config;
        c.lr = lr;
        c.validate_for::<T>()?;
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
        if batch > self.max_batch {
            return Err(ShapeError::BatchExceedsMax { batch, max: self.max_batch }.into());
        }
        Ok(self.sampler.sample(batch, self.config.sample_size, &mut self.indices)?)
    }

    fn index<'a, S>(list: &'a [S], i: usize, what: &'static str) -> Result<&'a S, FrogError> {
        list.get(i).ok_or_else(|| ShapeError::IndexOutOfRange { what, index: i, len: list.len() }.into())
    }

    /// One FROG step of registered layer `i` (guarded when
    /// [`Frog::set_guard`] turned the guard on).
    pub fn step_layer(&mut self, i: usize, params: Params<'_, Cpu<T>>, batch: Batch<'_, Cpu<T>>) -> Result<(), FrogError> {
        let layer = *Self::index(&self.layers, i, "layer index")?;
        let state = &mut self.layer_states[i];
        match self.guard {
            None => precondition_step(&self.backend, &self.config, &layer, state, &mut self.workspace, params, batch),
            Some(g) => guarded_step(&self.backend, &self.config, g, &layer, state, &mut self.workspace, params, batch),
        }
    }

    /// One plain-SGD step of registered parameter `i`.
    pub fn step_other(&mut self, i: usize, param: &mut Vec<T>, grad: &Vec<T>) -> Result<(), FrogError> {
        Self::index(&self.other_states, i, "parameter index")?;
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
