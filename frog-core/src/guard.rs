//! The opt-in guard and the per-row diagnostics of a FROG step.
//!
//! The default step ([`crate::frog_step`] with [`crate::Unguarded`]) is exactly the
//! original's and never reads back to the host. Like K-FAC
//! implementations, [`crate::frog_step`] with a [`Guard`] adds, on request, a check of
//! every row's direction, kept in backend buffers of the layer's state and
//! read only when asked ([`crate::ParamState::diagnostics`]): the CG
//! relative residual, the row scales' range, the rows with a zero trace
//! (dead rows) and the rows whose direction is not finite. It can also
//! replace such rows by the normalized momentum step.

use crate::backend::{Backend, Shape};
use crate::error::Error;
use crate::scalar::Scalar;

/// Row flag: the direction or the row scale is NaN or infinite.
pub const ROW_NONFINITE: u8 = 1;
/// Row flag: the trace is zero (every sampled output gradient of the row
/// is zero).
pub const ROW_DEAD: u8 = 2;
/// Row flag: the guard replaced the row's step by the normalized momentum
/// step.
pub const ROW_REPLACED: u8 = 4;

/// What a guarded [`crate::frog_step`] replaces. With both off it only records
/// the diagnostics; the step is then the original's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Guard {
    /// A row whose direction or row scale is not finite takes the
    /// normalized momentum step `-lr * M_j / ||M_j||` instead (no step if
    /// `M_j` is zero or not finite).
    pub nonfinite: bool,
    /// A dead row (zero trace, so `Lambda_j = 0`) takes the normalized
    /// momentum step instead of the original's `Z_j = M_j / tau`, whose
    /// update has norm about `lr / sqrt(tau)`.
    pub dead_rows: bool,
}

/// The backend kernel the guard needs: an extension of [`Backend`], so a
/// backend without it keeps compiling and simply cannot run guarded steps.
pub trait GuardBackend: Backend {
    /// For every row `j` of the `rows x cols` direction `z` (right-hand side
    /// `m`, per-row `trace` and `row_scale`), sets `flags[j]` to the sum of
    /// [`ROW_NONFINITE`] (some entry of `z_j`, or `row_scale[j]`, is not
    /// finite), [`ROW_DEAD`] (`trace[j] == 0`) and [`ROW_REPLACED`]. A row
    /// is replaced when it is non-finite and `guard.nonfinite`, or dead and
    /// `guard.dead_rows`: then `z_j = m_j` and `row_scale[j] = 1/||m_j||`,
    /// or `z_j = 0` and `row_scale[j] = 0` when `m_j` is zero or not
    /// finite. The norm must not overflow for finite `m_j`.
    fn row_guard(&self, shape: Shape, guard: Guard, m: &Self::Buffer, trace: &Self::Buffer, out: RowGuardOut<'_, Self>) -> Result<(), Self::Error>;
}

/// What [`GuardBackend::row_guard`] reads and rewrites per row: the
/// direction, the row scale, and the flags it sets.
pub struct RowGuardOut<'a, B: Backend + ?Sized> {
    /// The `rows x cols` direction.
    pub z: &'a mut B::Buffer,
    /// The row scale, `rows` entries.
    pub row_scale: &'a mut B::Buffer,
    /// The flags, `rows` entries.
    pub flags: &'a mut B::Buffer,
}

/// Buffers only, which print as nothing (they need not be `Debug`).
impl<B: Backend + ?Sized> core::fmt::Debug for RowGuardOut<'_, B> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("RowGuardOut").finish_non_exhaustive()
    }
}

/// Parts of a state's diagnostics buffer, `rows` entries each, in order:
/// trace, row scale, `rho_0 = <M_j, M_j>`, the final `rho_k`, flags.
pub(crate) const DIAG_PARTS: usize = 5;
pub(crate) const DIAG_TRACE: usize = 0;
pub(crate) const DIAG_ROW_SCALE: usize = 1;
pub(crate) const DIAG_RHO0: usize = 2;
pub(crate) const DIAG_RHOK: usize = 3;
pub(crate) const DIAG_FLAGS: usize = 4;
/// Rows moved per host round trip while reading.
const CHUNK: usize = 64;

/// A summary of one layer's last guarded step, computed on the host from
/// its per-row buffers when read.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Diagnostics {
    /// Rows of the layer.
    pub rows: usize,
    /// The largest CG relative residual `sqrt(rho_k / rho_0)` over the rows
    /// (a row with `rho_0 = 0` counts 0); near or above 1, CG made no
    /// progress on that row.
    pub max_residual: f64,
    /// The mean relative residual.
    pub mean_residual: f64,
    /// The smallest finite row scale `1/sqrt(<Z_j,M_j> + eps)` (the value
    /// the step used, after the guard).
    pub row_scale_min: f64,
    /// The largest finite row scale; a run whose row scales keep growing
    /// (or whose gradients vanish) shows it here.
    pub row_scale_max: f64,
    /// Rows with a zero trace.
    pub dead_rows: usize,
    /// Rows whose direction or row scale was not finite.
    pub nonfinite_rows: usize,
    /// Rows the guard replaced by the normalized momentum step.
    pub replaced_rows: usize,
}

impl Diagnostics {
    /// Reads and summarizes a state's diagnostics buffer (`DIAG_PARTS`
    /// parts of `rows` entries).
    pub(crate) fn read<B: Backend>(backend: &B, buf: &B::Buffer) -> Result<Self, Error<B::Error>> {
        let rows = backend.len(buf) / DIAG_PARTS;
        let mut d = Self {
            rows,
            max_residual: 0.0,
            mean_residual: 0.0,
            row_scale_min: f64::INFINITY,
            row_scale_max: 0.0,
            dead_rows: 0,
            nonfinite_rows: 0,
            replaced_rows: 0,
        };
        let mut parts = [[B::Scalar::ZERO; CHUNK]; DIAG_PARTS];
        let mut residual_sum = 0.0;
        for start in (0..rows).step_by(CHUNK) {
            let n = CHUNK.min(rows - start);
            for (k, part) in parts.iter_mut().enumerate() {
                backend.read(buf, k * rows + start, &mut part[..n]).map_err(Error::Backend)?;
            }
            let at = |part: usize, j: usize| parts[part][j].as_f64();
            for j in 0..n {
                let (rho0, rhok) = (at(DIAG_RHO0, j), at(DIAG_RHOK, j));
                let residual = if rho0 > 0.0 { libm::sqrt(rhok / rho0) } else { 0.0 };
                if residual.is_finite() {
                    d.max_residual = d.max_residual.max(residual);
                    residual_sum += residual;
                }
                let scale = at(DIAG_ROW_SCALE, j);
                if scale.is_finite() {
                    d.row_scale_min = d.row_scale_min.min(scale);
                    d.row_scale_max = d.row_scale_max.max(scale);
                }
                let flags = at(DIAG_FLAGS, j) as u8;
                d.nonfinite_rows += usize::from(flags & ROW_NONFINITE != 0);
                d.dead_rows += usize::from(flags & ROW_DEAD != 0);
                d.replaced_rows += usize::from(flags & ROW_REPLACED != 0);
            }
        }
        if rows > 0 {
            d.mean_residual = residual_sum / rows as f64;
        }
        if d.row_scale_min > d.row_scale_max {
            d.row_scale_min = 0.0;
        }
        Ok(d)
    }
}
