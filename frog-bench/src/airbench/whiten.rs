//! The recipe's first layer: a frozen 2x2 convolution whose 24 filters
//! whiten the image's 2x2 patches, set once from training images before
//! training (the reference's `init_whiten`). Decorrelated, unit-variance
//! inputs are what lets the record train in so few steps.
//!
//! The covariance is summed in `f64` whatever the images' type, and its
//! eigendecomposition is faer's (a maintained solver, not one written
//! here), so the filters are as exact as the images allow.

use faer::{Mat, Side};
use frog_core::Scalar;

use super::{image_count, PLANE, SIDE};
use crate::error::{Error, Result};

/// Length of a patch vector: 3 channels of 2x2 pixels, ordered `[c, kh, kw]`
/// as a row of torch's convolution weight.
pub const PATCH: usize = 12;
/// Filters of the layer: the [`PATCH`] whitening filters, then their
/// negatives (so the GELU after it passes both signs).
pub const FILTERS: usize = 2 * PATCH;
/// Added to every eigenvalue before its inverse square root, so that the
/// directions of near-zero variance are not blown up.
pub const EPS: f64 = 5e-4;
/// How many training images (the first ones, in file order, unaugmented)
/// the recipe computes the filters from.
pub const IMAGES: usize = 5000;

/// The whitening layer's weight and the spectrum it came from.
#[derive(Clone, Debug, PartialEq)]
pub struct Whitening {
    /// Eigenvalues of the patch covariance, ascending (as
    /// `torch.linalg.eigh`).
    pub eigenvalues: [f64; PATCH],
    /// The weight, `[FILTERS, 3, 2, 2]` row-major: filter `k < 12` is the
    /// eigenvector of `eigenvalues[k]` divided by `sqrt(eigenvalues[k] +
    /// EPS)`, filter `k + 12` its negative. Each eigenvector's sign is the
    /// solver's choice (the reference's is LAPACK's).
    pub weight: Vec<f64>,
}

/// The uncentered covariance `X^T X / N` of all `N = 31 * 31 * n`
/// stride-1 2x2 patches of `n` normalized `[3, 32, 32]` images, each patch
/// a row of `X` in `[c, kh, kw]` order. An error when `images` is not a
/// whole number of images.
pub fn patch_covariance<T: Scalar>(images: &[T]) -> Result<[[f64; PATCH]; PATCH]> {
    let n = image_count(images.len(), "whitening images")?;
    let mut total = [[0.0; PATCH]; PATCH];
    // One image's sum at a time, added to the total: shorter sums keep
    // the rounding of millions of terms small.
    let mut sum = [[0.0; PATCH]; PATCH];
    for image in images.chunks_exact(3 * PLANE) {
        for row in &mut sum {
            row.fill(0.0);
        }
        for y in 0..SIDE - 1 {
            for x in 0..SIDE - 1 {
                let p: [f64; PATCH] = core::array::from_fn(|k| {
                    let (c, kh, kw) = (k / 4, k / 2 % 2, k % 2);
                    image[c * PLANE + (y + kh) * SIDE + x + kw].as_f64()
                });
                for (i, row) in sum.iter_mut().enumerate() {
                    for j in i..PATCH {
                        row[j] += p[i] * p[j];
                    }
                }
            }
        }
        for (t, s) in total.iter_mut().zip(&sum) {
            for (t, s) in t.iter_mut().zip(s) {
                *t += s;
            }
        }
    }
    // The sums fill the upper triangle; the lower one mirrors it.
    let count = (n * (SIDE - 1) * (SIDE - 1)) as f64;
    Ok(core::array::from_fn(|i| core::array::from_fn(|j| total[i.min(j)][i.max(j)] / count)))
}

