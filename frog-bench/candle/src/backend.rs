//! `CandleBackend<T>`: frog-core's `Backend` over candle tensors, so that a
//! candle model can run FROG's whole step on candle's own device.
//!
//! Layouts: the patch scratch holds `X`, the `N x D'` im2col matrix of the
//! sampled inputs (`N = r*L` rows ordered `(i, l)`, a trailing column of
//! ones with a bias), built by one `index_select` over each sample's input
//! with precomputed source indices. The Fisher weights and `U` are `N x R`
//! (row `i*L + l`, column `j`), so both CG products are one plain matmul.
//!
//! `X` is not built with candle's `conv2d` (or a convolution-shaped product
//! trick) because candle's convolutions take one stride, one padding and
//! one dilation for both axes: they cannot express the asymmetric
//! geometries FROG supports (`conv2x3_asym_stride_pad` in the golden set).
//!
//! Candle tensors are values, and frog-core's contract lets a buffer be
//! longer than an operation names (one workspace serves every layer), so a
//! write of a prefix rebuilds the whole tensor: the new prefix and a copy of
//! the untouched tail ([`Tensor::slice_scatter0`], a `narrow` + `cat`). Only
//! a write that covers the whole buffer avoids that copy.
//!
//! A step on views ([`crate::view`]) hands each operation on the caller's
//! data (parameters, gradients, sampled inputs and output gradients) a
//! tensor of exactly the length it names, so none of them writes a prefix
//! with a tail to copy: a parameter's write replaces the caller's tensor,
//! or sets its `Var`, whole, and the new values need no copy out of a
//! buffer. Only the step's own scratch, the workspace and the states,
//! keeps the prefix rule above.
//!
//! The kernels that touch the caller's data (`pack_patches`,
//! `fisher_weights`, `copy_strided`, `axpby`, `row_step`) take views only
//! ([`TensorView`], [`TensorViewMut`]): a step on buffers makes views of
//! them first (a `narrow`, no copy).

use std::fmt;
use std::marker::PhantomData;

use candle_core::{DType, Device, Tensor, WithDType};
use frog_core::{
    pow2_gain, square_safe_max, Backend, BackendError, BackendErrorKind, FisherCoefs, FisherOut, Layer, Patches, Scalar, Shape, ShapeError, StepCoefs, Strided, PATCH_PADDING,
};

use crate::view::{TensorView, TensorViewMut};

/// A FROG buffer: a 1-D candle tensor, replaced by every write.
///
/// Never part of an autograd graph: every tensor stored in it is detached,
/// so a buffer that lives across steps cannot keep a step's graph alive.
#[derive(Clone, Debug)]
pub struct TensorBuf(pub(crate) Tensor);

impl TensorBuf {
    /// The buffer's current tensor (1-D; reshape it to the parameter's shape).
    pub fn tensor(&self) -> &Tensor {
        &self.0
    }
}

/// What failed on the candle backend.
#[derive(Debug)]
#[non_exhaustive]
pub enum CandleError {
    /// A buffer (or a block in it) is shorter than an operation needs.
    Length {
        /// The operation.
        op: &'static str,
        /// Entries needed.
        needed: usize,
        /// Entries available.
        len: usize,
    },
    /// The layer geometry is invalid (see `Layer::validate`).
    InvalidLayer(ShapeError),
    /// A gather index does not fit candle's `u32` indices.
    IndexRange {
        /// The operation.
        op: &'static str,
    },
    /// A host index table of `entries` could not be allocated.
    OutOfMemory {
        /// Entries asked for.
        entries: usize,
    },
    /// A tensor given to [`CandleBackend::buffer`] (or made a view) holds
    /// another dtype.
    Dtype {
        /// The backend's dtype.
        expected: DType,
        /// The tensor's.
        actual: DType,
    },
    /// A tensor given to [`CandleBackend::buffer`] (or made a view) lives on
    /// another device.
    Device,
    /// Candle refused or failed an operation.
    Candle(candle_core::Error),
}

impl fmt::Display for CandleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Length { op, needed, len } => write!(f, "{op}: buffer of {len} entries, {needed} needed"),
            Self::InvalidLayer(e) => write!(f, "invalid layer: {e}"),
            Self::IndexRange { op } => write!(f, "{op}: an index does not fit in u32"),
            Self::OutOfMemory { entries } => write!(f, "out of memory allocating an index table of {entries} entries"),
            Self::Dtype { expected, actual } => write!(f, "tensor of dtype {actual:?}, the backend computes in {expected:?}"),
            Self::Device => write!(f, "tensor on another device than the backend's"),
            Self::Candle(e) => write!(f, "candle: {e}"),
        }
    }
}

