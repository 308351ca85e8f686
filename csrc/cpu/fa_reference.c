/* fa_reference.c - the naive CPU reference (the oracle of the C harness).
 *
 * For one (sequence b, query head h) at a time it materializes the full score matrix S, the
 * probabilities P and, backward, dP and dS, all in double, straight from the definitions in
 * flash_attn_c.h. Single-threaded, no tiling, no tricks, never optimized: it only has to be
 * obviously right. Inputs are read in the params dtype and widened to double; outputs are
 * rounded once to the params dtype (lse to fp32).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fa_cpu.h"

/* dst (rows, d) double <- rows of a dtype tensor starting at element offset off */
static void ref_load_rows(const fa_params *p, const void *base, int64_t off, int64_t row_stride,
                          int64_t rows, double *dst)
{
    int64_t i, c, d = p->head_dim;
    for (i = 0; i < rows; ++i)
        for (c = 0; c < d; ++c) dst[i * d + c] = (double)fa_load1(p->dtype, base, off + i * row_stride + c);
}

static void ref_store_rows(const fa_params *p, void *base, int64_t off, int64_t row_stride,
                           int64_t rows, const double *src)
{
    int64_t i, c, d = p->head_dim;
    for (i = 0; i < rows; ++i)
        for (c = 0; c < d; ++c) fa_store1(p->dtype, base, off + i * row_stride + c, (float)src[i * d + c]);
}

/* Per (b, h) scratch, sized for the longest sequence. */
typedef struct ref_buf {
    double *q, *k, *v, *o, *dout; /* (sq|sk, d) */
    double *s, *pm, *z, *t;       /* (sq, sk): scores, probabilities, dropout factor, tanh */
    double *dq, *dk, *dv;         /* (sq|sk, d) */
    double *lse;                  /* (sq,) of the current (b, h) */
} ref_buf;

static void ref_free(ref_buf *r)
{
    free(r->q); free(r->k); free(r->v); free(r->o); free(r->dout);
    free(r->s); free(r->pm); free(r->z); free(r->t);
    free(r->dq); free(r->dk); free(r->dv); free(r->lse);
}

static int ref_alloc(ref_buf *r, const fa_params *p)
{
    size_t sq = (size_t)p->seqlen_q, sk = (size_t)p->seqlen_k, d = (size_t)p->head_dim;
    size_t qd = sq * d + 1, kd = sk * d + 1, ss = sq * sk + 1;
    memset(r, 0, sizeof *r);
    r->q = malloc(qd * sizeof(double)); r->o = malloc(qd * sizeof(double));
    r->dout = malloc(qd * sizeof(double)); r->dq = malloc(qd * sizeof(double));
    r->k = malloc(kd * sizeof(double)); r->v = malloc(kd * sizeof(double));
    r->dk = malloc(kd * sizeof(double)); r->dv = malloc(kd * sizeof(double));
    r->s = malloc(ss * sizeof(double)); r->pm = malloc(ss * sizeof(double));
    r->z = malloc(ss * sizeof(double)); r->t = malloc(ss * sizeof(double));
    r->lse = malloc((sq + 1) * sizeof(double));
    if (!r->q || !r->o || !r->dout || !r->dq || !r->k || !r->v || !r->dk || !r->dv || !r->s ||
        !r->pm || !r->z || !r->t || !r->lse) {
        ref_free(r);
        return 0;
    }
    return 1;
}

/* S, P, the dropout factors and tanh values of (b, h) from r->q, r->k (already loaded).
 * Fills lse[i] (-inf for rows that see no key). */
