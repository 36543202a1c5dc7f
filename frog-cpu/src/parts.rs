//! Safe parallel access to one buffer from every thread of a pool job.
//!
//! Why: the kernels split their outputs and scratch across the pool's
//! threads, each thread writing its own part. Safe Rust cannot hand
//! `&mut` pieces of one slice to a closure that every thread shares, so
//! this module does it once, for a few fixed ways of splitting a buffer
//! ([`Blocks`], [`Rows`], [`Grid`], [`RoundRobin`], [`TileRows`]), and
//! [`ThreadPool::split`] gives each thread its part. The kernels on top are
//! safe code; every `unsafe` of the splitting lives here, next to the
//! reason its parts are disjoint.
//!
//! [`ThreadPool::split`] consumes the splitting and hands out each part
//! once, so no two references to an entry exist, as with `split_at_mut`.
//! Nesting keeps that: a primitive started inside a job runs its threads'
//! closures one after another on the current thread (see
//! [`ThreadPool::run`]), still once per part, on buffers the outer part
//! borrowed exclusively. Kernels do not nest them (the pool's threads are
//! all busy, so the inner call gains nothing), but doing so would be slow,
//! never unsound.

use std::marker::PhantomData;
use std::ops::Range;

use faer::MatMut;

use crate::pool::{split_range, ThreadPool};

/// The buffer a splitting was made from, lent out in disjoint pieces.
struct Raw<'a, T> {
    ptr: *mut T,
    len: usize,
    _borrow: PhantomData<&'a mut [T]>,
}

// SAFETY: a `Raw` stands for the `&'a mut [T]` it was made from and only
// ever gives out `&mut` pieces of it (and, in `mirror_lower`, reads of
// entries no thread writes); sending or sharing it is sending those, which
// `T: Send + Sync` allows.
unsafe impl<T: Send + Sync> Send for Raw<'_, T> {}
// SAFETY: as for `Send`.
unsafe impl<T: Send + Sync> Sync for Raw<'_, T> {}

impl<'a, T> Raw<'a, T> {
    fn new(buf: &'a mut [T]) -> Self {
        Self { ptr: buf.as_mut_ptr(), len: buf.len(), _borrow: PhantomData }
    }

    /// Another handle on the same buffer, for a part to keep.
    fn share(&self) -> Self {
        Self { ptr: self.ptr, len: self.len, _borrow: PhantomData }
    }

    /// The start of the buffer.
    fn ptr(&self) -> *mut T {
        self.ptr
    }

    /// The entries `range` of the buffer; panics outside it.
    ///
    /// # Safety
    /// No other reference to these entries may be live while the result is.
    unsafe fn slice(&self, range: Range<usize>) -> &'a mut [T] {
        assert!(range.start <= range.end && range.end <= self.len, "part outside its buffer");
        // SAFETY: the range lies inside the buffer (asserted), which `Raw`
        // borrows exclusively for `'a`; the caller vouches that nothing else
        // touches these entries meanwhile.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(range.start), range.len()) }
    }
}

/// A buffer (or several) split into disjoint parts, one per thread.
pub(crate) trait Split: Sync {
    /// What one thread gets.
    type Part;

    /// The number of parts: the threads the work is meant for.
    fn parts(&self) -> usize;

    /// Part `part` (empty past [`Split::parts`]).
    ///
    /// # Safety
    /// At most one call per `part` (results for different parts never
    /// overlap).
    unsafe fn part(&self, part: usize) -> Self::Part;
}

impl ThreadPool {
    /// Calls `f(tid, part)` with part `tid` of `parts`, for every part,
    /// concurrently: on the calling thread alone when there is at most one
    /// part (no wake-up of the pool), else one part per thread.
    ///
    /// Panics if `parts` has more parts than the pool has threads.
    pub(crate) fn split<S: Split>(&self, parts: S, f: impl Fn(usize, S::Part) + Sync) {
        let n = parts.parts();
        assert!(n <= self.threads(), "{n} parts for a pool of {} threads", self.threads());
        if n <= 1 {
            // SAFETY: the only call of `part` of this splitting, which
            // `split` owns.
            return f(0, unsafe { parts.part(0) });
        }
        self.run(&|tid| {
            if tid < n {
                // SAFETY: `run` calls this closure once per `tid`, so part
                // `tid` of this splitting, which `split` owns, is taken once.
                f(tid, unsafe { parts.part(tid) });
            }
        });
    }
}

