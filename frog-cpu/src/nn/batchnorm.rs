//! BatchNorm2d in train and eval mode, with the residual add and the ReLU
//! that follow it in a ResNet fused into the same pass over the data.
//!
//! Work is split by channel, so every thread owns whole statistics and no
//! reduction crosses threads.

use super::entries;
use super::operands::{BnGrads, BnParams, BnRunning, BnSaved, BnShape, BnTrainStats, Epilogue};
use crate::gemm::Real;
use crate::parts::{Grid, Rows, Split};
use crate::pool::ThreadPool;

/// Partial sums a plane's reductions keep apart. Why: one running sum is
/// a chain of dependent additions, one per entry, that cannot vectorize;
/// that chain made BatchNorm's backward pass a fourteenth of a ResNet-18
/// training step.
const LANES: usize = 16;

/// `sum_i f(a[i], b[i])` for each of the `K` values `f` returns, over the
/// common length of `a` and `b`, in [`LANES`] interleaved partial sums.
#[inline(always)]
pub(super) fn sums<T: Real, const K: usize>(a: &[T], b: &[T], f: impl Fn(T, T) -> [T; K]) -> [T; K] {
    let mut acc = [[T::zero(); LANES]; K];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (a, b) in ca.zip(cb) {
        for (l, (&a, &b)) in a.iter().zip(b).enumerate() {
            for (acc, v) in acc.iter_mut().zip(f(a, b)) {
                acc[l] += v;
            }
        }
    }
    let mut out = acc.map(|lanes| lanes.iter().fold(T::zero(), |s, &v| s + v));
    for (&a, &b) in ra.iter().zip(rb) {
        out.iter_mut().zip(f(a, b)).for_each(|(o, v)| *o += v);
    }
    out
}

/// `y = x*scale + shift (+ residual)`, then ReLU, over one plane.
#[inline]
fn apply<T: Real>(x: &[T], scale: T, shift: T, residual: Option<&[T]>, relu: bool, y: &mut [T]) {
    let zero = T::zero();
    match residual {
        Some(r) => {
            for ((y, &x), &r) in y.iter_mut().zip(x).zip(r) {
                let v = x * scale + shift + r;
                *y = if relu && v < zero { zero } else { v };
            }
        }
        None => {
            for (y, &x) in y.iter_mut().zip(x) {
                let v = x * scale + shift;
                *y = if relu && v < zero { zero } else { v };
            }
        }
    }
}

/// `buf`'s `[B, C, HW]` planes, the channels split across the pool.
fn planes<'a, T>(pool: &ThreadPool, shape: BnShape, buf: &'a mut [T]) -> Grid<'a, T> {
    Grid::new(buf, [shape.batch, shape.channels, shape.hw], [1, pool.threads()])
}

/// `buf`'s per-channel entries, split as [`planes`] splits the channels.
fn per_channel<'a, T>(pool: &ThreadPool, shape: BnShape, buf: &'a mut [T]) -> Rows<'a, T> {
    Rows::new(&mut buf[..shape.channels], shape.channels, 1, pool.threads())
}

/// Normalizes `x` into `y` channel by channel with the `(scale, shift)`
/// that `coef(c, k, stats)` computes for channel `c`, the `k`-th of its
/// thread, which owns part `stats` of the per-channel outputs.
fn normalize<T: Real, S: Split>(
    pool: &ThreadPool,
    shape: BnShape,
    x: &[T],
    epi: Epilogue<'_, [T]>,
    y: &mut [T],
    stats: S,
    coef: impl Fn(usize, usize, &mut S::Part) -> (T, T) + Sync,
) {
    let len = entries("batch norm", &[shape.batch, shape.channels, shape.hw]);
    assert!(x.len() >= len && y.len() >= len, "batch norm: x or y too short");
    assert!(epi.residual.is_none_or(|r| r.len() >= len), "batch norm: residual too short");
    let hw = shape.hw;
    pool.split((planes(pool, shape, y), stats), |_, (mut y, mut stats)| {
        for (k, c) in y.rows().enumerate() {
            let (scale, shift) = coef(c, k, &mut stats);
            for b in 0..shape.batch {
                let p = shape.plane(b, c);
                let y = &mut y.plane(b)[k * hw..][..hw];
                apply(&x[p.clone()], scale, shift, epi.residual.map(|r| &r[p]), epi.relu, y);
            }
        }
    });
}

