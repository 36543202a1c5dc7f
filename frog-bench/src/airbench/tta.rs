//! Test-time augmentation, as the reference's `infer(tta_level=2)`: the
//! final accuracy averages the logits of six views of each test image,
//! the image and its mirror with weight 1/4 each, and the crops
//! `[0:32, 0:32]` and `[2:34, 2:34]` of the image reflect-padded by 1
//! (shifted by one pixel up-left and down-right), each plain and mirrored,
//! with weight 1/8 each. The model sees the views one at a time; the
//! weighted sum builds up in the caller's buffer.

use frog_core::Scalar;

use super::{gather, image_count, view_index};
use crate::data::cifar::PIXELS;
use crate::error::{Error, Result};

/// One view of the images and its weight in the average.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct View {
    /// The window's offset from the image in both directions: output
    /// `(y, x)` reads `(y + shift, x + shift)` of the reflect-padded image.
    pub shift: isize,
    /// Whether the window is mirrored left-right.
    pub mirror: bool,
    /// Its weight in the average (the weights sum to 1).
    pub weight: f64,
}

/// The six views, in the reference's order.
pub const VIEWS: [View; 6] = [
    View { shift: 0, mirror: false, weight: 0.25 },
    View { shift: 0, mirror: true, weight: 0.25 },
    View { shift: -1, mirror: false, weight: 0.125 },
    View { shift: -1, mirror: true, weight: 0.125 },
    View { shift: 1, mirror: false, weight: 0.125 },
    View { shift: 1, mirror: true, weight: 0.125 },
];

impl View {
    /// Writes this view of the normalized `[3, 32, 32]` images in
    /// `images` to `out` (the same length), without allocating. An error
    /// when the lengths differ or are not whole images.
    pub fn write<T: Copy>(&self, images: &[T], out: &mut [T]) -> Result<()> {
        image_count(images.len(), "test-time view")?;
        if out.len() != images.len() {
            return Err(Error::new(format!("test-time view: {} output values for {} input values", out.len(), images.len())));
        }
        let (rows, cols) = (view_index(self.shift, false), view_index(self.shift, self.mirror));
        for (src, dst) in images.chunks_exact(PIXELS).zip(out.chunks_exact_mut(PIXELS)) {
            gather(src, &rows, &cols, |_, v| v, dst);
        }
        Ok(())
    }

    /// Adds this view's weighted logits to `sum` (zeroed before the first
    /// view): after all six, `sum` holds the augmented logits. An error
    /// when the lengths differ.
    pub fn accumulate<T: Scalar>(&self, logits: &[T], sum: &mut [T]) -> Result<()> {
        if logits.len() != sum.len() {
            return Err(Error::new(format!("test-time logits: {} values to add to {}", logits.len(), sum.len())));
        }
        let w = T::of_f64(self.weight);
        for (s, &l) in sum.iter_mut().zip(logits) {
            *s = *s + w * l;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use rand_xoshiro::rand_core::SeedableRng;
    use rand_xoshiro::Xoshiro256PlusPlus;

    use super::*;
    use crate::rand::uniform;

    fn images(n: usize) -> Vec<f64> {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(9);
        (0..n * PIXELS).map(|_| uniform(&mut rng) * 4.0 - 2.0).collect()
    }

    /// torch's `x.flip(-1)` of `[3, 32, 32]` images.
    fn flip(x: &[f64]) -> Vec<f64> {
        x.chunks(32).flat_map(|row| row.iter().rev().copied()).collect()
    }

    /// `F.pad(x, (1, 1, 1, 1), "reflect")[:, :, o:o+32, o:o+32]` written
    /// out: a 34x34 padded copy, then the crop.
    fn pad_crop(x: &[f64], o: usize) -> Vec<f64> {
        let r = |v: usize| match v {
            0 => 1,
            33 => 30,
            v => v - 1,
        };
        let mut out = Vec::new();
        for plane in x.chunks(1024) {
            let padded: Vec<f64> = (0..34 * 34).map(|k| plane[r(k / 34) * 32 + r(k % 34)]).collect();
            for y in 0..32 {
                out.extend_from_slice(&padded[(y + o) * 34 + o..][..32]);
            }
        }
        out
    }

    /// The views are the reference's six tensors.
    #[test]
    fn views_are_the_reference_crops() {
        let x = images(2);
        let (up, down) = (pad_crop(&x, 0), pad_crop(&x, 2));
        let want = [x.clone(), flip(&x), up.clone(), flip(&up), down.clone(), flip(&down)];
        let mut out = vec![0.0; x.len()];
        for (v, want) in VIEWS.iter().zip(want) {
            v.write(&x, &mut out).unwrap();
            assert_eq!(out, want, "{v:?}");
        }
        assert!(VIEWS[0].write(&x, &mut out[1..]).is_err());
        assert!(VIEWS[0].write(&x[1..], &mut out[1..]).is_err());
    }

    /// The weighted sum is `infer_mirror_translate`'s
    /// `0.5 * mirror(x) + 0.5 * mean(mirror(up), mirror(down))` with
    /// `mirror(v) = 0.5 * net(v) + 0.5 * net(flip(v))`.
    #[test]
    fn combination_is_the_reference_average() {
        let logits: Vec<Vec<f64>> = (0..6).map(|v| (0..20).map(|i| ((v * 20 + i) as f64 * 0.37).sin() * 5.0).collect()).collect();
        let mut sum = vec![0.0; 20];
        for (v, l) in VIEWS.iter().zip(&logits) {
            v.accumulate(l, &mut sum).unwrap();
        }
        let mirror = |a: &[f64], b: &[f64], i: usize| 0.5 * a[i] + 0.5 * b[i];
        for (i, &s) in sum.iter().enumerate() {
            let translate = (mirror(&logits[2], &logits[3], i) + mirror(&logits[4], &logits[5], i)) / 2.0;
            let want = 0.5 * mirror(&logits[0], &logits[1], i) + 0.5 * translate;
            assert!((s - want).abs() < 1e-14, "{i}: {s} vs {want}");
        }
        assert_eq!(VIEWS.iter().map(|v| v.weight).sum::<f64>(), 1.0);
        assert!(VIEWS[0].accumulate(&logits[0], &mut sum[1..]).is_err());
    }
}
