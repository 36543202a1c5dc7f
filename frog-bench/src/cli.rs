//! Command-line parsing, by hand (a few flags do not need a parser crate's
//! compile time), into the settings of each subcommand.

use std::path::PathBuf;

use crate::error::{Error, Result};

/// The usage text of `--help`.
pub const HELP: &str = "\
frog-bench: FROG vs SGD time-to-accuracy on CIFAR-10

USAGE:
    frog-bench [study] [FLAGS]      run the study (the default)
    frog-bench throughput [FLAGS]   training samples/s of SGD and FROG steps
    frog-bench layers [FLAGS]       FROG step time per ResNet-18 conv layer
    frog-bench gpu-check [FLAGS]    the prepared GPU run (a --features cuda build)
    frog-bench help                 this text

STUDY: with no flags, the study for the device built in: on the CPU the
scaled-down study (resnet-small: widths 32/64/128, one block each; FROG
bs 128, s 16, lr 0.01 against SGD bs 128 and 512, lr 0.1; 6 epochs, lr x0.1
after epochs 3 and 5; 2000 test images; about 20 minutes on 2 cores).
--model resnet18 gives the original study (160 epochs, x0.1 after 80 and
120, FROG bs 512, s 64 against SGD bs 128 and 512, targets 88/90/92/94). With --optimizer, one
configuration with the flags below; without it, flags that set one
optimizer's settings are refused.
    --model NAME          resnet-small (CPU study) or resnet18 (the original's)
    --optimizer NAME      frog or sgd: run only this configuration
    --batch-size N        training batch size
    --sample N            FROG: samples per batch for the Fisher estimate
    --lr X                learning rate (FROG: of the preconditioned layers)
    --lr-other-ratio X    FROG: the plain-SGD parameters use lr * X
    --momentum X          momentum
    --nesterov            Nesterov momentum
    --weight-decay X      weight decay (FROG: decoupled; SGD: coupled)
    --cg-iters N          FROG: CG iterations per step
    --tau X               FROG: damping
    --tau-final X         FROG: final damping of a geometric schedule
    --tau-steps N         FROG: steps of that schedule
    --epochs N            epochs
    --milestones A,B,..   epochs after which lr is multiplied by --gamma
    --gamma X             the schedule's factor
    --targets A,B,..      test accuracies (percent) of the table
    --train-limit N       use the first N training images
    --test-limit N        use the first N test images
    --seed N              seed of init, shuffling, augmentation, sampling, synthetic data
    --threads N           CPU threads (0: all)
    --precision P         GPU GEMMs (a cuda build): exact, split (default) or fast
    --out DIR             where results go (default frog-results)
    --data DIR            CIFAR-10 binary directory (cifar-10-batches-bin);
                          else $FROG_DATA, else the cache, else a download,
                          else the synthetic set
    --synthetic           use the built-in synthetic set
    --no-download         do not try to download CIFAR-10

THROUGHPUT: --model, --batch-size (default 128), --sample (default 16),
    --steps N (timed steps, default 3), --threads, --precision.

LAYERS: --sample N (default 64), --iters N (default 4), --threads N, --json.

GPU-CHECK: every golden case on the GPU per precision ($FROG_GOLDEN_DIR),
    the GEMM's TFLOP/s per precision and tile, FROG's step over the
    ResNet-18 conv layers per precision and tile and from a CUDA graph,
    ResNet-18 training steps at batch 512 (SGD and FROG), PyTorch's step
    when python3 has torch.
    --steps N (timed repetitions, default 5), --sample N (default 64),
    --no-golden, --torch-script PATH (default
    frog-cuda/scripts/torch_resnet18_step.py).

A build with --features cuda runs the study and throughput on the GPU, and
the study defaults to --model resnet18. Its GEMMs (convolutions and FROG's
products) run in split 3xTF32 (f32 accuracy on tensor cores) unless
--precision says exact (f32 FMA) or fast (TF32, as PyTorch's cuDNN
convolutions by default).
";

/// `--optimizer`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OptName {
    /// FROG.
    Frog,
    /// torch SGD.
    Sgd,
}

/// `--precision`: the arithmetic of a GPU build's GEMMs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GpuPrecision {
    /// f32 FMA.
    Exact,
    /// 3xTF32 on tensor cores, close to f32.
    Split,
    /// TF32 on tensor cores.
    Fast,
}

impl std::str::FromStr for GpuPrecision {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "exact" => Ok(Self::Exact),
            "split" => Ok(Self::Split),
            "fast" => Ok(Self::Fast),
            other => Err(Error::new(format!("--precision: expected exact, split or fast, got `{other}`"))),
        }
    }
}

