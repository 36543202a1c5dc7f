// A host emulator of the few CUDA driver calls frog-cuda makes, with the
// kernels of kernels/*.cu compiled for the host (cuda_shim.h). Built as a
// libcuda.so.1 by emu/build.sh; tests linked against the libcuda stub run
// their GPU tests on it with LD_LIBRARY_PATH pointing here.
//
// It checks the CUDA C sources and the Rust side (launch arguments, buffer
// sizes, stream order) on a machine without a GPU. It does not check the
// PTX, the driver, the real tensor cores (mma.sync is emulated from the
// fragment layout the kernels assume) or performance.
//
// Device memory is host memory: allocations are poisoned with NaN and
// followed by a canary that is checked on free (an out-of-bounds write
// aborts the process); allocations of 1 GiB or more also sit above 8 GiB of
// inaccessible address space, so an index that wrapped negative in 32 bits
// faults instead of writing into other memory.
//
// Settings (environment, read at the first call):
//   FROG_EMU_SMS             multiprocessor count reported (default 4)
//   FROG_EMU_DRIVER_VERSION  cuDriverGetVersion's answer (default 11080); the
//                            module loader accepts the PTX ISA that driver does
//   FROG_EMU_CC              compute capability, as "8.0" (default)
//   FROG_EMU_SEED            seed of the shuffled block order (default 1)
//   FROG_EMU_STATS           file to which the process appends, at exit, the
//                            GEMM plans it ran and the shared-store bank
//                            conflicts it counted
#include <sys/mman.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "cuda_shim.h"

#define FROG_HOST_EMULATION 1
namespace frog_k {
#include "../kernels/frog.cu"
}
namespace nn_k {
#include "../kernels/nn.cu"
}

// ---------------------------------------------------------------------------
// Execution of one block: BLOCK cooperative fibers on the calling thread,
// scheduled round-robin; a fiber at a barrier yields until every thread of
// its block (or warp, for shuffles and mma) has arrived. Fibers switch with
// a few instructions (callee-saved registers and the stack pointer, x86-64
// System V); ucontext would make two system calls per switch.

dim3 threadIdx, blockIdx, blockDim, gridDim;

#if !defined(__x86_64__)
#error "the emulator's fiber switch is x86-64 System V only"
#endif
extern "C" void emu_switch(void** save_sp, void* new_sp);
asm(R"(
    .text
    .globl emu_switch
    .type emu_switch, @function
emu_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size emu_switch, .-emu_switch
)");

namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr size_t kStack = 256 * 1024;
constexpr int kRing = 64;

struct Sched {
    void* main_sp = nullptr;
    void* sp[kThreads];
    std::vector<char> stack[kThreads];
    bool done[kThreads];
    int cur = 0;
    unsigned block_arrived = 0, block_gen = 0;
    unsigned warp_arrived[kWarps] = {}, warp_gen[kWarps] = {};
    float xchg[kThreads];
    // Shared stores (emu_shared_store): per thread its count in the block,
    // per warp a ring of the lanes' addresses by store.
    unsigned stores[kThreads];
    struct StoreSlot {
        unsigned seq = 0, arrived = 0;
        uintptr_t word[32];
    } ring[kWarps][kRing];
    unsigned mma_a[kWarps][32][4];
    unsigned mma_b[kWarps][32][2];
    std::function<void()> job;
    Sched() {
        for (auto& s : stack) s.resize(kStack);
    }
};

Sched& sched() {
    static Sched* s = new Sched();
    return *s;
}

std::mutex launch_mutex;

struct Settings {
    int sms = 4;
    int driver_version = 11080;  // the oldest driver the committed PTX needs
    int cc_major = 8, cc_minor = 0;
    unsigned long long seed = 1;
    const char* stats = nullptr;
    Settings() {
        if (const char* v = std::getenv("FROG_EMU_SMS")) sms = std::max(1, std::atoi(v));
        if (const char* v = std::getenv("FROG_EMU_DRIVER_VERSION")) driver_version = std::atoi(v);
        if (const char* v = std::getenv("FROG_EMU_CC")) std::sscanf(v, "%d.%d", &cc_major, &cc_minor);
        if (const char* v = std::getenv("FROG_EMU_SEED")) seed = std::strtoull(v, nullptr, 10);
        stats = std::getenv("FROG_EMU_STATS");
    }
};

