//! Per-parameter optimizer state (momentum buffer, step count) and its
//! versioned byte form for checkpoints.

use core::fmt;

use crate::backend::Backend;
use crate::config::Config;
use crate::guard::{Diagnostics, DIAG_PARTS};
use crate::error::{Error, ShapeError};
use crate::layer::Layer;
use crate::scalar::Scalar;

/// Version of the byte form written by [`ParamState::export`].
pub const STATE_VERSION: u16 = 1;
const MAGIC: [u8; 4] = *b"FROG";
/// magic, version u16, scalar bytes u8, has-momentum u8, len u64, steps u64.
const HEADER: usize = 4 + 2 + 1 + 1 + 8 + 8;
/// Scalars moved per host round trip while exporting or restoring.
const CHUNK: usize = 64;

/// A state that cannot be restored or stepped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum StateError {
    /// The buffer is shorter than its header says.
    Truncated {
        /// Bytes needed.
        needed: usize,
        /// Bytes given.
        actual: usize,
    },
    /// Not a FROG state buffer.
    BadMagic,
    /// Written by an unknown format version.
    Version(u16),
    /// Written with another scalar type (bytes per scalar).
    ScalarSize(u8),
    /// Written for a parameter of another size.
    Length {
        /// Entries of this parameter's state.
        expected: u64,
        /// Entries in the buffer.
        actual: u64,
    },
    /// The bytes hold an optional buffer (the momentum buffer, AdamW's
    /// amsgrad maximum, K-FROG's running y average) that this state does
    /// not keep, or the reverse: they were written under another setting.
    OptionalBuffer {
        /// The setting that asks for the buffer.
        setting: &'static str,
        /// Whether this state keeps the buffer.
        state_has_buffer: bool,
    },
    /// The has-momentum flag byte is neither 0 nor 1.
    MomentumFlag(u8),
    /// The buffer holds a NaN or infinite momentum entry (it would poison
    /// every later step).
    NonFinite {
        /// The entry.
        index: u64,
    },
    /// The step count cannot grow (`u64::MAX` steps taken).
    StepsExhausted,
    /// A single process's checkpoint of (or restore into) a sharded
    /// optimizer, whose states are spread over the ranks: its checkpoint
    /// is [`crate::Distributed::checkpoint`], and a checkpoint restores
    /// into an optimizer before it is sharded.
    Sharded,
    /// The state's momentum buffer (or K-FROG's running y average) does
    /// not match the setting: a setting above 0 needs one and 0 has none.
    MomentumSetting {
        /// The setting: `momentum` or `y_momentum`.
        setting: &'static str,
        /// Whether the state has the buffer.
        state_has_buffer: bool,
    },
    /// A checkpoint's reserved byte (after its scalar size) is not zero.
    Reserved(u8),
    /// A guarded step needs a state made with
    /// [`ParamState::with_diagnostics`].
    NoDiagnostics,
    /// A checkpoint's sampler state is all zeros (no seed gives it).
    SamplerState,
    /// An AdamW state's amsgrad buffer does not match the setting.
    AmsgradSetting {
        /// Whether the state has the buffer.
        state_has_buffer: bool,
    },
    /// A stored running mean of squares (AdamW's second moment, K-FROG's
    /// y average) is negative: no step writes one, and a step on it gives
    /// NaN.
    Negative {
        /// Which running mean.
        what: &'static str,
        /// The entry.
        index: u64,
    },
    /// The two parts of a K-FROG state (weight side and output side) record
    /// different step counts: they are always stepped together.
    StepCounts {
        /// The weight side's count.
        weight: u64,
        /// The output side's count.
        output: u64,
    },
    /// A checkpoint was written for other registrations: another count,
    /// name, kind or size of parameter, or another number of groups.
    Registrations {
        /// The first registration that differs (its index), or the count.
        what: &'static str,
        /// Its index.
        index: usize,
    },
}

