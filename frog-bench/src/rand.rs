//! The two draws the bench makes from its seeded generators, defined once
//! so every platform makes the same ones.

use rand_xoshiro::rand_core::RngCore;
use rand_xoshiro::Xoshiro256PlusPlus;

/// A uniform value in `[0, 1)` with 53 random bits.
pub fn uniform(rng: &mut Xoshiro256PlusPlus) -> f64 {
    (rng.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// A uniform integer in `0..n` (`n` below 2^32), by multiply-shift.
pub fn below(rng: &mut Xoshiro256PlusPlus, n: usize) -> usize {
    (((rng.next_u64() >> 32) * n as u64) >> 32) as usize
}