impl std::error::Error for CandleError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Candle(e) => Some(e),
            _ => None,
        }
    }
}

impl From<candle_core::Error> for CandleError {
    fn from(e: candle_core::Error) -> Self {
        Self::Candle(e)
    }
}

/// The kind of a candle error, looking through its context and backtrace
/// wrappers.
fn candle_kind(e: &candle_core::Error) -> BackendErrorKind {
    use candle_core::Error as E;
    match e {
        E::WithBacktrace { inner, .. } | E::Context { inner, .. } | E::WithPath { inner, .. } => candle_kind(inner),
        E::UnexpectedDType { .. } | E::DTypeMismatchBinaryOp { .. } => BackendErrorKind::DtypeMismatch,
        E::DeviceMismatchBinaryOp { .. } => BackendErrorKind::DeviceMismatch,
        E::UnsupportedDTypeForOp(..) => BackendErrorKind::Unsupported,
        E::NotCompiledWithCudaSupport | E::NotCompiledWithMetalSupport => BackendErrorKind::NoDevice,
        E::Cuda(_) | E::Metal(_) => BackendErrorKind::Launch,
        E::ShapeMismatch { .. } | E::UnexpectedShape { .. } | E::ShapeMismatchBinaryOp { .. } | E::NarrowInvalidArgs { .. } | E::InvalidIndex { .. } => {
            BackendErrorKind::InvalidBuffer
        }
        _ => BackendErrorKind::Other,
    }
}

impl BackendError for CandleError {
    fn kind(&self) -> BackendErrorKind {
        match self {
            Self::Length { .. } | Self::InvalidLayer(_) | Self::IndexRange { .. } => BackendErrorKind::InvalidBuffer,
            Self::OutOfMemory { .. } => BackendErrorKind::OutOfMemory,
            Self::Dtype { .. } => BackendErrorKind::DtypeMismatch,
            Self::Device => BackendErrorKind::DeviceMismatch,
            Self::Candle(e) => candle_kind(e),
        }
    }
}

pub(crate) type Res<V = ()> = Result<V, CandleError>;

/// `t` has at least `needed` entries.
fn need(op: &'static str, t: &Tensor, needed: usize) -> Res {
    let len = t.elem_count();
    if len >= needed {
        Ok(())
    } else {
        Err(CandleError::Length { op, needed, len })
    }
}


fn index(op: &'static str, v: usize) -> Res<u32> {
    u32::try_from(v).map_err(|_| CandleError::IndexRange { op })
}

/// FROG's backend over candle tensors of scalar `T` (`f32` or `f64`) on one
/// candle [`Device`].
///
/// Applies frog-core's power-of-two rescale to huge gradient rows
/// (`row_rescale`), output-gradient rows (`fisher_weights`) and inputs
/// (`pack_patches`). It does not implement `GuardBackend`, so guarded steps
/// are not available on it.
pub struct CandleBackend<T> {
    device: Device,
    _scalar: PhantomData<T>,
}

impl<T: Scalar + WithDType> CandleBackend<T> {
    /// A backend whose buffers live on `device`.
    pub fn new(device: Device) -> Self {
        Self { device, _scalar: PhantomData }
    }

    /// The device.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// A buffer holding the entries of a framework tensor `t` (any shape,
    /// row-major), detached from its graph: how a candle model hands its
    /// parameters, gradients, inputs and output gradients to FROG. A
    /// tensor of another dtype or device is an error.
    pub fn buffer(&self, t: &Tensor) -> Res<TensorBuf> {
        Ok(TensorBuf(self.flat(t)?))
    }

    /// The entries of a framework tensor `t`, 1-D and detached (no copy
    /// when `t` is contiguous), or an error for another dtype or device.
    pub(crate) fn flat(&self, t: &Tensor) -> Res<Tensor> {
        if t.dtype() != T::DTYPE {
            return Err(CandleError::Dtype { expected: T::DTYPE, actual: t.dtype() });
        }
        if !t.device().same_device(&self.device) {
            return Err(CandleError::Device);
        }
        Ok(t.flatten_all()?.detach())
    }

