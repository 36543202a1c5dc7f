//! The tiled GEMM: [`Cuda::matmul`] and [`Cuda::matmul_as`], the kernel
//! of each precision and tile (and of each Muon precision), its launch
//! (plan, epilogue), and the two patch products of the Fisher matvec.

use frog_core::Patches;

use crate::backend::Geom;
use crate::buffer::Buffer;
use crate::device::Cuda;
use crate::error::Error;
use crate::kernels::K;
use crate::launch::{self, int, Arg, Tile};
use crate::precision::{MuonPrecision, Precision};

/// How an operand of [`Cuda::matmul_as`] is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Order {
    /// Row-major: entry `(i, j)` of an `[r, c]` operand at `i*c + j`.
    RowMajor,
    /// Its transpose row-major: entry `(i, j)` at `j*r + i`.
    Transposed,
}

impl Order {
    /// The strides (row, column) of an operand of `cols` columns and
    /// `rows` rows.
    fn strides(self, cols: usize, rows: usize) -> (usize, usize) {
        match self {
            Order::RowMajor => (cols, 1),
            Order::Transposed => (1, rows),
        }
    }
}

/// What a GEMM multiplies, which picks its kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Operands {
    /// FROG's patch products: B is the packed patches, in the element type
    /// of the backend's precision (16-bit in the 16-bit modes).
    Patches,
    /// f32 operands in the backend's precision (the `nn` convolutions,
    /// [`Cuda::matmul`]), which the 16-bit modes multiply as
    /// [`Precision::Split`] does.
    F32,
    /// Muon's products (frog-core's `MatmulBackend`), in the backend's
    /// [`MuonPrecision`].
    Muon,
}

/// What a GEMM does with its result `C(i, j)`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Epilogue {
    /// Overwrite C.
    Store,
    /// Overwrite C with the result times `S(i, j)` (same layout as C): the
    /// Fisher weights fused into the projection. Never split along K.
    Scale(Arg),
    /// Add onto C (atomically).
    Add,
}

impl Cuda {
    /// `c = a b` for row-major `a` `[m, k]`, `b` `[k, n]` and `c` `[m, n]`,
    /// in the backend's precision on its GEMM tile (split along a long K),
    /// launched on the stream: the kernel of the patch products, for
    /// measuring it and for users' own products.
    pub fn matmul(&self, dims: (usize, usize, usize), a: &Buffer, b: &Buffer, c: &mut Buffer) -> Result<(), Error> {
        self.matmul_as(dims, (a, Order::RowMajor), (b, Order::RowMajor), c, true)
    }

    /// [`Cuda::matmul`] with each operand stored as `order` says, split
    /// along a long K only when `split_k` allows it: the layouts and plans
    /// of FROG's products (`V X^T`, not split; `U X`, split) and of the
    /// convolutions (`W col^T`; `T^T W`; `T col`, split), for measuring
    /// them.
    pub fn matmul_as(&self, (m, n, k): (usize, usize, usize), (a, a_order): (&Buffer, Order), (b, b_order): (&Buffer, Order), c: &mut Buffer, split_k: bool) -> Result<(), Error> {
        let (a, b, c) = (self.operand("a", a, a_order, (m, k))?, self.operand("b", b, b_order, (k, n))?, self.operand("c", c, Order::RowMajor, (m, n))?);
        self.gemm((m, n, k), a, b, (c.0, n), Epilogue::Store, split_k)
    }

    /// The address of `x`, an `[rows, cols]` operand stored as `order`
    /// says (checked to hold its entries), with its row and column strides.
    pub(crate) fn operand(&self, what: &'static str, x: &Buffer, order: Order, (rows, cols): (usize, usize)) -> Result<(Arg, usize, usize), Error> {
        let entries = rows.checked_mul(cols).ok_or(Error::TooLarge { what, value: usize::MAX })?;
        let (row, col) = order.strides(cols, rows);
        Ok((self.ptr(what, x, entries)?, row, col))
    }

