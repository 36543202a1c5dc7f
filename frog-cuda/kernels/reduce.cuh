// Grid-stride indexing and block-wide reductions shared by frog.cu and nn.cu
// (included by each, so no include guard: the host emulator includes both in
// one translation unit, each inside its own namespace).

#define BLOCK 256

// Grid-stride loops step in 64 bits: the host keeps every size below 2^31,
// but not `index + gridDim.x * blockDim.x`, which in 32 bits wraps negative
// for sizes above about 2^31 - 2^24 while `index < n` stays true. Loop
// bodies narrow the index back to `int` (it is below n there).
__device__ __forceinline__ long long grid_first() { return (long long)blockIdx.x * BLOCK + threadIdx.x; }
__device__ __forceinline__ long long grid_stride() { return (long long)gridDim.x * BLOCK; }

struct Sum {
    __device__ __forceinline__ float operator()(float a, float b) const { return a + b; }
};
// The larger of two values; NaN loses (fmaxf), so a NaN entry does not hide the row's maximum.
struct Max {
    __device__ __forceinline__ float operator()(float a, float b) const { return fmaxf(a, b); }
};

template <typename Op>
__device__ __forceinline__ float warp_reduce(float v, Op op) {
    for (int o = 16; o > 0; o >>= 1) v = op(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

__device__ __forceinline__ float warp_sum(float v) { return warp_reduce(v, Sum()); }

// `op` over a block of BLOCK threads (0 is its identity for the callers:
// sums, and maxima of absolute values); every thread gets the result.
template <typename Op>
__device__ float block_reduce(float v, float* scratch /* [BLOCK/32 + 1] */, Op op) {
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    v = warp_reduce(v, op);
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    if (warp == 0) {
        float t = lane < (BLOCK / 32) ? scratch[lane] : 0.0f;
        t = warp_reduce(t, op);
        if (lane == 0) scratch[BLOCK / 32] = t;
    }
    __syncthreads();
    float r = scratch[BLOCK / 32];
    __syncthreads();
    return r;
}

__device__ float block_sum(float v, float* scratch) { return block_reduce(v, scratch, Sum()); }
__device__ float block_max(float v, float* scratch) { return block_reduce(v, scratch, Max()); }
