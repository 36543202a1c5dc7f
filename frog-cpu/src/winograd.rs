//! FROG's patch products for 3x3 stride-1 dilation-1 convolutions through
//! Winograd minimal filtering F(2x2, 3x3).
//!
//! Why: the products `U = X V^T` and `G = U^T X` over the im2col matrix
//! cost 36 multiplications per 2x2 block of outputs and channel; F(2x2,
//! 3x3) needs 16, so the GEMM work drops 2.25x, which no GEMM tuning can
//! match. The transforms (1-D, the 2-D ones are their outer products):
//!
//! ```text
//! B^T = [1  0 -1  0]   G = [1    0    0 ]   A^T = [1 1  1  0]
//!       [0  1  1  0]       [1/2  1/2 1/2]         [0 1 -1 -1]
//!       [0 -1  1  0]       [1/2 -1/2 1/2]
//!       [0  1  0 -1]       [0    0    1 ]
//! ```
//!
//! A 4x4 input tile `d` and a 3x3 filter `g` give the 2x2 correlation
//! `A^T [(G g G^T) . (B^T d B)] A` (`.` entrywise). Over channels that is,
//! for each of the 16 points `xi`, one GEMM `M_xi = Xt_xi Vt_xi^T`
//! (tiles x channels times channels x rows) followed by the output
//! transform: the forward product. The weight-gradient product is its
//! adjoint in the filter: `g = G^T [sum_tiles (A u A^T) . (B^T d B)] G`,
//! so it reuses the same transformed inputs `Xt` (computed once per step
//! in `pack_patches`, replacing the im2col copy), transforms `u` per
//! iteration with `A . A^T`, runs `Gt_xi = Ut_xi^T Xt_xi`, and brings the
//! result back with `G^T . G`. The bias column is handled directly (a sum
//! over `u`, or a constant added to it).
//!
//! Inside the CG both products run fused, block by block ([`matvec`]):
//! the scaled outputs of a block of tiles are transformed back and
//! multiplied with the same block's `Xt` while it is in cache.
//!
//! `u` keeps the backend's product layout (`N x R`, row `i*L + l`), the
//! one `fisher_weights` writes and `lambda` is multiplied into, so only the
//! products and the patch scratch change. Output sizes need not be even:
//! tiles past the last output row or column read zeros and write nothing.
//!
//! Scratch: the transformed inputs live in the step's patch scratch
//! (`16 * tiles` rows of `c_in` entries plus 8 to 15 of padding, against
//! im2col's `9 * positions * c_in`: less from 16 channels, where the
//! automatic choice takes Winograd). The products also need the transformed directions (or gradient,
//! `16 * R * c_in`) and one tile block per thread; those are written
//! during the products, where the patch scratch is read-only, so they live
//! in the backend's arena (see `Cpu`), grown on a layer's first step.

use std::ops::{Add, Range, Sub};

use frog_core::{Layer, LayerKind};

use crate::backend::{Cpu, CpuError};
use crate::gram;

use crate::gemm::{matmul_seq, Real, View};
use crate::parts::{Blocks, Grid as GridSplit, Rows, Split, TileGeometry, TileRows};
use crate::pool::{split_range, ThreadPool};

/// How [`crate::Cpu`] runs a layer's CG: which patch scratch and which
/// products.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// GEMMs over the im2col patch matrix: any layer.
    Direct,
    /// Winograd F(2x2, 3x3): 3x3 convolutions of stride 1 and dilation 1.
    Winograd,
    /// The im2col patch matrix, and the CG in the span of its `N = r*L`
    /// rows through their Gram matrix (see `gram`): any layer, worth it
    /// where `N` is small against `D'`. Steps of a single CG iteration run
    /// direct.
    Gram,
}

/// Input channels below which the automatic choice stays direct: with so
/// few, the transformed GEMMs' inner dimension (`c_in`) is too short for
/// the GEMM kernels, while im2col's is `9 c_in` (the ResNet stem, `c_in = 3`).
const MIN_AUTO_CHANNELS: usize = 16;

/// The Gram CG's multiply-adds over the direct CG's below which it is
/// chosen: against direct products, and against Winograd's (2.25x fewer
/// multiplications, measured 1.2-1.9x faster per layer) with a wider
/// margin: at ratio 0.50 (ResNet-18's `l3.conv` at 16 samples, `K` from the
/// input's Gram matrix) the Gram CG ran 1.33x slower than Winograd; at
/// 0.38 (`l4.conv` at 64, `l3.conv` at 8) it runs faster.
const GRAM_VS_DIRECT: f64 = 0.85;
const GRAM_VS_WINOGRAD: f64 = 0.45;

impl Algorithm {
    /// The algorithm `layer` gets at `r` samples without an override: the
    /// Gram CG where its cost model (`gram::cost_ratio`) beats the others
    /// by a margin, else Winograd for every 3x3 stride-1 dilation-1
    /// convolution with at least 16 input channels, else direct. A pure
    /// function of the shape and `r`.
    pub fn auto(layer: &Layer, r: usize) -> Self {
        let winograd = Self::winograd_pays(layer);
        let ratio = gram::cost_ratio(layer, r);
        if ratio < if winograd { GRAM_VS_WINOGRAD } else { GRAM_VS_DIRECT } {
            Self::Gram
        } else if winograd {
            Self::Winograd
        } else {
            Self::Direct
        }
    }

    /// Whether Winograd's products beat im2col's on `layer`'s shape: it
    /// applies and the layer has at least 16 input channels.
    pub(crate) fn winograd_pays(layer: &Layer) -> bool {
        matches!(&layer.kind, LayerKind::Conv2d(c) if c.c_in >= MIN_AUTO_CHANNELS) && Self::Winograd.supports(layer).is_ok()
    }

    /// Whether this algorithm can run `layer`'s products, or why not.
    pub fn supports(self, layer: &Layer) -> Result<(), &'static str> {
        match (self, &layer.kind) {
            (Self::Direct | Self::Gram, _) => Ok(()),
            (Self::Winograd, LayerKind::Conv2d(c)) => {
                if c.kernel != [3, 3] {
                    Err("Winograd F(2x2, 3x3) needs a 3x3 kernel")
                } else if c.stride != [1, 1] {
                    Err("Winograd F(2x2, 3x3) needs stride 1")
                } else if c.dilation != [1, 1] {
                    Err("Winograd F(2x2, 3x3) needs dilation 1")
                } else {
                    Ok(())
                }
            }
            (Self::Winograd, _) => Err("Winograd runs convolutions only"),
        }
    }
}

