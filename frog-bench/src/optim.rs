//! SGD, AdamW, FROG, K-FROG and Muon over a [`Net`], through frog-core's
//! optimizer object.
//!
//! FROG: every convolution weight is a preconditioned layer, stepped with
//! the sampled rows the backward pass gathered (one sample per step serves
//! every layer); every other parameter (BatchNorm, classifier) takes FROG's
//! plain-SGD path. K-FROG, as the original `kfrog.py`: every convolution
//! weight is a K-FROG layer, stepped with inputs and output gradients of
//! two independent samples (one pair per step, drawn by frog-core's
//! `sample_kfrog`, serves every layer); every other parameter takes
//! momentum SGD at the same rate without decay (frog-core's K-FROG group,
//! the original's treatment of what it does not precondition). The convs
//! have no bias, which K-FROG rejects. SGD and AdamW: every parameter
//! takes `torch.optim.SGD`'s or `torch.optim.AdamW`'s step. Muon, as its
//! official usage says for a ConvNet (KellerJordan/Muon, README): every
//! convolution filter but the first (the one that sees the pixels, an
//! input layer like an embedding) in a Muon group, everything else in an
//! SGD group, two groups of one frog-core optimizer.

use frog_core::Method::{Frog, Kfrog};
use frog_core::{Backend, Batch, Collective, Entry, GroupId, KfrogBatch, KfrogShardRows, Layer, MuonConfig, ParamGrad, ParamId, Params, Sample, SgdConfig, Shard, ShardRows};

use crate::device::{backend_err, Device};
use crate::error::{Error, Result};
use crate::model::{Net, Param, Sampled, SampledRows};

/// Parameters a network may have (ResNet-18 has 62).
const CAPACITY: usize = 256;

/// What a configuration trains with: one frog-core method for every
/// parameter, or Muon beside SGD. A Muon configuration needs two groups
/// (Muon steps only bias-free layers), so frog-core's `Method::Muon`
/// alone is refused: it cannot step BatchNorm or the classifier.
#[derive(Clone, Copy, PartialEq)]
pub enum Method {
    /// FROG, SGD, AdamW or K-FROG on every parameter.
    All(frog_core::Method),
    /// Muon on the convolution filters but the first, SGD on the rest.
    Muon {
        /// The filters' Muon.
        filters: MuonConfig,
        /// The SGD of the first convolution, BatchNorm and the classifier.
        rest: SgdConfig,
    },
}

/// Shown as the method it runs (`Frog(Config { .. })`: results.json's
/// `optimizer`), not as its wrapper.
impl core::fmt::Debug for Method {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::All(m) => m.fmt(f),
            Self::Muon { filters, rest } => f.debug_struct("Muon").field("filters", filters).field("rest", rest).finish(),
        }
    }
}

impl<M: Into<frog_core::Method>> From<M> for Method {
    fn from(m: M) -> Self {
        Self::All(m.into())
    }
}

impl Method {
    /// The learning rate (Muon's for a Muon configuration): the one the
    /// schedule starts from and the tables show.
    pub fn lr(&self) -> f64 {
        match self {
            Self::All(m) => m.lr(),
            Self::Muon { filters, .. } => filters.lr,
        }
    }

    /// Checks the settings in the scalar type `S` the steps run in
    /// (frog-core's `validate_for` of each group's method); a Muon
    /// configuration's error says which of its two methods is wrong.
    pub fn validate_for<S: frog_core::Scalar>(&self) -> Result<()> {
        let check = |m: frog_core::Method, what: &str| m.validate_for::<S>().map_err(|e| Error::new(format!("{what}{e}")));
        match *self {
            Self::Muon { filters, rest } => {
                check(filters.into(), "Muon: ")?;
                check(rest.into(), "the SGD beside Muon: ")
            }
            Self::All(frog_core::Method::Muon(_)) => Err(Error::new("Muon needs an SGD for the parameters it cannot step (Method::Muon { filters, rest })")),
            Self::All(m) => check(m, ""),
        }
    }
}

