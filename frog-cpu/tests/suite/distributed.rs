//! The distributed optimizer in one process, on frog-core's `Solo`
//! communicator (the multi-rank tests are `tests/mpi.rs`, under mpirun):
//! the same steps and checkpoint bytes as the unsharded optimizer, the
//! shards and their rows, and what a sharded optimizer refuses.

use proptest::prelude::*;

use crate::common::distributed::{alone, build, initial, step_data, train_alone, train_distributed, Stepping, BATCH, KFROG, STEPS};
use frog_core::{Collective, CollectiveError, Entry, Error, GroupId, HostCollective, Layer, ParamGrad, Params, RegistryError, Shard, Solo, StateError};
use frog_cpu::Cpu;

#[test]
fn steps_on_one_rank_are_the_unsharded_steps() {
    let cpu = Cpu::<f64>::with_threads(1).unwrap();
    for (batch, stepping) in [(BATCH, Stepping::Together), (BATCH, Stepping::Each), (2, Stepping::Together)] {
        let (mut opt, ids) = build(&cpu, batch);
        let mut v = initial();
        train_distributed(&cpu, &Solo, &mut opt, &ids, &mut v, 0..STEPS, stepping).unwrap();
        assert_eq!(v, alone(&cpu, batch, 0..STEPS), "batch {batch}, {stepping:?}");
    }
}

#[test]
fn the_sharded_checkpoint_is_the_unsharded_one_byte_for_byte() {
    let cpu = Cpu::<f64>::with_threads(1).unwrap();
    let (mut sharded, ids) = build(&cpu, BATCH);
    let (mut v, mut w) = (initial(), initial());
    train_distributed(&cpu, &Solo, &mut sharded, &ids, &mut v, 0..STEPS, Stepping::Together).unwrap();
    let (mut plain, plain_ids) = build(&cpu, BATCH);
    train_alone(&cpu, &mut plain, &plain_ids, &mut w, 0..STEPS);
    let mut want = vec![0; plain.checkpoint_len()];
    plain.checkpoint(&cpu, &mut want).unwrap();
    let d = sharded.distributed(&cpu, &Solo).unwrap();
    assert_eq!(d.checkpoint_len().unwrap(), want.len());
    let mut got = vec![0; want.len()];
    assert!(matches!(d.checkpoint(&cpu, &mut got[..10]), Err(Error::Shape(_))));
    assert_eq!(d.checkpoint(&cpu, &mut got).unwrap(), want.len());
    assert_eq!(got, want);
    // It restores into a new optimizer, which goes on as the plain one.
    let (mut restored, ids) = build(&cpu, BATCH);
    restored.restore(&cpu, &got).unwrap();
    train_alone(&cpu, &mut restored, &ids, &mut v, STEPS..STEPS + 1);
    train_alone(&cpu, &mut plain, &plain_ids, &mut w, STEPS..STEPS + 1);
    assert_eq!(v, w);
}

#[test]
fn a_sharded_optimizer_refuses_what_it_cannot_do() {
    let cpu = Cpu::<f64>::with_threads(1).unwrap();
    let (mut opt, ids) = build(&cpu, BATCH);
    let d = opt.distributed(&cpu, &Solo).unwrap();
    assert!(ids.iter().all(|&id| d.owner(id) == Ok(0)));
    // The single process's checkpoint and restore: Distributed::checkpoint
    // instead, and restore before sharding.
    let mut bytes = vec![0; opt.checkpoint_len()];
    assert_eq!(opt.checkpoint(&cpu, &mut bytes), Err(Error::State(StateError::Sharded)));
    assert_eq!(opt.restore(&cpu, &bytes), Err(Error::State(StateError::Sharded)));
    // A registration after sharding: the optimizer cannot be sharded again.
    opt.add_layer(&cpu, "late", Layer::linear(3, 2, true), GroupId::DEFAULT).unwrap();
    assert_eq!(opt.distributed(&cpu, &Solo).map(|_| ()), Err(Error::Registry(RegistryError::Resharded)));
}

