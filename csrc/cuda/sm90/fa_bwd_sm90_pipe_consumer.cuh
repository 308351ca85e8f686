/* fa_bwd_sm90_pipe_consumer.cuh - one query block of a consumer warpgroup in the pipelined Hopper
 * backward (fa_bwd_sm90_pipe_kernel.cuh: roles, ring protocol, named barriers): S^T, dP^T, P^T,
 * dS^T (warpgroup_tile_pds, the products of fa_bwd_sm90_tile.cuh), then dV += P^T dO,
 * dK += dS^T Q and dQ = dS K in one of two orders: warpgroup_bwd_tile (kDq = NONE / RED: dV and dK
 * issued together, then dQ, waited at once, dQ by red.add) or warpgroup_bwd_tile_tma (kDq = TMA,
 * FA3's order: dQ overlaps dK, its fragments go to the dQ writer's staging buffer: the second half
 * warpgroup_tile_dk_stage_dq, shared with the Br = 80 and 128 tiles); and the final
 * dK / dV stores (warpgroup_store_dkdv). Warpgroup wg = 0, 1 owns keys [j0 + 64 wg, + 64).
 */
#ifndef FA_BWD_SM90_PIPE_CONSUMER_CUH
#define FA_BWD_SM90_PIPE_CONSUMER_CUH

#include "fa_bwd_sm90_pipe80_dq.cuh"       /* warpgroup_stage_dqt */
#include "fa_bwd_sm90_pipe_dq_writer.cuh" /* warpgroup_stage_dq */
#include "fa_bwd_sm90_pipe_layout.cuh"

#if FA_SM90_DEVICE

/* A consumer thread is done with a slot: its wgmmas reading the slot's Q/dO completed and its
 * LSE/D reads are done; the empty barrier expects all 256 consumer threads. Why every thread and
 * not one lane per warp after __syncwarp: that form is ordered too (bar.warp.sync, then lane 0's
 * release), but compute-sanitizer racecheck does not follow it and reported each LSE/D read
 * against the producer's next store into the slot; with every thread arriving: 0 hazards at the
 * same speed (H100 run 37). */
static __device__ __forceinline__ void thread_release_bwd_slot(uint32_t bar)
{
    fa_mbar_arrive(bar);
}

/* First half of a consumer tile: S^T, dP^T, P^T, dS^T, packed as the A fragments pa (P^T) and
 * dsa (dS^T) of the dV / dK products, and with kStoreDs dS^T into sds ([Bc][Br] swizzled, this
 * iteration's buffer) for dQ. The math and the fragment maps of fa_bwd_sm90_kernel's loop body;
 * only the waits differ (mbarriers of the slot instead of cp.async groups + __syncthreads).
 * lse_s, dsum_s: the slot's [Br] rows. Leaves the slot's Q / dO in use (dV, dK read them).
 * kFeat (the FEAT instance: softcap and / or ALiBi, slope = this query head's, 0 = off): P^T and
 * dS^T in one pass once dP^T is in too (thread_probs_ds_feat), without the overlap of P^T with the
 * dP^T product that the plain path has. */
