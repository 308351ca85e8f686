/* fa_bwd_sm90_pipe80.cuh - the Br = 80 form of the pipelined Hopper backward at d in (64, 128]
 * with TMA-reduce dQ, the default there (FLASH_ATTN_C_SM90_BWD_VARIANT, fa_bwd_sm90_pipe80_host.h; tuning row
 * FA_KERNEL_BWD_SM90_PIPE80). FA3's non-causal hdim-128 tile (hopper/flash_bwd_launch_template.h,
 * run_mha_bwd_hdim128: kBlockM = 80, kBlockN = 128, SdP_swapAB, dQ_swapAB, Mma_dKV_is_RS).
 * Everything is fa_bwd_sm90_pipe_kernel's kDq = TMA kernel (roles, ring, named barriers, order of
 * the products: its header comment; the body is fa_bwd_sm90_pipe_main at kKernel =
 * FA_KERNEL_BWD_SM90_PIPE80, and the __global__ wrappers are there too) at Br = 80 except:
 *   - S^T = K Q^T and dP^T = V dO^T are wgmma SS m64n80k16 (40 + 40 accumulators): 4.5 KB of
 *     shared memory per 40 tensor-core cycles instead of 4 KB per 32 at N = 64 (the SM reads 128
 *     B/clk), and each per-tile cost (mbarrier waits, the DS and dQ barriers, wgmma drains, LSE/D)
 *     covers 25% more FLOPs;
 *   - dQ is computed transposed (80 queries are no wgmma M): dS stored [query][key] by
 *     stmatrix.trans, dQ^T = K^T dS^T per warpgroup (64 dims x 80 queries), staged as {32, 80}
 *     boxes (fa_bwd_sm90_pipe80_dq.cuh);
 *   - registers (0 spills at 240 needed all of these; S^T + dP^T 80, dK + dV 128): the S^T / dP^T
 *     accumulators start at -LSE2 / scale_log2 and -D, warpgroup / warp indices via shfl, the mask
 *     of P as a second pass (warpgroup_tile_pds_preset, fa_bwd_sm90_pipe_preset.cuh, shared with
 *     the Br = 128 tile); one base address per store loop; the dS stores after the dV issue.
 * fa_bwd_sm90_pipe80_ordered_kernel (default since H200 run 62, fa_bwd_sm90_ordered.h): the deterministic
 * instance, the same body with the grid's x reversed and the ordered writer (warp_write_dq<.., true>
 * of fa_bwd_sm90_pipe_dq_writer.cuh, turn counters per 80 query rows).
 * Shared memory: K, V 2 x 32 KB, Q, dO 2 stages x 20 KB each, dS 2 x 20 KB, dQ^T staging 2 x 20 KB,
 * + 1 KB alignment = 225 KB, + 1.3 KB static (LSE, D, mbarriers) of the 227 KB.
 */
#ifndef FA_BWD_SM90_PIPE80_CUH
#define FA_BWD_SM90_PIPE80_CUH

#include "fa_bwd_sm90_pipe_consumer.cuh" /* thread_release_bwd_slot, warpgroup_store_dkdv */
#include "fa_bwd_sm90_pipe80_dq.cuh"
#include "fa_bwd_sm90_pipe_layout.cuh"
#include "fa_bwd_sm90_pipe_preset.cuh" /* warpgroup_tile_pds_preset */

/* The tile of the Br = 80 form (fa_tuning.h row FA_KERNEL_BWD_SM90_PIPE80, bucket 128 only): the
 * kernel's fa_bwd_sm90_pipe_cfg (shared memory there: K, V; kStages slots of Q and dO; 2 dS
 * buffers; 2 dQ^T staging buffers, fa_bwd_pipe_dq_split<128, 80>; + 1024 to align the base), under
 * the names the launch reads. */
struct fa_bwd_sm90_pipe80_cfg {
    typedef fa_bwd_sm90_pipe_cfg<128, FA_KERNEL_BWD_SM90_PIPE80> Pipe;
    static constexpr int D = 128, Br = Pipe::Br, Bc = Pipe::Bc, kStages = Pipe::kStages;
    static_assert(Br == 80 && Bc == FA_BWD_SM90_BC && kStages == 2, "the Br = 80 kernel: 80 x 128 tiles, 2 stages");
    static constexpr size_t kSmemBytes = Pipe::kSmemBytesTma; /* kDq = TMA and ORDERED only */
};

#if FA_SM90_DEVICE

/* One consumer tile (fa_bwd_sm90_pipe_consumer.cuh warpgroup_tile_pds + warpgroup_bwd_tile_tma at
 * Br = 80, dQ transposed). sds: this iteration's dS buffer; first: tile 0 of the CTA (the staging
 * buffer was never used: no EMPTY sync). lse_s, dsum_s: the slot's [Br] rows. */
template <bool kBf16>
static __device__ __forceinline__ void warpgroup_bwd_tile80(const fa_bwd_args &a, const fa_seq &seq,
                                                            const fa_bwd_pipe_smem &sm, float (&dk)[64],
                                                            float (&dv)[64], int stage, uint32_t phase, uint32_t sds,
                                                            bool first, int i0, int j0, const float *lse_s,
                                                            const float *dsum_s)
{
    constexpr int D = fa_bwd_sm90_pipe80_cfg::D, Br = fa_bwd_sm90_pipe80_cfg::Br;
    uint32_t pa[Br / 16][4], dsa[Br / 16][4]; /* P^T, dS^T as A fragments (16 queries per k-step) */
    const fa_bwd_pipe_place p =
        warpgroup_tile_pds_preset<kBf16, D, Br>(a, seq, sm, stage, phase, i0, j0, lse_s, dsum_s, pa, dsa);
    const int wg = p.wg;
    fa_wgmma_fence();
    warpgroup_gemm_rs_q<kBf16, D, Br>(dv, pa, p.do_st);
    fa_wgmma_commit(); /* group: dV */
    /* dS stores while dV runs (after the packing: its address registers at the s / dp peak spilled) */
    warp_store_ds_t<Br>(dsa, sds, wg, p.wq, p.lane);
    fa_fence_proxy_async_smem(); /* the dS stores before the dQ^T wgmma (async proxy) reads them */
    /* why: the dQ^T product reads the dS rows (keys) of both warpgroups */
    fa_named_barrier_sync<256>(FA_BWD_SM90_PIPE_BAR_DS);
    float dqt[Br / 2];
    warpgroup_issue_dqt<kBf16, Br>(dqt, sds, sm.k, wg); /* group: dQ^T */
    warpgroup_tile_dk_stage_dq<kBf16, D, Br>(dk, dv, dqt, dsa, p.q_st, sm, stage, first, wg, p.wq, p.lane);
}

#endif /* FA_SM90_DEVICE */

#endif /* FA_BWD_SM90_PIPE80_CUH */
