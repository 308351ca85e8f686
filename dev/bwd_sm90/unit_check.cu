/* unit_check.cu - unit check of the one wgmma form the sm90 backward adds to the proven forward
 * primitives (needs an sm_90 GPU): dQ = dS K through warpgroup_gemm_dq (fa_bwd_sm90_tile.cuh),
 * i.e. wgmma SS with BOTH operands MN-major (imm-trans-a = imm-trans-b = 1, fa_wgmma_bwd.cuh),
 * dS^T and K written to shared memory with the kernel's own fa_sw128_off swizzle. Variants:
 *   n-split  dims 64..127 of K (column block 1), all 128 keys (8 k-steps): the D = 128 kernels
 *   k-split  dims 0..63, keys 64..127 only (k-steps 4..7): the primitive's k-step offset, which
 *            the kernels no longer use (the D = 64 cp.async kernel splits queries, Br = 128: same
 *            descriptors with A moved to dS^T column block 1, covered end to end by
 *            bwd_sm90_check)
 *   n32      wgmma N = 32 (the pipelined kernel at D = 64, Br = 64: warpgroup wg takes dims
 *            32 wg..), all 128 keys, at dims 0..31, 32..63 (B's start 64 bytes into the swizzled
 *            128-byte rows) and 96..127 (column block 1 + 64 bytes)
 * and the d = 256 tile of the pipelined kernel (fa_bwd_sm90_pipe_dsplit.cuh, Bc = Br = 64):
 *   st half  S^T = K Q[32 h.., :]^T through warpgroup_gemm_kq_t with wgmma SS N = 32 (K-major,
 *            the shape d = 256 adds) over 256 dims, h = 0, 1 (B starts 32 rows = 4 KB into Q)
 *   dq d256  dQ = dS K over 64 keys at dims 128..191, 192..255 (K column blocks 2, 3 of a
 *            64-row tile: the two N = 64 halves of warpgroup 1)
 *   dv d256  dV = P^T dO over 64 queries at dims 0..127, 128..255 through warpgroup_gemm_ss_q:
 *            wgmma SS N = 128 with A K-major from the [64 keys][64 queries] buffer and B MN-major
 *            (imm-trans-a = 0, imm-trans-b = 1, fa_wgmma_ss_tb: the d = 256 tile's dV and dK;
 *            dS^T stands in for P^T, Q for dO)
 * Inputs are small integers, so fp32 results are exact and must match the host bit for bit.
 *
 *   ./unit_check        last line "N passed, N failed"
 */
#include <cuda_runtime.h>
#include <cuda_bf16.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <vector>

#include "fa_bwd_sm90_tile.cuh"
#include "../common/check_host.h"
#include "../common/check_cuda.h"


#define UC_KEYS 128
#define UC_Q 64
#define UC_D 128

#define UC_VARIANTS 5 /* the dQ variants of unit_dq_kernel */
#define UC_D256_VARIANTS 6 /* unit_d256_kernel: S^T half 0, 1; dQ dims 128.., 192..; dV dims 0.., 128.. */
#define UC_D256_SLOTS 8    /* 64 x 64 fp32 output slots: a dV variant (64 x 128) takes two */
#define UC_D256 256
/* first dim of K that variant v reads (N = 64 for variants 0, 1; N = 32 for 2..4) */
static __host__ __device__ constexpr int uc_dim0(int v)
{
    return v == 0 ? 64 : v == 3 ? 32 : v == 4 ? 96 : 0;
}

/* One thread's m64nN fp32 wgmma accumulator (NJ = N / 8 column groups of 4 floats) into
 * dst: (64 rows, ld columns) row-major; warp w holds rows 16 w + g (+ 8), columns 8 jn + 2 t (+ 1). */
template <int NJ>
static __device__ void thread_store_acc(const float (&acc)[4 * NJ], float *dst, int ld = 64)
{
    const int wq = threadIdx.x / 32, g = (threadIdx.x % 32) / 4, t = threadIdx.x % 4;
    for (int jn = 0; jn < NJ; ++jn)
        for (int e = 0; e < 4; ++e)
            dst[(16 * wq + g + 8 * (e >> 1)) * ld + 8 * jn + 2 * t + (e & 1)] = acc[4 * jn + e];
}

/* One warpgroup. dst: (UC_VARIANTS, 64 queries, 64 dims) fp32, an N = 32 variant fills dims
 * 0..31 of its slice; dsT: (128 keys, 64 queries) bf16; k: (128 keys, 128 dims) bf16, both
 * row-major. */
