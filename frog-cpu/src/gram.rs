//! FROG's CG in the span of the sampled patches, for layers whose `N = r*L`
//! patch rows are few against their `D'` columns.
//!
//! Why: CG from zero on `A_j = X^T diag(lambda_j) X + tau I` keeps every
//! vector of row `j` in `span{m_j} + range(X^T)`, so each is held as
//! `a m_j + X^T c` with a scalar `a` and an `N`-vector `c`. With the Gram
//! matrix `K = X X^T` (once per step) and `X m_j` (one product), an
//! iteration costs one `R x N` by `N x N` GEMM instead of two `N x D'` by
//! `D' x R` products, and the solution one product more. At sample 64 the
//! ResNet-18 `512`-channel 3x3 layer (`N = 1024`, `D' = 4608`) does half
//! the multiplications of the direct CG, and at the study's sample 16 a
//! fifth. The iterates are the direct CG's in exact arithmetic; the golden
//! cases and the test against the direct CG bound the rounding.
//!
//! For `v = a m + X^T c`: `X v = a X m + K c`, `A v = (tau a) m + X^T
//! (lambda . X v + tau c)`, and `|v|^2 = a^2 |m|^2 + 2a <X m, c> + <c, K c>`.
//! The iteration carries `K c` of the residual and of the direction (the
//! direction's is the residual's plus `beta` times its own), so its one
//! new product is `K (lambda . X p)`.
//!
//! Every row's CG is independent and `K` is shared read-only, so each
//! thread runs all iterations of its own rows, its GEMMs included; the
//! `N`-vectors are `R x N` matrices, a row per CG row.

use frog_core::{CgBuffers, Conv2d, Layer, LayerKind, Patches};

use crate::backend::{gain, need, Cpu, CpuError};
use crate::gemm::{matmul_seq, Real, View};
use crate::parts::{mirror_lower, Rows as RowSplit};
use crate::pool::ThreadPool;

/// CG iterations the choice assumes (FROG's default `num_iters`): `K` is
/// paid once per step, against every iteration's products.
const MODEL_ITERS: f64 = 4.0;

/// Multiply-adds of the Gram CG of `layer` at `r` samples over those of
/// the direct one at [`MODEL_ITERS`] iterations: the lower half of `K`
/// (`N^2 D' / 2`), `X m` and the solution (`2 N D' R`) and one `N x N x R`
/// GEMM per iteration, against two `N D' R` products per iteration.
/// With a [`Same`] convolution `K` costs `N^2 c_in / 2` and one addition
/// per tap and entry instead.
pub(crate) fn cost_ratio(layer: &Layer, r: usize) -> f64 {
    let (n, d, rows) = (r as f64 * layer.positions() as f64, layer.cols() as f64, layer.rows() as f64);
    let k = match Same::of(layer) {
        Some(same) => n * n * (same.conv.c_in as f64 / 2.0 + same.taps() as f64),
        None => n * n * d / 2.0,
    };
    let gram = k + 2.0 * n * d * rows + MODEL_ITERS * n * n * rows;
    gram / (2.0 * MODEL_ITERS * n * d * rows)
}

/// `R x N` matrices the solve keeps: `X m`, `lambda` (transposed), the
/// direction's, residual's and solution's `c`, `K c` of the first two,
/// `w = lambda . X p`, and `K w`.
const MATRICES: usize = 9;

/// Multiply-adds below which a solve runs on one thread.
const PAR_WORK: usize = 1 << 18;

/// Per-row scalars, at these indices: `rho`, `|m|^2`, `a` of the direction,
/// residual and solution, and `<p, A p>`.
const SCALARS: usize = 6;
const RHO: usize = 0;
const MM: usize = 1;
const A_P: usize = 2;
const A_R: usize = 3;
const A_Z: usize = 4;
const PAP: usize = 5;

/// Entries of product scratch the solve needs at `r` samples: `K` (and
/// `S` for a [`Same`] convolution), the matrices and the scalars. It grows
/// with `r`.
pub(crate) fn scratch_len(layer: &Layer, r: usize) -> usize {
    let (n, rows) = (r.saturating_mul(layer.positions()), layer.rows());
    let grams = if Same::of(layer).is_some() { 2 } else { 1 };
    n.saturating_mul(n).saturating_mul(grams).saturating_add(rows.saturating_mul(n.saturating_mul(MATRICES).saturating_add(SCALARS)))
}

