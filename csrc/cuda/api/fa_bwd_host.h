/* fa_bwd_host.h - host-side, CUDA-free part of the backward entry points: validation,
 * workspace layout and the fa_params -> fa_bwd_args conversion. Shared by fa_bwd_api.cu and the
 * CPU simulator of dev/bwd (which runs the kernel bodies without a GPU).
 *
 * Workspace layout (fa_bwd_workspace_need), 256-byte aligned pieces:
 *   [0, A)      dpsum    fp32, heads * total_q values, indexed exactly like lse
 *                        ((b, h, sq) dense, (h, total_q) varlen)
 *   [A, A + B)  dq_accum fp32 (total_q, heads, head_dim), only when deterministic == 0
 * with A = align256(4 heads total_q), B = 4 total_q heads head_dim (the sm90 backward at d > 128
 * asks for more and lays dq_accum out in 64-row tiles: fa_bwd_sm90_dq_tiled.cuh). Nothing in it needs to be
 * initialized by the caller: the first pass writes dpsum and zeroes dq_accum.
 * The sm90 ordered dQ (deterministic == 1, fa_bwd_sm90_plan.cu, fa_bwd_sm90_ordered.h)
 * asks for more (fa_bwd_ordered_dq_need): dq_accum at [A, A + B) also when deterministic, then
 *   [A + align256(B), + C)  dq_sem int32 (batch, heads, ceil(seqlen_q / rows)) turn counters,
 * C = 4 batch heads ceil(seqlen_q / rows) (dense only), zeroed by the first pass too.
 */
#ifndef FA_BWD_HOST_H
#define FA_BWD_HOST_H

#include <stddef.h>
#include <stdint.h>

#include "flash_attn_c.h"
#include "fa_bwd_args.cuh"

static inline size_t fa_bwd_align256(size_t x) { return (x + 255) & ~(size_t)255; }

/* rows of q: total_q (varlen) or b * sq (dense) */
static inline int64_t fa_bwd_rows_q(const fa_params *p)
{
    return p->cu_seqlens_q != NULL ? p->total_q : p->batch * p->seqlen_q;
}

static inline size_t fa_bwd_dpsum_bytes(const fa_params *p)
{
    const int64_t rows = fa_bwd_rows_q(p);
    if (rows <= 0 || p->heads <= 0) return 0;
    return fa_bwd_align256((size_t)rows * (size_t)p->heads * sizeof(float));
}

static inline size_t fa_bwd_workspace_need(const fa_params *p)
{
    if (p == NULL) return 0;
    size_t bytes = fa_bwd_dpsum_bytes(p);
    if (bytes && !p->deterministic)
        bytes += (size_t)fa_bwd_rows_q(p) * (size_t)p->heads * (size_t)p->head_dim * sizeof(float);
    return bytes;
}

/* Workspace bytes of the sm90 ordered dQ (layout above; dense calls): dpsum, dq_accum and one
 * turn counter per (batch, head, query tile of `rows` rows). 0 when there is nothing to run. */
static inline size_t fa_bwd_ordered_dq_need(const fa_params *p, int rows)
{
    if (p == NULL || rows <= 0) return 0;
    const size_t dpsum = fa_bwd_dpsum_bytes(p);
    if (!dpsum) return 0;
    const size_t acc = (size_t)fa_bwd_rows_q(p) * (size_t)p->heads * (size_t)p->head_dim * sizeof(float);
    const size_t tiles = (size_t)((p->seqlen_q + rows - 1) / rows);
    return dpsum + fa_bwd_align256(acc) + (size_t)p->batch * (size_t)p->heads * tiles * sizeof(int);
}

/* dq_accum and dq_sem of the sm90 ordered dQ in p's workspace (fa_bwd_ordered_dq_need(p, rows)
 * bytes: the caller checked), into a (filled by fa_bwd_fill_args). */
static inline void fa_bwd_ordered_dq_args(const fa_params *p, int rows, fa_bwd_args *a)
{
    const size_t dpsum = fa_bwd_dpsum_bytes(p);
    const size_t acc = (size_t)fa_bwd_rows_q(p) * (size_t)p->heads * (size_t)p->head_dim * sizeof(float);
    a->dq_accum = (float *)((char *)p->workspace + dpsum);
    a->dq_sem = (int *)((char *)p->workspace + dpsum + fa_bwd_align256(acc));
    a->dq_sem_rows = rows;
}

static inline int fa_bwd_aligned16(const void *ptr) { return ((uintptr_t)ptr & 15u) == 0; }

/* What the kernels assume beyond fa_check_params: fp16/bf16, 16-byte vector access (head_dim
 * and every row / head (/ batch, dense) stride a multiple of 8 elements, 16-byte aligned base
 * pointers: the Python layer and the torch glue guarantee it), grid limits, a large enough
 * workspace. */