__global__ void __launch_bounds__(128, 1)
unit_dq_kernel(const uint16_t *dsT, const uint16_t *k, float *dst)
{
#if FA_SM90_DEVICE
    extern __shared__ unsigned char smem[];
    const uint32_t base = (fa_smem_u32(smem) + 1023u) & ~1023u;
    unsigned char *gbase = smem + (base - fa_smem_u32(smem));
    const uint32_t sdS = 0, sK = UC_KEYS * UC_Q * 2; /* byte offsets from base */
    for (int i = threadIdx.x; i < UC_KEYS * UC_Q; i += 128) {
        const int r = i / UC_Q, c = i % UC_Q;
        *(uint16_t *)(gbase + sdS + fa_sw128_off<UC_KEYS>(r, c)) = dsT[i];
    }
    for (int i = threadIdx.x; i < UC_KEYS * UC_D; i += 128) {
        const int r = i / UC_D, c = i % UC_D;
        *(uint16_t *)(gbase + sK + fa_sw128_off<UC_KEYS>(r, c)) = k[i];
    }
    /* generic-proxy stores -> wgmma (async proxy) reads */
    fa_fence_proxy_async_smem();
    __syncthreads();
    for (int variant = 2; variant < UC_VARIANTS; ++variant) {
        /* dims dim0.. of K: column block dim0 / 64, + 2 (dim0 % 64) bytes into its rows */
        const int dim0 = uc_dim0(variant);
        float acc[16];
        fa_wgmma_fence();
        warpgroup_gemm_dq<true, 8, 32>(acc, base + sdS,
                                       base + sK + (uint32_t)(dim0 / 64) * UC_KEYS * 128u + (uint32_t)(dim0 % 64) * 2u, 0);
        fa_wgmma_commit();
        fa_wgmma_wait<0>();
        fa_reg_fence(acc);
        thread_store_acc<4>(acc, dst + variant * UC_Q * 64);
    }
    for (int variant = 0; variant < 2; ++variant) {
        float acc[32];
        fa_wgmma_fence();
        if (variant == 0)
            warpgroup_gemm_dq<true, 8>(acc, base + sdS, base + sK + 1u * UC_KEYS * 128u, 0);
        else
            warpgroup_gemm_dq<true, 4>(acc, base + sdS, base + sK, 4);
        fa_wgmma_commit();
        fa_wgmma_wait<0>();
        fa_reg_fence(acc);
        thread_store_acc<8>(acc, dst + variant * UC_Q * 64);
    }
#else
    __trap();
#endif
}

/* One warpgroup, the d = 256 products. dst: (UC_D256_SLOTS, 64, 64) fp32: variant h = 0, 1
 * S^T half h (64 keys x 32 queries in columns 0..31), 2 + h dQ dims 128 + 64 h.. (64 queries x
 * 64 dims), 4 + h dV dims 128 h.. (64 keys x 128 dims in slots 4 + 2 h, 5 + 2 h read as one
 * (64, 128) block). dsT: (>= 64 keys, 64 queries), its first 64 keys; k, q: (64, 256), all bf16
 * row-major. */
