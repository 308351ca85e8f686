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
 *     accumulators start at -LSE2 / scale_log2 and -D (thread_init_acc80; host: scale > 0), so no
 *     LSE / D value is live at the exp and dS phases; warpgroup / warp indices via shfl (uniform
 *     registers); one base address per store loop; the dS stores after the dV issue;
 *   - the mask of P is a second pass under one branch (thread_probs80): the default kernel
 *     branches on need_mask per element.
 * fa_bwd_sm90_pipe80_ordered_kernel (opt-in, FLASH_ATTN_C_SM90_BWD_DET=ordered_br): the deterministic
 * instance, the same body with the grid's x reversed and the ordered writer of
 * fa_bwd_sm90_pipe80_dq_order.cuh (turn counters per 80 query rows).
 * Shared memory: K, V 2 x 32 KB, Q, dO 2 stages x 20 KB each, dS 2 x 20 KB, dQ^T staging 2 x 20 KB,
 * + 1 KB alignment = 225 KB, + 1.3 KB static (LSE, D, mbarriers) of the 227 KB.
 */
#ifndef FA_BWD_SM90_PIPE80_CUH
#define FA_BWD_SM90_PIPE80_CUH

#include "fa_bwd_sm90_pipe_consumer.cuh" /* thread_release_bwd_slot, warpgroup_store_dkdv */
#include "fa_bwd_sm90_pipe80_dq.cuh"
#include "fa_bwd_sm90_pipe80_dq_order.cuh" /* the ORDERED instance's writer */
#include "fa_bwd_sm90_pipe_layout.cuh"
#include "fa_bwd_sm90_pipe_producer.cuh"

/* The tile of the Br = 80 form (fa_tuning.h row FA_KERNEL_BWD_SM90_PIPE80, bucket 128 only). */
struct fa_bwd_sm90_pipe80_cfg {
    static constexpr int D = 128;
    static constexpr fa_tuning_row kRow = fa_tuning_find(FA_KERNEL_BWD_SM90_PIPE80, 90, D);
    static constexpr int Br = kRow.br, Bc = kRow.bc, kStages = kRow.stages;
    static_assert(Br == 80 && Bc == FA_BWD_SM90_BC && kStages == 2 && kRow.warps * 32 == FA_BWD_SM90_PIPE_THREADS,
                  "the Br = 80 kernel: 80 x 128 tiles, 2 stages, 12 warps");
    /* per consumer warpgroup: 2 boxes {32 dims, Br rows} fp32 of dQ^T */
    static constexpr size_t kDqStageBytes = 2 * 32 * (size_t)Br * 4;
    /* K, V; kStages slots of Q and dO; 2 dS buffers; 2 dQ staging buffers; + 1024 to align the base */
    static constexpr size_t kSmemBytes =
        2 * (size_t)Bc * D * 2 + 2 * (size_t)kStages * Br * D * 2 + 2 * (size_t)Bc * Br * 2 + 2 * kDqStageBytes + 1024;
    static constexpr size_t kStaticBytes = 2 * (size_t)kStages * Br * 4 + (1 + 3 * (size_t)kStages) * 8;
    static_assert(kSmemBytes + kStaticBytes <= 227 * 1024, "sm_90: at most 227 KB of shared memory per block");
    /* every tile and box 1024-aligned (128-byte swizzle atoms): Br x 128 bytes is */
    static_assert((Br * 128) % 1024 == 0, "Br must be a multiple of 8");
};

#if FA_SM90_DEVICE

/* acc[4 jn + e] = v * lse2[query 8 jn + 2t + (e & 1)] for both key rows (e >> 1): the wgmma C
 * that S^T or dP^T then accumulates onto (scale_d = 1: warpgroup_gemm_kq_t with acc_in), so that
 * S^T - LSE2 / scale_log2 and dP^T - D come out of the tensor core and no LSE / D value is held in
 * registers at the exp / dS phase (held there, 20 of them each made the consumers spill at 240). */
template <int Br>
static __device__ __forceinline__ void thread_init_acc80(float (&acc)[Br / 2], const float *lse2, float v, int t)
{
#pragma unroll
    for (int jn = 0; jn < Br / 8; ++jn)
#pragma unroll
        for (int e = 0; e < 4; ++e) acc[4 * jn + e] = v * lse2[8 * jn + 2 * t + (e & 1)];
    /* 40 distinct registers: the two key rows' equal values merged into one made NVVM copy them
     * between the wgmmas of the chain, and ptxas then waited for each (C7517) */
    fa_reg_fence(acc);
}