/// An optimizer bound to one network and one training batch size.
pub struct Optimizer<D: Device> {
    inner: frog_core::Optimizer<D::Backend, CAPACITY>,
    method: Method,
    /// Each group and the learning rate it was made with, which the
    /// schedule scales.
    groups: Vec<(GroupId, f64)>,
    /// Each parameter's handle, in the network's parameter order.
    ids: Vec<ParamId>,
    /// The step's input sample (FROG's one sample; K-FROG's X sample),
    /// filled by [`Optimizer::draw_sample`]; empty for the others.
    sample: Vec<usize>,
    /// K-FROG's output-gradient sample, drawn independently (empty
    /// otherwise).
    y_sample: Vec<usize>,
    /// A data-parallel step's sampled rows in this rank's shard, as
    /// indices into the shard (the backward pass gathers these).
    local: (Vec<usize>, Vec<usize>),
    batch: usize,
}

impl<D: Device> Optimizer<D> {
    /// Optimizer state for `net`'s parameters, for training batches of
    /// `batch`; for FROG and K-FROG also the workspace, the sampled-row
    /// buffers and the sampler (seeded with `seed`). In a data-parallel
    /// run `batch` is the global batch, of which `net` holds one rank's
    /// shard, and the sampled-row buffers hold a whole sample.
    pub fn new(dev: &D, method: Method, net: &mut Net<D>, batch: usize, seed: u64) -> Result<Self> {
        method.validate_for::<D::Scalar>().map_err(|e| Error::new(format!("invalid optimizer settings: {e}")))?;
        if batch == 0 {
            return Err(Error::new("the training batch must hold at least 1 sample"));
        }
        let backend = dev.backend();
        // The default group runs the method (Muon's: its SGD); a Muon
        // configuration adds the filters' group.
        let (mut inner, muon) = match method {
            Method::All(m) => (frog_core::Optimizer::new(m, batch, seed)?, None),
            Method::Muon { filters, rest } => {
                let mut inner = frog_core::Optimizer::new(rest, batch, seed)?;
                let group = inner.add_group(filters)?;
                (inner, Some((group, filters.lr)))
            }
        };
        let mut groups = vec![(GroupId::DEFAULT, inner.group(GroupId::DEFAULT)?.lr())];
        groups.extend(muon);
        let first_conv = net.params.iter().position(|p| p.conv.is_some());
        let mut ids = Vec::with_capacity(net.params.len());
        for (i, p) in net.params.iter().enumerate() {
            let group = match muon {
                Some((g, _)) if Some(i) != first_conv => g,
                _ => GroupId::DEFAULT,
            };
            let id = match p.conv {
                Some(conv) => inner.add_layer(backend, &p.name, Layer::conv2d(conv, false), group)?,
                None => inner.add_param(backend, &p.name, p.len(), GroupId::DEFAULT)?,
            };
            ids.push(id);
        }
        // Rows of each side a step gathers: a sample at or above the batch
        // takes the whole batch, as in frog-core's sampler.
        let rows = |s: Option<usize>| s.map_or(batch, |s| s.min(batch));
        let (rx, ry) = match method {
            Method::All(Frog(_)) => (inner.sample_rows(batch), inner.sample_rows(batch)),
            Method::All(Kfrog(cfg)) => (rows(cfg.sample_size), rows(cfg.y_sample_size)),
            _ => (0, 0),
        };
        if rx > 0 {
            net.enable_sampling(dev, rx, ry)?;
        }
        // FROG's one sample serves both sides; only K-FROG keeps a second.
        let y_len = if matches!(method, Method::All(Kfrog(_))) { ry } else { 0 };
        let local = (Vec::with_capacity(rx), Vec::with_capacity(y_len.max(rx)));
        Ok(Self { inner, method, groups, ids, sample: vec![0; rx], y_sample: vec![0; y_len], local, batch })
    }