static void ref_scores(const fa_params *p, const fa_seq *s, int64_t b, int64_t h, ref_buf *r,
                       double *lse)
{
    int64_t i, j, c, d = p->head_dim, sq = s->sq, sk = s->sk;
    double slope = (double)fa_alibi_slope(p, b, h);
    uint32_t thr = fa_dropout_threshold(p->dropout_p);
    double keep = 256.0 / (double)(256u - thr); /* 1 / (1 - p_q): fa_dropout_rescale in double */
    for (i = 0; i < sq; ++i) {
        int64_t lo, hi;
        double m = -INFINITY, l = 0.0;
        fa_mask_bounds(i, sq, sk, p->window_left, p->window_right, &lo, &hi);
        for (j = 0; j < sk; ++j) {
            double x = -INFINITY, t = 0.0;
            if (j >= lo && j <= hi) {
                double dot = 0.0;
                for (c = 0; c < d; ++c) dot += r->q[i * d + c] * r->k[j * d + c];
                x = (double)p->softmax_scale * dot;
                if (p->softcap > 0.0f) {
                    t = tanh(x / (double)p->softcap);
                    x = (double)p->softcap * t;
                }
                if (p->alibi_slopes) x += -slope * fabs((double)(i + sk - sq - j));
            }
            r->s[i * sk + j] = x;
            r->t[i * sk + j] = t;
            r->z[i * sk + j] = 1.0;
            if (p->dropout_p > 0.0f)
                r->z[i * sk + j] = fa_dropout_keep(p->seed, p->offset, b, h, i, j, thr) ? keep : 0.0;
            if (x > m) m = x;
        }
        if (m == -INFINITY) {
            for (j = 0; j < sk; ++j) r->pm[i * sk + j] = 0.0;
            lse[i] = -INFINITY;
            continue;
        }
        for (j = 0; j < sk; ++j) l += exp(r->s[i * sk + j] - m);
        for (j = 0; j < sk; ++j) r->pm[i * sk + j] = exp(r->s[i * sk + j] - m) / l;
        lse[i] = m + log(l);
    }
}

fa_status fa_fwd_cpu_reference(const fa_params *p)
{
    ref_buf r;
    double *lse;
    int64_t b, h, i, j, c, d;
    fa_status st = fa_cpu_check(p, 0);
    if (st != FA_OK) return st;
    if (!ref_alloc(&r, p)) return FA_ERR_NO_MEMORY;
    lse = r.lse;
    d = p->head_dim;
    if (p->rng_state) {
        p->rng_state[0] = (int64_t)p->seed;
        p->rng_state[1] = (int64_t)p->offset;
    }
    for (b = 0; b < p->batch; ++b) {
        fa_seq s = fa_get_seq(p, b);
        for (h = 0; h < p->heads; ++h) {
            int64_t hk = h / (p->heads / p->heads_k);
            int64_t q_off = fa_base_off(p, b, s.q_row0, h, p->q_batch_stride, p->q_row_stride, p->q_head_stride);
            int64_t k_off = fa_base_off(p, b, s.k_row0, hk, p->k_batch_stride, p->k_row_stride, p->k_head_stride);
            int64_t v_off = fa_base_off(p, b, s.k_row0, hk, p->v_batch_stride, p->v_row_stride, p->v_head_stride);
            int64_t o_off = fa_base_off(p, b, s.q_row0, h, p->o_batch_stride, p->o_row_stride, p->o_head_stride);
            int64_t l_off = fa_lse_off(p, b, h, &s);
            ref_load_rows(p, p->q, q_off, p->q_row_stride, s.sq, r.q);
            ref_load_rows(p, p->k, k_off, p->k_row_stride, s.sk, r.k);
            ref_load_rows(p, p->v, v_off, p->v_row_stride, s.sk, r.v);
            ref_scores(p, &s, b, h, &r, lse);
            /* O = (P o Z) V, Z the dropout factors (1 without dropout) */
            for (i = 0; i < s.sq; ++i)
                for (c = 0; c < d; ++c) {
                    double acc = 0.0;
                    for (j = 0; j < s.sk; ++j) acc += r.pm[i * s.sk + j] * r.z[i * s.sk + j] * r.v[j * d + c];
                    r.o[i * d + c] = acc;
                }
            ref_store_rows(p, p->o, o_off, p->o_row_stride, s.sq, r.o);
            for (i = 0; i < s.sq; ++i) p->lse[l_off + i] = (float)lse[i];
            if (p->p) {
                /* (b, h, seqlen_q, seqlen_k): padding rows / columns and masked entries are 0 */
                int64_t base = (b * p->heads + h) * p->seqlen_q * p->seqlen_k;
                for (i = 0; i < p->seqlen_q; ++i)
                    for (j = 0; j < p->seqlen_k; ++j) {
                        double v = 0.0;
                        if (i < s.sq && j < s.sk) {
                            v = r.pm[i * s.sk + j];
                            if (r.z[i * s.sk + j] == 0.0) v = -v;
                        }
                        fa_store1(p->dtype, p->p, base + i * p->seqlen_k + j, (float)v);
                    }
            }
        }
    }
    ref_free(&r);
    return FA_OK;
}

