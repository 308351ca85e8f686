/* fwd_bench.h - the benchmark problem and timer of the forward harnesses (--bench of
 * dev/fwd/fwd_check.cu and dev/fwd_sm90/sm90_check.cu): one dense bf16 problem of normal random
 * inputs, and the median time of a forward entry point over CUDA events. */
#ifndef DEV_FWD_BENCH_H
#define DEV_FWD_BENCH_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <algorithm>
#include <vector>

#include "check_cuda.h"
#include "check_host.h"
#include "bench_fill.h"

typedef fa_status (*fwd_entry_fn)(const fa_params *p, void *stream);

/* Allocates and fills q, k, v (b, s, h, d) bf16 (standard normal, generated on the device:
 * bench_fill.h), o and lse (b, h, s), and sets p for them: softmax scale d^-0.5, causal or no
 * mask. rng: one draw seeds the fill, so consecutive problems differ. */
static inline void fwd_bench_setup(check_rng *rng, int b, int s, int h, int d, int causal, fa_params *p)
{
    const size_t n = (size_t)b * s * h * d;
    uint16_t *q, *k, *v, *o;
    float *lse;
    CK(cudaMalloc(&q, n * 2));
    CK(cudaMalloc(&k, n * 2));
    CK(cudaMalloc(&v, n * 2));
    CK(cudaMalloc(&o, n * 2));
    CK(cudaMalloc(&lse, (size_t)b * h * s * 4));
    const uint32_t seed = (uint32_t)(check_rng_uniform(rng) * 4294967296.0);
    bench_fill_normal_kernel<<<1024, 256>>>(q, (int64_t)n, seed ^ 1u, 1);
    bench_fill_normal_kernel<<<1024, 256>>>(k, (int64_t)n, seed ^ 2u, 1);
    bench_fill_normal_kernel<<<1024, 256>>>(v, (int64_t)n, seed ^ 3u, 1);
    CK(cudaGetLastError());
    memset(p, 0, sizeof *p);
    p->dtype = FA_BF16;
    p->batch = b; p->seqlen_q = s; p->seqlen_k = s; p->heads = h; p->heads_k = h; p->head_dim = d;
    p->total_q = (int64_t)b * s;
    p->q = q; p->k = k; p->v = v; p->o = o; p->lse = lse;
    p->q_batch_stride = p->k_batch_stride = p->v_batch_stride = p->o_batch_stride = (int64_t)s * h * d;
    p->q_row_stride = p->k_row_stride = p->v_row_stride = p->o_row_stride = (int64_t)h * d;
    p->q_head_stride = p->k_head_stride = p->v_head_stride = p->o_head_stride = d;
    p->softmax_scale = 1.f / sqrtf((float)d);
    p->window_left = -1;
    p->window_right = causal ? 0 : -1;
}

static inline void fwd_bench_free(fa_params *p)
{
    cudaFree((void *)p->q); cudaFree((void *)p->k); cudaFree((void *)p->v); cudaFree(p->o); cudaFree(p->lse);
}

/* Median ms of 15 timed calls after 3 untimed warm-up calls (default stream); a failing call
 * ends the harness (exit status 1). */
static inline double fwd_bench_median_ms(fwd_entry_fn fn, const fa_params *p)
{
    cudaEvent_t e0, e1;
    CK(cudaEventCreate(&e0));
    CK(cudaEventCreate(&e1));
    for (int w = 0; w < 3; ++w) fn(p, NULL);
    CK(cudaDeviceSynchronize());
    std::vector<float> ts;
    for (int r = 0; r < 15; ++r) {
        CK(cudaEventRecord(e0));
        const fa_status st = fn(p, NULL);
        CK(cudaEventRecord(e1));
        CK(cudaEventSynchronize(e1));
        if (st != FA_OK) {
            printf("forward failed: %s\n", fa_status_string(st));
            exit(1);
        }
        float ms;
        CK(cudaEventElapsedTime(&ms, e0, e1));
        ts.push_back(ms);
    }
    cudaEventDestroy(e0);
    cudaEventDestroy(e1);
    std::sort(ts.begin(), ts.end());
    return ts[ts.size() / 2];
}

#endif /* DEV_FWD_BENCH_H */
