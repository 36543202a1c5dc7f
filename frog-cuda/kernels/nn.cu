// The training engine's kernels (frog_cuda::nn): col2im for the data
// gradient of a convolution (im2col and the GEMMs live in frog.cu), the
// swap between the GEMM and PyTorch layouts of a convolution's output,
// BatchNorm with a fused residual and ReLU, global average pooling, max
// pooling, the exact GELU, per-channel biases and column sums for
// convolutions and linear layers, softmax cross-entropy with label smoothing.
//
// Compiled to PTX (ISA 7.8, compute_80: CUDA 11.8+ drivers load it) by the
// pinned NVRTC in scripts/gen-ptx.py. Layouts are PyTorch's: [B, C, H, W] and [B, D].

#include "reduce.cuh"

// x[i, ci, iy, ix] (+)= sum over the kernel taps that read it of
// col[(i*L + oy*wo + ox)*d + (ci*kh + ky)*kw + kx], d = c_in*kh*kw.
extern "C" __global__ void col2im(int r, int c_in, int h, int w, int kh, int kw, int sh, int sw, int ph, int pw,
                                  int dh, int dw, int ho, int wo, const float* __restrict__ col,
                                  float* __restrict__ x, int accumulate) {
    int total = r * c_in * h * w;
    int d = c_in * kh * kw;
    for (long long e64 = grid_first(); e64 < total; e64 += grid_stride()) {
        int e = (int)e64;
        int ix = e % w, t = e / w;
        int iy = t % h;
        t /= h;
        int ci = t % c_in, i = t / c_in;
        float acc = 0.0f;
        for (int ky = 0; ky < kh; ky++) {
            int ty = iy + ph - ky * dh;
            if (ty < 0 || ty % sh != 0) continue;
            int oy = ty / sh;
            if (oy >= ho) continue;
            for (int kx = 0; kx < kw; kx++) {
                int tx = ix + pw - kx * dw;
                if (tx < 0 || tx % sw != 0) continue;
                int ox = tx / sw;
                if (ox >= wo) continue;
                acc += col[((i * ho + oy) * wo + ox) * d + (ci * kh + ky) * kw + kx];
            }
        }
        x[e] = accumulate ? x[e] + acc : acc;
    }
}

// dst[j, i, c] = src[i, j, c] for src [a, b, e] (i < a, j < b, c < e): a
// convolution's output between PyTorch's [samples, c_out, L] and the GEMM's
// [c_out, samples*L]. Consecutive threads write consecutive entries.
extern "C" __global__ void swap_leading(int a, int b, int e, const float* __restrict__ src, float* __restrict__ dst) {
    int total = a * b * e;
    for (long long o64 = grid_first(); o64 < total; o64 += grid_stride()) {
        int o = (int)o64;
        int c = o % e, t = o / e;
        int i = t % a, j = t / a;
        dst[o] = src[(i * b + j) * e + c];
    }
}

// BatchNorm's per-channel reductions run in two stages so that a few
// channels still fill the device: a grid of (parts, channels) blocks, block
// (p, c) summing entries [p*part_len, (p+1)*part_len) of channel c's
// batch*hw, each adding its partial sum atomically onto a zeroed [C] output;
// then a per-channel step.

// Block (p, c)'s entries [begin, end) of its channel's n (host: no empty part).
__device__ __forceinline__ void bn_part(int n, int part_len, unsigned& begin, unsigned& end) {
    begin = blockIdx.x * (unsigned)part_len;
    end = begin >= (unsigned)n || (unsigned)n - begin < (unsigned)part_len ? (unsigned)n : begin + part_len;
}

// out[c] += sum of x over the part, or with center of (x - center[c]/n)^2
// (center holding the channel sums: the variance's second pass).
extern "C" __global__ void bn_channel_sums(int batch, int channels, int hw, int part_len, const float* __restrict__ x,
                                           const float* __restrict__ center, float* __restrict__ out) {
    __shared__ float scratch[BLOCK / 32 + 1];
    int c = blockIdx.y;
    float mu = center ? center[c] / (float)(batch * hw) : 0.0f;
    float acc = 0.0f;
    unsigned begin, end;
    bn_part(batch * hw, part_len, begin, end);
    for (unsigned e = begin + threadIdx.x; e < end; e += BLOCK) {
        int b = e / hw, p = e - b * hw;
        float v = x[(b * channels + c) * hw + p] - mu;
        acc = center ? fmaf(v, v, acc) : acc + v;
    }
    acc = block_sum(acc, scratch);
    if (threadIdx.x == 0) atomicAdd(out + c, acc);
}

