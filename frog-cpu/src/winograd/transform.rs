//! The Winograd F(2x2, 3x3) transforms: of inputs, filters and outputs,
//! one value or [`Lanes`] of values at a time, and the training grid.

use std::ops::{Add, Range, Sub};

use crate::gemm::Real;
use crate::parts::{Grid as GridSplit, Rows};
use crate::pool::ThreadPool;

use super::*;

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
    pub(super) fn load(src: &[T]) -> Self {
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
    pub(super) fn store(&self, dst: &mut [T]) {
        match <&mut [T; LANES]>::try_from(&mut *dst) {
            Ok(all) => *all = self.0,
            Err(_) => dst.iter_mut().zip(&self.0).for_each(|(d, &v)| *d = v),
        }
    }

    #[inline(always)]
    pub(super) fn zip(self, o: Self, f: impl Fn(T, T) -> T) -> Self {
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
pub(super) fn input_1d<V: Copy + Add<Output = V> + Sub<Output = V>>(d: [V; 4]) -> [V; 4] {
    [d[0] - d[2], d[1] + d[2], d[2] - d[1], d[1] - d[3]]
}

/// `G g` for one axis of a filter.
#[inline(always)]
pub(super) fn filter_1d<T: Copy, V: Value<T>>(g: [V; 3], half: T) -> [V; 4] {
    let (even, odd) = (g[0] + g[2], g[1]);
    [g[0], (even + odd).scale(half), (even - odd).scale(half), g[2]]
}

/// `G^T s` for one axis: the adjoint of [`filter_1d`].
#[inline(always)]
pub(super) fn filter_1d_t<T: Copy, V: Value<T>>(s: [V; 4], half: T) -> [V; 3] {
    let (sum, diff) = ((s[1] + s[2]).scale(half), (s[1] - s[2]).scale(half));
    [s[0] + sum, diff, sum + s[3]]
}

/// `B^T d B` of a 4x4 tile, row-major.
#[inline(always)]
pub(super) fn input_2d<V: Copy + Add<Output = V> + Sub<Output = V>>(d: &[[V; 4]; 4]) -> [V; POINTS] {
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
pub(super) fn zip3<T: Copy>(out: &mut [T], a: &[T], b: &[T], c: &[T], f: impl Fn(T, T, T) -> T) {
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
pub(super) const A: [[f64; 2]; 4] = [[1.0, 0.0], [1.0, 1.0], [1.0, -1.0], [0.0, -1.0]];

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
#[cfg(feature = "nn")] // the training convolutions' data gradient only
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
pub(super) fn filter_2d<T: Real, V: Value<T>>(g: &[V; 9]) -> [V; POINTS] {
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
pub(super) fn filter_2d_t<T: Real, V: Value<T>>(s: &[V; POINTS]) -> [V; 9] {
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
    #[cfg(feature = "nn")]
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
