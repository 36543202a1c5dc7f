//! Softmax cross-entropy with mean reduction, PyTorch's `cross_entropy`.

use super::operands::LossStats;
use crate::gemm::Real;

/// Mean cross-entropy of `logits` (`[B, K]`) against `labels` (`B`
/// entries, each below `K`), and its gradient `(softmax - onehot) / B`
/// written to `dlogits`. Exponentials are taken in f64, so the f32 engine
/// loses nothing here.
pub fn softmax_cross_entropy<T: Real>(classes: usize, logits: &[T], labels: &[u8], dlogits: &mut [T]) -> LossStats {
    let batch = labels.len();
    assert!(logits.len() >= batch * classes && dlogits.len() >= batch * classes);
    let inv_b = 1.0 / batch as f64;
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
        total += sum.ln() + max - z[label].as_f64();
        let g = &mut dlogits[i * classes..][..classes];
        for (k, (g, v)) in g.iter_mut().zip(z).enumerate() {
            let p = (v.as_f64() - max).exp() / sum;
            let onehot = if k == label { 1.0 } else { 0.0 };
            *g = T::of_f64((p - onehot) * inv_b);
        }
    }
    LossStats { loss: total * inv_b, correct }
}