/// The whitening filters of `images` (normalized `[3, 32, 32]` images; the
/// recipe passes its first [`IMAGES`] training images). An error when
/// `images` is not a whole number of images, holds a non-finite value, or
/// the eigensolver does not converge.
pub fn whitening<T: Scalar>(images: &[T]) -> Result<Whitening> {
    let cov = patch_covariance(images)?;
    if cov.iter().flatten().any(|v| !v.is_finite()) {
        return Err(Error::new("whitening images: a value is not finite"));
    }
    let evd = Mat::from_fn(PATCH, PATCH, |i, j| cov[i][j])
        .self_adjoint_eigen(Side::Lower)
        .map_err(|e| Error::new(format!("whitening: the eigendecomposition of the patch covariance failed ({e:?})")))?;
    let (u, s) = (evd.U(), evd.S().column_vector());
    let eigenvalues: [f64; PATCH] = core::array::from_fn(|k| s[k]);
    let mut weight = vec![0.0; FILTERS * PATCH];
    let (pos, neg) = weight.split_at_mut(PATCH * PATCH);
    for (k, (pos, neg)) in pos.chunks_exact_mut(PATCH).zip(neg.chunks_exact_mut(PATCH)).enumerate() {
        let scale = (eigenvalues[k] + EPS).sqrt();
        for (i, (p, q)) in pos.iter_mut().zip(neg).enumerate() {
            *p = u[(i, k)] / scale;
            *q = -*p;
        }
    }
    Ok(Whitening { eigenvalues, weight })
}

#[cfg(test)]
mod tests {
    use rand_xoshiro::rand_core::SeedableRng;
    use rand_xoshiro::Xoshiro256PlusPlus;

    use super::*;
    use crate::data::cifar::PIXELS;
    use crate::rand::uniform;

    /// Images with correlated neighbours and channels, as photographs
    /// have, so that the spectrum is spread out: a smooth random field
    /// per image plus per-channel noise.
    fn images(n: usize, seed: u64) -> Vec<f64> {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
        let mut out = Vec::with_capacity(n * PIXELS);
        for _ in 0..n {
            let field: Vec<f64> = (0..PLANE).map(|_| uniform(&mut rng) - 0.5).collect();
            for c in 0..3 {
                for y in 0..SIDE {
                    for x in 0..SIDE {
                        let smooth = field[y * SIDE + x] + field[y * SIDE + (x + 1) % SIDE] + field[((y + 1) % SIDE) * SIDE + x];
                        out.push((c + 1) as f64 * smooth + 0.2 * uniform(&mut rng) - 0.3);
                    }
                }
            }
        }
        out
    }

    /// The covariance as a direct sum over an explicit patch matrix `X`.
    #[test]
    fn covariance_is_the_mean_outer_product_of_patches() {
        let x = images(3, 1);
        let mut rows = Vec::new();
        for image in x.chunks(PIXELS) {
            for y in 0..31 {
                for x in 0..31 {
                    let mut p = Vec::new();
                    for c in 0..3 {
                        for kh in 0..2 {
                            for kw in 0..2 {
                                p.push(image[c * 1024 + (y + kh) * 32 + x + kw]);
                            }
                        }
                    }
                    rows.push(p);
                }
            }
        }
        assert_eq!(rows.len(), 3 * 961);
        let cov = patch_covariance(&x).unwrap();
        for i in 0..PATCH {
            for j in 0..PATCH {
                let direct = rows.iter().map(|p| p[i] * p[j]).sum::<f64>() / rows.len() as f64;
                assert!((cov[i][j] - direct).abs() <= 1e-13 * direct.abs().max(1.0), "({i}, {j}): {} vs {direct}", cov[i][j]);
            }
        }
    }

    /// `W C W^T = diag(lambda / (lambda + eps))` for the first 12 filters,
    /// the eigenvalues ascend, and the second 12 are the first negated.
    #[test]
    fn filters_whiten_the_patches() {
        let x = images(4, 2);
        let cov = patch_covariance(&x).unwrap();
        let w = whitening(&x).unwrap();
        assert!(w.eigenvalues.windows(2).all(|p| p[0] <= p[1]), "{:?}", w.eigenvalues);
        assert!(w.eigenvalues[0] > 0.0 && w.eigenvalues[11] > 100.0 * w.eigenvalues[0], "{:?}", w.eigenvalues);
        let row = |k: usize| &w.weight[k * PATCH..][..PATCH];
        for k in 0..PATCH {
            for l in 0..PATCH {
                let wcw: f64 = (0..PATCH).map(|i| (0..PATCH).map(|j| row(k)[i] * cov[i][j] * row(l)[j]).sum::<f64>()).sum();
                let lambda = w.eigenvalues[k];
                let want = if k == l { lambda / (lambda + EPS) } else { 0.0 };
                assert!((wcw - want).abs() < 1e-12, "({k}, {l}): {wcw} vs {want}");
            }
            assert!(row(k).iter().zip(row(k + PATCH)).all(|(a, b)| *b == -a));
        }
    }