/// Every study flag as given; `None` where the default applies.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StudyArgs {
    pub model: Option<String>,
    pub optimizer: Option<OptName>,
    pub batch_size: Option<usize>,
    pub sample: Option<usize>,
    pub lr: Option<f64>,
    pub lr_other_ratio: Option<f64>,
    pub momentum: Option<f64>,
    pub nesterov: bool,
    pub weight_decay: Option<f64>,
    pub cg_iters: Option<usize>,
    pub tau: Option<f64>,
    pub tau_final: Option<f64>,
    pub tau_steps: Option<u64>,
    pub epochs: Option<usize>,
    pub milestones: Option<Vec<usize>>,
    pub gamma: Option<f64>,
    pub targets: Option<Vec<f64>>,
    pub train_limit: Option<usize>,
    pub test_limit: Option<usize>,
    pub seed: Option<u64>,
    pub threads: usize,
    pub precision: Option<GpuPrecision>,
    pub out: Option<PathBuf>,
    pub data: Option<PathBuf>,
    pub synthetic: bool,
    pub no_download: bool,
}

/// `throughput`'s flags.
#[derive(Clone, Debug, PartialEq)]
pub struct ThroughputFlags {
    pub model: String,
    pub batch_size: usize,
    pub sample: usize,
    pub steps: usize,
    pub threads: usize,
    pub precision: Option<GpuPrecision>,
}

/// A parsed command line.
#[derive(Clone, Debug, PartialEq)]
pub enum Command {
    /// Print the usage.
    Help,
    /// The study (or one configuration of it).
    Study(Box<StudyArgs>),
    /// `throughput`.
    Throughput(ThroughputFlags),
    /// `layers`: sample, iters, threads, json.
    Layers { sample: usize, iters: usize, threads: usize, json: bool },
    /// `gpu-check` (a `cuda` build): timed repetitions, FROG's sample,
    /// whether to run the golden cases, PyTorch's step script.
    GpuCheck { steps: usize, sample: usize, golden: bool, torch_script: PathBuf },
}

/// Walks `--flag value` / `--flag=value` pairs.
struct Flags<'a> {
    args: std::slice::Iter<'a, String>,
    pending: Option<String>,
}

impl Flags<'_> {
    /// The next flag name, with an inline `=value` kept for `value`.
    fn next_flag(&mut self) -> Result<Option<String>> {
        let Some(arg) = self.args.next() else { return Ok(None) };
        if !arg.starts_with("--") {
            return Err(Error::new(format!("unexpected argument `{arg}` (see --help)")));
        }
        match arg.split_once('=') {
            Some((name, value)) => {
                self.pending = Some(value.to_string());
                Ok(Some(name.to_string()))
            }
            None => Ok(Some(arg.clone())),
        }
    }

    fn value(&mut self, flag: &str) -> Result<String> {
        if let Some(v) = self.pending.take() {
            return Ok(v);
        }
        self.args.next().cloned().ok_or_else(|| Error::new(format!("{flag} needs a value")))
    }

    fn parse<T: std::str::FromStr>(&mut self, flag: &str, what: &str) -> Result<T> {
        let v = self.value(flag)?;
        v.parse().map_err(|_| Error::new(format!("{flag}: expected {what}, got `{v}`")))
    }

    fn count(&mut self, flag: &str) -> Result<usize> {
        self.parse(flag, "a whole number")
    }

    fn number(&mut self, flag: &str) -> Result<f64> {
        let v: f64 = self.parse(flag, "a number")?;
        if v.is_finite() {
            Ok(v)
        } else {
            Err(Error::new(format!("{flag}: expected a finite number, got `{v}`")))
        }
    }

    fn list<T: std::str::FromStr>(&mut self, flag: &str, what: &str) -> Result<Vec<T>> {
        let v = self.value(flag)?;
        v.split(',')
            .filter(|s| !s.is_empty())
            .map(|s| s.trim().parse().map_err(|_| Error::new(format!("{flag}: expected a comma-separated list of {what}, got `{v}`"))))
            .collect()
    }

    /// Refuses a value after a switch (`--nesterov=yes`).
    fn switch(&mut self, flag: &str) -> Result<bool> {
        match self.pending.take() {
            Some(v) => Err(Error::new(format!("{flag} takes no value, got `{v}`"))),
            None => Ok(true),
        }
    }
}

fn unknown(flag: &str, cmd: &str) -> Error {
    Error::new(format!("unknown flag {flag} for {cmd} (see --help)"))
}

