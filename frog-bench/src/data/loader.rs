//! Batches for training and evaluation, made on a worker thread so the
//! device never waits for them. A worker that fails (fails to start, or
//! stops before its last batch) is an error of the pass, never a short one.
//!
//! Training batches are shuffled and augmented as the original study does
//! (random 32x32 crop of the image padded by 4 zero pixels, random
//! horizontal flip), then normalized; all randomness comes from the seed
//! and the epoch number, so a run is reproducible.

use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;

use rand_xoshiro::rand_core::{RngCore, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

use super::cifar::{MEAN, PIXELS, STD};
use super::Images;
use crate::error::{Error, Result};
use crate::rand::below;

/// Zero padding of the random crop.
const PAD: usize = 4;
/// Batches made ahead of the consumer.
const AHEAD: usize = 3;

/// A batch on the host: normalized `[n, 3, 32, 32]` pixels and labels.
pub struct HostBatch {
    /// Pixels, `n * 3072`.
    pub x: Vec<f32>,
    /// Labels, `n`.
    pub labels: Vec<u8>,
}

impl HostBatch {
    /// Samples in the batch.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether the batch is empty.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
}

/// The batches of one pass over a set, made on a worker thread: `total()`
/// batches, or an error in their place when the worker failed.
pub struct Batches {
    rx: Receiver<HostBatch>,
    worker: Option<JoinHandle<()>>,
    count: usize,
    received: usize,
}

impl Batches {
    /// How many batches the pass yields.
    pub fn total(&self) -> usize {
        self.count
    }

    /// Why the worker stopped early: its panic message, when it panicked.
    /// Ends the pass.
    fn failure(&mut self) -> Error {
        let done = std::mem::replace(&mut self.received, self.count);
        let why = match self.worker.take().map(JoinHandle::join) {
            Some(Err(panic)) => panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "it panicked".into()),
            _ => "it stopped early".into(),
        };
        Error::new(format!("the batch loader thread failed after {done} of {} batches: {why}", self.count))
    }
}

impl Iterator for Batches {
    type Item = Result<HostBatch>;

    fn next(&mut self) -> Option<Result<HostBatch>> {
        if self.received == self.count {
            return None;
        }
        match self.rx.recv() {
            Ok(b) => {
                self.received += 1;
                Some(Ok(b))
            }
            Err(_) => Some(Err(self.failure())),
        }
    }
}

impl Drop for Batches {
    fn drop(&mut self) {
        // Unblock a worker waiting to send, then wait for it to stop.
        let (_, dead) = sync_channel(0);
        drop(std::mem::replace(&mut self.rx, dead));
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
    }
}

/// Writes image `src` (raw bytes) normalized to `dst`, cropped at offset
/// `(dy, dx)` of the padded image and mirrored if `flip`.
fn write_image(src: &[u8], dy: usize, dx: usize, flip: bool, dst: &mut [f32]) {
    for c in 0..3 {
        let (mean, std) = (MEAN[c] as f32, STD[c] as f32);
        let (scale, shift) = (1.0 / (255.0 * std), mean / std);
        let pad_value = -shift;
        for y in 0..32 {
            let sy = (y + dy).wrapping_sub(PAD);
            for x in 0..32 {
                let xx = if flip { 31 - x } else { x };
                let sx = (xx + dx).wrapping_sub(PAD);
                dst[c * 1024 + y * 32 + x] =
                    if sy < 32 && sx < 32 { f32::from(src[c * 1024 + sy * 32 + sx]) * scale - shift } else { pad_value };
            }
        }
    }
}

fn spawn(images: Arc<Images>, order: Vec<usize>, batch: usize, augment: Option<Xoshiro256PlusPlus>) -> Result<Batches> {
    let count = order.len().div_ceil(batch);
    let (tx, rx) = sync_channel(AHEAD);
    let worker = std::thread::Builder::new()
        .name("frog-bench-loader".into())
        .spawn(move || {
            let mut rng = augment;
            for idx in order.chunks(batch) {
                let mut b = HostBatch { x: vec![0.0; idx.len() * PIXELS], labels: Vec::with_capacity(idx.len()) };
                for (k, &i) in idx.iter().enumerate() {
                    let (dy, dx, flip) = match &mut rng {
                        Some(r) => (below(r, 2 * PAD + 1), below(r, 2 * PAD + 1), r.next_u64() >> 63 == 1),
                        None => (PAD, PAD, false),
                    };
                    write_image(&images.pixels[i * PIXELS..][..PIXELS], dy, dx, flip, &mut b.x[k * PIXELS..][..PIXELS]);
                    b.labels.push(images.labels[i]);
                }
                if tx.send(b).is_err() {
                    return;
                }
            }
        })
        .map_err(|e| Error::new(format!("cannot start the batch loader thread: {e}")))?;
    Ok(Batches { rx, worker: Some(worker), count, received: 0 })
}

/// One training epoch: a seeded shuffle, full batches only (the last
/// partial batch is dropped, as the original's `drop_last`), augmented.
pub fn train_batches(images: Arc<Images>, batch: usize, seed: u64, epoch: u64) -> Result<Batches> {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ epoch);
    let n = images.len();
    let mut order: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        order.swap(i, below(&mut rng, i + 1));
    }
    order.truncate(n / batch * batch);
    spawn(images, order, batch, Some(rng))
}

/// The whole set in order, unaugmented, the last batch possibly partial.
pub fn eval_batches(images: Arc<Images>, batch: usize) -> Result<Batches> {
    let order = (0..images.len()).collect();
    spawn(images, order, batch, None)
}
