//! A 40-step FROG run of a small CNN through `FrogOptimizer::step` on
//! CIFAR-10 from `$FROG_DATA`, else on the synthetic set, fixed seed, on
//! burn's Flex CPU backend: the mean loss of the last 10 steps must be
//! below that of the first 10. The lines marked `glue` are all a burn
//! model needs to train with FROG.

use std::time::Instant;

use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::loss::CrossEntropyLossConfig;
use burn::nn::{Linear, LinearConfig, PaddingConfig2d};
use burn::tensor::activation::relu;
use burn::tensor::{Device, Int, Tensor, TensorData};
use frog_bench::data::from_env;
use frog_bench::data::loader::train_batches;
use frog_burn::{FrogOptimizer, ParamsFrog, Taps};
use frog_core::Config;

#[derive(Module, Debug)]
struct Cnn {
    conv1: Conv2d,
    conv2: Conv2d,
    fc: Linear,
    #[module(skip)] // glue
    taps: Taps, // glue
}

impl Cnn {
    fn new(device: &Device) -> Self {
        let conv = |c_in, c_out| Conv2dConfig::new([c_in, c_out], [3, 3]).with_stride([2, 2]).with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1)).init(device);
        Self { conv1: conv(3, 8), conv2: conv(8, 16), fc: LinearConfig::new(16 * 8 * 8, 10).init(device), taps: Taps::new() /* glue */ }
    }

    /// Each preconditioned layer runs through the taps (`glue`: the same
    /// line count as `self.conv1.forward(x)`).
    fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        let x = relu(self.taps.conv2d(&self.conv1, x));
        let x = relu(self.taps.conv2d(&self.conv2, x));
        self.taps.linear(&self.fc, x.flatten(1, 3))
    }
}

#[test]
fn forty_frog_steps_lower_the_loss() {
    let data = from_env(1, None, Some(1)).unwrap_or_else(|e| panic!("{e}"));
    println!("training on {}", data.source);
    let device = Device::flex().autodiff();
    let mut model = Cnn::new(&device);
    let frog = Config { lr: 0.01, momentum: 0.9, ..Config::default() };
    let mut opt = FrogOptimizer::new(ParamsFrog { seed: 1, ..ParamsFrog::new(frog, 64) }, &model.taps).unwrap(); // glue
    opt.add_conv2d(&model.conv1).unwrap(); // glue
    opt.add_conv2d(&model.conv2).unwrap(); // glue
    opt.add_linear(&model.fc).unwrap(); // glue

    let ce = CrossEntropyLossConfig::new().init(&device);
    let (start, mut losses) = (Instant::now(), Vec::new());
    for b in train_batches(data.train, 64, 1, 0).unwrap().take(40) {
        let b = b.unwrap();
        let n = b.len();
        let x = Tensor::<4>::from_data(TensorData::new(b.x, [n, 3, 32, 32]), &device);
        let labels = Tensor::<1, Int>::from_data(TensorData::new(b.labels.iter().map(|&l| i64::from(l)).collect::<Vec<_>>(), [n]), &device);
        let loss = ce.forward(model.forward(x), labels);
        let value = loss.clone().into_scalar::<f32>();
        opt.step(&mut model, &loss).unwrap_or_else(|e| panic!("step {}: {e}", losses.len())); // glue
        losses.push(f64::from(value));
    }
    assert_eq!(losses.len(), 40);
    let mean = |s: &[f64]| s.iter().sum::<f64>() / s.len() as f64;
    let (first, last) = (mean(&losses[..10]), mean(&losses[30..]));
    println!("mean loss: first 10 steps {first:.4}, last 10 steps {last:.4}; {:.2} s", start.elapsed().as_secs_f64());
    assert!(last.is_finite() && last < first, "loss did not fall: first 10 {first}, last 10 {last}");
}
