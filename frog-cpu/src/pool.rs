//! A persistent thread pool that runs one closure on every thread.
//!
//! Why not rayon: its job queues allocate blocks as jobs come and go, and a
//! FROG step on this backend must allocate nothing once warm. This pool
//! hands each worker a pointer to the caller's closure under a mutex and a
//! condition variable (futex-based, allocation-free on Linux), so a
//! parallel region costs no heap traffic at all.

use std::cell::Cell;
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

use crate::backend::CpuError;

type Job = *const (dyn Fn(usize) + Sync);

struct State {
    job: Option<Job>,
    generation: u64,
    pending: usize,
    panicked: bool,
    shutdown: bool,
}

// SAFETY: the job pointer is only dereferenced while `run` keeps its
// closure alive, and the closure is `Sync`, so any thread may call it.
unsafe impl Send for State {}

struct Shared {
    state: Mutex<State>,
    work: Condvar,
    done: Condvar,
}

thread_local! {
    static IN_POOL: Cell<bool> = const { Cell::new(false) };
}

/// The most threads a pool may have: far above any machine FROG runs on,
/// and low enough that a mistyped count fails at once instead of
/// exhausting the system's threads.
pub const MAX_THREADS: usize = 1024;

/// Why a pool could not be made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PoolFailure {
    /// More than [`MAX_THREADS`] threads were asked for.
    TooMany,
    /// The system refused to start a thread.
    Spawn(std::io::ErrorKind),
}

impl fmt::Display for PoolFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooMany => write!(f, "at most {MAX_THREADS} threads are supported"),
            Self::Spawn(kind) => write!(f, "the system refused a thread ({kind})"),
        }
    }
}

/// A fixed set of threads, started once; `run` calls a closure on all of them.
pub struct ThreadPool {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    /// Serializes `run` calls made from different threads.
    caller: Mutex<()>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl ThreadPool {
    /// A pool of `threads` threads in all (the caller counts as thread 0;
    /// `threads - 1` workers are spawned). `0` means the number of CPUs.
    ///
    /// More than [`MAX_THREADS`], or a thread the system refuses, is an
    /// error; the workers already started are then stopped and joined.
    pub fn new(threads: usize) -> Result<Self, CpuError> {
        let threads = if threads == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get()).min(MAX_THREADS)
        } else {
            threads
        };
        let failed = |reason| CpuError::Threads { requested: threads, reason };
        if threads > MAX_THREADS {
            return Err(failed(PoolFailure::TooMany));
        }
        let shared = Arc::new(Shared {
            state: Mutex::new(State { job: None, generation: 0, pending: 0, panicked: false, shutdown: false }),
            work: Condvar::new(),
            done: Condvar::new(),
        });
        // Dropping a partial pool shuts its workers down and joins them.
        let mut pool = Self { shared, workers: Vec::with_capacity(threads - 1), caller: Mutex::new(()) };
        for tid in 1..threads {
            let shared = Arc::clone(&pool.shared);
            let spawned = std::thread::Builder::new().name(format!("frog-cpu-{tid}")).spawn(move || worker(&shared, tid));
            pool.workers.push(spawned.map_err(|e| failed(PoolFailure::Spawn(e.kind())))?);
        }
        Ok(pool)
    }

    /// Threads in the pool, the caller included.
    pub fn threads(&self) -> usize {
        self.workers.len() + 1
    }

    /// Calls `f(tid)` once for every `tid` in `0..threads()`, concurrently,
    /// and returns when all calls have. A call made from inside a job runs
    /// the `tid`s one after another on the current thread instead.
    ///
    /// Either way each `tid` is called exactly once per `run`, which is
    /// what the crate's splitting primitives rely on to hand each thread
    /// its own part of a buffer. Kernels do not start a parallel
    /// primitive inside a job (the nested one would gain nothing), but one
    /// that does stays sound, only sequential.
    pub fn run(&self, f: &(dyn Fn(usize) + Sync)) {
        let n = self.threads();
        if n == 1 || IN_POOL.with(Cell::get) {
            (0..n).for_each(f);
            return;
        }
        let _serial = lock(&self.caller);
        // SAFETY: the lifetime is erased only for the workers' view; this
        // function does not return before every worker is done with `f`.
        let job: Job = unsafe { std::mem::transmute::<&(dyn Fn(usize) + Sync), &'static (dyn Fn(usize) + Sync)>(f) };
        {
            let mut st = lock(&self.shared.state);
            st.job = Some(job);
            st.generation += 1;
            st.pending = n - 1;
            st.panicked = false;
        }
        self.shared.work.notify_all();
        IN_POOL.with(|c| c.set(true));
        let mine = catch_unwind(AssertUnwindSafe(|| f(0)));
        IN_POOL.with(|c| c.set(false));
        let mut st = lock(&self.shared.state);
        while st.pending > 0 {
            st = self.shared.done.wait(st).unwrap_or_else(|e| e.into_inner());
        }
        st.job = None;
        let panicked = st.panicked;
        drop(st);
        if let Err(p) = mine {
            std::panic::resume_unwind(p);
        }
        assert!(!panicked, "a frog-cpu worker thread panicked");
    }
}

