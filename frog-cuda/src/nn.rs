//! Neural-network kernels for the training engine: plain functions over
//! this backend's device buffers, launched on its stream (no host sync
//! except [`cross_entropy`], which returns the loss).
//!
//! Layouts are PyTorch's (`[B, C, H, W]`, `[B, D]`, conv weight
//! `[c_out, c_in, kh, kw]`, linear weight `[d_out, d_in]`). Convolutions are
//! im2col + GEMM in chunks of samples that fit the caller's scratch
//! ([`conv_scratch_len`]); the GEMMs use the backend's [`crate::Precision`].

use frog_core::Conv2d;

use crate::backend::{Buffer, Cuda};
use crate::error::Error;
use crate::kernels::K;
use crate::launch::{self, int, Arg};

/// Entries of im2col scratch [`conv_scratch_len`] aims for (128 MiB).
pub const CONV_SCRATCH_TARGET: usize = 32 << 20;

/// The layout of a BatchNorm input `[batch, channels, hw]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BnShape {
    /// Samples.
    pub batch: usize,
    /// Channels.
    pub channels: usize,
    /// Positions per plane (`H*W`).
    pub hw: usize,
}

impl BnShape {
    /// Entries of the whole input.
    pub fn len(&self) -> usize {
        self.batch * self.channels * self.hw
    }

    /// Whether the input is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn geometry(conv: &Conv2d) -> Result<(usize, usize, [usize; 2]), Error> {
    let [ho, wo] = conv.output_hw().ok_or(Error::Kernel { name: "conv", problem: "the kernel does not fit the padded input" })?;
    Ok((ho * wo, conv.c_in * conv.kernel[0] * conv.kernel[1], [ho, wo]))
}

/// Scratch entries for the convolutions of `conv` on `batch` samples: the
/// im2col matrix of as many samples as fit [`CONV_SCRATCH_TARGET`] (at
/// least one).
pub fn conv_scratch_len(conv: &Conv2d, batch: usize) -> usize {
    let Ok((l, d, _)) = geometry(conv) else { return 0 };
    let per = (l * d).max(1);
    let chunk = (CONV_SCRATCH_TARGET / per).clamp(1, batch.max(1));
    chunk * per
}

/// Samples per chunk for `scratch`.
fn chunk(l: usize, d: usize, batch: usize, scratch: &Buffer) -> Result<usize, Error> {
    let per = (l * d).max(1);
    if scratch.len() < per {
        return Err(Error::BufferTooShort { what: "conv scratch", needed: per, len: scratch.len() });
    }
    Ok((scratch.len() / per).clamp(1, batch.max(1)))
}

fn i(what: &'static str, v: usize) -> Result<Arg, Error> {
    int(what, v).map(Arg::I)
}

/// The geometry arguments the im2col and col2im kernels take first:
/// samples, c_in, h, w, kh, kw, sh, sw, ph, pw, dh, dw, ho, wo.
fn conv_args(samples: usize, c: &Conv2d) -> Result<[Arg; 14], Error> {
    let (_, _, [ho, wo]) = geometry(c)?;
    Ok([
        i("samples", samples)?,
        i("c_in", c.c_in)?,
        i("h", c.input_hw[0])?,
        i("w", c.input_hw[1])?,
        i("kh", c.kernel[0])?,
        i("kw", c.kernel[1])?,
        i("sh", c.stride[0])?,
        i("sw", c.stride[1])?,
        i("ph", c.padding[0])?,
        i("pw", c.padding[1])?,
        i("dh", c.dilation[0])?,
        i("dw", c.dilation[1])?,
        i("ho", ho)?,
        i("wo", wo)?,
    ])
}

/// im2col of the `nb` samples at `x` into `col` (`[nb*L, cols]`, `cols >= D`;
/// FROG's packing passes `D' = D + 1` for a bias column).
pub(crate) fn im2col(cuda: &Cuda, conv: &Conv2d, x: Arg, nb: usize, cols: usize, col: Arg) -> Result<(), Error> {
    let (l, _, _) = geometry(conv)?;
    let mut args = [Arg::I(0); 17];
    args[..14].copy_from_slice(&conv_args(nb, conv)?);
    args[14..].copy_from_slice(&[i("cols", cols)?, x, col]);
    cuda.launch(K::Im2col, launch::elementwise(nb * l * cols), &args)
}

