//! Seeded subsampling of the batch, reproducible on every platform.

use crate::error::ShapeError;
use crate::state::StateError;

/// The `xoshiro256++` generator (Blackman and Vigna), seeded through
/// `SplitMix64` as `rand_xoshiro` seeds it, so a seed draws the same
/// samples as before. It is written out here rather than taken from
/// `rand_xoshiro` because a checkpoint must read and restore the
/// generator's 256-bit state, which that crate does not expose; a test
/// checks it against `rand_xoshiro` draw for draw.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Xoshiro256pp {
    s: [u64; 4],
}

impl Xoshiro256pp {
    fn seed_from_u64(seed: u64) -> Self {
        let mut state = seed;
        let mut splitmix = || {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        };
        Self { s: [splitmix(), splitmix(), splitmix(), splitmix()] }
    }

    fn next_u64(&mut self) -> u64 {
        let s = &mut self.s;
        let out = s[0].wrapping_add(s[3]).rotate_left(23).wrapping_add(s[0]);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        out
    }
}

/// The largest batch a [`Sampler`] (and so an optimizer) takes: a draw
/// takes time linear in the batch, and `2^24` samples is far beyond any
/// batch a step sees.
pub const MAX_BATCH: usize = 1 << 24;

/// Chooses `r` of `B` batch indices without replacement.
///
/// Uses selection sampling (Knuth's Algorithm S) on a `Xoshiro256++`
/// stream, so it needs no storage beyond the caller's output slice and
/// returns the indices in increasing order, the same on every platform for
/// the same seed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sampler {
    rng: Xoshiro256pp,
}

impl Sampler {
    /// A sampler whose choices are fixed by `seed`.
    pub fn new(seed: u64) -> Self {
        Self { rng: Xoshiro256pp::seed_from_u64(seed) }
    }

    /// The generator's position, for checkpoints: a sampler rebuilt with
    /// [`Sampler::from_state`] draws exactly what this one would next.
    pub fn state(&self) -> [u64; 4] {
        self.rng.s
    }

    /// The sampler at a position [`Sampler::state`] returned; the all-zero
    /// state, which no seed reaches and from which the generator only
    /// draws zeros, is an error.
    pub fn from_state(s: [u64; 4]) -> Result<Self, StateError> {
        if s == [0; 4] {
            return Err(StateError::SamplerState);
        }
        Ok(Self { rng: Xoshiro256pp { s } })
    }

    /// A uniform value in `[0, 1)` with 53 random bits.
    fn uniform(&mut self) -> f64 {
        (self.rng.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Draws `min(sample_size, batch)` indices of `0..batch` (all of them
    /// when `sample_size` is `None`) into the front of `out`, and returns
    /// them. When the whole batch is used, no randomness is consumed.
    ///
    /// Errors, drawing nothing: an empty batch or sample, a batch above
    /// [`MAX_BATCH`], and an `out` shorter than the sample.
    pub fn sample<'a>(&mut self, batch: usize, sample_size: Option<usize>, out: &'a mut [usize]) -> Result<&'a [usize], ShapeError> {
        let r = Self::check(batch, sample_size, out.len())?;
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

    /// The checks of [`Sampler::sample`] into an output of `out_len`
    /// entries, drawing nothing; returns the sample's size.
    pub(crate) fn check(batch: usize, sample_size: Option<usize>, out_len: usize) -> Result<usize, ShapeError> {
        if batch > MAX_BATCH {
            return Err(ShapeError::BatchAboveLimit { batch });
        }
        let r = sample_size.map_or(batch, |s| s.min(batch));
        if r == 0 {
            return Err(ShapeError::EmptySample);
        }
        if out_len < r {
            return Err(ShapeError::BufferLength { what: "sample indices", expected: r, actual: out_len });
        }
        Ok(r)
    }
}

#[cfg(test)]
mod tests {
    use rand_xoshiro::rand_core::{RngCore, SeedableRng};
    use rand_xoshiro::Xoshiro256PlusPlus;

    use super::*;

    #[test]
    fn draws_match_rand_xoshiro() {
        for seed in [0, 1, 42, 0xdead_beef, u64::MAX] {
            let (mut ours, mut theirs) = (Xoshiro256pp::seed_from_u64(seed), Xoshiro256PlusPlus::seed_from_u64(seed));
            for _ in 0..10_000 {
                assert_eq!(ours.next_u64(), theirs.next_u64());
            }
        }
    }

    #[test]
    fn state_round_trip_continues_the_stream() {
        let mut a = Sampler::new(7);
        let mut out = [0; 8];
        a.sample(100, Some(8), &mut out).unwrap();
        let mut b = Sampler::from_state(a.state()).unwrap();
        let (mut x, mut y) = ([0; 8], [0; 8]);
        assert_eq!(a.sample(100, Some(8), &mut x).unwrap(), b.sample(100, Some(8), &mut y).unwrap());
        assert_eq!(Sampler::from_state([0; 4]), Err(StateError::SamplerState));
    }
}
