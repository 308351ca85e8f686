/* fa_bwd_sm90_pipe_dsplit.cuh - the consumer tile of the pipelined Hopper backward at d = 256
 * (every d in (128, 256]; fa_bwd_sm90_pipe_cfg<256>::kDimSplit). Bc = Br = 64, and the two
 * consumer warpgroups split the head dims instead of the keys: both see the same 64 keys, each
 * owns 128 of the 256 dims of dK and dV, so a thread holds 64 + 64 accumulators (a split by keys,
 * as at d <= 128, would need 128 + 128 of the 240 registers).
 *
 * Per query block, consumer warpgroup wg = 0, 1 (thread rows: key j0 + 16 wq + g + 8 half):
 *   S^T_wg  = K Q_i[32 wg.., :]^T     wgmma SS N = 32 over all 256 dims: its 32-query half
 *   dP^T_wg = V dO_i[32 wg.., :]^T    the same on V, dO (so S^T, dP^T are computed once per CTA)
 *   P^T, dS^T of the half (thread_probs_t / thread_ds_t at 32 queries, LSE / D from row 32 wg),
 *   packed to 16 bits and stored into this iteration's P^T and dS^T buffers ([Bc keys][Br
 *   queries], swizzled: the dS^T layout of d <= 128);
 *   fence.proxy.async (the generic stores before the wgmmas below read the buffers), DS barrier
 *   (bar.sync, both warpgroups): both halves stored;
 *   dV_wg += P^T dO_i[:, 128 wg..]    wgmma SS N = 128 (warpgroup_gemm_dv_dk_ss): A = P^T, dS^T, all
 *   dK_wg += dS^T Q_i[:, 128 wg..]    64 queries, straight from the buffers (K-major: queries are the
 *                                     reduction dim), B = column blocks 2 wg, 2 wg + 1 of the slot
 *                                     (MN-major, LBO = one column block);
 *   dQ_i[:, 128 wg + 64 hh..] += dS K_j[:, 128 wg + 64 hh..] for hh = 0, 1: two wgmma SS N = 64,
 *   both operands MN-major (warpgroup_gemm_dq, Bc / 16 = 4 k-steps), added by red.add.v4 into the
 *   tiled dq_accum (kDq = RED; fa_bwd_sm90_dq_tiled.cuh: 512 contiguous bytes per warp instruction);
 *   none when deterministic (kDq = NONE: the ordered dQ pass), or the same adds in a fixed
 *   key-block order per query tile (kDq = ORDERED, opt-in: fa_bwd_sm90_dsplit_order.cuh; the
 *   consumers bar.sync TURN before their first add and bar.arrive DONE after their last).
 * Order (RED): issue dQ lo, dQ hi, dV + dK (three groups); wait <= 2, red.add of dQ lo; wait <= 1,
 * red.add of dQ hi; wait 0 (dV, dK done: slot released). The adds bound this tile, so they start
 * as early as the tensor cores allow and run under the larger dV/dK group (before: dV + dK, dQ lo,
 * wait, release, dQ hi, adds of each half after its wait, the last ones under no wgmma; nvcc 13.0
 * schedules the wait <= 1 right after the first add of dQ lo, so 15 of the 16 follow dQ hi). Live
 * accumulators at most dK + dV 128 + two dQ halves 64 (the RS form of dV/dK also held P^T, dS^T
 * fragments, 32 registers read back by 32 ld.shared). Consumer cap without spills or serialized
 * wgmmas (nvcc 13.0): RED 232 (RS) -> 224, NONE 200 -> 192; setmaxnreg gives 240.
 * P^T and dS^T are double buffered by iteration parity, like dS^T at d <= 128: buffer it & 1 is
 * written after the DS barrier of iteration it - 1, which each warpgroup reaches only after every
 * read of iteration it - 2 completed: its dV/dK and dQ wgmmas (async proxy) read the buffers, and
 * each tile waits for all its groups (wait 0) before it returns.
 * FA_BWD_SM90_DEV_NO_DQ_D256 (dev/bwd_sm90 `make nodq` only; never set by setup.py or
 * csrc/build_flags.py): the two dQ adds behind a branch never taken, so bwd_sm90_check_nodq --bench
 * times this tile without its dQ traffic, the dQ wgmmas and registers unchanged: the upper bound of
 * any faster dQ path (issue #13). (Not compiled out: ptxas then shrinks the dead dQ wgmmas away.)
 * No TMA dQ: 2 x 32 KB of staging do not fit beside K, V (64 KB), the ring (128 KB) and P^T,
 * dS^T (32 KB); kDq = TMA calls run this red.add instance (fa_bwd_sm90_pipe_launch).
 */
