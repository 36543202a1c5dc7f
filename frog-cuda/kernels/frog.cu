// FROG's kernels: patches, Fisher weights, the two patch products (GEMM),
// batched-CG updates and the row-wise elementwise operations; Muon's norm,
// scaling and bfloat16 steps.
//
// Compiled to PTX (ISA 7.8, compute_80; CUDA 11.8+ drivers) by the pinned NVRTC in
// scripts/gen-ptx.py; the PTX is committed in ptx/ and embedded by the crate.
// No headers: everything here is plain CUDA C plus inline PTX for mma.sync.
//
// Conventions: every size is an `int` (the host checks that each buffer has
// fewer than 2^31 entries); loops over them step in 64 bits (grid-stride) or
// unsigned (block-stride), so no index passes 2^31 on its last step;
// row-major everywhere; per-row scalars live in device buffers so that a
// whole optimizer step is launches only.
//
// Layouts chosen by this backend:
//   packed X : [N, D'] with N = r*L, row n = i*L + l, times the step's gain c
//              (1 unless the inputs are too large, see pow2_gain), trailing c
//              with a bias; then two f32 words, the gain slot (input_abs_max)
//   lambda, U: [R, N]  (row j of the weight, then the position n)

#include "reduce.cuh"

// The largest finite f32 (no float.h: the kernels need no headers), where
// running means of squares saturate.
#define F32_MAX 3.40282347e+38f

// Rows whose largest |value| is at most this take the unscaled path: their
// squares, sums over long rows, the Fisher scale and the CG's products stay
// far from overflow in f32 (frog-core's square_safe_max::<f32>(), which a
// test of src/kernels.rs holds this to).
#define SQUARE_SAFE_MAX 65536.0f
// The largest finite f16.
#define F16_MAX 65504.0f

// frog-core's pow2_gain with threshold `safe_max`: the gain of values whose
// largest |value| is `max_abs`: 1 up to `safe_max` (and for a non-finite
// maximum), else 2^-e for max_abs = f * 2^e, f in [0.5, 1), which brings it
// into [0.5, 1). For e > 126 (max_abs >= 2^126) 2^-e is subnormal, down to
// 2^-128 for F32_MAX: ldexpf builds it exactly, and the kernels are
// compiled without flush-to-zero (scripts/gen-ptx.py), so it stays that
// value and a product by it is correctly rounded: exact wherever the
// product is normal (the largest values land in [0.5, 1)). FROG's
// direction does not depend on it except through eps.
__device__ __forceinline__ float pow2_gain(float max_abs, float safe_max) {
    if (!(max_abs > safe_max) || isinf(max_abs)) return 1.0f;
    int e;
    frexpf(max_abs, &e);
    return ldexpf(1.0f, -e);
}

// ---------------------------------------------------------------------------
// Element types of the inputs and of the packed patches. bf16 and f16 travel
// as their bits in an unsigned short (no cuda_bf16.h / cuda_fp16.h: the
// kernels need no headers). Each type's load widens exactly to f32 (every
// bf16 and f16 value is an f32); its store rounds to nearest even.

#ifndef FROG_HOST_EMULATION
__device__ __forceinline__ float f16_to_f32(unsigned short h) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return f;
}
__device__ __forceinline__ unsigned short f32_to_f16(float f) {
    unsigned short h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));
    return h;
}
__device__ __forceinline__ unsigned short f32_to_bf16(float f) {
    unsigned short h;
    asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(h) : "f"(f));
    return h;
}
#else
// The host emulator's conversions (cuda_shim.h).
inline float f16_to_f32(unsigned short h) { return emu_f16_to_f32(h); }
inline unsigned short f32_to_f16(float f) { return emu_f32_to_f16(f); }
inline unsigned short f32_to_bf16(float f) { return emu_f32_to_bf16(f); }
#endif
__device__ __forceinline__ float bf16_to_f32(unsigned short h) { return __int_as_float((int)((unsigned)h << 16)); }

struct F32 {
    typedef float T;
    static __device__ __forceinline__ float load(const float* p, int i) { return p[i]; }
    static __device__ __forceinline__ void store(float* p, int i, float v) { p[i] = v; }
    // Patches packed in this type take frog-core's threshold.
    static __device__ __forceinline__ float safe_max() { return SQUARE_SAFE_MAX; }
};
struct Bf16 {
    typedef unsigned short T;
    static __device__ __forceinline__ float load(const unsigned short* p, int i) { return bf16_to_f32(p[i]); }
    static __device__ __forceinline__ void store(unsigned short* p, int i, float v) { p[i] = f32_to_bf16(v); }
    static __device__ __forceinline__ float safe_max() { return SQUARE_SAFE_MAX; }
};
struct F16 {
    typedef unsigned short T;
    static __device__ __forceinline__ float load(const unsigned short* p, int i) { return f16_to_f32(p[i]); }
    static __device__ __forceinline__ void store(unsigned short* p, int i, float v) { p[i] = f32_to_f16(v); }
    // Patches packed in f16 are scaled above f16's largest finite value:
    // f32 inputs in (65504, 65536], within frog-core's threshold, would
    // round to 65504 or (from 65520) to infinity. f16 inputs never exceed
    // it, so they take the patches of every other precision.
    static __device__ __forceinline__ float safe_max() { return F16_MAX; }
};

// ---------------------------------------------------------------------------
// Elementwise

// y = a*x + b*y over n entries; with b == 0, y is not read.
extern "C" __global__ void axpby(int n, float a, const float* __restrict__ x, float b, float* __restrict__ y) {
    for (long long e64 = grid_first(); e64 < n; e64 += grid_stride()) {
        int e = (int)e64;
        y[e] = (b == 0.0f) ? a * x[e] : fmaf(a, x[e], b * y[e]);
    }
}

// y = v over n entries.
extern "C" __global__ void fill(int n, float v, float* __restrict__ y) {
    for (long long e64 = grid_first(); e64 < n; e64 += grid_stride()) {
        int e = (int)e64;
        y[e] = v;
    }
}

// a *= b over n entries.
extern "C" __global__ void mul_assign(int n, float* __restrict__ a, const float* __restrict__ b) {
    for (long long e64 = grid_first(); e64 < n; e64 += grid_stride()) {
        int e = (int)e64;
        a[e] *= b[e];
    }
}

// One AdamW update of n entries in PyTorch's order (frog-core's
// AdamBackend): decoupled decay, both moments (v saturating), amsgrad's running maximum
// (vmax may be null: amsgrad off), the bias-corrected step.
extern "C" __global__ void adamw_update(int n, float decay, float one_minus_beta1, float beta2, float one_minus_beta2,
                                        float step_size, float bias_correction2_sqrt, float eps, float* __restrict__ p,
                                        const float* __restrict__ g, float* __restrict__ m, float* __restrict__ v,
                                        float* __restrict__ vmax) {
    for (long long e64 = grid_first(); e64 < n; e64 += grid_stride()) {
        int e = (int)e64;
        float ge = g[e];
        // PyTorch's lerp, unless ge - m overflows (opposite signs near the
        // maximum): then the same convex combination, clamped to finite.
        float d = ge - m[e];
        float me = fabsf(d) <= F32_MAX ? m[e] + one_minus_beta1 * d
                                       : fminf(fmaxf(m[e] - one_minus_beta1 * m[e] + one_minus_beta1 * ge, -F32_MAX), F32_MAX);
        // Saturates at F32_MAX (frog-core's AdamBackend contract): a gradient
        // whose square overflows keeps a finite state and a moving parameter.
        float ve = fminf(beta2 * v[e] + one_minus_beta2 * ge * ge, F32_MAX);
        m[e] = me;
        v[e] = ve;
        float second = ve;
        if (vmax != nullptr) {
            second = fmaxf(vmax[e], ve);
            vmax[e] = second;
        }
        p[e] = p[e] * decay - step_size * me / (sqrtf(second) / bias_correction2_sqrt + eps);
    }
}