/// `y = conv(x, w)` without bias, for `batch` samples.
pub fn conv_forward(cuda: &Cuda, conv: &Conv2d, batch: usize, x: &Buffer, w: &Buffer, y: &mut Buffer, scratch: &mut Buffer) -> Result<(), Error> {
    let (l, d, _) = geometry(conv)?;
    let in_len = conv.c_in * conv.input_hw[0] * conv.input_hw[1];
    let out_len = conv.c_out * l;
    let xa = cuda.ptr("x", x, batch * in_len)?;
    let wa = cuda.ptr("w", w, conv.c_out * d)?;
    let ya = cuda.ptr("y", y, batch * out_len)?;
    let sa = cuda.ptr("scratch", scratch, 0)?;
    let chunk = chunk(l, d, batch, scratch)?;
    let plan = launch::gemm_plan(conv.c_out, l, d, cuda.sm_count(), false)?;
    for start in (0..batch).step_by(chunk) {
        let nb = chunk.min(batch - start);
        im2col(cuda, conv, xa.offset(start * in_len), nb, d, sa)?;
        let p = plan.batched(nb)?;
        cuda.gemm(p, (conv.c_out, l, d), (wa, d, 1), (sa, 1, d), (ya.offset(start * out_len), l), Arg::P(0), 0, (0, l * d, out_len))?;
    }
    Ok(())
}

/// The input gradient of a convolution, written (or added, with
/// `accumulate`) to `dx`.
#[allow(clippy::too_many_arguments)]
pub fn conv_backward_data(
    cuda: &Cuda,
    conv: &Conv2d,
    batch: usize,
    dy: &Buffer,
    w: &Buffer,
    dx: &mut Buffer,
    accumulate: bool,
    scratch: &mut Buffer,
) -> Result<(), Error> {
    let (l, d, _) = geometry(conv)?;
    let c = conv;
    let in_len = c.c_in * c.input_hw[0] * c.input_hw[1];
    let out_len = c.c_out * l;
    let dya = cuda.ptr("dy", dy, batch * out_len)?;
    let wa = cuda.ptr("w", w, c.c_out * d)?;
    let dxa = cuda.ptr("dx", dx, batch * in_len)?;
    let sa = cuda.ptr("scratch", scratch, 0)?;
    let chunk = chunk(l, d, batch, scratch)?;
    let plan = launch::gemm_plan(l, d, c.c_out, cuda.sm_count(), false)?;
    for start in (0..batch).step_by(chunk) {
        let nb = chunk.min(batch - start);
        // col[(i, l), c] = sum_co dy[i, co, l] w[co, c]
        let p = plan.batched(nb)?;
        cuda.gemm(p, (l, d, c.c_out), (dya.offset(start * out_len), 1, l), (wa, d, 1), (sa, d), Arg::P(0), 0, (out_len, 0, l * d))?;
        let mut args = [Arg::I(0); 17];
        args[..14].copy_from_slice(&conv_args(nb, c)?);
        args[14..].copy_from_slice(&[sa, dxa.offset(start * in_len), Arg::I(i32::from(accumulate))]);
        cuda.launch(K::Col2im, launch::elementwise(nb * in_len), &args)?;
    }
    Ok(())
}

/// The weight gradient of a convolution (overwritten).
pub fn conv_backward_weight(cuda: &Cuda, conv: &Conv2d, batch: usize, x: &Buffer, dy: &Buffer, dw: &mut Buffer, scratch: &mut Buffer) -> Result<(), Error> {
    let (l, d, _) = geometry(conv)?;
    let in_len = conv.c_in * conv.input_hw[0] * conv.input_hw[1];
    let out_len = conv.c_out * l;
    let xa = cuda.ptr("x", x, batch * in_len)?;
    let dya = cuda.ptr("dy", dy, batch * out_len)?;
    let dwa = cuda.ptr("dw", dw, conv.c_out * d)?;
    let sa = cuda.ptr("scratch", scratch, 0)?;
    let chunk = chunk(l, d, batch, scratch)?;
    cuda.launch(K::Fill, launch::elementwise(conv.c_out * d), &[i("n", conv.c_out * d)?, Arg::F(0.0), dwa])?;
    // The samples of a chunk already give the GEMM its parallelism (grid z);
    // splitting K as well would multiply the atomic adds into dw.
    let plan = launch::gemm_plan(conv.c_out, d, l, cuda.sm_count(), false)?;
    for start in (0..batch).step_by(chunk) {
        let nb = chunk.min(batch - start);
        im2col(cuda, conv, xa.offset(start * in_len), nb, d, sa)?;
        // dw[co, c] += sum_l dy[i, co, l] col[(i, l), c]
        let p = plan.batched(nb)?;
        cuda.gemm(p, (conv.c_out, d, l), (dya.offset(start * out_len), l, 1), (sa, d, 1), (dwa, d), Arg::P(0), 2, (out_len, l * d, 0))?;
    }
    Ok(())
}

