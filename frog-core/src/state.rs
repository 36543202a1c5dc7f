//! Per-parameter optimizer state (momentum buffer, step count) and its
//! versioned byte form for checkpoints.

use core::fmt;

use crate::backend::Backend;
use crate::config::Config;
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

/// A state buffer that cannot be restored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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
    /// The buffer has a momentum buffer and this state none, or the reverse.
    Momentum,
}

impl fmt::Display for StateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Truncated { needed, actual } => write!(f, "state buffer truncated: {actual} bytes, {needed} needed"),
            Self::BadMagic => write!(f, "not a FROG state buffer (bad magic)"),
            Self::Version(v) => write!(f, "unknown state version {v} (this build reads {STATE_VERSION})"),
            Self::ScalarSize(b) => write!(f, "state written with {b}-byte scalars"),
            Self::Length { expected, actual } => write!(f, "state for {actual} entries, this parameter has {expected}"),
            Self::Momentum => write!(f, "momentum buffer present in only one of the state and the buffer"),
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
}

impl<B: Backend> ParamState<B> {
    /// State for a parameter of `len` entries under `cfg`.
    pub fn new(backend: &B, len: usize, momentum: bool) -> Result<Self, B::Error> {
        let momentum = if momentum { Some(backend.zeros(len)?) } else { None };
        Ok(Self { momentum, len, steps: 0 })
    }

    /// State for a preconditioned layer (`R x D'` momentum).
    pub fn for_layer(backend: &B, layer: &Layer, cfg: &Config) -> Result<Self, B::Error> {
        Self::new(backend, layer.rows() * layer.cols(), cfg.momentum > 0.0)
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

    pub(crate) fn check_len(&self, expected: usize) -> Result<(), ShapeError> {
        if self.len == expected {
            Ok(())
        } else {
            Err(ShapeError::StateMismatch { expected, actual: self.len })
        }
    }

    /// Bytes [`ParamState::export`] writes.
    pub fn export_len(&self) -> usize {
        HEADER + self.momentum.as_ref().map_or(0, |_| self.len * B::Scalar::BYTES)
    }

    /// Writes the state to `out` (at least [`ParamState::export_len`] bytes)
    /// and returns the bytes written.
    pub fn export(&self, backend: &B, out: &mut [u8]) -> Result<usize, Error<B::Error>> {
        let needed = self.export_len();
        if out.len() < needed {
            return Err(ShapeError::BufferLength { what: "state bytes", expected: needed, actual: out.len() }.into());
        }
        out[..4].copy_from_slice(&MAGIC);
        out[4..6].copy_from_slice(&STATE_VERSION.to_le_bytes());
        out[6] = B::Scalar::BYTES as u8;
        out[7] = u8::from(self.momentum.is_some());
        out[8..16].copy_from_slice(&(self.len as u64).to_le_bytes());
        out[16..24].copy_from_slice(&self.steps.to_le_bytes());
        if let Some(buf) = &self.momentum {
            let mut chunk = [B::Scalar::ZERO; CHUNK];
            let mut pos = HEADER;
            for start in (0..self.len).step_by(CHUNK) {
                let n = CHUNK.min(self.len - start);
                backend.read(buf, start, &mut chunk[..n]).map_err(Error::Backend)?;
                for v in &chunk[..n] {
                    v.write_le(&mut out[pos..]);
                    pos += B::Scalar::BYTES;
                }
            }
        }
        Ok(needed)
    }

    /// Restores the state from bytes written by [`ParamState::export`] for
    /// a parameter of the same size, scalar type and momentum setting.
    pub fn restore(&mut self, backend: &B, bytes: &[u8]) -> Result<(), Error<B::Error>> {
        if bytes.len() < HEADER {
            return Err(StateError::Truncated { needed: HEADER, actual: bytes.len() }.into());
        }
        if bytes[..4] != MAGIC {
            return Err(StateError::BadMagic.into());
        }
        let version = u16::from_le_bytes([bytes[4], bytes[5]]);
        if version != STATE_VERSION {
            return Err(StateError::Version(version).into());
        }
        if usize::from(bytes[6]) != B::Scalar::BYTES {
            return Err(StateError::ScalarSize(bytes[6]).into());
        }
        let has_momentum = match bytes[7] {
            0 => false,
            1 => true,
            _ => return Err(StateError::BadMagic.into()),
        };
        let mut word = [0u8; 8];
        word.copy_from_slice(&bytes[8..16]);
        let len = u64::from_le_bytes(word);
        word.copy_from_slice(&bytes[16..24]);
        let steps = u64::from_le_bytes(word);
        if len != self.len as u64 {
            return Err(StateError::Length { expected: self.len as u64, actual: len }.into());
        }
        if has_momentum != self.momentum.is_some() {
            return Err(StateError::Momentum.into());
        }
        let needed = self.export_len();
        if bytes.len() < needed {
            return Err(StateError::Truncated { needed, actual: bytes.len() }.into());
        }
        if let Some(buf) = &mut self.momentum {
            let mut chunk = [B::Scalar::ZERO; CHUNK];
            let mut pos = HEADER;
            for start in (0..self.len).step_by(CHUNK) {
                let n = CHUNK.min(self.len - start);
                for v in &mut chunk[..n] {
                    *v = B::Scalar::read_le(&bytes[pos..]);
                    pos += B::Scalar::BYTES;
                }
                backend.write(&chunk[..n], buf, start).map_err(Error::Backend)?;
            }
        }
        self.steps = steps;
        Ok(())
    }
}
