//! im2col on the device, shared by FROG's patch packing (`Backend`'s
//! `pack_patches`, with a gain and a bias column) and the training
//! convolutions of [`crate::nn`] (plain rows).

use frog_core::Conv2d;

use crate::device::Cuda;
use crate::error::Error;
use crate::kernels::K;
use crate::launch::{self, int, Arg};

/// `v` as a kernel's `int` argument, or the error naming `what`.
pub(crate) fn i(what: &'static str, v: usize) -> Result<Arg, Error> {
    int(what, v).map(Arg::I)
}

/// The output size `[Ho, Wo]` of `conv`, or the error of a kernel that does
/// not fit its padded input.
pub(crate) fn output_hw(conv: &Conv2d) -> Result<[usize; 2], Error> {
    conv.output_hw().ok_or(Error::Kernel { name: "conv", problem: "the kernel does not fit the padded input" })
}

/// The geometry arguments the im2col and col2im kernels take first:
/// samples, c_in, h, w, kh, kw, sh, sw, ph, pw, dh, dw, ho, wo.
pub(crate) fn conv_args(samples: usize, c: &Conv2d) -> Result<[Arg; 14], Error> {
    let [ho, wo] = output_hw(c)?;
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

/// The patch matrix one im2col launch writes: the patches of `samples`
/// samples of `conv`, `[samples*L, cols]` with `cols >= D` (FROG's packing
/// passes `D' = D + 1` for a bias column).
#[derive(Clone, Copy)]
pub(crate) struct PatchRows<'a> {
    pub(crate) conv: &'a Conv2d,
    pub(crate) samples: usize,
    pub(crate) cols: usize,
}

/// im2col of the samples at `x` into `col` with one of the `Im2col*`
/// kernels `k` (the input and patch element types), every entry times the
/// gain of the patch gain slot at `gain_slot` (a null pointer: none, the
/// plain rows).
pub(crate) fn im2col(cuda: &Cuda, k: K, rows: PatchRows<'_>, x: Arg, col: Arg, gain_slot: Arg) -> Result<(), Error> {
    let [ho, wo] = output_hw(rows.conv)?;
    let mut args = [Arg::I(0); 18];
    args[..14].copy_from_slice(&conv_args(rows.samples, rows.conv)?);
    args[14..].copy_from_slice(&[i("cols", rows.cols)?, x, col, gain_slot]);
    cuda.launch(k, launch::elementwise(rows.samples * ho * wo * rows.cols), &args)
}
