//! The backend's error values: every driver failure, foreign or short buffer
//! and PTX problem is an [`Error`], classified by [`BackendError::kind`].

use core::fmt;

use frog_core::{BackendError, BackendErrorKind};

/// A failure of the CUDA backend (failures may be added, so a `match`
/// needs a wildcard arm).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// A CUDA driver call failed with a `CUresult` code.
    Driver {
        /// The driver call or operation.
        call: &'static str,
        /// The raw `CUresult` code.
        code: u32,
    },
    /// A buffer made by another [`crate::Cuda`] (another context) was passed.
    ForeignBuffer {
        /// Which argument.
        what: &'static str,
    },
    /// A buffer is shorter than the operation's prefix.
    BufferTooShort {
        /// Which argument.
        what: &'static str,
        /// Entries the operation touches.
        needed: usize,
        /// Entries the buffer has.
        len: usize,
    },
    /// A size does not fit the kernels' 32-bit indexing (2^31 - 1 entries).
    TooLarge {
        /// Which size.
        what: &'static str,
        /// Its value.
        value: usize,
    },
    /// The driver is older than the embedded PTX needs, or the device's
    /// compute capability lower than its target (kind `NoDevice`: this
    /// machine cannot run the kernels).
    Unsupported {
        /// `"CUDA driver"` or `"GPU"`.
        what: &'static str,
        /// The driver's CUDA version, or the device's compute capability.
        found: (u32, u32),
        /// What the PTX needs (the same unit).
        needed: (u32, u32),
        /// What needs it, e.g. "PTX ISA 7.8".
        by: String,
    },
    /// The driver could not load a module of the embedded PTX.
    ModuleLoad {
        /// The module (`frog` or `nn`).
        module: &'static str,
        /// The raw `CUresult` code.
        code: u32,
        /// The JIT compiler's error log.
        log: String,
    },
    /// A 16-bit product mode was given 16-bit inputs of the other type.
    InputType {
        /// The inputs' type (`"bf16"` or `"f16"`).
        input: &'static str,
        /// The backend's precision.
        precision: crate::Precision,
    },
    /// A GPU test or check could not run on this machine, and
    /// `FROG_REQUIRE_GPU=1` makes that an error ([`crate::skip()`]).
    Skipped {
        /// The test or check.
        what: String,
        /// Why it could not run.
        why: String,
    },
    /// The embedded PTX lacks a kernel, or a launch's arguments do not match
    /// the kernel's signature.
    Kernel {
        /// The kernel.
        name: &'static str,
        /// What is wrong.
        problem: &'static str,
    },
}

/// `CUresult` codes this crate classifies (values from `cuda.h`).
pub(crate) mod code {
    pub const INVALID_VALUE: u32 = 1;
    pub const OUT_OF_MEMORY: u32 = 2;
    pub const NOT_INITIALIZED: u32 = 3;
    pub const DEINITIALIZED: u32 = 4;
    pub const STUB_LIBRARY: u32 = 34;
    pub const CALL_REQUIRES_NEWER_DRIVER: u32 = 36;
    pub const DEVICE_UNAVAILABLE: u32 = 46;
    pub const NO_DEVICE: u32 = 100;
    pub const INVALID_DEVICE: u32 = 101;
    pub const INVALID_CONTEXT: u32 = 201;
    pub const CONTEXT_ALREADY_CURRENT: u32 = 202;
    pub const NO_BINARY_FOR_GPU: u32 = 209;
    pub const INVALID_PTX: u32 = 218;
    pub const UNSUPPORTED_PTX_VERSION: u32 = 222;
    pub const CONTAINED: u32 = 226;
    pub const NOT_FOUND: u32 = 500;
    pub const ILLEGAL_ADDRESS: u32 = 700;
    pub const LAUNCH_OUT_OF_RESOURCES: u32 = 701;
    pub const LAUNCH_TIMEOUT: u32 = 702;
    pub const CONTEXT_IS_DESTROYED: u32 = 709;
    pub const ILLEGAL_INSTRUCTION: u32 = 715;
    pub const MISALIGNED_ADDRESS: u32 = 716;
    pub const INVALID_PC: u32 = 718;
    pub const LAUNCH_FAILED: u32 = 719;
    pub const STREAM_CAPTURE_UNSUPPORTED: u32 = 900;
    pub const STREAM_CAPTURE_INVALIDATED: u32 = 901;
    pub const UNKNOWN: u32 = 999;
}

