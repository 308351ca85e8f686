/* fa_bwd_sm90_pipe_preset.cuh - the front half of the consumer tile of the FA3-sized pipelined
 * Hopper backward tiles, Br = 80 (fa_bwd_sm90_pipe80.cuh, d in (64, 128]) and Br = 128
 * (fa_bwd_sm90_pipe128.cuh, d <= 64): S^T, dP^T, P^T, dS^T as warpgroup_tile_pds of
 * fa_bwd_sm90_pipe_consumer.cuh, with the register tricks without which those tiles spilled at the
 * consumers' 240 registers (nvcc 13.0):
 *   - the S^T / dP^T accumulators start at -LSE2 / scale_log2 and -D (thread_init_acc80; host:
 *     scale > 0), so no LSE / D value is live at the exp and dS phases;
 *   - warpgroup / warp indices via shfl (uniform registers), %tid.x re-read in the tile;
 *   - the mask of P as a second pass under one branch (thread_probs80): the Br = 64 tile branches
 *     on need_mask per element.
 * The dS^T stores are the caller's (after its dV issue: their address registers at the s / dp peak
 * spilled), as they differ: stmatrix.trans into dS [Br][Bc] at Br = 80, stmatrix into dS^T at 128.
 */
#ifndef FA_BWD_SM90_PIPE_PRESET_CUH
#define FA_BWD_SM90_PIPE_PRESET_CUH

#include "fa_bwd_sm90_pipe_layout.cuh"

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

/* A consumer thread's place in the tile (warpgroup_tile_pds_preset): lane, warp-uniform wg (keys
 * [j0 + 64 wg, + 64)) and wq (warp in the warpgroup), t = lane % 4; the slot's Q and dO tiles. */
typedef struct fa_bwd_pipe_place {
    int lane, wg, wq, t;
    uint32_t q_st, do_st;
} fa_bwd_pipe_place;

/* First half of a consumer tile at Br = 80 or 128 (D: 128 or 64): S^T and dP^T onto their presets,
 * P^T, dS^T = P^T o (dP^T - D), packed as the A fragments pa (P^T) and dsa (dS^T) of the dV / dK
 * products (16 queries per k-step). lse_s, dsum_s: the slot's [Br] rows. Leaves the slot's Q / dO
 * in use (dV, dK read them). Returns the thread's place for the second half. */
template <bool kBf16, int D, int Br>
static __device__ __forceinline__ fa_bwd_pipe_place
warpgroup_tile_pds_preset(const fa_bwd_args &a, const fa_seq &seq, const fa_bwd_pipe_smem &sm, int stage,
                          uint32_t phase, int i0, int j0, const float *lse_s, const float *dsum_s,
                          uint32_t (&pa)[Br / 16][4], uint32_t (&dsa)[Br / 16][4])
{
    constexpr int Bc = FA_BWD_SM90_BC;
    constexpr uint32_t kQBytes = Br * D * 2;
    /* warpgroup and warp as warp-uniform values (shfl from lane 0, as FA3's warp_group_idx): ptxas
     * keeps what derives from them (descriptors, smem offsets) in uniform registers */
    /* %tid.x read here (volatile), not CSE'd with the kernel's reads: otherwise its lane / warp
     * values stay live across the tile loop and spill at the exp phase's peak */
    uint32_t tid_x;
    asm volatile("mov.u32 %0, %%tid.x;\n" : "=r"(tid_x));
    fa_bwd_pipe_place p;
    const int tid = (int)tid_x - 128;
    p.lane = tid % 32;
    p.wg = __shfl_sync(0xffffffffu, tid / 128, 0);
    p.wq = __shfl_sync(0xffffffffu, (tid / 32) % 4, 0);
    p.t = p.lane % 4;
    const int sk = seq.sk, off = sk - seq.sq;
    const int key_base = j0 + 64 * p.wg + 16 * p.wq + p.lane / 4;
    p.q_st = sm.q + (uint32_t)stage * kQBytes;
    p.do_st = sm.dout + (uint32_t)stage * kQBytes;
    const uint64_t dK_kmaj = fa_wgmma_desc_sw128(sm.k + (uint32_t)p.wg * (64 * 128), 16u, 1024u);
    const uint64_t dV_kmaj = fa_wgmma_desc_sw128(sm.v + (uint32_t)p.wg * (64 * 128), 16u, 1024u);

    float s[Br / 2], dp[Br / 2];
    /* why: Q_i (TMA bytes) and LSE_i (the producer lanes' stores) of this slot have landed */
    fa_mbar_wait(sm.q_full + 8u * stage, phase);
    /* why: dO_i and D_i of this slot have landed (both accumulators are set before either chain:
     * setting dp while S^T ran made ptxas wait for S^T first, C7517) */
    fa_mbar_wait(sm.do_full + 8u * stage, phase);
    thread_init_acc80<Br>(s, lse_s, -1.f / a.scale_log2, p.t); /* S^T - LSE2 / scale_log2 */
    thread_init_acc80<Br>(dp, dsum_s, -1.f, p.t);              /* dP^T - D */
    fa_wgmma_fence();
    warpgroup_gemm_kq_t<kBf16, D, Br>(s, dK_kmaj, p.q_st, true); /* onto the preset */
    fa_wgmma_commit();
    fa_wgmma_fence(); /* dp is an accumulator of the group below */
    warpgroup_gemm_kq_t<kBf16, D, Br>(dp, dV_kmaj, p.do_st, true);
    fa_wgmma_commit();

    const bool need_mask = fa_bwd_tile_need_mask<Br, Bc>(a, i0, j0, sk, off); /* edge tile? */
    fa_wgmma_wait<1>(); /* S^T ready, dP^T may still run */
    fa_reg_fence(s);
    thread_probs80<Br>(s, a, need_mask, key_base, i0, sk, off, p.t);
    fa_wgmma_wait<0>();
    fa_reg_fence(dp);
    /* per k-step, so that its s / dp registers die at once */
#pragma unroll
    for (int kk = 0; kk < Br / 16; ++kk) {
#pragma unroll
        for (int i = 8 * kk; i < 8 * kk + 8; ++i) dp[i] *= s[i]; /* dS^T = P^T o (dP^T - D); past sq: P = 0 */
        fa_pack_c_to_a<kBf16>(pa[kk], &s[8 * kk], &s[8 * kk + 4]);
        fa_pack_c_to_a<kBf16>(dsa[kk], &dp[8 * kk], &dp[8 * kk + 4]);
    }
    return p;
}

#endif /* FA_SM90_DEVICE */

#endif /* FA_BWD_SM90_PIPE_PRESET_CUH */
