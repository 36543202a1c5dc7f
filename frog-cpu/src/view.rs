//! Views on the host are slices: every step that takes views
//! ([`frog_core::frog_step`] on [`frog_core::ViewParams`], the optimizer's
//! steps on views) takes `&[T]` and `&mut [T]`, parts of any allocation the
//! caller owns, and a step on buffers takes slices of its `Vec`s, which
//! cost nothing.

use crate::backend::{Cpu, CpuError};
use crate::gemm::Real;

impl<T: Real> Cpu<T> {
    /// `buf[offset..offset + len]`, or the error naming `op` when it is not
    /// all in `buf`: [`frog_core::Backend::view`] and `view_mut`.
    pub(crate) fn part(op: &'static str, have: usize, offset: usize, len: usize) -> Result<std::ops::Range<usize>, CpuError> {
        let end = offset.checked_add(len).filter(|&end| end <= have);
        end.map(|end| offset..end).ok_or(CpuError::Length { op, needed: offset.saturating_add(len), len: have })
    }
}
