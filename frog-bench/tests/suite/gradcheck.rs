//! The residual paths the golden network lacks (identity and projection
//! shortcuts, accumulated input gradients, several sample groups per
//! convolution): analytic gradients of a tiny ResNet against central
//! differences of the loss, in f64.

use approx::relative_eq;
use frog_bench::arch::{Arch, StageSpec};
use frog_bench::device::cpu::CpuDevice;
use frog_bench::device::Device;
use frog_bench::model::Net;

fn tiny_resnet() -> Arch {
    let block = |prefix: &str, c_out, stride| StageSpec::Block { prefix: prefix.into(), c_out, stride };
    Arch {
        name: "tiny-resnet".into(),
        in_channels: 3,
        input_hw: [6, 6],
        classes: 4,
        stages: vec![
            StageSpec::Plain { conv: "conv1".into(), bn: "bn1".into(), c_out: 4, stride: 1 },
            block("layer1.0", 4, 1),
            block("layer2.0", 6, 2),
        ],
        head: "linear".into(),
    }
}

#[test]
fn resnet_gradients_match_finite_differences() {
    let dev = CpuDevice::<f64>::new(2).unwrap();
    let arch = tiny_resnet();
    let batch = 5;
    let mut net = Net::new(&dev, &arch, batch, 7).unwrap();
    let x_host: Vec<f64> = (0..batch * arch.input_len()).map(|i| ((i * 37 % 101) as f64 / 50.0 - 1.0) * 1.3).collect();
    let mut x = dev.zeros(x_host.len()).unwrap();
    dev.upload(&x_host, &mut x).unwrap();
    let mut labels = dev.labels(batch).unwrap();
    dev.upload_labels(&[0, 3, 1, 2, 3], &mut labels).unwrap();

    let loss = |net: &mut Net<CpuDevice<f64>>| {
        net.forward(&dev, &x, batch, true).unwrap();
        net.loss(&dev, batch, &labels).unwrap().loss
    };
    loss(&mut net);
    net.backward(&dev, &x, batch, None).unwrap();
    let grads: Vec<Vec<f64>> = net.params.iter().map(|p| p.grad.clone()).collect();

    // Small enough that no ReLU input crosses zero (1e-5 already does here).
    let h = 1e-6;
    let mut checked = 0;
    for (i, grad) in grads.iter().enumerate() {
        let len = net.params[i].len();
        // A few entries of every parameter, spread over it.
        for k in [0, len / 3, len - 1] {
            let orig = net.params[i].value[k];
            net.params[i].value[k] = orig + h;
            let up = loss(&mut net);
            net.params[i].value[k] = orig - h;
            let down = loss(&mut net);
            net.params[i].value[k] = orig;
            let numeric = (up - down) / (2.0 * h);
            let analytic = grad[k];
            let close = relative_eq!(numeric, analytic, epsilon = 1e-8, max_relative = 1e-6);
            assert!(close, "{}[{k}]: analytic {analytic:e}, numeric {numeric:e}", net.params[i].name);
            checked += 1;
        }
    }
    assert!(checked >= 3 * 20, "the tiny ResNet has stem, 2 blocks (one with a shortcut) and a head");
}
