//! Muon (MomentUm Orthogonalized by Newton-Schulz): momentum, then the
//! update replaced by the nearest semi-orthogonal matrix, approximated by a
//! few Newton-Schulz steps. It holds the CIFAR-10 speed record
//! (airbench94_muon), so the study sets FROG beside it. Both published
//! forms, as `golden/MUON.md` states them: [`MuonForm::Official`]
//! (KellerJordan/Muon `muon.py`) and [`MuonForm::Airbench`]
//! (cifar10-airbench `airbench94_muon.py`).

use core::fmt;

use crate::backend::{axpby_buffers, whole, whole_mut, Backend};
use crate::config::{decay_ok, momentum_ok, non_negative, representable, update_bound_ok, ConfigError, NonExhaustive, MAX_NUM_ITERS};
use crate::error::{Error, ShapeError};
use crate::scalar::Scalar;
use crate::sgd::Operands;
use crate::state::{check_stored, export_stored, import_stored, stored_len, Header, StateError};
use crate::step::{check_count, mul};

/// The quintic Newton-Schulz coefficients `(a, b, c)` both references use:
/// `X = a X + (b A + c A^2) X` with `A = X X^T`.
pub const MUON_NS_COEFS: (f64, f64, f64) = (3.4445, -4.7750, 2.0315);

/// Added to the Frobenius norm that normalizes the update before the
/// iteration (both references), so that a zero update stays zero.
pub const MUON_NS_EPS: f64 = 1e-7;

/// A bound on the singular values the iteration leaves: the quintic maps
/// `[0, 1.21]` into `[0, 1.21]` (its maximum on `[0, 1]` is about 1.2025),
/// and the normalized update starts in `[0, 1]`; so no entry of `NS(u)`
/// exceeds it either.
const NS_BOUND: f64 = 1.21;

/// Which published Muon rule a [`MuonConfig`] runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum MuonForm {
    /// KellerJordan/Muon `muon.py`: momentum and Nesterov by lerp, the
    /// update scaled by `sqrt(max(1, s1/s2))` of the gradient's last two
    /// stored dimensions, decoupled weight decay.
    Official,
    /// airbench94_muon's class `Muon`: an SGD-style buffer (`buf = m buf +
    /// g`), the weight renormalized to Frobenius norm `sqrt(rows)` before
    /// every step, no scale, no decay.
    Airbench,
}

/// Muon settings. [`MuonConfig::default`] is the official form with
/// `muon.py`'s defaults; [`MuonConfig::airbench`] is airbench's class with
/// its defaults. Write them as `MuonConfig { lr: 0.05, ..MuonConfig::default() }`
/// (see [`NonExhaustive`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MuonConfig {
    /// The rule.
    pub form: MuonForm,
    /// Learning rate.
    pub lr: f64,
    /// Momentum (`beta` of the official form, `m` of airbench's).
    pub momentum: f64,
    /// Nesterov momentum.
    pub nesterov: bool,
    /// Newton-Schulz steps, `1..=`[`MAX_NUM_ITERS`].
    pub ns_steps: usize,
    /// Decoupled weight decay (`W *= 1 - lr * weight_decay`); the official
    /// form only: airbench's has none, so a nonzero value there is refused.
    pub weight_decay: f64,
    /// Keeps settings addable (see [`NonExhaustive`]).
    pub non_exhaustive: NonExhaustive,
}

impl Default for MuonConfig {
    /// `muon.py`'s defaults: lr 0.02, momentum 0.95, Nesterov, 5 steps, no decay.
    fn default() -> Self {
        Self { form: MuonForm::Official, lr: 0.02, momentum: 0.95, nesterov: true, ns_steps: 5, weight_decay: 0.0, non_exhaustive: NonExhaustive(()) }
    }
}

impl MuonConfig {
    /// airbench94_muon's class defaults: lr 1e-3, momentum 0, no Nesterov,
    /// 3 steps (the record's run sets lr 0.24, momentum 0.6, Nesterov).
    pub fn airbench() -> Self {
        Self { form: MuonForm::Airbench, lr: 1e-3, momentum: 0.0, nesterov: false, ns_steps: 3, weight_decay: 0.0, non_exhaustive: NonExhaustive(()) }
    }

