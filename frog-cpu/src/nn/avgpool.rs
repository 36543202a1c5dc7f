//! Global average pooling `[B, C, H, W] -> [B, C]`, the ResNet head (the
//! original's `avg_pool2d(out, 4)` on its final 4x4 map is the same thing).

use crate::gemm::Real;

/// `y[b, c]` = mean of the plane `x[b, c, :, :]` of `hw` entries.
pub fn global_avg_pool<T: Real>(planes: usize, hw: usize, x: &[T], y: &mut [T]) {
    let inv = T::of_f64(1.0 / hw as f64);
    for (y, plane) in y[..planes].iter_mut().zip(x.chunks_exact(hw)) {
        *y = plane.iter().fold(T::zero(), |a, &v| a + v) * inv;
    }
}

/// Backward: every entry of a plane gets `dy[b, c] / hw`.
pub fn global_avg_pool_backward<T: Real>(planes: usize, hw: usize, dy: &[T], dx: &mut [T]) {
    let inv = T::of_f64(1.0 / hw as f64);
    for (&g, plane) in dy[..planes].iter().zip(dx.chunks_exact_mut(hw)) {
        plane.fill(g * inv);
    }
}