/// Part `p` of a buffer is `buf[p*len..(p+1)*len]`: one thread's scratch.
pub(crate) struct Blocks<'a, T> {
    raw: Raw<'a, T>,
    len: usize,
    count: usize,
}

impl<'a, T> Blocks<'a, T> {
    /// `count` blocks of `len` entries at the start of `buf`; panics when
    /// `buf` is shorter.
    pub(crate) fn new(buf: &'a mut [T], len: usize, count: usize) -> Self {
        assert!(len.checked_mul(count).is_some_and(|all| all <= buf.len()), "scratch too short for {count} blocks of {len}");
        Self { raw: Raw::new(buf), len, count }
    }
}

impl<'a, T: Send + Sync> Split for Blocks<'a, T> {
    type Part = &'a mut [T];

    fn parts(&self) -> usize {
        self.count
    }

    unsafe fn part(&self, part: usize) -> &'a mut [T] {
        let range = if part < self.count { part * self.len..(part + 1) * self.len } else { 0..0 };
        // SAFETY: blocks of different parts do not overlap, and the caller
        // takes each part once.
        unsafe { self.raw.slice(range) }
    }
}

/// Part `p` of a buffer of rows `stride` entries apart is the rows
/// `split_range(rows, parts, p)` (or, made by [`Rows::triangle`], the
/// `p`-th of `parts` bands of rows of equal area below the diagonal): the
/// entries from its first row's start to the next part's, cut at the
/// buffer's end (so the last row may be shorter than `stride`). Each part
/// comes with its row range.
pub(crate) struct Rows<'a, T> {
    raw: Raw<'a, T>,
    rows: usize,
    stride: usize,
    parts: usize,
    triangle: bool,
}

impl<'a, T> Rows<'a, T> {
    /// `rows` rows of `buf`, `stride` apart, split into `parts` parts.
    pub(crate) fn new(buf: &'a mut [T], rows: usize, stride: usize, parts: usize) -> Self {
        Self { raw: Raw::new(buf), rows, stride, parts, triangle: false }
    }

    /// The rows of a lower triangle split into `parts` bands of equal area.
    pub(crate) fn triangle(buf: &'a mut [T], rows: usize, stride: usize, parts: usize) -> Self {
        Self { triangle: true, ..Self::new(buf, rows, stride, parts) }
    }

    /// Part `p`'s rows.
    fn range(&self, p: usize) -> Range<usize> {
        if !self.triangle {
            return split_range(self.rows, self.parts, p);
        }
        // Nondecreasing in `t` and at most `rows`, so the bands are
        // disjoint and ascending.
        let band = |t: usize| ((self.rows as f64 * (t as f64 / self.parts as f64).sqrt()).round() as usize).min(self.rows);
        if p < self.parts {
            band(p)..band(p + 1)
        } else {
            self.rows..self.rows
        }
    }
}

impl<'a, T: Send + Sync> Split for Rows<'a, T> {
    type Part = (Range<usize>, &'a mut [T]);

    fn parts(&self) -> usize {
        self.parts
    }

    unsafe fn part(&self, part: usize) -> (Range<usize>, &'a mut [T]) {
        let rows = self.range(part);
        let at = |row: usize| row.saturating_mul(self.stride).min(self.raw.len);
        // SAFETY: the parts' row ranges are disjoint and ascending, so are
        // their entry ranges (cut at the same end); each part is taken once.
        let entries = unsafe { self.raw.slice(at(rows.start)..at(rows.end)) };
        (rows, entries)
    }
}

/// A `[planes][rows][len]` buffer cut into boxes: part `p` holds planes
/// `split_range(planes, plane_parts, p % plane_parts)` and, of each, rows
/// `split_range(rows, row_parts, p / plane_parts)`.
pub(crate) struct Grid<'a, T> {
    raw: Raw<'a, T>,
    dims: [usize; 3],
    split: [usize; 2],
}

impl<'a, T> Grid<'a, T> {
    /// The boxes of `buf` seen as `dims = [planes, rows, len]`, split
    /// `[plane_parts, row_parts]` ways; panics when `buf` is shorter.
    pub(crate) fn new(buf: &'a mut [T], dims: [usize; 3], split: [usize; 2]) -> Self {
        let all = dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
        assert!(all.is_some_and(|all| all <= buf.len()), "buffer too short for {dims:?}");
        assert!(split[0].checked_mul(split[1]).is_some(), "too many parts");
        Self { raw: Raw::new(buf), dims, split }
    }
}

