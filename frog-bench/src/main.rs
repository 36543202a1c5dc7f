//! `frog-bench`: the study (default), `throughput`, `layers` and, in a
//! `cuda` build, `gpu-check`. A `cuda` build trains on the GPU and defaults
//! to the original study's ResNet-18; a CPU build to the scaled-down study.
//!
//! Exit status: 0 on success; 2 for a bad command line, whether clap
//! refuses it or a value is out of range (both are reported in clap's
//! format before any work starts); 1 when the run itself fails.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches};
use frog_bench::cli::{Cli, Command, GpuMuonPrecision, GpuPrecision};
use frog_bench::device::Device;
use frog_bench::error::Error;
use frog_bench::{layers, scaling, study, throughput};

#[cfg(not(feature = "cuda"))]
mod devices {
    use frog_bench::cli::{GpuCheckArgs, GpuMuonPrecision, GpuPrecision};
    use frog_bench::device::cpu::CpuDevice;
    use frog_bench::error::{Error, Result};

    /// The study's default model on this device.
    pub const DEFAULT_MODEL: &str = "resnet-small";

    /// Refuses settings this build cannot honour.
    pub fn check(precision: Option<GpuPrecision>, muon: Option<GpuMuonPrecision>) -> Result<()> {
        let gpu_only = |flag: &str, what: &str| Err(Error::new(format!("{flag} sets {what}; this build trains on the CPU (build with --features cuda)")));
        match (precision, muon) {
            (Some(_), _) => gpu_only("--precision", "the GPU's GEMMs"),
            (_, Some(_)) => gpu_only("--muon-precision", "Muon's arithmetic on the GPU"),
            (None, None) => Ok(()),
        }
    }

    /// The device the study and `throughput` train on.
    pub type Training = CpuDevice<f32>;

    /// The training device: the CPU, on `threads` threads.
    pub fn training(threads: usize, _: Option<GpuPrecision>, _: Option<GpuMuonPrecision>) -> Result<Training> {
        CpuDevice::new(threads).map_err(|e| Error::new(format!("--threads {threads}: {e}")))
    }

    pub fn gpu_check(_: &GpuCheckArgs) -> Result<()> {
        Err(Error::new("gpu-check needs a build with --features cuda"))
    }
}

#[cfg(feature = "cuda")]
mod devices {
    use frog_bench::cli::{GpuCheckArgs, GpuMuonPrecision, GpuPrecision};
    use frog_bench::device::cuda::CudaDevice;
    use frog_bench::error::{Error, Result};
    use frog_bench::gpu_check;
    use frog_cuda::{MuonPrecision, Precision};

    /// The study's default model on this device: the original's.
    pub const DEFAULT_MODEL: &str = "resnet18";

    /// Every setting is honoured on the GPU.
    pub fn check(_: Option<GpuPrecision>, _: Option<GpuMuonPrecision>) -> Result<()> {
        Ok(())
    }

    /// The device the study and `throughput` train on.
    pub type Training = CudaDevice;

    /// The training device: GPU 0, by default with split 3xTF32 GEMMs
    /// (f32 accuracy on tensor cores; plain TF32 misses the golden
    /// tolerance on rank-deficient rows such as ResNet-18's last stage at
    /// r = 64).
    /// Muon's Newton-Schulz iteration runs in f32 unless `muon` says bf16.
    pub fn training(_threads: usize, precision: Option<GpuPrecision>, muon: Option<GpuMuonPrecision>) -> Result<Training> {
        let mut dev = CudaDevice::new(match precision.unwrap_or(GpuPrecision::Split) {
            GpuPrecision::Exact => Precision::Exact,
            GpuPrecision::Split => Precision::Split,
            GpuPrecision::Fast => Precision::Fast,
        })?;
        dev.set_muon_precision(match muon.unwrap_or(GpuMuonPrecision::F32) {
            GpuMuonPrecision::F32 => MuonPrecision::F32,
            GpuMuonPrecision::Bf16 => MuonPrecision::Bf16,
        });
        Ok(dev)
    }

    pub fn gpu_check(a: &GpuCheckArgs) -> Result<()> {
        let args = gpu_check::GpuCheckArgs { steps: a.steps, sample: a.sample, golden: !a.no_golden, torch_script: a.torch_script.clone() };
        if gpu_check::run(&args)? {
            Ok(())
        } else {
            Err(Error::new("gpu-check: a required check failed (see the table)"))
        }
    }
}

/// How this process takes part in a study: alone, or as one of the ranks
/// `mpirun` started (a build with the `mpi` feature).
#[cfg(not(feature = "mpi"))]
mod ranks {
    use frog_bench::device::Device;
    use frog_bench::error::{Error, Result};
    use frog_bench::study::{self, Plan};

    /// This process, alone.
    pub struct World;