__global__ void __launch_bounds__(128, 1)
unit_d256_kernel(const uint16_t *dsT, const uint16_t *k, const uint16_t *q, float *dst)
{
#if FA_SM90_DEVICE
    extern __shared__ unsigned char smem[];
    const uint32_t base = (fa_smem_u32(smem) + 1023u) & ~1023u;
    unsigned char *gbase = smem + (base - fa_smem_u32(smem));
    const uint32_t sK = 0, sQ = 64 * UC_D256 * 2, sdS = 2 * 64 * UC_D256 * 2; /* [4][64][64], [4][64][64], [64][64] */
    for (int i = threadIdx.x; i < 64 * UC_D256; i += 128) {
        const int r = i / UC_D256, c = i % UC_D256;
        *(uint16_t *)(gbase + sK + fa_sw128_off<64>(r, c)) = k[i];
        *(uint16_t *)(gbase + sQ + fa_sw128_off<64>(r, c)) = q[i];
    }
    for (int i = threadIdx.x; i < 64 * UC_Q; i += 128)
        *(uint16_t *)(gbase + sdS + fa_sw128_off<64>(i / UC_Q, i % UC_Q)) = dsT[i];
    /* generic-proxy stores -> wgmma (async proxy) reads */
    fa_fence_proxy_async_smem();
    __syncthreads();
    for (int h = 0; h < 2; ++h) {
        float acc[16];
        fa_wgmma_fence();
        warpgroup_gemm_kq_t<true, UC_D256, 64, 32, 64>(acc, fa_wgmma_desc_sw128(base + sK, 16u, 1024u),
                                                      base + sQ + (uint32_t)(32 * h) * 128u);
        fa_wgmma_commit();
        fa_wgmma_wait<0>();
        fa_reg_fence(acc);
        thread_store_acc<4>(acc, dst + h * 64 * 64);
    }
    for (int h = 0; h < 2; ++h) {
        float acc[32];
        fa_wgmma_fence();
        warpgroup_gemm_dq<true, 4>(acc, base + sdS, base + sK + (uint32_t)(2 + h) * (64u * 128u), 0);
        fa_wgmma_commit();
        fa_wgmma_wait<0>();
        fa_reg_fence(acc);
        thread_store_acc<8>(acc, dst + (2 + h) * 64 * 64);
    }
    for (int h = 0; h < 2; ++h) {
        float acc[64];
        for (int i = 0; i < 64; ++i) acc[i] = 0.f; /* warpgroup_gemm_ss_q accumulates from its first k-step */
        fa_wgmma_fence();
        warpgroup_gemm_ss_q<true, 128, 64, 64>(acc, base + sdS, base + sQ + (uint32_t)(2 * h) * (64u * 128u));
        fa_wgmma_commit();
        fa_wgmma_wait<0>();
        fa_reg_fence(acc);
        thread_store_acc<16>(acc, dst + (4 + 2 * h) * 64 * 64, 128);
    }
#else
    __trap();
#endif
}

static uint16_t bf_bits(float x)
{
    __nv_bfloat16 b = __float2bfloat16_rn(x);
    return *(uint16_t *)&b;
}

