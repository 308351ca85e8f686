/* fa_bwd.c - the recomputing backward of the CPU backend, in FA_BWD_CPU_PHASES = 3 phases.
 *
 *   phase 0, item (b, h, query block): D_i = rowsum(dO_i o O_i) into the workspace (fp32,
 *            laid out like lse). D_i = sum_j P_ij dP_ij also with dropout, since
 *            O_i = sum_j P_ij Z_ij V_j and dP_ij = Z_ij dO_i . V_j. With a gradient dlse of
 *            the LSE output, D_i - dlse_i: d lse_i / d s_ij = P_ij adds P_ij dlse_i to dS_ij.
 *   phase 1, item (b, kv head, chunk c): the key blocks kb = c, c + C, c + 2C, ... (C chunks,
 *            bwd_chunks: a function of the shape only). For each such block of Bc keys, for
 *            every query head of the GQA group and every query block the band reaches, in
 *            S layout (queries x Bc key lanes):
 *                S = Q K^T (K^T packed once per block, pre-scaled), P = 2^(S - LSE log2 e)
 *                dV^T += dO^T (P o Z)          dP = (dO V^T) o Z
 *                dS = P o (dP - D) [o (1 - tanh^2) with softcap]      dK^T += Q^T dS
 *                dQ_c += dS K_blk     (the chunk's own fp32 partial sum of dQ, workspace)
 *            so repeated K/V heads are never materialized, dK/dV are written once, and P, dP
 *            are computed once per tile (five GEMMs per tile in all).
 *   phase 2, item (b, h, query block): dQ = softmax_scale (dQ_0 + dQ_1 + ... + dQ_{C-1}).
 * P is recomputed from the forward's LSE; Z is the forward's dropout factor tile (same Philox
 * words, fa_dropout_tile). Every sum runs in a fixed order (key blocks in increasing order
 * within a chunk, then chunks in increasing order) and every item writes disjoint outputs:
 * deterministic by construction, no atomics, results independent of the split and of the
 * thread count. Rows whose LSE is -inf (they see no key) get P = 0, hence zero gradients.
 * bf16 inputs with AVX512-BF16 and an even head dim (fa_gemm_use_bf16) run the five GEMMs on
 * vdpbf16ps (the FA_GEMM_DPBF16 branches of bwd_phase1_block): S = Q K^T and dP = dO V^T multiply the bf16 inputs exactly (qscale
 * applied to S afterwards); dV, dK and dQ multiply P o Z and dS rounded to bf16 (fp32 sums, as
 * FlashAttention does on GPUs). Other inputs (and builds without AVX512-BF16) use fp32 GEMMs.
 * Chunks exist so that a call with few (b, kv head) pairs still has enough phase-1 items for
 * the threads; each chunk costs one fp32 copy of dQ (padded to dpad columns) in the workspace.
 */
#include <math.h>
#include <string.h>

#include "fa_cpu.h"
#include "fa_gemm.h"
#include "fa_scores.h"

#define BR FA_CPU_BR
#define BC FA_CPU_BC

/* Phase 1 aims at this many items (b, kv head, chunk): enough for the threads of a typical
 * host, few enough that the dQ partial sums (one per chunk) stay a few copies of dQ. */
#ifndef FA_BWD_MIN_ITEMS
#define FA_BWD_MIN_ITEMS 16
#endif

/* head_dim rounded up to whole GEMM register tiles: the row length of the dQ partial sums
 * and of the K block copy they are multiplied with (fa_gemm needs N in whole tiles). */
static int64_t bwd_dpad(int64_t d) { return (d + FA_GEMM_NB - 1) / FA_GEMM_NB * FA_GEMM_NB; }

/* Rows of lse-shaped arrays: (b, h, sq) dense, (h, total_q) varlen. */
static int64_t bwd_rows(const fa_params *p)
{
    return fa_is_varlen(p) ? p->heads * p->total_q : p->batch * p->heads * p->seqlen_q;
}

/* Workspace budget for the extra dQ partial sums (chunks 2..C): chunks only add parallelism
 * when b hk is small, so a long MQA sequence (e.g. 1M lse rows x 128 columns = 512 MiB a copy)
 * keeps one copy instead of asking for 16 x that. */
#define FA_BWD_EXTRA_PARTIAL_BYTES ((int64_t)1 << 28)

