//! Patch (im2col) packing of FROG's patch matrix `X`.
//!
//! The patches of one sample form an `L x D` block (row `l` is output
//! position `l`, columns in weight-row order `(c_in, kh, kw)`), stored with
//! row stride `ld >= D` so FROG can append its bias column. The training
//! convolutions of `nn` pack the transposed `D x P` layout instead
//! (`nn::patches`, tested against this one).

use frog_core::{Conv2d, Layer, ShapeError};

/// For every kernel offset and output coordinate along one axis, the input
/// coordinate, or `None` where the window covers padding.
#[inline]
fn src_coord(o: usize, k: usize, stride: usize, pad: usize, dil: usize, size: usize) -> Option<usize> {
    (o * stride + k * dil).checked_sub(pad).filter(|&v| v < size)
}

/// Writes the `L x D` patches of one sample `x` (`[c_in, H, W]`) to
/// `out[l*ld + d]`, zeros where the window covers padding.
///
/// An invalid geometry, `ld < D`, or an `x` or `out` too short is an error
/// and writes nothing.
pub fn im2col<T: Copy + Default>(conv: &Conv2d, x: &[T], out: &mut [T], ld: usize) -> Result<(), ShapeError> {
    let layer = Layer::conv2d(*conv, false);
    layer.validate()?;
    let (d, l) = (layer.weight_cols(), layer.positions());
    if ld < d {
        return Err(ShapeError::BufferLength { what: "im2col row stride", expected: d, actual: ld });
    }
    let needed = (l - 1).checked_mul(ld).and_then(|v| v.checked_add(d)).ok_or(ShapeError::TooLarge { what: "im2col output" })?;
    for (what, expected, actual) in [("im2col x", layer.input_len(), x.len()), ("im2col out", needed, out.len())] {
        if actual < expected {
            return Err(ShapeError::BufferLength { what, expected, actual });
        }
    }
    im2col_valid(conv, x, out, ld);
    Ok(())
}

/// [`im2col`] for a geometry and buffers the caller has checked, from an
/// `x` of any type that converts to `T` without loss (the same type, or
/// bf16/f16 inputs packed into f32/f64 patches).
pub(crate) fn im2col_valid<S: Copy, T: Copy + Default + From<S>>(conv: &Conv2d, x: &[S], out: &mut [T], ld: usize) {
    let Some([ho, wo]) = conv.output_hw() else { return };
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
                            (Some(iy), Some(ix)) => T::from(plane[iy * w + ix]),
                            _ => T::default(),
                        };
                        d += 1;
                    }
                }
            }
        }
    }
}
