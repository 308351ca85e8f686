/* unit_check.cu - unit checks of the hardware-facing pieces of the sm90 forward, one at a time, with
 * exact integer arithmetic (needs an sm_90 GPU). When sm90_check fails everywhere, this says which
 * assumption is wrong:
 *   tma    a {64, R} box loaded with CU_TENSOR_MAP_SWIZZLE_128B lands as fa_wgmma.cuh describes
 *          (chunk c of row r at chunk c ^ (r % 8)), out-of-bounds (columns >= d, rows >= extent,
 *          negative row coordinates) as zeros
 *   qk     S = Q K^T by the kernel's own warpgroup_gemm_qk (wgmma SS, K-major descriptors,
 *          k-steps across 64-column blocks), accumulator read back in the documented D layout
 *   pv     O = P V by the kernel's own thread_pack_p + warpgroup_gemm_pv (wgmma RS, MN-major V)
 * One block of 1 warpgroup (128 threads) computes a 64-row tile; Q, K, V hold small integers, so
 * every product is exact in fp32 and the GPU must match the host bit for bit.
 *
 *   ./unit_check        last line "N passed, N failed"
 */
#include <cuda.h>
#include <cuda_runtime.h>
#include <cuda_bf16.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <vector>

#include "fa_fwd_sm90_kernel.cuh"
#include "../common/check_host.h"
#include "../common/check_cuda.h"


typedef CUresult (*encode_fn)(CUtensorMap *, CUtensorMapDataType, cuuint32_t, void *, const cuuint64_t *,
                              const cuuint64_t *, const cuuint32_t *, const cuuint32_t *, CUtensorMapInterleave,
                              CUtensorMapSwizzle, CUtensorMapL2promotion, CUtensorMapFloatOOBfill);

/* 2-d map over a row-major (rows, d) bf16 matrix with row pitch `pitch` elements: box {64, box_rows}. */
static CUtensorMap make_map(const void *base, int d, int rows, int pitch, int box_rows)
{
    static encode_fn fn = NULL;
    if (fn == NULL) {
        void *p = NULL;
        cudaDriverEntryPointQueryResult q;
        if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &p, 12000, cudaEnableDefault, &q) !=
                cudaSuccess ||
            q != cudaDriverEntryPointSuccess) {
            printf("FAIL: cuTensorMapEncodeTiled not found\n0 passed, 1 failed\n");
            exit(1);
        }
        fn = (encode_fn)p;
    }
    CUtensorMap m;
    cuuint64_t dims[2] = {(cuuint64_t)d, (cuuint64_t)rows};
    cuuint64_t strides[1] = {(cuuint64_t)pitch * 2};
    cuuint32_t box[2] = {64, (cuuint32_t)box_rows};
    cuuint32_t es[2] = {1, 1};
    CUresult r = fn(&m, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 2, (void *)base, dims, strides, box, es,
                    CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_128B,
                    CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
    if (r != CUDA_SUCCESS) {
        printf("FAIL: cuTensorMapEncodeTiled returned %d (d %d rows %d pitch %d box rows %d)\n", (int)r, d, rows,
               pitch, box_rows);
        printf("0 passed, 1 failed\n");
        exit(1);
    }
    return m;
}

#if FA_SM90_DEVICE
static __device__ __forceinline__ void fa_tma_load_2d(uint32_t dst, const void *tmap, uint32_t bar, int c0, int c1)
{
    asm volatile(
        "cp.async.bulk.tensor.2d.shared::cluster.global.tile.mbarrier::complete_tx::bytes"
        " [%0], [%1, {%2, %3}], [%4];\n" ::"r"(dst),
        "l"((uint64_t)tmap), "r"(c0), "r"(c1), "r"(bar)
        : "memory");
}
#endif

/* Loads Q rows [q_row0, +64), K and V rows [k_row0, +Bc) (D columns, 64 per box), dumps the raw
 * shared bytes of Q, then S = Q K^T and O = bf16(S) V in the accumulator layout. */