// dst[d_off + j*d_stride + c] = src[s_off + j*s_stride + c].
extern "C" __global__ void copy_strided(int rows, int cols, const float* __restrict__ src, int s_stride, int s_off,
                                        float* __restrict__ dst, int d_stride, int d_off) {
    int total = rows * cols;
    for (long long e64 = grid_first(); e64 < total; e64 += grid_stride()) {
        int e = (int)e64;
        int j = e / cols, c = e - j * cols;
        dst[d_off + j * d_stride + c] = src[s_off + j * s_stride + c];
    }
}

// ---------------------------------------------------------------------------
// Row-wise with per-row scalars in buffers

// out[j] = <a_j, b_j>; one block per row.
extern "C" __global__ void row_dots(int rows, int cols, const float* __restrict__ a, const float* __restrict__ b,
                                    float* __restrict__ out) {
    __shared__ float scratch[BLOCK / 32 + 1];
    int j = blockIdx.x;
    if (j >= rows) return;
    const float* aj = a + j * cols;
    const float* bj = b + j * cols;
    float acc = 0.0f;
    for (unsigned c = threadIdx.x; c < (unsigned)cols; c += BLOCK) acc = fmaf(aj[c], bj[c], acc);
    acc = block_sum(acc, scratch);
    if (threadIdx.x == 0) out[j] = acc;
}

// K-FROG: out[j] = min(scale * sum_{i,l} Y[i,j,l]^2, F32_MAX) over r
// samples of `per` entries each (PyTorch layout: row j, position l at
// j*row_stride + l*pos_stride); one block per row.
extern "C" __global__ void y_sq_sums(int rows, int r, int positions, int per, int row_stride, int pos_stride, float scale,
                                     const float* __restrict__ y, float* __restrict__ out) {
    __shared__ float scratch[BLOCK / 32 + 1];
    int j = blockIdx.x;
    if (j >= rows) return;
    long long total = (long long)r * positions;
    float acc = 0.0f;
    for (long long e = threadIdx.x; e < total; e += BLOCK) {
        long long i = e / positions, l = e - i * positions;
        float v = y[i * per + (long long)j * row_stride + l * pos_stride];
        acc = fmaf(v, v, acc);
    }
    acc = block_sum(acc, scratch);
    if (threadIdx.x == 0) out[j] = fminf(scale * acc, F32_MAX);
}

// K-FROG's running average of diag(Y^T Y): avg = min(fresh*y + keep*avg,
// F32_MAX) over n entries (axpby's order of operations), saturating so
// that the state stays finite.
extern "C" __global__ void y_average(int n, float fresh, const float* __restrict__ y, float keep, float* __restrict__ avg) {
    for (long long e64 = grid_first(); e64 < n; e64 += grid_stride()) {
        int e = (int)e64;
        avg[e] = fminf(fmaf(fresh, y[e], keep * avg[e]), F32_MAX);
    }
}

// K-FROG: out[c] = sqrt(scale * sum_n X[n][c]^2) over the packed [n, cols]
// patch matrix of type P (16-bit in the 16-bit product modes); one block per
// column.
template <typename P>
__device__ __forceinline__ void patch_col_norms_t(int n, int cols, float scale, const typename P::T* __restrict__ packed,
                                                  float* __restrict__ out) {
    __shared__ float scratch[BLOCK / 32 + 1];
    int c = blockIdx.x;
    if (c >= cols) return;
    float acc = 0.0f;
    for (long long k = threadIdx.x; k < n; k += BLOCK) {
        float v = P::load(packed, (int)(k * cols + c));  // n * cols fits an int (checked on the host)
        acc = fmaf(v, v, acc);
    }
    acc = block_sum(acc, scratch);
    if (threadIdx.x == 0) out[c] = sqrtf(scale * acc);
}

#define COL_NORMS_ENTRY(suffix, P)                                                                              \
    extern "C" __global__ void patch_col_norms##suffix(int n, int cols, float scale, const P::T* __restrict__ packed, \
                                                       float* __restrict__ out) {                               \
        patch_col_norms_t<P>(n, cols, scale, packed, out);                                                      \
    }

COL_NORMS_ENTRY(, F32)
COL_NORMS_ENTRY(_bf16, Bf16)
COL_NORMS_ENTRY(_f16, F16)

// out[j] = num[j] / (den[j] + eps)
extern "C" __global__ void row_div(int rows, const float* __restrict__ num, const float* __restrict__ den, float eps,
                                   float* __restrict__ out) {
    for (long long j64 = grid_first(); j64 < rows; j64 += grid_stride()) {
        int j = (int)j64;
        out[j] = num[j] / (den[j] + eps);
    }
}

// out[j] = 1 / sqrt(x[j] + eps)  (correctly rounded sqrt and division)
extern "C" __global__ void row_rsqrt(int rows, const float* __restrict__ x, float eps, float* __restrict__ out) {
    for (long long j64 = grid_first(); j64 < rows; j64 += grid_stride()) {
        int j = (int)j64;
        out[j] = 1.0f / sqrtf(x[j] + eps);
    }
}

// y_j += a * coef[j] * x_j
extern "C" __global__ void row_axpy(int rows, int cols, float a, const float* __restrict__ coef,
                                    const float* __restrict__ x, float* __restrict__ y) {
    int total = rows * cols;
    for (long long e64 = grid_first(); e64 < total; e64 += grid_stride()) {
        int e = (int)e64;
        int j = e / cols;
        y[e] = fmaf(a * coef[j], x[e], y[e]);
    }
}

// y_j = x_j + coef[j] * y_j
extern "C" __global__ void row_xpby(int rows, int cols, const float* __restrict__ x, const float* __restrict__ coef,
                                    float* __restrict__ y) {
    int total = rows * cols;
    for (long long e64 = grid_first(); e64 < total; e64 += grid_stride()) {
        int e = (int)e64;
        int j = e / cols;
        y[e] = fmaf(coef[j], y[e], x[e]);
    }
}

// w_j = decay * w_j - lr * scale[j] * z[z_off + j*z_stride + c]
extern "C" __global__ void row_step(int rows, int cols, float* __restrict__ w, float decay, float lr,
                                    const float* __restrict__ scale, const float* __restrict__ z, int z_stride,
                                    int z_off) {
    int total = rows * cols;
    for (long long e64 = grid_first(); e64 < total; e64 += grid_stride()) {
        int e = (int)e64;
        int j = e / cols, c = e - j * cols;
        w[e] = fmaf(-lr * scale[j], z[z_off + j * z_stride + c], decay * w[e]);
    }
}

// One fused batched-CG iteration after Ap = A(Pd), one block per row:
//   pap = <Pd,Ap>; alpha = rho/(pap+eps); Z += alpha Pd; Rs -= alpha Ap;
//   rho' = <Rs,Rs>; beta = rho'/(rho+eps); Pd = Rs + beta Pd; rho = rho'.
extern "C" __global__ void cg_update(int rows, int cols, float eps, float* __restrict__ rho,
                                     const float* __restrict__ ap, float* __restrict__ pd, float* __restrict__ z,
                                     float* __restrict__ rs) {
    __shared__ float scratch[BLOCK / 32 + 1];
    int j = blockIdx.x;
    if (j >= rows) return;
    int base = j * cols;
    float acc = 0.0f;
    for (unsigned c = threadIdx.x; c < (unsigned)cols; c += BLOCK) acc = fmaf(pd[base + c], ap[base + c], acc);
    float pap = block_sum(acc, scratch);
    float rho_old = rho[j];
    float alpha = rho_old / (pap + eps);
    acc = 0.0f;
    for (unsigned c = threadIdx.x; c < (unsigned)cols; c += BLOCK) {
        float p = pd[base + c];
        z[base + c] = fmaf(alpha, p, z[base + c]);
        float r = fmaf(-alpha, ap[base + c], rs[base + c]);
        rs[base + c] = r;
        acc = fmaf(r, r, acc);
    }
    float rho_new = block_sum(acc, scratch);
    float beta = rho_new / (rho_old + eps);
    for (unsigned c = threadIdx.x; c < (unsigned)cols; c += BLOCK) pd[base + c] = fmaf(beta, pd[base + c], rs[base + c]);
    if (threadIdx.x == 0) rho[j] = rho_new;
}

