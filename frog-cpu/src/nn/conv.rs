//! Convolution (groups 1, no bias) forward and backward as GEMMs over
//! packed patches (see `patches` for the `D x P` layout).
//!
//! Why group samples: a late ResNet layer has only 16 output positions per
//! sample, and one GEMM per sample would repack the whole weight matrix
//! for a 16-column product. Each thread therefore packs the patches of a
//! group of consecutive samples into one `D x P` block (P positions in
//! all) and runs one product per group. Outputs are `[c_out, P]` blocks
//! whose rows are contiguous runs of `L` per sample, so moving them to and
//! from the PyTorch layout `[B, c_out, L]` is a row copy, not a transpose.
//!
//! 3x3 stride-1 convolutions with enough channels run the forward pass
//! the data gradient and the weight gradient through Winograd F(2x2, 3x3)
//! instead (see `winograd`).

use frog_core::Conv2d;

use super::entries;
use super::operands::ConvShape;
use crate::gemm::{matmul_seq, Real, View};
use crate::parts::{Blocks, RoundRobin, Rows};
use crate::pool::ThreadPool;

use super::patches::{pack_t, unpack_add_t};
use super::winograd;

/// Positions a group aims for: enough for near-peak GEMMs, small enough
/// that the patch block stays in the last-level cache on early layers.
const TARGET_POSITIONS: usize = 512;

/// How one call splits its batch, and the per-thread scratch layout.
#[derive(Clone, Copy)]
struct Plan {
    /// Patch columns `c_in*kh*kw`.
    d: usize,
    /// Output positions per sample.
    l: usize,
    c_out: usize,
    in_len: usize,
    out_len: usize,
    /// Samples per group.
    group: usize,
    groups: usize,
    threads: usize,
}

impl Plan {
    /// The plan of `batch` samples on `threads` threads; panics when the
    /// geometry is invalid or its sizes overflow `usize`.
    fn new(conv: &Conv2d, batch: usize, threads: usize) -> Self {
        let [ho, wo] = conv.output_hw().expect("a valid convolution geometry");
        let l = entries("convolution", &[ho, wo]);
        let d = entries("convolution", &[conv.c_in, conv.kernel[0], conv.kernel[1]]);
        // Enough groups to keep every thread busy, each as large as useful.
        let group = TARGET_POSITIONS.div_ceil(l).min(batch.div_ceil(threads)).max(1);
        let plan = Self {
            d,
            l,
            c_out: conv.c_out,
            in_len: entries("convolution", &[conv.c_in, conv.input_hw[0], conv.input_hw[1]]),
            out_len: entries("convolution", &[conv.c_out, l]),
            group,
            groups: batch.div_ceil(group),
            threads,
        };
        entries("convolution scratch", &[plan.threads, plan.per_thread()]);
        plan
    }

    fn cols_len(&self) -> usize {
        entries("convolution scratch", &[self.group, self.l, self.d])
    }

    fn ybuf_len(&self) -> usize {
        entries("convolution scratch", &[self.c_out, self.group, self.l])
    }

    fn per_thread(&self) -> usize {
        [self.cols_len(), self.ybuf_len(), entries("convolution scratch", &[self.c_out, self.d])]
            .into_iter()
            .try_fold(0usize, usize::checked_add)
            .expect("convolution scratch: sizes overflow usize")
    }

    /// Samples `s0..s0+n` of group `g`.
    fn samples(&self, g: usize, batch: usize) -> (usize, usize) {
        let s0 = g * self.group;
        (s0, self.group.min(batch - s0))
    }
}

/// Scratch entries the convolution kernels need for `shape` on a pool of
/// `threads` threads.
pub fn conv_scratch_len(shape: ConvShape, threads: usize) -> usize {
    let plan = Plan::new(&shape.conv, shape.batch, threads);
    (plan.threads * plan.per_thread()).max(winograd::scratch_len(&shape.conv, shape.batch, threads))
}

/// The per-thread blocks of `scratch`, one per thread of the plan.
fn thread_blocks<'a, T>(plan: &Plan, scratch: &'a mut [T]) -> Blocks<'a, T> {
    Blocks::new(scratch, plan.per_thread(), plan.threads)
}

