/* fa_gemm.c - the fp32 GEMM micro-kernel of the tiled CPU kernels (see fa_gemm.h). */
#include "fa_gemm.h"

/* One FA_GEMM_MR x FA_GEMM_NB register tile of C for mr <= FA_GEMM_MR rows. Called with a
 * compile-time constant mr and inlined, so the loops over r and v unroll completely and acc
 * lives in registers. */
static inline __attribute__((always_inline)) void
gemm_tile(const int mr, int64_t K, const float *a, int64_t a_ms, int64_t a_ks, const float *b,
          int64_t ldb, float *c, int64_t ldc, const float *colscale, int mode)
{
    fa_vf acc[FA_GEMM_MR][FA_GEMM_NV];
    int r, v;
    int64_t k;
    if (mode == FA_GEMM_SET) {
        for (r = 0; r < mr; ++r)
            for (v = 0; v < FA_GEMM_NV; ++v) acc[r][v] = fa_vzero();
    } else if (mode == FA_GEMM_ADD) {
        for (r = 0; r < mr; ++r)
            for (v = 0; v < FA_GEMM_NV; ++v) acc[r][v] = fa_vload(c + r * ldc + v * FA_VL);
    } else {
        for (v = 0; v < FA_GEMM_NV; ++v) {
            fa_vf s = fa_vload(colscale + v * FA_VL);
            for (r = 0; r < mr; ++r) acc[r][v] = fa_vmul(fa_vload(c + r * ldc + v * FA_VL), s);
        }
    }
    for (k = 0; k < K; ++k) {
        fa_vf bv[FA_GEMM_NV];
        const float *ak = a + k * a_ks;
        for (v = 0; v < FA_GEMM_NV; ++v) bv[v] = fa_vload(b + k * ldb + v * FA_VL);
        for (r = 0; r < mr; ++r) {
            fa_vf av = fa_vset1(ak[r * a_ms]);
            for (v = 0; v < FA_GEMM_NV; ++v) acc[r][v] = fa_vfma(av, bv[v], acc[r][v]);
        }
    }
    for (r = 0; r < mr; ++r)
        for (v = 0; v < FA_GEMM_NV; ++v) fa_vstore(c + r * ldc + v * FA_VL, acc[r][v]);
}

void fa_gemm(int64_t M, int64_t N, int64_t K, const float *a, int64_t a_ms, int64_t a_ks,
             const float *b, int64_t ldb, float *c, int64_t ldc, const float *colscale, int mode)
{
    int64_t n0, m0;
    /* n outer: the K x NB panel of B stays in L1 while every row tile of A streams past it */
    for (n0 = 0; n0 < N; n0 += FA_GEMM_NB) {
        const float *bn = b + n0;
        float *cn = c + n0;
        const float *sn = colscale ? colscale + n0 : colscale;
        for (m0 = 0; m0 + FA_GEMM_MR <= M; m0 += FA_GEMM_MR)
            gemm_tile(FA_GEMM_MR, K, a + m0 * a_ms, a_ms, a_ks, bn, ldb, cn + m0 * ldc, ldc, sn, mode);
        switch (M - m0) {
        case 0: break;
        case 1: gemm_tile(1, K, a + m0 * a_ms, a_ms, a_ks, bn, ldb, cn + m0 * ldc, ldc, sn, mode); break;
        case 2: gemm_tile(2, K, a + m0 * a_ms, a_ms, a_ks, bn, ldb, cn + m0 * ldc, ldc, sn, mode); break;
        case 3: gemm_tile(3, K, a + m0 * a_ms, a_ms, a_ks, bn, ldb, cn + m0 * ldc, ldc, sn, mode); break;
#if FA_GEMM_MR > 4
        case 4: gemm_tile(4, K, a + m0 * a_ms, a_ms, a_ks, bn, ldb, cn + m0 * ldc, ldc, sn, mode); break;
        case 5: gemm_tile(5, K, a + m0 * a_ms, a_ms, a_ks, bn, ldb, cn + m0 * ldc, ldc, sn, mode); break;
#endif
        default: break;
        }
    }
}
