fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let model = args.first().cloned().unwrap_or("resnet-small".into());
    let batch = args.get(1).map_or(128, |v| v.parse().unwrap());
    let sample = args.get(2).map_or(16, |v| v.parse().unwrap());
    let dev = frog_bench::device::cpu::CpuDevice::<f32>::new(0);
    let a = frog_bench::throughput::ThroughputArgs { model, batch, sample, steps: 3 };
    frog_bench::throughput::run(&dev, &a).unwrap();
}