/// Splits a thread's scratch block into patch block, output block and
/// weight-gradient partial.
fn thread_scratch<'a, T>(plan: &Plan, block: &'a mut [T]) -> (&'a mut [T], &'a mut [T], &'a mut [T]) {
    let (cols, rest) = block.split_at_mut(plan.cols_len());
    let (ybuf, partial) = rest.split_at_mut(plan.ybuf_len());
    (cols, ybuf, partial)
}

/// Packs the patches of samples `s0..s0+n` of `x` into `cols` (`D x n*L`).
fn pack<T: Real>(conv: &Conv2d, plan: &Plan, x: &[T], s0: usize, n: usize, cols: &mut [T]) {
    for i in 0..n {
        let xs = &x[(s0 + i) * plan.in_len..][..plan.in_len];
        pack_t(conv, xs, cols, n * plan.l, i * plan.l);
    }
}

/// The `c_out x n*L` block of `dy` for samples `s0..s0+n`: for one sample
/// that is its own slice of `dy`; for more, a copy gathered into `ybuf`.
fn out_block<'a, T: Copy>(plan: &Plan, dy: &'a [T], s0: usize, n: usize, ybuf: &'a mut [T]) -> &'a [T] {
    if n == 1 {
        return &dy[s0 * plan.out_len..][..plan.out_len];
    }
    let p = n * plan.l;
    for i in 0..n {
        for j in 0..plan.c_out {
            let src = &dy[(s0 + i) * plan.out_len + j * plan.l..][..plan.l];
            ybuf[j * p + i * plan.l..][..plan.l].copy_from_slice(src);
        }
    }
    &ybuf[..plan.c_out * p]
}

/// `y = conv(x, w)` for `shape.batch` samples: `x` is `[B, c_in, H, W]`,
/// `w` is `[c_out, c_in, kh, kw]`, `y` is `[B, c_out, Ho, Wo]`.
pub fn conv2d_forward<T: Real>(pool: &ThreadPool, shape: ConvShape, x: &[T], w: &[T], y: &mut [T], scratch: &mut [T]) {
    if winograd::applies(&shape.conv) {
        return winograd::forward(pool, shape, x, w, y, scratch);
    }
    let (conv, batch) = (&shape.conv, shape.batch);
    let plan = Plan::new(conv, batch, pool.threads());
    let (in_len, w_len, out_len) = (entries("convolution", &[batch, plan.in_len]), plan.c_out * plan.d, entries("convolution", &[batch, plan.out_len]));
    assert!(x.len() >= in_len && w.len() >= w_len && y.len() >= out_len, "convolution: x, w or y too short");
    assert!(scratch.len() >= plan.threads * plan.per_thread(), "convolution scratch too small");
    let wv = View::row_major(&w[..plan.c_out * plan.d], plan.c_out, plan.d);
    let groups = RoundRobin::new(&mut y[..out_len], plan.group * plan.out_len, plan.threads);
    pool.split((thread_blocks(&plan, scratch), groups), |_, (block, groups)| {
        let (cols, ybuf, _) = thread_scratch(&plan, block);
        for (g, y) in groups {
            let (s0, n) = plan.samples(g, batch);
            let p = n * plan.l;
            pack(conv, &plan, x, s0, n, cols);
            let patches = View::row_major(&cols[..p * plan.d], plan.d, p);
            if n == 1 {
                matmul_seq(y, p, false, wv, patches);
                continue;
            }
            matmul_seq(ybuf, p, false, wv, patches);
            for i in 0..n {
                for j in 0..plan.c_out {
                    y[i * plan.out_len + j * plan.l..][..plan.l].copy_from_slice(&ybuf[j * p + i * plan.l..][..plan.l]);
                }
            }
        }
    });
}

