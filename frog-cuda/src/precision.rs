//! [`Precision`]: the arithmetic of the patch products, and the element
//! type of the packed patches each mode reads; [`MuonPrecision`]: the
//! arithmetic of Muon's Newton-Schulz iteration.

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

/// Arithmetic of Muon's Newton-Schulz iteration (frog-core's
/// `MatmulBackend` on [`crate::Cuda`]: its products, and the iteration
/// `muon_step` runs), chosen apart from [`Precision`], which is the patch
/// products'. The norms of airbench's weight renormalization stay f32 in
/// every mode, as the references keep the weights. Modes may be added, so
/// a `match` needs a wildcard arm.
///
/// ```compile_fail,E0004
/// fn half(p: frog_cuda::MuonPrecision) -> bool {
///     use frog_cuda::MuonPrecision::*;
///     match p {
///         F32 => false,
///         Bf16 => true,
///     }
/// }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum MuonPrecision {
    /// f32 throughout: the products on the f32 FMA GEMM (the kernels of
    /// [`Precision::Exact`], whatever the patch products' precision), the
    /// iteration as frog-core states it. Meets the golden f32 tolerance.
    #[default]
    F32,
    /// bfloat16, as the references run the iteration on a GPU (`muon.py`'s
    /// torch arithmetic on bf16 tensors): the update cast to bf16, its norm
    /// (accumulated in f32) and every product (bf16 operands, f32
    /// accumulation on bf16 tensor cores, `mma.sync` m16n8k16) and every
    /// intermediate (`b A`, `c A`, their sums, `a X`) rounded to bf16, in the
    /// references' order (`(c A) A`, not `c (A A)`). The result, bf16
    /// values, then steps the f32 weight in f32. About 1e-2 off the f64
    /// cases (the README has the measured errors).
    Bf16,
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
