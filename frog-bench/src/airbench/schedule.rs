//! The recipe's learning-rate schedule: every group's rate falls linearly
//! to zero over the run, `lr0 * (1 - s / S)` at the 0-based step `s`,
//! with `S = ceil(8 * steps per epoch)`; the whitening bias has its own
//! `S = ceil(3 * steps per epoch)` and is frozen after it (no gradient, no
//! step), since by then the first layer has settled and the rest of the
//! network trains on a fixed input.

use crate::error::{Error, Result};

/// The record's training length, in epochs.
pub const EPOCHS: f64 = 8.0;
/// Epochs the whitening bias trains.
pub const WHITEN_BIAS_EPOCHS: f64 = 3.0;

/// Steps of the run and of the whitening bias, and the factor of each
/// step's learning rates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Schedule {
    steps_per_epoch: usize,
    steps: usize,
    whiten_bias_steps: usize,
}

impl Schedule {
    /// The record's schedule ([`EPOCHS`], [`WHITEN_BIAS_EPOCHS`]) for an
    /// epoch of `steps_per_epoch` batches.
    pub fn record(steps_per_epoch: usize) -> Result<Self> {
        Self::new(steps_per_epoch, EPOCHS, WHITEN_BIAS_EPOCHS)
    }

    /// A schedule of `epochs` (fractions allowed, as the reference's
    /// `ceil`) whose whitening bias trains `whiten_bias_epochs` of them:
    /// shorter runs (a smoke test) keep the record's shape. An error when
    /// an epoch has no step, `epochs` is not positive or
    /// `whiten_bias_epochs` is negative (either not finite).
    pub fn new(steps_per_epoch: usize, epochs: f64, whiten_bias_epochs: f64) -> Result<Self> {
        if steps_per_epoch == 0 {
            return Err(Error::new("airbench schedule: an epoch needs at least one step"));
        }
        if !(epochs.is_finite() && epochs > 0.0 && whiten_bias_epochs.is_finite() && whiten_bias_epochs >= 0.0) {
            return Err(Error::new(format!(
                "airbench schedule: epochs {epochs} must be positive and whitening-bias epochs {whiten_bias_epochs} not negative, both finite"
            )));
        }
        let steps = |e: f64| (e * steps_per_epoch as f64).ceil() as usize;
        Ok(Self { steps_per_epoch, steps: steps(epochs), whiten_bias_steps: steps(whiten_bias_epochs) })
    }

    /// `S`: steps of the run.
    pub fn steps(&self) -> usize {
        self.steps
    }

    /// Steps in which the whitening bias trains.
    pub fn whiten_bias_steps(&self) -> usize {
        self.whiten_bias_steps
    }

    /// Epochs begun, `ceil(S / steps per epoch)`: the last one stops after
    /// step `S - 1` when `S` is not a whole number of epochs.
    pub fn epochs(&self) -> usize {
        self.steps.div_ceil(self.steps_per_epoch)
    }

    /// The factor `1 - step / S` of every rate but the whitening bias's at
    /// 0-based `step`; `None` once the run is over (`step >= S`).
    pub fn lr(&self, step: usize) -> Option<f64> {
        linear(step, self.steps)
    }

    /// The whitening bias's factor `1 - step / S_bias`; `None` once it is
    /// frozen (`step >= S_bias`): then it gets no gradient and no step.
    pub fn whiten_bias_lr(&self, step: usize) -> Option<f64> {
        linear(step, self.whiten_bias_steps)
    }
}

/// `1 - step / steps` while `step < steps`.
fn linear(step: usize, steps: usize) -> Option<f64> {
    (step < steps).then(|| 1.0 - step as f64 / steps as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The record on the full set: 25 steps per epoch, 200 steps, the
    /// bias frozen after 75.
    #[test]
    fn record_schedule() {
        let s = Schedule::record(25).unwrap();
        assert_eq!((s.steps(), s.whiten_bias_steps(), s.epochs()), (200, 75, 8));
        assert_eq!(s.lr(0), Some(1.0));
        assert_eq!(s.lr(50), Some(0.75));
        assert_eq!(s.lr(199), Some(1.0 - 199.0 / 200.0));
        assert_eq!(s.lr(200), None);
        assert_eq!(s.whiten_bias_lr(15), Some(0.8));
        assert_eq!(s.whiten_bias_lr(74), Some(1.0 - 74.0 / 75.0));
        assert_eq!(s.whiten_bias_lr(75), None);
    }

    /// Fractions of epochs round up to whole steps; the last epoch stops
    /// part-way.
    #[test]
    fn fractional_epochs() {
        let s = Schedule::new(3, 2.5, 0.5).unwrap();
        assert_eq!((s.steps(), s.whiten_bias_steps(), s.epochs()), (8, 2, 3));
        assert_eq!(s.whiten_bias_lr(1), Some(0.5));
        assert_eq!(Schedule::new(3, 1.0, 0.0).unwrap().whiten_bias_lr(0), None);
    }

    #[test]
    fn bad_schedules_are_errors() {
        assert!(Schedule::record(0).is_err());
        for (e, b) in [(0.0, 1.0), (-1.0, 1.0), (f64::NAN, 1.0), (f64::INFINITY, 1.0), (1.0, -0.5), (1.0, f64::NAN)] {
            assert!(Schedule::new(4, e, b).is_err(), "{e} {b}");
        }
    }
}
