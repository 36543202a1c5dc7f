//! FROG's products over the transformed inputs: the step's pack and
//! patch norms, the forward product, the fused matvec and the
//! weight-gradient product.

use std::ops::Range;

use crate::gemm::{matmul_seq, Real, View};
use crate::parts::{Blocks, Grid as GridSplit, Rows, Split, TileRows};
use crate::pool::{split_range, ThreadPool};

use super::*;

/// The input transform of one step: `(B^T d_{t,c} B)[xi]` for every tile
/// `t` of the `r` samples in `x` (`[r, c_in, H, W]`), zeros for the
/// padding, block by block (see [`Tiles::xt`]): each point of a block is a
/// `block x c_in` matrix the GEMMs read directly. Split over blocks, so
/// each thread writes one contiguous run of the packed tiles.
/// `x` in `T` or in a 16-bit type that widens to it exactly, times the
/// step's `gain` as it is read (transforming first could overflow).
pub(crate) fn pack<S: Copy + Sync, T: Real + From<S>>(pool: &ThreadPool, t: &Tiles, r: usize, x: &[S], gain: T, packed: &mut [T]) {
    let g = t.grid;
    let input = g.c * g.hw[0] * g.hw[1];
    assert!(x.len() >= r * input && packed.len() >= t.packed_len(), "winograd pack: buffers too short");
    let per = g.per_sample();
    let block_stride = POINTS * t.block * t.stride;
    let blocks = Rows::new(&mut packed[..t.packed_len()], t.blocks, block_stride, pool.threads());
    pool.split(blocks, |_, (blocks, out)| {
        // The tiles of this thread's blocks, sample by sample.
        let first = (blocks.start * t.block).min(t.total);
        let tiles = first..(blocks.end * t.block).min(t.total);
        let origin = blocks.start * block_stride;
        let at = |tile: usize| t.xt(tile / t.block, 0) + tile % t.block * t.stride - origin;
        for i in tiles.start / per..tiles.end.div_ceil(per) {
            let mine = tiles.start.max(i * per) - i * per..tiles.end.min((i + 1) * per) - i * per;
            g.transform_input(&x[i * input..(i + 1) * input], |v| T::from(v) * gain, mine, out, t.block * t.stride, |k| at(i * per + k));
        }
    });
}

/// `norms[i*L + l] = ||P[i,l]||^2` from the inputs, since the patch scratch
/// holds the transformed tiles instead of the patches: a patch's squares
/// are its window's squares over all channels, so each input row's squares
/// are first summed over the channels (`q`, [`NORM_RUN`] columns at a
/// time), then added to the output rows whose windows cover it, once per
/// kernel offset (contiguous runs): `c_in + 9` additions per input entry
/// instead of `9 c_in`. Plus the bias feature's square. The patches are
/// those of `gain * x` (see `pack`), `x` in `T` or in a 16-bit type that
/// widens to it exactly.
pub(crate) fn sq_norms<S: Copy + Sync, T: Real + From<S>>(pool: &ThreadPool, t: &Tiles, r: usize, x: &[S], gain: T, norms: &mut [T]) {
    let (g, l) = (t.grid, t.positions());
    let [h, w] = g.hw;
    let input = g.c * h * w;
    assert!(x.len() >= r * input && norms.len() >= r * l, "winograd norms: buffers too short");
    let start = if t.bias { gain * gain } else { T::ZERO };
    pool.split(Rows::new(&mut norms[..r * l], r, l, pool.threads()), |_, (samples, block)| {
        let mut q = [T::ZERO; NORM_RUN];
        let first = samples.start;
        for i in samples {
            let out = &mut block[(i - first) * l..][..l];
            out.fill(start);
            let xs = &x[i * input..(i + 1) * input];
            for iy in 0..h {
                for x0 in (0..w).step_by(NORM_RUN) {
                    let q = &mut q[..NORM_RUN.min(w - x0)];
                    q.fill(T::ZERO);
                    for c in 0..g.c {
                        let row = &xs[(c * h + iy) * w + x0..][..q.len()];
                        q.iter_mut().zip(row).for_each(|(q, &v)| {
                            let v = T::from(v) * gain;
                            *q += v * v;
                        });
                    }
                    for ky in 0..3 {
                        // The output row whose window's row ky is input row iy.
                        let Some(oy) = (iy + g.pad[0]).checked_sub(ky).filter(|&oy| oy < g.out[0]) else { continue };
                        for kx in 0..3 {
                            // Output columns ox = ix + pw - kx for the run's input columns ix.
                            let shift = g.pad[1] as isize - kx as isize;
                            let lo = (x0 as isize + shift).max(0) as usize;
                            let hi = ((x0 + q.len()) as isize + shift).clamp(0, g.out[1] as isize) as usize;
                            if lo >= hi {
                                continue;
                            }
                            let src = &q[(lo as isize - shift) as usize - x0..][..hi - lo];
                            out[oy * g.out[1] + lo..oy * g.out[1] + hi].iter_mut().zip(src).for_each(|(o, &v)| *o += v);
                        }
                    }
                }
            }
        }
    });
}

