/* fa_gemm.h - the register-blocked fp32 GEMM micro-kernel behind every inner product of the
 * tiled CPU kernels (internal to csrc/cpu).
 *
 *   C (M x N) = A (M x K) B (K x N)                      mode FA_GEMM_SET
 *   C        += A B                                      mode FA_GEMM_ADD
 *   C         = C diag(colscale) + A B                   mode FA_GEMM_SCALE_ADD
 *
 * B and C are row-major fp32 with row strides ldb / ldc; N must be a multiple of FA_GEMM_NB.
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

#endif /* FA_GEMM_H */
