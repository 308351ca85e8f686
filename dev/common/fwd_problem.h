/* fwd_problem.h - the cases of the forward harnesses (dev/fwd/fwd_check.cu,
 * dev/fwd_sm90/sm90_check.cu) and the geometry of one forward call: dense (b, s, h, d), varlen
 * (total, h, d) with cu_seqlens, or q, k, v interleaved in one qkv-packed (b, s, 3, h, d) buffer.
 * Gives the sizes and strides of fa_params, the element counts of every buffer, binds q / k / v
 * to buffers and uploads the inputs. Include <cuda_runtime.h> first. */
#ifndef DEV_FWD_PROBLEM_H
#define DEV_FWD_PROBLEM_H

#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <algorithm>
#include <vector>

#include "flash_attn_c.h"
#include "check_host.h"
#include "check_cuda.h"

/* One case. Each harness fills the features it tests and appends their suffixes to the name. */
typedef struct fwd_case {
    char name[200];                   /* "tag dtype bB hH/HK dD sqSQ skSK" + the harness's suffixes */
    fa_dtype dt;
    int b, h, hk, d;
    int sq, sk;                       /* dense sizes (varlen: from the lens) */
    int varlen;
    std::vector<int> lens_q, lens_k;  /* (b,) each, varlen only */
    int left, right;                  /* window; causal = (-1, 0) */
    float softcap;
    int alibi;                        /* 0 none, 1 (h,), 2 (b, h) */
    float dropout;
    int probs;                        /* 1: ask for the probabilities */
    int packed;                       /* 1: q, k, v in one (b, s, 3, h, d) buffer */
    float scale;                      /* 0 = d^-0.5 */
    int seed_ptr;                     /* 1: seed / offset from device pointers (graph capture) */
    int path;                         /* sm90_check: the entry point under test (0 = fa_fwd_sm90) */
    int expect_sm90;                  /* sm90_check dispatch cases: fa_fwd_sm90_supported's answer */
    int persist;                      /* sm90_check: 1 FLASH_ATTN_C_SM90_FWD_PERSIST=1, the persistent grid;
                                         -1 =0, the one-block grid; 0 the caller's setting */
    int persist_group;                /* sm90_check persist cases: FLASH_ATTN_C_SM90_FWD_PERSIST_GROUP (0: the
                                         caller's, by default the host's rule) */
    int small_br;                     /* sm90_check: FLASH_ATTN_C_SM90_FWD_D64_BR=128 (the plain d = 64
                                         instance on the 128-row tile; 0: the caller's setting) */
    int cap_slim;                     /* sm90_check: FLASH_ATTN_C_SM90_FWD_CAP_SLIM=1 (softcap alone, bf16: the
                                         CAP_SLIM instance must run; 0: the caller's setting) */
} fwd_case;

/* A case with no features: no mask, no softcap / ALiBi / dropout / probabilities, separate q, k,
 * v buffers, the default scale, path 0 expecting the sm90 kernel. */
static inline fwd_case fwd_make_case(const char *tag, fa_dtype dt, int b, int h, int hk, int d, int sq, int sk)
{
    fwd_case c;
    c.dt = dt;
    c.b = b; c.h = h; c.hk = hk; c.d = d; c.sq = sq; c.sk = sk;
    c.varlen = 0;
    c.left = -1; c.right = -1;
    c.softcap = 0.f; c.alibi = 0; c.dropout = 0.f; c.probs = 0;
    c.packed = 0; c.scale = 0.f; c.seed_ptr = 0;
    c.path = 0;
    c.expect_sm90 = 1;
    c.persist = 0;
    c.persist_group = 0;
    c.small_br = 0;
    c.cap_slim = 0;
    snprintf(c.name, sizeof c.name, "%s %s b%d h%d/%d d%d sq%d sk%d", tag, check_dtype_name(dt), b, h, hk, d,
             sq, sk);
    return c;
}

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


