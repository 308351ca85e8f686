/* fa_bwd.c - the recomputing backward of the CPU backend, in FA_BWD_CPU_PHASES = 3 phases.
 *
 *   phase 0, item (b, h, query block): D_i = rowsum(dO_i o O_i) into the workspace (fp32,
 *            laid out like lse). D_i = sum_j P_ij dP_ij also with dropout, since
 *            O_i = sum_j P_ij Z_ij V_j and dP_ij = Z_ij dO_i . V_j.
 *   phase 1, item (b, kv head, key block of Bc keys): dK, dV of those keys. For every query
 *            head of the GQA group and every query block the band reaches, in S layout
 *            (queries x Bc key lanes):
 *                S = Q K^T (K^T packed once per item, pre-scaled), P = 2^(S - LSE log2 e)
 *                dV^T += dO^T (P o Z)          dP = (dO V^T) o Z
 *                dS = P o (dP - D) [o (1 - tanh^2) with softcap]      dK^T += Q^T dS
 *            so repeated K/V heads are never materialized and dK/dV are written once.
 *   phase 2, item (b, h, query block): dQ, in the forward's transposed layout (Bc keys x Br
 *            query lanes): S^T, P^T, dP^T = V dO^T, dS^T, dQ^T += K^T dS^T.
 * P is recomputed from the forward's LSE; Z is the forward's dropout factor tile (same Philox
 * words, fa_dropout_tile). Every sum runs in a fixed order and every item writes disjoint
 * outputs: deterministic by construction, no atomics, results independent of the split.
 * Rows whose LSE is -inf (they see no key) get P = 0, hence zero gradients.
 */
#include <math.h>
#include <string.h>

#include "fa_cpu.h"
#include "fa_gemm.h"
#include "fa_scores.h"

#define BR FA_CPU_BR
#define BC FA_CPU_BC

/* Per-call scratch, sized for both phases 1 and 2 (independent of the sequence lengths). */
typedef struct bwd_scratch {
    float *kt, *vt;   /* phase 1: (d, BC) K^T (pre-scaled) and V^T of the item's key block */
    float *dkt, *dvt; /* phase 1: (d, BC) accumulators */
    float *qt, *dot;  /* phase 2: (d, BR) Q^T (pre-scaled) and dO^T */
    float *dqt;       /* phase 2: (d, BR) accumulator */
    float *qb, *dob;  /* (BR, d) Q / dO rows converted to fp32 (fp16 / bf16 inputs) */
    float *kb, *vb;   /* (BC, d) K / V rows converted to fp32 */
    float *s;         /* (BR * BC) S then P (S^T then P^T in phase 2) */
    float *pd;        /* (BR * BC) P o Z */
    float *dp;        /* (BR * BC) dP then dS */
    float *tt;        /* (BR * BC) tanh values of the softcap */
    float *z;         /* (BR * BC) dropout factors */
    float *lse2, *dd; /* (BR,) phase 2: LSE in log2 units (+inf for empty rows), D */
    float *row;       /* (d,) */
    void *mem;
} bwd_scratch;

/* fa_cpu_layout_fn of bwd_scratch (fa_cpu_arena_build). */
static void bwd_scratch_layout(void *scratch, fa_cpu_arena *a, int64_t d)
{
    bwd_scratch *w = (bwd_scratch *)scratch;
    const size_t nd = (size_t)d * (BR > BC ? BR : BC), nt = (size_t)BR * BC, nk = (size_t)BC * d;
    float **per_nd[] = {&w->kt, &w->vt, &w->dkt, &w->dvt, &w->qt, &w->dot, &w->dqt, &w->qb, &w->dob};
    float **per_nt[] = {&w->s, &w->pd, &w->dp, &w->tt, &w->z};
    size_t i;
    for (i = 0; i < sizeof(per_nd) / sizeof(per_nd[0]); ++i) *per_nd[i] = fa_cpu_arena_take(a, nd);
    w->kb = fa_cpu_arena_take(a, nk);
    w->vb = fa_cpu_arena_take(a, nk);
    for (i = 0; i < sizeof(per_nt) / sizeof(per_nt[0]); ++i) *per_nt[i] = fa_cpu_arena_take(a, nt);
    w->lse2 = fa_cpu_arena_take(a, BR);
    w->dd = fa_cpu_arena_take(a, BR);
    w->row = fa_cpu_arena_take(a, (size_t)d);
}

