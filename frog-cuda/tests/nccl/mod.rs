//! frog-core's collectives over NCCL on the GPU backend (`frog_cuda::Nccl`),
//! on one rank over frog-core's `Solo`. A module of the `view` test binary
//! (collectives move views), so that it adds no binary to CI's build or to
//! the prepared GPU run.
//!
//! The NCCL is `$FROG_NCCL_LIB`, else `libnccl.so.2`: on the emulator, CI
//! points it at `emu/libnccl_stub.c` (a one-rank NCCL on the emulator's
//! memory); on a GPU, the prepared run at the system's NCCL where it finds
//! one. Where none can be opened, a test prints `NCCL: not found (...):
//! skipped` and passes, also under `FROG_REQUIRE_GPU=1` (NCCL is optional;
//! `ci.sh` checks that the emulator runs did reach the stub).
//!
//! - `gpu_nccl_one_rank_collectives_return_their_input`: the host side
//!   delegates to `Solo`; an all-reduce and a broadcast leave a view of the
//!   middle of a padded buffer as it was, a gather copies the send view
//!   into the root's receive view, and empty ones do nothing; nothing
//!   outside the views changes; a second communicator after the first's
//!   drop works too.
//! - `gpu_nccl_refusals_change_nothing`: a root outside the communicator, a
//!   send or receive of the wrong length, no receive on the root, a view
//!   of another backend and another backend are errors, and nothing moved.
//! - `gpu_nccl_distributed_step_all_is_the_single_process_step`: frog-core's
//!   `Distributed::step_all` over NCCL on the device (a FROG layer's rows
//!   gathered into its owner's device buffer and stepped through prefix
//!   views of it, a plain parameter, a K-FROG layer; the new values
//!   broadcast as device views) gives one process's steps bit for bit.
//! - `gpu_nccl_missing_library_is_an_error_value`: a library that is not
//!   there is an error naming it and the loader's reason (also without a
//!   device), never a panic.

use frog_core::{
    gather_rows, Backend, BackendErrorKind, Collective, CollectiveError, Config, Conv2d, Entry, GroupId, HostCollective, HostOp, KfrogBatch, KfrogConfig, KfrogShardRows, Layer, Optimizer, ParamGrad, ParamId, Params, ShardRows, Solo,
};
use frog_cuda::{nccl_library, nccl_version, Buffer, Cuda, CudaView, CudaViewMut, Nccl, NcclError, Precision};

use super::{bits, middle, padded, PAD};
use crate::common::{device, download, upload, values};

/// The NCCL of [`nccl_library`] on `cuda` over one rank, or `None` after
/// printing that `test` is skipped because no NCCL could be opened. Any
/// other failure fails the test.
fn open<'h>(cuda: &Cuda, host: &'h Solo, test: &str) -> Option<Nccl<'h, Solo>> {
    match Nccl::new(cuda, host) {
        Ok(n) => Some(n),
        Err(e @ (NcclError::Load { .. } | NcclError::Symbol { .. })) => {
            println!("NCCL: not found ({e}): skipped ({test})");
            None
        }
        Err(e) => panic!("{test}: {e}"),
    }
}

