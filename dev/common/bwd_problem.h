/* bwd_problem.h - the test problems of the backward harnesses (dev/bwd/bwd_check.cu,
 * dev/bwd_sm90/bwd_sm90_check.cu): the case row, the problem it expands to (varlen lens, scale,
 * ALiBi slopes, dropout seed), the strided device layouts whose gaps stay poisoned, packing
 * canonical float tensors into them and back, and the fa_params of the fp32 CPU reference.
 * Host code only (also built into the CPU simulator, dev/bwd/sim). */
#ifndef DEV_BWD_PROBLEM_H
#define DEV_BWD_PROBLEM_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <algorithm>
#include <vector>

#include "flash_attn_c.h"
#include "check_host.h"

/* One test case (a row of a harness's case table). */
typedef struct bwd_case {
    const char *name;
    fa_dtype dt;
    int b, sq, sk, h, hk, d;  /* varlen: sq / sk are ignored (max of lens) */
    int wl, wr;               /* window; causal = (-1, 0) */
    float softcap;
    int alibi;                /* 0 none, 1 (h,), 2 (b, h) */
    float dropout;
    int seed_ptr;             /* dropout seed/offset read on the device */
    int strided;              /* padded strides for every tensor (gaps poisoned) */
    const char *lens;         /* varlen "q0,q1,..|k0,k1,.." or NULL (dense) */
    float scale_mul;          /* softmax_scale = scale_mul / sqrt(d) */
} bwd_case;

/* ---- one problem: sizes, cu_seqlens, scale, ALiBi slopes, dropout seed --------------------- */
typedef struct bwd_problem {
    const bwd_case *c;
    int varlen;
    int b, h, hk, d;
    int max_sq, max_sk;
    int64_t rows_q, rows_k;            /* total rows (dense: b * s) */
    std::vector<int32_t> cu_q, cu_k;   /* (b + 1,) varlen */
    float scale;
    std::vector<float> alibi;          /* (h,) or (b, h) */
    uint64_t seed, offset;
} bwd_problem;

/* first rows and lengths of sequence bi (dense rows are bi * s + i) */
static inline void bwd_seq_bounds(const bwd_problem &P, int bi, int64_t *q0 /* (1,) out: first row */,
                                  int *sq /* (1,) out */, int64_t *k0 /* (1,) out */, int *sk /* (1,) out */)
{
    if (P.varlen) {
        *q0 = P.cu_q[bi];
        *sq = P.cu_q[bi + 1] - P.cu_q[bi];
        *k0 = P.cu_k[bi];
        *sk = P.cu_k[bi + 1] - P.cu_k[bi];
    } else {
        *q0 = (int64_t)bi * P.max_sq;
        *sq = P.max_sq;
        *k0 = (int64_t)bi * P.max_sk;
        *sk = P.max_sk;
    }
}

/* "q0,q1,..|k0,k1,.." -> cq, ck (b + 1,) prefix sums starting at 0 */
static inline void bwd_parse_lens(const char *s, std::vector<int32_t> &cq, std::vector<int32_t> &ck)
{
    std::vector<int32_t> *cur = &cq;
    cq.assign(1, 0);
    ck.assign(1, 0);
    const char *p = s;
    while (*p) {
        char *end;
        long v = strtol(p, &end, 10);
        cur->push_back(cur->back() + (int32_t)v);
        p = end;
        if (*p == ',') ++p;
        if (*p == '|') {
            ++p;
            cur = &ck;
        }
    }
}

/* Fills P for case c; draws the ALiBi slopes, then the dropout seed and offset, from rng. */
static inline void bwd_make_problem(const bwd_case *c, check_rng *rng, bwd_problem &P)
{
    P.c = c;
    P.varlen = c->lens != NULL;
    P.b = c->b;
    P.h = c->h;
    P.hk = c->hk;
    P.d = c->d;
    if (P.varlen) {
        bwd_parse_lens(c->lens, P.cu_q, P.cu_k);
        if ((int)P.cu_q.size() != c->b + 1 || (int)P.cu_k.size() != c->b + 1) {
            fprintf(stderr, "bad lens for case %s\n", c->name);
            exit(2);
        }
        P.max_sq = P.max_sk = 0;
        for (int i = 0; i < c->b; ++i) {
            P.max_sq = std::max(P.max_sq, P.cu_q[i + 1] - P.cu_q[i]);
            P.max_sk = std::max(P.max_sk, P.cu_k[i + 1] - P.cu_k[i]);
        }
        P.rows_q = P.cu_q[c->b];
        P.rows_k = P.cu_k[c->b];
    } else {
        P.max_sq = c->sq;
        P.max_sk = c->sk;
        P.rows_q = (int64_t)c->b * c->sq;
        P.rows_k = (int64_t)c->b * c->sk;
    }
    P.scale = c->scale_mul / sqrtf((float)c->d);
    P.alibi.clear();
    if (c->alibi) {
        const int n = c->alibi == 1 ? c->h : c->b * c->h;
        for (int i = 0; i < n; ++i) P.alibi.push_back(0.05f + 0.5f * (float)check_rng_uniform(rng));
    }
    P.seed = 0x1234567890ABCDEFull ^ (uint64_t)(check_rng_uniform(rng) * 1e9);
    P.offset = 4 * (uint64_t)(check_rng_uniform(rng) * 1e6) + ((uint64_t)1 << 33);
}

/* A tensor of shape (rows, heads, d) logically; laid out with (batch, row, head) strides in a
 * buffer (dense rows are b * s + i). */
