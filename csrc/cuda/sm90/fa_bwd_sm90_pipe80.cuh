/* fa_bwd_sm90_pipe80.cuh - the Br = 80 form of the pipelined Hopper backward at d in (64, 128]
 * with TMA-reduce dQ, the default there (FLASH_ATTN_C_SM90_BWD_VARIANT, fa_bwd_sm90_pipe80_host.h; tuning row
 * FA_KERNEL_BWD_SM90_PIPE80). FA3's non-causal hdim-128 tile (hopper/flash_bwd_launch_template.h,
 * run_mha_bwd_hdim128: kBlockM = 80, kBlockN = 128, SdP_swapAB, dQ_swapAB, Mma_dKV_is_RS).
 * Everything is fa_bwd_sm90_pipe_kernel's kDq = TMA kernel (roles, ring, named barriers, order of
 * the products: its header comment) at Br = 80 except:
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
 * fa_bwd_sm90_pipe80_ordered_kernel (opt-in, FLASH_ATTN_C_SM90_BWD_DET=ordered_br): the deterministic
 * instance, the same body with the grid's x reversed and the ordered writer (warp_write_dq<.., true>
 * of fa_bwd_sm90_pipe_dq_writer.cuh, turn counters per 80 query rows).
 * Shared memory: K, V 2 x 32 KB, Q, dO 2 stages x 20 KB each, dS 2 x 20 KB, dQ^T staging 2 x 20 KB,
 * + 1 KB alignment = 225 KB, + 1.3 KB static (LSE, D, mbarriers) of the 227 KB.
 */
#ifndef FA_BWD_SM90_PIPE80_CUH
#define FA_BWD_SM90_PIPE80_CUH

#include "fa_bwd_sm90_pipe_consumer.cuh" /* thread_release_bwd_slot, warpgroup_store_dkdv */
#include "fa_bwd_sm90_pipe80_dq.cuh"
#include "fa_bwd_sm90_pipe_dq_writer.cuh" /* warp_write_dq */
#include "fa_bwd_sm90_pipe_layout.cuh"
#include "fa_bwd_sm90_pipe_preset.cuh" /* warpgroup_tile_pds_preset */
#include "fa_bwd_sm90_pipe_producer.cuh"

