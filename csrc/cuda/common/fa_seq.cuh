/* fa_seq.cuh - the two things every kernel derives first from its block index: the extent of its
 * sequence (fa_seq_get) and the band of tiles its rows can see under the bottom-right causal /
 * window mask (fa_band_keys, fa_band_queries, fa_band_tiles). Used by the sm90 forward, the
 * probabilities pass, and the sm80 and sm90 backward kernels; the sm80 forward writes the same
 * two computations out inline (at 255 registers, every call form moved its allocation: see
 * fa_fwd_kernel.cuh), so a change here must be mirrored there.
 *
 * The mask is fa_mask_bounds' (fa_common.h, shared with the CPU backend): row i sees the closed
 * key range [i + diag - left, i + diag + right] clipped to [0, sk - 1], diag = sk - sq, both ends
 * non-decreasing in i, so the keys of rows [r0, r1] are [lo(r0), hi(r1)]; transposed, key j is
 * seen by the rows [j - diag - right, j - diag + left] clipped to [0, sq - 1]. The bands are
 * computed in the caller's index type I: int64_t in the backward kernels (row +- diag +- window
 * exact for any sq, sk < 2^31), int in the forward, whose short prologue pays for 64-bit
 * divisions at short sequences (the host limits its lengths to < 2^30). The results fit int.
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
 * cu_seqlens_q/k: (batch + 1,) device; seqlen_q/k: the dense sizes, by reference to the kernel
 * argument so that they are read on the dense path only (passed by value they were read up
 * front, which reshuffled the register allocation of the backward kernels that sit at 255). */
static __device__ __forceinline__ fa_seq fa_seq_get(int varlen, const int32_t *cu_seqlens_q,
                                                   const int32_t *cu_seqlens_k, const int &seqlen_q,
                                                   const int &seqlen_k, int b)
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
 * when *lo > *hi). left/right: -1 = unbounded. I: the index type (header comment). */
template <typename I>
static __device__ __forceinline__ void fa_band_keys(int r_first, int r_last, int sq, int sk, int left, int right,
                                                   I *lo, I *hi)
{
    const int diag = sk - sq;
    *lo = 0;
    *hi = (I)sk - 1;
    if (left >= 0) *lo = max(*lo, (I)r_first + diag - left);
    if (right >= 0) *hi = min(*hi, (I)r_last + diag + right);
}

/* Query rows that see at least one key of [c_first, c_last]: the closed range [*lo, *hi]. */
template <typename I>
static __device__ __forceinline__ void fa_band_queries(int c_first, int c_last, int sq, int sk, int left,
                                                      int right, I *lo, I *hi)
{
    const int diag = sk - sq;
    *lo = 0;
    *hi = (I)sq - 1;
    if (right >= 0) *lo = max(*lo, (I)c_first - diag - right);
    if (left >= 0) *hi = min(*hi, (I)c_last - diag + left);
}

/* Tiles of `tile` rows that cover the closed range [lo, hi] (lo >= 0): tiles first .. first +
 * count - 1; count = 0 for an empty range. */
typedef struct fa_band {
    int first, count;
} fa_band;

template <typename I>
static __device__ __forceinline__ fa_band fa_band_tiles(I lo, I hi, int tile)
{
    fa_band t = {0, 0};
    if (lo <= hi) {
        t.first = (int)(lo / tile);
        t.count = (int)(hi / tile) - t.first + 1;
    }
    return t;
}

/* The backward's query tiles of a key block: tiles of `tile` query rows with a row that sees some
 * key of [c0, min(c0 + c_tile, sk)) (fa_band_queries, fa_band_tiles). Rows outside the band get
 * P = 0 on this block, so their tiles are skipped. */
static __device__ __forceinline__ fa_band fa_band_query_tiles(int c0, int c_tile, int sq, int sk, int left,
                                                              int right, int tile)
{
    int64_t lo, hi;
    fa_band_queries(c0, min(c0 + c_tile, sk) - 1, sq, sk, left, right, &lo, &hi);
    return fa_band_tiles(lo, hi, tile);
}

#endif /* FA_SEQ_CUH */
