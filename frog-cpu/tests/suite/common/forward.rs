//! frog-cpu behind a backend that forwards only the required methods of
//! frog-core's traits: what a new backend gets before it fuses anything
//! (provided_methods.rs), and a backend whose allocations can be made to
//! fail at any point (hostile.rs), which frog-cpu's cannot.

use std::cell::Cell;

use frog_core::{AdamBackend, AdamCoefs, AdamMoments, Backend, FisherCoefs, FisherOut, Guard, GuardBackend, KfrogBackend, Layer, Patches, RowGuardOut, Shape, StepCoefs, Strided};
use frog_cpu::{Cpu, CpuError};

/// frog-cpu in f64 without its fused overrides.
pub struct RequiredOnly {
    inner: Cpu<f64>,
    /// Allocations left before they fail (`None`: no limit).
    allocations: Cell<Option<usize>>,
}

impl RequiredOnly {
    pub fn new(threads: usize) -> Self {
        Self { inner: Cpu::with_threads(threads).unwrap(), allocations: Cell::new(None) }
    }

    /// Lets the next `n` allocations succeed and fails every later one
    /// with `OutOfMemory` (`None`: every one succeeds).
    pub fn allow(&self, n: Option<usize>) {
        self.allocations.set(n);
    }
}

impl Backend for RequiredOnly {
    type Scalar = f64;
    type Buffer = Vec<f64>;
    type View<'a> = &'a [f64];
    type ViewMut<'a> = &'a mut [f64];
    type Error = CpuError;

    fn zeros(&self, len: usize) -> Result<Vec<f64>, CpuError> {
        match self.allocations.get() {
            Some(0) => Err(CpuError::OutOfMemory { entries: len }),
            left => {
                self.allocations.set(left.map(|n| n - 1));
                self.inner.zeros(len)
            }
        }
    }
    fn len(&self, buf: &Vec<f64>) -> usize {
        self.inner.len(buf)
    }
    fn read(&self, src: &Vec<f64>, offset: usize, dst: &mut [f64]) -> Result<(), CpuError> {
        self.inner.read(src, offset, dst)
    }
    fn write(&self, src: &[f64], dst: &mut Vec<f64>, offset: usize) -> Result<(), CpuError> {
        self.inner.write(src, dst, offset)
    }
    fn view<'a>(&self, buf: &'a Vec<f64>, offset: usize, len: usize) -> Result<&'a [f64], CpuError> {
        self.inner.view(buf, offset, len)
    }
    fn view_mut<'a>(&self, buf: &'a mut Vec<f64>, offset: usize, len: usize) -> Result<&'a mut [f64], CpuError> {
        self.inner.view_mut(buf, offset, len)
    }
    fn reborrow<'b>(&self, v: &'b &mut [f64]) -> &'b [f64] {
        self.inner.reborrow(v)
    }
    fn reborrow_view<'b>(&self, v: &'b &[f64]) -> &'b [f64] {
        self.inner.reborrow_view(v)
    }
    fn view_len(&self, v: &&[f64]) -> usize {
        self.inner.view_len(v)
    }
    fn patch_scratch_len(&self, layer: &Layer, r: usize) -> usize {
        self.inner.patch_scratch_len(layer, r)
    }
    fn product_scratch_len(&self, layer: &Layer, r: usize) -> usize {
        self.inner.product_scratch_len(layer, r)
    }
    fn pack_patches(&self, layer: &Layer, r: usize, x: &&[f64], packed: &mut Vec<f64>) -> Result<(), CpuError> {
        self.inner.pack_patches(layer, r, x, packed)
    }
    fn patch_sq_norms(&self, p: &Patches<'_, Self>, norms: &mut Vec<f64>) -> Result<(), CpuError> {
        self.inner.patch_sq_norms(&inner(p, &mut Vec::new()), norms)
    }
    fn fisher_weights(&self, p: &Patches<'_, Self>, y: &&[f64], norms: &Vec<f64>, c: FisherCoefs<f64>, out: FisherOut<'_, Self>) -> Result<(), CpuError> {
        self.inner.fisher_weights(&inner(p, &mut Vec::new()), y, norms, c, FisherOut { trace: out.trace, lambda: out.lambda })
    }
    fn project(&self, p: &mut Patches<'_, Self>, v: &Vec<f64>, u: &mut Vec<f64>) -> Result<(), CpuError> {
        self.inner.project(&mut products(p), v, u)
    }
    fn back_project(&self, p: &mut Patches<'_, Self>, u: &Vec<f64>, g: &mut Vec<f64>) -> Result<(), CpuError> {
        self.inner.back_project(&mut products(p), u, g)
    }
    fn axpby(&self, n: usize, a: f64, x: &&[f64], b: f64, y: &mut &mut [f64]) -> Result<(), CpuError> {
        self.inner.axpby(n, a, x, b, y)
    }
    fn mul_assign(&self, n: usize, a: &mut Vec<f64>, b: &Vec<f64>) -> Result<(), CpuError> {
        self.inner.mul_assign(n, a, b)
    }
    fn copy_strided(&self, shape: Shape, src: &&[f64], src_at: Strided, dst: &mut Vec<f64>, dst_at: Strided) -> Result<(), CpuError> {
        self.inner.copy_strided(shape, src, src_at, dst, dst_at)
    }
    fn row_dots(&self, shape: Shape, a: &Vec<f64>, b: &Vec<f64>, out: &mut Vec<f64>) -> Result<(), CpuError> {
        self.inner.row_dots(shape, a, b, out)
    }
    fn row_div(&self, rows: usize, num: &Vec<f64>, den: &Vec<f64>, eps: f64, out: &mut Vec<f64>) -> Result<(), CpuError> {
        self.inner.row_div(rows, num, den, eps, out)
    }
    fn row_rsqrt(&self, rows: usize, x: &Vec<f64>, eps: f64, out: &mut Vec<f64>) -> Result<(), CpuError> {
        self.inner.row_rsqrt(rows, x, eps, out)
    }
    fn row_axpy(&self, shape: Shape, a: f64, coef: &Vec<f64>, x: &Vec<f64>, y: &mut Vec<f64>) -> Result<(), CpuError> {
        self.inner.row_axpy(shape, a, coef, x, y)
    }
    fn row_xpby(&self, shape: Shape, x: &Vec<f64>, coef: &Vec<f64>, y: &mut Vec<f64>) -> Result<(), CpuError> {
        self.inner.row_xpby(shape, x, coef, y)
    }
    fn row_step(&self, shape: Shape, w: &mut &mut [f64], c: StepCoefs<f64>, scale: &Vec<f64>, z: &Vec<f64>, z_at: Strided) -> Result<(), CpuError> {
        self.inner.row_step(shape, w, c, scale, z, z_at)
    }
}

