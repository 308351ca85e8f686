/* fa_bwd_sm90_tile.cuh - the per-tile products of the Hopper (sm_90a, wgmma) backward, shared by
 * fa_bwd_sm90_kernel.cuh (the cp.async kernel) and fa_bwd_sm90_pipe_*.cuh (the pipelined kernel,
 * which instantiates them with its own Br: fa_bwd_sm90_pipe_cfg).
 *
 * A warpgroup of 64 keys works in the transposed orientation, so that P^T and dS^T come out of
 * the accumulators already in the A-fragment layout of the next products:
 *   S^T  = K_wg Q_i^T        wgmma SS  (warpgroup_gemm_kq_t; A = K rows, B = Q rows, K-major)
 *   dP^T = V_wg dO_i^T       wgmma SS  (the same helper on V, dO)
 *   P^T  = exp2(S^T scale log2e - LSE_i log2e)   (thread_probs_t)
 *   dS^T = P^T o (dP^T - D_i)                     (thread_ds_t)
 *   (softcap / ALiBi, the pipelined kernel's FEAT instance: both at once, thread_probs_ds_feat)
 *   dV_wg += P^T dO_i, dK_wg += dS^T Q_i          (warpgroup_gemm_dv_dk: wgmma RS, B MN-major; at
 *                            d = 256 SS from the P^T / dS^T buffers: warpgroup_gemm_dv_dk_ss)
 *   dQ_i  += dS K_j          wgmma SS, both operands MN-major (warpgroup_gemm_dq, fa_wgmma_bwd.cuh)
 * Tiles in shared memory: 128-byte swizzle of fa_wgmma.cuh, column blocks of [rows][64] (fa_sw128_off).
 */
#ifndef FA_BWD_SM90_TILE_CUH
#define FA_BWD_SM90_TILE_CUH

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <math.h>
#include <stdint.h>

#include "fa_bwd_args.cuh"
#include "fa_sm90_sync.cuh"
#include "fa_mma.cuh"
#include "fa_softmax.cuh" /* fa_tanh, FA_LOG2E (thread_probs_ds_feat) */
#include "fa_tuning.h"
#include "fa_wgmma.cuh"
#include "fa_wgmma_bwd.cuh"

#define FA_BWD_SM90_BC 128     /* keys per CTA: 64 per consumer warpgroup */

#if FA_SM90_DEVICE

/* Byte offset of element (r, c) (16-bit elements) in a swizzled tile of R rows stored as column
 * blocks of [R][64]: 16-byte chunk (c % 64) / 8 of row r sits at chunk position ^ (r % 8). */
template <int R>
static __device__ __forceinline__ uint32_t fa_sw128_off(int r, int c)
{
    return (uint32_t)(c >> 6) * (uint32_t)(R * 128) + (uint32_t)r * 128u +
           ((uint32_t)(((c >> 3) & 7) ^ (r & 7)) << 4) + (uint32_t)(c & 7) * 2u;
}

/* dq_accum[i][j..j+1] += (x, y): one 8-byte vector reduction (sm_90), no return value.
 * Measured alternative (GPU A/B of commit 8949813, H200): staging the warpgroup's dQ tile in
 * shared memory and issuing one cp.reduce.async.bulk add per query row was 10% slower at d = 128
 * (303 vs 336 TFLOP/s, s = 16k) and equal at d = 64: the extra warpgroup barrier and the shared
 * round trip cost more than the atomics they replace. */
static __device__ __forceinline__ void fa_red_add_f32x2(float *addr, float x, float y)
{
    asm volatile("red.global.add.v2.f32 [%0], {%1, %2};\n" ::"l"(addr), "f"(x), "f"(y) : "memory");
}

/* dQ_part[64 queries x kN dims] = dS[:, keys] K[keys, dims] over kSteps k-steps of 16 keys starting
 * at key 16 kk0 (issued, not committed). Both operands MN-major in shared memory:
 *   sdS: a 64-query column block [Bc keys][64 queries] of dS^T (A with imm-trans-a: M = queries
 *        contiguous, 8-key groups SBO = 1024 apart, 16 keys = 2048 bytes per k-step);
 *   sKcb: the first of kN dims of K in a 64-dim column block [Bc keys][64 dims] (B with
 *        imm-trans-b, same strides): the block's start, or with kN = 32 also its dims 32..63 at
 *        + 64 bytes (fa_wgmma_bwd.cuh).
 * LBO (distance of the next 64-wide MN block) is never used with M = 64, kN <= 64; set to the tile's. */
