/* fa_fwd.c - the tiled online-softmax forward of the CPU backend.
 *
 * One work item = (sequence b, query head h, block of FA_CPU_BR query rows). The item keeps its
 * query block transposed, Q^T (d x Br), and works in the transposed score space: for each
 * block of Bc keys inside the mask band
 *     S^T (Bc x Br) = K_blk (Bc x d) . Q^T            (fa_gemm, K rows read in place for fp32)
 *     softcap / ALiBi / mask (mask only on tiles the band cuts), in log2 units
 *     m_new = max(m_i, column max of S^T);  alpha = 2^(m_i - m_new)
 *     P^T = 2^(S^T - m_new);  l_i = alpha l_i + column sum of P^T;  dropout: P^T *= Z^T
 *     O^T (d x Br) = O^T diag(alpha) + V_blk^T (d x Bc) . P^T   (fa_gemm, V read in place)
 * With vectors running along the query index, the row-wise softmax statistics (m_i, l_i,
 * alpha) are plain vertical vector operations: no horizontal reductions anywhere. At the end
 * O = (O^T diag(1/l))^T, LSE = ln 2 (m + log2 l). Scores carry the factor log2(e) from the
 * start (folded into Q^T), so every exponential is a base-2 fa_vexp2.
 * bf16 inputs with AVX512-BF16 (FA_GEMM_DPBF16) and an even head dim run both GEMMs on
 * vdpbf16ps: S^T from the K rows in place and Q^T packed into bf16 pairs (unscaled: the products
 * are exact, qscale multiplies S^T afterwards); O^T from V and P^T packed into pairs along the
 * key index per block (P^T rounded to bf16 for the multiply only; m, l and O^T stay fp32).
 * Items of at most FWD_ROWS_DIRECT query rows (decode) outside the vdpbf16ps path run the row
 * path instead (fwd_step_rows): S by rows with the keys along the lanes, each score a dot product
 * of a query row with a key row (along d); the score epilogue, exponentials and sums one vector
 * per FA_VL keys; O by rows, P V one vector FMA per (key, row, FA_VL dims).
 * Scratch: one allocation per fa_fwd_cpu call, independent of sq and sk (2 d Br + 2 Bc Br +
 * 2 Bc d + 8 d floats: about 98 KiB at d = 64, 328 KiB at d = 256), so the extra memory stays a
 * few hundred KiB per calling thread at any sequence length (nothing grows with sq * sk).
 */
#include <math.h>
#include <string.h>

#include "fa_cpu.h"
#include "fa_gemm.h"
#include "fa_scores.h"

#define BR FA_CPU_BR
#define BC FA_CPU_BC
/* Items of at most this many query rows (a decode step, a few speculative tokens) run the row
 * path when the vdpbf16ps path does not apply: q.k as dot products along d and O by rows, so no
 * vector lane computes a query row that does not exist (the transposed GEMMs compute FA_VL lanes
 * however few rows there are: 16x the work for one row on AVX-512). 4: faster than the block path
 * for 1-4 rows (4 rows: equal at d = 64, 1.1-1.2x at d = 128; benchmarks/results/
 * cpu_decode_2core_2026-12-06.md). */
#define FWD_ROWS_DIRECT 4

typedef struct fwd_scratch {
    float *qt;    /* (d, BR)   Q^T of the item, pre-scaled */
    float *st;    /* (BC, BR)  S^T, then P^T */
    float *ot;    /* (d, BR)   O^T accumulator */
    float *kb;    /* (BC, d)   K block converted to fp32 (fp16/bf16 inputs) */
    float *vb;    /* (BC, d)   V block converted to fp32 */
    float *z;     /* (BC, BR)  dropout factors, transposed */
    float *m;     /* (BR,) running max, log2 units */
    float *l;     /* (BR,) running sum */
    float *alpha; /* (BR,) rescale factor of this step */
    float *muse;  /* (BR,) final LSE in log2 units, for the probabilities output */
    float *row;   /* (d,)  one row in fp32 */
    uint32_t *qt2; /* (d/2, BR)  bf16 path: Q^T as bf16 pairs along d, unscaled */
    uint32_t *pt2; /* (BC/2, BR) bf16 path: P^T as bf16 pairs along the keys */
    uint32_t *vp;  /* (BC/2, d)  bf16 path: V block as bf16 pairs along the keys */
    float *qr;    /* (FWD_ROWS_DIRECT, d) row path: the query rows, pre-scaled */
    float *orow;  /* (FWD_ROWS_DIRECT, d) row path: the O accumulator, by rows */
    void *mem;
} fwd_scratch;

