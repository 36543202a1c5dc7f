//! frog-cpu's MPI collectives on several ranks: run under `mpirun -n P`
//! (P of 2 and 3 in CI), every rank this program, with the multi-rank
//! harness of `tests/ranks` (checks in sequence, one verdict for all).

#[path = "suite/common/mod.rs"]
mod common;
mod ranks;

use common::distributed::{alone, build, fc, initial, step_data, train_alone, train_distributed, Stepping, BATCH, ENTRIES, STEPS};
use frog_core::{Collective, CollectiveError, Entry, Error, HostCollective, HostOp, ParamGrad, Params, RegistryError, Shard, ShardRows, StateError};
use frog_cpu::mpi::Mpi;
use frog_cpu::Cpu;
use mpi::topology::{Color, Communicator};
use ranks::ensure;

fn main() {
    ranks::run(&[
        ("host words reduce by min, max and sum", host_words),
        ("bytes broadcast from every root", bytes_broadcast),
        ("agreement and disagreement are seen by every rank", agreement),
        ("a failed rank is reported to the others", status),
        ("f32 and f64 sums, in place, beyond the scratch's chunk", sums),
        ("views broadcast from every root", broadcasts),
        ("gathers of uneven counts, an empty one included, and bad calls refused", gathers),
        ("distributed steps (FROG, FROG's plain path, SGD, AdamW, Muon, K-FROG), all in one step_all or one call each, equal one process's, bitwise; states sharded", distributed_steps),
        ("ranks built differently are refused on every rank, naming the difference", distributed_mismatch),
        ("a rank's bad rows fail it and reach the others as a failed peer, nothing changed", distributed_failure),
        ("step_all refuses entries that differ between ranks, and an entry given twice, on every rank, nothing changed", distributed_entries),
        ("a sharded checkpoint restores on fewer and on more ranks, and in one process, bitwise", distributed_checkpoint),
    ])
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

fn distributed_steps(c: &Mpi) -> Result<(), String> {
    let cpu = Cpu::<f64>::with_threads(1).map_err(|e| e.to_string())?;
    let one = alone(&cpu, BATCH, 0..STEPS);
    let (mut opt, ids) = build(&cpu, BATCH);
    let mut together = initial();
    train_distributed(&cpu, c, &mut opt, &ids, &mut together, 0..STEPS, Stepping::Together)?;
    for (k, (a, b)) in one.iter().zip(&together).enumerate() {
        ensure(a == b, || format!("entry {k}: the distributed values differ from one process's"))?;
    }
    let (mut each_opt, each_ids) = build(&cpu, BATCH);
    let mut each = initial();
    train_distributed(&cpu, c, &mut each_opt, &each_ids, &mut each, 0..STEPS, Stepping::Each)?;
    ensure(each == one, || "one call per entry: the values differ from one process's".into())?;
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
    train_distributed(&cpu, c, &mut opt, &ids, &mut small, 0..STEPS, Stepping::Together)?;
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

fn distributed_entries(c: &Mpi) -> Result<(), String> {
    let cpu = Cpu::<f64>::with_threads(1).map_err(|e| e.to_string())?;
    let (mut opt, ids) = build(&cpu, BATCH);
    let mut d = opt.distributed(&cpu, c).map_err(|e| e.to_string())?;
    let v = initial();
    let g = step_data(0, &v, BATCH).grads;
    let (mut a, mut b) = (v[2].0.clone(), v[2].0.clone());
    // The last rank leaves the second entry out.
    let last = c.rank() + 1 == c.size();
    let mut entries = vec![Entry::Param { id: ids[2], param: ParamGrad { param: &mut a, grad: &g[2].0 } }];
    let (mut w, mut bias) = v[3].clone();
    if !last {
        entries.push(Entry::Layer { id: ids[3], params: Params { weight: &mut w, grad_weight: &g[3].0, bias: Some((&mut bias, &g[3].1)) }, rows: None });
    }
    let got = d.step_all(&cpu, &mut entries);
    let want = if c.size() > 1 { Err(Error::Collective(CollectiveError::Mismatch { what: "the entries of a step (ids, kinds and samples)" })) } else { Ok(()) };
    ensure(got == want, || format!("entries that differ: {got:?}, expected {want:?}"))?;
    if c.size() > 1 {
        ensure(a == v[2].0 && (w.clone(), bias.clone()) == v[3], || "a refused step changed the values".into())?;
    }
    // An entry twice, on every rank.
    a.clone_from(&v[2].0);
    let got = d.step_all(&cpu, &mut [Entry::Param { id: ids[2], param: ParamGrad { param: &mut a, grad: &g[2].0 } }, Entry::Param { id: ids[2], param: ParamGrad { param: &mut b, grad: &g[2].0 } }]);
    ensure(got == Err(Error::Registry(RegistryError::SteppedTwice(2))), || format!("an entry twice: {got:?}"))?;
    ensure(a == v[2].0 && b == v[2].0, || "a refused step changed the values".into())
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
        train_distributed(&cpu, &sub, &mut opt, &ids, &mut v, 0..STEPS, Stepping::Together)?;
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
    train_distributed(&cpu, c, &mut opt, &ids, &mut v, STEPS..2 * STEPS, Stepping::Each)?;
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
