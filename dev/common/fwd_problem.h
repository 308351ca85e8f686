/* fwd_problem.h - the geometry of one forward call in the forward harnesses (dev/fwd/fwd_check.cu,
 * dev/fwd_sm90/sm90_check.cu): dense (b, s, h, d), varlen (total, h, d) with cu_seqlens, or q, k, v
 * interleaved in one qkv-packed (b, s, 3, h, d) buffer. Gives the sizes and strides of fa_params,
 * the element counts of every buffer, and binds q / k / v to buffers. */
#ifndef DEV_FWD_PROBLEM_H
#define DEV_FWD_PROBLEM_H

#include <stdint.h>
#include <string.h>

#include <algorithm>
#include <vector>

#include "flash_attn_c.h"

typedef struct fwd_geom {
    int b, h, hk, d;
    int varlen, packed, probs;
    int sq, sk;                       /* max sequence lengths: dense as given, varlen from the lens */
    int64_t total_q, total_k;         /* rows of q and o / of k and v */
    std::vector<int32_t> cu_q, cu_k;  /* (b + 1,) prefix sums of the lens; {0} when dense */
    size_t q_elems;                   /* the q buffer; packed: the whole (b, s, 3, h, d) buffer */
    size_t kv_elems;                  /* the k buffer and the v buffer, each; 0 when packed */
    int64_t k_off, v_off;             /* packed: element offsets of k and v inside the q buffer */
    size_t o_elems;                   /* o, like q: (b, sq, h, d) | (total_q, h, d) */
    size_t lse_elems;                 /* (b, h, sq) | (h, total_q) */
    size_t p_elems;                   /* probabilities (b, h, sq, sk), 0 when not asked for */
} fwd_geom;

/* Fills g, zeroes p and sets its size and stride fields (dtype, batch, seqlens, heads, head_dim,
 * total_q, q/k/v/o strides). Scale, masks, dropout, seeds and pointers are left to the caller.
 * lens_q / lens_k: (b,) sequence lengths for varlen, NULL for dense (then sq, sk are used). */
static void fwd_geom_init(fwd_geom *g, fa_params *p, fa_dtype dt, int b, int h, int hk, int d, int sq, int sk,
                          const std::vector<int> *lens_q, const std::vector<int> *lens_k, int packed, int probs)
{
    g->b = b; g->h = h; g->hk = hk; g->d = d;
    g->varlen = lens_q != NULL;
    g->packed = packed;
    g->probs = probs;
    g->cu_q.assign(1, 0);
    g->cu_k.assign(1, 0);
    if (g->varlen) {
        sq = 0;
        sk = 0;
        for (int i = 0; i < b; ++i) {
            g->cu_q.push_back(g->cu_q.back() + (*lens_q)[i]);
            g->cu_k.push_back(g->cu_k.back() + (*lens_k)[i]);
            sq = std::max(sq, (*lens_q)[i]);
            sk = std::max(sk, (*lens_k)[i]);
        }
        g->total_q = g->cu_q.back();
        g->total_k = g->cu_k.back();
    } else {
        g->total_q = (int64_t)b * sq;
        g->total_k = (int64_t)b * sk;
    }
    g->sq = sq;
    g->sk = sk;

    memset(p, 0, sizeof *p);
    p->dtype = dt;
    p->batch = b;
    p->seqlen_q = sq;
    p->seqlen_k = sk;
    p->heads = h;
    p->heads_k = hk;
    p->head_dim = d;
    p->total_q = g->total_q;
    g->k_off = g->v_off = 0;
    if (packed) {
        /* one (b, s, 3, h, d) buffer: q, k, v interleaved per row */
        g->q_elems = (size_t)b * sq * 3 * h * d;
        g->kv_elems = 0;
        p->q_batch_stride = p->k_batch_stride = p->v_batch_stride = (int64_t)sq * 3 * h * d;
        p->q_row_stride = p->k_row_stride = p->v_row_stride = 3 * h * d;
        p->q_head_stride = p->k_head_stride = p->v_head_stride = d;
        g->k_off = (int64_t)h * d;
        g->v_off = 2 * (int64_t)h * d;
    } else {
        g->q_elems = (size_t)g->total_q * h * d;
        g->kv_elems = (size_t)g->total_k * hk * d;
        p->q_batch_stride = (int64_t)sq * h * d;
        p->q_row_stride = (int64_t)h * d;
        p->q_head_stride = d;
        p->k_batch_stride = p->v_batch_stride = (int64_t)sk * hk * d;
        p->k_row_stride = p->v_row_stride = (int64_t)hk * d;
        p->k_head_stride = p->v_head_stride = d;
    }
    p->o_batch_stride = (int64_t)sq * h * d;
    p->o_row_stride = (int64_t)h * d;
    p->o_head_stride = d;
    g->o_elems = (size_t)g->total_q * h * d;
    g->lse_elems = g->varlen ? (size_t)h * g->total_q : (size_t)b * h * sq;
    g->p_elems = probs ? (size_t)b * h * sq * sk : 0;
}

/* Points p->q, k, v into the buffers (host or device alike): the three separate buffers, or, when
 * packed, all three into q_buf (k_buf and v_buf unused). */
static void fwd_bind_qkv(const fwd_geom *g, fa_params *p, const uint16_t *q_buf /* (q_elems,) */,
                         const uint16_t *k_buf /* (kv_elems,) */, const uint16_t *v_buf /* (kv_elems,) */)
{
    p->q = q_buf;
    if (g->packed) {
        p->k = q_buf + g->k_off;
        p->v = q_buf + g->v_off;
    } else {
        p->k = k_buf;
        p->v = v_buf;
    }
}

#endif /* DEV_FWD_PROBLEM_H */
