//! Seeded subsampling of the batch, reproducible on every platform.

use rand_xoshiro::rand_core::{RngCore, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

use crate::error::ShapeError;

/// Chooses `r` of `B` batch indices without replacement.
///
/// Uses selection sampling (Knuth's Algorithm S) on a `Xoshiro256++`
/// stream, so it needs no storage beyond the caller's output slice and
/// returns the indices in increasing order, the same on every platform for
/// the same seed.
#[derive(Clone, Debug)]
pub struct Sampler {
    rng: Xoshiro256PlusPlus,
}

impl Sampler {
    /// A sampler whose choices are fixed by `seed`.
    pub fn new(seed: u64) -> Self {
        Self { rng: Xoshiro256PlusPlus::seed_from_u64(seed) }
    }

    /// A uniform value in `[0, 1)` with 53 random bits.
    fn uniform(&mut self) -> f64 {
        (self.rng.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Draws `min(sample_size, batch)` indices of `0..batch` (all of them
    /// when `sample_size` is `None`) into the front of `out`, and returns
    /// them. When the whole batch is used, no randomness is consumed.
    pub fn sample<'a>(&mut self, batch: usize, sample_size: Option<usize>, out: &'a mut [usize]) -> Result<&'a [usize], ShapeError> {
        let r = sample_size.map_or(batch, |s| s.min(batch));
        if r == 0 {
            return Err(ShapeError::EmptySample);
        }
        if out.len() < r {
            return Err(ShapeError::BufferLength { what: "sample indices", expected: r, actual: out.len() });
        }
        if r == batch {
            for (i, o) in out[..r].iter_mut().enumerate() {
                *o = i;
            }
            return Ok(&out[..r]);
        }
        let mut chosen = 0;
        for t in 0..batch {
            let left = (batch - t) as f64;
            if left * self.uniform() < (r - chosen) as f64 {
                out[chosen] = t;
                chosen += 1;
                if chosen == r {
                    break;
                }
            }
        }
        Ok(&out[..r])
    }
}
