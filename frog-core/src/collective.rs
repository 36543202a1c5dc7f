//! Collectives: what a data-parallel step needs from the engine that
//! connects the processes (MPI on the host, NCCL on GPUs), and nothing
//! more.
//!
//! Two traits, split by where the data lives. [`HostCollective`] moves
//! small host messages: the words of the checks that all ranks agree, the
//! status that tells every rank that one of them failed, and the bytes
//! with which a device engine bootstraps itself (NCCL's unique id travels
//! over the host communicator, so that the NCCL code never links MPI).
//! [`Collective`] moves a backend's data (gradients, sampled rows,
//! weights) in place, on views, so that buffers and the caller's own
//! storage are served alike. Every call is collective: each rank of the
//! communicator makes it, in the same order, with agreeing sizes.
//!
//! The implementations live with the backends: frog-cpu's over MPI (its
//! `mpi` feature), frog-cuda's over NCCL.

use core::fmt;

use crate::backend::{Backend, BackendError};
use crate::scalar::Scalar;

/// A reduction of host words.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostOp {
    /// The smallest of the ranks' words.
    Min,
    /// The largest.
    Max,
    /// The sum (wrapping on overflow, as MPI's and NCCL's do).
    Sum,
}

/// A collective call that failed, or ranks that disagree.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CollectiveError {
    /// The engine reported an error: its own code (an MPI error class, an
    /// `ncclResult_t`).
    Engine {
        /// Which engine: "MPI", "NCCL".
        engine: &'static str,
        /// The engine's code.
        code: i32,
    },
    /// A rank outside the communicator (a root, an owner).
    BadRank {
        /// The rank given.
        rank: usize,
        /// Ranks in the communicator.
        size: usize,
    },
    /// Sizes that do not fit together: a gather's counts and its buffers,
    /// or a message the engine cannot address (above `i32::MAX` entries
    /// for MPI).
    Size {
        /// Which size.
        what: &'static str,
        /// What it needed to be (at most, for a limit).
        expected: usize,
        /// What it was.
        actual: usize,
    },
    /// The ranks disagree on something they must share (see
    /// [`HostCollective::check_agree`]).
    Mismatch {
        /// What they disagree on.
        what: &'static str,
    },
    /// Another rank failed in the same step and said so (see
    /// [`HostCollective::check_status`]); its own error says why.
    PeerFailed {
        /// The lowest rank that failed.
        rank: usize,
    },
}

impl fmt::Display for CollectiveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Engine { engine, code } => write!(f, "{engine} failed with code {code}"),
            Self::BadRank { rank, size } => write!(f, "rank {rank} is outside the communicator of {size} ranks"),
            Self::Size { what, expected, actual } => write!(f, "{what} is {actual}, expected {expected}"),
            Self::Mismatch { what } => write!(f, "the ranks disagree on {what}"),
            Self::PeerFailed { rank } => write!(f, "rank {rank} failed in this step (its own error says why)"),
        }
    }
}

impl core::error::Error for CollectiveError {}

/// The most words [`HostCollective::check_agree`] compares in one call.
pub const MAX_AGREE: usize = 16;

/// The host side of a communicator: who is where, and small host
/// messages. Required methods are the engine's primitives; the provided
/// checks are built from them.
pub trait HostCollective {
    /// This process's rank, below [`HostCollective::size`].
    fn rank(&self) -> usize;
    /// Ranks in the communicator (at least 1).
    fn size(&self) -> usize;
    /// Reduces `data` over the ranks with `op`, in place: every rank ends
    /// with the same words.
    fn all_reduce_u64(&self, data: &mut [u64], op: HostOp) -> Result<(), CollectiveError>;
    /// Rank `root`'s `data` to every rank (the same length everywhere).
    fn broadcast_bytes(&self, data: &mut [u8], root: usize) -> Result<(), CollectiveError>;