/// The algorithm choice and the arena of [`Cpu`].
impl<T: Real> Cpu<T> {
    /// This backend with every layer forced to `algorithm` (`None`: each
    /// layer's [`Algorithm::auto`]), for benchmarks and tests. A layer the
    /// forced algorithm cannot run fails its steps with
    /// [`CpuError::Algorithm`].
    #[must_use]
    pub fn with_algorithm(mut self, algorithm: Option<Algorithm>) -> Self {
        self.algorithm = algorithm;
        self
    }

    /// The algorithm `layer` runs with at `r` samples, or the error a
    /// forced algorithm that cannot run it gives.
    pub fn algorithm(&self, layer: &Layer, r: usize) -> Result<Algorithm, CpuError> {
        match self.algorithm {
            None => Ok(Algorithm::auto(layer, r)),
            Some(algorithm) => algorithm.supports(layer).map(|()| algorithm).map_err(|reason| CpuError::Algorithm { algorithm, reason }),
        }
    }

    /// The Winograd tiling of `layer` at `r` samples when its products run
    /// with Winograd, `None` when they run on im2col patches.
    pub(crate) fn tiles(&self, layer: &Layer, r: usize) -> Result<Option<Tiles>, CpuError> {
        Ok(match self.algorithm(layer, r)? {
            Algorithm::Direct | Algorithm::Gram => None,
            Algorithm::Winograd => Tiles::new(layer, r, self.pool().threads()),
        })
    }

    /// The most samples up to `r` whose steps pack im2col patches: a
    /// workspace sized at `r` must fit them too, when `r` itself packs
    /// Winograd's (smaller) scratch. The automatic choice packs im2col
    /// below some sample count (the Gram cost grows with `r`) and Winograd
    /// from there, so a bisection finds it.
    pub(crate) fn im2col_samples(&self, layer: &Layer, r: usize) -> usize {
        let im2col = |r: usize| !matches!(self.tiles(layer, r), Ok(Some(_)));
        if im2col(r) {
            return r;
        }
        let (mut lo, mut hi) = (0, r);
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if im2col(mid) {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        lo
    }

    /// Runs `f` on the arena, grown to `len` entries first (the only
    /// allocation, on a layer's first step; an error if it cannot be had).
    pub(crate) fn with_arena<R>(&self, len: usize, f: impl FnOnce(&mut [T]) -> R) -> Result<R, CpuError> {
        let mut arena = self.arena.lock().unwrap_or_else(|e| e.into_inner());
        if arena.len() < len {
            let extra = len - arena.len();
            arena.try_reserve_exact(extra).map_err(|_| CpuError::OutOfMemory { entries: len })?;
            arena.resize(len, T::ZERO);
        }
        Ok(f(&mut arena[..len]))
    }
}

/// Transformed points per tile (4x4).
pub(crate) const POINTS: usize = 16;

/// Tiles per block of a product: the inner dimension of the weight-gradient
/// GEMMs and the row count of the forward ones, long enough that the GEMM
/// kernels amortize packing their other operand (`R x c_in`) per call.
const BLOCK_TILES: usize = 256;

/// The tiling of one step of a Winograd layer: sizes only, all exact for a
/// validated layer (products saturate so an unvalidated one asks for an
/// impossible buffer instead of wrapping).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Tiles {
    grid: Grid,
    /// Rows `R` (output channels).
    rows: usize,
    /// Tiles of the whole step (`r * grid.per_sample()`).
    total: usize,
    /// `D'` (row length of `v` and `g`) and whether the bias column is there.
    cols: usize,
    bias: bool,
    /// Tiles per block: the transformed inputs are stored block by block
    /// (`[block][xi][tile][c]`), so a product's operands are contiguous.
    block: usize,
    /// Entries between two tiles of a block: `c_in` padded off powers of
    /// two, which would map every tile's run onto the same cache sets. Tile
    /// rows (not channel rows): faer's kernels ran the forward products
    /// 1.1-1.6x and the weight-gradient ones 1.0-1.2x faster on them.
    stride: usize,
    /// Blocks of the step.
    blocks: usize,
}

impl Tiles {
    /// The tiling of `layer` at `r` samples; `None` unless it is a
    /// convolution Winograd supports.
    /// on a pool of `threads` threads (blocks are split across them).
    pub(crate) fn new(layer: &Layer, r: usize, threads: usize) -> Option<Self> {
        let LayerKind::Conv2d(conv) = &layer.kind else { return None };
        Algorithm::Winograd.supports(layer).ok()?;
        let grid = Grid::new(conv.c_in, conv.input_hw, conv.padding)?;
        let total = r.saturating_mul(grid.per_sample());
        // At least one block per thread, each at most BLOCK_TILES long.
        let block = BLOCK_TILES.min(total.div_ceil(threads.max(1))).max(1);
        Some(Self {
            grid,
            rows: conv.c_out,
            total,
            cols: layer.cols(),
            bias: layer.bias,
            block,
            stride: conv.c_in.next_multiple_of(8) + 8,
            blocks: total.div_ceil(block),
        })
    }

    /// Entries of the transformed inputs `Xt` (the patch scratch).
    pub(crate) fn packed_len(&self) -> usize {
        self.blocks.saturating_mul(POINTS).saturating_mul(self.block).saturating_mul(self.stride)
    }

    /// Where point `xi` of block `b` starts in `Xt`: a `block x c_in`
    /// row-major matrix with row stride `stride`.
    fn xt(&self, b: usize, xi: usize) -> usize {
        (b * POINTS + xi) * self.block * self.stride
    }

    /// Tiles `b*block..` of block `b`.
    fn block_tiles(&self, b: usize) -> Range<usize> {
        b * self.block..((b + 1) * self.block).min(self.total)
    }

    /// Entries of the transformed directions or gradient (`16 x R x c_in`).
    fn filters_len(&self) -> usize {
        POINTS * self.rows * self.grid.c
    }

    /// Entries of one thread's scratch: a tile block of `M` or `Ut`, and
    /// 12 rows for the output transform's stages (or zeros).
    fn block_len(&self) -> usize {
        (POINTS * self.block + 12) * self.rows
    }

    /// Entries of arena the products need on `threads` threads: the
    /// transformed filters, `R` entries for the bias, and a block per thread.
    pub(crate) fn arena_len(&self, threads: usize) -> usize {
        self.filters_len().saturating_add(self.rows).saturating_add(threads.saturating_mul(self.block_len()))
    }