// Train-mode statistics from the channel sums, one thread per channel:
// mean = sum/n, invstd = 1/sqrt(var + eps) (biased variance over (B, H, W),
// from sq = sum of squared deviations), and the running statistics
// (running = (1-m)*running + m*stat, the variance unbiased by n/(n-1)).
// mean holds the sums and invstd the squared deviations on entry.
extern "C" __global__ void bn_stats(int batch, int channels, int hw, float* __restrict__ mean,
                                    float* __restrict__ invstd, float* __restrict__ run_mean,
                                    float* __restrict__ run_var, float momentum, float eps) {
    int n = batch * hw;
    for (long long c64 = grid_first(); c64 < channels; c64 += grid_stride()) {
        int c = (int)c64;
        float mu = mean[c] / (float)n;
        float var = invstd[c] / (float)n;
        mean[c] = mu;
        invstd[c] = 1.0f / sqrtf(var + eps);
        float unbiased = n > 1 ? var * (float)n / (float)(n - 1) : var;
        run_mean[c] = (1.0f - momentum) * run_mean[c] + momentum * mu;
        run_var[c] = (1.0f - momentum) * run_var[c] + momentum * unbiased;
    }
}

// y = (x - mean[c]) * s[c] * gamma[c] + beta[c] (+ residual), then ReLU if
// relu. s is invstd, or the variance when is_var (then s = 1/sqrt(var + eps)).
extern "C" __global__ void bn_apply(int batch, int channels, int hw, const float* __restrict__ x,
                                    const float* __restrict__ mean, const float* __restrict__ s, int is_var,
                                    float eps, const float* __restrict__ gamma, const float* __restrict__ beta,
                                    const float* __restrict__ residual, int relu, float* __restrict__ y) {
    int total = batch * channels * hw;
    for (long long e64 = grid_first(); e64 < total; e64 += grid_stride()) {
        int e = (int)e64;
        int c = (e / hw) % channels;
        float is = is_var ? 1.0f / sqrtf(s[c] + eps) : s[c];
        float scale = is * gamma[c];
        float v = fmaf(x[e] - mean[c], scale, beta[c]);
        if (residual) v += residual[e];
        if (relu) v = fmaxf(v, 0.0f);
        y[e] = v;
    }
}

// Backward reductions over the (parts, channels) grid of bn_channel_sums,
// onto zeroed dweight and dbias. With relu_out, dy is zeroed in place where
// the forward's output was <= 0 (the ReLU's mask). Then dbias[c] = sum dy,
// dweight[c] = sum dy * (x - mean) * invstd.
extern "C" __global__ void bn_backward_reduce(int batch, int channels, int hw, int part_len,
                                              const float* __restrict__ x, const float* __restrict__ mean,
                                              const float* __restrict__ invstd, const float* __restrict__ relu_out,
                                              float* __restrict__ dy, float* __restrict__ dweight,
                                              float* __restrict__ dbias) {
    __shared__ float scratch[BLOCK / 32 + 1];
    int c = blockIdx.y;
    float mu = mean[c];
    float sdy = 0.0f, sdx = 0.0f;
    unsigned begin, end;
    bn_part(batch * hw, part_len, begin, end);
    for (unsigned e = begin + threadIdx.x; e < end; e += BLOCK) {
        int b = e / hw, p = e - b * hw;
        int at = (b * channels + c) * hw + p;
        float g = dy[at];
        if (relu_out && relu_out[at] <= 0.0f) {
            g = 0.0f;
            dy[at] = 0.0f;
        }
        sdy += g;
        sdx = fmaf(g, x[at] - mu, sdx);
    }
    sdy = block_sum(sdy, scratch);
    sdx = block_sum(sdx, scratch);
    if (threadIdx.x == 0) {
        atomicAdd(dbias + c, sdy);
        atomicAdd(dweight + c, sdx * invstd[c]);
    }
}