/// A convolution whose `K` comes from its input's own Gram matrix: stride
/// 1, an odd kernel larger than 1x1, and the padding that keeps the size
/// (`dilation * (kernel - 1) / 2` per axis), like ResNet's 3x3 layers.
/// The centre tap then sees input position `l` at output position `l`, so
/// the centre tap's columns of `X` are the input, a row per position, and
/// every other tap's columns are those rows shifted by the tap's offset
/// (zeros past the edge). Hence `K = sum_taps S shifted` (plus 1 with a
/// bias) with `S = Xc Xc^T` over `c_in` columns instead of `D'`: `kh*kw`
/// times fewer multiply-adds, and one addition per tap and entry.
#[derive(Clone, Copy)]
struct Same {
    conv: Conv2d,
}

impl Same {
    fn of(layer: &Layer) -> Option<Self> {
        let LayerKind::Conv2d(conv) = &layer.kind else { return None };
        let axis = |a: usize| conv.stride[a] == 1 && conv.kernel[a] % 2 == 1 && conv.padding[a] == conv.dilation[a] * (conv.kernel[a] / 2);
        (axis(0) && axis(1) && conv.kernel != [1, 1]).then_some(Self { conv: *conv })
    }

    fn taps(&self) -> usize {
        self.conv.kernel[0] * self.conv.kernel[1]
    }

    /// The centre tap's columns (`n x c_in`) of the row-major `n x cols`
    /// patch matrix `x`.
    fn centre<'a, T>(&self, x: &'a [T], n: usize, cols: usize) -> View<'a, T> {
        let [kh, kw] = self.conv.kernel;
        View::strided(&x[(kh / 2) * kw + kw / 2..], n, self.conv.c_in, cols, self.taps())
    }

    /// `K` from `S` (both `n x n`, `n = r H W`), rows split over `parts`
    /// threads; `bias` is the bias feature (the step's gain) or `None`.
    fn shift_sum<T: Real>(&self, pool: &ThreadPool, parts: usize, n: usize, bias: Option<T>, s: &[T], k: &mut [T]) {
        let Conv2d { input_hw: [h, w], kernel: [kh, kw], dilation: [dh, dw], .. } = self.conv;
        let (l, start) = (h * w, bias.map_or(T::ZERO, |b| b * b));
        // A tap's offset along an axis, and the output range it keeps inside.
        let shift = |k: usize, half: usize, d: usize, size: usize| {
            let off = k as isize * d as isize - (half * d) as isize;
            (off, (-off).max(0) as usize..(size as isize - off).clamp(0, size as isize) as usize)
        };
        pool.split(RowSplit::new(&mut k[..n * n], n, n, parts), |_, (rows, block)| {
            let first = rows.start;
            for a in rows {
                let row = &mut block[(a - first) * n..][..n];
                row.fill(start);
                let (i, oy, ox) = (a / l, a % l / w, a % w);
                for ky in 0..kh {
                    let (dy, ys) = shift(ky, kh / 2, dh, h);
                    if !ys.contains(&oy) {
                        continue;
                    }
                    for kx in 0..kw {
                        let (dx, xs) = shift(kx, kw / 2, dw, w);
                        if !xs.contains(&ox) {
                            continue;
                        }
                        let at = |y: usize, x: usize| ((y as isize + dy) as usize) * w + (x as isize + dx) as usize;
                        let srow = &s[(i * l + at(oy, ox)) * n..][..n];
                        for sample in 0..n / l {
                            for y in ys.clone() {
                                let (kb, sb) = (sample * l + y * w, sample * l + at(y, xs.start));
                                row[kb + xs.start..kb + xs.end].iter_mut().zip(&srow[sb..sb + xs.len()]).for_each(|(k, &s)| *k += s);
                            }
                        }
                    }
                }
            }
        });
    }
}

/// One thread's rows of every matrix and scalar.
struct Rows<'a, T> {
    xm: &'a mut [T],
    lam: &'a mut [T],
    cp: &'a mut [T],
    cr: &'a mut [T],
    cz: &'a mut [T],
    kp: &'a mut [T],
    kr: &'a mut [T],
    w: &'a mut [T],
    kw: &'a mut [T],
    scalars: &'a mut [T],
}