/// BatchNorm parameters and running statistics on the device.
pub struct BnParams<'a> {
    /// `gamma` `[C]`.
    pub weight: &'a Buffer,
    /// `beta` `[C]`.
    pub bias: &'a Buffer,
    /// `eps` of the variance.
    pub eps: f32,
}

/// Train-mode BatchNorm: batch statistics into `mean`/`invstd`, running
/// statistics updated with `momentum` (PyTorch's rule), `y` normalized,
/// then `+ residual`, then ReLU if `relu`.
#[allow(clippy::too_many_arguments)]
pub fn bn_train(
    cuda: &Cuda,
    s: BnShape,
    x: &Buffer,
    p: BnParams<'_>,
    running: (&mut Buffer, &mut Buffer),
    momentum: f32,
    saved: (&mut Buffer, &mut Buffer),
    residual: Option<&Buffer>,
    relu: bool,
    y: &mut Buffer,
) -> Result<(), Error> {
    let c = s.channels;
    let xa = cuda.ptr("x", x, s.len())?;
    let (rm, rv) = (cuda.ptr("running_mean", running.0, c)?, cuda.ptr("running_var", running.1, c)?);
    let (mean, invstd) = (cuda.ptr("mean", saved.0, c)?, cuda.ptr("invstd", saved.1, c)?);
    let dims = [i("batch", s.batch)?, i("channels", c)?, i("hw", s.hw)?];
    let mut args = dims.to_vec();
    args.extend([xa, mean, invstd, rm, rv, Arg::F(momentum), Arg::F(p.eps)]);
    cuda.launch(K::BnStats, launch::per_row(c)?, &args)?;
    apply(cuda, s, xa, mean, invstd, false, p, residual, relu, y)
}

/// Eval-mode BatchNorm with the running statistics, same epilogue.
#[allow(clippy::too_many_arguments)]
pub fn bn_eval(cuda: &Cuda, s: BnShape, x: &Buffer, p: BnParams<'_>, running: (&Buffer, &Buffer), residual: Option<&Buffer>, relu: bool, y: &mut Buffer) -> Result<(), Error> {
    let c = s.channels;
    let xa = cuda.ptr("x", x, s.len())?;
    let (rm, rv) = (cuda.ptr("running_mean", running.0, c)?, cuda.ptr("running_var", running.1, c)?);
    apply(cuda, s, xa, rm, rv, true, p, residual, relu, y)
}

#[allow(clippy::too_many_arguments)]
fn apply(cuda: &Cuda, s: BnShape, xa: Arg, mean: Arg, scale: Arg, is_var: bool, p: BnParams<'_>, residual: Option<&Buffer>, relu: bool, y: &mut Buffer) -> Result<(), Error> {
    let c = s.channels;
    let ga = cuda.ptr("weight", p.weight, c)?;
    let ba = cuda.ptr("bias", p.bias, c)?;
    let ra = match residual {
        Some(r) => cuda.ptr("residual", r, s.len())?,
        None => Arg::P(0),
    };
    let ya = cuda.ptr("y", y, s.len())?;
    cuda.launch(
        K::BnApply,
        launch::elementwise(s.len()),
        &[i("batch", s.batch)?, i("channels", c)?, i("hw", s.hw)?, xa, mean, scale, Arg::I(i32::from(is_var)), Arg::F(p.eps), ga, ba, ra, Arg::I(i32::from(relu)), ya],
    )
}

