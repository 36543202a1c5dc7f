/* A one-rank NCCL on the libcuda host emulator, for the tests of
 * frog-cuda's `Nccl` (src/nccl.rs) without a GPU or NCCL: built by
 * emu/build.sh next to the emulator as lib64/libnccl-stub.so.2, linked
 * against it, and opened through FROG_NCCL_LIB.
 *
 * The emulator's device pointers are host addresses, so each transfer is a
 * cuMemcpyDtoD_v2 of the emulator (which first runs the stream's pending
 * host-to-device copies, keeping stream order). One rank: an all-reduce or
 * a broadcast copies its send buffer to its receive buffer (nothing in
 * place); sends and receives to self are paired in order when the
 * outermost group ends, with equal counts. Everything else NCCL would
 * refuse or hang on is an error code: another data type or operation, a
 * peer or root other than 0, a communicator of more ranks, a lone send or
 * receive outside a group (NCCL would wait forever), a group left unmatched,
 * a communicator used after ncclCommDestroy. */
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

typedef unsigned long long CUdeviceptr;
int cuMemcpyDtoD_v2(CUdeviceptr dst, CUdeviceptr src, size_t bytes);

enum { ncclSuccess = 0, ncclUnhandledCudaError = 1, ncclSystemError = 2, ncclInternalError = 3,
       ncclInvalidArgument = 4, ncclInvalidUsage = 5 };
enum { ncclFloat32 = 7, ncclSum = 0 };

#define STUB_VERSION 29900 /* "2.99.0": no real NCCL has it */
static const char kMagic[] = "frog-cuda one-rank NCCL stub";

typedef struct { char internal[128]; } ncclUniqueId;
typedef struct ncclComm {
    unsigned magic;
} *ncclComm_t;
#define LIVE 0x4e43434cu
#define DEAD 0xdeadu

static int valid(ncclComm_t c) { return c && c->magic == LIVE; }

static int copy(void* dst, const void* src, size_t count) {
    if (count == 0 || dst == src) return ncclSuccess;
    return cuMemcpyDtoD_v2((CUdeviceptr)dst, (CUdeviceptr)src, count * 4) ? ncclUnhandledCudaError : ncclSuccess;
}

int ncclGetVersion(int* v) {
    if (!v) return ncclInvalidArgument;
    *v = STUB_VERSION;
    return ncclSuccess;
}

const char* ncclGetErrorString(int code) {
    switch (code) {
        case ncclSuccess: return "no error";
        case ncclUnhandledCudaError: return "unhandled cuda error (stub: the emulator's copy failed)";
        case ncclInvalidArgument: return "invalid argument (stub: one rank, f32 sums only)";
        case ncclInvalidUsage: return "invalid usage (stub: unmatched send/recv or a call outside a group)";
        default: return "unknown result code";
    }
}

int ncclGetUniqueId(ncclUniqueId* id) {
    if (!id) return ncclInvalidArgument;
    memset(id->internal, 0, sizeof id->internal);
    memcpy(id->internal, kMagic, sizeof kMagic);
    return ncclSuccess;
}

int ncclCommInitRank(ncclComm_t* comm, int nranks, ncclUniqueId id, int rank) {
    if (!comm || nranks != 1 || rank != 0 || memcmp(id.internal, kMagic, sizeof kMagic) != 0) return ncclInvalidArgument;
    ncclComm_t c = malloc(sizeof *c);
    if (!c) return ncclSystemError;
    c->magic = LIVE;
    *comm = c;
    return ncclSuccess;
}

int ncclCommDestroy(ncclComm_t comm) {
    if (!valid(comm)) return ncclInvalidArgument;
    comm->magic = DEAD; /* leaked on purpose: a later use is seen, not undefined */
    return ncclSuccess;
}

int ncclAllReduce(const void* send, void* recv, size_t count, int type, int op, ncclComm_t comm, void* stream) {
    (void)stream;
    if (!valid(comm) || type != ncclFloat32 || op != ncclSum || !send || !recv) return ncclInvalidArgument;
    return copy(recv, send, count);
}

int ncclBroadcast(const void* send, void* recv, size_t count, int type, int root, ncclComm_t comm, void* stream) {
    (void)stream;
    if (!valid(comm) || type != ncclFloat32 || root != 0 || !send || !recv) return ncclInvalidArgument;
    return copy(recv, send, count);
}

/* The open group's sends and receives, paired in order at its end. */
#define MAX_P2P 64
typedef struct { void* buf; size_t count; } P2p;
/* Per thread, as NCCL's group state is. */
static _Thread_local P2p sends[MAX_P2P], recvs[MAX_P2P];
static _Thread_local int nsend, nrecv, depth, failed;

int ncclGroupStart(void) {
    if (depth++ == 0) nsend = nrecv = failed = 0;
    return ncclSuccess;
}

int ncclGroupEnd(void) {
    if (depth == 0) return ncclInvalidUsage;
    if (--depth > 0) return ncclSuccess;
    if (failed) return failed;
    if (nsend != nrecv) return ncclInvalidUsage;
    for (int i = 0; i < nsend; i++) {
        if (sends[i].count != recvs[i].count) return ncclInvalidUsage;
    }
    for (int i = 0; i < nsend; i++) {
        int r = copy(recvs[i].buf, sends[i].buf, sends[i].count);
        if (r) return r;
    }
    return ncclSuccess;
}

static int post(P2p* list, int* n, void* buf, size_t count, int type, int peer, ncclComm_t comm) {
    if (depth == 0) return ncclInvalidUsage;
    int r = !valid(comm) || type != ncclFloat32 || peer != 0 || !buf ? ncclInvalidArgument : *n == MAX_P2P ? ncclInternalError : ncclSuccess;
    if (r) {
        if (!failed) failed = r;
        return r;
    }
    list[(*n)++] = (P2p){buf, count};
    return ncclSuccess;
}

int ncclSend(const void* send, size_t count, int type, int peer, ncclComm_t comm, void* stream) {
    (void)stream;
    return post(sends, &nsend, (void*)send, count, type, peer, comm);
}

int ncclRecv(void* recv, size_t count, int type, int peer, ncclComm_t comm, void* stream) {
    (void)stream;
    return post(recvs, &nrecv, recv, count, type, peer, comm);
}
