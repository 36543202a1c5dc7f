//! Launch configuration: kernel signatures, argument packing and grid
//! sizes. Pure host logic, unit-tested without a device.

use crate::error::Error;

/// Threads per block of every kernel (the `BLOCK` of the CUDA sources).
pub const BLOCK: u32 = 256;
/// GEMM tile depth along K (`BK` of the CUDA sources); split-K chunks are
/// multiples of it.
pub const TILE_K: usize = 16;
/// Largest grid of the grid-stride kernels.
const MAX_BLOCKS: usize = 65_535;

/// The type of one kernel parameter, as PTX spells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ty {
    /// `int` (`.u32` in PTX).
    I32,
    /// `float` (`.f32`).
    F32,
    /// A device pointer (`.u64`).
    Ptr,
}

/// One kernel argument.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Arg {
    /// `int`.
    I(i32),
    /// `float`.
    F(f32),
    /// A device pointer.
    P(u64),
}

impl Arg {
    /// The argument's type.
    pub fn ty(self) -> Ty {
        match self {
            Arg::I(_) => Ty::I32,
            Arg::F(_) => Ty::F32,
            Arg::P(_) => Ty::Ptr,
        }
    }

    /// A pointer argument moved `entries` f32 entries further (other
    /// arguments unchanged).
    pub fn offset(self, entries: usize) -> Arg {
        match self {
            Arg::P(p) => Arg::P(p + 4 * entries as u64),
            other => other,
        }
    }

    /// The argument in a little-endian 8-byte slot, as the driver reads it
    /// (`sizeof(param)` bytes from the slot's address).
    pub fn slot(self) -> u64 {
        match self {
            Arg::I(v) => u64::from(v as u32),
            Arg::F(v) => u64::from(v.to_bits()),
            Arg::P(p) => p,
        }
    }
}

/// Most parameters any kernel takes.
pub const MAX_ARGS: usize = 20;

/// Checks `args` against a kernel's signature and packs them into slots.
pub fn pack(name: &'static str, sig: &[Ty], args: &[Arg]) -> Result<[u64; MAX_ARGS], Error> {
    if sig.len() != args.len() || args.len() > MAX_ARGS {
        return Err(Error::Kernel { name, problem: "wrong number of arguments" });
    }
    let mut slots = [0u64; MAX_ARGS];
    for ((slot, arg), ty) in slots.iter_mut().zip(args).zip(sig) {
        if arg.ty() != *ty {
            return Err(Error::Kernel { name, problem: "argument type does not match the signature" });
        }
        *slot = arg.slot();
    }
    Ok(slots)
}

/// A size as a kernel `int`, or an error naming it.
pub fn int(what: &'static str, v: usize) -> Result<i32, Error> {
    i32::try_from(v).map_err(|_| Error::TooLarge { what, value: v })
}

/// A launch: grid `(x, y, z)` of `BLOCK`-thread blocks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Grid {
    /// Blocks along x.
    pub x: u32,
    /// Blocks along y.
    pub y: u32,
    /// Blocks along z.
    pub z: u32,
}

impl Grid {
    /// A one-dimensional grid.
    pub fn x(x: u32) -> Self {
        Self { x, y: 1, z: 1 }
    }

    /// Whether the launch does nothing.
    pub fn is_empty(&self) -> bool {
        self.x == 0 || self.y == 0 || self.z == 0
    }
}

/// A grid-stride kernel over `n` entries: one thread per entry, capped.
pub fn elementwise(n: usize) -> Grid {
    Grid::x(n.div_ceil(BLOCK as usize).min(MAX_BLOCKS) as u32)
}

/// One block per row.
pub fn per_row(rows: usize) -> Result<Grid, Error> {
    if rows > MAX_BLOCKS * MAX_BLOCKS {
        return Err(Error::TooLarge { what: "rows", value: rows });
    }
    Ok(Grid::x(rows as u32))
}