#[test]
fn gpu_nccl_one_rank_collectives_return_their_input() {
    const NAME: &str = "gpu_nccl_one_rank_collectives_return_their_input";
    let Some(cuda) = device(Precision::Exact, NAME) else { return };
    for round in 0..2 {
        let Some(nccl) = open(&cuda, &Solo, NAME) else { return };
        assert_eq!((nccl.rank(), nccl.size()), (0, 1));
        let mut words = [3, u64::MAX, 0];
        nccl.all_reduce_u64(&mut words, HostOp::Sum).unwrap();
        assert_eq!(words, [3, u64::MAX, 0]);
        nccl.check_agree(&[1, 2], &["a", "b"]).unwrap();
        assert_eq!(nccl.check_status(false), Ok(()));

        let n = 1000 + round;
        let v = values(n, 7 + round as u64);
        let mut b = padded(&cuda, &v);
        nccl.all_reduce_sum(&cuda, &mut cuda.view_mut(&mut b, PAD, n).unwrap()).unwrap();
        assert_eq!(bits(&middle(&cuda, &b)), bits(&v), "all-reduce");
        nccl.broadcast(&cuda, &mut cuda.view_mut(&mut b, PAD, n).unwrap(), 0).unwrap();
        assert_eq!(bits(&middle(&cuda, &b)), bits(&v), "broadcast");

        // The gather into another buffer, whose middle held other values.
        let mut r = padded(&cuda, &values(n, 3));
        let send = cuda.view(&b, PAD, n).unwrap();
        nccl.gather(&cuda, &send, Some(&mut cuda.view_mut(&mut r, PAD, n).unwrap()), &|_| n, 0).unwrap();
        assert_eq!(bits(&middle(&cuda, &r)), bits(&v), "gather");

        // Empty views: nothing to move.
        nccl.all_reduce_sum(&cuda, &mut cuda.view_mut(&mut b, PAD, 0).unwrap()).unwrap();
        nccl.broadcast(&cuda, &mut cuda.view_mut(&mut b, PAD, 0).unwrap(), 0).unwrap();
        nccl.gather(&cuda, &cuda.view(&b, PAD, 0).unwrap(), Some(&mut cuda.view_mut(&mut r, PAD, 0).unwrap()), &|_| 0, 0).unwrap();
        assert_eq!(bits(&middle(&cuda, &b)), bits(&v));
        assert_eq!(bits(&middle(&cuda, &r)), bits(&v));

        if round == 0 {
            let (major, minor, patch) = nccl.version();
            println!(
                "{NAME}: NCCL {major}.{minor}.{patch} from {} on {}: one rank, init ok, all-reduce, broadcast and gather return their input",
                nccl.library().display(),
                cuda.device_name()
            );
        }
    }
}

#[test]
fn gpu_nccl_refusals_change_nothing() {
    const NAME: &str = "gpu_nccl_refusals_change_nothing";
    let Some(cuda) = device(Precision::Exact, NAME) else { return };
    let Some(nccl) = open(&cuda, &Solo, NAME) else { return };
    let n = 12;
    let (v, w) = (values(n, 1), values(n, 2));
    let (mut b, mut r) = (padded(&cuda, &v), padded(&cuda, &w));
    let unchanged = |b: &frog_cuda::Buffer, r: &frog_cuda::Buffer| {
        assert_eq!(bits(&middle(&cuda, b)), bits(&v));
        assert_eq!(bits(&middle(&cuda, r)), bits(&w));
    };

    assert_eq!(nccl.broadcast(&cuda, &mut cuda.view_mut(&mut b, PAD, n).unwrap(), 1), Err(CollectiveError::BadRank { rank: 1, size: 1 }));
    let send = cuda.view(&b, PAD, n).unwrap();
    let gather = |send: &CudaView<'_>, recv: Option<&mut CudaViewMut<'_>>, count: usize, root| nccl.gather(&cuda, send, recv, &|_| count, root);
    assert_eq!(gather(&send, Some(&mut cuda.view_mut(&mut r, PAD, n).unwrap()), n, 1), Err(CollectiveError::BadRank { rank: 1, size: 1 }));
    assert_eq!(
        gather(&send, Some(&mut cuda.view_mut(&mut r, PAD, n).unwrap()), n - 1, 0),
        Err(CollectiveError::Size { what: "this rank's send entries", expected: n - 1, actual: n })
    );
    let short = cuda.view(&b, PAD, n - 1).unwrap();
    assert_eq!(
        gather(&short, Some(&mut cuda.view_mut(&mut r, PAD, n).unwrap()), n - 1, 0),
        Err(CollectiveError::Size { what: "the root's receive entries", expected: n - 1, actual: n })
    );
    assert_eq!(gather(&send, None, n, 0), Err(CollectiveError::Size { what: "the root's receive entries", expected: n, actual: 0 }));
    unchanged(&b, &r);

    // Another backend's view, and another backend: refused before NCCL.
    let other = Cuda::new(Precision::Exact).unwrap();
    let mut theirs = other.upload(&v).unwrap();
    let foreign = Err(CollectiveError::Engine { engine: "the backend", code: BackendErrorKind::DeviceMismatch as i32 });
    assert_eq!(nccl.all_reduce_sum(&cuda, &mut other.view_mut(&mut theirs, 0, n).unwrap()), foreign);
    assert_eq!(nccl.all_reduce_sum(&other, &mut other.view_mut(&mut theirs, 0, n).unwrap()), foreign);
    assert_eq!(nccl.broadcast(&other, &mut other.view_mut(&mut theirs, 0, n).unwrap(), 0), foreign);
    let their_send = other.view(&theirs, 0, n).unwrap();
    assert_eq!(gather(&their_send, Some(&mut cuda.view_mut(&mut r, PAD, n).unwrap()), n, 0), foreign);
    unchanged(&b, &r);
    assert_eq!(other.download(&theirs, n).unwrap(), v);
    println!("{NAME}: bad roots, lengths, views and backends refused, nothing changed");
}

