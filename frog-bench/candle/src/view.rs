//! Views on candle: a step's parameters, gradients, sampled inputs and
//! output gradients as the caller's own tensors ([`frog_core::Backend::View`]).
//!
//! A read-only view is a 1-D tensor of exactly the entries it shows: a
//! `narrow` of a buffer, or a candle user's tensor flattened (no copy when
//! it is contiguous). A writable view also knows where its writes go: a
//! range of a backend buffer, a caller's tensor (replaced), or a caller's
//! [`Var`] (set in place). Both are made from a user's tensors by
//! [`CandleBackend::tensor_view`], [`CandleBackend::tensor_view_mut`] and
//! [`CandleBackend::var_view`], which check dtype and device as
//! [`CandleBackend::buffer`] does.

use std::marker::PhantomData;

use candle_core::{Tensor, Var, WithDType};
use frog_core::Scalar;

use crate::backend::{CandleBackend, Res, TensorBuf};

/// A read-only view: a 1-D tensor of exactly its entries, detached from any
/// graph. The lifetime is the borrow of the buffer or tensor it shows, so
/// that a step cannot outlive what it was handed.
#[derive(Clone, Debug)]
pub struct TensorView<'a> {
    tensor: Tensor,
    _borrow: PhantomData<&'a ()>,
}

impl TensorView<'_> {
    /// A view of exactly `tensor`'s entries (1-D, detached).
    pub(crate) fn new(tensor: Tensor) -> Self {
        Self { tensor, _borrow: PhantomData }
    }

    /// The entries, 1-D.
    pub fn tensor(&self) -> &Tensor {
        &self.tensor
    }
}

/// A writable view: the current entries, 1-D, and where a write puts them.
#[derive(Debug)]
pub struct TensorViewMut<'a> {
    /// What the step reads: the entries as of the last write (kept here
    /// because [`frog_core::Backend::reborrow`] cannot fail, and a user tensor's
    /// flattening can).
    flat: Tensor,
    dst: Dst<'a>,
}

/// Where a [`TensorViewMut`]'s writes go.
#[derive(Debug)]
enum Dst<'a> {
    /// Entries `offset..offset + len` of a backend buffer.
    Buffer { buf: &'a mut TensorBuf, offset: usize },
    /// A caller's tensor, replaced by a new one of its shape.
    Tensor(&'a mut Tensor),
    /// A caller's variable, set in place.
    Var(&'a Var),
}

impl<'a> TensorViewMut<'a> {
    /// Entries `offset..` of `buf`, which hold `flat` (checked by the caller).
    pub(crate) fn of_buffer(flat: Tensor, buf: &'a mut TensorBuf, offset: usize) -> Self {
        Self { flat, dst: Dst::Buffer { buf, offset } }
    }

    /// The entries, 1-D.
    pub fn tensor(&self) -> &Tensor {
        &self.flat
    }

    /// Writes `v`'s entries over the view's first ones (the rest keep
    /// theirs; the caller checked that `v` fits), then hands the view's new
    /// entries to its destination.
    pub(crate) fn write<T: Scalar + WithDType>(&mut self, backend: &CandleBackend<T>, op: &'static str, v: &Tensor) -> Res {
        let v = v.flatten_all()?.detach();
        let flat = if v.elem_count() == self.flat.elem_count() { v } else { self.flat.slice_scatter0(&v, 0)? };
        match &mut self.dst {
            Dst::Buffer { buf, offset } => backend.store(op, buf, *offset, &flat)?,
            Dst::Tensor(t) => **t = flat.reshape(t.shape())?,
            Dst::Var(var) => var.set(&flat.reshape(var.shape())?)?,
        }
        self.flat = flat;
        Ok(())
    }
}

impl<T: Scalar + WithDType> CandleBackend<T> {
    /// A read-only view of a framework tensor `t` (any shape, row-major):
    /// a weight's gradient, a layer's sampled input or output gradient. No
    /// copy when `t` is contiguous; a tensor of another dtype or device is
    /// an error.
    pub fn tensor_view<'a>(&self, t: &'a Tensor) -> Res<TensorView<'a>> {
        Ok(TensorView::new(self.flat(t)?))
    }

    /// A writable view of a parameter held as a plain tensor `t` (any
    /// shape): a step replaces `*t` by a new detached tensor of the same
    /// shape and dtype, so clones of the old tensor keep the old values.
    /// For a [`Var`], use [`CandleBackend::var_view`].
    pub fn tensor_view_mut<'a>(&self, t: &'a mut Tensor) -> Res<TensorViewMut<'a>> {
        Ok(TensorViewMut { flat: self.flat(t)?, dst: Dst::Tensor(t) })
    }

    /// A writable view of a parameter `Var` (any shape): a step writes its
    /// new values into the variable's storage ([`Var::set`]), so the model
    /// and every clone of the `Var` see them.
    pub fn var_view<'a>(&self, var: &'a Var) -> Res<TensorViewMut<'a>> {
        Ok(TensorViewMut { flat: self.flat(var.as_tensor())?, dst: Dst::Var(var) })
    }
}
