//! The example network: three 3x3 convolutions (3→16, 16→32 stride 2,
//! 32→64 stride 2, each with padding 1, a bias and a ReLU), global average
//! pooling and a linear 64→10 classifier, on 32x32 RGB images. No
//! BatchNorm, so FROG's learning rate alone sets the step size.

use candle_core::{DType, Device, Tensor, Var};
use frog_core::{Conv2d, Layer};
use rand_xoshiro::rand_core::{RngCore, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

use crate::error::Result;
use crate::host::Tap;

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
    layer: Layer,
}

/// The network's parameters (f32), each a candle `Var`.
pub struct Cnn {
    convs: Vec<Conv>,
    fc_weight: Var,
    fc_bias: Var,
}

/// What a training forward pass keeps for FROG.
pub struct Forward {
    /// `[n, 10]` logits.
    pub logits: Tensor,
    /// Each convolution's input, detached (FROG only reads it).
    pub inputs: Vec<Tensor>,
    /// The zero `Var` added to each convolution's output (see [`Tap::output`]).
    pub outputs: Vec<Var>,
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
            convs.push(Conv { weight, bias, stride, layer });
        }
        let feat = CONVS[2].1;
        Ok(Self { convs, fc_weight: uniform(&mut rng, &[CLASSES, feat], feat, dev)?, fc_bias: uniform(&mut rng, &[CLASSES], feat, dev)? })
    }

    /// FROG's geometry of the preconditioned layers (the convolutions).
    pub fn layers(&self) -> Vec<Layer> {
        self.convs.iter().map(|c| c.layer).collect()
    }

    /// The parameters on FROG's plain-SGD path: the classifier.
    pub fn others(&self) -> [&Var; 2] {
        [&self.fc_weight, &self.fc_bias]
    }

    /// The logits of `x` (`[n, 3, 32, 32]`); with `keep`, also what FROG
    /// needs of each convolution.
    fn run(&self, x: &Tensor, keep: bool) -> Result<(Tensor, Vec<Tensor>, Vec<Var>)> {
        let (mut h, mut inputs, mut outputs) = (x.clone(), Vec::new(), Vec::new());
        for c in &self.convs {
            let mut z = h.conv2d(&c.weight, 1, c.stride, 1, 1)?.broadcast_add(&c.bias.reshape((1, (), 1, 1))?)?;
            if keep {
                inputs.push(h.detach());
                let tap = Var::zeros(z.shape(), DType::F32, z.device())?;
                z = (z + tap.as_tensor())?;
                outputs.push(tap);
            }
            h = z.relu()?;
        }
        let logits = h.mean((2, 3))?.matmul(&self.fc_weight.t()?)?.broadcast_add(&self.fc_bias)?;
        Ok((logits, inputs, outputs))
    }

    /// The logits of `x` (`[n, 3, 32, 32]`) for evaluation.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(self.run(x, false)?.0)
    }

    /// A training forward pass of `x`.
    pub fn forward_train(&self, x: &Tensor) -> Result<Forward> {
        let (logits, inputs, outputs) = self.run(x, true)?;
        Ok(Forward { logits, inputs, outputs })
    }

    /// The taps of a training pass, in the order of [`Cnn::layers`].
    pub fn taps<'a>(&'a self, f: &'a Forward) -> Vec<Tap<'a>> {
        self.convs.iter().zip(&f.inputs).zip(&f.outputs).map(|((c, input), output)| Tap { weight: &c.weight, bias: Some(&c.bias), input, output }).collect()
    }
}
