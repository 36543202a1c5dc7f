//! [`Cuda`]: frog-core's [`Backend`] on one CUDA device, f32.

use std::cell::RefCell;
use std::ffi::c_void;
use std::ptr;
use std::sync::Arc;

use cust::context::Context;
use cust::device::{Device, DeviceAttribute};
use cust::memory::DeviceBuffer;
use cust::stream::{Stream, StreamFlags};
use cust::sys as cu;
use frog_core::{
    AdamBackend, AdamCoefs, AdamMoments, Backend, CgBuffers, FisherCoefs, FisherOut, Guard, GuardBackend, KfrogBackend, Layer, LayerKind, Patches, RowGuardOut, Shape, StepCoefs, Strided,
};

use crate::error::Error;
use crate::kernels::{Ptx, K};
use crate::launch::{self, int, Arg, Grid, Tile, BLOCK, MAX_ARGS};
use crate::view::{CudaView, CudaViewMut};

/// Arithmetic of the two patch products (the Fisher matvec's cost); modes
/// may be added, so a `match` needs a wildcard arm.
///
/// ```compile_fail,E0004
/// fn tensor_cores(p: frog_cuda::Precision) -> bool {
///     use frog_cuda::Precision::*;
///     match p {
///         Exact => false,
///         Split | Fast | Bf16Split | Bf16 | F16 => true,
///     }
/// }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Precision {
    /// Plain f32 FMA arithmetic everywhere: meets the golden f32 tolerance.
    #[default]
    Exact,
    /// 3xTF32 on tensor cores for the two patch products: each input split
    /// into two TF32 parts, three `mma.sync` per tile, f32 accumulation;
    /// close to f32 accuracy. Everything else f32.
    Split,
    /// TF32 tensor cores (`mma.sync`, 10-bit mantissa inputs, f32
    /// accumulation) for the two patch products; everything else f32.
    /// About 5e-4 relative per product, amplified by CG where the sampled
    /// Fisher is ill-conditioned (`r*L < D'` with a small `tau`).
    Fast,
    /// bf16 tensor cores (`mma.sync` m16n8k16, f32 accumulation, twice
    /// TF32's rate): the patches packed in bf16 (exact for bf16 inputs), the
    /// f32 operand (the CG direction, then the scaled projections) split
    /// into a high and a low bf16 part, two products: about 16-bit accuracy
    /// in that operand (a few 1e-6 relative per product), at about TF32's cost.
    Bf16Split,
    /// bf16 tensor cores with the f32 operand rounded once to bf16 (8-bit
    /// mantissa): one product, about 2e-3 relative per product.
    Bf16,
    /// f16 tensor cores: the patches packed in f16 (exact for f16 inputs),
    /// each row of the f32 operand scaled by a power of two into f16's
    /// range (directions of 1e-5..1e-9 sit below f16's smallest normal,
    /// 6.1e-5; exact, undone on the f32 result), then rounded once to f16
    /// (11-bit mantissa): one product, about 3e-4 relative per product.
    F16,
}

/// The element type of the packed patches a [`Precision`] reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Packed {
    F32,
    Bf16,
    F16,
}

impl Precision {
    /// What the patch products read: f32 patches, or 16-bit ones.
    pub(crate) fn packed(self) -> Packed {
        match self {
            Precision::Exact | Precision::Split | Precision::Fast => Packed::F32,
            Precision::Bf16Split | Precision::Bf16 => Packed::Bf16,
            Precision::F16 => Packed::F16,
        }
    }
}

/// How an operand of [`Cuda::matmul_as`] is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Order {
    /// Row-major: entry `(i, j)` of an `[r, c]` operand at `i*c + j`.
    RowMajor,
    /// Its transpose row-major: entry `(i, j)` at `j*r + i`.
    Transposed,
}

impl Order {
    /// The strides (row, column) of an operand of `cols` columns and
    /// `rows` rows.
    fn strides(self, cols: usize, rows: usize) -> (usize, usize) {
        match self {
            Order::RowMajor => (cols, 1),
            Order::Transposed => (1, rows),
        }
    }
}

/// What a GEMM does with its result `C(i, j)`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Epilogue {
    /// Overwrite C.
    Store,
    /// Overwrite C with the result times `S(i, j)` (same layout as C): the
    /// Fisher weights fused into the projection. Never split along K.
    Scale(Arg),
    /// Add onto C (atomically).
    Add,
}

/// Keeps the context alive while any buffer of it lives, and identifies it.
pub(crate) struct Owner {
    _ctx: Context,
}

/// A device buffer of `f32` owned by one [`Cuda`] backend.
pub struct Buffer {
    mem: DeviceBuffer<f32>,
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

/// FROG's CUDA backend: one device, one context, one stream, the kernels of
/// `kernels/frog.cu` loaded once from the embedded PTX.
///
/// Every operation is a launch on the backend's stream; nothing waits for
/// the device except [`Backend::read`], [`Backend::write`] and
/// [`Cuda::synchronize`]. A whole optimizer step is therefore launches only
/// (and can be captured in a CUDA graph). Use the backend from the thread
/// that created it, or call [`Cuda::make_current`] first on another thread.
pub struct Cuda {
    funcs: Vec<cu::CUfunction>,
    stream: Stream,
    _modules: Vec<Module>,
    pub(crate) owner: Arc<Owner>,
    precision: Precision,
    tile: Option<Tile>,
    sms: u32,
    name: String,
    driver: (u32, u32),
    capability: (u32, u32),
    /// The host values of [`Cuda::write_async`] copies that may still be
    /// running: freed only once a synchronize has waited for them.
    staged: RefCell<Vec<Vec<f32>>>,
}

impl Drop for Cuda {
    /// Waits for the stream before the staged values go: destroying a
    /// stream does not wait for its copies.
    fn drop(&mut self) {
        // A failure here (a kernel's earlier error) cannot be reported; the
        // wait is what matters.
        let _ = self.synchronize();
    }
}

/// Whether a driver of CUDA version `driver` loads the embedded PTX and a
/// device of compute capability `capability` runs it: an error of kind
/// `NoDevice` naming both versions otherwise (checked before any module
/// load, whose failure would say less).
fn check_support(driver: (u32, u32), capability: (u32, u32)) -> Result<(), Error> {
    for m in Ptx::ALL {
        let bad = |problem| Error::Kernel { name: m.name(), problem };
        let isa = m.isa().ok_or(bad("the embedded PTX has no readable .version"))?;
        let needed = crate::kernels::driver_for_isa(isa).ok_or(bad("the embedded PTX has an ISA of unknown driver support"))?;
        if driver < needed {
            return Err(Error::Unsupported { what: "CUDA driver", found: driver, needed, by: format!("the embedded PTX (ISA {}.{})", isa.0, isa.1) });
        }
        let target = m.target().ok_or(bad("the embedded PTX has no readable .target"))?;
        if capability < target {
            return Err(Error::Unsupported { what: "GPU", found: capability, needed: target, by: format!("the embedded PTX (.target sm_{}{})", target.0, target.1) });
        }
    }
    Ok(())
}

/// A PTX module loaded into the current context, unloaded on drop.
struct Module(cu::CUmodule);

impl Module {
    /// Loads PTX `text` with `cuModuleLoadDataEx`; a failure carries the JIT
    /// compiler's error log (cust's module options have no log option).
    fn load(name: &'static str, text: &str) -> Result<Module, Error> {
        let image = std::ffi::CString::new(text).map_err(|_| Error::Kernel { name, problem: "the PTX holds a NUL byte" })?;
        let mut log = vec![0u8; 16 * 1024];
        let mut options = [cu::CUjit_option::CU_JIT_ERROR_LOG_BUFFER, cu::CUjit_option::CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES];
        // The size goes by value in its option's pointer slot, as cuda.h has it.
        let mut values = [log.as_mut_ptr() as *mut c_void, log.len() as *mut c_void];
        let mut module = ptr::null_mut();
        // SAFETY: a NUL-terminated image, two options with their values, and
        // a log buffer of the size given, alive for the call.
        let res = unsafe { cu::cuModuleLoadDataEx(&mut module, image.as_ptr().cast(), 2, options.as_mut_ptr(), values.as_mut_ptr()) };
        match crate::driver::raw_code(res as u32) {
            0 => Ok(Module(module)),
            code => {
                let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
                Err(Error::ModuleLoad { module: name, code, log: String::from_utf8_lossy(&log[..end]).into_owned() })
            }
        }
    }

