//! frog-core's [`Backend`] for [`Cuda`]: the sizes of a step's patch
//! products ([`Geom`]), the patch scratch, packing, the Fisher weights and
//! the vector and row kernels of a step.

use std::ffi::c_void;

use cust::memory::DeviceBuffer;
use cust::sys as cu;
#[cfg(doc)]
use frog_core::KfrogBackend;
use frog_core::{Backend, CgBuffers, FisherCoefs, FisherOut, Layer, LayerKind, Patches, Shape, StepCoefs, Strided};

use crate::buffer::Buffer;
use crate::device::Cuda;
use crate::error::Error;
use crate::kernels::K;
use crate::launch::{self, int, Arg};
use crate::precision::Packed;
use crate::view::{CudaView, CudaViewMut};

/// Sizes of one step's patch products.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Geom {
    /// Rows `R`.
    pub rows: usize,
    /// Columns `D'`.
    pub cols: usize,
    /// Positions `N = r*L`.
    pub n: usize,
    /// Positions per sample `L`.
    pub l: usize,
}

impl Geom {
    pub(crate) fn new(layer: &Layer, r: usize) -> Result<Self, Error> {
        let (rows, cols, l) = (layer.rows(), layer.cols(), layer.positions());
        let n = r.checked_mul(l).ok_or(Error::TooLarge { what: "positions", value: usize::MAX })?;
        let g = Self { rows, cols, n, l };
        for (what, v) in [
            ("positions", n),
            ("patch entries", n.saturating_mul(cols)),
            ("Fisher weights", n.saturating_mul(rows)),
            ("rows*cols", rows.saturating_mul(cols)),
        ] {
            int(what, v)?;
        }
        Ok(g)
    }

    pub(crate) fn of(p: &Patches<'_, Cuda>) -> Result<Self, Error> {
        Self::new(p.layer, p.r)
    }
}

/// f32 words of the patch gain slot: the largest `|x|` of the sampled
/// inputs, then the gain `c` the patches were packed with (`kernels/frog.cu`).
const GAIN_SLOT: usize = 2;

/// Entries of the patch scratch: the im2col matrix `[r*L, D']` (f32 words
/// enough for it in every packed type), then the gain slot at word
/// `r*L*D'` (kept in f32 whatever the packed type).
pub(crate) fn patch_scratch_entries(layer: &Layer, r: usize) -> usize {
    r.saturating_mul(layer.positions()).saturating_mul(layer.cols()).saturating_add(GAIN_SLOT)
}

impl Cuda {
    /// Packs the patches of `x` (checked by the caller) with the kernels
    /// `(abs_max, conv, linear)` of its element type and the packed one:
    /// the largest `|x|` into the gain slot (zeroed first), then the
    /// patches times its gain (frog-core's rescale of huge inputs), which
    /// the pack kernel also leaves in the slot for [`KfrogBackend::patch_gain`].
    pub(crate) fn pack_with(&self, layer: &Layer, r: usize, xa: Arg, (max_k, conv_k, rows_k): (K, K, K), packed: &mut Buffer) -> Result<(), Error> {
        let g = Geom::new(layer, r)?;
        let pa = self.ptr("packed", packed, patch_scratch_entries(layer, r))?;
        let slot = pa.offset(g.n * g.cols);
        let i = |what, v| int(what, v).map(Arg::I);
        let x_len = r.saturating_mul(layer.input_len());
        self.fill_zero("patch gain slot", slot, 1)?;
        self.launch(max_k, launch::elementwise(x_len), &[i("x entries", x_len)?, xa, slot])?;
        let grid = launch::elementwise(g.n * g.cols);
        match layer.kind {
            LayerKind::Conv2d(c) => crate::im2col::im2col(self, conv_k, crate::im2col::PatchRows { conv: &c, samples: r, cols: g.cols }, xa, pa, slot),
            LayerKind::Linear { d_in, .. } => self.launch(rows_k, grid, &[i("positions", g.n)?, i("d_in", d_in)?, i("cols", g.cols)?, xa, pa, slot]),
            // A kind added to frog-core after these kernels.
            _ => Err(Error::Kernel { name: "pack_patches", problem: "no kernel packs this layer kind" }),
        }
    }

