//! frog-core's optimizer object on the GPU (run on the emulator in CI):
//! the same code that drives frog-cpu, with the sampled rows gathered on
//! the device, agrees with frog-cpu, and a checkpoint restored into a fresh
//! object continues bit for bit. Prints SKIPPED without a device.

#![deny(clippy::undocumented_unsafe_blocks)]

#[allow(dead_code)] // the GEMM tiles are for the product tests
mod common;

use common::{device, download, upload, values};
use frog_core::{gather_rows, Backend, Config, Conv2d, GroupId, Layer, Optimizer, ParamGrad, ParamId, Params};
use frog_cpu::Cpu;
use frog_cuda::Precision;

const BATCH: usize = 8;

fn conv() -> Layer {
    Layer::conv2d(Conv2d::new(3, 6, 3, [6, 6]).padding(1), true)
}

/// A FROG group with the conv layer and a plain parameter in a group
/// without decay.
fn build<B: Backend<Scalar = f32>>(b: &B) -> (Optimizer<B, 4>, [ParamId; 2]) {
    let cfg = Config { lr: 0.01, momentum: 0.9, weight_decay: 1e-3, sample_size: Some(3), ..Config::default() };
    let mut opt = Optimizer::new(cfg, BATCH, 5).unwrap();
    let no_decay = opt.add_group(Config { weight_decay: 0.0, ..cfg }).unwrap();
    let ids = [opt.add_layer(b, "conv", conv(), GroupId::DEFAULT).unwrap(), opt.add_param(b, "bn", 6, no_decay).unwrap()];
    (opt, ids)
}

/// Parameters on the device: conv weight, conv bias, the plain parameter.
struct Weights<B: Backend> {
    w: B::Buffer,
    b: B::Buffer,
    p: B::Buffer,
}

fn weights<B: Backend<Scalar = f32>>(b: &B) -> Weights<B> {
    let l = conv();
    Weights { w: upload(b, &values(l.rows() * l.weight_cols(), 1)), b: upload(b, &values(l.rows(), 2)), p: upload(b, &values(6, 3)) }
}

/// Training steps `steps` of a fixed data stream: full-batch inputs and
/// output gradients on the device, the sample gathered there.
fn train<B: Backend<Scalar = f32>>(b: &B, opt: &mut Optimizer<B, 4>, ids: &[ParamId; 2], m: &mut Weights<B>, steps: std::ops::Range<u64>) {
    let l = conv();
    for t in steps {
        let mut idx = vec![0; opt.sample_rows(BATCH)];
        let sample = opt.sample(BATCH, &mut idx).unwrap();
        let r = sample.len();
        let full_x = upload(b, &values(BATCH * l.input_len(), 10 + t));
        let full_y = upload(b, &values(BATCH * l.output_len(), 20 + t));
        let (mut x, mut y) = (b.zeros(r * l.input_len()).unwrap(), b.zeros(r * l.output_len()).unwrap());
        gather_rows(b, &sample, l.input_len(), &full_x, &mut x).unwrap();
        gather_rows(b, &sample, l.output_len(), &full_y, &mut y).unwrap();
        let (gw, gb, gp) = (upload(b, &values(l.rows() * l.weight_cols(), 30 + t)), upload(b, &values(l.rows(), 40 + t)), upload(b, &values(6, 50 + t)));
        let params = Params { weight: &mut m.w, grad_weight: &gw, bias: Some((&mut m.b, &gb)) };
        opt.step_layer(b, ids[0], params, Some(sample.batch(&x, &y))).unwrap();
        opt.step_param(b, ids[1], ParamGrad { param: &mut m.p, grad: &gp }).unwrap();
    }
}

fn all<B: Backend<Scalar = f32>>(b: &B, m: &Weights<B>) -> Vec<f32> {
    [download(b, &m.w), download(b, &m.b), download(b, &m.p)].concat()
}

#[test]
fn gpu_optimizer_object_matches_the_cpu_and_resumes_bit_for_bit() {
    let Some(cuda) = device(Precision::Exact, "gpu_optimizer_object_matches_the_cpu_and_resumes_bit_for_bit") else { return };
    let cpu = Cpu::<f32>::with_threads(1).unwrap();
    let (mut on_cpu, cpu_ids) = build(&cpu);
    let mut cpu_w = weights(&cpu);
    train(&cpu, &mut on_cpu, &cpu_ids, &mut cpu_w, 0..4);

    let (mut opt, ids) = build(&cuda);
    let mut m = weights(&cuda);
    train(&cuda, &mut opt, &ids, &mut m, 0..2);
    let mut bytes = vec![0; opt.checkpoint_len()];
    opt.checkpoint(&cuda, &mut bytes).unwrap();
    let mut resumed = Weights { w: upload(&cuda, &download(&cuda, &m.w)), b: upload(&cuda, &download(&cuda, &m.b)), p: upload(&cuda, &download(&cuda, &m.p)) };
    train(&cuda, &mut opt, &ids, &mut m, 2..4);

    let (gpu, host) = (all(&cuda, &m), all(&cpu, &cpu_w));
    let diff = gpu.iter().zip(&host).map(|(a, b)| (a - b).abs() / b.abs().max(1e-3)).fold(0.0f32, f32::max);
    println!("gpu_optimizer_object: 4 steps, GPU against frog-cpu: max relative difference {diff:.2e}");
    assert!(diff < 1e-4, "GPU and CPU differ by {diff:e}");

    let (mut fresh, fresh_ids) = build(&cuda);
    fresh.restore(&cuda, &bytes).unwrap();
    train(&cuda, &mut fresh, &fresh_ids, &mut resumed, 2..4);
    assert_eq!(all(&cuda, &resumed), gpu, "the restored object does not continue bit for bit");
}