template <bool kBf16, int D, int Br, bool kStoreDs, bool kFeat = false>
static __device__ __forceinline__ void warpgroup_tile_pds(const fa_bwd_args &a, const fa_seq &seq,
                                                          const fa_bwd_pipe_smem &sm, int stage, uint32_t phase,
                                                          uint32_t sds, int i0, int j0, const float *lse_s,
                                                          const float *dsum_s, uint32_t (&pa)[Br / 16][4],
                                                          uint32_t (&dsa)[Br / 16][4], float slope = 0.f)
{
    constexpr int Bc = FA_BWD_SM90_BC;
    constexpr uint32_t kQBytes = Br * D * 2;
    const int tid = threadIdx.x - 128, wg = tid / 128, wq = (tid / 32) % 4, lane = tid % 32;
    const int g = lane / 4, t = lane % 4;
    const int sq = seq.sq, sk = seq.sk, off = sk - sq;
    const int key_base = j0 + 64 * wg + 16 * wq + g;
    const uint32_t q_st = sm.q + (uint32_t)stage * kQBytes, do_st = sm.dout + (uint32_t)stage * kQBytes;
    const uint64_t dK_kmaj = fa_wgmma_desc_sw128(sm.k + (uint32_t)wg * (64 * 128), 16u, 1024u);
    const uint64_t dV_kmaj = fa_wgmma_desc_sw128(sm.v + (uint32_t)wg * (64 * 128), 16u, 1024u);

    float s[Br / 2], dp[Br / 2];
    /* why: Q_i (TMA bytes) and LSE_i (the producer lanes' stores) of this slot have landed */
    fa_mbar_wait(sm.q_full + 8u * stage, phase);
    fa_wgmma_fence();
    warpgroup_gemm_kq_t<kBf16, D, Br>(s, dK_kmaj, q_st);
    fa_wgmma_commit();
    /* why: dO_i and D_i of this slot have landed (separate barrier: S^T starts before dO is in) */
    fa_mbar_wait(sm.do_full + 8u * stage, phase);
    fa_wgmma_fence();  /* dp is an accumulator of the group below (ptxas injected it otherwise: C7519) */
    warpgroup_gemm_kq_t<kBf16, D, Br>(dp, dV_kmaj, do_st);
    fa_wgmma_commit();

    const bool need_mask = fa_bwd_tile_need_mask<Br, Bc>(a, i0, j0, sk, off); /* edge tile? */
    /* queries past sq: Q, dO rows zero-filled by TMA, LSE = +inf, D = 0, so P = exp2(-inf) = 0 and
     * dS = 0 * (0 - 0) = 0 exactly: their dQ rows are true zeros (the TMA reduce clips them anyway) */
    if constexpr (kFeat) {
        fa_wgmma_wait<0>(); /* S^T and dP^T ready */
        fa_reg_fence(s);
        fa_reg_fence(dp);
        thread_probs_ds_feat<Br>(s, dp, a, lse_s, dsum_s, need_mask, key_base, i0, sk, off, t, slope);
    } else {
        fa_wgmma_wait<1>(); /* S^T ready, dP^T may still run */
        fa_reg_fence(s);
        thread_probs_t<Br>(s, a, lse_s, need_mask, key_base, i0, sk, off, t);
        fa_wgmma_wait<0>();
        fa_reg_fence(dp);
        thread_ds_t<Br>(dp, s, dsum_s, t);
    }

#pragma unroll
    for (int kk = 0; kk < Br / 16; ++kk) {
        fa_pack_c_to_a<kBf16>(pa[kk], &s[8 * kk], &s[8 * kk + 4]);
        fa_pack_c_to_a<kBf16>(dsa[kk], &dp[8 * kk], &dp[8 * kk + 4]);
    }
    if (kStoreDs) {
        /* dS^T rows = keys 64 wg + 16 wq + g + 8 (q & 1), query pair 2t of n-block 2 kk + (q >> 1) */
#pragma unroll
        for (int kk = 0; kk < Br / 16; ++kk)
#pragma unroll
            for (int q = 0; q < 4; ++q)
                asm volatile("st.shared.b32 [%0], %1;\n" ::"r"(sds + fa_ds_t_off(kk, q, wg, wq, g, t)), "r"(dsa[kk][q])
                             : "memory");
    }
}

/* End of a consumer tile without dQ (kDq = NONE): the committed dV / dK group completes, then this
 * thread releases the slot (empty: its EMPTY mbarrier). kN: dK / dV accumulators per thread. */
template <int kN>
static __device__ __forceinline__ void warpgroup_end_tile_no_dq(float (&dk)[kN], float (&dv)[kN], uint32_t empty)
{
    fa_wgmma_wait<0>();
    fa_reg_fence(dk);
    fa_reg_fence(dv);
    /* why: this thread's reads of the slot (dK/dV wgmmas, LSE, D) are complete: 1 of 256 arrivals */
    thread_release_bwd_slot(empty);
}

/* dq_accum (total_q, h, d) rows i0 + row0 + 16 wq + g + 8 half, dims col0 + 8 jn + 2 t += this
 * thread's fragments of a 64-query x kN-dim dQ tile (unscaled; the convert kernel applies the
 * scale). Rows past sq and dims past d are not added. (wq, g, t): warp in the warpgroup, lane / 4,
 * lane % 4, as the caller computed them (a different derivation changes the caller's SASS). */