/// Backward of [`bn_train`]. With `relu_out` (the forward's output after
/// its ReLU) the ReLU's mask is applied to `dy` in place first, so `dy` is
/// then also the residual's gradient. `dx`, `dweight`, `dbias` are
/// overwritten.
#[allow(clippy::too_many_arguments)]
pub fn bn_backward(
    cuda: &Cuda,
    s: BnShape,
    x: &Buffer,
    saved: (&Buffer, &Buffer),
    weight: &Buffer,
    relu_out: Option<&Buffer>,
    dy: &mut Buffer,
    dx: &mut Buffer,
    dweight: &mut Buffer,
    dbias: &mut Buffer,
) -> Result<(), Error> {
    let c = s.channels;
    let xa = cuda.ptr("x", x, s.len())?;
    let (mean, invstd) = (cuda.ptr("mean", saved.0, c)?, cuda.ptr("invstd", saved.1, c)?);
    let ga = cuda.ptr("weight", weight, c)?;
    let ra = match relu_out {
        Some(r) => cuda.ptr("relu_out", r, s.len())?,
        None => Arg::P(0),
    };
    let dya = cuda.ptr("dy", dy, s.len())?;
    let dxa = cuda.ptr("dx", dx, s.len())?;
    let (dwa, dba) = (cuda.ptr("dweight", dweight, c)?, cuda.ptr("dbias", dbias, c)?);
    let dims = [i("batch", s.batch)?, i("channels", c)?, i("hw", s.hw)?];
    let mut args = dims.to_vec();
    args.extend([xa, mean, invstd, ra, dya, dwa, dba]);
    cuda.launch(K::BnBackwardReduce, launch::per_row(c)?, &args)?;
    let mut args = dims.to_vec();
    args.extend([xa, mean, invstd, ga, dya, dwa, dba, dxa]);
    cuda.launch(K::BnBackwardDx, launch::elementwise(s.len()), &args)
}

/// Global average pooling of `planes` planes of `hw` entries.
pub fn avg_pool(cuda: &Cuda, planes: usize, hw: usize, x: &Buffer, y: &mut Buffer) -> Result<(), Error> {
    let (xa, ya) = (cuda.ptr("x", x, planes * hw)?, cuda.ptr("y", y, planes)?);
    cuda.launch(K::AvgPool, launch::elementwise(planes), &[i("planes", planes)?, i("hw", hw)?, xa, ya])
}

/// Backward of [`avg_pool`] (overwrites `dx`).
pub fn avg_pool_backward(cuda: &Cuda, planes: usize, hw: usize, dy: &Buffer, dx: &mut Buffer) -> Result<(), Error> {
    let (dya, dxa) = (cuda.ptr("dy", dy, planes)?, cuda.ptr("dx", dx, planes * hw)?);
    cuda.launch(K::AvgPoolBackward, launch::elementwise(planes * hw), &[i("planes", planes)?, i("hw", hw)?, dya, dxa])
}

/// `y[batch, d_out] = x[batch, d_in] W^T + b`.
#[allow(clippy::too_many_arguments)]
pub fn linear_forward(cuda: &Cuda, batch: usize, d_in: usize, d_out: usize, x: &Buffer, w: &Buffer, b: &Buffer, y: &mut Buffer) -> Result<(), Error> {
    let xa = cuda.ptr("x", x, batch * d_in)?;
    let wa = cuda.ptr("w", w, d_out * d_in)?;
    let ba = cuda.ptr("b", b, d_out)?;
    let ya = cuda.ptr("y", y, batch * d_out)?;
    let plan = launch::gemm_plan(batch, d_out, d_in, cuda.sm_count(), false)?;
    cuda.gemm(plan, (batch, d_out, d_in), (xa, d_in, 1), (wa, 1, d_in), (ya, d_out), Arg::P(0), 0, (0, 0, 0))?;
    cuda.launch(K::AddBias, launch::elementwise(batch * d_out), &[i("batch", batch)?, i("d_out", d_out)?, ba, ya])
}