const Settings& settings() {
    static Settings s;
    return s;
}

// What a process ran, appended to FROG_EMU_STATS at exit: each GEMM kernel
// with its K split (grid z) and launch count, and the warp stores to
// shared memory through SHARED_STORE with the wavefronts they took (one per
// store without bank conflicts).
struct Stats {
    std::map<std::pair<std::string, unsigned>, unsigned long long> gemms;
    unsigned long long warp_stores = 0, wavefronts = 0;
    ~Stats() {
        const char* path = settings().stats;
        if (!path) return;
        FILE* f = std::fopen(path, "a");
        if (!f) return;
        for (auto& [plan, n] : gemms) std::fprintf(f, "gemm %s split %u launches %llu\n", plan.first.c_str(), plan.second, n);
        std::fprintf(f, "shared-stores warp-stores %llu wavefronts %llu\n", warp_stores, wavefronts);
        std::fclose(f);
    }
};

Stats& stats() {
    static Stats s;
    return s;
}

void yield() {
    Sched& s = sched();
    emu_switch(&s.sp[s.cur], s.main_sp);
}

[[noreturn]] void fiber_start() {
    Sched& s = sched();
    s.job();
    s.done[s.cur] = true;
    void* dead;
    emu_switch(&dead, s.main_sp);
    std::abort();
}

void run_block() {
    Sched& s = sched();
    for (int t = 0; t < kThreads; t++) {
        // Initial frame: six callee-saved registers, then fiber_start as the
        // return address; the stack is 16-byte aligned at fiber_start's entry
        // as after a call.
        auto top = reinterpret_cast<uintptr_t>(s.stack[t].data() + kStack) & ~uintptr_t(15);
        auto* frame = reinterpret_cast<void**>(top) - 8;
        for (int k = 0; k < 6; k++) frame[k] = nullptr;
        frame[6] = reinterpret_cast<void*>(&fiber_start);
        frame[7] = nullptr;
        s.sp[t] = frame;
        s.done[t] = false;
        s.stores[t] = 0;
    }
    for (auto& warp : s.ring)
        for (auto& slot : warp) slot.arrived = 0;
    int remaining = kThreads;
    while (remaining > 0) {
        for (int t = 0; t < kThreads; t++) {
            if (s.done[t]) continue;
            s.cur = t;
            threadIdx = dim3{unsigned(t), 0, 0};
            emu_switch(&s.main_sp, s.sp[t]);
            if (s.done[t]) remaining--;
        }
    }
}

void wait_barrier(unsigned& arrived, unsigned& gen, unsigned count) {
    unsigned g = gen;
    if (++arrived == count) {
        arrived = 0;
        gen++;
        return;
    }
    while (gen == g) yield();
}

void warp_barrier() {
    Sched& s = sched();
    int w = s.cur >> 5;
    wait_barrier(s.warp_arrived[w], s.warp_gen[w], 32);
}

}  // namespace

void emu_syncthreads() {
    Sched& s = sched();
    wait_barrier(s.block_arrived, s.block_gen, kThreads);
}

float emu_shfl_xor(float v, int o) {
    Sched& s = sched();
    int t = s.cur, w = t >> 5, lane = t & 31;
    s.xchg[t] = v;
    warp_barrier();
    float r = s.xchg[(w << 5) | (lane ^ o)];
    warp_barrier();
    return r;
}

// One lane's part of a warp's store to shared memory. Lanes run one after
// the other, so each lane's k-th store goes into slot k of its warp's ring;
// the last of the 32 lanes to arrive at a slot compares the addresses: the
// store takes as many wavefronts as the most distinct 4-byte words any of
// the 32 banks holds (1: no bank conflict).
void emu_shared_store(float* p, float v) {
    Sched& s = sched();
    int t = s.cur, w = t >> 5, lane = t & 31;
    unsigned k = s.stores[t]++;
    auto& slot = s.ring[w][k % kRing];
    if (slot.arrived == 0) slot.seq = k;
    if (slot.seq != k) {
        std::fprintf(stderr, "libcuda emulator: a lane ran %d shared stores ahead of its warp\n", kRing);
        std::abort();
    }
    slot.word[lane] = reinterpret_cast<uintptr_t>(p) >> 2;
    if (++slot.arrived == 32) {
        slot.arrived = 0;
        std::sort(slot.word, slot.word + 32);
        int n = int(std::unique(slot.word, slot.word + 32) - slot.word);
        unsigned per_bank[32] = {}, most = 0;
        for (int i = 0; i < n; i++) most = std::max(most, ++per_bank[slot.word[i] % 32]);
        stats().warp_stores++;  // launches run one at a time (launch_mutex)
        stats().wavefronts += most;
    }
    *p = v;
}

