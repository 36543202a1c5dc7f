//! frog-cpu's MPI collectives on several ranks: run under `mpirun -n P`
//! (P of 2 and 3 in CI), every rank this program. Without a harness: MPI
//! is initialized once per process, and every rank must make the same
//! collective calls in the same order, so the checks run in sequence.
//!
//! On one rank (no `mpirun`) the checks still run, trivially; with
//! `FROG_REQUIRE_MPI=1` that is a failure, so CI cannot pass by not
//! starting the ranks.

use frog_core::{Collective, CollectiveError, HostCollective, HostOp};
use frog_cpu::mpi::Mpi;
use frog_cpu::Cpu;

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
    let checks: [(&str, Check); 7] = [
        ("host words reduce by min, max and sum", host_words),
        ("bytes broadcast from every root", bytes_broadcast),
        ("agreement and disagreement are seen by every rank", agreement),
        ("a failed rank is reported to the others", status),
        ("f32 and f64 sums, in place, beyond the scratch's chunk", sums),
        ("views broadcast from every root", broadcasts),
        ("gathers of uneven counts, an empty one included, and bad calls refused", gathers),
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
        c.gather(&cpu, &&send[..], (r == root).then_some(&mut view), &counts, root).map_err(|e| e.to_string())?;
        ensure(r != root || recv == want, || format!("root {root}: {recv:?}"))?;
    }
    // Refused before anything moves, on every rank alike (a call refused
    // on some ranks only would leave the others waiting): counts of
    // another length, sends of other lengths, a root outside; then, on
    // the root alone and without a collective, a receive too long.
    let refusals = [
        c.gather(&cpu, &&send[..], None, &counts[..p - 1], 0),
        c.gather(&cpu, &&[0.0; 99][..], None, &counts, 0),
        c.gather(&cpu, &&send[..], None, &counts, p),
    ];
    for (i, got) in refusals.into_iter().enumerate() {
        ensure(got.is_err(), || format!("refusal {i} was accepted"))?;
    }
    if r == 0 {
        let long = vec![0.0; total + 1];
        let got = c.check_gather(&cpu, &&send[..], Some(&&long[..]), &counts, 0);
        ensure(matches!(got, Err(CollectiveError::Size { .. })), || format!("a root's receive too long: {got:?}"))?;
    }
    Ok(())
}