impl GuardBackend for RequiredOnly {
    fn row_guard(&self, shape: Shape, guard: Guard, m: &Vec<f64>, trace: &Vec<f64>, out: RowGuardOut<'_, Self>) -> Result<(), CpuError> {
        self.inner.row_guard(shape, guard, m, trace, RowGuardOut { z: out.z, row_scale: out.row_scale, flags: out.flags })
    }
}

impl KfrogBackend for RequiredOnly {
    fn y_sq_sums(&self, layer: &Layer, r: usize, y: &Vec<f64>, scale: f64, out: &mut Vec<f64>) -> Result<(), CpuError> {
        self.inner.y_sq_sums(layer, r, y, scale, out)
    }
    fn y_average(&self, rows: usize, fresh: f64, y_diag: &Vec<f64>, keep: f64, avg: &mut Vec<f64>) -> Result<(), CpuError> {
        self.inner.y_average(rows, fresh, y_diag, keep, avg)
    }
    fn patch_col_norms(&self, p: &Patches<'_, Self>, scale: f64, out: &mut Vec<f64>) -> Result<(), CpuError> {
        self.inner.patch_col_norms(&inner(p, &mut Vec::new()), scale, out)
    }
    fn patch_gain(&self, p: &Patches<'_, Self>, out: &mut Vec<f64>) -> Result<(), CpuError> {
        self.inner.patch_gain(&inner(p, &mut Vec::new()), out)
    }
    fn fill(&self, n: usize, value: f64, buf: &mut Vec<f64>) -> Result<(), CpuError> {
        self.inner.fill(n, value, buf)
    }
}

impl AdamBackend for RequiredOnly {
    fn adamw_update(&self, n: usize, c: &AdamCoefs<f64>, param: &mut Vec<f64>, grad: &Vec<f64>, moments: AdamMoments<'_, Self>) -> Result<(), CpuError> {
        self.inner.adamw_update(n, c, param, grad, AdamMoments { m: moments.m, v: moments.v, vmax: moments.vmax })
    }
}

/// `p` for the inner backend's calls that take `&Patches`, with the
/// product scratch `scratch` (they write none, and cannot lend `p`'s).
fn inner<'b>(p: &'b Patches<'_, RequiredOnly>, scratch: &'b mut Vec<f64>) -> Patches<'b, Cpu<f64>> {
    Patches { layer: p.layer, r: p.r, x: p.x, packed: p.packed, scratch }
}

/// `p` for the inner backend's products, with `p`'s product scratch.
fn products<'b>(p: &'b mut Patches<'_, RequiredOnly>) -> Patches<'b, Cpu<f64>> {
    Patches { layer: p.layer, r: p.r, x: p.x, packed: p.packed, scratch: p.scratch }
}

