//! [`Cuda`]: the device, its context and stream, bring-up (driver and GPU
//! checks, module loading), the kernel launch, and synchronization.

use std::cell::RefCell;
use std::ffi::c_void;
use std::ptr;
use std::sync::Arc;

use cust::context::Context;
use cust::device::{Device, DeviceAttribute};
use cust::stream::{Stream, StreamFlags};
use cust::sys as cu;
use frog_core::Backend;

use crate::buffer::{Buffer, Owner};
use crate::error::Error;
use crate::kernels::{Ptx, K};
use crate::launch::{self, int, Arg, Grid, Tile, BLOCK, MAX_ARGS};
use crate::precision::{MuonPrecision, Precision};

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
    pub(crate) stream: Stream,
    _modules: Vec<Module>,
    pub(crate) owner: Arc<Owner>,
    pub(crate) precision: Precision,
    pub(crate) muon_precision: MuonPrecision,
    pub(crate) tile: Option<Tile>,
    pub(crate) sms: u32,
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
            muon_precision: MuonPrecision::default(),
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

    /// The arithmetic of Muon's Newton-Schulz iteration (f32 unless set).
    pub fn muon_precision(&self) -> MuonPrecision {
        self.muon_precision
    }

    /// Changes the arithmetic of Muon's Newton-Schulz iteration.
    pub fn set_muon_precision(&mut self, precision: MuonPrecision) {
        self.muon_precision = precision;
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

    /// Zeroes `len` entries at `at` (a launch; nothing for `len = 0`).
    pub(crate) fn fill_zero(&self, what: &'static str, at: Arg, len: usize) -> Result<(), Error> {
        self.launch(K::Fill, launch::elementwise(len), &[Arg::I(int(what, len)?), Arg::F(0.0), at])
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use frog_core::{BackendError, BackendErrorKind};

    /// The exact backend for `test`, or `None` where it is skipped
    /// ([`Cuda::for_check`]).
    pub(crate) fn device(test: &str) -> Option<Cuda> {
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
}