template <bool kBf16, int kSteps, int kN = 64>
static __device__ __forceinline__ void warpgroup_gemm_dq(float (&dq)[kN / 2], uint32_t sdS, uint32_t sKcb, int kk0)
{
    const uint64_t da = fa_wgmma_desc_sw128(sdS, (uint32_t)FA_BWD_SM90_BC * 128u, 1024u);
    const uint64_t db = fa_wgmma_desc_sw128(sKcb, (uint32_t)FA_BWD_SM90_BC * 128u, 1024u);
#pragma unroll
    for (int kk = 0; kk < kSteps; ++kk) {
        const uint32_t koff = (uint32_t)(kk0 + kk) * 2048u; /* 16 key rows of 128 bytes */
        fa_wgmma_ss_tatb<kN, kBf16>(dq, fa_wgmma_desc_add(da, koff), fa_wgmma_desc_add(db, koff), kk > 0);
    }
}

/* acc (S^T or dP^T, 64 keys x kN queries of this warpgroup) = A B^T over D/16 k-steps: A the K or V
 * rows of the warpgroup (K-major descriptor da into a [D/64][kBc][64] tile), B the Q or dO slot
 * (K-major, [D/64][Br][64]) from b_st: all Br rows (kN = Br), or with kN < Br the kN rows at b_st
 * (the d = 256 instance: each warpgroup's 32-query half, b_st 32 rows = 4 KB in, swizzle-aligned).
 * acc_in: accumulate onto acc from the first k-step on (the Br = 80 kernel's preset -LSE2 /
 * scale_log2 and -D, thread_init_acc80); otherwise the first k-step overwrites it. */
template <bool kBf16, int D, int Br, int kN = Br, int kBc = FA_BWD_SM90_BC>
static __device__ __forceinline__ void warpgroup_gemm_kq_t(float (&acc)[kN / 2], uint64_t da, uint32_t b_st,
                                                           bool acc_in = false)
{
    const uint64_t db = fa_wgmma_desc_sw128(b_st, 16u, 1024u);
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
        const uint32_t in_block = (uint32_t)(kk % 4) * 32u;
        fa_wgmma_ss<kN, kBf16>(acc, fa_wgmma_desc_add(da, (uint32_t)(kk / 4) * (kBc * 128) + in_block),
                               fa_wgmma_desc_add(db, (uint32_t)(kk / 4) * (Br * 128) + in_block), acc_in || kk > 0);
    }
}

/* Edge tile? Keys past sk, or the band boundary crosses the tile [i0, i0 + Br) x [j0, j0 + Bc)
 * (off = sk - sq): then P needs the per-element mask (thread_probs_t's need_mask). */
template <int Br, int Bc>
static __device__ __forceinline__ bool fa_bwd_tile_need_mask(const fa_bwd_args &a, int i0, int j0, int sk, int off)
{
    return j0 + Bc > sk || (a.window_right >= 0 && j0 + Bc - 1 > i0 + off + a.window_right) ||
           (a.window_left >= 0 && j0 < i0 + Br - 1 + off - a.window_left);
}

/* S^T -> P^T in place: exp2(s scale log2e - LSE2 of the query), 0 where the key is not visible to
 * the query (need_mask: the tile crosses the band edge or sk). lse2: the block's [Br] LSE log2e;
 * key_base: this thread's first key row; c = query within the block. */
template <int Br>
static __device__ __forceinline__ void thread_probs_t(float (&s)[Br / 2], const fa_bwd_args &a, const float *lse2,
                                                      bool need_mask, int key_base, int i0, int sk, int off, int t)
{
#pragma unroll
    for (int jn = 0; jn < Br / 8; ++jn)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
            const int c = 8 * jn + 2 * t + (e & 1); /* query within the block */
            float x = exp2f(fmaf(s[4 * jn + e], a.scale_log2, -lse2[c]));
            if (need_mask) {
                const int j = key_base + 8 * (e >> 1), i = i0 + c;
                const bool vis = j < sk && (a.window_right < 0 || j <= i + off + a.window_right) &&
                                 (a.window_left < 0 || j >= i + off - a.window_left);
                x = vis ? x : 0.f;
            }
            s[4 * jn + e] = x;
        }
}