template <int D, int Bc>
__global__ void __launch_bounds__(128, 1)
unit_kernel(const __grid_constant__ CUtensorMap tq, const __grid_constant__ CUtensorMap tk,
            const __grid_constant__ CUtensorMap tv, int q_row0, int k_row0,
            uint8_t *q_smem_out /* [64 * D * 2] raw */, float *s_out /* [64][Bc] */, float *o_out /* [64][D] */)
{
#if FA_SM90_DEVICE
    extern __shared__ unsigned char smem_raw[];
    __shared__ __align__(8) uint64_t bar;
    const uint32_t sQ = (fa_smem_u32(smem_raw) + 1023u) & ~1023u;
    const uint32_t sK = sQ + 64 * D * 2;
    const uint32_t sV = sK + Bc * D * 2;
    const uint32_t b = fa_smem_u32(&bar);
    const int tid = threadIdx.x;
    if (tid == 0) {
        fa_mbar_init(b, 1);
        fa_mbar_init_fence();
    }
    __syncthreads();
    if (tid == 0) {
        fa_mbar_arrive_expect_tx(b, (64 + 2 * Bc) * D * 2);
        for (int cb = 0; cb < D / 64; ++cb) {
            fa_tma_load_2d(sQ + cb * 64 * 128, &tq, b, cb * 64, q_row0);
            fa_tma_load_2d(sK + cb * Bc * 128, &tk, b, cb * 64, k_row0);
            fa_tma_load_2d(sV + cb * Bc * 128, &tv, b, cb * 64, k_row0);
        }
    }
    fa_mbar_wait(b, 0);
    for (int i = tid; i < 64 * D * 2 / 16; i += 128) {
        uint4 v;
        asm volatile("ld.shared.v4.b32 {%0, %1, %2, %3}, [%4];\n"
                     : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
                     : "r"(sQ + 16u * i));
        ((uint4 *)q_smem_out)[i] = v;
    }
    float s[Bc / 2], o[D / 2];
    uint32_t pa[Bc / 16][4];
    for (int i = 0; i < Bc / 2; ++i) s[i] = 0.f;
    for (int i = 0; i < D / 2; ++i) o[i] = 0.f;
    const uint64_t dq = fa_wgmma_desc_sw128(sQ, 16u, 1024u);
    const uint64_t dk = fa_wgmma_desc_sw128(sK, 16u, 1024u);
    const uint64_t dv = fa_wgmma_desc_sw128(sV, (uint32_t)Bc * 128u, 1024u);
    fa_wgmma_fence();
    warpgroup_gemm_qk<true, D, 64, Bc>(s, dq, dk);
    fa_wgmma_commit();
    fa_wgmma_wait<0>();
    fa_reg_fence(s);
    thread_pack_p<true, Bc>(pa, s);
    fa_wgmma_fence();
    warpgroup_gemm_pv<true, D, Bc>(o, pa, dv);
    fa_wgmma_commit();
    fa_wgmma_wait<0>();
    fa_reg_fence(o);
    /* documented accumulator layout: d[4 j + e] = D[16 w + g + 8 (e >> 1)][8 j + 2 t + (e & 1)] */
    const int w = tid >> 5, lane = tid & 31, g = lane >> 2, t = lane & 3;
    for (int j = 0; j < Bc / 8; ++j)
        for (int e = 0; e < 4; ++e) s_out[(16 * w + g + 8 * (e >> 1)) * Bc + 8 * j + 2 * t + (e & 1)] = s[4 * j + e];
    for (int j = 0; j < D / 8; ++j)
        for (int e = 0; e < 4; ++e) o_out[(16 * w + g + 8 * (e >> 1)) * D + 8 * j + 2 * t + (e & 1)] = o[4 * j + e];
#else
    __trap();
#endif
}

static check_tally g_tally = {0, 0};

static float bf(float x)
{
    return __bfloat162float(__float2bfloat16_rn(x));
}

/* d_real <= D columns and rows_q / rows_k rows exist in the tensors; the tile starts at
 * q_row0 / k_row0 (may be negative or run past the end: zeros). */