/* fa_cpu_layout_fn of fwd_scratch (fa_cpu_arena_build). */
static void fwd_scratch_layout(void *scratch, fa_cpu_arena *a, int64_t d)
{
    fwd_scratch *w = (fwd_scratch *)scratch;
    const size_t n_qt = (size_t)d * BR, n_st = (size_t)BC * BR, n_kb = (size_t)BC * d;
    w->qt = fa_cpu_arena_take(a, n_qt);
    w->ot = fa_cpu_arena_take(a, n_qt);
    w->st = fa_cpu_arena_take(a, n_st);
    w->z = fa_cpu_arena_take(a, n_st);
    w->kb = fa_cpu_arena_take(a, n_kb);
    w->vb = fa_cpu_arena_take(a, n_kb);
    w->m = fa_cpu_arena_take(a, BR);
    w->l = fa_cpu_arena_take(a, BR);
    w->alpha = fa_cpu_arena_take(a, BR);
    w->muse = fa_cpu_arena_take(a, BR);
    w->row = fa_cpu_arena_take(a, (size_t)d);
    /* uint32 pairs take the room of as many floats */
    w->qt2 = (uint32_t *)(void *)fa_cpu_arena_take(a, (size_t)(d + 1) / 2 * BR);
    w->pt2 = (uint32_t *)(void *)fa_cpu_arena_take(a, (size_t)BC / 2 * BR);
    w->vp = (uint32_t *)(void *)fa_cpu_arena_take(a, (size_t)BC / 2 * (size_t)d);
    w->qr = fa_cpu_arena_take(a, (size_t)FWD_ROWS_DIRECT * (size_t)d);
    w->orow = fa_cpu_arena_take(a, (size_t)FWD_ROWS_DIRECT * (size_t)d);
}

/* Whether this call runs the vdpbf16ps path (see the top of the file). */
static int fwd_use_bf16(const fa_params *p) { return fa_gemm_use_bf16(p->dtype == FA_BF16, p->head_dim); }

/* One work item: query rows [i0, i0 + nrows) of one (b, h); nrows may be 0 (a block past the
 * end of a short varlen sequence, which only owns padding rows of the probabilities). */
typedef struct fwd_item {
    fa_head_ctx c;
    int64_t i0, nrows;
    int64_t lanes;        /* query lanes computed: nrows rounded up to FA_VL, <= BR */
    int64_t k_off, v_off; /* element offsets of (b, hk) row 0 in k / v */
    int bf16;             /* fwd_use_bf16 */
    int rows;             /* the row path (FWD_ROWS_DIRECT): w->qr and w->orow instead of Q^T, O^T */
} fwd_item;

/* Row path: the dot products of the query rows (w->qr) with key rows [0, nj) of kblk, into
 * s[jj * sj + ii * si] (the transposed layout S^T: sj = BR, si = 1; by rows: sj = 1, si = BC). */