/// One warp per row of a grid-stride kernel.
pub fn per_warp(rows: usize) -> Grid {
    let warps_per_block = BLOCK as usize / 32;
    Grid::x(rows.div_ceil(warps_per_block).min(MAX_BLOCKS) as u32)
}

/// A per-channel reduction over `n` entries per channel in two stages
/// (BatchNorm's): a grid of (parts, channels) blocks, each summing a part of
/// `part_len` entries, enough parts for about four blocks per SM however few
/// the channels, each part at least 4 entries per thread. Returns the grid
/// and `part_len`; no part is empty.
pub fn channel_parts(channels: usize, n: usize, sms: u32) -> Result<(Grid, usize), Error> {
    if channels > MAX_BLOCKS {
        return Err(Error::TooLarge { what: "channels", value: channels });
    }
    let min_part = 4 * BLOCK as usize;
    let parts = (4 * sms.max(1) as usize).div_ceil(channels.max(1)).clamp(1, n.div_ceil(min_part).max(1));
    let part_len = n.div_ceil(parts).max(1);
    let parts = n.div_ceil(part_len).max(1);
    Ok((Grid { x: parts as u32, y: channels as u32, z: 1 }, part_len))
}

/// The output tile of one GEMM block: the kernels come in two sides.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tile {
    /// 64 x 64 outputs per block: more blocks on small problems.
    T64,
    /// 128 x 128 outputs per block: half the operand traffic per output.
    T128,
}

impl Tile {
    /// Outputs along each side.
    pub fn side(self) -> usize {
        match self {
            Tile::T64 => 64,
            Tile::T128 => 128,
        }
    }

    /// Blocks that keep the device busy: about two waves of resident
    /// blocks (the 128 tile holds one block per SM, the 64 tile several).
    fn busy_blocks(self, sms: u32) -> usize {
        let per_sm = match self {
            Tile::T64 => 2,
            Tile::T128 => 1,
        };
        2 * per_sm * sms.max(1) as usize
    }
}

/// A GEMM of `m x n` outputs over depth `k`: tile, grid and split-K chunk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GemmPlan {
    /// The tile of one block.
    pub tile: Tile,
    /// The grid: x over N tiles, y over M tiles, z over K chunks.
    pub grid: Grid,
    /// Depth of one K chunk (a multiple of `TILE_K`).
    pub kchunk: usize,
}

impl GemmPlan {
    /// Whether the plan accumulates partial sums (needs a pre-initialized C
    /// and the atomic epilogue).
    pub fn split(&self) -> bool {
        self.grid.z > 1
    }
}

/// Plans a GEMM. `tile` forces a tile; otherwise the 128 tile is taken
/// when it alone (or with split-K, when allowed) yields a block for every
/// SM. With `allow_split`, a K that is long against few
/// output tiles is cut into chunks, each at least 8 slices deep.
pub fn gemm_plan(m: usize, n: usize, k: usize, sms: u32, allow_split: bool, tile: Option<Tile>) -> Result<GemmPlan, Error> {
    let k = k.max(1);
    let max_splits = if allow_split { k.div_ceil(8 * TILE_K).clamp(1, MAX_BLOCKS) } else { 1 };
    let tiles = |t: Tile| m.div_ceil(t.side()).max(1) * n.div_ceil(t.side()).max(1);
    let tile = tile.unwrap_or({
        let big = m >= Tile::T128.side() && n >= Tile::T128.side();
        if big && tiles(Tile::T128) * max_splits >= sms as usize {
            Tile::T128
        } else {
            Tile::T64
        }
    });
    let (tn, tm) = (n.div_ceil(tile.side()), m.div_ceil(tile.side()));
    if tm > MAX_BLOCKS {
        return Err(Error::TooLarge { what: "GEMM rows", value: m });
    }
    if tn > i32::MAX as usize {
        return Err(Error::TooLarge { what: "GEMM columns", value: n });
    }
    let splits = (tile.busy_blocks(sms) / tiles(tile)).clamp(1, max_splits);
    let kchunk = k.div_ceil(splits).div_ceil(TILE_K) * TILE_K;
    let splits = k.div_ceil(kchunk);
    Ok(GemmPlan { tile, grid: Grid { x: tn as u32, y: tm as u32, z: splits as u32 }, kchunk })
}

