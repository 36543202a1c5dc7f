//! Neural-network kernels for the training engine of frog-bench (feature
//! `nn`): plain functions over host slices, built on the same GEMM and
//! im2col as FROG. Their shapes and operand groups ([`BnShape`],
//! [`ConvShape`], [`BnParams`], ...) are generic over the buffer type, and
//! frog-cuda's `nn` kernels take the same ones over device buffers.
//!
//! Every kernel is generic over [`Real`](crate::gemm::Real) (f32 and f64)
//! and takes the sizes it works on explicitly; slices may be longer than
//! those sizes (only the prefix is used), so the engine can size its
//! buffers once for the largest batch. Lengths that are too short are the
//! caller's bug and panic, and so do sizes whose product overflows `usize`
//! (no slice can hold them): sizes are multiplied with checked arithmetic,
//! so a huge shape cannot pass a length check by wrapping around.

mod avgpool;
mod batchnorm;
mod bias;
mod conv;
mod gelu;
mod linear;
mod loss;
mod maxpool;
mod operands;
mod patches;
mod winograd;

pub use avgpool::{global_avg_pool, global_avg_pool_backward};
pub use batchnorm::{batch_norm_backward, batch_norm_eval, batch_norm_train};
pub use bias::{add_channel_bias, channel_bias_backward};
pub use conv::{conv2d_backward_data, conv2d_backward_weight, conv2d_forward, conv_scratch_len};
pub use gelu::{gelu, gelu_backward};
pub use linear::{linear_backward, linear_forward};
pub use loss::softmax_cross_entropy;
pub use maxpool::{max_pool2d, max_pool2d_backward};
pub use operands::{
    BnGrads, BnParams, BnRunning, BnSaved, BnShape, BnTrainStats, ConvShape, CrossEntropyLoss, Epilogue, LinearGrads, LinearShape, LossStats, PoolShape, Reduction,
};

/// The product of `dims`, the entries of a tensor of that shape.
///
/// # Panics
/// When the product overflows `usize`, naming `what`.
pub(crate) fn entries(what: &str, dims: &[usize]) -> usize {
    if dims.contains(&0) {
        return 0;
    }
    let product = dims.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d));
    product.unwrap_or_else(|| panic!("{what}: sizes {dims:?} overflow usize"))
}