/* Number of phase-1 chunks C (>= 1, <= key blocks): ceil(FA_BWD_MIN_ITEMS / (b hk)), capped so
 * that the chunks past the first fit FA_BWD_EXTRA_PARTIAL_BYTES. A function of the shape only,
 * so the summation order, and the result, never depends on the thread count. */
static int64_t bwd_chunks(const fa_params *p)
{
    int64_t nkb = fa_num_blocks(p->seqlen_k, BC), bh = p->batch * p->heads_k, c, cap;
    int64_t copy_bytes = bwd_rows(p) * bwd_dpad(p->head_dim) * (int64_t)sizeof(float);
    if (bh <= 0 || nkb <= 1) return 1;
    c = (FA_BWD_MIN_ITEMS + bh - 1) / bh;
    cap = copy_bytes > 0 ? 1 + FA_BWD_EXTRA_PARTIAL_BYTES / copy_bytes : c;
    if (c > cap) c = cap;
    return c < 1 ? 1 : c > nkb ? nkb : c;
}

/* Workspace: D (bwd_rows floats, rounded up to 16), then C partial sums of dQ, each
 * (bwd_rows, dpad) fp32 in lse row order. */
static size_t bwd_d_floats(const fa_params *p) { return ((size_t)bwd_rows(p) + 15u) & ~(size_t)15u; }

static float *bwd_dq_partial(const fa_params *p, int64_t chunk)
{
    return (float *)p->workspace + bwd_d_floats(p) +
           (size_t)chunk * (size_t)bwd_rows(p) * (size_t)bwd_dpad(p->head_dim);
}

/* Per-call scratch (independent of the sequence lengths). */
typedef struct bwd_scratch {
    float *kt, *vt;   /* phase 1: (d, BC) K^T (pre-scaled) and V^T of the item's key block */
    float *kq;        /* phase 1: (BC, dpad) K rows of the block, unscaled, zero padded */
    /* bf16 path (pairs of bf16 in uint32, see fa_gemm_bf16): */
    uint32_t *kt2, *vt2; /* (d/2, BC) K^T / V^T, pairs along d, unscaled */
    uint32_t *kp;        /* (BC/2, dpad) K rows, pairs along the keys */
    uint32_t *qp, *dop;  /* (BR/2, d) Q / dO rows of the tile, pairs along the queries */
    uint32_t *pp, *dsp;  /* (BR/2, BC) P o Z and dS, pairs along the queries */
    uint16_t *dsb;       /* (BR, BC) dS in bf16, row-major */
    float *dkt, *dvt; /* phase 1: (d, BC) accumulators */
    float *qb, *dob;  /* (BR, d) Q / dO rows converted to fp32 (fp16 / bf16 inputs) */
    float *s;         /* (BR * BC) S then P */
    float *pd;        /* (BR * BC) P o Z */
    float *dp;        /* (BR * BC) dP then dS */
    float *tt;        /* (BR * BC) tanh values of the softcap */
    float *z;         /* (BR * BC) dropout factors */
    float *row;       /* (dpad,) */
    void *mem;
} bwd_scratch;

/* fa_cpu_layout_fn of bwd_scratch (fa_cpu_arena_build). */
static void bwd_scratch_layout(void *scratch, fa_cpu_arena *a, int64_t d)
{
    bwd_scratch *w = (bwd_scratch *)scratch;
    const size_t nd = (size_t)d * (BR > BC ? BR : BC), nt = (size_t)BR * BC;
    float **per_nd[] = {&w->kt, &w->vt, &w->dkt, &w->dvt, &w->qb, &w->dob};
    float **per_nt[] = {&w->s, &w->pd, &w->dp, &w->tt, &w->z};
    size_t i;
    for (i = 0; i < sizeof(per_nd) / sizeof(per_nd[0]); ++i) *per_nd[i] = fa_cpu_arena_take(a, nd);
    w->kq = fa_cpu_arena_take(a, (size_t)BC * (size_t)bwd_dpad(d));
    for (i = 0; i < sizeof(per_nt) / sizeof(per_nt[0]); ++i) *per_nt[i] = fa_cpu_arena_take(a, nt);
    w->row = fa_cpu_arena_take(a, (size_t)bwd_dpad(d));
    /* uint32 pairs take the room of as many floats, bf16 half */
    w->kt2 = (uint32_t *)(void *)fa_cpu_arena_take(a, (size_t)(d + 1) / 2 * BC);
    w->vt2 = (uint32_t *)(void *)fa_cpu_arena_take(a, (size_t)(d + 1) / 2 * BC);
    w->kp = (uint32_t *)(void *)fa_cpu_arena_take(a, (size_t)BC / 2 * (size_t)bwd_dpad(d));
    w->qp = (uint32_t *)(void *)fa_cpu_arena_take(a, (size_t)BR / 2 * (size_t)d);
    w->dop = (uint32_t *)(void *)fa_cpu_arena_take(a, (size_t)BR / 2 * (size_t)d);
    w->pp = (uint32_t *)(void *)fa_cpu_arena_take(a, (size_t)BR / 2 * BC);
    w->dsp = (uint32_t *)(void *)fa_cpu_arena_take(a, (size_t)BR / 2 * BC);
    w->dsb = (uint16_t *)(void *)fa_cpu_arena_take(a, (size_t)BR * BC / 2);
}

