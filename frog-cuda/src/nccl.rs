//! frog-core's collectives on [`Cuda`]'s device data over NCCL, opened at
//! run time: [`Nccl`].
//!
//! Like the driver (`src/driver.rs`), NCCL is opened with `dlopen` when a
//! communicator is made, never linked: a binary of this crate starts on a
//! machine without NCCL, and only [`Nccl::new`] fails there, with an error
//! value naming the library it tried and the loader's reason. The library
//! is `$FROG_NCCL_LIB` when set (for example the `libnccl.so.2` of NVIDIA's
//! `nvidia-nccl-cu12` wheel, `.../nvidia/nccl/lib/libnccl.so.2`), else
//! `libnccl.so.2` from the loader's search path.
//!
//! The NCCL code never links MPI either: a communicator bootstraps over a
//! frog-core [`HostCollective`] (frog-cpu's MPI one in a data-parallel
//! program, [`frog_core::Solo`] in one process), which carries NCCL's
//! unique id from rank 0 to the others and keeps serving the host
//! messages ([`Nccl`] delegates [`HostCollective`] to it).
//!
//! Every NCCL call with device memory is in this file's `Comm`, whose methods
//! take checked views, so that the `unsafe` is in one place.

use std::ffi::{c_char, c_int, c_void, CStr, CString, OsStr};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::{fmt, ptr};

use cust::sys::CUstream;
use frog_core::{Backend, BackendError, BackendErrorKind, Collective, CollectiveError, HostCollective, HostOp};

use crate::buffer::Owner;
use crate::device::Cuda;
use crate::error::Error;
use crate::view::{CudaView, CudaViewMut};

/// The environment variable naming the NCCL library to open (a path, or a
/// name for the loader's search path).
pub const NCCL_LIB_ENV: &str = "FROG_NCCL_LIB";

/// The library opened when [`NCCL_LIB_ENV`] is not set.
pub const NCCL_DEFAULT_LIB: &str = "libnccl.so.2";

/// The NCCL library [`Nccl::new`] opens: `$FROG_NCCL_LIB` when set and not
/// empty, else `libnccl.so.2`.
pub fn nccl_library() -> PathBuf {
    match std::env::var_os(NCCL_LIB_ENV) {
        Some(v) if !v.is_empty() => PathBuf::from(v),
        _ => PathBuf::from(NCCL_DEFAULT_LIB),
    }
}

/// A failure to open NCCL or to make a communicator.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum NcclError {
    /// The library could not be opened (`dlopen`).
    Load {
        /// The library tried.
        library: PathBuf,
        /// The loader's reason (`dlerror`).
        why: String,
    },
    /// The library lacks a function this crate calls (an NCCL older than
    /// 2.7, which added `ncclSend`/`ncclRecv`, or not NCCL).
    Symbol {
        /// The library.
        library: PathBuf,
        /// The missing function.
        symbol: &'static str,
        /// The loader's reason (`dlerror`).
        why: String,
    },
    /// An NCCL call failed.
    Call {
        /// The call.
        call: &'static str,
        /// Its `ncclResult_t`.
        code: i32,
        /// NCCL's text for the code (`ncclGetErrorString`).
        text: String,
    },
    /// The host communicator failed while bootstrapping, or another rank
    /// failed to open NCCL or to make the unique id
    /// ([`CollectiveError::PeerFailed`]).
    Host(CollectiveError),
    /// The backend's context could not be made current.
    Backend(Error),
}

impl fmt::Display for NcclError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Load { library, why } => {
                write!(f, "loading NCCL from `{}` failed: {why} (set {NCCL_LIB_ENV} to the path of a libnccl.so.2)", library.display())
            }
            Self::Symbol { library, symbol, why } => write!(f, "NCCL library `{}` lacks `{symbol}` (NCCL 2.7 or newer is needed): {why}", library.display()),
            Self::Call { call, code, text } => write!(f, "{call} failed: {text} (ncclResult_t {code})"),
            Self::Host(e) => write!(f, "bootstrapping NCCL over the host communicator failed: {e}"),
            Self::Backend(e) => write!(f, "making the CUDA context current for NCCL failed: {e}"),
        }
    }
}

