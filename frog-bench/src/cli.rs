//! The command line, parsed by clap: the subcommands and every flag with
//! its help. Parsing only checks that each value has its type; the ranges
//! are checked by the settings' `validate` methods (`settings.rs`), which
//! do not depend on the parser.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::layers::LayersArgs;
use crate::scaling::ScalingArgs;
use crate::runfile::Settings;
use crate::settings::Schedule;

/// The study's description, after the flags in `--help`.
const STUDY_AFTER_HELP: &str = "\
A study is a run file (TOML): the model, the schedule and a list of configurations, each an \
optimizer with its settings and batch size. --run names a shipped one or a path; with no flags \
the study for the device built in: on the CPU `cpu`, the scaled-down study (resnet-small: \
widths 32/64/128, one block each; FROG bs 128, s 16, lr 0.01 against SGD bs 128 and 512, lr 0.1; \
6 epochs, lr x0.1 after epochs 3 and 5; 2000 test images; about 20 minutes on 2 cores). \
--model resnet18 gives `original`, the original study (160 epochs, x0.1 after 80 and 120, FROG \
bs 512, s 64 against SGD bs 128 and 512, targets 88/90/92/94). `compare` and `original-compare` \
add AdamW and K-FROG, and `compare` Muon. --model, --epochs, --milestones, --gamma, --targets, the \
limits, --seed, --seeds, --out and the data and device flags apply to every configuration; the \
optimizer flags need --config (the run's configuration of that name or label) or --optimizer (its \
first configuration of that optimizer), which run that configuration alone, with them.

--model airbench (or --run airbench) runs the CIFAR-10 speed record's recipe, airbench94_muon. Its \
runs (airbench: the record's Muon on the six filters; airbench-frog: FROG in its place; \
airbench-compare: Muon, FROG and Nesterov SGD) choose only what steps the filters, muon, frog or sgd \
with its settings; the epochs, batch, schedule and the other parameters' SGD are the recipe's, and \
--epochs, --milestones, --gamma and --batch-size are refused. Its table adds the final accuracy with \
test-time augmentation (TTA acc), the record's measure.

Every run, a configuration at one seed, writes its results file, OUT/runs/NAME-seed-S.json. The \
table, results.csv (a row per run), summary.csv (per configuration the mean and standard deviation \
over the seeds), results.json, curves.csv and the plots are made from every results file in --out, \
so runs made apart (--config NAME --seed S) add up to one study; a run whose configuration has \
other settings, or other data, than the runs already there is refused before it trains.

A build with --features cuda runs the study and throughput on the GPU, and the study defaults to \
--model resnet18. Its GEMMs run in split 3xTF32 (f32 accuracy on tensor cores) unless --precision \
says exact (f32 FMA) or fast (TF32, as PyTorch's cuDNN convolutions by default).

Exit status: 0 on success, 2 for a bad command line (a flag clap cannot parse or a value out of \
range), 1 when the run itself fails (data, device, training).";

/// `frog-bench`: the parsed command line.
#[derive(Clone, Debug, Parser)]
#[command(
    name = "frog-bench",
    version,
    about = "FROG vs SGD, AdamW, K-FROG and Muon time-to-accuracy on CIFAR-10",
    after_help = STUDY_AFTER_HELP,
    args_conflicts_with_subcommands = true,
    allow_negative_numbers = true,
    subcommand_help_heading = "Commands (study is the default)"
)]
pub struct Cli {
    /// A subcommand; none runs the study with the flags below.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// The study's flags when no subcommand is given.
    #[command(flatten)]
    pub study: StudyArgs,
}

impl Cli {
    /// The subcommand to run, `study` when none was named.
    pub fn into_command(self) -> Command {
        self.command.unwrap_or_else(|| Command::Study(Box::new(self.study)))
    }
}

