//! The CUDA driver, opened at run time.
//!
//! `cust` calls the driver's C functions by name, which would make every
//! binary that uses this crate need `libcuda.so.1` just to start: on a
//! machine without an NVIDIA driver it would fail in the dynamic loader,
//! before any code could report an error. So this module defines, under the
//! same names, every driver function the crate's code reaches, and forwards
//! each one to `libcuda.so.1` opened with `dlopen` on first use. The
//! definitions satisfy the linker, which then drops the driver library (it
//! links with `--as-needed`); without a driver every call answers
//! `CUDA_ERROR_NO_DEVICE`, and [`Cuda::new`](crate::Cuda::new) turns that
//! into an error value of kind `NoDevice`.
//!
//! A function that is missing here makes the linker record `libcuda.so.1`
//! again; `ci.sh` checks that the binaries do not need it.

#![allow(non_snake_case)]

use std::cell::Cell;
use std::ffi::{c_char, c_int, c_uint, c_ulonglong, c_void};
use std::sync::OnceLock;

use cust::sys::{
    cudaError_enum, CUcontext, CUdevice, CUdevice_attribute, CUdeviceptr, CUfunction, CUgraph, CUgraphExec, CUjit_option,
    CUmodule, CUresult, CUstream, CUstreamCaptureMode,
};

#[link(name = "dl")]
extern "C" {
    fn dlopen(filename: *const c_char, flags: c_int) -> *mut c_void;
    fn dlsym(handle: *mut c_void, symbol: *const c_char) -> *mut c_void;
}

/// `RTLD_NOW | RTLD_LOCAL` (glibc's values).
const RTLD_NOW_LOCAL: c_int = 2;

/// The driver library's handle, or null when it could not be opened.
struct Library(*mut c_void);

// SAFETY: a dlopen handle may be moved to any thread (it is a plain
// address that `dlsym` accepts from every thread).
unsafe impl Send for Library {}
// SAFETY: the handle is never changed after `dlopen`, and `dlsym` is
// thread-safe, so shared references may be used from any thread.
unsafe impl Sync for Library {}

thread_local! {
    /// Set while this thread opens the library: the executable's
    /// definitions below are visible to the library, so a call it made
    /// into them while loading must not wait for the load to finish.
    static OPENING: Cell<bool> = const { Cell::new(false) };
}

fn library() -> &'static Library {
    static LIB: OnceLock<Library> = OnceLock::new();
    LIB.get_or_init(|| {
        OPENING.set(true);
        // SAFETY: dlopen with a NUL-terminated name.
        let handle = unsafe { dlopen(c"libcuda.so.1".as_ptr(), RTLD_NOW_LOCAL) };
        OPENING.set(false);
        Library(handle)
    })
}

/// Whether the driver library could be opened.
pub(crate) fn available() -> bool {
    !library().0.is_null()
}

/// The address of `name` (NUL-terminated) in the driver, if it has it.
fn symbol(name: &str) -> Option<*mut c_void> {
    let lib = library();
    if lib.0.is_null() {
        return None;
    }
    // SAFETY: a live handle and a NUL-terminated name.
    let p = unsafe { dlsym(lib.0, name.as_ptr().cast()) };
    (!p.is_null()).then_some(p)
}

thread_local! {
    /// The code the driver returned to this thread's latest forwarded call,
    /// as the driver gave it (possibly one cust_raw's enum lacks).
    static LAST_CODE: Cell<c_int> = const { Cell::new(0) };
}

/// Whether cust_raw 0.11's `cudaError_enum` (CUDA 11.4's `cuda.h`) has a
/// variant of value `code`. Newer drivers return codes it lacks (46 device
/// unavailable, 226 contained, 36, 225, 402, 721, 810-812, 912-917...), and
/// such a value in the `#[repr(i32)]` enum would be undefined behaviour.
fn enum_has(code: c_int) -> bool {
    matches!(
        code,
        0..=8 | 34 | 100..=102 | 200..=202 | 205..=224 | 300..=304 | 400 | 401 | 500 | 600 | 700..=705 | 708..=720
            | 800..=809 | 900..=911 | 999
    )
}

/// The driver's return code as cust_raw's enum: codes the enum lacks become
/// `CUDA_ERROR_UNKNOWN`; the raw code stays readable through [`raw_code`].
fn to_result(code: c_int) -> CUresult {
    LAST_CODE.set(code);
    if enum_has(code) {
        // SAFETY: `code` is the value of one of the enum's variants.
        unsafe { std::mem::transmute::<c_int, CUresult>(code) }
    } else {
        cudaError_enum::CUDA_ERROR_UNKNOWN
    }
}

/// The driver's own code behind `code`, the result of this thread's latest
/// forwarded call: where it is `CUDA_ERROR_UNKNOWN`, standing for a code
/// cust_raw's enum lacks (or cust's own error type does), that code.
pub(crate) fn raw_code(code: u32) -> u32 {
    let last = LAST_CODE.get();
    if code == cudaError_enum::CUDA_ERROR_UNKNOWN as u32 && last != 0 {
        last as u32
    } else {
        code
    }
}