/* Graph-capture mode of a case (fwd_case::seed_ptr), as the torch glue runs it under CUDA graphs:
 * the kernels read seed = *philox_seed_ptr and offset = *philox_offset_ptr + philox_offset_add,
 * so pg's plain seed / offset (p's, the ones the reference used) are overwritten with values that
 * must be ignored. Returns the device buffer of the two words (the caller frees it). */
static inline int64_t *fwd_use_seed_ptr(fa_params *pg, const fa_params *p)
{
    const int64_t so[2] = {(int64_t)p->seed, (int64_t)p->offset - 7};
    int64_t *dseed = (int64_t *)check_to_device(so, 2, sizeof(int64_t));
    pg->philox_seed_ptr = dseed;
    pg->philox_offset_ptr = dseed + 1;
    pg->philox_offset_add = 7;
    pg->seed = 1;
    pg->offset = 2;
    return dseed;
}
/* Fills g for case c, zeroes p and sets its size and stride fields (dtype, batch, seqlens, heads,
 * head_dim, total_q, q/k/v/o strides). Scale, masks, dropout, seeds and pointers are left to the
 * caller. */
static inline void fwd_geom_init(const fwd_case *c, fwd_geom *g, fa_params *p)
{
    const fa_dtype dt = c->dt;
    const int b = c->b, h = c->h, hk = c->hk, d = c->d, packed = c->packed, probs = c->probs;
    int sq = c->sq, sk = c->sk;
    g->b = b; g->h = h; g->hk = hk; g->d = d;
    g->varlen = c->varlen;
    g->packed = packed;
    g->probs = probs;
    g->cu_q.assign(1, 0);
    g->cu_k.assign(1, 0);
    if (g->varlen) {
        sq = 0;
        sk = 0;
        for (int i = 0; i < b; ++i) {
            g->cu_q.push_back(g->cu_q.back() + c->lens_q[i]);
            g->cu_k.push_back(g->cu_k.back() + c->lens_k[i]);
            sq = std::max(sq, c->lens_q[i]);
            sk = std::max(sk, c->lens_k[i]);
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
static inline void fwd_bind_qkv(const fwd_geom *g, fa_params *p, const uint16_t *q_buf /* (q_elems,) */,
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

/* The inputs on the device: q (or the packed qkv buffer), k and v (separate buffers only), the
 * cu_seqlens (varlen only); NULL where absent. */
typedef struct fwd_dev_inputs {
    uint16_t *q, *k, *v;
    int32_t *cu_q, *cu_k;
} fwd_dev_inputs;

/* Uploads the host inputs (whole vectors, spare elements included) and points p->q, k, v and
 * cu_seqlens at the copies. */
static inline void fwd_upload_inputs(const fwd_geom *g, const std::vector<uint16_t> &hq /* (>= q_elems,) */,
                                     const std::vector<uint16_t> &hk /* (>= kv_elems,) */,
                                     const std::vector<uint16_t> &hv /* (>= kv_elems,) */, fwd_dev_inputs *d,
                                     fa_params *p)
{
    memset(d, 0, sizeof *d);
    d->q = (uint16_t *)check_to_device(hq.data(), hq.size(), 2);
    if (!g->packed) {
        d->k = (uint16_t *)check_to_device(hk.data(), hk.size(), 2);
        d->v = (uint16_t *)check_to_device(hv.data(), hv.size(), 2);
    }
    if (g->varlen) {
        d->cu_q = (int32_t *)check_to_device(g->cu_q.data(), g->cu_q.size(), 4);
        d->cu_k = (int32_t *)check_to_device(g->cu_k.data(), g->cu_k.size(), 4);
    }
    fwd_bind_qkv(g, p, d->q, d->k, d->v);
    p->cu_seqlens_q = d->cu_q;
    p->cu_seqlens_k = d->cu_k;
}

static inline void fwd_free_inputs(fwd_dev_inputs *d)
{
    cudaFree(d->q); cudaFree(d->k); cudaFree(d->v); cudaFree(d->cu_q); cudaFree(d->cu_k);
}

#endif /* DEV_FWD_PROBLEM_H */