/// `dx = d(conv)/dx^T dy`: the input gradient, written to `dx`, or added
/// to it when `accumulate` (a residual block's two branches).
pub fn conv2d_backward_data<T: Real>(pool: &ThreadPool, shape: ConvShape, dy: &[T], w: &[T], dx: &mut [T], accumulate: bool, scratch: &mut [T]) {
    if winograd::applies(&shape.conv) {
        return winograd::backward_data(pool, shape, dy, w, dx, accumulate, scratch);
    }
    let (conv, batch) = (&shape.conv, shape.batch);
    let plan = Plan::new(conv, batch, pool.threads());
    let (in_len, w_len, out_len) = (entries("convolution", &[batch, plan.in_len]), plan.c_out * plan.d, entries("convolution", &[batch, plan.out_len]));
    assert!(dy.len() >= out_len && w.len() >= w_len && dx.len() >= in_len, "convolution: dy, w or dx too short");
    assert!(scratch.len() >= plan.threads * plan.per_thread(), "convolution scratch too small");
    let wv = View::row_major(&w[..plan.c_out * plan.d], plan.c_out, plan.d);
    let groups = RoundRobin::new(&mut dx[..in_len], plan.group * plan.in_len, plan.threads);
    pool.split((thread_blocks(&plan, scratch), groups), |_, (block, groups)| {
        let (cols, ybuf, _) = thread_scratch(&plan, block);
        for (g, dx) in groups {
            let (s0, n) = plan.samples(g, batch);
            let p = n * plan.l;
            // dcols[D, P] = W^T[D, c_out] dY[c_out, P]
            let dyv = View::row_major(out_block(&plan, dy, s0, n, ybuf), plan.c_out, p);
            matmul_seq(cols, p, false, wv.t(), dyv);
            if !accumulate {
                dx.fill(T::zero());
            }
            for i in 0..n {
                unpack_add_t(conv, cols, p, i * plan.l, &mut dx[i * plan.in_len..][..plan.in_len]);
            }
        }
    });
}