/// Train mode: normalizes with the batch mean and biased batch variance
/// over `(B, H, W)`, stores the mean and `1/sqrt(var + eps)` per channel for
/// the backward pass, and updates the running statistics as PyTorch does
/// (`running = (1-m)*running + m*stat`, the variance unbiased by `n/(n-1)`).
pub fn batch_norm_train<T: Real>(
    pool: &ThreadPool,
    shape: BnShape,
    x: &[T],
    params: BnParams<'_, [T]>,
    stats: BnTrainStats<'_, [T]>,
    epi: Epilogue<'_, [T]>,
    y: &mut [T],
) {
    let c = shape.channels;
    let BnTrainStats { running: BnRunning { mean: rmean, var: rvar }, momentum, saved: BnSaved { mean, invstd } } = stats;
    assert!(rmean.len() >= c && rvar.len() >= c && mean.len() >= c && invstd.len() >= c, "batch norm: statistics too short");
    let n = shape.batch.saturating_mul(shape.hw) as f64;
    let stats = [rmean, rvar, mean, invstd].map(|s| per_channel(pool, shape, s));
    // Statistics and normalization of a channel run back to back on one
    // thread, so the second pass over its planes mostly hits the cache.
    normalize(pool, shape, x, epi, y, stats, |ch, k, [(_, rmean), (_, rvar), (_, mean), (_, invstd)]| {
        let (mut sum, mut sq) = (T::zero(), T::zero());
        for b in 0..shape.batch {
            let p = &x[shape.plane(b, ch)];
            sum += sums(p, p, |v, _| [v])[0];
        }
        let mu = sum / T::of_f64(n);
        for b in 0..shape.batch {
            let p = &x[shape.plane(b, ch)];
            sq += sums(p, p, |v, _| [(v - mu) * (v - mu)])[0];
        }
        let var = sq / T::of_f64(n);
        let unbiased = if n > 1.0 { var * T::of_f64(n / (n - 1.0)) } else { var };
        let m = T::of_f64(momentum);
        let keep = T::of_f64(1.0 - momentum);
        let is = T::one() / frog_core::Scalar::sqrt(var + T::of_f64(params.eps));
        rmean[k] = keep * rmean[k] + m * mu;
        rvar[k] = keep * rvar[k] + m * unbiased;
        mean[k] = mu;
        invstd[k] = is;
        let scale = params.weight[ch] * is;
        (scale, params.bias[ch] - mu * scale)
    });
}

/// Eval mode: normalizes with the running statistics.
pub fn batch_norm_eval<T: Real>(
    pool: &ThreadPool,
    shape: BnShape,
    x: &[T],
    params: BnParams<'_, [T]>,
    running: BnRunning<&[T]>,
    epi: Epilogue<'_, [T]>,
    y: &mut [T],
) {
    let BnRunning { mean: rmean, var: rvar } = running;
    normalize(pool, shape, x, epi, y, None::<Rows<'_, T>>, |ch, _, _| {
        let scale = params.weight[ch] / frog_core::Scalar::sqrt(rvar[ch] + T::of_f64(params.eps));
        (scale, params.bias[ch] - rmean[ch] * scale)
    });
}