static inline fa_status fa_bwd_validate(const fa_params *p)
{
    if (p == NULL) return FA_ERR_NULL_POINTER;
    const fa_status chk = fa_check_params(p, 1);
    if (chk != FA_OK) return chk;
    if (p->dtype != FA_F16 && p->dtype != FA_BF16) return FA_ERR_DTYPE;
    if (p->head_dim % 8 != 0) return FA_ERR_UNSUPPORTED;
    const int varlen = p->cu_seqlens_q != NULL;
    const void *ptrs[8] = {p->q, p->k, p->v, p->o, p->dout, p->dq, p->dk, p->dv};
    for (int i = 0; i < 8; ++i)
        if (!fa_bwd_aligned16(ptrs[i])) return FA_ERR_UNSUPPORTED;
    const int64_t strides[24] = {
        p->q_row_stride, p->q_head_stride, p->q_batch_stride,
        p->k_row_stride, p->k_head_stride, p->k_batch_stride,
        p->v_row_stride, p->v_head_stride, p->v_batch_stride,
        p->o_row_stride, p->o_head_stride, p->o_batch_stride,
        p->do_row_stride, p->do_head_stride, p->do_batch_stride,
        p->dq_row_stride, p->dq_head_stride, p->dq_batch_stride,
        p->dk_row_stride, p->dk_head_stride, p->dk_batch_stride,
        p->dv_row_stride, p->dv_head_stride, p->dv_batch_stride};
    for (int i = 0; i < 24; ++i)
        if ((i % 3 != 2 || !varlen) && strides[i] % 8 != 0) return FA_ERR_UNSUPPORTED;
    /* grid.y / grid.z are 16-bit: heads_k and batch (dK/dV), heads and batch (dQ) */
    if (p->batch > 65535 || p->heads > 65535) return FA_ERR_UNSUPPORTED;
    const size_t need = fa_bwd_workspace_need(p);
    if (need > 0 && (p->workspace == NULL || p->workspace_bytes < need)) return FA_ERR_WORKSPACE;
    return FA_OK;
}

/* p must have passed fa_bwd_validate. */
static inline void fa_bwd_fill_args(const fa_params *p, fa_bwd_args *a)
{
    a->q = (const uint16_t *)p->q;
    a->k = (const uint16_t *)p->k;
    a->v = (const uint16_t *)p->v;
    a->o = (const uint16_t *)p->o;
    a->dout = (const uint16_t *)p->dout;
    a->lse = p->lse;
    a->dlse = p->dlse;
    a->dq = (uint16_t *)p->dq;
    a->dk = (uint16_t *)p->dk;
    a->dv = (uint16_t *)p->dv;
    const size_t dpsum_bytes = fa_bwd_dpsum_bytes(p);
    a->dpsum = dpsum_bytes ? (float *)p->workspace : NULL;
    a->dq_accum = (p->deterministic || !dpsum_bytes)
                      ? NULL
                      : (float *)((char *)p->workspace + dpsum_bytes);
    a->dq_sem = NULL; /* the sm90 ordered dQ sets both (fa_bwd_ordered_dq_args) */
    a->dq_sem_rows = 0;
    a->q_batch_stride = p->q_batch_stride; a->q_row_stride = p->q_row_stride; a->q_head_stride = p->q_head_stride;
    a->k_batch_stride = p->k_batch_stride; a->k_row_stride = p->k_row_stride; a->k_head_stride = p->k_head_stride;
    a->v_batch_stride = p->v_batch_stride; a->v_row_stride = p->v_row_stride; a->v_head_stride = p->v_head_stride;
    a->o_batch_stride = p->o_batch_stride; a->o_row_stride = p->o_row_stride; a->o_head_stride = p->o_head_stride;
    a->do_batch_stride = p->do_batch_stride; a->do_row_stride = p->do_row_stride; a->do_head_stride = p->do_head_stride;
    a->dq_batch_stride = p->dq_batch_stride; a->dq_row_stride = p->dq_row_stride; a->dq_head_stride = p->dq_head_stride;
    a->dk_batch_stride = p->dk_batch_stride; a->dk_row_stride = p->dk_row_stride; a->dk_head_stride = p->dk_head_stride;
    a->dv_batch_stride = p->dv_batch_stride; a->dv_row_stride = p->dv_row_stride; a->dv_head_stride = p->dv_head_stride;
    a->cu_seqlens_q = p->cu_seqlens_q;
    a->cu_seqlens_k = p->cu_seqlens_k;
    a->batch = (int)p->batch;
    a->heads = (int)p->heads;
    a->heads_k = (int)p->heads_k;
    a->head_dim = (int)p->head_dim;
    a->seqlen_q = (int)p->seqlen_q;
    a->seqlen_k = (int)p->seqlen_k;
    a->total_q = fa_bwd_rows_q(p);
    a->scale = p->softmax_scale;
    a->scale_log2 = p->softmax_scale * 1.4426950408889634f;
    a->softcap = p->softcap;
    a->scale_div_softcap = p->softcap > 0.f ? p->softmax_scale / p->softcap : 0.f;
    a->window_left = fa_window_clamp(p->window_left, p->seqlen_k);
    a->window_right = fa_window_clamp(p->window_right, p->seqlen_q);
    a->alibi_slopes = p->alibi_slopes;
    a->alibi_batch_stride = p->alibi_batch_stride;
    a->dropout_p = p->dropout_p;
    a->dropout_rescale = fa_dropout_rescale(p->dropout_p);  /* 1 / (1 - p_q), fa_common.h */
    a->dropout_threshold = fa_dropout_threshold(p->dropout_p);
    a->seed = p->seed;
    a->offset = p->offset;
    a->philox_seed_ptr = p->philox_seed_ptr;
    a->philox_offset_ptr = p->philox_offset_ptr;
    a->philox_offset_add = p->philox_offset_add;
    a->atomic_dq = p->deterministic ? 0 : 1;
}

#endif /* FA_BWD_HOST_H */
