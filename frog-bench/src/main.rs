//! `frog-bench`: the study (default), `throughput`, `layers` and, in a
//! `cuda` build, `gpu-check`. A `cuda` build trains on the GPU and defaults
//! to the original study's ResNet-18; a CPU build to the scaled-down study.

use frog_bench::cli::{self, Command};
use frog_bench::error::{Error, Result};
use frog_bench::layers::{self, LayersArgs};
use frog_bench::{study, throughput};

#[cfg(not(feature = "cuda"))]
mod devices {
    use frog_bench::cli::GpuPrecision;
    use frog_bench::device::cpu::CpuDevice;
    use frog_bench::error::{Error, Result};

    /// The study's default model on this device.
    pub const DEFAULT_MODEL: &str = "resnet-small";

    /// The training device: the CPU, on `threads` threads.
    pub fn training(threads: usize, precision: Option<GpuPrecision>) -> Result<CpuDevice<f32>> {
        match precision {
            None => CpuDevice::new(threads).map_err(|e| Error::new(format!("--threads {threads}: {e}"))),
            Some(_) => Err(Error::new("--precision sets the GPU's GEMMs; this build trains on the CPU (build with --features cuda)")),
        }
    }

    pub fn gpu_check(_: frog_bench::cli::Command) -> Result<()> {
        Err(frog_bench::error::Error::new("gpu-check needs a build with --features cuda"))
    }
}

#[cfg(feature = "cuda")]
mod devices {
    use frog_bench::cli::{Command, GpuPrecision};
    use frog_bench::device::cuda::CudaDevice;
    use frog_bench::error::{Error, Result};
    use frog_bench::gpu_check::{self, GpuCheckArgs};
    use frog_cuda::Precision;

    /// The study's default model on this device: the original's.
    pub const DEFAULT_MODEL: &str = "resnet18";

    /// The training device: GPU 0, by default with split 3xTF32 GEMMs
    /// (f32 accuracy on tensor cores; plain TF32 misses the golden
    /// tolerance on rank-deficient rows such as ResNet-18's last stage at
    /// r = 64).
    pub fn training(_threads: usize, precision: Option<GpuPrecision>) -> Result<CudaDevice> {
        CudaDevice::new(match precision.unwrap_or(GpuPrecision::Split) {
            GpuPrecision::Exact => Precision::Exact,
            GpuPrecision::Split => Precision::Split,
            GpuPrecision::Fast => Precision::Fast,
        })
    }

    pub fn gpu_check(cmd: Command) -> Result<()> {
        let Command::GpuCheck { steps, sample, golden, torch_script } = cmd else { unreachable!("only gpu-check comes here") };
        if gpu_check::run(&GpuCheckArgs { steps, sample, golden, torch_script })? {
            Ok(())
        } else {
            Err(Error::new("gpu-check: a required check failed (see the table)"))
        }
    }
}

fn run() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let l = LayersArgs::default();
    match cli::parse(&args, (l.sample, l.iters, l.threads, l.json))? {
        Command::Help => print!("{}", cli::HELP),
        Command::Study(a) => {
            let env_data = std::env::var_os("FROG_DATA").filter(|v| !v.is_empty()).map(Into::into);
            let plan = study::plan(&a, env_data, devices::DEFAULT_MODEL)?;
            study::run(&devices::training(a.threads, a.precision)?, &plan)?;
        }
        Command::Throughput(t) => {
            let args = throughput::ThroughputArgs { model: t.model, batch: t.batch_size, sample: t.sample, steps: t.steps };
            throughput::run(&devices::training(t.threads, t.precision)?, &args)?;
        }
        Command::Layers { sample, iters, threads, json } => layers::run(&LayersArgs { sample, iters, threads, json }).map_err(Error::new)?,
        cmd @ Command::GpuCheck { .. } => devices::gpu_check(cmd)?,
    }
    Ok(())
}

fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e}");
        std::process::exit(2);
    }
}
