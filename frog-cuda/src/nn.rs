//! Neural-network kernels for the training engine: plain functions over
//! this backend's device buffers, launched on its stream (no host sync
//! except [`cross_entropy`], which returns the loss).
//!
//! Layouts are PyTorch's (`[B, C, H, W]`, `[B, D]`, conv weight
//! `[c_out, c_in, kh, kw]`, linear weight `[d_out, d_in]`). Convolutions are
//! im2col + one GEMM per chunk of samples that fits the caller's scratch
//! ([`conv_scratch_len`]), with the chunk's samples side by side in the
//! GEMM's long dimension; the GEMMs use the backend's [`crate::Precision`].
//!
//! The kernels take the shapes and operand groups of frog-cpu's `nn`
//! (re-exported here) over device buffers, so that the engine drives both
//! backends' kernels with the same values. Behind the `nn` feature, like
//! frog-cpu's.

use frog_core::Conv2d;
pub use frog_cpu::nn::{
    BnGrads, BnParams, BnRunning, BnSaved, BnShape, BnTrainStats, ConvShape, CrossEntropyLoss, Epilogue, LinearGrads, LinearShape, LossStats, PoolShape, Reduction,
};

use crate::buffer::Buffer;
use crate::device::Cuda;
use crate::error::Error;
use crate::gemm::Epilogue as GemmOut;
use crate::im2col::{conv_args, i, output_hw, PatchRows};
use crate::kernels::K;
use crate::launch::{self, Arg};

/// Entries of convolution scratch [`conv_scratch_len`] aims for (512 MiB):
/// ResNet-18's first stage at batch 512 in three chunks, the others in one
/// or two, so each GEMM is large and the launches few.
pub const CONV_SCRATCH_TARGET: usize = 128 << 20;

/// Sizes of a convolution: positions per sample `L`, patch length
/// `d = c_in*kh*kw`, and entries per sample of input and output.
struct ConvSizes {
    l: usize,
    d: usize,
    c_out: usize,
    in_len: usize,
    out_len: usize,
}

impl ConvSizes {
    fn of(conv: &Conv2d) -> Result<Self, Error> {
        let [ho, wo] = output_hw(conv)?;
        let l = ho * wo;
        let in_len = conv.c_in * conv.input_hw[0] * conv.input_hw[1];
        Ok(Self { l, d: conv.c_in * conv.kernel[0] * conv.kernel[1], c_out: conv.c_out, in_len, out_len: conv.c_out * l })
    }

    /// Scratch entries per sample: its im2col rows `[L, d]` and its output
    /// (gradient) in GEMM layout `[c_out, L]`.
    fn per_sample(&self) -> usize {
        (self.l * (self.d + self.c_out)).max(1)
    }

    /// Samples per chunk that `scratch` holds (at least one, at most `batch`).
    fn chunk(&self, batch: usize, scratch: &Buffer) -> Result<usize, Error> {
        let per = self.per_sample();
        if scratch.len() < per {
            return Err(Error::BufferTooShort { what: "conv scratch", needed: per, len: scratch.len() });
        }
        Ok((scratch.len() / per).clamp(1, batch.max(1)))
    }

    /// Calls `f` on each chunk of the `batch` samples that `scratch` holds,
    /// in order.
    fn for_chunks(&self, cuda: &Cuda, batch: usize, scratch: &Buffer, mut f: impl FnMut(Chunk) -> Result<(), Error>) -> Result<(), Error> {
        let chunk = self.chunk(batch, scratch)?;
        let col = cuda.ptr("scratch", scratch, 0)?;
        let t = col.offset(chunk * self.l * self.d);
        for start in (0..batch).step_by(chunk) {
            let nb = chunk.min(batch - start);
            f(Chunk { start, nb, n: nb * self.l, col, t })?;
        }
        Ok(())
    }
}

/// One chunk of samples of a convolution.
struct Chunk {
    /// Its first sample.
    start: usize,
    /// Its samples.
    nb: usize,
    /// Its positions `nb*L`: the GEMMs' long dimension.
    n: usize,
    /// The scratch of its im2col matrix `[n, d]`.
    col: Arg,
    /// The scratch of its output (gradient) in GEMM layout `[c_out, n]`.
    t: Arg,
}

