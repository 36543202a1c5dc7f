//! The recipe's training data, as the reference's `CifarLoader` with
//! `aug = {flip, translate: 2}`, batch 2000 and the last partial batch
//! dropped:
//! - images normalized by CIFAR-10's channel mean and standard deviation;
//! - once for the run, each image mirrored with probability 1/2 and
//!   reflect-padded by 2;
//! - every epoch, each image cropped at a random shift `(dy, dx)` (each
//!   uniform in `-2..=2`) of its padded copy, all of them mirrored in odd
//!   epochs (so an image is seen both ways on alternate epochs, more
//!   diverse than flipping at random every epoch), a fresh shuffle, and
//!   batches of the first `floor(n / batch) * batch` shuffled images.
//!
//! The padded set is never stored: a batch is written straight from the
//! raw bytes through the crop's index map and a normalization table, into
//! the caller's buffer, without allocating. The values are those of
//! normalizing first and cropping after.

use std::sync::Arc;

use frog_core::Scalar;
use rand_xoshiro::rand_core::SeedableRng;
use rand_xoshiro::Xoshiro256PlusPlus;

use super::{gather, view_index, SIDE};
use crate::data::cifar::{MEAN, PIXELS, STD};
use crate::data::Images;
use crate::error::{Error, Result};
use crate::rand::{below, uniform};

/// The recipe's batch size.
pub const BATCH: usize = 2000;
/// The largest random translation, in pixels (the reflect padding).
pub const TRANSLATE: usize = 2;

/// Mixed into the seed so the loader's draws are not those of another
/// generator seeded with the same run seed (the model's initialization).
const STREAM: u64 = 0xA1B2_C3D4_E5F6_0718;

/// Every byte's normalized value per channel, `(b / 255 - mean) / std`,
/// in `f64` and rounded once: the reference's `T.Normalize` of `b / 255`.
fn table<T: Scalar>() -> [[T; 256]; 3] {
    core::array::from_fn(|c| core::array::from_fn(|b| T::of_f64((b as f64 / 255.0 - MEAN[c]) / STD[c])))
}

/// Writes the normalized values of the raw `[3, 32, 32]` images in
/// `pixels` to `out` (the same length), without allocating: the test set,
/// and the training images the whitening filters come from. An error when
/// the lengths differ or are not whole images.
pub fn normalize<T: Scalar>(pixels: &[u8], out: &mut [T]) -> Result<()> {
    super::image_count(pixels.len(), "normalize")?;
    if out.len() != pixels.len() {
        return Err(Error::new(format!("normalize: {} output values for {} pixels", out.len(), pixels.len())));
    }
    let (table, same) = (table::<T>(), view_index(0, false));
    for (src, dst) in pixels.chunks_exact(PIXELS).zip(out.chunks_exact_mut(PIXELS)) {
        gather(src, &same, &same, |c, b| table[c][usize::from(b)], dst);
    }
    Ok(())
}

/// The training set's pipeline: the run's random mirroring, drawn when it
/// is made, then one [`Epoch`] at a time. Seeded: the same images, batch
/// and seed give the same batches.
pub struct Loader<T> {
    images: Arc<Images>,
    batch: usize,
    table: [[T; 256]; 3],
    rng: Xoshiro256PlusPlus,
    /// Whether image `i` is mirrored for the whole run.
    mirrored: Vec<bool>,
    /// This epoch's `(dy, dx)` of image `i`.
    shifts: Vec<[isize; 2]>,
    /// This epoch's order of the images.
    order: Vec<usize>,
    /// Epochs begun.
    epochs: u64,
}

impl<T: Scalar> Loader<T> {
    /// A loader of `images` in batches of `batch` (the recipe's [`BATCH`]),
    /// seeded by `seed`. An error when the set holds no full batch or its
    /// pixels and labels disagree.
    pub fn new(images: Arc<Images>, batch: usize, seed: u64) -> Result<Self> {
        let n = images.len();
        if n.checked_mul(PIXELS) != Some(images.pixels.len()) {
            return Err(Error::new(format!("airbench loader: {} pixel bytes for {n} labels", images.pixels.len())));
        }
        if batch == 0 || n < batch {
            return Err(Error::new(format!("airbench loader: {n} images hold no full batch of {batch}")));
        }
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed ^ STREAM);
        let mirrored = (0..n).map(|_| uniform(&mut rng) < 0.5).collect();
        Ok(Self { images, batch, table: table(), rng, mirrored, shifts: vec![[0; 2]; n], order: (0..n).collect(), epochs: 0 })
    }

    /// Full batches per epoch, `floor(n / batch)`.
    pub fn batches(&self) -> usize {
        self.images.len() / self.batch
    }

    /// The batch size.
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// Begins the next epoch: draws every image's translation and a fresh
    /// shuffle (no allocation).
    pub fn epoch(&mut self) -> Epoch<'_, T> {
        let span = 2 * TRANSLATE + 1;
        for s in &mut self.shifts {
            *s = core::array::from_fn(|_| below(&mut self.rng, span) as isize - TRANSLATE as isize);
        }
        for (i, o) in self.order.iter_mut().enumerate() {
            *o = i;
        }
        for i in (1..self.order.len()).rev() {
            self.order.swap(i, below(&mut self.rng, i + 1));
        }
        let index = self.epochs;
        self.epochs += 1;
        Epoch { loader: self, index }
    }
}

