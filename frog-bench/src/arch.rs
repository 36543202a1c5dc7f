//! Model architectures: what the engine builds, by name.

use crate::error::{Error, Result};

/// One stage of a network, in order.
#[derive(Clone, Debug, PartialEq)]
pub enum StageSpec {
    /// 3x3 convolution (padding 1, no bias), BatchNorm, ReLU; its
    /// parameters are named `{conv}.weight`, `{bn}.weight`, `{bn}.bias`.
    Plain {
        /// Name of the convolution.
        conv: String,
        /// Name of the BatchNorm.
        bn: String,
        /// Output channels.
        c_out: usize,
        /// Stride.
        stride: usize,
    },
    /// A ResNet BasicBlock: two 3x3 conv-BN pairs and a shortcut (a 1x1
    /// conv-BN pair when the stride or the width changes), parameters
    /// named as in the original's `{prefix}.conv1`, `.bn1`, `.conv2`,
    /// `.bn2`, `.shortcut.0`, `.shortcut.1`.
    Block {
        /// Name prefix, like `layer2.0`.
        prefix: String,
        /// Output channels.
        c_out: usize,
        /// Stride of the first convolution and the shortcut.
        stride: usize,
    },
}

/// A network: stages, then global average pooling and a linear classifier.
#[derive(Clone, Debug, PartialEq)]
pub struct Arch {
    /// Name, as `--model` takes it.
    pub name: String,
    /// Input channels.
    pub in_channels: usize,
    /// Input height and width.
    pub input_hw: [usize; 2],
    /// Classes.
    pub classes: usize,
    /// The stages.
    pub stages: Vec<StageSpec>,
    /// Name of the classifier (`fc`, `linear`).
    pub head: String,
}

/// The names `--model` accepts.
pub const MODELS: [&str; 2] = ["resnet18", "resnet-small"];

impl Arch {
    /// A model by its `--model` name.
    pub fn by_name(name: &str) -> Result<Self> {
        match name {
            "resnet18" => Ok(Self::resnet(name, 64, &[64, 128, 256, 512], 2)),
            "resnet-small" => Ok(Self::resnet(name, 32, &[32, 64, 128], 1)),
            _ => Err(Error::new(format!("unknown model `{name}`; choose one of: {}", MODELS.join(", ")))),
        }
    }

    /// A CIFAR ResNet: 3x3 stem with `stem` channels and no max-pool, then
    /// `blocks` BasicBlocks per width (the first stage at stride 1, the
    /// others at stride 2), global average pool, linear to 10 classes.
    /// `resnet(64, [64,128,256,512], 2)` is the original study's ResNet-18.
    fn resnet(name: &str, stem: usize, widths: &[usize], blocks: usize) -> Self {
        let mut stages = vec![StageSpec::Plain { conv: "conv1".into(), bn: "bn1".into(), c_out: stem, stride: 1 }];
        for (s, &c_out) in widths.iter().enumerate() {
            for b in 0..blocks {
                let stride = if s > 0 && b == 0 { 2 } else { 1 };
                stages.push(StageSpec::Block { prefix: format!("layer{}.{b}", s + 1), c_out, stride });
            }
        }
        Self { name: name.into(), in_channels: 3, input_hw: [32, 32], classes: 10, stages, head: "linear".into() }
    }

    /// The network of `golden/tiny_cnn_sgd_frog.json`: conv1 (3->4) - bn1 -
    /// ReLU - conv2 (4->6, stride 2) - bn2 - ReLU - pool - fc (6->3), on 8x8.
    pub fn tiny_cnn() -> Self {
        let plain = |i: usize, c_out, stride| StageSpec::Plain { conv: format!("conv{i}"), bn: format!("bn{i}"), c_out, stride };
        Self {
            name: "tiny-cnn".into(),
            in_channels: 3,
            input_hw: [8, 8],
            classes: 3,
            stages: vec![plain(1, 4, 1), plain(2, 6, 2)],
            head: "fc".into(),
        }
    }

    /// Input entries per sample.
    pub fn input_len(&self) -> usize {
        self.in_channels * self.input_hw[0] * self.input_hw[1]
    }
}
