//! K-FROG's extra products on the CPU (frog-core's `KfrogBackend`).
//!
//! The column norms read the sampled inputs directly, not the packed
//! patches, so they hold whatever layout `pack_patches` chose; they apply
//! the gain it left in the scratch, as every product does.

use frog_core::{KfrogBackend, Layer, LayerKind, Patches};

use crate::backend::{gain, need, saturate, unknown_kind, Cpu, CpuError};
use crate::gemm::Real;

impl<T: Real> KfrogBackend for Cpu<T> {
    fn y_sq_sums(&self, layer: &Layer, r: usize, y: &Vec<T>, scale: T, out: &mut Vec<T>) -> Result<(), CpuError> {
        layer.validate().map_err(CpuError::InvalidLayer)?;
        let (rows, l, per) = (layer.rows(), layer.positions(), layer.output_len());
        need("y_sq_sums: y", y, r.saturating_mul(per))?;
        need("y_sq_sums: out", out, rows)?;
        let (row_stride, pos_stride) = layer.output_strides();
        for (j, o) in out[..rows].iter_mut().enumerate() {
            let mut sum = T::ZERO;
            for i in 0..r {
                for pos in 0..l {
                    let v = y[i * per + j * row_stride + pos * pos_stride];
                    sum += v * v;
                }
            }
            *o = saturate(scale * sum);
        }
        Ok(())
    }

    fn y_average(&self, rows: usize, fresh: T, y_diag: &Vec<T>, keep: T, avg: &mut Vec<T>) -> Result<(), CpuError> {
        need("y_average: y_diag", y_diag, rows)?;
        need("y_average: avg", avg, rows)?;
        avg[..rows].iter_mut().zip(y_diag).for_each(|(a, &y)| *a = saturate(fresh * y + keep * *a));
        Ok(())
    }

    fn patch_col_norms(&self, p: &Patches<'_, Self>, scale: T, out: &mut Vec<T>) -> Result<(), CpuError> {
        let layer = p.layer;
        layer.validate().map_err(CpuError::InvalidLayer)?;
        let (d, inp) = (layer.weight_cols(), layer.input_len());
        let x = p.x.unwrap_or_default();
        need("patch_col_norms: x", x, p.r.saturating_mul(inp))?;
        need("patch_col_norms: out", out, layer.cols())?;
        let gain = gain(p);
        let sums = &mut out[..layer.cols()];
        sums.iter_mut().for_each(|s| *s = T::ZERO);
        for xi in x[..p.r * inp].chunks_exact(inp) {
            match &layer.kind {
                LayerKind::Linear { d_in, .. } => {
                    for token in xi.chunks_exact(*d_in) {
                        sums.iter_mut().zip(token).for_each(|(s, &v)| *s += (gain * v) * (gain * v));
                    }
                }
                LayerKind::Conv2d(c) => {
                    let ([h, w], [ho, wo]) = (c.input_hw, c.output_hw().unwrap_or([0, 0]));
                    let [kh, kw] = c.kernel;
                    for (col, s) in sums[..d].iter_mut().enumerate() {
                        let (ci, ky, kx) = (col / (kh * kw), col % (kh * kw) / kw, col % kw);
                        let plane = &xi[ci * h * w..(ci + 1) * h * w];
                        for oy in 0..ho {
                            let Some(iy) = (oy * c.stride[0] + ky * c.dilation[0]).checked_sub(c.padding[0]).filter(|&v| v < h) else { continue };
                            for ox in 0..wo {
                                if let Some(ix) = (ox * c.stride[1] + kx * c.dilation[1]).checked_sub(c.padding[1]).filter(|&v| v < w) {
                                    let v = gain * plane[iy * w + ix];
                                    *s += v * v;
                                }
                            }
                        }
                    }
                }
                _ => return Err(unknown_kind()),
            }
        }
        if layer.bias {
            // The constant feature, the gain: its square per position.
            sums[d] = T::of_f64((p.r * layer.positions()) as f64) * gain * gain;
        }
        sums.iter_mut().for_each(|s| *s = (scale * *s).sqrt());
        Ok(())
    }

    fn patch_gain(&self, p: &Patches<'_, Self>, out: &mut Vec<T>) -> Result<(), CpuError> {
        need("patch_gain: out", out, 1)?;
        out[0] = gain(p);
        Ok(())
    }

    fn fill(&self, n: usize, value: T, buf: &mut Vec<T>) -> Result<(), CpuError> {
        need("fill: buf", buf, n)?;
        buf[..n].iter_mut().for_each(|v| *v = value);
        Ok(())
    }
}