    /// The kernel `name` of the module.
    fn function(&self, name: &'static str) -> Result<cu::CUfunction, Error> {
        let missing = Error::Kernel { name, problem: "missing from the embedded PTX" };
        let c = std::ffi::CString::new(name).map_err(|_| missing.clone())?;
        let mut f = ptr::null_mut();
        // SAFETY: a live module and a NUL-terminated name.
        let res = unsafe { cu::cuModuleGetFunction(&mut f, self.0, c.as_ptr()) };
        if res == cu::cudaError_enum::CUDA_SUCCESS { Ok(f) } else { Err(missing) }
    }
}

impl Drop for Module {
    fn drop(&mut self) {
        // SAFETY: a module loaded by `Module::load`, in a context that the
        // backend keeps alive until after its modules.
        unsafe { cu::cuModuleUnload(self.0) };
    }
}

impl Cuda {
    /// The backend on device 0.
    pub fn new(precision: Precision) -> Result<Self, Error> {
        Self::on_device(0, precision)
    }

    /// The backend on device `ordinal`. Errors: no driver or no device
    /// (kind `NoDevice`), a PTX the driver cannot load, out of memory.
    pub fn on_device(ordinal: u32, precision: Precision) -> Result<Self, Error> {
        if !crate::driver::available() {
            return Err(Error::Driver { call: "loading libcuda.so.1 (the CUDA driver)", code: crate::error::code::NO_DEVICE });
        }
        cust::init(cust::CudaFlags::empty()).map_err(Error::driver("cuInit"))?;
        let device = Device::get_device(ordinal).map_err(Error::driver("cuDeviceGet"))?;
        let attribute = |a, call| device.get_attribute(a).map_err(Error::driver(call)).map(|v| v.max(0) as u32);
        let capability = (
            attribute(DeviceAttribute::ComputeCapabilityMajor, "cuDeviceGetAttribute")?,
            attribute(DeviceAttribute::ComputeCapabilityMinor, "cuDeviceGetAttribute")?,
        );
        let mut version = 0;
        // SAFETY: writes one int.
        Error::check("cuDriverGetVersion", unsafe { cu::cuDriverGetVersion(&mut version) })?;
        let driver = (version.max(0) as u32 / 1000, version.max(0) as u32 % 1000 / 10);
        check_support(driver, capability)?;
        let ctx = Context::new(device).map_err(Error::driver("cuDevicePrimaryCtxRetain"))?;
        let sms = attribute(DeviceAttribute::MultiprocessorCount, "cuDeviceGetAttribute")?;
        let name = device.name().map_err(Error::driver("cuDeviceGetName"))?;
        let mut modules = Vec::new();
        for m in Ptx::ALL {
            modules.push(Module::load(m.name(), m.text())?);
        }
        let mut funcs = Vec::with_capacity(K::ALL.len());
        for k in K::ALL {
            funcs.push(modules[k.module() as usize].function(k.name())?);
        }
        let stream = Stream::new(StreamFlags::DEFAULT, None).map_err(Error::driver("cuStreamCreate"))?;
        Ok(Self {
            funcs,
            stream,
            _modules: modules,
            owner: Arc::new(Owner { _ctx: ctx }),
            precision,
            tile: None,
            sms: sms.max(1),
            name,
            driver,
            capability,
            staged: RefCell::new(Vec::new()),
        })
    }

    /// The CUDA version of the driver (`cuDriverGetVersion`), as (major, minor).
    pub fn driver_version(&self) -> (u32, u32) {
        self.driver
    }

    /// The device's compute capability, as (major, minor).
    pub fn compute_capability(&self) -> (u32, u32) {
        self.capability
    }

    /// The device's name.
    pub fn device_name(&self) -> &str {
        &self.name
    }

    /// Streaming multiprocessors of the device.
    pub fn sm_count(&self) -> u32 {
        self.sms
    }

    /// The precision of the patch products.
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// Changes the precision of the patch products.
    pub fn set_precision(&mut self, precision: Precision) {
        self.precision = precision;
    }

    /// Forces every GEMM onto one tile (`None`: chosen per problem, see
    /// [`launch::gemm_plan`]); for measuring the two against each other.
    pub fn set_gemm_tile(&mut self, tile: Option<Tile>) {
        self.tile = tile;
    }

    /// The stream every operation is launched on.
    pub fn stream(&self) -> &Stream {
        &self.stream
    }

    /// Waits for every launched operation; reports a kernel's failure.
    /// Frees the values of the [`Cuda::write_async`] copies it waited for.
    pub fn synchronize(&self) -> Result<(), Error> {
        self.stream.synchronize().map_err(Error::driver("cuStreamSynchronize"))?;
        self.staged.borrow_mut().clear();
        Ok(())
    }

    /// Makes the backend's context current on the calling thread.
    pub fn make_current(&self) -> Result<(), Error> {
        cust::context::CurrentContext::set_current(&self.owner._ctx).map_err(Error::driver("cuCtxSetCurrent"))
    }

    /// Copies `src` to `dst[offset..]` on the stream without waiting: the
    /// copy runs in stream order, after this returns. The backend owns
    /// the values until the next [`Cuda::synchronize`] (which [`Backend::read`],
    /// [`Backend::write`] and [`Cuda::download`] make) has waited for the
    /// copy, so nothing can free or change them while the device reads them
    /// (a borrowed slice could be page-locked memory, which the device
    /// reads directly, late).
    pub fn write_async(&self, src: Vec<f32>, dst: &mut Buffer, offset: usize) -> Result<(), Error> {
        let Arg::P(base) = self.ptr("dst", dst, offset.saturating_add(src.len()))? else { unreachable!() };
        if src.is_empty() {
            return Ok(());
        }
        // SAFETY: the range was checked above; `src`'s heap block, which
        // the copy reads, moves into `staged` unchanged (moving a Vec does
        // not move its entries) and stays there until a synchronize (or the
        // backend's drop, which synchronizes first) has waited for the copy.
        let res = unsafe {
            cu::cuMemcpyHtoDAsync_v2(base + (offset * 4) as u64, src.as_ptr() as *const c_void, std::mem::size_of_val(&src[..]), self.stream.as_inner())
        };
        Error::check("cuMemcpyHtoDAsync", res)?;
        self.staged.borrow_mut().push(src);
        Ok(())
    }