template <int kN>
static __device__ __forceinline__ void thread_red_add_dq(const fa_bwd_args &a, const fa_seq &seq,
                                                         const float (&dqa)[kN / 2], int h, int i0, int row0,
                                                         int col0, int wq, int g, int t)
{
    float *acc = a.dq_accum + ((seq.q_row0 + i0) * a.heads + h) * (int64_t)a.head_dim;
    /* 32-bit offsets within the tile (fewer 64-bit address registers at the 240 cap): at most
     * Br x heads x d < 128 x 65536 x 128 = 2^30 (d <= 128), 64 x 65536 x 256 = 2^30 (d = 256) */
    const int row_step = a.heads * a.head_dim;
#pragma unroll
    for (int jn = 0; jn < kN / 8; ++jn)
#pragma unroll
        for (int half = 0; half < 2; ++half) {
            const int m = row0 + 16 * wq + g + 8 * half, col = col0 + 8 * jn + 2 * t;
            if (i0 + m < seq.sq && col < a.head_dim)
                fa_red_add_f32x2(acc + m * row_step + col, dqa[4 * jn + 2 * half], dqa[4 * jn + 2 * half + 1]);
        }
}

/* dQ = dS K of this consumer warpgroup's 64-query x N-dim tile (fa_bwd_pipe_dq_split) over all Bc
 * keys, issued and committed: A = the 64-query column block of dS^T (sds) that holds its queries,
 * B = K from its first dim (N = 32 at dims 32..63: 64 bytes into the column block). */
template <bool kBf16, int D, int Br>
static __device__ __forceinline__ void warpgroup_issue_dq(float (&dqa)[fa_bwd_pipe_dq_split<D, Br>::kN / 2],
                                                          uint32_t sds, uint32_t sk, int wg)
{
    using Dq = fa_bwd_pipe_dq_split<D, Br>;
    constexpr int Bc = FA_BWD_SM90_BC;
    const int row0 = Dq::row0(wg), col0 = Dq::col0(wg);
    const uint32_t a = sds + (uint32_t)(row0 / 64) * (uint32_t)(Bc * 128);
    const uint32_t b = sk + (uint32_t)(col0 / 64) * (uint32_t)(Bc * 128) + (uint32_t)(col0 % 64) * 2u;
    fa_wgmma_fence();
    warpgroup_gemm_dq<kBf16, Bc / 16, Dq::kN>(dqa, a, b, 0);
    fa_wgmma_commit();
}

/* One consumer tile, kDq = NONE or RED (step 1's order): dV += P^T dO, dK += dS^T Q, and with RED
 * dQ = dS K added by red.add once everything completed. sds: this iteration's dS^T buffer. */
template <bool kBf16, int D, int Br, int kDq>
static __device__ __forceinline__ void warpgroup_bwd_tile(const fa_bwd_args &a, const fa_seq &seq,
                                                          const fa_bwd_pipe_smem &sm, float (&dk)[D / 2],
                                                          float (&dv)[D / 2], int stage, uint32_t phase, uint32_t sds,
                                                          int h, int i0, int j0, const float *lse_s,
                                                          const float *dsum_s)
{
    using Dq = fa_bwd_pipe_dq_split<D, Br>;
    constexpr uint32_t kQBytes = Br * D * 2;
    const int tid = threadIdx.x - 128, wg = tid / 128, wq = (tid / 32) % 4, lane = tid % 32;
    const int g = lane / 4, t = lane % 4;
    const uint32_t q_st = sm.q + (uint32_t)stage * kQBytes, do_st = sm.dout + (uint32_t)stage * kQBytes;

    uint32_t pa[Br / 16][4], dsa[Br / 16][4]; /* P^T, dS^T as A fragments (16 queries per k-step) */
    warpgroup_tile_pds<kBf16, D, Br, kDq == FA_BWD_SM90_DQ_RED>(a, seq, sm, stage, phase, sds, i0, j0, lse_s, dsum_s,
                                                                pa, dsa);
    fa_wgmma_fence();
    warpgroup_gemm_dv_dk<kBf16, D, Br>(dv, dk, pa, dsa, q_st, do_st);
    fa_wgmma_commit();
    if (kDq == FA_BWD_SM90_DQ_NONE) {
        warpgroup_end_tile_no_dq(dk, dv, sm.empty + 8u * stage);
        return;
    }

    fa_fence_proxy_async_smem(); /* the dS^T stores before the dQ wgmma (async proxy) reads them */
    /* why: the dQ product reads the dS^T rows of both warpgroups */
    fa_named_barrier_sync<256>(FA_BWD_SM90_PIPE_BAR_DS);
    float dqa[Dq::kN / 2];
    warpgroup_issue_dq<kBf16, D, Br>(dqa, sds, sm.k, wg);
    fa_wgmma_wait<0>();
    fa_reg_fence(dqa);
    fa_reg_fence(dk);
    fa_reg_fence(dv);
    /* why: dK/dV/dQ wgmmas of this thread completed, LSE/D read: the slot may be refilled */
    thread_release_bwd_slot(sm.empty + 8u * stage);

    thread_red_add_dq<Dq::kN>(a, seq, dqa, h, i0, Dq::row0(wg), Dq::col0(wg), wq, g, t);
}

