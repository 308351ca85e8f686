/* fa_cpu_common.c - validation and scratch allocation shared by the CPU entry points. */
#include <stdlib.h>
#include <string.h>

#include "fa_cpu.h"

fa_status fa_cpu_check(const fa_params *p, int backward)
{
    fa_status st = fa_check_params(p, backward);
    if (st != FA_OK) return st;
    /* paged / used-length / left-padded / remapped caches: the Python layer gathers the keys */
    if (fa_params_uses_kv_cache(p)) return FA_ERR_UNSUPPORTED;
    if (fa_is_varlen(p)) {
        int64_t b;
        const int32_t *cq = p->cu_seqlens_q, *ck = p->cu_seqlens_k;
        if (cq[0] < 0 || ck[0] < 0) return FA_ERR_SEQLENS;
        for (b = 0; b < p->batch; ++b) {
            int64_t lq = (int64_t)cq[b + 1] - cq[b];
            int64_t lk = (int64_t)ck[b + 1] - ck[b];
            if (lq < 0 || lk < 0 || lq > p->seqlen_q || lk > p->seqlen_k) return FA_ERR_SEQLENS;
        }
        if (cq[p->batch] > p->total_q) return FA_ERR_SEQLENS;
        /* k / v hold total_k rows (0: exactly cu_seqlens_k[b]); keys past them would be read
         * (and dk / dv written) out of bounds */
        if (p->total_k < 0 || (p->total_k > 0 && ck[p->batch] > p->total_k)) return FA_ERR_SEQLENS;
    }
    return FA_OK;
}

const float *fa_rows_f32(const fa_params *p, const void *base, int64_t off, int64_t row_stride,
                         int64_t r0, int64_t n, float *buf, int64_t *ms)
{
    int64_t r, d = p->head_dim;
    if (p->dtype == FA_F32) {
        *ms = row_stride;
        return (const float *)base + off + r0 * row_stride;
    }
    for (r = 0; r < n; ++r)
        fa_row_to_f32(p->dtype, fa_cptr(p, base, off + (r0 + r) * row_stride), buf + r * d, d, 1.0f);
    *ms = d;
    return buf;
}

void *fa_cpu_alloc(size_t bytes)
{
    /* aligned_alloc wants a size that is a multiple of the alignment */
    size_t rounded = (bytes + 63u) & ~(size_t)63u;
    return aligned_alloc(64, rounded ? rounded : 64u);
}

void fa_cpu_free(void *ptr) { free(ptr); }

float *fa_cpu_arena_take(fa_cpu_arena *a, size_t n)
{
    float *piece = a->base ? a->base + a->used : NULL;
    a->used += (n + 15u) & ~(size_t)15u; /* the next piece starts on a 64-byte boundary */
    return piece;
}

void *fa_cpu_arena_build(fa_cpu_layout_fn layout, void *scratch, int64_t d)
{
    fa_cpu_arena a = {NULL, 0};
    size_t floats;
    layout(scratch, &a, d); /* counting pass */
    floats = a.used;
    a.base = (float *)fa_cpu_alloc(floats * sizeof(float));
    if (!a.base) return NULL;
    memset(a.base, 0, floats * sizeof(float));
    a.used = 0;
    layout(scratch, &a, d);
    return a.base;
}
