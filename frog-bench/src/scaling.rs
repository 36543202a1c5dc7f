//! The `scaling` subcommand: the README's paper model of a data-parallel
//! FROG step with its preconditioning sharded by layer, against a
//! data-parallel SGD step and against KAISA's K-FAC, for the CIFAR-10
//! ResNet-18 and ResNet-50 at the original study's batch sizes, on 1 to
//! 1024 GPUs. Nothing is measured: every number is counted from the
//! layers' shapes, and the times follow from the published link
//! bandwidths and the compute rates stated in [`Assumptions`].
//!
//! The FROG design it models (issue 26): every rank holds `B / P` samples
//! of the global batch `B`; one all-reduce sums the gradients; every
//! preconditioned layer has one owner (greedily by `Layer::cg_flops`,
//! costliest first), to which the ranks gather the sampled rows of its
//! inputs and output gradients; the owner takes the step and broadcasts
//! the new weights. KAISA (Pauloski et al., SC'21, arXiv 2107.01739) in
//! its memory-optimal setting (gradient-worker fraction `1/P`): the
//! gradient all-reduce, the Kronecker factors all-reduced every 10 steps,
//! their eigendecompositions on one rank per layer every 100 steps
//! (kfac-pytorch's default update intervals, `fac_update_freq` and
//! `inv_update_freq`), the owner's preconditioned gradient broadcast every
//! step; its per-step cost is those amortized.

use frog_core::{assign_owners, Conv2d, Layer};

use crate::layers::{resnet18_convs, ResnetConv};

/// Options of the `scaling` subcommand.
#[derive(Clone, Debug, PartialEq, clap::Args)]
pub struct ScalingArgs {
    /// CG iterations K of FROG's step
    #[arg(long, value_name = "N", default_value_t = 4)]
    pub iters: usize,
    /// FROG's sample as a fraction of the batch, 1/N (the original: 64 of 512)
    #[arg(long, value_name = "N", default_value_t = 8)]
    pub sample_div: usize,
}

/// The link and compute figures the times follow from.
#[derive(Clone, Copy, Debug)]
pub struct Assumptions {
    /// Bytes per second each GPU sends (and receives) within a node: NVLink
    /// 4 on an H100 SXM, 900 GB/s both directions together (NVIDIA's H100
    /// datasheet), so 450 GB/s each way.
    pub nvlink: f64,
    /// The same between nodes: one 400 Gb/s NDR InfiniBand port per GPU,
    /// as a DGX H100 has (eight ConnectX-7 for eight GPUs), 50 GB/s each way.
    pub infiniband: f64,
    /// GPUs a node holds, linked by NVLink.
    pub per_node: usize,
    /// Latency of one hop of a collective (a tree of `log2 P` hops).
    pub hop: f64,
    /// FLOP/s of the forward and backward pass (mixed precision).
    pub fwd_bwd_rate: f64,
    /// FLOP/s of FROG's CG products and KAISA's preconditioning products.
    pub precond_rate: f64,
    /// FLOP/s of KAISA's symmetric eigendecompositions (small, latency-bound).
    pub eigh_rate: f64,
}

/// The figures the README's table uses (the rates are assumptions: no
/// GPU has run frog-cuda yet).
pub const H100: Assumptions = Assumptions {
    nvlink: 450e9,
    infiniband: 50e9,
    per_node: 8,
    hop: 5e-6,
    fwd_bwd_rate: 400e12,
    precond_rate: 65e12,
    eigh_rate: 2e12,
};

/// A network as the model sees it: its conv and linear layers (no bias:
/// BatchNorm follows every conv) and its other parameters.
pub struct Net {
    /// Its name.
    pub name: &'static str,
    /// Every weight layer, one entry each.
    pub layers: Vec<Layer>,
    /// Entries of the other parameters (BatchNorm's weights and biases,
    /// the classifier's bias).
    pub plain: usize,
    /// Plain parameters (tensors), each its own broadcast.
    pub plain_tensors: usize,
}

impl Net {
    fn from_convs(name: &'static str, convs: &[ResnetConv], features: usize) -> Self {
        let layers: Vec<Layer> = convs.iter().flat_map(|rc| std::iter::repeat_n(Layer::conv2d(rc.conv, false), rc.count)).chain([Layer::linear(features, 10, false)]).collect();
        // A BatchNorm (weight and bias) after every conv; the classifier's bias.
        let bn: usize = layers[..layers.len() - 1].iter().map(|l| 2 * l.rows()).sum();
        Self { name, plain: bn + 10, plain_tensors: 2 * (layers.len() - 1) + 1, layers }
    }

    /// The CIFAR-10 ResNet-18 (`layers::resnet18_convs`).
    pub fn resnet18() -> Self {
        Self::from_convs("ResNet-18", &resnet18_convs(), 512)
    }