impl std::error::Error for NcclError {}

impl From<CollectiveError> for NcclError {
    fn from(e: CollectiveError) -> Self {
        Self::Host(e)
    }
}

/// NCCL's version code as (major, minor, patch): `NCCL_VERSION` is
/// `X*1000 + Y*100 + Z` up to 2.8, `X*10000 + Y*100 + Z` after.
fn decode_version(code: i32) -> (u32, u32, u32) {
    let c = code.max(0) as u32;
    if c >= 10_000 {
        (c / 10_000, c % 10_000 / 100, c % 100)
    } else {
        (c / 1000, c % 1000 / 100, c % 100)
    }
}

/// The version of the NCCL library at `library` (opened as [`Nccl::new`]
/// opens it, needing no device): to report which NCCL a run would use.
pub fn nccl_version(library: impl AsRef<Path>) -> Result<(u32, u32, u32), NcclError> {
    let api = Api::open(library.as_ref())?;
    api.version().map(decode_version)
}

/// `ncclFloat32`: the data type of every transfer, `Cuda`'s scalar.
const FLOAT32: c_int = 7;
/// `ncclSum`.
const SUM: c_int = 0;
/// `ncclSuccess`.
const SUCCESS: c_int = 0;

/// Compiles only while the backend's scalar is f32, which [`FLOAT32`]
/// describes to NCCL.
const _: fn(<Cuda as Backend>::Scalar) -> f32 = |x| x;

/// `ncclUniqueId`: `NCCL_UNIQUE_ID_BYTES` (128) opaque bytes, passed by
/// value to `ncclCommInitRank`.
#[repr(C)]
#[derive(Clone, Copy)]
struct UniqueId([u8; 128]);

/// An `ncclComm_t`.
type RawComm = *mut c_void;

// The functions' C signatures (nccl.h); enums are C ints.
type GetVersion = unsafe extern "C" fn(*mut c_int) -> c_int;
type GetUniqueId = unsafe extern "C" fn(*mut UniqueId) -> c_int;
type CommInitRank = unsafe extern "C" fn(*mut RawComm, c_int, UniqueId, c_int) -> c_int;
type CommDestroy = unsafe extern "C" fn(RawComm) -> c_int;
type GetErrorString = unsafe extern "C" fn(c_int) -> *const c_char;
/// `ncclAllReduce(send, recv, count, datatype, op, comm, stream)`.
type AllReduce = unsafe extern "C" fn(*const c_void, *mut c_void, usize, c_int, c_int, RawComm, CUstream) -> c_int;
/// `ncclBroadcast(send, recv, count, datatype, root, comm, stream)`.
type Broadcast = unsafe extern "C" fn(*const c_void, *mut c_void, usize, c_int, c_int, RawComm, CUstream) -> c_int;
type Group = unsafe extern "C" fn() -> c_int;
/// `ncclSend(send, count, datatype, peer, comm, stream)`.
type SendFn = unsafe extern "C" fn(*const c_void, usize, c_int, c_int, RawComm, CUstream) -> c_int;
/// `ncclRecv(recv, count, datatype, peer, comm, stream)`.
type RecvFn = unsafe extern "C" fn(*mut c_void, usize, c_int, c_int, RawComm, CUstream) -> c_int;

#[link(name = "dl")]
extern "C" {
    fn dlopen(filename: *const c_char, flags: c_int) -> *mut c_void;
    fn dlsym(handle: *mut c_void, symbol: *const c_char) -> *mut c_void;
    fn dlerror() -> *mut c_char;
}

/// `RTLD_NOW | RTLD_LOCAL` (glibc's values).
const RTLD_NOW_LOCAL: c_int = 2;

/// The functions of one opened NCCL library. The library stays loaded for
/// the process's life (never `dlclose`d: NCCL keeps threads of its own).
#[derive(Clone, Copy)]
struct Api {
    get_version: GetVersion,
    get_unique_id: GetUniqueId,
    comm_init_rank: CommInitRank,
    comm_destroy: CommDestroy,
    get_error_string: GetErrorString,
    all_reduce: AllReduce,
    broadcast: Broadcast,
    group_start: Group,
    group_end: Group,
    send: SendFn,
    recv: RecvFn,
}

