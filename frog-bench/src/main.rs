//! `frog-bench`: the study (default), `throughput` and `layers`.

use frog_bench::cli::{self, Command};
use frog_bench::device::cpu::CpuDevice;
use frog_bench::error::{Error, Result};
use frog_bench::layers::{self, LayersArgs};
use frog_bench::{study, throughput};

fn run() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let l = LayersArgs::default();
    match cli::parse(&args, (l.sample, l.iters, l.threads, l.json))? {
        Command::Help => print!("{}", cli::HELP),
        Command::Study(a) => {
            let env_data = std::env::var_os("FROG_DATA").filter(|v| !v.is_empty()).map(Into::into);
            let plan = study::plan(&a, env_data, "resnet-small")?;
            study::run(&CpuDevice::<f32>::new(a.threads), &plan)?;
        }
        Command::Throughput(t) => {
            let args = throughput::ThroughputArgs { model: t.model, batch: t.batch_size, sample: t.sample, steps: t.steps };
            throughput::run(&CpuDevice::<f32>::new(t.threads), &args)?;
        }
        Command::Layers { sample, iters, threads, json } => layers::run(&LayersArgs { sample, iters, threads, json }).map_err(Error::new)?,
    }
    Ok(())
}

fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e}");
        std::process::exit(2);
    }
}