size_t fa_bwd_cpu_workspace_bytes(const fa_params *p)
{
    size_t rows;
    if (fa_check_params(p, 1) != FA_OK) return 0;
    rows = (size_t)bwd_rows(p);
    if (rows == 0) return 0;
    return (bwd_d_floats(p) + (size_t)bwd_chunks(p) * rows * (size_t)bwd_dpad(p->head_dim)) *
           sizeof(float);
}

int64_t fa_bwd_cpu_work_items(const fa_params *p, int phase)
{
    if (fa_check_params(p, 1) != FA_OK) return 0;
    if (phase == 0 || phase == 2) return p->batch * p->heads * fa_num_blocks(p->seqlen_q, BR);
    if (phase == 1) return p->batch * p->heads_k * bwd_chunks(p);
    return 0;
}

/* LSE of row i in log2 units; +inf for rows that see no key, so that 2^(s - lse2) = 0. */
static inline float bwd_lse2(float lse) { return lse == -INFINITY ? INFINITY : (float)((double)lse * FA_LOG2E); }

/* ---- phase 0 ---------------------------------------------------------------------------- */
static void bwd_phase0_item(const fa_params *p, bwd_scratch *w, int64_t b, int64_t h, int64_t qb)
{
    fa_seq s = fa_get_seq(p, b);
    int64_t d = p->head_dim, i0 = qb * BR, ii, c, nr = s.sq - i0;
    int64_t o_off = fa_base_off(p, b, s.q_row0, h, p->o_batch_stride, p->o_row_stride, p->o_head_stride);
    int64_t do_off = fa_base_off(p, b, s.q_row0, h, p->do_batch_stride, p->do_row_stride, p->do_head_stride);
    const int64_t lse_at = fa_lse_off(p, b, h, &s) + i0;
    float *D = (float *)p->workspace + lse_at;
    if (nr > BR) nr = BR;
    for (ii = 0; ii < nr; ++ii) {
        double acc = 0.0;
        fa_row_to_f32(p->dtype, fa_cptr(p, p->o, o_off + (i0 + ii) * p->o_row_stride), w->row, d, 1.0f);
        fa_row_to_f32(p->dtype, fa_cptr(p, p->dout, do_off + (i0 + ii) * p->do_row_stride), w->qb, d, 1.0f);
        for (c = 0; c < d; ++c) acc += (double)w->row[c] * (double)w->qb[c];
        if (p->dlse != NULL) acc -= (double)p->dlse[lse_at + ii];
        D[ii] = (float)acc;
    }
}

/* ---- phase 1 ---------------------------------------------------------------------------- */
#if defined(FA_GEMM_DPBF16)
/* bf16 path: the key block's operands as pairs (once per block, reused by every tile). */
static void bwd_pack_block_bf16(const fa_params *p, bwd_scratch *w, int64_t k_off, int64_t v_off,
                                int64_t j0, int64_t nj)
{
    int64_t d = p->head_dim, d2 = d / 2, dpad = bwd_dpad(d), jj, c;
    const uint16_t *k = (const uint16_t *)p->k + k_off + j0 * p->k_row_stride;
    const uint16_t *v = (const uint16_t *)p->v + v_off + j0 * p->v_row_stride;
    for (jj = 0; jj < BC; ++jj)
        for (c = 0; c < d2; ++c) {
            if (jj < nj) {
                memcpy(w->kt2 + c * BC + jj, k + jj * p->k_row_stride + 2 * c, sizeof(uint32_t));
                memcpy(w->vt2 + c * BC + jj, v + jj * p->v_row_stride + 2 * c, sizeof(uint32_t));
            } else {
                w->kt2[c * BC + jj] = w->vt2[c * BC + jj] = 0u; /* padding keys */
            }
        }
    for (jj = 0; jj < nj; jj += 2)
        fa_pack_pairs_bf16(k + jj * p->k_row_stride, jj + 1 < nj ? k + (jj + 1) * p->k_row_stride : NULL, d,
                           w->kp + (jj / 2) * dpad, dpad);
}

