//! The distributed optimizer's tests, shared by the suite (one process,
//! `Solo`) and the multi-rank binary (`tests/mpi.rs`, under `mpirun`):
//! an optimizer of every method, deterministic data, and the same steps
//! taken in one process and sharded over a communicator.

use std::ops::Range;

use frog_core::{gather_rows, AdamWConfig, Batch, Collective, Config, Conv2d, Entry, GroupId, KfrogBatch, KfrogConfig, KfrogShardRows, Layer, Method, MuonConfig, ParamGrad, ParamId, Params, SgdConfig, ShardRows};
use frog_cpu::{Cpu, Frog};

use super::Rng;

/// The global batch: 7 samples, which neither 2 nor 3 ranks divide.
pub const BATCH: usize = 7;
pub const STEPS: u64 = 3;

pub fn conv() -> Layer {
    Layer::conv2d(Conv2d::new(2, 3, 3, [5, 5]).padding(1), true)
}

pub fn fc() -> Layer {
    Layer::linear(7, 4, true)
}

pub fn muon_layer() -> Layer {
    Layer::conv2d(Conv2d::new(2, 4, 3, [5, 5]).padding(1), false)
}

/// K-FROG's layer (bias-free, as K-FROG's are).
pub fn kfrog_layer() -> Layer {
    Layer::conv2d(Conv2d::new(3, 2, 3, [4, 4]).padding(1), false)
}

/// Every registered entry, in registration order: (name, layer or plain
/// length, group).
pub const ENTRIES: usize = 7;
/// The K-FROG layer's position.
pub const KFROG: usize = 6;

/// An optimizer with five groups: FROG (a conv, a linear layer and a plain
/// parameter on its SGD path), SGD, AdamW (a linear layer each), Muon (a
/// bias-free conv) and K-FROG (a bias-free conv; samples of 4 inputs and
/// 3 output gradients); FROG's sample 3 of 7.
pub fn build(cpu: &Cpu<f64>, max_batch: usize) -> (Frog<f64>, [ParamId; ENTRIES]) {
    let cfg = Config { lr: 0.02, momentum: 0.9, weight_decay: 1e-3, sample_size: Some(3), ..Config::default() };
    let mut opt = Frog::<f64>::new(Method::Frog(cfg), max_batch, 9).unwrap();
    let sgd = opt.add_group(Method::Sgd(SgdConfig { lr: 0.1, momentum: 0.9, weight_decay: 1e-4, nesterov: true, ..SgdConfig::default() })).unwrap();
    let adam = opt.add_group(AdamWConfig { amsgrad: true, ..AdamWConfig::default() }).unwrap();
    let muon = opt.add_group(MuonConfig { lr: 0.02, ..MuonConfig::default() }).unwrap();
    let kfrog = opt.add_group(KfrogConfig { lr: 0.01, momentum: 0.9, y_momentum: 0.5, sample_size: Some(4), y_sample_size: Some(3), ..KfrogConfig::default() }).unwrap();
    let ids = [
        opt.add_layer(cpu, "conv", conv(), GroupId::DEFAULT).unwrap(),
        opt.add_layer(cpu, "fc", fc(), GroupId::DEFAULT).unwrap(),
        opt.add_param(cpu, "bn", 5, GroupId::DEFAULT).unwrap(),
        opt.add_layer(cpu, "fc_sgd", fc(), sgd).unwrap(),
        opt.add_layer(cpu, "fc_adam", fc(), adam).unwrap(),
        opt.add_layer(cpu, "conv_muon", muon_layer(), muon).unwrap(),
        opt.add_layer(cpu, "conv_kfrog", kfrog_layer(), kfrog).unwrap(),
    ];
    (opt, ids)
}

/// Every entry's values: (weight, bias) per layer (the bias empty when it
/// has none), (values, empty) for the plain parameter.
pub type Values = Vec<(Vec<f64>, Vec<f64>)>;

/// Every parameter's values: (weight, bias) per layer, the plain one.
pub fn initial() -> Values {
    let mut rng = Rng(5);
    let mut w = |l: &Layer| (rng.vec(l.rows() * l.weight_cols()), rng.vec(if l.bias { l.rows() } else { 0 }));
    vec![w(&conv()), w(&fc()), (Rng(6).vec(5), vec![]), w(&fc()), w(&fc()), w(&muon_layer()), w(&kfrog_layer())]
}

/// One step's data: per entry the (global, summed) gradients and, for the
/// FROG layers, the whole batch's inputs and output gradients.
pub struct RunData {
    pub grads: Values,
    /// FROG's two layers' and K-FROG's.
    pub x: [Vec<f64>; 3],
    pub y: [Vec<f64>; 3],
}

pub fn step_data(t: u64, values: &Values, batch: usize) -> RunData {
    let mut rng = Rng(100 + t);
    let grads = values.iter().map(|(w, b)| (rng.vec(w.len()), rng.vec(b.len()))).collect();
    let layers = [conv(), fc(), kfrog_layer()];
    let x = layers.map(|l| rng.vec(batch * l.input_len()));
    let y = layers.map(|l| rng.vec(batch * l.output_len()));
    RunData { grads, x, y }
}