/// Input columns per run of [`sq_norms`]' channel sums.
pub(super) const NORM_RUN: usize = 64;

/// What every product reads: the pool it runs on, the step's tiling, the
/// transformed inputs [`pack`] left in the patch scratch, and the gain
/// they were packed with (which the bias feature takes too).
#[derive(Clone, Copy)]
pub(crate) struct Packed<'a, T> {
    pub(crate) pool: &'a ThreadPool,
    pub(crate) t: &'a Tiles,
    pub(crate) packed: &'a [T],
    pub(crate) gain: T,
}

/// Splits the product scratch into the transformed filters, the bias
/// entries, and the tile blocks.
pub(super) fn split_scratch<'a, T>(t: &Tiles, scratch: &'a mut [T]) -> (&'a mut [T], &'a mut [T], &'a mut [T]) {
    let (filters, rest) = scratch.split_at_mut(t.filters_len());
    let (bias, blocks) = rest.split_at_mut(t.rows);
    (filters, bias, blocks)
}

/// The transformed filters of `v` into `filters`, and its bias column
/// times the bias feature `gain` (or zeros) into `bias`: the forward
/// product's operands.
pub(super) fn forward_filters<T: Real>(pool: &ThreadPool, t: &Tiles, v: &[T], gain: T, filters: &mut [T], bias: &mut [T]) {
    transform_filters(pool, v, [t.rows, t.grid.c], t.cols, filters);
    for (j, b) in bias.iter_mut().enumerate() {
        *b = if t.bias { v[j * t.cols + 9 * t.grid.c] * gain } else { T::ZERO };
    }
}

/// `M_xi = Xt_xi Vt_xi^T` for the 16 points of block `b` (`len` tiles):
/// each `len x R`, at `m[xi * block * R..]`.
pub(super) fn forward_block<T: Real>(t: &Tiles, packed: &[T], filters: &[T], b: usize, len: usize, m: &mut [T]) {
    let (rows, c) = (t.rows, t.grid.c);
    for xi in 0..POINTS {
        let xt = View::strided(&packed[t.xt(b, xi)..], len, c, t.stride, 1);
        let vt = View::row_major(&filters[xi * rows * c..(xi + 1) * rows * c], rows, c).t();
        matmul_seq(&mut m[xi * t.block * rows..], rows, false, xt, vt);
    }
}

/// The forward product's common part: `v` transformed into the scratch's
/// filters, then on every thread, for each of its blocks `b` (tiles
/// `tiles`), the block's 16 GEMMs into `m`, and `f(out, b, tiles, m, tmp,
/// bias)` with the thread's part `out` of `outputs` (split like the
/// blocks), the 12 rows of `tmp` for [`tile_outputs`] and `v`'s bias
/// column times the bias feature `gain`.
pub(super) fn forward_blocks<T: Real, S: Split>(
    x: Packed<'_, T>,
    v: &[T],
    scratch: &mut [T],
    outputs: S,
    f: impl Fn(&mut S::Part, usize, Range<usize>, &mut [T], &mut [T], &[T]) + Sync,
) {
    let Packed { pool, t, packed, gain } = x;
    let threads = pool.threads();
    let (filters, bias, blocks) = split_scratch(t, scratch);
    forward_filters(pool, t, v, gain, filters, bias);
    let (filters, bias) = (&*filters, &*bias);
    pool.split((Blocks::new(blocks, t.block_len(), threads), outputs), |tid, (m, mut out)| {
        for b in split_range(t.blocks, threads, tid) {
            let tiles = t.block_tiles(b);
            forward_block(t, packed, filters, b, tiles.len(), m);
            let (m, tmp) = m.split_at_mut(POINTS * t.block * t.rows);
            f(&mut out, b, tiles, m, tmp, bias);
        }
    });
}