/// Scratch entries for the convolutions of `shape`: as many samples as
/// fit [`CONV_SCRATCH_TARGET`] (at least one), each with its im2col rows
/// and its output in GEMM layout.
pub fn conv_scratch_len(shape: ConvShape) -> usize {
    let Ok(s) = ConvSizes::of(&shape.conv) else { return 0 };
    let per = s.per_sample();
    (CONV_SCRATCH_TARGET / per).clamp(1, shape.batch.max(1)) * per
}

/// im2col of the `nb` samples at `x` into `col` (`[nb*L, D]`), plain rows.
fn im2col(cuda: &Cuda, s: &ConvSizes, conv: &Conv2d, x: Arg, nb: usize, col: Arg) -> Result<(), Error> {
    crate::im2col::im2col(cuda, K::Im2col, PatchRows { conv, samples: nb, cols: s.d }, x, col, Arg::P(0))
}

/// `dst[j, i, e] = src[i, j, e]` for `src` of shape `[a, b, e]`: between
/// PyTorch's `[samples, c_out, L]` and the GEMMs' `[c_out, samples*L]`.
fn swap_leading(cuda: &Cuda, (a, b, e): (usize, usize, usize), src: Arg, dst: Arg) -> Result<(), Error> {
    cuda.launch(K::SwapLeading, launch::elementwise(a * b * e), &[i("a", a)?, i("b", b)?, i("e", e)?, src, dst])
}

/// `y = conv(x, w)` without bias, for `shape.batch` samples: per chunk of
/// samples, one GEMM `[c_out, d] x [d, nb*L]` over their im2col rows.
pub fn conv_forward(cuda: &Cuda, shape: ConvShape, x: &Buffer, w: &Buffer, y: &mut Buffer, scratch: &mut Buffer) -> Result<(), Error> {
    let (conv, batch) = (&shape.conv, shape.batch);
    let s = ConvSizes::of(conv)?;
    let xa = cuda.ptr("x", x, batch * s.in_len)?;
    let wa = cuda.ptr("w", w, s.c_out * s.d)?;
    let ya = cuda.ptr("y", y, batch * s.out_len)?;
    s.for_chunks(cuda, batch, scratch, |c| {
        im2col(cuda, &s, conv, xa.offset(c.start * s.in_len), c.nb, c.col)?;
        // t[co, (i, l)] = sum_k w[co, k] col[(i, l), k]
        cuda.gemm((s.c_out, c.n, s.d), (wa, s.d, 1), (c.col, 1, s.d), (c.t, c.n), GemmOut::Store, false)?;
        swap_leading(cuda, (s.c_out, c.nb, s.l), c.t, ya.offset(c.start * s.out_len))
    })
}

/// The input gradient of a convolution, written (or added, with
/// `accumulate`) to `dx`: per chunk, one GEMM `[nb*L, c_out] x [c_out, d]`
/// into im2col rows, then col2im.
pub fn conv_backward_data(cuda: &Cuda, shape: ConvShape, dy: &Buffer, w: &Buffer, dx: &mut Buffer, accumulate: bool, scratch: &mut Buffer) -> Result<(), Error> {
    let (conv, batch) = (&shape.conv, shape.batch);
    let s = ConvSizes::of(conv)?;
    let dya = cuda.ptr("dy", dy, batch * s.out_len)?;
    let wa = cuda.ptr("w", w, s.c_out * s.d)?;
    let dxa = cuda.ptr("dx", dx, batch * s.in_len)?;
    s.for_chunks(cuda, batch, scratch, |c| {
        swap_leading(cuda, (c.nb, s.c_out, s.l), dya.offset(c.start * s.out_len), c.t)?;
        // col[(i, l), k] = sum_co t[co, (i, l)] w[co, k]
        cuda.gemm((c.n, s.d, s.c_out), (c.t, 1, c.n), (wa, s.d, 1), (c.col, s.d), GemmOut::Store, false)?;
        let mut args = [Arg::I(0); 17];
        args[..14].copy_from_slice(&conv_args(c.nb, conv)?);
        args[14..].copy_from_slice(&[c.col, dxa.offset(c.start * s.in_len), Arg::I(i32::from(accumulate))]);
        cuda.launch(K::Col2im, launch::elementwise(c.nb * s.in_len), &args)
    })
}