typedef struct bwd_layout {
    int64_t bs, rs, hs;
    int64_t elems;  /* buffer size */
} bwd_layout;

static inline bwd_layout bwd_make_layout(const bwd_problem &P, int64_t rows, int seqlen, int heads, int strided,
                                         int salt)
{
    bwd_layout L;
    const int d = P.d;
    L.hs = d + (strided ? 8 * (1 + salt % 2) : 0);
    L.rs = (int64_t)heads * L.hs + (strided ? 8 * (1 + salt % 3) : 0);
    if (P.varlen) {
        L.bs = 0;
        L.elems = rows * L.rs + 8;
    } else {
        L.bs = (int64_t)seqlen * L.rs + (strided ? 16 * (1 + salt % 2) : 0);
        L.elems = (int64_t)P.b * L.bs + 8;
    }
    return L;
}

static inline int64_t bwd_layout_offset(const bwd_problem &P, const bwd_layout &L, int seqlen, int64_t row, int head)
{
    if (P.varlen) return row * L.rs + (int64_t)head * L.hs;
    const int64_t bi = row / seqlen, i = row % seqlen;
    return bi * L.bs + i * L.rs + (int64_t)head * L.hs;
}

/* canonical (rows, heads, d) float -> dtype bits in the layout (gaps 0xFFFF) */
static inline std::vector<uint16_t> bwd_pack(const bwd_problem &P, const bwd_layout &L, int seqlen, int heads,
                                             const std::vector<float> &x /* (rows, heads, d) */, fa_dtype dt)
{
    std::vector<uint16_t> buf((size_t)L.elems, 0xFFFF);
    const int64_t rows = (int64_t)x.size() / ((int64_t)heads * P.d);
    for (int64_t r = 0; r < rows; ++r)
        for (int hh = 0; hh < heads; ++hh) {
            const int64_t off = bwd_layout_offset(P, L, seqlen, r, hh);
            for (int c = 0; c < P.d; ++c)
                buf[(size_t)(off + c)] = check_to_bits(dt, x[(size_t)((r * heads + hh) * P.d + c)]);
        }
    return buf;
}

/* the inverse, to (rows, heads, d); counts buffer elements outside the logical tensor that are not 0xFFFF */
static inline std::vector<float> bwd_unpack(const bwd_problem &P, const bwd_layout &L, int seqlen, int heads,
                                            int64_t rows, const std::vector<uint16_t> &buf /* (L.elems,) */,
                                            fa_dtype dt, int64_t *gap_writes /* (1,) out */)
{
    std::vector<float> x((size_t)(rows * heads * P.d));
    std::vector<char> used((size_t)L.elems, 0);
    for (int64_t r = 0; r < rows; ++r)
        for (int hh = 0; hh < heads; ++hh) {
            const int64_t off = bwd_layout_offset(P, L, seqlen, r, hh);
            for (int c = 0; c < P.d; ++c) {
                x[(size_t)((r * heads + hh) * P.d + c)] = check_from_bits(dt, buf[(size_t)(off + c)]);
                used[(size_t)(off + c)] = 1;
            }
        }
    int64_t n = 0;
    for (size_t i = 0; i < buf.size(); ++i)
        if (!used[i] && buf[i] != 0xFFFF) ++n;
    *gap_writes = n;
    return x;
}

/* zeroes p and sets the sizes of P: dtype, batch, max seqlens, heads, head_dim, total_q */
static inline void bwd_params_sizes(const bwd_problem &P, fa_dtype dt, fa_params &p)
{
    memset(&p, 0, sizeof p);
    p.dtype = dt;
    p.batch = P.b;
    p.seqlen_q = P.max_sq;
    p.seqlen_k = P.max_sk;
    p.heads = P.h;
    p.heads_k = P.hk;
    p.head_dim = P.d;
    p.total_q = P.rows_q;
}

/* fa_params of the fp32 CPU reference on canonical contiguous arrays (pointers left NULL) */
static inline void bwd_ref_params(const bwd_problem &P, fa_params &p)
{
    bwd_params_sizes(P, FA_F32, p);
    const int64_t d = P.d;
    p.q_row_stride = p.o_row_stride = p.do_row_stride = p.dq_row_stride = P.h * d;
    p.q_head_stride = p.o_head_stride = p.do_head_stride = p.dq_head_stride = d;
    p.q_batch_stride = p.o_batch_stride = p.do_batch_stride = p.dq_batch_stride = P.max_sq * P.h * d;
    p.k_row_stride = p.v_row_stride = p.dk_row_stride = p.dv_row_stride = P.hk * d;
    p.k_head_stride = p.v_head_stride = p.dk_head_stride = p.dv_head_stride = d;
    p.k_batch_stride = p.v_batch_stride = p.dk_batch_stride = p.dv_batch_stride = P.max_sk * P.hk * d;
    if (P.varlen) {
        p.cu_seqlens_q = P.cu_q.data();
        p.cu_seqlens_k = P.cu_k.data();
    }
    p.softmax_scale = P.scale;
    p.softcap = P.c->softcap;
    p.window_left = P.c->wl;
    p.window_right = P.c->wr;
    p.alibi_slopes = P.alibi.empty() ? NULL : P.alibi.data();
    p.alibi_batch_stride = P.c->alibi == 2 ? P.h : 0;
    p.dropout_p = P.c->dropout;
    p.seed = P.seed;
    p.offset = P.offset;
}

#endif /* DEV_BWD_PROBLEM_H */