impl fmt::Display for StateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Truncated { needed, actual } => write!(f, "state buffer truncated: {actual} bytes, {needed} needed"),
            Self::Sharded => write!(f, "the optimizer is sharded over ranks: take its checkpoint with Distributed::checkpoint, and restore before sharding"),
            Self::BadMagic => write!(f, "not a FROG state buffer (bad magic)"),
            Self::Version(v) => write!(f, "unknown state version {v} (this build reads {STATE_VERSION})"),
            Self::ScalarSize(b) => write!(f, "state written with {b}-byte scalars"),
            Self::Length { expected, actual } => write!(f, "state for {actual} entries, this parameter has {expected}"),
            Self::OptionalBuffer { setting, state_has_buffer: true } => {
                write!(f, "the state keeps the {setting} buffer but the bytes have none (written under another {setting} setting)")
            }
            Self::OptionalBuffer { setting, state_has_buffer: false } => {
                write!(f, "the bytes hold the {setting} buffer, which the state does not keep (written under another {setting} setting)")
            }
            Self::MomentumFlag(b) => write!(f, "has-momentum flag byte is {b}, expected 0 or 1"),
            Self::NonFinite { index } => write!(f, "momentum entry {index} is not finite"),
            Self::StepsExhausted => write!(f, "the step count is exhausted ({} steps taken)", u64::MAX),
            Self::MomentumSetting { setting, state_has_buffer: true } => write!(f, "the state has a {setting} buffer but {setting} = 0"),
            Self::MomentumSetting { setting, state_has_buffer: false } => write!(f, "the state has no {setting} buffer but {setting} > 0"),
            Self::Reserved(b) => write!(f, "the checkpoint's reserved byte is {b}, expected 0"),
            Self::NoDiagnostics => write!(f, "a guarded step needs a state with diagnostics (ParamState::with_diagnostics)"),
            Self::SamplerState => write!(f, "the checkpoint's sampler state is all zeros"),
            Self::AmsgradSetting { state_has_buffer: true } => write!(f, "the AdamW state has an amsgrad buffer but amsgrad is off"),
            Self::AmsgradSetting { state_has_buffer: false } => write!(f, "the AdamW state has no amsgrad buffer but amsgrad is on"),
            Self::Negative { what, index } => write!(f, "{what} entry {index} is negative (a running mean of squares)"),
            Self::StepCounts { weight, output } => {
                write!(f, "the K-FROG state's weight side records {weight} steps and its output side {output}")
            }
            Self::Registrations { what, index } => {
                write!(f, "the checkpoint was written for other registrations: {what} differs at {index}")
            }
        }
    }
}

impl core::error::Error for StateError {}

/// The state of one parameter: its momentum buffer (when momentum > 0) and
/// its step count. For a preconditioned layer the buffer is the joint
/// `R x D'` matrix, bias entry last in each row.
pub struct ParamState<B: Backend> {
    pub(crate) momentum: Option<B::Buffer>,
    pub(crate) len: usize,
    pub(crate) steps: u64,
    /// The last guarded step's per-row diagnostics (see [`crate::guard`]).
    pub(crate) diag: Option<B::Buffer>,
    /// Whether a guarded step has filled `diag`.
    pub(crate) diag_written: bool,
}

/// Sizes and counts, not the buffers (they need not be `Debug`).
impl<B: Backend> fmt::Debug for ParamState<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &mut f.debug_struct("ParamState");
        s.field("len", &self.len).field("steps", &self.steps).field("momentum", &self.momentum.is_some()).field("diagnostics", &self.diag.is_some()).finish()
    }
}

impl<B: Backend> ParamState<B> {
    /// State for a parameter of `len` entries under `cfg`.
    pub fn new(backend: &B, len: usize, momentum: bool) -> Result<Self, B::Error> {
        let momentum = if momentum { Some(backend.zeros(len)?) } else { None };
        Ok(Self { momentum, len, steps: 0, diag: None, diag_written: false })
    }

    /// State for a preconditioned layer (`R x D'` momentum).
    pub fn for_layer(backend: &B, layer: &Layer, cfg: &Config) -> Result<Self, B::Error> {
        Self::new(backend, layer.rows() * layer.cols(), cfg.momentum > 0.0)
    }

