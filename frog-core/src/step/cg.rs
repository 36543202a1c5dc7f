//! Batched conjugate gradient from zero, as FROG's and K-FROG's solves run it.

use crate::backend::{axpby_buffers, Backend, CgBuffers, Patches, Shape};
use crate::layer::Layer;
use crate::scalar::Scalar;
use crate::workspace::Workspace;

/// A batched CG solve's damping `tau`, denominators' `eps` and iterations.
pub(crate) struct CgRun<S> {
    pub(crate) tau: S,
    pub(crate) eps: S,
    pub(crate) iters: usize,
}

/// Starts batched CG from zero on the right-hand side in `ws.m`: `Z = 0`,
/// `Rs = Pd = M`, `rho = <M, M>` per row (FROG's and K-FROG's solves).
pub(crate) fn cg_start<B: Backend>(backend: &B, shape: Shape, ws: &mut Workspace<B>) -> Result<(), B::Error> {
    let n = shape.rows * shape.cols;
    axpby_buffers(backend, n, B::Scalar::ZERO, &ws.m, B::Scalar::ZERO, &mut ws.z)?;
    backend.copy(n, &ws.m, &mut ws.rs)?;
    backend.copy(n, &ws.m, &mut ws.pd)?;
    backend.row_dots(shape, &ws.m, &ws.m, &mut ws.rho)
}

/// `iters` CG iterations against the Fisher weights in `ws.lambda` over the
/// patches `pack_patches` left in `ws.packed`; returns the final `<Rs,Rs>`
/// per row (in `ws.rho` or `ws.rho_next`, as the iterations swapped them).
pub(crate) fn cg_iterate<'w, B: Backend>(backend: &B, (layer, r, x): (&'w Layer, usize, Option<B::View<'w>>), run: CgRun<B::Scalar>, ws: &'w mut Workspace<B>) -> Result<&'w B::Buffer, B::Error> {
    let mut p = Patches { layer, r, x, packed: &ws.packed, scratch: &mut ws.scratch };
    let mut cg = CgBuffers {
        z: &mut ws.z,
        rs: &mut ws.rs,
        pd: &mut ws.pd,
        ap: &mut ws.ap,
        u: &mut ws.u,
        rho: &mut ws.rho,
        rho_next: &mut ws.rho_next,
        pap: &mut ws.pap,
        coef: &mut ws.coef,
    };
    backend.cg_solve(&mut p, &ws.lambda, run.tau, run.eps, run.iters, &mut cg)?;
    Ok(cg.rho)
}