    /// Scales every group's learning rate, as made, by `factor` (a
    /// schedule's step): each group is set on its own, so that Muon's and
    /// its SGD's rates follow the schedule alike.
    pub fn set_lr_factor(&mut self, factor: f64) -> Result<()> {
        for &(group, lr) in &self.groups {
            self.inner.set_group_lr(group, lr * factor)?;
        }
        Ok(())
    }
    /// The batch rows the next backward pass gathers (sorted), drawn
    /// before it: FROG's one sample for both sides, K-FROG's two
    /// independent ones; `None` for the others.
    pub fn draw_sample(&mut self) -> Result<Option<SampledRows<'_>>> {
        match self.method {
            Method::All(Frog(_)) => {
                let x = self.inner.sample(self.batch, &mut self.sample)?.indices();
                Ok(Some(SampledRows { x, y: x }))
            }
            Method::All(Kfrog(_)) => {
                let (x, y) = self.inner.sample_kfrog(GroupId::DEFAULT, self.batch, &mut self.sample, &mut self.y_sample)?;
                Ok(Some(SampledRows { x, y }))
            }
            _ => Ok(None),
        }
    }

    /// Updates every parameter of `net` from its gradient (and, for FROG
    /// and K-FROG, the sampled rows of the last backward pass).
    pub fn step(&mut self, dev: &D, net: &mut Net<D>) -> Result<()> {
        let kfrog = matches!(self.method, Method::All(Kfrog(_)));
        let rows = (self.sample.len(), self.y_sample.len());
        for (p, &id) in net.params.iter_mut().zip(&self.ids) {
            step_one(&mut self.inner, dev.backend(), id, p, rows, self.batch, kfrog)?;
        }
        Ok(())
    }

    /// One training step of a data-parallel run on `comm`'s ranks, this
    /// rank holding `shard` of the global batch: draws the step's sample
    /// of the global batch (the same on every rank), runs `grads` with this
    /// rank's sampled rows as indices into its shard (its forward and
    /// backward passes, which gather them, and the sum of the gradients
    /// over the ranks), then steps every parameter: as
    /// [`Optimizer::step`] on one rank, else in one frog-core
    /// `Distributed::step_all` (every layer's rows gathered to its owner,
    /// the owners' steps at once, the new values broadcast).
    pub fn train_step<C: Collective<D::Backend>, R>(&mut self, dev: &D, net: &mut Net<D>, comm: &C, shard: Shard, grads: impl FnOnce(&mut Net<D>, Option<SampledRows<'_>>) -> Result<R>) -> Result<R> {
        if comm.size() == 1 {
            let rows = self.draw_sample()?;
            let out = grads(net, rows)?;
            self.step(dev, net)?;
            return Ok(out);
        }
        let Self { inner, method, ids, sample, y_sample, local, batch, .. } = self;
        let batch = *batch;
        let (frog, kfrog) = match method {
            Method::All(Frog(_)) => (Some(inner.sample(batch, sample)?), None),
            Method::All(Kfrog(_)) => (None, Some(inner.sample_kfrog(GroupId::DEFAULT, batch, sample, y_sample)?)),
            _ => (None, None),
        };
        let in_shard = |rows: &[usize], out: &mut Vec<usize>| {
            out.clear();
            out.extend(shard.select(rows).iter().map(|&i| i - shard.offset));
        };
        let drawn = frog.map(|s| (s.indices(), s.indices())).or(kfrog);
        if let Some((x, y)) = drawn {
            in_shard(x, &mut local.0);
            in_shard(y, &mut local.1);
        }
        let out = grads(net, drawn.map(|_| SampledRows { x: &local.0, y: &local.1 }))?;
        let be = dev.backend();
        let mut dist = inner.distributed(be, comm)?;
        let counts = (local.0.len(), local.1.len());
        let mut entries = Vec::with_capacity(net.params.len());
        for (p, &id) in net.params.iter_mut().zip(ids.iter()) {
            entries.push(entry::<D>(be, id, p, frog, kfrog, batch, counts)?);
        }
        dist.step_all(be, &mut entries)?;
        Ok(out)
    }
}

