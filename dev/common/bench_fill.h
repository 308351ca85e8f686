/* bench_fill.h - device-side fills of the benchmark inputs (fwd_bench.h, bwd_bench.h): a
 * 16k-token problem is 100M+ elements, whose host-side random draw and copy took longer than
 * the kernels being timed (about 3 s per configuration in the forward --bench), so the inputs
 * are generated where they are used. Counter-based (a hash of the index and a seed): the same
 * values on every run and every GPU. GPU builds only. */
#ifndef DEV_BENCH_FILL_H
#define DEV_BENCH_FILL_H

#include <cuda_runtime.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <math.h>
#include <stdint.h>

/* 24 uniform bits of element i under seed, as a float in [0, 1) */
static __device__ __forceinline__ float bench_hash_unit(int64_t i, uint32_t seed)
{
    uint32_t h = (uint32_t)i * 2654435761u ^ seed;
    h ^= h >> 15;
    h *= 2246822519u;
    h ^= h >> 13;
    return (float)(h & 0xFFFFFF) * (1.f / 16777216.f);
}

static __device__ __forceinline__ uint16_t bench_round_bits(float u, int bf16)
{
    if (bf16) {
        __nv_bfloat16 b = __float2bfloat16_rn(u);
        return *(uint16_t *)&b;
    }
    __half b = __float2half_rn(u);
    return *(uint16_t *)&b;
}

/* x = uniform values in [-0.5, 0.5), rounded to bf16 (bf16 != 0) or fp16 */
static __global__ void bench_fill_uniform_kernel(uint16_t *x /* (n,) */, int64_t n, uint32_t seed, int bf16)
{
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        x[i] = bench_round_bits(bench_hash_unit(i, seed) - 0.5f, bf16);
}

/* x = standard normal values (Box-Muller on two hashed uniforms), rounded to bf16 or fp16 */
static __global__ void bench_fill_normal_kernel(uint16_t *x /* (n,) */, int64_t n, uint32_t seed, int bf16)
{
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        const float u1 = 1.f - bench_hash_unit(i, seed);             /* (0, 1]: log is finite */
        const float u2 = bench_hash_unit(i, seed ^ 0x9E3779B9u);
        x[i] = bench_round_bits(sqrtf(-2.f * logf(u1)) * cospif(2.f * u2), bf16);
    }
}

static __global__ void bench_fill_const_kernel(float *x /* (n,) */, int64_t n, float v)
{
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        x[i] = v;
}

#endif /* DEV_BENCH_FILL_H */