/// The four output rows of tile `k` of a block's products `m`, in `tmp`.
#[inline(always)]
pub(super) fn tile_outputs<'a, T: Real>(t: &Tiles, m: &[T], tmp: &'a mut [T], k: usize) -> [&'a mut [T]; 4] {
    let rows = t.rows;
    let ms: [&[T]; POINTS] = std::array::from_fn(|xi| &m[(xi * t.block + k) * rows..][..rows]);
    output_rows(&ms, tmp)
}

/// `u = X v^T` (times `lambda` entrywise when given), `u` in the product
/// layout `N x R`, over the patches `pack` left.
pub(crate) fn project<T: Real>(x: Packed<'_, T>, v: &[T], lambda: Option<&[T]>, u: &mut [T], scratch: &mut [T]) {
    let Packed { pool, t, packed, .. } = x;
    let (rows, n, threads) = (t.rows, t.n(), pool.threads());
    assert!(packed.len() >= t.packed_len() && v.len() >= rows * t.cols && u.len() >= n * rows, "winograd project: buffers too short");
    assert!(lambda.is_none_or(|l| l.len() >= n * rows) && scratch.len() >= t.scratch_len(threads), "winograd project: buffers too short");
    let u = TileRows::new(&mut u[..n * rows], t.geometry(), rows, threads);
    forward_blocks(x, v, scratch, u, |u, _, tiles, m, tmp, bias| {
        for (k, tile) in tiles.enumerate() {
            for (o, y) in u.outputs(tile).into_iter().zip(tile_outputs(t, m, tmp, k)) {
                let Some((n, row)) = o else { continue };
                match lambda {
                    Some(l) => zip3(row, y, bias, &l[n * rows..(n + 1) * rows], |y, b, l| (y + b) * l),
                    None => row.iter_mut().zip(&*y).zip(bias).for_each(|((u, &y), &b)| *u = y + b),
                }
            }
        }
    });
}

impl Tiles {
    /// Entries of one thread's partial sums in [`matvec`]: its `Gt`
    /// (`16 x R x c_in`) and its bias column.
    pub(super) fn partial_len(&self) -> usize {
        self.filters_len() + self.rows
    }

    /// Whether [`matvec`] runs on `threads` threads: while the threads'
    /// partial sums take no more memory than the transformed inputs (many
    /// threads on a wide layer run the two products instead).
    pub(crate) fn fuses(&self, threads: usize) -> bool {
        threads.saturating_mul(self.partial_len()) <= self.packed_len()
    }

    /// Entries of product scratch [`matvec`] needs on `threads` threads:
    /// the products' and the partial sums.
    pub(crate) fn matvec_scratch_len(&self, threads: usize) -> usize {
        self.scratch_len(threads).saturating_add(threads.saturating_mul(self.partial_len()))
    }

    /// Entries of product scratch a step's products need on `threads`
    /// threads. It grows with the sample count (the tiles, the blocks and
    /// the transformed inputs do), so the size at `r` samples covers every
    /// smaller sample.
    pub(crate) fn step_scratch_len(&self, threads: usize) -> usize {
        if self.fuses(threads) {
            self.matvec_scratch_len(threads)
        } else {
            self.scratch_len(threads)
        }
    }
}

