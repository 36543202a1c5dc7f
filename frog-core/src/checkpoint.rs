//! The whole optimizer object to and from one versioned byte buffer.
//!
//! Layout (little-endian): magic `FROGCKPT`, version `u16`, scalar bytes
//! `u8`, a reserved zero byte, the group count `u32`, the parameter count
//! `u32`, the sampler's state (4 `u64`), per group its method (`u8`: 0
//! FROG, 1 SGD, 2 AdamW, 3 K-FROG, 4 Muon) and its learning rate (`f64`,
//! the one setting a schedule changes), then per parameter: its kind
//! (`u8`: 0 plain, 1 layer), its group (`u8`), its name (`u8` length,
//! bytes), and its states, each as a `u64` length and the bytes of
//! [`crate::ParamState::export`] (FROG, SGD), [`crate::AdamState::export`]
//! (AdamW), [`crate::KfrogState::export`] (K-FROG) or
//! [`crate::MuonState::export`] (Muon); a layer in an SGD or AdamW group
//! has a second state for its bias. Muon's shared scratch holds no state
//! (every step overwrites it), so no checkpoint holds it. A new method's
//! tag changes no layout (a checkpoint without it reads as before), so it
//! keeps the version. The registrations themselves (names, kinds, groups,
//! sizes, methods) are the program's: a checkpoint restores into an
//! optimizer built the same way, and says so when it does not.

use crate::backend::Backend;
use crate::error::{Error, ShapeError};
use crate::method::Method;
use crate::optimizer::{Optimizer, ParamKind, Slot, SlotState};
use crate::sampler::Sampler;
use crate::scalar::Scalar;
use crate::state::StateError;

const MAGIC: [u8; 8] = *b"FROGCKPT";
/// Version of the layout [`Optimizer::checkpoint`] writes.
pub const CHECKPOINT_VERSION: u16 = 2;
const HEADER: usize = 8 + 2 + 1 + 1 + 4 + 4 + 32;

/// A cursor over checkpoint bytes that reports truncation as an error.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], StateError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.bytes.len());
        let end = end.ok_or(StateError::Truncated { needed: self.pos.saturating_add(n), actual: self.bytes.len() })?;
        let out = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    fn u64(&mut self) -> Result<u64, StateError> {
        let mut w = [0; 8];
        w.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(w))
    }

    fn u32(&mut self) -> Result<u32, StateError> {
        let mut w = [0; 4];
        w.copy_from_slice(self.take(4)?);
        Ok(u32::from_le_bytes(w))
    }

    fn u8(&mut self) -> Result<u8, StateError> {
        Ok(self.take(1)?[0])
    }

    /// A length-prefixed state's bytes.
    fn state(&mut self) -> Result<&'a [u8], StateError> {
        let len = self.u64()?;
        self.take(usize::try_from(len).unwrap_or(usize::MAX))
    }
}

/// A cursor writing into a buffer already checked to be long enough.
struct Writer<'a> {
    out: &'a mut [u8],
    pos: usize,
}

impl Writer<'_> {
    fn put(&mut self, bytes: &[u8]) {
        self.out[self.pos..self.pos + bytes.len()].copy_from_slice(bytes);
        self.pos += bytes.len();
    }
}

fn kind_tag(kind: &ParamKind) -> u8 {
    match kind {
        ParamKind::Plain { .. } => 0,
        ParamKind::Layer(_) => 1,
    }
}

fn method_tag(method: &Method) -> u8 {
    match method {
        Method::Frog(_) => 0,
        Method::Sgd(_) => 1,
        Method::AdamW(_) => 2,
        Method::Kfrog(_) => 3,
        Method::Muon(_) => 4,
    }
}

/// Bytes of a group's entry: its method tag and learning rate.
const GROUP: usize = 1 + 8;
/// Bytes of a parameter's entry before its name: kind, group, name length.
const PARAM: usize = 3;

fn states<B: Backend>(slot: &Slot<B>) -> impl Iterator<Item = &SlotState<B>> {
    core::iter::once(&slot.state).chain(slot.bias.as_ref())
}

impl<B: Backend, const N: usize> Optimizer<B, N> {
    /// Bytes [`Optimizer::checkpoint`] writes.
    pub fn checkpoint_len(&self) -> usize {
        self.checkpoint_len_with(|i| self.state_at(i).map_or(0, SlotState::export_len))
    }

    /// The checkpoint's bytes when the `i`-th state (in registration
    /// order, a layer's bias state after its weight's) exports `lens(i)`.
    pub(crate) fn checkpoint_len_with(&self, lens: impl Fn(usize) -> usize) -> usize {
        let mut i = 0;
        let slots = self.slots.iter().map(|s| {
            PARAM + s.name.len() + states(s).map(|_| {
                i += 1;
                8 + lens(i - 1)
            }).sum::<usize>()
        });
        HEADER + GROUP * self.groups.len() + slots.sum::<usize>()
    }

    /// The `i`-th state in registration order.
    pub(crate) fn state_at(&self, i: usize) -> Option<&SlotState<B>> {
        self.slots.iter().flat_map(states).nth(i)
    }

    /// The registry position of the `i`-th state, and whether it is a
    /// layer's bias state.
    pub(crate) fn locate_state(&self, i: usize) -> (usize, bool) {
        let mut at = 0;
        for (k, s) in self.slots.iter().enumerate() {
            let n = states(s).count();
            if i < at + n {
                return (k, i > at);
            }
            at += n;
        }
        (self.slots.len(), false)
    }

