/* bwd_bench.h - the benchmark problem and timer of the backward harnesses (--bench of
 * dev/bwd/bwd_check.cu and dev/bwd_sm90/bwd_sm90_check.cu): one dense bf16 problem filled on the
 * device, and the median time of a backward entry point over CUDA events. GPU builds only
 * (kernels; not part of the CPU simulator build). */
#ifndef DEV_BWD_BENCH_H
#define DEV_BWD_BENCH_H

#include <cuda_runtime.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <math.h>
#include <string.h>

#include <algorithm>
#include <vector>

#include "flash_attn_c.h"
#include "check_cuda.h"
#include "bench_fill.h"

/* Allocates and fills q, k, v, o, dout (b, s, h, d) bf16, dq, dk, dv (uninitialized) and lse
 * (b, h, s), and sets p for them: softmax scale d^-0.5, causal or no mask. Deterministic mode and
 * the workspace are the caller's. */
static inline void bwd_bench_setup(int b, int s, int h, int d, int causal, fa_params *p)
{
    const int64_t n = (int64_t)b * s * h * d;
    uint16_t *q, *k, *v, *o, *dout, *dq, *dk, *dv;
    float *lse;
    CK(cudaMalloc(&q, n * 2)); CK(cudaMalloc(&k, n * 2)); CK(cudaMalloc(&v, n * 2));
    CK(cudaMalloc(&o, n * 2)); CK(cudaMalloc(&dout, n * 2));
    CK(cudaMalloc(&dq, n * 2)); CK(cudaMalloc(&dk, n * 2)); CK(cudaMalloc(&dv, n * 2));
    CK(cudaMalloc(&lse, (size_t)b * h * s * 4));
    bench_fill_uniform_kernel<<<1024, 256>>>(q, n, 1, 1);
    bench_fill_uniform_kernel<<<1024, 256>>>(k, n, 2, 1);
    bench_fill_uniform_kernel<<<1024, 256>>>(v, n, 3, 1);
    bench_fill_uniform_kernel<<<1024, 256>>>(o, n, 4, 1);
    bench_fill_uniform_kernel<<<1024, 256>>>(dout, n, 5, 1);
    /* scores are tiny for these inputs, so P ~ 1 / (visible keys) ~ exp(-log s) */
    bench_fill_const_kernel<<<1024, 256>>>(lse, (int64_t)b * h * s, logf((float)s));
    CK(cudaGetLastError());
    memset(p, 0, sizeof *p);
    p->dtype = FA_BF16;
    p->batch = b; p->seqlen_q = s; p->seqlen_k = s; p->heads = h; p->heads_k = h;
    p->head_dim = d; p->total_q = (int64_t)b * s;
    p->q = q; p->k = k; p->v = v; p->o = o; p->lse = lse; p->dout = dout;
    p->dq = dq; p->dk = dk; p->dv = dv;
    const int64_t rs = (int64_t)h * d, bs = (int64_t)s * rs;
    p->q_batch_stride = p->k_batch_stride = p->v_batch_stride = p->o_batch_stride = bs;
    p->do_batch_stride = p->dq_batch_stride = p->dk_batch_stride = p->dv_batch_stride = bs;
    p->q_row_stride = p->k_row_stride = p->v_row_stride = p->o_row_stride = rs;
    p->do_row_stride = p->dq_row_stride = p->dk_row_stride = p->dv_row_stride = rs;
    p->q_head_stride = p->k_head_stride = p->v_head_stride = p->o_head_stride = d;
    p->do_head_stride = p->dq_head_stride = p->dk_head_stride = p->dv_head_stride = d;
    p->softmax_scale = 1.f / sqrtf((float)d);
    p->window_left = -1;
    p->window_right = causal ? 0 : -1;
}

/* frees what bwd_bench_setup allocated (not the workspace) */
static inline void bwd_bench_free(fa_params *p)
{
    CK(cudaFree((void *)p->q)); CK(cudaFree((void *)p->k)); CK(cudaFree((void *)p->v)); CK(cudaFree(p->o));
    CK(cudaFree((void *)p->dout));
    CK(cudaFree(p->dq)); CK(cudaFree(p->dk)); CK(cudaFree(p->dv)); CK(cudaFree(p->lse));
}

/* Median ms of 10 calls after 3 warm-up calls (13 timed calls, the first 3 dropped; default
 * stream); stops at the first failing call and returns -1 then, with its status in *st. */
static inline double bwd_bench_median_ms(fa_status (*fn)(const fa_params *, void *), const fa_params *p,
                                         fa_status *st /* (1,) out */)
{
    cudaEvent_t e0, e1;
    CK(cudaEventCreate(&e0));
    CK(cudaEventCreate(&e1));
    std::vector<float> ms;
    *st = FA_OK;
    for (int it = 0; it < 13 && *st == FA_OK; ++it) {
        CK(cudaEventRecord(e0));
        *st = fn(p, NULL);
        CK(cudaEventRecord(e1));
        CK(cudaEventSynchronize(e1));
        float t = 0.f;
        CK(cudaEventElapsedTime(&t, e0, e1));
        if (it >= 3) ms.push_back(t); /* 3 warm-up calls */
    }
    CK(cudaGetLastError());
    CK(cudaEventDestroy(e0));
    CK(cudaEventDestroy(e1));
    if (*st != FA_OK) return -1.0;
    std::sort(ms.begin(), ms.end());
    return ms[ms.size() / 2];
}

#endif /* DEV_BWD_BENCH_H */