static void fwd_dots_rows(const fwd_item *it, const fwd_scratch *w, const float *kblk, int64_t k_ms, int64_t nj,
                          float *s, int64_t sj, int64_t si)
{
    const int64_t d = it->c.p->head_dim, dv = d / FA_VL * FA_VL, nr = it->nrows;
    int64_t jj, ii, c;
    for (jj = 0; jj < nj; ++jj) {
        const float *krow = kblk + jj * k_ms;
        fa_vf acc[FWD_ROWS_DIRECT];
        for (ii = 0; ii < nr; ++ii) acc[ii] = fa_vzero();
        for (c = 0; c < dv; c += FA_VL) {
            const fa_vf kv = fa_vload(krow + c);
            for (ii = 0; ii < nr; ++ii) acc[ii] = fa_vfma(fa_vload(w->qr + ii * d + c), kv, acc[ii]);
        }
        for (ii = 0; ii < nr; ++ii) {
            float sum = fa_vhsum(acc[ii]);
            for (c = dv; c < d; ++c) sum += w->qr[ii * d + c] * krow[c];
            s[jj * sj + ii * si] = sum;
        }
    }
}

/* Row path, O = O diag(alpha) + P V for key block [j0, j0 + nj), P(ii, jj) at
 * pm[jj * pj + ii * pi] (strides as fwd_dots_rows). */
static void fwd_pv_rows(const fwd_item *it, fwd_scratch *w, const float *vblk, int64_t v_ks, int64_t nj,
                        const float *pm, int64_t pj, int64_t pi)
{
    const int64_t d = it->c.p->head_dim, dv = d / FA_VL * FA_VL, nr = it->nrows;
    int64_t jj, ii, c;
    for (ii = 0; ii < nr; ++ii)
        for (c = 0; c < d; ++c) w->orow[ii * d + c] *= w->alpha[ii];
    for (jj = 0; jj < nj; ++jj) {
        const float *vrow = vblk + jj * v_ks;
        for (ii = 0; ii < nr; ++ii) {
            const float pv1 = pm[jj * pj + ii * pi];
            const fa_vf pv = fa_vset1(pv1);
            float *o = w->orow + ii * d;
            for (c = 0; c < dv; c += FA_VL) fa_vstore(o + c, fa_vfma(pv, fa_vload(vrow + c), fa_vload(o + c)));
            for (c = dv; c < d; ++c) o[c] += pv1 * vrow[c];
        }
    }
}

/* Row path, one key block [j0, j0 + nj): S by rows (nr, BC) in w->st with the keys along the
 * vector lanes, so the score epilogue (fa_scores_klanes_finish), the exponentials and the sums
 * run one vector per FA_VL keys; then the online-softmax update of m, l, alpha per row,
 * dropout, and O += P V by rows. The probabilities output re-scores through fwd_scores. */
static void fwd_step_rows(const fwd_item *it, fwd_scratch *w, int64_t j0, int64_t nj, int cls)
{
    const fa_params *p = it->c.p;
    const int64_t nr = it->nrows;
    int64_t ii, jj, v, k_ms, v_ks;
    float *s = w->st;
    const float *kblk = fa_rows_f32(p, p->k, it->k_off, p->k_row_stride, j0, nj, w->kb, &k_ms);
    const float *vblk;
    fwd_dots_rows(it, w, kblk, k_ms, nj, s, 1, BC);
    for (ii = 0; ii < nr; ++ii)
        for (jj = nj; jj < BC; ++jj) s[ii * BC + jj] = 0.0f; /* masked below: keys past the block */
    fa_scores_klanes_finish(&it->c, nr, it->i0, j0, cls == FA_TILE_PARTIAL || nj < BC, s, NULL, 1.0f);
    for (ii = 0; ii < nr; ++ii) {
        float *row = s + ii * BC, mold = w->m[ii], mnew = mold, muse, alpha;
        fa_vf rs = fa_vzero(), vm;
        for (jj = 0; jj < nj; ++jj) mnew = row[jj] > mnew ? row[jj] : mnew;
        muse = mnew == -INFINITY ? 0.0f : mnew; /* no key yet: exp2(-inf - 0) = 0 */
        vm = fa_vset1(muse);
        for (v = 0; v < BC; v += FA_VL) {
            const fa_vf e = fa_vexp2(fa_vsub(fa_vload(row + v), vm));
            rs = fa_vadd(rs, e);
            fa_vstore(row + v, e);
        }
        alpha = fa_scalar_exp2(mold - muse);
        w->alpha[ii] = alpha;
        w->l[ii] = w->l[ii] * alpha + fa_vhsum(rs);
        w->m[ii] = mnew;
    }
    if (p->dropout_p > 0.0f) {
        /* l keeps the pre-dropout sum; only the P that multiplies V is dropped and rescaled */
        fa_dropout_tile(p, it->c.b, it->c.h, it->i0, nr, j0, nj, w->z, BC, 0);
        for (ii = 0; ii < nr; ++ii)
            for (jj = 0; jj < nj; ++jj) s[ii * BC + jj] *= w->z[ii * BC + jj];
    }
    vblk = fa_rows_f32(p, p->v, it->v_off, p->v_row_stride, j0, nj, w->vb, &v_ks);
    fwd_pv_rows(it, w, vblk, v_ks, nj, s, 1, BC);
}