// dx = gamma * invstd * (dy - dbias/n - xhat * dweight/n), xhat = (x - mean) * invstd.
extern "C" __global__ void bn_backward_dx(int batch, int channels, int hw, const float* __restrict__ x,
                                          const float* __restrict__ mean, const float* __restrict__ invstd,
                                          const float* __restrict__ gamma, const float* __restrict__ dy,
                                          const float* __restrict__ dweight, const float* __restrict__ dbias,
                                          float* __restrict__ dx) {
    int total = batch * channels * hw;
    float inv_n = 1.0f / (float)(batch * hw);
    for (long long e64 = grid_first(); e64 < total; e64 += grid_stride()) {
        int e = (int)e64;
        int c = (e / hw) % channels;
        float is = invstd[c];
        float xhat = (x[e] - mean[c]) * is;
        dx[e] = gamma[c] * is * (dy[e] - dbias[c] * inv_n - xhat * dweight[c] * inv_n);
    }
}

// y[p] = mean of x[p*hw .. (p+1)*hw].
extern "C" __global__ void avg_pool(int planes, int hw, const float* __restrict__ x, float* __restrict__ y) {
    for (long long p64 = grid_first(); p64 < planes; p64 += grid_stride()) {
        int p = (int)p64;
        float acc = 0.0f;
        for (int k = 0; k < hw; k++) acc += x[p * hw + k];
        y[p] = acc / (float)hw;
    }
}

// dx[p*hw + k] = dy[p] / hw.
extern "C" __global__ void avg_pool_backward(int planes, int hw, const float* __restrict__ dy, float* __restrict__ dx) {
    int total = planes * hw;
    for (long long e64 = grid_first(); e64 < total; e64 += grid_stride()) {
        int e = (int)e64;
        dx[e] = dy[e / hw] / (float)hw;
    }
}

// y[b, c, p] += bias[c] over [batch, d, hw]: a convolution's bias, and
// with hw = 1 a linear layer's.
extern "C" __global__ void add_bias(int batch, int d, int hw, const float* __restrict__ bias, float* __restrict__ y) {
    int total = batch * d * hw;
    for (long long e64 = grid_first(); e64 < total; e64 += grid_stride()) {
        int e = (int)e64;
        y[e] += bias[(e / hw) % d];
    }
}

// The exact GELU, PyTorch's default: y = x * Phi(x), Phi(x) = (1 + erf(x / sqrt 2)) / 2.
#define GELU_SQRT1_2 0.70710678118654752f
// 1 / sqrt(2 pi), the standard normal density at 0.
#define GELU_INV_SQRT_2PI 0.39894228040143268f

extern "C" __global__ void gelu(int n, const float* __restrict__ x, float* __restrict__ y) {
    for (long long e64 = grid_first(); e64 < n; e64 += grid_stride()) {
        int e = (int)e64;
        float v = x[e];
        y[e] = v * 0.5f * (1.0f + erff(v * GELU_SQRT1_2));
    }
}

// dx = dy * (Phi(x) + x * phi(x)), phi(x) = exp(-x^2 / 2) / sqrt(2 pi).
extern "C" __global__ void gelu_backward(int n, const float* __restrict__ x, const float* __restrict__ dy,
                                         float* __restrict__ dx) {
    for (long long e64 = grid_first(); e64 < n; e64 += grid_stride()) {
        int e = (int)e64;
        float v = x[e];
        float cdf = 0.5f * (1.0f + erff(v * GELU_SQRT1_2));
        float pdf = expf(-0.5f * v * v) * GELU_INV_SQRT_2PI;
        dx[e] = dy[e] * (cdf + v * pdf);
    }
}

// Max-pooling over k x k windows at stride k, no padding, floor (PyTorch's
// MaxPool2d(k)): y[p, oy, ox] = the largest entry of the window at
// (oy*k, ox*k) of plane p of x [planes, h, w], and argmax its offset r*k + c
// in the window (as a float: exact, the host keeps k*k <= 2^24). PyTorch's
// rule: the first maximum in row-major order, unless a NaN is there, which
// then is the output (the last NaN, each taking over).
extern "C" __global__ void max_pool(int planes, int h, int w, int k, int ho, int wo, const float* __restrict__ x,
                                    float* __restrict__ y, float* __restrict__ argmax) {
    int total = planes * ho * wo;
    for (long long e64 = grid_first(); e64 < total; e64 += grid_stride()) {
        int e = (int)e64;
        int ox = e % wo, t = e / wo;
        int oy = t % ho, p = t / ho;
        const float* win = x + (p * h + oy * k) * w + ox * k;
        float best = __int_as_float((int)0xff800000u);  // -infinity
        int at = 0;
        for (int r = 0; r < k; r++) {
            for (int c = 0; c < k; c++) {
                float v = win[r * w + c];
                if (v > best || v != v) {
                    best = v;
                    at = r * k + c;
                }
            }
        }
        y[e] = best;
        argmax[e] = (float)at;
    }
}