int main(void)
{
    check_tally tally = {0, 0};
    std::vector<float> ds((size_t)UC_KEYS * UC_Q), kf((size_t)UC_KEYS * UC_D);
    std::vector<uint16_t> dsb(ds.size()), kb(kf.size());
    uint32_t h = 12345u;
    for (size_t i = 0; i < ds.size(); ++i) {
        h = h * 1664525u + 1013904223u;
        ds[i] = (float)((int)(h >> 28) - 8); /* -8..7 */
        dsb[i] = bf_bits(ds[i]);
    }
    for (size_t i = 0; i < kf.size(); ++i) {
        h = h * 1664525u + 1013904223u;
        kf[i] = (float)((int)(h >> 29) - 4); /* -4..3 */
        kb[i] = bf_bits(kf[i]);
    }
    uint16_t *d_ds, *d_k;
    float *d_out;
    CK(cudaMalloc(&d_ds, dsb.size() * 2));
    CK(cudaMalloc(&d_k, kb.size() * 2));
    CK(cudaMalloc(&d_out, UC_D256_SLOTS * UC_Q * 64 * 4)); /* >= UC_VARIANTS slots */
    CK(cudaMemcpy(d_ds, dsb.data(), dsb.size() * 2, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(d_k, kb.data(), kb.size() * 2, cudaMemcpyHostToDevice));
    CK(cudaMemset(d_out, 0xFF, UC_VARIANTS * UC_Q * 64 * 4));
    const int smem = UC_KEYS * (UC_Q + UC_D) * 2 + 1024;
    CK(cudaFuncSetAttribute((const void *)unit_dq_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
    unit_dq_kernel<<<1, 128, smem>>>(d_ds, d_k, d_out);
    CK(cudaGetLastError());
    CK(cudaDeviceSynchronize());
    std::vector<float> out(UC_D256_SLOTS * UC_Q * 64);
    CK(cudaMemcpy(out.data(), d_out, out.size() * 4, cudaMemcpyDeviceToHost));
    const char *names[UC_VARIANTS] = {"dq n-split (dims 64..127, keys 0..127)", "dq k-split (dims 0..63, keys 64..127)",
                                      "dq n32 (dims 0..31, keys 0..127)", "dq n32 (dims 32..63, keys 0..127)",
                                      "dq n32 (dims 96..127, keys 0..127)"};
    for (int variant = 0; variant < UC_VARIANTS; ++variant) {
        const int key0 = variant == 1 ? 64 : 0, key1 = 128, dim0 = uc_dim0(variant);
        const int n_dims = variant < 2 ? 64 : 32;
        int bad = 0;
        for (int m = 0; m < UC_Q; ++m)
            for (int n = 0; n < n_dims; ++n) {
                float ref = 0.f;
                for (int j = key0; j < key1; ++j) ref += ds[(size_t)j * UC_Q + m] * kf[(size_t)j * UC_D + dim0 + n];
                const float got = out[(variant * UC_Q + m) * 64 + n];
                if (got != ref) {
                    if (bad < 4) printf("   [%d][%d] got %g want %g\n", m, n, got, ref);
                    ++bad;
                }
            }
        printf("%-4s %s (%d mismatches)\n", bad ? "FAIL" : "ok", names[variant], bad);
        check_count(&tally, !bad);
    }

    /* the d = 256 products: K, Q (64 x 256) small integers, dS^T the first 64 keys of ds */
    std::vector<float> k2((size_t)64 * UC_D256), q2((size_t)64 * UC_D256);
    std::vector<uint16_t> k2b(k2.size()), q2b(q2.size());
    for (size_t i = 0; i < k2.size(); ++i) {
        h = h * 1664525u + 1013904223u;
        k2[i] = (float)((int)(h >> 29) - 4); /* -4..3: |S| <= 16 x 256, exact in fp32 */
        k2b[i] = bf_bits(k2[i]);
        h = h * 1664525u + 1013904223u;
        q2[i] = (float)((int)(h >> 29) - 4);
        q2b[i] = bf_bits(q2[i]);
    }
    uint16_t *d_k2, *d_q2;
    CK(cudaMalloc(&d_k2, k2b.size() * 2));
    CK(cudaMalloc(&d_q2, q2b.size() * 2));
    CK(cudaMemcpy(d_k2, k2b.data(), k2b.size() * 2, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(d_q2, q2b.data(), q2b.size() * 2, cudaMemcpyHostToDevice));
    CK(cudaMemset(d_out, 0xFF, UC_D256_SLOTS * 64 * 64 * 4));
    const int smem2 = (2 * 64 * UC_D256 + 64 * UC_Q) * 2 + 1024;
    CK(cudaFuncSetAttribute((const void *)unit_d256_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem2));
    unit_d256_kernel<<<1, 128, smem2>>>(d_ds, d_k2, d_q2, d_out);
    CK(cudaGetLastError());
    CK(cudaDeviceSynchronize());
    CK(cudaMemcpy(out.data(), d_out, UC_D256_SLOTS * 64 * 64 * 4, cudaMemcpyDeviceToHost));
    const char *names2[UC_D256_VARIANTS] = {"d256 st half 0 (queries 0..31, wgmma N = 32)",
                                            "d256 st half 1 (queries 32..63, wgmma N = 32)",
                                            "d256 dq (dims 128..191, keys 0..63)",
                                            "d256 dq (dims 192..255, keys 0..63)",
                                            "d256 dv SS tb (dims 0..127, queries 0..63, wgmma N = 128)",
                                            "d256 dv SS tb (dims 128..255, queries 0..63, wgmma N = 128)"};
    for (int variant = 0; variant < UC_D256_VARIANTS; ++variant) {
        const bool st = variant < 2, dv = variant >= 4;
        const int hh = variant % 2;
        int bad = 0;
        for (int m = 0; m < 64; ++m)
            for (int n = 0; n < (st ? 32 : dv ? 128 : 64); ++n) {
                float ref = 0.f;
                if (st) /* row m = key, column n = query 32 hh + n */
                    for (int c = 0; c < UC_D256; ++c)
                        ref += k2[(size_t)m * UC_D256 + c] * q2[(size_t)(32 * hh + n) * UC_D256 + c];
                else if (dv) /* row m = key, column n = dim 128 hh + n: sum over queries of P^T Q */
                    for (int i = 0; i < UC_Q; ++i)
                        ref += ds[(size_t)m * UC_Q + i] * q2[(size_t)i * UC_D256 + 128 * hh + n];
                else /* row m = query, column n = dim 128 + 64 hh + n */
                    for (int j = 0; j < 64; ++j)
                        ref += ds[(size_t)j * UC_Q + m] * k2[(size_t)j * UC_D256 + 128 + 64 * hh + n];
                const float got = dv ? out[(size_t)(4 + 2 * hh) * 64 * 64 + m * 128 + n] : out[(variant * 64 + m) * 64 + n];
                if (got != ref) {
                    if (bad < 4) printf("   [%d][%d] got %g want %g\n", m, n, got, ref);
                    ++bad;
                }
            }
        printf("%-4s %s (%d mismatches)\n", bad ? "FAIL" : "ok", names2[variant], bad);
        check_count(&tally, !bad);
    }
    return check_summary(&tally);
}