    /// Writes every state, step count, group learning rate and the
    /// sampler's position to `out` (at least [`Optimizer::checkpoint_len`]
    /// bytes) and returns the bytes written. Restored into an optimizer
    /// registered the same way, the next steps are bit-identical to an
    /// uninterrupted run. A sharded optimizer's states are on several
    /// ranks: its checkpoint is [`crate::Distributed::checkpoint`].
    pub fn checkpoint(&self, backend: &B, out: &mut [u8]) -> Result<usize, Error<B::Error>> {
        if self.dist.is_some() {
            return Err(StateError::Sharded.into());
        }
        self.write_checkpoint(out, |i| self.state_at(i).map_or(0, SlotState::export_len), |i, bytes| match self.state_at(i) {
            Some(st) => st.export(backend, bytes).map(drop),
            None => Ok(()),
        })
    }

    /// Writes the checkpoint's layout to `out`, the `i`-th state's
    /// `lens(i)` bytes by `state(i, bytes)`.
    pub(crate) fn write_checkpoint(&self, out: &mut [u8], lens: impl Fn(usize) -> usize, mut state: impl FnMut(usize, &mut [u8]) -> Result<(), Error<B::Error>>) -> Result<usize, Error<B::Error>> {
        let needed = self.checkpoint_len_with(&lens);
        if out.len() < needed {
            return Err(ShapeError::BufferLength { what: "checkpoint bytes", expected: needed, actual: out.len() }.into());
        }
        let mut w = Writer { out, pos: 0 };
        w.put(&MAGIC);
        w.put(&CHECKPOINT_VERSION.to_le_bytes());
        w.put(&[B::Scalar::BYTES as u8, 0]);
        w.put(&(self.groups.len() as u32).to_le_bytes());
        w.put(&(self.slots.len() as u32).to_le_bytes());
        for s in self.sampler.state() {
            w.put(&s.to_le_bytes());
        }
        for g in &self.groups {
            w.put(&[method_tag(g)]);
            w.put(&g.lr().to_le_bytes());
        }
        let mut i = 0;
        for slot in &self.slots {
            w.put(&[kind_tag(&slot.kind), slot.group.0, slot.name.len() as u8]);
            w.put(slot.name.as_bytes());
            for _ in states(slot) {
                let len = lens(i);
                w.put(&(len as u64).to_le_bytes());
                let at = w.pos;
                state(i, &mut w.out[at..at + len])?;
                w.pos += len;
                i += 1;
            }
        }
        Ok(w.pos)
    }

    /// Restores what [`Optimizer::checkpoint`] wrote. Every byte is
    /// checked first (the layout, that the registrations match this
    /// optimizer's, each state as its own `restore` checks it, and
    /// each learning rate against its group's settings), so a rejected
    /// checkpoint changes nothing; a backend error while the states are
    /// written leaves them partly restored (restore again, or rebuild).
    pub fn restore(&mut self, backend: &B, bytes: &[u8]) -> Result<(), Error<B::Error>> {
        if self.dist.is_some() {
            return Err(StateError::Sharded.into());
        }
        let mut r = Reader { bytes, pos: 0 };
        if r.take(8)? != MAGIC {
            return Err(StateError::BadMagic.into());
        }
        let version = u16::from_le_bytes([r.u8()?, r.u8()?]);
        if version != CHECKPOINT_VERSION {
            return Err(StateError::Version(version).into());
        }
        let scalar = r.u8()?;
        if usize::from(scalar) != B::Scalar::BYTES {
            return Err(StateError::ScalarSize(scalar).into());
        }
        match r.u8()? {
            0 => {}
            b => return Err(StateError::Reserved(b).into()),
        }
        let mismatch = |what, index| StateError::Registrations { what, index };
        if r.u32()? as usize != self.groups.len() {
            return Err(mismatch("the number of groups", self.groups.len()).into());
        }
        if r.u32()? as usize != self.slots.len() {
            return Err(mismatch("the number of parameters", self.slots.len()).into());
        }
        let sampler = Sampler::from_state([r.u64()?, r.u64()?, r.u64()?, r.u64()?])?;
        for (i, g) in self.groups.iter().enumerate() {
            if r.u8()? != method_tag(g) {
                return Err(mismatch("a group's method", i).into());
            }
            g.with_lr(f64::from_bits(r.u64()?)).validate_for::<B::Scalar>()?;
        }
        for (i, slot) in self.slots.iter().enumerate() {
            if r.u8()? != kind_tag(&slot.kind) {
                return Err(mismatch("a parameter's kind", i).into());
            }
            if r.u8()? != slot.group.0 {
                return Err(mismatch("a parameter's group", i).into());
            }
            let len = usize::from(r.u8()?);
            if r.take(len)? != slot.name.as_bytes() {
                return Err(mismatch("a parameter's name", i).into());
            }
            for st in states(slot) {
                st.check_bytes(r.state()?)?;
            }
        }
        // Everything checked: apply, reading the same bytes again.
        let mut r = Reader { bytes, pos: HEADER };
        for g in self.groups.iter_mut() {
            r.u8()?;
            *g = g.with_lr(f64::from_bits(r.u64()?));
        }
        for slot in self.slots.iter_mut() {
            let len = usize::from(r.take(PARAM)?[PARAM - 1]);
            r.take(len)?;
            for st in core::iter::once(&mut slot.state).chain(slot.bias.as_mut()) {
                let bytes = r.state()?;
                let steps = st.check_bytes(bytes)?;
                st.apply_bytes(backend, bytes, steps).map_err(Error::Backend)?;
            }
        }
        self.sampler = sampler;
        Ok(())
    }
}