/// The weight gradient of a convolution (overwritten): per chunk, one GEMM
/// `[c_out, nb*L] x [nb*L, d]` added onto `dw`, split along its long K.
pub fn conv_backward_weight(cuda: &Cuda, shape: ConvShape, x: &Buffer, dy: &Buffer, dw: &mut Buffer, scratch: &mut Buffer) -> Result<(), Error> {
    let (conv, batch) = (&shape.conv, shape.batch);
    let s = ConvSizes::of(conv)?;
    let xa = cuda.ptr("x", x, batch * s.in_len)?;
    let dya = cuda.ptr("dy", dy, batch * s.out_len)?;
    let dwa = cuda.ptr("dw", dw, s.c_out * s.d)?;
    if batch == 0 {
        return cuda.fill_zero("dw", dwa, s.c_out * s.d);
    }
    s.for_chunks(cuda, batch, scratch, |c| {
        im2col(cuda, &s, conv, xa.offset(c.start * s.in_len), c.nb, c.col)?;
        swap_leading(cuda, (c.nb, s.c_out, s.l), dya.offset(c.start * s.out_len), c.t)?;
        // dw[co, k] (+)= sum_(i, l) t[co, (i, l)] col[(i, l), k]
        let epilogue = if c.start == 0 { GemmOut::Store } else { GemmOut::Add };
        cuda.gemm((s.c_out, s.d, c.n), (c.t, c.n, 1), (c.col, s.d, 1), (dwa, s.d), epilogue, true)
    })
}

/// Train-mode BatchNorm: batch statistics into `stats.saved`, running
/// statistics updated with `stats.momentum` (PyTorch's rule), `y`
/// normalized, then the epilogue (`+ residual`, then ReLU).
pub fn bn_train(cuda: &Cuda, s: BnShape, x: &Buffer, p: BnParams<'_, Buffer>, stats: BnTrainStats<'_, Buffer>, epi: Epilogue<'_, Buffer>, y: &mut Buffer) -> Result<(), Error> {
    let c = s.channels;
    let xa = cuda.ptr("x", x, s.len())?;
    let BnTrainStats { running, momentum, saved } = stats;
    let (rm, rv) = (cuda.ptr("running_mean", running.mean, c)?, cuda.ptr("running_var", running.var, c)?);
    let (mean, invstd) = (cuda.ptr("mean", saved.mean, c)?, cuda.ptr("invstd", saved.invstd, c)?);
    let dims = [i("batch", s.batch)?, i("channels", c)?, i("hw", s.hw)?];
    // Two-pass statistics, each pass a two-stage reduction: the channel
    // sums into `mean`, the squared deviations from their mean into
    // `invstd`, then both turned into the statistics.
    let (grid, part_len) = launch::channel_parts(c, s.batch.saturating_mul(s.hw), cuda.sm_count())?;
    let part = i("part length", part_len)?;
    cuda.fill_zero("mean", mean, c)?;
    cuda.fill_zero("invstd", invstd, c)?;
    cuda.launch(K::BnChannelSums, grid, &[dims[0], dims[1], dims[2], part, xa, Arg::P(0), mean])?;
    cuda.launch(K::BnChannelSums, grid, &[dims[0], dims[1], dims[2], part, xa, mean, invstd])?;
    let mut args = dims.to_vec();
    // The kernels compute in f32.
    args.extend([mean, invstd, rm, rv, Arg::F(momentum as f32), Arg::F(p.eps as f32)]);
    cuda.launch(K::BnStats, launch::elementwise(c), &args)?;
    apply(cuda, s, xa, Stats { mean, scale: invstd, is_var: false }, p, epi, y)
}

/// Eval-mode BatchNorm with the running statistics, same epilogue.
pub fn bn_eval(cuda: &Cuda, s: BnShape, x: &Buffer, p: BnParams<'_, Buffer>, running: BnRunning<&Buffer>, epi: Epilogue<'_, Buffer>, y: &mut Buffer) -> Result<(), Error> {
    let c = s.channels;
    let xa = cuda.ptr("x", x, s.len())?;
    let (rm, rv) = (cuda.ptr("running_mean", running.mean, c)?, cuda.ptr("running_var", running.var, c)?);
    apply(cuda, s, xa, Stats { mean: rm, scale: rv, is_var: true }, p, epi, y)
}

/// The per-channel statistics [`apply`] normalizes with.
struct Stats {
    mean: Arg,
    /// `1/sqrt(var + eps)`, or with `is_var` the variance itself.
    scale: Arg,
    is_var: bool,
}