/* Scores of key block [j0, j0 + nj) into w->st. */
static void fwd_scores(const fwd_item *it, fwd_scratch *w, int64_t j0, int64_t nj, int cls)
{
    const fa_params *p = it->c.p;
    int64_t k_ms;
    const float *kblk;
#if defined(FA_GEMM_DPBF16)
    if (it->bf16) {
        const uint16_t *krows = (const uint16_t *)p->k + it->k_off + j0 * p->k_row_stride;
        fa_gemm_bf16(nj, it->lanes, p->head_dim / 2, krows, p->k_row_stride, 2, w->qt2, BR, w->st, BR, NULL,
                     FA_GEMM_SET);
        fa_scores_qlanes_finish(&it->c, it->i0, it->lanes, j0, nj, cls, w->st, NULL, it->c.qscale);
        return;
    }
#endif
    kblk = fa_rows_f32(p, p->k, it->k_off, p->k_row_stride, j0, nj, w->kb, &k_ms);
    if (it->rows) {
        /* the probabilities output's re-scoring (fwd_write_probs): S^T, padding lanes zero */
        int64_t jj, ii;
        fwd_dots_rows(it, w, kblk, k_ms, nj, w->st, BR, 1);
        for (jj = 0; jj < nj; ++jj)
            for (ii = it->nrows; ii < it->lanes; ++ii) w->st[jj * BR + ii] = 0.0f;
        fa_scores_qlanes_finish(&it->c, it->i0, it->lanes, j0, nj, cls, w->st, NULL, 1.0f);
        return;
    }
    fa_scores_qlanes(&it->c, kblk, k_ms, w->qt, it->i0, it->lanes, j0, nj, cls, w->st, NULL);
}

/* O^T = O^T diag(alpha) + V_blk^T P^T for key block [j0, j0 + nj), P^T in w->st. */
static void fwd_pv(const fwd_item *it, fwd_scratch *w, int64_t j0, int64_t nj)
{
    const fa_params *p = it->c.p;
    int64_t d = p->head_dim, v_ks;
    const float *vblk;
#if defined(FA_GEMM_DPBF16)
    if (it->bf16) {
        const uint16_t *vrows = (const uint16_t *)p->v + it->v_off + j0 * p->v_row_stride;
        int64_t jj2, np = (nj + 1) / 2;
        for (jj2 = 0; jj2 < np; ++jj2) {
            int64_t j = 2 * jj2;
            int has1 = j + 1 < nj; /* odd nj: the last pair's second key is zero in V and P */
            fa_pack_pairs_bf16(vrows + j * p->v_row_stride, has1 ? vrows + (j + 1) * p->v_row_stride : NULL,
                               d, w->vp + jj2 * d, d);
            fa_pack_pairs_f32(w->st + j * BR, has1 ? w->st + (j + 1) * BR : NULL, it->lanes, w->pt2 + jj2 * BR);
        }
        /* A(dd, jj2) = the pair (V[j0 + 2 jj2][dd], V[j0 + 2 jj2 + 1][dd]) at vp[jj2 * d + dd] */
        fa_gemm_bf16(d, it->lanes, np, (const uint16_t *)(const void *)w->vp, 2, 2 * d, w->pt2, BR, w->ot, BR,
                     w->alpha, FA_GEMM_SCALE_ADD);
        return;
    }
#endif
    /* A(dd, jj) = V[j0 + jj][dd] read in place */
    vblk = fa_rows_f32(p, p->v, it->v_off, p->v_row_stride, j0, nj, w->vb, &v_ks);
    fa_gemm(d, it->lanes, nj, vblk, 1, v_ks, w->st, BR, w->ot, BR, w->alpha, FA_GEMM_SCALE_ADD);
}