    /// Checks the values: `lr >= 0`, `momentum` in `[0, 1]`, Nesterov only
    /// with momentum (airbench's own check; the official form's Nesterov
    /// without momentum is plain Muon), `ns_steps` in `1..=MAX_NUM_ITERS`,
    /// `weight_decay >= 0` with `lr * weight_decay <= 1`, and no decay in
    /// the airbench form.
    pub fn validate(&self) -> Result<(), ConfigError> {
        momentum_ok(self.lr, self.momentum, self.nesterov)?;
        match self.ns_steps {
            0 => return Err(ConfigError::NsStepsZero),
            n if n > MAX_NUM_ITERS => return Err(ConfigError::NumItersTooLarge(n)),
            _ => {}
        }
        if !non_negative(self.weight_decay) {
            return Err(ConfigError::WeightDecay(self.weight_decay));
        }
        if self.form == MuonForm::Airbench && self.weight_decay != 0.0 {
            return Err(ConfigError::DecayNotInForm(self.weight_decay));
        }
        decay_ok(self.lr, self.weight_decay)
    }

    /// [`MuonConfig::validate`], that every setting stays finite (and
    /// nonzero where it is nonzero) in the scalar type `S`, and that the
    /// bound on one update entry, times [`crate::UPDATE_MARGIN`], does not
    /// overflow `S`: `lr * 1.21` (no entry of the orthogonalized update
    /// exceeds its largest singular value, at most 1.21 after any number of
    /// steps); [`muon_step`] also checks it times the official form's
    /// shape scale. The decay only shrinks the weights, and airbench's
    /// renormalized weights have norm `sqrt(rows)`.
    pub fn validate_for<S: Scalar>(&self) -> Result<(), ConfigError> {
        self.validate()?;
        let settings = [("lr", self.lr), ("momentum", self.momentum), ("weight_decay", self.weight_decay), ("lr * weight_decay", self.lr * self.weight_decay)];
        settings.iter().try_for_each(|&(what, v)| representable::<S>(what, v))?;
        update_bound_ok::<S>("lr * 1.21", self.lr * NS_BOUND)
    }
}

/// The shape Muon sees a weight as: a `rows x cols` matrix (a conv filter
/// `[c_out, c_in, kh, kw]` as `c_out x (c_in*kh*kw)`), and the weight's
/// last two stored dimensions, which the official form's scale
/// `sqrt(max(1, s1/s2))` reads (so a square kernel gets scale 1 whatever
/// its matrix shape, as `muon.py` does).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MuonShape {
    rows: usize,
    cols: usize,
    last_two: (usize, usize),
}

impl MuonShape {
    /// A `rows x cols` matrix (a linear layer's weight).
    pub fn matrix(rows: usize, cols: usize) -> Result<Self, ShapeError> {
        mul(rows, cols, "Muon weight")?;
        Ok(Self { rows, cols, last_two: (rows, cols) })
    }

    /// A conv filter `[c_out, c_in, kh, kw]`.
    pub fn conv2d(c_out: usize, c_in: usize, kh: usize, kw: usize) -> Result<Self, ShapeError> {
        let cols = mul(mul(c_in, kh, "Muon filter")?, kw, "Muon filter")?;
        mul(c_out, cols, "Muon filter")?;
        Ok(Self { rows: c_out, cols, last_two: (kh, kw) })
    }

    /// Rows of the matrix.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Columns of the matrix.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Entries of the weight.
    pub fn entries(&self) -> usize {
        self.rows * self.cols
    }

    /// The side of the Gram matrix the iteration forms: the smaller dimension.
    pub fn side(&self) -> usize {
        self.rows.min(self.cols)
    }

    /// The official form's update scale, `sqrt(max(1, s1/s2))` (1 for a
    /// zero `s2`: an empty weight has no update to scale).
    fn official_scale(&self) -> f64 {
        let (s1, s2) = self.last_two;
        if s2 == 0 {
            1.0
        } else {
            libm::sqrt(f64::max(1.0, s1 as f64 / s2 as f64))
        }
    }
}