/// `p`'s part of a data-parallel step, registered as `id`, after a
/// backward pass that kept this rank's `counts` sampled rows of `frog`'s
/// draw (or `kfrog`'s) of the global `batch`: as [`step_one`] sorts them,
/// a convolution with sampled rows a K-FROG layer or a FROG layer, one
/// without a layer of its group's method, anything else a plain
/// parameter.
fn entry<'a, D: Device>(be: &'a D::Backend, id: ParamId, p: &'a mut Param<D>, frog: Option<Sample<'a>>, kfrog: Option<(&'a [usize], &'a [usize])>, batch: usize, counts: (usize, usize)) -> Result<Entry<'a, 'a, D::Backend>> {
    let Param { value, grad, conv, sampled, .. } = p;
    let Some(conv) = *conv else { return Ok(Entry::Param { id, param: ParamGrad { param: value, grad } }) };
    let rows = sampled.as_ref().map(|s| rows_of::<D>(be, s, &Layer::conv2d(conv, false), counts)).transpose()?;
    Ok(match (rows, kfrog) {
        (Some((x, y)), Some((x_rows, y_rows))) => Entry::Kfrog { id, weight: value, grad, rows: KfrogShardRows { x_rows, y_rows, batch_size: batch, x, y } },
        (rows, _) => Entry::Layer { id, params: Params { weight: value, grad_weight: grad, bias: None }, rows: rows.zip(frog).map(|((x, y), sample)| ShardRows { sample, x, y }) },
    })
}

/// Views of the first `counts` sampled inputs and output gradients of
/// `layer` in `s`: the rows a rank of a data-parallel step holds.
#[allow(clippy::type_complexity)]
fn rows_of<'a, D: Device>(be: &'a D::Backend, s: &'a Sampled<D::Buffer>, layer: &Layer, counts: (usize, usize)) -> Result<(<D::Backend as Backend>::View<'a>, <D::Backend as Backend>::View<'a>)> {
    let x = be.view(&s.x, 0, counts.0 * layer.input_len()).map_err(backend_err)?;
    Ok((x, be.view(&s.y, 0, counts.1 * layer.output_len()).map_err(backend_err)?))
}