    /// f32 images give the filters of the same values in f64.
    #[test]
    fn f32_images_whiten_as_their_f64_values() {
        let x32: Vec<f32> = images(2, 3).iter().map(|&v| v as f32).collect();
        let x64: Vec<f64> = x32.iter().map(|&v| f64::from(v)).collect();
        assert_eq!(whitening(&x32).unwrap(), whitening(&x64).unwrap());
    }

    /// torch's own whitening (`golden/airbench/recipe.json`, the reference
    /// run in float64 on 64 images): the eigenvalues, and each filter up to
    /// its eigenvector's sign, in f64 and from f32 images.
    #[test]
    fn matches_the_reference_golden_case() {
        let path = frog_cpu::golden::golden_dir().join("airbench/recipe.json");
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e} (the airbench golden case)", path.display()));
        let case: serde_json::Value = serde_json::from_str(&text).unwrap();
        let floats = |v: &serde_json::Value| v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect::<Vec<_>>();
        assert_eq!(floats(&case["normalize"]["mean"]), crate::data::cifar::MEAN);
        assert_eq!(floats(&case["normalize"]["std"]), crate::data::cifar::STD);
        assert_eq!(case["architecture"]["whiten_eps"].as_f64(), Some(EPS));
        let hex = case["data"]["train_images"].as_str().unwrap().as_bytes();
        let pixels: Vec<u8> = hex.chunks(2).map(|h| u8::from_str_radix(std::str::from_utf8(h).unwrap(), 16).unwrap()).collect();
        assert_eq!(pixels.len(), 64 * PIXELS);
        let (want_values, want_weight) = (floats(&case["whitening"]["eigenvalues"]), floats(&case["whitening"]["weight"]));
        let check = |got: &Whitening, tol: f64| {
            let scale = want_values[PATCH - 1];
            for (k, (g, w)) in got.eigenvalues.iter().zip(&want_values).enumerate() {
                assert!((g - w).abs() <= tol * scale, "eigenvalue {k}: {g} vs {w}");
            }
            let max = want_weight.iter().fold(0.0f64, |m, v| m.max(v.abs()));
            for (k, (g, w)) in got.weight.chunks(PATCH).zip(want_weight.chunks(PATCH)).enumerate() {
                let sign = if g.iter().zip(w).map(|(a, b)| a * b).sum::<f64>() < 0.0 { -1.0 } else { 1.0 };
                for (a, b) in g.iter().zip(w) {
                    assert!((sign * a - b).abs() <= tol * max, "filter {k}: {a} vs {b} (sign {sign})");
                }
            }
        };
        let mut x64 = vec![0.0f64; pixels.len()];
        crate::airbench::loader::normalize(&pixels, &mut x64).unwrap();
        check(&whitening(&x64).unwrap(), 1e-9);
        let mut x32 = vec![0.0f32; pixels.len()];
        crate::airbench::loader::normalize(&pixels, &mut x32).unwrap();
        check(&whitening(&x32).unwrap(), 1e-4);
    }

    #[test]
    fn bad_images_are_errors() {
        assert!(whitening::<f64>(&[]).is_err());
        assert!(whitening(&vec![0.5f64; PIXELS + 3]).is_err());
        let mut x = images(1, 4);
        x[100] = f64::NAN;
        assert_eq!(whitening(&x).unwrap_err().to_string(), "whitening images: a value is not finite");
    }
}
