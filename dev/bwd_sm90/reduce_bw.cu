/* reduce_bw.cu - how fast can fp32 dQ be added into L2 on Hopper? The go / no-go of moving the d = 256
 * backward's dQ (fa_bwd_sm90_pipe_dsplit.cuh: red.global.add.v2.f32 from registers) to TMA reduce-add
 * (issue #13): at Bc = 64 the dQ of a d = 256 backward is 6.25 KB of fp32 adds per MFLOP, so a kernel
 * cannot beat (add bandwidth in GB/s) / 6.25 TFLOP/s. How to read the output: README.md.
 *
 * The traffic of the backward's grid, without its math: dq_accum (b * sq, h, 256) fp32, b * sq = 16384,
 * h = 8; a work item = one key block n (Bc = 64) of one (b, h) (the kernel's grid (n, hk, b), x fastest),
 * which adds one 64-row x 256-dim fp32 tile into every query block m of its sequence (causal: m >= n).
 * The grid is the SM count (the kernel runs one CTA per SM); CTA c takes items c, c + grid, ... so the
 * resident CTAs are neighbouring key blocks of one head adding into the same query block at once, as in
 * the kernel. Variants, the same bytes each:
 *   tma  one thread adds the tile from shared memory: 8 TMA tensor reduces (cp.reduce.async.bulk.tensor
 *        .add.f32) of {32 dims, 64 rows} boxes, the map of the TMA-dQ kernels (fa_bwd_encode_dqacc)
 *   v2   red.global.add.v2.f32 by 256 threads in thread_red_add_dq's layout (the d = 256 kernel today)
 *   v4q  red.global.add.v4.f32 in the row-major dq_accum after a quad-pair swap (lanes t, t ^ 1 trade
 *        two floats: even t adds row g, odd t row g + 8, 4 dims each): 16 rows x 32 bytes an instruction
 *   v4r  the same after a quad transpose (lane t adds dims 16 jp + 4 t of one row): 8 rows x 64 bytes
 *        (v4q / v4r time the adds only; a kernel adds 2 / 4 shuffles per 4 floats)
 *   v4   red.global.add.v4.f32, every warp instruction 512 contiguous bytes (FA3's tile-permuted
 *        dq_accum: tile (b, h, m) contiguous, 64 KB)
 *   st   st.global.v4.f32 of the v4 layout (plain write bandwidth), and cudaMemcpy D2D of dq_accum
 * GB/s = bytes added (or written) per second, median of 20 launches after 3 warm-ups (CUDA events).
 * Each variant's first launch starts from zeros and is checked: every element must equal the number
 * of adds it received (key blocks of its query block), so nothing can be optimised away.
 *   reduce_bw [--no-gpu] [--ctas N]   --no-gpu: the shapes and the bytes-per-MFLOP arithmetic only
 */
#include <cuda.h>
#include <cuda_runtime.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <algorithm>
#include <vector>

#include "fa_sm90_sync.cuh"          /* fa_tma_reduce_add_4d, fa_bulk_*, fa_fence_proxy_async_smem */
#include "fa_bwd_sm90_tma_maps.h"    /* fa_bwd_encode_dqacc: the TMA-dQ kernels' dq_accum map */
#include "../common/check_cuda.h"    /* CK */

enum { D = 256, H = 8, TOKENS = 16384, BR = 64, BC = 64, THREADS = 256, TILE_BYTES = BR * D * 4 };
enum { V_TMA, V_V2, V_V4Q, V_V4R, V_V4, V_ST, N_VARIANTS }; /* before V_V4: the row-major dq_accum */
static const char *const k_names[N_VARIANTS] = {"tma reduce {32,64}", "red.add.v2 (now)", "red.v4 quad-pair",
                                                "red.v4 quad-transp", "red.add.v4 (FA3)", "st.global.v4"};

typedef struct rb_shape {
    int b, sq, causal, n_kb; /* n_kb: key blocks = query blocks per sequence (sq = sk) */
} rb_shape;

/* query blocks of item (key block n): m in [lo, n_kb) (not static: unused in the non-sm_90a passes) */
__host__ __device__ __forceinline__ int rb_mb_lo(const rb_shape s, int n) { return s.causal ? n : 0; }

#if FA_SM90_DEVICE
static __device__ __forceinline__ void thread_red_add_v4(float *p, float v)
{
    asm volatile("red.global.add.v4.f32 [%0], {%1, %1, %1, %1};\n" ::"l"(p), "f"(v) : "memory");
}
static __device__ __forceinline__ void thread_st_v4(float *p, float v)
{
    asm volatile("st.global.v4.f32 [%0], {%1, %1, %1, %1};\n" ::"l"(p), "f"(v) : "memory");
}
static __device__ __forceinline__ void thread_red_add_v2(float *p, float v)
{
    asm volatile("red.global.add.v2.f32 [%0], {%1, %1};\n" ::"l"(p), "f"(v) : "memory");
}
#endif

