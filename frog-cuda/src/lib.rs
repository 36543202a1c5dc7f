//! FROG's CUDA backend.
//!
//! [`Cuda`] implements frog-core's [`frog_core::Backend`] in `f32` on one
//! device: kernels written in CUDA C (`kernels/*.cu`), compiled to PTX ISA
//! 7.8 by a pinned NVRTC 11.8 (`scripts/gen-ptx.py`; drivers for CUDA 11.8
//! and newer load it, on compute capability 8.0 and newer), committed,
//! embedded, loaded once per backend and launched on one stream. A whole
//! optimizer step is launches only. The two patch products of the Fisher
//! matvec run as tiled GEMMs over an im2col copy of the sampled inputs with
//! the Fisher weights fused into the first product's epilogue, in f32
//! ([`Precision::Exact`]), in 3xTF32 on tensor cores with f32 accuracy
//! ([`Precision::Split`]) or in TF32 ([`Precision::Fast`]), on 64 or 128
//! square tiles ([`Tile`]) picked per problem.
//!
//! Muon (frog-core's `MatmulBackend`) runs its Newton-Schulz products on
//! the same GEMM, in f32 or, as the references run it on a GPU, in
//! bfloat16 ([`MuonPrecision`], chosen apart from the patch products').
//!
//! Steps also take borrowed views ([`CudaView`], [`CudaViewMut`]: parts of
//! buffers, or a framework's device memory in the same context), the
//! backend's [`frog_core::Backend::View`]: the kernels of the caller's data
//! take views only, and a step on buffers makes views of them first.
//!
//! [`Nccl`] runs frog-core's collectives (`Collective<Cuda>`) over NCCL,
//! opened at run time as the driver is (`$FROG_NCCL_LIB`, else
//! `libnccl.so.2`), bootstrapped over any host communicator (MPI's in a
//! data-parallel program): the crate links neither NCCL nor MPI.
//!
//! `nn` (feature `nn`, off by default) holds the training engine's kernels
//! (convolutions as im2col + GEMM, BatchNorm with fused residual and ReLU,
//! pooling, linear layers, cross-entropy) as plain functions over the same
//! buffers. They take frog-cpu's shapes and operand groups
//! (`frog_cpu::nn::BnShape` and the rest, re-exported), so the feature adds
//! a dependency on frog-cpu with its own `nn` feature; the backend alone
//! needs neither.
//!
//! Every failure is an [`Error`] value: no device (or a driver or GPU older
//! than the PTX needs), a module the driver would not load (with the JIT
//! log), out of memory, a launch failure, a buffer of another backend, a
//! size beyond 32-bit indexing.
//!
//! GPU tests and checks start the backend with [`Cuda::for_check`]: on a
//! machine that cannot run the kernels they print that they were skipped,
//! unless `FROG_REQUIRE_GPU=1` ([`gpu_required`]) makes that an error.
#![warn(missing_docs)]
// Every unsafe operation sits in its own block with the proof that it is
// sound, also inside `unsafe fn` bodies.
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]

mod backend;
mod buffer;
mod device;
mod driver;
mod error;
mod gemm;
mod graph;
mod im2col;
pub mod kernels;
pub mod launch;
mod lowp;
mod methods;
mod muon;
mod nccl;
#[cfg(feature = "nn")]
pub mod nn;
mod precision;
mod skip;
mod view;

pub use buffer::Buffer;
pub use device::Cuda;
pub use gemm::Order;
pub use graph::Graph;
pub use precision::{MuonPrecision, Precision};
pub use error::{code_name, Error};
pub use launch::Tile;
pub use lowp::HalfBuffer;
pub use nccl::{nccl_library, nccl_version, Nccl, NcclError, NCCL_DEFAULT_LIB, NCCL_LIB_ENV};
pub use skip::{gpu_required, skip, REQUIRE_GPU};
pub use view::{CudaView, CudaViewMut};
