//! Views on the host are slices: every step that takes views
//! ([`frog_core::frog_step`] on [`frog_core::ViewParams`], the optimizer's `_view` steps)
//! takes `&[T]` and `&mut [T]`, parts of any allocation the caller owns.

use frog_core::{Layer, Patches, Strided, ViewBackend};

use crate::backend::{Cpu, CpuError};
use crate::gemm::Real;

impl<T: Real> ViewBackend for Cpu<T> {
    type View<'a> = &'a [T];
    type ViewMut<'a> = &'a mut [T];

    fn view<'a>(&self, buf: &'a Vec<T>, offset: usize, len: usize) -> Result<&'a [T], CpuError> {
        let end = offset.checked_add(len).filter(|&end| end <= buf.len());
        end.map(|end| &buf[offset..end]).ok_or(CpuError::Length { op: "view", needed: offset.saturating_add(len), len: buf.len() })
    }

    fn view_mut<'a>(&self, buf: &'a mut Vec<T>, offset: usize, len: usize) -> Result<&'a mut [T], CpuError> {
        let have = buf.len();
        let end = offset.checked_add(len).filter(|&end| end <= have);
        end.map(|end| &mut buf[offset..end]).ok_or(CpuError::Length { op: "view_mut", needed: offset.saturating_add(len), len: have })
    }

    fn reborrow<'b>(&self, v: &'b &mut [T]) -> &'b [T] {
        v
    }

    fn view_len(&self, v: &&[T]) -> usize {
        v.len()
    }

    fn view_mut_len(&self, v: &&mut [T]) -> usize {
        v.len()
    }

    fn copy_from_view(&self, rows: usize, cols: usize, src: &&[T], src_at: Strided, dst: &mut Vec<T>, dst_at: Strided) -> Result<(), CpuError> {
        self.copy_strided_slices(rows, cols, src, src_at, dst, dst_at)
    }

    fn axpby_view(&self, n: usize, a: T, x: &&[T], b: T, y: &mut &mut [T]) -> Result<(), CpuError> {
        self.axpby_slices(n, a, x, b, y)
    }

    fn row_step_view(&self, rows: usize, cols: usize, w: &mut &mut [T], decay: T, lr: T, scale: &Vec<T>, z: &Vec<T>, z_at: Strided) -> Result<(), CpuError> {
        self.row_step_slice(rows, cols, w, decay, lr, scale, z, z_at)
    }

    fn pack_patches_view(&self, layer: &Layer, r: usize, x: &&[T], packed: &mut Vec<T>) -> Result<(), CpuError> {
        self.pack_from(layer, r, x, packed)
    }

    fn patch_sq_norms_view(&self, p: &Patches<'_, Self>, x: &&[T], norms: &mut Vec<T>) -> Result<(), CpuError> {
        self.sq_norms_from(p, x, norms)
    }

    fn fisher_weights_view(&self, p: &Patches<'_, Self>, y: &&[T], norms: &Vec<T>, scale: T, eps: T, trace: &mut Vec<T>, lambda: &mut Vec<T>) -> Result<(), CpuError> {
        self.fisher_weights_from(p, y, norms, scale, eps, trace, lambda)
    }
}