    /// The Fisher weights from `y` (checked by the caller) with the kernel
    /// `k` of its element type.
    pub(crate) fn fisher_with(&self, p: &Patches<'_, Self>, (k, ya): (K, Arg), norms: &Buffer, c: FisherCoefs<f32>, out: FisherOut<'_, Self>) -> Result<(), Error> {
        let (FisherCoefs { scale, eps }, FisherOut { trace, lambda }) = (c, out);
        let g = Geom::of(p)?;
        let na = self.ptr("norms", norms, g.n)?;
        let ta = self.ptr("trace", trace, g.rows)?;
        let la = self.ptr("lambda", lambda, g.n * g.rows)?;
        let (sj, sl) = p.layer.output_strides();
        self.launch(
            k,
            launch::per_row(g.rows)?,
            &[
                Arg::I(int("r", p.r)?),
                Arg::I(int("rows", g.rows)?),
                Arg::I(int("positions", g.l)?),
                Arg::I(int("row stride", sj)?),
                Arg::I(int("position stride", sl)?),
                Arg::F(g.cols as f32),
                ya,
                na,
                Arg::F(scale),
                Arg::F(eps),
                ta,
                la,
            ],
        )
    }

    pub(crate) fn rows_cols(&self, rows: usize, cols: usize) -> Result<(Arg, Arg, usize), Error> {
        let n = rows.checked_mul(cols).ok_or(Error::TooLarge { what: "rows*cols", value: usize::MAX })?;
        int("rows*cols", n)?;
        Ok((Arg::I(int("rows", rows)?), Arg::I(int("cols", cols)?), n))
    }
}

impl Backend for Cuda {
    type Scalar = f32;
    type Buffer = Buffer;
    type View<'a> = CudaView<'a>;
    type ViewMut<'a> = CudaViewMut<'a>;
    type Error = Error;

    fn zeros(&self, len: usize) -> Result<Buffer, Error> {
        int("buffer length", len)?;
        // SAFETY: the buffer is filled with zeros by a launch on the stream
        // before anything else on the stream can read it.
        let mem = unsafe { DeviceBuffer::<f32>::uninitialized(len) }.map_err(Error::driver("cuMemAlloc"))?;
        let b = Buffer { mem, owner: self.owner.clone() };
        self.fill_zero("buffer", Arg::P(b.device_ptr()), len)?;
        Ok(b)
    }

    fn len(&self, buf: &Buffer) -> usize {
        buf.len()
    }

    fn read(&self, src: &Buffer, offset: usize, dst: &mut [f32]) -> Result<(), Error> {
        let Arg::P(base) = self.ptr("src", src, offset.saturating_add(dst.len()))? else { unreachable!() };
        if dst.is_empty() {
            return self.synchronize();
        }
        // SAFETY: the range was checked above; the copy completes before
        // the synchronize returns, while `dst` is borrowed.
        let res = unsafe {
            cu::cuMemcpyDtoHAsync_v2(
                dst.as_mut_ptr() as *mut c_void,
                base + (offset * 4) as u64,
                std::mem::size_of_val(dst),
                self.stream.as_inner(),
            )
        };
        Error::check("cuMemcpyDtoHAsync", res)?;
        self.synchronize()
    }

    fn write(&self, src: &[f32], dst: &mut Buffer, offset: usize) -> Result<(), Error> {
        let Arg::P(base) = self.ptr("dst", dst, offset.saturating_add(src.len()))? else { unreachable!() };
        if src.is_empty() {
            return Ok(());
        }
        // SAFETY: the range was checked above; the copy completes before
        // the synchronize returns, while `src` is borrowed.
        let res = unsafe {
            cu::cuMemcpyHtoDAsync_v2(base + (offset * 4) as u64, src.as_ptr() as *const c_void, std::mem::size_of_val(src), self.stream.as_inner())
        };
        Error::check("cuMemcpyHtoDAsync", res)?;
        self.synchronize()
    }