/// `out += X^T (lambda .* X v^T)` in one pass over `Xt`: each thread
/// projects a block of tiles, scales its outputs and transforms them back
/// (the adjoint output transform) in place, and multiplies them with the
/// same block's `Xt` while it is still in cache, into its own partial
/// `Gt` and bias sums, added up at the end. Against [`project`] then
/// [`back_project`] it reads `Xt` once instead of twice, and `u` never
/// leaves the thread's block. Over the patches `pack` left.
pub(crate) fn matvec<T: Real>(x: Packed<'_, T>, v: &[T], lambda: &[T], out: &mut [T], scratch: &mut [T]) {
    let Packed { pool, t, packed, gain } = x;
    let (rows, c, n, threads) = (t.rows, t.grid.c, t.n(), pool.threads());
    assert!(packed.len() >= t.packed_len() && v.len() >= rows * t.cols && lambda.len() >= n * rows, "winograd matvec: buffers too short");
    assert!(out.len() >= rows * t.cols && scratch.len() >= t.matvec_scratch_len(threads), "winograd matvec: buffers too short");
    let (scratch, partials) = scratch.split_at_mut(t.scratch_len(threads));
    pool.split(Blocks::new(partials, t.partial_len(), threads), |_, partial| partial.fill(T::ZERO));
    forward_blocks(x, v, scratch, Blocks::new(partials, t.partial_len(), threads), |partial, b, tiles, m, tmp, bias| {
        let (gt, gb) = partial.split_at_mut(t.filters_len());
        let len = tiles.len();
        for (k, tile) in tiles.enumerate() {
            let mut y = tile_outputs(t, m, tmp, k);
            for (o, y) in t.outputs(tile).into_iter().zip(y.iter_mut()) {
                match o {
                    Some(n) => {
                        y.iter_mut().zip(bias).zip(&lambda[n * rows..(n + 1) * rows]).for_each(|((y, &b), &l)| *y = (*y + b) * l);
                        gb.iter_mut().zip(&**y).for_each(|(s, &y)| *s += y);
                    }
                    // Outputs past the edge take no part in the product.
                    None => y.fill(T::ZERO),
                }
            }
            adjoint_tile(y.map(|y| &*y), m, |xi| (xi * t.block + k) * rows);
        }
        for xi in 0..POINTS {
            let ut = View::row_major(&m[xi * t.block * rows..][..len * rows], len, rows).t();
            let xt = View::strided(&packed[t.xt(b, xi)..], len, c, t.stride, 1);
            matmul_seq(&mut gt[xi * rows * c..][..rows * c], c, true, ut, xt);
        }
    });
    let (total, others) = partials.split_at_mut(t.partial_len());
    add_partials(pool, total, others);
    let (gt, gb) = total.split_at(t.filters_len());
    untransform_filters(pool, gt, [rows, c], out, t.cols, true);
    if t.bias {
        for (o, &s) in out.chunks_exact_mut(t.cols).zip(gb) {
            o[9 * c] += s * gain;
        }
    }
}

/// All 16 points of one tile's adjoint output transform `A y A^T`, into
/// the rows of `m` at `at(xi)` (each `y` row long): `A`'s entries are 0
/// and +-1, so it is two stages of additions, along `b` then along `a`
/// (12 additions per entry, where [`adjoint_point`], which serves a
/// thread's subset of the points, multiplies out 64 terms).
#[inline(always)]
pub(super) fn adjoint_tile<T: Real>(y: [&[T]; 4], m: &mut [T], at: impl Fn(usize) -> usize) {
    adjoint_column::<T, 0>(y, m, &at);
    adjoint_column::<T, 1>(y, m, &at);
    adjoint_column::<T, 2>(y, m, &at);
    adjoint_column::<T, 3>(y, m, &at);
}

/// The points `(p, Q)` of [`adjoint_tile`]: `s_a = sum_b A[Q][b] y[a][b]`,
/// then `Ut[p][Q] = sum_a A[p][a] s_a` for the four `p`.
#[inline(always)]
pub(super) fn adjoint_column<T: Real, const Q: usize>([y00, y01, y10, y11]: [&[T]; 4], m: &mut [T], at: impl Fn(usize) -> usize) {
    let s = |a: T, b: T| match Q {
        0 => a,
        1 => a + b,
        2 => a - b,
        _ => -b,
    };
    let len = y00.len();
    let (p0, rest) = m[at(Q)..].split_at_mut(at(4 + Q) - at(Q));
    let (p1, rest) = rest.split_at_mut(at(8 + Q) - at(4 + Q));
    let (p2, p3) = rest.split_at_mut(at(12 + Q) - at(8 + Q));
    let rows = p0[..len].iter_mut().zip(&mut p1[..len]).zip(&mut p2[..len]).zip(&mut p3[..len]);
    for ((((((r0, r1), r2), r3), &a0), &a1), (&b0, &b1)) in rows.zip(y00).zip(y01).zip(y10.iter().zip(y11)) {
        let (s0, s1) = (s(a0, a1), s(b0, b1));
        *r0 = s0;
        *r1 = s0 + s1;
        *r2 = s0 - s1;
        *r3 = -s1;
    }
}