    /// A buffer holding `data`.
    pub fn upload(&self, data: &[f32]) -> Result<Buffer, Error> {
        let mut b = self.zeros(data.len())?;
        self.write(data, &mut b, 0)?;
        Ok(b)
    }

    /// The first `n` entries of `buf` on the host.
    pub fn download(&self, buf: &Buffer, n: usize) -> Result<Vec<f32>, Error> {
        let mut out = vec![0.0; n];
        self.read(buf, 0, &mut out)?;
        Ok(out)
    }

    /// `c = a b` for row-major `a` `[m, k]`, `b` `[k, n]` and `c` `[m, n]`,
    /// in the backend's precision on its GEMM tile (split along a long K),
    /// launched on the stream: the kernel of the patch products, for
    /// measuring it and for users' own products.
    pub fn matmul(&self, dims: (usize, usize, usize), a: &Buffer, b: &Buffer, c: &mut Buffer) -> Result<(), Error> {
        self.matmul_as(dims, (a, Order::RowMajor), (b, Order::RowMajor), c, true)
    }

    /// [`Cuda::matmul`] with each operand stored as `order` says, split
    /// along a long K only when `split_k` allows it: the layouts and plans
    /// of FROG's products (`V X^T`, not split; `U X`, split) and of the
    /// convolutions (`W col^T`; `T^T W`; `T col`, split), for measuring
    /// them.
    pub fn matmul_as(&self, (m, n, k): (usize, usize, usize), (a, a_order): (&Buffer, Order), (b, b_order): (&Buffer, Order), c: &mut Buffer, split_k: bool) -> Result<(), Error> {
        let size = |what, x: usize, y: usize| x.checked_mul(y).ok_or(Error::TooLarge { what, value: usize::MAX });
        let aa = self.ptr("a", a, size("a", m, k)?)?;
        let ba = self.ptr("b", b, size("b", k, n)?)?;
        let ca = self.ptr("c", c, size("c", m, n)?)?;
        let (sam, sak) = a_order.strides(k, m);
        let (sbk, sbn) = b_order.strides(n, k);
        self.gemm((m, n, k), (aa, sam, sak), (ba, sbk, sbn), (ca, n), Epilogue::Store, split_k)
    }

    /// Records the launches `f` makes on the stream into a CUDA graph
    /// (stream capture; nothing runs), for [`Cuda::launch_graph`] to replay.
    /// A FROG step can be captured because it is launches only; the host
    /// values of the step (its `tau`, the step count) are those of capture
    /// time.
    pub fn capture(&self, f: impl FnOnce() -> Result<(), Error>) -> Result<Graph, Error> {
        let stream = self.stream.as_inner();
        // SAFETY: plain driver calls on this backend's stream and on graph
        // handles owned by the returned value.
        unsafe {
            let mode = cu::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL;
            Error::check("cuStreamBeginCapture", cu::cuStreamBeginCapture_v2(stream, mode))?;
            let recorded = f();
            let mut graph = ptr::null_mut();
            let ended = Error::check("cuStreamEndCapture", cu::cuStreamEndCapture(stream, &mut graph));
            let graph = Graph { graph, exec: ptr::null_mut(), _owner: self.owner.clone() };
            recorded?;
            ended?;
            let mut graph = graph;
            Error::check("cuGraphInstantiateWithFlags", cu::cuGraphInstantiateWithFlags(&mut graph.exec, graph.graph, 0))?;
            Ok(graph)
        }
    }

    /// Launches a captured graph on the stream.
    pub fn launch_graph(&self, graph: &Graph) -> Result<(), Error> {
        if !Arc::ptr_eq(&graph._owner, &self.owner) {
            return Err(Error::ForeignBuffer { what: "graph" });
        }
        // SAFETY: the graph was instantiated in this backend's context.
        unsafe { Error::check("cuGraphLaunch", cu::cuGraphLaunch(graph.exec, self.stream.as_inner())) }
    }

    /// Launches kernel `k` on the stream.
    pub(crate) fn launch(&self, k: K, grid: Grid, args: &[Arg]) -> Result<(), Error> {
        let slots = launch::pack(k.name(), k.sig(), args)?;
        if grid.is_empty() {
            return Ok(());
        }
        let mut params: [*mut c_void; MAX_ARGS] = [ptr::null_mut(); MAX_ARGS];
        for (p, s) in params.iter_mut().zip(slots.iter()) {
            *p = s as *const u64 as *mut c_void;
        }
        // SAFETY: the signature check above makes every parameter's slot
        // hold a value of the kernel's parameter type; every pointer
        // argument was checked to belong to this context and to cover the
        // entries the kernel touches (for a view from `from_raw`, its
        // caller guarantees that the address holds the view's entries).
        let res = unsafe {
            cu::cuLaunchKernel(
                self.funcs[k as usize],
                grid.x,
                grid.y,
                grid.z,
                BLOCK,
                1,
                1,
                0,
                self.stream.as_inner(),
                params.as_mut_ptr(),
                ptr::null_mut(),
            )
        };
        Error::check(k.name(), res)
    }

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

    /// Zeroes `len` entries at `at` (a launch; nothing for `len = 0`).
    pub(crate) fn fill_zero(&self, what: &'static str, at: Arg, len: usize) -> Result<(), Error> {
        self.launch(K::Fill, launch::elementwise(len), &[Arg::I(int(what, len)?), Arg::F(0.0), at])
    }

    /// The GEMM of the precision on `tile`. `patches`: the B operand is the
    /// packed patches (16-bit in the 16-bit modes); every other product
    /// (the `nn` convolutions, [`Cuda::matmul`]) has f32 operands, which the
    /// 16-bit modes multiply as [`Precision::Split`] does.
    fn gemm_kernel(&self, tile: Tile, patches: bool) -> K {
        let precision = match self.precision {
            Precision::Bf16Split | Precision::Bf16 | Precision::F16 if !patches => Precision::Split,
            p => p,
        };
        match (precision, tile) {
            (Precision::Exact, Tile::T64) => K::GemmF32x64,
            (Precision::Exact, Tile::T128) => K::GemmF32x128,
            (Precision::Split, Tile::T64) => K::Gemm3xTf32x64,
            (Precision::Split, Tile::T128) => K::Gemm3xTf32x128,
            (Precision::Fast, Tile::T64) => K::GemmTf32x64,
            (Precision::Fast, Tile::T128) => K::GemmTf32x128,
            (Precision::Bf16Split, Tile::T64) => K::GemmBf16x2x64,
            (Precision::Bf16Split, Tile::T128) => K::GemmBf16x2x128,
            (Precision::Bf16, Tile::T64) => K::GemmBf16x64,
            (Precision::Bf16, Tile::T128) => K::GemmBf16x128,
            (Precision::F16, Tile::T64) => K::GemmF16x64,
            (Precision::F16, Tile::T128) => K::GemmF16x128,
        }
    }