/// The loader's latest error on this thread, as text.
fn loader_error() -> String {
    // SAFETY: dlerror returns null or a NUL-terminated string that stays
    // valid until the thread's next dl call, which comes after the copy.
    let p = unsafe { dlerror() };
    if p.is_null() {
        return "no reason given".into();
    }
    // SAFETY: as above, non-null.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

impl Api {
    /// Opens `library` and finds every function.
    fn open(library: &Path) -> Result<Api, NcclError> {
        let load = |why: String| NcclError::Load { library: library.to_path_buf(), why };
        let name = CString::new(OsStr::as_bytes(library.as_os_str())).map_err(|_| load("the path holds a NUL byte".into()))?;
        // SAFETY: dlopen with a NUL-terminated name; the library's
        // initializers run (NCCL's and its CUDA runtime's, which load
        // nothing until a call).
        let handle = unsafe { dlopen(name.as_ptr(), RTLD_NOW_LOCAL) };
        if handle.is_null() {
            return Err(load(loader_error()));
        }
        let sym = |symbol: &'static str| -> Result<*mut c_void, NcclError> {
            let c = CString::new(symbol).map_err(|_| load("a symbol name holds a NUL byte".into()))?;
            // SAFETY: clears the thread's loader error (a string it owns).
            unsafe { dlerror() };
            // SAFETY: a live handle and a NUL-terminated name.
            let p = unsafe { dlsym(handle, c.as_ptr()) };
            if p.is_null() {
                return Err(NcclError::Symbol { library: library.to_path_buf(), symbol, why: loader_error() });
            }
            Ok(p)
        };
        // SAFETY: each address is the library's function of that name,
        // whose C signature in nccl.h the field's type copies (ncclResult_t,
        // ncclDataType_t and ncclRedOp_t are C enums: ints).
        let api = unsafe {
            use std::mem::transmute as t;
            Api {
                get_version: t::<*mut c_void, GetVersion>(sym("ncclGetVersion")?),
                get_unique_id: t::<*mut c_void, GetUniqueId>(sym("ncclGetUniqueId")?),
                comm_init_rank: t::<*mut c_void, CommInitRank>(sym("ncclCommInitRank")?),
                comm_destroy: t::<*mut c_void, CommDestroy>(sym("ncclCommDestroy")?),
                get_error_string: t::<*mut c_void, GetErrorString>(sym("ncclGetErrorString")?),
                all_reduce: t::<*mut c_void, AllReduce>(sym("ncclAllReduce")?),
                broadcast: t::<*mut c_void, Broadcast>(sym("ncclBroadcast")?),
                group_start: t::<*mut c_void, Group>(sym("ncclGroupStart")?),
                group_end: t::<*mut c_void, Group>(sym("ncclGroupEnd")?),
                send: t::<*mut c_void, SendFn>(sym("ncclSend")?),
                recv: t::<*mut c_void, RecvFn>(sym("ncclRecv")?),
            }
        };
        Ok(api)
    }

    /// NCCL's text for `code`.
    fn error_text(&self, code: c_int) -> String {
        // SAFETY: takes an int; returns null or a static NUL-terminated string.
        let p = unsafe { (self.get_error_string)(code) };
        if p.is_null() {
            return "unknown NCCL error".into();
        }
        // SAFETY: as above, non-null and static.
        unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
    }

    /// `code` as a result of `call`.
    fn check(&self, call: &'static str, code: c_int) -> Result<(), NcclError> {
        match code {
            SUCCESS => Ok(()),
            code => Err(NcclError::Call { call, code, text: self.error_text(code) }),
        }
    }

    /// The library's version code.
    fn version(&self) -> Result<i32, NcclError> {
        let mut v = 0;
        // SAFETY: writes one int.
        let code = unsafe { (self.get_version)(&mut v) };
        self.check("ncclGetVersion", code).map(|()| v)
    }

    /// A new unique id (rank 0's, for the others to join).
    fn unique_id(&self) -> Result<UniqueId, NcclError> {
        let mut id = UniqueId([0; 128]);
        // SAFETY: writes one ncclUniqueId.
        let code = unsafe { (self.get_unique_id)(&mut id) };
        self.check("ncclGetUniqueId", code).map(|()| id)
    }
}

