//! bf16 and f16 sampled inputs on the GPU: [`HalfBuffer`] and frog-core's
//! [`LowpBackend`] for [`Cuda`].
//!
//! The 16-bit inputs are read where a step reads `x` and `y`: packing the
//! patches converts `x` (exactly, times the step's power-of-two gain when
//! `x` is huge) into the packed scratch in the element type the products
//! of the backend's [`crate::Precision`] read, and the
//! Fisher weights widen `y` as they read it. Everything else is the f32 step.
//! The 16-bit modes ([`crate::Precision::Bf16Split`], [`crate::Precision::Bf16`],
//! [`crate::Precision::F16`]) take inputs of their own type (or f32 ones,
//! which they round while packing).

use std::ffi::c_void;
use std::marker::PhantomData;
use std::sync::Arc;

use cust::memory::DeviceBuffer;
use cust::sys as cu;
use frog_core::half::{bf16, f16};
use frog_core::{FisherCoefs, FisherOut, Half, Layer, LowpBackend, Patches};

use crate::backend::Geom;
use crate::buffer::{Buffer, Owner};
use crate::device::Cuda;
use crate::error::Error;
use crate::kernels::K;
use crate::launch::{self, int, Arg};
use crate::precision::Packed;

/// A device buffer of `len` bf16 or f16 values owned by one [`Cuda`]
/// backend (two to a 32-bit word of the allocation).
pub struct HalfBuffer<H> {
    mem: DeviceBuffer<f32>,
    len: usize,
    owner: Arc<Owner>,
    _half: PhantomData<H>,
}

impl<H> HalfBuffer<H> {
    /// Entries.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the buffer has no entries.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The raw device address (for kernels of other crates on the same stream).
    pub fn device_ptr(&self) -> u64 {
        self.mem.as_device_ptr().as_raw()
    }
}

impl<H: Half> std::fmt::Debug for HalfBuffer<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cuda::HalfBuffer({} {})", self.len, H::NAME)
    }
}

/// The kernels of one 16-bit input type.
pub(crate) trait HalfKernels: Half {
    /// The packed element type that holds it exactly.
    const PACKED: Packed;
    /// The largest `|x|` (the patches' gain).
    const ABS_MAX: K;
    /// `(im2col, pack_rows)` into f32 patches.
    const PACK: (K, K);
    /// `(im2col, pack_rows)` into patches of its own type.
    const PACK_SAME: (K, K);
    /// The Fisher weights.
    const FISHER: K;
    /// The count of non-finite entries.
    const COUNT: K;
}

impl HalfKernels for bf16 {
    const PACKED: Packed = Packed::Bf16;
    const ABS_MAX: K = K::InputAbsMaxBf16;
    const PACK: (K, K) = (K::Im2colBf16, K::PackRowsBf16);
    const PACK_SAME: (K, K) = (K::Im2colBf16Bf16, K::PackRowsBf16Bf16);
    const FISHER: K = K::FisherWeightsBf16;
    const COUNT: K = K::CountNonfiniteBf16;
}

impl HalfKernels for f16 {
    const PACKED: Packed = Packed::F16;
    const ABS_MAX: K = K::InputAbsMaxF16;
    const PACK: (K, K) = (K::Im2colF16, K::PackRowsF16);
    const PACK_SAME: (K, K) = (K::Im2colF16F16, K::PackRowsF16F16);
    const FISHER: K = K::FisherWeightsF16;
    const COUNT: K = K::CountNonfiniteF16;
}

impl Cuda {
    /// The device address of `b` after checking that it is this backend's
    /// and holds at least `needed` entries.
    pub(crate) fn half_ptr<H>(&self, what: &'static str, b: &HalfBuffer<H>, needed: usize) -> Result<Arg, Error> {
        self.checked(what, &b.owner, b.device_ptr(), b.len, needed).map(Arg::P)
    }

    /// A buffer holding `data`.
    pub fn upload_half<H: Half>(&self, data: &[H]) -> Result<HalfBuffer<H>, Error>
    where
        Self: LowpBackend<H, LowpBuffer = HalfBuffer<H>, Error = Error>,
    {
        let mut b = self.zeros_lowp(data.len())?;
        self.write_lowp(data, &mut b, 0)?;
        Ok(b)
    }
}

impl<H: HalfKernels> LowpBackend<H> for Cuda {
    type LowpBuffer = HalfBuffer<H>;

    fn zeros_lowp(&self, len: usize) -> Result<HalfBuffer<H>, Error> {
        int("buffer length", len)?;
        let words = len.div_ceil(2);
        // SAFETY: the buffer is filled with zeros (the bits of +0.0 in both
        // types) by a launch on the stream before anything else can read it.
        let mem = unsafe { DeviceBuffer::<f32>::uninitialized(words) }.map_err(Error::driver("cuMemAlloc"))?;
        let b = HalfBuffer { mem, len, owner: self.owner.clone(), _half: PhantomData };
        self.fill_zero("buffer", Arg::P(b.device_ptr()), words)?;
        Ok(b)
    }

    fn lowp_len(&self, buf: &HalfBuffer<H>) -> usize {
        buf.len
    }

    fn write_lowp(&self, src: &[H], dst: &mut HalfBuffer<H>, offset: usize) -> Result<(), Error> {
        let Arg::P(base) = self.half_ptr("dst", dst, offset.saturating_add(src.len()))? else { unreachable!() };
        if src.is_empty() {
            return Ok(());
        }
        // SAFETY: the range was checked above (2 bytes an entry); the copy
        // completes before the synchronize returns, while `src` is borrowed.
        let res = unsafe {
            cu::cuMemcpyHtoDAsync_v2(base + (offset * 2) as u64, src.as_ptr() as *const c_void, std::mem::size_of_val(src), self.stream().as_inner())
        };
        Error::check("cuMemcpyHtoDAsync", res)?;
        self.synchronize()
    }

    fn pack_patches_lowp(&self, layer: &Layer, r: usize, x: &HalfBuffer<H>, packed: &mut Buffer) -> Result<(), Error> {
        let xa = self.half_ptr("x", x, r.saturating_mul(layer.input_len()))?;
        // The f32 modes widen x; a 16-bit mode copies x of its own type and
        // refuses the other (converting would round, and bf16's range
        // overflows f16).
        let (conv, rows) = match self.precision().packed() {
            Packed::F32 => H::PACK,
            p if p == H::PACKED => H::PACK_SAME,
            _ => return Err(Error::InputType { input: H::NAME, precision: self.precision() }),
        };
        self.pack_with(layer, r, xa, (H::ABS_MAX, conv, rows), packed)
    }

    fn fisher_weights_lowp(&self, p: &Patches<'_, Self>, y: &HalfBuffer<H>, norms: &Buffer, c: FisherCoefs<f32>, out: FisherOut<'_, Self>) -> Result<(), Error> {
        let g = Geom::of(p)?;
        let ya = self.half_ptr("y", y, g.n * g.rows)?;
        self.fisher_with(p, (H::FISHER, ya), norms, c, out)
    }

    fn count_nonfinite_lowp(&self, n: usize, v: &HalfBuffer<H>, out: &mut Buffer) -> Result<(), Error> {
        let va = self.half_ptr("v", v, n)?;
        let oa = self.ptr("out", out, 1)?;
        self.fill_zero("count", oa, 1)?;
        self.launch(H::COUNT, launch::elementwise(n), &[Arg::I(int("n", n)?), va, oa])
    }
}