/// The subcommands.
#[derive(Clone, Debug, PartialEq, Subcommand)]
pub enum Command {
    /// Run the study, or one configuration of it (the default)
    #[command(after_help = STUDY_AFTER_HELP, allow_negative_numbers = true)]
    Study(Box<StudyArgs>),
    /// Training samples/s of SGD, AdamW, FROG and K-FROG steps on generated batches
    Throughput(ThroughputArgs),
    /// FROG step time per ResNet-18 conv layer on frog-cpu
    Layers(LayersArgs),
    /// The paper model of data-parallel FROG (layer-sharded) against SGD and KAISA, 1 to 1024 GPUs
    Scaling(ScalingArgs),
    /// The prepared GPU run (a --features cuda build)
    #[command(
        long_about = "The prepared GPU run (a --features cuda build): every golden case on the GPU per \
        precision ($FROG_GOLDEN_DIR), the GEMM's TFLOP/s per precision and tile, FROG's step over the \
        ResNet-18 conv layers per precision and tile and from a CUDA graph, ResNet-18 training steps at \
        batch 512 (SGD and FROG), PyTorch's step when python3 has torch."
    )]
    GpuCheck(GpuCheckArgs),
}

/// `--optimizer`, and a run file's `optimizer`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OptName {
    // FROG.
    Frog,
    // torch SGD.
    Sgd,
    // torch AdamW.
    #[value(name = "adamw")]
    AdamW,
    // K-FROG, the original's Kronecker-factored variant.
    Kfrog,
    // Muon (official form) on the convolution filters, SGD on the rest.
    Muon,
}

/// `--precision`: the arithmetic of a GPU build's GEMMs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum GpuPrecision {
    // f32 FMA.
    Exact,
    // 3xTF32 on tensor cores, close to f32.
    Split,
    // TF32 on tensor cores.
    Fast,
}

/// `--muon-precision`: the arithmetic of Muon's Newton-Schulz iteration in
/// a GPU build.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum GpuMuonPrecision {
    // f32, as the golden cases.
    F32,
    // bfloat16 products accumulated in f32, as the references on a GPU.
    Bf16,
}

