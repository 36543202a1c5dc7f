//! frog-cpu's MPI collectives on several ranks: run under `mpirun -n P`
//! (P of 2 and 3 in CI), every rank this program. Without a harness: MPI
//! is initialized once per process, and every rank must make the same
//! collective calls in the same order, so the checks run in sequence.
//!
//! On one rank (no `mpirun`) the checks still run, trivially; with
//! `FROG_REQUIRE_MPI=1` that is a failure, so CI cannot pass by not
//! starting the ranks.

use frog_core::{
    gather_rows, AdamWConfig, Batch, Collective, KfrogBatch, KfrogConfig, KfrogShardRows, CollectiveError, Config, Conv2d, Error, GroupId, HostCollective, HostOp, Layer, Method, MuonConfig, ParamGrad, ParamId, Params, RegistryError, SgdConfig, Shard, ShardRows, StateError,
};
use frog_cpu::mpi::Mpi;
use frog_cpu::{Cpu, Frog};
use mpi::topology::{Color, Communicator};
use std::ops::Range;

type Check = fn(&Mpi) -> Result<(), String>;

fn main() {
    let Some(universe) = mpi::initialize() else {
        eprintln!("MPI was already initialized");
        std::process::exit(1);
    };
    let comm = Mpi::new(universe.world());
    let (rank, size) = (comm.rank(), comm.size());
    if size < 2 && std::env::var_os("FROG_REQUIRE_MPI").is_some_and(|v| v == "1") {
        eprintln!("FROG_REQUIRE_MPI=1 but this runs on one rank: start it with mpirun -n P");
        std::process::exit(1);
    }
    let checks: [(&str, Check); 11] = [
        ("host words reduce by min, max and sum", host_words),
        ("bytes broadcast from every root", bytes_broadcast),
        ("agreement and disagreement are seen by every rank", agreement),
        ("a failed rank is reported to the others", status),
        ("f32 and f64 sums, in place, beyond the scratch's chunk", sums),
        ("views broadcast from every root", broadcasts),
        ("gathers of uneven counts, an empty one included, and bad calls refused", gathers),
        ("distributed steps (FROG, FROG's plain path, SGD, AdamW, Muon, K-FROG) equal one process's, bitwise; states sharded", distributed_steps),
        ("ranks built differently are refused on every rank, naming the difference", distributed_mismatch),
        ("a rank's bad rows fail it and reach the others as a failed peer, nothing changed", distributed_failure),
        ("a sharded checkpoint restores on fewer and on more ranks, and in one process, bitwise", distributed_checkpoint),
    ];
    let mut failed = 0;
    for (name, check) in checks {
        match check(&comm) {
            Ok(()) => println!("rank {rank}/{size}: ok   {name}"),
            Err(e) => {
                failed += 1;
                println!("rank {rank}/{size}: FAIL {name}: {e}");
            }
        }
    }
    // Every rank's verdict, so that each exits with the same status.
    let mut any = [failed as u64];
    comm.all_reduce_u64(&mut any, HostOp::Sum).expect("status reduction");
    drop(universe);
    if any[0] > 0 {
        std::process::exit(1);
    }
}

fn ensure(ok: bool, what: impl FnOnce() -> String) -> Result<(), String> {
    if ok {
        Ok(())
    } else {
        Err(what())
    }
}

fn host_words(c: &Mpi) -> Result<(), String> {
    let (r, p) = (c.rank() as u64, c.size() as u64);
    let mine = [r + 10, 100 - r, r * r];
    for (op, want) in [
        (HostOp::Min, [10, 100 - (p - 1), 0]),
        (HostOp::Max, [p - 1 + 10, 100, (p - 1) * (p - 1)]),
        (HostOp::Sum, [p * (p - 1) / 2 + 10 * p, 100 * p - p * (p - 1) / 2, (0..p).map(|k| k * k).sum()]),
    ] {
        let mut w = mine;
        c.all_reduce_u64(&mut w, op).map_err(|e| e.to_string())?;
        ensure(w == want, || format!("{op:?}: {w:?}, expected {want:?}"))?;
    }
    Ok(())
}