/* s = S^T - LSE2 / scale_log2 (thread_init_acc80) -> P^T in place: exp2(s scale_log2), 0 where key
 * j = key_base + 8 (e >> 1) does not see query i = i0 + c (need_mask: a second pass under one
 * branch, not a test per element as thread_probs_t). Visible iff j < sk and -window_left <=
 * j - i - off <= window_right (a negative window: no bound); j - i - off = u0 + 8 (e >> 1) - 8 jn -
 * (e & 1) with u0 = key_base - i0 - 2t - off. Rows past sq: LSE2 = +inf, so s = -inf and P = 0
 * (scale_log2 > 0: fa_bwd_sm90_pipe80_host.h). */
template <int Br>
static __device__ __forceinline__ void thread_probs80(float (&s)[Br / 2], const fa_bwd_args &a, bool need_mask,
                                                      int key_base, int i0, int sk, int off, int t)
{
#pragma unroll
    for (int i = 0; i < Br / 2; ++i) s[i] = exp2f(s[i] * a.scale_log2);
    if (need_mask) {
        const int hi = a.window_right < 0 ? (1 << 30) : a.window_right;
        const int lo = a.window_left < 0 ? -(1 << 30) : -a.window_left;
        const int u0 = key_base - i0 - 2 * t - off;
#pragma unroll
        for (int jn = 0; jn < Br / 8; ++jn)
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const int dd = u0 + 8 * (e >> 1) - 8 * jn - (e & 1);
                const bool vis = key_base + 8 * (e >> 1) < sk && dd <= hi && dd >= lo;
                s[4 * jn + e] = vis ? s[4 * jn + e] : 0.f;
            }
    }
}

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
    constexpr int D = fa_bwd_sm90_pipe80_cfg::D, Br = fa_bwd_sm90_pipe80_cfg::Br, Bc = FA_BWD_SM90_BC;
    constexpr uint32_t kQBytes = Br * D * 2;
    /* warpgroup and warp as warp-uniform values (shfl from lane 0, as FA3's warp_group_idx): ptxas
     * keeps what derives from them (descriptors, smem offsets) in uniform registers */
    /* %tid.x read here (volatile), not CSE'd with the kernel's reads: otherwise its lane / warp
     * values stay live across the tile loop and spill at the exp phase's peak */
    uint32_t tid_x;
    asm volatile("mov.u32 %0, %%tid.x;\n" : "=r"(tid_x));
    const int tid = (int)tid_x - 128, lane = tid % 32;
    const int wg = __shfl_sync(0xffffffffu, tid / 128, 0), wq = __shfl_sync(0xffffffffu, (tid / 32) % 4, 0);
    const int t = lane % 4;
    const int sk = seq.sk, off = sk - seq.sq;
    const int key_base = j0 + 64 * wg + 16 * wq + lane / 4;
    const uint32_t q_st = sm.q + (uint32_t)stage * kQBytes, do_st = sm.dout + (uint32_t)stage * kQBytes;
    const uint64_t dK_kmaj = fa_wgmma_desc_sw128(sm.k + (uint32_t)wg * (64 * 128), 16u, 1024u);
    const uint64_t dV_kmaj = fa_wgmma_desc_sw128(sm.v + (uint32_t)wg * (64 * 128), 16u, 1024u);

    float s[Br / 2], dp[Br / 2];
    /* why: Q_i (TMA bytes) and LSE_i (the producer lanes' stores) of this slot have landed */
    fa_mbar_wait(sm.q_full + 8u * stage, phase);
    /* why: dO_i and D_i of this slot have landed (both accumulators are set before either chain:
     * setting dp while S^T ran made ptxas wait for S^T first, C7517) */
    fa_mbar_wait(sm.do_full + 8u * stage, phase);
    thread_init_acc80<Br>(s, lse_s, -1.f / a.scale_log2, t); /* S^T - LSE2 / scale_log2 */
    thread_init_acc80<Br>(dp, dsum_s, -1.f, t);              /* dP^T - D */
    fa_wgmma_fence();
    warpgroup_gemm_kq_t<kBf16, D, Br>(s, dK_kmaj, q_st, true); /* onto the preset */
    fa_wgmma_commit();
    fa_wgmma_fence(); /* dp is an accumulator of the group below */
    warpgroup_gemm_kq_t<kBf16, D, Br>(dp, dV_kmaj, do_st, true);
    fa_wgmma_commit();

    const bool need_mask = fa_bwd_tile_need_mask<Br, Bc>(a, i0, j0, sk, off); /* edge tile? */
    fa_wgmma_wait<1>(); /* S^T ready, dP^T may still run */
    fa_reg_fence(s);
    thread_probs80<Br>(s, a, need_mask, key_base, i0, sk, off, t);
    fa_wgmma_wait<0>();
    fa_reg_fence(dp);
    uint32_t pa[Br / 16][4], dsa[Br / 16][4]; /* P^T, dS^T as A fragments (16 queries per k-step) */
    /* per k-step, so that its s / dp registers die at once */
