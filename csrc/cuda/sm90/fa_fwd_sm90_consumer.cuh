/* fa_fwd_sm90_consumer.cuh - the consumer warpgroups of the Hopper forward
 * (fa_fwd_sm90_kernel.cuh): the loop over the key tiles of one work item with the online softmax
 * (warpgroup_attend_item) and the release of ring / Q slots; the epilogue that normalizes O and
 * writes O and LSE is fa_fwd_sm90_epilogue.cuh (warpgroup_store_item). Each consumer warpgroup
 * owns 64 query rows of the item, so the softmax needs no communication between warpgroups; only
 * the ping-pong turns (fa_fwd_sm90_block.cuh) and the varlen V zeroing order them.
 *
 * Per key tile j (Bc keys): S = Q K_j^T (wgmma, A = Q and B = K_j from shared memory, both
 * K-major); mask (only tiles that straddle the band edge or the sequence end), online softmax;
 * O += P V_j (wgmma, A = P from registers, B = V_j MN-major). Intra-warpgroup overlap: S_j is
 * issued together with O += P_{j-1} V_{j-1}; the softmax of S_j runs on the CUDA cores while the
 * tensor cores still work on P_{j-1} V_{j-1}; O is rescaled by alpha_{j-1} just before that
 * product is issued (while Q K_j^T runs). Registers (d = 128, Bc = 128): O 64, S 64, P 32.
 */
#ifndef FA_FWD_SM90_CONSUMER_CUH
#define FA_FWD_SM90_CONSUMER_CUH

#include "fa_fwd_sm90_math.cuh"
#include "fa_fwd_sm90_dropout.cuh"
#include "fa_fwd_sm90_epilogue.cuh"  /* warpgroup_store_item, thread_issues_o */

#if FA_SM90_DEVICE

/* A consumer warp is done reading a slot: one arrival per warp (the slot's empty barrier
 * expects 4 kWG). Why per warp: each warp's wgmma.wait_group covers that warp's view of the
 * warpgroup's operations, so the slot is free only when all of them have waited. */
static __device__ __forceinline__ void warp_release_slot(uint32_t bar, int lane)
{
    __syncwarp();
    if (lane == 0) fa_mbar_arrive(bar);
}

/* A consumer warp is done with the Q slot in which its warpgroup staged a dense item's O: the
 * issuing thread first waits until its TMA stores have READ the staging (bulk_wait_read 0: the
 * global writes may still be in flight; its only open group is that item's, see the persistent
 * kernel), then one arrival per warp as warp_release_slot. The other warps have no access to the
 * slot left after the epilogue's named barrier, so their arrivals need no wait. */
static __device__ __forceinline__ void warp_release_staged_slot(uint32_t bar, int tid)
{
    if (thread_issues_o(tid)) fa_bulk_wait_read<0>();
    warp_release_slot(bar, tid & 31);
}

/* The score factors of instance (kFeat, kFeatSet) for (batch b, head h), what warpgroup_attend_item
 * takes: .x = mul, the exp2 factor (plain and ALiBi alone: scores stay in q.k units and exp2 folds
 * in scale log2(e); softcap alone, CAP / CAP_SLIM: tanh units, exp2 folds in softcap log2(e), one
 * multiply per score less (thread_scores_sm90); softcap in ANY: log2 units already, 1), .y = slope,
 * ALiBi's slope in the scores' units (the slope divided by the scale, or times log2(e) after a
 * softcap), 0 without ALiBi (DROP: neither feature). One place for the one-block and the
 * persistent kernels. */
template <bool kFeat, int kFeatSet>
static __device__ __forceinline__ float2 fa_sm90_score_factors(const fa_fwd_args &a, int b, int h)
{
    constexpr bool kCapOnly = fa_sm90_feat_cap_only(kFeatSet);
    const bool cap = kFeat && (kCapOnly || (kFeatSet == FA_SM90_FEAT_ANY && a.softcap > 0.f));
    const float mul = kCapOnly ? a.softcap_log2 : cap ? 1.f : a.scale_log2;
    const float slope = kFeat && (kFeatSet == FA_SM90_FEAT_ANY || kFeatSet == FA_SM90_FEAT_ALIBI) &&
                                a.alibi_slopes != NULL
                            ? a.alibi_slopes[(int64_t)b * a.alibi_batch_stride + h] * (cap ? FA_LOG2E : 1.f / a.scale)
                            : 0.f;
    return make_float2(mul, slope);
}