    fn positions(&self) -> usize {
        self.grid.out[0] * self.grid.out[1]
    }

    /// Rows of `u` (`r * L`).
    fn n(&self) -> usize {
        self.total / self.grid.per_sample() * self.positions()
    }

    /// How the step's output positions group into tiles and blocks.
    fn geometry(&self) -> TileGeometry {
        let g = self.grid;
        TileGeometry { out: g.out, tile_cols: g.tiles[1], per_sample: g.per_sample(), block: self.block, blocks: self.blocks }
    }

    /// The rows of `u` of tile `t`'s four outputs (`None` past the edge),
    /// in the order `(0,0), (0,1), (1,0), (1,1)`.
    fn outputs(&self, t: usize) -> [Option<usize>; 4] {
        self.geometry().outputs(t)
    }
}

/// What the transforms compute on: one value, or [`Lanes`] of values in
/// lockstep. The transforms are additions, subtractions and scalings only,
/// so one generic body serves both.
pub(crate) trait Value<T>: Copy + Add<Output = Self> + Sub<Output = Self> {
    fn scale(self, k: T) -> Self;
}

impl<T: Real> Value<T> for T {
    #[inline(always)]
    fn scale(self, k: T) -> T {
        self * k
    }
}

/// Values transformed together, one per filter or channel.
///
/// Why: one filter's transform is a few dozen additions on nine values, with
/// sixteen scattered stores; on the largest layers (`512 x 512` filters per
/// CG product) the scalar loop took a quarter of the product's time. Eight
/// filters in lockstep vectorize, and their sixteen results are stored as
/// eight contiguous entries each.
#[derive(Clone, Copy)]
pub(crate) struct Lanes<T>([T; LANES]);

/// Width of [`Lanes`]: one AVX2 register of `f32`.
pub(crate) const LANES: usize = 8;

// Plain loops over the lanes below, not `array::from_fn`: its closures
// are not always inlined, and then nothing vectorizes.
impl<T: Real> Lanes<T> {
    /// `src` (at most [`LANES`] long) in the first lanes, zeros after.
    #[inline(always)]
    fn load(src: &[T]) -> Self {
        match <&[T; LANES]>::try_from(src) {
            Ok(all) => Self(*all),
            Err(_) => {
                let mut v = [T::ZERO; LANES];
                v.iter_mut().zip(src).for_each(|(v, &s)| *v = s);
                Self(v)
            }
        }
    }

    /// The first `dst.len()` (at most [`LANES`]) lanes into `dst`.
    #[inline(always)]
    fn store(&self, dst: &mut [T]) {
        match <&mut [T; LANES]>::try_from(&mut *dst) {
            Ok(all) => *all = self.0,
            Err(_) => dst.iter_mut().zip(&self.0).for_each(|(d, &v)| *d = v),
        }
    }

    #[inline(always)]
    fn zip(self, o: Self, f: impl Fn(T, T) -> T) -> Self {
        let mut v = self.0;
        for (a, &b) in v.iter_mut().zip(&o.0) {
            *a = f(*a, b);
        }
        Self(v)
    }
}

impl<T: Real> Add for Lanes<T> {
    type Output = Self;
    #[inline(always)]
    fn add(self, o: Self) -> Self {
        self.zip(o, |a, b| a + b)
    }
}

impl<T: Real> Sub for Lanes<T> {
    type Output = Self;
    #[inline(always)]
    fn sub(self, o: Self) -> Self {
        self.zip(o, |a, b| a - b)
    }
}

impl<T: Real> Value<T> for Lanes<T> {
    #[inline(always)]
    fn scale(self, k: T) -> Self {
        let mut v = self.0;
        for a in &mut v {
            *a *= k;
        }
        Self(v)
    }
}

/// `B^T d` for one axis of an input tile.
#[inline(always)]
fn input_1d<V: Copy + Add<Output = V> + Sub<Output = V>>(d: [V; 4]) -> [V; 4] {
    [d[0] - d[2], d[1] + d[2], d[2] - d[1], d[1] - d[3]]
}

/// `G g` for one axis of a filter.
#[inline(always)]
fn filter_1d<T: Copy, V: Value<T>>(g: [V; 3], half: T) -> [V; 4] {
    let (even, odd) = (g[0] + g[2], g[1]);
    [g[0], (even + odd).scale(half), (even - odd).scale(half), g[2]]
}

/// `G^T s` for one axis: the adjoint of [`filter_1d`].
#[inline(always)]
fn filter_1d_t<T: Copy, V: Value<T>>(s: [V; 4], half: T) -> [V; 3] {
    let (sum, diff) = ((s[1] + s[2]).scale(half), (s[1] - s[2]).scale(half));
    [s[0] + sum, diff, sum + s[3]]
}

/// `B^T d B` of a 4x4 tile, row-major.
#[inline(always)]
fn input_2d<V: Copy + Add<Output = V> + Sub<Output = V>>(d: &[[V; 4]; 4]) -> [V; POINTS] {
    let e = [input_1d(d[0]), input_1d(d[1]), input_1d(d[2]), input_1d(d[3])];
    let mut out = [d[0][0]; POINTS];
    for q in 0..4 {
        let col = input_1d([e[0][q], e[1][q], e[2][q], e[3][q]]);
        for p in 0..4 {
            out[p * 4 + q] = col[p];
        }
    }
    out
}

/// `out[j] = f(a[j], b[j], c[j])` (over the shortest).
#[inline(always)]
fn zip3<T: Copy>(out: &mut [T], a: &[T], b: &[T], c: &[T], f: impl Fn(T, T, T) -> T) {
    out.iter_mut().zip(a).zip(b).zip(c).for_each(|(((o, &a), &b), &c)| *o = f(a, b, c));
}

