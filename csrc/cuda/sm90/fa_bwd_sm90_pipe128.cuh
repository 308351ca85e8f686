/* fa_bwd_sm90_pipe128.cuh - the consumer tile of the Br = 128 instance (the default at d <= 64) of the pipelined Hopper
 * backward at d <= 64 (fa_bwd_sm90_pipe128_kernel, fa_bwd_sm90_pipe_kernel.cuh; tuning row
 * FA_KERNEL_BWD_SM90_PIPE128; FLASH_ATTN_C_SM90_BWD_VARIANT=br128, fa_bwd_sm90_pipe80_host.h). FA3's
 * hdim-64 tile (hopper/flash_bwd_launch_template.h, run_mha_bwd_hdim64: kBlockM = kBlockN = 128).
 * The kernel (roles, ring, named barriers, dQ writer) is fa_bwd_sm90_pipe_kernel's at Br = 128;
 * the tile is warpgroup_tile_pds + warpgroup_bwd_tile(_tma) of fa_bwd_sm90_pipe_consumer.cuh (the
 * same products and orders: dQ splits the queries, 64 x 64 per warpgroup) with the register
 * tricks of the Br = 80 kernel (warpgroup_tile_pds_preset, fa_bwd_sm90_pipe_preset.cuh), without which both atomic-dQ instances
 * spilled at the consumers' 240 registers (red.add 48 B, TMA dQ 92 B; nvcc 13.0):
 *   - the S^T / dP^T accumulators start at -LSE2 / scale_log2 and -D (thread_init_acc80; host:
 *     scale > 0), so no LSE / D value is live at the exp and dS phases;
 *   - warpgroup / warp indices via shfl (uniform registers), %tid.x re-read in the tile;
 *   - the mask of P as a second pass under one branch (thread_probs80);
 *   - dS^T stored by stmatrix from one base register (warp_store_ds_t128), after the dV issue.
 */
#ifndef FA_BWD_SM90_PIPE128_CUH
#define FA_BWD_SM90_PIPE128_CUH

#include "fa_bwd_sm90_pipe_consumer.cuh"
#include "fa_bwd_sm90_pipe_dq_writer.cuh"
#include "fa_bwd_sm90_pipe_layout.cuh"
#include "fa_bwd_sm90_pipe_preset.cuh" /* warpgroup_tile_pds_preset */

#if FA_SM90_DEVICE

/* dS^T fragments dsa (dsa[kk][q] = keys 64 wg + 16 wq + g + 8 (q & 1), query pair 2t of 16 kk +
 * 8 (q >> 1)) -> sds, the [Bc keys][Br queries] swizzled dS^T tile of fa_ds_t_off (queries
 * contiguous: the dQ product's MN-major A): per k-step one stmatrix.x4 (not transposed: matrix q =
 * register q, rows = keys); lane l addresses row l % 8 of matrix l / 8, i.e. key 64 wg + 16 wq +
 * 8 ((l / 8) & 1) + l % 8, its 8 queries from 16 kk + 8 ((l / 8) >> 1). The 16-byte chunk is
 * (2 (kk % 4) + (l / 8 >> 1)) ^ (key % 8) = 2 (kk % 4) ^ c0: one base register whose bits 4-6 are c0
 * (sds 1024-aligned, key 128 bytes per row), an XOR and an add per k-step. */
static __device__ __forceinline__ void warp_store_ds_t128(const uint32_t (&dsa)[8][4], uint32_t sds, int wg, int wq,
                                                          int lane)
{
    const int mtx = lane >> 3;
    const int key = 64 * wg + 16 * wq + 8 * (mtx & 1) + (lane & 7);
    const uint32_t c0 = (uint32_t)((mtx >> 1) ^ (lane & 7)); /* key % 8 = lane % 8 */
    const uint32_t base = sds + (uint32_t)key * 128u + (c0 << 4);
#pragma unroll
    for (int kk = 0; kk < 8; ++kk) {
        const uint32_t addr = (base ^ ((uint32_t)(2 * (kk % 4)) << 4)) + (uint32_t)(kk / 4) * (FA_BWD_SM90_BC * 128u);
        asm volatile("stmatrix.sync.aligned.m8n8.x4.shared.b16 [%0], {%1, %2, %3, %4};\n" ::"r"(addr),
                     "r"(dsa[kk][0]), "r"(dsa[kk][1]), "r"(dsa[kk][2]), "r"(dsa[kk][3])
                     : "memory");
    }
}

