//! [`Sample`]: one step's draw, and the batches built from it.

use crate::backend::Backend;
use crate::lowp::{Half, LowpBackend};
use crate::step::{Batch, LowpBatch};
use crate::view::ViewBatch;

/// One step's sample, as [`Optimizer::sample`](crate::Optimizer::sample) drew it: the increasing
/// indices of the rows to gather from the full batch (it derefs to them),
/// and the size of that batch. It builds every layer's batch
/// ([`Sample::batch`], [`Sample::lowp_batch`], [`Sample::view_batch`]), so
/// that the counts a step sees are the draw's rather than restated by
/// hand; the optimizer refuses a FROG step whose counts are not.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sample<'a> {
    pub(super) indices: &'a [usize],
    pub(super) batch_size: usize,
}

impl<'a> Sample<'a> {
    /// The drawn row indices, increasing.
    pub fn indices(&self) -> &'a [usize] {
        self.indices
    }

    /// Samples in the full batch the rows were drawn from.
    pub fn batch_size(&self) -> usize {
        self.batch_size
    }

    /// A layer's [`Batch`] of this sample: `x` and `y` hold the drawn rows,
    /// in this order.
    pub fn batch<'b, B: Backend>(&self, x: &'b B::Buffer, y: &'b B::Buffer) -> Batch<'b, B> {
        Batch { x, y, sample: self.indices.len(), batch_size: self.batch_size }
    }

    /// [`Sample::batch`] in the 16-bit type `H` (see [`LowpBatch::check_y`]).
    pub fn lowp_batch<'b, B: LowpBackend<H>, H: Half>(&self, x: &'b B::LowpBuffer, y: &'b B::LowpBuffer, check_y: bool) -> LowpBatch<'b, B, H> {
        LowpBatch { x, y, sample: self.indices.len(), batch_size: self.batch_size, check_y }
    }

    /// [`Sample::batch`] as views.
    pub fn view_batch<'b, B: Backend>(&self, x: B::View<'b>, y: B::View<'b>) -> ViewBatch<'b, B> {
        ViewBatch { x, y, sample: self.indices.len(), batch_size: self.batch_size }
    }
}

impl core::ops::Deref for Sample<'_> {
    type Target = [usize];
    fn deref(&self) -> &[usize] {
        self.indices
    }
}