fn apply(cuda: &Cuda, s: BnShape, xa: Arg, stats: Stats, p: BnParams<'_, Buffer>, epi: Epilogue<'_, Buffer>, y: &mut Buffer) -> Result<(), Error> {
    let c = s.channels;
    let ga = cuda.ptr("weight", p.weight, c)?;
    let ba = cuda.ptr("bias", p.bias, c)?;
    let ra = match epi.residual {
        Some(r) => cuda.ptr("residual", r, s.len())?,
        None => Arg::P(0),
    };
    let ya = cuda.ptr("y", y, s.len())?;
    let Stats { mean, scale, is_var } = stats;
    cuda.launch(
        K::BnApply,
        launch::elementwise(s.len()),
        &[i("batch", s.batch)?, i("channels", c)?, i("hw", s.hw)?, xa, mean, scale, Arg::I(i32::from(is_var)), Arg::F(p.eps as f32), ga, ba, ra, Arg::I(i32::from(epi.relu)), ya],
    )
}

/// Backward of [`bn_train`]. With `relu_out` (the forward's output after
/// its ReLU) the ReLU's mask is applied to `grads.dy` in place first, so it
/// is then also the residual's gradient. `dx`, `dweight`, `dbias` are
/// overwritten.
pub fn bn_backward(cuda: &Cuda, s: BnShape, x: &Buffer, saved: BnSaved<&Buffer>, weight: &Buffer, relu_out: Option<&Buffer>, grads: BnGrads<'_, Buffer>) -> Result<(), Error> {
    let c = s.channels;
    let xa = cuda.ptr("x", x, s.len())?;
    let (mean, invstd) = (cuda.ptr("mean", saved.mean, c)?, cuda.ptr("invstd", saved.invstd, c)?);
    let ga = cuda.ptr("weight", weight, c)?;
    let ra = match relu_out {
        Some(r) => cuda.ptr("relu_out", r, s.len())?,
        None => Arg::P(0),
    };
    let dya = cuda.ptr("dy", grads.dy, s.len())?;
    let dxa = cuda.ptr("dx", grads.dx, s.len())?;
    let (dwa, dba) = (cuda.ptr("dweight", grads.dweight, c)?, cuda.ptr("dbias", grads.dbias, c)?);
    let dims = [i("batch", s.batch)?, i("channels", c)?, i("hw", s.hw)?];
    let (grid, part_len) = launch::channel_parts(c, s.batch.saturating_mul(s.hw), cuda.sm_count())?;
    cuda.fill_zero("dweight", dwa, c)?;
    cuda.fill_zero("dbias", dba, c)?;
    let mut args = dims.to_vec();
    args.extend([i("part length", part_len)?, xa, mean, invstd, ra, dya, dwa, dba]);
    cuda.launch(K::BnBackwardReduce, grid, &args)?;
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

/// `y[batch, d_out] = x[batch, d_in] W^T (+ b)`.
pub fn linear_forward(cuda: &Cuda, s: LinearShape, x: &Buffer, w: &Buffer, b: Option<&Buffer>, y: &mut Buffer) -> Result<(), Error> {
    let LinearShape { batch, d_in, d_out } = s;
    let xa = cuda.ptr("x", x, batch * d_in)?;
    let wa = cuda.ptr("w", w, d_out * d_in)?;
    let ya = cuda.ptr("y", y, batch * d_out)?;
    cuda.gemm((batch, d_out, d_in), (xa, d_in, 1), (wa, 1, d_in), (ya, d_out), GemmOut::Store, false)?;
    match b {
        Some(b) => add_bias(cuda, BnShape { batch, channels: d_out, hw: 1 }, cuda.ptr("b", b, d_out)?, ya),
        None => Ok(()),
    }
}

/// Gradients of [`linear_forward`], all overwritten (`db` only when the
/// layer has a bias).
pub fn linear_backward(cuda: &Cuda, s: LinearShape, x: &Buffer, w: &Buffer, dy: &Buffer, grads: LinearGrads<'_, Buffer>) -> Result<(), Error> {
    let LinearShape { batch, d_in, d_out } = s;
    let xa = cuda.ptr("x", x, batch * d_in)?;
    let wa = cuda.ptr("w", w, d_out * d_in)?;
    let dya = cuda.ptr("dy", dy, batch * d_out)?;
    let dxa = cuda.ptr("dx", grads.dx, batch * d_in)?;
    let dwa = cuda.ptr("dw", grads.dw, d_out * d_in)?;
    let dba = grads.db.map(|db| cuda.ptr("db", db, d_out)).transpose()?;
    cuda.gemm((batch, d_in, d_out), (dya, d_out, 1), (wa, d_in, 1), (dxa, d_in), GemmOut::Store, false)?;
    cuda.gemm((d_out, d_in, batch), (dya, 1, d_out), (xa, d_in, 1), (dwa, d_in), GemmOut::Store, true)?;
    match dba {
        Some(dba) => cuda.launch(K::ColSums, launch::elementwise(d_out), &[i("batch", batch)?, i("d_out", d_out)?, dya, dba]),
        None => Ok(()),
    }
}

/// The product of `dims`, or the error naming `what` when it exceeds the
/// kernels' 32-bit indexing (an overflow of `usize` included).
fn entries(what: &'static str, dims: &[usize]) -> Result<usize, Error> {
    let n = dims.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d)).unwrap_or(usize::MAX);
    i(what, n)?;
    Ok(n)
}

