//! The training convolutions' forward pass and data gradient through
//! Winograd F(2x2, 3x3), with the transforms of `crate::winograd`.
//!
//! Why: the same 2.25x fewer multiplications as FROG's products. The
//! forward pass is the forward algorithm with the weights as filters; the
//! data gradient of a stride-1 3x3 convolution with padding `p` is itself
//! one, of `dy` with padding `2 - p` and the filters transposed (`c_in`
//! rows of `c_out` channels) and rotated by 180 degrees. As in `conv`,
//! each thread takes groups of consecutive samples, transforms their
//! input tiles into its scratch, runs one GEMM per transformed point
//! (`M_xi = Wt_xi Xt_xi`, `rows x tiles`) and writes the output transform
//! straight into the PyTorch-layout output. The weight gradient is the
//! adjoint in the filter: per group, `Gt_xi += (A dy A^T)_xi Xt_xi^T` into a
//! per-thread partial, then the partials' sum goes back through `G^T . G`.

use frog_core::{Conv2d, Layer};

use super::entries;
use super::operands::ConvShape;
use crate::gemm::{matmul_seq, Real, View};
use crate::parts::{Blocks, RoundRobin};
use crate::pool::ThreadPool;
use crate::winograd::{adjoint_point, output_rows, output_t_coef, transform_filters, untransform_filters, Algorithm, Grid, POINTS, ROTATED};

/// Tiles a group aims for: long enough GEMMs, small enough that a group's
/// transformed inputs and products stay in the last-level cache.
const TARGET_TILES: usize = 256;

/// Whether `conv` runs through Winograd here: where Winograd pays for the
/// shape (3x3, stride 1, dilation 1, enough channels), and padding at most 2 so
/// the data gradient is a forward convolution with padding `2 - p`.
pub(super) fn applies(conv: &Conv2d) -> bool {
    Algorithm::winograd_pays(&Layer::conv2d(*conv, false)) && conv.padding.iter().all(|&p| p <= 2)
}

/// One Winograd convolution of a call: the input grid, the output rows,
/// and how the batch splits into groups.
struct Plan {
    grid: Grid,
    rows: usize,
    /// Samples, samples per group, groups, threads.
    batch: usize,
    group: usize,
    groups: usize,
    threads: usize,
    /// Whether the filters are the transposed rotated ones (the data
    /// gradient's, see [`run`]).
    flip: bool,
}

impl Plan {
    fn new(grid: Grid, rows: usize, batch: usize, threads: usize, flip: bool) -> Self {
        let group = TARGET_TILES.div_ceil(grid.per_sample()).min(batch.div_ceil(threads)).max(1);
        Self { grid, rows, batch, group, groups: batch.div_ceil(group), threads, flip }
    }

    fn tiles(&self) -> usize {
        entries("winograd convolution", &[self.group, self.grid.per_sample()])
    }

    /// Per thread: the group's transformed inputs, its products, and the
    /// output transform's 12 rows of one sample's tiles.
    fn per_thread(&self) -> usize {
        let channels = self.grid.c.checked_add(self.rows).expect("winograd convolution: sizes overflow usize");
        let products = entries("winograd convolution", &[POINTS, self.tiles(), channels]);
        products.checked_add(12 * self.grid.per_sample()).expect("winograd convolution: sizes overflow usize")
    }

    fn len(&self) -> usize {
        let filters = entries("winograd convolution", &[POINTS, self.rows, self.grid.c]);
        filters.checked_add(entries("winograd convolution", &[self.threads, self.per_thread()])).expect("winograd convolution: sizes overflow usize")
    }
}

/// The two plans of `conv` (forward, data gradient).
fn plans(conv: &Conv2d, batch: usize, threads: usize) -> Option<(Plan, Plan)> {
    let [ho, wo] = conv.output_hw()?;
    let forward = Grid::new(conv.c_in, conv.input_hw, conv.padding)?;
    let data = Grid::new(conv.c_out, [ho, wo], [2 - conv.padding[0], 2 - conv.padding[1]])?;
    Some((Plan::new(forward, conv.c_out, batch, threads, false), Plan::new(data, conv.c_in, batch, threads, true)))
}

/// Scratch entries the Winograd kernels need (0 when `conv` is not one):
/// the weight gradient adds a `16 x c_out x c_in` partial per thread to the
/// forward plan.
pub(super) fn scratch_len(conv: &Conv2d, batch: usize, threads: usize) -> usize {
    match plans(conv, batch, threads) {
        Some((f, d)) if applies(conv) => {
            let partials = entries("winograd convolution", &[threads, POINTS, conv.c_in, conv.c_out]);
            f.len().max(d.len()).max(f.len().checked_add(partials).expect("winograd convolution: sizes overflow usize"))
        }
        _ => 0,
    }
}

