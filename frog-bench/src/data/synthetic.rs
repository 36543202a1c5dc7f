//! A built-in 10-class image set, generated from a seed, for machines
//! without CIFAR-10.
//!
//! Each class is a smooth color pattern (a few random plane waves per
//! channel); each image is its class pattern, shifted by a random offset,
//! scaled in contrast, with pixel noise. It is learnable but not trivially
//! (shifts and noise make nearby classes overlap), so training curves look
//! like real ones. Results on it say nothing about CIFAR-10.

use rand_xoshiro::rand_core::SeedableRng;
use rand_xoshiro::Xoshiro256PlusPlus;

use super::cifar::PIXELS;
use super::Images;
use crate::rand::{below, uniform};

/// Classes.
const CLASSES: usize = 10;
/// Plane waves per channel of a class pattern.
const WAVES: usize = 3;

/// One wave: frequencies (cycles per image) along y and x, and a phase.
type Wave = (f64, f64, f64);

/// `n` images; the same `seed` gives the same set everywhere. Class
/// patterns depend on `seed` only, so a training and a test set drawn with
/// the same `seed` and different `stream`s share their classes.
pub fn generate(seed: u64, stream: u64, n: usize) -> Images {
    let mut class_rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    let patterns: Vec<Vec<Wave>> = (0..CLASSES * 3)
        .map(|_| (0..WAVES).map(|_| (uniform(&mut class_rng) * 3.0, uniform(&mut class_rng) * 3.0, uniform(&mut class_rng) * 6.3)).collect())
        .collect();
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(1));
    let mut out = Images { pixels: Vec::with_capacity(n * PIXELS), labels: Vec::with_capacity(n) };
    let tau = std::f64::consts::TAU;
    for _ in 0..n {
        let label = below(&mut rng, CLASSES);
        let (sy, sx) = (uniform(&mut rng) * 8.0 - 4.0, uniform(&mut rng) * 8.0 - 4.0);
        let contrast = 0.6 + 0.8 * uniform(&mut rng);
        for c in 0..3 {
            let waves = &patterns[label * 3 + c];
            for y in 0..32 {
                for x in 0..32 {
                    let (fy, fx) = ((y as f64 + sy) / 32.0, (x as f64 + sx) / 32.0);
                    let v: f64 = waves.iter().map(|(a, b, p)| (tau * (a * fy + b * fx) + p).sin()).sum::<f64>() / WAVES as f64;
                    let noise = (uniform(&mut rng) - 0.5) * 0.9;
                    let pixel = 127.5 + 127.5 * (contrast * v + noise).clamp(-1.0, 1.0);
                    out.pixels.push(pixel as u8);
                }
            }
        }
        out.labels.push(label as u8);
    }
    out
}
