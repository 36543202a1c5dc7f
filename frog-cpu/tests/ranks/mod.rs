//! The multi-rank tests' harness, shared by frog-cpu's `tests/mpi.rs` and
//! frog-bench's (which includes this file by path). Without libtest's
//! harness: MPI is initialized once per process, and every rank must make
//! the same collective calls in the same order, so the checks run in
//! sequence, each rank printing its verdicts, and every rank exits with
//! the same status. On one rank (no `mpirun`) the checks still run,
//! trivially; with `FROG_REQUIRE_MPI=1` that is a failure, so CI cannot
//! pass by not starting the ranks.

use frog_core::{HostCollective, HostOp};
use frog_cpu::mpi::Mpi;

/// One check, run by every rank on the world's communicator.
pub type Check = fn(&Mpi) -> Result<(), String>;

/// Runs `checks` in order on MPI's world and exits: 0 when every check
/// passed on every rank, 1 otherwise.
pub fn run(checks: &[(&str, Check)]) -> ! {
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
    let reduced = comm.all_reduce_u64(&mut any, HostOp::Sum);
    drop(comm);
    drop(universe);
    std::process::exit(i32::from(reduced.is_err() || any[0] > 0))
}

/// `Ok` when `ok`, else the error `what` says.
pub fn ensure(ok: bool, what: impl FnOnce() -> String) -> Result<(), String> {
    if ok {
        Ok(())
    } else {
        Err(what())
    }
}
