//! A short FROG training run of the small ResNet on CIFAR-10 from
//! `$FROG_DATA`, else on the synthetic set: 150 steps must beat chance
//! (10 %) by a clear margin.

use frog_bench::arch::Arch;
use frog_bench::data::from_env;
use frog_bench::device::cpu::CpuDevice;
use frog_bench::optim::Method;
use frog_bench::train::{train, RunConfig};
use frog_core::Config;

#[test]
fn frog_trains_the_small_resnet_well_above_chance() {
    let data = from_env(1, Some(150 * 32), Some(1000)).unwrap_or_else(|e| panic!("{e}"));
    println!("training on {}", data.source);
    let cfg = RunConfig {
        label: "FROG test".into(),
        name: "frog-test".into(),
        arch: Arch::by_name("resnet-small").unwrap(),
        method: Method::from(Config { lr: 0.01, lr_other_ratio: 1.0, momentum: 0.9, weight_decay: 1e-5, sample_size: Some(8), ..Config::default() }),
        batch: 32,
        epochs: 1,
        milestones: vec![],
        gamma: 0.1,
        seed: 1,
    };
    let records = train(&CpuDevice::<f32>::new(0).unwrap(), &data, &cfg, |_| {}).unwrap();
    let r = &records[0];
    assert!(r.train_loss < 2.2, "mean training loss {}", r.train_loss);
    assert!(r.test_acc > 25.0, "test accuracy {}% after 150 steps", r.test_acc);
}