/// `total += sum of the partials in others` (each `total.len()` long),
/// split over entries.
pub(super) fn add_partials<T: Real>(pool: &ThreadPool, total: &mut [T], others: &[T]) {
    let len = total.len();
    pool.split(Rows::new(total, len, 1, pool.threads()), |_, (range, dst)| {
        for other in others.chunks_exact(len) {
            dst.iter_mut().zip(&other[range.clone()]).for_each(|(d, &o)| *d += o);
        }
    });
}

/// How the weight-gradient product splits across threads: by transformed
/// points (each thread transforms `u` once for its points and owns their
/// `Gt` outright, so nothing is reduced), and by rows too past 16 threads.
pub(super) fn gradient_parts(threads: usize, rows: usize) -> (usize, usize) {
    let row_parts = threads.div_ceil(POINTS).min(rows.max(1));
    ((threads / row_parts).min(POINTS), row_parts)
}

/// `g = u^T X` (added to `g` when `accumulate`), `g` row-major `R x D'`,
/// over the patches `pack` left.
pub(crate) fn back_project<T: Real>(x: Packed<'_, T>, u: &[T], accumulate: bool, g: &mut [T], scratch: &mut [T]) {
    let Packed { pool, t, packed, gain } = x;
    let (rows, c, n, threads) = (t.rows, t.grid.c, t.n(), pool.threads());
    assert!(packed.len() >= t.packed_len() && u.len() >= n * rows && g.len() >= rows * t.cols, "winograd back_project: buffers too short");
    assert!(scratch.len() >= t.scratch_len(threads), "winograd back_project: product scratch too short");
    let (filters, bias, blocks) = split_scratch(t, scratch);
    let (xi_parts, row_parts) = gradient_parts(threads, rows);
    let gt = GridSplit::new(&mut filters[..], [POINTS, rows, c], [xi_parts, row_parts]);
    pool.split((gt, Blocks::new(blocks, t.block_len(), xi_parts * row_parts)), |_, (mut gt, block)| {
        let (points, js) = (gt.planes(), gt.rows());
        let rb = js.len();
        let (ut, zeros) = block.split_at_mut(POINTS * t.block * rows);
        zeros.fill(T::ZERO);
        for b in 0..t.blocks {
            let tiles = t.block_tiles(b);
            let len = tiles.len();
            transform_outputs(t, u, tiles, &js, &points, ut, zeros);
            for (k, xi) in points.clone().enumerate() {
                let a = View::row_major(&ut[k * t.block * rb..][..len * rb], len, rb).t();
                let xt = View::strided(&packed[t.xt(b, xi)..], len, c, t.stride, 1);
                matmul_seq(gt.plane(xi), c, b > 0, a, xt);
            }
        }
    });
    untransform_filters(pool, filters, [rows, c], g, t.cols, accumulate);
    if t.bias {
        column_sums(pool, u, n, rows, bias);
        for (gb, &b) in g.chunks_exact_mut(t.cols).zip(&*bias) {
            gb[9 * c] = if accumulate { gb[9 * c] + b * gain } else { b * gain };
        }
    }
}

/// `ut[k][b][j - js.start] = (A u_b A^T)[points.start + k]` for the tiles
/// `b` of `tiles` and the rows `js`: the transposed output transform, zeros
/// for outputs past the edge.
pub(super) fn transform_outputs<T: Real>(t: &Tiles, u: &[T], tiles: Range<usize>, js: &Range<usize>, points: &Range<usize>, ut: &mut [T], zeros: &[T]) {
    let (rows, rb) = (t.rows, js.len());
    let coef = output_t_coef::<T>();
    for (b, tile) in tiles.enumerate() {
        let y = t.outputs(tile).map(|o| o.map_or(&zeros[..rb], |n| &u[n * rows + js.start..n * rows + js.end]));
        for xi in points.clone() {
            adjoint_point(&mut ut[((xi - points.start) * t.block + b) * rb..][..rb], &coef[xi], y);
        }
    }
}

/// `sums[j] = sum_n u[n][j]`: the bias column of `G`, split over columns.
pub(super) fn column_sums<T: Real>(pool: &ThreadPool, u: &[T], n: usize, rows: usize, sums: &mut [T]) {
    pool.split(Rows::new(&mut sums[..rows], rows, 1, pool.threads()), |_, (js, acc)| {
        acc.fill(T::ZERO);
        for row in u[..n * rows].chunks_exact(rows) {
            acc.iter_mut().zip(&row[js.clone()]).for_each(|(a, &v)| *a += v);
        }
    });
}