/// The solve (see the module docs), from the state `cg_start` leaves: `z =
/// 0`, `rs = pd = m`, `rho = <m, m>`. Leaves the solution in `cg.z` and the
/// final `<Rs, Rs>` in `cg.rho`; `rs` still holds `m`, and `pd`, `ap` and
/// `u` are untouched. `K`, the matrices and the scalars live in the
/// product scratch ([`scratch_len`]).
pub(crate) fn solve<T: Real>(cpu: &Cpu<T>, p: &mut Patches<'_, Cpu<T>>, lambda: &[T], tau: T, eps: T, iters: usize, cg: &mut CgBuffers<'_, Cpu<T>>) -> Result<(), CpuError> {
    let (n, cols, rows) = (p.r.saturating_mul(p.layer.positions()), p.layer.cols(), p.layer.rows());
    let len = scratch_len(p.layer, p.r);
    need("gram: scratch", p.packed, n.saturating_mul(cols))?;
    need("gram: product scratch", p.scratch, len)?;
    need("gram: lambda", lambda, n.saturating_mul(rows))?;
    for (what, v) in [("gram: z", &*cg.z), ("gram: rs", &*cg.rs)] {
        need(what, v, rows.saturating_mul(cols))?;
    }
    need("gram: rho", cg.rho, rows)?;
    let pool = cpu.pool();
    let (layer, packed, bias) = (p.layer, p.packed, p.layer.bias.then(|| gain(p)));
    let x = View::row_major(&packed[..n * cols], n, cols);
    let (m, z, rho) = (&cg.rs[..rows * cols], &mut cg.z[..rows * cols], &mut cg.rho[..rows]);
    // Small solves stay on one thread: a wake-up of the pool would cost
    // more than it saves (and their results then match any pool's).
    let work = n.saturating_mul(n.saturating_add(cols)).saturating_mul(rows);
    let parts = if work < PAR_WORK { 1 } else { pool.threads() };
    let scratch = &mut p.scratch[..len];
    let (k, rest) = scratch.split_at_mut(n * n);
    let rest = match Same::of(layer) {
        Some(same) => {
            let (s, rest) = rest.split_at_mut(n * n);
            gram_matrix(pool, parts, same.centre(packed, n, cols), n, s);
            same.shift_sum(pool, parts, n, bias, s, k);
            rest
        }
        None => {
            gram_matrix(pool, parts, x, n, k);
            rest
        }
    };
    let k = View::row_major(&*k, n, n);
    let (mats, scalars) = rest.split_at_mut(MATRICES * rows * n);
    let mut mats = mats.chunks_exact_mut(rows * n);
    let mats: [_; MATRICES] = std::array::from_fn(|_| RowSplit::new(mats.next().expect("MATRICES matrices"), rows, n, parts));
    let vectors = (RowSplit::new(&mut scalars[..rows * SCALARS], rows, SCALARS, parts), RowSplit::new(z, rows, cols, parts), RowSplit::new(rho, rows, 1, parts));
    pool.split((mats, vectors), |_, (mats, ((js, scalars), (_, z), (_, rho)))| {
        if js.is_empty() {
            return;
        }
        let [xm, lam, cp, cr, cz, kp, kr, w, kw] = mats.map(|(_, m)| m);
        let mut part = Rows { xm, lam, cp, cr, cz, kp, kr, w, kw, scalars };
        let m = &m[js.start * cols..js.end * cols];
        // X m of these rows (one product), lambda transposed, and the
        // representation of z = 0, rs = pd = m.
        matmul_seq(part.xm, n, false, View::row_major(m, js.len(), cols), x.t());
        for (k, j) in js.clone().enumerate() {
            for (i, l) in part.lam[k * n..(k + 1) * n].iter_mut().enumerate() {
                *l = lambda[i * rows + j];
            }
        }
        for v in [&mut *part.cp, &mut *part.cr, &mut *part.cz, &mut *part.kp, &mut *part.kr] {
            v.fill(T::ZERO);
        }
        for (s, &rho) in part.scalars.chunks_exact_mut(SCALARS).zip(&*rho) {
            s.copy_from_slice(&[rho, rho, T::ONE, T::ONE, T::ZERO, T::ZERO]);
        }
        for _ in 0..iters {
            iterate(&mut part, n, k, tau, eps);
        }
        // z = a_z m + X^T c_z.
        matmul_seq(z, cols, false, View::row_major(part.cz, js.len(), n), x);
        for ((z, m), s) in z.chunks_exact_mut(cols).zip(m.chunks_exact(cols)).zip(part.scalars.chunks_exact(SCALARS)) {
            z.iter_mut().zip(m).for_each(|(z, &m)| *z += s[A_Z] * m);
        }
        for (rho, s) in rho.iter_mut().zip(part.scalars.chunks_exact(SCALARS)) {
            *rho = s[RHO];
        }
    });
    Ok(())
}