template <int D, int Bc>
static void run_unit(int d_real, int rows_q, int rows_k, int q_row0, int k_row0)
{
    const int pitch = d_real + 8;  /* a row pitch that is not the width, multiple of 8 elements */
    std::vector<uint16_t> hq((size_t)rows_q * pitch), hk((size_t)rows_k * pitch), hv((size_t)rows_k * pitch);
    uint64_t r = 12345 + D * 7 + Bc;
    auto small = [&r]() {
        r = r * 6364136223846793005ull + 1442695040888963407ull;
        return (float)((int)((r >> 33) % 7) - 3);  /* -3..3 */
    };
    for (auto &x : hq) x = __bfloat16_as_ushort(__float2bfloat16_rn(small()));
    for (auto &x : hk) x = __bfloat16_as_ushort(__float2bfloat16_rn(small()));
    for (auto &x : hv) x = __bfloat16_as_ushort(__float2bfloat16_rn(small()));
    uint16_t *dq, *dk, *dv;
    uint8_t *dqs;
    float *ds, *dout;
    CK(cudaMalloc(&dq, hq.size() * 2));
    CK(cudaMalloc(&dk, hk.size() * 2));
    CK(cudaMalloc(&dv, hv.size() * 2));
    CK(cudaMemcpy(dq, hq.data(), hq.size() * 2, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(dk, hk.data(), hk.size() * 2, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(dv, hv.data(), hv.size() * 2, cudaMemcpyHostToDevice));
    CK(cudaMalloc(&dqs, 64 * D * 2));
    CK(cudaMalloc(&ds, 64 * Bc * 4));
    CK(cudaMalloc(&dout, 64 * D * 4));
    CK(cudaMemset(ds, 0xff, 64 * Bc * 4));
    CK(cudaMemset(dout, 0xff, 64 * D * 4));
    const CUtensorMap tq = make_map(dq, d_real, rows_q, pitch, 64);
    const CUtensorMap tk = make_map(dk, d_real, rows_k, pitch, Bc);
    const CUtensorMap tv = make_map(dv, d_real, rows_k, pitch, Bc);
    const size_t smem = (size_t)(64 + 2 * Bc) * D * 2 + 1024;
    CK(cudaFuncSetAttribute((const void *)unit_kernel<D, Bc>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
    unit_kernel<D, Bc><<<1, 128, smem>>>(tq, tk, tv, q_row0, k_row0, dqs, ds, dout);
    const cudaError_t ce = cudaDeviceSynchronize();
    if (ce != cudaSuccess) {
        printf("FAIL unit D%d Bc%d: CUDA error %s (sticky: stopping)\n", D, Bc, cudaGetErrorString(ce));
        check_count(&g_tally, 0);
        exit(check_summary(&g_tally));
    }
    std::vector<uint16_t> qs(64 * D);
    std::vector<float> gs(64 * Bc), go(64 * D);
    CK(cudaMemcpy(qs.data(), dqs, 64 * D * 2, cudaMemcpyDeviceToHost));
    CK(cudaMemcpy(gs.data(), ds, 64 * Bc * 4, cudaMemcpyDeviceToHost));
    CK(cudaMemcpy(go.data(), dout, 64 * D * 4, cudaMemcpyDeviceToHost));

    auto at = [&](const std::vector<uint16_t> &m, int rows, int row, int col) -> float {
        if (row < 0 || row >= rows || col >= d_real) return 0.f;
        return __bfloat162float(__ushort_as_bfloat16(m[(size_t)row * pitch + col]));
    };
    /* tma: element (r, c) of the Q tile at column block c / 64, row r, chunk (c % 64 / 8) ^ (r % 8) */
    int bad_tma = 0;
    for (int rr = 0; rr < 64; ++rr)
        for (int c = 0; c < D; ++c) {
            const size_t idx = (size_t)(c / 64) * 64 * 64 + (size_t)rr * 64 + (((c % 64) / 8) ^ (rr % 8)) * 8 + c % 8;
            const float got = __bfloat162float(__ushort_as_bfloat16(qs[idx]));
            if (got != at(hq, rows_q, q_row0 + rr, c)) ++bad_tma;
        }
    /* qk: exact */
    int bad_qk = 0;
    std::vector<float> hs(64 * Bc);
    for (int i = 0; i < 64; ++i)
        for (int j = 0; j < Bc; ++j) {
            float acc = 0.f;
            for (int c = 0; c < D; ++c) acc += at(hq, rows_q, q_row0 + i, c) * at(hk, rows_k, k_row0 + j, c);
            hs[i * Bc + j] = acc;
            if (gs[i * Bc + j] != acc) ++bad_qk;
        }
    /* pv: O = bf16(S) V with the GPU's S (so a qk failure does not also fail pv); exact in fp32
     * as long as the partial sums stay below 2^24 (|S| <= 9 * 256, |V| <= 3, 128 keys) */
    int bad_pv = 0;
    for (int i = 0; i < 64; ++i)
        for (int c = 0; c < D; ++c) {
            double acc = 0.0;
            for (int j = 0; j < Bc; ++j) acc += (double)bf(gs[i * Bc + j]) * at(hv, rows_k, k_row0 + j, c);
            if (go[i * D + c] != (float)acc) ++bad_pv;
        }
    const struct { const char *what; int bad; } res[3] = {{"tma", bad_tma}, {"qk", bad_qk}, {"pv", bad_pv}};
    for (auto &x : res) {
        printf("%s %-4s D%-3d Bc%-3d d_real %-3d q rows %d from %d, k rows %d from %d: %d bad elements\n",
               x.bad ? "FAIL" : "ok  ", x.what, D, Bc, d_real, rows_q, q_row0, rows_k, k_row0, x.bad);
        check_count(&g_tally, !x.bad);
    }
    cudaFree(dq); cudaFree(dk); cudaFree(dv); cudaFree(dqs); cudaFree(ds); cudaFree(dout);
}

int main(void)
{
    if (check_print_device() != 90) {
        printf("FAIL: needs a compute capability 9.0 GPU\n0 passed, 1 failed\n");
        return 1;
    }
    /* full tiles */
    run_unit<64, 128>(64, 64, 128, 0, 0);
    run_unit<128, 128>(128, 64, 128, 0, 0);
    run_unit<256, 64>(256, 64, 64, 0, 0);
    run_unit<64, 64>(64, 64, 64, 0, 0);
    run_unit<128, 176>(128, 64, 176, 0, 0);  /* the Bc = 176 tile (not a power of two) */
    /* zero fill: d < D, rows past the extent, negative starting row (the end-aligned varlen tile) */
    run_unit<64, 128>(40, 50, 100, 0, -20);
    run_unit<128, 128>(80, 64, 300, 0, 250);
    run_unit<256, 64>(200, 70, 64, 30, -33);
    run_unit<128, 176>(96, 64, 300, 0, 200);
    return check_summary(&g_tally);
}