/// One thread's box of a [`Grid`].
pub(crate) struct GridPart<'a, T> {
    raw: Raw<'a, T>,
    dims: [usize; 3],
    planes: Range<usize>,
    rows: Range<usize>,
}

impl<T> GridPart<'_, T> {
    /// The part's rows (of every plane).
    pub(crate) fn rows(&self) -> Range<usize> {
        self.rows.clone()
    }

    /// The part's planes.
    pub(crate) fn planes(&self) -> Range<usize> {
        self.planes.clone()
    }

    /// The part's rows of plane `plane`, back to back; panics when the
    /// plane is not the part's.
    pub(crate) fn plane(&mut self, plane: usize) -> &mut [T] {
        assert!(self.planes.contains(&plane), "plane {plane} is not this part's");
        let [_, rows, len] = self.dims;
        let start = (plane * rows + self.rows.start) * len;
        // SAFETY: the entries are this part's box's (inside the buffer,
        // checked by `Grid::new`); boxes of different parts are disjoint,
        // and `&mut self` keeps one slice of the box live at a time.
        unsafe { self.raw.slice(start..start + self.rows.len() * len) }
    }

    /// The part's rows of each of its `N` planes, all at once.
    pub(crate) fn planes_mut<const N: usize>(&mut self) -> [&mut [T]; N] {
        assert!(self.planes.len() == N, "{N} planes asked of a part with {}", self.planes.len());
        let [_, rows, len] = self.dims;
        std::array::from_fn(|i| {
            let start = ((self.planes.start + i) * rows + self.rows.start) * len;
            // SAFETY: as in `plane`; the `N` planes' rows are disjoint.
            unsafe { self.raw.slice(start..start + self.rows.len() * len) }
        })
    }

    /// The box as a faer matrix: a row per plane, the part's rows of the
    /// plane side by side, `rows * len` apart.
    pub(crate) fn matrix(&mut self) -> MatMut<'_, T> {
        let [_, rows, len] = self.dims;
        let (m, n) = (self.planes.len(), self.rows.len() * len);
        if m == 0 || n == 0 {
            return MatMut::from_row_major_slice_mut(&mut [], m, n);
        }
        let start = (self.planes.start * rows + self.rows.start) * len;
        let end = ((self.planes.end - 1) * rows + self.rows.end) * len;
        assert!(end <= self.raw.len && isize::try_from(rows * len).is_ok(), "part outside its buffer");
        // SAFETY: the matrix's entries are exactly this part's box (the
        // last one, `end - 1`, is inside the buffer, asserted), disjoint
        // from every other part's; `&mut self` keeps it the only view.
        unsafe { MatMut::from_raw_parts_mut(self.raw.ptr().add(start), m, n, (rows * len) as isize, 1) }
    }
}

impl<'a, T: Send + Sync> Split for Grid<'a, T> {
    type Part = GridPart<'a, T>;

    fn parts(&self) -> usize {
        self.split[0] * self.split[1]
    }

    /// Past the last part, an empty box.
    unsafe fn part(&self, part: usize) -> GridPart<'a, T> {
        let [planes, rows, _] = self.dims;
        let [pp, rp] = self.split;
        let (planes, rows) = if part < pp * rp { (split_range(planes, pp, part % pp), split_range(rows, rp, part / pp)) } else { (0..0, 0..0) };
        GridPart { raw: self.raw.share(), dims: self.dims, planes, rows }
    }
}

#[cfg(feature = "nn")] // the training convolutions' batches only
/// Chunks of `chunk` entries (the last one possibly shorter) dealt out in
/// turn: part `p` holds chunks `p`, `p + parts`, `p + 2 parts`, ...
pub(crate) struct RoundRobin<'a, T> {
    raw: Raw<'a, T>,
    chunk: usize,
    parts: usize,
}

#[cfg(feature = "nn")]
impl<'a, T> RoundRobin<'a, T> {
    /// The chunks of `buf` dealt to `parts` parts.
    pub(crate) fn new(buf: &'a mut [T], chunk: usize, parts: usize) -> Self {
        assert!(chunk > 0 || buf.is_empty(), "chunks must not be empty");
        Self { raw: Raw::new(buf), chunk, parts }
    }
}

