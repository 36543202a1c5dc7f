//! The tiling of a Winograd step: sizes of the transformed inputs, the
//! blocks the products run over, and the scratch they need.

use std::ops::Range;

use frog_core::{Layer, LayerKind};

use crate::parts::TileGeometry;

use super::*;

/// Transformed points per tile (4x4).
pub(crate) const POINTS: usize = 16;

/// Tiles per block of a product: the inner dimension of the weight-gradient
/// GEMMs and the row count of the forward ones, long enough that the GEMM
/// kernels amortize packing their other operand (`R x c_in`) per call.
pub(super) const BLOCK_TILES: usize = 256;

/// The tiling of one step of a Winograd layer: sizes only, all exact for a
/// validated layer (products saturate so an unvalidated one asks for an
/// impossible buffer instead of wrapping).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Tiles {
    pub(super) grid: Grid,
    /// Rows `R` (output channels).
    pub(super) rows: usize,
    /// Tiles of the whole step (`r * grid.per_sample()`).
    pub(super) total: usize,
    /// `D'` (row length of `v` and `g`) and whether the bias column is there.
    pub(super) cols: usize,
    pub(super) bias: bool,
    /// Tiles per block: the transformed inputs are stored block by block
    /// (`[block][xi][tile][c]`), so a product's operands are contiguous.
    pub(super) block: usize,
    /// Entries between two tiles of a block: `c_in` padded off powers of
    /// two, which would map every tile's run onto the same cache sets. Tile
    /// rows (not channel rows): faer's kernels ran the forward products
    /// 1.1-1.6x and the weight-gradient ones 1.0-1.2x faster on them.
    pub(super) stride: usize,
    /// Blocks of the step.
    pub(super) blocks: usize,
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
    pub(super) fn xt(&self, b: usize, xi: usize) -> usize {
        (b * POINTS + xi) * self.block * self.stride
    }

    /// Tiles `b*block..` of block `b`.
    pub(super) fn block_tiles(&self, b: usize) -> Range<usize> {
        b * self.block..((b + 1) * self.block).min(self.total)
    }

    /// Entries of the transformed directions or gradient (`16 x R x c_in`).
    pub(super) fn filters_len(&self) -> usize {
        POINTS * self.rows * self.grid.c
    }

    /// Entries of one thread's scratch: a tile block of `M` or `Ut`, and
    /// 12 rows for the output transform's stages (or zeros).
    pub(super) fn block_len(&self) -> usize {
        (POINTS * self.block + 12) * self.rows
    }

    /// Entries of product scratch [`project`] and [`back_project`] need on
    /// `threads` threads: the transformed filters, `R` entries for the
    /// bias, and a block per thread.
    pub(crate) fn scratch_len(&self, threads: usize) -> usize {
        self.filters_len().saturating_add(self.rows).saturating_add(threads.saturating_mul(self.block_len()))
    }

    pub(super) fn positions(&self) -> usize {
        self.grid.out[0] * self.grid.out[1]
    }

    /// Rows of `u` (`r * L`).
    pub(super) fn n(&self) -> usize {
        self.total / self.grid.per_sample() * self.positions()
    }

    /// How the step's output positions group into tiles and blocks.
    pub(super) fn geometry(&self) -> TileGeometry {
        let g = self.grid;
        TileGeometry { out: g.out, tile_cols: g.tiles[1], per_sample: g.per_sample(), block: self.block, blocks: self.blocks }
    }

    /// The rows of `u` of tile `t`'s four outputs (`None` past the edge),
    /// in the order `(0,0), (0,1), (1,0), (1,1)`.
    pub(super) fn outputs(&self, t: usize) -> [Option<usize>; 4] {
        self.geometry().outputs(t)
    }
}
