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
//! automatic choice takes Winograd). The products also need the
//! transformed directions (or gradient, `16 * R * c_in`) and one tile
//! block per thread, and the fused matvec a partial sum per thread; those
//! are written during the products, where the patch scratch is read-only,
//! so they live in the step's product scratch ([`frog_core::Patches`]'s
//! `scratch`), which the workspace allocates with everything else
//! (`Cpu`'s `product_scratch_len`: [`Tiles::step_scratch_len`] for the
//! backend's thread count). A scratch too short for them is refused with
//! [`CpuError::Length`] before any product runs.

use frog_core::{Layer, LayerKind};

use crate::backend::{Cpu, CpuError};
use crate::gemm::Real;
use crate::gram;

mod products;
mod tiles;
mod transform;

pub(crate) use products::*;
pub(crate) use tiles::*;
pub(crate) use transform::*;

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

/// The algorithm choice of [`Cpu`], and the scratch it needs.
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
    /// Winograd's (smaller) scratch.
    pub(crate) fn im2col_samples(&self, layer: &Layer, r: usize) -> usize {
        last_samples(r, |r| !matches!(self.tiles(layer, r), Ok(Some(_))))
    }

    /// The most samples up to `r` whose steps run the Gram CG (0: none): a
    /// workspace sized at `r` must fit its scratch too, when `r` itself
    /// runs another algorithm.
    pub(crate) fn gram_samples(&self, layer: &Layer, r: usize) -> usize {
        last_samples(r, |r| r > 0 && matches!(self.algorithm(layer, r), Ok(Algorithm::Gram)))
    }
}

/// The most samples up to `r` for which `holds` (0 when it holds for none
/// from 1), for a `holds` true below some sample count and false from
/// there: the automatic choice runs the Gram CG (and packs im2col) below
/// some sample count, since the Gram cost grows with `r`, and Winograd or
/// the direct products from there, so a bisection finds it.
fn last_samples(r: usize, holds: impl Fn(usize) -> bool) -> usize {
    if holds(r) {
        return r;
    }
    let (mut lo, mut hi) = (0, r);
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if holds(mid) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    lo
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::ThreadPool;

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
        let mut scratch = vec![0.0; t.matvec_scratch_len(2)];
        let mut fused = vec![0.25; 7 * t.cols];
        let xt = Packed { pool: &pool, t: &t, packed: &packed, gain };
        matvec(xt, &v, &lambda, &mut fused, &mut scratch);
        let mut u = vec![0.0; n * 7];
        let mut two = vec![0.25; 7 * t.cols];
        project(xt, &v, Some(&lambda), &mut u, &mut scratch);
        back_project(xt, &u, true, &mut two, &mut scratch);
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