    /// Entries `offset..offset + n` of the 1-D `t`.
    pub(crate) fn part(&self, op: &'static str, t: &Tensor, offset: usize, n: usize) -> Res<Tensor> {
        need(op, t, offset.saturating_add(n))?;
        Ok(t.narrow(0, offset, n)?)
    }

    /// The first `n` entries of the 1-D `t`.
    fn prefix(&self, op: &'static str, t: &Tensor, n: usize) -> Res<Tensor> {
        self.part(op, t, 0, n)
    }

    /// The first `rows * cols` entries of the 1-D `t` as a `rows x cols` matrix.
    fn matrix(&self, op: &'static str, t: &Tensor, rows: usize, cols: usize) -> Res<Tensor> {
        Ok(self.prefix(op, t, rows.saturating_mul(cols))?.reshape((rows, cols))?)
    }

    /// Writes `v`'s entries to `buf[offset..]`: the candle form of writing
    /// into a buffer, which builds the buffer's next tensor.
    pub(crate) fn store(&self, op: &'static str, buf: &mut TensorBuf, offset: usize, v: &Tensor) -> Res {
        let v = v.flatten_all()?.detach();
        need(op, &buf.0, offset.saturating_add(v.elem_count()))?;
        buf.0 = if offset == 0 && v.elem_count() == buf.0.elem_count() { v } else { buf.0.slice_scatter0(&v, offset)? };
        Ok(())
    }

    /// The flat indices of a `rows x cols` block at `at`, as a `u32` tensor.
    fn block_indices(&self, op: &'static str, rows: usize, cols: usize, at: Strided) -> Res<Tensor> {
        let idx: Vec<u32> = (0..rows).flat_map(|j| (0..cols).map(move |c| at.offset + j * at.stride + c)).map(|i| index(op, i)).collect::<Res<_>>()?;
        Ok(Tensor::from_vec(idx, rows * cols, &self.device)?)
    }

    /// The `rows x cols` block of the 1-D `t` at `at`, flat (`rows > 0`).
    fn read_block(&self, op: &'static str, t: &Tensor, rows: usize, cols: usize, at: Strided) -> Res<Tensor> {
        need(op, t, at.end(rows, cols))?;
        if at.stride == cols {
            return Ok(t.narrow(0, at.offset, rows * cols)?);
        }
        Ok(t.index_select(&self.block_indices(op, rows, cols, at)?, 0)?)
    }

    /// The scalar `v` as a 0-d tensor of `T`, for exact divisions (candle's
    /// `Tensor / f64` multiplies by the rounded reciprocal).
    fn scalar(&self, v: T) -> Res<Tensor> {
        Ok(Tensor::new(v, &self.device)?)
    }

    /// Multiplies each line of the matrix `m` (its columns for `dim` 0,
    /// its rows for 1) by a power of two that brings its largest `|v|` into
    /// `[0.5, 1)` when that is above [`square_safe_max`] (frog-core's
    /// [`pow2_gain`]); every other line is returned untouched. Only the
    /// maximum of all lines is read to the host on the common path.
    fn rescale_lines(&self, m: Tensor, dim: usize) -> Res<Tensor> {
        let line_max = m.abs()?.max_keepdim(dim)?;
        let peak = line_max.flatten_all()?.max(0)?.to_scalar::<T>()?.as_f64();
        if peak <= square_safe_max::<T>() {
            return Ok(m);
        }
        let shape = line_max.shape().clone();
        let gains: Vec<T> = line_max.flatten_all()?.to_vec1::<T>()?.into_iter().map(|v| T::of_f64(pow2_gain::<T>(v.as_f64()))).collect();
        Ok(m.broadcast_mul(&Tensor::from_vec(gains, shape, &self.device)?)?)
    }