/// A short name for a `CUresult` code.
pub fn code_name(c: u32) -> &'static str {
    use code::*;
    match c {
        INVALID_VALUE => "CUDA_ERROR_INVALID_VALUE",
        OUT_OF_MEMORY => "CUDA_ERROR_OUT_OF_MEMORY",
        NOT_INITIALIZED => "CUDA_ERROR_NOT_INITIALIZED",
        DEINITIALIZED => "CUDA_ERROR_DEINITIALIZED",
        STUB_LIBRARY => "CUDA_ERROR_STUB_LIBRARY",
        CALL_REQUIRES_NEWER_DRIVER => "CUDA_ERROR_CALL_REQUIRES_NEWER_DRIVER",
        DEVICE_UNAVAILABLE => "CUDA_ERROR_DEVICE_UNAVAILABLE",
        NO_DEVICE => "CUDA_ERROR_NO_DEVICE",
        INVALID_DEVICE => "CUDA_ERROR_INVALID_DEVICE",
        INVALID_CONTEXT => "CUDA_ERROR_INVALID_CONTEXT",
        CONTEXT_ALREADY_CURRENT => "CUDA_ERROR_CONTEXT_ALREADY_CURRENT",
        NO_BINARY_FOR_GPU => "CUDA_ERROR_NO_BINARY_FOR_GPU",
        INVALID_PTX => "CUDA_ERROR_INVALID_PTX",
        UNSUPPORTED_PTX_VERSION => "CUDA_ERROR_UNSUPPORTED_PTX_VERSION",
        CONTAINED => "CUDA_ERROR_CONTAINED",
        NOT_FOUND => "CUDA_ERROR_NOT_FOUND",
        ILLEGAL_ADDRESS => "CUDA_ERROR_ILLEGAL_ADDRESS",
        LAUNCH_OUT_OF_RESOURCES => "CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES",
        LAUNCH_TIMEOUT => "CUDA_ERROR_LAUNCH_TIMEOUT",
        CONTEXT_IS_DESTROYED => "CUDA_ERROR_CONTEXT_IS_DESTROYED",
        ILLEGAL_INSTRUCTION => "CUDA_ERROR_ILLEGAL_INSTRUCTION",
        MISALIGNED_ADDRESS => "CUDA_ERROR_MISALIGNED_ADDRESS",
        INVALID_PC => "CUDA_ERROR_INVALID_PC",
        LAUNCH_FAILED => "CUDA_ERROR_LAUNCH_FAILED",
        STREAM_CAPTURE_UNSUPPORTED => "CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED",
        STREAM_CAPTURE_INVALIDATED => "CUDA_ERROR_STREAM_CAPTURE_INVALIDATED",
        UNKNOWN => "CUDA_ERROR_UNKNOWN",
        _ => "CUDA error",
    }
}

impl Error {
    /// For `map_err` on a cust call: the driver's own code (see
    /// [`crate::driver::raw_code`]) where cust saw `CUDA_ERROR_UNKNOWN`.
    pub(crate) fn driver(call: &'static str) -> impl FnOnce(cust::error::CudaError) -> Error {
        move |e| Error::Driver { call, code: crate::driver::raw_code(e as u32) }
    }

    /// A direct driver call's result.
    pub(crate) fn check(call: &'static str, res: cust::sys::CUresult) -> Result<(), Error> {
        match crate::driver::raw_code(res as u32) {
            0 => Ok(()),
            code => Err(Error::Driver { call, code }),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Driver { call, code } => write!(f, "{call} failed: {} ({code})", code_name(*code)),
            Self::ForeignBuffer { what } => write!(f, "buffer `{what}` belongs to another CUDA backend (context)"),
            Self::BufferTooShort { what, needed, len } => {
                write!(f, "buffer `{what}` has {len} entries, the operation needs {needed}")
            }
            Self::TooLarge { what, value } => write!(f, "{what} = {value} exceeds the kernels' 32-bit indexing"),
            Self::Unsupported { what, found, needed, by } => {
                let unit = if *what == "GPU" { "compute capability" } else { "CUDA" };
                write!(f, "the {what} has {unit} {}.{}; {by} needs {unit} {}.{} or newer", found.0, found.1, needed.0, needed.1)
            }
            Self::ModuleLoad { module, code, log } => {
                write!(f, "loading the PTX module `{module}` failed: {} ({code})", code_name(*code))?;
                if log.trim().is_empty() { Ok(()) } else { write!(f, "; JIT log: {}", log.trim()) }
            }
            Self::Skipped { what, why } => write!(f, "{what} cannot run here: {why}; FROG_REQUIRE_GPU=1 makes that a failure, not a skip"),
            Self::Kernel { name, problem } => write!(f, "kernel `{name}`: {problem}"),
            Self::InputType { input, precision } => {
                write!(f, "{precision:?} products read patches of their own 16-bit type: {input} inputs need an f32 mode or that type's")
            }
        }
    }
}

impl std::error::Error for Error {}

impl BackendError for Error {
    fn kind(&self) -> BackendErrorKind {
        use code::*;
        match self {
            Self::Driver { code, .. } | Self::ModuleLoad { code, .. } => match *code {
                NO_DEVICE | INVALID_DEVICE | NOT_INITIALIZED | DEINITIALIZED | STUB_LIBRARY | CALL_REQUIRES_NEWER_DRIVER
                | DEVICE_UNAVAILABLE | UNSUPPORTED_PTX_VERSION | NO_BINARY_FOR_GPU => BackendErrorKind::NoDevice,
                OUT_OF_MEMORY => BackendErrorKind::OutOfMemory,
                ILLEGAL_ADDRESS | LAUNCH_OUT_OF_RESOURCES | LAUNCH_TIMEOUT | ILLEGAL_INSTRUCTION
                | MISALIGNED_ADDRESS | INVALID_PC | LAUNCH_FAILED | CONTAINED => BackendErrorKind::Launch,
                INVALID_CONTEXT | CONTEXT_IS_DESTROYED => BackendErrorKind::InvalidBuffer,
                _ => BackendErrorKind::Other,
            },
            Self::Unsupported { .. } | Self::Skipped { .. } => BackendErrorKind::NoDevice,
            Self::ForeignBuffer { .. } => BackendErrorKind::DeviceMismatch,
            Self::BufferTooShort { .. } => BackendErrorKind::InvalidBuffer,
            Self::TooLarge { .. } => BackendErrorKind::InvalidBuffer,
            Self::Kernel { .. } => BackendErrorKind::Launch,
            Self::InputType { .. } => BackendErrorKind::DtypeMismatch,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