#[test]
fn step_all_refuses_entries_that_do_not_fit_their_registration() {
    let cpu = Cpu::<f64>::with_threads(1).unwrap();
    let (mut opt, ids) = build(&cpu, BATCH);
    let mut d = opt.distributed(&cpu, &Solo).unwrap();
    let v = initial();
    let g = step_data(0, &v, BATCH).grads;
    let mut w = v.clone();
    let [conv, fc, plain, .., kf] = &mut w[..] else { unreachable!() };
    // A FROG layer without its rows.
    let got = d.step_all(&cpu, &mut [Entry::Layer { id: ids[1], params: Params { weight: &mut fc.0, grad_weight: &g[1].0, bias: Some((&mut fc.1, &g[1].1)) }, rows: None }]);
    assert_eq!(got, Err(Error::Registry(RegistryError::NoBatch(1))));
    // The K-FROG layer on the other layers' path, a FROG layer on K-FROG's
    // (its rows are not looked at first).
    let got = d.step_all(&cpu, &mut [Entry::Layer { id: ids[KFROG], params: Params { weight: &mut kf.0, grad_weight: &g[KFROG].0, bias: None }, rows: None }]);
    assert_eq!(got, Err(Error::Registry(RegistryError::WrongMethod(KFROG as u32))));
    // A plain parameter after a layer given as one: nothing is stepped.
    let mut entries = [Entry::Param { id: ids[2], param: ParamGrad { param: &mut plain.0, grad: &g[2].0 } }, Entry::Param { id: ids[0], param: ParamGrad { param: &mut conv.0, grad: &g[0].0 } }];
    assert_eq!(d.step_all(&cpu, &mut entries), Err(Error::Registry(RegistryError::WrongKind(0))));
    assert_eq!(format!("{:?}", entries[1]), format!("Param {{ id: {:?}, .. }}", ids[0]));
    assert_eq!(w, v, "a refused step changed the values");
}

#[test]
fn solo_moves_nothing_and_gathers_by_copying() {
    let cpu = Cpu::<f32>::with_threads(1).unwrap();
    let mut data = [1.0f32, 2.0, 3.0];
    Solo.all_reduce_sum(&cpu, &mut &mut data[..]).unwrap();
    Solo.broadcast(&cpu, &mut &mut data[..], 0).unwrap();
    assert_eq!(data, [1.0, 2.0, 3.0]);
    let mut recv = [0.0f32; 3];
    Solo.gather(&cpu, &&data[..], Some(&mut &mut recv[..]), &|_| 3, 0).unwrap();
    assert_eq!(recv, data);
    assert_eq!(Collective::<Cpu<f32>>::broadcast(&Solo, &cpu, &mut &mut data[..], 1), Err(CollectiveError::BadRank { rank: 1, size: 1 }));
    assert!(matches!(Solo.gather(&cpu, &&data[..2], Some(&mut &mut recv[..]), &|_| 3, 0), Err(CollectiveError::Size { .. })));
    assert!(matches!(Solo.gather(&cpu, &&data[..], Some(&mut &mut recv[..2]), &|_| 3, 0), Err(CollectiveError::Size { .. })));
    assert_eq!((Solo.rank(), Solo.size()), (0, 1));
}

proptest! {
    /// The shards of any batch over any ranks: consecutive, covering it,
    /// the first `batch % ranks` one larger; `select` picks exactly a
    /// draw's rows in a shard.
    #[test]
    fn shards_split_every_batch(batch in 0usize..200, ranks in 1usize..40, draw in proptest::collection::btree_set(0usize..200, 0..20)) {
        let shards: Vec<Shard> = (0..ranks).map(|k| Shard::of(batch, k, ranks).unwrap()).collect();
        prop_assert_eq!(shards[0].offset, 0);
        prop_assert_eq!(shards[ranks - 1].end(), batch);
        for (k, s) in shards.iter().enumerate() {
            prop_assert_eq!(s.len, batch / ranks + usize::from(k < batch % ranks));
            if k > 0 {
                prop_assert_eq!(shards[k - 1].end(), s.offset);
            }
        }
        let draw: Vec<usize> = draw.into_iter().filter(|&i| i < batch).collect();
        let picked: Vec<usize> = shards.iter().flat_map(|s| s.select(&draw).iter().copied()).collect();
        prop_assert_eq!(&picked, &draw);
        prop_assert!(shards.iter().all(|s| s.select(&draw).iter().all(|&i| i >= s.offset && i < s.end())));
        prop_assert_eq!(Shard::of(batch, ranks, ranks), Err(CollectiveError::BadRank { rank: ranks, size: ranks }));
    }
}