/* Rows [0, n) (row stride rs, bf16) as pairs along the rows: dst (ceil(n/2), d). */
static void bwd_pairs_rows(const uint16_t *x, int64_t rs, int64_t n, int64_t d, uint32_t *dst)
{
    int64_t i;
    for (i = 0; i < n; i += 2) fa_pack_pairs_bf16(x + i * rs, i + 1 < n ? x + (i + 1) * rs : NULL, d, dst + (i / 2) * d, d);
}

/* fp32 tile rows [0, n) of width BC as bf16 pairs along the rows: dst (ceil(n/2), BC). */
static void bwd_pairs_tile(const float *x, int64_t n, uint32_t *dst)
{
    int64_t i;
    for (i = 0; i < n; i += 2) fa_pack_pairs_f32(x + i * BC, i + 1 < n ? x + (i + 1) * BC : NULL, BC, dst + (i / 2) * BC);
}
#endif

/* Key block kb of (b, hk): dK, dV of its keys; dS K_blk added into the dQ partial sum dqp
 * ((bwd_rows, dpad), this item's chunk). */
static void bwd_phase1_block(const fa_params *p, bwd_scratch *w, int64_t b, int64_t hk, int64_t kb,
                             float *dqp)
{
    fa_seq s = fa_get_seq(p, b);
    int64_t d = p->head_dim, dpad = bwd_dpad(d), group = p->heads / p->heads_k, j0 = kb * BC;
    int64_t nj = s.sk - j0;
    int64_t jj, c, h, v;
    int64_t k_off = fa_base_off(p, b, s.k_row0, hk, p->k_batch_stride, p->k_row_stride, p->k_head_stride);
    int64_t v_off = fa_base_off(p, b, s.k_row0, hk, p->v_batch_stride, p->v_row_stride, p->v_head_stride);
    int softcap = p->softcap > 0.0f, dropout = p->dropout_p > 0.0f;
    int bf = fa_gemm_use_bf16(p->dtype == FA_BF16, d);
    fa_head_ctx c0;
    if (nj <= 0) return; /* a key block past the end of a short varlen sequence */
    if (nj > BC) nj = BC;
    fa_head_ctx_init(&c0, p, b, hk * group);
    (void)bf; /* read only by the FA_GEMM_DPBF16 branches */
#if defined(FA_GEMM_DPBF16)
    if (bf) bwd_pack_block_bf16(p, w, k_off, v_off, j0, nj);
    else
#endif
    {
        /* K^T (pre-scaled), V^T and the K rows (unscaled, for dQ) of the block; padding key
         * columns of K^T / V^T and padding head-dim columns of the K rows zero */
        for (jj = 0; jj < nj; ++jj) {
            float *kq = w->kq + jj * dpad;
            fa_row_to_f32(p->dtype, fa_cptr(p, p->k, k_off + (j0 + jj) * p->k_row_stride), kq, d, 1.0f);
            for (c = d; c < dpad; ++c) kq[c] = 0.0f;
            for (c = 0; c < d; ++c) w->kt[c * BC + jj] = kq[c] * c0.qscale;
            fa_row_to_f32(p->dtype, fa_cptr(p, p->v, v_off + (j0 + jj) * p->v_row_stride), w->row, d, 1.0f);
            for (c = 0; c < d; ++c) w->vt[c * BC + jj] = w->row[c];
        }
        for (c = 0; c < d; ++c)
            for (jj = nj; jj < BC; ++jj) w->kt[c * BC + jj] = w->vt[c * BC + jj] = 0.0f;
    }
    memset(w->dkt, 0, (size_t)d * BC * sizeof(float));
    memset(w->dvt, 0, (size_t)d * BC * sizeof(float));

    for (h = hk * group; h < (hk + 1) * group; ++h) {
        fa_head_ctx ctx;
        int64_t q_off = fa_base_off(p, b, s.q_row0, h, p->q_batch_stride, p->q_row_stride, p->q_head_stride);
        int64_t do_off = fa_base_off(p, b, s.q_row0, h, p->do_batch_stride, p->do_row_stride, p->do_head_stride);
        const float *lse = p->lse + fa_lse_off(p, b, h, &s);
        const float *D = (const float *)p->workspace + fa_lse_off(p, b, h, &s);
        float *dq_h = dqp ? dqp + fa_lse_off(p, b, h, &s) * dpad : NULL;
        int64_t i0;
        fa_head_ctx_init(&ctx, p, b, h);
        for (i0 = 0; i0 < s.sq; i0 += BR) {
            int64_t nr = s.sq - i0 < BR ? s.sq - i0 : BR, ii, q_ms, do_ms;
            int cls = fa_tile_class(p, &s, i0, i0 + nr, j0, j0 + nj);
            const float *qrows, *dorows, *pz;
#if defined(FA_GEMM_DPBF16)
            const uint16_t *qb16 = NULL, *dob16 = NULL;
#endif
            if (cls == FA_TILE_EMPTY) continue;
            qrows = dorows = NULL;
            q_ms = do_ms = 0;
#if defined(FA_GEMM_DPBF16)
            if (bf) {
                qb16 = (const uint16_t *)p->q + q_off + i0 * p->q_row_stride;
                dob16 = (const uint16_t *)p->dout + do_off + i0 * p->do_row_stride;
                /* S (nr x BC) = Q K^T on the bf16 inputs; padding keys masked as below */
                fa_gemm_bf16(nr, BC, d / 2, qb16, p->q_row_stride, 2, w->kt2, BC, w->s, BC, NULL, FA_GEMM_SET);
                fa_scores_klanes_finish(&ctx, nr, i0, j0, cls == FA_TILE_PARTIAL || nj < BC, w->s,
                                        softcap ? w->tt : NULL, ctx.qscale);
            } else
#endif
            {
                qrows = fa_rows_f32(p, p->q, q_off, p->q_row_stride, i0, nr, w->qb, &q_ms);
                dorows = fa_rows_f32(p, p->dout, do_off, p->do_row_stride, i0, nr, w->dob, &do_ms);
                /* padding keys (nj < BC) have S = 0 from the zero K^T columns: mask them too */
                fa_scores_klanes(&ctx, qrows, q_ms, nr, w->kt, i0, j0, cls == FA_TILE_PARTIAL || nj < BC,
                                 w->s, softcap ? w->tt : NULL);
            }
            for (ii = 0; ii < nr; ++ii) {
                fa_vf l2 = fa_vset1(bwd_lse2(lse[i0 + ii]));
                for (v = 0; v < BC; v += FA_VL) {
                    float *x = w->s + ii * BC + v;
                    fa_vstore(x, fa_vexp2(fa_vsub(fa_vload(x), l2)));
                }
            }
            pz = w->s;
            if (dropout) {
                fa_dropout_tile(p, b, h, i0, nr, j0, nj, w->z, BC, 0);
                for (ii = 0; ii < nr * BC; ii += FA_VL)
                    fa_vstore(w->pd + ii, fa_vmul(fa_vload(w->s + ii), fa_vload(w->z + ii)));
                pz = w->pd;
            }
#if defined(FA_GEMM_DPBF16)
            if (bf) {
                /* dV^T += dO^T (P o Z): A(dd, pair of rows) from dO pairs, B = P o Z pairs */
                bwd_pairs_rows(dob16, p->do_row_stride, nr, d, w->dop);
                bwd_pairs_tile(pz, nr, w->pp);
                fa_gemm_bf16(d, BC, (nr + 1) / 2, (const uint16_t *)(const void *)w->dop, 2, 2 * d, w->pp, BC,
                             w->dvt, BC, NULL, FA_GEMM_ADD);
                /* dP = dO V^T on the bf16 inputs */
                fa_gemm_bf16(nr, BC, d / 2, dob16, p->do_row_stride, 2, w->vt2, BC, w->dp, BC, NULL, FA_GEMM_SET);
            } else
#endif
            {
                /* dV^T (d x BC) += dO^T (d x nr) (P o Z), A(dd, ii) = dO[ii][dd] */
                fa_gemm(d, BC, nr, dorows, 1, do_ms, pz, BC, w->dvt, BC, NULL, FA_GEMM_ADD);
                /* dP (nr x BC) = dO V^T */
                fa_gemm(nr, BC, d, dorows, do_ms, 1, w->vt, BC, w->dp, BC, NULL, FA_GEMM_SET);
            }
            /* dS = P o (dP o Z - D) o (1 - t^2) */
            for (ii = 0; ii < nr; ++ii) {
                fa_vf Di = fa_vset1(D[i0 + ii]);
                for (v = 0; v < BC; v += FA_VL) {
                    int64_t e = ii * BC + v;
                    fa_vf dpv = fa_vload(w->dp + e);
                    fa_vf ds;
                    if (dropout) dpv = fa_vmul(dpv, fa_vload(w->z + e));
                    ds = fa_vmul(fa_vload(w->s + e), fa_vsub(dpv, Di));
                    if (softcap) {
                        fa_vf t = fa_vload(w->tt + e);
                        ds = fa_vmul(ds, fa_vsub(fa_vset1(1.0f), fa_vmul(t, t)));
                    }
                    fa_vstore(w->dp + e, ds);
                }
            }
#if defined(FA_GEMM_DPBF16)
            if (bf) {
                /* dK^T += Q^T dS (Q pairs, dS pairs along the queries); dQ_c += dS K (dS rows
                 * in bf16, K pairs along the keys; an odd nj pairs the last key with a zero) */
                bwd_pairs_rows(qb16, p->q_row_stride, nr, d, w->qp);
                bwd_pairs_tile(w->dp, nr, w->dsp);
                fa_gemm_bf16(d, BC, (nr + 1) / 2, (const uint16_t *)(const void *)w->qp, 2, 2 * d, w->dsp, BC,
                             w->dkt, BC, NULL, FA_GEMM_ADD);
                for (ii = 0; ii < nr; ++ii) fa_bf16_row(w->dp + ii * BC, BC, w->dsb + ii * BC);
                fa_gemm_bf16(nr, dpad, (nj + 1) / 2, w->dsb, BC, 2, w->kp, dpad, dq_h + i0 * dpad, dpad, NULL,
                             FA_GEMM_ADD);
                continue;
            }
#endif
            /* dK^T (d x BC) += Q^T (d x nr) dS, A(dd, ii) = Q[ii][dd] */
            fa_gemm(d, BC, nr, qrows, 1, q_ms, w->dp, BC, w->dkt, BC, NULL, FA_GEMM_ADD);
            /* dQ_c rows (nr x dpad) += dS (nr x nj) K_blk (nj x dpad) */
            fa_gemm(nr, dpad, nj, w->dp, BC, 1, w->kq, dpad, dq_h + i0 * dpad, dpad, NULL, FA_GEMM_ADD);
        }
    }

    /* dK = softmax_scale dK^T^T (the score is scale q.k), dV = dV^T^T */
    {
        int64_t dk_off = fa_base_off(p, b, s.k_row0, hk, p->dk_batch_stride, p->dk_row_stride, p->dk_head_stride);
        int64_t dv_off = fa_base_off(p, b, s.k_row0, hk, p->dv_batch_stride, p->dv_row_stride, p->dv_head_stride);
        for (jj = 0; jj < nj; ++jj) {
            for (c = 0; c < d; ++c) w->row[c] = w->dkt[c * BC + jj];
            fa_row_from_f32(p->dtype, w->row, fa_ptr(p, p->dk, dk_off + (j0 + jj) * p->dk_row_stride), d,
                            p->softmax_scale);
            for (c = 0; c < d; ++c) w->row[c] = w->dvt[c * BC + jj];
            fa_row_from_f32(p->dtype, w->row, fa_ptr(p, p->dv, dv_off + (j0 + jj) * p->dv_row_stride), d, 1.0f);
        }
    }
}

