/* fa_gemm.h - the register-blocked fp32 GEMM micro-kernel behind every inner product of the
 * tiled CPU kernels (internal to csrc/cpu).
 *
 *   C (M x N) = A (M x K) B (K x N)                      mode FA_GEMM_SET
 *   C        += A B                                      mode FA_GEMM_ADD
 *   C         = C diag(colscale) + A B                   mode FA_GEMM_SCALE_ADD
 *
 * B and C are row-major fp32 with row strides ldb / ldc; N must be a multiple of FA_VL (the
 * last column panel may be narrower than FA_GEMM_NB: it runs a tile of fewer vectors).
 * A is read element by element, A(m, k) = a[m * a_ms + k * a_ks], so the same kernel takes
 * A as stored (row-major K or Q rows straight from the caller's tensor) or transposed
 * (A(dd, j) = V[j][dd]) without a copy. Vectors run along N; A elements are broadcast.
 */
#ifndef FA_GEMM_H
#define FA_GEMM_H

#include <stdint.h>

#include "fa_simd.h"

/* Register tile: FA_GEMM_MR rows of C by FA_GEMM_NV vectors.
 * AVX-512 (32 zmm): 6 x 4 = 24 accumulators + 4 B vectors + 1 broadcast = 29 registers; per k
 *   step 4 loads and 6 broadcasts feed 24 FMAs, so the two FMA pipes, not the load ports, bound
 *   the loop. AVX2 (16 ymm): 6 x 2 = 12 accumulators + 2 B + 1 broadcast = 15 registers.
 * SSE2 (16 xmm, no FMA): 6 x 2 = 12 accumulators + 2 B + 1 broadcast + 1 product = 16.
 * Scalar: 4 x 8 plain floats. */
#if FA_VL == 16
#define FA_GEMM_MR 6
#define FA_GEMM_NV 4
#elif FA_VL == 8 || FA_VL == 4
#define FA_GEMM_MR 6
#define FA_GEMM_NV 2
#else
#define FA_GEMM_MR 4
#define FA_GEMM_NV 8
#endif
#define FA_GEMM_NB (FA_GEMM_NV * FA_VL) /* columns of C per register tile */

enum { FA_GEMM_SET = 0, FA_GEMM_ADD = 1, FA_GEMM_SCALE_ADD = 2 };

void fa_gemm(int64_t M, int64_t N, int64_t K,
             const float *a, int64_t a_ms, int64_t a_ks, /* A(m, k) = a[m*a_ms + k*a_ks] */
             const float *b, int64_t ldb,                 /* (K, N) row stride ldb */
             float *c, int64_t ldc,                       /* (M, N) row stride ldc */
             const float *colscale,                       /* (N,), FA_GEMM_SCALE_ADD only */
             int mode);

/* ---- bf16 inputs on vdpbf16ps (AVX512-BF16) ----------------------------------------------
 * Where the build has AVX512-BF16 (and BW for the packing shuffles), fp16 / fp32 keep fa_gemm.
 * Define FA_NO_DPBF16 to force the fp32 paths (the C harness builds both). */
#if defined(FA_SIMD_AVX512) && defined(__AVX512BF16__) && defined(__AVX512BW__) && \
    !defined(FA_NO_DPBF16)
#define FA_GEMM_DPBF16 1

/* C (M x N) op= A (M x K) B (K x N) with K = 2 K2, modes as fa_gemm. Every product of two
 * bf16 is exact in fp32 and the sums run in fp32 (one vdpbf16ps adds two products per lane);
 * the instruction treats subnormal inputs / results as zero (far below attention magnitudes).
 * A as bf16 pairs: A(m, 2 k2) and A(m, 2 k2 + 1) are the two bf16 at a + m a_ms + k2 a_ks
 * (a_ms, a_ks counted in bf16 elements; the pair contiguous, loaded as one 32-bit word).
 * B pair-packed: b[k2 * ldb + n] holds B(2 k2, n) in its low 16 bits and B(2 k2 + 1, n) in its
 * high 16 bits; N a multiple of 16 (FA_VL). */
void fa_gemm_bf16(int64_t M, int64_t N, int64_t K2,
                  const uint16_t *a, int64_t a_ms, int64_t a_ks, /* bf16 pairs, see above */
                  const uint32_t *b, int64_t ldb,                /* (K2, N) pair-packed */
                  float *c, int64_t ldc,                         /* (M, N) */
                  const float *colscale,                         /* (N,), FA_GEMM_SCALE_ADD */
                  int mode);

/* dst[x] = bf16(src[x]) for x < n (n a multiple of 16), rounded to nearest even. */
void fa_bf16_row(const float *src, int64_t n, uint16_t *dst);

/* dst[x] = r0[x] | r1[x] << 16 for x < n (two bf16 rows interleaved into pairs), r1 == NULL:
 * high halves zero; dst[x] = 0 for n <= x < npad. */
void fa_pack_pairs_bf16(const uint16_t *r0, const uint16_t *r1, int64_t n, uint32_t *dst, int64_t npad);

/* dst[x] = bf16(r0[x]) | bf16(r1[x]) << 16 for x < n (n a multiple of 16), rounded to nearest
 * even; r1 == NULL: high halves zero. */
void fa_pack_pairs_f32(const float *r0, const float *r1, int64_t n, uint32_t *dst);
#endif

/* Whether a call with these inputs runs its GEMMs on fa_gemm_bf16: bf16 data, an even head
 * dim (whole pairs along d), and a build with FA_GEMM_DPBF16. */
static inline int fa_gemm_use_bf16(int dtype_is_bf16, int64_t head_dim)
{
#if defined(FA_GEMM_DPBF16)
    return dtype_is_bf16 && head_dim % 2 == 0;
#else
    (void)dtype_is_bf16;
    (void)head_dim;
    return 0;
#endif
}

#endif /* FA_GEMM_H */