size_t fa_bwd_cpu_workspace_bytes(const fa_params *p)
{
    int64_t n;
    if (fa_check_params(p, 1) != FA_OK) return 0;
    n = fa_is_varlen(p) ? p->heads * p->total_q : p->batch * p->heads * p->seqlen_q;
    return (size_t)n * sizeof(float);
}

int64_t fa_bwd_cpu_work_items(const fa_params *p, int phase)
{
    if (fa_check_params(p, 1) != FA_OK) return 0;
    if (phase == 0 || phase == 2) return p->batch * p->heads * fa_num_blocks(p->seqlen_q, BR);
    if (phase == 1) return p->batch * p->heads_k * fa_num_blocks(p->seqlen_k, BC);
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
    float *D = (float *)p->workspace + fa_lse_off(p, b, h, &s) + i0;
    if (nr > BR) nr = BR;
    for (ii = 0; ii < nr; ++ii) {
        double acc = 0.0;
        fa_row_to_f32(p->dtype, fa_cptr(p, p->o, o_off + (i0 + ii) * p->o_row_stride), w->row, d, 1.0f);
        fa_row_to_f32(p->dtype, fa_cptr(p, p->dout, do_off + (i0 + ii) * p->do_row_stride), w->qb, d, 1.0f);
        for (c = 0; c < d; ++c) acc += (double)w->row[c] * (double)w->qb[c];
        D[ii] = (float)acc;
    }
}