/* The key tiles of one item (it.n_tiles > 0) for consumer thread rw (warpgroup rw.wg: rows
 * it.m0 + 64 wg .. + 63): accumulates the unnormalized O, m_i and l_i (initialized by the caller:
 * 0, -inf, 0). The caller computes rw before its n_tiles test, where the epilogue shares the
 * values (computed in here instead, the one-block kernel's SASS changed).
 * Waits for Q on parity q_parity of sm.bar_q; takes the ring from (stage, phase), the slot of the
 * item's first tile, and leaves it at the slot after its last tile (the producer's order).
 * mul: exp2 factor of the scores (fa_fwd_sm90_kernel.cuh), slope: ALiBi (kFeat).
 * kDrop (dense kFeat only): dropout on P after the softmax step, so l_i sums the undropped P as
 * in the sm80 kernel (O = (dropout(P) V) / l, the 1 / (1 - p) in warpgroup_store_item): the keep
 * bits are drawn with the softmax and applied to the packed P (thread_dropout_packed_sm90).
 * q_release (persistent kernel): releases the previous item's Q slot (its Q empty barrier
 * bar_q_release, warp_release_staged_slot) once tile 0's Q K^T is issued: by then that item's O
 * TMA store has had this item's setup and first waits to read its staging, and the wait for it
 * overlaps the GEMM. The one-block kernel passes false (folded away). */
template <bool kBf16, int D, int Br, int Bc, int kStages, bool kFeat, bool kVarlen, bool kDrop = false,
          int kFeatSet = FA_SM90_FEAT_ANY>
