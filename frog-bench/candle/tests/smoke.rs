//! A 40-step FROG run of the example network on CIFAR-10 from
//! `$FROG_DATA`, else on the synthetic set, fixed seed: the mean loss of
//! the last 10 steps must be below that of the first 10.

use frog_bench::data::from_env;
use frog_candle::train::{frog_config, StepStats, TrainConfig, Trainer};

#[test]
fn forty_frog_steps_lower_the_loss() {
    let data = from_env(1, None, Some(1)).unwrap_or_else(|e| panic!("{e}"));
    println!("training on {}", data.source);
    let mut trainer = Trainer::new(TrainConfig { frog: frog_config(), batch: 64, seed: 1, threads: 0 }).unwrap();
    let stats = trainer.epoch(data.train, 0, Some(40)).unwrap();
    assert_eq!(stats.len(), 40);
    let mean = |s: &[StepStats]| s.iter().map(|s| f64::from(s.loss)).sum::<f64>() / s.len() as f64;
    let (first, last) = (mean(&stats[..10]), mean(&stats[30..]));
    let (secs, frog) = (stats.iter().map(|s| s.secs).sum::<f64>(), stats.iter().map(|s| s.frog_secs).sum::<f64>());
    println!("mean loss: first 10 steps {first:.4}, last 10 steps {last:.4}; FROG {:.1} % of {secs:.2} s of steps", 100.0 * frog / secs);
    assert!(last.is_finite() && last < first, "loss did not fall: first 10 {first}, last 10 {last}");
}
