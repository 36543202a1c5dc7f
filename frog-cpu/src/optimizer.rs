//! `Frog`: frog-core's optimizer object on the CPU backend.

use frog_core::{Error, Optimizer};

use crate::backend::{Cpu, CpuError};

/// Parameters a [`Frog`] registers at most (a ResNet-50 has 161).
pub const FROG_CAPACITY: usize = 256;

/// [`frog_core::Optimizer`] on [`Cpu<T>`]: FROG, SGD and the plain-SGD
/// path over registered layers and parameters in groups, with one
/// workspace sized for the largest layer; steps never allocate.
pub type Frog<T> = Optimizer<Cpu<T>, FROG_CAPACITY>;

/// FROG's error on this backend.
pub type FrogError = Error<CpuError>;
