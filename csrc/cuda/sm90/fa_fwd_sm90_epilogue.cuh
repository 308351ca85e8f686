/* fa_fwd_sm90_epilogue.cuh - the epilogue of one work item of the Hopper forward's consumer
 * warpgroups (fa_fwd_sm90_consumer.cuh, fa_fwd_sm90_kernel.cuh, fa_fwd_sm90_persist.cuh): O /= l,
 * the LSE, and O out through the warpgroup's 64 rows of the Q buffer, by TMA stores (dense calls,
 * tm_o; left in flight, their bulk async-group owned by one thread per warpgroup) or by generic
 * 16-byte stores (varlen). Who waits for the TMA store's shared-memory reads, and when: the
 * callers (the one-block kernel before it exits; the persistent kernel before the Q slot's next
 * load, warp_release_staged_slot in fa_fwd_sm90_consumer.cuh).
 */
#ifndef FA_FWD_SM90_EPILOGUE_CUH
#define FA_FWD_SM90_EPILOGUE_CUH

#include "fa_fwd_sm90_math.cuh"

#if FA_SM90_DEVICE

/* The thread of each consumer warpgroup (its first) that issues the warpgroup's O TMA stores
 * (warpgroup_store_item, dense) and so owns their bulk async-group. */
static __device__ __forceinline__ bool thread_issues_o(int tid)
{
    return (tid & 127) == 0;
}

/* Epilogue of one item for warpgroup wg: O /= l, LSE, O staged in this warpgroup's Q rows of
 * shared memory, then to global memory:
 *   dense: one TMA store per 64-column block of the warpgroup's 64 rows (tm_o: the
 *     __grid_constant__ map, box {64, 64}, extents d and sq, so TMA drops the rows past sq and
 *     the dims past head_dim), issued by thread_issues_o after every warp's staging, committed as
 *     one bulk async-group and LEFT IN FLIGHT: the consumer threads go back to the math at once.
 *     The caller makes that thread fa_bulk_wait_read<0>() before anything overwrites the staging
 *     (the persistent kernel's next Q load into the slot: warp_release_staged_slot) and before
 *     the block exits (shared memory must stay valid until the store has read it).
 *   varlen: 16-byte coalesced generic stores by every thread (the 3-d map's rows run on into the
 *     next sequence: a box would not stop at the sequence end). Done when this returns.
 * Rows without keys (l = 0): O = 0, LSE = -inf. kDrop: O also times 1 / (1 - p) (l is the sum of
 * the undropped P, the LSE that of softmax). tm_o: &prm.tm_o (dense; unused by varlen). */
