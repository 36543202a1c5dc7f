//! Layer geometry: what a preconditioned layer's patches look like.

use crate::error::ShapeError;
use crate::step::mul;

/// A 2-D convolution with `groups = 1`, in PyTorch's layout: weight
/// `[c_out, c_in, kh, kw]`, input `[r, c_in, H, W]`, output `[r, c_out, Ho, Wo]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2d {
    /// Input channels.
    pub c_in: usize,
    /// Output channels (the rows FROG preconditions).
    pub c_out: usize,
    /// Kernel `[kh, kw]`.
    pub kernel: [usize; 2],
    /// Stride `[sh, sw]`.
    pub stride: [usize; 2],
    /// Zero padding `[ph, pw]`.
    pub padding: [usize; 2],
    /// Dilation `[dh, dw]`.
    pub dilation: [usize; 2],
    /// Channel groups; FROG preconditions only `groups = 1`, and
    /// [`Layer::validate`] rejects any other value. A grouped or depthwise
    /// convolution's weight takes the plain-SGD path instead (register it
    /// as a plain parameter).
    pub groups: usize,
    /// Input size `[H, W]`: the layer's own input.
    pub input_hw: [usize; 2],
}

/// A per-axis setting `[height, width]`; a single `usize` sets both axes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Axes(pub [usize; 2]);

impl From<usize> for Axes {
    fn from(v: usize) -> Self {
        Self([v, v])
    }
}

impl From<[usize; 2]> for Axes {
    fn from(v: [usize; 2]) -> Self {
        Self(v)
    }
}

impl Conv2d {
    /// A convolution of `c_in` to `c_out` channels with kernel `kernel`
    /// (`3` or `[kh, kw]`), stride 1, no padding and dilation 1, on an input
    /// of `input_hw = [H, W]`: the layer's own input (the output of the
    /// layer before it), not the network's. The other settings have named
    /// setters, so that no two of them can be swapped by position:
    ///
    /// ```
    /// # use frog_core::Conv2d;
    /// let conv = Conv2d::new(64, 128, 3, [32, 32]).stride(2).padding(1);
    /// assert_eq!(conv.output_hw(), Some([16, 16]));
    /// ```
    pub fn new(c_in: usize, c_out: usize, kernel: impl Into<Axes>, input_hw: [usize; 2]) -> Self {
        let one = [1, 1];
        Self { c_in, c_out, kernel: kernel.into().0, stride: one, padding: [0, 0], dilation: one, groups: 1, input_hw }
    }

    /// With stride `s` (`2` or `[sh, sw]`).
    #[must_use]
    pub fn stride(mut self, s: impl Into<Axes>) -> Self {
        self.stride = s.into().0;
        self
    }

    /// With zero padding `p` on both sides (`1` or `[ph, pw]`).
    #[must_use]
    pub fn padding(mut self, p: impl Into<Axes>) -> Self {
        self.padding = p.into().0;
        self
    }

    /// With `g` channel groups (which [`Layer::validate`] rejects unless 1).
    #[must_use]
    pub fn groups(mut self, g: usize) -> Self {
        self.groups = g;
        self
    }

    /// With dilation `d` (`2` or `[dh, dw]`).
    #[must_use]
    pub fn dilation(mut self, d: impl Into<Axes>) -> Self {
        self.dilation = d.into().0;
        self
    }

    /// Output size `[Ho, Wo]`, PyTorch's formula; `None` when the kernel does
    /// not fit the padded input or a stride is zero.
    pub fn output_hw(&self) -> Option<[usize; 2]> {
        let axis = |a: usize| {
            let span = self.dilation[a].checked_mul(self.kernel[a].checked_sub(1)?)?.checked_add(1)?;
            let padded = self.input_hw[a].checked_add(self.padding[a].checked_mul(2)?)?;
            if self.stride[a] == 0 || padded < span {
                return None;
            }
            Some((padded - span) / self.stride[a] + 1)
        };
        Some([axis(0)?, axis(1)?])
    }
}

/// The [`Layer::patch_indices`] entry of a patch column that reads the
/// zero padding.
pub const PATCH_PADDING: usize = usize::MAX;

/// The kind of a preconditioned layer. Kinds may be added: a backend
/// refuses one it does not know (with an error, in its wildcard arm).
///
/// ```compile_fail,E0004
/// fn rows(kind: frog_core::LayerKind) -> usize {
///     match kind {
///         frog_core::LayerKind::Linear { d_out, .. } => d_out,
///         frog_core::LayerKind::Conv2d(c) => c.c_out,
///     }
/// }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum LayerKind {
    /// A linear layer `[d_out, d_in]`; with `tokens = T > 1` its input is
    /// `[r, T, d_in]` and every token is one Fisher position.
    Linear {
        /// Input features.
        d_in: usize,
        /// Output features (the rows).
        d_out: usize,
        /// Tokens per sample (1 for a plain linear layer).
        tokens: usize,
    },
    /// A 2-D convolution.
    Conv2d(Conv2d),
}