#ifndef FA_BWD_SM90_PIPE_DSPLIT_CUH
#define FA_BWD_SM90_PIPE_DSPLIT_CUH

#include "fa_bwd_sm90_dq_tiled.cuh"     /* thread_red_add_dq_tiled */
#include "fa_bwd_sm90_dsplit_order.cuh" /* kDq = ORDERED: thread_wait_dsplit_dq_turn, _done_dsplit_dq_adds */
#include "fa_bwd_sm90_pipe_consumer.cuh" /* thread_release_bwd_slot, warpgroup_end_tile_no_dq */
#include "fa_bwd_sm90_pipe_layout.cuh"

#if FA_SM90_DEVICE

#ifdef FA_BWD_SM90_DEV_NO_DQ_D256
#define FA_BWD_DSPLIT_DQ_ON(a) ((a).head_dim < 0) /* never (head_dim > 0), unknown to the compiler */
#else
#define FA_BWD_DSPLIT_DQ_ON(a) true
#endif

/* One consumer tile at d = 256 (header). dk, dv: this warpgroup's 128 dims; buf: byte offset of
 * this iteration's P^T / dS^T buffer; lse_s, dsum_s: the slot's [Br] rows; b, h, i0: the batch,
 * head and first query row of the tile (its dQ tile). kFeat, slope: softcap and / or ALiBi (the FEAT
 * instance; slope = this query head's, 0 = off): P^T and dS^T of the half in one pass once dP^T is
 * in (thread_probs_ds_feat), as the d <= 128 tile does (warpgroup_tile_pds). */