/// `K = X X^T` (`n x n`): each thread computes a band of rows of the lower
/// triangle (bands of equal area), then the upper triangle is mirrored.
fn gram_matrix<T: Real>(pool: &ThreadPool, parts: usize, x: View<'_, T>, n: usize, k: &mut [T]) {
    pool.split(RowSplit::triangle(&mut k[..n * n], n, n, parts), |_, (band, rows)| {
        if !band.is_empty() {
            matmul_seq(rows, n, false, x.rows(band.clone()), x.rows(0..band.end).t());
        }
    });
    mirror_lower(pool, parts, n, k);
}

/// One CG iteration of every row of `part`, with the direct CG's updates
/// and its `eps` in both denominators. `<p, A p>` and the new `<r, r>`
/// come from the representation, so rounding could take them a hair below
/// zero where the direct CG's sums of squares cannot go: they are clamped.
fn iterate<T: Real>(part: &mut Rows<'_, T>, n: usize, k: View<'_, T>, tau: T, eps: T) {
    let Rows { xm, lam, cp, cr, cz, kp, kr, w, kw, scalars } = part;
    // w = lambda . X p with X p = a_p X m + K c_p, and <p, A p> = <X p, w>
    // + tau (a_p^2 |m|^2 + a_p <X m, c_p> + <c_p, X p>).
    for (j, s) in scalars.chunks_exact_mut(SCALARS).enumerate() {
        let at = j * n..(j + 1) * n;
        let (xm, kp, cp, lam, w) = (&xm[at.clone()], &kp[at.clone()], &cp[at.clone()], &lam[at.clone()], &mut w[at]);
        let a = s[A_P];
        let (mut xw, mut xmcp, mut cpxp) = (T::ZERO, T::ZERO, T::ZERO);
        for i in 0..n {
            let xp = a * xm[i] + kp[i];
            w[i] = lam[i] * xp;
            xw += xp * w[i];
            xmcp += xm[i] * cp[i];
            cpxp += cp[i] * xp;
        }
        let pp = clamp(a * a * s[MM] + a * xmcp + cpxp);
        s[PAP] = clamp(xw + tau * pp);
    }
    matmul_seq(kw, n, false, View::row_major(w, scalars.len() / SCALARS, n), k);
    let two = T::ONE + T::ONE;
    for (j, s) in scalars.chunks_exact_mut(SCALARS).enumerate() {
        let at = j * n..(j + 1) * n;
        let (xm, w, kw) = (&xm[at.clone()], &w[at.clone()], &kw[at.clone()]);
        let (cp, cr, cz, kp, kr) = (&mut cp[at.clone()], &mut cr[at.clone()], &mut cz[at.clone()], &mut kp[at.clone()], &mut kr[at]);
        let alpha = s[RHO] / (s[PAP] + eps);
        s[A_Z] += alpha * s[A_P];
        s[A_R] += -alpha * tau * s[A_P];
        let (mut xmcr, mut crkr) = (T::ZERO, T::ZERO);
        for i in 0..n {
            cz[i] += alpha * cp[i];
            cr[i] += -alpha * (w[i] + tau * cp[i]);
            kr[i] += -alpha * (kw[i] + tau * kp[i]);
            xmcr += xm[i] * cr[i];
            crkr += cr[i] * kr[i];
        }
        let a = s[A_R];
        let next = clamp(a * a * s[MM] + two * a * xmcr + crkr);
        let beta = next / (s[RHO] + eps);
        s[RHO] = next;
        s[A_P] = a + beta * s[A_P];
        for i in 0..n {
            cp[i] = cr[i] + beta * cp[i];
            kp[i] = kr[i] + beta * kp[i];
        }
    }
}

/// `v` below zero becomes zero; NaN stays NaN, for the guard to see.
fn clamp<T: Real>(v: T) -> T {
    if v < T::ZERO {
        T::ZERO
    } else {
        v
    }
}
