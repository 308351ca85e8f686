/* fa_rotary.c - rotary position embedding on the CPU (fa_rotary_check, fa_rotary_cpu).
 *
 * Row by row: locate the row's sequence and position (fa_rotary.h), then rotate every head's
 * rotary_dim / 2 pairs in fp32 and pass the dims past rotary_dim through (unless in place, where
 * they already are). Rows are independent, so any split of [0, rows) over threads is valid and
 * gives the same bits.
 */
#include <string.h>

#include "fa_convert.h"
#include "fa_rotary.h"

fa_status fa_rotary_check(const fa_rotary_params *p)
{
    if (p == NULL) return FA_ERR_NULL_POINTER;
    if (p->dtype != FA_F32 && p->dtype != FA_F16 && p->dtype != FA_BF16) return FA_ERR_DTYPE;
    if (p->batch < 0 || p->rows < 0 || p->heads < 0 || p->head_dim < 0 || p->seqlen_ro < 0)
        return FA_ERR_SHAPE;
    if (p->rotary_dim < 0 || p->rotary_dim % 2 != 0 || p->rotary_dim > p->head_dim) return FA_ERR_SHAPE;
    if (p->cu_seqlens == NULL && (p->seqlen < 0 || p->rows != p->batch * p->seqlen)) return FA_ERR_SHAPE;
    if (p->rows == 0 || p->heads == 0 || p->head_dim == 0) return FA_OK;  /* nothing to touch */
    if (p->x == NULL || p->out == NULL) return FA_ERR_NULL_POINTER;
    if (p->rotary_dim > 0 && p->seqlen_ro > 0 && (p->cos == NULL || p->sin == NULL))
        return FA_ERR_NULL_POINTER;
    if (p->x_row_stride < 0 || p->x_head_stride < 0 || p->out_row_stride < 0 ||
        p->out_head_stride < 0 || p->x_batch_stride < 0 || p->out_batch_stride < 0)
        return FA_ERR_STRIDE;
    return FA_OK;
}

static size_t fa_rotary_elem_size(fa_dtype dt) { return dt == FA_F32 ? 4u : 2u; }

static float fa_rotary_load(const void *base, int64_t i, fa_dtype dt)
{
    if (dt == FA_F32) return ((const float *)base)[i];
    if (dt == FA_F16) return fa_f16_to_f32(((const uint16_t *)base)[i]);
    return fa_bf16_to_f32(((const uint16_t *)base)[i]);
}

static void fa_rotary_store(void *base, int64_t i, float v, fa_dtype dt)
{
    if (dt == FA_F32) ((float *)base)[i] = v;
    else if (dt == FA_F16) ((uint16_t *)base)[i] = fa_f32_to_f16(v);
    else ((uint16_t *)base)[i] = fa_f32_to_bf16(v);
}

/* One head of one row: x_h, out_h (head_dim,) with unit stride; cs, sn (rotary_dim / 2,) or NULL. */
static void fa_rotary_head(const fa_rotary_params *p, const void *x_h, void *out_h,
                           const float *cs, const float *sn)
{
    const int64_t half = p->rotary_dim / 2;
    const float sign = p->conjugate ? -1.f : 1.f;
    for (int64_t i = 0; i < half; ++i) {
        int64_t i0, i1;
        fa_rotary_pair(i, p->rotary_dim, p->interleaved, &i0, &i1);
        const float x0 = fa_rotary_load(x_h, i0, p->dtype);
        const float x1 = fa_rotary_load(x_h, i1, p->dtype);
        float o0 = x0, o1 = x1;  /* no position: identity, bit-exact */
        if (cs != NULL) {
            const float c = cs[i], s = sign * sn[i];
            o0 = x0 * c - x1 * s;
            o1 = x0 * s + x1 * c;
        }
        fa_rotary_store(out_h, i0, o0, p->dtype);
        fa_rotary_store(out_h, i1, o1, p->dtype);
    }
}

fa_status fa_rotary_cpu(const fa_rotary_params *p, int64_t row_begin, int64_t row_end)
{
    const fa_status st = fa_rotary_check(p);
    if (st != FA_OK) return st;
    if (row_begin < 0 || row_end > p->rows || row_begin > row_end) return FA_ERR_SHAPE;
    if (p->heads == 0 || p->head_dim == 0) return FA_OK;
    const size_t es = fa_rotary_elem_size(p->dtype);
    const int in_place = p->out == p->x;
    const int64_t half = p->rotary_dim / 2;
    const size_t tail_bytes = (size_t)(p->head_dim - p->rotary_dim) * es;
    for (int64_t r = row_begin; r < row_end; ++r) {
        const fa_rotary_row w = fa_rotary_locate(p, r);
        const float *cs = w.pos >= 0 ? p->cos + w.pos * half : NULL;
        const float *sn = w.pos >= 0 ? p->sin + w.pos * half : NULL;
        for (int64_t h = 0; h < p->heads; ++h) {
            const char *x_h = (const char *)p->x + (size_t)(w.x_off + h * p->x_head_stride) * es;
            char *out_h = (char *)p->out + (size_t)(w.out_off + h * p->out_head_stride) * es;
            fa_rotary_head(p, x_h, out_h, cs, sn);
            if (!in_place && tail_bytes > 0)
                memcpy(out_h + (size_t)p->rotary_dim * es, x_h + (size_t)p->rotary_dim * es, tail_bytes);
        }
    }
    return FA_OK;
}
