//! The example network: three 3x3 convolutions (3→16, 16→32 stride 2,
//! 32→64 stride 2, each with padding 1, a bias and a ReLU), global average
//! pooling and a linear 64→10 classifier, on 32x32 RGB images. No
//! BatchNorm, so FROG's learning rate alone sets the step size. The
//! convolutions run through [`Tap`]s, so FROG preconditions them; the
//! classifier takes the plain-SGD path.

use candle_core::{Device, Tensor, Var};
use candle_nn::ModuleT;
use frog_core::{Conv2d, Layer};
use rand_xoshiro::rand_core::{RngCore, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

use crate::error::Result;
use crate::optim::Tap;

/// `(c_in, c_out, stride)` of each convolution.
const CONVS: [(usize, usize, usize); 3] = [(3, 16, 1), (16, 32, 2), (32, 64, 2)];
/// Classes.
pub const CLASSES: usize = 10;
/// Input side.
const SIDE: usize = 32;

struct Conv {
    weight: Var,
    bias: Var,
    stride: usize,
    tap: Tap,
}

/// The network's parameters (f32), each a candle `Var`.
pub struct Cnn {
    convs: Vec<Conv>,
    fc_weight: Var,
    fc_bias: Var,
}

/// PyTorch's default initialization, from a seeded generator (candle's CPU
/// generator cannot be seeded): `U(-1/sqrt(fan_in), 1/sqrt(fan_in))`.
fn uniform(rng: &mut Xoshiro256PlusPlus, shape: &[usize], fan_in: usize, dev: &Device) -> Result<Var> {
    let bound = 1.0 / (fan_in as f64).sqrt();
    let n = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|_| ((rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0) * bound).map(|v| v as f32).collect();
    Ok(Var::from_vec(v, shape, dev)?)
}

impl Cnn {
    /// A freshly initialized network on `dev`, reproducible from `seed`.
    pub fn new(dev: &Device, seed: u64) -> Result<Self> {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
        let mut side = SIDE;
        let mut convs = Vec::new();
        for (c_in, c_out, stride) in CONVS {
            let fan_in = c_in * 9;
            let weight = uniform(&mut rng, &[c_out, c_in, 3, 3], fan_in, dev)?;
            let bias = uniform(&mut rng, &[c_out], fan_in, dev)?;
            let layer = Layer::conv2d(Conv2d::new(c_in, c_out, 3, [side, side]).stride(stride).padding(1), true);
            side = side.div_ceil(stride);
            let tap = Tap::new(&weight, Some(&bias), layer)?;
            convs.push(Conv { weight, bias, stride, tap });
        }
        let feat = CONVS[2].1;
        Ok(Self { convs, fc_weight: uniform(&mut rng, &[CLASSES, feat], feat, dev)?, fc_bias: uniform(&mut rng, &[CLASSES], feat, dev)? })
    }

    /// FROG's geometry of the preconditioned layers (the convolutions).
    pub fn layers(&self) -> Vec<Layer> {
        self.convs.iter().map(|c| c.tap.layer()).collect()
    }

    /// The taps of the convolutions, to register with the optimizer.
    pub fn taps(&self) -> impl Iterator<Item = &Tap> {
        self.convs.iter().map(|c| &c.tap)
    }

    /// Every parameter, for the optimizer's `new`.
    pub fn vars(&self) -> Vec<Var> {
        let convs = self.convs.iter().flat_map(|c| [c.weight.clone(), c.bias.clone()]);
        convs.chain([self.fc_weight.clone(), self.fc_bias.clone()]).collect()
    }
}

impl ModuleT for Cnn {
    /// The `[n, 10]` logits of `x` (`[n, 3, 32, 32]`); a training pass runs
    /// the convolutions through their taps.
    fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let mut h = x.clone();
        for c in &self.convs {
            let conv = |h: &Tensor| h.conv2d(&c.weight, 1, c.stride, 1, 1)?.broadcast_add(&c.bias.reshape((1, (), 1, 1))?);
            h = if train { c.tap.apply(&h, conv)? } else { conv(&h)? }.relu()?;
        }
        h.mean((2, 3))?.matmul(&self.fc_weight.t()?)?.broadcast_add(&self.fc_bias)
    }
}