/* The probabilities output: rows [i0, i0 + rows_out) of (b, h) in p->p, every column;
 * needs the final m and l of the item. */
static void fwd_write_probs(const fwd_item *it, fwd_scratch *w, int64_t rows_out)
{
    const fa_params *p = it->c.p;
    int64_t ii, jj, v, j0;
    int64_t base = ((it->c.b * p->heads + it->c.h) * p->seqlen_q + it->i0) * p->seqlen_k;
    /* lse in log2 units; +inf for empty rows so that every P of the row becomes 0 */
    for (ii = 0; ii < it->lanes; ++ii)
        w->muse[ii] = w->l[ii] > 0.0f ? w->m[ii] + log2f(w->l[ii]) : INFINITY;
    for (j0 = 0; j0 < p->seqlen_k; j0 += BC) {
        int64_t ncols = p->seqlen_k - j0 < BC ? p->seqlen_k - j0 : BC;
        int64_t nj = it->c.s.sk - j0 < ncols ? it->c.s.sk - j0 : ncols; /* keys of the sequence */
        int cls = FA_TILE_EMPTY;
        if (nj > 0 && it->nrows > 0)
            cls = fa_tile_class(p, &it->c.s, it->i0, it->i0 + it->nrows, j0, j0 + nj);
        if (cls != FA_TILE_EMPTY) {
            fwd_scores(it, w, j0, nj, cls);
            if (p->dropout_p > 0.0f)
                fa_dropout_tile(p, it->c.b, it->c.h, it->i0, it->nrows, j0, nj, w->z, BR, 1);
            for (jj = 0; jj < nj; ++jj)
                for (v = 0; v < it->lanes; v += FA_VL) {
                    float *x = w->st + jj * BR + v;
                    fa_vstore(x, fa_vexp2(fa_vsub(fa_vload(x), fa_vload(w->muse + v))));
                }
        }
        for (ii = 0; ii < rows_out; ++ii)
            for (jj = 0; jj < ncols; ++jj) {
                float val = 0.0f;
                if (cls != FA_TILE_EMPTY && ii < it->nrows && jj < nj) {
                    val = w->st[jj * BR + ii];
                    if (p->dropout_p > 0.0f && w->z[jj * BR + ii] == 0.0f) val = -val;
                }
                fa_store1(p->dtype, p->p, base + ii * p->seqlen_k + j0 + jj, val);
            }
    }
}

/* The online softmax over key block [j0, j0 + nj): S^T in w->st becomes P^T (dropout applied),
 * m, l updated, alpha = the rescale factor of O^T for this step. Vertical over the key rows. */
