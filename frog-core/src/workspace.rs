//! Workspace sizing and the workspace itself, in the faer/rustfft style:
//! [`WorkspaceReq::new`] reports what a layer's step needs at a given sample
//! size, the backend's patch and product scratch included, the caller
//! allocates it once with [`Workspace::new`], and every step takes it
//! instead of allocating (a backend keeps no hidden scratch of its own).

use core::fmt;

use crate::backend::Backend;
use crate::error::ShapeError;
use crate::layer::Layer;
use crate::step::mul;

/// Entries each part of a workspace needs: every buffer a step writes,
/// FROG's vectors and the backend's scratch ([`Backend::patch_scratch_len`],
/// [`Backend::product_scratch_len`]) alike, so a step (its first included)
/// allocates nothing and cannot run out of memory. Requirements of several
/// layers combine with [`WorkspaceReq::union`], so one workspace can serve
/// them all; one made at `r` samples serves steps of fewer. The backend's
/// parts depend on the backend as made (frog-cpu's on its thread count):
/// a workspace serves the backend it was sized on, and its clones.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WorkspaceReq {
    /// Each `R x D'` vector (gradient, direction, residual, search direction, `A p`).
    pub vector: usize,
    /// Each per-row scalar buffer (`R`).
    pub row: usize,
    /// The Fisher weights and product scratch (`r*R*L` each).
    pub fisher: usize,
    /// Patch norms (`r*L`).
    pub norms: usize,
    /// The backend's patch scratch.
    pub packed: usize,
    /// The backend's product scratch.
    pub scratch: usize,
}

impl WorkspaceReq {
    /// What a step of `layer` with `r` sampled rows needs on `backend`; an
    /// invalid layer, or one whose sizes overflow `usize` at this sample
    /// size, is an error.
    pub fn new<B: Backend>(backend: &B, layer: &Layer, r: usize) -> Result<Self, ShapeError> {
        layer.validate()?;
        let (rows, cols, l) = (layer.rows(), layer.cols(), layer.positions());
        let norms = mul(r, l, "patch norms (sample * positions)")?;
        Ok(Self {
            vector: rows * cols,
            row: rows,
            fisher: mul(norms, rows, "Fisher weights (sample * positions * rows)")?,
            norms,
            packed: backend.patch_scratch_len(layer, r),
            scratch: backend.product_scratch_len(layer, r),
        })
    }

    /// The part-wise maximum: a workspace big enough for both.
    pub fn union(self, other: Self) -> Self {
        Self {
            vector: self.vector.max(other.vector),
            row: self.row.max(other.row),
            fisher: self.fisher.max(other.fisher),
            norms: self.norms.max(other.norms),
            packed: self.packed.max(other.packed),
            scratch: self.scratch.max(other.scratch),
        }
    }

    /// Total entries, over all buffers (`usize::MAX` if that overflows).
    pub fn total(&self) -> usize {
        let parts = [(VECTORS, self.vector), (ROWS, self.row), (2, self.fisher), (1, self.norms), (1, self.packed), (1, self.scratch)];
        parts.iter().fold(0usize, |sum, &(k, v)| sum.saturating_add(v.saturating_mul(k)))
    }

    /// Checks that `self` covers `need`.
    pub(crate) fn covers(&self, need: &Self) -> Result<(), ShapeError> {
        let parts = [
            ("vector", need.vector, self.vector),
            ("row", need.row, self.row),
            ("fisher", need.fisher, self.fisher),
            ("norms", need.norms, self.norms),
            ("packed", need.packed, self.packed),
            ("scratch", need.scratch, self.scratch),
        ];
        for (what, required, available) in parts {
            if required > available {
                return Err(ShapeError::WorkspaceTooSmall { what, required, available });
            }
        }
        Ok(())
    }
}

const VECTORS: usize = 5;
const ROWS: usize = 8;

/// The scratch of FROG steps, allocated once on the backend.
pub struct Workspace<B: Backend> {
    pub(crate) req: WorkspaceReq,
    pub(crate) m: B::Buffer,
    pub(crate) z: B::Buffer,
    pub(crate) rs: B::Buffer,
    pub(crate) pd: B::Buffer,
    pub(crate) ap: B::Buffer,
    pub(crate) trace: B::Buffer,
    pub(crate) rho: B::Buffer,
    pub(crate) rho_next: B::Buffer,
    pub(crate) pap: B::Buffer,
    pub(crate) coef: B::Buffer,
    pub(crate) zm: B::Buffer,
    pub(crate) row_scale: B::Buffer,
    /// The guard's per-row flags.
    pub(crate) flags: B::Buffer,
    pub(crate) lambda: B::Buffer,
    pub(crate) u: B::Buffer,
    pub(crate) norms: B::Buffer,
    pub(crate) packed: B::Buffer,
    /// The backend's product scratch ([`crate::Patches::scratch`]).
    pub(crate) scratch: B::Buffer,
}

/// What it was sized for, not its buffers (they need not be `Debug`).
impl<B: Backend> fmt::Debug for Workspace<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Workspace").field("req", &self.req).finish_non_exhaustive()
    }
}

impl<B: Backend> Workspace<B> {
    /// Allocates every buffer `req` names, on `backend`.
    pub fn new(backend: &B, req: WorkspaceReq) -> Result<Self, B::Error> {
        let v = || backend.zeros(req.vector);
        let row = || backend.zeros(req.row);
        Ok(Self {
            req,
            m: v()?,
            z: v()?,
            rs: v()?,
            pd: v()?,
            ap: v()?,
            trace: row()?,
            rho: row()?,
            rho_next: row()?,
            pap: row()?,
            coef: row()?,
            zm: row()?,
            row_scale: row()?,
            flags: row()?,
            lambda: backend.zeros(req.fisher)?,
            u: backend.zeros(req.fisher)?,
            norms: backend.zeros(req.norms)?,
            packed: backend.zeros(req.packed)?,
            scratch: backend.zeros(req.scratch)?,
        })
    }

    /// What this workspace was sized for.
    pub fn req(&self) -> WorkspaceReq {
        self.req
    }

    /// The last step's traces (`R`, unnormalized by eps).
    pub fn trace(&self) -> &B::Buffer {
        &self.trace
    }

    /// The last step's CG solution `Z` (`R x D'`, bias entry last).
    pub fn direction(&self) -> &B::Buffer {
        &self.z
    }

    /// The last step's row scales `1/sqrt(<Z_j,M_j> + eps)` (`R`).
    pub fn row_scale(&self) -> &B::Buffer {
        &self.row_scale
    }
}