fn bytes_broadcast(c: &Mpi) -> Result<(), String> {
    for root in 0..c.size() {
        let mut id = if c.rank() == root { [root as u8 + 1; 128] } else { [0; 128] };
        c.broadcast_bytes(&mut id, root).map_err(|e| e.to_string())?;
        ensure(id == [root as u8 + 1; 128], || format!("root {root}: got {:?}..", &id[..4]))?;
    }
    let bad = c.broadcast_bytes(&mut [0; 4], c.size());
    ensure(bad == Err(CollectiveError::BadRank { rank: c.size(), size: c.size() }), || format!("a root outside: {bad:?}"))
}

fn agreement(c: &Mpi) -> Result<(), String> {
    let names = ["settings", "layers", "batch", "seed"];
    c.check_agree(&[1, 2, 3, 4], &names).map_err(|e| e.to_string())?;
    // The last rank differs in the batch (and the seed): the first
    // difference is named, on every rank.
    let last = c.rank() + 1 == c.size();
    let words = [1, 2, if last { 30 } else { 3 }, if last { 40 } else { 4 }];
    let got = c.check_agree(&words, &names);
    let want = if c.size() > 1 { Err(CollectiveError::Mismatch { what: "batch" }) } else { Ok(()) };
    ensure(got == want, || format!("{got:?}, expected {want:?}"))
}

fn status(c: &Mpi) -> Result<(), String> {
    c.check_status(false).map_err(|e| e.to_string())?;
    // Rank 1 (the last, on one rank) fails; the others are told.
    let bad = 1.min(c.size() - 1);
    let got = c.check_status(c.rank() == bad);
    let want = if c.rank() == bad { Ok(()) } else { Err(CollectiveError::PeerFailed { rank: bad }) };
    ensure(got == want, || format!("{got:?}, expected {want:?}"))
}

fn sums(c: &Mpi) -> Result<(), String> {
    let (r, p) = (c.rank(), c.size());
    // Past the 64 Ki-entry chunk, with a partial last chunk; integers, so
    // every order of summation gives the same sum.
    let n = (1 << 16) * 2 + 123;
    let value = |i: usize, k: usize| ((i % 1000) * (k + 1)) as f64;
    let want = |i: usize| (0..p).map(|k| value(i, k)).sum::<f64>();
    let mut x64: Vec<f64> = (0..n).map(|i| value(i, r)).collect();
    let cpu64 = Cpu::<f64>::with_threads(1).map_err(|e| e.to_string())?;
    c.all_reduce_sum(&cpu64, &mut &mut x64[..]).map_err(|e| e.to_string())?;
    ensure((0..n).all(|i| x64[i] == want(i)), || "f64 sum".into())?;
    let mut x32: Vec<f32> = (0..n).map(|i| value(i, r) as f32).collect();
    let cpu32 = Cpu::<f32>::with_threads(1).map_err(|e| e.to_string())?;
    c.all_reduce_sum(&cpu32, &mut &mut x32[..]).map_err(|e| e.to_string())?;
    ensure((0..n).all(|i| x32[i] == want(i) as f32), || "f32 sum".into())?;
    // An empty view is a valid sum of nothing.
    c.all_reduce_sum(&cpu32, &mut &mut [][..]).map_err(|e| e.to_string())
}

fn broadcasts(c: &Mpi) -> Result<(), String> {
    let cpu = Cpu::<f32>::with_threads(1).map_err(|e| e.to_string())?;
    for root in 0..c.size() {
        let mut w: Vec<f32> = (0..1000).map(|i| if c.rank() == root { i as f32 * 0.5 + root as f32 } else { -1.0 }).collect();
        c.broadcast(&cpu, &mut &mut w[..], root).map_err(|e| e.to_string())?;
        ensure(w.iter().enumerate().all(|(i, &v)| v == i as f32 * 0.5 + root as f32), || format!("root {root}"))?;
    }
    Ok(())
}

