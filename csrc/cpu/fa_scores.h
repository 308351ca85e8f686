/* fa_scores.h - score tiles of the tiled CPU kernels: S = scale q.k, softcap, ALiBi and the
 * band mask, in log2 units (internal to csrc/cpu).
 *
 * Two layouts, named by what the vector lanes run along:
 *   qlanes: S^T (keys x FA_CPU_BR query lanes), used by the forward and by backward phase 2;
 *   klanes: S   (queries x FA_CPU_BC key lanes), used by backward phase 1.
 * The q.k products come from fa_gemm with the q side (qlanes) or the k side (klanes) already
 * multiplied by fa_head_ctx.qscale, so the tile only adds the elementwise terms.
 */
#ifndef FA_SCORES_H
#define FA_SCORES_H

#include "fa_cpu.h"

/* What a score tile of one (sequence b, query head h) needs. */
typedef struct fa_head_ctx {
    const fa_params *p;
    fa_seq s;
    int64_t b, h, hk;   /* hk: the kv head that query head h reads */
    int64_t off;        /* sk - sq: key j sits on the diagonal of query row j - off */
    float qscale;       /* factor on q.k: scale * log2(e), or scale / softcap with softcap */
    float cap2;         /* softcap * log2(e) */
    float slope2;       /* ALiBi slope * log2(e) */
} fa_head_ctx;

void fa_head_ctx_init(fa_head_ctx *c, const fa_params *p, int64_t b, int64_t h);

/* Key blocks [*kb0, *kb1] (of FA_CPU_BC keys) that can hold a key visible to some row of
 * [i0, i0 + nrows); empty when *kb0 > *kb1. */
void fa_key_blocks(const fa_head_ctx *c, int64_t i0, int64_t nrows, int64_t *kb0, int64_t *kb1);

/* S^T (nj, FA_CPU_BR) of keys [j0, j0 + nj) and query lanes [i0, i0 + lanes), lanes a multiple
 * of FA_VL <= FA_CPU_BR (the lanes a block of queries fills: a decode step computes one vector's
 * width, not FA_CPU_BR): st = K_blk . Q^T, K_blk(jj, c) = kblk[jj * k_ms + c],
 * qt (d, FA_CPU_BR) pre-scaled; then the softcap (tanh values saved in tt (nj, FA_CPU_BR) when
 * tt != NULL), ALiBi, and the band mask (-inf) when cls == FA_TILE_PARTIAL. Lanes past `lanes`
 * are not touched. */
void fa_scores_qlanes(const fa_head_ctx *c, const float *kblk, int64_t k_ms, const float *qt,
                      int64_t i0, int64_t lanes, int64_t j0, int64_t nj, int cls, float *st, float *tt);

/* The elementwise part of fa_scores_qlanes on st (nj, FA_CPU_BR) already holding the q.k
 * products of `lanes` lanes: times scale (skipped when 1), then softcap, ALiBi, mask. For the bf16
 * GEMM, which multiplies the unscaled inputs (scale = fa_head_ctx.qscale there). */
void fa_scores_qlanes_finish(const fa_head_ctx *c, int64_t i0, int64_t lanes, int64_t j0, int64_t nj,
                             int cls, float *st, float *tt, float scale);

/* S (nr, FA_CPU_BC) of query rows [i0, i0 + nr) and key lanes [j0, j0 + FA_CPU_BC):
 * s = Q_rows . K^T, Q_rows(ii, c) = q[ii * q_ms + c], kt (d, FA_CPU_BC) pre-scaled (padding key
 * columns zero); softcap (tanh into tt when non-NULL), ALiBi, and the band mask when mask != 0
 * (needed when the band cuts the tile or the block has keys past sk). */
void fa_scores_klanes(const fa_head_ctx *c, const float *q, int64_t q_ms, int64_t nr,
                      const float *kt, int64_t i0, int64_t j0, int mask, float *s, float *tt);

/* The elementwise part of fa_scores_klanes (see fa_scores_qlanes_finish). */
void fa_scores_klanes_finish(const fa_head_ctx *c, int64_t nr, int64_t i0, int64_t j0, int mask,
                             float *s, float *tt, float scale);

#endif /* FA_SCORES_H */
