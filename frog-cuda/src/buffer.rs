//! [`Buffer`], the guard that keeps its context alive ([`Owner`]), and the
//! check every buffer, 16-bit buffer and view passes before a launch.

use std::ptr;
use std::sync::Arc;

use cust::context::Context;
use cust::memory::DeviceBuffer;

use crate::device::Cuda;
use crate::error::Error;
use crate::launch::Arg;

/// Keeps the context alive while any buffer of it lives, and identifies it.
pub(crate) struct Owner {
    pub(crate) _ctx: Context,
}

/// A device buffer of `f32` owned by one [`Cuda`] backend.
pub struct Buffer {
    pub(crate) mem: DeviceBuffer<f32>,
    pub(crate) owner: Arc<Owner>,
}

impl Buffer {
    /// Entries.
    pub fn len(&self) -> usize {
        self.mem.len()
    }

    /// Whether the buffer has no entries.
    pub fn is_empty(&self) -> bool {
        self.mem.len() == 0
    }

    /// The raw device address (for kernels of other crates on the same stream).
    pub fn device_ptr(&self) -> u64 {
        self.mem.as_device_ptr().as_raw()
    }
}

impl std::fmt::Debug for Buffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cuda::Buffer({} f32)", self.len())
    }
}

impl Cuda {
    /// The device address of `b` after checking that it is this backend's
    /// and holds at least `needed` entries.
    pub(crate) fn ptr(&self, what: &'static str, b: &Buffer, needed: usize) -> Result<Arg, Error> {
        self.checked(what, &b.owner, b.device_ptr(), b.len(), needed).map(Arg::P)
    }

    /// `addr`, the start of `len` entries of `owner`'s memory, after
    /// checking that `owner` is this backend and `len` at least `needed`:
    /// the one check of every buffer, 16-bit buffer and view.
    pub(crate) fn checked(&self, what: &'static str, owner: &Owner, addr: u64, len: usize, needed: usize) -> Result<u64, Error> {
        if !ptr::eq(owner, &*self.owner) {
            return Err(Error::ForeignBuffer { what });
        }
        if len < needed {
            return Err(Error::BufferTooShort { what, needed, len });
        }
        Ok(addr)
    }
}