    /// For each entry of one sample's `L x D'` patch matrix, its source in
    /// that sample's input followed by `[0, 1]`: an input entry, the zero
    /// (padding), or the one (the bias feature). The geometry is frog-core's
    /// [`Layer::patch_indices`].
    fn patch_indices(&self, layer: &Layer) -> Res<Tensor> {
        const OP: &str = "pack_patches";
        let (d, l, inp) = (layer.weight_cols(), layer.positions(), layer.input_len());
        let (zero, one) = (index(OP, inp)?, index(OP, inp.saturating_add(1))?);
        let entries = l.saturating_mul(d);
        let mut sources = Vec::new();
        sources.try_reserve_exact(entries).map_err(|_| CandleError::OutOfMemory { entries })?;
        sources.resize(entries, 0);
        layer.patch_indices(1, &mut sources).map_err(CandleError::InvalidLayer)?;
        let mut idx = Vec::new();
        let entries = l.saturating_mul(layer.cols());
        idx.try_reserve_exact(entries).map_err(|_| CandleError::OutOfMemory { entries })?;
        for patch in sources.chunks_exact(d.max(1)).take(l) {
            for &src in patch {
                idx.push(if src == PATCH_PADDING { zero } else { index(OP, src)? });
            }
            if layer.bias {
                idx.push(one);
            }
        }
        let n = idx.len();
        Ok(Tensor::from_vec(idx, n, &self.device)?)
    }

}

impl<T: Scalar + WithDType> Backend for CandleBackend<T> {
    type Scalar = T;
    type Buffer = TensorBuf;
    type View<'a> = TensorView<'a>;
    type ViewMut<'a> = TensorViewMut<'a>;
    type Error = CandleError;

    fn zeros(&self, len: usize) -> Res<TensorBuf> {
        Ok(TensorBuf(Tensor::zeros(len, T::DTYPE, &self.device)?))
    }

    fn len(&self, buf: &TensorBuf) -> usize {
        buf.0.elem_count()
    }

    fn read(&self, src: &TensorBuf, offset: usize, dst: &mut [T]) -> Res {
        dst.copy_from_slice(&self.part("read", &src.0, offset, dst.len())?.to_vec1::<T>()?);
        Ok(())
    }

    fn write(&self, src: &[T], dst: &mut TensorBuf, offset: usize) -> Res {
        self.store("write", dst, offset, &Tensor::from_slice(src, src.len(), &self.device)?)
    }

    fn patch_scratch_len(&self, layer: &Layer, r: usize) -> usize {
        r.saturating_mul(layer.positions()).saturating_mul(layer.cols())
    }

