/* fa_common.h - pure helpers shared by the C backend and the CUDA kernels.
 *
 * Everything here is a pure function of its arguments, so the CPU backend, the CUDA forward,
 * the CUDA backward and the debug dropout_mask() agree bit for bit. Compiles as C11 and as CUDA.
 */
#ifndef FA_COMMON_H
#define FA_COMMON_H

#include <stdint.h>

#if defined(__CUDACC__)
#define FA_HD static __host__ __device__ __forceinline__
#else
#define FA_HD static inline
#endif

/* ---- masks -------------------------------------------------------------------------------
 * Bottom-right aligned: query i sees key j iff i + sk - sq - left <= j <= i + sk - sq + right,
 * -1 meaning unbounded on that side (causal: right = 0). */

/* A window side at least as wide as the sequence it bounds bounds nothing: -1 (unbounded). Left
 * bounds the keys (left >= sk: every row's first key is past it), right the queries' reach (right
 * >= sq: every row sees up to key sk - 1). Every mask takes its sides through this first: the sums
 * i + sk - sq +- w stay far from overflow (a window near INT64_MAX wrapped them) and the CUDA
 * kernels' int32 arithmetic holds. */
FA_HD int fa_window_clamp(int64_t w, int64_t unbounded_from)
{
    return (w < 0 || w >= unbounded_from) ? -1 : (int)w;
}

/* The visible keys of row i: the closed range [*j_lo, *j_hi] clipped to [0, sk - 1]; the row is
 * empty when *j_lo > *j_hi. */
FA_HD void fa_mask_bounds(int64_t i, int64_t sq, int64_t sk, int64_t left, int64_t right,
                          int64_t *j_lo, int64_t *j_hi)
{
    int64_t diag = i + sk - sq;
    int64_t l = fa_window_clamp(left, sk), r = fa_window_clamp(right, sq);
    int64_t lo = l < 0 ? 0 : diag - l;
    int64_t hi = r < 0 ? sk - 1 : diag + r;
    *j_lo = lo < 0 ? 0 : lo;
    *j_hi = hi > sk - 1 ? sk - 1 : hi;
}


/* The rows [*lo, *hi) of a varlen tensor that cu_seqlens covers: [cu_first, cu_last) clamped to
 * [0, total). total < 0: the tensor ends at cu_last (nothing past the last sequence). Returns the
 * tensor's row count; the uncovered rows are [0, *lo) and [*hi, that count). One definition for
 * the CPU pass and the CUDA kernel that zero the uncovered rows (cu_seqlens are validated in eager
 * mode only, so the clamps keep any input in bounds). */
FA_HD int64_t fa_varlen_covered(int64_t cu_first, int64_t cu_last, int64_t total, int64_t *lo, int64_t *hi)
{
    if (total < 0) total = cu_last > 0 ? cu_last : 0;
    *lo = cu_first < 0 ? 0 : (cu_first > total ? total : cu_first);
    *hi = cu_last < *lo ? *lo : (cu_last > total ? total : cu_last);
    return total;
}

/* ALiBi bias added to s_ij: -slope * |i + sk - sq - j| */
FA_HD float fa_alibi_bias(float slope, int64_t i, int64_t j, int64_t sq, int64_t sk)
{
    int64_t dist = i + sk - sq - j;
    if (dist < 0) dist = -dist;
    return -slope * (float)dist;
}

/* ---- Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3") --------- */
#define FA_PHILOX_M0 0xD2511F53u
#define FA_PHILOX_M1 0xCD9E8D57u
#define FA_PHILOX_W0 0x9E3779B9u
#define FA_PHILOX_W1 0xBB67AE85u

typedef struct fa_u32x4 { uint32_t x, y, z, w; } fa_u32x4;

FA_HD fa_u32x4 fa_philox4x32_10(fa_u32x4 ctr, uint32_t k0, uint32_t k1)
{
    int round;
    for (round = 0; round < 10; ++round) {
        uint64_t p0 = (uint64_t)FA_PHILOX_M0 * ctr.x;
        uint64_t p1 = (uint64_t)FA_PHILOX_M1 * ctr.z;
        fa_u32x4 next;
        next.x = (uint32_t)(p1 >> 32) ^ ctr.y ^ k0;
        next.y = (uint32_t)p1;
        next.z = (uint32_t)(p0 >> 32) ^ ctr.w ^ k1;
        next.w = (uint32_t)p0;
        ctr = next;
        k0 += FA_PHILOX_W0;
        k1 += FA_PHILOX_W1;
    }
    return ctr;
}

