//! CIFAR-10's binary layout: records of 1 label byte and 3072 pixel bytes
//! (`[3, 32, 32]`, channel-major), 10000 per file.

use std::path::{Path, PathBuf};

use super::Images;
use crate::error::{Error, Result};

/// Bytes of one record.
pub const RECORD: usize = 1 + PIXELS;
/// Pixel bytes of one image.
pub const PIXELS: usize = 3 * 32 * 32;
/// Per-channel mean of CIFAR-10's training pixels (in [0, 1]): the
/// decimals the references normalize by (the original study's, airbench's
/// `CIFAR_MEAN`). In `f64`, as a float64 run of the references takes them
/// (the airbench golden case); the `f32` loaders round them once.
pub const MEAN: [f64; 3] = [0.4914, 0.4822, 0.4465];
/// Per-channel standard deviation of CIFAR-10's training pixels, as
/// [`MEAN`] (airbench's `CIFAR_STD`).
pub const STD: [f64; 3] = [0.2470, 0.2435, 0.2616];
/// The training files, any subset of which makes a training set.
pub const TRAIN_FILES: [&str; 5] = ["data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin", "data_batch_4.bin", "data_batch_5.bin"];
/// The test file.
pub const TEST_FILE: &str = "test_batch.bin";

/// Appends the records of one file to `out`, checking every record.
fn parse_file(path: &Path, out: &mut Images) -> Result<()> {
    let bytes = std::fs::read(path).map_err(|e| Error::new(format!("{}: cannot read: {e}", path.display())))?;
    if bytes.is_empty() {
        return Err(Error::new(format!("{}: empty file, expected records of {RECORD} bytes", path.display())));
    }
    if bytes.len() % RECORD != 0 {
        let offset = bytes.len() - bytes.len() % RECORD;
        return Err(Error::new(format!(
            "{}: truncated record at byte offset {offset}: {} bytes left, records are {RECORD} bytes (file size {})",
            path.display(),
            bytes.len() - offset,
            bytes.len()
        )));
    }
    for (i, rec) in bytes.chunks_exact(RECORD).enumerate() {
        if rec[0] > 9 {
            return Err(Error::new(format!(
                "{}: label {} above 9 at byte offset {} (record {i})",
                path.display(),
                rec[0],
                i * RECORD
            )));
        }
        out.labels.push(rec[0]);
        out.pixels.extend_from_slice(&rec[1..]);
    }
    Ok(())
}

/// The training set in `dir`: every `data_batch_{1..5}.bin` present (at
/// least one), in order.
pub fn load_train(dir: &Path) -> Result<Images> {
    let files: Vec<PathBuf> = TRAIN_FILES.iter().map(|f| dir.join(f)).filter(|p| p.exists()).collect();
    if files.is_empty() {
        return Err(Error::new(format!("{}: no CIFAR-10 training file (data_batch_1.bin .. data_batch_5.bin)", dir.display())));
    }
    let mut out = Images::default();
    for f in &files {
        parse_file(f, &mut out)?;
    }
    Ok(out)
}

/// The test set `dir/test_batch.bin`.
pub fn load_test(dir: &Path) -> Result<Images> {
    let path = dir.join(TEST_FILE);
    if !path.exists() {
        return Err(Error::new(format!("{}: missing (the CIFAR-10 test set)", path.display())));
    }
    let mut out = Images::default();
    parse_file(&path, &mut out)?;
    Ok(out)
}
