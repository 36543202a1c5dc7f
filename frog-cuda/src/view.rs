//! Borrowed views on the device: frog-core's [`Backend::View`] for [`Cuda`].
//!
//! A view is a device address and a length in one backend's context: a
//! part of a [`Buffer`] (through [`Backend::view`] and
//! [`Backend::view_mut`], checked), or memory another library allocated in
//! the same context, such as a framework's parameter, gradient or
//! activation tensor ([`CudaView::from_raw`], [`CudaViewMut::from_raw`]).
//! The kernels of the caller's data take views only: a step on buffers
//! makes views of them first (an address, a length and a check), so that
//! each kernel and its checks exist once.

use std::marker::PhantomData;

#[cfg(doc)]
use frog_core::Backend;

use crate::buffer::{Buffer, Owner};
use crate::device::Cuda;
use crate::error::Error;
use crate::launch::Arg;

/// A read-only view: `len` f32 entries at a device address, in the context
/// of the backend that made it (a view of another backend's memory is
/// refused as a foreign buffer is).
#[derive(Clone, Copy)]
pub struct CudaView<'a> {
    addr: u64,
    len: usize,
    owner: &'a Owner,
}

/// A writable view: as [`CudaView`], and the only access to its entries
/// while it lives (hence not `Copy`).
pub struct CudaViewMut<'a> {
    view: CudaView<'a>,
    _unique: PhantomData<&'a mut [f32]>,
}

impl<'a> CudaView<'a> {
    /// A view of `len` f32 entries at device address `addr` in `cuda`'s
    /// context, for memory `cuda` did not allocate (a framework's tensor).
    ///
    /// # Safety
    ///
    /// `addr` must be 4-byte aligned and the start of `len` f32 entries
    /// allocated in the CUDA context `cuda` runs in (the device's primary
    /// context, which frameworks such as PyTorch use as well). They must
    /// stay allocated, and unwritten by anyone else, for `'a` and until
    /// every launch that reads them on [`Cuda::stream`] has finished
    /// (launches are asynchronous: synchronize the stream, or make the
    /// freeing library's stream wait on an event recorded after them, before
    /// freeing or reusing the memory); writes other streams made to them
    /// must be ordered before those launches. The backend checks every
    /// operation's length against `len`, so nothing past it is touched.
    pub unsafe fn from_raw(cuda: &'a Cuda, addr: u64, len: usize) -> Self {
        Self { addr, len, owner: &cuda.owner }
    }

    /// Entries.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the view has no entries.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The device address of its first entry.
    pub fn device_ptr(&self) -> u64 {
        self.addr
    }
}

impl<'a> CudaViewMut<'a> {
    /// A writable view of `len` f32 entries at device address `addr` in
    /// `cuda`'s context, for memory `cuda` did not allocate (a framework's
    /// parameter).
    ///
    /// # Safety
    ///
    /// As [`CudaView::from_raw`], and besides: nothing else reads or writes
    /// the entries, and no other view overlaps them, for `'a` and until the
    /// launches that write them on [`Cuda::stream`] have finished (order
    /// any later reader's stream after them).
    pub unsafe fn from_raw(cuda: &'a Cuda, addr: u64, len: usize) -> Self {
        // SAFETY: the caller's guarantees include `CudaView::from_raw`'s.
        Self { view: unsafe { CudaView::from_raw(cuda, addr, len) }, _unique: PhantomData }
    }

    /// Entries.
    pub fn len(&self) -> usize {
        self.view.len
    }

    /// Whether the view has no entries.
    pub fn is_empty(&self) -> bool {
        self.view.len == 0
    }

    /// The device address of its first entry.
    pub fn device_ptr(&self) -> u64 {
        self.view.addr
    }
}

impl std::fmt::Debug for CudaView<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cuda::CudaView({} f32 at {:#x})", self.len, self.addr)
    }
}

impl std::fmt::Debug for CudaViewMut<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cuda::CudaViewMut({} f32 at {:#x})", self.view.len, self.view.addr)
    }
}

impl CudaView<'_> {
    /// The device address for a kernel, after checking that the memory is
    /// `cuda`'s and holds at least `needed` entries (`what` names it in
    /// the error).
    pub(crate) fn arg(&self, cuda: &Cuda, what: &'static str, needed: usize) -> Result<Arg, Error> {
        cuda.checked(what, self.owner, self.addr, self.len, needed).map(Arg::P)
    }
}

impl<'a> CudaViewMut<'a> {
    /// The unique view of `view`'s entries (made only from a `&mut`
    /// borrow of them).
    pub(crate) fn new(view: CudaView<'a>) -> Self {
        Self { view, _unique: PhantomData }
    }

    /// Its entries, read-only, for as long as it is borrowed.
    pub(crate) fn view(&self) -> CudaView<'_> {
        self.view
    }

    /// [`CudaView::arg`].
    pub(crate) fn arg(&self, cuda: &Cuda, what: &'static str, needed: usize) -> Result<Arg, Error> {
        self.view.arg(cuda, what, needed)
    }
}

impl Cuda {
    /// Entries `offset..offset + len` of `buf`, after checking that `buf`
    /// is this backend's and holds them (`what` names the call in the error).
    pub(crate) fn part<'a>(&self, what: &'static str, buf: &'a Buffer, offset: usize, len: usize) -> Result<CudaView<'a>, Error> {
        let base = self.checked(what, &buf.owner, buf.device_ptr(), buf.len(), offset.saturating_add(len))?;
        Ok(CudaView { addr: base + 4 * offset as u64, len, owner: &buf.owner })
    }
}