// ---------------------------------------------------------------------------
// Patches
//
// The step's patches are those of c * x, c the pow2_gain of the largest |x|
// of the sampled inputs (frog-core's Backend::pack_patches): 1, so exactly
// x's, unless their products could overflow. The gain slot, two f32 words
// after the packed patches, holds [0] that largest |x| (input_abs_max),
// [1] the gain the pack kernels applied (read back by K-FROG).

// slot_max = max(slot_max, largest |x[e]| for e < n), NaN entries skipped
// (as block_max and frog-cpu skip them); the host zeroes it first. The
// maximum is non-negative, and non-negative floats order as their bits do
// as unsigned integers, so atomicMax on the bits finds it.
template <typename In>
__device__ __forceinline__ void input_abs_max_t(int n, const typename In::T* __restrict__ x, unsigned* __restrict__ slot_max) {
    __shared__ float scratch[BLOCK / 32 + 1];
    float m = 0.0f;
    for (long long e64 = grid_first(); e64 < n; e64 += grid_stride()) m = fmaxf(m, fabsf(In::load(x, (int)e64)));
    m = block_max(m, scratch);
    if (threadIdx.x == 0) atomicMax(slot_max, (unsigned)__float_as_int(m));
}

#define ABS_MAX_ENTRY(suffix, In)                                                                                \
    extern "C" __global__ void input_abs_max##suffix(int n, const In::T* __restrict__ x, unsigned* __restrict__ slot_max) { \
        input_abs_max_t<In>(n, x, slot_max);                                                                     \
    }

ABS_MAX_ENTRY(, F32)
ABS_MAX_ENTRY(_bf16, Bf16)
ABS_MAX_ENTRY(_f16, F16)

// The gain of patches packed in Out from the gain slot after input_abs_max,
// written to its second word by one thread; 1 without a slot (null: the
// convolutions of nn.cu's callers, which pack plain im2col rows).
template <typename Out>
__device__ __forceinline__ float slot_gain(float* __restrict__ slot) {
    if (slot == nullptr) return 1.0f;
    float g = pow2_gain(slot[0], Out::safe_max());
    if (grid_first() == 0) slot[1] = g;
    return g;
}

// im2col: packed[n*cols + c] for n = i*L + l (l = oy*Wo + ox) and
// c = (ci*kh + ky)*kw + kx, zeros under padding, and 1 at c == D with a bias,
// every entry times the slot's gain; x of type In, packed of type Out (a
// 16-bit product mode packs 16-bit).
template <typename In, typename Out>
__device__ __forceinline__ void im2col_t(int r, int c_in, int h, int w, int kh, int kw, int sh, int sw, int ph,
                                         int pw, int dh, int dw, int ho, int wo, int cols,
                                         const typename In::T* __restrict__ x, typename Out::T* __restrict__ packed,
                                         float* __restrict__ slot) {
    float g = slot_gain<Out>(slot);
    int l_per = ho * wo;
    int d = c_in * kh * kw;
    int total = r * l_per * cols;
    for (long long e64 = grid_first(); e64 < total; e64 += grid_stride()) {
        int e = (int)e64;
        int n = e / cols, c = e - n * cols;
        float v;
        if (c >= d) {
            v = g;
        } else {
            int i = n / l_per, l = n - i * l_per;
            int oy = l / wo, ox = l - oy * wo;
            int ci = c / (kh * kw), rem = c - ci * (kh * kw);
            int ky = rem / kw, kx = rem - ky * kw;
            int iy = oy * sh - ph + ky * dh, ix = ox * sw - pw + kx * dw;
            v = (iy >= 0 && iy < h && ix >= 0 && ix < w) ? In::load(x, ((i * c_in + ci) * h + iy) * w + ix) * g : 0.0f;
        }
        Out::store(packed, e, v);
    }
}

// Linear layers: packed[n*cols + c] = x[n*d + c], 1 in the bias column,
// every entry times the slot's gain.
template <typename In, typename Out>
__device__ __forceinline__ void pack_rows_t(int n_rows, int d, int cols, const typename In::T* __restrict__ x,
                                            typename Out::T* __restrict__ packed, float* __restrict__ slot) {
    float g = slot_gain<Out>(slot);
    int total = n_rows * cols;
    for (long long e64 = grid_first(); e64 < total; e64 += grid_stride()) {
        int e = (int)e64;
        int n = e / cols, c = e - n * cols;
        Out::store(packed, e, c < d ? In::load(x, n * d + c) * g : g);
    }
}

// One entry per (input type, packed type); `slot` is the gain slot, or null.
#define PACK_ENTRIES(suffix, In, Out)                                                                              \
    extern "C" __global__ void im2col##suffix(int r, int c_in, int h, int w, int kh, int kw, int sh, int sw, int ph, \
                                              int pw, int dh, int dw, int ho, int wo, int cols,                      \
                                              const In::T* __restrict__ x, Out::T* __restrict__ packed,            \
                                              float* __restrict__ slot) {                                          \
        im2col_t<In, Out>(r, c_in, h, w, kh, kw, sh, sw, ph, pw, dh, dw, ho, wo, cols, x, packed, slot);           \
    }                                                                                                              \
    extern "C" __global__ void pack_rows##suffix(int n_rows, int d, int cols, const In::T* __restrict__ x,          \
                                                 Out::T* __restrict__ packed, float* __restrict__ slot) {          \
        pack_rows_t<In, Out>(n_rows, d, cols, x, packed, slot);                                                    \
    }

PACK_ENTRIES(, F32, F32)
PACK_ENTRIES(_bf16, Bf16, F32)
PACK_ENTRIES(_f16, F16, F32)
// The 16-bit product modes' patches: f32 inputs rounded, 16-bit ones copied.
PACK_ENTRIES(_f32_bf16, F32, Bf16)
PACK_ENTRIES(_f32_f16, F32, F16)
PACK_ENTRIES(_bf16_bf16, Bf16, Bf16)
PACK_ENTRIES(_f16_f16, F16, F16)

// norms[n] = ||packed[n, :]||^2; one warp per row; packed of type P.
template <typename P>
__device__ __forceinline__ void patch_sq_norms_t(int n_rows, int cols, const typename P::T* __restrict__ packed,
                                                 float* __restrict__ norms) {
    const int warps = BLOCK / 32;
    int lane = threadIdx.x & 31;
    for (long long n64 = (long long)blockIdx.x * warps + (threadIdx.x >> 5); n64 < n_rows;
         n64 += (long long)gridDim.x * warps) {
        int n = (int)n64;
        float acc = 0.0f;
        for (unsigned c = lane; c < (unsigned)cols; c += 32) {
            float v = P::load(packed, n * cols + (int)c);
            acc = fmaf(v, v, acc);
        }
        acc = warp_sum(acc);
        if (lane == 0) norms[n] = acc;
    }
}

#define NORMS_ENTRY(suffix, P)                                                                             \
    extern "C" __global__ void patch_sq_norms##suffix(int n_rows, int cols, const P::T* __restrict__ packed, \
                                                      float* __restrict__ norms) {                         \
        patch_sq_norms_t<P>(n_rows, cols, packed, norms);                                                  \
    }

NORMS_ENTRY(, F32)
NORMS_ENTRY(_bf16, Bf16)
NORMS_ENTRY(_f16, F16)

