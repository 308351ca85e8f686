/* fa_bwd_sm90_loads.cuh - the loads of the cp.async sm90 backward (fa_bwd_sm90_kernel.cuh): every
 * one of its 256 threads copies a share of the next Q / dO tiles (and K, V once) with cp.async into
 * the 128-byte-swizzled layout the wgmma descriptors read, and threads 0..2 Br - 1 load the block's
 * LSE and D rows into static shared memory. Q/dO rows past sq and dims past d are zero-filled.
 */
#ifndef FA_BWD_SM90_LOADS_CUH
#define FA_BWD_SM90_LOADS_CUH

#include "fa_bwd_sm90_tile.cuh" /* fa_sw128_off */

#define FA_BWD_SM90_THREADS 256 /* the cp.async kernel: 2 warpgroups, no producer */

#if FA_SM90_DEVICE

/* All 256 threads copy a [R][D] tile (rows [0, rows_valid) of a strided global matrix, dims
 * [0, d)) into the swizzled shared tile at dst; the rest is zero-filled. Asynchronous: the caller
 * commits and waits. base: element (row 0, dim 0); row_stride in elements. */
template <int R, int D>
static __device__ __forceinline__ void block_load_tile(uint32_t dst, const uint16_t *base, int64_t row_stride,
                                                       int rows_valid, int d)
{
    constexpr int kChunks = R * D / 8;
    static_assert(kChunks % FA_BWD_SM90_THREADS == 0, "tile must split evenly over the threads");
#pragma unroll
    for (int k = 0; k < kChunks / FA_BWD_SM90_THREADS; ++k) {
        const int id = (int)threadIdx.x + k * FA_BWD_SM90_THREADS;
        const int r = id / (D / 8), c = (id % (D / 8)) * 8;
        const bool ok = r < rows_valid && c < d;
        const uint16_t *src = ok ? base + (int64_t)r * row_stride + c : base;
        fa_cp_async_16(dst + fa_sw128_off<R>(r, c), src, ok);
    }
}

/* All 256 threads issue the loads of iteration `it` (query head h0 + it / n_mb, query block
 * mb_lo + it % n_mb) into one stage: Q and dO tiles by cp.async (the caller commits); LSE*log2e
 * and D by plain loads into shared memory (threads 0..127; visible after the caller's barrier).
 * sQ, sdO: [Br][D] swizzled tiles of the stage; lse, dsum: [Br] of the stage.
 * Measured alternative (GPU A/B of commit a75a1c6, H200): LSE and D by 4-byte cp.async as well,
 * so no thread waits on these loads: no difference beyond noise (bwd geomean 1.011 vs 1.019 x
 * SDPA flash over d 64/128, s 2k/16k), so the simpler plain loads stay. */
template <int D, int Br>
static __device__ __forceinline__ void block_issue_loads(const fa_bwd_args &a, const fa_seq &seq, int b, int h0,
                                                         int mb_lo, int n_mb, int it, uint32_t sQ, uint32_t sdO,
                                                         float *lse_s, float *dsum_s)
{
    const int h = h0 + it / n_mb;
    const int i0 = (mb_lo + it % n_mb) * Br;
    const int sq = seq.sq, tid = threadIdx.x;
    const uint16_t *qb = a.q + fa_bwd_base(seq, b, seq.q_row0, h, a.q_batch_stride, a.q_row_stride, a.q_head_stride) +
                         (int64_t)i0 * a.q_row_stride;
    const uint16_t *ob = a.dout +
                         fa_bwd_base(seq, b, seq.q_row0, h, a.do_batch_stride, a.do_row_stride, a.do_head_stride) +
                         (int64_t)i0 * a.do_row_stride;
    block_load_tile<Br, D>(sQ, qb, a.q_row_stride, sq - i0, a.head_dim);
    block_load_tile<Br, D>(sdO, ob, a.do_row_stride, sq - i0, a.head_dim);
    if (tid < 2 * Br) {
        const int r = tid % Br;
        const int64_t li = fa_bwd_lse_base(a, seq, b, h) + i0 + r;
        if (tid < Br) {
            const float lse = i0 + r < sq ? a.lse[li] : -INFINITY;
            /* -inf (row sees no key, or padding): +inf makes P = exp2(s - inf) = 0 */
            lse_s[r] = lse == -INFINITY ? INFINITY : lse * 1.4426950408889634f;
        } else {
            dsum_s[r] = i0 + r < sq ? a.dpsum[li] : 0.f;
        }
    }
}

#endif /* FA_SM90_DEVICE */

#endif /* FA_BWD_SM90_LOADS_CUH */