/* dP^T -> dS^T in place: P (dP - D) with D = rowsum(dO o O) of the query (dsum: the block's [Br]). */
template <int Br>
static __device__ __forceinline__ void thread_ds_t(float (&dp)[Br / 2], const float (&p)[Br / 2], const float *dsum,
                                                   int t)
{
#pragma unroll
    for (int jn = 0; jn < Br / 8; ++jn)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
            const int c = 8 * jn + 2 * t + (e & 1);
            dp[4 * jn + e] = p[4 * jn + e] * (dp[4 * jn + e] - dsum[c]);
        }
}

/* The feature form of thread_probs_t + thread_ds_t (softcap and / or ALiBi; the pipelined kernel's
 * FEAT instance), once both S^T and dP^T are in registers: s (raw dots q.k) -> P^T and dp -> dS^T in
 * one pass, so that the softcap factor 1 - tanh^2 never needs registers of its own. The scores of
 * the forward and of the sm80 backward (fa_bwd_tile.cuh, warp_bwd_probs):
 *   val = softcap tanh(x scale / softcap)   (softcap > 0; else x scale)
 *   val -= slope |i + sk - sq - j|           (ALiBi; slope 0 = off)
 *   P = exp2(val log2e - LSE2),  dS = P (1 - tanh^2) (dP - D)
 * The tanh is the forward's (fa_tanh, MUFU.TANH), so P matches the forward's LSE. lse2, dsum: the
 * block's [Br] LSE log2e (+inf: P = 0) and D; key_base, i0, sk, off = sk - sq, t: as thread_probs_t. */
template <int Br>
static __device__ __forceinline__ void thread_probs_ds_feat(float (&s)[Br / 2], float (&dp)[Br / 2],
                                                            const fa_bwd_args &a, const float *lse2,
                                                            const float *dsum, bool need_mask, int key_base, int i0,
                                                            int sk, int off, int t, float slope)
{
#pragma unroll
    for (int jn = 0; jn < Br / 8; ++jn)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
            const int c = 8 * jn + 2 * t + (e & 1); /* query within the block */
            const int j = key_base + 8 * (e >> 1), i = i0 + c;
            float val, dtanh = 1.f;
            if (a.softcap > 0.f) {
                const float th = fa_tanh(s[4 * jn + e] * a.scale_div_softcap);
                val = a.softcap * th;
                dtanh = fmaf(-th, th, 1.f);
            } else {
                val = s[4 * jn + e] * a.scale;
            }
            val = fmaf(-slope, fabsf((float)(i + off - j)), val);
            float x = exp2f(fmaf(val, FA_LOG2E, -lse2[c]));
            if (need_mask) { /* thread_probs_t's test, written out: as a shared helper it reordered
                              * the plain kernels' compares (same count; their SASS kept as GPU-tested) */
                const bool vis = j < sk && (a.window_right < 0 || j <= i + off + a.window_right) &&
                                 (a.window_left < 0 || j >= i + off - a.window_left);
                x = vis ? x : 0.f;
            }
            s[4 * jn + e] = x;
            dp[4 * jn + e] = x * dtanh * (dp[4 * jn + e] - dsum[c]);
        }
}

/* Byte offset in the [Bc keys][Br queries] swizzled dS^T tile of u32 dsa[kk][q] of thread (wg, wq,
 * g, t): row = key 64 wg + 16 wq + g + 8 (q & 1), query pair 2t of n-block 2 kk + (q >> 1). The
 * callers keep their own store (as one store helper the one-block kernel's d = 64 atomic-dQ
 * instances spilled 24 bytes, nvcc 13.0). */
static __device__ __forceinline__ uint32_t fa_ds_t_off(int kk, int q, int wg, int wq, int g, int t)
{
    const int r = 64 * wg + 16 * wq + g + 8 * (q & 1);
    const int c = 8 * (2 * kk + (q >> 1)) + 2 * t;
    return fa_sw128_off<FA_BWD_SM90_BC>(r, c);
}

