//! The data: CIFAR-10 from disk (found, cached or downloaded), or the
//! built-in synthetic set when there is none.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Error, Result};

pub mod cifar;
#[cfg(feature = "bench")]
mod download;
pub mod loader;
pub mod synthetic;

/// Images and labels of a set, raw bytes in CIFAR-10's layout.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Images {
    /// `n * 3072` bytes, `[3, 32, 32]` per image.
    pub pixels: Vec<u8>,
    /// `n` labels below 10.
    pub labels: Vec<u8>,
}

impl Images {
    /// Images in the set.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Keeps the first `n` images (all of them when `n` is larger).
    fn truncate(&mut self, n: usize) {
        let n = n.min(self.len());
        self.labels.truncate(n);
        self.pixels.truncate(n * cifar::PIXELS);
    }
}

/// A training and a test set and where they came from.
pub struct Data {
    /// Training images.
    pub train: Arc<Images>,
    /// Test images.
    pub test: Arc<Images>,
    /// Where they came from, for every output ("CIFAR-10 (dir)" or
    /// "SYNTHETIC ...").
    pub source: String,
    /// Whether this is the synthetic set.
    pub synthetic: bool,
}

/// Where to look for CIFAR-10.
#[derive(Clone, Debug, Default)]
pub struct DataOptions {
    /// `--data DIR`.
    pub dir: Option<PathBuf>,
    /// `$FROG_DATA`.
    pub env_dir: Option<PathBuf>,
    /// The cache directory (where a download is unpacked).
    pub cache: Option<PathBuf>,
    /// Whether to try downloading into the cache.
    pub download: bool,
    /// Use the synthetic set without looking.
    pub synthetic: bool,
    /// Seed of the synthetic set.
    pub seed: u64,
    /// Keep the first N training images.
    pub train_limit: Option<usize>,
    /// Keep the first N test images.
    pub test_limit: Option<usize>,
}

/// Training images of the synthetic set (as many as one CIFAR-10 file).
const SYNTHETIC_TRAIN: usize = 10_000;
/// Test images of the synthetic set.
const SYNTHETIC_TEST: usize = 2_000;

/// The default cache: `$XDG_CACHE_HOME/frog-bench`, else `~/.cache/frog-bench`.
pub fn default_cache() -> Option<PathBuf> {
    let xdg = std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()).map(PathBuf::from);
    xdg.or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache"))).map(|c| c.join("frog-bench"))
}

fn load_dir(dir: &Path) -> Result<(Images, Images)> {
    if !dir.is_dir() {
        return Err(Error::new(format!("{}: not a directory", dir.display())));
    }
    Ok((cifar::load_train(dir)?, cifar::load_test(dir)?))
}

fn finish(mut train: Images, mut test: Images, source: String, synthetic: bool, opts: &DataOptions) -> Result<Data> {
    if let Some(n) = opts.train_limit {
        train.truncate(n);
    }
    if let Some(n) = opts.test_limit {
        test.truncate(n);
    }
    if train.is_empty() || test.is_empty() {
        return Err(Error::new("--train-limit and --test-limit must leave at least one image"));
    }
    Ok(Data { train: Arc::new(train), test: Arc::new(test), source, synthetic })
}

fn synthetic(opts: &DataOptions) -> Result<Data> {
    let source = format!("SYNTHETIC 10-class set (seed {}), not CIFAR-10", opts.seed);
    let (train, test) = (synthetic::generate(opts.seed, 0, SYNTHETIC_TRAIN), synthetic::generate(opts.seed, 1, SYNTHETIC_TEST));
    finish(train, test, source, true, opts)
}

/// What tests and examples train on: CIFAR-10 from `$FROG_DATA` when it
/// is set (any subset of the training files, and the test file; a
/// directory without them is an error), else the synthetic set of `seed`.
/// Never the cache or a download, so a run depends on `FROG_DATA` alone;
/// the result's `source` says which set it is.
pub fn from_env(seed: u64, train_limit: Option<usize>, test_limit: Option<usize>) -> Result<Data> {
    let env_dir = std::env::var_os("FROG_DATA").filter(|v| !v.is_empty()).map(PathBuf::from);
    let synthetic = env_dir.is_none();
    load(&DataOptions { env_dir, synthetic, seed, train_limit, test_limit, ..DataOptions::default() })
}

/// Finds the data: `--data`, then `$FROG_DATA` (either, when given, must
/// hold CIFAR-10: a bad one is an error), then the cache, then a
/// download into the cache; when none works, says so on stderr in one line
/// and returns the synthetic set.
pub fn load(opts: &DataOptions) -> Result<Data> {
    if opts.synthetic {
        return synthetic(opts);
    }
    for (dir, what) in [(&opts.dir, "--data"), (&opts.env_dir, "FROG_DATA")] {
        if let Some(dir) = dir {
            let (train, test) = load_dir(dir).map_err(|e| Error::new(format!("{what}: {e}")))?;
            return finish(train, test, format!("CIFAR-10 ({})", dir.display()), false, opts);
        }
    }
    let why = match &opts.cache {
        None => "no cache directory (HOME unset)".to_string(),
        Some(cache) => {
            let dir = cache.join("cifar-10-batches-bin");
            match load_dir(&dir) {
                Ok((train, test)) => return finish(train, test, format!("CIFAR-10 ({})", dir.display()), false, opts),
                Err(_) if opts.download => match fetch(cache) {
                    Ok(()) => {
                        let (train, test) = load_dir(&dir)?;
                        return finish(train, test, format!("CIFAR-10 ({})", dir.display()), false, opts);
                    }
                    Err(e) => format!("none in {} and the download failed ({e})", cache.display()),
                },
                Err(_) => format!("none in {} and downloading is off", cache.display()),
            }
        }
    };
    eprintln!("no CIFAR-10 data: give --data DIR or set FROG_DATA to a cifar-10-batches-bin directory ({why}); running on the SYNTHETIC set instead");
    synthetic(opts)
}

/// Downloads CIFAR-10 into `cache`.
#[cfg(feature = "bench")]
fn fetch(cache: &Path) -> Result<()> {
    download::fetch(cache)
}

/// Without the `bench` feature there is no download (no HTTPS stack).
#[cfg(not(feature = "bench"))]
fn fetch(_: &Path) -> Result<()> {
    Err(Error::new("this build of frog-bench has no download (its feature `bench` is off)"))
}