fn parse_study(f: &mut Flags<'_>) -> Result<StudyArgs> {
    let mut a = StudyArgs::default();
    while let Some(flag) = f.next_flag()? {
        let fl = flag.as_str();
        match fl {
            "--model" => a.model = Some(f.value(fl)?),
            "--optimizer" => {
                a.optimizer = Some(match f.value(fl)?.as_str() {
                    "frog" => OptName::Frog,
                    "sgd" => OptName::Sgd,
                    other => return Err(Error::new(format!("--optimizer: expected frog or sgd, got `{other}`"))),
                })
            }
            "--batch-size" => a.batch_size = Some(f.count(fl)?),
            "--sample" => a.sample = Some(f.count(fl)?),
            "--lr" => a.lr = Some(f.number(fl)?),
            "--lr-other-ratio" => a.lr_other_ratio = Some(f.number(fl)?),
            "--momentum" => a.momentum = Some(f.number(fl)?),
            "--nesterov" => a.nesterov = f.switch(fl)?,
            "--weight-decay" => a.weight_decay = Some(f.number(fl)?),
            "--cg-iters" => a.cg_iters = Some(f.count(fl)?),
            "--tau" => a.tau = Some(f.number(fl)?),
            "--tau-final" => a.tau_final = Some(f.number(fl)?),
            "--tau-steps" => a.tau_steps = Some(f.parse(fl, "a whole number")?),
            "--epochs" => a.epochs = Some(f.count(fl)?),
            "--milestones" => a.milestones = Some(f.list(fl, "epochs")?),
            "--gamma" => a.gamma = Some(f.number(fl)?),
            "--targets" => a.targets = Some(f.list(fl, "percentages")?),
            "--train-limit" => a.train_limit = Some(f.count(fl)?),
            "--test-limit" => a.test_limit = Some(f.count(fl)?),
            "--seed" => a.seed = Some(f.parse(fl, "a whole number")?),
            "--threads" => a.threads = f.count(fl)?,
            "--precision" => a.precision = Some(f.value(fl)?.parse()?),
            "--out" => a.out = Some(PathBuf::from(f.value(fl)?)),
            "--data" => a.data = Some(PathBuf::from(f.value(fl)?)),
            "--synthetic" => a.synthetic = f.switch(fl)?,
            "--no-download" => a.no_download = f.switch(fl)?,
            _ => return Err(unknown(fl, "the study")),
        }
    }
    Ok(a)
}

fn parse_throughput(f: &mut Flags<'_>) -> Result<ThroughputFlags> {
    let mut t = ThroughputFlags { model: "resnet-small".into(), batch_size: 128, sample: 16, steps: 3, threads: 0, precision: None };
    while let Some(flag) = f.next_flag()? {
        let fl = flag.as_str();
        match fl {
            "--model" => t.model = f.value(fl)?,
            "--batch-size" => t.batch_size = f.count(fl)?,
            "--sample" => t.sample = f.count(fl)?,
            "--steps" => t.steps = f.count(fl)?,
            "--threads" => t.threads = f.count(fl)?,
            "--precision" => t.precision = Some(f.value(fl)?.parse()?),
            _ => return Err(unknown(fl, "throughput")),
        }
    }
    Ok(t)
}

fn parse_layers(f: &mut Flags<'_>, defaults: (usize, usize, usize, bool)) -> Result<Command> {
    let (mut sample, mut iters, mut threads, mut json) = defaults;
    while let Some(flag) = f.next_flag()? {
        let fl = flag.as_str();
        match fl {
            "--sample" => sample = f.count(fl)?,
            "--iters" => iters = f.count(fl)?,
            "--threads" => threads = f.count(fl)?,
            "--json" => json = f.switch(fl)?,
            _ => return Err(unknown(fl, "layers")),
        }
    }
    Ok(Command::Layers { sample, iters, threads, json })
}

fn parse_gpu_check(f: &mut Flags<'_>) -> Result<Command> {
    let (mut steps, mut sample, mut golden) = (5, 64, true);
    let mut torch_script = PathBuf::from("frog-cuda/scripts/torch_resnet18_step.py");
    while let Some(flag) = f.next_flag()? {
        let fl = flag.as_str();
        match fl {
            "--steps" => steps = f.count(fl)?,
            "--sample" => sample = f.count(fl)?,
            "--no-golden" => golden = !f.switch(fl)?,
            "--torch-script" => torch_script = PathBuf::from(f.value(fl)?),
            _ => return Err(unknown(fl, "gpu-check")),
        }
    }
    Ok(Command::GpuCheck { steps, sample, golden, torch_script })
}

/// Parses the arguments after the program name. `layers_defaults` are the
/// `layers` benchmark's own defaults (sample, iters, threads, json).
pub fn parse(args: &[String], layers_defaults: (usize, usize, usize, bool)) -> Result<Command> {
    if args.iter().any(|a| a == "--help" || a == "-h") {
        return Ok(Command::Help);
    }
    let (cmd, rest) = match args.first().map(String::as_str) {
        Some(c) if !c.starts_with('-') => (c, &args[1..]),
        _ => ("study", args),
    };
    let mut f = Flags { args: rest.iter(), pending: None };
    match cmd {
        "help" => Ok(Command::Help),
        "study" => parse_study(&mut f).map(|a| Command::Study(Box::new(a))),
        "throughput" => parse_throughput(&mut f).map(Command::Throughput),
        "layers" => parse_layers(&mut f, layers_defaults),
        "gpu-check" => parse_gpu_check(&mut f),
        other => Err(Error::new(format!("unknown command `{other}`; commands: study, throughput, layers, gpu-check, help"))),
    }
}
