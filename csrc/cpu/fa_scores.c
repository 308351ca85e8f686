/* fa_scores.c - score tiles of the tiled CPU kernels (see fa_scores.h). */
#include "fa_scores.h"
#include "fa_gemm.h"

#define BR FA_CPU_BR
#define BC FA_CPU_BC

/* every GEMM of the tiled kernels has N = Br or N = Bc, in whole register tiles */
_Static_assert(FA_CPU_BR % FA_GEMM_NB == 0, "FA_CPU_BR must be a multiple of FA_GEMM_NB");
_Static_assert(FA_CPU_BC % FA_GEMM_NB == 0, "FA_CPU_BC must be a multiple of FA_GEMM_NB");

void fa_head_ctx_init(fa_head_ctx *c, const fa_params *p, int64_t b, int64_t h)
{
    c->p = p;
    c->s = fa_get_seq(p, b);
    c->b = b;
    c->h = h;
    c->hk = h / (p->heads / p->heads_k);
    c->off = c->s.sk - c->s.sq;
    /* softcap: tanh takes scale * q.k / softcap; otherwise log2(e) goes straight into q.k */
    c->qscale = p->softcap > 0.0f ? p->softmax_scale / p->softcap
                                  : (float)((double)p->softmax_scale * FA_LOG2E);
    c->cap2 = (float)((double)p->softcap * FA_LOG2E);
    c->slope2 = (float)((double)fa_alibi_slope(p, b, h) * FA_LOG2E);
}

void fa_key_blocks(const fa_head_ctx *c, int64_t i0, int64_t nrows, int64_t *kb0, int64_t *kb1)
{
    const fa_params *p = c->p;
    int64_t lo_first, hi_first, lo_last, hi_last;
    *kb0 = 0;
    *kb1 = -1;
    if (nrows <= 0 || c->s.sk <= 0) return;
    /* lo and hi are nondecreasing in i: the union of the rows' ranges lies in
     * [lo(first row), hi(last row)] */
    fa_mask_bounds(i0, c->s.sq, c->s.sk, p->window_left, p->window_right, &lo_first, &hi_first);
    fa_mask_bounds(i0 + nrows - 1, c->s.sq, c->s.sk, p->window_left, p->window_right, &lo_last, &hi_last);
    if (hi_last < lo_first) return;
    *kb0 = lo_first / BC;
    *kb1 = hi_last / BC;
}

static inline int32_t clamp32(int64_t x)
{
    return x < INT32_MIN ? INT32_MIN : x > INT32_MAX ? INT32_MAX : (int32_t)x;
}

void fa_scores_qlanes(const fa_head_ctx *c, const float *kblk, int64_t k_ms, const float *qt,
                      int64_t i0, int64_t lanes, int64_t j0, int64_t nj, int cls, float *st, float *tt)
{
    fa_gemm(nj, lanes, c->p->head_dim, kblk, k_ms, 1, qt, BR, st, BR, NULL, FA_GEMM_SET);
    fa_scores_qlanes_finish(c, i0, lanes, j0, nj, cls, st, tt, 1.0f);
}

void fa_scores_qlanes_finish(const fa_head_ctx *c, int64_t i0, int64_t lanes, int64_t j0, int64_t nj,
                             int cls, float *st, float *tt, float scale)
{
    const fa_params *p = c->p;
    int64_t jj, v;
    int softcap = p->softcap > 0.0f, alibi = p->alibi_slopes != NULL;
    int mask = cls == FA_TILE_PARTIAL, scaled = scale != 1.0f;
    fa_vf cap2 = fa_vset1(c->cap2), nslope = fa_vset1(-c->slope2), vscale = fa_vset1(scale);
    if (!softcap && !alibi && !mask && !scaled) return;
    for (jj = 0; jj < nj; ++jj) {
        int64_t j = j0 + jj;
        float *srow = st + jj * BR;
        /* the rows that see key j: j - off - right <= i <= j - off + left (sides through
         * fa_window_clamp, as every mask: no overflow of these sums) */
        int64_t wl = fa_window_clamp(p->window_left, c->s.sk), wr = fa_window_clamp(p->window_right, c->s.sq);
        int32_t ilo = wr < 0 ? INT32_MIN : clamp32(j - c->off - wr);
        int32_t ihi = wl < 0 ? INT32_MAX : clamp32(j - c->off + wl);
        for (v = 0; v < lanes; v += FA_VL) {
            fa_vf x = fa_vload(srow + v);
            int64_t i = i0 + v;
            if (scaled) x = fa_vmul(x, vscale);
            if (softcap) {
                fa_vf t = fa_vtanh(x);
                if (tt) fa_vstore(tt + jj * BR + v, t);
                x = fa_vmul(cap2, t);
            }
            if (alibi) x = fa_vfma(nslope, fa_vabs_iota(clamp32(i + c->off - j), 1), x);
            if (mask) x = fa_vmask_range(x, clamp32(i), ilo, ihi);
            fa_vstore(srow + v, x);
        }
    }
}

void fa_scores_klanes(const fa_head_ctx *c, const float *q, int64_t q_ms, int64_t nr,
                      const float *kt, int64_t i0, int64_t j0, int mask, float *s, float *tt)
{
    fa_gemm(nr, BC, c->p->head_dim, q, q_ms, 1, kt, BC, s, BC, NULL, FA_GEMM_SET);
    fa_scores_klanes_finish(c, nr, i0, j0, mask, s, tt, 1.0f);
}

void fa_scores_klanes_finish(const fa_head_ctx *c, int64_t nr, int64_t i0, int64_t j0, int mask,
                             float *s, float *tt, float scale)
{
    const fa_params *p = c->p;
    int64_t ii, v;
    int softcap = p->softcap > 0.0f, alibi = p->alibi_slopes != NULL, scaled = scale != 1.0f;
    fa_vf cap2 = fa_vset1(c->cap2), nslope = fa_vset1(-c->slope2), vscale = fa_vset1(scale);
    if (!softcap && !alibi && !mask && !scaled) return;
    for (ii = 0; ii < nr; ++ii) {
        int64_t i = i0 + ii, lo, hi;
        float *srow = s + ii * BC;
        fa_mask_bounds(i, c->s.sq, c->s.sk, p->window_left, p->window_right, &lo, &hi);
        for (v = 0; v < BC; v += FA_VL) {
            fa_vf x = fa_vload(srow + v);
            int64_t j = j0 + v;
            if (scaled) x = fa_vmul(x, vscale);
            if (softcap) {
                fa_vf t = fa_vtanh(x);
                if (tt) fa_vstore(tt + ii * BC + v, t);
                x = fa_vmul(cap2, t);
            }
            /* lane l holds key j + l: distance |i + off - j - l| */
            if (alibi) x = fa_vfma(nslope, fa_vabs_iota(clamp32(i + c->off - j), -1), x);
            if (mask) x = fa_vmask_range(x, clamp32(j), clamp32(lo), clamp32(hi));
            fa_vstore(srow + v, x);
        }
    }
}