    /// State for a preconditioned layer that also keeps the per-row
    /// diagnostics of its last guarded step ([`crate::frog_step`] with a [`crate::Guard`]), read
    /// on request with [`ParamState::diagnostics`].
    pub fn with_diagnostics(backend: &B, layer: &Layer, cfg: &Config) -> Result<Self, Error<B::Error>> {
        let mut state = Self::for_layer(backend, layer, cfg).map_err(Error::Backend)?;
        state.enable_diagnostics(backend, layer)?;
        Ok(state)
    }

    /// Gives this layer state the diagnostics buffers of
    /// [`ParamState::with_diagnostics`], keeping its momentum and step
    /// count; nothing happens if it has them.
    pub fn enable_diagnostics(&mut self, backend: &B, layer: &Layer) -> Result<(), Error<B::Error>> {
        self.check_len(layer.rows().saturating_mul(layer.cols()))?;
        if self.diag.is_none() {
            let len = layer.rows().checked_mul(DIAG_PARTS).ok_or(ShapeError::TooLarge { what: "diagnostics (rows)" })?;
            self.diag = Some(backend.zeros(len).map_err(Error::Backend)?);
        }
        Ok(())
    }

    /// The last guarded step's diagnostics, read from the backend; `None`
    /// for a state without diagnostics or before its first guarded step
    /// (or after an unguarded one).
    pub fn diagnostics(&self, backend: &B) -> Result<Option<Diagnostics>, Error<B::Error>> {
        match &self.diag {
            Some(buf) if self.diag_written => Diagnostics::read(backend, buf).map(Some),
            _ => Ok(None),
        }
    }

    /// Steps taken.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// Entries of the parameter (`R*D'` for a layer).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the parameter has no entries.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The momentum buffer, if any.
    pub fn momentum(&self) -> Option<&B::Buffer> {
        self.momentum.as_ref()
    }

    /// The count after one more step, or an error when it cannot grow.
    pub(crate) fn next_step(&self) -> Result<u64, StateError> {
        self.steps.checked_add(1).ok_or(StateError::StepsExhausted)
    }

    /// Checks that the momentum buffer matches `setting` (named in the
    /// error), whose value is `momentum`.
    pub(crate) fn check_momentum(&self, setting: &'static str, momentum: f64) -> Result<(), StateError> {
        let state_has_buffer = self.momentum.is_some();
        if state_has_buffer == (momentum > 0.0) {
            Ok(())
        } else {
            Err(StateError::MomentumSetting { setting, state_has_buffer })
        }
    }

    pub(crate) fn check_len(&self, expected: usize) -> Result<(), ShapeError> {
        if self.len == expected {
            Ok(())
        } else {
            Err(ShapeError::StateMismatch { expected, actual: self.len })
        }
    }

    /// Bytes [`ParamState::export`] writes.
    pub fn export_len(&self) -> usize {
        stored_len::<B::Scalar>(self.len, self.momentum.iter().len())
    }

    /// Writes the state to `out` (at least [`ParamState::export_len`] bytes)
    /// and returns the bytes written.
    pub fn export(&self, backend: &B, out: &mut [u8]) -> Result<usize, Error<B::Error>> {
        let header = Header { magic: MAGIC, flag: self.momentum.is_some(), len: self.len, steps: self.steps };
        export_stored(backend, &header, self.momentum.as_ref().as_slice(), out)
    }

    /// Restores the state from bytes written by [`ParamState::export`] for
    /// a parameter of the same size, scalar type and momentum setting.
    ///
    /// Every byte is checked before anything changes: a truncated buffer,
    /// a bad magic, version, scalar size, length or flag byte, and any NaN
    /// or infinite momentum entry are errors that leave the state as it was.
    pub fn restore(&mut self, backend: &B, bytes: &[u8]) -> Result<(), Error<B::Error>> {
        let steps = self.check_bytes(bytes)?;
        self.apply_bytes(backend, bytes, steps).map_err(Error::Backend)
    }