/* Item (b, hk, chunk) of phase 1: zero the chunk's dQ partial rows of the group's heads, then
 * the key blocks chunk, chunk + C, ... in increasing order. */
static void bwd_phase1_item(const fa_params *p, bwd_scratch *w, int64_t b, int64_t hk, int64_t chunk)
{
    fa_seq s = fa_get_seq(p, b);
    int64_t group = p->heads / p->heads_k, nchunk = bwd_chunks(p), dpad = bwd_dpad(p->head_dim);
    int64_t h, kb, nkb = fa_num_blocks(s.sk, BC);
    /* no query row anywhere: no workspace (maybe NULL), and dK = dV = 0 come from the blocks */
    float *dqp = bwd_rows(p) > 0 ? bwd_dq_partial(p, chunk) : NULL;
    if (dqp && s.sq > 0)
        for (h = hk * group; h < (hk + 1) * group; ++h)
            memset(dqp + fa_lse_off(p, b, h, &s) * dpad, 0, (size_t)(s.sq * dpad) * sizeof(float));
    for (kb = chunk; kb < nkb; kb += nchunk) bwd_phase1_block(p, w, b, hk, kb, dqp);
}

/* ---- phase 2 ---------------------------------------------------------------------------- */
static void bwd_phase2_item(const fa_params *p, bwd_scratch *w, int64_t b, int64_t h, int64_t qb)
{
    fa_seq s = fa_get_seq(p, b);
    int64_t d = p->head_dim, dpad = bwd_dpad(d), i0 = qb * BR, nr = s.sq - i0, ii, c, v;
    int64_t nchunk = bwd_chunks(p), row0 = fa_lse_off(p, b, h, &s) + i0;
    int64_t dq_off = fa_base_off(p, b, s.q_row0, h, p->dq_batch_stride, p->dq_row_stride, p->dq_head_stride);
    if (nr <= 0) return;
    if (nr > BR) nr = BR;
    for (ii = 0; ii < nr; ++ii) {
        /* dQ row = softmax_scale (dQ_0 + dQ_1 + ...), chunks in increasing order */
        const float *src = bwd_dq_partial(p, 0) + (row0 + ii) * dpad;
        memcpy(w->row, src, (size_t)dpad * sizeof(float));
        for (c = 1; c < nchunk; ++c) {
            src = bwd_dq_partial(p, c) + (row0 + ii) * dpad;
            for (v = 0; v < dpad; v += FA_VL)
                fa_vstore(w->row + v, fa_vadd(fa_vload(w->row + v), fa_vload(src + v)));
        }
        fa_row_from_f32(p->dtype, w->row, fa_ptr(p, p->dq, dq_off + (i0 + ii) * p->dq_row_stride), d,
                        p->softmax_scale);
    }
}