/// `y[b, c, :] += bias[c]` over `[s.batch, s.channels, s.hw]` at `ya`.
fn add_bias(cuda: &Cuda, s: BnShape, bias: Arg, ya: Arg) -> Result<(), Error> {
    let n = entries("bias entries", &[s.batch, s.channels, s.hw])?;
    cuda.launch(K::AddBias, launch::elementwise(n), &[i("batch", s.batch)?, i("channels", s.channels)?, i("hw", s.hw)?, bias, ya])
}

/// A per-channel bias added to `y` `[batch, channels, hw]` in place: a
/// convolution's bias (airbench's whitening convolution).
pub fn add_channel_bias(cuda: &Cuda, s: BnShape, bias: &Buffer, y: &mut Buffer) -> Result<(), Error> {
    let n = entries("bias entries", &[s.batch, s.channels, s.hw])?;
    let (ba, ya) = (cuda.ptr("bias", bias, s.channels)?, cuda.ptr("y", y, n)?);
    add_bias(cuda, s, ba, ya)
}

/// Backward of [`add_channel_bias`]: `db[c]` (overwritten) = the sum of
/// `dy[b, c, :]` over the batch and the plane, BatchNorm's two-stage
/// channel reduction.
pub fn channel_bias_backward(cuda: &Cuda, s: BnShape, dy: &Buffer, db: &mut Buffer) -> Result<(), Error> {
    let n = entries("bias entries", &[s.batch, s.channels, s.hw])?;
    let (dya, dba) = (cuda.ptr("dy", dy, n)?, cuda.ptr("db", db, s.channels)?);
    let (grid, part_len) = launch::channel_parts(s.channels, s.batch.saturating_mul(s.hw), cuda.sm_count())?;
    cuda.fill_zero("db", dba, s.channels)?;
    let args = [i("batch", s.batch)?, i("channels", s.channels)?, i("hw", s.hw)?, i("part length", part_len)?, dya, Arg::P(0), dba];
    cuda.launch(K::BnChannelSums, grid, &args)
}

/// The exact GELU `y = x * Phi(x)` over `n` entries (PyTorch's default
/// `nn.GELU()`, erf in f32).
pub fn gelu(cuda: &Cuda, n: usize, x: &Buffer, y: &mut Buffer) -> Result<(), Error> {
    let (xa, ya) = (cuda.ptr("x", x, n)?, cuda.ptr("y", y, n)?);
    cuda.launch(K::Gelu, launch::elementwise(n), &[i("n", n)?, xa, ya])
}

/// Backward of [`gelu`]: `dx = dy * (Phi(x) + x * phi(x))` over `n` entries.
pub fn gelu_backward(cuda: &Cuda, n: usize, x: &Buffer, dy: &Buffer, dx: &mut Buffer) -> Result<(), Error> {
    let (xa, dya, dxa) = (cuda.ptr("x", x, n)?, cuda.ptr("dy", dy, n)?, cuda.ptr("dx", dx, n)?);
    cuda.launch(K::GeluBackward, launch::elementwise(n), &[i("n", n)?, xa, dya, dxa])
}

/// The geometry arguments of the max-pool kernels (planes, h, w, k, ho,
/// wo), and the entries of the input and the output; an error when no
/// window fits ([`PoolShape::output_hw`]) or the input exceeds the
/// kernels' 32-bit indexing.
fn pool_args(s: PoolShape) -> Result<([Arg; 6], usize, usize), Error> {
    let [ho, wo] = s.output_hw().ok_or(Error::Kernel { name: "max_pool", problem: "no window fits the input (k is 0, larger than a side, or above 4096)" })?;
    let [h, w] = s.input_hw;
    let in_len = entries("max pool input entries", &[s.planes, h, w])?;
    let args = [i("planes", s.planes)?, i("h", h)?, i("w", w)?, i("k", s.kernel)?, i("ho", ho)?, i("wo", wo)?];
    Ok((args, in_len, s.planes * ho * wo))
}

