//! frog-core's collectives over MPI (feature `mpi`), through the `mpi`
//! crate (rsmpi): [`Mpi`] wraps any of its communicators.
//!
//! The program initializes MPI (`mpi::initialize()`) and keeps the
//! universe alive while it trains; run it under `mpirun -n P`. MPICH from
//! the system packages is the simplest to build against (`mpich
//! libmpich-dev`, and `libclang-dev` for the bindings); with Open MPI,
//! running as root needs `OMPI_ALLOW_RUN_AS_ROOT=1` and
//! `OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1`, more ranks than cores
//! `--oversubscribe`, and containers
//! `OMPI_MCA_btl_vader_single_copy_mechanism=none`.
//!
//! MPI's default error handler aborts every rank on an engine error, with
//! MPI's message: an engine failure never returns here. The errors these
//! calls return are the checks they make first (ranks, counts, lengths).

use std::cell::RefCell;

use frog_core::{Collective, CollectiveError, HostCollective, HostOp};
use mpi::collective::SystemOperation;
use mpi::datatype::{Equivalence, PartitionMut};
use mpi::topology::{Communicator, SimpleCommunicator};
use mpi::traits::{CommunicatorCollectives, Root};
use mpi::Count;

use crate::Cpu;

/// Entries of each scratch: the chunk in which an in-place reduction is
/// copied and reduced (rsmpi reduces from one buffer into another).
const CHUNK: usize = 1 << 16;

/// frog-core's [`HostCollective`] and [`Collective`] (for [`Cpu<f32>`] and
/// [`Cpu<f64>`]) over an MPI communicator.
///
/// It holds a fixed scratch (made once, here: 64 Ki entries of each
/// type), so that no collective allocates: a reduction goes through it
/// in chunks, and a gather's counts are converted into it. Not `Sync`:
/// one thread drives a rank's collectives, as MPI's default threading
/// level requires.
pub struct Mpi<C: Communicator = SimpleCommunicator> {
    comm: C,
    f32s: RefCell<Vec<f32>>,
    f64s: RefCell<Vec<f64>>,
    words: RefCell<Vec<u64>>,
    /// A gather's counts and displacements, `2 * size` entries.
    counts: RefCell<Vec<Count>>,
}

impl<C: Communicator> Mpi<C> {
    /// Collectives over `comm` (for example `universe.world()`).
    pub fn new(comm: C) -> Self {
        let size = usize::try_from(comm.size()).unwrap_or(1);
        Self {
            f32s: RefCell::new(vec![0.0; CHUNK]),
            f64s: RefCell::new(vec![0.0; CHUNK]),
            words: RefCell::new(vec![0; CHUNK]),
            counts: RefCell::new(vec![0; 2 * size]),
            comm,
        }
    }

    /// The communicator.
    pub fn communicator(&self) -> &C {
        &self.comm
    }
}

impl<C: Communicator> std::fmt::Debug for Mpi<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mpi").field("rank", &self.comm.rank()).field("size", &self.comm.size()).finish_non_exhaustive()
    }
}

/// The element types the collectives move, each with its scratch.
trait Element: Equivalence + Copy {
    fn scratch<C: Communicator>(mpi: &Mpi<C>) -> &RefCell<Vec<Self>>;
}

impl Element for f32 {
    fn scratch<C: Communicator>(mpi: &Mpi<C>) -> &RefCell<Vec<f32>> {
        &mpi.f32s
    }
}

impl Element for f64 {
    fn scratch<C: Communicator>(mpi: &Mpi<C>) -> &RefCell<Vec<f64>> {
        &mpi.f64s
    }
}

impl Element for u64 {
    fn scratch<C: Communicator>(mpi: &Mpi<C>) -> &RefCell<Vec<u64>> {
        &mpi.words
    }
}

impl<C: Communicator> Mpi<C> {
    /// Reduces `data` in place, chunk by chunk through the scratch.
    fn all_reduce<T: Element>(&self, data: &mut [T], op: SystemOperation) {
        let mut scratch = T::scratch(self).borrow_mut();
        for chunk in data.chunks_mut(CHUNK) {
            let send = &mut scratch[..chunk.len()];
            send.copy_from_slice(chunk);
            self.comm.all_reduce_into(&send[..], chunk, op);
        }
    }

    /// Broadcasts `data` from `root` in chunks MPI can count.
    fn broadcast_from<T: Equivalence>(&self, data: &mut [T], root: usize) -> Result<(), CollectiveError> {
        self.check_rank(root)?;
        let root = self.comm.process_at_rank(root as i32);
        for chunk in data.chunks_mut(Count::MAX as usize) {
            root.broadcast_into(chunk);
        }
        Ok(())
    }

    fn gather_into<T: Equivalence>(&self, send: &[T], recv: Option<&mut [T]>, counts: &dyn Fn(usize) -> usize, total: usize, root: usize) -> Result<(), CollectiveError> {
        if total > Count::MAX as usize {
            return Err(CollectiveError::Size { what: "a gather's entries (MPI counts them in an i32)", expected: Count::MAX as usize, actual: total });
        }
        let root_process = self.comm.process_at_rank(root as i32);
        match recv {
            Some(recv) if self.rank() == root => {
                let mut scratch = self.counts.borrow_mut();
                let (c, d) = scratch.split_at_mut(self.size());
                let mut at = 0;
                for k in 0..c.len() {
                    // Both fit: their sum does.
                    (c[k], d[k]) = (counts(k) as Count, at as Count);
                    at += counts(k);
                }
                root_process.gather_varcount_into_root(send, &mut PartitionMut::new(recv, &c[..], &d[..]));
            }
            _ => root_process.gather_varcount_into(send),
        }
        Ok(())
    }
}

impl<C: Communicator> HostCollective for Mpi<C> {
    fn rank(&self) -> usize {
        self.comm.rank() as usize
    }

    fn size(&self) -> usize {
        self.comm.size() as usize
    }

    fn all_reduce_u64(&self, data: &mut [u64], op: HostOp) -> Result<(), CollectiveError> {
        let op = match op {
            HostOp::Min => SystemOperation::min(),
            HostOp::Max => SystemOperation::max(),
            HostOp::Sum => SystemOperation::sum(),
        };
        self.all_reduce(data, op);
        Ok(())
    }

    fn broadcast_bytes(&self, data: &mut [u8], root: usize) -> Result<(), CollectiveError> {
        self.broadcast_from(data, root)
    }
}

/// The same three calls for each scalar type (`Element` is private, so
/// it cannot bound a public impl).
macro_rules! collective_for {
    ($t:ty) => {
        impl<C: Communicator> Collective<Cpu<$t>> for Mpi<C> {
            fn all_reduce_sum(&self, _cpu: &Cpu<$t>, data: &mut &mut [$t]) -> Result<(), CollectiveError> {
                self.all_reduce(&mut **data, SystemOperation::sum());
                Ok(())
            }

            fn broadcast(&self, _cpu: &Cpu<$t>, data: &mut &mut [$t], root: usize) -> Result<(), CollectiveError> {
                self.broadcast_from(&mut **data, root)
            }

            fn gather(&self, cpu: &Cpu<$t>, send: &&[$t], recv: Option<&mut &mut [$t]>, counts: &dyn Fn(usize) -> usize, root: usize) -> Result<(), CollectiveError> {
                let recv_view = recv.as_ref().map(|r| &***r);
                let total = self.check_gather(cpu, send, recv_view.as_ref(), counts, root)?;
                self.gather_into(send, recv.map(|r| &mut **r), counts, total, root)
            }
        }
    };
}

collective_for!(f32);
collective_for!(f64);