    /// Succeeds when every rank holds the same `words`; otherwise every
    /// rank gets [`CollectiveError::Mismatch`] naming the first word that
    /// differs (`what[i]` names `words[i]`). Hash what is larger than a
    /// word. At most [`MAX_AGREE`] words.
    fn check_agree(&self, words: &[u64], what: &[&'static str]) -> Result<(), CollectiveError> {
        let n = words.len();
        if n > MAX_AGREE {
            return Err(CollectiveError::Size { what: "words to agree on", expected: MAX_AGREE, actual: n });
        }
        if what.len() != n {
            return Err(CollectiveError::Size { what: "names of the words to agree on", expected: n, actual: what.len() });
        }
        let (mut lo, mut hi) = ([0u64; MAX_AGREE], [0u64; MAX_AGREE]);
        lo[..n].copy_from_slice(words);
        hi[..n].copy_from_slice(words);
        self.all_reduce_u64(&mut lo[..n], HostOp::Min)?;
        self.all_reduce_u64(&mut hi[..n], HostOp::Max)?;
        match (0..n).find(|&i| lo[i] != hi[i]) {
            Some(i) => Err(CollectiveError::Mismatch { what: what[i] }),
            None => Ok(()),
        }
    }

    /// Tells every rank whether any failed: `Ok` when none did; else,
    /// on every rank that did not fail, [`CollectiveError::PeerFailed`]
    /// with the lowest failed rank, and on a failed rank `Ok` (it has its
    /// own error to return). Called where one rank's failure would leave
    /// the others waiting in a later collective.
    fn check_status(&self, failed: bool) -> Result<(), CollectiveError> {
        // The lowest failed rank, as `size - rank`, so that Max finds it.
        let mut word = [if failed { (self.size() - self.rank()) as u64 } else { 0 }];
        self.all_reduce_u64(&mut word, HostOp::Max)?;
        match word[0] {
            0 => Ok(()),
            _ if failed => Ok(()),
            w => Err(CollectiveError::PeerFailed { rank: self.size() - w as usize }),
        }
    }

    /// Refuses `rank` when it is outside the communicator.
    fn check_rank(&self, rank: usize) -> Result<(), CollectiveError> {
        if rank >= self.size() {
            return Err(CollectiveError::BadRank { rank, size: self.size() });
        }
        Ok(())
    }
}

/// Collectives over backend `B`'s data, in place on views (a buffer's
/// through [`Backend::view_mut`]).
pub trait Collective<B: Backend>: HostCollective {
    /// Sums `data` over the ranks, in place: every rank ends with the sum.
    fn all_reduce_sum(&self, backend: &B, data: &mut B::ViewMut<'_>) -> Result<(), CollectiveError>;
    /// Rank `root`'s `data` to every rank.
    fn broadcast(&self, backend: &B, data: &mut B::ViewMut<'_>, root: usize) -> Result<(), CollectiveError>;
    /// Concatenates the ranks' `send` in rank order into `root`'s `recv`:
    /// rank `k` sends `counts(k)` entries (its `send` has exactly that
    /// many), and `recv` (on `root`; `None` elsewhere) holds their sum.
    /// Every rank passes the same `counts`; a function rather than a
    /// slice, so that a sharded step finds them from its sample without
    /// an array per rank.
    fn gather(&self, backend: &B, send: &B::View<'_>, recv: Option<&mut B::ViewMut<'_>>, counts: &dyn Fn(usize) -> usize, root: usize) -> Result<(), CollectiveError>;

    /// The checks every [`Collective::gather`] makes before it moves
    /// anything: `root` is in the communicator, the counts' sum is a
    /// `usize`, this rank's `send` holds its count, and the root's `recv`
    /// their sum. Returns the sum.
    fn check_gather(&self, backend: &B, send: &B::View<'_>, recv: Option<&B::View<'_>>, counts: &dyn Fn(usize) -> usize, root: usize) -> Result<usize, CollectiveError> {
        self.check_rank(root)?;
        let mine = counts(self.rank());
        if backend.view_len(send) != mine {
            return Err(CollectiveError::Size { what: "this rank's send entries", expected: mine, actual: backend.view_len(send) });
        }
        let total = (0..self.size()).try_fold(0usize, |a, k| a.checked_add(counts(k))).ok_or(CollectiveError::Size { what: "the gather's total entries", expected: usize::MAX, actual: usize::MAX })?;
        match (self.rank() == root, recv) {
            (true, Some(r)) if backend.view_len(r) == total => Ok(total),
            (true, r) => Err(CollectiveError::Size { what: "the root's receive entries", expected: total, actual: r.map_or(0, |r| backend.view_len(r)) }),
            (false, _) => Ok(total),
        }
    }
}

/// One process as a communicator of one rank: reductions and broadcasts
/// leave the data as it is, a gather copies. It lets code written for
/// [`crate::Distributed`] run without an engine (and tests it).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Solo;

impl HostCollective for Solo {
    fn rank(&self) -> usize {
        0
    }

    fn size(&self) -> usize {
        1
    }

    fn all_reduce_u64(&self, _: &mut [u64], _: HostOp) -> Result<(), CollectiveError> {
        Ok(())
    }

    fn broadcast_bytes(&self, _: &mut [u8], root: usize) -> Result<(), CollectiveError> {
        self.check_rank(root)
    }
}

impl<B: Backend> Collective<B> for Solo {
    fn all_reduce_sum(&self, _: &B, _: &mut B::ViewMut<'_>) -> Result<(), CollectiveError> {
        Ok(())
    }

    fn broadcast(&self, _: &B, _: &mut B::ViewMut<'_>, root: usize) -> Result<(), CollectiveError> {
        self.check_rank(root)
    }

    fn gather(&self, backend: &B, send: &B::View<'_>, recv: Option<&mut B::ViewMut<'_>>, counts: &dyn Fn(usize) -> usize, root: usize) -> Result<(), CollectiveError> {
        let n = self.check_gather(backend, send, recv.as_deref().map(|r| backend.reborrow(r)).as_ref(), counts, root)?;
        match recv {
            // Checked: the root's receive holds `n`, the send as many.
            Some(r) => backend.axpby(n, B::Scalar::ONE, send, B::Scalar::ZERO, r).map_err(|e| CollectiveError::Engine { engine: "the backend", code: e.kind() as i32 }),
            None => Ok(()),
        }
    }
}

/// Assigns each of `costs.len()` entries an owner rank below `ranks`:
/// greedily, the costliest first (ties by position), each to the rank
/// with the least cost so far (ties by the lowest rank). Every rank that
/// calls it with the same costs gets the same owners, which is what a
/// sharded step needs. `owners` holds one entry per cost.
///
/// Errors: no ranks, `owners` of another length, or a cost that is not a
/// finite non-negative number.
pub fn assign_owners(costs: &[f64], ranks: usize, owners: &mut [usize]) -> Result<(), CollectiveError> {
    let n = costs.len();
    if ranks == 0 {
        return Err(CollectiveError::Size { what: "ranks", expected: 1, actual: 0 });
    }
    if owners.len() != n {
        return Err(CollectiveError::Size { what: "owners (one per cost)", expected: n, actual: owners.len() });
    }
    if costs.iter().any(|c| !(c.is_finite() && *c >= 0.0)) {
        return Err(CollectiveError::Size { what: "costs that are finite and non-negative", expected: n, actual: costs.iter().filter(|c| c.is_finite() && **c >= 0.0).count() });
    }
    // `usize::MAX` marks an entry not yet assigned. A rank's load is the
    // sum of its entries' costs; only the first `n` ranks can ever hold
    // one (each of the first `min(n, ranks)` picks finds an empty rank),
    // so the loads are recomputed rather than kept in a per-rank array.
    owners.fill(usize::MAX);
    let used = n.min(ranks);
    for _ in 0..n {
        let next = (0..n).filter(|&i| owners[i] == usize::MAX).fold(None, |best: Option<usize>, i| match best {
            Some(b) if costs[b] >= costs[i] => Some(b),
            _ => Some(i),
        });
        let Some(next) = next else { break };
        let load = |r: usize| (0..n).filter(|&i| owners[i] == r).map(|i| costs[i]).sum::<f64>();
        let rank = (1..used).fold((0, load(0)), |(best, l), r| {
            let lr = load(r);
            if lr < l {
                (r, lr)
            } else {
                (best, l)
            }
        });
        owners[next] = rank.0;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_go_to_the_least_loaded_rank_costliest_first() {
        let mut owners = [0; 5];
        assign_owners(&[1.0, 8.0, 3.0, 8.0, 2.0], 2, &mut owners).unwrap();
        // 8 (pos 1) -> 0, 8 (pos 3) -> 1, 3 -> 0 (tie, lowest rank), 2 -> 1, 1 -> 1.
        assert_eq!(owners, [1, 0, 0, 1, 1]);
        assign_owners(&[1.0, 8.0, 3.0], 5, &mut owners[..3]).unwrap();
        assert_eq!(owners[..3], [2, 0, 1]);
        assign_owners(&[5.0, 5.0], 1, &mut owners[..2]).unwrap();
        assert_eq!(owners[..2], [0, 0]);
        assign_owners(&[], 3, &mut []).unwrap();
    }

    #[test]
    fn one_rank_agrees_with_itself_and_bad_checks_are_refused() {
        assert_eq!(Solo.check_agree(&[1, 2], &["a", "b"]), Ok(()));
        assert_eq!(Solo.check_status(false), Ok(()));
        assert_eq!(Solo.check_status(true), Ok(()));
        assert_eq!(Solo.check_agree(&[0; MAX_AGREE + 1], &["w"; MAX_AGREE + 1]), Err(CollectiveError::Size { what: "words to agree on", expected: MAX_AGREE, actual: MAX_AGREE + 1 }));
        assert!(matches!(Solo.check_agree(&[1, 2], &["a"]), Err(CollectiveError::Size { .. })));
        assert_eq!(Solo.broadcast_bytes(&mut [0], 1), Err(CollectiveError::BadRank { rank: 1, size: 1 }));
    }

    #[test]
    fn bad_owner_inputs_are_refused() {
        let mut owners = [7; 2];
        assert!(assign_owners(&[1.0, 2.0], 0, &mut owners).is_err());
        assert!(assign_owners(&[1.0], 2, &mut owners).is_err());
        assert!(assign_owners(&[1.0, f64::NAN], 2, &mut owners).is_err());
        assert!(assign_owners(&[1.0, -1.0], 2, &mut owners).is_err());
        assert_eq!(owners, [7, 7]);
    }
}