/// Every study flag as given; `None` where the study's default applies.
#[derive(Clone, Debug, Default, PartialEq, Args)]
pub struct StudyArgs {
    /// resnet-small (the CPU study), resnet18 (the original's) or airbench (the CIFAR-10 record's recipe)
    #[arg(long, value_name = "NAME")]
    pub model: Option<String>,
    /// The study's run file: cpu, original, compare, original-compare, airbench, airbench-frog,
    /// airbench-compare, or a path [default: cpu; original with --model resnet18, airbench with --model
    /// airbench]
    #[arg(long, value_name = "NAME|PATH")]
    pub run: Option<String>,
    /// Run only the run's first configuration of this optimizer, with the flags below
    #[arg(long, value_name = "NAME")]
    pub optimizer: Option<OptName>,
    /// Run only the run's configuration of this name or label, with the flags below
    #[arg(long, value_name = "NAME", conflicts_with = "optimizer")]
    pub config: Option<String>,
    /// Training batch size
    #[arg(long, value_name = "N")]
    pub batch_size: Option<usize>,
    /// FROG: samples per batch for the Fisher estimate; K-FROG: input samples
    #[arg(long, value_name = "N")]
    pub sample: Option<usize>,
    /// K-FROG: output-gradient samples, drawn independently
    #[arg(long, value_name = "N")]
    pub y_sample: Option<usize>,
    /// Learning rate (FROG: of the preconditioned layers; Muon: of its filters)
    #[arg(long, value_name = "X")]
    pub lr: Option<f64>,
    /// FROG: the plain-SGD parameters use lr * X
    #[arg(long, value_name = "X")]
    pub lr_other_ratio: Option<f64>,
    /// Momentum
    #[arg(long, value_name = "X")]
    pub momentum: Option<f64>,
    /// Nesterov momentum
    #[arg(long)]
    pub nesterov: bool,
    /// Weight decay (FROG, AdamW, Muon: decoupled; SGD: coupled)
    #[arg(long, value_name = "X")]
    pub weight_decay: Option<f64>,
    /// Muon: Newton-Schulz steps
    #[arg(long, value_name = "N")]
    pub ns_steps: Option<usize>,
    /// Muon: the learning rate of the SGD beside it (first conv, BatchNorm, classifier)
    #[arg(long, value_name = "X")]
    pub sgd_lr: Option<f64>,
    /// Muon: that SGD's momentum
    #[arg(long, value_name = "X")]
    pub sgd_momentum: Option<f64>,
    /// Muon: that SGD's Nesterov momentum
    #[arg(long)]
    pub sgd_nesterov: bool,
    /// Muon: that SGD's (coupled) weight decay
    #[arg(long, value_name = "X")]
    pub sgd_weight_decay: Option<f64>,
    /// AdamW: beta1
    #[arg(long, value_name = "X")]
    pub beta1: Option<f64>,
    /// AdamW: beta2
    #[arg(long, value_name = "X")]
    pub beta2: Option<f64>,
    /// AdamW: eps; K-FROG: damping
    #[arg(long, value_name = "X")]
    pub eps: Option<f64>,
    /// K-FROG: running-average decay of diag(Y^T Y)
    #[arg(long, value_name = "X")]
    pub y_momentum: Option<f64>,
    /// FROG, K-FROG: CG iterations per step
    #[arg(long, value_name = "N")]
    pub cg_iters: Option<usize>,
    /// FROG: damping
    #[arg(long, value_name = "X")]
    pub tau: Option<f64>,
    /// FROG: final damping of a geometric schedule
    #[arg(long, value_name = "X")]
    pub tau_final: Option<f64>,
    /// FROG: steps of that schedule
    #[arg(long, value_name = "N")]
    pub tau_steps: Option<u64>,
    /// Epochs
    #[arg(long, value_name = "N")]
    pub epochs: Option<usize>,
    /// Epochs after which lr is multiplied by --gamma
    #[arg(long, value_name = "A,B,..", value_delimiter = ',')]
    pub milestones: Option<Vec<usize>>,
    /// The schedule's factor
    #[arg(long, value_name = "X")]
    pub gamma: Option<f64>,
    /// Test accuracies (percent) of the table
    #[arg(long, value_name = "A,B,..", value_delimiter = ',')]
    pub targets: Option<Vec<f64>>,
    /// Use the first N training images
    #[arg(long, value_name = "N")]
    pub train_limit: Option<usize>,
    /// Use the first N test images
    #[arg(long, value_name = "N")]
    pub test_limit: Option<usize>,
    /// Seed of init, shuffling, augmentation and sampling (the first, with --seeds)
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,
    /// Runs of every configuration, seeds --seed, --seed + 1, ... [default: 1]
    #[arg(long, value_name = "N")]
    pub seeds: Option<usize>,
    /// CPU threads (0: all) [default: 0; 1 per rank under mpirun]
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
    /// GPU GEMMs (a cuda build): exact, split (default) or fast
    #[arg(long, value_name = "P")]
    pub precision: Option<GpuPrecision>,
    /// Muon's Newton-Schulz iteration on the GPU (a cuda build): f32 (default) or bf16 (the
    /// references' arithmetic)
    #[arg(long, value_name = "P")]
    pub muon_precision: Option<GpuMuonPrecision>,
    /// Where results go [default: frog-results]
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// CIFAR-10 binary directory (cifar-10-batches-bin); else the cache, else a download, else the
    /// synthetic set
    #[arg(long, value_name = "DIR", env = "FROG_DATA", hide_env_values = true)]
    pub data: Option<PathBuf>,
    /// Use the built-in synthetic set
    #[arg(long)]
    pub synthetic: bool,
    /// Do not try to download CIFAR-10
    #[arg(long)]
    pub no_download: bool,
}

impl StudyArgs {
    /// The flags that set one configuration's settings, as a run file's
    /// keys.
    pub fn settings(&self) -> Settings {
        Settings {
            label: None,
            name: None,
            optimizer: self.optimizer,
            batch_size: self.batch_size,
            sample: self.sample,
            y_sample: self.y_sample,
            lr: self.lr,
            lr_other_ratio: self.lr_other_ratio,
            momentum: self.momentum,
            nesterov: self.nesterov.then_some(true),
            weight_decay: self.weight_decay,
            ns_steps: self.ns_steps,
            sgd_lr: self.sgd_lr,
            sgd_momentum: self.sgd_momentum,
            sgd_nesterov: self.sgd_nesterov.then_some(true),
            sgd_weight_decay: self.sgd_weight_decay,
            cg_iters: self.cg_iters,
            tau: self.tau,
            tau_final: self.tau_final,
            tau_steps: self.tau_steps,
            y_momentum: self.y_momentum,
            beta1: self.beta1,
            beta2: self.beta2,
            eps: self.eps,
        }
    }