static float tf32_value(unsigned u) {
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}

// m16n8k8 TF32 with the fragment layout of the PTX ISA: groupID g = lane/4,
// t = lane%4; a0 (g, t), a1 (g+8, t), a2 (g, t+4), a3 (g+8, t+4);
// b0 (t, g), b1 (t+4, g); c0 (g, 2t), c1 (g, 2t+1), c2 (g+8, 2t), c3 (g+8, 2t+1).
void emu_mma_tf32(float (&d)[4], const unsigned (&a)[4], const unsigned (&b)[2]) {
    Sched* p = &sched();
    int t = p->cur, w = t >> 5, lane = t & 31;
    for (int i = 0; i < 4; i++) p->mma_a[w][lane][i] = a[i];
    for (int i = 0; i < 2; i++) p->mma_b[w][lane][i] = b[i];
    warp_barrier();
    auto A = [&](int row, int k) {
        int r8 = row & 7, hi = row >> 3;
        int reg = (k < 4 ? 0 : 2) + hi;
        return tf32_value(p->mma_a[w][r8 * 4 + (k & 3)][reg]);
    };
    auto B = [&](int k, int col) { return tf32_value(p->mma_b[w][col * 4 + (k & 3)][k < 4 ? 0 : 1]); };
    int g = lane >> 2, tq = lane & 3;
    int rows[4] = {g, g, g + 8, g + 8};
    int cols[4] = {2 * tq, 2 * tq + 1, 2 * tq, 2 * tq + 1};
    float out[4];
    for (int e = 0; e < 4; e++) {
        float acc = d[e];
        for (int k = 0; k < 8; k++) acc = std::fmaf(A(rows[e], k), B(k, cols[e]), acc);
        out[e] = acc;
    }
    warp_barrier();
    for (int e = 0; e < 4; e++) d[e] = out[e];
}

// m16n8k16 with bf16 or f16 inputs and the fragment layout of the PTX ISA:
// groupID g = lane/4, t = lane%4, two values a register (the lower k in the
// lower half); a0 (g, 2t..2t+1), a1 (g+8, 2t..2t+1), a2 (g, 2t+8..2t+9),
// a3 (g+8, 2t+8..2t+9); b0 (k = 2t..2t+1, n = g), b1 (k = 2t+8..2t+9, n = g);
// c as for m16n8k8. Products of two 16-bit values are exact in f32; they are
// accumulated in k order with f32 FMAs.
void emu_mma_k16(float (&d)[4], const unsigned (&a)[4], const unsigned (&b)[2], bool bf16) {
    Sched* p = &sched();
    int t = p->cur, w = t >> 5, lane = t & 31;
    for (int i = 0; i < 4; i++) p->mma_a[w][lane][i] = a[i];
    for (int i = 0; i < 2; i++) p->mma_b[w][lane][i] = b[i];
    warp_barrier();
    auto half = [&](unsigned reg, int k) {
        unsigned short h = (unsigned short)((k & 1) ? reg >> 16 : reg & 0xffffu);
        return bf16 ? tf32_value((unsigned)h << 16) : emu_f16_to_f32(h);
    };
    auto A = [&](int row, int k) {
        int reg = (row >> 3) + ((k >> 3) << 1);
        return half(p->mma_a[w][(row & 7) * 4 + ((k & 7) >> 1)][reg], k);
    };
    auto B = [&](int k, int col) { return half(p->mma_b[w][col * 4 + ((k & 7) >> 1)][k >> 3], k); };
    int g = lane >> 2, tq = lane & 3;
    int rows[4] = {g, g, g + 8, g + 8};
    int cols[4] = {2 * tq, 2 * tq + 1, 2 * tq, 2 * tq + 1};
    float out[4];
    for (int e = 0; e < 4; e++) {
        float acc = d[e];
        for (int k = 0; k < 16; k++) acc = std::fmaf(A(rows[e], k), B(k, cols[e]), acc);
        out[e] = acc;
    }
    warp_barrier();
    for (int e = 0; e < 4; e++) d[e] = out[e];
}

