// Host compilation of the CUDA kernels for the emulator (emu/libcuda_emu.cpp):
// each block runs as BLOCK cooperative fibers, __syncthreads is a barrier,
// warp shuffles exchange through memory, __shared__ is a static (blocks run one
// at a time). Force-included before kernels/*.cu with FROG_HOST_EMULATION.
#pragma once
#include <algorithm>
#include <atomic>
#include <cmath>
#include <math.h>
#include <cstdint>
#include <cstring>

struct dim3 {
    unsigned x, y, z;
};

extern dim3 threadIdx, blockIdx, blockDim, gridDim;

void emu_syncthreads();
float emu_shfl_xor(float v, int lane_mask);
void emu_mma_tf32(float (&d)[4], const unsigned (&a)[4], const unsigned (&b)[2]);
void emu_mma_k16(float (&d)[4], const unsigned (&a)[4], const unsigned (&b)[2], bool bf16);
void emu_shared_store(float* p, float v);

#define __global__
#define __device__
#define __forceinline__ inline
#define __shared__ static
#define __launch_bounds__(...)
#define __syncthreads() emu_syncthreads()
// The GEMM's staging stores to shared memory, counted for bank conflicts.
#define SHARED_STORE(dst, v) emu_shared_store(&(dst), (v))

inline float __shfl_xor_sync(unsigned, float v, int o) { return emu_shfl_xor(v, o); }
inline float atomicAdd(float* p, float v) { return std::atomic_ref<float>(*p).fetch_add(v); }
inline unsigned atomicMax(unsigned* p, unsigned v) {
    std::atomic_ref<unsigned> a(*p);
    unsigned old = a.load();
    while (old < v && !a.compare_exchange_weak(old, v)) {
    }
    return old;
}
using std::fmaf;  // sqrtf comes from <math.h> (global)
inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline float __int_as_float(int v) { float f; std::memcpy(&f, &v, 4); return f; }
inline int __float_as_int(float f) { int v; std::memcpy(&v, &f, 4); return v; }

// IEEE half and bfloat16 conversions of the host emulator (round to nearest
// even; NaN stays NaN, overflow gives infinity), standing in for cvt.
inline float emu_f16_to_f32(unsigned short h) {
    unsigned sign = (h & 0x8000u) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ff;
    unsigned bits;
    if (exp == 0x1f) {
        bits = sign | 0x7f800000u | (man << 13);
    } else if (exp != 0) {
        bits = sign | ((exp + 112) << 23) | (man << 13);
    } else if (man == 0) {
        bits = sign;
    } else {  // subnormal: man * 2^-24, exact in f32
        float f = std::ldexp((float)man, -24);
        std::memcpy(&bits, &f, 4);
        bits |= sign;
    }
    float f;
    std::memcpy(&f, &bits, 4);
    return f;
}
inline unsigned short emu_f32_to_f16(float f) {
    unsigned u;
    std::memcpy(&u, &f, 4);
    unsigned short sign = (u >> 16) & 0x8000u;
    float a = std::fabs(f);
    if (std::isnan(f)) return sign | 0x7e00u;
    if (a >= 65520.0f) return sign | 0x7c00u;  // rounds past the largest f16
    if (a < std::ldexp(1.0f, -14)) {  // subnormal (or zero): multiples of 2^-24, nearest even
        return sign | (unsigned short)std::nearbyint(std::ldexp(a, 24));
    }
    std::memcpy(&u, &a, 4);
    unsigned exp = (u >> 23) - 112, man = u & 0x7fffffu;
    unsigned h = (exp << 10) | (man >> 13), rest = man & 0x1fffu;
    if (rest > 0x1000u || (rest == 0x1000u && (h & 1))) h++;
    return sign | (unsigned short)h;
}
inline unsigned short emu_f32_to_bf16(float f) {
    unsigned u;
    std::memcpy(&u, &f, 4);
    if (std::isnan(f)) return (unsigned short)((u >> 16) | 0x40u);
    u += 0x7fffu + ((u >> 16) & 1);
    return (unsigned short)(u >> 16);
}
