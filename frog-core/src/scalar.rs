//! The floating-point types a backend may compute in.

use core::fmt::Debug;
use core::ops::{Add, Div, Mul, Neg, Sub};

/// A real floating-point scalar: `f32` or `f64`, and nothing else.
///
/// Hyperparameters are kept in `f64` and converted once per step with
/// [`Scalar::of_f64`]; state export uses the little-endian byte form.
///
/// Sealed. What frog-core promises about a step is stated for IEEE
/// binary32 and binary64: the overflow thresholds
/// ([`crate::square_safe_max`], [`crate::pow2_gain`]), the settings'
/// update bounds against [`Scalar::MAX`], the checkpoint byte forms and the
/// golden tolerances. A third type (a 16-bit compute type, a fixed-point
/// one) would compile and silently lose those guarantees; 16-bit data
/// enters through [`crate::LowpBackend`] instead, with every vector of the
/// step in `f32` or `f64`. Sealing also lets methods be added here later
/// without breaking anyone.
pub trait Scalar:
    sealed::Sealed
    + Copy
    + Debug
    + PartialOrd
    + Send
    + Sync
    + 'static
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Div<Output = Self>
    + Neg<Output = Self>
{
    /// Size in bytes.
    const BYTES: usize;
    /// Additive identity.
    const ZERO: Self;
    /// Multiplicative identity.
    const ONE: Self;
    /// The largest finite value (where saturating state stops, and what
    /// settings' update bounds are checked against).
    const MAX: Self;
    /// Rounds an `f64` to this type.
    fn of_f64(v: f64) -> Self;
    /// Widens to `f64` (named so as not to clash with `num-traits`, `half` or candle's `WithDType` in generic code).
    fn as_f64(self) -> f64;
    /// Square root.
    fn sqrt(self) -> Self;
    /// Writes `Self::BYTES` little-endian bytes to the front of `out`.
    fn write_le(self, out: &mut [u8]);
    /// Reads `Self::BYTES` little-endian bytes from the front of `bytes`.
    fn read_le(bytes: &[u8]) -> Self;
}

macro_rules! impl_scalar {
    ($t:ty, $sqrt:path) => {
        impl Scalar for $t {
            const BYTES: usize = core::mem::size_of::<$t>();
            const ZERO: Self = 0.0;
            const ONE: Self = 1.0;
            const MAX: Self = <$t>::MAX;
            #[inline]
            fn of_f64(v: f64) -> Self {
                v as $t
            }
            #[inline]
            fn as_f64(self) -> f64 {
                self as f64
            }
            #[inline]
            fn sqrt(self) -> Self {
                $sqrt(self)
            }
            fn write_le(self, out: &mut [u8]) {
                out[..Self::BYTES].copy_from_slice(&self.to_le_bytes());
            }
            fn read_le(bytes: &[u8]) -> Self {
                let mut b = [0u8; core::mem::size_of::<$t>()];
                b.copy_from_slice(&bytes[..Self::BYTES]);
                <$t>::from_le_bytes(b)
            }
        }
    };
}

mod sealed {
    /// Implemented for `f32` and `f64` only (see [`super::Scalar`]).
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for f64 {}
}

impl_scalar!(f32, libm::sqrtf);
impl_scalar!(f64, libm::sqrt);