/* ---- phase 1 ---------------------------------------------------------------------------- */
static void bwd_phase1_item(const fa_params *p, bwd_scratch *w, int64_t b, int64_t hk, int64_t kb)
{
    fa_seq s = fa_get_seq(p, b);
    int64_t d = p->head_dim, group = p->heads / p->heads_k, j0 = kb * BC, nj = s.sk - j0;
    int64_t jj, c, h, v;
    int64_t k_off = fa_base_off(p, b, s.k_row0, hk, p->k_batch_stride, p->k_row_stride, p->k_head_stride);
    int64_t v_off = fa_base_off(p, b, s.k_row0, hk, p->v_batch_stride, p->v_row_stride, p->v_head_stride);
    int softcap = p->softcap > 0.0f, dropout = p->dropout_p > 0.0f;
    fa_head_ctx c0;
    if (nj <= 0) return; /* a key block past the end of a short varlen sequence */
    if (nj > BC) nj = BC;
    fa_head_ctx_init(&c0, p, b, hk * group);

    /* K^T (pre-scaled) and V^T of the block; padding key columns zero */
    for (jj = 0; jj < nj; ++jj) {
        fa_row_to_f32(p->dtype, fa_cptr(p, p->k, k_off + (j0 + jj) * p->k_row_stride), w->row, d, c0.qscale);
        for (c = 0; c < d; ++c) w->kt[c * BC + jj] = w->row[c];
        fa_row_to_f32(p->dtype, fa_cptr(p, p->v, v_off + (j0 + jj) * p->v_row_stride), w->row, d, 1.0f);
        for (c = 0; c < d; ++c) w->vt[c * BC + jj] = w->row[c];
    }
    for (c = 0; c < d; ++c)
        for (jj = nj; jj < BC; ++jj) w->kt[c * BC + jj] = w->vt[c * BC + jj] = 0.0f;
    memset(w->dkt, 0, (size_t)d * BC * sizeof(float));
    memset(w->dvt, 0, (size_t)d * BC * sizeof(float));

    for (h = hk * group; h < (hk + 1) * group; ++h) {
        fa_head_ctx ctx;
        int64_t q_off = fa_base_off(p, b, s.q_row0, h, p->q_batch_stride, p->q_row_stride, p->q_head_stride);
        int64_t do_off = fa_base_off(p, b, s.q_row0, h, p->do_batch_stride, p->do_row_stride, p->do_head_stride);
        const float *lse = p->lse + fa_lse_off(p, b, h, &s);
        const float *D = (const float *)p->workspace + fa_lse_off(p, b, h, &s);
        int64_t i0;
        fa_head_ctx_init(&ctx, p, b, h);
        for (i0 = 0; i0 < s.sq; i0 += BR) {
            int64_t nr = s.sq - i0 < BR ? s.sq - i0 : BR, ii, q_ms, do_ms;
            int cls = fa_tile_class(p, &s, i0, i0 + nr, j0, j0 + nj);
            const float *qrows, *dorows, *pz;
            if (cls == FA_TILE_EMPTY) continue;
            qrows = fa_rows_f32(p, p->q, q_off, p->q_row_stride, i0, nr, w->qb, &q_ms);
            dorows = fa_rows_f32(p, p->dout, do_off, p->do_row_stride, i0, nr, w->dob, &do_ms);
            /* padding keys (nj < BC) have S = 0 from the zero K^T columns: mask them too */
            fa_scores_klanes(&ctx, qrows, q_ms, nr, w->kt, i0, j0, cls == FA_TILE_PARTIAL || nj < BC,
                             w->s, softcap ? w->tt : NULL);
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
            /* dV^T (d x BC) += dO^T (d x nr) (P o Z), A(dd, ii) = dO[ii][dd] */
            fa_gemm(d, BC, nr, dorows, 1, do_ms, pz, BC, w->dvt, BC, NULL, FA_GEMM_ADD);
            /* dP (nr x BC) = dO V^T */
            fa_gemm(nr, BC, d, dorows, do_ms, 1, w->vt, BC, w->dp, BC, NULL, FA_GEMM_SET);
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
            /* dK^T (d x BC) += Q^T (d x nr) dS, A(dd, ii) = Q[ii][dd] */
            fa_gemm(d, BC, nr, qrows, 1, q_ms, w->dp, BC, w->dkt, BC, NULL, FA_GEMM_ADD);
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

/* ---- phase 2 ---------------------------------------------------------------------------- */
static void bwd_phase2_item(const fa_params *p, bwd_scratch *w, int64_t b, int64_t h, int64_t qb)
{
    fa_head_ctx ctx;
    int64_t d = p->head_dim, i0 = qb * BR, nr, ii, c, v, kb, kb0, kb1;
    int64_t q_off, do_off, k_off, v_off;
    int softcap = p->softcap > 0.0f, dropout = p->dropout_p > 0.0f;
    const float *lse, *D;
    fa_head_ctx_init(&ctx, p, b, h);
    nr = ctx.s.sq - i0;
    if (nr <= 0) return;
    if (nr > BR) nr = BR;
    q_off = fa_base_off(p, b, ctx.s.q_row0, h, p->q_batch_stride, p->q_row_stride, p->q_head_stride);
    do_off = fa_base_off(p, b, ctx.s.q_row0, h, p->do_batch_stride, p->do_row_stride, p->do_head_stride);
    k_off = fa_base_off(p, b, ctx.s.k_row0, ctx.hk, p->k_batch_stride, p->k_row_stride, p->k_head_stride);
    v_off = fa_base_off(p, b, ctx.s.k_row0, ctx.hk, p->v_batch_stride, p->v_row_stride, p->v_head_stride);
    lse = p->lse + fa_lse_off(p, b, h, &ctx.s) + i0;
    D = (const float *)p->workspace + fa_lse_off(p, b, h, &ctx.s) + i0;

    /* Q^T (pre-scaled), dO^T, LSE and D along the query lanes; padding lanes inert */
    for (ii = 0; ii < nr; ++ii) {
        fa_row_to_f32(p->dtype, fa_cptr(p, p->q, q_off + (i0 + ii) * p->q_row_stride), w->row, d, ctx.qscale);
        for (c = 0; c < d; ++c) w->qt[c * BR + ii] = w->row[c];
        fa_row_to_f32(p->dtype, fa_cptr(p, p->dout, do_off + (i0 + ii) * p->do_row_stride), w->row, d, 1.0f);
        for (c = 0; c < d; ++c) w->dot[c * BR + ii] = w->row[c];
        w->lse2[ii] = bwd_lse2(lse[ii]);
        w->dd[ii] = D[ii];
    }
    for (ii = nr; ii < BR; ++ii) {
        for (c = 0; c < d; ++c) w->qt[c * BR + ii] = w->dot[c * BR + ii] = 0.0f;
        w->lse2[ii] = INFINITY;
        w->dd[ii] = 0.0f;
    }
    memset(w->dqt, 0, (size_t)d * BR * sizeof(float));

    fa_key_blocks(&ctx, i0, nr, &kb0, &kb1);
    for (kb = kb0; kb <= kb1; ++kb) {
        int64_t j0 = kb * BC, nj = ctx.s.sk - j0 < BC ? ctx.s.sk - j0 : BC, jj, k_ms, v_ms;
        int cls = fa_tile_class(p, &ctx.s, i0, i0 + nr, j0, j0 + nj);
        const float *kblk, *vblk;
        if (cls == FA_TILE_EMPTY) continue;
        kblk = fa_rows_f32(p, p->k, k_off, p->k_row_stride, j0, nj, w->kb, &k_ms);
        fa_scores_qlanes(&ctx, kblk, k_ms, w->qt, i0, j0, nj, cls, w->s, softcap ? w->tt : NULL);
        for (jj = 0; jj < nj; ++jj)
            for (v = 0; v < BR; v += FA_VL) {
                float *x = w->s + jj * BR + v;
                fa_vstore(x, fa_vexp2(fa_vsub(fa_vload(x), fa_vload(w->lse2 + v))));
            }
        /* dP^T (nj x BR) = V_blk dO^T */
        vblk = fa_rows_f32(p, p->v, v_off, p->v_row_stride, j0, nj, w->vb, &v_ms);
        fa_gemm(nj, BR, d, vblk, v_ms, 1, w->dot, BR, w->dp, BR, NULL, FA_GEMM_SET);
        if (dropout) fa_dropout_tile(p, b, h, i0, nr, j0, nj, w->z, BR, 1);
        /* dS^T = P^T o (dP^T o Z^T - D) o (1 - t^2) */
        for (jj = 0; jj < nj; ++jj)
            for (v = 0; v < BR; v += FA_VL) {
                int64_t e = jj * BR + v;
                fa_vf dpv = fa_vload(w->dp + e), ds;
                if (dropout) dpv = fa_vmul(dpv, fa_vload(w->z + e));
                ds = fa_vmul(fa_vload(w->s + e), fa_vsub(dpv, fa_vload(w->dd + v)));
                if (softcap) {
                    fa_vf t = fa_vload(w->tt + e);
                    ds = fa_vmul(ds, fa_vsub(fa_vset1(1.0f), fa_vmul(t, t)));
                }
                fa_vstore(w->dp + e, ds);
            }
        /* dQ^T (d x BR) += K_blk^T dS^T, A(dd, jj) = K[j0 + jj][dd] */
        fa_gemm(d, BR, nj, kblk, 1, k_ms, w->dp, BR, w->dqt, BR, NULL, FA_GEMM_ADD);
    }

    {
        int64_t dq_off = fa_base_off(p, b, ctx.s.q_row0, h, p->dq_batch_stride, p->dq_row_stride, p->dq_head_stride);
        for (ii = 0; ii < nr; ++ii) {
            for (c = 0; c < d; ++c) w->row[c] = w->dqt[c * BR + ii];
            fa_row_from_f32(p->dtype, w->row, fa_ptr(p, p->dq, dq_off + (i0 + ii) * p->dq_row_stride), d,
                            p->softmax_scale);
        }
    }
}

fa_status fa_bwd_cpu(const fa_params *p, int phase, int64_t begin, int64_t end)
{
    bwd_scratch w;
    int64_t item, nitems, nblk;
    fa_status st = fa_cpu_check(p, 1);
    if (st != FA_OK) return st;
    if (phase < 0 || phase >= FA_BWD_CPU_PHASES) return FA_ERR_UNSUPPORTED;
    if (fa_bwd_cpu_workspace_bytes(p) > 0 &&
        (p->workspace == NULL || p->workspace_bytes < fa_bwd_cpu_workspace_bytes(p)))
        return FA_ERR_WORKSPACE;
    nitems = fa_bwd_cpu_work_items(p, phase);
    nblk = phase == 1 ? fa_num_blocks(p->seqlen_k, BC) : fa_num_blocks(p->seqlen_q, BR);
    if (begin < 0) begin = 0;
    if (end > nitems) end = nitems;
    if (begin >= end) return FA_OK;
    w.mem = fa_cpu_arena_build(bwd_scratch_layout, &w, p->head_dim);
    if (!w.mem) return FA_ERR_NO_MEMORY;
    for (item = begin; item < end; ++item) {
        int64_t outer = item / nblk, blk = fa_zigzag(item % nblk, nblk);
        if (phase == 0) bwd_phase0_item(p, &w, outer / p->heads, outer % p->heads, blk);
        else if (phase == 1) bwd_phase1_item(p, &w, outer / p->heads_k, outer % p->heads_k, blk);
        else bwd_phase2_item(p, &w, outer / p->heads, outer % p->heads, blk);
    }
    fa_cpu_free(w.mem);
    return FA_OK;
}
