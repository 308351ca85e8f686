/* fa_mma.cuh - warp-level tensor-core primitives for sm80+ (mma.sync, ldmatrix, cp.async).
 *
 * Shared by the forward (fa_fwd*) and backward (fa_bwd*) kernels. Keep this file small and its
 * names stable: other kernels depend on them.
 *
 * Fragment layouts of mma.sync.m16n8k16 (lane = 4 * g + t, g = lane / 4 in 0..7, t = lane % 4):
 *   A 16x16 (row major), 4 x u32 = 8 halves:
 *     a[0] = A[g    ][2t, 2t+1]   a[1] = A[g + 8][2t, 2t+1]
 *     a[2] = A[g    ][2t+8, +9]   a[3] = A[g + 8][2t+8, +9]
 *   B 16x8 ("col": B[k][n] stored n-major, k contiguous), 2 x u32:
 *     b[0] = B[2t, 2t+1][g]       b[1] = B[2t+8, 2t+9][g]
 *   C/D 16x8 fp32, 4 floats:
 *     c[0], c[1] = C[g][2t, 2t+1]  c[2], c[3] = C[g + 8][2t, 2t+1]
 * So an accumulator tile of two adjacent n-blocks (16 columns) packs straight into an A fragment
 * (see fa_pack_c_to_a): that is how P = softmax(S) feeds the P V product without shared memory.
 *
 * ldmatrix.x4: lanes 8i..8i+7 give the row addresses of 8x8 matrix i; register r[i] of every lane
 * receives row (lane / 4), columns 2 (lane % 4), +1 of matrix i (with .trans: the transposed
 * matrix, i.e. stored rows 2 (lane % 4), +1 of column lane / 4).
 *
 * kBf16 selects the input type of the mma: false = fp16, true = bf16. Accumulation is fp32.
 */
#ifndef FA_MMA_CUH
#define FA_MMA_CUH

#include <cuda_fp16.h>
#include <cuda_bf16.h>
#include <stdint.h>

/* Shared-memory byte address (32-bit) of a generic pointer into shared memory. */
static __device__ __forceinline__ uint32_t fa_smem_u32(const void *smem_ptr)
{
    return (uint32_t)__cvta_generic_to_shared(smem_ptr);
}

/* D = A * B + D for one 16x8x16 tile, fp32 accumulators. */
template <bool kBf16>
static __device__ __forceinline__ void warp_mma_m16n8k16(float d[4], const uint32_t a[4],
                                                        uint32_t b0, uint32_t b1)
{
    if (kBf16) {
        asm volatile(
            "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
            "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
            : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
            : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
    } else {
        asm volatile(
            "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 "
            "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
            : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
            : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
    }
}

/* D0 += A * B[:, 0:8], D1 += A * B[:, 8:16]: one A fragment against the two n8 halves of an
 * ldmatrix.x4 B fragment b (b[0], b[1]: first half; b[2], b[3]: second). */
template <bool kBf16>
static __device__ __forceinline__ void warp_mma_m16n16k16(float d0[4], float d1[4], const uint32_t a[4],
                                                         const uint32_t b[4])
{
    warp_mma_m16n8k16<kBf16>(d0, a, b[0], b[1]);
    warp_mma_m16n8k16<kBf16>(d1, a, b[2], b[3]);
}

/* Zeroes a register tile of kMT x kNT C fragments (4 fp32 each). */
template <int kMT, int kNT>
static __device__ __forceinline__ void thread_zero_tile(float (*acc)[kNT][4])
{
#pragma unroll
    for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
        for (int nt = 0; nt < kNT; ++nt)
#pragma unroll
            for (int e = 0; e < 4; ++e) acc[mt][nt][e] = 0.f;
}

/* Four 8x8 b16 matrices from shared memory; smem_addr is this lane's row address. */
static __device__ __forceinline__ void warp_ldmatrix_x4(uint32_t r[4], uint32_t smem_addr)
{
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smem_addr));
}

/* Same, each 8x8 matrix transposed (used for B operands stored k-major, e.g. V in P V). */
static __device__ __forceinline__ void warp_ldmatrix_x4_trans(uint32_t r[4], uint32_t smem_addr)
{
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smem_addr));
}

/* Two 8x8 matrices (lanes 0..15 give the addresses). */
static __device__ __forceinline__ void warp_ldmatrix_x2(uint32_t r[2], uint32_t smem_addr)
{
    asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0, %1}, [%2];\n"
                 : "=r"(r[0]), "=r"(r[1])
                 : "r"(smem_addr));
}