fa_status fa_bwd_cpu_reference(const fa_params *p)
{
    ref_buf r;
    double *lse;
    int64_t b, hk, h, i, j, c, d, group;
    fa_status st = fa_cpu_check(p, 1);
    if (st != FA_OK) return st;
    if (!ref_alloc(&r, p)) return FA_ERR_NO_MEMORY;
    lse = r.lse;
    d = p->head_dim;
    group = p->heads / p->heads_k;
    for (b = 0; b < p->batch; ++b) {
        fa_seq s = fa_get_seq(p, b);
        for (hk = 0; hk < p->heads_k; ++hk) {
            int64_t k_off = fa_base_off(p, b, s.k_row0, hk, p->k_batch_stride, p->k_row_stride, p->k_head_stride);
            int64_t v_off = fa_base_off(p, b, s.k_row0, hk, p->v_batch_stride, p->v_row_stride, p->v_head_stride);
            int64_t dk_off = fa_base_off(p, b, s.k_row0, hk, p->dk_batch_stride, p->dk_row_stride, p->dk_head_stride);
            int64_t dv_off = fa_base_off(p, b, s.k_row0, hk, p->dv_batch_stride, p->dv_row_stride, p->dv_head_stride);
            ref_load_rows(p, p->k, k_off, p->k_row_stride, s.sk, r.k);
            ref_load_rows(p, p->v, v_off, p->v_row_stride, s.sk, r.v);
            for (i = 0; i < s.sk * d; ++i) r.dk[i] = r.dv[i] = 0.0;
            for (h = hk * group; h < (hk + 1) * group; ++h) {
                int64_t q_off = fa_base_off(p, b, s.q_row0, h, p->q_batch_stride, p->q_row_stride, p->q_head_stride);
                int64_t do_off = fa_base_off(p, b, s.q_row0, h, p->do_batch_stride, p->do_row_stride, p->do_head_stride);
                int64_t dq_off = fa_base_off(p, b, s.q_row0, h, p->dq_batch_stride, p->dq_row_stride, p->dq_head_stride);
                double scale = (double)p->softmax_scale;
                ref_load_rows(p, p->q, q_off, p->q_row_stride, s.sq, r.q);
                ref_load_rows(p, p->dout, do_off, p->do_row_stride, s.sq, r.dout);
                ref_scores(p, &s, b, h, &r, lse);
                for (i = 0; i < s.sq * d; ++i) r.dq[i] = 0.0;
                for (i = 0; i < s.sq; ++i) {
                    double D = 0.0;
                    /* dP_ij = Z_ij dO_i . v_j (the gradient wrt P, through the dropout);
                     * D_i = sum_j P_ij dP_ij;  dS_ij = P_ij (dP_ij - D_i), then through the
                     * softcap: d/dx [cap tanh(x / cap)] = 1 - tanh^2. Kept in r.s.
                     * dlse (optional): lse_i = log sum_j exp(s_ij) gives d lse_i / d s_ij = P_ij,
                     * so dS_ij gains P_ij dlse_i: D_i - dlse_i in place of D_i. */
                    for (j = 0; j < s.sk; ++j) {
                        double dp = 0.0;
                        for (c = 0; c < d; ++c) dp += r.dout[i * d + c] * r.v[j * d + c];
                        dp *= r.z[i * s.sk + j];
                        r.s[i * s.sk + j] = dp;
                        D += r.pm[i * s.sk + j] * dp;
                    }
                    if (p->dlse != NULL) D -= (double)p->dlse[fa_lse_off(p, b, h, &s) + i];
                    for (j = 0; j < s.sk; ++j) {
                        double pij = r.pm[i * s.sk + j];
                        double ds = pij * (r.s[i * s.sk + j] - D);
                        double t = r.t[i * s.sk + j];
                        if (p->softcap > 0.0f) ds *= 1.0 - t * t;
                        r.s[i * s.sk + j] = ds;
                        for (c = 0; c < d; ++c) {
                            r.dv[j * d + c] += pij * r.z[i * s.sk + j] * r.dout[i * d + c];
                            r.dq[i * d + c] += scale * ds * r.k[j * d + c];
                            r.dk[j * d + c] += scale * ds * r.q[i * d + c];
                        }
                    }
                }
                ref_store_rows(p, p->dq, dq_off, p->dq_row_stride, s.sq, r.dq);
            }
            ref_store_rows(p, p->dk, dk_off, p->dk_row_stride, s.sk, r.dk);
            ref_store_rows(p, p->dv, dv_off, p->dv_row_stride, s.sk, r.dv);
        }
    }
    ref_free(&r);
    return FA_OK;
}