/// An NCCL communicator on one backend's device: the one place this
/// module calls NCCL with device memory. Its methods take views and check
/// them (the backend's context, their lengths) before any call, so that
/// NCCL touches only the entries the views hold; every call is enqueued
/// on the backend's stream, like a kernel.
struct Comm {
    raw: RawComm,
    api: Api,
    /// The context the communicator was made in, kept alive until it is
    /// destroyed, and the identity a backend passed later is checked
    /// against.
    owner: Arc<Owner>,
}

impl Drop for Comm {
    /// `ncclCommDestroy`: finishes the communicator's work and frees it
    /// (a failure cannot be reported here).
    fn drop(&mut self) {
        // SAFETY: a communicator made by `Comm::init`, destroyed once, its
        // context alive (`owner` drops after this).
        unsafe { (self.api.comm_destroy)(self.raw) };
    }
}

/// Calls `part(k, at, c)` for each rank `k` below `ranks` whose count
/// `c = counts(k)` is not zero, in rank order, `at` the sum of the counts
/// before it: where a gather's root receives rank `k`'s entries. A part
/// that would not end within `len` (counts that changed since they were
/// checked) is an error and ends the walk, as does `part`'s first error.
fn recv_parts(counts: &dyn Fn(usize) -> usize, ranks: usize, len: usize, mut part: impl FnMut(usize, usize, usize) -> Result<(), CollectiveError>) -> Result<(), CollectiveError> {
    let mut at = 0usize;
    for k in 0..ranks {
        let c = counts(k);
        let end = at.checked_add(c).filter(|&e| e <= len).ok_or(CollectiveError::Size { what: "the root's receive entries", expected: at.saturating_add(c), actual: len })?;
        if c > 0 {
            part(k, at, c)?;
        }
        at = end;
    }
    Ok(())
}

/// An error of the backend (a foreign or short view) as a collective's,
/// as frog-core's `Solo` reports it.
fn backend(e: Error) -> CollectiveError {
    CollectiveError::Engine { engine: "the backend", code: e.kind() as i32 }
}

/// An NCCL result as a collective's.
fn engine(code: c_int) -> Result<(), CollectiveError> {
    match code {
        SUCCESS => Ok(()),
        code => Err(CollectiveError::Engine { engine: "NCCL", code }),
    }
}

impl Comm {
    /// `ncclCommInitRank` in `cuda`'s context.
    fn init(api: Api, cuda: &Cuda, ranks: c_int, id: UniqueId, rank: c_int) -> Result<Comm, NcclError> {
        let mut raw = ptr::null_mut();
        // SAFETY: writes one communicator handle; the id is passed by value
        // as nccl.h declares it. NCCL's CUDA runtime takes the device of
        // the current context, made `cuda`'s by the caller.
        let code = unsafe { (api.comm_init_rank)(&mut raw, ranks, id, rank) };
        api.check("ncclCommInitRank", code)?;
        Ok(Comm { raw, api, owner: Arc::clone(&cuda.owner) })
    }

    /// `cuda`'s stream, after checking that `cuda` is the backend the
    /// communicator was made for.
    fn stream(&self, cuda: &Cuda) -> Result<CUstream, CollectiveError> {
        if !ptr::eq(&*self.owner, &*cuda.owner) {
            return Err(CollectiveError::Engine { engine: "the backend", code: BackendErrorKind::DeviceMismatch as i32 });
        }
        Ok(cuda.stream.as_inner())
    }

    /// Sums `data` over the ranks, in place.
    fn all_reduce(&self, cuda: &Cuda, data: &mut CudaViewMut<'_>) -> Result<(), CollectiveError> {
        let stream = self.stream(cuda)?;
        let n = data.len();
        let p = data.arg(cuda, "all-reduce data", n).map_err(backend)?.slot();
        if n == 0 {
            return Ok(());
        }
        // SAFETY: `p` holds `n` f32 in the communicator's context (checked
        // above), written by nothing else while this unique view lives; the
        // reduction runs on the backend's stream, ordered like a kernel.
        engine(unsafe { (self.api.all_reduce)(p as *const c_void, p as *mut c_void, n, FLOAT32, SUM, self.raw, stream) })
    }