/* dq: (b * sq, h, D) fp32 row-major for tma / v2 / v4q / v4r; (b, h, n_kb, BR * D) fp32 (tile-permuted) for v4 / st.
 * tm: that buffer's 4-d map (D, sq, h, b), box {32, 64}, 128-byte swizzle (tma only). v: the addend. */
template <int kVariant>
__global__ void __launch_bounds__(THREADS, 1)
    reduce_bw_kernel(const __grid_constant__ CUtensorMap tm, float *dq, rb_shape s, float v)
{
#if FA_SM90_DEVICE
    extern __shared__ __align__(1024) unsigned char smem_raw[];
    const int tid = threadIdx.x, n_items = s.n_kb * H * s.b;
    const uint32_t stg = ((uint32_t)__cvta_generic_to_shared(smem_raw) + 1023u) & ~1023u; /* swizzle: 1024-aligned */
    if (kVariant == V_TMA) {
        /* the staged tile: all v (the swizzle permutes within rows, so no layout matters here) */
        for (int i = tid; i < TILE_BYTES / 16; i += THREADS)
            asm volatile("st.shared.v4.f32 [%0], {%1, %1, %1, %1};\n" ::"r"(stg + 16u * i), "f"(v) : "memory");
        fa_fence_proxy_async_smem(); /* the generic-proxy stores before the TMA's (async proxy) reads */
        /* why: thread 0's reduces below read every thread's part of the staged tile */
        __syncthreads();
        if (tid != 0) return;
        fa_tma_prefetch_desc(&tm);
    }
    const int wg = tid / 128, wq = (tid / 32) % 4, g = (tid % 32) / 4, t = tid % 4; /* thread_red_add_dq's */
    for (int w = blockIdx.x; w < n_items; w += gridDim.x) {
        const int n = w % s.n_kb, h = (w / s.n_kb) % H, b = w / (s.n_kb * H);
        for (int m = rb_mb_lo(s, n); m < s.n_kb; ++m) {
            if (kVariant == V_TMA) {
                for (int hc = 0; hc < D / 32; ++hc)
                    fa_tma_reduce_add_4d(&tm, stg + (uint32_t)hc * (TILE_BYTES / 8), 32 * hc, m * BR, h, b);
                fa_bulk_commit();
                /* at most 2 tiles still reading shared memory: the double-buffered staging a kernel has */
                fa_bulk_wait_read<1>();
            } else if (kVariant == V_V2) {
                /* fa_bwd_sm90_pipe_dsplit.cuh: warpgroup wg adds dims [128 wg, + 128) as two kN = 64 calls
                 * of thread_red_add_dq: row 16 wq + g + 8 half, dim col0 + 8 jn + 2 t */
                float *acc = dq + ((int64_t)(b * s.sq + m * BR) * H + h) * D;
#pragma unroll
                for (int hh = 0; hh < 2; ++hh)
#pragma unroll
                    for (int jn = 0; jn < 8; ++jn)
#pragma unroll
                        for (int half = 0; half < 2; ++half)
                            thread_red_add_v2(acc + (16 * wq + g + 8 * half) * (H * D) + 128 * wg + 64 * hh +
                                                  8 * jn + 2 * t, v);
            } else if (kVariant == V_V4Q || kVariant == V_V4R) {
                float *acc = dq + ((int64_t)(b * s.sq + m * BR) * H + h) * D + 128 * wg;
#pragma unroll
                for (int hh = 0; hh < 2; ++hh)
#pragma unroll
                    for (int k = 0; k < 8; ++k) {
                        /* v4q: k = jn, row g + 8 (t & 1), dims 8 jn + 4 (t >> 1); v4r: k = 4 half + jp, row
                         * g + 8 half, dims 16 jp + 4 t */
                        const int row = 16 * wq + g + (kVariant == V_V4Q ? 8 * (t & 1) : 8 * (k / 4));
                        const int col = 64 * hh + (kVariant == V_V4Q ? 8 * k + 4 * (t >> 1) : 16 * (k % 4) + 4 * t);
                        thread_red_add_v4(acc + row * (H * D) + col, v);
                    }
            } else {
                /* tile (b, h, m) contiguous; warp instruction k: lanes write 512 contiguous bytes */
                float *tile = dq + (((int64_t)b * H + h) * s.n_kb + m) * (BR * D);
#pragma unroll
                for (int k = 0; k < TILE_BYTES / 16 / THREADS; ++k) {
                    if (kVariant == V_V4) thread_red_add_v4(tile + 4 * (k * THREADS + tid), v);
                    else thread_st_v4(tile + 4 * (k * THREADS + tid), v);
                }
            }
        }
    }
    /* every reduce has read the staged tile and landed before the CTA (and its shared memory) ends */
    if (kVariant == V_TMA) fa_bulk_wait<0>();
#else
    __trap(); /* sm_90a only: the host checks the device first */
#endif
}