/* acc += A B over Br queries (RS: A = P^T or dS^T as fragments of 16 queries per k-step; B = dO or
 * Q of the slot at b_st, [Br queries][D dims] MN-major, 2048 bytes per k-step), issued (the caller
 * commits). */
template <bool kBf16, int D, int Br>
static __device__ __forceinline__ void warpgroup_gemm_rs_q(float (&acc)[D / 2], const uint32_t (&af)[Br / 16][4],
                                                          uint32_t b_st)
{
    const uint64_t bmn = fa_wgmma_desc_sw128(b_st, (uint32_t)Br * 128u, 1024u);
#pragma unroll
    for (int kk = 0; kk < Br / 16; ++kk)
        fa_wgmma_rs_tb<D, kBf16>(acc, af[kk], fa_wgmma_desc_add(bmn, (uint32_t)kk * 2048u), 1);
}

/* dV += P^T dO and dK += dS^T Q (RS: P^T, dS^T as A fragments of 16 queries per k-step; Q and dO
 * of the slot MN-major), issued as one group (the caller commits). */
template <bool kBf16, int D, int Br>
static __device__ __forceinline__ void warpgroup_gemm_dv_dk(float (&dv)[D / 2], float (&dk)[D / 2],
                                                           const uint32_t (&pa)[Br / 16][4],
                                                           const uint32_t (&dsa)[Br / 16][4], uint32_t q_st,
                                                           uint32_t do_st)
{
    warpgroup_gemm_rs_q<kBf16, D, Br>(dv, pa, do_st);
    warpgroup_gemm_rs_q<kBf16, D, Br>(dk, dsa, q_st);
}

/* acc += A B over Br queries (SS: A = P^T or dS^T from its shared buffer a_st, [Bc = 64 keys][Br
 * queries] as [Br / 64] column blocks of [64][64] with queries contiguous: K-major, the k-th 16
 * queries 32 (kk % 4) bytes into block kk / 4, as warpgroup_gemm_kq_t's A; B = dO or Q of the slot
 * at b_st, [Br queries][N dims] MN-major, 2048 bytes per k-step, LBO one [Br][64] column block, as
 * warpgroup_gemm_rs_q's B), issued (the caller commits). */
template <bool kBf16, int N, int Br, int Bc>
static __device__ __forceinline__ void warpgroup_gemm_ss_q(float (&acc)[N / 2], uint32_t a_st, uint32_t b_st)
{
    static_assert(Bc == 64, "A's 64 rows are the buffer's Bc keys");
    const uint64_t da = fa_wgmma_desc_sw128(a_st, 16u, 1024u);
    const uint64_t bmn = fa_wgmma_desc_sw128(b_st, (uint32_t)Br * 128u, 1024u);
#pragma unroll
    for (int kk = 0; kk < Br / 16; ++kk)
        fa_wgmma_ss_tb<N, kBf16>(acc, fa_wgmma_desc_add(da, (uint32_t)(kk / 4) * (Bc * 128) + (uint32_t)(kk % 4) * 32u),
                                 fa_wgmma_desc_add(bmn, (uint32_t)kk * 2048u), 1);
}

/* dV += P^T dO and dK += dS^T Q with P^T, dS^T read from shared memory (SS, warpgroup_gemm_ss_q:
 * sp, sds their [Bc][Br] buffers; q_st, do_st N dims of the slot's Q, dO), issued as one group
 * (the caller commits). */
template <bool kBf16, int N, int Br, int Bc>
static __device__ __forceinline__ void warpgroup_gemm_dv_dk_ss(float (&dv)[N / 2], float (&dk)[N / 2], uint32_t sp,
                                                              uint32_t sds, uint32_t q_st, uint32_t do_st)
{
    warpgroup_gemm_ss_q<kBf16, N, Br, Bc>(dv, sp, do_st);
    warpgroup_gemm_ss_q<kBf16, N, Br, Bc>(dk, sds, q_st);
}

#endif /* FA_SM90_DEVICE */

#endif /* FA_BWD_SM90_TILE_CUH */