/* The tile of the Br = 80 form (fa_tuning.h row FA_KERNEL_BWD_SM90_PIPE80, bucket 128 only). */
struct fa_bwd_sm90_pipe80_cfg {
    static constexpr int D = 128;
    static constexpr fa_tuning_row kRow = fa_tuning_find(FA_KERNEL_BWD_SM90_PIPE80, 90, D);
    static constexpr int Br = kRow.br, Bc = kRow.bc, kStages = kRow.stages;
    static_assert(Br == 80 && Bc == FA_BWD_SM90_BC && kStages == 2 && kRow.warps * 32 == FA_BWD_SM90_PIPE_THREADS,
                  "the Br = 80 kernel: 80 x 128 tiles, 2 stages, 12 warps");
    /* per consumer warpgroup: 2 boxes {32 dims, Br rows} fp32 of dQ^T */
    static constexpr size_t kDqStageBytes = fa_bwd_pipe_dq_split<D, Br>::kStageBytes;
    /* K, V; kStages slots of Q and dO; 2 dS buffers; 2 dQ staging buffers; + 1024 to align the base */
    static constexpr size_t kSmemBytes =
        2 * (size_t)Bc * D * 2 + 2 * (size_t)kStages * Br * D * 2 + 2 * (size_t)Bc * Br * 2 + 2 * kDqStageBytes + 1024;
    static constexpr size_t kStaticBytes = 2 * (size_t)kStages * Br * 4 + (1 + 3 * (size_t)kStages) * 8;
    static_assert(kSmemBytes + kStaticBytes <= 227 * 1024, "sm_90: at most 227 KB of shared memory per block");
    /* every tile and box 1024-aligned (128-byte swizzle atoms): Br x 128 bytes is */
    static_assert((Br * 128) % 1024 == 0, "Br must be a multiple of 8");
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

/* The kernel body (the __global__ wrappers below): kDq = TMA (the atomic kernel) or ORDERED (the
 * deterministic one: key block reversed, fa_bwd_pipe_n_block, and the ordered writer
 * warp_write_dq<.., true>; the consumers are the same). prm: the kernel's __grid_constant__ parameter. */
template <bool kBf16, int kDq>
static __device__ __forceinline__ void fa_bwd_sm90_pipe80_main(const fa_bwd_sm90_params &prm)
{
    using Cfg = fa_bwd_sm90_pipe80_cfg;
    constexpr int D = Cfg::D, Br = Cfg::Br, kStages = Cfg::kStages, Bc = Cfg::Bc;
    const fa_bwd_args &a = prm.a;
    extern __shared__ unsigned char fa_bwd_sm90_smem[];
    /* LSE*log2e (+inf where P must be 0) and D = rowsum(dO o O) of each slot */
    __shared__ float s_lse[kStages][Br], s_dsum[kStages][Br];
    /* kv_full; q_full[kStages]; do_full[kStages]; empty[kStages] */
    __shared__ __align__(8) uint64_t s_bars[1 + 3 * kStages];

    /* key block: blockIdx.x, reversed for kDq = ORDERED (waits go to lower block indices only) */
    const int n_block = fa_bwd_pipe_n_block<kDq>(), hk = blockIdx.y, b = blockIdx.z;
    const fa_seq seq = fa_seq_get(0, a.cu_seqlens_q, a.cu_seqlens_k, a.seqlen_q, a.seqlen_k, b); /* dense only */
    const int j0 = n_block * Bc;
    if (j0 >= seq.sk) return; /* uniform over the CTA, before any barrier exists */

    const uint32_t tiles = (fa_smem_u32(fa_bwd_sm90_smem) + 1023u) & ~1023u; /* swizzle atoms: 1024-aligned */
    /* the layout of fa_bwd_pipe_smem_at at Br = 80: K, V, Q[2], dO[2], dS[2] (2 Bc Br bytes each), dQ staging */
    const fa_bwd_pipe_smem sm = fa_bwd_pipe_smem_at<D, Br, kStages>(tiles, fa_smem_u32(&s_bars[0]));

    const fa_band m_band = fa_band_query_tiles(j0, Bc, seq.sq, seq.sk, a.window_left, a.window_right, Br);
    const int mb_lo = m_band.first, n_mb = m_band.count;
    const int group = a.heads / a.heads_k;
    const int n_iter = n_mb * group;

    block_bwd_pipe_init_barriers<kStages>(sm);

    if (threadIdx.x < 128) {
        /* producer warpgroup: warp 0 loads, warp 1 writes dQ, warps 2-3 exit */
        fa_setmaxnreg_dec<FA_BWD_SM90_PIPE_REGS_PRODUCER>();
        if (n_iter == 0) return;
        if (threadIdx.x < 32)
            warp_produce<D, Br, kStages>(prm, sm, seq, b, hk, j0, mb_lo, n_mb, n_iter, s_lse, s_dsum);
        else if (threadIdx.x < 64)
            warp_write_dq<D, Br, kDq == FA_BWD_SM90_DQ_ORDERED>(prm, sm, seq.sq, seq.sk, b, hk, n_block, mb_lo, n_mb,
                                                                n_iter);
        return;
    }

    /* consumer warpgroups: warpgroup wg owns keys [j0 + 64 wg, + 64) */
    fa_setmaxnreg_inc<FA_BWD_SM90_PIPE_REGS_CONSUMER>();
    float dk[D / 2], dv[D / 2];
#pragma unroll
    for (int i = 0; i < D / 2; ++i) dk[i] = dv[i] = 0.f;
    if (n_iter > 0) {
        /* why: K_j and V_j (TMA) have landed; read by every tile */
        fa_mbar_wait(sm.kv_full, 0);
        int stage = 0;
        uint32_t phase = 0;
        for (int it = 0; it < n_iter; ++it) {
            const int i0 = (mb_lo + it % n_mb) * Br;
            /* dS buffer it & 1: reused without a barrier, as dS^T in fa_bwd_sm90_pipe_kernel.cuh */
            const uint32_t sds = sm.ds + (uint32_t)(it & 1) * (uint32_t)(Bc * Br * 2);
            warpgroup_bwd_tile80<kBf16>(a, seq, sm, dk, dv, stage, phase, sds, it == 0, i0, j0, s_lse[stage],
                                        s_dsum[stage]);
            if (++stage == kStages) {
                stage = 0;
                phase ^= 1u;
            }
        }
    }
    warpgroup_store_dkdv<kBf16, D>(a, seq, b, hk, j0, dk, dv);
}

#endif /* FA_SM90_DEVICE */

/* Grid (key block, kv head, batch), 384 threads, dynamic shared memory fa_bwd_sm90_pipe80_cfg::kSmemBytes;
 * prm.tm_q / tm_do with Br-row boxes, prm.tm_dqacc with {32, Br} boxes (fa_bwd_sm90_pipe80_host.h). */
template <bool kBf16>
__global__ void __launch_bounds__(FA_BWD_SM90_PIPE_THREADS, 1)
fa_bwd_sm90_pipe80_kernel(const __grid_constant__ fa_bwd_sm90_params prm)
{
#if FA_SM90_DEVICE
    fa_bwd_sm90_pipe80_main<kBf16, FA_BWD_SM90_DQ_TMA>(prm);
#else
    /* other gencodes: never launched (fa_bwd_sm90_supported checks for the sm_90a image) */
    __trap();
#endif
}

/* The ordered (deterministic) instance (opt-in, FLASH_ATTN_C_SM90_BWD_DET=ordered_br): the same grid,
 * shared memory and maps, plus prm.a.dq_sem with dq_sem_rows = Br (fa_bwd_sm90_ordered.h). */
template <bool kBf16>
__global__ void __launch_bounds__(FA_BWD_SM90_PIPE_THREADS, 1)
fa_bwd_sm90_pipe80_ordered_kernel(const __grid_constant__ fa_bwd_sm90_params prm)
{
#if FA_SM90_DEVICE
    fa_bwd_sm90_pipe80_main<kBf16, FA_BWD_SM90_DQ_ORDERED>(prm);
#else
    __trap(); /* as above */
#endif
}

#endif /* FA_BWD_SM90_PIPE80_CUH */
