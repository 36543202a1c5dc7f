//! AdamW's elementwise update on the CPU (frog-core's `AdamBackend`).

use frog_core::{AdamBackend, AdamCoefs, AdamMoments};

use crate::backend::{abs, need, saturate, Cpu, CpuError};
use crate::gemm::Real;
use crate::parts::Rows;

/// The update of one entry, in PyTorch's order of operations.
#[inline]
fn update<T: Real>(c: &AdamCoefs<T>, p: &mut T, g: T, m: &mut T, v: &mut T, vmax: Option<&mut T>) {
    *p *= c.decay;
    // PyTorch's lerp, unless `g - m` overflows (opposite signs near the
    // maximum): then the same convex combination, clamped to finite.
    let d = g - *m;
    *m = if abs(d) <= <T as frog_core::Scalar>::MAX { *m + c.one_minus_beta1 * d } else { saturate(*m - c.one_minus_beta1 * *m + c.one_minus_beta1 * g) };
    // Saturates at the largest finite value: a gradient whose square
    // overflows (1e21 in f32) leaves a finite state that restores, and a
    // finite step.
    *v = saturate(c.beta2 * *v + c.one_minus_beta2 * g * g);
    let second = match vmax {
        Some(vm) => {
            if *v > *vm {
                *vm = *v;
            }
            *vm
        }
        None => *v,
    };
    *p -= c.step_size * *m / (second.sqrt() / c.bias_correction2_sqrt + c.eps);
}

impl<T: Real> AdamBackend for Cpu<T> {
    fn adamw_update(&self, n: usize, c: &AdamCoefs<T>, param: &mut Vec<T>, grad: &Vec<T>, moments: AdamMoments<'_, Self>) -> Result<(), CpuError> {
        let AdamMoments { m, v, vmax } = moments;
        need("adamw_update: param", param, n)?;
        need("adamw_update: grad", grad, n)?;
        need("adamw_update: m", m, n)?;
        need("adamw_update: v", v, n)?;
        if let Some(vm) = &vmax {
            need("adamw_update: vmax", vm, n)?;
        }
        let (param, m, v, vmax) = (&mut param[..n], &mut m[..n], &mut v[..n], vmax.map(|vm| &mut vm[..n]));
        let buffers = move |parts| {
            let [ps, ms, vs] = [param, m, v].map(|b| Rows::new(b, n, 1, parts));
            (ps, ms, vs, vmax.map(|vm| Rows::new(vm, n, 1, parts)))
        };
        self.par(n.saturating_mul(8), buffers, |_, ((r, ps), (_, ms), (_, vs), mut vms)| {
            for (k, ((p, m), v)) in ps.iter_mut().zip(ms.iter_mut()).zip(vs.iter_mut()).enumerate() {
                update(c, p, grad[r.start + k], m, v, vms.as_mut().map(|(_, s)| &mut s[k]));
            }
        });
        Ok(())
    }
}
