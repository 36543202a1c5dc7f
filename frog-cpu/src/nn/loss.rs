//! Softmax cross-entropy with label smoothing, mean or summed over the
//! batch: PyTorch's `F.cross_entropy` ([`CrossEntropyLoss`]).

use super::operands::{CrossEntropyLoss, LossStats, Reduction};
use crate::gemm::Real;

/// The cross-entropy of `logits` (`[B, K]`) against `labels` (`B` entries,
/// each below `K`) as `loss` says, and its gradient `(softmax - q) * s` in
/// `dlogits`: `q` the smoothed target (`1 - eps + eps/K` on the label,
/// `eps/K` elsewhere), `s` `1/B` for the mean and 1 for the sum.
/// Exponentials are taken in f64, so the f32 engine loses nothing here.
///
/// # Panics
/// When a label is out of range, `loss.label_smoothing` is outside
/// `[0, 1]`, or a slice is too short (the caller's bugs).
pub fn softmax_cross_entropy<T: Real>(classes: usize, loss: CrossEntropyLoss, logits: &[T], labels: &[u8], dlogits: &mut [T]) -> LossStats {
    let batch = labels.len();
    assert!(logits.len() >= batch * classes && dlogits.len() >= batch * classes);
    assert!(loss.is_valid(), "label smoothing {} is outside [0, 1]", loss.label_smoothing);
    let scale = match loss.reduction {
        Reduction::Mean => 1.0 / batch as f64,
        Reduction::Sum => 1.0,
    };
    let q_other = loss.label_smoothing / classes as f64;
    let q_label = 1.0 - loss.label_smoothing + q_other;
    let (mut total, mut correct) = (0.0, 0);
    for (i, &label) in labels.iter().enumerate() {
        let label = usize::from(label);
        assert!(label < classes, "label {label} out of range for {classes} classes");
        let z = &logits[i * classes..][..classes];
        let (mut best, mut max) = (0, z[0].as_f64());
        for (k, v) in z.iter().enumerate().skip(1) {
            if v.as_f64() > max {
                (best, max) = (k, v.as_f64());
            }
        }
        correct += usize::from(best == label);
        let sum: f64 = z.iter().map(|v| (v.as_f64() - max).exp()).sum();
        // -sum_k q_k log p_k = log(sum_k e^z_k) - sum_k q_k z_k, as sum_k q_k = 1.
        let mut target = 0.0;
        let g = &mut dlogits[i * classes..][..classes];
        for (k, (g, v)) in g.iter_mut().zip(z).enumerate() {
            let q = if k == label { q_label } else { q_other };
            target += q * v.as_f64();
            let p = (v.as_f64() - max).exp() / sum;
            *g = T::of_f64((p - q) * scale);
        }
        total += sum.ln() + max - target;
    }
    LossStats { loss: total * scale, correct }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// By hand: logits `(0, ln 2, ln 3)` give `p = (1, 2, 3)/6`; with the
    /// label 2 and `eps = 0.3`, `q = (0.1, 0.1, 0.8)` and the loss
    /// `0.1 ln 6 + 0.1 ln 3 + 0.8 ln 2`; equal logits over 3 classes give
    /// `ln 3` whatever the label and the smoothing. Summed, then averaged; f64 and f32.
    #[test]
    fn smoothed_losses_by_hand() {
        fn check<T: Real>(tol: f64) {
            let logits: Vec<T> = [0.0, 2f64.ln(), 3f64.ln(), 1.5, 1.5, 1.5].map(T::of_f64).to_vec();
            let loss = CrossEntropyLoss { label_smoothing: 0.3, reduction: Reduction::Sum };
            let mut g = vec![T::zero(); 6];
            let (a, b) = (0.1 * 6f64.ln() + 0.1 * 3f64.ln() + 0.8 * 2f64.ln(), 3f64.ln());
            let s = softmax_cross_entropy(3, loss, &logits, &[2, 1], &mut g);
            assert!((s.loss - (a + b)).abs() < tol, "sum: {} vs {}", s.loss, a + b);
            assert_eq!(s.correct, 1, "row 0 predicts its label 2; row 1's first maximum is class 0, not 1");
            let want = [1.0 / 6.0 - 0.1, 2.0 / 6.0 - 0.1, 0.5 - 0.8, 1.0 / 3.0 - 0.1, 1.0 / 3.0 - 0.8, 1.0 / 3.0 - 0.1];
            for (k, (g, w)) in g.iter().zip(want).enumerate() {
                assert!((g.as_f64() - w).abs() < tol, "sum: dlogits[{k}] {} vs {w}", g.as_f64());
            }
            let s = softmax_cross_entropy(3, CrossEntropyLoss { reduction: Reduction::Mean, ..loss }, &logits, &[2, 1], &mut g);
            assert!((s.loss - (a + b) / 2.0).abs() < tol, "mean");
            assert!(g.iter().zip(want).all(|(g, w)| (g.as_f64() - w / 2.0).abs() < tol), "mean: the gradient halved");
        }
        check::<f64>(1e-15);
        check::<f32>(2e-7);
    }

    /// The loss is `-sum_k q_k log softmax_k` averaged (PyTorch's
    /// definition, computed directly), and the gradient its derivative
    /// (central differences), for smoothing 0, airbench's 0.2 and 1.
    #[test]
    fn gradient_is_the_derivative_of_the_loss() {
        let (batch, classes) = (3, 10);
        let logits: Vec<f64> = (0..batch * classes).map(|i| (i as f64 * 0.77).sin() * 3.0).collect();
        let labels = [3u8, 0, 9];
        for eps in [0.0, 0.2, 1.0] {
            for reduction in [Reduction::Mean, Reduction::Sum] {
                let loss = CrossEntropyLoss { label_smoothing: eps, reduction };
                let value = |z: &[f64]| softmax_cross_entropy(classes, loss, z, &labels, &mut vec![0.0; batch * classes]).loss;
                let mut direct = 0.0;
                for (i, &label) in labels.iter().enumerate() {
                    let z = &logits[i * classes..][..classes];
                    let lse = z.iter().map(|v| v.exp()).sum::<f64>().ln();
                    for (k, v) in z.iter().enumerate() {
                        let q = eps / classes as f64 + if k == usize::from(label) { 1.0 - eps } else { 0.0 };
                        direct -= q * (v - lse);
                    }
                }
                let direct = if reduction == Reduction::Mean { direct / batch as f64 } else { direct };
                let mut g = vec![0.0; batch * classes];
                let s = softmax_cross_entropy(classes, loss, &logits, &labels, &mut g);
                assert!((s.loss - direct).abs() < 1e-13, "eps {eps} {reduction:?}: {} vs {direct}", s.loss);
                let h = 1e-6;
                for j in 0..batch * classes {
                    let (mut up, mut down) = (logits.clone(), logits.clone());
                    up[j] += h;
                    down[j] -= h;
                    let fd = (value(&up) - value(&down)) / (2.0 * h);
                    assert!((g[j] - fd).abs() < 1e-8, "eps {eps} {reduction:?}: dlogits[{j}] {} vs {fd}", g[j]);
                }
            }
        }
    }

    #[test]
    #[should_panic(expected = "label smoothing 1.5 is outside [0, 1]")]
    fn smoothing_outside_the_unit_interval_panics() {
        let loss = CrossEntropyLoss { label_smoothing: 1.5, reduction: Reduction::Sum };
        softmax_cross_entropy(2, loss, &[0.0f64; 2], &[0], &mut [0.0; 2]);
    }
}