    fn view<'a>(&self, buf: &'a TensorBuf, offset: usize, len: usize) -> Res<TensorView<'a>> {
        Ok(TensorView::new(self.part("view", &buf.0, offset, len)?))
    }

    fn view_mut<'a>(&self, buf: &'a mut TensorBuf, offset: usize, len: usize) -> Res<TensorViewMut<'a>> {
        let flat = self.part("view_mut", &buf.0, offset, len)?;
        Ok(TensorViewMut::of_buffer(flat, buf, offset))
    }

    fn reborrow<'b>(&self, v: &'b TensorViewMut<'_>) -> TensorView<'b> {
        TensorView::new(v.tensor().clone())
    }

    fn reborrow_view<'b>(&self, v: &'b TensorView<'_>) -> TensorView<'b> {
        TensorView::new(v.tensor().clone())
    }

    fn view_len(&self, v: &TensorView<'_>) -> usize {
        v.tensor().elem_count()
    }

    fn pack_patches(&self, layer: &Layer, r: usize, x: &TensorView<'_>, packed: &mut TensorBuf) -> Res {
        let x = x.tensor();
        layer.validate().map_err(CandleError::InvalidLayer)?;
        let inp = layer.input_len();
        let xs = self.matrix("pack_patches: x", x, r, inp)?;
        // Inputs whose squares could overflow: the patches of `c x`, the bias
        // feature `c` (see `Backend::pack_patches`); one scalar read back.
        let peak = xs.abs()?.flatten_all()?.max(0)?.to_scalar::<T>()?.as_f64();
        let gain = T::of_f64(pow2_gain::<T>(peak));
        let xs = if gain == T::ONE { xs } else { xs.broadcast_mul(&self.scalar(gain)?)? };
        let pad = Tensor::new(&[T::ZERO, gain], &self.device)?.reshape((1, 2))?.broadcast_as((r, 2))?;
        let patches = Tensor::cat(&[&xs, &pad], 1)?.index_select(&self.patch_indices(layer)?, 1)?;
        self.store("pack_patches: scratch", packed, 0, &patches)
    }

    fn patch_sq_norms(&self, p: &Patches<'_, Self>, norms: &mut TensorBuf) -> Res {
        let n = p.r.saturating_mul(p.layer.positions());
        let x = self.matrix("patch_sq_norms: scratch", &p.packed.0, n, p.layer.cols())?;
        self.store("patch_sq_norms: norms", norms, 0, &x.sqr()?.sum(1)?)
    }

    fn fisher_weights(&self, p: &Patches<'_, Self>, y: &TensorView<'_>, norms: &TensorBuf, c: FisherCoefs<T>, out: FisherOut<'_, Self>) -> Res {
        let (y, FisherCoefs { scale, eps }, FisherOut { trace, lambda }) = (y.tensor(), c, out);
        let (rows, l) = (p.layer.rows(), p.layer.positions());
        let n = p.r.saturating_mul(l);
        let y = self.prefix("fisher_weights: y", y, n.saturating_mul(rows))?;
        // Y as N x R: a conv's [r, R, L] is transposed, a linear layer's
        // [r, T, R] already is.
        let y = if p.layer.output_strides().0 == 1 { y.reshape((n, rows))? } else { y.reshape((p.r, rows, l))?.transpose(1, 2)?.reshape((n, rows))? };
        let q = self.rescale_lines(y, 0)?.sqr()?.affine(scale.as_f64(), 0.0)?;
        let norms = self.matrix("fisher_weights: norms", &norms.0, n, 1)?;
        let tr = q.broadcast_mul(&norms)?.sum(0)?.broadcast_div(&self.scalar(T::of_f64(p.layer.cols() as f64))?)?;
        need("fisher_weights: lambda", &lambda.0, n.saturating_mul(rows))?;
        let lam = q.broadcast_div(&tr.affine(1.0, eps.as_f64())?.reshape((1, rows))?)?;
        self.store("fisher_weights: trace", trace, 0, &tr)?;
        self.store("fisher_weights: lambda", lambda, 0, &lam)
    }

    fn project(&self, p: &mut Patches<'_, Self>, v: &TensorBuf, u: &mut TensorBuf) -> Res {
        let (n, cols, rows) = (p.r.saturating_mul(p.layer.positions()), p.layer.cols(), p.layer.rows());
        let x = self.matrix("project: scratch", &p.packed.0, n, cols)?;
        let v = self.matrix("project: v", &v.0, rows, cols)?;
        self.store("project: u", u, 0, &x.matmul(&v.t()?)?)
    }

    fn back_project(&self, p: &mut Patches<'_, Self>, u: &TensorBuf, g: &mut TensorBuf) -> Res {
        let (n, cols, rows) = (p.r.saturating_mul(p.layer.positions()), p.layer.cols(), p.layer.rows());
        let x = self.matrix("back_project: scratch", &p.packed.0, n, cols)?;
        let u = self.matrix("back_project: u", &u.0, n, rows)?;
        self.store("back_project: g", g, 0, &u.t()?.matmul(&x)?)
    }

    fn fisher_matvec(&self, p: &mut Patches<'_, Self>, lambda: &TensorBuf, tau: T, v: &TensorBuf, u: &mut TensorBuf, out: &mut TensorBuf) -> Res {
        // `U` stays a candle temporary instead of going through the scratch
        // `u`: with a workspace sized for a larger layer, each store of `u`
        // would copy the scratch's whole tail, twice per CG iteration.
        let _ = u;
        let (n, cols, rows) = (p.r.saturating_mul(p.layer.positions()), p.layer.cols(), p.layer.rows());
        let x = self.matrix("fisher_matvec: scratch", &p.packed.0, n, cols)?;
        let v = self.matrix("fisher_matvec: v", &v.0, rows, cols)?;
        let scaled = (x.matmul(&v.t()?)? * self.matrix("fisher_matvec: lambda", &lambda.0, n, rows)?)?;
        self.store("fisher_matvec: out", out, 0, &(scaled.t()?.matmul(&x)? + v.affine(tau.as_f64(), 0.0)?)?)
    }

    fn axpby(&self, n: usize, a: T, x: &TensorView<'_>, b: T, y: &mut TensorViewMut<'_>) -> Res {
        let x = x.tensor();
        let ax = self.prefix("axpby: x", x, n)?.affine(a.as_f64(), 0.0)?;
        let out = if b == T::ZERO {
            need("axpby: y", y.tensor(), n)?;
            ax
        } else {
            (ax + self.prefix("axpby: y", y.tensor(), n)?.affine(b.as_f64(), 0.0)?)?
        };
        y.write(self, "axpby: y", &out)
    }

    fn row_rescale(&self, shape: Shape, v: &mut TensorBuf) -> Res {
        let Shape { rows, cols } = shape;
        let m = self.matrix("row_rescale: v", &v.0, rows, cols)?;
        let scaled = self.rescale_lines(m, 1)?;
        self.store("row_rescale: v", v, 0, &scaled)
    }

    fn mul_assign(&self, n: usize, a: &mut TensorBuf, b: &TensorBuf) -> Res {
        let out = (self.prefix("mul_assign: a", &a.0, n)? * self.prefix("mul_assign: b", &b.0, n)?)?;
        self.store("mul_assign: a", a, 0, &out)
    }

    fn copy_strided(&self, shape: Shape, src: &TensorView<'_>, src_at: Strided, dst: &mut TensorBuf, dst_at: Strided) -> Res {
        let Shape { rows, cols } = shape;
        let src = src.tensor();
        if rows == 0 || cols == 0 {
            return Ok(());
        }
        let block = self.read_block("copy_strided: src", src, rows, cols, src_at)?;
        need("copy_strided: dst", &dst.0, dst_at.end(rows, cols))?;
        if dst_at.stride == cols {
            return self.store("copy_strided: dst", dst, dst_at.offset, &block);
        }
        let idx = self.block_indices("copy_strided: dst", rows, cols, dst_at)?;
        dst.0 = dst.0.scatter(&idx, &block.contiguous()?, 0)?.detach();
        Ok(())
    }

    fn row_dots(&self, shape: Shape, a: &TensorBuf, b: &TensorBuf, out: &mut TensorBuf) -> Res {
        let Shape { rows, cols } = shape;
        let prod = (self.matrix("row_dots: a", &a.0, rows, cols)? * self.matrix("row_dots: b", &b.0, rows, cols)?)?;
        self.store("row_dots: out", out, 0, &prod.sum(1)?)
    }

    fn row_div(&self, rows: usize, num: &TensorBuf, den: &TensorBuf, eps: T, out: &mut TensorBuf) -> Res {
        let q = self.prefix("row_div: num", &num.0, rows)?.div(&self.prefix("row_div: den", &den.0, rows)?.affine(1.0, eps.as_f64())?)?;
        self.store("row_div: out", out, 0, &q)
    }

    fn row_rsqrt(&self, rows: usize, x: &TensorBuf, eps: T, out: &mut TensorBuf) -> Res {
        let r = self.prefix("row_rsqrt: x", &x.0, rows)?.affine(1.0, eps.as_f64())?.sqrt()?.recip()?;
        self.store("row_rsqrt: out", out, 0, &r)
    }

    fn row_axpy(&self, shape: Shape, a: T, coef: &TensorBuf, x: &TensorBuf, y: &mut TensorBuf) -> Res {
        let Shape { rows, cols } = shape;
        let c = self.matrix("row_axpy: coef", &coef.0, rows, 1)?.affine(a.as_f64(), 0.0)?;
        let out = (self.matrix("row_axpy: y", &y.0, rows, cols)? + self.matrix("row_axpy: x", &x.0, rows, cols)?.broadcast_mul(&c)?)?;
        self.store("row_axpy: y", y, 0, &out)
    }

    fn row_xpby(&self, shape: Shape, x: &TensorBuf, coef: &TensorBuf, y: &mut TensorBuf) -> Res {
        let Shape { rows, cols } = shape;
        let c = self.matrix("row_xpby: coef", &coef.0, rows, 1)?;
        let out = (self.matrix("row_xpby: x", &x.0, rows, cols)? + self.matrix("row_xpby: y", &y.0, rows, cols)?.broadcast_mul(&c)?)?;
        self.store("row_xpby: y", y, 0, &out)
    }

    fn row_step(&self, shape: Shape, w: &mut TensorViewMut<'_>, c: StepCoefs<T>, scale: &TensorBuf, z: &TensorBuf, z_at: Strided) -> Res {
        let (Shape { rows, cols }, StepCoefs { decay, lr }) = (shape, c);
        if rows == 0 || cols == 0 {
            return Ok(());
        }
        let c = self.matrix("row_step: scale", &scale.0, rows, 1)?.affine(lr.as_f64(), 0.0)?;
        let z = self.read_block("row_step: z", &z.0, rows, cols, z_at)?.reshape((rows, cols))?;
        let out = (self.matrix("row_step: w", w.tensor(), rows, cols)?.affine(decay.as_f64(), 0.0)? - z.broadcast_mul(&c)?)?;
        w.write(self, "row_step: w", &out)
    }
}