    /// The flags that set study-wide values (every configuration's).
    pub fn schedule(&self) -> Schedule<'_> {
        Schedule {
            model: self.model.as_deref(),
            epochs: self.epochs,
            milestones: self.milestones.as_deref(),
            gamma: self.gamma,
            targets: self.targets.as_deref(),
            train_limit: self.train_limit,
            test_limit: self.test_limit,
        }
    }
}

/// `throughput`'s flags.
#[derive(Clone, Debug, PartialEq, Args)]
pub struct ThroughputArgs {
    /// resnet-small or resnet18
    #[arg(long, value_name = "NAME", default_value = "resnet-small")]
    pub model: String,
    /// Training batch size
    #[arg(long, value_name = "N", default_value_t = 128)]
    pub batch_size: usize,
    /// FROG: samples per batch for the Fisher estimate
    #[arg(long, value_name = "N", default_value_t = 16)]
    pub sample: usize,
    /// K-FROG: input samples per batch (the compare study's 64 of 128)
    #[arg(long, value_name = "N", default_value_t = 64)]
    pub kfrog_sample: usize,
    /// Timed steps per optimizer (after one warm-up step)
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub steps: usize,
    /// CPU threads (0: all)
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub threads: usize,
    /// GPU GEMMs (a cuda build): exact, split (default) or fast
    #[arg(long, value_name = "P")]
    pub precision: Option<GpuPrecision>,
}

/// `gpu-check`'s flags.
#[derive(Clone, Debug, PartialEq, Args)]
pub struct GpuCheckArgs {
    /// Timed repetitions of each measurement
    #[arg(long, value_name = "N", default_value_t = 5)]
    pub steps: usize,
    /// FROG's sampled rows
    #[arg(long, value_name = "N", default_value_t = 64)]
    pub sample: usize,
    /// Skip the golden cases
    #[arg(long)]
    pub no_golden: bool,
    /// PyTorch's ResNet-18 step script (skipped when missing or without torch)
    #[arg(long, value_name = "PATH", default_value = "frog-cuda/scripts/torch_resnet18_step.py")]
    pub torch_script: PathBuf,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<Command, clap::Error> {
        Cli::try_parse_from(std::iter::once("frog-bench").chain(args.iter().copied())).map(Cli::into_command)
    }

    #[test]
    fn the_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn study_is_the_default_and_takes_the_same_flags() {
        // (`data` is `$FROG_DATA` when the environment sets it.)
        let Command::Study(none) = parse(&[]).unwrap() else { panic!("the study") };
        assert_eq!(StudyArgs { data: None, ..*none }, StudyArgs::default());
        let bare = parse(&["--epochs", "2", "--milestones", "1,2", "--optimizer=sgd", "--nesterov"]).unwrap();
        let named = parse(&["study", "--epochs", "2", "--milestones", "1,2", "--optimizer=sgd", "--nesterov"]).unwrap();
        assert_eq!(bare, named);
        let Command::Study(a) = bare else { panic!("the study") };
        assert_eq!((a.epochs, a.milestones, a.optimizer, a.nesterov), (Some(2), Some(vec![1, 2]), Some(OptName::Sgd), true));
        // A negative number is a value (for validation to refuse), not a flag.
        for args in [&["--tau", "-1"][..], &["study", "--momentum", "-0.5"]] {
            assert!(parse(args).is_ok(), "{args:?}");
        }
    }

    #[test]
    fn subcommands_have_their_defaults() {
        let Command::Throughput(t) = parse(&["throughput"]).unwrap() else { panic!("throughput") };
        assert_eq!((t.model.as_str(), t.batch_size, t.sample, t.kfrog_sample, t.steps, t.threads), ("resnet-small", 128, 16, 64, 3, 0));
        assert_eq!(parse(&["layers"]).unwrap(), Command::Layers(LayersArgs::default()));
        let Command::GpuCheck(g) = parse(&["gpu-check", "--no-golden"]).unwrap() else { panic!("gpu-check") };
        assert_eq!((g.steps, g.sample, g.no_golden), (5, 64, true));
    }

    #[test]
    fn study_flags_do_not_mix_with_another_subcommand() {
        assert!(parse(&["--epochs", "2", "layers"]).is_err());
        assert!(parse(&["layers", "--epochs", "2"]).is_err());
    }
}