/// A product `C = op(A) op(B)` (or `C += op(A) op(B)`) of dense row-major
/// matrices, `op(A)` being `m x k` and `op(B)` `k x n`: `A` is stored `m x
/// k`, or `k x m` when `trans_a`; `B` `k x n`, or `n x k` when `trans_b`.
/// No `alpha`/`beta`: every combination the iteration needs is one
/// [`Backend::axpby`] after the product, in the references' own order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MatmulOp {
    /// Rows of `C`.
    pub m: usize,
    /// Columns of `C`.
    pub n: usize,
    /// The inner dimension.
    pub k: usize,
    /// `A` is stored transposed.
    pub trans_a: bool,
    /// `B` is stored transposed.
    pub trans_b: bool,
    /// Add to `C` instead of replacing it (a replaced `C` is never read, so
    /// a NaN there does not survive).
    pub accumulate: bool,
}

/// How [`MatmulBackend::scale_by_norm`] scales: `x *= num / (norm + eps)`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct NormScale<S> {
    /// The target norm (1 to normalize, `sqrt(rows)` for airbench's weight).
    pub num: S,
    /// Added to the norm (the iteration's [`MUON_NS_EPS`]; 0 for the weight).
    pub eps: S,
}

/// Backends that run Muon: the Newton-Schulz iteration multiplies
/// weight-sized matrices, and normalizes by a Frobenius norm, which
/// [`Backend`] does not have. An extension trait, so that backends without
/// it keep compiling; [`muon_step`] requires it. The norm stays on the
/// device: [`MatmulBackend::frobenius_norm`] writes it to a one-entry buffer that
/// [`MatmulBackend::scale_by_norm`] reads, so a step reads nothing back.
pub trait MatmulBackend: Backend {
    /// `C = op(A) op(B)`, or `C += op(A) op(B)` (see [`MatmulOp`]); the
    /// buffers hold at least the entries their shapes name.
    fn matmul(&self, p: MatmulOp, a: &Self::Buffer, b: &Self::Buffer, c: &mut Self::Buffer) -> Result<(), Self::Error>;

    /// `out[0] = ||x||_F`, the Frobenius norm of the first `n` entries of
    /// `x` (a view, so that a caller's weight needs no copy), finite
    /// whenever the norm is: a sum of squares that overflows must be
    /// rescaled, not returned as infinity (which would zero the update, or
    /// airbench's weight).
    fn frobenius_norm(&self, n: usize, x: &Self::View<'_>, out: &mut Self::Buffer) -> Result<(), Self::Error>;

    /// `x[i] *= s.num / (norm[0] + s.eps)` for the first `n` entries of
    /// `x`, the factor formed once, as the references form it on the host.
    /// A zero `norm[0] + s.eps` (the norm of an all-zero `x`, with
    /// `eps = 0`: airbench renormalizing a zero weight) leaves `x`
    /// unchanged, where the references give NaN: finite input keeps a
    /// finite step.
    fn scale_by_norm(&self, n: usize, norm: &Self::Buffer, s: NormScale<Self::Scalar>, x: &mut Self::ViewMut<'_>) -> Result<(), Self::Error>;

    /// `NS(u, steps)` of `golden/MUON.md` on the update `u` in `scratch.x` (the
    /// first `rows * cols` entries of `shape`), returning the buffer of
    /// `scratch` that holds the result. Provided: [`newton_schulz`], the iteration
    /// in the backend's scalar type through the methods above and
    /// [`Backend::axpby`]. A backend overrides it to run the iteration in
    /// another arithmetic (frog-cuda's bfloat16 mode, as the references run
    /// it on a GPU, rounds where torch's bf16 tensors round, which these
    /// methods cannot express) and calls [`newton_schulz`] otherwise.
    fn newton_schulz<'s>(&self, shape: &MuonShape, steps: usize, scratch: NsScratch<'s, Self>) -> Result<&'s Self::Buffer, Self::Error>
    where
        Self: Sized,
    {
        newton_schulz(self, shape, steps, scratch)
    }
}

/// The buffers of one Newton-Schulz run ([`MatmulBackend::newton_schulz`]):
/// the parts of a [`MuonScratch`], checked by [`muon_step`] to hold at
/// least the entries named here for the step's shape (`side` its smaller
/// dimension).
#[non_exhaustive]
pub struct NsScratch<'s, B: Backend> {
    /// The update on entry (`rows * cols`); an iterate after.
    pub x: &'s mut B::Buffer,
    /// The other iterate (`rows * cols`).
    pub next: &'s mut B::Buffer,
    /// The Gram matrix (`side * side`).
    pub gram: &'s mut B::Buffer,
    /// Its polynomial (`side * side`).
    pub poly: &'s mut B::Buffer,
    /// The update's norm (one entry).
    pub norm: &'s mut B::Buffer,
}