    /// `C (op)= A B` for `(m, n, k)`, with the operands given by strides:
    /// `A(i, k) = a[i*sam + k*sak]`, `B(k, j) = b[k*sbk + j*sbn]`, `C(i, j) =
    /// c[i*ldc + j]`. `allow_split` lets a long K be cut into chunks summed
    /// with atomic adds (then a [`Epilogue::Store`] zeroes C first).
    pub(crate) fn gemm(
        &self,
        dims: (usize, usize, usize),
        a: (Arg, usize, usize),
        b: (Arg, usize, usize),
        c: (Arg, usize),
        epilogue: Epilogue,
        allow_split: bool,
    ) -> Result<(), Error> {
        self.gemm_on(false, dims, a, b, c, epilogue, allow_split)
    }

    /// [`Cuda::gemm`] whose B operand is the packed patches when
    /// `patches` (then in the precision's element type).
    // The GEMM's operands are grouped already (sizes, each matrix with its
    // strides); what is left are two options, named at every call.
    #[allow(clippy::too_many_arguments)]
    fn gemm_on(
        &self,
        patches: bool,
        (m, n, k): (usize, usize, usize),
        (a, sam, sak): (Arg, usize, usize),
        (b, sbk, sbn): (Arg, usize, usize),
        (c, ldc): (Arg, usize),
        epilogue: Epilogue,
        allow_split: bool,
    ) -> Result<(), Error> {
        let plan = launch::gemm_plan(m, n, k, self.sms, allow_split && !matches!(epilogue, Epilogue::Scale(_)), self.tile)?;
        let (s, mode) = match epilogue {
            Epilogue::Store if plan.split() => {
                self.fill_zero("GEMM output", c, m.saturating_mul(ldc))?;
                (Arg::P(0), 2)
            }
            Epilogue::Store => (Arg::P(0), 0),
            Epilogue::Scale(s) => (s, 1),
            Epilogue::Add => (Arg::P(0), 2),
        };
        let i = |what, v| int(what, v).map(Arg::I);
        self.launch(
            self.gemm_kernel(plan.tile, patches),
            plan.grid,
            &[
                i("m", m)?,
                i("n", n)?,
                i("k", k)?,
                a,
                i("sam", sam)?,
                i("sak", sak)?,
                b,
                i("sbk", sbk)?,
                i("sbn", sbn)?,
                c,
                i("ldc", ldc)?,
                s,
                Arg::I(mode),
                i("kchunk", plan.kchunk)?,
            ],
        )
    }

    /// `U = (X V^T)` in layout `[R, N]`, times `lambda` when given.
    fn project_into(&self, p: &Patches<'_, Self>, v: &Buffer, lambda: Option<&Buffer>, u: &mut Buffer) -> Result<(), Error> {
        let g = Geom::of(p)?;
        let va = self.ptr("v", v, g.rows * g.cols)?;
        let xa = self.ptr("packed", p.packed, g.n * g.cols)?;
        let ua = self.ptr("u", u, g.rows * g.n)?;
        let epilogue = match lambda {
            Some(l) => Epilogue::Scale(self.ptr("lambda", l, g.rows * g.n)?),
            None => Epilogue::Store,
        };
        self.gemm_on(true, (g.rows, g.n, g.cols), (va, g.cols, 1), (xa, 1, g.cols), (ua, g.n), epilogue, false)
    }

    /// `G (+)= U X` for `U` in layout `[R, N]`; `accumulate` adds onto `g`.
    fn back_project_into(&self, p: &Patches<'_, Self>, u: &Buffer, g_out: &mut Buffer, accumulate: bool) -> Result<(), Error> {
        let g = Geom::of(p)?;
        let ua = self.ptr("u", u, g.rows * g.n)?;
        let xa = self.ptr("packed", p.packed, g.n * g.cols)?;
        let ga = self.ptr("g", g_out, g.rows * g.cols)?;
        let epilogue = if accumulate { Epilogue::Add } else { Epilogue::Store };
        self.gemm_on(true, (g.rows, g.cols, g.n), (ua, g.n, 1), (xa, g.cols, 1), (ga, g.cols), epilogue, true)
    }

    /// Packs the patches of `x` (checked by the caller) with the kernels
    /// `(abs_max, conv, linear)` of its element type and the packed one:
    /// the largest `|x|` into the gain slot (zeroed first), then the
    /// patches times its gain (frog-core's rescale of huge inputs), which
    /// the pack kernel also leaves in the slot for [`KfrogBackend::patch_gain`].
    pub(crate) fn pack_with(&self, layer: &Layer, r: usize, xa: Arg, (max_k, conv_k, rows_k): (K, K, K), packed: &mut Buffer) -> Result<(), Error> {
        let g = Geom::new(layer, r)?;
        let pa = self.ptr("packed", packed, patch_scratch_entries(layer, r))?;
        let slot = pa.offset(g.n * g.cols);
        let i = |what, v| int(what, v).map(Arg::I);
        let x_len = r.saturating_mul(layer.input_len());
        self.fill_zero("patch gain slot", slot, 1)?;
        self.launch(max_k, launch::elementwise(x_len), &[i("x entries", x_len)?, xa, slot])?;
        let grid = launch::elementwise(g.n * g.cols);
        match layer.kind {
            LayerKind::Conv2d(c) => crate::im2col::im2col(self, conv_k, crate::im2col::PatchRows { conv: &c, samples: r, cols: g.cols }, xa, pa, slot),
            LayerKind::Linear { d_in, .. } => self.launch(rows_k, grid, &[i("positions", g.n)?, i("d_in", d_in)?, i("cols", g.cols)?, xa, pa, slot]),
            // A kind added to frog-core after these kernels.
            _ => Err(Error::Kernel { name: "pack_patches", problem: "no kernel packs this layer kind" }),
        }
    }

    /// The Fisher weights from `y` (checked by the caller) with the kernel
    /// `k` of its element type.
    pub(crate) fn fisher_with(&self, p: &Patches<'_, Self>, (k, ya): (K, Arg), norms: &Buffer, c: FisherCoefs<f32>, out: FisherOut<'_, Self>) -> Result<(), Error> {
        let (FisherCoefs { scale, eps }, FisherOut { trace, lambda }) = (c, out);
        let g = Geom::of(p)?;
        let na = self.ptr("norms", norms, g.n)?;
        let ta = self.ptr("trace", trace, g.rows)?;
        let la = self.ptr("lambda", lambda, g.n * g.rows)?;
        let (sj, sl) = p.layer.output_strides();
        self.launch(
            k,
            launch::per_row(g.rows)?,
            &[
                Arg::I(int("r", p.r)?),
                Arg::I(int("rows", g.rows)?),
                Arg::I(int("positions", g.l)?),
                Arg::I(int("row stride", sj)?),
                Arg::I(int("position stride", sl)?),
                Arg::F(g.cols as f32),
                ya,
                na,
                Arg::F(scale),
                Arg::F(eps),
                ta,
                la,
            ],
        )
    }