    /// The GEMM of `operands` on `tile`: in the precision, or for Muon's
    /// products in the Muon precision.
    fn gemm_kernel(&self, tile: Tile, operands: Operands) -> K {
        let precision = match (operands, self.precision) {
            (Operands::Muon, _) => {
                return match (self.muon_precision, tile) {
                    (MuonPrecision::F32, Tile::T64) => K::GemmF32x64,
                    (MuonPrecision::F32, Tile::T128) => K::GemmF32x128,
                    (MuonPrecision::Bf16, Tile::T64) => K::GemmBf16F32x64,
                    (MuonPrecision::Bf16, Tile::T128) => K::GemmBf16F32x128,
                }
            }
            (Operands::F32, Precision::Bf16Split | Precision::Bf16 | Precision::F16) => Precision::Split,
            (_, p) => p,
        };
        match (precision, tile) {
            (Precision::Exact, Tile::T64) => K::GemmF32x64,
            (Precision::Exact, Tile::T128) => K::GemmF32x128,
            (Precision::Split, Tile::T64) => K::Gemm3xTf32x64,
            (Precision::Split, Tile::T128) => K::Gemm3xTf32x128,
            (Precision::Fast, Tile::T64) => K::GemmTf32x64,
            (Precision::Fast, Tile::T128) => K::GemmTf32x128,
            (Precision::Bf16Split, Tile::T64) => K::GemmBf16x2x64,
            (Precision::Bf16Split, Tile::T128) => K::GemmBf16x2x128,
            (Precision::Bf16, Tile::T64) => K::GemmBf16x64,
            (Precision::Bf16, Tile::T128) => K::GemmBf16x128,
            (Precision::F16, Tile::T64) => K::GemmF16x64,
            (Precision::F16, Tile::T128) => K::GemmF16x128,
        }
    }

    /// `C (op)= A B` for `(m, n, k)`, with the operands given by strides:
    /// `A(i, k) = a[i*sam + k*sak]`, `B(k, j) = b[k*sbk + j*sbn]`, `C(i, j) =
    /// c[i*ldc + j]`. `allow_split` lets a long K be cut into chunks summed
    /// with atomic adds (then a [`Epilogue::Store`] zeroes C first).
    pub(crate) fn gemm(
        &self,
        dims: (usize, usize, usize),
        a: (Arg, usize, usize),
        b: (Arg, usize, usize),
        c: (Arg, usize),
        epilogue: Epilogue,
        allow_split: bool,
    ) -> Result<(), Error> {
        self.gemm_on(Operands::F32, dims, a, b, c, epilogue, allow_split)
    }