    /// The CIFAR-10 ResNet-50: a 3x3 stem, bottleneck blocks `[3, 4, 6, 3]`
    /// of widths 64 to 512 (expansion 4, the stride on the 3x3 conv), 1x1
    /// projection shortcuts where the shape changes.
    pub fn resnet50() -> Self {
        let conv = |c_in, c_out, k: usize, stride: usize, hw: usize| ResnetConv { name: "", conv: Conv2d::new(c_in, c_out, k, [hw, hw]).stride(stride).padding(k / 2), count: 1 };
        let mut convs = vec![conv(3, 64, 3, 1, 32)];
        let (mut c_in, mut hw) = (64, 32);
        for (stage, blocks) in [3, 4, 6, 3].into_iter().enumerate() {
            let (w, stride) = (64 << stage, if stage == 0 { 1 } else { 2 });
            for b in 0..blocks {
                let s = if b == 0 { stride } else { 1 };
                convs.push(conv(c_in, w, 1, 1, hw));
                convs.push(conv(w, w, 3, s, hw));
                convs.push(conv(w, 4 * w, 1, 1, hw / s));
                if b == 0 {
                    convs.push(conv(c_in, 4 * w, 1, s, hw));
                }
                (c_in, hw) = (4 * w, hw / s);
            }
        }
        Self::from_convs("ResNet-50", &convs, 2048)
    }

    /// Every parameter's entries.
    pub fn params(&self) -> usize {
        self.layers.iter().map(|l| l.rows() * l.weight_cols()).sum::<usize>() + self.plain
    }

    /// Forward FLOPs of one sample (2 per multiply-add of the weight layers).
    pub fn forward_flops(&self) -> f64 {
        self.layers.iter().map(|l| 2.0 * (l.positions() * l.rows() * l.weight_cols()) as f64).sum()
    }
}

/// One row of the table: a step on `ranks` GPUs, per rank (the busiest).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Row {
    /// GPUs.
    pub ranks: usize,
    /// Forward and backward FLOPs of a rank's `B / P` samples.
    pub fwd_bwd: f64,
    /// FROG's CG FLOPs on the busiest owner.
    pub frog_flops: f64,
    /// KAISA's FLOPs on the busiest rank, per step (amortized).
    pub kaisa_flops: f64,
    /// Bytes each rank sends in the gradient all-reduce (ring).
    pub allreduce: f64,
    /// Bytes the owners receive in FROG's row gathers, all layers.
    pub rows: f64,
    /// Bytes each rank receives in the weight broadcasts.
    pub weights: f64,
    /// KAISA's factor all-reduce bytes per rank, per step (amortized).
    pub factors: f64,
    /// Step times, seconds: SGD, FROG, KAISA.
    pub time: [f64; 3],
    /// Ranks that own no layer (more ranks than layers).
    pub idle: usize,
}

/// The model of one step of `net` at global batch `batch` on `ranks`.
pub fn model(net: &Net, batch: usize, ranks: usize, iters: usize, sample: usize, a: &Assumptions) -> Row {
    let p = ranks as f64;
    let bw = if ranks <= a.per_node { a.nvlink } else { a.infiniband };
    let hops = |n: f64| n * p.log2().ceil() * a.hop;
    let bytes = |entries: f64| 4.0 * entries;
    let grads = bytes(net.params() as f64);
    let ring = if ranks > 1 { 2.0 * (p - 1.0) / p } else { 0.0 };
    let allreduce = ring * grads;
    let t_allreduce = allreduce / bw + hops(2.0);
    let fwd_bwd = 3.0 * net.forward_flops() * batch as f64 / p;
    let t_compute = fwd_bwd / a.fwd_bwd_rate;

    // FROG: owners by CG cost; the sampled rows of each layer to its owner
    // (all but its own shard's), the new weights from it; a status word
    // before each broadcast.
    let frog_costs: Vec<f64> = net.layers.iter().map(|l| l.cg_flops(sample, iters)).collect();
    let frog_flops = busiest(&frog_costs, &frog_costs, ranks).0;
    let remote = if ranks > 1 { (p - 1.0) / p } else { 0.0 };
    let rows = remote * bytes(net.layers.iter().map(|l| (sample * (l.input_len() + l.output_len())) as f64).sum());
    let weights = remote * grads;
    let collectives = (3 * net.layers.len() + 2 * net.plain_tensors) as f64;
    let t_frog = t_compute + t_allreduce + frog_flops / a.precond_rate + (rows + weights) / bw + if ranks > 1 { hops(collectives) } else { 0.0 };

    // KAISA: factors A (d_in^2) and G (c_out^2) of every layer from the
    // rank's samples every 10 steps, all-reduced; their eigendecompositions
    // (about 9 n^3 FLOPs each) every 100 steps and the preconditioned
    // gradient (Q_G^T V Q_A and back) every step, on the layer's owner,
    // which broadcasts it.
    let local = batch as f64 / p;
    let factor_flops: f64 = net.layers.iter().map(|l| 2.0 * local * l.positions() as f64 * (l.weight_cols().pow(2) + l.rows().pow(2)) as f64).sum();
    let (eigh, precond): (Vec<f64>, Vec<f64>) = net
        .layers
        .iter()
        .map(|l| {
            let (d, r) = (l.weight_cols() as f64, l.rows() as f64);
            (9.0 * (d.powi(3) + r.powi(3)) / 100.0, 4.0 * (r * r * d + r * d * d))
        })
        .unzip();
    let owner_time: Vec<f64> = eigh.iter().zip(&precond).map(|(e, q)| e / a.eigh_rate + q / a.precond_rate).collect();
    let owner_flops: Vec<f64> = eigh.iter().zip(&precond).map(|(e, q)| e + q).collect();
    let (t_owner, owner_work) = busiest(&owner_time, &owner_flops, ranks);
    let kaisa_flops = factor_flops / 10.0 + owner_work;
    let factor_entries: f64 = net.layers.iter().map(|l| (l.weight_cols().pow(2) + l.rows().pow(2)) as f64).sum();
    let factors = ring * bytes(factor_entries) / 10.0;
    let t_kaisa = t_compute + t_allreduce + factor_flops / 10.0 / a.fwd_bwd_rate + t_owner + (factors + weights) / bw + if ranks > 1 { hops(net.layers.len() as f64 + 0.1) } else { 0.0 };

    Row {
        ranks,
        fwd_bwd,
        frog_flops,
        kaisa_flops,
        allreduce,
        rows,
        weights,
        factors,
        time: [t_compute + t_allreduce, t_frog, t_kaisa],
        idle: ranks.saturating_sub(net.layers.len()),
    }
}