    /// Rank `root`'s `data` to every rank, in place.
    fn broadcast(&self, cuda: &Cuda, data: &mut CudaViewMut<'_>, root: c_int) -> Result<(), CollectiveError> {
        let stream = self.stream(cuda)?;
        let n = data.len();
        let p = data.arg(cuda, "broadcast data", n).map_err(backend)?.slot();
        if n == 0 {
            return Ok(());
        }
        // SAFETY: as `all_reduce`'s.
        engine(unsafe { (self.api.broadcast)(p as *const c_void, p as *mut c_void, n, FLOAT32, root, self.raw, stream) })
    }

    /// One group of point-to-point calls: `send` (all of it) to `root`, and
    /// on the root, rank `k`'s `counts(k)` entries from `k` into `recv` at
    /// the sum of the counts before it. Parts of no entries are not sent
    /// (every rank knows the counts, so both ends skip them). A part that
    /// would not fit `recv` (counts that changed since they were checked)
    /// is an error, and no later part is posted.
    fn gather(&self, cuda: &Cuda, send: &CudaView<'_>, recv: Option<&mut CudaViewMut<'_>>, counts: &dyn Fn(usize) -> usize, ranks: usize, root: c_int) -> Result<(), CollectiveError> {
        let stream = self.stream(cuda)?;
        let mine = send.len();
        let s = send.arg(cuda, "gather send", mine).map_err(backend)?.slot();
        let r = match recv {
            Some(v) => Some((v.arg(cuda, "gather receive", v.len()).map_err(backend)?.slot(), v.len())),
            None => None,
        };
        // SAFETY: starts a group (no arguments).
        engine(unsafe { (self.api.group_start)() })?;
        let mut first = Ok(());
        if let Some((base, len)) = r {
            first = recv_parts(counts, ranks, len, |k, at, c| {
                // SAFETY: entries `at..at + c` of the root's receive view
                // (`recv_parts` keeps them within its `len`), which holds
                // `len` f32 of this context (checked above) and is written
                // by nothing else while it lives; `k` is below the
                // communicator's size (`ranks`, an int).
                engine(unsafe { (self.api.recv)((base + 4 * at as u64) as *mut c_void, c, FLOAT32, k as c_int, self.raw, stream) })
            });
        }
        if mine > 0 && first.is_ok() {
            // SAFETY: `s` holds `mine` f32 of this context (checked above),
            // read only; `root` is a rank of the communicator.
            first = engine(unsafe { (self.api.send)(s as *const c_void, mine, FLOAT32, root, self.raw, stream) });
        }
        // SAFETY: ends the group started above (also after a failed call,
        // so that no group stays open).
        let end = engine(unsafe { (self.api.group_end)() });
        first.and(end)
    }
}

/// frog-core's [`HostCollective`] and [`Collective`] for [`Cuda`] over an
/// NCCL communicator, bootstrapped over the host communicator `H`.
///
/// Host messages ([`HostCollective`]) go through the host communicator;
/// device data ([`Collective`]: views of buffers, or of a framework's
/// memory) through NCCL, in f32 (`ncclFloat32`), on the backend's stream.
///
/// **Synchronization.** No collective waits for the device: each is
/// enqueued on [`Cuda::stream`] after the launches before it and before
/// those after it, as a kernel is, so its result is visible to every
/// later operation of the backend, and to the host after the next
/// synchronize ([`Backend::read`] makes one). Waiting here would only stall
/// the host's next launches; an error of the transfer itself shows at that
/// synchronize, as a kernel's does. Use the communicator on the thread
/// whose current context is the backend's (as the backend itself).
///
/// **Errors.** The checks are the MPI implementation's (frog-cpu's `Mpi`):
/// a root outside the communicator is [`CollectiveError::BadRank`], a
/// gather's lengths [`Collective::check_gather`]'s; then a view of another
/// backend (or a backend other than the one the communicator was made
/// for) is [`CollectiveError::Engine`] with engine "the backend" and the
/// [`BackendErrorKind`] as its code, and a failed NCCL call
/// [`CollectiveError::Engine`] with engine "NCCL" and its `ncclResult_t`
/// ([`Nccl::error_text`] names it). Every check comes before anything
/// moves. A check that fails on some ranks only leaves the others waiting
/// in NCCL, as with MPI: the ranks must agree on the calls and sizes.
///
/// Tested on one rank only (`tests/nccl/`: the emulator with a one-rank
/// NCCL stub, and a GPU's NCCL when the prepared GPU run finds one); the
/// multi-rank paths are NCCL's own calls, untested here on hardware.
pub struct Nccl<'h, H: HostCollective> {
    host: &'h H,
    comm: Comm,
    version: (u32, u32, u32),
    library: PathBuf,
}