    impl World {
        /// Refuses a start by `mpirun` with more than one rank: each would
        /// run the whole study on its own and write the same folder.
        pub fn start() -> Result<Self> {
            let launched = ["PMI_SIZE", "OMPI_COMM_WORLD_SIZE"].iter().find_map(|k| std::env::var(k).ok()?.parse::<usize>().ok());
            match launched {
                Some(n) if n > 1 => Err(Error::new(format!("started as one of {n} MPI ranks, but this build has no MPI: build with --features mpi to train data-parallel"))),
                _ => Ok(Self),
            }
        }

        /// CPU threads when `--threads` is not given: all.
        pub fn default_threads(&self) -> usize {
            0
        }

        /// Runs the study in this process.
        pub fn study<D: Device>(&self, dev: &D, plan: &Plan) -> Result<()> {
            study::run(dev, plan).map(drop)
        }
    }
}

#[cfg(all(feature = "mpi", feature = "cuda"))]
compile_error!("frog-bench trains data-parallel on the CPU only (NCCL for the GPU device is not wired into the engine yet): build with either `mpi` or `cuda`");

#[cfg(all(feature = "mpi", not(feature = "cuda")))]
mod ranks {
    use frog_bench::device::cpu::CpuDevice;
    use frog_bench::error::{Error, Result};
    use frog_bench::study::{self, Plan};
    use frog_core::HostCollective;
    use frog_cpu::mpi::Mpi;

    /// MPI's world: every rank `mpirun` started (one without `mpirun`).
    pub struct World {
        comm: Mpi,
        /// Finalizes MPI when dropped, after `comm`.
        _universe: mpi::environment::Universe,
    }

    impl World {
        /// Initializes MPI.
        pub fn start() -> Result<Self> {
            let universe = mpi::initialize().ok_or_else(|| Error::new("MPI could not be initialized (or was already)"))?;
            Ok(Self { comm: Mpi::new(universe.world()), _universe: universe })
        }

        /// CPU threads when `--threads` is not given: all in one process,
        /// one per rank of a data-parallel run (the ranks share the cores).
        pub fn default_threads(&self) -> usize {
            usize::from(self.comm.size() > 1)
        }

        /// Runs the study as this rank.
        pub fn study(&self, dev: &CpuDevice<f32>, plan: &Plan) -> Result<()> {
            study::run_on(dev, &self.comm, plan).map(drop)
        }
    }
}

/// Why the command failed: its settings, or the run.
enum Failure {
    /// A value out of range or a setting this build refuses (exit 2).
    Usage(Error),
    /// The run failed (exit 1).
    Run(Error),
}

/// Checks everything the command line says, then runs it.
fn run(cmd: Command, data_from_env: bool) -> Result<(), Failure> {
    let check = |precision: Option<GpuPrecision>, muon: Option<GpuMuonPrecision>| devices::check(precision, muon).map_err(Failure::Usage);
    match cmd {
        Command::Study(a) => {
            let plan = study::plan::<<devices::Training as Device>::Scalar>(&a, data_from_env, devices::DEFAULT_MODEL).map_err(Failure::Usage)?;
            check(a.precision, a.muon_precision)?;
            let world = ranks::World::start().map_err(Failure::Run)?;
            let threads = a.threads.unwrap_or(world.default_threads());
            let dev = devices::training(threads, a.precision, a.muon_precision).map_err(Failure::Run)?;
            world.study(&dev, &plan).map_err(Failure::Run)?;
        }
        Command::Throughput(t) => {
            t.validate().map_err(Failure::Usage)?;
            check(t.precision, None)?;
            let dev = devices::training(t.threads, t.precision, None).map_err(Failure::Run)?;
            throughput::run(&dev, &t).map_err(Failure::Run)?;
        }
        Command::Layers(l) => {
            l.validate().map_err(Failure::Usage)?;
            layers::run(&l).map_err(|e| Failure::Run(Error::new(e)))?;
        }
        Command::Scaling(s) => scaling::run(&s),
        Command::GpuCheck(g) => {
            g.validate().map_err(Failure::Usage)?;
            devices::gpu_check(&g).map_err(Failure::Run)?;
        }
    }
    Ok(())
}

/// Reports `e` in clap's format, with the usage of subcommand `sub` (or
/// of the program), and exits with status 2 as clap's own errors do.
fn usage_error(sub: Option<&str>, e: Error) -> ! {
    let mut cli = Cli::command();
    cli.build();
    let mut cmd = sub.and_then(|s| cli.find_subcommand(s)).cloned().unwrap_or(cli);
    cmd.error(clap::error::ErrorKind::ValueValidation, e).exit()
}

fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let sub = matches.subcommand_name();
    // `--data` and `$FROG_DATA` are one setting, but an error names the one used.
    let study = matches.subcommand_matches("study").unwrap_or(&matches);
    let data_from_env = study.value_source("data") == Some(ValueSource::EnvVariable);
    match run(cli.into_command(), data_from_env) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(e)) => usage_error(sub, e),
        Err(Failure::Run(e)) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