/// Gradients of [`linear_forward`], all overwritten.
#[allow(clippy::too_many_arguments)]
pub fn linear_backward(
    cuda: &Cuda,
    batch: usize,
    d_in: usize,
    d_out: usize,
    x: &Buffer,
    w: &Buffer,
    dy: &Buffer,
    dx: &mut Buffer,
    dw: &mut Buffer,
    db: &mut Buffer,
) -> Result<(), Error> {
    let xa = cuda.ptr("x", x, batch * d_in)?;
    let wa = cuda.ptr("w", w, d_out * d_in)?;
    let dya = cuda.ptr("dy", dy, batch * d_out)?;
    let dxa = cuda.ptr("dx", dx, batch * d_in)?;
    let dwa = cuda.ptr("dw", dw, d_out * d_in)?;
    let dba = cuda.ptr("db", db, d_out)?;
    let sms = cuda.sm_count();
    let plan = launch::gemm_plan(batch, d_in, d_out, sms, false)?;
    cuda.gemm(plan, (batch, d_in, d_out), (dya, d_out, 1), (wa, d_in, 1), (dxa, d_in), Arg::P(0), 0, (0, 0, 0))?;
    let plan = launch::gemm_plan(d_out, d_in, batch, sms, true)?;
    let mode = if plan.split() {
        cuda.launch(K::Fill, launch::elementwise(d_out * d_in), &[i("n", d_out * d_in)?, Arg::F(0.0), dwa])?;
        2
    } else {
        0
    };
    cuda.gemm(plan, (d_out, d_in, batch), (dya, 1, d_out), (xa, d_in, 1), (dwa, d_in), Arg::P(0), mode, (0, 0, 0))?;
    cuda.launch(K::ColSums, launch::elementwise(d_out), &[i("batch", batch)?, i("d_out", d_out)?, dya, dba])
}

/// Entries of the scratch [`cross_entropy`] needs.
pub fn cross_entropy_scratch_len(batch: usize) -> usize {
    2 * batch
}

/// Mean softmax cross-entropy of `batch` rows of `classes` logits against
/// `labels` (class indices stored as `f32`), its gradient
/// `(softmax - onehot)/batch` in `dlogits`, and the number of rows whose
/// first largest logit is the label's. Waits for the device.
#[allow(clippy::too_many_arguments)]
pub fn cross_entropy(
    cuda: &Cuda,
    batch: usize,
    classes: usize,
    logits: &Buffer,
    labels: &Buffer,
    dlogits: &mut Buffer,
    scratch: &mut Buffer,
) -> Result<(f64, usize), Error> {
    let la = cuda.ptr("logits", logits, batch * classes)?;
    let lb = cuda.ptr("labels", labels, batch)?;
    let da = cuda.ptr("dlogits", dlogits, batch * classes)?;
    let sa = cuda.ptr("scratch", scratch, cross_entropy_scratch_len(batch))?;
    cuda.launch(K::CrossEntropy, launch::elementwise(batch), &[i("batch", batch)?, i("classes", classes)?, la, lb, da, sa, sa.offset(batch)])?;
    let host = cuda.download(scratch, 2 * batch)?;
    let loss = host[..batch].iter().map(|&v| f64::from(v)).sum::<f64>() / batch.max(1) as f64;
    let correct = host[batch..].iter().filter(|&&v| v > 0.5).count();
    Ok((loss, correct))
}

/// `dst[k] = src[indices[k]]` for blocks of `block` entries, in one launch;
/// `idx` (at least `indices.len()` entries) receives the indices through a
/// copy on the stream, without a host wait.
pub fn gather(cuda: &Cuda, block: usize, indices: &[usize], idx: &mut Buffer, src: &Buffer, dst: &mut Buffer) -> Result<(), Error> {
    let count = indices.len();
    let max = indices.iter().copied().max().map_or(0, |m| m + 1);
    if max > 1 << 24 {
        return Err(Error::TooLarge { what: "gather index", value: max - 1 });
    }
    let host: Vec<f32> = indices.iter().map(|&i| i as f32).collect();
    let sa = cuda.ptr("src", src, max * block)?;
    let da = cuda.ptr("dst", dst, count * block)?;
    cuda.write_async(&host, idx, 0)?;
    let ia = cuda.ptr("idx", idx, count)?;
    cuda.launch(K::GatherBlocks, launch::elementwise(count * block), &[i("count", count)?, i("block", block)?, ia, sa, da])
}