impl<H: HostCollective> fmt::Debug for Nccl<'_, H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Nccl").field("rank", &self.host.rank()).field("size", &self.host.size()).field("version", &self.version).field("library", &self.library).finish_non_exhaustive()
    }
}

impl<'h, H: HostCollective> Nccl<'h, H> {
    /// A communicator of the host communicator's ranks on `cuda`'s device,
    /// with the NCCL of [`nccl_library`]. Collective: every rank calls it.
    pub fn new(cuda: &Cuda, host: &'h H) -> Result<Self, NcclError> {
        Self::with_library(cuda, host, nccl_library())
    }

    /// As [`Nccl::new`], with the NCCL library at `library`.
    ///
    /// Every rank opens the library and makes `cuda`'s context current;
    /// rank 0 makes NCCL's unique id. The ranks then agree on whether all
    /// of that worked ([`HostCollective::check_status`]): where one failed,
    /// it returns its own error and the others [`NcclError::Host`] with
    /// [`CollectiveError::PeerFailed`], rather than waiting for it. The id
    /// goes to every rank over the host communicator, and each joins with
    /// `ncclCommInitRank` (a failure there can leave the other ranks
    /// waiting in NCCL's bootstrap, until NCCL's own timeout).
    pub fn with_library(cuda: &Cuda, host: &'h H, library: impl AsRef<Path>) -> Result<Self, NcclError> {
        let library = library.as_ref();
        let (rank, size) = (host.rank(), host.size());
        let int = |what, v: usize| c_int::try_from(v).map_err(|_| CollectiveError::Size { what, expected: c_int::MAX as usize, actual: v });
        let (ranks, me) = (int("ranks (NCCL counts them in an int)", size)?, int("this rank (NCCL counts ranks in an int)", rank)?);
        let local = (|| -> Result<_, NcclError> {
            let api = Api::open(library)?;
            let version = decode_version(api.version()?);
            cuda.make_current().map_err(NcclError::Backend)?;
            let id = if rank == 0 { api.unique_id()? } else { UniqueId([0; 128]) };
            Ok((api, version, id))
        })();
        host.check_status(local.is_err())?;
        let (api, version, mut id) = local?;
        host.broadcast_bytes(&mut id.0, 0)?;
        let comm = Comm::init(api, cuda, ranks, id, me)?;
        Ok(Self { host, comm, version, library: library.to_path_buf() })
    }

    /// The NCCL library's version (major, minor, patch).
    pub fn version(&self) -> (u32, u32, u32) {
        self.version
    }

    /// The library opened.
    pub fn library(&self) -> &Path {
        &self.library
    }

    /// The host communicator.
    pub fn host(&self) -> &'h H {
        self.host
    }

    /// NCCL's text for an `ncclResult_t` (the code of a
    /// [`CollectiveError::Engine`] whose engine is "NCCL").
    pub fn error_text(&self, code: i32) -> String {
        self.comm.api.error_text(code)
    }
}