static void fwd_softmax_step(const fwd_item *it, fwd_scratch *w, int64_t j0, int64_t nj)
{
    const fa_params *p = it->c.p;
    int64_t jj, v;
    for (v = 0; v < it->lanes; v += FA_VL) {
        fa_vf mold = fa_vload(w->m + v), mnew = mold, muse, rs = fa_vzero(), alpha;
        for (jj = 0; jj < nj; ++jj) mnew = fa_vmax(mnew, fa_vload(w->st + jj * BR + v));
        muse = fa_vneginf_to_zero(mnew); /* rows with no key yet: exp2(-inf - 0) = 0 */
        for (jj = 0; jj < nj; ++jj) {
            float *x = w->st + jj * BR + v;
            fa_vf e = fa_vexp2(fa_vsub(fa_vload(x), muse));
            rs = fa_vadd(rs, e);
            fa_vstore(x, e);
        }
        alpha = fa_vexp2(fa_vsub(mold, muse));
        fa_vstore(w->alpha + v, alpha);
        fa_vstore(w->l + v, fa_vfma(fa_vload(w->l + v), alpha, rs));
        fa_vstore(w->m + v, mnew);
    }
    if (p->dropout_p > 0.0f) {
        /* l keeps the pre-dropout sum; only the P^T that multiplies V is dropped and rescaled */
        fa_dropout_tile(p, it->c.b, it->c.h, it->i0, it->nrows, j0, nj, w->z, BR, 1);
        for (jj = 0; jj < nj; ++jj)
            for (v = 0; v < it->lanes; v += FA_VL) {
                float *x = w->st + jj * BR + v;
                fa_vstore(x, fa_vmul(fa_vload(x), fa_vload(w->z + jj * BR + v)));
            }
    }
}

/* One work item: Q^T, the loop over the key blocks of the band, O and LSE. */
static void fwd_item_run(const fa_params *p, fwd_scratch *w, int64_t b, int64_t h, int64_t qb)
{
    fwd_item it;
    int64_t d = p->head_dim, ii, c, kb, kb0, kb1, rows_out;
    fa_head_ctx_init(&it.c, p, b, h);
    it.i0 = qb * BR;
    it.nrows = it.c.s.sq - it.i0;
    if (it.nrows > BR) it.nrows = BR;
    if (it.nrows < 0) it.nrows = 0;
    /* only the lanes the rows fill are computed (a decode step: one vector's width) */
    it.lanes = (it.nrows + FA_VL - 1) / FA_VL * FA_VL;
    if (it.lanes < FA_VL) it.lanes = FA_VL;
    it.k_off = fa_base_off(p, b, it.c.s.k_row0, it.c.hk, p->k_batch_stride, p->k_row_stride, p->k_head_stride);
    it.v_off = fa_base_off(p, b, it.c.s.k_row0, it.c.hk, p->v_batch_stride, p->v_row_stride, p->v_head_stride);
    rows_out = p->seqlen_q - it.i0 < BR ? p->seqlen_q - it.i0 : BR;
    it.bf16 = fwd_use_bf16(p);
    it.rows = !it.bf16 && it.nrows <= FWD_ROWS_DIRECT;

    if (it.bf16) {
        /* Q^T as bf16 pairs, unscaled; padding lanes zero */
        int64_t q_off = fa_base_off(p, b, it.c.s.q_row0, h, p->q_batch_stride, p->q_row_stride, p->q_head_stride);
        int64_t d2 = d / 2;
        for (ii = 0; ii < it.nrows; ++ii) {
            const uint16_t *qrow = (const uint16_t *)p->q + q_off + (it.i0 + ii) * p->q_row_stride;
            for (c = 0; c < d2; ++c) memcpy(w->qt2 + c * BR + ii, qrow + 2 * c, sizeof(uint32_t));
        }
        for (c = 0; c < d2; ++c)
            for (ii = it.nrows; ii < it.lanes; ++ii) w->qt2[c * BR + ii] = 0u;
    } else
    /* Q^T scaled by qscale; padding columns zero */
    {
        int64_t q_off = fa_base_off(p, b, it.c.s.q_row0, h, p->q_batch_stride, p->q_row_stride, p->q_head_stride);
        for (ii = 0; ii < it.nrows; ++ii) {
            float *qrow = it.rows ? w->qr + ii * d : w->row;
            fa_row_to_f32(p->dtype, fa_cptr(p, p->q, q_off + (it.i0 + ii) * p->q_row_stride), qrow, d,
                          it.c.qscale);
            if (!it.rows)
                for (c = 0; c < d; ++c) w->qt[c * BR + ii] = w->row[c];
        }
        if (!it.rows)
            for (c = 0; c < d; ++c)
                for (ii = it.nrows; ii < it.lanes; ++ii) w->qt[c * BR + ii] = 0.0f;
    }
    if (it.rows) memset(w->orow, 0, (size_t)(it.nrows * d) * sizeof(float));
    for (c = 0; c < d; ++c) memset(w->ot + c * BR, 0, (size_t)it.lanes * sizeof(float));
    for (ii = 0; ii < it.lanes; ++ii) {
        w->m[ii] = -INFINITY;
        w->l[ii] = 0.0f;
    }

    fa_key_blocks(&it.c, it.i0, it.nrows, &kb0, &kb1);
    for (kb = kb0; kb <= kb1; ++kb) {
        int64_t j0 = kb * BC, nj = it.c.s.sk - j0 < BC ? it.c.s.sk - j0 : BC;
        int cls = fa_tile_class(p, &it.c.s, it.i0, it.i0 + it.nrows, j0, j0 + nj);
        if (cls == FA_TILE_EMPTY) continue;
        if (it.rows) {
            fwd_step_rows(&it, w, j0, nj, cls);
            continue;
        }
        fwd_scores(&it, w, j0, nj, cls);
        fwd_softmax_step(&it, w, j0, nj);
        fwd_pv(&it, w, j0, nj);
    }

    /* the row path's O into O^T, for the common epilogue */
    if (it.rows)
        for (ii = 0; ii < it.nrows; ++ii)
            for (c = 0; c < d; ++c) w->ot[c * BR + ii] = w->orow[ii * d + c];
    /* O = O^T diag(1/l) transposed back; LSE = ln2 (m + log2 l); empty rows: 0 and -inf */
    {
        int64_t o_off = fa_base_off(p, b, it.c.s.q_row0, h, p->o_batch_stride, p->o_row_stride, p->o_head_stride);
        float *lse = p->lse + fa_lse_off(p, b, h, &it.c.s) + it.i0;
        for (ii = 0; ii < it.nrows; ++ii) {
            float l = w->l[ii];
            float inv = l > 0.0f ? 1.0f / l : 0.0f;
            for (c = 0; c < d; ++c) w->row[c] = w->ot[c * BR + ii] * inv;
            fa_row_from_f32(p->dtype, w->row, fa_ptr(p, p->o, o_off + (it.i0 + ii) * p->o_row_stride), d, 1.0f);
            lse[ii] = l > 0.0f ? (float)((double)w->m[ii] * FA_LN2 + log((double)l)) : -INFINITY;
        }
    }
    if (p->p) fwd_write_probs(&it, w, rows_out);
}

