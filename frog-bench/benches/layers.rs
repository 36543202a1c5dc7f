//! Criterion benches of one FROG step per ResNet-18 conv layer (f32,
//! frog-cpu, sample 64, 4 CG iterations): the shapes of the `layers`
//! subcommand.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use frog_bench::layers::{resnet18_convs, LayerStep};
use frog_core::Layer;
use frog_cpu::Cpu;

fn frog_step(c: &mut Criterion) {
    let backend = Cpu::<f32>::with_threads(0).expect("a thread pool");
    let mut group = c.benchmark_group("frog_step_r64_k4");
    group.sample_size(10);
    for rc in resnet18_convs() {
        let layer = Layer::conv2d(rc.conv, false);
        group.throughput(Throughput::Elements(layer.cg_flops(64, 4) as u64));
        let mut step = LayerStep::new(&backend, layer, 64, 4).expect("bench layer");
        group.bench_function(rc.name, |b| b.iter(|| step.step().expect("FROG step")));
    }
    group.finish();
}

criterion_group!(benches, frog_step);
criterion_main!(benches);