/// `A^T m A` row-wise: from the 16 rows `m[xi]` of one tile's products
/// (a value per row `j` of `u` each), its 2x2 outputs `(0,0), (0,1),
/// (1,0), (1,1)` in four rows of `tmp` (12 rows long), one stage per axis,
/// so every loop runs along `j` and vectorizes.
#[inline(always)]
pub(crate) fn output_rows<'a, T: Real>(m: &[&[T]; POINTS], tmp: &'a mut [T]) -> [&'a mut [T]; 4] {
    let rows = m[0].len();
    let (s, y) = tmp[..12 * rows].split_at_mut(8 * rows);
    // Along the columns: s[p][0] = m[p,0] + m[p,1] + m[p,2], s[p][1] = m[p,1] - m[p,2] - m[p,3].
    for (p, sp) in s.chunks_exact_mut(2 * rows).enumerate() {
        let (s0, s1) = sp.split_at_mut(rows);
        zip3(s0, m[p * 4], m[p * 4 + 1], m[p * 4 + 2], |a, b, c| a + b + c);
        zip3(s1, m[p * 4 + 1], m[p * 4 + 2], m[p * 4 + 3], |a, b, c| a - b - c);
    }
    let sr = |p: usize, b: usize| &s[(2 * p + b) * rows..][..rows];
    // Along the rows: y[0][b] = s[0][b] + s[1][b] + s[2][b], y[1][b] = s[1][b] - s[2][b] - s[3][b].
    for (k, yk) in y.chunks_exact_mut(rows).enumerate() {
        let b = k % 2;
        if k < 2 {
            zip3(yk, sr(0, b), sr(1, b), sr(2, b), |a, b, c| a + b + c);
        } else {
            zip3(yk, sr(1, b), sr(2, b), sr(3, b), |a, b, c| a - b - c);
        }
    }
    let (y01, y23) = y.split_at_mut(2 * rows);
    let ((y0, y1), (y2, y3)) = (y01.split_at_mut(rows), y23.split_at_mut(rows));
    [y0, y1, y2, y3]
}

/// `A = (A^T)^T`, whose outer products give the adjoint of the output
/// transform: `Ut[p,q] = sum_{a,b} A[p][a] A[q][b] u[a,b]`.
const A: [[f64; 2]; 4] = [[1.0, 0.0], [1.0, 1.0], [1.0, -1.0], [0.0, -1.0]];

/// `coef[xi][ab] = A[p][a] A[q][b]` for `xi = (p, q)`, `ab = (a, b)`: the
/// adjoint output transform as a 16 x 4 matrix of 0 and +-1 (so every
/// product with it is exact).
pub(crate) fn output_t_coef<T: Real>() -> [[T; 4]; POINTS] {
    std::array::from_fn(|xi| std::array::from_fn(|ab| T::of_f64(A[xi / 4][ab / 2] * A[xi % 4][ab % 2])))
}

/// `ROTATED[xi]`: the point of a filter's transform that holds point `xi`
/// of the transform of the filter rotated by 180 degrees. Rotating
/// reverses both axes, and `G` of a reversed `g` is `G g` with its first
/// and last entries swapped (the middle two are symmetric in `g0, g2`), so
/// the rotated filter's transform is a permutation of the filter's, equal
/// to the last bit.
pub(crate) const ROTATED: [usize; POINTS] = {
    const AXIS: [usize; 4] = [3, 1, 2, 0];
    let mut r = [0; POINTS];
    let mut xi = 0;
    while xi < POINTS {
        r[xi] = AXIS[xi / 4] * 4 + AXIS[xi % 4];
        xi += 1;
    }
    r
};

/// `out[j] = sum_ab cf[ab] y[ab][j]`: one point of the adjoint output
/// transform (`cf` a row of [`output_t_coef`]) along `j`, over the shortest
/// of `out` and the four `y` rows. Coefficients are 0 and +-1: every
/// product is exact.
#[inline(always)]
pub(crate) fn adjoint_point<T: Real>(out: &mut [T], cf: &[T; 4], [y0, y1, y2, y3]: [&[T]; 4]) {
    out.iter_mut().zip(y0).zip(y1).zip(y2).zip(y3).for_each(|((((o, &a), &b), &c), &d)| *o = cf[0] * a + cf[1] * b + cf[2] * c + cf[3] * d);
}

/// `G g G^T` of a row-major 3x3 filter.
#[inline(always)]
fn filter_2d<T: Real, V: Value<T>>(g: &[V; 9]) -> [V; POINTS] {
    let half = T::of_f64(0.5);
    let e = [filter_1d([g[0], g[1], g[2]], half), filter_1d([g[3], g[4], g[5]], half), filter_1d([g[6], g[7], g[8]], half)];
    let mut out = [g[0]; POINTS];
    for q in 0..4 {
        let col = filter_1d([e[0][q], e[1][q], e[2][q]], half);
        for p in 0..4 {
            out[p * 4 + q] = col[p];
        }
    }
    out
}

/// `G^T s G`, the adjoint of [`filter_2d`]: a row-major 3x3 filter.
#[inline(always)]
fn filter_2d_t<T: Real, V: Value<T>>(s: &[V; POINTS]) -> [V; 9] {
    let half = T::of_f64(0.5);
    let mut e = [[s[0]; 3]; 4];
    for (p, e) in e.iter_mut().enumerate() {
        *e = filter_1d_t([s[p * 4], s[p * 4 + 1], s[p * 4 + 2], s[p * 4 + 3]], half);
    }
    let mut out = [s[0]; 9];
    for kx in 0..3 {
        let col = filter_1d_t([e[0][kx], e[1][kx], e[2][kx], e[3][kx]], half);
        for ky in 0..3 {
            out[ky * 3 + kx] = col[ky];
        }
    }
    out
}

/// Where a layer's tiles sit: the sizes of one sample's input transform.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Grid {
    /// Input channels.
    pub(crate) c: usize,
    /// Input `[H, W]`, padding `[ph, pw]`, output `[Ho, Wo]`.
    pub(crate) hw: [usize; 2],
    pub(crate) pad: [usize; 2],
    pub(crate) out: [usize; 2],
    /// Tiles per axis (`ceil(Ho/2)`, `ceil(Wo/2)`).
    pub(crate) tiles: [usize; 2],
}

impl Grid {
    /// The grid of a 3x3 stride-1 correlation of a `[c, H, W]` input with
    /// padding `pad`; `None` when the output is empty.
    pub(crate) fn new(c: usize, hw: [usize; 2], pad: [usize; 2]) -> Option<Self> {
        let axis = |a: usize| hw[a].checked_add(pad[a].checked_mul(2)?)?.checked_sub(2).filter(|&o| o > 0);
        let out = [axis(0)?, axis(1)?];
        Some(Self { c, hw, pad, out, tiles: [out[0].div_ceil(2), out[1].div_ceil(2)] })
    }

    /// Tiles of one sample.
    pub(crate) fn per_sample(&self) -> usize {
        self.tiles[0] * self.tiles[1]
    }