// One block per row j, y in PyTorch layout: Y[i, j, l] = y[i*R*L + j*sj + l*sl]
// ((sj, sl) = (L, 1) for a conv's [R, Ho, Wo], (1, R) for tokens [T, R]):
//   Q = scale*(g*y)^2; trace[j] = sum_n Q*norms[n] / D'; lambda[j*N + n] = Q/(trace[j]+eps),
// with g the row's pow2_gain (1, so exactly the original's formula, unless
// the row's squares could overflow).
// y of type In (bf16 reaches 3.4e38, so its rows need the gain in f32 too).
template <typename In>
__device__ __forceinline__ void fisher_weights_t(int r, int rows, int l_per, int sj, int sl, float d_cols,
                                                 const typename In::T* __restrict__ y,
                                                 const float* __restrict__ norms, float scale, float eps,
                                                 float* __restrict__ trace, float* __restrict__ lambda) {
    __shared__ float scratch[BLOCK / 32 + 1];
    int j = blockIdx.x;
    if (j >= rows) return;
    int n_pos = r * l_per;
    float max_abs = 0.0f;
    for (unsigned n = threadIdx.x; n < (unsigned)n_pos; n += BLOCK) {
        int i = n / l_per, l = n - i * l_per;
        max_abs = fmaxf(max_abs, fabsf(In::load(y, i * rows * l_per + j * sj + l * sl)));
    }
    float gain = pow2_gain(block_max(max_abs, scratch), SQUARE_SAFE_MAX);
    float acc = 0.0f;
    for (unsigned n = threadIdx.x; n < (unsigned)n_pos; n += BLOCK) {
        int i = n / l_per, l = n - i * l_per;
        float v = In::load(y, i * rows * l_per + j * sj + l * sl) * gain;
        acc = fmaf(scale * (v * v), norms[n], acc);
    }
    float t = block_sum(acc, scratch) / d_cols;
    if (threadIdx.x == 0) trace[j] = t;
    float den = t + eps;
    float* lj = lambda + j * n_pos;
    for (unsigned n = threadIdx.x; n < (unsigned)n_pos; n += BLOCK) {
        int i = n / l_per, l = n - i * l_per;
        float v = In::load(y, i * rows * l_per + j * sj + l * sl) * gain;
        lj[n] = (scale * (v * v)) / den;
    }
}

#define FISHER_ENTRY(suffix, In)                                                                             \
    extern "C" __global__ void fisher_weights##suffix(int r, int rows, int l_per, int sj, int sl, float d_cols,  \
                                                      const In::T* __restrict__ y,                               \
                                                      const float* __restrict__ norms, float scale, float eps,   \
                                                      float* __restrict__ trace, float* __restrict__ lambda) {   \
        fisher_weights_t<In>(r, rows, l_per, sj, sl, d_cols, y, norms, scale, eps, trace, lambda);               \
    }

FISHER_ENTRY(, F32)
FISHER_ENTRY(_bf16, Bf16)
FISHER_ENTRY(_f16, F16)

// out[0] += the number of infinite or NaN entries of v[0..n) (out[0] zeroed
// first by the host): the opt-in overflow check of 16-bit output gradients.
// Exact up to 2^24 entries per block's count; the sum of counts is a float.
template <typename In>
__device__ __forceinline__ void count_nonfinite_t(int n, const typename In::T* __restrict__ v, float* __restrict__ out) {
    __shared__ float scratch[BLOCK / 32 + 1];
    float bad = 0.0f;
    for (long long e64 = grid_first(); e64 < n; e64 += grid_stride()) bad += isfinite(In::load(v, (int)e64)) ? 0.0f : 1.0f;
    bad = block_sum(bad, scratch);
    if (threadIdx.x == 0 && bad > 0.0f) atomicAdd(out, bad);
}

extern "C" __global__ void count_nonfinite_bf16(int n, const unsigned short* __restrict__ v, float* __restrict__ out) {
    count_nonfinite_t<Bf16>(n, v, out);
}
extern "C" __global__ void count_nonfinite_f16(int n, const unsigned short* __restrict__ v, float* __restrict__ out) {
    count_nonfinite_t<F16>(n, v, out);
}

// One block per row of the rows x cols right-hand side v: a row whose
// largest |v| exceeds SQUARE_SAFE_MAX is multiplied by its pow2_gain.
extern "C" __global__ void row_rescale(int rows, int cols, float* __restrict__ v) {
    __shared__ float scratch[BLOCK / 32 + 1];
    int j = blockIdx.x;
    if (j >= rows) return;
    float* vj = v + (long long)j * cols;
    float max_abs = 0.0f;
    for (unsigned c = threadIdx.x; c < (unsigned)cols; c += BLOCK) max_abs = fmaxf(max_abs, fabsf(vj[c]));
    float gain = pow2_gain(block_max(max_abs, scratch), SQUARE_SAFE_MAX);
    if (gain != 1.0f) {
        for (unsigned c = threadIdx.x; c < (unsigned)cols; c += BLOCK) vj[c] *= gain;
    }
}

// The opt-in guard, one block per row (see frog_core::GuardBackend):
// flags[j] = 1 (z_j or row_scale[j] not finite) + 2 (trace[j] == 0) + 4
// (replaced). A replaced row takes z_j = m_j, row_scale[j] = 1/||m_j||
// (the norm scaled by the row's largest |m|, so it cannot overflow), or
// z_j = 0, row_scale[j] = 0 when m_j is zero or not finite.
extern "C" __global__ void row_guard(int rows, int cols, int fix_nonfinite, int fix_dead,
                                     const float* __restrict__ m, const float* __restrict__ trace,
                                     float* __restrict__ z, float* __restrict__ row_scale, float* __restrict__ flags) {
    __shared__ float scratch[BLOCK / 32 + 1];
    int j = blockIdx.x;
    if (j >= rows) return;
    const float* mj = m + (long long)j * cols;
    float* zj = z + (long long)j * cols;
    float bad_z = 0.0f, bad_m = 0.0f, max_m = 0.0f;
    for (unsigned c = threadIdx.x; c < (unsigned)cols; c += BLOCK) {
        bad_z += isfinite(zj[c]) ? 0.0f : 1.0f;
        bad_m += isfinite(mj[c]) ? 0.0f : 1.0f;
        max_m = fmaxf(max_m, fabsf(mj[c]));
    }
    bad_z = block_sum(bad_z, scratch);
    bad_m = block_sum(bad_m, scratch);
    max_m = block_max(max_m, scratch);
    int nonfinite = bad_z > 0.0f || !isfinite(row_scale[j]);
    int dead = trace[j] == 0.0f;
    int replace = (nonfinite && fix_nonfinite) || (dead && fix_dead);
    if (replace) {
        int usable = bad_m == 0.0f && max_m > 0.0f;
        float ss = 0.0f;
        for (unsigned c = threadIdx.x; c < (unsigned)cols; c += BLOCK) {
            float t = usable ? mj[c] / max_m : 0.0f;
            ss = fmaf(t, t, ss);
            zj[c] = usable ? mj[c] : 0.0f;
        }
        ss = block_sum(ss, scratch);
        if (threadIdx.x == 0) row_scale[j] = usable ? (1.0f / max_m) / sqrtf(ss) : 0.0f;
    }
    if (threadIdx.x == 0) flags[j] = (float)(nonfinite * 1 + dead * 2 + replace * 4);
}

// ---------------------------------------------------------------------------
// Muon (frog-core's MatmulBackend): the Frobenius norm and the scaling by it,
// in f32, and the elementwise steps of the bfloat16 Newton-Schulz iteration
// (torch's arithmetic on bf16 tensors, held widened in f32 buffers).

// out[0] = ||x[0..n)||_F; one block, so the sum's order is fixed (no atomics).
// The plain sum of squares (the references' arithmetic); only where it
// overflows, or underflows to zero with a nonzero entry, a second pass sums
// the squares of x / max|x| and multiplies back (frog-cpu's rule), so a
// finite norm comes out finite.
extern "C" __global__ void frobenius_norm(int n, const float* __restrict__ x, float* __restrict__ out) {
    __shared__ float scratch[BLOCK / 32 + 1];
    float sq = 0.0f, big = 0.0f;
    for (unsigned e = threadIdx.x; e < (unsigned)n; e += BLOCK) {
        float v = x[e];
        sq = fmaf(v, v, sq);
        big = fmaxf(big, fabsf(v));
    }
    sq = block_sum(sq, scratch);
    big = block_max(big, scratch);  // every thread has both: the branch below is block-wide
    float norm;
    if ((isfinite(sq) && (sq > 0.0f || big == 0.0f)) || !isfinite(big)) {
        norm = sqrtf(sq);
    } else {
        float acc = 0.0f;
        for (unsigned e = threadIdx.x; e < (unsigned)n; e += BLOCK) {
            float t = x[e] / big;
            acc = fmaf(t, t, acc);
        }
        norm = big * sqrtf(block_sum(acc, scratch));
    }
    if (threadIdx.x == 0) out[0] = norm;
}

