//! Properties of the step on random well-conditioned shapes, in f64:
//! CG solves the damped system, the update is scale-free in Y and in the
//! gradient, and degenerate data stays finite.

use crate::common::{step_once, Rng, StepData};
use frog_core::{Config, Conv2d, Layer, LayerKind};
use frog_cpu::im2col::im2col;

/// Patches `P[n]` (`n = i*L + l`) of the sample, bias feature included.
fn patches(layer: &Layer, x: &[f64], r: usize) -> Vec<Vec<f64>> {
    let (d, l, inp) = (layer.weight_cols(), layer.positions(), layer.input_len());
    let mut out = Vec::new();
    for i in 0..r {
        let xi = &x[i * inp..(i + 1) * inp];
        let mut block = vec![0.0; l * d];
        match &layer.kind {
            LayerKind::Conv2d(c) => im2col(c, xi, &mut block, d).unwrap(),
            LayerKind::Linear { .. } => block.copy_from_slice(xi),
            other => panic!("no patches of {other:?}"),
        }
        for p in block.chunks(d) {
            let mut p = p.to_vec();
            if layer.bias {
                p.push(1.0);
            }
            out.push(p);
        }
    }
    out
}

fn random_layer(rng: &mut Rng) -> Layer {
    let bias = rng.int(0, 1) == 1;
    match rng.int(0, 2) {
        0 => Layer::linear(rng.int(2, 10), rng.int(1, 6), bias),
        1 => Layer::linear_tokens(rng.int(2, 8), rng.int(1, 5), rng.int(2, 4), bias),
        _ => {
            let kernel = [rng.int(1, 3), rng.int(1, 3)];
            let hw = [rng.int(kernel[0], 7), rng.int(kernel[1], 7)];
            let conv = Conv2d { c_in: rng.int(1, 3), c_out: rng.int(1, 5), kernel, stride: [rng.int(1, 2), 1], padding: [rng.int(0, 1), rng.int(0, 1)], dilation: [1, 1], groups: 1, input_hw: hw };
            Layer::conv2d(conv, bias)
        }
    }
}

fn max_rel(a: &[f64], b: &[f64]) -> f64 {
    let diff = a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max);
    diff / b.iter().map(|v| v.abs()).fold(f64::MIN_POSITIVE, f64::max)
}

#[test]
fn cg_with_d_prime_iterations_solves_the_damped_system() {
    let mut rng = Rng(2024);
    for _ in 0..40 {
        let layer = random_layer(&mut rng);
        let batch = rng.int(2, 6);
        let r = rng.int(1, batch);
        let tau = rng.uniform(0.1, 1.0);
        let cfg = Config { num_iters: layer.cols(), tau, denom_eps: 1e-30, sample_size: None, ..Config::default() };
        let data = StepData::random(&mut rng, &layer, r, batch);
        let out = step_once(&cfg, &layer, &data).unwrap();
        // Rebuild A_j z_j = sum_n Lambda[j,n] <P_n, z_j> P_n + tau z_j on the host.
        let (rows, cols, l) = (layer.rows(), layer.cols(), layer.positions());
        let (rs, ps) = layer.output_strides();
        let p = patches(&layer, &data.x, r);
        let s = cfg.fisher_scale(batch, r);
        for j in 0..rows {
            let q: Vec<f64> = (0..r * l).map(|n| s * data.y[(n / l) * rows * l + j * rs + (n % l) * ps].powi(2)).collect();
            let trace: f64 = q.iter().zip(&p).map(|(q, pn)| q * pn.iter().map(|v| v * v).sum::<f64>()).sum::<f64>() / cols as f64;
            let z = &out.direction[j * cols..(j + 1) * cols];
            let mut az: Vec<f64> = z.iter().map(|v| tau * v).collect();
            for (qn, pn) in q.iter().zip(&p) {
                let c = qn / (trace + cfg.denom_eps) * pn.iter().zip(z).map(|(a, b)| a * b).sum::<f64>();
                az.iter_mut().zip(pn).for_each(|(a, v)| *a += c * v);
            }
            let mut m = data.grad_weight[j * layer.weight_cols()..(j + 1) * layer.weight_cols()].to_vec();
            if let Some(gb) = &data.grad_bias {
                m.push(gb[j]);
            }
            let res = az.iter().zip(&m).map(|(a, b)| (a - b).powi(2)).sum::<f64>().sqrt();
            let norm = m.iter().map(|v| v * v).sum::<f64>().sqrt();
            assert!(res <= 1e-6 * norm, "{layer:?} row {j}: residual {res:e} vs |M| {norm:e}");
        }
    }
}

#[test]
fn the_update_is_scale_free_in_y_and_in_the_gradient() {
    let mut rng = Rng(7);
    for _ in 0..40 {
        let layer = random_layer(&mut rng);
        let batch = rng.int(2, 6);
        let r = rng.int(1, batch);
        let cfg = Config { lr: 0.1, tau: rng.uniform(1e-3, 1.0), denom_eps: 1e-30, weight_decay: 0.0, sample_size: None, ..Config::default() };
        let data = StepData::random(&mut rng, &layer, r, batch);
        let base = step_once(&cfg, &layer, &data).unwrap();
        let delta = |w: &[f64]| w.iter().zip(&data.weight).map(|(a, b)| a - b).collect::<Vec<f64>>();
        let want = delta(&base.weight);
        for c in [1e-2, rng.uniform(0.01, 100.0), 1e2] {
            let mut scaled_y = data.clone();
            scaled_y.y.iter_mut().for_each(|v| *v *= c);
            let got = step_once(&cfg, &layer, &scaled_y).unwrap();
            assert!(max_rel(&delta(&got.weight), &want) <= 1e-9, "Y scaled by {c}: {layer:?}");
            let mut scaled_g = data.clone();
            scaled_g.grad_weight.iter_mut().for_each(|v| *v *= c);
            if let Some(gb) = &mut scaled_g.grad_bias {
                gb.iter_mut().for_each(|v| *v *= c);
            }
            let got = step_once(&cfg, &layer, &scaled_g).unwrap();
            assert!(max_rel(&delta(&got.weight), &want) <= 1e-9, "gradient scaled by {c}: {layer:?}");
        }
    }
}

#[test]
fn degenerate_data_stays_finite() {
    let mut rng = Rng(99);
    let cfg = Config { momentum: 0.9, weight_decay: 1e-4, sample_size: None, ..Config::default() };
    for _ in 0..20 {
        let layer = random_layer(&mut rng);
        let batch = rng.int(2, 5);
        let data = StepData::random(&mut rng, &layer, batch, batch);
        let mut zero_grad = data.clone();
        zero_grad.grad_weight.iter_mut().for_each(|v| *v = 0.0);
        if let Some(gb) = &mut zero_grad.grad_bias {
            gb.iter_mut().for_each(|v| *v = 0.0);
        }
        let mut zero_y = data.clone();
        zero_y.y.iter_mut().for_each(|v| *v = 0.0);
        for d in [&zero_grad, &zero_y] {
            let out = step_once(&cfg, &layer, d).unwrap();
            let all = out.weight.iter().chain(&out.direction).chain(&out.row_scale).chain(out.bias.iter().flatten());
            assert!(all.clone().all(|v| v.is_finite()), "{layer:?}");
        }
        // A zero gradient gives Z = 0 and row scale 1/sqrt(eps): decay only.
        let out = step_once(&cfg, &layer, &zero_grad).unwrap();
        assert!(out.direction.iter().all(|&v| v == 0.0));
        assert!(out.row_scale.iter().all(|&v| (v - 1e5).abs() < 1e-6));
    }
}