#[cfg(feature = "nn")]
/// One part's chunks of a [`RoundRobin`], with their indices.
pub(crate) struct RoundRobinPart<'a, T> {
    raw: Raw<'a, T>,
    chunk: usize,
    next: usize,
    step: usize,
}

#[cfg(feature = "nn")]
impl<'a, T> Iterator for RoundRobinPart<'a, T> {
    type Item = (usize, &'a mut [T]);

    fn next(&mut self) -> Option<Self::Item> {
        let start = self.next.checked_mul(self.chunk).filter(|&s| s < self.raw.len)?;
        let index = self.next;
        self.next = self.next.saturating_add(self.step);
        let end = start.saturating_add(self.chunk).min(self.raw.len);
        // SAFETY: chunk `index` belongs to this part alone (indices are
        // dealt by their remainder modulo the parts), and the iterator
        // yields each of its indices once.
        Some((index, unsafe { self.raw.slice(start..end) }))
    }
}

#[cfg(feature = "nn")]
impl<'a, T: Send + Sync> Split for RoundRobin<'a, T> {
    type Part = RoundRobinPart<'a, T>;

    fn parts(&self) -> usize {
        self.parts
    }

    /// Past the last part, no chunks.
    unsafe fn part(&self, part: usize) -> RoundRobinPart<'a, T> {
        let next = if part < self.parts { part } else { usize::MAX };
        RoundRobinPart { raw: self.raw.share(), chunk: self.chunk, next, step: self.parts }
    }
}

/// The rows of the Winograd product layout `u` (`N x R`, a row per output
/// position of `r` samples) owned by whoever computes their tile: part `p`
/// holds the rows of the outputs of the 2x2 tiles in blocks
/// `split_range(blocks, parts, p)`.
pub(crate) struct TileRows<'a, T> {
    raw: Raw<'a, T>,
    geometry: TileGeometry,
    row_len: usize,
    parts: usize,
}

/// How output positions group into 2x2 tiles and tiles into blocks.
#[derive(Clone, Copy)]
pub(crate) struct TileGeometry {
    /// Output size `[Ho, Wo]` of a sample.
    pub(crate) out: [usize; 2],
    /// Tiles of a sample's row of tiles (`ceil(Wo/2)`).
    pub(crate) tile_cols: usize,
    /// Tiles of a sample.
    pub(crate) per_sample: usize,
    /// Tiles per block.
    pub(crate) block: usize,
    /// Blocks in all.
    pub(crate) blocks: usize,
}

impl TileGeometry {
    /// The output positions (rows of `u`) of tile `t`'s four outputs
    /// (`None` past the edge), in the order `(0,0), (0,1), (1,0), (1,1)`.
    /// Distinct tiles have distinct positions.
    pub(crate) fn outputs(&self, t: usize) -> [Option<usize>; 4] {
        let [ho, wo] = self.out;
        let (i, k) = (t / self.per_sample, t % self.per_sample);
        let (oy, ox) = (2 * (k / self.tile_cols), 2 * (k % self.tile_cols));
        let base = i * ho * wo;
        let at = |a: usize, b: usize| (oy + a < ho && ox + b < wo).then(|| base + (oy + a) * wo + ox + b);
        [at(0, 0), at(0, 1), at(1, 0), at(1, 1)]
    }
}

impl<'a, T> TileRows<'a, T> {
    /// The rows (`row_len` entries each) of `buf` in `geometry`, split
    /// `parts` ways.
    ///
    /// Panics unless every index the geometry computes fits `usize`, so no
    /// two tiles' rows can meet through a wrapped product.
    pub(crate) fn new(buf: &'a mut [T], geometry: TileGeometry, row_len: usize, parts: usize) -> Self {
        let g = geometry;
        assert!(g.per_sample > 0 && g.tile_cols > 0, "an empty tile geometry");
        let samples = g.blocks.checked_mul(g.block).map(|tiles| tiles.div_ceil(g.per_sample));
        let entries = [g.out[0], g.out[1], row_len].into_iter().fold(samples, |acc, d| acc.and_then(|a| a.checked_mul(d)));
        assert!(entries.is_some() && g.per_sample.checked_mul(2).is_some(), "tile geometry overflows usize");
        Self { raw: Raw::new(buf), geometry, row_len, parts }
    }
}