/// `dw = sum over the batch of dY X` (see `conv::conv2d_backward_weight`).
pub(super) fn backward_weight<T: Real>(pool: &ThreadPool, shape: ConvShape, x: &[T], dy: &[T], dw: &mut [T], scratch: &mut [T]) {
    let (plan, _) = plans(&shape.conv, shape.batch, pool.threads()).expect("a valid convolution geometry");
    let batch = plan.batch;
    let (g, rows) = (plan.grid, plan.rows);
    let (c, [ho, wo], per, tiles) = (g.c, g.out, g.per_sample(), plan.tiles());
    let (in_len, out_len, part_len) = (entries("winograd convolution", &[c, g.hw[0], g.hw[1]]), entries("winograd convolution", &[rows, ho, wo]), POINTS * rows * c);
    let (x_len, dy_len) = (entries("winograd convolution", &[batch, in_len]), entries("winograd convolution", &[batch, out_len]));
    assert!(x.len() >= x_len && dy.len() >= dy_len && dw.len() >= rows * c * 9, "winograd conv: buffers too short");
    let needed = plan.len().checked_add(entries("winograd convolution", &[plan.threads, part_len]));
    assert!(needed.is_some_and(|needed| scratch.len() >= needed), "convolution scratch too small");
    let (work, partials) = scratch[POINTS * rows * c..].split_at_mut(plan.threads * plan.per_thread());
    let coef = output_t_coef::<T>();
    let blocks = (Blocks::new(work, plan.per_thread(), plan.threads), Blocks::new(&mut *partials, part_len, plan.threads));
    pool.split(blocks, |tid, (mine, part)| {
        part.fill(T::ZERO);
        let (xt, rest) = mine.split_at_mut(POINTS * tiles * c);
        let dt = &mut rest[..POINTS * tiles * rows];
        for grp in (tid..plan.groups).step_by(plan.threads) {
            let s0 = grp * plan.group;
            let n = plan.group.min(batch - s0);
            let nt = n * per;
            for i in 0..n {
                g.transform_planes(&x[(s0 + i) * in_len..][..in_len], &mut xt[i * per..], c * tiles, tiles);
                for o in 0..rows {
                    let plane = &dy[(s0 + i) * out_len + o * ho * wo..][..ho * wo];
                    transform_grad(&g, plane, &coef, &mut dt[o * tiles + i * per..], rows * tiles);
                }
            }
            for xi in 0..POINTS {
                let a = View::strided(&dt[xi * rows * tiles..], rows, nt, tiles, 1);
                let b = View::strided(&xt[xi * c * tiles..], nt, c, 1, tiles);
                matmul_seq(&mut part[xi * rows * c..], c, true, a, b);
            }
        }
    });
    // The partials' sum into the first, then back through `G^T . G`.
    let (first, others) = partials[..plan.threads * part_len].split_at_mut(part_len);
    for other in others.chunks_exact(part_len) {
        first.iter_mut().zip(other).for_each(|(a, &b)| *a += b);
    }
    untransform_filters(pool, first, [rows, c], dw, c * 9, false);
}

/// Tiles of a tile row that [`transform_grad`] transforms together.
const RUN: usize = 32;

/// `dt[xi * point_stride + k] = (A y_k A^T)[xi]` for every tile `k` of one
/// output-gradient plane (`[Ho, Wo]`, zeros past its edge): the adjoint of
/// the output transform. Why runs: per tile, 16 scattered stores and a
/// bounds test per entry took an eighth of a ResNet-18 training step; a
/// run of a tile row's tiles gathered into `y` (four rows, one per tile
/// entry) makes each point one contiguous store that vectorizes.
fn transform_grad<T: Real>(g: &Grid, plane: &[T], coef: &[[T; 4]; POINTS], dt: &mut [T], point_stride: usize) {
    let ([ho, wo], tw) = (g.out, g.tiles[1]);
    let mut y = [[T::ZERO; RUN]; 4];
    for ty in 0..g.tiles[0] {
        let oy = 2 * ty;
        let top = &plane[oy * wo..][..wo];
        let bottom = (oy + 1 < ho).then(|| &plane[(oy + 1) * wo..][..wo]);
        for tx0 in (0..tw).step_by(RUN) {
            let n = RUN.min(tw - tx0);
            let at = |row: Option<&[T]>, x: usize| row.and_then(|r| r.get(x)).copied().unwrap_or(T::ZERO);
            (0..n).for_each(|t| {
                let x = 2 * (tx0 + t);
                [y[0][t], y[1][t], y[2][t], y[3][t]] = [top[x], at(Some(top), x + 1), at(bottom, x), at(bottom, x + 1)];
            });
            let k0 = ty * tw + tx0;
            for (xi, cf) in coef.iter().enumerate() {
                adjoint_point(&mut dt[xi * point_stride + k0..][..n], cf, y.each_ref().map(|r| &r[..n]));
            }
        }
    }
}