static int64_t rb_tiles(const rb_shape s) /* tile adds of one launch */
{
    int64_t per_head = 0;
    for (int n = 0; n < s.n_kb; ++n) per_head += s.n_kb - rb_mb_lo(s, n);
    return (int64_t)s.b * H * per_head;
}

static double rb_flops(const rb_shape s) /* the d = 256 backward's FLOPs (the bench's: 2.5 x forward) */
{
    return 2.5 * 4.0 * s.b * H * (double)s.sq * s.sq * D * (s.causal ? 0.5 : 1.0);
}

/* 1 if every element holds its number of adds x v (the st variant: v) */
static int rb_check(const float *dq_dev, rb_shape s, int variant, float v)
{
    const size_t n = (size_t)s.b * s.sq * H * D;
    std::vector<float> hbuf(n);
    CK(cudaMemcpy(hbuf.data(), dq_dev, n * 4, cudaMemcpyDeviceToHost));
    size_t bad = 0;
    for (size_t e = 0; e < n; ++e) {
        /* the query block of element e: row-major (b * sq, h, D), or tile-permuted (b, h, n_kb, BR * D) */
        const int m = variant < V_V4 ? (int)((e / ((size_t)H * D)) % (size_t)s.sq) / BR
                                      : (int)((e / ((size_t)BR * D)) % (size_t)s.n_kb);
        const float want = variant == V_ST ? v : v * (float)(s.causal ? m + 1 : s.n_kb); /* exact: < 2^24 */
        if (hbuf[e] != want && bad++ < 3)
            fprintf(stderr, "  %s: element %zu = %g, want %g\n", k_names[variant], e, hbuf[e], want);
    }
    return bad == 0;
}

typedef void (*rb_kernel_fn)(CUtensorMap, float *, rb_shape, float);

/* median ms of 20 runs of launch(ctx) after 2 warm-ups (CUDA events around each) */
static double rb_median_ms(void (*launch)(void *), void *ctx)
{
    cudaEvent_t e0, e1;
    CK(cudaEventCreate(&e0));
    CK(cudaEventCreate(&e1));
    std::vector<float> ms;
    for (int it = 0; it < 22; ++it) {
        CK(cudaEventRecord(e0));
        launch(ctx);
        CK(cudaEventRecord(e1));
        CK(cudaEventSynchronize(e1));
        CK(cudaGetLastError());
        float t;
        CK(cudaEventElapsedTime(&t, e0, e1));
        if (it >= 2) ms.push_back(t);
    }
    CK(cudaEventDestroy(e0));
    CK(cudaEventDestroy(e1));
    std::sort(ms.begin(), ms.end());
    return 0.5 * (ms[9] + ms[10]);
}

typedef struct rb_launch_ctx {
    rb_kernel_fn fn;
    int ctas, smem;
    const CUtensorMap *tm;
    float *dq;          /* dq_accum, see rb_check */
    rb_shape s;
    float *dst;         /* memcpy: (bytes) fp32 */
    const float *src;   /* memcpy: (bytes) fp32 */
    size_t bytes;
} rb_launch_ctx;

static void rb_launch_kernel(void *p)
{
    const rb_launch_ctx *c = (const rb_launch_ctx *)p;
    c->fn<<<c->ctas, THREADS, c->smem>>>(*c->tm, c->dq, c->s, 1.0f);
}

static void rb_launch_memcpy(void *p)
{
    const rb_launch_ctx *c = (const rb_launch_ctx *)p;
    CK(cudaMemcpyAsync(c->dst, c->src, c->bytes, cudaMemcpyDeviceToDevice));
}

/* median ms of the variant (rb_median_ms); its first launch, from zeros, is the checked one */
static double rb_time(int variant, const CUtensorMap *tm, float *dq, rb_shape s, int ctas, int *ok)
{
    static const rb_kernel_fn k_fns[N_VARIANTS] = {reduce_bw_kernel<V_TMA>, reduce_bw_kernel<V_V2>,
                                                   reduce_bw_kernel<V_V4Q>, reduce_bw_kernel<V_V4R>,
                                                   reduce_bw_kernel<V_V4>, reduce_bw_kernel<V_ST>};
    rb_launch_ctx c = {k_fns[variant], ctas, variant == V_TMA ? TILE_BYTES + 1024 : 0, tm, dq, s, NULL, NULL, 0};
    CK(cudaFuncSetAttribute(c.fn, cudaFuncAttributeMaxDynamicSharedMemorySize, c.smem));
    CK(cudaMemset(dq, 0, (size_t)s.b * s.sq * H * D * 4));
    rb_launch_kernel(&c);
    CK(cudaDeviceSynchronize());
    CK(cudaGetLastError());
    *ok = rb_check(dq, s, variant, 1.0f);
    return rb_median_ms(rb_launch_kernel, &c);
}