/* ---- dropout ---------------------------------------------------------------------------------
 * One Philox call yields the random bytes of 16 consecutive keys j = 16 u .. 16 u + 15 of a row:
 *   counter = (j >> 4, i, (b << 16) | (h & 0xffff), offset_lo),  key = (seed_lo, seed_hi ^ offset_hi)
 * and key j takes byte j & 15 of the 128-bit output read little-endian: byte k & 3 of word k >> 2
 * of (x, y, z, w), k = j & 15. (b, h, i, j) are logical coordinates: sequence index, query head,
 * sequence-local row and column, so the mask does not depend on tiling, padding, layout or
 * backend. Keep iff byte >= threshold (fa_dropout_threshold: p quantised to 1/256). 8-bit slices
 * as FlashAttention-2's: 16 keep bits per Philox call, not 4 (the 32-bit word per key before). */
FA_HD fa_u32x4 fa_dropout_random16(uint64_t seed, uint64_t offset, int64_t b, int64_t h, int64_t i,
                                   int64_t j16 /* j >> 4 */)
{
    fa_u32x4 ctr;
    ctr.x = (uint32_t)j16;
    ctr.y = (uint32_t)i;
    ctr.z = ((uint32_t)b << 16) | ((uint32_t)h & 0xffffu);
    ctr.w = (uint32_t)offset;
    return fa_philox4x32_10(ctr, (uint32_t)seed, (uint32_t)(seed >> 32) ^ (uint32_t)(offset >> 32));
}

/* The byte threshold t of drop probability p in [0, 1): t = round(256 p), clamped to [1, 255] for
 * p > 0 (t = 0, keep everything, only for p <= 0). A uniform byte is dropped with probability
 * p_q = t / 256, the probability the kernels actually use: |p_q - p| <= 1/512 for p in
 * [1/512, 1 - 1/512]; a p > 0 below 1/512 still drops 1/256 (FlashAttention-2 does the same),
 * and a p above 1 - 1/512 still keeps 1/256 (no division by zero in the scale). */
FA_HD uint32_t fa_dropout_threshold(float p)
{
    double t;
    if (!(p > 0.0f)) return 0u;
    t = (double)p * 256.0 + 0.5;
    if (t < 1.0) return 1u;
    if (t >= 255.0) return 255u;
    return (uint32_t)t;
}

/* The factor of a kept element: 1 / (1 - p_q) = 256 / (256 - t) with t = fa_dropout_threshold(p),
 * so E[keep * scale] = 1 exactly and the output stays unbiased (FlashAttention-2 scales by
 * 1 / (1 - p) and is off by (1 - p_q) / (1 - p)). One float for every backend; 1 for p <= 0. */
FA_HD float fa_dropout_rescale(float p)
{
    return (float)(256.0 / (double)(256u - fa_dropout_threshold(p)));
}

FA_HD uint32_t fa_u32x4_get(fa_u32x4 r, int64_t lane)
{
    return lane == 0 ? r.x : lane == 1 ? r.y : lane == 2 ? r.z : r.w;
}

/* The random byte of key j (0..15 within its group) of one fa_dropout_random16 call. */
FA_HD uint32_t fa_dropout_byte(fa_u32x4 r, int64_t j)
{
    return (fa_u32x4_get(r, (j >> 2) & 3) >> (8 * (j & 3))) & 0xffu;
}

/* 1 if element (b, h, i, j) is kept, 0 if dropped; threshold = fa_dropout_threshold(p). */
FA_HD int fa_dropout_keep(uint64_t seed, uint64_t offset, int64_t b, int64_t h, int64_t i,
                          int64_t j, uint32_t threshold)
{
    fa_u32x4 r = fa_dropout_random16(seed, offset, b, h, i, j >> 4);
    return fa_dropout_byte(r, j & 15) >= threshold;
}

#endif /* FA_COMMON_H */
