//! [`Precision`]: the arithmetic of the patch products, and the element
//! type of the packed patches each mode reads.

/// Arithmetic of the two patch products (the Fisher matvec's cost); modes
/// may be added, so a `match` needs a wildcard arm.
///
/// ```compile_fail,E0004
/// fn tensor_cores(p: frog_cuda::Precision) -> bool {
///     use frog_cuda::Precision::*;
///     match p {
///         Exact => false,
///         Split | Fast | Bf16Split | Bf16 | F16 => true,
///     }
/// }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Precision {
    /// Plain f32 FMA arithmetic everywhere: meets the golden f32 tolerance.
    #[default]
    Exact,
    /// 3xTF32 on tensor cores for the two patch products: each input split
    /// into two TF32 parts, three `mma.sync` per tile, f32 accumulation;
    /// close to f32 accuracy. Everything else f32.
    Split,
    /// TF32 tensor cores (`mma.sync`, 10-bit mantissa inputs, f32
    /// accumulation) for the two patch products; everything else f32.
    /// About 5e-4 relative per product, amplified by CG where the sampled
    /// Fisher is ill-conditioned (`r*L < D'` with a small `tau`).
    Fast,
    /// bf16 tensor cores (`mma.sync` m16n8k16, f32 accumulation, twice
    /// TF32's rate): the patches packed in bf16 (exact for bf16 inputs), the
    /// f32 operand (the CG direction, then the scaled projections) split
    /// into a high and a low bf16 part, two products: about 16-bit accuracy
    /// in that operand (a few 1e-6 relative per product), at about TF32's cost.
    Bf16Split,
    /// bf16 tensor cores with the f32 operand rounded once to bf16 (8-bit
    /// mantissa): one product, about 2e-3 relative per product.
    Bf16,
    /// f16 tensor cores: the patches packed in f16 (exact for f16 inputs),
    /// each row of the f32 operand scaled by a power of two into f16's
    /// range (directions of 1e-5..1e-9 sit below f16's smallest normal,
    /// 6.1e-5; exact, undone on the f32 result), then rounded once to f16
    /// (11-bit mantissa): one product, about 3e-4 relative per product.
    F16,
}

/// The element type of the packed patches a [`Precision`] reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Packed {
    F32,
    Bf16,
    F16,
}

impl Precision {
    /// What the patch products read: f32 patches, or 16-bit ones.
    pub(crate) fn packed(self) -> Packed {
        match self {
            Precision::Exact | Precision::Split | Precision::Fast => Packed::F32,
            Precision::Bf16Split | Precision::Bf16 => Packed::Bf16,
            Precision::F16 => Packed::F16,
        }
    }
}