/// A preconditioned layer: its geometry and whether it has a bias, which
/// FROG treats as the weight of an extra constant-1 input feature.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layer {
    /// Geometry.
    pub kind: LayerKind,
    /// Whether the layer has a bias `[rows]`.
    pub bias: bool,
}

impl Layer {
    /// A linear layer without tokens.
    pub fn linear(d_in: usize, d_out: usize, bias: bool) -> Self {
        Self { kind: LayerKind::Linear { d_in, d_out, tokens: 1 }, bias }
    }

    /// A linear layer applied to `tokens` positions per sample.
    pub fn linear_tokens(d_in: usize, d_out: usize, tokens: usize, bias: bool) -> Self {
        Self { kind: LayerKind::Linear { d_in, d_out, tokens }, bias }
    }

    /// A convolution.
    pub fn conv2d(conv: Conv2d, bias: bool) -> Self {
        Self { kind: LayerKind::Conv2d(conv), bias }
    }

    /// Checks that every dimension is positive, the output is not empty,
    /// and every size FROG derives from the geometry (`D'`, `R*D'`, `L`,
    /// the input and output entries per sample, a conv's padded input and
    /// kernel span) fits in `usize`; a layer too large to index is a
    /// [`ShapeError::TooLarge`] naming the size. The size accessors below
    /// are exact for a layer that passes.
    pub fn validate(&self) -> Result<(), ShapeError> {
        let (rows, d, l) = match &self.kind {
            LayerKind::Linear { d_in, d_out, tokens } => {
                if [*d_in, *d_out, *tokens].contains(&0) {
                    return Err(ShapeError::ZeroDimension);
                }
                mul(*d_in, *tokens, "input entries (d_in * tokens)")?;
                (*d_out, *d_in, *tokens)
            }
            LayerKind::Conv2d(c) => {
                let dims = [c.c_in, c.c_out, c.kernel[0], c.kernel[1], c.stride[0], c.stride[1], c.dilation[0], c.dilation[1], c.input_hw[0], c.input_hw[1]];
                if dims.contains(&0) || c.groups == 0 {
                    return Err(ShapeError::ZeroDimension);
                }
                if c.groups != 1 {
                    return Err(ShapeError::Unsupported { what: "a grouped or depthwise convolution (groups > 1); step its weight on the plain-SGD path" });
                }
                for a in 0..2 {
                    let span = c.kernel[a].checked_sub(1).and_then(|k| k.checked_mul(c.dilation[a]));
                    span.ok_or(ShapeError::TooLarge { what: "kernel span (dilation * (kernel - 1))" })?;
                    c.padding[a].checked_mul(2).and_then(|p| p.checked_add(c.input_hw[a])).ok_or(ShapeError::TooLarge { what: "padded input (input + 2 * padding)" })?;
                }
                let [ho, wo] = c.output_hw().ok_or(ShapeError::EmptyOutput)?;
                let d = mul(mul(c.c_in, c.kernel[0], "patch length (c_in * kh * kw)")?, c.kernel[1], "patch length (c_in * kh * kw)")?;
                let plane = mul(c.input_hw[0], c.input_hw[1], "input entries (c_in * H * W)")?;
                mul(c.c_in, plane, "input entries (c_in * H * W)")?;
                (c.c_out, d, mul(ho, wo, "output positions (Ho * Wo)")?)
            }
        };
        let cols = d.checked_add(usize::from(self.bias)).ok_or(ShapeError::TooLarge { what: "row length D' (D + bias)" })?;
        mul(rows, cols, "weight entries (rows * D')")?;
        mul(rows, l, "output entries (rows * positions)")?;
        Ok(())
    }

    // The size accessors saturate instead of wrapping, so an unvalidated
    // layer too large to index can only ask for impossible buffers.

    /// Rows `R` (output channels or features).
    pub fn rows(&self) -> usize {
        match &self.kind {
            LayerKind::Linear { d_out, .. } => *d_out,
            LayerKind::Conv2d(c) => c.c_out,
        }
    }

    /// Weight entries per row `D` (`c_in*kh*kw` or `d_in`), without the bias.
    pub fn weight_cols(&self) -> usize {
        match &self.kind {
            LayerKind::Linear { d_in, .. } => *d_in,
            LayerKind::Conv2d(c) => c.c_in.saturating_mul(c.kernel[0]).saturating_mul(c.kernel[1]),
        }
    }