/* One consumer tile at Br = 128, d <= 64: kDq = TMA in FA3's order (warpgroup_bwd_tile_tma: dQ
 * overlaps dK, staged for the writer warp), and so kDq = ORDERED (the consumers' side is the TMA
 * one; only the writer warp differs: warp_write_dq<.., kOrdered>), kDq = RED in step 1's
 * (warpgroup_bwd_tile: dV and dK together, then dQ by red.add). sds: this iteration's dS^T buffer; first: tile 0 of the CTA (TMA:
 * no EMPTY sync); h: the query head (RED). lse_s, dsum_s: the slot's [Br] rows. */
template <bool kBf16, int kDq>
static __device__ __forceinline__ void warpgroup_bwd_tile128(const fa_bwd_args &a, const fa_seq &seq,
                                                             const fa_bwd_pipe_smem &sm, float (&dk)[32],
                                                             float (&dv)[32], int stage, uint32_t phase, uint32_t sds,
                                                             bool first, int h, int i0, int j0, const float *lse_s,
                                                             const float *dsum_s)
{
    constexpr int D = 64, Br = 128;
    using Dq = fa_bwd_pipe_dq_split<D, Br>; /* 64 queries (64 wg..) x 64 dims per warpgroup */
    uint32_t pa[Br / 16][4], dsa[Br / 16][4]; /* P^T, dS^T as A fragments (16 queries per k-step) */
    const fa_bwd_pipe_place p =
        warpgroup_tile_pds_preset<kBf16, D, Br>(a, seq, sm, stage, phase, i0, j0, lse_s, dsum_s, pa, dsa);
    const int wg = p.wg;
    fa_wgmma_fence();
    if constexpr (FA_BWD_SM90_DQ_STAGED(kDq)) {
        warpgroup_gemm_rs_q<kBf16, D, Br>(dv, pa, p.do_st);
        fa_wgmma_commit(); /* group: dV */
    } else {
        warpgroup_gemm_dv_dk<kBf16, D, Br>(dv, dk, pa, dsa, p.q_st, p.do_st);
        fa_wgmma_commit(); /* group: dV, dK */
    }
    /* dS^T stores while the group runs (their registers are read, not written, by the RS wgmmas) */
    warp_store_ds_t128(dsa, sds, wg, p.wq, p.lane);
    fa_fence_proxy_async_smem(); /* the dS^T stores before the dQ wgmma (async proxy) reads them */
    /* why: the dQ product reads the dS^T rows (keys) of both warpgroups */
    fa_named_barrier_sync<256>(FA_BWD_SM90_PIPE_BAR_DS);
    float dqa[Dq::kN / 2];
    warpgroup_issue_dq<kBf16, D, Br>(dqa, sds, sm.k, wg); /* group: dQ */
    if constexpr (FA_BWD_SM90_DQ_STAGED(kDq)) {
        warpgroup_tile_dk_stage_dq<kBf16, D, Br>(dk, dv, dqa, dsa, p.q_st, sm, stage, first, wg, p.wq, p.lane);
    } else {
        fa_wgmma_wait<0>();
        fa_reg_fence(dqa);
        fa_reg_fence(dk);
        fa_reg_fence(dv);
        /* why: dK/dV/dQ wgmmas of this thread completed, LSE/D read: the slot may be refilled */
        thread_release_bwd_slot(sm.empty + 8u * stage);
        thread_red_add_dq<Dq::kN>(a, seq, dqa, h, i0, Dq::row0(wg), Dq::col0(wg), p.wq, p.lane / 4, p.t);
    }
}

#endif /* FA_SM90_DEVICE */

#endif /* FA_BWD_SM90_PIPE128_CUH */