/// One part's rows of a [`TileRows`].
pub(crate) struct TileRowsPart<'a, T> {
    raw: Raw<'a, T>,
    geometry: TileGeometry,
    row_len: usize,
    /// The tiles of the part's blocks.
    tiles: Range<usize>,
}

impl<T> TileRowsPart<'_, T> {
    /// The rows of tile `t`'s outputs with their indices (see
    /// [`TileGeometry::outputs`]); panics unless the tile is the part's.
    pub(crate) fn outputs(&mut self, t: usize) -> [Option<(usize, &mut [T])>; 4] {
        assert!(self.tiles.contains(&t), "tile {t} is not this part's");
        let len = self.row_len;
        self.geometry.outputs(t).map(|n| {
            n.map(|n| {
                let start = n.checked_mul(len).expect("row outside its buffer");
                // SAFETY: the four rows of a tile are distinct, and rows of
                // different tiles too (every position lies in one tile);
                // this tile lies in one of the part's blocks (asserted),
                // each block in one part's range; `&mut self` keeps one
                // tile's rows of the part live at a time.
                (n, unsafe { self.raw.slice(start..start.saturating_add(len)) })
            })
        })
    }
}

impl<'a, T: Send + Sync> Split for TileRows<'a, T> {
    type Part = TileRowsPart<'a, T>;

    fn parts(&self) -> usize {
        self.parts
    }

    unsafe fn part(&self, part: usize) -> TileRowsPart<'a, T> {
        let g = self.geometry;
        let blocks = split_range(g.blocks, self.parts, part);
        let tiles = blocks.start.saturating_mul(g.block)..blocks.end.saturating_mul(g.block);
        TileRowsPart { raw: self.raw.share(), geometry: g, row_len: self.row_len, tiles }
    }
}

/// Several splittings at once, taken part by part together.
macro_rules! tuple_split {
    ($($s:ident $i:tt),+) => {
        impl<$($s: Split),+> Split for ($($s,)+) {
            type Part = ($($s::Part,)+);

            fn parts(&self) -> usize {
                0 $(.max(self.$i.parts()))+
            }

            unsafe fn part(&self, part: usize) -> Self::Part {
                // SAFETY: the caller's promise for `part`, passed on to each.
                unsafe { ($(self.$i.part(part),)+) }
            }
        }
    };
}

tuple_split!(A 0, B 1);
tuple_split!(A 0, B 1, C 2);
tuple_split!(A 0, B 1, C 2, D 3);

impl<S: Split, const N: usize> Split for [S; N] {
    type Part = [S::Part; N];

    fn parts(&self) -> usize {
        self.iter().map(S::parts).max().unwrap_or(0)
    }

    unsafe fn part(&self, part: usize) -> Self::Part {
        // SAFETY: the caller's promise for `part`, passed on to each.
        std::array::from_fn(|i| unsafe { self[i].part(part) })
    }
}

impl<S: Split> Split for Option<S> {
    type Part = Option<S::Part>;

    fn parts(&self) -> usize {
        self.as_ref().map_or(0, S::parts)
    }

    unsafe fn part(&self, part: usize) -> Self::Part {
        // SAFETY: the caller's promise for `part`, passed on.
        self.as_ref().map(|s| unsafe { s.part(part) })
    }
}