/// The distributed step's optimizer: a FROG conv with a bias and a plain
/// parameter (sample 3 of 8), a K-FROG conv (samples 5 and 4).
fn sharded_build(cuda: &Cuda) -> (Optimizer<Cuda, 4>, [ParamId; 3], GroupId) {
    let mut opt = Optimizer::new(Config { lr: 0.01, momentum: 0.9, weight_decay: 1e-3, sample_size: Some(3), ..Config::default() }, 8, 5).unwrap();
    let kfrog = opt.add_group(KfrogConfig { lr: 0.01, momentum: 0.9, sample_size: Some(5), y_sample_size: Some(4), ..KfrogConfig::default() }).unwrap();
    let (conv, kconv) = sharded_layers();
    let ids = [opt.add_layer(cuda, "conv", conv, GroupId::DEFAULT).unwrap(), opt.add_param(cuda, "bn", 6, GroupId::DEFAULT).unwrap(), opt.add_layer(cuda, "kconv", kconv, kfrog).unwrap()];
    (opt, ids, kfrog)
}

fn sharded_layers() -> (Layer, Layer) {
    (Layer::conv2d(Conv2d::new(3, 6, 3, [6, 6]).padding(1), true), Layer::conv2d(Conv2d::new(2, 4, 3, [5, 5]).padding(1), false))
}

/// Rows `rows` of the `per`-entry rows of `full`, gathered on the device.
fn rows_of(cuda: &Cuda, rows: &[usize], per: usize, full: &Buffer) -> Buffer {
    let mut out = cuda.zeros(rows.len() * per).unwrap();
    gather_rows(cuda, rows, per, full, &mut out).unwrap();
    out
}

/// All of `buf`, as a view.
fn whole<'a>(cuda: &Cuda, buf: &'a Buffer) -> CudaView<'a> {
    cuda.view(buf, 0, buf.len()).unwrap()
}