fn gathers(c: &Mpi) -> Result<(), String> {
    let cpu = Cpu::<f64>::with_threads(1).map_err(|e| e.to_string())?;
    let (r, p) = (c.rank(), c.size());
    // Rank k sends 3k + 1 entries, except rank 1, which sends none (a
    // rank whose shard holds no sampled row).
    let counts: Vec<usize> = (0..p).map(|k| if k == 1 { 0 } else { 3 * k + 1 }).collect();
    let total: usize = counts.iter().sum();
    let send: Vec<f64> = (0..counts[r]).map(|i| (r * 1000 + i) as f64).collect();
    let want: Vec<f64> = (0..p).flat_map(|k| (0..counts[k]).map(move |i| (k * 1000 + i) as f64)).collect();
    for root in 0..p {
        let mut recv = vec![f64::NAN; if r == root { total } else { 0 }];
        let mut view = &mut recv[..];
        c.gather(&cpu, &&send[..], (r == root).then_some(&mut view), &|k| counts[k], root).map_err(|e| e.to_string())?;
        ensure(r != root || recv == want, || format!("root {root}: {recv:?}"))?;
    }
    // Refused before anything moves, on every rank alike (a call refused
    // on some ranks only would leave the others waiting): sends of other
    // lengths, a root outside; then, on the root alone and without a
    // collective, a receive too long.
    let refusals = [c.gather(&cpu, &&[0.0; 99][..], None, &|k| counts[k], 0), c.gather(&cpu, &&send[..], None, &|k| counts[k], p)];
    for (i, got) in refusals.into_iter().enumerate() {
        ensure(got.is_err(), || format!("refusal {i} was accepted"))?;
    }
    if r == 0 {
        let long = vec![0.0; total + 1];
        let got = c.check_gather(&cpu, &&send[..], Some(&&long[..]), &|k| counts[k], 0);
        ensure(matches!(got, Err(CollectiveError::Size { .. })), || format!("a root's receive too long: {got:?}"))?;
    }
    Ok(())
}

/// A small deterministic generator (xorshift), the same on every rank.
struct Rng(u64);