    /// Preconditioned entries per row `D'` (`D + 1` with a bias).
    pub fn cols(&self) -> usize {
        self.weight_cols().saturating_add(usize::from(self.bias))
    }

    /// Fisher positions per sample `L` (`Ho*Wo`, the tokens, or 1).
    pub fn positions(&self) -> usize {
        match &self.kind {
            LayerKind::Linear { tokens, .. } => *tokens,
            LayerKind::Conv2d(c) => c.output_hw().map_or(0, |[h, w]| h.saturating_mul(w)),
        }
    }

    /// Input entries per sample (`c_in*H*W` or `T*d_in`).
    pub fn input_len(&self) -> usize {
        match &self.kind {
            LayerKind::Linear { d_in, tokens, .. } => d_in.saturating_mul(*tokens),
            LayerKind::Conv2d(c) => c.c_in.saturating_mul(c.input_hw[0]).saturating_mul(c.input_hw[1]),
        }
    }

    /// Strides `(row, position)` of one sample's output gradient in PyTorch
    /// layout: a conv's `[R, Ho, Wo]` is row-major by row (`(L, 1)`), a
    /// token linear layer's `[T, R]` by position (`(1, R)`).
    pub fn output_strides(&self) -> (usize, usize) {
        match &self.kind {
            LayerKind::Linear { d_out, .. } => (1, *d_out),
            LayerKind::Conv2d(_) => (self.positions(), 1),
        }
    }

    /// Output-gradient entries per sample (`R*L`).
    pub fn output_len(&self) -> usize {
        self.rows().saturating_mul(self.positions())
    }

    /// The patch geometry as indices, for backends that build `X` with one
    /// gather: `out[(i*L + l)*D + c]` is the entry of the sampled input `x`
    /// (`r` samples in PyTorch layout, [`Layer::input_len`] each) that is
    /// column `c` of patch `P[i,l]` (a conv's columns in the weight's
    /// `[c_in, kh, kw]` order), or [`PATCH_PADDING`] where the patch reads
    /// the zero padding. The bias's constant-1 column is not included.
    /// `out` must hold exactly `r * L * D` entries.
    pub fn patch_indices(&self, r: usize, out: &mut [usize]) -> Result<(), ShapeError> {
        self.validate()?;
        let (l, d) = (self.positions(), self.weight_cols());
        let expected = mul(mul(r, l, "patch indices (sample * positions * D)")?, d, "patch indices (sample * positions * D)")?;
        if out.len() != expected {
            return Err(ShapeError::BufferLength { what: "patch indices", expected, actual: out.len() });
        }
        let per_sample = self.input_len();
        match &self.kind {
            LayerKind::Linear { d_in, .. } => {
                for (p, row) in out.chunks_exact_mut(d).enumerate() {
                    for (c, o) in row.iter_mut().enumerate() {
                        *o = p * d_in + c;
                    }
                }
            }
            LayerKind::Conv2d(conv) => {
                let ([h, w], [_, wo]) = (conv.input_hw, conv.output_hw().unwrap_or([0, 0]));
                let [kh, kw] = conv.kernel;
                for (p, row) in out.chunks_exact_mut(d).enumerate() {
                    let (i, pos) = (p / l, p % l);
                    let (oy, ox) = (pos / wo, pos % wo);
                    for (c, o) in row.iter_mut().enumerate() {
                        let (ci, k) = (c / (kh * kw), c % (kh * kw));
                        // Input coordinates, shifted by the padding so they stay unsigned.
                        let y = oy * conv.stride[0] + (k / kw) * conv.dilation[0];
                        let x = ox * conv.stride[1] + (k % kw) * conv.dilation[1];
                        let inside = y >= conv.padding[0] && y - conv.padding[0] < h && x >= conv.padding[1] && x - conv.padding[1] < w;
                        *o = if inside { i * per_sample + (ci * h + y - conv.padding[0]) * w + x - conv.padding[1] } else { PATCH_PADDING };
                    }
                }
            }
        }
        Ok(())
    }

    /// Analytic FLOP count of one step's CG products at sample size `r` and
    /// `k` iterations: `4*k*N*D'*R` with `N = r*L` (2 products per iteration,
    /// 2 FLOP per multiply-add).
    pub fn cg_flops(&self, r: usize, k: usize) -> f64 {
        4.0 * k as f64 * (r * self.positions()) as f64 * self.cols() as f64 * self.rows() as f64
    }
}