int64_t fa_fwd_cpu_work_items(const fa_params *p)
{
    if (fa_check_params(p, 0) != FA_OK) return 0;
    return p->batch * p->heads * fa_num_blocks(p->seqlen_q, BR);
}

fa_status fa_fwd_cpu(const fa_params *p, int64_t begin, int64_t end)
{
    fwd_scratch w;
    int64_t item, nqb;
    fa_status st = fa_cpu_check(p, 0);
    if (st != FA_OK) return st;
    /* rng_state is written once, by the call whose range starts at item 0 (no data race) */
    if (p->rng_state && begin <= 0) {
        p->rng_state[0] = (int64_t)p->seed;
        p->rng_state[1] = (int64_t)p->offset;
    }
    nqb = fa_num_blocks(p->seqlen_q, BR);
    if (begin < 0) begin = 0;
    if (end > p->batch * p->heads * nqb) end = p->batch * p->heads * nqb;
    if (begin >= end) return FA_OK;
    w.mem = fa_cpu_arena_build(fwd_scratch_layout, &w, p->head_dim);
    if (!w.mem) return FA_ERR_NO_MEMORY;
    for (item = begin; item < end; ++item) {
        int64_t bh = item / nqb;
        fwd_item_run(p, &w, bh / p->heads, bh % p->heads, fa_zigzag(item % nqb, nqb));
    }
    fa_cpu_free(w.mem);
    return FA_OK;
}