#[test]
fn gpu_nccl_distributed_step_all_is_the_single_process_step() {
    const NAME: &str = "gpu_nccl_distributed_step_all_is_the_single_process_step";
    let Some(cuda) = device(Precision::Exact, NAME) else { return };
    let Some(nccl) = open(&cuda, &Solo, NAME) else { return };
    let (conv, kconv) = sharded_layers();
    let init = || [values(conv.rows() * conv.weight_cols(), 1), values(conv.rows(), 2), values(6, 3), values(kconv.rows() * kconv.weight_cols(), 4)].map(|v| upload(&cuda, &v));
    let (mut one, ids, kfrog) = sharded_build(&cuda);
    let (mut sharded, sids, _) = sharded_build(&cuda);
    let (mut a, mut b) = (init(), init());
    for t in 0..3 {
        let full = [(conv.input_len(), 10), (conv.output_len(), 20), (kconv.input_len(), 30), (kconv.output_len(), 40)].map(|(per, seed)| upload(&cuda, &values(8 * per, seed + t)));
        let grads = [conv.rows() * conv.weight_cols(), conv.rows(), 6, kconv.rows() * kconv.weight_cols()];
        let g = [0, 1, 2, 3].map(|k| upload(&cuda, &values(grads[k], 50 + 10 * k as u64 + t)));

        // One process.
        let mut idx = [0; 8];
        let s = one.sample(8, &mut idx).unwrap();
        let (x, y) = (rows_of(&cuda, &s, conv.input_len(), &full[0]), rows_of(&cuda, &s, conv.output_len(), &full[1]));
        let [w, bias, p, kw] = &mut a;
        one.step_layer(&cuda, ids[0], Params { weight: w, grad_weight: &g[0], bias: Some((bias, &g[1])) }, Some(s.batch(&x, &y))).unwrap();
        one.step_param(&cuda, ids[1], ParamGrad { param: p, grad: &g[2] }).unwrap();
        let (mut xi, mut yi) = ([0; 8], [0; 8]);
        let (xs, ys) = one.sample_kfrog(kfrog, 8, &mut xi, &mut yi).unwrap();
        let (kx, ky) = (rows_of(&cuda, xs, kconv.input_len(), &full[2]), rows_of(&cuda, ys, kconv.output_len(), &full[3]));
        let batch = KfrogBatch { x: &kx, x_sample: xs.len(), y: &ky, y_sample: ys.len(), batch_size: 8 };
        one.step_layer_kfrog(&cuda, ids[2], kw, &g[3], batch).unwrap();

        // The same step, distributed over NCCL: one rank holds every row.
        let mut d = sharded.distributed(&cuda, &nccl).unwrap();
        let mut idx = [0; 8];
        let s = d.sample(8, &mut idx).unwrap();
        let (x, y) = (rows_of(&cuda, &s, conv.input_len(), &full[0]), rows_of(&cuda, &s, conv.output_len(), &full[1]));
        let (mut xi, mut yi) = ([0; 8], [0; 8]);
        let (xs, ys) = d.sample_kfrog(kfrog, 8, &mut xi, &mut yi).unwrap();
        let (kx, ky) = (rows_of(&cuda, xs, kconv.input_len(), &full[2]), rows_of(&cuda, ys, kconv.output_len(), &full[3]));
        let [w, bias, p, kw] = &mut b;
        d.step_all(
            &cuda,
            &mut [
                Entry::Layer { id: sids[0], params: Params { weight: w, grad_weight: &g[0], bias: Some((bias, &g[1])) }, rows: Some(ShardRows { sample: s, x: whole(&cuda, &x), y: whole(&cuda, &y) }) },
                Entry::Param { id: sids[1], param: ParamGrad { param: p, grad: &g[2] } },
                Entry::Kfrog { id: sids[2], weight: kw, grad: &g[3], rows: KfrogShardRows { x_rows: xs, y_rows: ys, batch_size: 8, x: whole(&cuda, &kx), y: whole(&cuda, &ky) } },
            ],
        )
        .unwrap();
    }
    for (k, (a, b)) in a.iter().zip(&b).enumerate() {
        assert_eq!(bits(&download(&cuda, a)), bits(&download(&cuda, b)), "{NAME}: entry {k}");
    }
    println!("{NAME}: 3 steps of FROG, a plain parameter and K-FROG through step_all over NCCL equal one process's, bit for bit");
}

#[test]
fn gpu_nccl_missing_library_is_an_error_value() {
    const NAME: &str = "gpu_nccl_missing_library_is_an_error_value";
    let missing = "/nonexistent/frog/libnccl.so.2";
    let check = |e: NcclError| {
        let text = e.to_string();
        assert!(matches!(&e, NcclError::Load { library, .. } if library.as_os_str() == missing), "{e:?}");
        assert!(text.contains(missing) && text.contains("No such file") && text.contains("FROG_NCCL_LIB"), "{text}");
    };
    check(nccl_version(missing).unwrap_err());
    let Some(cuda) = device(Precision::Exact, NAME) else { return };
    check(Nccl::with_library(&cuda, &Solo, missing).unwrap_err());
    println!("{NAME}: {} (the library tests use: {})", Nccl::with_library(&cuda, &Solo, missing).unwrap_err(), nccl_library().display());
}