    /// Writes `(B^T d B)[xi]` of channel `c`, tile `k` of the sample `xs`
    /// (`[c, H, W]`) to `out[at(k) + xi * point_stride + c]`: tile by tile,
    /// a tile's channels side by side (FROG's products, once per step).
    /// [`LANES`] channels of a tile are transformed together, so the
    /// arithmetic vectorizes and each point's stores are one contiguous
    /// run; tiles inside the input read their 4x4 window without a bounds
    /// test per entry. (One channel at a time, with a test per entry, this
    /// was a sixth of `l1.conv`'s step.)
    ///
    /// Only the tiles `tiles` of the sample, each input read through
    /// `widen` (a conversion to `T`, and the step's gain); panics if an
    /// index is outside `out`.
    pub(crate) fn transform_input<S: Copy, T: Real>(&self, xs: &[S], widen: impl Fn(S) -> T, tiles: Range<usize>, out: &mut [T], point_stride: usize, at: impl Fn(usize) -> usize) {
        let [h, w] = self.hw;
        let zero = [[Lanes([T::ZERO; LANES]); 4]; 4];
        let mut d = zero;
        for k in tiles {
            let (ty, tx) = (k / self.tiles[1], k % self.tiles[1]);
            let (iy0, ix0) = ((2 * ty) as isize - self.pad[0] as isize, (2 * tx) as isize - self.pad[1] as isize);
            let inside = iy0 >= 0 && ix0 >= 0 && iy0 as usize + 4 <= h && ix0 as usize + 4 <= w;
            let base = at(k);
            for c0 in (0..self.c).step_by(LANES) {
                let n = LANES.min(self.c - c0);
                // Every lane is written below only for a whole group of
                // channels inside the input; otherwise start from zeros.
                if !inside || n < LANES {
                    d = zero;
                }
                for l in 0..n {
                    let ch = &xs[(c0 + l) * h * w..(c0 + l + 1) * h * w];
                    if inside {
                        let (y0, x0) = (iy0 as usize, ix0 as usize);
                        for (dy, row) in d.iter_mut().enumerate() {
                            let line = &ch[(y0 + dy) * w + x0..][..4];
                            row.iter_mut().zip(line).for_each(|(v, &x)| v.0[l] = widen(x));
                        }
                        continue;
                    }
                    for (dy, row) in d.iter_mut().enumerate() {
                        let iy = iy0 + dy as isize;
                        if iy < 0 || iy >= h as isize {
                            continue;
                        }
                        let line = &ch[iy as usize * w..(iy as usize + 1) * w];
                        for (dx, v) in row.iter_mut().enumerate() {
                            let ix = ix0 + dx as isize;
                            if ix >= 0 && ix < w as isize {
                                v.0[l] = widen(line[ix as usize]);
                            }
                        }
                    }
                }
                for (xi, v) in input_2d(&d).iter().enumerate() {
                    v.store(&mut out[base + xi * point_stride + c0..][..n]);
                }
            }
        }
    }

    /// Writes `(B^T d B)[xi]` of channel `c`, tile `k` of the sample `xs`
    /// (`[c, H, W]`) to `out[xi * point_stride + c * chan_stride + k]`:
    /// each point of each channel one contiguous row of the sample's tiles,
    /// as the training convolutions' GEMMs read them.
    pub(crate) fn transform_planes<T: Real>(&self, xs: &[T], out: &mut [T], point_stride: usize, chan_stride: usize) {
        let [h, w] = self.hw;
        // Channel by channel, a run of up to ROW_TILES tiles of a tile row at
        // a time: transformed along y across the whole run straight from the
        // four input rows it reads, into `f`, then along x one point at a
        // time across the run, so both stages are loops that vectorize and
        // every store is a contiguous row. The run's entries outside the
        // input are zeros in `f`, written only when the run's inside range
        // changes: per run, copying the rows into a zero-padded buffer first
        // made a dozen small memcpy and memset calls, a twentieth of a
        // ResNet-18 training step.
        const ROW_TILES: usize = 32;
        let pad = [self.pad[0] as isize, self.pad[1] as isize];
        let mut f = [[T::ZERO; 2 * ROW_TILES + 2]; 4];
        let mut inside = 0..0;
        for c in 0..self.c {
            let ch = &xs[c * h * w..(c + 1) * h * w];
            for ty in 0..self.tiles[0] {
                for tx0 in (0..self.tiles[1]).step_by(ROW_TILES) {
                    let n = ROW_TILES.min(self.tiles[1] - tx0);
                    let (x0, cols) = ((2 * tx0) as isize - pad[1], 2 * n + 2);
                    // Entries a..b of the run lie inside the input's columns.
                    let a = (-x0).clamp(0, cols as isize) as usize;
                    let b = (w as isize - x0).clamp(a as isize, cols as isize) as usize;
                    if inside != (a..b) {
                        for fp in &mut f {
                            fp[..a].fill(T::ZERO);
                            fp[b..].fill(T::ZERO);
                        }
                        inside = a..b;
                    }
                    let line = |dy: usize| {
                        let iy = (2 * ty + dy) as isize - pad[0];
                        (a < b && iy >= 0 && iy < h as isize).then(|| &ch[iy as usize * w + (x0 + a as isize) as usize..][..b - a])
                    };
                    let [f0, f1, f2, f3] = f.each_mut().map(|fp| &mut fp[a..b]);
                    let rows = (f0.iter_mut().zip(f1).zip(f2).zip(f3)).map(|(((f0, f1), f2), f3)| [f0, f1, f2, f3]);
                    let put = |fs: [&mut T; 4], d: [T; 4]| fs.into_iter().zip(input_1d(d)).for_each(|(f, v)| *f = v);
                    match [line(0), line(1), line(2), line(3)] {
                        [Some(l0), Some(l1), Some(l2), Some(l3)] => {
                            let src = l0.iter().zip(l1).zip(l2).zip(l3);
                            rows.zip(src).for_each(|(fs, (((&v0, &v1), &v2), &v3))| put(fs, [v0, v1, v2, v3]));
                        }
                        // A tile row at the top or bottom edge.
                        ls => {
                            let get = |l: Option<&[T]>, x: usize| l.map_or(T::ZERO, |l| l[x]);
                            rows.enumerate().for_each(|(x, fs)| put(fs, ls.map(|l| get(l, x))));
                        }
                    }
                    // Along x, point by point over the run: tile t reads
                    // columns 2t..2t+4 of `f`, its even and odd pairs.
                    let k0 = c * chan_stride + ty * self.tiles[1] + tx0;
                    for (p, fp) in f.iter().enumerate() {
                        let (pairs, next) = (fp[..2 * n].chunks_exact(2), fp[2..2 * n + 2].chunks_exact(2));
                        let at = |q: usize| (p * 4 + q) * point_stride + k0;
                        out[at(0)..at(0) + n].iter_mut().zip(pairs.clone().zip(next.clone())).for_each(|(o, (a, b))| *o = a[0] - b[0]);
                        out[at(1)..at(1) + n].iter_mut().zip(pairs.clone().zip(next.clone())).for_each(|(o, (a, b))| *o = a[1] + b[0]);
                        out[at(2)..at(2) + n].iter_mut().zip(pairs.clone().zip(next.clone())).for_each(|(o, (a, b))| *o = b[0] - a[1]);
                        out[at(3)..at(3) + n].iter_mut().zip(pairs.zip(next)).for_each(|(o, (a, b))| *o = a[1] - b[1]);
                    }
                }
            }
        }
    }
}

