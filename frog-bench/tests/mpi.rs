//! The engine's data-parallel training on several ranks: run under
//! `mpirun -n P` (P of 2 and 3 in CI), every rank this program, with
//! frog-cpu's multi-rank harness (`frog-cpu/tests/ranks`).
//!
//! The reference is one process that computes what the ranks compute
//! together: per step, each shard's forward and backward passes in turn
//! (each shard's BatchNorm statistics its own, as on its rank), its
//! gradients scaled by its share of the batch and summed, its sampled
//! rows placed after the previous shards', then one single-process
//! optimizer step.

#[path = "../../frog-cpu/tests/ranks/mod.rs"]
mod ranks;

use frog_bench::arch::Arch;
use frog_bench::data::loader::HostBatch;
use frog_bench::data::{self, DataOptions};
use frog_bench::device::cpu::CpuDevice;
use frog_bench::device::LossStats;
use frog_bench::dist::{shard_of, DataParallel, GradSum};
use frog_bench::model::{Net, SampledRows};
use frog_bench::optim::{Method, Optimizer};
use frog_bench::train::{train_on, RunConfig, Staging};
use frog_core::{AdamWConfig, Config, HostCollective, KfrogConfig, MuonConfig, SgdConfig, Shard};
use ranks::ensure;
use frog_cpu::mpi::Mpi;
use rand_xoshiro::rand_core::{RngCore, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

type Dev = CpuDevice<f64>;

/// The global batch: 7 samples, so that neither 2 nor 3 ranks divide it.
const B: usize = 7;
const STEPS: usize = 3;
const SEED: u64 = 5;

fn main() {
    ranks::run(&[
        ("data-parallel steps (FROG, K-FROG, SGD, AdamW, Muon) equal one process's over the same shards: losses and weights", steps_match_one_process),
        ("a rank's failed passes reach the others as a failed peer", failure_reaches_every_rank),
        ("a data-parallel study run gives every rank the same records; too many ranks are refused", runs_agree),
    ])
}

/// The methods compared, each with sampling below the batch where it has
/// one (FROG's 3 of 7 rows leave some rank's shard without one).
fn methods() -> Vec<(&'static str, Method)> {
    vec![
        ("FROG", Config { lr: 0.05, momentum: 0.9, sample_size: Some(3), ..Config::default() }.into()),
        ("K-FROG", KfrogConfig { lr: 0.02, momentum: 0.9, sample_size: Some(4), y_sample_size: Some(3), ..KfrogConfig::default() }.into()),
        ("SGD", SgdConfig { lr: 0.1, momentum: 0.9, nesterov: true, weight_decay: 1e-4, ..SgdConfig::default() }.into()),
        ("AdamW", AdamWConfig { lr: 1e-2, weight_decay: 1e-2, ..AdamWConfig::default() }.into()),
        ("Muon", Method::Muon { filters: MuonConfig { lr: 0.05, ..MuonConfig::default() }, rest: SgdConfig { lr: 0.1, momentum: 0.9, ..SgdConfig::default() } }),
    ]
}

/// `STEPS` random batches of `B` samples for `arch`.
fn batches(arch: &Arch) -> Vec<HostBatch> {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(11);
    (0..STEPS)
        .map(|_| HostBatch {
            x: (0..B * arch.input_len()).map(|_| (rng.next_u32() >> 8) as f32 / (1u32 << 24) as f32 - 0.5).collect(),
            labels: (0..B).map(|_| (rng.next_u32() % arch.classes as u32) as u8).collect(),
        })
        .collect()
}

fn values(net: &Net<Dev>) -> Vec<f64> {
    net.params.iter().flat_map(|p| p.value[..p.len()].to_vec()).collect()
}

/// The largest difference of `a` and `b` relative to `b`'s largest entry.
fn rel_diff(a: &[f64], b: &[f64]) -> f64 {
    let scale = b.iter().fold(0.0f64, |m, v| m.max(v.abs())).max(1e-300);
    a.iter().zip(b).fold(0.0f64, |m, (x, y)| m.max((x - y).abs())) / scale
}

/// The data-parallel steps on this rank: the losses and the final weights.
fn data_parallel(dev: &Dev, comm: &Mpi, arch: &Arch, method: Method) -> Result<(Vec<f64>, Vec<f64>), String> {
    let e = |e: frog_bench::error::Error| e.to_string();
    let shard = shard_of(B, comm.rank(), comm.size()).map_err(e)?;
    let mut net = Net::new(dev, arch, shard.len, SEED).map_err(e)?;
    let mut opt = Optimizer::new(dev, method, &mut net, B, SEED).map_err(e)?;
    let mut st = Staging::new(dev, arch, shard.len).map_err(e)?;
    let mut dp = DataParallel::new(dev, comm, B, &net).map_err(e)?;
    let mut losses = Vec::new();
    for b in batches(arch) {
        st.upload_shard(dev, &b, shard).map_err(e)?;
        losses.push(dp.train_step(dev, &mut net, &mut opt, &st).map_err(e)?.loss);
    }
    Ok((losses, values(&net)))
}

/// One process over `ranks` shards: the reference.
fn one_process(dev: &Dev, ranks: usize, arch: &Arch, method: Method) -> frog_bench::error::Result<(Vec<f64>, Vec<f64>)> {
    let shards: Vec<Shard> = (0..ranks).map(|k| shard_of(B, k, ranks)).collect::<Result<_, _>>()?;
    let largest = shards.iter().map(|s| s.len).max().unwrap_or(B);
    let mut net = Net::new(dev, arch, largest, SEED)?;
    let mut opt = Optimizer::new(dev, method, &mut net, B, SEED)?;
    let mut st = Staging::new(dev, arch, largest)?;
    let mut losses = Vec::new();
    for b in batches(arch) {
        let drawn = opt.draw_sample()?.map(|r| (r.x.to_vec(), r.y.to_vec()));
        let mut grads: Vec<Vec<f64>> = net.params.iter().map(|p| vec![0.0; p.len()]).collect();
        let mut rows: Vec<Option<(Vec<f64>, Vec<f64>)>> = net.params.iter().map(|p| p.sampled.as_ref().map(|_| (Vec::new(), Vec::new()))).collect();
        let mut loss = 0.0;
        for &s in &shards {
            st.upload_shard(dev, &b, s)?;
            net.forward(dev, st.x(), s.len, true)?;
            loss += net.loss(dev, s.len, st.labels())?.loss * s.len as f64 / B as f64;
            net.scale_loss_gradient(dev, s.len, s.len as f64 / B as f64)?;
            let local = |idx: &[usize]| s.select(idx).iter().map(|i| i - s.offset).collect::<Vec<_>>();
            let idx = drawn.as_ref().map(|(x, y)| (local(x), local(y)));
            net.backward(dev, st.x(), s.len, idx.as_ref().map(|(x, y)| SampledRows { x, y }))?;
            for ((p, g), r) in net.params.iter().zip(&mut grads).zip(&mut rows) {
                g.iter_mut().zip(&p.grad).for_each(|(g, v)| *g += v);
                if let (Some((rx, ry)), Some(sampled), Some(conv), Some((ix, iy))) = (r.as_mut(), p.sampled.as_ref(), p.conv, idx.as_ref()) {
                    let layer = frog_core::Layer::conv2d(conv, false);
                    rx.extend_from_slice(&sampled.x[..ix.len() * layer.input_len()]);
                    ry.extend_from_slice(&sampled.y[..iy.len() * layer.output_len()]);
                }
            }
        }
        for ((p, g), r) in net.params.iter_mut().zip(&grads).zip(&rows) {
            p.grad[..g.len()].copy_from_slice(g);
            if let (Some((rx, ry)), Some(sampled)) = (r, p.sampled.as_mut()) {
                sampled.x[..rx.len()].copy_from_slice(rx);
                sampled.y[..ry.len()].copy_from_slice(ry);
            }
        }
        opt.step(dev, &mut net)?;
        losses.push(loss);
    }
    Ok((losses, values(&net)))
}

fn steps_match_one_process(comm: &Mpi) -> Result<(), String> {
    let dev = Dev::new(1).map_err(|e| e.to_string())?;
    let arch = Arch::tiny_cnn();
    for (name, method) in methods() {
        let (losses, weights) = data_parallel(&dev, comm, &arch, method).map_err(|e| format!("{name}: {e}"))?;
        let (want_losses, want) = one_process(&dev, comm.size(), &arch, method).map_err(|e| format!("{name}: the reference: {e}"))?;
        let d = rel_diff(&losses, &want_losses);
        ensure(d < 1e-12, || format!("{name}: losses {losses:?}, one process {want_losses:?} (relative {d:.2e})"))?;
        let d = rel_diff(&weights, &want);
        ensure(d < 1e-9, || format!("{name}: the weights after {STEPS} steps differ from one process's by {d:.2e} (relative)"))?;
        ensure(rel_diff(&weights, &values(&Net::new(&dev, &arch, 1, SEED).map_err(|e| e.to_string())?)) > 1e-6, || format!("{name}: the steps moved nothing"))?;
    }
    Ok(())
}

fn failure_reaches_every_rank(comm: &Mpi) -> Result<(), String> {
    let dev = Dev::new(1).map_err(|e| e.to_string())?;
    let arch = Arch::tiny_cnn();
    let shard = shard_of(B, comm.rank(), comm.size()).map_err(|e| e.to_string())?;
    let mut net = Net::new(&dev, &arch, shard.len, SEED).map_err(|e| e.to_string())?;
    let mut sum = GradSum::new(&dev, &net).map_err(|e| e.to_string())?;
    let before = net.params[0].grad.clone();
    let last = comm.size() - 1;
    let local = if comm.rank() == last { Err(frog_bench::error::Error::new("this rank's passes failed")) } else { Ok(LossStats { loss: 1.0, correct: 1 }) };
    let err = sum.all_reduce(&dev, comm, &mut net, local, shard, B).err().map(|e| e.to_string()).unwrap_or_default();
    let want = if comm.rank() == last { "this rank's passes failed".to_string() } else { format!("rank {last} failed") };
    ensure(err.contains(&want), || format!("error {err:?}, expected one naming {want:?}"))?;
    ensure(net.params[0].grad == before, || "a refused sum changed a gradient".into())
}

fn runs_agree(comm: &Mpi) -> Result<(), String> {
    let dev = Dev::new(1).map_err(|e| e.to_string())?;
    let data = data::load(&DataOptions { synthetic: true, train_limit: Some(40), test_limit: Some(20), ..DataOptions::default() }).map_err(|e| e.to_string())?;
    let cfg = RunConfig {
        label: "FROG".into(),
        name: "frog".into(),
        arch: Arch::by_name("resnet-small").map_err(|e| e.to_string())?,
        method: Config { lr: 0.05, momentum: 0.9, sample_size: Some(4), ..Config::default() }.into(),
        batch: 10,
        epochs: 1,
        milestones: vec![],
        gamma: 0.1,
        seed: 1,
    };
    let records = train_on(&dev, comm, &data, &cfg, |_| {}).map_err(|e| e.to_string())?;
    let r = records.last().ok_or("no records")?;
    ensure(r.train_loss.is_finite() && r.test_acc.is_finite(), || format!("record {r:?}"))?;
    let words = [r.train_loss.to_bits(), r.train_acc.to_bits(), r.test_loss.to_bits(), r.test_acc.to_bits()];
    comm.check_agree(&words, &["the training loss", "the training accuracy", "the test loss", "the test accuracy"]).map_err(|e| e.to_string())?;
    if comm.size() == 1 {
        return Ok(());
    }
    let too_many = RunConfig { batch: comm.size() - 1, ..cfg };
    let err = train_on(&dev, comm, &data, &too_many, |_| {}).err().map(|e| e.to_string()).unwrap_or_default();
    ensure(err.contains("every rank needs at least one sample"), || format!("{} ranks for a batch of {}: {err:?}", comm.size(), comm.size() - 1))
}
