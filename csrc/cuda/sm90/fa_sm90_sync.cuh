/* fa_sm90_sync.cuh - Hopper synchronization and copy primitives of the sm90 forward:
 * mbarriers, TMA tile loads (cp.async.bulk.tensor), named barriers, register reallocation
 * (setmaxnreg), the generic <-> async proxy fence, and the TMA tensor store (the forward's O) and
 * reduce-add (the backward's dQ) with their bulk async-group commit / waits. sm_90a device pass only (FA_SM90_DEVICE).
 *
 * mbarrier in one paragraph: a 64-bit object in shared memory with a phase bit, an arrival
 * count and a transaction (byte) count. A phase completes when the expected number of arrivals
 * has happened and the pending transaction bytes are zero; then the phase bit flips and the
 * counts reset. Waiting is "wait until the phase of parity P has completed": a fresh barrier is in
 * phase 0, so waiting for parity 1 returns at once (the convention every ring below uses for its
 * "slot is empty" barriers: the producer's first pass over the ring must not block). TMA loads
 * name a barrier and add their byte count to it as they land (complete_tx), after the issuing
 * thread announced the bytes with arrive.expect_tx.
 */
#ifndef FA_FWD_SM90_SYNC_CUH
#define FA_FWD_SM90_SYNC_CUH

#include <stdint.h>
#include "fa_wgmma.cuh"

#if FA_SM90_DEVICE

static __device__ __forceinline__ void fa_mbar_init(uint32_t bar, uint32_t arrivals)
{
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(arrivals) : "memory");
}

/* Makes the barrier inits visible to the other threads and to the async proxy (TMA's
 * complete_tx); the caller follows it with a block-wide barrier. */
static __device__ __forceinline__ void fa_mbar_init_fence(void)
{
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
    asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
}

/* One arrival, and `bytes` more transaction bytes expected in the current phase. */
static __device__ __forceinline__ void fa_mbar_arrive_expect_tx(uint32_t bar, uint32_t bytes)
{
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(bar), "r"(bytes) : "memory");
}

/* `bytes` more transaction bytes expected in the current phase, without an arrival (for a
 * barrier whose arrivals come from several threads, each after its own shared-memory stores). */
static __device__ __forceinline__ void fa_mbar_expect_tx(uint32_t bar, uint32_t bytes)
{
    asm volatile("mbarrier.expect_tx.relaxed.cta.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(bytes) : "memory");
}

static __device__ __forceinline__ void fa_mbar_arrive(uint32_t bar)
{
    asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(bar) : "memory");
}

/* Blocks until the phase of parity `parity` has completed (acquire: what the arrivals and the
 * transactions of that phase wrote is visible afterwards). */
static __device__ __forceinline__ void fa_mbar_wait(uint32_t bar, uint32_t parity)
{
    uint32_t done;
    do {
        asm volatile(
            "{\n.reg .pred p;\n"
            "mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n"
            "selp.u32 %0, 1, 0, p;\n}\n"
            : "=r"(done)
            : "r"(bar), "r"(parity)
            : "memory");
    } while (!done);
}

/* TMA: copies one box of the tensor described by *tmap (a __grid_constant__ kernel parameter)
 * at element coordinates (c0 innermost, ...) into shared memory at dst, and signals `bar` with
 * the box's byte count when it has landed. Out-of-bounds elements (also negative coordinates)
 * arrive as zeros and count as transferred bytes. */
static __device__ __forceinline__ void fa_tma_load_3d(uint32_t dst, const void *tmap, uint32_t bar, int c0,
                                                     int c1, int c2)
{
    asm volatile(
        "cp.async.bulk.tensor.3d.shared::cluster.global.tile.mbarrier::complete_tx::bytes"
        " [%0], [%1, {%2, %3, %4}], [%5];\n"
        ::"r"(dst), "l"((uint64_t)tmap), "r"(c0), "r"(c1), "r"(c2), "r"(bar)
        : "memory");
}

static __device__ __forceinline__ void fa_tma_load_4d(uint32_t dst, const void *tmap, uint32_t bar, int c0,
                                                     int c1, int c2, int c3)
{
    asm volatile(
        "cp.async.bulk.tensor.4d.shared::cluster.global.tile.mbarrier::complete_tx::bytes"
        " [%0], [%1, {%2, %3, %4, %5}], [%6];\n"
        ::"r"(dst), "l"((uint64_t)tmap), "r"(c0), "r"(c1), "r"(c2), "r"(c3), "r"(bar)
        : "memory");
}

/* Warms the descriptor cache with a tensor map (optional, saves the first load a round trip). */
static __device__ __forceinline__ void fa_tma_prefetch_desc(const void *tmap)
{
    asm volatile("prefetch.tensormap [%0];\n" ::"l"((uint64_t)tmap) : "memory");
}