template <bool kBf16, int D, int Br, bool kVarlen, bool kDrop = false>
static __device__ __forceinline__ void warpgroup_store_item(float (&o)[D / 2], const float (&m_i)[2],
                                                           const float (&l_i)[2], const fa_fwd_args &a, uint32_t sQ,
                                                           const void *tm_o, int b, int h, int q_begin, int m0,
                                                           int m_end, float mul, int tid)
{
    constexpr int kDB = D / 8;
    const int varlen = kVarlen;
    const int warp = tid >> 5;
    const int lane = tid & 31;
    const int wg = warp / 4 - 1;
    const int wq = warp & 3;
    const int g = lane >> 2, t4 = lane & 3;
    const int row0 = m0 + 64 * wg + 16 * wq + g;
    const int wg_r0 = m0 + 64 * wg;

    float *lse_row;  /* LSE of row 0 of this (b, h) */
    uint16_t *gO = (uint16_t *)a.o + (int64_t)h * a.o_head_stride;
    if (varlen) {
        lse_row = a.lse + (int64_t)h * a.total_q + q_begin;
        gO += (int64_t)q_begin * a.o_row_stride;
    } else {
        lse_row = a.lse + ((int64_t)b * a.heads + h) * a.seqlen_q;
        gO += (int64_t)b * a.o_batch_stride;
    }
#pragma unroll
    for (int half = 0; half < 2; ++half) {
        const float sum = quad_allreduce_sum(l_i[half]);
        const float inv = sum > 0.f ? (kDrop ? a.dropout_rescale : 1.f) / sum : 0.f;
        const float lse = sum > 0.f ? m_i[half] * mul * FA_LN2 + logf(sum) : -INFINITY;
#pragma unroll
        for (int db = 0; db < kDB; ++db) {
            o[4 * db + 2 * half] *= inv;
            o[4 * db + 2 * half + 1] *= inv;
        }
        const int i = row0 + 8 * half;
        if (t4 == 0 && i < m_end) lse_row[i] = lse;
    }
    /* Stage O in the warpgroup's own 64 Q rows (only this warpgroup's wgmmas read them, and all of
     * those completed above). Layout: same swizzled column blocks as Q, chunk c of row r at
     * (c / 8) Br 128 + r 128 + ((c % 8) ^ (r % 8)) 16: a warp's 8 rows x 4 lanes hit 32 banks.
     * It is also what a TMA box of the 128-byte swizzle holds: the warpgroup's rows start at
     * 64 wg 128 bytes into each 1024-aligned column block (a multiple of 1024), so r % 8 is the
     * row within the swizzle atom, as for the Q load that fills the same bytes. */
    fa_fence_proxy_async_smem();  /* async-proxy reads of Q before the generic writes below */
#pragma unroll
    for (int db = 0; db < kDB; ++db)
#pragma unroll
        for (int half = 0; half < 2; ++half) {
            const int r = 64 * wg + 16 * wq + 8 * half + g;  /* block-local row */
            const uint32_t addr = sQ + (uint32_t)(db / 8) * (Br * 128) + (uint32_t)r * 128u +
                                  (uint32_t)(((db % 8) ^ (r % 8)) * 16) + 4u * (uint32_t)t4;
            const uint32_t v = fa_pack_f32x2<kBf16>(o[4 * db + 2 * half], o[4 * db + 2 * half + 1]);
            asm volatile("st.shared.b32 [%0], %1;\n" ::"r"(addr), "r"(v) : "memory");
        }
    if constexpr (!kVarlen) {
        fa_fence_proxy_async_smem();  /* this thread's staging writes before the store's async-proxy reads */
        /* why: the TMA store reads the rows that all 4 warps of the warpgroup staged */
        fa_named_barrier_sync<128>(1 + wg);
        if (thread_issues_o(tid) && wg_r0 < m_end) {  /* a warpgroup wholly past sq has no rows */
#pragma unroll
            for (int cb = 0; cb < D / 64; ++cb)
                fa_tma_store_4d(tm_o, sQ + (uint32_t)cb * (Br * 128) + (uint32_t)wg * (64 * 128), cb * 64, wg_r0, h,
                                b);
            fa_bulk_commit();
        }
        return;
    }
    /* why: each thread stores 16-byte chunks that other warps of the warpgroup wrote */
    fa_named_barrier_sync<128>(1 + wg);
    const int wtid = tid - 128 * (wg + 1);
    /* read unconditionally: behind the && below the load stays a branch in this function (a
     * reference, not the kernel's parameter space), which changed the kernel's SASS */
    const int head_dim = a.head_dim;
#pragma unroll
    for (int k = 0; k < 64 * kDB / 128; ++k) {
        const int idx = wtid + 128 * k;
        const int r = idx / kDB;         /* row within the warpgroup */
        const int c = idx % kDB;         /* 16-byte chunk */
        const int i = wg_r0 + r;
        if (i < m_end && c * 8 < head_dim) {
            const int rb = 64 * wg + r;
            const uint32_t addr = sQ + (uint32_t)(c / 8) * (Br * 128) + (uint32_t)rb * 128u +
                                  (uint32_t)(((c % 8) ^ (rb % 8)) * 16);
            uint4 v;
            asm volatile("ld.shared.v4.b32 {%0, %1, %2, %3}, [%4];\n"
                         : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
                         : "r"(addr)
                         : "memory");
            *(uint4 *)(gO + (int64_t)i * a.o_row_stride + c * 8) = v;
        }
    }
}

#endif /* FA_SM90_DEVICE */

#endif /* FA_FWD_SM90_EPILOGUE_CUH */
