//! frog-core's provided `fisher_matvec` and `cg_iteration` (what a new
//! backend gets before it fuses anything) against the golden cases: a
//! backend that forwards only the required methods to frog-cpu.

use frog_core::{Backend, Layer, Patches, Strided};
use frog_cpu::golden::{golden_dir, load_cases, run_case};
use frog_cpu::{Cpu, CpuError};

/// frog-cpu without its fused overrides.
struct RequiredOnly(Cpu<f64>);

impl Backend for RequiredOnly {
    type Scalar = f64;
    type Buffer = Vec<f64>;
    type Error = CpuError;

    fn zeros(&self, len: usize) -> Result<Vec<f64>, CpuError> {
        self.0.zeros(len)
    }
    fn len(&self, buf: &Vec<f64>) -> usize {
        self.0.len(buf)
    }
    fn read(&self, src: &Vec<f64>, offset: usize, dst: &mut [f64]) -> Result<(), CpuError> {
        self.0.read(src, offset, dst)
    }
    fn write(&self, src: &[f64], dst: &mut Vec<f64>, offset: usize) -> Result<(), CpuError> {
        self.0.write(src, dst, offset)
    }
    fn patch_scratch_len(&self, layer: &Layer, r: usize) -> usize {
        self.0.patch_scratch_len(layer, r)
    }
    fn pack_patches(&self, layer: &Layer, r: usize, x: &Vec<f64>, packed: &mut Vec<f64>) -> Result<(), CpuError> {
        self.0.pack_patches(layer, r, x, packed)
    }
    fn patch_sq_norms(&self, p: &Patches<'_, Self>, norms: &mut Vec<f64>) -> Result<(), CpuError> {
        self.0.patch_sq_norms(&inner(p), norms)
    }
    fn fisher_weights(&self, p: &Patches<'_, Self>, y: &Vec<f64>, norms: &Vec<f64>, scale: f64, eps: f64, trace: &mut Vec<f64>, lambda: &mut Vec<f64>) -> Result<(), CpuError> {
        self.0.fisher_weights(&inner(p), y, norms, scale, eps, trace, lambda)
    }
    fn project(&self, p: &Patches<'_, Self>, v: &Vec<f64>, u: &mut Vec<f64>) -> Result<(), CpuError> {
        self.0.project(&inner(p), v, u)
    }
    fn back_project(&self, p: &Patches<'_, Self>, u: &Vec<f64>, g: &mut Vec<f64>) -> Result<(), CpuError> {
        self.0.back_project(&inner(p), u, g)
    }
    fn axpby(&self, n: usize, a: f64, x: &Vec<f64>, b: f64, y: &mut Vec<f64>) -> Result<(), CpuError> {
        self.0.axpby(n, a, x, b, y)
    }
    fn mul_assign(&self, n: usize, a: &mut Vec<f64>, b: &Vec<f64>) -> Result<(), CpuError> {
        self.0.mul_assign(n, a, b)
    }
    fn copy_strided(&self, rows: usize, cols: usize, src: &Vec<f64>, src_at: Strided, dst: &mut Vec<f64>, dst_at: Strided) -> Result<(), CpuError> {
        self.0.copy_strided(rows, cols, src, src_at, dst, dst_at)
    }
    fn row_dots(&self, rows: usize, cols: usize, a: &Vec<f64>, b: &Vec<f64>, out: &mut Vec<f64>) -> Result<(), CpuError> {
        self.0.row_dots(rows, cols, a, b, out)
    }
    fn row_div(&self, rows: usize, num: &Vec<f64>, den: &Vec<f64>, eps: f64, out: &mut Vec<f64>) -> Result<(), CpuError> {
        self.0.row_div(rows, num, den, eps, out)
    }
    fn row_rsqrt(&self, rows: usize, x: &Vec<f64>, eps: f64, out: &mut Vec<f64>) -> Result<(), CpuError> {
        self.0.row_rsqrt(rows, x, eps, out)
    }
    fn row_axpy(&self, rows: usize, cols: usize, a: f64, coef: &Vec<f64>, x: &Vec<f64>, y: &mut Vec<f64>) -> Result<(), CpuError> {
        self.0.row_axpy(rows, cols, a, coef, x, y)
    }
    fn row_xpby(&self, rows: usize, cols: usize, x: &Vec<f64>, coef: &Vec<f64>, y: &mut Vec<f64>) -> Result<(), CpuError> {
        self.0.row_xpby(rows, cols, x, coef, y)
    }
    fn row_step(&self, rows: usize, cols: usize, w: &mut Vec<f64>, decay: f64, lr: f64, scale: &Vec<f64>, z: &Vec<f64>, z_at: Strided) -> Result<(), CpuError> {
        self.0.row_step(rows, cols, w, decay, lr, scale, z, z_at)
    }
}

fn inner<'a>(p: &Patches<'a, RequiredOnly>) -> Patches<'a, Cpu<f64>> {
    Patches { layer: p.layer, r: p.r, x: p.x, packed: p.packed }
}

#[test]
fn provided_methods_pass_every_golden_case() {
    let cases = load_cases(&golden_dir()).unwrap_or_else(|e| panic!("{e}"));
    assert!(!cases.is_empty());
    let backend = RequiredOnly(Cpu::with_threads(2).unwrap());
    for case in &cases {
        run_case(&backend, case, 1e-9).unwrap_or_else(|e| panic!("{}: {e}", case.name));
    }
    println!("{} golden cases through the provided methods", cases.len());
}