    fn rows_cols(&self, rows: usize, cols: usize) -> Result<(Arg, Arg, usize), Error> {
        let n = rows.checked_mul(cols).ok_or(Error::TooLarge { what: "rows*cols", value: usize::MAX })?;
        int("rows*cols", n)?;
        Ok((Arg::I(int("rows", rows)?), Arg::I(int("cols", cols)?), n))
    }
}


/// A CUDA graph recorded by [`Cuda::capture`].
pub struct Graph {
    graph: cu::CUgraph,
    exec: cu::CUgraphExec,
    _owner: Arc<Owner>,
}

impl Drop for Graph {
    fn drop(&mut self) {
        // SAFETY: handles created by `Cuda::capture` and owned here; the
        // context is kept alive by `_owner`.
        unsafe {
            if !self.exec.is_null() {
                cu::cuGraphExecDestroy(self.exec);
            }
            if !self.graph.is_null() {
                cu::cuGraphDestroy(self.graph);
            }
        }
    }
}

/// Sizes of one step's patch products.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Geom {
    /// Rows `R`.
    pub rows: usize,
    /// Columns `D'`.
    pub cols: usize,
    /// Positions `N = r*L`.
    pub n: usize,
    /// Positions per sample `L`.
    pub l: usize,
}

impl Geom {
    pub(crate) fn new(layer: &Layer, r: usize) -> Result<Self, Error> {
        let (rows, cols, l) = (layer.rows(), layer.cols(), layer.positions());
        let n = r.checked_mul(l).ok_or(Error::TooLarge { what: "positions", value: usize::MAX })?;
        let g = Self { rows, cols, n, l };
        for (what, v) in [
            ("positions", n),
            ("patch entries", n.saturating_mul(cols)),
            ("Fisher weights", n.saturating_mul(rows)),
            ("rows*cols", rows.saturating_mul(cols)),
        ] {
            int(what, v)?;
        }
        Ok(g)
    }

    pub(crate) fn of(p: &Patches<'_, Cuda>) -> Result<Self, Error> {
        Self::new(p.layer, p.r)
    }
}

/// f32 words of the patch gain slot: the largest `|x|` of the sampled
/// inputs, then the gain `c` the patches were packed with (`kernels/frog.cu`).
const GAIN_SLOT: usize = 2;

/// Entries of the patch scratch: the im2col matrix `[r*L, D']` (f32 words
/// enough for it in every packed type), then the gain slot at word
/// `r*L*D'` (kept in f32 whatever the packed type).
pub(crate) fn patch_scratch_entries(layer: &Layer, r: usize) -> usize {
    r.saturating_mul(layer.positions()).saturating_mul(layer.cols()).saturating_add(GAIN_SLOT)
}

impl Backend for Cuda {
    type Scalar = f32;
    type Buffer = Buffer;
    type View<'a> = CudaView<'a>;
    type ViewMut<'a> = CudaViewMut<'a>;
    type Error = Error;

    fn zeros(&self, len: usize) -> Result<Buffer, Error> {
        int("buffer length", len)?;
        // SAFETY: the buffer is filled with zeros by a launch on the stream
        // before anything else on the stream can read it.
        let mem = unsafe { DeviceBuffer::<f32>::uninitialized(len) }.map_err(Error::driver("cuMemAlloc"))?;
        let b = Buffer { mem, owner: self.owner.clone() };
        self.fill_zero("buffer", Arg::P(b.device_ptr()), len)?;
        Ok(b)
    }

    fn len(&self, buf: &Buffer) -> usize {
        buf.len()
    }

    fn read(&self, src: &Buffer, offset: usize, dst: &mut [f32]) -> Result<(), Error> {
        let Arg::P(base) = self.ptr("src", src, offset.saturating_add(dst.len()))? else { unreachable!() };
        if dst.is_empty() {
            return self.synchronize();
        }
        // SAFETY: the range was checked above; the copy completes before
        // the synchronize returns, while `dst` is borrowed.
        let res = unsafe {
            cu::cuMemcpyDtoHAsync_v2(
                dst.as_mut_ptr() as *mut c_void,
                base + (offset * 4) as u64,
                std::mem::size_of_val(dst),
                self.stream.as_inner(),
            )
        };
        Error::check("cuMemcpyDtoHAsync", res)?;
        self.synchronize()
    }

    fn write(&self, src: &[f32], dst: &mut Buffer, offset: usize) -> Result<(), Error> {
        let Arg::P(base) = self.ptr("dst", dst, offset.saturating_add(src.len()))? else { unreachable!() };
        if src.is_empty() {
            return Ok(());
        }
        // SAFETY: the range was checked above; the copy completes before
        // the synchronize returns, while `src` is borrowed.
        let res = unsafe {
            cu::cuMemcpyHtoDAsync_v2(base + (offset * 4) as u64, src.as_ptr() as *const c_void, std::mem::size_of_val(src), self.stream.as_inner())
        };
        Error::check("cuMemcpyHtoDAsync", res)?;
        self.synchronize()
    }

    fn patch_scratch_len(&self, layer: &Layer, r: usize) -> usize {
        patch_scratch_entries(layer, r)
    }

