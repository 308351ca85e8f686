/* fa_softmax.cuh - online softmax on register tiles (FlashAttention-2 style, base-2 domain).
 *
 * Tiles use the mma.sync C layout (fa_mma.cuh): a lane holds 2 rows per 16-row m-tile
 * (g and g + 8) and 2 columns per 8-column n-block; the 4 lanes of a quad (same g) together
 * hold a full row, so row reductions are 2 xor-shuffles inside the quad and no shared memory
 * or inter-warp communication is needed (each warp owns whole rows).
 *
 * Scores are kept in "x" units: p = exp2(x * mul - m * mul). The forward's fast path leaves the
 * raw q.k dot products in x and sets mul = softmax_scale * log2(e) (> 0), so scaling folds
 * into one FFMA per element; paths that transform scores first (softcap, ALiBi) store
 * x = score * log2(e) and use mul = 1. m is the running row max of x, l the running row sum of
 * p; l is kept per thread (partial over its columns) and summed over the quad only at the end.
 */
#ifndef FA_SOFTMAX_CUH
#define FA_SOFTMAX_CUH

#include <math.h>

/* 2^x with the special-function unit (rel. error ~2^-22; exp2(-inf) = +0). */
static __device__ __forceinline__ float fa_exp2(float x)
{
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
}

#define FA_LOG2E 1.4426950408889634f
#define FA_LN2 0.6931471805599453f

/* tanh(x) for softcap: one special-function-unit operation (tanh.approx.f32, sm_75+; PTX ISA:
 * maximum relative error about 2^-11, saturates to +-1), the instruction the backward's tanhf
 * already compiles to under --use_fast_math (MUFU.TANH), so forward and backward score the same.
 * Why not 1 - 2 / (1 + e^(2x)): two MUFU operations (ex2, rcp) per score beside the softmax's own
 * exp2; on the sm90 forward softcap went from 0.42x to 0.67x of the plain kernel's TFLOP/s (GPU
 * run 34, benchmarks/results/2026-12-06_h100_run33_suite-feat-bwdpipe.md). */
static __device__ __forceinline__ float fa_tanh(float x)
{
    float y;
    asm("tanh.approx.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
}

static __device__ __forceinline__ float quad_allreduce_max(float x)
{
    x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 1));
    x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 2));
    return x;
}

static __device__ __forceinline__ float quad_allreduce_sum(float x)
{
    x += __shfl_xor_sync(0xffffffffu, x, 1);
    x += __shfl_xor_sync(0xffffffffu, x, 2);
    return x;
}

/* One online-softmax step for a new score tile s[kMT][kNB][4] (x units, -inf = masked):
 *   m_new = max(m, rowmax(s));  alpha = exp2((m - m_new) * mul)
 *   o *= alpha;  l = l * alpha + rowsum(p);  s <- p = exp2(s * mul - m_new * mul)
 * Rows that have seen only -inf keep m = -inf; their p, alpha and l stay exactly 0 (the max is
 * replaced by 0 in the exponent so that -inf - -inf never produces NaN).
 * m, l: [kMT][2] (rows g and g + 8 of each m-tile); o: accumulator tile [kMT][kDB][4]. */
template <int kMT, int kNB, int kDB>
static __device__ __forceinline__ void warp_online_softmax_tile(float (*s)[kNB][4], float (*o)[kDB][4],
                                                               float (*m)[2], float (*l)[2], float mul)
{
#pragma unroll
    for (int mt = 0; mt < kMT; ++mt) {
#pragma unroll
        for (int half = 0; half < 2; ++half) {
            float mx = m[mt][half];
#pragma unroll
            for (int nb = 0; nb < kNB; ++nb)
                mx = fmaxf(mx, fmaxf(s[mt][nb][2 * half], s[mt][nb][2 * half + 1]));
            mx = quad_allreduce_max(mx);
            const float m_scaled = mx == -INFINITY ? 0.f : mx * mul;
            const float alpha = fa_exp2(m[mt][half] * mul - m_scaled);
            m[mt][half] = mx;
            float sum = 0.f;
#pragma unroll
            for (int nb = 0; nb < kNB; ++nb) {
#pragma unroll
                for (int e = 0; e < 2; ++e) {
                    const float p = fa_exp2(fmaf(s[mt][nb][2 * half + e], mul, -m_scaled));
                    s[mt][nb][2 * half + e] = p;
                    sum += p;
                }
            }
            l[mt][half] = fmaf(l[mt][half], alpha, sum);
#pragma unroll
            for (int db = 0; db < kDB; ++db) {
                o[mt][db][2 * half] *= alpha;
                o[mt][db][2 * half + 1] *= alpha;
            }
        }
    }
}

/* Recomputes P from a row's log-sum-exp in base 2 (lse2 = LSE * log2(e)):
 * s <- exp2(s * mul - lse2[mt][half]); -inf scores give 0. For the backward. */
template <int kMT, int kNB>
static __device__ __forceinline__ void thread_softmax_from_lse2(float (*s)[kNB][4], const float (*lse2)[2],
                                                               float mul)
{
#pragma unroll
    for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
        for (int half = 0; half < 2; ++half) {
            const float off = lse2[mt][half] == -INFINITY ? INFINITY : lse2[mt][half];
#pragma unroll
            for (int nb = 0; nb < kNB; ++nb)
#pragma unroll
                for (int e = 0; e < 2; ++e)
                    s[mt][nb][2 * half + e] = fa_exp2(fmaf(s[mt][nb][2 * half + e], mul, -off));
        }
}

#endif /* FA_SOFTMAX_CUH */
