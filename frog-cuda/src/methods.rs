//! frog-core's optional backend traits for [`Cuda`]: the row guard
//! ([`GuardBackend`]), AdamW ([`AdamBackend`]) and K-FROG's kernels
//! ([`KfrogBackend`]).

use frog_core::{AdamBackend, AdamCoefs, AdamMoments, Guard, GuardBackend, KfrogBackend, Layer, Patches, RowGuardOut, Shape};

use crate::backend::{patch_scratch_entries, Geom};
use crate::buffer::Buffer;
use crate::device::Cuda;
use crate::error::Error;
use crate::kernels::K;
use crate::launch::{self, int, Arg};
use crate::precision::Packed;

impl GuardBackend for Cuda {
    fn row_guard(&self, shape: Shape, guard: Guard, m: &Buffer, trace: &Buffer, out: RowGuardOut<'_, Self>) -> Result<(), Error> {
        let (Shape { rows, cols }, RowGuardOut { z, row_scale, flags }) = (shape, out);
        let (r, c, n) = self.rows_cols(rows, cols)?;
        let (ma, za) = (self.ptr("m", m, n)?, self.ptr("z", z, n)?);
        let (ta, sa, fa) = (self.ptr("trace", trace, rows)?, self.ptr("row_scale", row_scale, rows)?, self.ptr("flags", flags, rows)?);
        let fix = |on: bool| Arg::I(i32::from(on));
        self.launch(K::RowGuard, launch::per_row(rows)?, &[r, c, fix(guard.nonfinite), fix(guard.dead_rows), ma, ta, za, sa, fa])
    }
}

impl AdamBackend for Cuda {
    fn adamw_update(&self, n: usize, c: &AdamCoefs<f32>, param: &mut Buffer, grad: &Buffer, moments: AdamMoments<'_, Self>) -> Result<(), Error> {
        let AdamMoments { m, v, vmax } = moments;
        let (pa, ga, ma, va) = (self.ptr("param", param, n)?, self.ptr("grad", grad, n)?, self.ptr("m", m, n)?, self.ptr("v", v, n)?);
        let vmaxa = match vmax {
            Some(b) => self.ptr("vmax", b, n)?,
            None => Arg::P(0),
        };
        let f = Arg::F;
        let args = [Arg::I(int("n", n)?), f(c.decay), f(c.one_minus_beta1), f(c.beta2), f(c.one_minus_beta2), f(c.step_size), f(c.bias_correction2_sqrt), f(c.eps), pa, ga, ma, va, vmaxa];
        self.launch(K::AdamwUpdate, launch::elementwise(n), &args)
    }
}

impl KfrogBackend for Cuda {
    fn y_sq_sums(&self, layer: &Layer, r: usize, y: &Buffer, scale: f32, out: &mut Buffer) -> Result<(), Error> {
        let (rows, per) = (layer.rows(), layer.output_len());
        let ya = self.ptr("y", y, r.saturating_mul(per))?;
        let oa = self.ptr("out", out, rows)?;
        let (row_stride, pos_stride) = layer.output_strides();
        let i = |what, v| int(what, v).map(Arg::I);
        let args = [i("rows", rows)?, i("r", r)?, i("positions", layer.positions())?, i("per", per)?, i("row stride", row_stride)?, i("position stride", pos_stride)?, Arg::F(scale), ya, oa];
        self.launch(K::YSqSums, launch::per_row(rows)?, &args)
    }

    fn y_average(&self, rows: usize, fresh: f32, y_diag: &Buffer, keep: f32, avg: &mut Buffer) -> Result<(), Error> {
        let (ya, aa) = (self.ptr("y_diag", y_diag, rows)?, self.ptr("avg", avg, rows)?);
        self.launch(K::YAverage, launch::elementwise(rows), &[Arg::I(int("rows", rows)?), Arg::F(fresh), ya, Arg::F(keep), aa])
    }

    fn patch_col_norms(&self, p: &Patches<'_, Self>, scale: f32, out: &mut Buffer) -> Result<(), Error> {
        let g = Geom::of(p)?;
        let xa = self.ptr("packed", p.packed, g.n * g.cols)?;
        let oa = self.ptr("out", out, g.cols)?;
        let k = match self.precision.packed() {
            Packed::F32 => K::PatchColNorms,
            Packed::Bf16 => K::PatchColNormsBf16,
            Packed::F16 => K::PatchColNormsF16,
        };
        self.launch(k, launch::per_row(g.cols)?, &[Arg::I(int("positions", g.n)?), Arg::I(int("cols", g.cols)?), Arg::F(scale), xa, oa])
    }

    /// Copies the gain the pack kernel left in the scratch's gain slot.
    fn patch_gain(&self, p: &Patches<'_, Self>, out: &mut Buffer) -> Result<(), Error> {
        let g = Geom::of(p)?;
        let gain = self.ptr("packed", p.packed, patch_scratch_entries(p.layer, p.r))?.offset(g.n * g.cols + 1);
        let oa = self.ptr("out", out, 1)?;
        let one = Arg::I(1);
        self.launch(K::CopyStrided, launch::elementwise(1), &[one, one, gain, one, Arg::I(0), oa, one, Arg::I(0)])
    }

    fn fill(&self, n: usize, value: f32, buf: &mut Buffer) -> Result<(), Error> {
        let ba = self.ptr("buf", buf, n)?;
        self.launch(K::Fill, launch::elementwise(n), &[Arg::I(int("n", n)?), Arg::F(value), ba])
    }
}