macro_rules! forward {
    ($($name:ident($($arg:ident: $ty:ty),*);)*) => {$(
        #[no_mangle]
        unsafe extern "C" fn $name($($arg: $ty),*) -> CUresult {
            // The driver's function returns a plain int (`CUresult` of the
            // installed driver's cuda.h), converted by `to_result`.
            type F = unsafe extern "C" fn($($ty),*) -> c_int;
            static ADDR: OnceLock<Option<F>> = OnceLock::new();
            if OPENING.get() {
                return cudaError_enum::CUDA_ERROR_NOT_INITIALIZED;
            }
            let f = ADDR.get_or_init(|| {
                // SAFETY: the driver's function of this name has the
                // signature of cuda.h, which cust_raw's bindings and these
                // parameters copy, returning an int.
                symbol(concat!(stringify!($name), "\0")).map(|p| unsafe { std::mem::transmute::<*mut c_void, F>(p) })
            });
            match f {
                // SAFETY: the caller upholds the driver function's contract.
                Some(f) => to_result(unsafe { f($($arg),*) }),
                None => cudaError_enum::CUDA_ERROR_NO_DEVICE,
            }
        }
    )*};
}

forward! {
    cuInit(flags: c_uint);
    cuDriverGetVersion(version: *mut c_int);
    cuDeviceGet(device: *mut CUdevice, ordinal: c_int);
    cuDeviceGetAttribute(pi: *mut c_int, attrib: CUdevice_attribute, dev: CUdevice);
    cuDeviceGetName(name: *mut c_char, len: c_int, dev: CUdevice);
    cuDevicePrimaryCtxRetain(pctx: *mut CUcontext, dev: CUdevice);
    cuDevicePrimaryCtxRelease_v2(dev: CUdevice);
    cuCtxSetCurrent(ctx: CUcontext);
    cuModuleLoadDataEx(module: *mut CUmodule, image: *const c_void, n: c_uint, options: *mut CUjit_option, values: *mut *mut c_void);
    cuModuleGetFunction(f: *mut CUfunction, module: CUmodule, name: *const c_char);
    cuModuleUnload(module: CUmodule);
    cuStreamCreateWithPriority(stream: *mut CUstream, flags: c_uint, priority: c_int);
    cuStreamDestroy_v2(stream: CUstream);
    cuStreamSynchronize(stream: CUstream);
    cuMemAlloc_v2(ptr: *mut CUdeviceptr, bytes: usize);
    cuMemFree_v2(ptr: CUdeviceptr);
    cuMemcpyHtoDAsync_v2(dst: CUdeviceptr, src: *const c_void, bytes: usize, stream: CUstream);
    cuMemcpyDtoHAsync_v2(dst: *mut c_void, src: CUdeviceptr, bytes: usize, stream: CUstream);
    cuLaunchKernel(
        f: CUfunction, gx: c_uint, gy: c_uint, gz: c_uint, bx: c_uint, by: c_uint, bz: c_uint, shared: c_uint,
        stream: CUstream, params: *mut *mut c_void, extra: *mut *mut c_void
    );
    cuStreamBeginCapture_v2(stream: CUstream, mode: CUstreamCaptureMode);
    cuStreamEndCapture(stream: CUstream, graph: *mut CUgraph);
    cuGraphInstantiateWithFlags(exec: *mut CUgraphExec, graph: CUgraph, flags: c_ulonglong);
    cuGraphLaunch(exec: CUgraphExec, stream: CUstream);
    cuGraphExecDestroy(exec: CUgraphExec);
    cuGraphDestroy(graph: CUgraph);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_the_enum_lacks_become_unknown_and_stay_readable() {
        // 46 (device unavailable) and 226 (contained) are CUDA 12 codes.
        for code in [46, 226, 36, 225, 402, 721, 810, 811, 812, 912, 917] {
            let res = to_result(code);
            assert_eq!(res, cudaError_enum::CUDA_ERROR_UNKNOWN);
            assert_eq!(raw_code(res as u32), code as u32);
        }
        let res = to_result(2);
        assert_eq!(res, cudaError_enum::CUDA_ERROR_OUT_OF_MEMORY);
        assert_eq!(raw_code(res as u32), 2);
        assert_eq!(raw_code(to_result(999) as u32), 999);
        // Spot checks of the enum's values against the ranges above.
        for e in [
            cudaError_enum::CUDA_ERROR_STUB_LIBRARY,
            cudaError_enum::CUDA_ERROR_UNSUPPORTED_EXEC_AFFINITY,
            cudaError_enum::CUDA_ERROR_ILLEGAL_STATE,
            cudaError_enum::CUDA_ERROR_COOPERATIVE_LAUNCH_TOO_LARGE,
            cudaError_enum::CUDA_ERROR_MPS_MAX_CONNECTIONS_REACHED,
            cudaError_enum::CUDA_ERROR_EXTERNAL_DEVICE,
        ] {
            assert!(enum_has(e as c_int), "{e:?}");
        }
    }
}