#pragma unroll
    for (int kk = 0; kk < Br / 16; ++kk) {
#pragma unroll
        for (int i = 8 * kk; i < 8 * kk + 8; ++i) dp[i] *= s[i]; /* dS^T = P^T o (dP^T - D); past sq: P = 0 */
        fa_pack_c_to_a<kBf16>(pa[kk], &s[8 * kk], &s[8 * kk + 4]);
        fa_pack_c_to_a<kBf16>(dsa[kk], &dp[8 * kk], &dp[8 * kk + 4]);
    }
    fa_wgmma_fence();
    warpgroup_gemm_rs_q<kBf16, D, Br>(dv, pa, do_st);
    fa_wgmma_commit(); /* group: dV */
    /* dS stores while dV runs (after the packing: its address registers at the s / dp peak spilled) */
    warp_store_ds_t<Br>(dsa, sds, wg, wq, lane);
    fa_fence_proxy_async_smem(); /* the dS stores before the dQ^T wgmma (async proxy) reads them */
    /* why: the dQ^T product reads the dS rows (keys) of both warpgroups */
    fa_named_barrier_sync<256>(FA_BWD_SM90_PIPE_BAR_DS);
    float dqt[Br / 2];
    warpgroup_issue_dqt<kBf16, Br>(dqt, sds, sm.k, wg); /* group: dQ^T */
    fa_wgmma_wait<1>();                                 /* dV done (pa free), dQ^T may still run */
    fa_reg_fence(dv);
    fa_wgmma_fence();
    warpgroup_gemm_rs_q<kBf16, D, Br>(dk, dsa, q_st);
    fa_wgmma_commit();  /* group: dK */
    fa_wgmma_wait<1>(); /* dQ^T done, dK may still run */
    fa_reg_fence(dqt);
    const uint32_t stg = sm.dq + (uint32_t)wg * (uint32_t)fa_bwd_sm90_pipe80_cfg::kDqStageBytes;
    /* why: the writer warp's TMA has read this warpgroup's previous tile out of the buffer */
    if (!first) fa_named_barrier_sync<FA_BWD_SM90_PIPE_DQ_BAR_THREADS>(FA_BWD_SM90_PIPE_BAR_DQ_EMPTY + wg);
    warpgroup_stage_dqt<Br>(dqt, stg, wq, lane);
    fa_fence_proxy_async_smem(); /* this thread's staging stores before the TMA (async proxy) reads them */
    /* why: 1 of the 128 arrivals the writer warp waits for before it issues the reduce */
    fa_named_barrier_arrive<FA_BWD_SM90_PIPE_DQ_BAR_THREADS>(FA_BWD_SM90_PIPE_BAR_DQ_FULL + wg);
    fa_wgmma_wait<0>(); /* dK done */
    fa_reg_fence(dk);
    /* why: this thread's reads of the slot (the dV/dK wgmmas on Q, dO; LSE, D) are complete */
    thread_release_bwd_slot(sm.empty + 8u * stage);
}

/* The kernel body (the __global__ wrappers below): kDq = TMA (the atomic kernel) or ORDERED (the
 * deterministic one: key block reversed, fa_bwd_pipe_n_block, and the ordered writer
 * warp_write_dqt_ordered; the consumers are the same). prm: the kernel's __grid_constant__ parameter. */
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
        else if (threadIdx.x < 64) {
            if constexpr (kDq == FA_BWD_SM90_DQ_ORDERED)
                warp_write_dqt_ordered<Br>(prm, sm, seq.sq, seq.sk, b, hk, n_block, mb_lo, n_mb, n_iter);
            else
                warp_write_dqt<Br>(prm, sm, seq.sq, b, hk, mb_lo, n_mb, n_iter);
        }
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