/// The parameter types of every `.entry` in a PTX text, in order:
/// `(name, types)`. Used by tests to check the signature table.
pub fn ptx_entries(ptx: &str) -> Vec<(String, Vec<Ty>)> {
    let mut out = Vec::new();
    let mut lines = ptx.lines();
    while let Some(line) = lines.next() {
        let Some(rest) = line.trim().strip_prefix(".visible .entry ") else { continue };
        let name = rest.split('(').next().unwrap_or("").trim().to_string();
        let mut tys = Vec::new();
        for l in lines.by_ref() {
            let l = l.trim();
            if let Some(p) = l.strip_prefix(".param ") {
                tys.push(match p.split_whitespace().next() {
                    Some(".f32") => Ty::F32,
                    Some(".u64") => Ty::Ptr,
                    _ => Ty::I32,
                });
            }
            if l.starts_with(')') {
                break;
            }
        }
        out.push((name, tys));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_hold_little_endian_values() {
        assert_eq!(Arg::I(-1).slot(), 0xffff_ffff);
        assert_eq!(Arg::I(7).slot(), 7);
        assert_eq!(Arg::F(1.0).slot(), 0x3f80_0000);
        assert_eq!(Arg::P(0xdead_beef_0000).slot(), 0xdead_beef_0000);
    }

    #[test]
    fn pack_checks_count_and_types() {
        let sig = [Ty::I32, Ty::F32, Ty::Ptr];
        let ok = pack("k", &sig, &[Arg::I(3), Arg::F(2.0), Arg::P(16)]).unwrap();
        assert_eq!(&ok[..3], &[3, 0x4000_0000, 16]);
        assert!(matches!(pack("k", &sig, &[Arg::I(3), Arg::F(2.0)]), Err(Error::Kernel { .. })));
        assert!(matches!(pack("k", &sig, &[Arg::I(3), Arg::I(2), Arg::P(0)]), Err(Error::Kernel { .. })));
    }

    #[test]
    fn sizes_beyond_i32_are_errors() {
        assert_eq!(int("n", 5).unwrap(), 5);
        assert!(matches!(int("n", 1 << 31), Err(Error::TooLarge { what: "n", .. })));
    }

    #[test]
    fn elementwise_grids_cover_and_cap() {
        assert_eq!(elementwise(0).x, 0);
        assert_eq!(elementwise(1).x, 1);
        assert_eq!(elementwise(256).x, 1);
        assert_eq!(elementwise(257).x, 2);
        assert_eq!(elementwise(1 << 30).x, 65_535);
        assert_eq!(per_warp(8).x, 1);
        assert_eq!(per_warp(9).x, 2);
    }

    #[test]
    fn channel_parts_fill_the_device_and_cover_every_entry() {
        // ResNet-18 stage 1 at batch 512 on 132 SMs: 64 channels of 512*32*32.
        let (g, _) = channel_parts(64, 512 * 1024, 132).unwrap();
        assert_eq!((g.x, g.y), (9, 64));
        assert!(g.x as usize * g.y as usize >= 4 * 132);
        for (c, n, sms) in [(64, 512 * 1024, 132), (512, 512 * 16, 108), (3, 7, 4), (1, 1, 132), (10, 100_000, 1)] {
            let (g, len) = channel_parts(c, n, sms).unwrap();
            assert_eq!(g.y as usize, c);
            assert!(g.x as usize * len >= n && (g.x as usize - 1) * len < n, "parts cover n = {n} without an empty one");
        }
        assert!(matches!(channel_parts(65_536, 4, 4), Err(Error::TooLarge { what: "channels", .. })));
    }

    #[test]
    fn gemm_plan_without_split_covers_all_tiles() {
        // FROG's projection on ResNet-18 layer1 at r = 64: 64 rows only.
        let p = gemm_plan(64, 65_536, 577, 132, false, None).unwrap();
        assert_eq!((p.tile, p.grid), (Tile::T64, Grid { x: 1024, y: 1, z: 1 }));
        assert!(p.kchunk >= 577);
        assert_eq!(p.kchunk % TILE_K, 0);
        assert!(!p.split());
        let p = gemm_plan(65, 1, 1, 132, false, None).unwrap();
        assert_eq!((p.grid.x, p.grid.y), (1, 2));
        // A convolution's forward GEMM over a chunk of samples: 128 tiles.
        let p = gemm_plan(256, 204 * 64, 2304, 132, false, None).unwrap();
        assert_eq!((p.tile, p.grid), (Tile::T128, Grid { x: 102, y: 2, z: 1 }));
        // Forced tiles are kept, even where the other would be chosen.
        let p = gemm_plan(64, 100, 8, 132, false, Some(Tile::T128)).unwrap();
        assert_eq!((p.tile, p.grid), (Tile::T128, Grid { x: 1, y: 1, z: 1 }));
    }

    #[test]
    fn gemm_plan_takes_the_small_tile_when_the_big_one_leaves_sms_idle() {
        // Layer4's projection at r = 64: 512 x 1024 outputs are 32 big tiles.
        assert_eq!(gemm_plan(512, 1024, 4609, 132, false, None).unwrap().tile, Tile::T64);
        assert_eq!(gemm_plan(512, 1024, 4609, 16, false, None).unwrap().tile, Tile::T128);
    }

    #[test]
    fn gemm_plan_splits_long_k_and_covers_it() {
        // ResNet-18 layer1 back-projection: 64 x 577 outputs over 64*1024 positions.
        for (m, n, k, sms) in [(64, 577, 65_536, 132), (512, 4609, 1024, 108), (7, 21, 5, 132), (6, 37, 4096, 1), (512, 4608, 57_344, 132)] {
            for tile in [None, Some(Tile::T64), Some(Tile::T128)] {
                let p = gemm_plan(m, n, k, sms, true, tile).unwrap();
                let chunks = p.grid.z as usize;
                assert_eq!(p.kchunk % TILE_K, 0);
                assert!(chunks * p.kchunk >= k, "chunks must cover k");
                assert!((chunks - 1) * p.kchunk < k, "no empty chunk");
                assert!(chunks == 1 || chunks * (p.grid.x * p.grid.y) as usize <= 2 * p.tile.busy_blocks(sms));
                assert!(chunks == 1 || p.kchunk >= 8 * TILE_K);
            }
        }
        assert!(gemm_plan(64, 577, 65_536, 132, true, None).unwrap().split());
        assert!(!gemm_plan(7, 21, 5, 132, true, None).unwrap().split());
        assert!(!gemm_plan(64, 577, 65_536, 132, false, None).unwrap().split());
    }

    #[test]
    fn gemm_plan_rejects_grids_beyond_the_device_limits() {
        assert!(matches!(gemm_plan(64 * 65_536, 1, 1, 132, false, Some(Tile::T64)), Err(Error::TooLarge { what: "GEMM rows", .. })));
        assert!(gemm_plan(64 * 65_535, 1, 1, 132, false, Some(Tile::T64)).is_ok());
    }

    #[test]
    fn ptx_entry_parser_reads_params() {
        let ptx = ".visible .entry f(\n\t.param .u32 f_param_0,\n\t.param .f32 f_param_1,\n\t.param .u64 f_param_2\n)\n{\n}\n";
        assert_eq!(ptx_entries(ptx), vec![("f".to_string(), vec![Ty::I32, Ty::F32, Ty::Ptr])]);
    }
}