impl<B: Backend> fmt::Debug for NsScratch<'_, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NsScratch").finish_non_exhaustive()
    }
}

/// The scratch of one Muon step: the update and the iteration's next
/// iterate (weight-sized), the Gram matrix and its polynomial (`side x
/// side`, `side` the smaller dimension), and the norm. Sized up front for
/// the largest weight it will serve ([`MuonScratch::entries`] is its
/// size), so a step allocates nothing; one scratch serves every weight
/// that fits.
pub struct MuonScratch<B: Backend> {
    x: B::Buffer,
    next: B::Buffer,
    gram: B::Buffer,
    poly: B::Buffer,
    norm: B::Buffer,
}

impl<B: Backend> fmt::Debug for MuonScratch<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MuonScratch").finish_non_exhaustive()
    }
}

impl<B: Backend> MuonScratch<B> {
    /// Scratch for weights up to `entries` entries whose smaller dimension
    /// is at most `side`; see [`MuonScratch::for_shape`].
    pub fn new(backend: &B, entries: usize, side: usize) -> Result<Self, Error<B::Error>> {
        let sq = mul(side, side, "Muon Gram matrix")?;
        let z = |n: usize| backend.zeros(n).map_err(Error::Backend);
        Ok(Self { x: z(entries)?, next: z(entries)?, gram: z(sq)?, poly: z(sq)?, norm: z(1)? })
    }

    /// Scratch for one weight's shape.
    pub fn for_shape(backend: &B, shape: &MuonShape) -> Result<Self, Error<B::Error>> {
        Self::new(backend, shape.entries(), shape.side())
    }

    /// Entries the scratch for `shape` holds (the allocation, in scalars):
    /// `2 * rows * cols + 2 * side^2 + 1`; `None` when it overflows `usize`.
    pub fn entries(shape: &MuonShape) -> Option<usize> {
        let n = shape.entries();
        let s2 = shape.side().checked_mul(shape.side())?;
        n.checked_mul(2)?.checked_add(s2.checked_mul(2)?)?.checked_add(1)
    }

    fn check(&self, backend: &B, shape: &MuonShape) -> Result<(), ShapeError> {
        let s2 = shape.side() * shape.side();
        let parts = [("Muon update", &self.x, shape.entries()), ("Muon iterate", &self.next, shape.entries()), ("Muon Gram", &self.gram, s2), ("Muon polynomial", &self.poly, s2)];
        for (what, buf, required) in parts {
            let available = backend.len(buf);
            if available < required {
                return Err(ShapeError::WorkspaceTooSmall { what, required, available });
            }
        }
        Ok(())
    }
}

/// The state of one Muon parameter: the momentum buffer (both forms keep
/// one, momentum 0 included, as the references do) and the step count.
pub struct MuonState<B: Backend> {
    buf: B::Buffer,
    len: usize,
    steps: u64,
}

const MAGIC: [u8; 4] = *b"FRMU";
/// Muon's state has no optional buffer: its header flag is always 0.
const FLAG: (bool, &str) = (false, "muon");

impl<B: Backend> fmt::Debug for MuonState<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MuonState").field("len", &self.len).field("steps", &self.steps).finish()
    }
}