static __device__ __forceinline__ void warp_ldmatrix_x2_trans(uint32_t r[2], uint32_t smem_addr)
{
    asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0, %1}, [%2];\n"
                 : "=r"(r[0]), "=r"(r[1])
                 : "r"(smem_addr));
}

/* 16-byte global -> shared copy that bypasses registers (and L1: .cg). When pred is false the
 * 16 destination bytes are zero-filled and nothing is read (gmem_ptr must still be a valid
 * address expression; pass any in-bounds pointer). */
static __device__ __forceinline__ void fa_cp_async_16(uint32_t smem_addr, const void *gmem_ptr,
                                                      bool pred)
{
    int src_bytes = pred ? 16 : 0;
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n"
                 :: "r"(smem_addr), "l"(gmem_ptr), "r"(src_bytes));
}

/* 4-byte global -> shared copy (.ca: the 16-byte-only .cg does not take 4), for per-row fp32
 * vectors (LSE, D). pred false: the 4 destination bytes are zero-filled and nothing is read
 * (gmem_ptr must still be valid). */
static __device__ __forceinline__ void fa_cp_async_4(uint32_t smem_addr, const void *gmem_ptr, bool pred)
{
    int src_bytes = pred ? 4 : 0;
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(smem_addr), "l"(gmem_ptr),
                 "r"(src_bytes));
}

/* Closes the group of cp.async issued by this thread since the last commit. */
static __device__ __forceinline__ void fa_cp_async_commit(void)
{
    asm volatile("cp.async.commit_group;\n" ::);
}

/* Waits until at most kPending of this thread's committed groups are still in flight. Only this
 * thread's copies: a __syncthreads() must follow before other threads read the data. */
template <int kPending>
static __device__ __forceinline__ void fa_cp_async_wait(void)
{
    asm volatile("cp.async.wait_group %0;\n" :: "n"(kPending));
}

/* One fp16 / bf16 element (its raw bits) -> fp32, exact. */
template <bool kBf16>
static __device__ __forceinline__ float fa_b16_to_f32(uint16_t raw)
{
    if (kBf16) return __uint_as_float((uint32_t)raw << 16);
    return __half2float(__ushort_as_half(raw));
}

/* fp32 -> the raw bits of one fp16 / bf16 element (round to nearest even). */
template <bool kBf16>
static __device__ __forceinline__ uint16_t fa_f32_to_b16(float x)
{
    if (kBf16) return __bfloat16_as_ushort(__float2bfloat16_rn(x));
    return __half_as_ushort(__float2half_rn(x));
}

/* Two fp32 -> one u32 holding (lo, hi) as fp16x2 or bf16x2 (round to nearest even). */
template <bool kBf16>
static __device__ __forceinline__ uint32_t fa_pack_f32x2(float lo, float hi)
{
    uint32_t r;
    if (kBf16) {
        __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
        r = *(uint32_t *)&v;
    } else {
        __half2 v = __floats2half2_rn(lo, hi);
        r = *(uint32_t *)&v;
    }
    return r;
}

/* One u32 of fp16x2 / bf16x2 -> two fp32. */
template <bool kBf16>
static __device__ __forceinline__ float2 fa_unpack_f32x2(uint32_t x)
{
    if (kBf16) {
        __nv_bfloat162 v = *(__nv_bfloat162 *)&x;
        return __bfloat1622float2(v);
    } else {
        __half2 v = *(__half2 *)&x;
        return __half22float2(v);
    }
}

/* Two adjacent accumulator n-blocks c0 (columns 0..7) and c1 (columns 8..15) of a 16x16 tile
 * -> the A fragment of that 16x16 tile (for a following mma with k = those 16 columns). */
template <bool kBf16>
static __device__ __forceinline__ void fa_pack_c_to_a(uint32_t a[4], const float c0[4],
                                                      const float c1[4])
{
    a[0] = fa_pack_f32x2<kBf16>(c0[0], c0[1]);
    a[1] = fa_pack_f32x2<kBf16>(c0[2], c0[3]);
    a[2] = fa_pack_f32x2<kBf16>(c1[0], c1[1]);
    a[3] = fa_pack_f32x2<kBf16>(c1[2], c1[3]);
}

#endif /* FA_MMA_CUH */