/// `out[xi][r][i] = (G f_{r,i} G^T)[xi]` for the `rows x inner` 3x3 filters
/// of `src`, filter `(r, i)` at `src[r * row_stride + i * 9..]`. Split over
/// rows, [`LANES`] filters of a row at a time.
pub(crate) fn transform_filters<T: Real>(pool: &ThreadPool, src: &[T], [rows, inner]: [usize; 2], row_stride: usize, out: &mut [T]) {
    assert!(out.len() >= POINTS * rows * inner, "winograd filters: output too short");
    let filter = |r: usize, i: usize| -> &[T; 9] {
        let at = r * row_stride + i * 9;
        src[at..at + 9].try_into().expect("nine taps")
    };
    let grid = GridSplit::new(&mut out[..POINTS * rows * inner], [POINTS, rows, inner], [1, pool.threads()]);
    pool.split(grid, |_, mut part| {
        let mine = part.rows();
        let first = mine.start;
        let mut points: [&mut [T]; POINTS] = part.planes_mut();
        for r in mine {
            for i0 in (0..inner).step_by(LANES) {
                let n = LANES.min(inner - i0);
                let mut f = [Lanes([T::ZERO; LANES]); 9];
                for l in 0..n {
                    for (f, &tap) in f.iter_mut().zip(filter(r, i0 + l)) {
                        f.0[l] = tap;
                    }
                }
                for (point, v) in points.iter_mut().zip(filter_2d(&f).iter()) {
                    v.store(&mut point[(r - first) * inner + i0..][..n]);
                }
            }
        }
    });
}

/// The adjoint of [`transform_filters`]: the 3x3 filter
/// `G^T s_{r,i} G` of the point-major `src` (`[xi][r][i]`, `rows x inner`
/// filters) written to `dst[r * row_stride + i * 9..]`, or added to it
/// when `accumulate`. Split over rows, [`LANES`] filters at a time.
pub(crate) fn untransform_filters<T: Real>(pool: &ThreadPool, src: &[T], [rows, inner]: [usize; 2], dst: &mut [T], row_stride: usize, accumulate: bool) {
    assert!(src.len() >= POINTS * rows * inner, "winograd filters: input too short");
    assert!(rows == 0 || (rows - 1).checked_mul(row_stride).and_then(|v| v.checked_add(9 * inner)).is_some_and(|end| end <= dst.len()), "winograd filters: output too short");
    pool.split(Rows::new(dst, rows, row_stride, pool.threads()), |_, (mine, block)| {
        let first = mine.start;
        for r in mine {
            let row = &mut block[(r - first) * row_stride..][..9 * inner];
            for i0 in (0..inner).step_by(LANES) {
                let n = LANES.min(inner - i0);
                let mut s = [Lanes([T::ZERO; LANES]); POINTS];
                for (xi, s) in s.iter_mut().enumerate() {
                    *s = Lanes::load(&src[(xi * rows + r) * inner + i0..][..n]);
                }
                let f = filter_2d_t(&s);
                // The lanes' filters side by side, as `dst` holds them.
                let mut taps = [T::ZERO; 9 * LANES];
                for (l, tap) in taps.chunks_exact_mut(9).enumerate() {
                    tap.iter_mut().zip(&f).for_each(|(t, v)| *t = v.0[l]);
                }
                let out = &mut row[i0 * 9..(i0 + n) * 9];
                if accumulate {
                    out.iter_mut().zip(taps).for_each(|(o, t)| *o += t);
                } else {
                    out.iter_mut().zip(taps).for_each(|(o, t)| *o = t);
                }
            }
        }
    });
}

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
const NORM_RUN: usize = 64;

/// Splits the arena into the transformed filters, the bias entries, and
/// the tile blocks.
fn split_arena<'a, T>(t: &Tiles, arena: &'a mut [T]) -> (&'a mut [T], &'a mut [T], &'a mut [T]) {
    let (filters, rest) = arena.split_at_mut(t.filters_len());
    let (bias, blocks) = rest.split_at_mut(t.rows);
    (filters, bias, blocks)
}

/// The transformed filters of `v` into `filters`, and its bias column
/// times the bias feature `gain` (or zeros) into `bias`: the forward
/// product's operands.
fn forward_filters<T: Real>(pool: &ThreadPool, t: &Tiles, v: &[T], gain: T, filters: &mut [T], bias: &mut [T]) {
    transform_filters(pool, v, [t.rows, t.grid.c], t.cols, filters);
    for (j, b) in bias.iter_mut().enumerate() {
        *b = if t.bias { v[j * t.cols + 9 * t.grid.c] * gain } else { T::ZERO };
    }
}

/// `M_xi = Xt_xi Vt_xi^T` for the 16 points of block `b` (`len` tiles):
/// each `len x R`, at `m[xi * block * R..]`.
fn forward_block<T: Real>(t: &Tiles, packed: &[T], filters: &[T], b: usize, len: usize, m: &mut [T]) {
    let (rows, c) = (t.rows, t.grid.c);
    for xi in 0..POINTS {
        let xt = View::strided(&packed[t.xt(b, xi)..], len, c, t.stride, 1);
        let vt = View::row_major(&filters[xi * rows * c..(xi + 1) * rows * c], rows, c).t();
        matmul_seq(&mut m[xi * t.block * rows..], rows, false, xt, vt);
    }
}