// ---------------------------------------------------------------------------
// Kernel table: name -> a thunk that unpacks the launch's parameter array.

namespace {

template <typename F>
struct Thunk;

template <typename... A>
struct Thunk<void (*)(A...)> {
    template <size_t... I>
    static void call(void (*f)(A...), void** p, std::index_sequence<I...>) {
        f(*static_cast<std::remove_reference_t<A>*>(p[I])...);
    }
    static void run(void (*f)(A...), void** p) { call(f, p, std::index_sequence_for<A...>{}); }
    // The arguments' values, one 8-byte slot each, for a graph to replay.
    static std::vector<uint64_t> copy(void** p) {
        std::vector<uint64_t> slots(sizeof...(A), 0);
        size_t i = 0;
        ((std::memcpy(&slots[i], p[i], sizeof(std::remove_reference_t<A>)), i++), ...);
        return slots;
    }
    static constexpr size_t arity = sizeof...(A);
};

struct Entry {
    const char* name;
    std::function<void(void**)> run;
    std::function<std::vector<uint64_t>(void**)> copy;
};

#define KERNEL_IN(ns, f)                                                          \
    Entry {                                                                       \
        #f, [](void** p) { Thunk<decltype(&ns::f)>::run(&ns::f, p); },            \
            [](void** p) { return Thunk<decltype(&ns::f)>::copy(p); }             \
    }
#define KERNEL(f) KERNEL_IN(frog_k, f)
#define NN(f) KERNEL_IN(nn_k, f)

const std::vector<Entry>& table() {
    static const std::vector<Entry> t = {
        KERNEL(axpby),    KERNEL(fill),        KERNEL(mul_assign), KERNEL(copy_strided),   KERNEL(row_dots),
        KERNEL(row_div),  KERNEL(row_rsqrt),   KERNEL(row_axpy),   KERNEL(row_xpby),       KERNEL(row_step),
        KERNEL(cg_update), KERNEL(im2col),     KERNEL(pack_rows),  KERNEL(patch_sq_norms), KERNEL(fisher_weights),
        KERNEL(row_rescale), KERNEL(row_guard), KERNEL(adamw_update), KERNEL(y_sq_sums), KERNEL(y_average), KERNEL(patch_col_norms),
        KERNEL(gemm_f32_64), KERNEL(gemm_f32_128), KERNEL(gemm_tf32_64), KERNEL(gemm_tf32_128),
        KERNEL(gemm_3xtf32_64), KERNEL(gemm_3xtf32_128), KERNEL(mma_probe_m16n8k8_tf32),
        KERNEL(im2col_bf16), KERNEL(im2col_f16), KERNEL(pack_rows_bf16), KERNEL(pack_rows_f16),
        KERNEL(fisher_weights_bf16), KERNEL(fisher_weights_f16), KERNEL(count_nonfinite_bf16), KERNEL(count_nonfinite_f16),
        KERNEL(im2col_f32_bf16), KERNEL(im2col_f32_f16), KERNEL(im2col_bf16_bf16), KERNEL(im2col_f16_f16),
        KERNEL(pack_rows_f32_bf16), KERNEL(pack_rows_f32_f16), KERNEL(pack_rows_bf16_bf16), KERNEL(pack_rows_f16_f16),
        KERNEL(patch_sq_norms_bf16), KERNEL(patch_sq_norms_f16), KERNEL(patch_col_norms_bf16), KERNEL(patch_col_norms_f16),
        KERNEL(gemm_bf16x2_64), KERNEL(gemm_bf16x2_128), KERNEL(gemm_bf16_64), KERNEL(gemm_bf16_128),
        KERNEL(gemm_f16_64), KERNEL(gemm_f16_128), KERNEL(mma_probe_m16n8k16_bf16), KERNEL(mma_probe_m16n8k16_f16),
        KERNEL(input_abs_max), KERNEL(input_abs_max_bf16), KERNEL(input_abs_max_f16),
        KERNEL(frobenius_norm), KERNEL(scale_by_norm), KERNEL(round_bf16), KERNEL(axpby_bf16), KERNEL(scale_by_norm_bf16),
        KERNEL(gemm_bf16_f32_64), KERNEL(gemm_bf16_f32_128),
        NN(col2im),       NN(swap_leading),       NN(bn_channel_sums), NN(bn_stats),        NN(bn_apply),       NN(bn_backward_reduce), NN(bn_backward_dx),
        NN(avg_pool),     NN(avg_pool_backward), NN(add_bias),     NN(col_sums),           NN(cross_entropy),
        NN(gather_blocks), NN(gelu),           NN(gelu_backward),  NN(max_pool),           NN(max_pool_backward),
    };
    return t;
}

constexpr size_t kCanary = 256;
constexpr unsigned char kCanaryByte = 0xA5;

// Allocations of kGuarded bytes or more are mapped kGuard bytes above the
// start of an inaccessible reservation: a 32-bit index that wrapped
// negative reaches at most 2^31 entries (8 GiB) below a buffer.
constexpr size_t kGuarded = size_t(1) << 30;
constexpr size_t kGuard = size_t(1) << 33;

std::mutex alloc_mutex;
std::vector<std::pair<uintptr_t, size_t>>& allocs() {
    static std::vector<std::pair<uintptr_t, size_t>> v;
    return v;
}

unsigned char* alloc_bytes(size_t bytes) {
    if (bytes < kGuarded) return static_cast<unsigned char*>(std::malloc(bytes));
    void* r = mmap(nullptr, kGuard + bytes, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (r == MAP_FAILED) return nullptr;
    auto* mem = static_cast<unsigned char*>(r) + kGuard;
    if (mprotect(mem, bytes, PROT_READ | PROT_WRITE) != 0) {
        munmap(r, kGuard + bytes);
        return nullptr;
    }
    madvise(mem, bytes, MADV_HUGEPAGE);  // fewer page faults while poisoning it
    return mem;
}

void free_bytes(unsigned char* mem, size_t bytes) {
    if (bytes < kGuarded) std::free(mem);
    else munmap(mem - kGuard, kGuard + bytes);
}

}  // namespace

// ---------------------------------------------------------------------------
// Stream capture into graphs: while a capture is open, launches are recorded
// (with copies of their arguments) instead of run, and any call that would
// synchronize, copy or allocate fails as on a device
// (CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED) and invalidates the capture, so
// the tests check that what they capture is launches only.

namespace {

constexpr int kCaptureUnsupported = 900;
constexpr int kCaptureInvalidated = 901;

struct Launch {
    const Entry* entry;
    unsigned gx, gy, gz;
    std::vector<uint64_t> args;
};

struct Graph {
    std::vector<Launch> launches;
};

struct Capture {
    bool open = false;
    bool invalid = false;
    Graph* graph = nullptr;
};

Capture& capture() {
    static Capture c;
    return c;
}

// 0, or the error of a prohibited call during a capture (which it invalidates).
int capture_guard() {
    Capture& c = capture();
    if (!c.open) return 0;
    c.invalid = true;
    return kCaptureUnsupported;
}

void run_launch(const Entry* e, unsigned gx, unsigned gy, unsigned gz, void** params) {
    std::lock_guard<std::mutex> g(launch_mutex);
    Sched& s = sched();
    blockDim = dim3{unsigned(kThreads), 1, 1};
    gridDim = dim3{gx, gy, gz};
    s.job = [e, params] { e->run(params); };
    if (std::strncmp(e->name, "gemm_", 5) == 0) stats().gemms[{e->name, gz}]++;
    // The blocks in a shuffled order (seeded, a new permutation per
    // launch), so that atomic accumulations add up in varying orders as
    // on a device.
    static unsigned long long launches = 0;
    unsigned long long state = settings().seed * 0x9e3779b97f4a7c15ull + ++launches;
    auto next = [&state] {  // splitmix64
        unsigned long long z = (state += 0x9e3779b97f4a7c15ull);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        return z ^ (z >> 31);
    };
    size_t blocks = size_t(gx) * gy * gz;
    std::vector<size_t> order(blocks);
    for (size_t b = 0; b < blocks; b++) order[b] = b;
    for (size_t b = blocks; b > 1; b--) std::swap(order[b - 1], order[next() % b]);
    for (size_t b : order) {
        blockIdx = dim3{unsigned(b % gx), unsigned(b / gx % gy), unsigned(b / gx / gy)};
        run_block();
    }
}

}  // namespace

// ---------------------------------------------------------------------------
// The driver API subset.

typedef unsigned long long CUdeviceptr;

// The stream's host-to-device copies not yet run (cuMemcpyHtoDAsync), run
// in order before the stream's next operation.
struct Copy {
    CUdeviceptr dst;
    const void* src;
    size_t n;
};
static std::mutex copies_mutex;
static std::vector<Copy>& copies() {
    static std::vector<Copy> v;
    return v;
}
static void flush_copies() {
    std::lock_guard<std::mutex> g(copies_mutex);
    for (const Copy& c : copies()) std::memcpy(reinterpret_cast<void*>(c.dst), c.src, c.n);
    copies().clear();
}

extern "C" {

int cuInit(unsigned) { return 0; }
int cuDriverGetVersion(int* v) {
    *v = settings().driver_version;
    return 0;
}
int cuDeviceGet(int* dev, int ordinal) {
    if (ordinal != 0) return 101;
    *dev = 0;
    return 0;
}
int cuDeviceGetCount(int* n) {
    *n = 1;
    return 0;
}
int cuDeviceGetAttribute(int* v, int attrib, int) {
    const Settings& c = settings();
    // 16: multiprocessors, 75/76: compute capability major/minor.
    *v = attrib == 16 ? c.sms : attrib == 75 ? c.cc_major : attrib == 76 ? c.cc_minor : 0;
    return 0;
}
int cuDeviceGetName(char* name, int len, int) {
    std::snprintf(name, len, "frog-cuda host emulator");
    return 0;
}
int cuDeviceTotalMem_v2(size_t* b, int) {
    *b = size_t(1) << 34;
    return 0;
}
int cuDevicePrimaryCtxRetain(void** ctx, int) {
    *ctx = reinterpret_cast<void*>(0x1);
    return 0;
}
int cuDevicePrimaryCtxRelease_v2(int) { return 0; }
int cuDevicePrimaryCtxSetFlags_v2(int, unsigned) { return 0; }
int cuCtxSetCurrent(void*) { return 0; }
int cuCtxSynchronize() {
    flush_copies();
    return capture_guard();
}
// The newest PTX ISA a driver of CUDA version v (1000 * major + 10 * minor)
// loads: 7.x for 11.x, 8.0-8.5 for 12.0-12.6, 8.7 for 12.8, 8.8 for 12.9,
// 9.0 for 13.0 (the PTX ISA's release notes).
static int max_isa(int v) {
    int major = v / 1000, minor = v % 1000 / 10;
    if (major <= 10) return 0;
    if (major == 11) return 70 + minor;
    if (major == 12) return minor <= 5 ? 80 + minor : minor == 6 ? 85 : minor == 7 ? 86 : 87 + (minor - 8);
    return 90;
}

// Loads a module as a driver would decide it: the PTX's `.version` against
// the ISA the driver knows and `.target sm_XY` against the device; any
// failure writes a JIT error log into CU_JIT_ERROR_LOG_BUFFER (option 5,
// sized by option 6, passed by value), as the driver's PTX compiler does.
int cuModuleLoadDataEx(void** m, const void* image, unsigned n, int* options, void** values) {
    char msg[256];
    const char* ptx = static_cast<const char*>(image);
    auto line = [ptx](const char* prefix) -> const char* {  // the first line starting with prefix
        if (std::strncmp(ptx, prefix, std::strlen(prefix)) == 0) return ptx;
        std::string nl = std::string("\n") + prefix;
        const char* at = std::strstr(ptx, nl.c_str());
        return at ? at + 1 : nullptr;
    };
    const char* ver = line(".version ");
    const char* target = line(".target sm_");
    int vmaj = 0, vmin = 0, sm = 0, code = 0;
    const Settings& c = settings();
    if (!ver || std::sscanf(ver, ".version %d.%d", &vmaj, &vmin) != 2 || !target ||
        std::sscanf(target, ".target sm_%d", &sm) != 1) {
        std::snprintf(msg, sizeof msg, "ptxas application ptx input, line 1; fatal   : no .version/.target directive");
        code = 218;  // CUDA_ERROR_INVALID_PTX
    } else if (vmaj * 10 + vmin > max_isa(c.driver_version)) {
        std::snprintf(msg, sizeof msg, "ptxas application ptx input; fatal   : Unsupported .version %d.%d; current version is '%d.%d'",
                      vmaj, vmin, max_isa(c.driver_version) / 10, max_isa(c.driver_version) % 10);
        code = 222;  // CUDA_ERROR_UNSUPPORTED_PTX_VERSION
    } else if (sm > c.cc_major * 10 + c.cc_minor) {
        std::snprintf(msg, sizeof msg, "ptxas application ptx input; fatal   : SM version specified by .target is higher than default SM version assumed");
        code = 209;  // CUDA_ERROR_NO_BINARY_FOR_GPU
    }
    if (code) {
        char* log = nullptr;
        size_t size = 0;
        for (unsigned i = 0; i < n; i++) {
            if (options[i] == 5) log = static_cast<char*>(values[i]);
            if (options[i] == 6) size = reinterpret_cast<size_t>(values[i]);
        }
        if (log && size) std::snprintf(log, size, "%s", msg);
        return code;
    }
    *m = reinterpret_cast<void*>(0x2);
    return 0;
}
int cuModuleLoadData(void** m, const void* image) { return cuModuleLoadDataEx(m, image, 0, nullptr, nullptr); }
int cuModuleUnload(void*) { return 0; }
int cuModuleGetFunction(void** f, void*, const char* name) {
    for (const Entry& e : table()) {
        if (std::strcmp(e.name, name) == 0) {
            *f = const_cast<Entry*>(&e);
            return 0;
        }
    }
    return 500;
}
int cuStreamCreate(void** s, unsigned) {
    *s = reinterpret_cast<void*>(0x3);
    return 0;
}
int cuStreamCreateWithPriority(void** s, unsigned, int) { return cuStreamCreate(s, 0); }
int cuStreamDestroy_v2(void*) {
    flush_copies();
    return 0;
}
int cuStreamSynchronize(void*) {
    flush_copies();
    return capture_guard();
}

int cuMemAlloc_v2(CUdeviceptr* p, size_t bytes) {
    if (capture_guard()) return kCaptureUnsupported;
    if (bytes == 0) return 1;
    if (bytes > (size_t(1) << 34)) return 2;
    auto* mem = alloc_bytes(bytes + kCanary);
    if (!mem) return 2;
    std::memset(mem, 0xFF, bytes);  // NaN: reading unwritten memory shows
    std::memset(mem + bytes, kCanaryByte, kCanary);
    std::lock_guard<std::mutex> g(alloc_mutex);
    allocs().push_back({reinterpret_cast<uintptr_t>(mem), bytes});
    *p = reinterpret_cast<CUdeviceptr>(mem);
    return 0;
}
int cuMemFree_v2(CUdeviceptr p) {
    flush_copies();
    std::lock_guard<std::mutex> g(alloc_mutex);
    auto& v = allocs();
    for (size_t i = 0; i < v.size(); i++) {
        if (v[i].first == p) {
            auto* mem = reinterpret_cast<unsigned char*>(p);
            for (size_t k = 0; k < kCanary; k++) {
                if (mem[v[i].second + k] != kCanaryByte) {
                    std::fprintf(stderr, "libcuda emulator: write past the end of a %zu-byte allocation\n", v[i].second);
                    std::abort();
                }
            }
            free_bytes(mem, v[i].second + kCanary);
            v.erase(v.begin() + i);
            return 0;
        }
    }
    return 1;
}
static int check_range(CUdeviceptr p, size_t bytes) {
    std::lock_guard<std::mutex> g(alloc_mutex);
    for (auto& [base, len] : allocs()) {
        if (p >= base && p + bytes <= base + len) return 0;
    }
    return 1;
}
int cuMemcpyHtoD_v2(CUdeviceptr dst, const void* src, size_t n) {
    if (capture_guard()) return kCaptureUnsupported;
    if (check_range(dst, n)) return 1;
    flush_copies();
    std::memcpy(reinterpret_cast<void*>(dst), src, n);
    return 0;
}
int cuMemcpyDtoH_v2(void* dst, CUdeviceptr src, size_t n) {
    if (capture_guard()) return kCaptureUnsupported;
    flush_copies();
    if (check_range(src, n)) return 1;
    std::memcpy(dst, reinterpret_cast<void*>(src), n);
    return 0;
}
// Runs when the stream next does anything, as a copy from page-locked host
// memory on a device may: the source must stay valid and unchanged until the
// stream has done it.
int cuMemcpyHtoDAsync_v2(CUdeviceptr dst, const void* src, size_t n, void*) {
    if (capture_guard()) return kCaptureUnsupported;
    if (check_range(dst, n)) return 1;
    std::lock_guard<std::mutex> g(copies_mutex);
    copies().push_back({dst, src, n});
    return 0;
}
int cuMemcpyDtoHAsync_v2(void* dst, CUdeviceptr src, size_t n, void*) { return cuMemcpyDtoH_v2(dst, src, n); }
int cuMemcpyDtoD_v2(CUdeviceptr dst, CUdeviceptr src, size_t n) {
    if (capture_guard()) return kCaptureUnsupported;
    flush_copies();
    std::memmove(reinterpret_cast<void*>(dst), reinterpret_cast<void*>(src), n);
    return 0;
}
int cuMemsetD8_v2(CUdeviceptr dst, unsigned char v, size_t n) {
    if (capture_guard()) return kCaptureUnsupported;
    flush_copies();
    std::memset(reinterpret_cast<void*>(dst), v, n);
    return 0;
}

int cuLaunchKernel(void* f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz, unsigned,
                   void*, void** params, void**) {
    if (bx != unsigned(kThreads) || by != 1 || bz != 1) return 1;
    if (gx == 0 || gy == 0 || gz == 0 || gy > 65535 || gz > 65535) return 1;
    auto* e = static_cast<const Entry*>(f);
    flush_copies();
    Capture& c = capture();
    if (c.open) {
        c.graph->launches.push_back(Launch{e, gx, gy, gz, e->copy(params)});
        return 0;
    }
    run_launch(e, gx, gy, gz, params);
    return 0;
}

int cuStreamBeginCapture_v2(void*, int) {
    flush_copies();
    Capture& c = capture();
    if (c.open) return kCaptureUnsupported;
    c = Capture{true, false, new Graph()};
    return 0;
}

int cuStreamEndCapture(void*, void** graph) {
    Capture& c = capture();
    if (!c.open) return 1;
    Graph* g = c.graph;
    bool invalid = c.invalid;
    c = Capture{};
    if (invalid) {
        delete g;
        *graph = nullptr;
        return kCaptureInvalidated;
    }
    *graph = g;
    return 0;
}

int cuGraphInstantiateWithFlags(void** exec, void* graph, unsigned long long) {
    if (!graph) return 1;
    *exec = new Graph(*static_cast<Graph*>(graph));
    return 0;
}

int cuGraphLaunch(void* exec, void*) {
    if (capture_guard()) return kCaptureUnsupported;
    flush_copies();
    for (Launch& l : static_cast<Graph*>(exec)->launches) {
        std::vector<void*> params(l.args.size());
        for (size_t i = 0; i < params.size(); i++) params[i] = &l.args[i];
        run_launch(l.entry, l.gx, l.gy, l.gz, params.data());
    }
    return 0;
}

int cuGraphExecDestroy(void* exec) {
    delete static_cast<Graph*>(exec);
    return 0;
}

int cuGraphDestroy(void* graph) {
    delete static_cast<Graph*>(graph);
    return 0;
}

int cuGetErrorString(int e, const char** s) {
    *s = e == 0 ? "no error" : "libcuda emulator error";
    return 0;
}
int cuGetErrorName(int e, const char** s) {
    *s = e == 0 ? "CUDA_SUCCESS" : "CUDA_ERROR (emulator)";
    return 0;
}
}