template <bool kBf16, int D, int kDq, bool kFeat = false>
static __device__ __forceinline__ void warpgroup_bwd_tile_dsplit(const fa_bwd_args &a, const fa_seq &seq,
                                                                 const fa_bwd_pipe_smem &sm, float (&dk)[D / 4],
                                                                 float (&dv)[D / 4], int stage, uint32_t phase,
                                                                 uint32_t buf, int b, int h, int i0, int j0,
                                                                 const float *lse_s, const float *dsum_s,
                                                                 float slope = 0.f)
{
    using Cfg = fa_bwd_sm90_pipe_cfg<D>;
    constexpr int Bc = Cfg::Bc, Br = Cfg::Br, Bh = Br / 2; /* Bh: queries of a warpgroup's S^T half */
    constexpr uint32_t kQBytes = Br * D * 2;
    static_assert(Cfg::kDimSplit && kDq != FA_BWD_SM90_DQ_TMA, "the d = 256 tile: dQ by red.add or none");
    static_assert(Br == FA_BWD_DQ_TILE_ROWS && D == FA_BWD_DQ_TILE_DIMS, "the tiled dq_accum's tile is this tile");
    const int tid = threadIdx.x - 128, wg = tid / 128, wq = (tid / 32) % 4, lane = tid % 32;
    const int g = lane / 4, t = lane % 4;
    const int sq = seq.sq, sk = seq.sk, off = sk - sq;
    const int key_base = j0 + 16 * wq + g, q0 = Bh * wg; /* q0: first query of the half */
    const uint32_t q_st = sm.q + (uint32_t)stage * kQBytes, do_st = sm.dout + (uint32_t)stage * kQBytes;
    const uint32_t sp = sm.p + buf, sds = sm.ds + buf;

    float s[Bh / 2], dp[Bh / 2];
    /* why: Q_i (TMA bytes) and LSE_i (the producer lanes' stores) of this slot have landed */
    fa_mbar_wait(sm.q_full + 8u * stage, phase);
    fa_wgmma_fence();
    warpgroup_gemm_kq_t<kBf16, D, Br, Bh, Bc>(s, fa_wgmma_desc_sw128(sm.k, 16u, 1024u), q_st + (uint32_t)q0 * 128u);
    fa_wgmma_commit();
    /* why: dO_i and D_i of this slot have landed */
    fa_mbar_wait(sm.do_full + 8u * stage, phase);
    fa_wgmma_fence(); /* dp is an accumulator of the group below */
    warpgroup_gemm_kq_t<kBf16, D, Br, Bh, Bc>(dp, fa_wgmma_desc_sw128(sm.v, 16u, 1024u), do_st + (uint32_t)q0 * 128u);
    fa_wgmma_commit();

    const bool need_mask = fa_bwd_tile_need_mask<Br, Bc>(a, i0, j0, sk, off); /* edge tile? */
    if constexpr (kFeat) {
        fa_wgmma_wait<0>(); /* S^T and dP^T ready */
        fa_reg_fence(s);
        fa_reg_fence(dp);
        thread_probs_ds_feat<Bh>(s, dp, a, lse_s + q0, dsum_s + q0, need_mask, key_base, i0 + q0, sk, off, t, slope);
    } else {
        fa_wgmma_wait<1>(); /* S^T ready, dP^T may still run */
        fa_reg_fence(s);
        thread_probs_t<Bh>(s, a, lse_s + q0, need_mask, key_base, i0 + q0, sk, off, t);
        fa_wgmma_wait<0>();
        fa_reg_fence(dp);
        thread_ds_t<Bh>(dp, s, dsum_s + q0, t);
    }

    /* the half into the buffers: fragment q of k-step kk = key 16 wq + g + 8 (q & 1), query pair
     * q0 + 16 kk + 8 (q >> 1) + 2 t (fa_pack_c_to_a's order) */
#pragma unroll
    for (int kk = 0; kk < Bh / 16; ++kk) {
        uint32_t ph[4], dh[4];
        fa_pack_c_to_a<kBf16>(ph, &s[8 * kk], &s[8 * kk + 4]);
        fa_pack_c_to_a<kBf16>(dh, &dp[8 * kk], &dp[8 * kk + 4]);
#pragma unroll
        for (int q = 0; q < 4; ++q) {
            const uint32_t o = fa_sw128_off<Bc>(16 * wq + g + 8 * (q & 1), q0 + 8 * (2 * kk + (q >> 1)) + 2 * t);
            asm volatile("st.shared.b32 [%0], %1;\n" ::"r"(sp + o), "r"(ph[q]) : "memory");
            asm volatile("st.shared.b32 [%0], %1;\n" ::"r"(sds + o), "r"(dh[q]) : "memory");
        }
    }
    /* the P^T, dS^T stores before the dV/dK and dQ wgmmas (async proxy) read them */
    fa_fence_proxy_async_smem();
    /* why: dV/dK below read the other warpgroup's half of P^T, dS^T, the dQ product all of dS^T */
    fa_named_barrier_sync<256>(FA_BWD_SM90_PIPE_BAR_DS);

    /* dV, dK of this warpgroup's 128 dims: P^T, dS^T (all 64 queries) straight from the buffers
     * (wgmma SS), column blocks 2 wg, 2 wg + 1 of the slot's dO, Q */
    const uint32_t cb_off = (uint32_t)wg * (2u * Br * 128u);
    if constexpr (kDq == FA_BWD_SM90_DQ_NONE) {
        fa_wgmma_fence();
        warpgroup_gemm_dv_dk_ss<kBf16, D / 2, Br, Bc>(dv, dk, sp, sds, q_st + cb_off, do_st + cb_off);
        fa_wgmma_commit();
        warpgroup_end_tile_no_dq(dk, dv, sm.empty + 8u * stage);
        return;
    }

    /* dQ of the warpgroup's 128 dims = K column blocks 2 wg + hh, two N = 64 halves, issued before
     * dV, dK: each half's red.adds then run while the larger dV/dK group still computes */
    const uint32_t k_cb = sm.k + (uint32_t)(2 * wg) * (uint32_t)(Bc * 128);
    float dq0[32], dq1[32];
    fa_wgmma_fence();
    warpgroup_gemm_dq<kBf16, Bc / 16>(dq0, sds, k_cb, 0);
    fa_wgmma_commit();
    warpgroup_gemm_dq<kBf16, Bc / 16>(dq1, sds, k_cb + (uint32_t)(Bc * 128), 0);
    fa_wgmma_commit();
    warpgroup_gemm_dv_dk_ss<kBf16, D / 2, Br, Bc>(dv, dk, sp, sds, q_st + cb_off, do_st + cb_off);
    fa_wgmma_commit();
    const int tw = threadIdx.x % 128; /* 32 wq + lane */
    fa_wgmma_wait<2>(); /* dQ lo done; dQ hi, dV, dK may still run */
    fa_reg_fence(dq0);
    /* ORDERED: the turn warp acquired this key block's turn on the tile (fa_bwd_sm90_dsplit_order.cuh) */
    if constexpr (kDq == FA_BWD_SM90_DQ_ORDERED) thread_wait_dsplit_dq_turn();
    if (FA_BWD_DSPLIT_DQ_ON(a)) thread_red_add_dq_tiled(a, dq0, b, h, i0, wg, 0, tw);
    fa_wgmma_wait<1>(); /* dQ hi done */
    fa_reg_fence(dq1);
    if (FA_BWD_DSPLIT_DQ_ON(a)) thread_red_add_dq_tiled(a, dq1, b, h, i0, wg, 1, tw);
    /* ORDERED: this thread's adds of the tile are issued; the turn warp passes the turn once all are */
    if constexpr (kDq == FA_BWD_SM90_DQ_ORDERED) thread_done_dsplit_dq_adds();
    fa_wgmma_wait<0>(); /* dV, dK done */
    fa_reg_fence(dk);
    fa_reg_fence(dv);
    /* why: this thread's reads of the slot (the dV/dK wgmmas on Q, dO; LSE, D) are complete */
    thread_release_bwd_slot(sm.empty + 8u * stage);
}

