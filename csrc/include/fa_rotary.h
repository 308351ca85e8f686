/* fa_rotary.h - pure helpers of the rotary embedding shared by the C backend and the CUDA kernel
 * (fa_rotary.c, fa_rotary.cu): where a row lives and which position it rotates by. Compiles as C11
 * and as CUDA; see fa_rotary_params in flash_attn_c.h for the semantics. */
#ifndef FA_ROTARY_H
#define FA_ROTARY_H

#include <stdint.h>

#include "flash_attn_c.h"
#include "fa_common.h"

/* One row of x / out: its element offsets and its rotation position (-1: not rotated). */
typedef struct fa_rotary_row {
    int64_t x_off;    /* offset of (row, head 0, dim 0) in x */
    int64_t out_off;  /* offset of (row, head 0, dim 0) in out */
    int64_t pos;      /* row of cos / sin, or -1 when outside [0, seqlen_ro) or outside every sequence */
} fa_rotary_row;

/* The sequence holding varlen row r: the largest b with cu[b] <= r, or -1 when r is before cu[0]
 * or at / after cu[batch] (binary search; cu is assumed non-decreasing; garbage stays in range). */
FA_HD int64_t fa_rotary_seq_of_row(const int32_t *cu, int64_t batch, int64_t r)
{
    if (batch <= 0 || r < (int64_t)cu[0] || r >= (int64_t)cu[batch]) return -1;
    int64_t lo = 0, hi = batch - 1;  /* invariant: cu[lo] <= r, answer in [lo, hi] */
    while (lo < hi) {
        const int64_t mid = (lo + hi + 1) / 2;
        if ((int64_t)cu[mid] <= r) lo = mid;
        else hi = mid - 1;
    }
    return lo;
}

FA_HD fa_rotary_row fa_rotary_locate(const fa_rotary_params *p, int64_t r)
{
    fa_rotary_row w;
    int64_t b, j;
    if (p->cu_seqlens != NULL) {
        b = fa_rotary_seq_of_row(p->cu_seqlens, p->batch, r);
        j = b >= 0 ? r - (int64_t)p->cu_seqlens[b] : 0;
        w.x_off = r * p->x_row_stride;
        w.out_off = r * p->out_row_stride;
    } else {
        b = r / p->seqlen;
        j = r - b * p->seqlen;
        w.x_off = b * p->x_batch_stride + j * p->x_row_stride;
        w.out_off = b * p->out_batch_stride + j * p->out_row_stride;
    }
    if (b < 0) {
        w.pos = -1;
    } else {
        const int64_t pos = j + (p->seqlen_offsets != NULL ? p->seqlen_offsets[b] : p->seqlen_offset);
        w.pos = (pos >= 0 && pos < p->seqlen_ro) ? pos : -1;
    }
    return w;
}

/* Element index of the two members of pair i (of rd / 2) inside one head. */
FA_HD void fa_rotary_pair(int64_t i, int64_t rotary_dim, int interleaved, int64_t *i0, int64_t *i1)
{
    *i0 = interleaved ? 2 * i : i;
    *i1 = interleaved ? 2 * i + 1 : i + rotary_dim / 2;
}

#endif /* FA_ROTARY_H */