    fn patch_scratch_len(&self, layer: &Layer, r: usize) -> usize {
        patch_scratch_entries(layer, r)
    }

    fn view<'a>(&self, buf: &'a Buffer, offset: usize, len: usize) -> Result<CudaView<'a>, Error> {
        self.part("view", buf, offset, len)
    }

    fn view_mut<'a>(&self, buf: &'a mut Buffer, offset: usize, len: usize) -> Result<CudaViewMut<'a>, Error> {
        Ok(CudaViewMut::new(self.part("view_mut", buf, offset, len)?))
    }

    fn reborrow<'b>(&self, v: &'b CudaViewMut<'_>) -> CudaView<'b> {
        v.view()
    }

    fn reborrow_view<'b>(&self, v: &'b CudaView<'_>) -> CudaView<'b> {
        *v
    }

    fn view_len(&self, v: &CudaView<'_>) -> usize {
        v.len()
    }

    fn pack_patches(&self, layer: &Layer, r: usize, x: &CudaView<'_>, packed: &mut Buffer) -> Result<(), Error> {
        let xa = x.arg(self, "x", r.saturating_mul(layer.input_len()))?;
        // A 16-bit mode packs (rounds) the f32 inputs in its element type.
        let (conv, rows) = match self.precision.packed() {
            Packed::F32 => (K::Im2col, K::PackRows),
            Packed::Bf16 => (K::Im2colF32Bf16, K::PackRowsF32Bf16),
            Packed::F16 => (K::Im2colF32F16, K::PackRowsF32F16),
        };
        self.pack_with(layer, r, xa, (K::InputAbsMax, conv, rows), packed)
    }

    fn patch_sq_norms(&self, p: &Patches<'_, Self>, norms: &mut Buffer) -> Result<(), Error> {
        let g = Geom::of(p)?;
        let xa = self.ptr("packed", p.packed, g.n * g.cols)?;
        let na = self.ptr("norms", norms, g.n)?;
        let k = match self.precision.packed() {
            Packed::F32 => K::PatchSqNorms,
            Packed::Bf16 => K::PatchSqNormsBf16,
            Packed::F16 => K::PatchSqNormsF16,
        };
        self.launch(k, launch::per_warp(g.n), &[Arg::I(int("positions", g.n)?), Arg::I(int("cols", g.cols)?), xa, na])
    }

    fn fisher_weights(&self, p: &Patches<'_, Self>, y: &CudaView<'_>, norms: &Buffer, c: FisherCoefs<f32>, out: FisherOut<'_, Self>) -> Result<(), Error> {
        let g = Geom::of(p)?;
        let ya = y.arg(self, "y", g.n * g.rows)?;
        self.fisher_with(p, (K::FisherWeights, ya), norms, c, out)
    }

    fn project(&self, p: &mut Patches<'_, Self>, v: &Buffer, u: &mut Buffer) -> Result<(), Error> {
        self.project_into(p, v, None, u)
    }

    fn back_project(&self, p: &mut Patches<'_, Self>, u: &Buffer, g: &mut Buffer) -> Result<(), Error> {
        self.back_project_into(p, u, g, false)
    }

    fn axpby(&self, n: usize, a: f32, x: &CudaView<'_>, b: f32, y: &mut CudaViewMut<'_>) -> Result<(), Error> {
        let xa = x.arg(self, "x", n)?;
        let ya = y.arg(self, "y", n)?;
        self.launch(K::Axpby, launch::elementwise(n), &[Arg::I(int("n", n)?), Arg::F(a), xa, Arg::F(b), ya])
    }

    fn mul_assign(&self, n: usize, a: &mut Buffer, b: &Buffer) -> Result<(), Error> {
        let aa = self.ptr("a", a, n)?;
        let ba = self.ptr("b", b, n)?;
        self.launch(K::MulAssign, launch::elementwise(n), &[Arg::I(int("n", n)?), aa, ba])
    }

    fn copy_strided(&self, shape: Shape, src: &CudaView<'_>, src_at: Strided, dst: &mut Buffer, dst_at: Strided) -> Result<(), Error> {
        let Shape { rows, cols } = shape;
        let (r, c, n) = self.rows_cols(rows, cols)?;
        let sa = src.arg(self, "src", src_at.end(rows, cols))?;
        let da = self.ptr("dst", dst, dst_at.end(rows, cols))?;
        let i = |what, v| int(what, v).map(Arg::I);
        self.launch(
            K::CopyStrided,
            launch::elementwise(n),
            &[r, c, sa, i("src stride", src_at.stride)?, i("src offset", src_at.offset)?, da, i("dst stride", dst_at.stride)?, i("dst offset", dst_at.offset)?],
        )
    }

    fn row_dots(&self, shape: Shape, a: &Buffer, b: &Buffer, out: &mut Buffer) -> Result<(), Error> {
        let Shape { rows, cols } = shape;
        let (r, c, n) = self.rows_cols(rows, cols)?;
        let (aa, ba, oa) = (self.ptr("a", a, n)?, self.ptr("b", b, n)?, self.ptr("out", out, rows)?);
        self.launch(K::RowDots, launch::per_row(rows)?, &[r, c, aa, ba, oa])
    }

    fn row_rescale(&self, shape: Shape, v: &mut Buffer) -> Result<(), Error> {
        let Shape { rows, cols } = shape;
        let (r, c, n) = self.rows_cols(rows, cols)?;
        let va = self.ptr("v", v, n)?;
        self.launch(K::RowRescale, launch::per_row(rows)?, &[r, c, va])
    }

    fn row_div(&self, rows: usize, num: &Buffer, den: &Buffer, eps: f32, out: &mut Buffer) -> Result<(), Error> {
        let (na, da, oa) = (self.ptr("num", num, rows)?, self.ptr("den", den, rows)?, self.ptr("out", out, rows)?);
        self.launch(K::RowDiv, launch::elementwise(rows), &[Arg::I(int("rows", rows)?), na, da, Arg::F(eps), oa])
    }

    fn row_rsqrt(&self, rows: usize, x: &Buffer, eps: f32, out: &mut Buffer) -> Result<(), Error> {
        let (xa, oa) = (self.ptr("x", x, rows)?, self.ptr("out", out, rows)?);
        self.launch(K::RowRsqrt, launch::elementwise(rows), &[Arg::I(int("rows", rows)?), xa, Arg::F(eps), oa])
    }

    fn row_axpy(&self, shape: Shape, a: f32, coef: &Buffer, x: &Buffer, y: &mut Buffer) -> Result<(), Error> {
        let Shape { rows, cols } = shape;
        let (r, c, n) = self.rows_cols(rows, cols)?;
        let (ca, xa, ya) = (self.ptr("coef", coef, rows)?, self.ptr("x", x, n)?, self.ptr("y", y, n)?);
        self.launch(K::RowAxpy, launch::elementwise(n), &[r, c, Arg::F(a), ca, xa, ya])
    }

    fn row_xpby(&self, shape: Shape, x: &Buffer, coef: &Buffer, y: &mut Buffer) -> Result<(), Error> {
        let Shape { rows, cols } = shape;
        let (r, c, n) = self.rows_cols(rows, cols)?;
        let (xa, ca, ya) = (self.ptr("x", x, n)?, self.ptr("coef", coef, rows)?, self.ptr("y", y, n)?);
        self.launch(K::RowXpby, launch::elementwise(n), &[r, c, xa, ca, ya])
    }

    fn row_step(&self, shape: Shape, w: &mut CudaViewMut<'_>, c: StepCoefs<f32>, scale: &Buffer, z: &Buffer, z_at: Strided) -> Result<(), Error> {
        let (Shape { rows, cols }, StepCoefs { decay, lr }) = (shape, c);
        let (r, c, n) = self.rows_cols(rows, cols)?;
        let wa = w.arg(self, "w", n)?;
        let sa = self.ptr("scale", scale, rows)?;
        let za = self.ptr("z", z, z_at.end(rows, cols))?;
        self.launch(
            K::RowStep,
            launch::elementwise(n),
            &[r, c, wa, Arg::F(decay), Arg::F(lr), sa, za, Arg::I(int("z stride", z_at.stride)?), Arg::I(int("z offset", z_at.offset)?)],
        )
    }

    /// Three launches: `out = tau*v`, `U = lambda .* (X V^T)` (the scaling
    /// fused into the GEMM's epilogue), `out += U X` (split-K GEMM).
    fn fisher_matvec(&self, p: &mut Patches<'_, Self>, lambda: &Buffer, tau: f32, v: &Buffer, u: &mut Buffer, out: &mut Buffer) -> Result<(), Error> {
        let n = p.layer.rows() * p.layer.cols();
        self.axpby(n, tau, &self.view(v, 0, n)?, 0.0, &mut self.view_mut(out, 0, n)?)?;
        self.project_into(p, v, Some(lambda), u)?;
        self.back_project_into(p, u, out, true)
    }

    /// The matvec, then one fused per-row kernel for every CG update.
    fn cg_iteration(&self, p: &mut Patches<'_, Self>, lambda: &Buffer, tau: f32, eps: f32, cg: &mut CgBuffers<'_, Self>) -> Result<(), Error> {
        let (rows, cols) = (p.layer.rows(), p.layer.cols());
        self.fisher_matvec(p, lambda, tau, cg.pd, cg.u, cg.ap)?;
        let (r, c, n) = self.rows_cols(rows, cols)?;
        let rho = self.ptr("rho", cg.rho, rows)?;
        let ap = self.ptr("ap", cg.ap, n)?;
        let pd = self.ptr("pd", cg.pd, n)?;
        let z = self.ptr("z", cg.z, n)?;
        let rs = self.ptr("rs", cg.rs, n)?;
        self.launch(K::CgUpdate, launch::per_row(rows)?, &[r, c, Arg::F(eps), rho, ap, pd, z, rs])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use frog_core::{BackendError, BackendErrorKind, Conv2d};

    #[test]
    fn patch_scratch_is_im2col_sized() {
        let conv = Layer::conv2d(Conv2d::new(64, 64, 3, [32, 32]).padding(1), false);
        assert_eq!(patch_scratch_entries(&conv, 64), 64 * 1024 * 576 + GAIN_SLOT);
        let lin = Layer::linear_tokens(9, 5, 4, true);
        assert_eq!(patch_scratch_entries(&lin, 4), 4 * 4 * 10 + GAIN_SLOT);
        let g = Geom::new(&conv, 64).unwrap();
        assert_eq!((g.rows, g.cols, g.n, g.l), (64, 576, 65_536, 1024));
    }

    #[test]
    fn resnet18_layers_fit_32_bit_indexing() {
        // The largest ResNet-18 (CIFAR) conv layers at r = 64 and r = 512.
        for (c_in, c_out, hw) in [(64, 64, 32), (128, 128, 16), (256, 256, 8), (512, 512, 4), (3, 64, 32)] {
            let layer = Layer::conv2d(Conv2d::new(c_in, c_out, 3, [hw, hw]).padding(1), false);
            Geom::new(&layer, 64).unwrap();
            Geom::new(&layer, 512).unwrap();
        }
        let huge = Layer::conv2d(Conv2d::new(512, 512, 3, [256, 256]).padding(1), false);
        let e = Geom::new(&huge, 64).unwrap_err();
        assert!(matches!(e, Error::TooLarge { .. }));
        assert_eq!(e.kind(), BackendErrorKind::InvalidBuffer);
    }
}