    fn view<'a>(&self, buf: &'a Buffer, offset: usize, len: usize) -> Result<CudaView<'a>, Error> {
        self.part("view", buf, offset, len)
    }

    fn view_mut<'a>(&self, buf: &'a mut Buffer, offset: usize, len: usize) -> Result<CudaViewMut<'a>, Error> {
        Ok(CudaViewMut::new(self.part("view_mut", buf, offset, len)?))
    }

    fn reborrow<'b>(&self, v: &'b CudaViewMut<'_>) -> CudaView<'b> {
        v.view()
    }

    fn reborrow_view<'b>(&self, v: &'b CudaView<'_>) -> CudaView<'b> {
        *v
    }

    fn view_len(&self, v: &CudaView<'_>) -> usize {
        v.len()
    }

    fn pack_patches(&self, layer: &Layer, r: usize, x: &CudaView<'_>, packed: &mut Buffer) -> Result<(), Error> {
        let xa = x.arg(self, "x", r.saturating_mul(layer.input_len()))?;
        // A 16-bit mode packs (rounds) the f32 inputs in its element type.
        let (conv, rows) = match self.precision.packed() {
            Packed::F32 => (K::Im2col, K::PackRows),
            Packed::Bf16 => (K::Im2colF32Bf16, K::PackRowsF32Bf16),
            Packed::F16 => (K::Im2colF32F16, K::PackRowsF32F16),
        };
        self.pack_with(layer, r, xa, (K::InputAbsMax, conv, rows), packed)
    }

    fn patch_sq_norms(&self, p: &Patches<'_, Self>, norms: &mut Buffer) -> Result<(), Error> {
        let g = Geom::of(p)?;
        let xa = self.ptr("packed", p.packed, g.n * g.cols)?;
        let na = self.ptr("norms", norms, g.n)?;
        let k = match self.precision.packed() {
            Packed::F32 => K::PatchSqNorms,
            Packed::Bf16 => K::PatchSqNormsBf16,
            Packed::F16 => K::PatchSqNormsF16,
        };
        self.launch(k, launch::per_warp(g.n), &[Arg::I(int("positions", g.n)?), Arg::I(int("cols", g.cols)?), xa, na])
    }

    fn fisher_weights(&self, p: &Patches<'_, Self>, y: &CudaView<'_>, norms: &Buffer, c: FisherCoefs<f32>, out: FisherOut<'_, Self>) -> Result<(), Error> {
        let g = Geom::of(p)?;
        let ya = y.arg(self, "y", g.n * g.rows)?;
        self.fisher_with(p, (K::FisherWeights, ya), norms, c, out)
    }

    fn project(&self, p: &mut Patches<'_, Self>, v: &Buffer, u: &mut Buffer) -> Result<(), Error> {
        self.project_into(p, v, None, u)
    }

    fn back_project(&self, p: &mut Patches<'_, Self>, u: &Buffer, g: &mut Buffer) -> Result<(), Error> {
        self.back_project_into(p, u, g, false)
    }

    fn axpby(&self, n: usize, a: f32, x: &CudaView<'_>, b: f32, y: &mut CudaViewMut<'_>) -> Result<(), Error> {
        let xa = x.arg(self, "x", n)?;
        let ya = y.arg(self, "y", n)?;
        self.launch(K::Axpby, launch::elementwise(n), &[Arg::I(int("n", n)?), Arg::F(a), xa, Arg::F(b), ya])
    }

    fn mul_assign(&self, n: usize, a: &mut Buffer, b: &Buffer) -> Result<(), Error> {
        let aa = self.ptr("a", a, n)?;
        let ba = self.ptr("b", b, n)?;
        self.launch(K::MulAssign, launch::elementwise(n), &[Arg::I(int("n", n)?), aa, ba])
    }

    fn copy_strided(&self, shape: Shape, src: &CudaView<'_>, src_at: Strided, dst: &mut Buffer, dst_at: Strided) -> Result<(), Error> {
        let Shape { rows, cols } = shape;
        let (r, c, n) = self.rows_cols(rows, cols)?;
        let sa = src.arg(self, "src", src_at.end(rows, cols))?;
        let da = self.ptr("dst", dst, dst_at.end(rows, cols))?;
        let i = |what, v| int(what, v).map(Arg::I);
        self.launch(
            K::CopyStrided,
            launch::elementwise(n),
            &[r, c, sa, i("src stride", src_at.stride)?, i("src offset", src_at.offset)?, da, i("dst stride", dst_at.stride)?, i("dst offset", dst_at.offset)?],
        )
    }

    fn row_dots(&self, shape: Shape, a: &Buffer, b: &Buffer, out: &mut Buffer) -> Result<(), Error> {
        let Shape { rows, cols } = shape;
        let (r, c, n) = self.rows_cols(rows, cols)?;
        let (aa, ba, oa) = (self.ptr("a", a, n)?, self.ptr("b", b, n)?, self.ptr("out", out, rows)?);
        self.launch(K::RowDots, launch::per_row(rows)?, &[r, c, aa, ba, oa])
    }

    fn row_rescale(&self, shape: Shape, v: &mut Buffer) -> Result<(), Error> {
        let Shape { rows, cols } = shape;
        let (r, c, n) = self.rows_cols(rows, cols)?;
        let va = self.ptr("v", v, n)?;
        self.launch(K::RowRescale, launch::per_row(rows)?, &[r, c, va])
    }

    fn row_div(&self, rows: usize, num: &Buffer, den: &Buffer, eps: f32, out: &mut Buffer) -> Result<(), Error> {
        let (na, da, oa) = (self.ptr("num", num, rows)?, self.ptr("den", den, rows)?, self.ptr("out", out, rows)?);
        self.launch(K::RowDiv, launch::elementwise(rows), &[Arg::I(int("rows", rows)?), na, da, Arg::F(eps), oa])
    }

    fn row_rsqrt(&self, rows: usize, x: &Buffer, eps: f32, out: &mut Buffer) -> Result<(), Error> {
        let (xa, oa) = (self.ptr("x", x, rows)?, self.ptr("out", out, rows)?);
        self.launch(K::RowRsqrt, launch::elementwise(rows), &[Arg::I(int("rows", rows)?), xa, Arg::F(eps), oa])
    }

    fn row_axpy(&self, shape: Shape, a: f32, coef: &Buffer, x: &Buffer, y: &mut Buffer) -> Result<(), Error> {
        let Shape { rows, cols } = shape;
        let (r, c, n) = self.rows_cols(rows, cols)?;
        let (ca, xa, ya) = (self.ptr("coef", coef, rows)?, self.ptr("x", x, n)?, self.ptr("y", y, n)?);
        self.launch(K::RowAxpy, launch::elementwise(n), &[r, c, Arg::F(a), ca, xa, ya])
    }

    fn row_xpby(&self, shape: Shape, x: &Buffer, coef: &Buffer, y: &mut Buffer) -> Result<(), Error> {
        let Shape { rows, cols } = shape;
        let (r, c, n) = self.rows_cols(rows, cols)?;
        let (xa, ca, ya) = (self.ptr("x", x, n)?, self.ptr("coef", coef, rows)?, self.ptr("y", y, n)?);
        self.launch(K::RowXpby, launch::elementwise(n), &[r, c, xa, ca, ya])
    }

    fn row_step(&self, shape: Shape, w: &mut CudaViewMut<'_>, c: StepCoefs<f32>, scale: &Buffer, z: &Buffer, z_at: Strided) -> Result<(), Error> {
        let (Shape { rows, cols }, StepCoefs { decay, lr }) = (shape, c);
        let (r, c, n) = self.rows_cols(rows, cols)?;
        let wa = w.arg(self, "w", n)?;
        let sa = self.ptr("scale", scale, rows)?;
        let za = self.ptr("z", z, z_at.end(rows, cols))?;
        self.launch(
            K::RowStep,
            launch::elementwise(n),
            &[r, c, wa, Arg::F(decay), Arg::F(lr), sa, za, Arg::I(int("z stride", z_at.stride)?), Arg::I(int("z offset", z_at.offset)?)],
        )
    }

    /// Three launches: `out = tau*v`, `U = lambda .* (X V^T)` (the scaling
    /// fused into the GEMM's epilogue), `out += U X` (split-K GEMM).
    fn fisher_matvec(&self, p: &mut Patches<'_, Self>, lambda: &Buffer, tau: f32, v: &Buffer, u: &mut Buffer, out: &mut Buffer) -> Result<(), Error> {
        let n = p.layer.rows() * p.layer.cols();
        self.axpby(n, tau, &self.view(v, 0, n)?, 0.0, &mut self.view_mut(out, 0, n)?)?;
        self.project_into(p, v, Some(lambda), u)?;
        self.back_project_into(p, u, out, true)
    }

    /// The matvec, then one fused per-row kernel for every CG update.
    fn cg_iteration(&self, p: &mut Patches<'_, Self>, lambda: &Buffer, tau: f32, eps: f32, cg: &mut CgBuffers<'_, Self>) -> Result<(), Error> {
        let (rows, cols) = (p.layer.rows(), p.layer.cols());
        self.fisher_matvec(p, lambda, tau, cg.pd, cg.u, cg.ap)?;
        let (r, c, n) = self.rows_cols(rows, cols)?;
        let rho = self.ptr("rho", cg.rho, rows)?;
        let ap = self.ptr("ap", cg.ap, n)?;
        let pd = self.ptr("pd", cg.pd, n)?;
        let z = self.ptr("z", cg.z, n)?;
        let rs = self.ptr("rs", cg.rs, n)?;
        self.launch(K::CgUpdate, launch::per_row(rows)?, &[r, c, Arg::F(eps), rho, ap, pd, z, rs])
    }
}