/* Second half of a consumer tile with staged dQ (kDq = TMA / ORDERED, FA3's order), once the dV
 * and the dQ groups are in flight (committed in that order): dV completes, dK += dS^T Q is issued,
 * dQ completes and its fragments dq go to the warpgroup's staging buffer for the writer warp (dQ^T
 * at Br = 80: fa_bwd_pipe_dq_split::kTransposed), dK completes, and this thread releases the slot.
 * first: tile 0 of the CTA (the staging buffer has never been used: no EMPTY sync); wg, wq, lane:
 * warpgroup, warp in it, lane, as the caller computed them (wq, lane: dQ^T staging only). */
template <bool kBf16, int D, int Br>
static __device__ __forceinline__ void
warpgroup_tile_dk_stage_dq(float (&dk)[D / 2], float (&dv)[D / 2], float (&dq)[fa_bwd_pipe_dq_split<D, Br>::kN / 2],
                           const uint32_t (&dsa)[Br / 16][4], uint32_t q_st, const fa_bwd_pipe_smem &sm, int stage,
                           bool first, int wg, int wq, int lane)
{
    using Dq = fa_bwd_pipe_dq_split<D, Br>;
    fa_wgmma_wait<1>(); /* dV done (pa free), dQ may still run */
    fa_reg_fence(dv);
    fa_wgmma_fence();
    warpgroup_gemm_rs_q<kBf16, D, Br>(dk, dsa, q_st);
    fa_wgmma_commit(); /* group: dK */
    fa_wgmma_wait<1>(); /* dQ done, dK may still run */
    fa_reg_fence(dq);
    const uint32_t stg = sm.dq + (uint32_t)wg * Dq::kStageBytes;
    /* why: the writer warp's TMA has read this warpgroup's previous tile out of the buffer (tile
     * 0: never used) */
    if (!first) fa_named_barrier_sync<FA_BWD_SM90_PIPE_DQ_BAR_THREADS>(FA_BWD_SM90_PIPE_BAR_DQ_EMPTY + wg);
    if constexpr (Dq::kTransposed)
        warpgroup_stage_dqt<Br>(dq, stg, wq, lane);
    else
        warpgroup_stage_dq<Dq::kN>(dq, stg);
    fa_fence_proxy_async_smem(); /* this thread's staging stores before the TMA (async proxy) reads them */
    /* why: 1 of the 128 arrivals the writer warp waits for before it issues the reduce */
    fa_named_barrier_arrive<FA_BWD_SM90_PIPE_DQ_BAR_THREADS>(FA_BWD_SM90_PIPE_BAR_DQ_FULL + wg);
    fa_wgmma_wait<0>(); /* dK done */
    fa_reg_fence(dk);
    /* why: this thread's reads of the slot (the dV/dK wgmmas on Q, dO; LSE, D) are complete */
    thread_release_bwd_slot(sm.empty + 8u * stage);
}

/* One consumer tile, kDq = TMA, FA3's order: dQ = dS K overlaps the dK product, its fragments go
 * to the warpgroup's staging buffer for the writer warp (protocol: header comment). first: tile 0
 * of the CTA (the staging buffer has never been used: no EMPTY sync). sds: this iteration's dS^T
 * buffer. kFeat, slope: softcap / ALiBi (warpgroup_tile_pds). */