impl<B: Backend> MuonState<B> {
    /// A zero buffer for a parameter of `len` entries.
    pub fn new(backend: &B, len: usize) -> Result<Self, B::Error> {
        Ok(Self { buf: backend.zeros(len)?, len, steps: 0 })
    }

    /// Steps taken.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// Entries of the parameter.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the parameter has no entries.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The momentum buffer (`momentum_buffer` in both references).
    pub fn momentum(&self) -> &B::Buffer {
        &self.buf
    }

    /// Bytes [`MuonState::export`] writes.
    pub fn export_len(&self) -> usize {
        stored_len::<B::Scalar>(self.len, 1)
    }

    /// Writes the state to `out` (at least [`MuonState::export_len`]
    /// bytes) and returns the bytes written.
    pub fn export(&self, backend: &B, out: &mut [u8]) -> Result<usize, Error<B::Error>> {
        let header = Header { magic: MAGIC, flag: FLAG.0, len: self.len, steps: self.steps };
        export_stored(backend, &header, &[&self.buf], out)
    }

    /// Restores bytes [`MuonState::export`] wrote for a parameter of the
    /// same size and scalar type; every byte is checked first (a NaN or
    /// infinite entry is an error), so a rejected buffer changes nothing.
    pub fn restore(&mut self, backend: &B, bytes: &[u8]) -> Result<(), Error<B::Error>> {
        let steps = self.check_bytes(bytes)?;
        self.apply_bytes(backend, bytes, steps).map_err(Error::Backend)
    }

    /// [`MuonState::restore`]'s checks (the step count read), for a
    /// checkpoint that checks every state before it writes any.
    pub(crate) fn check_bytes(&self, bytes: &[u8]) -> Result<u64, StateError> {
        check_stored::<B::Scalar>(bytes, MAGIC, self.len, FLAG, 1)
    }

    /// Writes checked bytes into the state.
    pub(crate) fn apply_bytes(&mut self, backend: &B, bytes: &[u8], steps: u64) -> Result<(), B::Error> {
        import_stored(backend, bytes, self.len, core::iter::once(&mut self.buf))?;
        self.steps = steps;
        Ok(())
    }
}

/// One Muon step of a weight of shape `shape`, on a [`crate::ParamGrad`]
/// of buffers or a [`crate::ViewParamGrad`] of views, in the form
/// `cfg.form` names (the rules of `golden/MUON.md`).
///
/// Rejects, changing nothing: settings [`MuonConfig::validate_for`]
/// rejects in the backend's scalar type (and `lr` times the official
/// form's shape scale past the update bound), a parameter, gradient or
/// state of another length than the shape's, a scratch too small for it,
/// and an exhausted step count.
pub fn muon_step<B: MatmulBackend>(backend: &B, cfg: &MuonConfig, shape: &MuonShape, state: &mut MuonState<B>, scratch: &mut MuonScratch<B>, mut ops: impl Operands<B>) -> Result<(), Error<B::Error>> {
    cfg.validate_for::<B::Scalar>()?;
    let scale = if cfg.form == MuonForm::Official { shape.official_scale() } else { 1.0 };
    update_bound_ok::<B::Scalar>("lr * 1.21 * sqrt(max(1, s1/s2))", cfg.lr * NS_BOUND * scale)?;
    let n = shape.entries();
    check_count(state.len, "Muon state", n)?;
    ops.check(backend, n)?;
    scratch.check(backend, shape)?;
    let steps = state.steps.checked_add(1).ok_or(StateError::StepsExhausted)?;
    let s = B::Scalar::of_f64;
    let (one, beta) = (B::Scalar::ONE, s(cfg.momentum));
    let go = |r: Result<(), B::Error>| r.map_err(Error::Backend);
    match cfg.form {
        MuonForm::Official => {
            // buf = buf + (1 - beta)(g - buf);  u = g + beta (buf - g) (Nesterov) or buf
            let rest = s(1.0 - cfg.momentum);
            go(ops.grad_to_buf(backend, n, rest, beta, &mut state.buf))?;
            go(backend.copy(n, &state.buf, &mut scratch.x))?;
            if cfg.nesterov {
                go(ops.grad_to_buf(backend, n, rest, beta, &mut scratch.x))?;
            }
        }
        MuonForm::Airbench => {
            // buf = m buf + g;  u = g + m buf (Nesterov) or buf
            go(ops.grad_to_buf(backend, n, one, beta, &mut state.buf))?;
            go(backend.copy(n, &state.buf, &mut scratch.x))?;
            if cfg.nesterov {
                go(ops.grad_to_buf(backend, n, one, beta, &mut scratch.x))?;
            }
            // W = W * sqrt(rows) / ||W||_F, before the update.
            let target = NormScale { num: s(libm::sqrt(shape.rows as f64)), eps: B::Scalar::ZERO };
            let norm = &mut scratch.norm;
            go(ops.with_param_mut(backend, |p| {
                backend.frobenius_norm(n, &backend.reborrow(p), norm)?;
                backend.scale_by_norm(n, norm, target, p)
            }))?;
        }
    }
    let MuonScratch { x, next, gram, poly, norm } = scratch;
    let u = backend.newton_schulz(shape, cfg.ns_steps, NsScratch { x, next, gram, poly, norm }).map_err(Error::Backend)?;
    // W = W (1 - lr wd) - lr scale u
    go(ops.buf_to_param(backend, n, s(-cfg.lr * scale), u, s(1.0 - cfg.lr * cfg.weight_decay)))?;
    state.steps = steps;
    Ok(())
}

