//! A 40-step FROG run of the example network through candle's `Optimizer`
//! (`backward_step`) on CIFAR-10 from `$FROG_DATA`, else on the synthetic
//! set, fixed seed: the mean loss of the last 10 steps must be below that
//! of the first 10.

use std::time::Instant;

use candle_core::{Device, Tensor};
use candle_nn::{ModuleT, Optimizer};
use frog_bench::data::from_env;
use frog_bench::data::loader::train_batches;
use frog_candle::model::Cnn;
use frog_candle::{FrogOptimizer, ParamsFrog};
use frog_core::Config;

#[test]
fn forty_frog_steps_lower_the_loss() {
    let data = from_env(1, None, Some(1)).unwrap_or_else(|e| panic!("{e}"));
    println!("training on {}", data.source);
    let model = Cnn::new(&Device::Cpu, 1).unwrap();
    let frog = Config { lr: 0.01, momentum: 0.9, ..Config::default() };
    let mut opt = FrogOptimizer::new(model.vars(), ParamsFrog { seed: 1, ..ParamsFrog::new(frog, 64) }).unwrap();
    model.taps().for_each(|t| opt.add_tap(t).unwrap());

    let (start, mut losses) = (Instant::now(), Vec::new());
    for b in train_batches(data.train, 64, 1, 0).unwrap().take(40) {
        let b = b.unwrap();
        let n = b.len();
        let x = Tensor::from_vec(b.x, (n, 3, 32, 32), &Device::Cpu).unwrap();
        let labels = Tensor::from_vec(b.labels.iter().map(|&l| u32::from(l)).collect::<Vec<_>>(), n, &Device::Cpu).unwrap();
        let loss = candle_nn::loss::cross_entropy(&model.forward_t(&x, true).unwrap(), &labels).unwrap();
        opt.backward_step(&loss).unwrap_or_else(|e| panic!("step {}: {e}", losses.len()));
        losses.push(f64::from(loss.to_scalar::<f32>().unwrap()));
    }
    assert_eq!(losses.len(), 40);
    let mean = |s: &[f64]| s.iter().sum::<f64>() / s.len() as f64;
    let (first, last) = (mean(&losses[..10]), mean(&losses[30..]));
    println!("mean loss: first 10 steps {first:.4}, last 10 steps {last:.4}; {:.2} s", start.elapsed().as_secs_f64());
    assert!(last.is_finite() && last < first, "loss did not fall: first 10 {first}, last 10 {last}");
}