/// The step of `p`, registered in `inner` as `id`, after a backward pass
/// of `batch` samples: a convolution's weight with its sampled rows takes
/// K-FROG's step on `rows` (input and output-gradient rows) when `kfrog`,
/// else FROG's on `rows.0` rows; one without takes its group's step of a
/// bias-free layer (Muon, SGD, AdamW); any other parameter its group's
/// plain step.
pub(crate) fn step_one<D: Device, const N: usize>(
    inner: &mut frog_core::Optimizer<D::Backend, N>,
    backend: &D::Backend,
    id: ParamId,
    p: &mut Param<D>,
    (rx, ry): (usize, usize),
    batch: usize,
    kfrog: bool,
) -> Result<()> {
    match (p.conv, p.sampled.as_ref()) {
        (Some(_), Some(s)) if kfrog => {
            let batch = KfrogBatch { x: &s.x, x_sample: rx, y: &s.y, y_sample: ry, batch_size: batch };
            inner.step_layer_kfrog(backend, id, &mut p.value, &p.grad, batch)?;
        }
        (Some(_), sampled) => {
            let batch = sampled.map(|s| Batch { x: &s.x, y: &s.y, sample: rx, batch_size: batch });
            let params = Params { weight: &mut p.value, grad_weight: &p.grad, bias: None };
            inner.step_layer(backend, id, params, batch)?;
        }
        (None, _) => inner.step_param(backend, id, ParamGrad { param: &mut p.value, grad: &p.grad })?,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use rand_xoshiro::rand_core::SeedableRng;
    use rand_xoshiro::Xoshiro256PlusPlus;

    use frog_core::KfrogConfig;

    use super::*;
    use crate::arch::Arch;
    use crate::data::loader::HostBatch;
    use crate::device::cpu::CpuDevice;
    use crate::train::{train_step, Staging};

    const B: usize = 8;

    /// K-FROG with independent samples of different sizes, both below the
    /// batch, so gathering the wrong rows changes the step.
    fn kfrog() -> KfrogConfig {
        KfrogConfig { lr: 0.02, momentum: 0.9, sample_size: Some(5), y_sample_size: Some(3), ..KfrogConfig::default() }
    }

    /// A fixed random batch for the tiny CNN, staged on `dev`.
    fn staged(dev: &CpuDevice<f64>, arch: &Arch) -> Staging<CpuDevice<f64>> {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(3);
        let x = (0..B * arch.input_len()).map(|_| crate::rand::uniform(&mut rng) as f32 - 0.5).collect();
        let labels = (0..B).map(|i| (i % arch.classes) as u8).collect();
        let mut st = Staging::new(dev, arch, B).unwrap();
        st.upload(dev, &HostBatch { x, labels }).unwrap();
        st
    }

    fn values(net: &Net<CpuDevice<f64>>) -> Vec<Vec<f64>> {
        net.params.iter().map(|p| p.value[..p.len()].to_vec()).collect()
    }

    #[test]
    fn kfrog_steps_every_conv_on_its_own_x_rows_and_y_rows() {
        let dev = CpuDevice::<f64>::new(1).unwrap();
        let arch = Arch::tiny_cnn();
        let st = staged(&dev, &arch);
        // The engine: the optimizer draws the two samples, the backward
        // pass gathers them, the optimizer steps.
        let mut net = Net::new(&dev, &arch, B, 0).unwrap();
        let mut opt = Optimizer::new(&dev, kfrog().into(), &mut net, B, 7).unwrap();
        let rows = opt.draw_sample().unwrap().expect("K-FROG samples");
        let (xi, yi) = (rows.x.to_vec(), rows.y.to_vec());
        assert_eq!((xi.len(), yi.len()), (5, 3));
        net.forward(&dev, &st.x, B, true).unwrap();
        net.loss(&dev, B, &st.labels).unwrap();
        net.backward(&dev, &st.x, B, Some(rows)).unwrap();
        // The reference: the same pass keeping every row, then frog-core's
        // K-FROG step on the rows the engine should have gathered.
        let mut full = Net::new(&dev, &arch, B, 0).unwrap();
        full.enable_sampling(&dev, B, B).unwrap();
        let all: Vec<usize> = (0..B).collect();
        full.forward(&dev, &st.x, B, true).unwrap();
        full.loss(&dev, B, &st.labels).unwrap();
        full.backward(&dev, &st.x, B, Some(SampledRows { x: &all, y: &all })).unwrap();
        let cpu = dev.backend();
        let mut reference = frog_core::Optimizer::<_, CAPACITY>::new(kfrog(), B, 7).unwrap();
        let mut convs = 0;
        for (p, e) in full.params.iter_mut().zip(&net.params) {
            match (p.conv, p.sampled.as_ref(), e.sampled.as_ref()) {
                (Some(conv), Some(s), Some(es)) => {
                    let layer = Layer::conv2d(conv, false);
                    let id = reference.add_layer(cpu, &p.name, layer, GroupId::DEFAULT).unwrap();
                    let (mut x, mut y) = (vec![0.0; xi.len() * layer.input_len()], vec![0.0; yi.len() * layer.output_len()]);
                    dev.gather(layer.input_len(), &xi, &s.x, &mut x).unwrap();
                    dev.gather(layer.output_len(), &yi, &s.y, &mut y).unwrap();
                    assert_eq!((&x, &y), (&es.x, &es.y), "{}: the engine's gathered rows", p.name);
                    let batch = KfrogBatch { x: &x, x_sample: xi.len(), y: &y, y_sample: yi.len(), batch_size: B };
                    reference.step_layer_kfrog(cpu, id, &mut p.value, &p.grad, batch).unwrap();
                    convs += 1;
                }
                _ => {
                    let id = reference.add_param(cpu, &p.name, p.len(), GroupId::DEFAULT).unwrap();
                    reference.step_param(cpu, id, ParamGrad { param: &mut p.value, grad: &p.grad }).unwrap();
                }
            }
        }
        assert_eq!(convs, 2);
        let before = values(&net);
        opt.step(&dev, &mut net).unwrap();
        assert_ne!(values(&net), before, "the step moved the weights");
        assert_eq!(values(&net), values(&full), "the engine's step is frog-core's on the gathered rows");
    }

    #[test]
    fn muon_steps_the_filters_but_the_first_and_sgd_the_rest_at_the_scheduled_rates() {
        let dev = CpuDevice::<f64>::new(1).unwrap();
        let arch = Arch::tiny_cnn();
        let st = staged(&dev, &arch);
        let filters = MuonConfig { lr: 0.05, ..MuonConfig::default() };
        let rest = SgdConfig { lr: 0.1, momentum: 0.9, weight_decay: 1e-4, ..SgdConfig::default() };
        let mut net = Net::new(&dev, &arch, B, 0).unwrap();
        let mut opt = Optimizer::new(&dev, Method::Muon { filters, rest }, &mut net, B, 7).unwrap();
        assert!(opt.draw_sample().unwrap().is_none(), "Muon samples nothing");
        opt.set_lr_factor(0.5).unwrap();
        // Two steps, so that the momenta count.
        let mut reference = Net::new(&dev, &arch, B, 0).unwrap();
        let cpu = dev.backend();
        let mut muon = frog_core::Optimizer::<_, CAPACITY>::new(MuonConfig { lr: 0.025, ..filters }, B, 0).unwrap();
        let mut sgd = frog_core::Optimizer::<_, CAPACITY>::new(SgdConfig { lr: 0.05, ..rest }, B, 0).unwrap();
        let mut ids = Vec::new();
        let mut convs = 0;
        for p in &reference.params {
            ids.push(match p.conv {
                Some(conv) if convs > 0 => (true, muon.add_layer(cpu, &p.name, Layer::conv2d(conv, false), GroupId::DEFAULT).unwrap()),
                _ => (false, sgd.add_param(cpu, &p.name, p.len(), GroupId::DEFAULT).unwrap()),
            });
            convs += usize::from(p.conv.is_some());
        }
        assert_eq!(convs, 2);
        for _ in 0..2 {
            train_step(&dev, &mut net, &mut opt, &st, B).unwrap();
            reference.forward(&dev, &st.x, B, true).unwrap();
            reference.loss(&dev, B, &st.labels).unwrap();
            reference.backward(&dev, &st.x, B, None).unwrap();
            for (p, &(is_muon, id)) in reference.params.iter_mut().zip(&ids) {
                if is_muon {
                    let params = Params { weight: &mut p.value, grad_weight: &p.grad, bias: None };
                    muon.step_layer(cpu, id, params, None::<Batch<'_, _>>).unwrap();
                } else {
                    sgd.step_param(cpu, id, ParamGrad { param: &mut p.value, grad: &p.grad }).unwrap();
                }
            }
        }
        assert_eq!(values(&net), values(&reference), "Muon on the second conv, SGD on the first conv and the rest, at half rate");
        assert_ne!(values(&net), values(&Net::new(&dev, &arch, B, 0).unwrap()));
    }

    #[test]
    fn a_muon_configuration_is_checked_part_by_part() {
        let bad = |filters: MuonConfig, rest: SgdConfig| Method::Muon { filters, rest }.validate_for::<f32>().unwrap_err().to_string();
        let (filters, rest) = (MuonConfig::default(), SgdConfig { lr: 0.1, ..SgdConfig::default() });
        assert!(bad(MuonConfig { ns_steps: 0, ..filters }, rest).starts_with("Muon: "));
        assert!(bad(filters, SgdConfig { lr: f64::NAN, ..rest }).starts_with("the SGD beside Muon: "));
        Method::Muon { filters, rest }.validate_for::<f32>().unwrap();
        assert_eq!(Method::Muon { filters, rest }.lr(), filters.lr);
        let alone = Method::from(filters).validate_for::<f32>().unwrap_err().to_string();
        assert!(alone.contains("Muon needs an SGD"), "{alone}");
    }

    /// Losses of `steps` K-FROG training steps on the fixed batch.
    fn kfrog_losses(seed: u64, steps: usize) -> Vec<f64> {
        let dev = CpuDevice::<f64>::new(1).unwrap();
        let arch = Arch::tiny_cnn();
        let st = staged(&dev, &arch);
        let mut net = Net::new(&dev, &arch, B, seed).unwrap();
        let mut opt = Optimizer::new(&dev, kfrog().into(), &mut net, B, seed).unwrap();
        (0..steps).map(|_| train_step(&dev, &mut net, &mut opt, &st, B).unwrap().loss).collect()
    }

    #[test]
    fn a_short_kfrog_training_lowers_the_loss_and_repeats_for_a_seed() {
        let losses = kfrog_losses(1, 30);
        assert!(losses[29] < 0.8 * losses[0], "loss {} -> {}", losses[0], losses[29]);
        assert_eq!(losses, kfrog_losses(1, 30), "the same seed trains the same");
        assert_ne!(losses, kfrog_losses(2, 30), "another seed samples other rows");
    }
}
