//! Low-precision sampled inputs: FROG on the bf16 and f16 activations and
//! output gradients that a framework's autocast forward and backward pass
//! produce, while weights, gradients, momentum and every CG vector stay in
//! the backend's scalar type.
//!
//! The inputs come through an extension trait, [`LowpBackend`], that only
//! the low-precision inputs ([`crate::LowpBatch`] in [`crate::frog_step`])
//! require: a [`Backend`] without it keeps compiling and working unchanged.
//! Why not the one view type of [`Backend`] for them too: a view is of the
//! backend's scalar type, and 16-bit views would need a second pair of view
//! types on `Backend` itself, which every backend would then have to name
//! (associated-type defaults are not stable Rust), 16-bit support or not;
//! and converting 16-bit inputs into scalar views first would cost a
//! buffer the size of the inputs and a pass over them, where the kernels
//! below convert them as they read them. Only the calls of a step that
//! read `x` or `y` have low-precision twins: packing the patches, the
//! patch norms, the Fisher weights, and the opt-in overflow check.
//! Everything else (the two patch products, the CG updates) runs on the
//! backend's own scratch, so the step logic is the one of
//! [`crate::frog_step`] on a [`crate::Batch`].
//!
//! ## Loss scaling
//!
//! Only `y` may carry a loss scale. FROG's direction is invariant to the
//! scale of `y` (the trace normalization divides it out of the Fisher
//! weights) up to `denom_eps`: a scale `c` acts as `denom_eps / c^2`, which
//! is harmless for the scales a dynamic scaler uses. The weight gradients
//! must be unscaled before the step, as with any optimizer: the momentum
//! buffer accumulates them across steps (a scale that changes between
//! steps would corrupt it), and the plain-SGD path of the other parameters
//! is not scale-invariant at all. A dynamic scaler's overflow shows as
//! infinities or NaNs in `y`; set [`crate::LowpBatch::check_y`] to have the
//! step return [`crate::Error::NonFiniteInput`] before it touches any state,
//! the caller's signal to skip the step and lower the scale.
//!
//! Squares of bf16 values overflow f32 (bf16 reaches 3.4e38): the Fisher
//! weights take the same power-of-two row rescale as the f32 path (see
//! [`Backend::fisher_weights`]), so finite inputs give finite steps.

use crate::backend::{Backend, FisherCoefs, FisherOut, Patches};
use crate::layer::Layer;

/// A 16-bit float type FROG takes sampled inputs and output gradients in:
/// [`half::bf16`] or [`half::f16`]. Sealed: backends convert these two.
pub trait Half: Copy + Send + Sync + 'static + sealed::Sealed {
    /// The type's name as frameworks spell it (`"bf16"`, `"f16"`).
    const NAME: &'static str;
    /// The exact value as an `f32` (every bf16 and f16 value is one).
    fn to_f32(self) -> f32;
    /// Rounds an `f32` to this type, to nearest even (overflow gives an
    /// infinity).
    fn from_f32(v: f32) -> Self;
}

impl Half for half::bf16 {
    const NAME: &'static str = "bf16";
    #[inline]
    fn to_f32(self) -> f32 {
        half::bf16::to_f32(self)
    }
    #[inline]
    fn from_f32(v: f32) -> Self {
        half::bf16::from_f32(v)
    }
}

impl Half for half::f16 {
    const NAME: &'static str = "f16";
    #[inline]
    fn to_f32(self) -> f32 {
        half::f16::to_f32(self)
    }
    #[inline]
    fn from_f32(v: f32) -> Self {
        half::f16::from_f32(v)
    }
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for half::bf16 {}
    impl Sealed for half::f16 {}
}

/// A [`Backend`] that also takes sampled inputs and output gradients in the
/// 16-bit type `H`.
///
/// A low-precision step calls [`LowpBackend::pack_patches_lowp`],
/// [`LowpBackend::patch_sq_norms_lowp`] and [`LowpBackend::fisher_weights_lowp`]
/// instead of their [`Backend`] namesakes; every other call is the same as
/// in a step on the scalar type. The products of such a step see
/// [`Patches::x`] as `None` (there is no `x` of the scalar type): whatever
/// they read must be in the scratch, which `pack_patches_lowp` fills. A
/// backend whose products read `x` directly (an implicit GEMM) converts
/// `x` into the scratch in `x`'s own layout.
pub trait LowpBackend<H: Half>: Backend {
    /// A buffer of `H` on the device.
    type LowpBuffer;

    /// A new zero-filled buffer of `len` entries of `H`.
    fn zeros_lowp(&self, len: usize) -> Result<Self::LowpBuffer, Self::Error>;
    /// Number of entries in `buf`.
    fn lowp_len(&self, buf: &Self::LowpBuffer) -> usize;
    /// Copies host values to `dst[offset..]`.
    fn write_lowp(&self, src: &[H], dst: &mut Self::LowpBuffer, offset: usize) -> Result<(), Self::Error>;

    /// [`Backend::pack_patches`] from inputs in `H`: the scratch must end up
    /// holding what the backend's products and patch norms read, the
    /// values of `x` converted exactly (every `H` value is an `f32`).
    fn pack_patches_lowp(&self, layer: &Layer, r: usize, x: &Self::LowpBuffer, packed: &mut Self::Buffer) -> Result<(), Self::Error>;

    /// [`Backend::patch_sq_norms`] in a step on inputs `x` in `H`. The
    /// default reads the patch scratch through `patch_sq_norms`; a backend
    /// whose norms read `x` itself (because its scratch holds something
    /// else, such as Winograd's transformed tiles) overrides it: the one
    /// twin left of a call that, in the scalar type, reads [`Patches::x`],
    /// as the 16-bit `x` is no view of the scalar type.
    fn patch_sq_norms_lowp(&self, p: &Patches<'_, Self>, x: &Self::LowpBuffer, norms: &mut Self::Buffer) -> Result<(), Self::Error> {
        let _ = x;
        self.patch_sq_norms(p, norms)
    }

    /// [`Backend::fisher_weights`] from output gradients in `H` (same
    /// layout, same contract: a row whose squares could overflow is scaled
    /// by a power of two first, which bf16's range up to 3.4e38 needs even
    /// in f32).
    fn fisher_weights_lowp(&self, p: &Patches<'_, Self>, y: &Self::LowpBuffer, norms: &Self::Buffer, c: FisherCoefs<Self::Scalar>, out: FisherOut<'_, Self>) -> Result<(), Self::Error>;

    /// `out[0]` = the number of infinite or NaN entries among the first `n`
    /// of `v` (the opt-in overflow check, which FROG reads back to the host).
    fn count_nonfinite_lowp(&self, n: usize, v: &Self::LowpBuffer, out: &mut Self::Buffer) -> Result<(), Self::Error>;
}