/// The forward product's common part: `v` transformed into the arena's
/// filters, then on every thread, for each of its blocks `b` (tiles
/// `tiles`), the block's 16 GEMMs into `m`, and `f(out, b, tiles, m, tmp,
/// bias)` with the thread's part `out` of `outputs` (split like the
/// blocks), the 12 rows of `tmp` for [`tile_outputs`] and `v`'s bias
/// column times the bias feature `gain`.
#[allow(clippy::too_many_arguments)]
fn forward_blocks<T: Real, S: Split>(
    pool: &ThreadPool,
    t: &Tiles,
    packed: &[T],
    gain: T,
    v: &[T],
    arena: &mut [T],
    outputs: S,
    f: impl Fn(&mut S::Part, usize, Range<usize>, &mut [T], &mut [T], &[T]) + Sync,
) {
    let threads = pool.threads();
    let (filters, bias, blocks) = split_arena(t, arena);
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
fn tile_outputs<'a, T: Real>(t: &Tiles, m: &[T], tmp: &'a mut [T], k: usize) -> [&'a mut [T]; 4] {
    let rows = t.rows;
    let ms: [&[T]; POINTS] = std::array::from_fn(|xi| &m[(xi * t.block + k) * rows..][..rows]);
    output_rows(&ms, tmp)
}