/// The busiest rank when the entries of cost `costs` are owned as
/// [`assign_owners`] assigns them: its sum of `costs` and its sum of
/// `work` (another measure of the same entries), from one assignment.
fn busiest(costs: &[f64], work: &[f64], ranks: usize) -> (f64, f64) {
    let mut owners = vec![0; costs.len()];
    assign_owners(costs, ranks, &mut owners).expect("finite costs and at least one rank");
    let mut load = vec![(0.0, 0.0); ranks.min(costs.len())];
    for ((&o, c), w) in owners.iter().zip(costs).zip(work) {
        load[o].0 += c;
        load[o].1 += w;
    }
    let (cost, work) = load.iter().fold((f64::NEG_INFINITY, 0.0), |best, &l| if l.0 > best.0 { l } else { best });
    (cost.max(0.0), work)
}

/// Prints the tables.
pub fn run(args: &ScalingArgs) {
    let a = H100;
    for net in [Net::resnet18(), Net::resnet50()] {
        for batch in [128, 512] {
            let sample = (batch / args.sample_div.max(1)).max(1);
            println!(
                "\n{} ({} weight layers, {:.2} M parameters), global batch {batch}, FROG sample {sample}, K {}: per step, per rank (the busiest)",
                net.name,
                net.layers.len(),
                net.params() as f64 / 1e6,
                args.iters
            );
            println!("{:>5} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>7} {:>7}", "GPUs", "fb GF", "FROG GF", "KAISA GF", "AR MB", "rows MB", "bcast MB", "fact MB", "SGD ms", "FROG ms", "KAISA ms", "F/SGD", "K/SGD");
            for ranks in (0..=10).map(|e| 1usize << e) {
                let r = model(&net, batch, ranks, args.iters, sample, &a);
                println!(
                    "{:>5} {:>9.2} {:>9.3} {:>9.3} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9.3} {:>9.3} {:>9.3} {:>7.2} {:>7.2}",
                    ranks,
                    r.fwd_bwd / 1e9,
                    r.frog_flops / 1e9,
                    r.kaisa_flops / 1e9,
                    r.allreduce / 1e6,
                    r.rows / 1e6,
                    r.weights / 1e6,
                    r.factors / 1e6,
                    r.time[0] * 1e3,
                    r.time[1] * 1e3,
                    r.time[2] * 1e3,
                    r.time[1] / r.time[0],
                    r.time[2] / r.time[0]
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_networks_have_their_published_sizes() {
        // The CIFAR-10 ResNet-18 and ResNet-50 of the common PyTorch
        // reference (kuangliu/pytorch-cifar): 11,173,962 and 23,520,842.
        let (r18, r50) = (Net::resnet18(), Net::resnet50());
        assert_eq!((r18.layers.len(), r18.params()), (21, 11_173_962));
        assert_eq!((r50.layers.len(), r50.params()), (54, 23_520_842));
        // About 0.56 G multiply-adds a ResNet-18 forward pass at 32x32.
        assert!((r18.forward_flops() / 2e9 - 0.556).abs() < 0.01, "{}", r18.forward_flops());
    }

    #[test]
    fn more_ranks_never_make_a_rank_busier_and_the_largest_layer_bounds_it() {
        let net = Net::resnet18();
        let rows: Vec<Row> = (0..=10).map(|e| model(&net, 512, 1 << e, 4, 64, &H100)).collect();
        assert!(rows.windows(2).all(|w| w[1].frog_flops <= w[0].frog_flops && w[1].fwd_bwd < w[0].fwd_bwd));
        let largest = net.layers.iter().map(|l| l.cg_flops(64, 4)).fold(0.0, f64::max);
        assert_eq!(rows[10].frog_flops, largest);
        assert_eq!(rows[10].idle, 1024 - 21);
        assert_eq!((rows[0].allreduce, rows[0].rows, rows[0].time[0] < rows[0].time[1]), (0.0, 0.0, true));
    }
}