/// Steps `steps` in one process.
pub fn train_alone(cpu: &Cpu<f64>, opt: &mut Frog<f64>, ids: &[ParamId; ENTRIES], v: &mut Values, steps: Range<u64>) {
    let batch = opt.max_batch();
    for t in steps {
        let d = step_data(t, v, batch);
        let mut idx = vec![0; batch];
        let sample = opt.sample(batch, &mut idx).unwrap();
        for (k, layer) in [conv(), fc()].iter().enumerate() {
            let (mut x, mut y) = (vec![0.0; sample.len() * layer.input_len()], vec![0.0; sample.len() * layer.output_len()]);
            gather_rows(cpu, &sample, layer.input_len(), &d.x[k], &mut x).unwrap();
            gather_rows(cpu, &sample, layer.output_len(), &d.y[k], &mut y).unwrap();
            let (w, b) = &mut v[k];
            let params = Params { weight: w, grad_weight: &d.grads[k].0, bias: Some((b, &d.grads[k].1)) };
            opt.step_layer(cpu, ids[k], params, Some(sample.batch(&x, &y))).unwrap();
        }
        opt.step_param(cpu, ids[2], ParamGrad { param: &mut v[2].0, grad: &d.grads[2].0 }).unwrap();
        for k in 3..KFROG {
            let (w, b) = &mut v[k];
            let bias = if b.is_empty() { None } else { Some((b, &d.grads[k].1)) };
            opt.step_layer(cpu, ids[k], Params { weight: w, grad_weight: &d.grads[k].0, bias }, None::<Batch<'_, Cpu<f64>>>).unwrap();
        }
        let l = kfrog_layer();
        let (mut xi, mut yi) = (vec![0; batch], vec![0; batch]);
        let (xs, ys) = opt.sample_kfrog(opt.group_of(ids[KFROG]).unwrap(), batch, &mut xi, &mut yi).unwrap();
        let (mut x, mut y) = (vec![0.0; xs.len() * l.input_len()], vec![0.0; ys.len() * l.output_len()]);
        gather_rows(cpu, xs, l.input_len(), &d.x[2], &mut x).unwrap();
        gather_rows(cpu, ys, l.output_len(), &d.y[2], &mut y).unwrap();
        let batch = KfrogBatch { x: &x, x_sample: xs.len(), y: &y, y_sample: ys.len(), batch_size: batch };
        opt.step_layer_kfrog(cpu, ids[KFROG], &mut v[KFROG].0, &d.grads[KFROG].0, batch).unwrap();
    }
}

/// How a distributed run steps its entries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stepping {
    /// All in one `step_all`.
    Together,
    /// One call each (`step_layer`, `step_param`, `step_layer_kfrog`).
    Each,
}

/// The same steps on every rank of `c`, each rank holding only its
/// shard's sampled rows.
pub fn train_distributed(cpu: &Cpu<f64>, c: &impl Collective<Cpu<f64>>, opt: &mut Frog<f64>, ids: &[ParamId; ENTRIES], v: &mut Values, steps: Range<u64>, stepping: Stepping) -> Result<(), String> {
    let batch = opt.max_batch();
    let mut d = opt.distributed(cpu, c).map_err(|e| e.to_string())?;
    let kfrog = d.group_of(ids[KFROG]).map_err(|e| e.to_string())?;
    let shard = d.shard(batch);
    for t in steps {
        let data = step_data(t, v, batch);
        // The step's draws (FROG's, then K-FROG's, as one process draws
        // them) and this rank's rows of each.
        let mut idx = vec![0; batch];
        let sample = d.sample(batch, &mut idx).map_err(|e| e.to_string())?;
        let (mut xi, mut yi) = (vec![0; batch], vec![0; batch]);
        let (xs, ys) = d.sample_kfrog(kfrog, batch, &mut xi, &mut yi).map_err(|e| e.to_string())?;
        let mine = |rows: &[usize], per: usize, of: &Vec<f64>| {
            let rows = shard.select(rows);
            let mut out = vec![0.0; rows.len() * per];
            gather_rows(cpu, rows, per, of, &mut out).map(|()| out).map_err(|e| e.to_string())
        };
        let layers = [conv(), fc(), kfrog_layer()];
        let mut rows = Vec::new();
        for (k, l) in layers.iter().enumerate() {
            let (x, y) = if k < 2 { (sample.indices(), sample.indices()) } else { (xs, ys) };
            rows.push((mine(x, l.input_len(), &data.x[k])?, mine(y, l.output_len(), &data.y[k])?));
        }
        let mut entries: Vec<Entry<'_, '_, Cpu<f64>>> = Vec::new();
        for (k, ((w, b), g)) in v.iter_mut().zip(&data.grads).enumerate() {
            let bias = if b.is_empty() { None } else { Some((b, &g.1)) };
            let (id, params) = (ids[k], Params { weight: w, grad_weight: &g.0, bias });
            entries.push(match k {
                0 | 1 => Entry::Layer { id, params, rows: Some(ShardRows { sample, x: &rows[k].0[..], y: &rows[k].1[..] }) },
                2 => Entry::Param { id, param: ParamGrad { param: params.weight, grad: &g.0 } },
                KFROG => Entry::Kfrog { id, weight: params.weight, grad: &g.0, rows: KfrogShardRows { x_rows: xs, y_rows: ys, batch_size: batch, x: &rows[2].0[..], y: &rows[2].1[..] } },
                _ => Entry::Layer { id, params, rows: None },
            });
        }
        match stepping {
            Stepping::Together => d.step_all(cpu, &mut entries),
            Stepping::Each => entries.into_iter().try_for_each(|e| match e {
                Entry::Layer { id, params, rows } => d.step_layer(cpu, id, params, rows),
                Entry::Kfrog { id, weight, grad, rows } => d.step_layer_kfrog(cpu, id, weight, grad, rows),
                Entry::Param { id, param } => d.step_param(cpu, id, param),
                e => d.step_all(cpu, &mut [e]),
            }),
        }
        .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// `steps` at batch `batch` in one process from the start.
pub fn alone(cpu: &Cpu<f64>, batch: usize, steps: Range<u64>) -> Values {
    let (mut opt, ids) = build(cpu, batch);
    let mut v = initial();
    train_alone(cpu, &mut opt, &ids, &mut v, steps);
    v
}

