/* fa_bwd_sm90_pipe80_dq.cuh - the dS / dQ side of the Br = 80 pipelined Hopper backward
 * (fa_bwd_sm90_pipe80.cuh): 80 queries are no wgmma M, so dQ is computed transposed, as FA3 does
 * at hdim 128 (hopper/mainloop_bwd_sm90_tma_gmma_ws.hpp, dQ_swapAB: TileShapeAtomdQ = (hdim,
 * kBlockM / AtomLayoutMdQ, kBlockN), PdS_Major = K, dS written with STSM_T):
 *   dS stored [Br queries][Bc keys] (keys contiguous, column blocks [Bc / 64][Br][64], 128-byte
 *   swizzle) by stmatrix.trans from the dS^T fragments (warp_store_ds_t);
 *   dQ^T (64 dims of warpgroup wg x Br queries) = K^T dS^T over all Bc keys: wgmma SS m64n80k16,
 *   A = K^T (K's column block wg, dims contiguous: MN-major), B = dS (K-major) (warpgroup_issue_dqt);
 *   staged as 2 TMA boxes {32 dims, Br rows} fp32 per warpgroup (warpgroup_stage_dqt;
 *   fa_bwd_pipe_dq_split<128, 80>) and added into dq_accum by the dQ-writer warp of every pipelined
 *   tile (warp_write_dq, fa_bwd_sm90_pipe_dq_writer.cuh; FULL / EMPTY protocol of
 *   fa_bwd_sm90_pipe_kernel.cuh).
 */
#ifndef FA_BWD_SM90_PIPE80_DQ_CUH
#define FA_BWD_SM90_PIPE80_DQ_CUH

#include "fa_bwd_sm90_pipe_layout.cuh"

#if FA_SM90_DEVICE

/* dS^T fragments dsa (A layout of the dK product: dsa[kk][q] = keys 64 wg + 16 wq + g + 8 (q & 1),
 * query pair 2t of 16 kk + 8 (q >> 1)) -> sds as dS [Br][Bc]: per 16-query k-step one
 * stmatrix.x4.trans, matrix q = register q; lane l addresses row l % 8 of matrix l / 8, i.e. query
 * 16 kk + 8 ((l / 8) >> 1) + l % 8, its 8 keys from 64 wg + 16 wq + 8 ((l / 8) & 1) (16 contiguous
 * bytes: the swizzle moves whole 16-byte chunks). 8 rows of one matrix are 8 queries, rows 128 bytes
 * apart with chunk ^ (query % 8) distinct: all 32 banks, conflict-free. */
template <int Br>
static __device__ __forceinline__ void warp_store_ds_t(const uint32_t (&dsa)[Br / 16][4], uint32_t sds, int wg,
                                                       int wq, int lane)
{
    const int mtx = lane >> 3;
    const int key = 64 * wg + 16 * wq + 8 * (mtx & 1), qrow = 8 * (mtx >> 1) + (lane & 7);
    /* k-step kk: 16 rows (2048 bytes) further, same swizzle phase (16 kk + qrow = qrow mod 8): one
     * base register, immediate offsets */
    const uint32_t base = sds + fa_sw128_off<Br>(qrow, key);
#pragma unroll
    for (int kk = 0; kk < Br / 16; ++kk) {
        const uint32_t addr = base + (uint32_t)kk * 2048u;
        asm volatile("stmatrix.sync.aligned.m8n8.x4.trans.shared.b16 [%0], {%1, %2, %3, %4};\n" ::"r"(addr),
                     "r"(dsa[kk][0]), "r"(dsa[kk][1]), "r"(dsa[kk][2]), "r"(dsa[kk][3])
                     : "memory");
    }
}

/* dQ^T[64 dims of warpgroup wg][Br queries] = K^T dS^T over the Bc keys, issued and committed. A: K's
 * column block wg ([Bc keys][64 dims], dims contiguous: MN-major like warpgroup_gemm_dq's operands,
 * 16 keys = 2048 bytes per k-step); B: sds [Bc / 64][Br][64 keys] K-major (k-step kk at column block
 * kk / 4, 32 bytes per 16 keys in the block, as warpgroup_gemm_kq_t's B). */
template <bool kBf16, int Br>
static __device__ __forceinline__ void warpgroup_issue_dqt(float (&dqt)[Br / 2], uint32_t sds, uint32_t sk, int wg)
{
    constexpr int Bc = FA_BWD_SM90_BC;
    const uint64_t da = fa_wgmma_desc_sw128(sk + (uint32_t)wg * (Bc * 128), (uint32_t)Bc * 128u, 1024u);
    const uint64_t db = fa_wgmma_desc_sw128(sds, 16u, 1024u);
    fa_wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < Bc / 16; ++kk)
        fa_wgmma_ss_ta<Br, kBf16>(dqt, fa_wgmma_desc_add(da, (uint32_t)kk * 2048u),
                                  fa_wgmma_desc_add(db, (uint32_t)(kk / 4) * (Br * 128) + (uint32_t)(kk % 4) * 32u),
                                  kk > 0);
    fa_wgmma_commit();
}

/* This thread's dQ^T accumulators -> its warpgroup's staging buffer stg: 2 TMA boxes {32 dims, Br
 * rows} of tm_dqacc (box hc = dims [32 hc, + 32) of the warpgroup's 64 at stg + hc 128 Br), laid
 * out as the 128-byte swizzle does: row n (query) at + 128 n, 16-byte chunk k = (dim % 32) / 4 at
 * physical chunk k ^ (n % 8). dqt[4 jn + 2 half + e] = dQ^T[m = 16 wq + g + 8 half][n = 8 jn + 2t + e]
 * (wgmma D layout), so box hc = wq / 2, k = 4 (wq % 2) + 2 half + g / 4, word g % 4: one st.shared.f32
 * per value (the pairs are 2 queries = 2 rows). Banks per store: the (g / 4, t) lanes hit the 8
 * chunks ((k0 + g / 4) ^ (2t + e), k0 even) and g % 4 the 4 words: 32 distinct banks. wq: warp in
 * the warpgroup, lane: lane in the warp (the caller's). */
template <int Br>
static __device__ __forceinline__ void warpgroup_stage_dqt(const float (&dqt)[Br / 2], uint32_t stg, int wq,
                                                           int lane)
{
    const int g = lane / 4, t = lane % 4;
    /* row 2t + e of the box, word g % 4; chunk (k0 + g / 4) ^ (2t + e) with k0 = 4 (wq % 2) + 2 half;
     * jn moves 8 rows (1024 bytes) at the same swizzle phase: immediate offsets */
    const uint32_t box = stg + (uint32_t)(wq >> 1) * (uint32_t)(32 * Br * 4) + (uint32_t)(2 * t) * 128u +
                         (uint32_t)(g & 3) * 4u;
    const int k0 = 4 * (wq & 1) + (g >> 2);
#pragma unroll
    for (int jn = 0; jn < Br / 8; ++jn)
#pragma unroll
        for (int half = 0; half < 2; ++half)
#pragma unroll
            for (int e = 0; e < 2; ++e) {
                const uint32_t chunk = (uint32_t)((k0 + 2 * half) ^ (2 * t + e));
                const uint32_t addr = box + (uint32_t)(8 * jn + e) * 128u + (chunk << 4);
                asm volatile("st.shared.f32 [%0], %1;\n" ::"r"(addr), "f"(dqt[4 * jn + 2 * half + e]) : "memory");
            }
}

#endif /* FA_SM90_DEVICE */

#endif /* FA_BWD_SM90_PIPE80_DQ_CUH */
