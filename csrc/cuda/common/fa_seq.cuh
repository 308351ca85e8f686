/* fa_seq.cuh - the two things every kernel derives first from its block index: the extent of its
 * sequence (fa_seq_get) and the band of tiles its rows can see under the bottom-right causal /
 * window mask (fa_band_keys, fa_band_queries, fa_band_tiles). Used by all the forward, backward
 * and probabilities kernels, so they agree on both by construction.
 *
 * The band is built on fa_mask_bounds (fa_common.h, shared with the CPU backend): row i sees the
 * closed key range [lo(i), hi(i)], both non-decreasing in i, so the keys a row range [r0, r1]
 * sees are [lo(r0), hi(r1)]. Transposed, key j is seen by the query rows
 * [j + sq - sk - right, j + sq - sk + left] clipped to [0, sq - 1]: fa_mask_bounds with the
 * roles of (sq, sk) and (left, right) swapped. int64 throughout (i + sk - sq +- w stays exact for
 * any sq, sk < 2^31); the results fit int.
 */
#ifndef FA_SEQ_CUH
#define FA_SEQ_CUH

#include <stdint.h>
#include "fa_common.h"

/* Rows of sequence b: q rows [q_row0, q_row0 + sq) and k rows [k_row0, k_row0 + sk) of the
 * (total, h, d) view; a dense sequence starts at b * seqlen (its batch stride does the rest). */
typedef struct fa_seq {
    int64_t q_row0, k_row0;  /* cu_seqlens_q/k[b] (varlen), b * seqlen_q/k (dense) */
    int sq, sk;              /* query / key rows of this sequence */
    int varlen;              /* 1: the rows come from cu_seqlens */
} fa_seq;

/* The extent of sequence b. varlen: the caller's test for cu_seqlens (both given or both NULL);
 * cu_seqlens_q/k: (batch + 1,) device; seqlen_q/k: the dense sizes. */
static __device__ __forceinline__ fa_seq fa_seq_get(int varlen, const int32_t *cu_seqlens_q,
                                                   const int32_t *cu_seqlens_k, int seqlen_q,
                                                   int seqlen_k, int b)
{
    fa_seq s;
    if (varlen) {
        const int q0 = cu_seqlens_q[b], q1 = cu_seqlens_q[b + 1];
        const int k0 = cu_seqlens_k[b], k1 = cu_seqlens_k[b + 1];
        s.q_row0 = q0;
        s.k_row0 = k0;
        s.sq = q1 - q0;
        s.sk = k1 - k0;
        s.varlen = 1;
    } else {
        s.q_row0 = (int64_t)b * seqlen_q;
        s.k_row0 = (int64_t)b * seqlen_k;
        s.sq = seqlen_q;
        s.sk = seqlen_k;
        s.varlen = 0;
    }
    return s;
}

/* Keys seen by at least one query row of [r_first, r_last]: the closed range [*lo, *hi] (empty
 * when *lo > *hi). left/right: -1 = unbounded. */
static __device__ __forceinline__ void fa_band_keys(int64_t r_first, int64_t r_last, int64_t sq, int64_t sk,
                                                   int64_t left, int64_t right, int64_t *lo, int64_t *hi)
{
    int64_t unused;
    fa_mask_bounds(r_first, sq, sk, left, right, lo, &unused);
    fa_mask_bounds(r_last, sq, sk, left, right, &unused, hi);
}

/* Query rows that see at least one key of [c_first, c_last]: the closed range [*lo, *hi]. */
static __device__ __forceinline__ void fa_band_queries(int64_t c_first, int64_t c_last, int64_t sq,
                                                      int64_t sk, int64_t left, int64_t right,
                                                      int64_t *lo, int64_t *hi)
{
    int64_t unused;
    fa_mask_bounds(c_first, sk, sq, right, left, lo, &unused);
    fa_mask_bounds(c_last, sk, sq, right, left, &unused, hi);
}

/* Tiles of `tile` rows that cover the closed range [lo, hi] (lo >= 0): tiles first .. first +
 * count - 1; count = 0 for an empty range. */
typedef struct fa_band {
    int first, count;
} fa_band;

static __device__ __forceinline__ fa_band fa_band_tiles(int64_t lo, int64_t hi, int tile)
{
    fa_band t = {0, 0};
    if (lo <= hi) {
        t.first = (int)(lo / tile);
        t.count = (int)(hi / tile) - t.first + 1;
    }
    return t;
}

#endif /* FA_SEQ_CUH */