fa_status fa_bwd_cpu(const fa_params *p, int phase, int64_t begin, int64_t end)
{
    bwd_scratch w;
    int64_t item, nitems, nblk;
    fa_status st = fa_cpu_check(p, 1);
    if (st != FA_OK) return st;
    if (phase < 0 || phase >= FA_BWD_CPU_PHASES) return FA_ERR_SHAPE;
    /* the workspace is read and written as floats: 16-byte aligned (any malloc's) */
    if (fa_bwd_cpu_workspace_bytes(p) > 0 &&
        (p->workspace == NULL || p->workspace_bytes < fa_bwd_cpu_workspace_bytes(p) ||
         (uintptr_t)p->workspace % 16 != 0))
        return FA_ERR_WORKSPACE;
    nitems = fa_bwd_cpu_work_items(p, phase);
    nblk = phase == 1 ? bwd_chunks(p) : fa_num_blocks(p->seqlen_q, BR);
    if (begin < 0) begin = 0;
    if (end > nitems) end = nitems;
    if (begin >= end) return FA_OK;
    w.mem = fa_cpu_arena_build(bwd_scratch_layout, &w, p->head_dim);
    if (!w.mem) return FA_ERR_NO_MEMORY;
    for (item = begin; item < end; ++item) {
        /* phase 1 chunks interleave the key blocks, so they cost alike: no zig-zag */
        int64_t outer = item / nblk, blk = phase == 1 ? item % nblk : fa_zigzag(item % nblk, nblk);
        if (phase == 0) bwd_phase0_item(p, &w, outer / p->heads, outer % p->heads, blk);
        else if (phase == 1) bwd_phase1_item(p, &w, outer / p->heads_k, outer % p->heads_k, blk);
        else bwd_phase2_item(p, &w, outer / p->heads, outer % p->heads, blk);
    }
    fa_cpu_free(w.mem);
    return FA_OK;
}