/// Max-pooling over `k x k` windows at stride `k` (PyTorch's
/// `MaxPool2d(k)`, floor): `y` the windows' maxima, `argmax` the offset
/// `r*k + c` in its window of the entry each output took (PyTorch's rule:
/// the first maximum, or the last NaN), for [`max_pool_backward`].
pub fn max_pool(cuda: &Cuda, s: PoolShape, x: &Buffer, y: &mut Buffer, argmax: &mut Buffer) -> Result<(), Error> {
    let (geometry, in_len, out_len) = pool_args(s)?;
    let (xa, ya, aa) = (cuda.ptr("x", x, in_len)?, cuda.ptr("y", y, out_len)?, cuda.ptr("argmax", argmax, out_len)?);
    let mut args = geometry.to_vec();
    args.extend([xa, ya, aa]);
    cuda.launch(K::MaxPool, launch::elementwise(out_len), &args)
}

/// Backward of [`max_pool`]: `dx` (overwritten) is each output's gradient
/// at the entry `argmax` names, 0 elsewhere.
pub fn max_pool_backward(cuda: &Cuda, s: PoolShape, dy: &Buffer, argmax: &Buffer, dx: &mut Buffer) -> Result<(), Error> {
    let (geometry, in_len, out_len) = pool_args(s)?;
    let (dya, aa, dxa) = (cuda.ptr("dy", dy, out_len)?, cuda.ptr("argmax", argmax, out_len)?, cuda.ptr("dx", dx, in_len)?);
    let mut args = geometry.to_vec();
    args.extend([dya, aa, dxa]);
    cuda.launch(K::MaxPoolBackward, launch::elementwise(in_len), &args)
}

/// Entries of the scratch [`cross_entropy`] needs.
pub fn cross_entropy_scratch_len(batch: usize) -> usize {
    2 * batch
}

/// Softmax cross-entropy of `batch` rows of `classes` logits against
/// `labels` (class indices stored as `f32`), smoothed and reduced as
/// `loss` says, its gradient `(softmax - q) * s` in `dlogits` (`q` the
/// smoothed target, `s` `1/batch` for the mean, 1 for the sum), and the
/// number of rows whose first largest logit is the label's. The smoothing
/// reaches the kernel in f32. Waits for the device.
#[allow(clippy::too_many_arguments)] // the cuda context, sizes, the loss, three buffers and the scratch
pub fn cross_entropy(
    cuda: &Cuda,
    batch: usize,
    classes: usize,
    loss: CrossEntropyLoss,
    logits: &Buffer,
    labels: &Buffer,
    dlogits: &mut Buffer,
    scratch: &mut Buffer,
) -> Result<LossStats, Error> {
    if !loss.is_valid() {
        return Err(Error::Kernel { name: "cross_entropy", problem: "label smoothing outside [0, 1]" });
    }
    let la = cuda.ptr("logits", logits, batch * classes)?;
    let lb = cuda.ptr("labels", labels, batch)?;
    let da = cuda.ptr("dlogits", dlogits, batch * classes)?;
    let sa = cuda.ptr("scratch", scratch, cross_entropy_scratch_len(batch))?;
    let mean = loss.reduction == Reduction::Mean;
    let args = [i("batch", batch)?, i("classes", classes)?, Arg::F(loss.label_smoothing as f32), Arg::I(i32::from(mean)), la, lb, da, sa, sa.offset(batch)];
    cuda.launch(K::CrossEntropy, launch::elementwise(batch), &args)?;
    let host = cuda.download(scratch, 2 * batch)?;
    let total = host[..batch].iter().map(|&v| f64::from(v)).sum::<f64>();
    let loss = if mean { total / batch.max(1) as f64 } else { total };
    let correct = host[batch..].iter().filter(|&&v| v > 0.5).count();
    Ok(LossStats { loss, correct })
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
    cuda.write_async(host, idx, 0)?;
    let ia = cuda.ptr("idx", idx, count)?;
    cuda.launch(K::GatherBlocks, launch::elementwise(count * block), &[i("count", count)?, i("block", block)?, ia, sa, da])
}
