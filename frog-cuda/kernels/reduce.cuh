// Block-wide reductions shared by frog.cu and nn.cu (included by each, so
// no include guard: the host emulator includes both in one translation unit,
// each inside its own namespace).

#define BLOCK 256

__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

// Sum over a block of BLOCK threads; every thread gets the result.
__device__ float block_sum(float v, float* scratch /* [BLOCK/32 + 1] */) {
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    v = warp_sum(v);
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    if (warp == 0) {
        float t = lane < (BLOCK / 32) ? scratch[lane] : 0.0f;
        t = warp_sum(t);
        if (lane == 0) scratch[BLOCK / 32] = t;
    }
    __syncthreads();
    float r = scratch[BLOCK / 32];
    __syncthreads();
    return r;
}