/// `y = conv(x, w)` (see `conv::conv2d_forward`), `conv` one that [`applies`].
pub(super) fn forward<T: Real>(pool: &ThreadPool, shape: ConvShape, x: &[T], w: &[T], y: &mut [T], scratch: &mut [T]) {
    let (plan, _) = plans(&shape.conv, shape.batch, pool.threads()).expect("a valid convolution geometry");
    run(pool, &plan, x, w, y, false, scratch);
}

/// `dx (+)= d(conv)/dx^T dy` (see `conv::conv2d_backward_data`).
pub(super) fn backward_data<T: Real>(pool: &ThreadPool, shape: ConvShape, dy: &[T], w: &[T], dx: &mut [T], accumulate: bool, scratch: &mut [T]) {
    let (_, plan) = plans(&shape.conv, shape.batch, pool.threads()).expect("a valid convolution geometry");
    run(pool, &plan, dy, w, dx, accumulate, scratch);
}

/// The convolution of `input` (`[batch, grid.c, H, W]`) with the filters
/// in `w` (`[rows, c, 3, 3]`, or with the plan's `flip` the transposed
/// rotated `[c, rows, 3, 3]`) into `out` (`[batch, rows, Ho, Wo]`, added to
/// it when `accumulate`).
fn run<T: Real>(pool: &ThreadPool, plan: &Plan, input: &[T], w: &[T], out: &mut [T], accumulate: bool, scratch: &mut [T]) {
    let (g, rows, batch, flip) = (plan.grid, plan.rows, plan.batch, plan.flip);
    let (c, [ho, wo], per) = (g.c, g.out, g.per_sample());
    let (in_len, out_len) = (entries("winograd convolution", &[c, g.hw[0], g.hw[1]]), entries("winograd convolution", &[rows, ho, wo]));
    let (input_len, output_len) = (entries("winograd convolution", &[batch, in_len]), entries("winograd convolution", &[batch, out_len]));
    assert!(input.len() >= input_len && out.len() >= output_len && w.len() >= rows * c * 9, "winograd conv: buffers too short");
    assert!(scratch.len() >= plan.len(), "convolution scratch too small");
    let (filters, rest) = scratch.split_at_mut(POINTS * rows * c);
    // With `flip`, each point's `rows x c` filters are the transposed
    // `c x rows` ones of the transform of `w` as it is, at the rotated
    // point (see `ROTATED`): read in place, not gathered across `w`'s rows.
    let [fr, fc] = if flip { [c, rows] } else { [rows, c] };
    transform_filters(pool, w, [fr, fc], fc * 9, filters);
    let filters = &*filters;
    let groups = RoundRobin::new(&mut out[..output_len], plan.group * out_len, plan.threads);
    pool.split((Blocks::new(rest, plan.per_thread(), plan.threads), groups), |_, (mine, groups)| {
        let tiles = plan.tiles();
        let (xt, rest) = mine.split_at_mut(POINTS * tiles * c);
        let (m, tmp) = rest.split_at_mut(POINTS * tiles * rows);
        for (grp, y) in groups {
            let s0 = grp * plan.group;
            let n = plan.group.min(batch - s0);
            let nt = n * per;
            for i in 0..n {
                g.transform_planes(&input[(s0 + i) * in_len..][..in_len], &mut xt[i * per..], c * tiles, tiles);
            }
            for xi in 0..POINTS {
                let a = match flip {
                    false => View::row_major(&filters[xi * rows * c..(xi + 1) * rows * c], rows, c),
                    true => View::row_major(&filters[ROTATED[xi] * rows * c..(ROTATED[xi] + 1) * rows * c], c, rows).t(),
                };
                let b = View::strided(&xt[xi * c * tiles..], c, nt, tiles, 1);
                matmul_seq(&mut m[xi * rows * tiles..], tiles, false, a, b);
            }
            for i in 0..n {
                for o in 0..rows {
                    let plane = &mut y[i * out_len + o * ho * wo..][..ho * wo];
                    // All the plane's tiles at once: long rows for the
                    // stages even where a tile row is 2 or 4 tiles.
                    let ms: [&[T]; POINTS] = std::array::from_fn(|xi| &m[(xi * rows + o) * tiles + i * per..][..per]);
                    let outs = output_rows(&ms, tmp);
                    for ty in 0..g.tiles[0] {
                        for (ab, vals) in outs.iter().enumerate() {
                            let (oy, dx) = (2 * ty + ab / 2, ab % 2);
                            if oy >= ho {
                                continue;
                            }
                            let vals = &vals[ty * g.tiles[1]..][..g.tiles[1]];
                            let dst = plane[oy * wo..(oy + 1) * wo].iter_mut().skip(dx).step_by(2);
                            if accumulate {
                                dst.zip(vals).for_each(|(d, &v)| *d += v);
                            } else {
                                dst.zip(vals).for_each(|(d, &v)| *d = v);
                            }
                        }
                    }
                }
            }
        }
    });
}
