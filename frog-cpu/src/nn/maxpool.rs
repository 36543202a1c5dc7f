//! Max-pooling over `k x k` windows at stride `k` ([`PoolShape`]),
//! PyTorch's `MaxPool2d(k)`, the pooling of airbench's blocks.
//!
//! The forward pass records, per output, which entry of its window it
//! took (the offset `r*k + c`, in a buffer of the output's size), so the
//! backward pass needs neither the input nor a search: why not recompute
//! from `x`: the engine would then have to keep every pooled
//! convolution's output (four times the pooled size) only for this.

use super::entries;
use super::operands::PoolShape;
use crate::gemm::Real;
use crate::parts::Rows;
use crate::pool::ThreadPool;

/// The sizes of `s`: output plane, entries of an input and an output plane,
/// and of all input and output planes. Panics when no window fits.
fn sizes(what: &str, s: PoolShape) -> ([usize; 2], usize, usize, usize, usize) {
    let [ho, wo] = s.output_hw().unwrap_or_else(|| panic!("{what}: no {k}x{k} window fits {:?}", s.input_hw, k = s.kernel));
    let [h, w] = s.input_hw;
    (
        [ho, wo],
        entries(what, &[h, w]),
        entries(what, &[ho, wo]),
        entries(what, &[s.planes, h, w]),
        entries(what, &[s.planes, ho, wo]),
    )
}

/// `y[p, oy, ox]` = the largest entry of the window at `(oy*k, ox*k)` of
/// plane `p` of `x`, and `argmax` its offset `r*k + c` in the window.
/// Which entry, PyTorch's rule: the first maximum in the window's row-major
/// order, unless the window holds a NaN, which then is the output (the
/// last NaN, as each one takes over from what came before).
pub fn max_pool2d<T: Real>(pool: &ThreadPool, s: PoolShape, x: &[T], y: &mut [T], argmax: &mut [T]) {
    let ([_, wo], in_plane, out_plane, in_len, out_len) = sizes("max pool", s);
    assert!(x.len() >= in_len && y.len() >= out_len && argmax.len() >= out_len, "max pool: x, y or argmax too short");
    let (k, w) = (s.kernel, s.input_hw[1]);
    let threads = pool.threads();
    let parts = (Rows::new(&mut y[..out_len], s.planes, out_plane, threads), Rows::new(&mut argmax[..out_len], s.planes, out_plane, threads));
    let lowest = T::of_f64(f64::NEG_INFINITY);
    pool.split(parts, |_, ((planes, y), (_, argmax))| {
        for (i, p) in planes.enumerate() {
            let x = &x[p * in_plane..][..in_plane];
            let (y, argmax) = (&mut y[i * out_plane..][..out_plane], &mut argmax[i * out_plane..][..out_plane]);
            for (o, (y, at)) in y.iter_mut().zip(argmax).enumerate() {
                let (oy, ox) = (o / wo, o % wo);
                let (mut best, mut best_at) = (lowest, 0);
                for r in 0..k {
                    let row = &x[(oy * k + r) * w + ox * k..][..k];
                    for (c, &v) in row.iter().enumerate() {
                        if v > best || v.as_f64().is_nan() {
                            (best, best_at) = (v, r * k + c);
                        }
                    }
                }
                *y = best;
                *at = T::of_f64(best_at as f64);
            }
        }
    });
}