/// `dw = sum over the batch of dY X`, the weight gradient (overwritten).
pub fn conv2d_backward_weight<T: Real>(pool: &ThreadPool, shape: ConvShape, x: &[T], dy: &[T], dw: &mut [T], scratch: &mut [T]) {
    if winograd::applies(&shape.conv) {
        return winograd::backward_weight(pool, shape, x, dy, dw, scratch);
    }
    let (conv, batch) = (&shape.conv, shape.batch);
    let plan = Plan::new(conv, batch, pool.threads());
    let wlen = plan.c_out * plan.d;
    let (in_len, out_len) = (entries("convolution", &[batch, plan.in_len]), entries("convolution", &[batch, plan.out_len]));
    assert!(x.len() >= in_len && dy.len() >= out_len && dw.len() >= wlen, "convolution: x, dy or dw too short");
    assert!(scratch.len() >= plan.threads * plan.per_thread(), "convolution scratch too small");
    pool.split(thread_blocks(&plan, scratch), |tid, block| {
        let (cols, ybuf, partial) = thread_scratch(&plan, block);
        partial.fill(T::zero());
        for g in (tid..plan.groups).step_by(plan.threads) {
            let (s0, n) = plan.samples(g, batch);
            let p = n * plan.l;
            pack(conv, &plan, x, s0, n, cols);
            let dyv = View::row_major(out_block(&plan, dy, s0, n, ybuf), plan.c_out, p);
            matmul_seq(partial, plan.d, true, dyv, View::row_major(&cols[..p * plan.d], plan.d, p).t());
        }
    });
    // Sum the per-thread partials, each thread over its own range of dw.
    let scratch = &*scratch;
    pool.split(Rows::new(&mut dw[..wlen], wlen, 1, pool.threads()), |_, (range, out)| {
        let partial = |t: usize| &scratch[t * plan.per_thread() + plan.cols_len() + plan.ybuf_len()..][range.clone()];
        out.copy_from_slice(partial(0));
        for t in 1..plan.threads {
            for (o, v) in out.iter_mut().zip(partial(t)) {
                *o += *v;
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Direct convolution: `y[b, o, oy, ox] = sum w[o, c, ky, kx] x[b, c, iy, ix]`.
    fn naive_forward(conv: &Conv2d, batch: usize, x: &[f64], w: &[f64]) -> Vec<f64> {
        let [ho, wo] = conv.output_hw().unwrap();
        let [h, wd] = conv.input_hw;
        let [kh, kw] = conv.kernel;
        let mut y = vec![0.0; batch * conv.c_out * ho * wo];
        for b in 0..batch {
            for o in 0..conv.c_out {
                for oy in 0..ho {
                    for ox in 0..wo {
                        let mut acc = 0.0;
                        for c in 0..conv.c_in {
                            for ky in 0..kh {
                                for kx in 0..kw {
                                    let iy = (oy * conv.stride[0] + ky * conv.dilation[0]) as isize - conv.padding[0] as isize;
                                    let ix = (ox * conv.stride[1] + kx * conv.dilation[1]) as isize - conv.padding[1] as isize;
                                    if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < wd {
                                        let xv = x[((b * conv.c_in + c) * h + iy as usize) * wd + ix as usize];
                                        acc += w[((o * conv.c_in + c) * kh + ky) * kw + kx] * xv;
                                    }
                                }
                            }
                        }
                        y[((b * conv.c_out + o) * ho + oy) * wo + ox] = acc;
                    }
                }
            }
        }
        y
    }

    fn dot(a: &[f64], b: &[f64]) -> f64 {
        a.iter().zip(b).map(|(a, b)| a * b).sum()
    }

    #[test]
    fn grouped_products_match_a_direct_convolution() {
        let pool = ThreadPool::new(2).unwrap();
        let convs = [
            Conv2d::new(3, 5, 3, [24, 24]).padding(1), // 576 positions: one sample per product
            Conv2d::new(4, 6, 3, [9, 9]).stride(2).padding(1),   // 25 positions: groups of samples
            Conv2d::new(4, 3, 1, [8, 8]).stride(2),
            Conv2d { c_in: 2, c_out: 3, kernel: [2, 3], stride: [2, 1], padding: [1, 0], dilation: [1, 2], groups: 1, input_hw: [7, 10] },
            // Winograd: odd and even sizes, padding 0 to 2, one group or several.
            Conv2d::new(16, 20, 3, [9, 7]).padding(1),
            Conv2d::new(17, 16, 3, [8, 6]),
            Conv2d::new(16, 18, 3, [5, 6]).padding([2, 1]),
            Conv2d::new(24, 16, 3, [34, 33]).padding(1),
            // Tile rows longer than one run of the input transform (35 tiles).
            Conv2d::new(16, 16, 3, [6, 70]).padding(1),
        ];
        for conv in convs {
            for batch in [1, 3, 5] {
                let [ho, wo] = conv.output_hw().unwrap();
                let n_in = batch * conv.c_in * conv.input_hw[0] * conv.input_hw[1];
                let n_out = batch * conv.c_out * ho * wo;
                let n_w = conv.c_out * conv.c_in * conv.kernel[0] * conv.kernel[1];
                let x: Vec<f64> = (0..n_in).map(|i| (i as f64 * 0.37).sin()).collect();
                let w: Vec<f64> = (0..n_w).map(|i| (i as f64 * 0.73).cos()).collect();
                let dy: Vec<f64> = (0..n_out).map(|i| (i as f64 * 0.19).sin()).collect();
                let shape = ConvShape { conv, batch };
                let mut scratch = vec![0.0; conv_scratch_len(shape, 2)];

                let mut y = vec![0.0; n_out];
                conv2d_forward(&pool, shape, &x, &w, &mut y, &mut scratch);
                let want = naive_forward(&conv, batch, &x, &w);
                assert!(y.iter().zip(&want).all(|(a, b)| (a - b).abs() < 1e-12), "{conv:?} batch {batch}: forward");

                // The gradients are adjoints of the forward map:
                // <dy, conv(x, w)> = <dx, x> = <dw, w>.
                let lhs = dot(&dy, &want);
                let mut dx = vec![1.0; n_in];
                conv2d_backward_data(&pool, shape, &dy, &w, &mut dx, false, &mut scratch);
                assert!((dot(&dx, &x) - lhs).abs() < 1e-9, "{conv:?} batch {batch}: input gradient");
                let before = dx.clone();
                conv2d_backward_data(&pool, shape, &dy, &w, &mut dx, true, &mut scratch);
                assert!(dx.iter().zip(&before).all(|(a, b)| (a - 2.0 * b).abs() < 1e-12), "accumulate adds");
                let mut dw = vec![1.0; n_w];
                conv2d_backward_weight(&pool, shape, &x, &dy, &mut dw, &mut scratch);
                assert!((dot(&dw, &w) - lhs).abs() < 1e-9, "{conv:?} batch {batch}: weight gradient");
            }
        }
    }
}