static __device__ __forceinline__ void warpgroup_attend_item(float (&o)[D / 2], float (&m_i)[2], float (&l_i)[2],
                                                            const fa_fwd_args &a, const fa_sm90_layout &sm,
                                                            const fa_sm90_item &it, const fa_sm90_rows &rw, float mul,
                                                            float slope, int tid, uint32_t q_parity, int &stage,
                                                            uint32_t &phase, bool q_release = false,
                                                            uint32_t bar_q_release = 0u)
{
    constexpr int kWG = Br / 64;
    constexpr uint32_t kKVBytes = (uint32_t)Bc * D * 2;  /* one K (or V) slot */
    constexpr int kNB = Bc / 8;             /* 8-column n-blocks of S */
    constexpr int kDB = D / 8;              /* 8-column n-blocks of O */
    const int varlen = kVarlen;  /* the helpers take it as an argument; constant-folded */
    const int lane = rw.lane, wg = rw.wg, t4 = rw.t4;
    const int row0 = rw.row0, wg_r0 = rw.wg_r0, wg_r1 = rw.wg_r1;
    const int sk = it.mk.sk, t_hi = it.t_hi, n_tiles = it.n_tiles;
    const fa_mask_t mk = it.mk;
    const uint32_t sQ = sm.q, sK = sm.k, sV = sm.v;
    const uint32_t bar_kfull = sm.bar_kfull, bar_vfull = sm.bar_vfull;
    const uint32_t bar_kempty = sm.bar_kempty, bar_vempty = sm.bar_vempty;
    static_assert(!kDrop || (kFeat && !kVarlen), "dropout: the dense kFeat variant (fa_fwd_sm90_dropout.cuh)");
    uint64_t seed = 0, offset = 0;  /* Philox, as the sm80 kernel reads them (fa_fwd.h) */
    if (kDrop) fa_fwd_philox_seed(a, &seed, &offset);
    const int drop_b = it.b, drop_h = it.h;  /* dropout coordinates: sequence, query head */

    /* CAP_SLIM: a fixed exp2 offset instead of m_i, no alpha (fa_fwd_sm90_args.cuh) */
    constexpr bool kSlim = kFeatSet == FA_SM90_FEAT_CAP_SLIM;
    const float off = kSlim ? fa_sm90_cap_slim_offset(a.softcap_log2) : 0.f;

    float s[Bc / 2];
    uint32_t pa[Bc / 16][4];
    float alpha[2] = {0.f, 0.f};
#pragma unroll
    for (int i = 0; i < Bc / 2; ++i) s[i] = 0.f;

    constexpr bool kPP = fa_sm90_tile<D, kFeat, kFeatSet>::kPingPong;
    /* K-major A (Q) and B (K): SBO = 1024 (8 rows of 128 B), LBO unused; MN-major B (V):
     * SBO = 1024 (8 keys), LBO = Bc * 128 (from dims 0..63 to 64..127) */
    const uint64_t dq = fa_wgmma_desc_sw128(sQ + (uint32_t)wg * (64 * 128), 16u, 1024u);
    const uint64_t dk0 = fa_wgmma_desc_sw128(sK, 16u, 1024u);
    const uint64_t dv0 = fa_wgmma_desc_sw128(sV, (uint32_t)Bc * 128u, 1024u);
    int t = t_hi - 1;

    /* tile 0: S = Q K_0^T, softmax, P_0 */
    fa_mbar_wait(sm.bar_q, q_parity);
    fa_mbar_wait(bar_kfull + 8u * stage, phase);
    if (varlen && t_hi * Bc > sk) {
        /* tile 0 is the end-aligned one: its first t_hi Bc - sk rows are borrowed (header
         * comment). Zero them in its V slot before any P V reads it. */
        fa_mbar_wait(bar_vfull + 8u * stage, phase);
        block_zero_slot_rows<D, Bc, kWG * 128>(sV + (uint32_t)stage * kKVBytes, t_hi * Bc - sk, tid - 128);
        fa_fence_proxy_async_smem();  /* the zero stores before the wgmma (async proxy) reads */
        /* why: every consumer warpgroup's P V reads rows that the others zeroed */
        fa_named_barrier_sync<kWG * 128>(FA_SM90_BAR_ZERO_V);
    }
    if (wg != 0) warpgroup_sched_wait<kPP>(wg);  /* warpgroup 0 has the first turn */
    fa_wgmma_fence();  /* s was written by ordinary code (zeroed) */
    warpgroup_gemm_qk<kBf16, D, Br, Bc>(s, dq, fa_wgmma_desc_add(dk0, (uint32_t)stage * kKVBytes));
    fa_wgmma_commit();
    warpgroup_sched_pass<kPP, kWG>(wg);
    /* the previous item's Q slot (see above; after this item's Q full and first K full waits, so
     * the producer never waits on it for a load that these waits need) */
    if (q_release) warp_release_staged_slot(bar_q_release, tid);
    fa_wgmma_wait<0>();
    fa_reg_fence(s);
    warp_release_slot(bar_kempty + 8u * stage, lane);
    thread_scores_sm90<kFeat, kNB, Bc, kFeatSet>(s, a, mk, slope, row0, t4, wg_r0, wg_r1, t, varlen);
    if constexpr (kSlim) thread_softmax_fixed_sm90<kNB>(s, l_i, mul, off);
    else thread_softmax_sm90<kNB>(s, m_i, l_i, alpha, mul);  /* alpha = 0: scales the zero O */
    fa_sm90_keep<kNB> keep;  /* kDrop: the keep bits of the P in s (fa_fwd_sm90_dropout.cuh) */
    if constexpr (kDrop)
        warp_dropout_keep_sm90<kNB>(keep, seed, offset, drop_b, drop_h, row0, t * Bc, a.dropout_threshold);
    thread_pack_p<kBf16, Bc>(pa, s);
    if constexpr (kDrop) thread_dropout_packed_sm90<Bc>(pa, keep);

    /* tiles 1 .. n-1. Per tile j:
     *   issue S_j = Q K_j^T;  O *= alpha_{j-1} (O is idle: P_{j-2} V_{j-2} was waited for);
     *   issue O += P_{j-1} V_{j-1};  wait for S_j only;  softmax of S_j on the CUDA cores
     *   while the tensor cores run P_{j-1} V_{j-1};  wait for it;  P_j -> pa. */
    for (int it = 1; it < n_tiles; ++it) {
        const int pstage = stage;
        const uint32_t pphase = phase;
        if (++stage == kStages) {
            stage = 0;
            phase ^= 1u;
        }
        --t;
        fa_mbar_wait(bar_kfull + 8u * stage, phase);
        warpgroup_sched_wait<kPP>(wg);
        fa_wgmma_fence();  /* why: s was read and written by ordinary instructions */
        warpgroup_gemm_qk<kBf16, D, Br, Bc>(s, dq, fa_wgmma_desc_add(dk0, (uint32_t)stage * kKVBytes));
        fa_wgmma_commit();
        if constexpr (!kSlim) thread_rescale_o<kDB>(o, alpha);
        fa_mbar_wait(bar_vfull + 8u * pstage, pphase);
        fa_wgmma_fence();  /* why: o and pa were written by ordinary instructions */
        warpgroup_gemm_pv<kBf16, D, Bc>(o, pa, fa_wgmma_desc_add(dv0, (uint32_t)pstage * kKVBytes));
        fa_wgmma_commit();
        warpgroup_sched_pass<kPP, kWG>(wg);

        fa_wgmma_wait<1>();  /* S_j done; P_{j-1} V_{j-1} may still run */
        fa_reg_fence(s);
        warp_release_slot(bar_kempty + 8u * stage, lane);
        thread_scores_sm90<kFeat, kNB, Bc, kFeatSet>(s, a, mk, slope, row0, t4, wg_r0, wg_r1, t, varlen);
        /* Scheduling fence: the test always holds (a positive scale: fa_fwd_sm90_can_run; it
         * reads the scale, never a value the compiler can prove positive, or it would drop the
         * branch), but the branch ends a basic block. ptxas places wgmma.wait_group at the
         * earliest point of its basic block; in the same block as the softmax the wait below
         * was hoisted above all of it (seen in the SASS), which serialized the softmax with
         * P_{j-1} V_{j-1}. In a block of its own it stays after the softmax. */
        if (kFeat ? a.scale_log2 > 0.f : mul > 0.f) {
            if constexpr (kSlim) thread_softmax_fixed_sm90<kNB>(s, l_i, mul, off);
            else thread_softmax_sm90<kNB>(s, m_i, l_i, alpha, mul);
            /* in the same block: the Philox rounds overlap P_{j-1} V_{j-1} as well */
            if constexpr (kDrop)
                warp_dropout_keep_sm90<kNB>(keep, seed, offset, drop_b, drop_h, row0, t * Bc,
                                            a.dropout_threshold);
        }

        fa_wgmma_wait<0>();  /* P_{j-1} V_{j-1} done: pa is free */
        fa_reg_fence(o);
        warp_release_slot(bar_vempty + 8u * pstage, lane);
        thread_pack_p<kBf16, Bc>(pa, s);
        if constexpr (kDrop) thread_dropout_packed_sm90<Bc>(pa, keep);
    }

    /* last tile's P V */
    if constexpr (!kSlim) thread_rescale_o<kDB>(o, alpha);
    fa_mbar_wait(bar_vfull + 8u * stage, phase);
    fa_wgmma_fence();
    warpgroup_gemm_pv<kBf16, D, Bc>(o, pa, fa_wgmma_desc_add(dv0, (uint32_t)stage * kKVBytes));
    fa_wgmma_commit();
    fa_wgmma_wait<0>();
    fa_reg_fence(o);
    warp_release_slot(bar_vempty + 8u * stage, lane);

    /* CAP_SLIM: the epilogue's LSE is m_i mul + log2(l) (natural units there): m_i mul = off */
    if constexpr (kSlim) m_i[0] = m_i[1] = off / mul;

    /* why: takes the last pass of warpgroup kWG - 1, so the barrier ends balanced */
    if (kPP && wg == 0) fa_named_barrier_sync<256>(FA_SM90_BAR_SCHED);
    /* the ring position after the item's last tile: the next item's first slot */
    if (++stage == kStages) {
        stage = 0;
        phase ^= 1u;
    }
}

#endif /* FA_SM90_DEVICE */

#endif /* FA_FWD_SM90_CONSUMER_CUH */