/// `u = X v^T` (times `lambda` entrywise when given), `u` in the product
/// layout `N x R`, over the patches `pack` left with its `gain`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn project<T: Real>(pool: &ThreadPool, t: &Tiles, packed: &[T], gain: T, v: &[T], lambda: Option<&[T]>, u: &mut [T], arena: &mut [T]) {
    let (rows, n, threads) = (t.rows, t.n(), pool.threads());
    assert!(packed.len() >= t.packed_len() && v.len() >= rows * t.cols && u.len() >= n * rows, "winograd project: buffers too short");
    assert!(lambda.is_none_or(|l| l.len() >= n * rows) && arena.len() >= t.arena_len(threads), "winograd project: buffers too short");
    let u = TileRows::new(&mut u[..n * rows], t.geometry(), rows, threads);
    forward_blocks(pool, t, packed, gain, v, arena, u, |u, _, tiles, m, tmp, bias| {
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
    fn partial_len(&self) -> usize {
        self.filters_len() + self.rows
    }

    /// Whether [`matvec`] runs on `threads` threads: while the threads'
    /// partial sums take no more memory than the transformed inputs (many
    /// threads on a wide layer run the two products instead).
    pub(crate) fn fuses(&self, threads: usize) -> bool {
        threads.saturating_mul(self.partial_len()) <= self.packed_len()
    }

    /// Entries of arena [`matvec`] needs on `threads` threads: the products'
    /// and the partial sums.
    pub(crate) fn matvec_arena_len(&self, threads: usize) -> usize {
        self.arena_len(threads).saturating_add(threads.saturating_mul(self.partial_len()))
    }

    /// Entries of arena a step's products need on `threads` threads.
    pub(crate) fn step_arena_len(&self, threads: usize) -> usize {
        if self.fuses(threads) {
            self.matvec_arena_len(threads)
        } else {
            self.arena_len(threads)
        }
    }
}

/// `out += X^T (lambda .* X v^T)` in one pass over `Xt`: each thread
/// projects a block of tiles, scales its outputs and transforms them back
/// (the adjoint output transform) in place, and multiplies them with the
/// same block's `Xt` while it is still in cache, into its own partial
/// `Gt` and bias sums, added up at the end. Against [`project`] then
/// [`back_project`] it reads `Xt` once instead of twice, and `u` never
/// leaves the thread's block. Over the patches `pack` left with its `gain`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn matvec<T: Real>(pool: &ThreadPool, t: &Tiles, packed: &[T], gain: T, v: &[T], lambda: &[T], out: &mut [T], arena: &mut [T]) {
    let (rows, c, n, threads) = (t.rows, t.grid.c, t.n(), pool.threads());
    assert!(packed.len() >= t.packed_len() && v.len() >= rows * t.cols && lambda.len() >= n * rows, "winograd matvec: buffers too short");
    assert!(out.len() >= rows * t.cols && arena.len() >= t.matvec_arena_len(threads), "winograd matvec: buffers too short");
    let (arena, partials) = arena.split_at_mut(t.arena_len(threads));
    pool.split(Blocks::new(partials, t.partial_len(), threads), |_, partial| partial.fill(T::ZERO));
    forward_blocks(pool, t, packed, gain, v, arena, Blocks::new(partials, t.partial_len(), threads), |partial, b, tiles, m, tmp, bias| {
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
fn adjoint_tile<T: Real>(y: [&[T]; 4], m: &mut [T], at: impl Fn(usize) -> usize) {
    adjoint_column::<T, 0>(y, m, &at);
    adjoint_column::<T, 1>(y, m, &at);
    adjoint_column::<T, 2>(y, m, &at);
    adjoint_column::<T, 3>(y, m, &at);
}

/// The points `(p, Q)` of [`adjoint_tile`]: `s_a = sum_b A[Q][b] y[a][b]`,
/// then `Ut[p][Q] = sum_a A[p][a] s_a` for the four `p`.
#[inline(always)]
fn adjoint_column<T: Real, const Q: usize>([y00, y01, y10, y11]: [&[T]; 4], m: &mut [T], at: impl Fn(usize) -> usize) {
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
fn add_partials<T: Real>(pool: &ThreadPool, total: &mut [T], others: &[T]) {
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
fn gradient_parts(threads: usize, rows: usize) -> (usize, usize) {
    let row_parts = threads.div_ceil(POINTS).min(rows.max(1));
    ((threads / row_parts).min(POINTS), row_parts)
}

/// `g = u^T X` (added to `g` when `accumulate`), `g` row-major `R x D'`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn back_project<T: Real>(pool: &ThreadPool, t: &Tiles, packed: &[T], gain: T, u: &[T], accumulate: bool, g: &mut [T], arena: &mut [T]) {
    let (rows, c, n, threads) = (t.rows, t.grid.c, t.n(), pool.threads());
    assert!(packed.len() >= t.packed_len() && u.len() >= n * rows && g.len() >= rows * t.cols, "winograd back_project: buffers too short");
    assert!(arena.len() >= t.arena_len(threads), "winograd back_project: arena too short");
    let (filters, bias, blocks) = split_arena(t, arena);
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
fn transform_outputs<T: Real>(t: &Tiles, u: &[T], tiles: Range<usize>, js: &Range<usize>, points: &Range<usize>, ut: &mut [T], zeros: &[T]) {
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
fn column_sums<T: Real>(pool: &ThreadPool, u: &[T], n: usize, rows: usize, sums: &mut [T]) {
    pool.split(Rows::new(&mut sums[..rows], rows, 1, pool.threads()), |_, (js, acc)| {
        acc.fill(T::ZERO);
        for row in u[..n * rows].chunks_exact(rows) {
            acc.iter_mut().zip(&row[js.clone()]).for_each(|(a, &v)| *a += v);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The transform of a filter rotated by 180 degrees is the filter's
    /// transform with its points permuted by `ROTATED`, to the last bit.
    #[test]
    fn rotated_filters_permute_the_points() {
        let g: [f32; 9] = std::array::from_fn(|k| (k as f32 * 0.77).sin() * 3.1);
        let mut rotated = g;
        rotated.reverse();
        let (t, tr) = (filter_2d::<f32, f32>(&g), filter_2d::<f32, f32>(&rotated));
        for xi in 0..POINTS {
            assert_eq!(tr[xi].to_bits(), t[ROTATED[xi]].to_bits(), "point {xi}");
        }
    }

    /// The structured adjoint of a tile gives every point `adjoint_point`
    /// gives, up to the order of the additions.
    #[test]
    fn adjoint_tile_matches_adjoint_point() {
        let rows = 5;
        let y: Vec<f64> = (0..4 * rows).map(|k| (k as f64 * 0.61).cos() * 2.3).collect();
        let ys: [&[f64]; 4] = std::array::from_fn(|a| &y[a * rows..(a + 1) * rows]);
        let mut m = vec![0.0; POINTS * rows * 3];
        adjoint_tile(ys, &mut m, |xi| (xi * 3 + 1) * rows);
        for (xi, cf) in output_t_coef::<f64>().iter().enumerate() {
            let mut want = vec![0.0; rows];
            adjoint_point(&mut want, cf, ys);
            let got = &m[(xi * 3 + 1) * rows..][..rows];
            assert!(got.iter().zip(&want).all(|(a, b)| (a - b).abs() < 1e-14), "point {xi}");
        }
    }

    /// The fused matvec equals `project` with `lambda` then `back_project`,
    /// on a layer with a bias, odd sizes and blocks on both threads, with a
    /// gain other than 1 (which both apply to the bias feature).
    #[test]
    fn fused_matvec_matches_the_two_products() {
        use frog_core::Conv2d;
        let (layer, r) = (Layer::conv2d(Conv2d::new(6, 7, 3, [9, 7]).padding([1, 2]), true), 3);
        let pool = ThreadPool::new(2).unwrap();
        let t = Tiles::new(&layer, r, 2).unwrap();
        assert!(t.fuses(2));
        let val = |k: usize, a: f64| (k as f64 * a).sin();
        let x: Vec<f64> = (0..r * layer.input_len()).map(|k| val(k, 0.37)).collect();
        let n = r * layer.positions();
        let (v, lambda): (Vec<f64>, Vec<f64>) = ((0..7 * t.cols).map(|k| val(k, 0.53)).collect(), (0..n * 7).map(|k| 1.0 + val(k, 0.29)).collect());
        let mut packed = vec![0.0; t.packed_len()];
        let gain = 0.25;
        pack(&pool, &t, r, &x, gain, &mut packed);
        let mut arena = vec![0.0; t.matvec_arena_len(2)];
        let mut fused = vec![0.25; 7 * t.cols];
        matvec(&pool, &t, &packed, gain, &v, &lambda, &mut fused, &mut arena);
        let mut u = vec![0.0; n * 7];
        let mut two = vec![0.25; 7 * t.cols];
        project(&pool, &t, &packed, gain, &v, Some(&lambda), &mut u, &mut arena);
        back_project(&pool, &t, &packed, gain, &u, true, &mut two, &mut arena);
        let scale = two.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        assert!(fused.iter().zip(&two).all(|(a, b)| (a - b).abs() <= 1e-13 * scale));
    }

    /// Packing split over blocks writes what one thread writes alone, to
    /// the bit, where blocks straddle samples (3 samples of 20 tiles, in
    /// blocks of 15 tiles on 4 threads, of 7 on 9).
    #[test]
    fn packing_split_over_blocks_matches_one_thread() {
        use frog_core::Conv2d;
        let (layer, r) = (Layer::conv2d(Conv2d::new(5, 4, 3, [9, 7]).padding(1), false), 3);
        let x: Vec<f64> = (0..r * layer.input_len()).map(|k| (k as f64 * 0.37).sin()).collect();
        for threads in [4, 9] {
            let t = Tiles::new(&layer, r, threads).unwrap();
            let (mut one, mut split) = (vec![f64::NAN; t.packed_len()], vec![f64::NAN; t.packed_len()]);
            pack(&ThreadPool::new(1).unwrap(), &t, r, &x, 1.0, &mut one);
            pack(&ThreadPool::new(threads).unwrap(), &t, r, &x, 1.0, &mut split);
            assert!(one.iter().zip(&split).all(|(a, b)| a.to_bits() == b.to_bits()), "{threads} threads");
        }
    }

    /// The 1-D algorithm computes the correlation, and the adjoint pair
    /// is one: <G g, s> = <g, G^T s>.
    #[test]
    fn one_dimensional_transforms() {
        let (d, g) = ([0.3, -1.2, 2.5, 0.7], [1.5, -0.25, 0.5]);
        let (bd, gg) = (input_1d(d), filter_1d(g, 0.5));
        let m: Vec<f64> = (0..4).map(|k| bd[k] * gg[k]).collect();
        let y = [m[0] + m[1] + m[2], m[1] - m[2] - m[3]];
        for a in 0..2 {
            let want: f64 = (0..3).map(|k| g[k] * d[a + k]).sum();
            assert!((y[a] - want).abs() < 1e-14);
        }
        let s = [0.9, -0.4, 1.1, 0.2];
        let lhs: f64 = gg.iter().zip(&s).map(|(a, b)| a * b).sum();
        let gt = filter_1d_t(s, 0.5);
        let rhs: f64 = g.iter().zip(&gt).map(|(a, b)| a * b).sum();
        assert!((lhs - rhs).abs() < 1e-14);
    }
}
