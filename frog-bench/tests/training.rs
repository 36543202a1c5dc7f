//! A short FROG training run of the small ResNet on the shared CIFAR-10
//! data: 150 steps must beat chance (10 %) by a clear margin.

mod common;

use frog_bench::arch::Arch;
use frog_bench::data::{load, DataOptions};
use frog_bench::device::cpu::CpuDevice;
use frog_bench::optim::Method;
use frog_bench::train::{train, RunConfig};
use frog_core::Config;

#[test]
fn frog_trains_the_small_resnet_well_above_chance() {
    let opts = DataOptions { dir: Some(common::cifar_dir()), train_limit: Some(150 * 32), test_limit: Some(1000), ..DataOptions::default() };
    let data = load(&opts).unwrap_or_else(|e| panic!("{e} (set FROG_DATA to cifar-10-batches-bin)"));
    let cfg = RunConfig {
        label: "FROG test".into(),
        arch: Arch::by_name("resnet-small").unwrap(),
        method: Method::Frog(Config { lr: 0.01, lr_other_ratio: 1.0, momentum: 0.9, weight_decay: 1e-5, sample_size: Some(8), ..Config::default() }),
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