template <bool kBf16, int D, int Br, bool kFeat = false>
static __device__ __forceinline__ void warpgroup_bwd_tile_tma(const fa_bwd_args &a, const fa_seq &seq,
                                                              const fa_bwd_pipe_smem &sm, float (&dk)[D / 2],
                                                              float (&dv)[D / 2], int stage, uint32_t phase,
                                                              uint32_t sds, bool first, int i0, int j0,
                                                              const float *lse_s, const float *dsum_s,
                                                              float slope = 0.f)
{
    using Dq = fa_bwd_pipe_dq_split<D, Br>;
    constexpr uint32_t kQBytes = Br * D * 2;
    const int wg = (threadIdx.x - 128) / 128;
    const int wq = (threadIdx.x / 32) % 4, lane = threadIdx.x % 32; /* (unused: dQ is not transposed) */
    const uint32_t q_st = sm.q + (uint32_t)stage * kQBytes, do_st = sm.dout + (uint32_t)stage * kQBytes;

    uint32_t pa[Br / 16][4], dsa[Br / 16][4]; /* P^T, dS^T as A fragments (16 queries per k-step) */
    warpgroup_tile_pds<kBf16, D, Br, true, kFeat>(a, seq, sm, stage, phase, sds, i0, j0, lse_s, dsum_s, pa, dsa,
                                                  slope);
    fa_wgmma_fence();
    warpgroup_gemm_rs_q<kBf16, D, Br>(dv, pa, do_st);
    fa_wgmma_commit(); /* group: dV */
    fa_fence_proxy_async_smem(); /* the dS^T stores before the dQ wgmma (async proxy) reads them */
    /* why: the dQ product reads the dS^T rows of both warpgroups */
    fa_named_barrier_sync<256>(FA_BWD_SM90_PIPE_BAR_DS);
    float dqa[Dq::kN / 2];
    warpgroup_issue_dq<kBf16, D, Br>(dqa, sds, sm.k, wg); /* group: dQ */
    warpgroup_tile_dk_stage_dq<kBf16, D, Br>(dk, dv, dqa, dsa, q_st, sm, stage, first, wg, wq, lane);
}

/* dK = scale sum dS^T Q, dV = sum P^T dO of this consumer thread: rows key_base + 8 half, dims
 * 8 jn + 2 t (dK, dV: (b, sk, hk, d) | (total_k, hk, d), rows past sk / dims past d not written). */
template <bool kBf16, int D>
static __device__ __forceinline__ void warpgroup_store_dkdv(const fa_bwd_args &a, const fa_seq &seq, int b, int hk,
                                                            int j0, const float (&dk)[D / 2], const float (&dv)[D / 2])
{
    const int tid = threadIdx.x - 128, wg = tid / 128, wq = (tid / 32) % 4, lane = tid % 32;
    const int g = lane / 4, t = lane % 4;
    const int key_base = j0 + 64 * wg + 16 * wq + g;
    uint16_t *dkb = a.dk + fa_bwd_base(seq, b, seq.k_row0, hk, a.dk_batch_stride, a.dk_row_stride, a.dk_head_stride);
    uint16_t *dvb = a.dv + fa_bwd_base(seq, b, seq.k_row0, hk, a.dv_batch_stride, a.dv_row_stride, a.dv_head_stride);
#pragma unroll
    for (int jn = 0; jn < D / 8; ++jn)
#pragma unroll
        for (int half = 0; half < 2; ++half) {
            const int j = key_base + 8 * half, col = 8 * jn + 2 * t;
            if (j < seq.sk && col < a.head_dim) {
                *(uint32_t *)(dkb + (int64_t)j * a.dk_row_stride + col) =
                    fa_pack_f32x2<kBf16>(dk[4 * jn + 2 * half] * a.scale, dk[4 * jn + 2 * half + 1] * a.scale);
                *(uint32_t *)(dvb + (int64_t)j * a.dv_row_stride + col) =
                    fa_pack_f32x2<kBf16>(dv[4 * jn + 2 * half], dv[4 * jn + 2 * half + 1]);
            }
        }
}

#endif /* FA_SM90_DEVICE */

#endif /* FA_BWD_SM90_PIPE_CONSUMER_CUH */
