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
//! The crate is `#![no_std]` and never allocates: every buffer a step needs,
//! the backend's patch and product scratch included, is sized up front by
//! [`WorkspaceReq`] and allocated once, by the caller, on its backend;
//! steps only launch backend kernels, so per-row scalars
//! (traces, CG `alpha`/`beta`, row scales) never leave the device.
#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod adamw;
mod backend;
mod checkpoint;
mod config;
mod error;
mod guard;
mod kfrog;
mod layer;
mod lowp;
mod method;
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
pub use config::{Config, ConfigError, NonExhaustive, MAX_NUM_ITERS, UPDATE_MARGIN};
pub use error::{Error, ErrorKind, ShapeError};
pub use kfrog::{kfrog_step, KfrogBackend, KfrogBatch, KfrogConfig, KfrogOutputs, KfrogState, KFROG_CG_DENOM_EPS};
pub use guard::{Diagnostics, Guard, GuardBackend, RowGuardOut, ROW_DEAD, ROW_NONFINITE, ROW_REPLACED};
pub use layer::{Axes, Conv2d, Layer, LayerKind, PATCH_PADDING};
pub use lowp::{Half, LowpBackend};
pub use method::Method;
pub use optimizer::{GroupId, IntoMethod, Optimizer, ParamId, ParamKind, ParamName, RegistryError, Sample, MAX_GROUPS, NAME_LEN};
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