impl GuardBackend for Cuda {
    fn row_guard(&self, shape: Shape, guard: Guard, m: &Buffer, trace: &Buffer, out: RowGuardOut<'_, Self>) -> Result<(), Error> {
        let (Shape { rows, cols }, RowGuardOut { z, row_scale, flags }) = (shape, out);
        let (r, c, n) = self.rows_cols(rows, cols)?;
        let (ma, za) = (self.ptr("m", m, n)?, self.ptr("z", z, n)?);
        let (ta, sa, fa) = (self.ptr("trace", trace, rows)?, self.ptr("row_scale", row_scale, rows)?, self.ptr("flags", flags, rows)?);
        let fix = |on: bool| Arg::I(i32::from(on));
        self.launch(K::RowGuard, launch::per_row(rows)?, &[r, c, fix(guard.nonfinite), fix(guard.dead_rows), ma, ta, za, sa, fa])
    }
}

impl AdamBackend for Cuda {
    fn adamw_update(&self, n: usize, c: &AdamCoefs<f32>, param: &mut Buffer, grad: &Buffer, moments: AdamMoments<'_, Self>) -> Result<(), Error> {
        let AdamMoments { m, v, vmax } = moments;
        let (pa, ga, ma, va) = (self.ptr("param", param, n)?, self.ptr("grad", grad, n)?, self.ptr("m", m, n)?, self.ptr("v", v, n)?);
        let vmaxa = match vmax {
            Some(b) => self.ptr("vmax", b, n)?,
            None => Arg::P(0),
        };
        let f = Arg::F;
        let args = [Arg::I(int("n", n)?), f(c.decay), f(c.one_minus_beta1), f(c.beta2), f(c.one_minus_beta2), f(c.step_size), f(c.bias_correction2_sqrt), f(c.eps), pa, ga, ma, va, vmaxa];
        self.launch(K::AdamwUpdate, launch::elementwise(n), &args)
    }
}

impl KfrogBackend for Cuda {
    fn y_sq_sums(&self, layer: &Layer, r: usize, y: &Buffer, scale: f32, out: &mut Buffer) -> Result<(), Error> {
        let (rows, per) = (layer.rows(), layer.output_len());
        let ya = self.ptr("y", y, r.saturating_mul(per))?;
        let oa = self.ptr("out", out, rows)?;
        let (row_stride, pos_stride) = layer.output_strides();
        let i = |what, v| int(what, v).map(Arg::I);
        let args = [i("rows", rows)?, i("r", r)?, i("positions", layer.positions())?, i("per", per)?, i("row stride", row_stride)?, i("position stride", pos_stride)?, Arg::F(scale), ya, oa];
        self.launch(K::YSqSums, launch::per_row(rows)?, &args)
    }

    fn y_average(&self, rows: usize, fresh: f32, y_diag: &Buffer, keep: f32, avg: &mut Buffer) -> Result<(), Error> {
        let (ya, aa) = (self.ptr("y_diag", y_diag, rows)?, self.ptr("avg", avg, rows)?);
        self.launch(K::YAverage, launch::elementwise(rows), &[Arg::I(int("rows", rows)?), Arg::F(fresh), ya, Arg::F(keep), aa])
    }

    fn patch_col_norms(&self, p: &Patches<'_, Self>, scale: f32, out: &mut Buffer) -> Result<(), Error> {
        let g = Geom::of(p)?;
        let xa = self.ptr("packed", p.packed, g.n * g.cols)?;
        let oa = self.ptr("out", out, g.cols)?;
        let k = match self.precision.packed() {
            Packed::F32 => K::PatchColNorms,
            Packed::Bf16 => K::PatchColNormsBf16,
            Packed::F16 => K::PatchColNormsF16,
        };
        self.launch(k, launch::per_row(g.cols)?, &[Arg::I(int("positions", g.n)?), Arg::I(int("cols", g.cols)?), Arg::F(scale), xa, oa])
    }

    /// Copies the gain the pack kernel left in the scratch's gain slot.
    fn patch_gain(&self, p: &Patches<'_, Self>, out: &mut Buffer) -> Result<(), Error> {
        let g = Geom::of(p)?;
        let gain = self.ptr("packed", p.packed, patch_scratch_entries(p.layer, p.r))?.offset(g.n * g.cols + 1);
        let oa = self.ptr("out", out, 1)?;
        let one = Arg::I(1);
        self.launch(K::CopyStrided, launch::elementwise(1), &[one, one, gain, one, Arg::I(0), oa, one, Arg::I(0)])
    }