static double rb_memcpy_ms(float *dst, const float *src, size_t bytes)
{
    rb_launch_ctx c = {NULL, 0, 0, NULL, NULL, rb_shape(), dst, src, bytes};
    return rb_median_ms(rb_launch_memcpy, &c);
}

int main(int argc, char **argv)
{
    int no_gpu = 0, ctas = 0;
    for (int i = 1; i < argc; ++i) {
        if (!strcmp(argv[i], "--no-gpu")) no_gpu = 1;
        else if (!strcmp(argv[i], "--ctas") && i + 1 < argc) ctas = atoi(argv[++i]);
        else {
            fprintf(stderr, "usage: %s [--no-gpu] [--ctas N]\n", argv[0]);
            return 2;
        }
    }
    /* the bench's d = 256 rows worth deciding on: long sequences (most of the FLOPs), one short one */
    const int lens[4] = {16384, 16384, 4096, 1024}, causals[4] = {0, 1, 0, 0};
    const rb_shape s16k = {1, 16384, 0, 16384 / BC};
    const double kb_per_mflop = (double)TILE_BYTES * rb_tiles(s16k) / rb_flops(s16k) * 1e3; /* 6.25 */
    printf("reduce_bw: fp32 dQ adds of the d = 256 backward, dq_accum (b * sq = %d, h = %d, d = %d), "
           "64 x 256 tiles; ceiling TFLOP/s = GB/s / %.2f (KB of dQ adds per MFLOP)\n", TOKENS, H, D, kb_per_mflop);
    if (!no_gpu) {
        cudaDeviceProp prop;
        CK(cudaGetDeviceProperties(&prop, 0));
        if (prop.major != 9) {
            printf("device %s (sm_%d%d): sm_90a only\n", prop.name, prop.major, prop.minor);
            return 2;
        }
        if (ctas <= 0) ctas = prop.multiProcessorCount;
        printf("device: %s, %d SMs, grid %d CTAs x %d threads, L2 %d MB\n", prop.name, prop.multiProcessorCount,
               ctas, THREADS, prop.l2CacheSize >> 20);
    }
    printf("%6s %4s %6s %-20s %9s %9s %8s %s\n", "seqlen", "b", "causal", "variant", "ms", "GB/s", "ceiling",
           "check");
    const size_t buf_bytes = (size_t)TOKENS * H * D * 4;
    float *dq = NULL, *dq2 = NULL;
    if (!no_gpu) {
        CK(cudaMalloc(&dq, buf_bytes));
        CK(cudaMalloc(&dq2, buf_bytes));
    }
    int failed = 0;
    for (int c = 0; c < 4; ++c) {
        const rb_shape s = {TOKENS / lens[c], lens[c], causals[c], lens[c] / BC};
        const double bytes = (double)TILE_BYTES * rb_tiles(s);
        if (no_gpu) {
            printf("%6d %4d %6d %-20s %9s %9s %8s %.1f GB of adds, %.2f KB per MFLOP\n", s.sq, s.b, s.causal, "-",
                   "-", "-", "-", bytes * 1e-9, bytes / rb_flops(s) * 1e3);
            continue;
        }
        CUtensorMap tm;
        if (fa_sm90_encode_tiled() == NULL || !fa_bwd_encode_dqacc(&tm, dq, D, s.sq, H, s.b, BR)) {
            printf("cuTensorMapEncodeTiled failed\n");
            return 2;
        }
        for (int v = 0; v < N_VARIANTS; ++v) {
            int ok = 0;
            const double ms = rb_time(v, &tm, dq, s, ctas, &ok);
            failed += !ok;
            printf("%6d %4d %6d %-20s %9.3f %9.1f %8.1f %s\n", s.sq, s.b, s.causal, k_names[v], ms, bytes / ms * 1e-6,
                   bytes / ms * 1e-6 / kb_per_mflop, ok ? "ok" : "FAIL");
            fflush(stdout);
        }
    }
    if (!no_gpu) {
        const double ms = rb_memcpy_ms(dq2, dq, buf_bytes);
        printf("cudaMemcpy D2D of dq_accum (%.0f MB): %.3f ms, %.1f GB/s copied (read + write: %.1f GB/s)\n",
               buf_bytes * 1e-6, ms, buf_bytes / ms * 1e-6, 2.0 * buf_bytes / ms * 1e-6);
        CK(cudaFree(dq));
        CK(cudaFree(dq2));
    }
    printf("%d checks failed\n", failed);
    return failed != 0;
}
