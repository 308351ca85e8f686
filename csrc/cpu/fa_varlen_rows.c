/* fa_varlen_rows.c - the rows of a varlen call that no sequence covers.
 *
 * A varlen call owns rows [cu_seqlens[0], cu_seqlens[b]) of its (total, heads, d) tensors. The
 * rows before and after belong to no sequence, so no work item writes them; without this pass
 * they would keep whatever the allocator left there (values near 1e37 were seen). They get
 * o = 0, lse = -inf (like a row that sees no key), and zero gradients. */
#include <math.h>
#include <string.h>

#include "fa_cpu.h"

/* Zeroes rows [r0, r1) of a (rows, heads, d) tensor of the call's dtype. */
static void zero_rows(const fa_params *p, void *base, int64_t row_stride, int64_t head_stride,
                      int64_t heads, int64_t r0, int64_t r1)
{
    int64_t r, h;
    const size_t row_bytes = (size_t)p->head_dim * fa_dtype_size(p->dtype);
    for (r = r0; r < r1; ++r)
        for (h = 0; h < heads; ++h)
            memset(fa_ptr(p, base, r * row_stride + h * head_stride), 0, row_bytes);
}

fa_status fa_varlen_zero_uncovered_cpu(const fa_params *p, int backward)
{
    int64_t lo, hi, h, r, total;
    fa_status st;
    if (p == NULL) return FA_ERR_NULL_POINTER;
    if (!fa_is_varlen(p)) return FA_OK;
    /* the caller may run this before the items: the same checks as they make (sizes, strides,
     * cu_seqlens against total_q / total_k), or bad parameters would write out of bounds here */
    st = fa_cpu_check(p, backward);
    if (st != FA_OK) return st;

    fa_varlen_covered(p->cu_seqlens_q[0], p->cu_seqlens_q[p->batch], p->total_q, &lo, &hi);
    if (!backward) {
        if (p->o == NULL || p->lse == NULL) return lo == 0 && hi == p->total_q ? FA_OK : FA_ERR_NULL_POINTER;
        zero_rows(p, p->o, p->o_row_stride, p->o_head_stride, p->heads, 0, lo);
        zero_rows(p, p->o, p->o_row_stride, p->o_head_stride, p->heads, hi, p->total_q);
        for (h = 0; h < p->heads; ++h) {
            float *lse = p->lse + h * p->total_q;
            for (r = 0; r < lo; ++r) lse[r] = -INFINITY;
            for (r = hi; r < p->total_q; ++r) lse[r] = -INFINITY;
        }
        return FA_OK;
    }
    if (p->dq != NULL) {
        zero_rows(p, p->dq, p->dq_row_stride, p->dq_head_stride, p->heads, 0, lo);
        zero_rows(p, p->dq, p->dq_row_stride, p->dq_head_stride, p->heads, hi, p->total_q);
    }
    /* total_k = 0: the k rows end at cu_seqlens_k[b] (nothing past the last sequence) */
    total = fa_varlen_covered(p->cu_seqlens_k[0], p->cu_seqlens_k[p->batch],
                              p->total_k > 0 ? p->total_k : -1, &lo, &hi);
    if (p->dk != NULL) {
        zero_rows(p, p->dk, p->dk_row_stride, p->dk_head_stride, p->heads_k, 0, lo);
        zero_rows(p, p->dk, p->dk_row_stride, p->dk_head_stride, p->heads_k, hi, total);
    }
    if (p->dv != NULL) {
        zero_rows(p, p->dv, p->dv_row_stride, p->dv_head_stride, p->heads_k, 0, lo);
        zero_rows(p, p->dv, p->dv_row_stride, p->dv_head_stride, p->heads_k, hi, total);
    }
    return FA_OK;
}