// x *= num / (norm[0] + eps) over n entries (the factor formed once per
// thread, as the host forms it); a zero denominator (an all-zero x's norm
// with eps = 0) leaves x unchanged, where the references would give NaN.
extern "C" __global__ void scale_by_norm(int n, const float* __restrict__ norm, float num, float eps, float* __restrict__ x) {
    float den = norm[0] + eps;
    if (den == 0.0f) return;
    float f = num / den;
    for (long long e64 = grid_first(); e64 < n; e64 += grid_stride()) {
        int e = (int)e64;
        x[e] *= f;
    }
}

// v rounded to bfloat16 (nearest even), widened back: torch's cast, and the
// rounding of every bf16 tensor op's f32 result.
__device__ __forceinline__ float bf16r(float v) { return bf16_to_f32(f32_to_bf16(v)); }

// x = bf16(x) over n entries.
extern "C" __global__ void round_bf16(int n, float* __restrict__ x) {
    for (long long e64 = grid_first(); e64 < n; e64 += grid_stride()) {
        int e = (int)e64;
        x[e] = bf16r(x[e]);
    }
}

// y = bf16(bf16(a*x) + bf16(b*y)) over n entries: torch's `a * x + b * y` on
// bf16 tensors (each scalar product in f32, rounded, then the sum, rounded;
// a factor 1 on a bf16 value is exact); with b == 0, y = bf16(a*x) and y is
// not read.
extern "C" __global__ void axpby_bf16(int n, float a, const float* __restrict__ x, float b, float* __restrict__ y) {
    for (long long e64 = grid_first(); e64 < n; e64 += grid_stride()) {
        int e = (int)e64;
        float ax = bf16r(a * x[e]);
        y[e] = (b == 0.0f) ? ax : bf16r(ax + bf16r(b * y[e]));
    }
}

// x = bf16(x / bf16(bf16(norm[0]) + eps)) over n entries of a bf16-valued x
// whose f32 norm is norm[0]: torch's `X / (X.norm() + eps)` on a bf16 X
// (the norm accumulated in f32 and returned in bf16, the sum and the
// quotient rounded); a zero denominator leaves x unchanged.
extern "C" __global__ void scale_by_norm_bf16(int n, const float* __restrict__ norm, float eps, float* __restrict__ x) {
    float den = bf16r(bf16r(norm[0]) + eps);
    if (den == 0.0f) return;
    for (long long e64 = grid_first(); e64 < n; e64 += grid_stride()) {
        int e = (int)e64;
        x[e] = bf16r(x[e] / den);
    }
}

// ---------------------------------------------------------------------------
// GEMM: C[m, n] (op)= sum_k A(m, k) * B(k, n), with A(m, k) = A[m*sam + k*sak]
// and B(k, n) = B[k*sbk + n*sbn] (either operand transposed through its
// strides). Grid: x over N tiles, y over M tiles, z over K chunks of
// `kchunk` entries. Epilogue `mode`: 0 store, 1 store times S[m*ldc + n]
// (the Fisher weights), 2 atomicAdd (split-K accumulation into a
// pre-initialized C).
//
// One block computes a T x T tile (T = 64 or 128, the host picks per
// problem) over BK-deep slices of K. Each slice is read from global memory
// into registers while the block computes on the previous one, then stored
// k-major (columns swizzled, see swz) into the other of two shared-memory
// buffers, so one barrier per slice suffices and the loads' latency hides
// behind the arithmetic.

// The staging stores (the emulator counts their bank conflicts).
#ifndef FROG_HOST_EMULATION
#define SHARED_STORE(dst, v) ((dst) = (v))
#endif

#define BK 16
#define PAD 8  // row pitch T + 8: the mma fragment reads (t*pitch + g) hit 32 distinct banks

// A staged slice holds entry (kk, ii) in column swz(kk, ii): ii with bits 1-2
// XORed with kk / 4, a permutation within each aligned group of 8 columns.
// Staging a K-contiguous operand, a warp stores 16 kk times 2 ii; at pitch
// T + 8 the bank is 8*kk + ii (mod 32) unswizzled, 8 banks for 32 stores (4
// ways), and 32 distinct banks swizzled. A warp storing an I-contiguous
// operand (one kk, 32 consecutive ii) and the readers (one kk / 4 per
// instruction) keep 32 distinct banks or broadcasts. As the XOR stays within
// bits 0-2 (0-3 for the FMA tile's 16), swz(kk, base + ii) = base + swz(kk, ii)
// for a base that is a multiple of 8 (16) and ii below it: the readers
// swizzle their lane's offset once and keep constant offsets for the rest.
__device__ __forceinline__ int swz(int kk, int ii) { return ii ^ ((kk >> 1) & 6); }

// Arithmetic of the products.
#define ARITH_F32 0    // f32 FMA
#define ARITH_TF32 1   // TF32 mma.sync, f32 accumulation
#define ARITH_3XTF32 2 // 3xTF32 mma.sync: close to f32 accuracy
// The 16-bit modes: B (the packed patches) is bf16 or f16, exact; A (the
// direction, or the scaled projections) is f32 and converted per product.
#define ARITH_BF16X2 3 // A = hi + lo, both bf16: two m16n8k16 mma, ~16-bit A
#define ARITH_BF16 4   // A rounded once to bf16: one mma, 8-bit A
#define ARITH_F16 5    // A's rows scaled by a power of two, rounded once to f16: 11-bit A

// One operand's T x BK slice in flight: LOADS entries per thread. With
// s_k == 1 consecutive threads read consecutive k (rows of BK contiguous
// entries), otherwise consecutive i.
template <int T>
struct Slice {
    static constexpr int LOADS = T * BK / BLOCK;
    float v[LOADS];

    __device__ __forceinline__ static void place(int e, int s_k, int& ii, int& kk) {
        if (s_k == 1) {
            kk = e % BK;
            ii = e / BK;
        } else {
            ii = e % T;
            kk = e / T;
        }
    }

    // Operand entries of type El, widened to f32 (exactly, for 16-bit ones).
    template <typename El>
    __device__ __forceinline__ void fetch(const typename El::T* __restrict__ src, int extent, int i0, int k0, int kend,
                                          int s_i, int s_k) {
#pragma unroll
        for (int p = 0; p < LOADS; p++) {
            int ii, kk;
            place(threadIdx.x + p * BLOCK, s_k, ii, kk);
            int i = i0 + ii, k = k0 + kk;
            v[p] = (i < extent && k < kend) ? El::load(src, i * s_i + k * s_k) : 0.0f;
        }
    }

    __device__ __forceinline__ void store(float (*t)[T + PAD], int s_k) const {
#pragma unroll
        for (int p = 0; p < LOADS; p++) {
            int ii, kk;
            place(threadIdx.x + p * BLOCK, s_k, ii, kk);
            SHARED_STORE(t[kk][swz(kk, ii)], v[p]);
        }
    }
};

__device__ __forceinline__ void epilogue(int m, int n, int M, int N, float v, float* __restrict__ c, int ldc,
                                         const float* __restrict__ s, int mode) {
    if (m >= M || n >= N) return;
    int at = m * ldc + n;
    if (mode == 0) {
        c[at] = v;
    } else if (mode == 1) {
        c[at] = v * s[at];
    } else {
        atomicAdd(c + at, v);
    }
}

#ifndef FROG_HOST_EMULATION
// Rounds to TF32 (10-bit mantissa), to nearest with ties away from zero.
__device__ __forceinline__ unsigned to_tf32(float v) {
    unsigned r;
    asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(r) : "f"(v));
    return r;
}