/// Backward of [`batch_norm_train`]. With `relu_out` (the forward's output
/// after its ReLU) the ReLU's mask is applied to `grads.dy` first, in
/// place, so afterwards it is also the gradient of the residual input.
pub fn batch_norm_backward<T: Real>(pool: &ThreadPool, shape: BnShape, x: &[T], saved: BnSaved<&[T]>, weight: &[T], relu_out: Option<&[T]>, grads: BnGrads<'_, [T]>) {
    let BnSaved { mean, invstd } = saved;
    let BnGrads { dy, dx, dweight, dbias } = grads;
    let len = entries("batch norm backward", &[shape.batch, shape.channels, shape.hw]);
    assert!(x.len() >= len && dy.len() >= len && dx.len() >= len, "batch norm backward: x, dy or dx too short");
    assert!(relu_out.is_none_or(|r| r.len() >= len), "batch norm backward: relu_out too short");
    let c = shape.channels;
    assert!(dweight.len() >= c && dbias.len() >= c, "batch norm backward: dweight or dbias too short");
    let n = T::of_f64(shape.batch.saturating_mul(shape.hw) as f64);
    let parts = (planes(pool, shape, dy), planes(pool, shape, dx), per_channel(pool, shape, dweight), per_channel(pool, shape, dbias));
    let hw = shape.hw;
    pool.split(parts, |_, (mut dy, mut dx, (_, dw), (_, db))| {
        for (k, ch) in dy.rows().enumerate() {
            let (mu, is) = (mean[ch], invstd[ch]);
            let zero = T::zero();
            let (mut sum_dy, mut sum_dy_xmu) = (zero, zero);
            for b in 0..shape.batch {
                let p = shape.plane(b, ch);
                let dy = &mut dy.plane(b)[k * hw..][..hw];
                if let Some(out) = relu_out {
                    for (g, &o) in dy.iter_mut().zip(&out[p.clone()]) {
                        *g = if o <= zero { zero } else { *g };
                    }
                }
                let [s, sx] = sums(dy, &x[p], |g, v| [g, g * (v - mu)]);
                sum_dy += s;
                sum_dy_xmu += sx;
            }
            let dgamma = sum_dy_xmu * is;
            let kw = weight[ch] * is;
            let a = sum_dy / n;
            let c = is * dgamma / n;
            for b in 0..shape.batch {
                let p = shape.plane(b, ch);
                let (dy, dx) = (&dy.plane(b)[k * hw..][..hw], &mut dx.plane(b)[k * hw..][..hw]);
                for ((d, &g), &v) in dx.iter_mut().zip(dy).zip(&x[p]) {
                    *d = kw * (g - a - (v - mu) * c);
                }
            }
            dw[k] = dgamma;
            db[k] = sum_dy;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Train mode and its backward pass against the formulas in f64, on
    /// planes long enough for the partial sums and with a remainder.
    #[test]
    fn train_mode_and_backward_match_the_formulas() {
        let pool = ThreadPool::new(2).unwrap();
        let shape = BnShape { batch: 3, channels: 2, hw: 37 };
        let x: Vec<f64> = (0..shape.len()).map(|i| (i as f64 * 0.37).sin() * 2.0 + 0.5).collect();
        let dy0: Vec<f64> = (0..shape.len()).map(|i| (i as f64 * 0.61).cos()).collect();
        let (weight, bias) = ([1.5, -0.5], [0.1, 0.2]);
        let params = BnParams { weight: &weight[..], bias: &bias[..], eps: 1e-5 };
        let (mut rmean, mut rvar, mut mean, mut invstd) = ([0.0; 2], [1.0; 2], [0.0; 2], [0.0; 2]);
        let mut y = vec![0.0; shape.len()];
        let epi = Epilogue { residual: None, relu: false };
        let stats = BnTrainStats { running: BnRunning { mean: &mut rmean[..], var: &mut rvar[..] }, momentum: 0.1, saved: BnSaved { mean: &mut mean[..], invstd: &mut invstd[..] } };
        batch_norm_train(&pool, shape, &x, params, stats, epi, &mut y);
        let (mut dy, mut dx, mut dw, mut db) = (dy0.clone(), vec![0.0; shape.len()], [0.0; 2], [0.0; 2]);
        let grads = BnGrads { dy: &mut dy[..], dx: &mut dx[..], dweight: &mut dw[..], dbias: &mut db[..] };
        batch_norm_backward(&pool, shape, &x, BnSaved { mean: &mean, invstd: &invstd }, &weight, None, grads);
        let n = (shape.batch * shape.hw) as f64;
        for c in 0..shape.channels {
            let idx: Vec<usize> = (0..shape.batch).flat_map(|b| shape.plane(b, c)).collect();
            let mu = idx.iter().map(|&i| x[i]).sum::<f64>() / n;
            let var = idx.iter().map(|&i| (x[i] - mu).powi(2)).sum::<f64>() / n;
            let is = 1.0 / (var + 1e-5).sqrt();
            assert!((mean[c] - mu).abs() < 1e-12 && (invstd[c] - is).abs() < 1e-9 * is, "channel {c}: statistics");
            assert!((rmean[c] - 0.1 * mu).abs() < 1e-12 && (rvar[c] - (0.9 + 0.1 * var * n / (n - 1.0))).abs() < 1e-12, "channel {c}: running");
            let (sdy, sdyx) = idx.iter().fold((0.0, 0.0), |(a, b), &i| (a + dy0[i], b + dy0[i] * (x[i] - mu) * is));
            assert!((db[c] - sdy).abs() < 1e-12 && (dw[c] - sdyx).abs() < 1e-12, "channel {c}: dgamma, dbeta");
            for &i in &idx {
                let xhat = (x[i] - mu) * is;
                assert!((y[i] - (xhat * weight[c] + bias[c])).abs() < 1e-12, "entry {i}: y");
                let want = weight[c] * is * (dy0[i] - sdy / n - xhat * sdyx / n);
                assert!((dx[i] - want).abs() < 1e-12, "entry {i}: dx");
            }
        }
    }

    #[test]
    fn eval_mode_uses_the_running_statistics_then_residual_and_relu() {
        let pool = ThreadPool::new(2).unwrap();
        let shape = BnShape { batch: 2, channels: 3, hw: 4 };
        let x: Vec<f64> = (0..shape.len()).map(|i| (i as f64 * 0.7).sin() * 2.0).collect();
        let res: Vec<f64> = (0..shape.len()).map(|i| (i as f64 * 0.3).cos()).collect();
        let (weight, bias) = ([1.5, -0.5, 2.0], [0.1, 0.2, -0.3]);
        let (rmean, rvar) = ([0.2, -0.1, 0.05], [1.3, 0.7, 2.1]);
        let params = BnParams { weight: &weight[..], bias: &bias[..], eps: 1e-5 };
        let mut y = vec![0.0; shape.len()];
        batch_norm_eval(&pool, shape, &x, params, BnRunning { mean: &rmean, var: &rvar }, Epilogue { residual: Some(&res[..]), relu: true }, &mut y);
        for (i, &got) in y.iter().enumerate() {
            let c = (i / shape.hw) % shape.channels;
            let v = (x[i] - rmean[c]) / (rvar[c] + 1e-5f64).sqrt() * weight[c] + bias[c] + res[i];
            assert!((got - v.max(0.0)).abs() < 1e-12, "entry {i}");
        }
    }
}