/// Backward of [`max_pool2d`]: `dx` (overwritten) is `dy[o]` at the entry
/// output `o` took (`argmax`, from the forward pass) and 0 elsewhere,
/// including the rows and columns no window covers.
pub fn max_pool2d_backward<T: Real>(pool: &ThreadPool, s: PoolShape, dy: &[T], argmax: &[T], dx: &mut [T]) {
    let ([_, wo], in_plane, out_plane, in_len, out_len) = sizes("max pool backward", s);
    assert!(dy.len() >= out_len && argmax.len() >= out_len && dx.len() >= in_len, "max pool backward: dy, argmax or dx too short");
    let (k, w) = (s.kernel, s.input_hw[1]);
    pool.split(Rows::new(&mut dx[..in_len], s.planes, in_plane, pool.threads()), |_, (planes, dx)| {
        for (i, p) in planes.enumerate() {
            let dx = &mut dx[i * in_plane..][..in_plane];
            dx.fill(T::zero());
            let outs = p * out_plane..(p + 1) * out_plane;
            for (o, (&g, &at)) in dy[outs.clone()].iter().zip(&argmax[outs]).enumerate() {
                let at = at.as_f64();
                assert!(at >= 0.0 && at < (k * k) as f64, "max pool backward: argmax {at} is not an offset in a {k}x{k} window");
                let (r, c) = (at as usize / k, at as usize % k);
                dx[(o / wo * k + r) * w + o % wo * k + c] = g;
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The windows of a pooling in output order, each as its entries'
    /// indices into the input, in row-major order.
    fn windows(s: PoolShape) -> Vec<Vec<usize>> {
        let ([ho, wo], k, [h, w]) = (s.output_hw().unwrap(), s.kernel, s.input_hw);
        let mut out = Vec::new();
        for p in 0..s.planes {
            for oy in 0..ho {
                for ox in 0..wo {
                    out.push((0..k * k).map(|j| (p * h + oy * k + j / k) * w + ox * k + j % k).collect());
                }
            }
        }
        out
    }

    /// Forward and backward against the definition, in f64 and f32: odd
    /// sizes (the floor drops a row and a column), `k` 2 and 3, planes of
    /// both threads; ties go to the first maximum of the window.
    #[test]
    fn pooling_matches_the_definition() {
        fn check<T: Real>() {
            let pool = ThreadPool::new(2).unwrap();
            for (s, k) in [([7, 9], 2), ([3, 3], 3), ([31, 31], 2), ([8, 7], 3)] {
                let shape = PoolShape { planes: 5, input_hw: s, kernel: k };
                // Few distinct values, so windows hold ties.
                let x: Vec<T> = (0..5 * s[0] * s[1]).map(|i| T::of_f64(((i * 7919) % 13) as f64 - 6.0)).collect();
                let [ho, wo] = shape.output_hw().unwrap();
                let n = 5 * ho * wo;
                let (mut y, mut argmax) = (vec![T::zero(); n], vec![T::zero(); n]);
                max_pool2d(&pool, shape, &x, &mut y, &mut argmax);
                let dy: Vec<T> = (0..n).map(|i| T::of_f64(i as f64 + 1.0)).collect();
                let mut dx = vec![T::of_f64(9.0); x.len()];
                max_pool2d_backward(&pool, shape, &dy, &argmax, &mut dx);
                let mut want_dx = vec![T::zero(); x.len()];
                for (o, win) in windows(shape).iter().enumerate() {
                    let max = win.iter().map(|&i| x[i]).fold(T::of_f64(f64::NEG_INFINITY), |a, b| if b > a { b } else { a });
                    let first = win.iter().position(|&i| x[i] == max).unwrap();
                    assert_eq!(y[o], max, "{s:?} k {k}: output {o}");
                    assert_eq!(argmax[o].as_f64(), first as f64, "{s:?} k {k}: output {o} takes the first maximum");
                    want_dx[win[first]] = dy[o];
                }
                assert!(dx == want_dx, "{s:?} k {k}: the gradient goes to each window's maximum, 0 elsewhere");
            }
        }
        check::<f64>();
        check::<f32>();
    }

    /// PyTorch's rule on one 3x3 window: a NaN is the output wherever it
    /// is, the last of several; infinities compare as values; a window of
    /// -infinity takes its first entry.
    #[test]
    fn nan_and_infinities_follow_pytorch() {
        let pool = ThreadPool::new(1).unwrap();
        let (nan, inf) = (f64::NAN, f64::INFINITY);
        let shape = PoolShape { planes: 1, input_hw: [3, 3], kernel: 3 };
        let cases: [([f64; 9], usize); 5] = [
            ([1.0, 5.0, 2.0, 5.0, nan, 3.0, 9.0, 0.0, 1.0], 4),
            ([nan, 5.0, 2.0, 5.0, 1.0, 3.0, 9.0, nan, 1.0], 7),
            ([1.0, inf, 2.0, 5.0, inf, 3.0, 9.0, 0.0, 1.0], 1),
            ([-inf; 9], 0),
            ([-inf, -inf, -inf, -inf, -inf, -inf, -inf, -inf, -1e300], 8),
        ];
        for (x, at) in cases {
            let (mut y, mut argmax) = ([0.0], [0.0]);
            max_pool2d(&pool, shape, &x, &mut y, &mut argmax);
            assert_eq!(argmax[0], at as f64, "{x:?}");
            assert!(y[0] == x[at] || (y[0].is_nan() && x[at].is_nan()), "{x:?}: {}", y[0]);
        }
    }

    #[test]
    #[should_panic(expected = "max pool: no 2x2 window fits [1, 5]")]
    fn a_window_larger_than_the_input_panics() {
        let pool = ThreadPool::new(1).unwrap();
        let s = PoolShape { planes: 1, input_hw: [1, 5], kernel: 2 };
        max_pool2d(&pool, s, &[0.0f64; 5], &mut [0.0; 2], &mut [0.0; 2]);
    }

    #[test]
    #[should_panic(expected = "max pool backward: argmax 4 is not an offset")]
    fn a_foreign_argmax_panics() {
        let pool = ThreadPool::new(1).unwrap();
        let s = PoolShape { planes: 1, input_hw: [2, 2], kernel: 2 };
        max_pool2d_backward(&pool, s, &[1.0f64], &[4.0], &mut [0.0; 4]);
    }
}
