//! A registered entry and its state, as its group's method needs it.

use core::fmt;

use heapless::String;

use super::registry::{GroupId, ParamKind, NAME_LEN};
use super::Res;
use crate::adamw::AdamState;
use crate::backend::Backend;
use crate::kfrog::KfrogState;
use crate::method::Method;
use crate::muon::MuonState;
use crate::state::{ParamState, StateError};

/// A parameter's state: FROG's and SGD's momentum state, AdamW's
/// moments, K-FROG's or Muon's state, as its group's method needs.
pub(crate) enum SlotState<B: Backend> {
    Momentum(ParamState<B>),
    Adam(AdamState<B>),
    Kfrog(KfrogState<B>),
    Muon(MuonState<B>),
    /// Kept by another rank (a sharded optimizer).
    Elsewhere,
}

impl<B: Backend> SlotState<B> {
    /// The state of a plain parameter (or of a layer's weight or bias
    /// outside FROG and K-FROG groups).
    pub(super) fn new(backend: &B, method: &Method, len: usize) -> Result<Self, B::Error> {
        Ok(match method {
            Method::AdamW(c) => Self::Adam(AdamState::new(backend, len, c.amsgrad)?),
            m => Self::Momentum(ParamState::new(backend, len, m.momentum() > 0.0)?),
        })
    }

    pub(crate) fn export_len(&self) -> usize {
        match self {
            Self::Momentum(s) => s.export_len(),
            Self::Adam(s) => s.export_len(),
            Self::Kfrog(s) => s.export_len(),
            Self::Muon(s) => s.export_len(),
            Self::Elsewhere => 0,
        }
    }

    pub(crate) fn export(&self, backend: &B, out: &mut [u8]) -> Res<usize, B> {
        match self {
            Self::Momentum(s) => s.export(backend, out),
            Self::Adam(s) => s.export(backend, out),
            Self::Kfrog(s) => s.export(backend, out),
            Self::Muon(s) => s.export(backend, out),
            Self::Elsewhere => Ok(0),
        }
    }

    pub(crate) fn check_bytes(&self, bytes: &[u8]) -> Result<u64, crate::state::StateError> {
        match self {
            Self::Momentum(s) => s.check_bytes(bytes),
            Self::Adam(s) => s.check_bytes(bytes),
            Self::Kfrog(s) => s.check_bytes(bytes),
            Self::Muon(s) => s.check_bytes(bytes),
            Self::Elsewhere => Err(StateError::Sharded),
        }
    }

    pub(crate) fn apply_bytes(&mut self, backend: &B, bytes: &[u8], steps: u64) -> Result<(), B::Error> {
        match self {
            Self::Momentum(s) => s.apply_bytes(backend, bytes, steps),
            Self::Adam(s) => s.apply_bytes(backend, bytes, steps),
            Self::Kfrog(s) => s.apply_bytes(backend, bytes, steps),
            Self::Muon(s) => s.apply_bytes(backend, bytes, steps),
            Self::Elsewhere => Ok(()),
        }
    }

    pub(super) fn len(&self) -> usize {
        match self {
            Self::Momentum(s) => s.len(),
            Self::Adam(s) => s.len(),
            Self::Kfrog(s) => s.weight.len(),
            Self::Muon(s) => s.len(),
            Self::Elsewhere => 0,
        }
    }

    /// Checks that the state can take one more step, before a call that
    /// steps several states writes any of them.
    pub(super) fn check_steps(&self) -> Result<(), StateError> {
        let steps = match self {
            Self::Momentum(s) => s.steps(),
            Self::Adam(s) => s.steps(),
            Self::Kfrog(s) => s.steps(),
            Self::Muon(s) => s.steps(),
            Self::Elsewhere => 0,
        };
        steps.checked_add(1).map(drop).ok_or(StateError::StepsExhausted)
    }
}

impl<B: Backend> fmt::Debug for SlotState<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Momentum(s) => s.fmt(f),
            Self::Adam(s) => s.fmt(f),
            Self::Kfrog(s) => s.fmt(f),
            Self::Muon(s) => s.fmt(f),
            Self::Elsewhere => f.write_str("Elsewhere"),
        }
    }
}

/// One registered entry.
pub(crate) struct Slot<B: Backend> {
    pub(crate) name: String<NAME_LEN>,
    pub(crate) group: GroupId,
    pub(crate) kind: ParamKind,
    /// A FROG layer's joint `R x D'` state; otherwise the weight's (or the
    /// plain parameter's).
    pub(crate) state: SlotState<B>,
    /// A layer's bias state outside FROG groups.
    pub(crate) bias: Option<SlotState<B>>,
    /// The rank that steps it and keeps its state (0 in one process).
    pub(crate) owner: usize,
    /// A sharded FROG or K-FROG layer's gathered input and output-gradient
    /// rows, on its owner (`None` elsewhere, and in one process).
    pub(crate) gathered: Option<(B::Buffer, B::Buffer)>,
}

impl<B: Backend> Slot<B> {
    /// Refuses a single-process use of an entry whose state another rank
    /// keeps (`index` is its registry position).
    pub(crate) fn here(&self, index: u32) -> Result<(), super::RegistryError> {
        match self.state {
            SlotState::Elsewhere => Err(super::RegistryError::Elsewhere { index, owner: self.owner }),
            _ => Ok(()),
        }
    }
}

impl<B: Backend> fmt::Debug for Slot<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &mut f.debug_struct("Param");
        s.field("name", &self.name.as_str()).field("group", &self.group).field("kind", &self.kind).field("state", &self.state).field("bias", &self.bias).finish()
    }
}
