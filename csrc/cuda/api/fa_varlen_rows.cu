/* fa_varlen_rows.cu - zeroes the rows of a varlen call that no sequence covers
 * (see fa_varlen_rows.cuh). One small grid-stride launch per tensor side; when cu_seqlens covers
 * every row (the usual case) every thread returns after reading two integers. */
#include <math.h>
#include <stdint.h>

#include "fa_varlen_rows.cuh"

/* Up to two (rows, heads, d) 16-bit tensors sharing one cu_seqlens (o; dq; dk + dv), and
 * optionally the (heads, rows) lse of the forward. */
typedef struct fa_uncovered_args {
    uint16_t *x0;            /* (total, heads, d) or NULL */
    uint16_t *x1;            /* (total, heads, d) or NULL */
    int64_t rs0, hs0, rs1, hs1;
    float *lse;              /* (heads, total) or NULL */
    const int32_t *cu;       /* (batch + 1,) device */
    int64_t batch;
    int64_t total;           /* rows of the tensors; < 0: cu[batch] (nothing past the last sequence) */
    int heads;
    int chunks;              /* 16-byte chunks per head row: d / 8 */
} fa_uncovered_args;

__global__ void fa_varlen_zero_uncovered_kernel(const fa_uncovered_args a)
{
    int64_t lo, hi;  /* the covered rows (fa_common.h) */
    const int64_t total = fa_varlen_covered(a.cu[0], a.cu[a.batch], a.total, &lo, &hi);
    const int64_t per_row = (int64_t)a.heads * a.chunks;
    const int64_t n = (lo + total - hi) * per_row;
    const uint4 zero = make_uint4(0u, 0u, 0u, 0u);
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        const int64_t r = i / per_row;
        const int h = (int)((i % per_row) / a.chunks);
        const int c = (int)(i % a.chunks);
        const int64_t row = r < lo ? r : hi + (r - lo);
        if (a.x0 != NULL) *(uint4 *)(a.x0 + row * a.rs0 + (int64_t)h * a.hs0 + 8 * c) = zero;
        if (a.x1 != NULL) *(uint4 *)(a.x1 + row * a.rs1 + (int64_t)h * a.hs1 + 8 * c) = zero;
        if (a.lse != NULL && c == 0) a.lse[(int64_t)h * total + row] = -INFINITY;
    }
}

static fa_status fa_uncovered_launch(const fa_uncovered_args &a, cudaStream_t stream)
{
    const int64_t rows = a.total < 0 ? 0 : a.total;
    const int64_t work = (rows > 0 ? rows : 1) * a.heads * a.chunks;
    /* enough threads to write uncovered rows at full speed; most of them usually just return */
    const int64_t blocks = (work + 255) / 256 < 256 ? (work + 255) / 256 : 256;
    fa_varlen_zero_uncovered_kernel<<<(unsigned)(blocks > 0 ? blocks : 1), 256, 0, stream>>>(a);
    return cudaGetLastError() == cudaSuccess ? FA_OK : FA_ERR_CUDA;
}

fa_status fa_varlen_zero_uncovered_cuda(const fa_params *p, int backward, cudaStream_t stream)
{
    if (p->cu_seqlens_q == NULL || p->batch < 0) return FA_OK;
    fa_uncovered_args a = {};
    a.batch = p->batch;
    a.chunks = (int)(p->head_dim / 8);  /* CUDA head dims are multiples of 8 (fa_fwd_cuda checks) */
    a.cu = p->cu_seqlens_q;
    a.total = p->total_q;
    a.heads = (int)p->heads;
    if (!backward) {
        a.x0 = (uint16_t *)p->o;
        a.rs0 = p->o_row_stride;
        a.hs0 = p->o_head_stride;
        a.lse = p->lse;
        return fa_uncovered_launch(a, stream);
    }
    a.x0 = (uint16_t *)p->dq;
    a.rs0 = p->dq_row_stride;
    a.hs0 = p->dq_head_stride;
    fa_status st = fa_uncovered_launch(a, stream);
    if (st != FA_OK) return st;
    a.cu = p->cu_seqlens_k;
    a.total = p->total_k > 0 ? p->total_k : -1;
    a.heads = (int)p->heads_k;
    a.x0 = (uint16_t *)p->dk;
    a.rs0 = p->dk_row_stride;
    a.hs0 = p->dk_head_stride;
    a.x1 = (uint16_t *)p->dv;
    a.rs1 = p->dv_row_stride;
    a.hs1 = p->dv_head_stride;
    return fa_uncovered_launch(a, stream);
}