    fn fill(&self, n: usize, value: f32, buf: &mut Buffer) -> Result<(), Error> {
        let ba = self.ptr("buf", buf, n)?;
        self.launch(K::Fill, launch::elementwise(n), &[Arg::I(int("n", n)?), Arg::F(value), ba])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use frog_core::{BackendError, BackendErrorKind, Conv2d};

    /// The exact backend for `test`, or `None` where it is skipped
    /// ([`Cuda::for_check`]).
    fn device(test: &str) -> Option<Cuda> {
        Cuda::for_check(Precision::Exact, test).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn no_device_is_an_error_value() {
        match Cuda::new(Precision::Exact) {
            Ok(cuda) => println!("device present ({}): nothing to check here", cuda.device_name()),
            Err(e) => {
                println!("Cuda::new without a usable device: {e}");
                assert_eq!(e.kind(), BackendErrorKind::NoDevice, "{e}");
            }
        }
    }

    #[test]
    fn too_old_drivers_and_gpus_are_no_device_errors_naming_both_versions() {
        assert_eq!(check_support((11, 8), (8, 0)), Ok(()));
        assert_eq!(check_support((13, 0), (9, 0)), Ok(()));
        let e = check_support((11, 4), (8, 0)).unwrap_err();
        assert_eq!(e.kind(), BackendErrorKind::NoDevice);
        let text = e.to_string();
        assert!(text.contains("CUDA 11.4") && text.contains("CUDA 11.8") && text.contains("ISA 7.8"), "{text}");
        let e = check_support((12, 4), (7, 5)).unwrap_err();
        assert_eq!(e.kind(), BackendErrorKind::NoDevice);
        let text = e.to_string();
        assert!(text.contains("compute capability 7.5") && text.contains("compute capability 8.0"), "{text}");
    }

    /// On a device (or the emulator): a PTX the driver refuses is an error
    /// that carries the JIT compiler's log.
    #[test]
    fn gpu_module_load_failure_carries_the_jit_log() {
        let Some(cuda) = device("gpu_module_load_failure_carries_the_jit_log") else { return };
        cuda.make_current().unwrap();
        let e = Module::load("too_new", ".version 99.0\n.target sm_80\n.address_size 64\n").err().expect("ISA 99.0 must not load");
        println!("gpu_module_load_failure_carries_the_jit_log: {e}");
        match &e {
            Error::ModuleLoad { module: "too_new", log, .. } => assert!(!log.trim().is_empty(), "no JIT log: {e}"),
            other => panic!("not a module-load error: {other}"),
        }
    }

    /// On a device (or the emulator): every lane's fragments of the
    /// m16n8k8 TF32 mma, placed by the PTX ISA's formulas (the probe
    /// kernel), give the product the host computes, entry for entry.
    #[test]
    fn gpu_mma_fragments_follow_the_ptx_isa() {
        let Some(cuda) = device("gpu_mma_fragments_follow_the_ptx_isa") else { return };
        // Small distinct integers: exact in TF32 and in every sum, so any
        // misplaced fragment changes some output.
        let ints = |n: usize, seed: usize| (0..n).map(|i| ((i * 7 + seed) * 2_654_435_761usize % 17) as f32 - 8.0).collect::<Vec<_>>();
        let (a, b) = (ints(16 * 8, 3), ints(8 * 8, 11));
        let (ab, bb) = (cuda.upload(&a).unwrap(), cuda.upload(&b).unwrap());
        let cb = cuda.zeros(16 * 8).unwrap();
        let args = [cuda.ptr("a", &ab, 128).unwrap(), cuda.ptr("b", &bb, 64).unwrap(), cuda.ptr("c", &cb, 128).unwrap()];
        cuda.launch(K::MmaProbeTf32, Grid::x(1), &args).unwrap();
        let got = cuda.download(&cb, 128).unwrap();
        for m in 0..16 {
            for n in 0..8 {
                let want: f32 = (0..8).map(|k| a[m * 8 + k] * b[k * 8 + n]).sum();
                let lane = (m % 8) * 4 + n / 2;
                assert_eq!(got[m * 8 + n], want, "C({m}, {n}), held by lane {lane}");
            }
        }
        println!("gpu_mma_fragments_follow_the_ptx_isa: all 32 lanes' A, B and C fragments agree on {}", cuda.device_name());
    }

    /// On a device (or the emulator): the m16n8k16 bf16 and f16 mma, with
    /// every lane's fragments placed by the PTX ISA's formulas (the probe
    /// kernels, written independently of the GEMM tile), give the product
    /// the host computes, entry for entry.
    #[test]
    fn gpu_mma_k16_fragments_follow_the_ptx_isa() {
        let Some(cuda) = device("gpu_mma_k16_fragments_follow_the_ptx_isa") else { return };
        // Small distinct integers, exact in bf16 and f16 and in every sum.
        let ints = |n: usize, seed: usize| (0..n).map(|i| ((i * 7 + seed) * 2_654_435_761usize % 17) as f32 - 8.0).collect::<Vec<_>>();
        let (a, b) = (ints(16 * 16, 5), ints(16 * 8, 13));
        let (ab, bb) = (cuda.upload(&a).unwrap(), cuda.upload(&b).unwrap());
        for k in [K::MmaProbeBf16, K::MmaProbeF16] {
            let cb = cuda.zeros(16 * 8).unwrap();
            let args = [cuda.ptr("a", &ab, 256).unwrap(), cuda.ptr("b", &bb, 128).unwrap(), cuda.ptr("c", &cb, 128).unwrap()];
            cuda.launch(k, Grid::x(1), &args).unwrap();
            let got = cuda.download(&cb, 128).unwrap();
            for m in 0..16 {
                for n in 0..8 {
                    let want: f32 = (0..16).map(|k| a[m * 16 + k] * b[k * 8 + n]).sum();
                    assert_eq!(got[m * 8 + n], want, "{}: C({m}, {n}), held by lane {}", k.name(), (m % 8) * 4 + n / 2);
                }
            }
        }
        println!("gpu_mma_k16_fragments_follow_the_ptx_isa: bf16 and f16, all 32 lanes' A, B and C fragments agree on {}", cuda.device_name());
    }

    #[test]
    fn patch_scratch_is_im2col_sized() {
        let conv = Layer::conv2d(Conv2d::new(64, 64, 3, [32, 32]).padding(1), false);
        assert_eq!(patch_scratch_entries(&conv, 64), 64 * 1024 * 576 + GAIN_SLOT);
        let lin = Layer::linear_tokens(9, 5, 4, true);
        assert_eq!(patch_scratch_entries(&lin, 4), 4 * 4 * 10 + GAIN_SLOT);
        let g = Geom::new(&conv, 64).unwrap();
        assert_eq!((g.rows, g.cols, g.n, g.l), (64, 576, 65_536, 1024));
    }

    #[test]
    fn resnet18_layers_fit_32_bit_indexing() {
        // The largest ResNet-18 (CIFAR) conv layers at r = 64 and r = 512.
        for (c_in, c_out, hw) in [(64, 64, 32), (128, 128, 16), (256, 256, 8), (512, 512, 4), (3, 64, 32)] {
            let layer = Layer::conv2d(Conv2d::new(c_in, c_out, 3, [hw, hw]).padding(1), false);
            Geom::new(&layer, 64).unwrap();
            Geom::new(&layer, 512).unwrap();
        }
        let huge = Layer::conv2d(Conv2d::new(512, 512, 3, [256, 256]).padding(1), false);
        let e = Geom::new(&huge, 64).unwrap_err();
        assert!(matches!(e, Error::TooLarge { .. }));
        assert_eq!(e.kind(), BackendErrorKind::InvalidBuffer);
    }

    #[test]
    fn error_kinds() {
        let d = |code| Error::Driver { call: "x", code };
        assert_eq!(d(100).kind(), BackendErrorKind::NoDevice);
        assert_eq!(d(34).kind(), BackendErrorKind::NoDevice);
        assert_eq!(d(2).kind(), BackendErrorKind::OutOfMemory);
        assert_eq!(d(719).kind(), BackendErrorKind::Launch);
        assert_eq!(d(700).kind(), BackendErrorKind::Launch);
        assert_eq!(d(201).kind(), BackendErrorKind::InvalidBuffer);
        assert_eq!(Error::ForeignBuffer { what: "x" }.kind(), BackendErrorKind::DeviceMismatch);
        assert!(d(100).to_string().contains("CUDA_ERROR_NO_DEVICE"));
        // Codes of newer drivers, named after the driver API (35 is only
        // the runtime API's "insufficient driver").
        assert_eq!(d(46).kind(), BackendErrorKind::NoDevice);
        assert!(d(46).to_string().contains("CUDA_ERROR_DEVICE_UNAVAILABLE"));
        assert_eq!(d(226).kind(), BackendErrorKind::Launch);
        assert!(d(36).to_string().contains("CUDA_ERROR_CALL_REQUIRES_NEWER_DRIVER"));
        assert!(!d(35).to_string().contains("INSUFFICIENT_DRIVER"));
        let load = Error::ModuleLoad { module: "frog", code: 222, log: "ptxas fatal: Unsupported .version".into() };
        assert_eq!(load.kind(), BackendErrorKind::NoDevice);
        assert!(load.to_string().contains("JIT log: ptxas fatal"), "{load}");
    }
}