// Backward of max_pool, one thread per input entry (no atomics, every entry
// written): dx = dy of its window's output where argmax names this entry,
// else 0 (also in the rows and columns no window covers).
extern "C" __global__ void max_pool_backward(int planes, int h, int w, int k, int ho, int wo,
                                             const float* __restrict__ dy, const float* __restrict__ argmax,
                                             float* __restrict__ dx) {
    int total = planes * h * w;
    for (long long e64 = grid_first(); e64 < total; e64 += grid_stride()) {
        int e = (int)e64;
        int ix = e % w, t = e / w;
        int iy = t % h, p = t / h;
        int oy = iy / k, ox = ix / k;
        float g = 0.0f;
        if (oy < ho && ox < wo) {
            int o = (p * ho + oy) * wo + ox;
            if (argmax[o] == (float)((iy - oy * k) * k + (ix - ox * k))) g = dy[o];
        }
        dx[e] = g;
    }
}

// out[o] = sum_b dy[b, o].
extern "C" __global__ void col_sums(int batch, int d, const float* __restrict__ dy, float* __restrict__ out) {
    for (long long o64 = grid_first(); o64 < d; o64 += grid_stride()) {
        int o = (int)o64;
        float acc = 0.0f;
        for (int b = 0; b < batch; b++) acc += dy[b * d + o];
        out[o] = acc;
    }
}

// One thread per row of `classes` logits (labels as floats): softmax in
// double, against the target q = (1 - smoothing) onehot + smoothing/classes,
// loss[b] = log(sum exp(z - max)) + max - sum_k q_k z_k (= -sum q log p),
// correct[b] = (first arg max == label), dlogits = (p - q) * scale (1/batch
// for the mean, 1 for the sum).
extern "C" __global__ void cross_entropy(int batch, int classes, float smoothing, int mean,
                                         const float* __restrict__ logits, const float* __restrict__ labels,
                                         float* __restrict__ dlogits, float* __restrict__ loss,
                                         float* __restrict__ correct) {
    double q_other = (double)smoothing / (double)classes;
    double q_label = 1.0 - (double)smoothing + q_other;
    double scale = mean ? 1.0 / (double)batch : 1.0;
    for (long long b64 = grid_first(); b64 < batch; b64 += grid_stride()) {
        int b = (int)b64;
        const float* z = logits + b * classes;
        int label = (int)labels[b];
        int best = 0;
        double mx = (double)z[0];
        for (int k = 1; k < classes; k++) {
            if ((double)z[k] > mx) {
                mx = (double)z[k];
                best = k;
            }
        }
        double sum = 0.0;
        for (int k = 0; k < classes; k++) sum += exp((double)z[k] - mx);
        correct[b] = best == label ? 1.0f : 0.0f;
        double target = 0.0;
        for (int k = 0; k < classes; k++) {
            double q = k == label ? q_label : q_other;
            target += q * (double)z[k];
            double p = exp((double)z[k] - mx) / sum;
            dlogits[b * classes + k] = (float)((p - q) * scale);
        }
        loss[b] = (float)(log(sum) + mx - target);
    }
}

// dst[k*block + c] = src[idx[k]*block + c] for k < count (indices as floats):
// FROG's sampled rows of a batch in one launch.
extern "C" __global__ void gather_blocks(int count, int block, const float* __restrict__ idx,
                                         const float* __restrict__ src, float* __restrict__ dst) {
    int total = count * block;
    for (long long e64 = grid_first(); e64 < total; e64 += grid_stride()) {
        int e = (int)e64;
        int k = e / block, c = e - k * block;
        dst[e] = src[(int)idx[k] * block + c];
    }
}
