//! A per-channel bias over `[batch, channels, hw]` ([`BnShape`]): a
//! convolution's (airbench's whitening convolution has one), and with
//! `hw = 1` a linear layer's.

use super::batchnorm::sums;
use super::entries;
use super::operands::BnShape;
use crate::gemm::Real;
use crate::parts::Rows;
use crate::pool::ThreadPool;

/// `y[b, c, :] += bias[c]`, in place.
pub fn add_channel_bias<T: Real>(pool: &ThreadPool, s: BnShape, bias: &[T], y: &mut [T]) {
    let len = entries("channel bias", &[s.batch, s.channels, s.hw]);
    assert!(bias.len() >= s.channels && y.len() >= len, "channel bias: bias or y too short");
    let planes = Rows::new(&mut y[..len], entries("channel bias", &[s.batch, s.channels]), s.hw, pool.threads());
    pool.split(planes, |_, (planes, y)| {
        for (i, p) in planes.enumerate() {
            let b = bias[p % s.channels];
            y[i * s.hw..][..s.hw].iter_mut().for_each(|v| *v += b);
        }
    });
}

/// Backward of [`add_channel_bias`]: `db[c]` (overwritten) = the sum of
/// `dy[b, c, :]` over the batch and the plane.
pub fn channel_bias_backward<T: Real>(pool: &ThreadPool, s: BnShape, dy: &[T], db: &mut [T]) {
    let len = entries("channel bias backward", &[s.batch, s.channels, s.hw]);
    assert!(dy.len() >= len && db.len() >= s.channels, "channel bias backward: dy or db too short");
    pool.split(Rows::new(&mut db[..s.channels], s.channels, 1, pool.threads()), |_, (channels, db)| {
        for (g, c) in db.iter_mut().zip(channels) {
            let mut acc = T::zero();
            for b in 0..s.batch {
                let plane = &dy[s.plane(b, c)];
                acc += sums(plane, plane, |v, _| [v])[0];
            }
            *g = acc;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both passes against their definitions, in f64 and f32, on planes
    /// longer than the reductions' partial sums, over both threads.
    #[test]
    fn bias_and_its_gradient_match_the_definitions() {
        fn check<T: Real>(tol: f64) {
            let pool = ThreadPool::new(2).unwrap();
            let s = BnShape { batch: 3, channels: 5, hw: 37 };
            let x: Vec<T> = (0..s.len()).map(|i| T::of_f64((i as f64 * 0.37).sin())).collect();
            let bias: Vec<T> = (0..s.channels).map(|c| T::of_f64(c as f64 - 1.5)).collect();
            let mut y = x.clone();
            add_channel_bias(&pool, s, &bias, &mut y);
            for (i, (&y, &x)) in y.iter().zip(&x).enumerate() {
                assert!(y == x + bias[i / s.hw % s.channels], "entry {i}");
            }
            let mut db = vec![T::of_f64(7.0); s.channels];
            channel_bias_backward(&pool, s, &x, &mut db);
            for (c, g) in db.iter().enumerate() {
                let want: f64 = (0..s.batch).flat_map(|b| s.plane(b, c)).map(|i| x[i].as_f64()).sum();
                assert!((g.as_f64() - want).abs() < tol, "channel {c}: {} vs {want}", g.as_f64());
            }
        }
        check::<f64>(1e-13);
        check::<f32>(1e-5);
    }

    #[test]
    #[should_panic(expected = "channel bias: bias or y too short")]
    fn a_short_bias_panics() {
        let pool = ThreadPool::new(1).unwrap();
        add_channel_bias(&pool, BnShape { batch: 1, channels: 3, hw: 2 }, &[0.0f64; 2], &mut [0.0; 6]);
    }
}