    /// [`Cuda::gemm`] on `operands`, which pick the kernel.
    // The GEMM's operands are grouped already (sizes, each matrix with its
    // strides); what is left are three options, named at every call.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn gemm_on(
        &self,
        operands: Operands,
        (m, n, k): (usize, usize, usize),
        (a, sam, sak): (Arg, usize, usize),
        (b, sbk, sbn): (Arg, usize, usize),
        (c, ldc): (Arg, usize),
        epilogue: Epilogue,
        allow_split: bool,
    ) -> Result<(), Error> {
        let plan = launch::gemm_plan(m, n, k, self.sms, allow_split && !matches!(epilogue, Epilogue::Scale(_)), self.tile)?;
        let (s, mode) = match epilogue {
            Epilogue::Store if plan.split() => {
                self.fill_zero("GEMM output", c, m.saturating_mul(ldc))?;
                (Arg::P(0), 2)
            }
            Epilogue::Store => (Arg::P(0), 0),
            Epilogue::Scale(s) => (s, 1),
            Epilogue::Add => (Arg::P(0), 2),
        };
        let i = |what, v| int(what, v).map(Arg::I);
        self.launch(
            self.gemm_kernel(plan.tile, operands),
            plan.grid,
            &[
                i("m", m)?,
                i("n", n)?,
                i("k", k)?,
                a,
                i("sam", sam)?,
                i("sak", sak)?,
                b,
                i("sbk", sbk)?,
                i("sbn", sbn)?,
                c,
                i("ldc", ldc)?,
                s,
                Arg::I(mode),
                i("kchunk", plan.kchunk)?,
            ],
        )
    }

    /// `U = (X V^T)` in layout `[R, N]`, times `lambda` when given.
    pub(crate) fn project_into(&self, p: &Patches<'_, Self>, v: &Buffer, lambda: Option<&Buffer>, u: &mut Buffer) -> Result<(), Error> {
        let g = Geom::of(p)?;
        let va = self.ptr("v", v, g.rows * g.cols)?;
        let xa = self.ptr("packed", p.packed, g.n * g.cols)?;
        let ua = self.ptr("u", u, g.rows * g.n)?;
        let epilogue = match lambda {
            Some(l) => Epilogue::Scale(self.ptr("lambda", l, g.rows * g.n)?),
            None => Epilogue::Store,
        };
        self.gemm_on(Operands::Patches, (g.rows, g.n, g.cols), (va, g.cols, 1), (xa, 1, g.cols), (ua, g.n), epilogue, false)
    }

    /// `G (+)= U X` for `U` in layout `[R, N]`; `accumulate` adds onto `g`.
    pub(crate) fn back_project_into(&self, p: &Patches<'_, Self>, u: &Buffer, g_out: &mut Buffer, accumulate: bool) -> Result<(), Error> {
        let g = Geom::of(p)?;
        let ua = self.ptr("u", u, g.rows * g.n)?;
        let xa = self.ptr("packed", p.packed, g.n * g.cols)?;
        let ga = self.ptr("g", g_out, g.rows * g.cols)?;
        let epilogue = if accumulate { Epilogue::Add } else { Epilogue::Store };
        self.gemm_on(Operands::Patches, (g.rows, g.cols, g.n), (ua, g.n, 1), (xa, g.cols, 1), (ga, g.cols), epilogue, true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::tests::device;
    use crate::launch::Grid;
    use frog_core::Backend;

    /// On a device (or the emulator): every lane's fragments of the
    /// m16n8k8 TF32 mma, placed by the PTX ISA's formulas (the probe
    /// kernel), give the product the host computes, entry for entry.
    #[test]
    fn gpu_mma_fragments_follow_the_ptx_isa() {
        let Some(cuda) = device("gpu_mma_fragments_follow_the_ptx_isa") else { return };
        // Small distinct integers: exact in TF32 and in every sum, so any
        // misplaced fragment changes some output.
        let ints = |n: usize, seed: usize| (0..n).map(|i| ((i * 7 + seed) * 2_654_435_761usize % 17) as f32 - 8.0).collect::<Vec<_>>();
        let (a, b) = (ints(16 * 8, 3), ints(8 * 8, 11));
        let (ab, bb) = (cuda.upload(&a).unwrap(), cuda.upload(&b).unwrap());
        let cb = cuda.zeros(16 * 8).unwrap();
        let args = [cuda.ptr("a", &ab, 128).unwrap(), cuda.ptr("b", &bb, 64).unwrap(), cuda.ptr("c", &cb, 128).unwrap()];
        cuda.launch(K::MmaProbeTf32, Grid::x(1), &args).unwrap();
        let got = cuda.download(&cb, 128).unwrap();
        for m in 0..16 {
            for n in 0..8 {
                let want: f32 = (0..8).map(|k| a[m * 8 + k] * b[k * 8 + n]).sum();
                let lane = (m % 8) * 4 + n / 2;
                assert_eq!(got[m * 8 + n], want, "C({m}, {n}), held by lane {lane}");
            }
        }
        println!("gpu_mma_fragments_follow_the_ptx_isa: all 32 lanes' A, B and C fragments agree on {}", cuda.device_name());
    }

    /// On a device (or the emulator): the m16n8k16 bf16 and f16 mma, with
    /// every lane's fragments placed by the PTX ISA's formulas (the probe
    /// kernels, written independently of the GEMM tile), give the product
    /// the host computes, entry for entry.
    #[test]
    fn gpu_mma_k16_fragments_follow_the_ptx_isa() {
        let Some(cuda) = device("gpu_mma_k16_fragments_follow_the_ptx_isa") else { return };
        // Small distinct integers, exact in bf16 and f16 and in every sum.
        let ints = |n: usize, seed: usize| (0..n).map(|i| ((i * 7 + seed) * 2_654_435_761usize % 17) as f32 - 8.0).collect::<Vec<_>>();
        let (a, b) = (ints(16 * 16, 5), ints(16 * 8, 13));
        let (ab, bb) = (cuda.upload(&a).unwrap(), cuda.upload(&b).unwrap());
        for k in [K::MmaProbeBf16, K::MmaProbeF16] {
            let cb = cuda.zeros(16 * 8).unwrap();
            let args = [cuda.ptr("a", &ab, 256).unwrap(), cuda.ptr("b", &bb, 128).unwrap(), cuda.ptr("c", &cb, 128).unwrap()];
            cuda.launch(k, Grid::x(1), &args).unwrap();
            let got = cuda.download(&cb, 128).unwrap();
            for m in 0..16 {
                for n in 0..8 {
                    let want: f32 = (0..16).map(|k| a[m * 16 + k] * b[k * 8 + n]).sum();
                    assert_eq!(got[m * 8 + n], want, "{}: C({m}, {n}), held by lane {}", k.name(), (m % 8) * 4 + n / 2);
                }
            }
        }
        println!("gpu_mma_k16_fragments_follow_the_ptx_isa: bf16 and f16, all 32 lanes' A, B and C fragments agree on {}", cuda.device_name());
    }
}
