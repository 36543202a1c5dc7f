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
using std::fmaf;  // sqrtf comes from <math.h> (global)
inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline float __int_as_float(int v) { float f; std::memcpy(&f, &v, 4); return f; }
inline int __float_as_int(float f) { int v; std::memcpy(&v, &f, 4); return v; }
