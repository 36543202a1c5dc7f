//! Patch (im2col) packing for convolutions, shared by FROG's products and
//! the `nn` convolution kernels.
//!
//! One layout serves both: the patches of one sample form an `L x D` block
//! (row `l` is output position `l`, columns in weight-row order
//! `(c_in, kh, kw)`), stored with row stride `ld >= D` so FROG can append its
//! bias column. A convolution's output `[c_out, L]` is then `W X^T`, its
//! weight gradient `dY X`, and its input gradient `col2im(dY^T W)`.

use frog_core::Conv2d;

/// Output size of `conv`; the caller has validated the geometry.
fn out_hw(conv: &Conv2d) -> [usize; 2] {
    conv.output_hw().expect("validated convolution geometry")
}

/// For every kernel offset and output coordinate along one axis, the input
/// coordinate, or `None` where the window covers padding.
#[inline]
fn src_coord(o: usize, k: usize, stride: usize, pad: usize, dil: usize, size: usize) -> Option<usize> {
    (o * stride + k * dil).checked_sub(pad).filter(|&v| v < size)
}

/// Writes the `L x D` patches of one sample `x` (`[c_in, H, W]`) to
/// `out[l*ld + d]`, zeros where the window covers padding.
pub fn im2col<T: Copy + Default>(conv: &Conv2d, x: &[T], out: &mut [T], ld: usize) {
    let [ho, wo] = out_hw(conv);
    let [h, w] = conv.input_hw;
    let [kh, kw] = conv.kernel;
    for oy in 0..ho {
        for ox in 0..wo {
            let row = &mut out[(oy * wo + ox) * ld..];
            let mut d = 0;
            for c in 0..conv.c_in {
                let plane = &x[c * h * w..(c + 1) * h * w];
                for ky in 0..kh {
                    let iy = src_coord(oy, ky, conv.stride[0], conv.padding[0], conv.dilation[0], h);
                    for kx in 0..kw {
                        let ix = src_coord(ox, kx, conv.stride[1], conv.padding[1], conv.dilation[1], w);
                        row[d] = match (iy, ix) {
                            (Some(iy), Some(ix)) => plane[iy * w + ix],
                            _ => T::default(),
                        };
                        d += 1;
                    }
                }
            }
        }
    }
}

/// The adjoint of [`im2col`]: adds every patch entry `cols[l*ld + d]` back
/// into the input position it came from, `dx` being `[c_in, H, W]`.
pub fn col2im<T: Copy + std::ops::AddAssign>(conv: &Conv2d, cols: &[T], ld: usize, dx: &mut [T]) {
    let [ho, wo] = out_hw(conv);
    let [h, w] = conv.input_hw;
    let [kh, kw] = conv.kernel;
    for oy in 0..ho {
        for ox in 0..wo {
            let row = &cols[(oy * wo + ox) * ld..];
            let mut d = 0;
            for c in 0..conv.c_in {
                for ky in 0..kh {
                    let iy = src_coord(oy, ky, conv.stride[0], conv.padding[0], conv.dilation[0], h);
                    for kx in 0..kw {
                        let ix = src_coord(ox, kx, conv.stride[1], conv.padding[1], conv.dilation[1], w);
                        if let (Some(iy), Some(ix)) = (iy, ix) {
                            dx[c * h * w + iy * w + ix] += row[d];
                        }
                        d += 1;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn col2im_is_the_adjoint_of_im2col() {
        // <im2col(x), c> == <x, col2im(c)> for any x and c.
        let conv = Conv2d { c_in: 2, c_out: 1, kernel: [2, 3], stride: [2, 1], padding: [1, 0], dilation: [1, 2], input_hw: [5, 7] };
        let [ho, wo] = conv.output_hw().unwrap();
        let (l, d, ld) = (ho * wo, 2 * 6, 13);
        let x: Vec<f64> = (0..2 * 35).map(|i| (i as f64 * 0.37).sin()).collect();
        let c: Vec<f64> = (0..l * ld).map(|i| (i as f64 * 0.11).cos()).collect();
        let mut cols = vec![0.0; l * ld];
        im2col(&conv, &x, &mut cols, ld);
        let mut back = vec![0.0; x.len()];
        col2im(&conv, &c, ld, &mut back);
        let lhs: f64 = (0..l).flat_map(|r| (0..d).map(move |k| r * ld + k)).map(|i| cols[i] * c[i]).sum();
        let rhs: f64 = x.iter().zip(&back).map(|(a, b)| a * b).sum();
        assert!((lhs - rhs).abs() < 1e-12);
    }
}
