//! [`Taps`]: what FROG needs from a forward pass that burn's autodiff does
//! not keep.
//!
//! FROG preconditions a layer's step with the layer's input and the
//! gradient of the loss with respect to its output. Burn retains the
//! gradients of leaf tensors marked `require_grad` only, so a tapped layer
//! adds a zero leaf of its output's shape to its output: the sum is the
//! output unchanged, and the leaf's gradient is `dL/d(output)`. The input
//! is recorded without its autodiff association (FROG only reads it).

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use burn::module::ParamId;
use burn::nn::conv::Conv2d;
use burn::nn::Linear;
use burn::tensor::Tensor;

/// What one tapped layer recorded in the last forward pass.
#[derive(Clone)]
pub(crate) struct Record {
    /// The input as `[batch, entries per sample]`, without autodiff.
    pub(crate) input: Tensor<2>,
    /// The zero leaf added to the output, `[batch, entries per sample]`
    /// (the output's row-major order): its gradient is the output's.
    pub(crate) output: Tensor<2>,
    /// The input's shape: a convolution's `[H, W]` and a linear layer's
    /// tokens per sample come from it.
    pub(crate) input_dims: Vec<usize>,
}

/// The handle a model's forward pass records its preconditioned layers
/// through, shared with the [`crate::FrogOptimizer`] that reads it (clones
/// share the records). Keep one in the model as a `#[module(skip)]` field,
/// or pass it to the forward function.
///
/// Layers are known by their weight's [`ParamId`], which burn keeps
/// across the optimizer's updates. On a device without autodiff (an
/// evaluation pass) a tap runs the layer alone and records nothing.
#[derive(Clone, Default)]
pub struct Taps(Arc<Mutex<HashMap<ParamId, Record>>>);

impl fmt::Debug for Taps {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Taps({} recorded)", self.lock().len())
    }
}

impl Taps {
    /// A handle with nothing recorded.
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs `layer` on `x` (any rank: `[batch, .., d_in]`), tapped.
    pub fn linear<const D: usize>(&self, layer: &Linear, x: Tensor<D>) -> Tensor<D> {
        self.apply(layer.weight.id, x, |x| layer.forward(x))
    }

    /// Runs `layer` on `x` (`[batch, c_in, H, W]`), tapped.
    pub fn conv2d(&self, layer: &Conv2d, x: Tensor<4>) -> Tensor<4> {
        self.apply(layer.weight.id, x, |x| layer.forward(x))
    }

    /// Runs `f` on `x` tapped as the layer whose weight is `weight`: for a
    /// registered [`Linear`] or [`Conv2d`] whose forward pass is computed
    /// by other code than its own `forward` (the same geometry, on other
    /// tensors). The last call before a step is the one the step uses.
    pub fn apply<const D: usize, const E: usize>(&self, weight: ParamId, x: Tensor<D>, f: impl FnOnce(Tensor<D>) -> Tensor<E>) -> Tensor<E> {
        let input_dims = x.dims().to_vec();
        let input = x.clone().without_autodiff();
        let y = f(x);
        if !y.is_autodiff() {
            return y;
        }
        let dims = y.dims();
        let batch = dims.first().copied().unwrap_or(1);
        let per = dims.iter().skip(1).product::<usize>();
        // A fresh leaf (detach: creation and cast keep no lineage to
        // backpropagate through, but `require_grad` needs a leaf).
        let zero = Tensor::<2>::zeros([batch, per], &y.device()).cast(y.dtype()).detach().require_grad();
        let y = y + zero.clone().reshape(dims);
        let input = input.reshape([input_dims.first().copied().unwrap_or(1), input_dims.iter().skip(1).product::<usize>()]);
        self.lock().insert(weight, Record { input, output: zero, input_dims });
        y
    }

    pub(crate) fn get(&self, weight: ParamId) -> Option<Record> {
        self.lock().get(&weight).cloned()
    }

    pub(crate) fn clear(&self) {
        self.lock().clear();
    }

    /// A poisoned lock held only whole records, which a panic elsewhere
    /// cannot leave half-written: take it.
    fn lock(&self) -> MutexGuard<'_, HashMap<ParamId, Record>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}
