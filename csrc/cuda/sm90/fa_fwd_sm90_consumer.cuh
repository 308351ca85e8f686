/* fa_fwd_sm90_consumer.cuh - the consumer warpgroups of the Hopper forward
 * (fa_fwd_sm90_kernel.cuh): the loop over the key tiles of one work item with the online softmax
 * (warpgroup_attend_item), and the epilogue that normalizes O and writes O and LSE
 * (warpgroup_store_item). Each consumer warpgroup owns 64 query rows of the item, so the softmax
 * needs no communication between warpgroups; only the ping-pong turns (fa_fwd_sm90_block.cuh)
 * and the varlen V zeroing order them.
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

#if FA_SM90_DEVICE

/* A consumer warp is done reading a slot: one arrival per warp (the slot's empty barrier
 * expects 4 kWG). Why per warp: each warp's wgmma.wait_group covers that warp's view of the
 * warpgroup's operations, so the slot is free only when all of them have waited. */
static __device__ __forceinline__ void warp_release_slot(uint32_t bar, int lane)
{
    __syncwarp();
    if (lane == 0) fa_mbar_arrive(bar);
}

/* The key tiles of one item (it.n_tiles > 0) for consumer thread rw (warpgroup rw.wg: rows
 * it.m0 + 64 wg .. + 63): accumulates the unnormalized O, m_i and l_i (initialized by the caller:
 * 0, -inf, 0). The caller computes rw before its n_tiles test, where the epilogue shares the
 * values (computed in here instead, the one-block kernel's SASS changed).
 * Waits for Q on parity q_parity of sm.bar_q; takes the ring from (stage, phase), the slot of the
 * item's first tile, and leaves it at the slot after its last tile (the producer's order).
 * mul: exp2 factor of the scores (fa_fwd_sm90_kernel.cuh), slope: ALiBi (kFeat).
 * kDrop (dense kFeat only): dropout on P after the softmax step, so l_i sums the undropped P as
 * in the sm80 kernel (O = (dropout(P) V) / l, the 1 / (1 - p) in warpgroup_store_item). */
template <bool kBf16, int D, int Br, int Bc, int kStages, bool kFeat, bool kVarlen, bool kDrop = false>
static __device__ __forceinline__ void warpgroup_attend_item(float (&o)[D / 2], float (&m_i)[2], float (&l_i)[2],
                                                            const fa_fwd_args &a, const fa_sm90_layout &sm,
                                                            const fa_sm90_item &it, const fa_sm90_rows &rw, float mul,
                                                            float slope, int tid, uint32_t q_parity, int &stage,
                                                            uint32_t &phase)
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

    float s[Bc / 2];
    uint32_t pa[Bc / 16][4];
    float alpha[2] = {0.f, 0.f};
#pragma unroll
    for (int i = 0; i < Bc / 2; ++i) s[i] = 0.f;

    constexpr bool kPP = fa_sm90_tile<D, kFeat>::kPingPong;
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
    fa_wgmma_wait<0>();
    fa_reg_fence(s);
    warp_release_slot(bar_kempty + 8u * stage, lane);
    thread_scores_sm90<kFeat, kNB, Bc>(s, a, mk, slope, row0, t4, wg_r0, wg_r1, t, varlen);
    thread_softmax_sm90<kNB>(s, m_i, l_i, alpha, mul);  /* alpha = 0: scales the zero O */
    if (kDrop) warp_dropout_tile_sm90<kNB>(s, seed, offset, drop_b, drop_h, row0, t * Bc, a.dropout_threshold);
    thread_pack_p<kBf16, Bc>(pa, s);

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
        thread_rescale_o<kDB>(o, alpha);
        fa_mbar_wait(bar_vfull + 8u * pstage, pphase);
        fa_wgmma_fence();  /* why: o and pa were written by ordinary instructions */
        warpgroup_gemm_pv<kBf16, D, Bc>(o, pa, fa_wgmma_desc_add(dv0, (uint32_t)pstage * kKVBytes));
        fa_wgmma_commit();
        warpgroup_sched_pass<kPP, kWG>(wg);

        fa_wgmma_wait<1>();  /* S_j done; P_{j-1} V_{j-1} may still run */
        fa_reg_fence(s);
        warp_release_slot(bar_kempty + 8u * stage, lane);
        thread_scores_sm90<kFeat, kNB, Bc>(s, a, mk, slope, row0, t4, wg_r0, wg_r1, t, varlen);
        /* Scheduling fence: the test always holds (a positive scale: fa_fwd_sm90_can_run; it
         * reads the scale, never a value the compiler can prove positive, or it would drop the
         * branch), but the branch ends a basic block. ptxas places wgmma.wait_group at the
         * earliest point of its basic block; in the same block as the softmax the wait below
         * was hoisted above all of it (seen in the SASS), which serialized the softmax with
         * P_{j-1} V_{j-1}. In a block of its own it stays after the softmax. */
        if (kFeat ? a.scale_log2 > 0.f : mul > 0.f) {
            thread_softmax_sm90<kNB>(s, m_i, l_i, alpha, mul);
            /* in the same block: the Philox rounds overlap P_{j-1} V_{j-1} as well */
            if (kDrop)
                warp_dropout_tile_sm90<kNB>(s, seed, offset, drop_b, drop_h, row0, t * Bc, a.dropout_threshold);
        }

        fa_wgmma_wait<0>();  /* P_{j-1} V_{j-1} done: pa is free */
        fa_reg_fence(o);
        warp_release_slot(bar_vempty + 8u * pstage, lane);
        thread_pack_p<kBf16, Bc>(pa, s);
    }

    /* last tile's P V */
    thread_rescale_o<kDB>(o, alpha);
    fa_mbar_wait(bar_vfull + 8u * stage, phase);
    fa_wgmma_fence();
    warpgroup_gemm_pv<kBf16, D, Bc>(o, pa, fa_wgmma_desc_add(dv0, (uint32_t)stage * kKVBytes));
    fa_wgmma_commit();
    fa_wgmma_wait<0>();
    fa_reg_fence(o);
    warp_release_slot(bar_vempty + 8u * stage, lane);

    /* why: takes the last pass of warpgroup kWG - 1, so the barrier ends balanced */
    if (kPP && wg == 0) fa_named_barrier_sync<256>(FA_SM90_BAR_SCHED);
    /* the ring position after the item's last tile: the next item's first slot */
    if (++stage == kStages) {
        stage = 0;
        phase ^= 1u;
    }
}

/* Epilogue of one item for warpgroup wg: O /= l, LSE, O through this warpgroup's Q rows of
 * shared memory as 16-byte coalesced stores. Rows without keys (l = 0): O = 0, LSE = -inf.
 * kDrop: O also times 1 / (1 - p) (l is the sum of the undropped P, the LSE that of softmax). */
template <bool kBf16, int D, int Br, bool kVarlen, bool kDrop = false>
static __device__ __forceinline__ void warpgroup_store_item(float (&o)[D / 2], const float (&m_i)[2],
                                                           const float (&l_i)[2], const fa_fwd_args &a, uint32_t sQ,
                                                           int b, int h, int q_begin, int m0, int m_end, float mul,
                                                           int tid)
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
     * (c / 8) Br 128 + r 128 + ((c % 8) ^ (r % 8)) 16: a warp's 8 rows x 4 lanes hit 32 banks. */
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

#endif /* FA_FWD_SM90_CONSUMER_CUH */