/// Copies the lower triangle of the row-major `n x n` matrix `k` onto its
/// upper triangle (`k[i][j] = k[j][i]` for `j > i`), the rows split over
/// `parts` threads.
///
/// Why here: each thread writes above the diagonal in its own rows but
/// reads below the diagonal in everyone's, a pattern no splitting into
/// disjoint slices expresses; it is sound because no entry is both.
pub(crate) fn mirror_lower<T: Copy + Send + Sync>(pool: &ThreadPool, parts: usize, n: usize, k: &mut [T]) {
    assert!(n.checked_mul(n).is_some_and(|nn| nn <= k.len()), "matrix outside its buffer");
    let raw = Raw::new(k);
    pool.run(&|tid| {
        for i in split_range(n, parts, tid) {
            for j in i + 1..n {
                // SAFETY: both entries are inside the `n x n` matrix
                // (asserted); this pass writes only entries above the
                // diagonal, each in one thread's rows, and reads only
                // entries below it, which no thread writes.
                unsafe { *raw.ptr().add(i * n + j) = *raw.ptr().add(j * n + i) };
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Every entry of every splitting is handed to exactly one part.
    #[test]
    fn parts_cover_each_entry_once() {
        let pool = ThreadPool::new(3).unwrap();
        let check = |buf: &[usize], want: &[usize]| assert_eq!(buf, want);
        let mut buf = vec![0usize; 14];
        pool.split(Blocks::new(&mut buf, 4, 3), |tid, b| b.iter_mut().for_each(|v| *v += tid + 1));
        check(&buf, &[1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 0, 0]);
        let mut buf = vec![0usize; 14];
        pool.split(Rows::new(&mut buf, 5, 3, 3), |tid, (_, b)| b.iter_mut().for_each(|v| *v += tid + 1));
        check(&buf, &[1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 3, 3]);
        let mut buf = vec![0usize; 14];
        pool.split(RoundRobin::new(&mut buf, 3, 2), |tid, chunks| chunks.for_each(|(_, c)| c.iter_mut().for_each(|v| *v += tid + 1)));
        check(&buf, &[1, 1, 1, 2, 2, 2, 1, 1, 1, 2, 2, 2, 1, 1]);
        let mut buf = vec![0usize; 12];
        pool.split(Grid::new(&mut buf, [2, 3, 2], [1, 3]), |tid, mut g| {
            for p in g.planes() {
                g.plane(p).iter_mut().for_each(|v| *v += tid + 1);
            }
        });
        check(&buf, &[1, 1, 2, 2, 3, 3, 1, 1, 2, 2, 3, 3]);
        let mut buf = vec![0usize; 12];
        pool.split(Grid::new(&mut buf, [2, 3, 2], [1, 3]), |tid, mut g| g.matrix().col_iter_mut().for_each(|c| c.iter_mut().for_each(|v| *v += tid + 1)));
        check(&buf, &[1, 1, 2, 2, 3, 3, 1, 1, 2, 2, 3, 3]);
    }

    /// A 5x3 output grid has 3x2 tiles; with blocks of 2 tiles over 2
    /// parts, part 0 owns tiles 0..4 (output rows 0..4), part 1 tiles
    /// 4..6, and another part's tile is refused.
    #[test]
    fn tile_rows_belong_to_their_tiles_part() {
        let pool = ThreadPool::new(2).unwrap();
        let g = TileGeometry { out: [5, 3], tile_cols: 2, per_sample: 6, block: 2, blocks: 3 };
        let mut buf = vec![0usize; 15];
        let seen = AtomicUsize::new(0);
        pool.split(TileRows::new(&mut buf, g, 1, 2), |tid, mut rows| {
            for tile in 0..6 {
                if (tile < 4) == (tid == 0) {
                    for (_, row) in rows.outputs(tile).into_iter().flatten() {
                        row[0] = tid + 1;
                        seen.fetch_add(1, Ordering::SeqCst);
                    }
                } else {
                    assert!(std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| rows.outputs(tile).len())).is_err());
                }
            }
        });
        assert_eq!(seen.load(Ordering::SeqCst), 15);
        assert_eq!(buf, [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2]);
    }

    /// A splitting inside a job runs its parts one after another on that
    /// job's thread, each once.
    #[test]
    fn nested_splits_take_each_part_once() {
        let pool = ThreadPool::new(2).unwrap();
        let mut buf = vec![0usize; 8];
        pool.split(Blocks::new(&mut buf, 4, 2), |_, block| {
            pool.split(Rows::new(block, 4, 1, 2), |tid, (_, rows)| rows.iter_mut().for_each(|v| *v += tid + 1));
        });
        assert_eq!(buf, [1, 1, 2, 2, 1, 1, 2, 2]);
    }

    #[test]
    fn mirror_copies_the_lower_triangle() {
        let pool = ThreadPool::new(3).unwrap();
        let n = 7;
        let mut k: Vec<f64> = (0..n * n).map(|i| if i % n <= i / n { i as f64 } else { -1.0 }).collect();
        mirror_lower(&pool, 3, n, &mut k);
        for i in 0..n {
            for j in 0..n {
                assert_eq!(k[i * n + j], k[j * n + i]);
            }
        }
    }
}
