/* fa_fwd_sm90_producer.cuh - the TMA producer of the Hopper forward (fa_fwd_sm90_kernel.cuh):
 * one thread of warpgroup 0 issues every load of a work item, the Q tile once, then K_j and V_j
 * of the item's key tiles (right to left) into the kStages-deep ring of shared-memory slots.
 *
 * Ring protocol, per slot and for K and V separately: the producer waits on the slot's "empty"
 * mbarrier (4 kWG arrivals: every consumer warp released it), announces the bytes on its "full"
 * mbarrier (count 1, arrive.expect_tx) and issues the TMA loads, which complete that phase when
 * the bytes land. Slot s is filled for the n-th time in ring phase n: full parity n & 1 (what the
 * consumers wait for), empty parity (n & 1) ^ 1 (the release of fill n - 1; fill 0 finds parity 1
 * of a fresh barrier "completed"). The position (stage, phase) advances once per key tile and is
 * the caller's, so that consecutive items continue one sequence of fills.
 */
#ifndef FA_FWD_SM90_PRODUCER_CUH
#define FA_FWD_SM90_PRODUCER_CUH

#include "fa_fwd_sm90_block.cuh"

#if FA_SM90_DEVICE

/* The producer thread fills slot `stage` of the K or V ring (slots of [D/64][Bc][64] from ring,
 * barriers 8 bytes apart from bar_empty / bar_full) with the Bc key rows from `row`
 * (sequence-local; varlen rows are offset by k_begin in the 3-d map) of kv head kv_h: waits until
 * every consumer warp released the slot (the first pass finds parity 1 of a fresh barrier
 * "completed", so it does not block), announces the bytes on the full barrier, and issues one
 * TMA load per 64-column block. */
template <int D, int Bc>
static __device__ __forceinline__ void thread_fill_slot(uint32_t ring, int stage, const void *tm, uint32_t bar_empty,
                                                       uint32_t bar_full, uint32_t phase, int row, int k_begin,
                                                       int kv_h, int b, int varlen)
{
    constexpr uint32_t kSlotBytes = (uint32_t)Bc * D * 2;
    fa_mbar_wait(bar_empty + 8u * stage, phase ^ 1u);
    fa_mbar_arrive_expect_tx(bar_full + 8u * stage, kSlotBytes);
#pragma unroll
    for (int cb = 0; cb < D / 64; ++cb) {
        const uint32_t dst = ring + (uint32_t)stage * kSlotBytes + (uint32_t)cb * (Bc * 128);
        if (varlen) fa_tma_load_3d(dst, tm, bar_full + 8u * stage, cb * 64, k_begin + row, kv_h);
        else fa_tma_load_4d(dst, tm, bar_full + 8u * stage, cb * 64, row, kv_h, b);
    }
}

/* The producer thread's Q load of one item into sm.q, announced on sm.bar_q. */
template <int D, int Br, bool kVarlen>
static __device__ __forceinline__ void thread_load_q(const fa_sm90_params &prm, const fa_sm90_layout &sm,
                                                    const fa_sm90_item &it)
{
    constexpr uint32_t kQBytes = (uint32_t)Br * D * 2;
    const int varlen = kVarlen;
    const void *tm_q = &prm.tm_q;
    fa_mbar_arrive_expect_tx(sm.bar_q, kQBytes);
#pragma unroll
    for (int cb = 0; cb < D / 64; ++cb) {
        const uint32_t dst = sm.q + (uint32_t)cb * (Br * 128);
        if (varlen) fa_tma_load_3d(dst, tm_q, sm.bar_q, cb * 64, it.q_begin + it.m0, it.h);
        else fa_tma_load_4d(dst, tm_q, sm.bar_q, cb * 64, it.m0, it.h, it.b);
    }
}

/* K_j and V_j of the item's key tiles j0 .. j1 - 1 (tile j is t_hi - 1 - j: right to left; kv_h
 * the item's K/V head) into the ring from (stage, phase) on, which it leaves at the slot after the
 * last one. */
template <int D, int Bc, int kStages, bool kVarlen>
static __device__ __forceinline__ void thread_fill_item_tiles(const fa_sm90_params &prm, const fa_sm90_layout &sm,
                                                             const fa_sm90_item &it, int kv_h, int j0, int j1,
                                                             int &stage, uint32_t &phase)
{
    const int varlen = kVarlen;
    const void *tm_k = &prm.tm_k, *tm_v = &prm.tm_v;
    for (int j = j0; j < j1; ++j) {
        const int row = fa_sm90_tile_row0<Bc>(it.t_hi - 1 - j, it.mk.sk, varlen);
        thread_fill_slot<D, Bc>(sm.k, stage, tm_k, sm.bar_kempty, sm.bar_kfull, phase, row, it.k_begin, kv_h, it.b,
                                varlen);
        thread_fill_slot<D, Bc>(sm.v, stage, tm_v, sm.bar_vempty, sm.bar_vfull, phase, row, it.k_begin, kv_h, it.b,
                                varlen);
        if (++stage == kStages) {
            stage = 0;
            phase ^= 1u;
        }
    }
}

/* The producer thread's loads of one item: Q, then every key tile's K and V. */
template <int D, int Br, int Bc, int kStages, bool kVarlen>
static __device__ __forceinline__ void thread_produce_item(const fa_sm90_params &prm, const fa_sm90_layout &sm,
                                                          const fa_sm90_item &it, int &stage, uint32_t &phase)
{
    const int kv_h = it.h / prm.a.group;
    thread_load_q<D, Br, kVarlen>(prm, sm, it);
    thread_fill_item_tiles<D, Bc, kStages, kVarlen>(prm, sm, it, kv_h, 0, it.n_tiles, stage, phase);
}

#endif /* FA_SM90_DEVICE */

#endif /* FA_FWD_SM90_PRODUCER_CUH */