impl Rng {
    fn vec(&mut self, n: usize) -> Vec<f64> {
        (0..n)
            .map(|_| {
                self.0 ^= self.0 << 13;
                self.0 ^= self.0 >> 7;
                self.0 ^= self.0 << 17;
                (self.0 >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
            })
            .collect()
    }
}

/// The global batch: 7 samples, which neither 2 nor 3 ranks divide.
const BATCH: usize = 7;
const STEPS: u64 = 3;

fn conv() -> Layer {
    Layer::conv2d(Conv2d::new(2, 3, 3, [5, 5]).padding(1), true)
}

fn fc() -> Layer {
    Layer::linear(7, 4, true)
}

fn muon_layer() -> Layer {
    Layer::conv2d(Conv2d::new(2, 4, 3, [5, 5]).padding(1), false)
}

/// K-FROG's layer (bias-free, as K-FROG's are).
fn kfrog_layer() -> Layer {
    Layer::conv2d(Conv2d::new(3, 2, 3, [4, 4]).padding(1), false)
}

/// Every registered entry, in registration order: (name, layer or plain
/// length, group).
const ENTRIES: usize = 7;
/// The K-FROG layer's position.
const KFROG: usize = 6;

/// An optimizer with five groups: FROG (a conv, a linear layer and a plain
/// parameter on its SGD path), SGD, AdamW (a linear layer each), Muon (a
/// bias-free conv) and K-FROG (a bias-free conv; samples of 4 inputs and
/// 3 output gradients); FROG's sample 3 of 7.
fn build(cpu: &Cpu<f64>, max_batch: usize) -> (Frog<f64>, [ParamId; ENTRIES]) {
    let cfg = Config { lr: 0.02, momentum: 0.9, weight_decay: 1e-3, sample_size: Some(3), ..Config::default() };
    let mut opt = Frog::<f64>::new(Method::Frog(cfg), max_batch, 9).unwrap();
    let sgd = opt.add_group(Method::Sgd(SgdConfig { lr: 0.1, momentum: 0.9, weight_decay: 1e-4, nesterov: true, ..SgdConfig::default() })).unwrap();
    let adam = opt.add_group(AdamWConfig { amsgrad: true, ..AdamWConfig::default() }).unwrap();
    let muon = opt.add_group(MuonConfig { lr: 0.02, ..MuonConfig::default() }).unwrap();
    let kfrog = opt.add_group(KfrogConfig { lr: 0.01, momentum: 0.9, y_momentum: 0.5, sample_size: Some(4), y_sample_size: Some(3), ..KfrogConfig::default() }).unwrap();
    let ids = [
        opt.add_layer(cpu, "conv", conv(), GroupId::DEFAULT).unwrap(),
        opt.add_layer(cpu, "fc", fc(), GroupId::DEFAULT).unwrap(),
        opt.add_param(cpu, "bn", 5, GroupId::DEFAULT).unwrap(),
        opt.add_layer(cpu, "fc_sgd", fc(), sgd).unwrap(),
        opt.add_layer(cpu, "fc_adam", fc(), adam).unwrap(),
        opt.add_layer(cpu, "conv_muon", muon_layer(), muon).unwrap(),
        opt.add_layer(cpu, "conv_kfrog", kfrog_layer(), kfrog).unwrap(),
    ];
    (opt, ids)
}

/// Every entry's values: (weight, bias) per layer (the bias empty when it
/// has none), (values, empty) for the plain parameter.
type Values = Vec<(Vec<f64>, Vec<f64>)>;

/// Every parameter's values: (weight, bias) per layer, the plain one.
fn initial() -> Values {
    let mut rng = Rng(5);
    let mut w = |l: &Layer| (rng.vec(l.rows() * l.weight_cols()), rng.vec(if l.bias { l.rows() } else { 0 }));
    vec![w(&conv()), w(&fc()), (Rng(6).vec(5), vec![]), w(&fc()), w(&fc()), w(&muon_layer()), w(&kfrog_layer())]
}

/// One step's data: per entry the (global, summed) gradients and, for the
/// FROG layers, the whole batch's inputs and output gradients.
struct StepData {
    grads: Values,
    /// FROG's two layers' and K-FROG's.
    x: [Vec<f64>; 3],
    y: [Vec<f64>; 3],
}

fn step_data(t: u64, values: &Values, batch: usize) -> StepData {
    let mut rng = Rng(100 + t);
    let grads = values.iter().map(|(w, b)| (rng.vec(w.len()), rng.vec(b.len()))).collect();
    let layers = [conv(), fc(), kfrog_layer()];
    let x = layers.map(|l| rng.vec(batch * l.input_len()));
    let y = layers.map(|l| rng.vec(batch * l.output_len()));
    StepData { grads, x, y }
}

/// Steps `steps` in one process.
fn train_alone(cpu: &Cpu<f64>, opt: &mut Frog<f64>, ids: &[ParamId; ENTRIES], v: &mut Values, steps: Range<u64>) {
    let batch = opt.max_batch();
    for t in steps {
        let d = step_data(t, v, batch);
        let mut idx = vec![0; batch];
        let sample = opt.sample(batch, &mut idx).unwrap();
        for (k, layer) in [conv(), fc()].iter().enumerate() {
            let (mut x, mut y) = (vec![0.0; sample.len() * layer.input_len()], vec![0.0; sample.len() * layer.output_len()]);
            gather_rows(cpu, &sample, layer.input_len(), &d.x[k], &mut x).unwrap();
            gather_rows(cpu, &sample, layer.output_len(), &d.y[k], &mut y).unwrap();
            let (w, b) = &mut v[k];
            let params = Params { weight: w, grad_weight: &d.grads[k].0, bias: Some((b, &d.grads[k].1)) };
            opt.step_layer(cpu, ids[k], params, Some(sample.batch(&x, &y))).unwrap();
        }
        opt.step_param(cpu, ids[2], ParamGrad { param: &mut v[2].0, grad: &d.grads[2].0 }).unwrap();
        for k in 3..KFROG {
            let (w, b) = &mut v[k];
            let bias = if b.is_empty() { None } else { Some((b, &d.grads[k].1)) };
            opt.step_layer(cpu, ids[k], Params { weight: w, grad_weight: &d.grads[k].0, bias }, None::<Batch<'_, Cpu<f64>>>).unwrap();
        }
        let l = kfrog_layer();
        let (mut xi, mut yi) = (vec![0; batch], vec![0; batch]);
        let (xs, ys) = opt.sample_kfrog(opt.group_of(ids[KFROG]).unwrap(), batch, &mut xi, &mut yi).unwrap();
        let (mut x, mut y) = (vec![0.0; xs.len() * l.input_len()], vec![0.0; ys.len() * l.output_len()]);
        gather_rows(cpu, xs, l.input_len(), &d.x[2], &mut x).unwrap();
        gather_rows(cpu, ys, l.output_len(), &d.y[2], &mut y).unwrap();
        let batch = KfrogBatch { x: &x, x_sample: xs.len(), y: &y, y_sample: ys.len(), batch_size: batch };
        opt.step_layer_kfrog(cpu, ids[KFROG], &mut v[KFROG].0, &d.grads[KFROG].0, batch).unwrap();
    }
}

/// The same steps on every rank of `c`, each rank holding only its
/// shard's sampled rows.
fn train_distributed(cpu: &Cpu<f64>, c: &Mpi<impl Communicator>, opt: &mut Frog<f64>, ids: &[ParamId; ENTRIES], v: &mut Values, steps: Range<u64>) -> Result<(), String> {
    let batch = opt.max_batch();
    let mut d = opt.distributed(cpu, c).map_err(|e| e.to_string())?;
    for t in steps {
        let data = step_data(t, v, batch);
        let mut idx = vec![0; batch];
        let sample = d.sample(batch, &mut idx).map_err(|e| e.to_string())?;
        let mine: Vec<usize> = sample.in_shard(d.shard(batch)).to_vec();
        for (k, layer) in [conv(), fc()].iter().enumerate() {
            let (mut x, mut y) = (vec![0.0; mine.len() * layer.input_len()], vec![0.0; mine.len() * layer.output_len()]);
            gather_rows(cpu, &mine, layer.input_len(), &data.x[k], &mut x).map_err(|e| e.to_string())?;
            gather_rows(cpu, &mine, layer.output_len(), &data.y[k], &mut y).map_err(|e| e.to_string())?;
            let (w, b) = &mut v[k];
            let params = Params { weight: w, grad_weight: &data.grads[k].0, bias: Some((b, &data.grads[k].1)) };
            d.step_layer(cpu, ids[k], params, Some(ShardRows { sample, x: &x[..], y: &y[..] })).map_err(|e| e.to_string())?;
        }
        d.step_param(cpu, ids[2], ParamGrad { param: &mut v[2].0, grad: &data.grads[2].0 }).map_err(|e| e.to_string())?;
        for k in 3..KFROG {
            let (w, b) = &mut v[k];
            let bias = if b.is_empty() { None } else { Some((b, &data.grads[k].1)) };
            d.step_layer(cpu, ids[k], Params { weight: w, grad_weight: &data.grads[k].0, bias }, None).map_err(|e| e.to_string())?;
        }
        let l = kfrog_layer();
        let (mut xi, mut yi) = (vec![0; batch], vec![0; batch]);
        let group = d.group_of(ids[KFROG]).map_err(|e| e.to_string())?;
        let (xs, ys) = d.sample_kfrog(group, batch, &mut xi, &mut yi).map_err(|e| e.to_string())?;
        let shard = d.shard(batch);
        let (xm, ym) = (shard.select(xs), shard.select(ys));
        let (mut x, mut y) = (vec![0.0; xm.len() * l.input_len()], vec![0.0; ym.len() * l.output_len()]);
        gather_rows(cpu, xm, l.input_len(), &data.x[2], &mut x).map_err(|e| e.to_string())?;
        gather_rows(cpu, ym, l.output_len(), &data.y[2], &mut y).map_err(|e| e.to_string())?;
        let rows = KfrogShardRows { x_rows: xs, y_rows: ys, batch_size: batch, x: &x[..], y: &y[..] };
        d.step_layer_kfrog(cpu, ids[KFROG], &mut v[KFROG].0, &data.grads[KFROG].0, rows).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// `steps` at batch `batch` in one process from the start.
fn alone(cpu: &Cpu<f64>, batch: usize, steps: Range<u64>) -> Values {
    let (mut opt, ids) = build(cpu, batch);
    let mut v = initial();
    train_alone(cpu, &mut opt, &ids, &mut v, steps);
    v
}

fn distributed_steps(c: &Mpi) -> Result<(), String> {
    let cpu = Cpu::<f64>::with_threads(1).map_err(|e| e.to_string())?;
    let one = alone(&cpu, BATCH, 0..STEPS);
    let (mut opt, ids) = build(&cpu, BATCH);
    let mut together = initial();
    train_distributed(&cpu, c, &mut opt, &ids, &mut together, 0..STEPS)?;
    for (k, (a, b)) in one.iter().zip(&together).enumerate() {
        ensure(a == b, || format!("entry {k}: the distributed values differ from one process's"))?;
    }
    // Each entry's state is on its owner alone; elsewhere a
    // single-process step is refused, and so is a checkpoint.
    let mut owned = 0;
    for (k, &id) in ids.iter().enumerate() {
        let owner = opt.distributed(&cpu, c).map_err(|e| e.to_string())?.owner(id).map_err(|e| e.to_string())?;
        let here = owner == c.rank();
        owned += usize::from(here);
        let got = opt.step_param(&cpu, id, ParamGrad { param: &mut vec![0.0; 5], grad: &vec![0.0; 5] });
        if !here {
            ensure(got == Err(Error::Registry(RegistryError::Elsewhere { index: k as u32, owner })), || format!("entry {k} on rank {owner}: {got:?}"))?;
        }
    }
    ensure(owned > 0 || c.size() > ENTRIES, || "this rank owns nothing".into())?;
    let got = opt.checkpoint(&cpu, &mut vec![0; opt.checkpoint_len()]);
    ensure(got == Err(Error::State(StateError::Sharded)), || format!("a sharded checkpoint: {got:?}"))?;
    // The shards split the batch in rank order, the first ones larger.
    let shards: Vec<Shard> = (0..c.size()).map(|k| Shard::of(BATCH, k, c.size()).unwrap()).collect();
    ensure(shards.windows(2).all(|w| w[0].end() == w[1].offset && w[0].len >= w[1].len) && shards.last().unwrap().end() == BATCH, || format!("{shards:?}"))?;
    // A batch of 2: on 3 ranks one shard is empty, and every sample is
    // the whole batch (K-FROG's too).
    let (mut opt, ids) = build(&cpu, 2);
    let mut small = initial();
    train_distributed(&cpu, c, &mut opt, &ids, &mut small, 0..STEPS)?;
    ensure(small == alone(&cpu, 2, 0..STEPS), || "batch 2: the distributed values differ from one process's".into())
}

fn distributed_mismatch(c: &Mpi) -> Result<(), String> {
    let cpu = Cpu::<f64>::with_threads(1).map_err(|e| e.to_string())?;
    // The last rank was built for a larger batch.
    let last = c.rank() + 1 == c.size();
    let (mut opt, _) = build(&cpu, if last { BATCH + 1 } else { BATCH });
    let got = opt.distributed(&cpu, c).map(|_| ());
    let want = if c.size() > 1 { Err(Error::Collective(CollectiveError::Mismatch { what: "the largest batch" })) } else { Ok(()) };
    ensure(got == want, || format!("{got:?}, expected {want:?}"))
}

fn distributed_failure(c: &Mpi) -> Result<(), String> {
    let cpu = Cpu::<f64>::with_threads(1).map_err(|e| e.to_string())?;
    let (mut opt, ids) = build(&cpu, BATCH);
    let mut d = opt.distributed(&cpu, c).map_err(|e| e.to_string())?;
    let mut idx = [0; BATCH];
    let sample = d.sample(BATCH, &mut idx).map_err(|e| e.to_string())?;
    let mine = sample.in_shard(d.shard(BATCH)).len();
    // The last rank's rows are one entry short.
    let bad = c.size() - 1;
    let x_len = mine * fc().input_len() - usize::from(c.rank() == bad && mine > 0);
    let x = vec![0.5; x_len];
    let y = vec![0.25; mine * fc().output_len()];
    let v = initial();
    let (mut w, mut b) = v[1].clone();
    let g = step_data(0, &v, BATCH).grads;
    let got = d.step_layer(&cpu, ids[1], Params { weight: &mut w, grad_weight: &g[1].0, bias: Some((&mut b, &g[1].1)) }, Some(ShardRows { sample, x: &x[..], y: &y[..] }));
    // On one rank, or when the last rank holds no sampled row, nothing is wrong.
    let bad_rows = Shard::of(BATCH, bad, c.size()).map(|s| sample.in_shard(s).len()).unwrap_or(0);
    let want_ok = bad_rows == 0;
    match (c.rank() == bad, got) {
        _ if want_ok => return Ok(()),
        (true, Err(Error::Shape(_))) | (false, Err(Error::Collective(CollectiveError::PeerFailed { .. }))) => {}
        (_, got) => return Err(format!("{got:?}")),
    }
    ensure((w, b) == v[1], || "a refused step changed the weights".into())
}

/// Ranks `0..a` train `STEPS` steps sharded over themselves and take a
/// checkpoint; every rank of `c` restores it and trains `STEPS` more
/// sharded over all of them (`a` -> `P` ranks), checkpoints again, and
/// each restores that alone and takes one more step (`P` -> 1): every
/// rank's values are bitwise one process's uninterrupted run's.
fn distributed_checkpoint(c: &Mpi) -> Result<(), String> {
    let cpu = Cpu::<f64>::with_threads(1).map_err(|e| e.to_string())?;
    let want = alone(&cpu, BATCH, 0..2 * STEPS + 1);
    // The first run's ranks: 2 of 3, or 1 of 2 (fewer than all, so the
    // restore lands on more ranks than made it).
    let a = c.size().saturating_sub(1).max(1);
    let first = c.communicator().split_by_color(if c.rank() < a { Color::with_value(0) } else { Color::undefined() });
    let mut v = initial();
    let mut bytes = Vec::new();
    if let Some(sub) = first {
        let sub = Mpi::new(sub);
        let (mut opt, ids) = build(&cpu, BATCH);
        train_distributed(&cpu, &sub, &mut opt, &ids, &mut v, 0..STEPS)?;
        let d = opt.distributed(&cpu, &sub).map_err(|e| e.to_string())?;
        bytes = vec![0; d.checkpoint_len().map_err(|e| e.to_string())?];
        let n = d.checkpoint(&cpu, &mut bytes).map_err(|e| e.to_string())?;
        ensure(n == bytes.len(), || format!("{n} of {} bytes written", bytes.len()))?;
    }
    // Rank 0's checkpoint and values to every rank.
    let mut len = [bytes.len() as u64];
    c.all_reduce_u64(&mut len, HostOp::Max).map_err(|e| e.to_string())?;
    bytes.resize(len[0] as usize, 0);
    c.broadcast_bytes(&mut bytes, 0).map_err(|e| e.to_string())?;
    for (w, b) in v.iter_mut() {
        c.broadcast(&cpu, &mut &mut w[..], 0).map_err(|e| e.to_string())?;
        c.broadcast(&cpu, &mut &mut b[..], 0).map_err(|e| e.to_string())?;
    }
    let (mut opt, ids) = build(&cpu, BATCH);
    opt.restore(&cpu, &bytes).map_err(|e| e.to_string())?;
    train_distributed(&cpu, c, &mut opt, &ids, &mut v, STEPS..2 * STEPS)?;
    let d = opt.distributed(&cpu, c).map_err(|e| e.to_string())?;
    let mut bytes = vec![0; d.checkpoint_len().map_err(|e| e.to_string())?];
    let short = d.checkpoint(&cpu, &mut bytes[..1]);
    ensure(matches!(short, Err(Error::Shape(_))), || format!("a short buffer: {short:?}"))?;
    d.checkpoint(&cpu, &mut bytes).map_err(|e| e.to_string())?;
    let (mut alone_opt, ids) = build(&cpu, BATCH);
    alone_opt.restore(&cpu, &bytes).map_err(|e| e.to_string())?;
    train_alone(&cpu, &mut alone_opt, &ids, &mut v, 2 * STEPS..2 * STEPS + 1);
    for (k, (a, b)) in want.iter().zip(&v).enumerate() {
        ensure(a == b, || format!("entry {k}: the restored run's values differ from one process's"))?;
    }
    Ok(())
}
