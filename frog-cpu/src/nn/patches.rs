//! Patch packing in the transposed layout the training convolutions use:
//! `D x P` (row `d = (c, ky, kx)`, column = output position of a group of
//! samples), where `crate::im2col` builds FROG's `P x D`.
//!
//! Why a second layout: in `D x P` every row is a run of output positions,
//! and for one output row those read one input row at a fixed stride, so
//! packing is a strided (for stride 1, contiguous) copy with the padding
//! handled once per run instead of a bounds check per entry. On the
//! small-channel layers of the CPU study the per-entry `P x D` packing
//! took more time than the GEMMs. The products accept either layout.

use frog_core::Conv2d;

use crate::gemm::Real;

/// For kernel offset `k` along an axis: the first output coordinate whose
/// input coordinate is inside `0..size`, one past the last, and the input
/// coordinate of the first (all with `stride`, `pad`, `dil`).
#[inline]
fn valid_run(out: usize, k: usize, stride: usize, pad: usize, dil: usize, size: usize) -> (usize, usize, usize) {
    let off = k * dil;
    // o*stride + off >= pad  <=>  o >= ceil((pad - off) / stride)
    let lo = pad.saturating_sub(off).div_ceil(stride);
    // o*stride + off - pad < size  <=>  o*stride < size + pad - off
    let hi = if size + pad > off { (size + pad - off).div_ceil(stride).min(out) } else { 0 };
    let lo = lo.min(hi);
    (lo, hi, (lo * stride + off).saturating_sub(pad))
}

/// Calls `f(d, iy_row_start_or_none, col, run)` for every row `d` of the
/// patch matrix of one sample and every output row `oy`: `col` is the
/// column of output `(oy, 0)`, and `run = (lo, hi, ix0)` the valid output
/// columns and the input column of `lo`.
#[inline]
fn for_each_run(conv: &Conv2d, mut f: impl FnMut(usize, Option<usize>, usize, (usize, usize, usize))) {
    let [ho, wo] = conv.output_hw().expect("a valid convolution geometry");
    let [h, w] = conv.input_hw;
    let [kh, kw] = conv.kernel;
    for c in 0..conv.c_in {
        for ky in 0..kh {
            for kx in 0..kw {
                let d = (c * kh + ky) * kw + kx;
                let run = valid_run(wo, kx, conv.stride[1], conv.padding[1], conv.dilation[1], w);
                for oy in 0..ho {
                    let iy = (oy * conv.stride[0] + ky * conv.dilation[0]).checked_sub(conv.padding[0]).filter(|&v| v < h);
                    f(d, iy.map(|iy| (c * h + iy) * w), oy * wo, run);
                }
            }
        }
    }
}

/// Writes the patches of one sample `x` (`[c_in, H, W]`) into columns
/// `col0..col0 + L` of the `D x ld` row-major matrix `out`.
pub fn pack_t<T: Real>(conv: &Conv2d, x: &[T], out: &mut [T], ld: usize, col0: usize) {
    let wo = conv.output_hw().expect("a valid convolution geometry")[1];
    let sw = conv.stride[1];
    for_each_run(conv, |d, src, col, (lo, hi, ix0)| {
        let row = &mut out[d * ld + col0 + col..][..wo];
        let Some(src) = src else {
            row.fill(T::zero());
            return;
        };
        row[..lo].fill(T::zero());
        row[hi..].fill(T::zero());
        let input = &x[src + ix0..];
        if sw == 1 {
            row[lo..hi].copy_from_slice(&input[..hi - lo]);
        } else {
            for (v, &i) in row[lo..hi].iter_mut().zip(input.iter().step_by(sw)) {
                *v = i;
            }
        }
    });
}

/// The adjoint of [`pack_t`]: adds columns `col0..col0 + L` of the `D x ld`
/// matrix `cols` back into the input positions they came from in `dx`.
pub fn unpack_add_t<T: Real>(conv: &Conv2d, cols: &[T], ld: usize, col0: usize, dx: &mut [T]) {
    let wo = conv.output_hw().expect("a valid convolution geometry")[1];
    let sw = conv.stride[1];
    for_each_run(conv, |d, src, col, (lo, hi, ix0)| {
        let Some(src) = src else { return };
        let row = &cols[d * ld + col0 + col..][..wo];
        let target = &mut dx[src + ix0..];
        if sw == 1 {
            for (t, &v) in target[..hi - lo].iter_mut().zip(&row[lo..hi]) {
                *t += v;
            }
        } else {
            for (t, &v) in target.iter_mut().step_by(sw).zip(&row[lo..hi]) {
                *t += v;
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::im2col::im2col;

    #[test]
    fn transposed_packing_matches_im2col_and_its_adjoint() {
        let convs = [
            Conv2d::new(3, 4, 3, [6, 7]).padding(1),
            Conv2d::new(2, 4, 3, [9, 8]).stride(2).padding(1),
            Conv2d::new(5, 2, 1, [8, 8]).stride(2),
            Conv2d { c_in: 2, c_out: 1, kernel: [2, 3], stride: [2, 1], padding: [1, 0], dilation: [1, 2], groups: 1, input_hw: [5, 7] },
            Conv2d { c_in: 1, c_out: 1, kernel: [3, 3], stride: [1, 3], padding: [2, 2], dilation: [2, 1], groups: 1, input_hw: [4, 4] },
        ];
        for conv in convs {
            let [ho, wo] = conv.output_hw().unwrap();
            let (l, d) = (ho * wo, conv.c_in * conv.kernel[0] * conv.kernel[1]);
            let n_in = conv.c_in * conv.input_hw[0] * conv.input_hw[1];
            let x: Vec<f64> = (0..n_in).map(|i| (i as f64 * 0.37).sin()).collect();
            let mut want = vec![0.0; l * d];
            im2col(&conv, &x, &mut want, d).unwrap();
            // Sample placed at column offset 3 of a wider matrix.
            let ld = l + 5;
            let mut got = vec![f64::NAN; d * ld];
            pack_t(&conv, &x, &mut got, ld, 3);
            for p in 0..l {
                for k in 0..d {
                    assert_eq!(got[k * ld + 3 + p], want[p * d + k], "{conv:?} position {p} column {k}");
                }
            }
            // <pack(x), c> == <x, unpack(c)>
            let c: Vec<f64> = (0..d * ld).map(|i| (i as f64 * 0.11).cos()).collect();
            let mut back = vec![0.0; n_in];
            unpack_add_t(&conv, &c, ld, 3, &mut back);
            let lhs: f64 = (0..d).flat_map(|k| (0..l).map(move |p| k * ld + 3 + p)).map(|i| got[i] * c[i]).sum();
            let rhs: f64 = x.iter().zip(&back).map(|(a, b)| a * b).sum();
            assert!((lhs - rhs).abs() < 1e-12, "{conv:?}");
        }
    }
}
