//! Criterion benches of one FROG step per ResNet-18 conv layer (f32,
//! frog-cpu, sample 64, 4 CG iterations): the shapes of the `layers`
//! subcommand, with each layer's automatic algorithm and with the direct
//! one forced. The throughput is the direct algorithm's FLOP count, so
//! criterion's elements/s is the effective FLOP/s, to read beside the
//! `gemm_2048` bench's rate.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use frog_bench::layers::{resnet18_convs, LayerStep};
use frog_core::Layer;
use frog_cpu::gemm::matmul_dense;
use frog_cpu::{Algorithm, Cpu};

fn frog_step(c: &mut Criterion) {
    let mut group = c.benchmark_group("frog_step_r64_k4");
    group.sample_size(10);
    for (label, forced) in [("auto", None), ("direct", Some(Algorithm::Direct))] {
        let backend = Cpu::<f32>::with_threads(0).expect("a thread pool").with_algorithm(forced);
        for rc in resnet18_convs() {
            let layer = Layer::conv2d(rc.conv, false);
            group.throughput(Throughput::Elements(layer.cg_flops(64, 4) as u64));
            let mut step = LayerStep::new(&backend, layer, 64, 4).expect("bench layer");
            group.bench_function(BenchmarkId::new(rc.name, label), |b| b.iter(|| step.step().expect("FROG step")));
        }
    }
    group.finish();
}

/// The machine's f32 GEMM rate on the same pool (elements/s = FLOP/s).
fn gemm_2048(c: &mut Criterion) {
    let n = 2048;
    let backend = Cpu::<f32>::with_threads(0).expect("a thread pool");
    let (a, b) = (vec![0.5f32; n * n], vec![0.25f32; n * n]);
    let mut out = vec![0.0f32; n * n];
    let mut group = c.benchmark_group("gemm");
    group.sample_size(10);
    group.throughput(Throughput::Elements(2 * (n * n * n) as u64));
    group.bench_function("gemm_2048", |bench| bench.iter(|| matmul_dense(backend.pool(), &mut out, &a, &b, [n, n, n]).expect("GEMM")));
    group.finish();
}

criterion_group!(benches, frog_step, gemm_2048);
criterion_main!(benches);