/* Barrier among kThreads threads (a multiple of 32) of the block on hardware barrier `id`
 * (1..15; 0 is __syncthreads). */
template <int kThreads>
static __device__ __forceinline__ void fa_named_barrier_sync(int id)
{
    asm volatile("bar.sync %0, %1;\n" ::"r"(id), "n"(kThreads) : "memory");
}

/* Arrival on hardware barrier `id` without waiting (the producer side of a producer/consumer
 * pair: the consumers' fa_named_barrier_sync with the same kThreads completes once every
 * participant arrived). Release: this thread's prior memory accesses are ordered before the
 * waiters' later ones. Warp-aligned like bar.sync: the whole warp executes it. */
template <int kThreads>
static __device__ __forceinline__ void fa_named_barrier_arrive(int id)
{
    asm volatile("bar.arrive %0, %1;\n" ::"r"(id), "n"(kThreads) : "memory");
}

/* TMA reduce: adds the box at element coordinates (c0 innermost, ...) of shared memory src into
 * the tensor described by *tmap (elementwise, in the map's element type: fp32 add for a FLOAT32
 * map), out-of-bounds elements skipped. Asynchronous, tracked by this thread's bulk async-groups
 * (fa_bulk_commit, fa_bulk_wait_read / fa_bulk_wait). src must hold the box as TMA lays it out
 * (swizzle of the map; 1024-aligned for the 128-byte swizzle). */
static __device__ __forceinline__ void fa_tma_reduce_add_4d(const void *tmap, uint32_t src, int c0, int c1, int c2,
                                                           int c3)
{
    asm volatile(
        "cp.reduce.async.bulk.tensor.4d.global.shared::cta.add.tile.bulk_group"
        " [%0, {%1, %2, %3, %4}], [%5];\n"
        ::"l"((uint64_t)tmap), "r"(c0), "r"(c1), "r"(c2), "r"(c3), "r"(src)
        : "memory");
}

/* TMA store: copies the box at element coordinates (c0 innermost, ...) from shared memory src into
 * the tensor described by *tmap; the elements outside the tensor's extents are not written (the
 * box is clipped), so a box that crosses the end of a dimension needs no bounds test. Asynchronous,
 * tracked by this thread's bulk async-groups (fa_bulk_commit, then fa_bulk_wait_read before src is
 * overwritten or the block exits). src must hold the box as TMA lays it out (swizzle of the map;
 * 1024-aligned for the 128-byte swizzle), written by the generic proxy only before a
 * fa_fence_proxy_async_smem of each writing thread and a barrier with the issuing thread. */
static __device__ __forceinline__ void fa_tma_store_4d(const void *tmap, uint32_t src, int c0, int c1, int c2, int c3)
{
    asm volatile(
        "cp.async.bulk.tensor.4d.global.shared::cta.tile.bulk_group"
        " [%0, {%1, %2, %3, %4}], [%5];\n"
        ::"l"((uint64_t)tmap), "r"(c0), "r"(c1), "r"(c2), "r"(c3), "r"(src)
        : "memory");
}

/* Closes this thread's bulk async-group (the TMA stores / reduces issued since the last commit). */
static __device__ __forceinline__ void fa_bulk_commit(void)
{
    asm volatile("cp.async.bulk.commit_group;\n" ::: "memory");
}

/* Waits until at most kPending of this thread's bulk groups still READ their shared-memory
 * source (the writes to global may still be in flight): the source may then be overwritten. */
template <int kPending>
static __device__ __forceinline__ void fa_bulk_wait_read(void)
{
    asm volatile("cp.async.bulk.wait_group.read %0;\n" ::"n"(kPending) : "memory");
}

/* Waits until at most kPending of this thread's bulk groups are pending at all (writes done). */
template <int kPending>
static __device__ __forceinline__ void fa_bulk_wait(void)
{
    asm volatile("cp.async.bulk.wait_group %0;\n" ::"n"(kPending) : "memory");
}

/* Register reallocation between warpgroups: every warp of a warpgroup executes the same one. */
template <int kRegs>
static __device__ __forceinline__ void fa_setmaxnreg_dec(void)
{
    asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(kRegs));
}

template <int kRegs>
static __device__ __forceinline__ void fa_setmaxnreg_inc(void)
{
    asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(kRegs));
}

/* Orders this thread's generic-proxy shared-memory accesses with later async-proxy ones (wgmma
 * operand reads, TMA) and vice versa. */
static __device__ __forceinline__ void fa_fence_proxy_async_smem(void)
{
    asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
}

#endif /* FA_SM90_DEVICE */

#endif /* FA_FWD_SM90_SYNC_CUH */