/// `NS(u, steps)` of `golden/MUON.md` on the update in `scratch.x`, in the
/// backend's scalar type: what [`MatmulBackend::newton_schulz`] runs unless
/// a backend overrides it. Returns the buffer holding the result. A tall
/// matrix (`rows > cols`) is not transposed: its iterate is kept as
/// `Y = X^T`, stored `rows x cols`, so `A = Y^T Y` and `X = a X + B X`
/// becomes `Y = a Y + Y B^T`, the same arithmetic.
pub fn newton_schulz<'s, B: MatmulBackend>(backend: &B, shape: &MuonShape, steps: usize, scratch: NsScratch<'s, B>) -> Result<&'s B::Buffer, B::Error> {
    let (rows, cols, side) = (shape.rows, shape.cols, shape.side());
    let n = shape.entries();
    let tall = rows > cols;
    let NsScratch { x, next, gram, poly, norm } = scratch;
    backend.frobenius_norm(n, &whole(backend, x)?, norm)?;
    let unit = NormScale { num: B::Scalar::ONE, eps: B::Scalar::of_f64(MUON_NS_EPS) };
    backend.scale_by_norm(n, norm, unit, &mut whole_mut(backend, x)?)?;
    let s = B::Scalar::of_f64;
    let (a, b, c) = MUON_NS_COEFS;
    let (mut cur, mut nxt) = (x, next);
    // A = X X^T (wide) or Y^T Y (tall): side x side.
    let gram_p = MatmulOp { m: side, n: side, k: if tall { rows } else { cols }, trans_a: tall, trans_b: !tall, accumulate: false };
    let square = MatmulOp { m: side, n: side, k: side, trans_a: false, trans_b: false, accumulate: false };
    let ss = side * side;
    for _ in 0..steps {
        backend.matmul(gram_p, cur, cur, gram)?;
        // Bm = b A + c A A
        backend.matmul(square, gram, gram, poly)?;
        axpby_buffers(backend, ss, s(b), gram, s(c), poly)?;
        // X = a X + Bm X (wide), Y = a Y + Y Bm^T (tall)
        if tall {
            backend.matmul(MatmulOp { m: rows, n: cols, k: cols, trans_a: false, trans_b: true, accumulate: false }, cur, poly, nxt)?;
        } else {
            backend.matmul(MatmulOp { m: rows, n: cols, k: rows, trans_a: false, trans_b: false, accumulate: false }, poly, cur, nxt)?;
        }
        axpby_buffers(backend, n, s(a), cur, B::Scalar::ONE, nxt)?;
        core::mem::swap(&mut cur, &mut nxt);
    }
    Ok(cur)
}