/* dK = scale sum dS^T Q, dV = sum P^T dO of this consumer thread at d = 256: rows j0 + 16 wq + g
 * + 8 half, dims 128 wg + 8 jn + 2 t (dK, dV: (b, sk, hk, d), rows past sk / dims past d not written). */
template <bool kBf16, int D>
static __device__ __forceinline__ void warpgroup_store_dkdv_dsplit(const fa_bwd_args &a, const fa_seq &seq, int b,
                                                                   int hk, int j0, const float (&dk)[D / 4],
                                                                   const float (&dv)[D / 4])
{
    const int tid = threadIdx.x - 128, wg = tid / 128, wq = (tid / 32) % 4, lane = tid % 32;
    const int g = lane / 4, t = lane % 4;
    uint16_t *dkb = a.dk + fa_bwd_base(seq, b, seq.k_row0, hk, a.dk_batch_stride, a.dk_row_stride, a.dk_head_stride);
    uint16_t *dvb = a.dv + fa_bwd_base(seq, b, seq.k_row0, hk, a.dv_batch_stride, a.dv_row_stride, a.dv_head_stride);
#pragma unroll
    for (int jn = 0; jn < D / 16; ++jn)
#pragma unroll
        for (int half = 0; half < 2; ++half) {
            const int j = j0 + 16 * wq + g + 8 * half, col = (D / 2) * wg + 8 * jn + 2 * t;
            if (j < seq.sk && col < a.head_dim) {
                *(uint32_t *)(dkb + (int64_t)j * a.dk_row_stride + col) =
                    fa_pack_f32x2<kBf16>(dk[4 * jn + 2 * half] * a.scale, dk[4 * jn + 2 * half + 1] * a.scale);
                *(uint32_t *)(dvb + (int64_t)j * a.dv_row_stride + col) =
                    fa_pack_f32x2<kBf16>(dv[4 * jn + 2 * half], dv[4 * jn + 2 * half + 1]);
            }
        }
}

#endif /* FA_SM90_DEVICE */

#endif /* FA_BWD_SM90_PIPE_DSPLIT_CUH */