/// One epoch's batches, written on demand.
pub struct Epoch<'a, T> {
    loader: &'a Loader<T>,
    index: u64,
}

impl<T: Scalar> Epoch<'_, T> {
    /// The epoch's number, from 0.
    pub fn index(&self) -> u64 {
        self.index
    }

    /// Full batches in the epoch.
    pub fn len(&self) -> usize {
        self.loader.batches()
    }

    /// Whether the epoch has no batch (never: the loader needs a full one).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Writes batch `k` (`< len()`): its normalized, augmented images to
    /// `x` (`batch * 3072` values, `[3, 32, 32]` each) and their labels to
    /// `labels` (`batch`), without allocating. An error when `k` or a
    /// buffer's length is wrong.
    pub fn write(&self, k: usize, x: &mut [T], labels: &mut [u8]) -> Result<()> {
        let l = self.loader;
        if k >= self.len() {
            return Err(Error::new(format!("airbench loader: batch {k} of an epoch of {}", self.len())));
        }
        if x.len() != l.batch * PIXELS || labels.len() != l.batch {
            return Err(Error::new(format!("airbench loader: buffers of {} values and {} labels for a batch of {}", x.len(), labels.len(), l.batch)));
        }
        let flip_all = self.index % 2 == 1;
        let batch = &l.order[k * l.batch..][..l.batch];
        for ((&i, x), label) in batch.iter().zip(x.chunks_exact_mut(PIXELS)).zip(labels.iter_mut()) {
            let [dy, dx] = l.shifts[i];
            let rows = view_index(dy, false);
            let mut cols = view_index(dx, flip_all);
            if l.mirrored[i] {
                // The crop reads the mirrored image: column `x` of it is
                // column `31 - x` of the stored one.
                for c in &mut cols {
                    *c = SIDE - 1 - *c;
                }
            }
            gather(&l.images.pixels[i * PIXELS..][..PIXELS], &rows, &cols, |c, b| l.table[c][usize::from(b)], x);
            *label = l.images.labels[i];
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` images of seeded random bytes, labels `i % 10`.
    fn images(n: usize, seed: u64) -> Arc<Images> {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
        let pixels = (0..n * PIXELS).map(|_| below(&mut rng, 256) as u8).collect();
        Arc::new(Images { pixels, labels: (0..n).map(|i| (i % 10) as u8).collect() })
    }

    /// The normalized value of a byte, as the reference computes it in
    /// float64.
    fn norm(c: usize, b: u8) -> f64 {
        (f64::from(b) / 255.0 - MEAN[c]) / STD[c]
    }

    #[test]
    fn normalize_is_the_reference_formula() {
        let set = images(2, 1);
        let mut out = vec![0.0f64; 2 * PIXELS];
        normalize(&set.pixels, &mut out).unwrap();
        for (i, (&b, &v)) in set.pixels.iter().zip(&out).enumerate() {
            assert_eq!(v, norm(i / 1024 % 3, b), "value {i}");
        }
        let mut out32 = vec![0.0f32; 2 * PIXELS];
        normalize(&set.pixels, &mut out32).unwrap();
        assert!(out.iter().zip(&out32).all(|(&a, &b)| a as f32 == b));
        assert!(normalize(&set.pixels, &mut out[..PIXELS]).is_err());
        assert!(normalize(&set.pixels[..5], &mut out[..5]).is_err());
    }

    /// The reference's pipeline written out literally in f64: normalize,
    /// mirror the chosen images, pad by reflection into a 36x36 copy, crop
    /// at `2 + shift`, mirror the crop in odd epochs.
    fn reference_image(set: &Images, i: usize, mirrored: bool, [dy, dx]: [isize; 2], odd: bool) -> Vec<f64> {
        let img = |c: usize, y: usize, x: usize| norm(c, set.pixels[i * PIXELS + c * 1024 + y * 32 + x]);
        let flipped = |c: usize, y: usize, x: usize| if mirrored { img(c, y, 31 - x) } else { img(c, y, x) };
        let mut padded = vec![0.0; 3 * 36 * 36];
        for c in 0..3 {
            for py in 0..36 {
                for px in 0..36 {
                    let r = |v: isize| if v < 0 { -v } else if v > 31 { 62 - v } else { v } as usize;
                    padded[c * 1296 + py * 36 + px] = flipped(c, r(py as isize - 2), r(px as isize - 2));
                }
            }
        }
        let mut out = Vec::with_capacity(PIXELS);
        for c in 0..3 {
            for y in 0..32 {
                for x in 0..32 {
                    let x = if odd { 31 - x } else { x };
                    let (py, px) = ((y as isize + 2 + dy) as usize, (x as isize + 2 + dx) as usize);
                    out.push(padded[c * 1296 + py * 36 + px]);
                }
            }
        }
        out
    }

    /// Three epochs of batches against the literal pipeline: each image is
    /// its reference crop, each epoch's batches are distinct images of
    /// the set with their labels, and the run's mirroring stays put.
    #[test]
    fn batches_are_the_reference_crops() {
        let set = images(23, 2);
        let mut loader = Loader::<f64>::new(set.clone(), 5, 7).unwrap();
        assert_eq!(loader.batches(), 4);
        let mirrored = loader.mirrored.clone();
        let (mut x, mut labels) = (vec![0.0; 5 * PIXELS], vec![0u8; 5]);
        for e in 0..3u64 {
            let epoch = loader.epoch();
            assert_eq!((epoch.index(), epoch.len()), (e, 4));
            let mut seen = Vec::new();
            for k in 0..epoch.len() {
                epoch.write(k, &mut x, &mut labels).unwrap();
                for (j, (img, &label)) in x.chunks(PIXELS).zip(&labels).enumerate() {
                    let i = epoch.loader.order[k * 5 + j];
                    let shift = epoch.loader.shifts[i];
                    assert!(shift.iter().all(|s| s.abs() <= 2));
                    assert_eq!(img, &reference_image(&set, i, mirrored[i], shift, e % 2 == 1)[..], "epoch {e} batch {k} image {j}");
                    assert_eq!(label, set.labels[i]);
                    seen.push(i);
                }
            }
            seen.sort_unstable();
            seen.dedup();
            assert_eq!(seen.len(), 20, "epoch {e}: a batch repeats an image");
        }
        assert_eq!(loader.mirrored, mirrored);
    }

    /// The draws have the reference's distributions: half the images
    /// mirrored, all 25 translations about equally often, every image in
    /// every position of the shuffle.
    #[test]
    fn draws_are_uniform() {
        let n = 10_000;
        let mut loader = Loader::<f32>::new(images(n, 3), 100, 11).unwrap();
        let flipped = loader.mirrored.iter().filter(|&&m| m).count();
        assert!((flipped as f64 / n as f64 - 0.5).abs() < 0.02, "{flipped}");
        let mut counts = [0usize; 25];
        let mut first = Vec::new();
        for _ in 0..4 {
            let epoch = loader.epoch();
            first.push(epoch.loader.order[0]);
            for s in &epoch.loader.shifts {
                counts[((s[0] + 2) * 5 + s[1] + 2) as usize] += 1;
            }
        }
        let expected = 4.0 * n as f64 / 25.0;
        assert!(counts.iter().all(|&c| (c as f64 / expected - 1.0).abs() < 0.1), "{counts:?}");
        first.dedup();
        assert_eq!(first.len(), 4, "every epoch reshuffles: {first:?}");
    }

    /// The same seed gives the same batches, another seed others; f32
    /// batches are the f64 ones rounded.
    #[test]
    fn seeded_and_typed() {
        let set = images(12, 4);
        let batch = |seed: u64| {
            let mut l = Loader::<f64>::new(set.clone(), 4, seed).unwrap();
            let mut x = vec![0.0; 4 * PIXELS];
            l.epoch().write(2, &mut x, &mut [0; 4]).unwrap();
            x
        };
        assert_eq!(batch(1), batch(1));
        assert_ne!(batch(1), batch(2));
        let mut l32 = Loader::<f32>::new(set.clone(), 4, 1).unwrap();
        let mut x32 = vec![0.0f32; 4 * PIXELS];
        l32.epoch().write(2, &mut x32, &mut [0; 4]).unwrap();
        assert!(batch(1).iter().zip(&x32).all(|(&a, &b)| a as f32 == b));
    }

    #[test]
    fn bad_input_is_an_error() {
        assert!(Loader::<f32>::new(images(3, 5), 4, 0).is_err());
        assert!(Loader::<f32>::new(images(3, 5), 0, 0).is_err());
        let mut bad = (*images(3, 5)).clone();
        bad.pixels.pop();
        assert!(Loader::<f32>::new(Arc::new(bad), 1, 0).is_err());
        let mut loader = Loader::<f32>::new(images(5, 5), 2, 0).unwrap();
        let epoch = loader.epoch();
        let (mut x, mut labels) = (vec![0.0; 2 * PIXELS], vec![0; 2]);
        assert!(epoch.write(2, &mut x, &mut labels).is_err());
        assert!(epoch.write(0, &mut x[1..], &mut labels).is_err());
        assert!(epoch.write(0, &mut x, &mut labels[1..]).is_err());
        assert!(epoch.write(1, &mut x, &mut labels).is_ok());
    }
}
