//! The airbench94_muon recipe (KellerJordan/cifar10-airbench,
//! `airbench94_muon.py`, the CIFAR-10 speed record). The host side: the
//! frozen whitening filters ([`whiten`]), the training data pipeline
//! ([`loader`]), test-time augmentation ([`tta`]) and the learning-rate
//! schedule ([`schedule`]); on a device: the network ([`model`]) and the
//! training recipe with its optimizers and evaluation ([`recipe`]). Each
//! follows the reference's formulas; only its random draws differ (they
//! come from the bench's seeded generator, not torch's).
//!
//! Images here are normalized `[3, 32, 32]` planes, one after another, as
//! the engine's batches are. The loader and the test-time views both read
//! a shifted, possibly mirrored window of an image padded by reflection;
//! the indexing below is that window, shared by both.

#[cfg(test)]
pub(crate) mod golden;
pub mod loader;
pub mod model;
pub mod recipe;
pub mod schedule;
pub mod tta;
pub mod whiten;

use crate::data::cifar::PIXELS;
use crate::error::{Error, Result};

/// Height and width of an image.
const SIDE: usize = 32;
/// Values of one channel plane.
const PLANE: usize = SIDE * SIDE;

/// Maps index `v` of a row or column of an image padded by reflection
/// back into the image, as torch's `"reflect"` padding: the edge pixel is
/// not repeated (`-1 -> 1`, `32 -> 30`). `v` is within `SIDE - 1` of the
/// image, which every shift here (at most 2) keeps.
fn reflect(v: isize) -> usize {
    let last = SIDE as isize - 1;
    (if v < 0 {
        -v
    } else if v > last {
        2 * last - v
    } else {
        v
    }) as usize
}

/// The source index of every output row or column of a view: the window
/// at offset `pad + shift` of the image reflect-padded by `pad` (the
/// reference's crop), then mirrored when `mirror` (torch's `flip(-1)` of
/// the crop). Rows pass `mirror = false`.
fn view_index(shift: isize, mirror: bool) -> [usize; SIDE] {
    core::array::from_fn(|x| reflect(if mirror { SIDE - 1 - x } else { x } as isize + shift))
}

/// Writes one image's view: `dst[c][y][x] = value(c, src[c][rows[y]][cols[x]])`.
/// `value` turns a stored pixel into the output type (the loader's
/// normalization table, or the identity).
fn gather<S: Copy, T>(src: &[S], rows: &[usize; SIDE], cols: &[usize; SIDE], value: impl Fn(usize, S) -> T, dst: &mut [T]) {
    for (c, (src, dst)) in src.chunks_exact(PLANE).zip(dst.chunks_exact_mut(PLANE)).enumerate() {
        for (&sy, dst) in rows.iter().zip(dst.chunks_exact_mut(SIDE)) {
            let row = &src[sy * SIDE..][..SIDE];
            for (&sx, d) in cols.iter().zip(dst) {
                *d = value(c, row[sx]);
            }
        }
    }
}

/// How many whole `[3, 32, 32]` images a buffer of `len` values holds: an
/// error when `len` is not a multiple of an image, or is zero.
fn image_count(len: usize, what: &str) -> Result<usize> {
    if len == 0 || len % PIXELS != 0 {
        return Err(Error::new(format!("{what}: {len} values is not a whole number of [3, 32, 32] images (at least one)")));
    }
    Ok(len / PIXELS)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reflection as torch pads: a padded row of `0..32` by 2 reads
    /// `2 1 0 1 .. 30 31 30 29`.
    #[test]
    fn reflect_matches_torch_padding() {
        let padded: Vec<usize> = (-2..34).map(reflect).collect();
        assert_eq!(&padded[..4], &[2, 1, 0, 1]);
        assert_eq!(&padded[32..], &[30, 31, 30, 29]);
        assert_eq!(&padded[2..34], &(0..32).collect::<Vec<_>>()[..]);
    }

    /// A view is the crop then the mirror: its last column is the crop's
    /// first one.
    #[test]
    fn view_index_crops_then_mirrors() {
        assert_eq!(view_index(0, true)[0], 31);
        assert_eq!(view_index(-1, false)[0], 1);
        assert_eq!(view_index(-1, true)[31], 1);
        assert_eq!(view_index(2, true)[0], 29);
        assert_eq!(view_index(2, true)[31], 2);
    }

    #[test]
    fn image_count_needs_whole_images() {
        assert_eq!(image_count(2 * PIXELS, "x"), Ok(2));
        assert!(image_count(0, "x").is_err());
        assert!(image_count(PIXELS + 1, "x").unwrap_err().to_string().starts_with("x: "));
    }
}