// d += a * b on one m16n8k8 tile (fragments as the PTX ISA lays them out).
__device__ __forceinline__ void mma_tf32(float (&d)[4], const unsigned (&a)[4], const unsigned (&b)[2]) {
    asm volatile(
        "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 "
        "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}
#else
// cvt.rna.tf32.f32 on the host: non-finite values stay as they are (NaN
// stays NaN, as on hardware, so reads of the emulator's NaN-poisoned
// memory show), finite ones round to nearest, ties away from zero.
inline unsigned to_tf32(float v) {
    unsigned u;
    std::memcpy(&u, &v, 4);
    if ((u & 0x7f800000u) == 0x7f800000u) return u;
    return (u + 0x1000u) & 0xffffe000u;
}
inline void mma_tf32(float (&d)[4], const unsigned (&a)[4], const unsigned (&b)[2]) { emu_mma_tf32(d, a, b); }
#endif

// The remainder of v after rounding to TF32, itself rounded to TF32.
__device__ __forceinline__ unsigned tf32_rest(float v, unsigned hi) {
    return to_tf32(v - __int_as_float((int)hi));
}

// f32 FMA on a T x T tile: thread (ty, tx) of a 16 x 16 grid owns the
// outputs (ty + 16i, tx + 16q), so a warp's shared reads are broadcasts (A)
// or 16 consecutive words (B).
// Each tile's prepare() runs once per block before the main loop (only the
// f16 tile has work there: its rows' scales).
struct NoPrepare {
    __device__ __forceinline__ void prepare(const float*, int, int, int, int, int, int) {}
};

template <int T>
struct FmaTile : NoPrepare {
    static constexpr int P = T / 16;
    float acc[P][P];

    __device__ __forceinline__ void zero() {
#pragma unroll
        for (int i = 0; i < P; i++)
#pragma unroll
            for (int q = 0; q < P; q++) acc[i][q] = 0.0f;
    }

    __device__ __forceinline__ void slice(const float (*as)[T + PAD], const float (*bs)[T + PAD]) {
        int tx = threadIdx.x & 15, ty = threadIdx.x >> 4;
#pragma unroll
        for (int kk = 0; kk < BK; kk++) {
            float av[P], bv[P];
#pragma unroll
            for (int i = 0; i < P; i++) av[i] = as[kk][swz(kk, ty) + 16 * i];
#pragma unroll
            for (int q = 0; q < P; q++) bv[q] = bs[kk][swz(kk, tx) + 16 * q];
#pragma unroll
            for (int i = 0; i < P; i++)
#pragma unroll
                for (int q = 0; q < P; q++) acc[i][q] = fmaf(av[i], bv[q], acc[i][q]);
        }
    }

    __device__ __forceinline__ void finish(int m0, int n0, int M, int N, float* __restrict__ c, int ldc,
                                           const float* __restrict__ s, int mode) const {
        int tx = threadIdx.x & 15, ty = threadIdx.x >> 4;
#pragma unroll
        for (int i = 0; i < P; i++)
#pragma unroll
            for (int q = 0; q < P; q++) epilogue(m0 + ty + 16 * i, n0 + tx + 16 * q, M, N, acc[i][q], c, ldc, s, mode);
    }
};

// Tensor cores (mma.sync m16n8k8, f32 accumulation) on a T x T tile: eight
// warps as 2 (M) x 4 (N), each owning (T/2) x (T/4) outputs = MI x NI mma
// tiles. SPLIT = false: TF32. SPLIT = true: 3xTF32, v = hi + lo with both
// parts TF32, a*b ~ a_hi*b_hi + a_hi*b_lo + a_lo*b_hi: close to f32 accuracy
// at three times the tensor-core work.
template <int T, bool SPLIT>
struct MmaTile : NoPrepare {
    static constexpr int MI = T / 32, NI = T / 32;
    float acc[MI][NI][4];

    __device__ __forceinline__ void zero() {
#pragma unroll
        for (int i = 0; i < MI; i++)
#pragma unroll
            for (int q = 0; q < NI; q++)
#pragma unroll
                for (int e = 0; e < 4; e++) acc[i][q][e] = 0.0f;
    }

    __device__ __forceinline__ void slice(const float (*as)[T + PAD], const float (*bs)[T + PAD]) {
        int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
        int g = lane >> 2, t = lane & 3;
        int wm = (warp & 1) * (T / 2), wn = (warp >> 1) * (T / 4);
#pragma unroll
        for (int ks = 0; ks < BK; ks += 8) {
            float av[MI][4], bv[NI][2];
            unsigned af[MI][4], bf[NI][2];
#pragma unroll
            for (int i = 0; i < MI; i++) {
                int mm = wm + i * 16;
                av[i][0] = as[ks + t][mm + swz(ks + t, g)];
                av[i][1] = as[ks + t][mm + 8 + swz(ks + t, g)];
                av[i][2] = as[ks + t + 4][mm + swz(ks + t + 4, g)];
                av[i][3] = as[ks + t + 4][mm + 8 + swz(ks + t + 4, g)];
#pragma unroll
                for (int e = 0; e < 4; e++) af[i][e] = to_tf32(av[i][e]);
            }
#pragma unroll
            for (int q = 0; q < NI; q++) {
                int nn = wn + q * 8;
                bv[q][0] = bs[ks + t][nn + swz(ks + t, g)];
                bv[q][1] = bs[ks + t + 4][nn + swz(ks + t + 4, g)];
#pragma unroll
                for (int e = 0; e < 2; e++) bf[q][e] = to_tf32(bv[q][e]);
            }
            if (SPLIT) {
                unsigned bl[NI][2];
#pragma unroll
                for (int q = 0; q < NI; q++)
#pragma unroll
                    for (int e = 0; e < 2; e++) bl[q][e] = tf32_rest(bv[q][e], bf[q][e]);
#pragma unroll
                for (int i = 0; i < MI; i++) {
                    unsigned al[4];
#pragma unroll
                    for (int e = 0; e < 4; e++) al[e] = tf32_rest(av[i][e], af[i][e]);
#pragma unroll
                    for (int q = 0; q < NI; q++) {
                        mma_tf32(acc[i][q], al, bf[q]);
                        mma_tf32(acc[i][q], af[i], bl[q]);
                    }
                }
            }
#pragma unroll
            for (int i = 0; i < MI; i++)
#pragma unroll
                for (int q = 0; q < NI; q++) mma_tf32(acc[i][q], af[i], bf[q]);
        }
    }

    __device__ __forceinline__ void finish(int m0, int n0, int M, int N, float* __restrict__ c, int ldc,
                                           const float* __restrict__ s, int mode) const {
        int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
        int g = lane >> 2, t = lane & 3;
        int wm = (warp & 1) * (T / 2), wn = (warp >> 1) * (T / 4);
#pragma unroll
        for (int i = 0; i < MI; i++)
#pragma unroll
            for (int q = 0; q < NI; q++) {
                int mm = m0 + wm + i * 16 + g, nn = n0 + wn + q * 8 + 2 * t;
                epilogue(mm, nn, M, N, acc[i][q][0], c, ldc, s, mode);
                epilogue(mm, nn + 1, M, N, acc[i][q][1], c, ldc, s, mode);
                epilogue(mm + 8, nn, M, N, acc[i][q][2], c, ldc, s, mode);
                epilogue(mm + 8, nn + 1, M, N, acc[i][q][3], c, ldc, s, mode);
            }
    }
};

#ifndef FROG_HOST_EMULATION
// d += a * b on one m16n8k16 tile, bf16 or f16 inputs, f32 accumulation
// (fragments as the PTX ISA lays them out, two 16-bit values a register,
// the lower k in the lower half).
template <bool BF16>
__device__ __forceinline__ void mma_k16(float (&d)[4], const unsigned (&a)[4], const unsigned (&b)[2]) {
    if (BF16) {
        asm volatile(
            "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
            "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
            : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
            : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
    } else {
        asm volatile(
            "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 "
            "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
            : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
            : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
    }
}
#else
template <bool BF16>
inline void mma_k16(float (&d)[4], const unsigned (&a)[4], const unsigned (&b)[2]) { emu_mma_k16(d, a, b, BF16); }
#endif

// Two 16-bit values in one register, `lo` in the lower half.
__device__ __forceinline__ unsigned pack2(unsigned short lo, unsigned short hi) { return (unsigned)lo | ((unsigned)hi << 16); }

// The f16 mode's scale of a row whose largest |A| is `max_abs`: the power of
// two that brings it into [2^13, 2^14) (f16 reaches 65504; directions of
// 1e-5..1e-9 would be f16 subnormals or zero unscaled), 1 for a zero or
// non-finite maximum. Exact, and undone on the f32 result.
__device__ __forceinline__ float f16_row_scale(float max_abs) {
    if (!(max_abs > 0.0f) || isinf(max_abs)) return 1.0f;
    int e;
    frexpf(max_abs, &e);
    return ldexpf(1.0f, max(-126, min(127, 14 - e)));
}

// Tensor cores with 16-bit inputs (mma.sync m16n8k16, f32 accumulation) on a
// T x T tile, warps placed as in MmaTile. The B operand (the patches) is
// exact in its type; A is f32 and converted here, for every product: split
// into hi + lo bf16 (ARITH_BF16X2), rounded to bf16 (ARITH_BF16), or scaled
// per row by f16_row_scale and rounded to f16 (ARITH_F16).
template <int T, int ARITH>
struct HalfMmaTile {
    static constexpr int MI = T / 32, NI = T / 32;
    static constexpr bool BF16 = ARITH != ARITH_F16;
    float acc[MI][NI][4];
    float sc[MI][2];  // the scale of this thread's rows g and g + 8 of each mma tile

    __device__ __forceinline__ static unsigned short round16(float v) { return BF16 ? f32_to_bf16(v) : f32_to_f16(v); }
    __device__ __forceinline__ static float widen16(unsigned short h) { return BF16 ? bf16_to_f32(h) : f16_to_f32(h); }

    __device__ __forceinline__ void zero() {
#pragma unroll
        for (int i = 0; i < MI; i++) {
            sc[i][0] = sc[i][1] = 1.0f;
#pragma unroll
            for (int q = 0; q < NI; q++)
#pragma unroll
                for (int e = 0; e < 4; e++) acc[i][q][e] = 0.0f;
        }
    }

    // ARITH_F16: the largest |A| of each of the block's rows over its K
    // chunk, then this thread's rows' scales (products are linear in each row
    // of A, so a block may scale its own partial sums as it likes).
    __device__ __forceinline__ void prepare(const float* __restrict__ a, int M, int m0, int kbeg, int kend, int sam,
                                            int sak) {
        if (ARITH != ARITH_F16) return;
        __shared__ float part[BLOCK];
        const int parts = BLOCK / T;
        int row = threadIdx.x % T, p = threadIdx.x / T, m = m0 + row;
        float mx = 0.0f;
        if (m < M)
            for (int k = kbeg + p; k < kend; k += parts) mx = fmaxf(mx, fabsf(a[m * sam + k * sak]));
        part[threadIdx.x] = mx;
        __syncthreads();
        int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2;
        int wm = (warp & 1) * (T / 2);
#pragma unroll
        for (int i = 0; i < MI; i++)
#pragma unroll
            for (int h = 0; h < 2; h++) {
                int r = wm + i * 16 + g + 8 * h;
                float v = 0.0f;
                for (int q = 0; q < parts; q++) v = fmaxf(v, part[q * T + r]);
                sc[i][h] = f16_row_scale(v);
            }
    }

    __device__ __forceinline__ void slice(const float (*as)[T + PAD], const float (*bs)[T + PAD]) {
        int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
        int g = lane >> 2, t = lane & 3;
        int wm = (warp & 1) * (T / 2), wn = (warp >> 1) * (T / 4);
        int k0 = 2 * t, k1 = 2 * t + 8;  // this lane's k pairs (k0, k0+1) and (k1, k1+1)
        unsigned bf[NI][2];
#pragma unroll
        for (int q = 0; q < NI; q++) {
            int nn = wn + q * 8;
            bf[q][0] = pack2(round16(bs[k0][nn + swz(k0, g)]), round16(bs[k0 + 1][nn + swz(k0 + 1, g)]));
            bf[q][1] = pack2(round16(bs[k1][nn + swz(k1, g)]), round16(bs[k1 + 1][nn + swz(k1 + 1, g)]));
        }
#pragma unroll
        for (int i = 0; i < MI; i++) {
            int mm = wm + i * 16;
            // a0 (g, k0..), a1 (g+8, k0..), a2 (g, k1..), a3 (g+8, k1..)
            float av[4][2];
#pragma unroll
            for (int e = 0; e < 4; e++) {
                int kk = (e & 2) ? k1 : k0, rr = (e & 1) ? 8 : 0;
                float s = sc[i][e & 1];
                av[e][0] = as[kk][mm + rr + swz(kk, g)] * s;
                av[e][1] = as[kk + 1][mm + rr + swz(kk + 1, g)] * s;
            }
            unsigned ah[4];
#pragma unroll
            for (int e = 0; e < 4; e++) ah[e] = pack2(round16(av[e][0]), round16(av[e][1]));
            if (ARITH == ARITH_BF16X2) {
                unsigned al[4];
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    float r0 = av[e][0] - widen16((unsigned short)(ah[e] & 0xffffu));
                    float r1 = av[e][1] - widen16((unsigned short)(ah[e] >> 16));
                    al[e] = pack2(round16(r0), round16(r1));
                }
#pragma unroll
                for (int q = 0; q < NI; q++) mma_k16<BF16>(acc[i][q], al, bf[q]);
            }
#pragma unroll
            for (int q = 0; q < NI; q++) mma_k16<BF16>(acc[i][q], ah, bf[q]);
        }
    }

    __device__ __forceinline__ void finish(int m0, int n0, int M, int N, float* __restrict__ c, int ldc,
                                           const float* __restrict__ s, int mode) const {
        int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
        int g = lane >> 2, t = lane & 3;
        int wm = (warp & 1) * (T / 2), wn = (warp >> 1) * (T / 4);
#pragma unroll
        for (int i = 0; i < MI; i++) {
            float u0 = 1.0f / sc[i][0], u1 = 1.0f / sc[i][1];  // powers of two: exact
#pragma unroll
            for (int q = 0; q < NI; q++) {
                int mm = m0 + wm + i * 16 + g, nn = n0 + wn + q * 8 + 2 * t;
                epilogue(mm, nn, M, N, acc[i][q][0] * u0, c, ldc, s, mode);
                epilogue(mm, nn + 1, M, N, acc[i][q][1] * u0, c, ldc, s, mode);
                epilogue(mm + 8, nn, M, N, acc[i][q][2] * u1, c, ldc, s, mode);
                epilogue(mm + 8, nn + 1, M, N, acc[i][q][3] * u1, c, ldc, s, mode);
            }
        }
    }
};

// The arithmetic of each ARITH_* on a T x T tile.
template <int T, int ARITH>
struct TileOf {
    typedef MmaTile<T, ARITH == ARITH_3XTF32> type;
};
template <int T>
struct TileOf<T, ARITH_F32> {
    typedef FmaTile<T> type;
};
template <int T>
struct TileOf<T, ARITH_BF16X2> {
    typedef HalfMmaTile<T, ARITH_BF16X2> type;
};
template <int T>
struct TileOf<T, ARITH_BF16> {
    typedef HalfMmaTile<T, ARITH_BF16> type;
};
template <int T>
struct TileOf<T, ARITH_F16> {
    typedef HalfMmaTile<T, ARITH_F16> type;
};

template <int T, int ARITH, typename BEl>
__device__ __forceinline__ void gemm(int M, int N, int K, const float* __restrict__ a, int sam, int sak,
                                     const typename BEl::T* __restrict__ b, int sbk, int sbn, float* __restrict__ c,
                                     int ldc, const float* __restrict__ s, int mode, int kchunk) {
    __shared__ float as[2][BK][T + PAD];
    __shared__ float bs[2][BK][T + PAD];
    int m0 = blockIdx.y * T, n0 = blockIdx.x * T;
    int kbeg = blockIdx.z * kchunk;
    int kend = kbeg + min(kchunk, K - kbeg);  // no kbeg + kchunk: it may pass 2^31
    typename TileOf<T, ARITH>::type tile;
    tile.zero();
    tile.prepare(a, M, m0, kbeg, kend, sam, sak);
    Slice<T> sa, sb;
    sa.template fetch<F32>(a, M, m0, kbeg, kend, sam, sak);
    sb.template fetch<BEl>(b, N, n0, kbeg, kend, sbn, sbk);
    int buf = 0;
    // The slices step by BK while one is left: k0 + BK could pass 2^31 for a K
    // near it, kend - k0 cannot.
    for (int k0 = kbeg; k0 < kend; k0 = kend - k0 > BK ? k0 + BK : kend) {
        sa.store(as[buf], sak);
        sb.store(bs[buf], sbk);
        __syncthreads();
        if (kend - k0 > BK) {
            sa.template fetch<F32>(a, M, m0, k0 + BK, kend, sam, sak);
            sb.template fetch<BEl>(b, N, n0, k0 + BK, kend, sbn, sbk);
        }
        tile.slice(as[buf], bs[buf]);
        buf ^= 1;
    }
    tile.finish(m0, n0, M, N, c, ldc, s, mode);
}

// One entry per (arithmetic, tile): the host picks the tile per problem.
#define GEMM_ENTRY(name, t, arith)                                                                             \
    extern "C" __global__ void __launch_bounds__(BLOCK)                                                       \
        name(int M, int N, int K, const float* __restrict__ a, int sam, int sak, const float* __restrict__ b, \
             int sbk, int sbn, float* __restrict__ c, int ldc, const float* __restrict__ s, int mode,         \
             int kchunk) {                                                                                    \
        gemm<t, arith, F32>(M, N, K, a, sam, sak, b, sbk, sbn, c, ldc, s, mode, kchunk);                      \
    }

GEMM_ENTRY(gemm_f32_64, 64, ARITH_F32)
GEMM_ENTRY(gemm_f32_128, 128, ARITH_F32)
GEMM_ENTRY(gemm_tf32_64, 64, ARITH_TF32)
GEMM_ENTRY(gemm_tf32_128, 128, ARITH_TF32)
GEMM_ENTRY(gemm_3xtf32_64, 64, ARITH_3XTF32)
GEMM_ENTRY(gemm_3xtf32_128, 128, ARITH_3XTF32)

// The 16-bit modes: B is the packed patches in bf16 or f16.
#define GEMM_HALF_ENTRY(name, t, arith, BEl)                                                                     \
    extern "C" __global__ void __launch_bounds__(BLOCK)                                                         \
        name(int M, int N, int K, const float* __restrict__ a, int sam, int sak, const BEl::T* __restrict__ b,  \
             int sbk, int sbn, float* __restrict__ c, int ldc, const float* __restrict__ s, int mode,           \
             int kchunk) {                                                                                      \
        gemm<t, arith, BEl>(M, N, K, a, sam, sak, b, sbk, sbn, c, ldc, s, mode, kchunk);                         \
    }

GEMM_HALF_ENTRY(gemm_bf16x2_64, 64, ARITH_BF16X2, Bf16)
GEMM_HALF_ENTRY(gemm_bf16x2_128, 128, ARITH_BF16X2, Bf16)
GEMM_HALF_ENTRY(gemm_bf16_64, 64, ARITH_BF16, Bf16)
GEMM_HALF_ENTRY(gemm_bf16_128, 128, ARITH_BF16, Bf16)
GEMM_HALF_ENTRY(gemm_f16_64, 64, ARITH_F16, F16)
GEMM_HALF_ENTRY(gemm_f16_128, 128, ARITH_F16, F16)

// Muon's bfloat16 mode (torch's bf16 matmul): f32 operands rounded to bf16
// as they are read (exact for the bf16-valued buffers it multiplies), one
// m16n8k16 mma per slice, f32 accumulation, also across split-K chunks; the
// host rounds C to bf16 once the product is complete (round_bf16).
GEMM_HALF_ENTRY(gemm_bf16_f32_64, 64, ARITH_BF16, F32)
GEMM_HALF_ENTRY(gemm_bf16_f32_128, 128, ARITH_BF16, F32)

// A probe of the mma.sync variant the GEMMs use (m16n8k8, TF32 inputs, f32
// accumulation) for a test to compare with the host's product: one warp
// places every lane's fragments by the PTX ISA's formulas, written out here
// independently of MmaTile (g = lane / 4, t = lane % 4):
//   A a0 (g, t), a1 (g+8, t), a2 (g, t+4), a3 (g+8, t+4);
//   B b0 (k = t, n = g), b1 (k = t+4, n = g);
//   C c0 (g, 2t), c1 (g, 2t+1), c2 (g+8, 2t), c3 (g+8, 2t+1).
// c [16, 8] = a [16, 8] b [8, 8], all row-major, entries TF32 values.
extern "C" __global__ void mma_probe_m16n8k8_tf32(const float* __restrict__ a, const float* __restrict__ b,
                                                  float* __restrict__ c) {
    if (threadIdx.x >= 32) return;  // one warp
    int lane = threadIdx.x, g = lane >> 2, t = lane & 3;
    auto bits = [](float v) { return (unsigned)__float_as_int(v); };
    unsigned af[4] = {bits(a[g * 8 + t]), bits(a[(g + 8) * 8 + t]), bits(a[g * 8 + t + 4]), bits(a[(g + 8) * 8 + t + 4])};
    unsigned bf[2] = {bits(b[t * 8 + g]), bits(b[(t + 4) * 8 + g])};
    float d[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    mma_tf32(d, af, bf);
    c[g * 8 + 2 * t] = d[0];
    c[g * 8 + 2 * t + 1] = d[1];
    c[(g + 8) * 8 + 2 * t] = d[2];
    c[(g + 8) * 8 + 2 * t + 1] = d[3];
}

// Probes of the m16n8k16 variants (bf16 and f16 inputs, f32 accumulation)
// for a test to compare with the host's product: one warp places every
// lane's fragments by the PTX ISA's formulas, written out here independently
// of HalfMmaTile (g = lane / 4, t = lane % 4; each register holds two values,
// the first in the lower half):
//   A a0 (g, 2t..2t+1), a1 (g+8, 2t..2t+1), a2 (g, 2t+8..2t+9), a3 (g+8, 2t+8..2t+9);
//   B b0 (k = 2t..2t+1, n = g), b1 (k = 2t+8..2t+9, n = g);
//   C c0 (g, 2t), c1 (g, 2t+1), c2 (g+8, 2t), c3 (g+8, 2t+1).
// c [16, 8] = a [16, 16] b [16, 8], all row-major f32, entries exact in the type.
template <bool BF16>
__device__ __forceinline__ void mma_probe_k16(const float* __restrict__ a, const float* __restrict__ b,
                                              float* __restrict__ c) {
    if (threadIdx.x >= 32) return;  // one warp
    int lane = threadIdx.x, g = lane >> 2, t = lane & 3;
    auto h = [](float v) { return BF16 ? f32_to_bf16(v) : f32_to_f16(v); };
    auto two = [&](float lo, float hi) { return (unsigned)h(lo) | ((unsigned)h(hi) << 16); };
    unsigned af[4] = {two(a[g * 16 + 2 * t], a[g * 16 + 2 * t + 1]), two(a[(g + 8) * 16 + 2 * t], a[(g + 8) * 16 + 2 * t + 1]),
                      two(a[g * 16 + 2 * t + 8], a[g * 16 + 2 * t + 9]),
                      two(a[(g + 8) * 16 + 2 * t + 8], a[(g + 8) * 16 + 2 * t + 9])};
    unsigned bf[2] = {two(b[(2 * t) * 8 + g], b[(2 * t + 1) * 8 + g]), two(b[(2 * t + 8) * 8 + g], b[(2 * t + 9) * 8 + g])};
    float d[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    mma_k16<BF16>(d, af, bf);
    c[g * 8 + 2 * t] = d[0];
    c[g * 8 + 2 * t + 1] = d[1];
    c[(g + 8) * 8 + 2 * t] = d[2];
    c[(g + 8) * 8 + 2 * t + 1] = d[3];
}

extern "C" __global__ void mma_probe_m16n8k16_bf16(const float* __restrict__ a, const float* __restrict__ b,
                                                   float* __restrict__ c) {
    mma_probe_k16<true>(a, b, c);
}
extern "C" __global__ void mma_probe_m16n8k16_f16(const float* __restrict__ a, const float* __restrict__ b,
                                                  float* __restrict__ c) {
    mma_probe_k16<false>(a, b, c);
}