impl<H: HostCollective> HostCollective for Nccl<'_, H> {
    fn rank(&self) -> usize {
        self.host.rank()
    }

    fn size(&self) -> usize {
        self.host.size()
    }

    fn all_reduce_u64(&self, data: &mut [u64], op: HostOp) -> Result<(), CollectiveError> {
        self.host.all_reduce_u64(data, op)
    }

    fn broadcast_bytes(&self, data: &mut [u8], root: usize) -> Result<(), CollectiveError> {
        self.host.broadcast_bytes(data, root)
    }
}

impl<H: HostCollective> Collective<Cuda> for Nccl<'_, H> {
    fn all_reduce_sum(&self, cuda: &Cuda, data: &mut CudaViewMut<'_>) -> Result<(), CollectiveError> {
        self.comm.all_reduce(cuda, data)
    }

    fn broadcast(&self, cuda: &Cuda, data: &mut CudaViewMut<'_>, root: usize) -> Result<(), CollectiveError> {
        self.check_rank(root)?;
        // Below the size, an int (checked when the communicator was made).
        self.comm.broadcast(cuda, data, root as c_int)
    }

    fn gather(&self, cuda: &Cuda, send: &CudaView<'_>, recv: Option<&mut CudaViewMut<'_>>, counts: &dyn Fn(usize) -> usize, root: usize) -> Result<(), CollectiveError> {
        self.check_gather(cuda, send, recv.as_deref().map(|r| cuda.reborrow(r)).as_ref(), counts, root)?;
        // Only the root receives (another rank's `recv` is ignored, as MPI's
        // implementation ignores it).
        let recv = if self.rank() == root { recv } else { None };
        self.comm.gather(cuda, send, recv, counts, self.size(), root as c_int)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_decode_in_both_of_nccls_forms() {
        assert_eq!(decode_version(2804), (2, 8, 4));
        assert_eq!(decode_version(21805), (2, 18, 5));
        assert_eq!(decode_version(22703), (2, 27, 3));
        assert_eq!(decode_version(-1), (0, 0, 0));
    }

    #[test]
    fn a_gathers_parts_follow_in_rank_order_and_stay_within_the_receive() {
        let counts = [4, 0, 3, 1];
        let mut got = Vec::new();
        recv_parts(&|k| counts[k], 4, 8, |k, at, c| {
            got.push((k, at, c));
            Ok(())
        }).unwrap();
        assert_eq!(got, [(0, 0, 4), (2, 4, 3), (3, 7, 1)]);
        // Too little room: the parts before the one that does not fit.
        got.clear();
        let e = recv_parts(&|k| counts[k], 4, 6, |k, at, c| {
            got.push((k, at, c));
            Ok(())
        });
        assert_eq!(e, Err(CollectiveError::Size { what: "the root's receive entries", expected: 7, actual: 6 }));
        assert_eq!(got, [(0, 0, 4)]);
        let e = recv_parts(&|k| if k == 0 { 1 } else { usize::MAX }, 2, 8, |_, _, _| Ok(()));
        assert!(matches!(e, Err(CollectiveError::Size { .. })));
        // A failed part ends the walk.
        let mut calls = 0;
        let e = recv_parts(&|_| 1, 3, 3, |_, _, _| {
            calls += 1;
            Err(CollectiveError::Engine { engine: "NCCL", code: 5 })
        });
        assert_eq!((e, calls), (Err(CollectiveError::Engine { engine: "NCCL", code: 5 }), 1));
    }

    #[test]
    fn a_missing_library_is_an_error_naming_it_and_why() {
        let e = nccl_version("/nonexistent/libnccl.so.2").unwrap_err();
        let text = e.to_string();
        assert!(matches!(&e, NcclError::Load { library, .. } if library == Path::new("/nonexistent/libnccl.so.2")), "{e:?}");
        assert!(text.contains("/nonexistent/libnccl.so.2") && text.contains("No such file") && text.contains(NCCL_LIB_ENV), "{text}");
        // A library that is not NCCL: the first missing function, named.
        let e = nccl_version("libc.so.6").unwrap_err();
        assert!(matches!(&e, NcclError::Symbol { symbol: "ncclGetVersion", .. }), "{e:?}");
        assert!(e.to_string().contains("ncclGetVersion") && e.to_string().contains("libc.so.6"), "{e}");
    }
}
