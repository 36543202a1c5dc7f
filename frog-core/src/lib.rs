//! FROG (Fisher ROw-wise preconditioninG), the algorithm, once.
//!
//! For every output row of a weight matrix FROG solves a small damped,
//! trace-normalized empirical-Fisher system with a few conjugate-gradient
//! iterations, estimated from a random subset of the batch, and takes a
//! scale-free step. This crate holds the whole rule (momentum, the trace,
//! the Fisher weights, batched CG, the row scale, decoupled decay, the
//! damping schedule, and the plain-SGD path for every other parameter),
//! generic over a [`Backend`] that supplies buffers and a few kernels.
//! Every step also takes views of the caller's own arrays (parts of a
//! framework's storage, [`Backend::View`]) instead of backend buffers.
//!
//! Past one device, [`Optimizer::distributed`] gives the same optimizer
//! object's steps on one rank of a data-parallel run, its state sharded by
//! owner, over a communicator that implements [`Collective`] (frog-cpu's
//! MPI one, or [`Solo`] in one process).
//!
//! The crate is `#![no_std]` and never allocates: every buffer a step needs,
//! the backend's patch and product scratch included, is sized up front by
//! [`WorkspaceReq`] and allocated once, by the caller, on its backend;
//! steps only launch backend kernels, so per-row scalars
//! (traces, CG `alpha`/`beta`, row scales) never leave the device.
//!
//! # Example
//!
//! One FROG step of a linear layer on frog-cpu's backend, through the
//! lowest level, [`frog_step`]: the state and the workspace are built once,
//! then every step hands over the parameters, their gradients and the
//! sampled rows of the layer's inputs and output gradients. (The
//! [`Optimizer`] object draws the sample and keeps the states of many
//! layers; frog-cpu's `host::HostFrog` does it all on host slices.)
//!
//! ```
//! use frog_core::{frog_step, Batch, Config, Layer, ParamState, Params, Unguarded, Workspace, WorkspaceReq};
//! use frog_cpu::Cpu;
//!
//! let cpu = Cpu::<f64>::with_threads(1)?;
//! let layer = Layer::linear(4, 3, true); // 4 inputs -> 3 outputs, with a bias
//! let cfg = Config { lr: 0.01, momentum: 0.9, ..Config::default() };
//! let mut state = ParamState::new(&cpu, layer.rows() * layer.cols(), true)?;
//! let mut ws = Workspace::new(&cpu, WorkspaceReq::new(&cpu, &layer, 2)?)?;
//!
//! let (mut w, grad_w, mut b, grad_b) = (vec![0.1; 12], vec![0.02; 12], vec![0.0; 3], vec![0.01; 3]);
//! let (x, y) = (vec![0.5, -1.0, 2.0, 0.25, 1.0, 0.0, -0.5, 1.5], vec![0.1, -0.2, 0.3, 0.05, 0.0, -0.1]);
//! let params = Params { weight: &mut w, grad_weight: &grad_w, bias: Some((&mut b, &grad_b)) };
//! let batch = Batch { x: &x, y: &y, sample: 2, batch_size: 8 }; // 2 sampled rows of a batch of 8
//! frog_step(&cpu, &cfg, &layer, &mut state, &mut ws, params, batch, Unguarded)?;
//! assert!(w.iter().chain(&b).all(|v| v.is_finite()) && w != vec![0.1; 12]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod adamw;
mod backend;
mod checkpoint;
mod collective;
mod config;
mod error;
mod guard;
mod kfrog;
mod layer;
mod lowp;
mod method;
mod muon;
mod optimizer;
mod rescale;
mod sampler;
mod scalar;
mod sgd;
mod state;
mod step;
mod view;
mod workspace;

pub use adamw::{adamw_step, AdamBackend, AdamCoefs, AdamMoments, AdamState, AdamWConfig};
pub use backend::{Backend, BackendError, BackendErrorKind, CgBuffers, FisherCoefs, FisherOut, Patches, Shape, StepCoefs, Strided};
pub use checkpoint::CHECKPOINT_VERSION;
pub use collective::{assign_owners, Collective, CollectiveError, HostCollective, HostOp, Solo, MAX_AGREE};
pub use config::{Config, ConfigError, NonExhaustive, MAX_NUM_ITERS, UPDATE_MARGIN};
pub use error::{Error, ErrorKind, ShapeError};
pub use kfrog::{kfrog_step, KfrogBackend, KfrogBatch, KfrogConfig, KfrogOutputs, KfrogState, KFROG_CG_DENOM_EPS};
pub use guard::{Diagnostics, Guard, GuardBackend, RowGuardOut, ROW_DEAD, ROW_NONFINITE, ROW_REPLACED};
pub use layer::{Axes, Conv2d, Layer, LayerKind, PATCH_PADDING};
pub use lowp::{Half, LowpBackend};
pub use method::Method;
pub use muon::{muon_step, newton_schulz, MatmulBackend, MatmulOp, MuonConfig, MuonForm, MuonScratch, MuonShape, MuonState, NormScale, NsScratch, MUON_NS_COEFS, MUON_NS_EPS};
pub use optimizer::{Distributed, Entry, GroupId, KfrogShardRows, IntoMethod, Optimizer, ParamId, ParamKind, ParamName, RegistryError, Sample, Shard, ShardRows, MAX_GROUPS, NAME_LEN};
pub use rescale::{pow2_gain, square_safe_max};
pub use sampler::{Sampler, MAX_BATCH};
pub use scalar::Scalar;
pub use sgd::{plain_sgd_step, sgd_step, Operands, ParamGrad, SgdConfig, ViewParamGrad};
pub use state::{ParamState, StateError, STATE_VERSION};
pub use step::{frog_step, gather_rows, Batch, GatherSource, Inputs, LowpBatch, Params, StepGuard, Unguarded, ViewSource, Weights};
pub use view::{ViewBatch, ViewParams};
/// The `half` crate whose [`half::bf16`] and [`half::f16`] the low-precision steps take.
pub use half;
pub use workspace::{Workspace, WorkspaceReq};