    /// Checks bytes [`ParamState::restore`] would take, changing nothing,
    /// and returns their step count.
    pub(crate) fn check_bytes(&self, bytes: &[u8]) -> Result<u64, StateError> {
        self.check_bytes_as(bytes, "momentum")
    }

    /// [`ParamState::check_bytes`] of a state whose buffer `setting` asks
    /// for (K-FROG keeps its running y average in one).
    pub(crate) fn check_bytes_as(&self, bytes: &[u8], setting: &'static str) -> Result<u64, StateError> {
        check_stored::<B::Scalar>(bytes, MAGIC, self.len, (self.momentum.is_some(), setting), self.momentum.iter().len())
    }

    /// Writes checked bytes into the state.
    pub(crate) fn apply_bytes(&mut self, backend: &B, bytes: &[u8], steps: u64) -> Result<(), B::Error> {
        import_stored(backend, bytes, self.len, self.momentum.iter_mut())?;
        self.steps = steps;
        Ok(())
    }
}

/// Bytes of a state's byte form: the header, then `buffers` whole buffers
/// of `len` scalars (the layout every per-parameter state shares).
pub(crate) fn stored_len<S: Scalar>(len: usize, buffers: usize) -> usize {
    HEADER + buffers * len * S::BYTES
}

/// Writes `header`, then `header.len` entries of each of `buffers`, to
/// `out` (checked to hold them); returns the bytes written.
pub(crate) fn export_stored<B: Backend>(backend: &B, header: &Header, buffers: &[&B::Buffer], out: &mut [u8]) -> Result<usize, Error<B::Error>> {
    let needed = stored_len::<B::Scalar>(header.len, buffers.len());
    if out.len() < needed {
        return Err(ShapeError::BufferLength { what: "state bytes", expected: needed, actual: out.len() }.into());
    }
    header.write::<B::Scalar>(out);
    let part = header.len * B::Scalar::BYTES;
    for (k, buf) in buffers.iter().enumerate() {
        export_scalars(backend, buf, header.len, &mut out[HEADER + k * part..]).map_err(Error::Backend)?;
    }
    Ok(needed)
}

/// Checks a byte form [`export_stored`] wrote for a state of `len` entries
/// with `buffers` buffers (its flag `flag`): the header, the length, and
/// that every stored scalar is finite. Returns the step count.
pub(crate) fn check_stored<S: Scalar>(bytes: &[u8], magic: [u8; 4], len: usize, flag: Flag, buffers: usize) -> Result<u64, StateError> {
    let steps = Header::check::<S>(bytes, magic, len, flag)?;
    let needed = stored_len::<S>(len, buffers);
    if bytes.len() < needed {
        return Err(StateError::Truncated { needed, actual: bytes.len() });
    }
    check_finite::<S>(&bytes[HEADER..needed])?;
    Ok(steps)
}

/// Refuses a negative entry among the scalars of `bytes` (a running mean
/// of squares, named `what`); `first` is the index of the first of them
/// in the state.
pub(crate) fn check_non_negative<S: Scalar>(bytes: &[u8], what: &'static str, first: usize) -> Result<(), StateError> {
    match bytes.chunks_exact(S::BYTES).map(S::read_le).position(|v| v < S::ZERO) {
        Some(index) => Err(StateError::Negative { what, index: (first + index) as u64 }),
        None => Ok(()),
    }
}

/// Writes checked bytes of [`export_stored`]'s form into `buffers`.
pub(crate) fn import_stored<'a, B: Backend>(backend: &B, bytes: &[u8], len: usize, buffers: impl Iterator<Item = &'a mut B::Buffer>) -> Result<(), B::Error>
where
    B::Buffer: 'a,
{
    let part = len * B::Scalar::BYTES;
    for (k, buf) in buffers.enumerate() {
        import_scalars(backend, &bytes[HEADER + k * part..], buf, len)?;
    }
    Ok(())
}