/// The `part`-th of `parts` near-equal contiguous pieces of `0..len`
/// (empty when `parts` is 0 or `part >= parts`).
pub fn split_range(len: usize, parts: usize, part: usize) -> std::ops::Range<usize> {
    if part >= parts {
        return len..len;
    }
    let base = len / parts;
    let extra = len % parts;
    let start = part * base + part.min(extra);
    start..start + base + usize::from(part < extra)
}

fn worker(shared: &Shared, tid: usize) {
    IN_POOL.with(|c| c.set(true));
    let mut seen = 0;
    loop {
        let job = {
            let mut st = lock(&shared.state);
            while st.generation == seen && !st.shutdown {
                st = shared.work.wait(st).unwrap_or_else(|e| e.into_inner());
            }
            if st.shutdown {
                return;
            }
            seen = st.generation;
            st.job.expect("a job is set with every new generation")
        };
        // SAFETY: `run` keeps the closure alive until `pending` reaches 0.
        let ok = catch_unwind(AssertUnwindSafe(|| unsafe { (*job)(tid) })).is_ok();
        let mut st = lock(&shared.state);
        st.panicked |= !ok;
        st.pending -= 1;
        if st.pending == 0 {
            shared.done.notify_one();
        }
    }
}

impl Drop for ThreadPool {
    fn drop(&mut self) {
        lock(&self.shared.state).shutdown = true;
        self.shared.work.notify_all();
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn every_thread_runs_once_per_call() {
        let pool = ThreadPool::new(3).unwrap();
        let count = AtomicUsize::new(0);
        let mask = AtomicUsize::new(0);
        for _ in 0..100 {
            pool.run(&|tid| {
                count.fetch_add(1, Ordering::SeqCst);
                mask.fetch_or(1 << tid, Ordering::SeqCst);
            });
        }
        assert_eq!(count.load(Ordering::SeqCst), 300);
        assert_eq!(mask.load(Ordering::SeqCst), 0b111);
    }

    #[test]
    fn nested_run_is_sequential() {
        let pool = ThreadPool::new(2).unwrap();
        let count = AtomicUsize::new(0);
        pool.run(&|_| pool.run(&|_| {
            count.fetch_add(1, Ordering::SeqCst);
        }));
        assert_eq!(count.load(Ordering::SeqCst), 4);
    }

    #[test]
    fn too_many_threads_is_an_error() {
        let err = ThreadPool::new(100_000).err().unwrap();
        assert_eq!(err, CpuError::Threads { requested: 100_000, reason: PoolFailure::TooMany });
        assert!(err.to_string().contains("at most 1024"));
        assert!(ThreadPool::new(MAX_THREADS + 1).is_err());
    }

    #[test]
    fn ranges_cover_exactly() {
        for len in [0, 1, 5, 64, 65] {
            let mut next = 0;
            for p in 0..3 {
                let r = split_range(len, 3, p);
                assert_eq!(r.start, next);
                next = r.end;
            }
            assert_eq!(next, len);
        }
    }
}
