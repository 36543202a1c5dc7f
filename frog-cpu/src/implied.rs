//! The weight and bias gradients a layer's inputs and output gradients
//! imply: what autograd computes for a linear or convolution layer, for
//! checking that a framework handed FROG matching tensors (see
//! [`crate::host::HostFrog::check_gradients`]).

use frog_core::{Layer, LayerKind, ShapeError};

use crate::gemm::{matmul, Real, View};
use crate::im2col::im2col_valid;
use crate::pool::ThreadPool;

/// Entries of the scratch [`implied_gradients`] needs for `layer`: one
/// sample's patches (`L * D`).
pub fn implied_scratch_len(layer: &Layer) -> usize {
    layer.positions().saturating_mul(layer.weight_cols())
}

/// A layer's batch as autograd saw it, in PyTorch layouts.
#[derive(Clone, Copy, Debug)]
pub struct LayerIo<'a, T> {
    /// The inputs, [`Layer::input_len`] entries a sample.
    pub x: &'a [T],
    /// The output gradients, [`Layer::output_len`] entries a sample.
    pub y: &'a [T],
}

/// The gradients [`implied_gradients`] writes.
#[derive(Debug)]
pub struct ImpliedGrads<'a, T> {
    /// The weight's, `R x D`.
    pub weight: &'a mut [T],
    /// The bias's, `R`, for a layer with a bias.
    pub bias: Option<&'a mut [T]>,
}

/// `weight = sum_{i,l} Y[i,:,l] P[i,l]^T` (`R x D`, the weight's layout)
/// and `bias[j] = sum_{i,l} Y[i,j,l]` over the `batch` samples of `io`:
/// the gradients autograd computes from the same inputs and output
/// gradients. `scratch` holds one sample's patches
/// ([`implied_scratch_len`]). Wrong lengths are an error that writes
/// nothing.
pub fn implied_gradients<T: Real>(pool: &ThreadPool, layer: &Layer, batch: usize, io: LayerIo<'_, T>, scratch: &mut [T], out: ImpliedGrads<'_, T>) -> Result<(), ShapeError> {
    let (LayerIo { x, y }, ImpliedGrads { weight, bias }) = (io, out);
    layer.validate()?;
    let (rows, d, l) = (layer.rows(), layer.weight_cols(), layer.positions());
    let (inp, out) = (layer.input_len(), layer.output_len());
    let lens = [
        ("x", batch.checked_mul(inp), x.len()),
        ("y", batch.checked_mul(out), y.len()),
        ("weight gradient", rows.checked_mul(d), weight.len()),
    ];
    for (what, expected, actual) in lens {
        let expected = expected.ok_or(ShapeError::TooLarge { what })?;
        if expected != actual {
            return Err(ShapeError::BufferLength { what, expected, actual });
        }
    }
    if scratch.len() < implied_scratch_len(layer) {
        return Err(ShapeError::BufferLength { what: "patch scratch", expected: implied_scratch_len(layer), actual: scratch.len() });
    }
    if !matches!(layer.kind, LayerKind::Conv2d(_) | LayerKind::Linear { .. }) {
        return Err(ShapeError::Unsupported { what: "a layer kind whose gradient the check does not know" });
    }
    if let Some(b) = &bias {
        if b.len() != rows {
            return Err(ShapeError::BufferLength { what: "bias gradient", expected: rows, actual: b.len() });
        }
    }
    weight.fill(T::ZERO);
    let mut bias = bias;
    if let Some(b) = bias.as_deref_mut() {
        b.fill(T::ZERO);
    }
    for (xi, yi) in x.chunks_exact(inp).zip(y.chunks_exact(out)) {
        // Y_i as R x L (a conv's [R, L] rows, a linear layer's [T, R]
        // transposed) and the sample's patches as L x D.
        let (ys, patches) = match &layer.kind {
            LayerKind::Conv2d(conv) => {
                im2col_valid(conv, xi, &mut scratch[..l * d], d);
                (View::row_major(yi, rows, l), View::row_major(&scratch[..l * d], l, d))
            }
            // Linear (the only other kind, checked above).
            _ => (View::row_major(yi, l, rows).t(), View::row_major(xi, l, d)),
        };
        matmul(pool, weight, true, ys, patches);
        if let Some(b) = bias.as_deref_mut() {
            let (row_stride, pos_stride) = layer.output_strides();
            for (j, b) in b.iter_mut().enumerate() {
                *b += (0..l).fold(T::ZERO, |s, pos| s + yi[j * row_stride + pos * pos_stride]);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use frog_core::Conv2d;

    /// Against the sums written out, on a conv with padding and stride and
    /// a linear layer over tokens.
    #[test]
    fn the_implied_gradients_are_the_sums_autograd_takes() {
        let pool = ThreadPool::new(2).unwrap();
        let val = |k: usize, a: f64| (k as f64 * a).sin();
        for layer in [Layer::conv2d(Conv2d::new(2, 3, 3, [5, 4]).padding(1).stride(2), true), Layer::linear_tokens(4, 3, 2, true)] {
            let batch = 3;
            let x: Vec<f64> = (0..batch * layer.input_len()).map(|k| val(k, 0.37)).collect();
            let y: Vec<f64> = (0..batch * layer.output_len()).map(|k| val(k, 0.53)).collect();
            let (rows, d, l) = (layer.rows(), layer.weight_cols(), layer.positions());
            let mut idx = vec![0; batch * l * d];
            layer.patch_indices(batch, &mut idx).unwrap();
            let (rs, ps) = layer.output_strides();
            let yv = |i: usize, j: usize, pos: usize| y[i * layer.output_len() + j * rs + pos * ps];
            let (mut want, mut want_b) = (vec![0.0; rows * d], vec![0.0; rows]);
            for i in 0..batch {
                for pos in 0..l {
                    for j in 0..rows {
                        want_b[j] += yv(i, j, pos);
                        for c in 0..d {
                            let src = idx[(i * l + pos) * d + c];
                            let p = if src == frog_core::PATCH_PADDING { 0.0 } else { x[src] };
                            want[j * d + c] += yv(i, j, pos) * p;
                        }
                    }
                }
            }
            let (mut got, mut got_b, mut scratch) = (vec![9.0; rows * d], vec![9.0; rows], vec![0.0; implied_scratch_len(&layer)]);
            implied_gradients(&pool, &layer, batch, LayerIo { x: &x, y: &y }, &mut scratch, ImpliedGrads { weight: &mut got, bias: Some(&mut got_b) }).unwrap();
            assert!(got.iter().zip(&want).chain(got_b.iter().zip(&want_b)).all(|(a, b)| (a - b).abs() < 1e-12), "{layer:?}");
            let e = implied_gradients(&pool, &layer, batch, LayerIo { x: &x[1..], y: &y }, &mut scratch, ImpliedGrads { weight: &mut got, bias: None }).unwrap_err();
            assert!(matches!(e, ShapeError::BufferLength { what: "x", .. }), "{e}");
        }
    }
}