/// Writes the first `len` entries of `buf` to `out` as little-endian bytes
/// (`out` holds at least `len` scalars), a chunk per host round trip.
fn export_scalars<B: Backend>(backend: &B, buf: &B::Buffer, len: usize, out: &mut [u8]) -> Result<(), B::Error> {
    let mut chunk = [B::Scalar::ZERO; CHUNK];
    let mut pos = 0;
    for start in (0..len).step_by(CHUNK) {
        let n = CHUNK.min(len - start);
        backend.read(buf, start, &mut chunk[..n])?;
        for v in &chunk[..n] {
            v.write_le(&mut out[pos..]);
            pos += B::Scalar::BYTES;
        }
    }
    Ok(())
}

/// Writes `len` little-endian scalars from the front of `bytes` (checked
/// to hold them) into `buf`.
fn import_scalars<B: Backend>(backend: &B, bytes: &[u8], buf: &mut B::Buffer, len: usize) -> Result<(), B::Error> {
    let mut chunk = [B::Scalar::ZERO; CHUNK];
    let mut pos = 0;
    for start in (0..len).step_by(CHUNK) {
        let n = CHUNK.min(len - start);
        for v in &mut chunk[..n] {
            *v = B::Scalar::read_le(&bytes[pos..]);
            pos += B::Scalar::BYTES;
        }
        backend.write(&chunk[..n], buf, start)?;
    }
    Ok(())
}

/// Rejects a NaN or infinite scalar among little-endian `bytes`.
fn check_finite<S: Scalar>(bytes: &[u8]) -> Result<(), StateError> {
    match bytes.chunks_exact(S::BYTES).map(S::read_le).position(|v| !v.as_f64().is_finite()) {
        Some(index) => Err(StateError::NonFinite { index: index as u64 }),
        None => Ok(()),
    }
}

/// Whether a state keeps its optional buffer, and the setting that asks
/// for it (named when the bytes disagree).
pub(crate) type Flag = (bool, &'static str);

/// The header every per-parameter state's byte form starts with: magic,
/// version `u16`, scalar bytes `u8`, a flag byte (whether the optional
/// buffer is there), entries `u64`, steps `u64`.
pub(crate) struct Header {
    pub(crate) magic: [u8; 4],
    pub(crate) flag: bool,
    pub(crate) len: usize,
    pub(crate) steps: u64,
}

impl Header {
    /// Bytes of the header.
    pub(crate) const BYTES: usize = HEADER;

    /// Writes the header to the front of `out` (checked to hold it).
    pub(crate) fn write<S: Scalar>(&self, out: &mut [u8]) {
        out[..4].copy_from_slice(&self.magic);
        out[4..6].copy_from_slice(&STATE_VERSION.to_le_bytes());
        out[6] = S::BYTES as u8;
        out[7] = u8::from(self.flag);
        out[8..16].copy_from_slice(&(self.len as u64).to_le_bytes());
        out[16..24].copy_from_slice(&self.steps.to_le_bytes());
    }

    /// Checks a header against a state of `len` entries whose optional
    /// buffer is there as `flag` says, and returns its step count.
    pub(crate) fn check<S: Scalar>(bytes: &[u8], magic: [u8; 4], len: usize, (flag, setting): Flag) -> Result<u64, StateError> {
        if bytes.len() < HEADER {
            return Err(StateError::Truncated { needed: HEADER, actual: bytes.len() });
        }
        if bytes[..4] != magic {
            return Err(StateError::BadMagic);
        }
        let version = u16::from_le_bytes([bytes[4], bytes[5]]);
        if version != STATE_VERSION {
            return Err(StateError::Version(version));
        }
        if usize::from(bytes[6]) != S::BYTES {
            return Err(StateError::ScalarSize(bytes[6]));
        }
        let has = match bytes[7] {
            0 => false,
            1 => true,
            b => return Err(StateError::MomentumFlag(b)),
        };
        let word = |at: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&bytes[at..at + 8]);
            u64::from_le_bytes(w)
        };
        if word(8) != len as u64 {
            return Err(StateError::Length { expected: len as u64, actual: word(8) });
        }
        if has != flag {
            return Err(StateError::OptionalBuffer { setting, state_has_buffer: flag });
        }
        Ok(word(16))
    }
}
