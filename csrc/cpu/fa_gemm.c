/* fa_gemm.c - the fp32 GEMM micro-kernel of the tiled CPU kernels (see fa_gemm.h). */
#include "fa_gemm.h"

/* One register tile of C: mr <= FA_GEMM_MR rows by nv <= FA_GEMM_NV vectors (nv < FA_GEMM_NV
 * only for the last, narrower column panel). Called with compile-time constants mr and nv and
 * inlined, so the loops over r and v unroll completely and acc lives in registers. */
static inline __attribute__((always_inline)) void
gemm_tile(const int mr, const int nv, int64_t K, const float *a, int64_t a_ms, int64_t a_ks, const float *b,
          int64_t ldb, float *c, int64_t ldc, const float *colscale, int mode)
{
    fa_vf acc[FA_GEMM_MR][FA_GEMM_NV];
    int r, v;
    int64_t k;
    if (mode == FA_GEMM_SET) {
        for (r = 0; r < mr; ++r)
            for (v = 0; v < nv; ++v) acc[r][v] = fa_vzero();
    } else if (mode == FA_GEMM_ADD) {
        for (r = 0; r < mr; ++r)
            for (v = 0; v < nv; ++v) acc[r][v] = fa_vload(c + r * ldc + v * FA_VL);
    } else {
        for (v = 0; v < nv; ++v) {
            fa_vf s = fa_vload(colscale + v * FA_VL);
            for (r = 0; r < mr; ++r) acc[r][v] = fa_vmul(fa_vload(c + r * ldc + v * FA_VL), s);
        }
    }
    for (k = 0; k < K; ++k) {
        fa_vf bv[FA_GEMM_NV];
        const float *ak = a + k * a_ks;
        for (v = 0; v < nv; ++v) bv[v] = fa_vload(b + k * ldb + v * FA_VL);
        for (r = 0; r < mr; ++r) {
            fa_vf av = fa_vset1(ak[r * a_ms]);
            for (v = 0; v < nv; ++v) acc[r][v] = fa_vfma(av, bv[v], acc[r][v]);
        }
    }
    for (r = 0; r < mr; ++r)
        for (v = 0; v < nv; ++v) fa_vstore(c + r * ldc + v * FA_VL, acc[r][v]);
}

/* Every row tile of one column panel of nv vectors (nv constant after inlining). */
static inline __attribute__((always_inline)) void
gemm_panel(const int nv, int64_t M, int64_t K, const float *a, int64_t a_ms, int64_t a_ks, const float *bn,
           int64_t ldb, float *cn, int64_t ldc, const float *sn, int mode)
{
    int64_t m0;
    for (m0 = 0; m0 + FA_GEMM_MR <= M; m0 += FA_GEMM_MR)
        gemm_tile(FA_GEMM_MR, nv, K, a + m0 * a_ms, a_ms, a_ks, bn, ldb, cn + m0 * ldc, ldc, sn, mode);
    switch (M - m0) {
    case 0: break;
    case 1: gemm_tile(1, nv, K, a + m0 * a_ms, a_ms, a_ks, bn, ldb, cn + m0 * ldc, ldc, sn, mode); break;
    case 2: gemm_tile(2, nv, K, a + m0 * a_ms, a_ms, a_ks, bn, ldb, cn + m0 * ldc, ldc, sn, mode); break;
    case 3: gemm_tile(3, nv, K, a + m0 * a_ms, a_ms, a_ks, bn, ldb, cn + m0 * ldc, ldc, sn, mode); break;
#if FA_GEMM_MR > 4
    case 4: gemm_tile(4, nv, K, a + m0 * a_ms, a_ms, a_ks, bn, ldb, cn + m0 * ldc, ldc, sn, mode); break;
    case 5: gemm_tile(5, nv, K, a + m0 * a_ms, a_ms, a_ks, bn, ldb, cn + m0 * ldc, ldc, sn, mode); break;
#endif
    default: break;
    }
}

void fa_gemm(int64_t M, int64_t N, int64_t K, const float *a, int64_t a_ms, int64_t a_ks,
             const float *b, int64_t ldb, float *c, int64_t ldc, const float *colscale, int mode)
{
    int64_t n0;
    /* n outer: the K x NB panel of B stays in L1 while every row tile of A streams past it */
    for (n0 = 0; n0 < N; n0 += FA_GEMM_NB) {
        const float *sn = colscale ? colscale + n0 : colscale;
        const int64_t nv = N - n0 >= FA_GEMM_NB ? FA_GEMM_NV : (N - n0) / FA_VL; /* last panel: fewer vectors */
        switch (nv) {
        case FA_GEMM_NV: gemm_panel(FA_GEMM_NV, M, K, a, a_ms, a_ks, b + n0, ldb, c + n0, ldc, sn, mode); break;
#if FA_GEMM_NV > 1
        case 1: gemm_panel(1, M, K, a, a_ms, a_ks, b + n0, ldb, c + n0, ldc, sn, mode); break;
#endif
#if FA_GEMM_NV > 2
        case 2: gemm_panel(2, M, K, a, a_ms, a_ks, b + n0, ldb, c + n0, ldc, sn, mode); break;
#endif
#if FA_GEMM_NV > 3
        case 3: gemm_panel(3, M, K, a, a_ms, a_ks, b + n0, ldb, c + n0, ldc, sn, mode); break;
#endif
#if FA_GEMM_NV > 4
        case 4: gemm_panel(4, M, K, a, a_ms, a_ks, b + n0, ldb, c + n0, ldc, sn, mode); break;
        case 5: gemm_panel(5, M, K, a, a_ms, a_ks, b + n0, ldb, c + n0, ldc, sn, mode); break;
        case 6: gemm_panel(6, M, K, a, a_ms, a_ks, b + n0, ldb, c + n0, ldc, sn, mode); break;
        case 7: gemm_panel(7, M, K, a, a_ms, a_ks, b + n0, ldb, c + n0, ldc, sn, mode); break;
#endif
        default: break;
        }
    }
}

#if defined(FA_GEMM_DPBF16)
#include <string.h>

_Static_assert(FA_GEMM_NV == 4, "fa_gemm_bf16's panel cases are written for 4 vectors");

/* The bf16 register tile: like gemm_tile, with one vdpbf16ps (two multiply-adds per lane) per
 * k pair; the A pair is one 32-bit broadcast. */
static inline __attribute__((always_inline)) void
gemm_bf16_tile(const int mr, const int nv, int64_t K2, const uint16_t *a, int64_t a_ms, int64_t a_ks,
               const uint32_t *b, int64_t ldb, float *c, int64_t ldc, const float *colscale, int mode)
{
    __m512 acc[FA_GEMM_MR][FA_GEMM_NV];
    int r, v;
    int64_t k;
    if (mode == FA_GEMM_SET) {
        for (r = 0; r < mr; ++r)
            for (v = 0; v < nv; ++v) acc[r][v] = _mm512_setzero_ps();
    } else if (mode == FA_GEMM_ADD) {
        for (r = 0; r < mr; ++r)
            for (v = 0; v < nv; ++v) acc[r][v] = _mm512_loadu_ps(c + r * ldc + v * 16);
    } else {
        for (v = 0; v < nv; ++v) {
            __m512 s = _mm512_loadu_ps(colscale + v * 16);
            for (r = 0; r < mr; ++r) acc[r][v] = _mm512_mul_ps(_mm512_loadu_ps(c + r * ldc + v * 16), s);
        }
    }
    for (k = 0; k < K2; ++k) {
        __m512i bv[FA_GEMM_NV];
        const uint16_t *ak = a + k * a_ks;
        for (v = 0; v < nv; ++v)
            bv[v] = _mm512_loadu_si512((const void *)(b + k * ldb + v * 16));
        for (r = 0; r < mr; ++r) {
            uint32_t pair;
            __m512i av;
            memcpy(&pair, ak + r * a_ms, sizeof pair);
            av = _mm512_set1_epi32((int)pair);
            for (v = 0; v < nv; ++v)
                acc[r][v] = _mm512_dpbf16_ps(acc[r][v], (__m512bh)av, (__m512bh)bv[v]);
        }
    }
    for (r = 0; r < mr; ++r)
        for (v = 0; v < nv; ++v) _mm512_storeu_ps(c + r * ldc + v * 16, acc[r][v]);
}

/* Every row tile of one column panel of nv vectors (nv constant after inlining). */
static inline __attribute__((always_inline)) void
gemm_bf16_panel(const int nv, int64_t M, int64_t K2, const uint16_t *a, int64_t a_ms, int64_t a_ks,
                const uint32_t *bn, int64_t ldb, float *cn, int64_t ldc, const float *sn, int mode)
{
    int64_t m0;
    for (m0 = 0; m0 + FA_GEMM_MR <= M; m0 += FA_GEMM_MR)
        gemm_bf16_tile(FA_GEMM_MR, nv, K2, a + m0 * a_ms, a_ms, a_ks, bn, ldb, cn + m0 * ldc, ldc, sn, mode);
    switch (M - m0) {
    case 0: break;
    case 1: gemm_bf16_tile(1, nv, K2, a + m0 * a_ms, a_ms, a_ks, bn, ldb, cn + m0 * ldc, ldc, sn, mode); break;
    case 2: gemm_bf16_tile(2, nv, K2, a + m0 * a_ms, a_ms, a_ks, bn, ldb, cn + m0 * ldc, ldc, sn, mode); break;
    case 3: gemm_bf16_tile(3, nv, K2, a + m0 * a_ms, a_ms, a_ks, bn, ldb, cn + m0 * ldc, ldc, sn, mode); break;
    case 4: gemm_bf16_tile(4, nv, K2, a + m0 * a_ms, a_ms, a_ks, bn, ldb, cn + m0 * ldc, ldc, sn, mode); break;
    case 5: gemm_bf16_tile(5, nv, K2, a + m0 * a_ms, a_ms, a_ks, bn, ldb, cn + m0 * ldc, ldc, sn, mode); break;
    default: break;
    }
}

void fa_gemm_bf16(int64_t M, int64_t N, int64_t K2, const uint16_t *a, int64_t a_ms, int64_t a_ks,
                  const uint32_t *b, int64_t ldb, float *c, int64_t ldc, const float *colscale, int mode)
{
    int64_t n0;
    for (n0 = 0; n0 < N; n0 += FA_GEMM_NB) {
        const float *sn = colscale ? colscale + n0 : colscale;
        switch (N - n0 >= FA_GEMM_NB ? FA_GEMM_NV : (N - n0) / 16) { /* last panel: fewer vectors */
        case 4: gemm_bf16_panel(4, M, K2, a, a_ms, a_ks, b + n0, ldb, c + n0, ldc, sn, mode); break;
        case 3: gemm_bf16_panel(3, M, K2, a, a_ms, a_ks, b + n0, ldb, c + n0, ldc, sn, mode); break;
        case 2: gemm_bf16_panel(2, M, K2, a, a_ms, a_ks, b + n0, ldb, c + n0, ldc, sn, mode); break;
        case 1: gemm_bf16_panel(1, M, K2, a, a_ms, a_ks, b + n0, ldb, c + n0, ldc, sn, mode); break;
        default: break;
        }
    }
}

/* 16-bit lane e of the result takes lane e / 2 of the low (e even) or high (e odd) 256 bits */
static inline __m512i pair_interleave(__m512i lo_hi)
{
    const __m512i idx = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8,
                                         23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
    return _mm512_permutexvar_epi16(idx, lo_hi);
}

void fa_pack_pairs_bf16(const uint16_t *r0, const uint16_t *r1, int64_t n, uint32_t *dst, int64_t npad)
{
    int64_t x;
    for (x = 0; x < n; x += 16) {
        __mmask16 m = n - x >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - x)) - 1u);
        __m256i lo = _mm256_maskz_loadu_epi16(m, r0 + x);
        __m256i hi = r1 ? _mm256_maskz_loadu_epi16(m, r1 + x) : _mm256_setzero_si256();
        __m512i both = _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
        _mm512_mask_storeu_epi32(dst + x, m, pair_interleave(both));
    }
    for (x = n; x < npad; ++x) dst[x] = 0u;
}

void fa_bf16_row(const float *src, int64_t n, uint16_t *dst)
{
    int64_t x;
    for (x = 0; x < n; x += 16)
        _mm256_storeu_si256((__m256i *)(void *)(dst + x), (__m256i)_mm512_cvtneps_pbh(_mm512_loadu_ps(src + x)));
}

void fa_pack_pairs_f32(const float *r0, const float *r1, int64_t n, uint32_t *dst)
{
    int64_t x;
    for (x = 0; x < n; x += 16) {
        __m512 hi = r1 ? _mm512_loadu_ps(r1 + x) : _mm512_setzero_ps();
        /* cvtne2ps_pbh(hi, lo): bf16(lo) in the low 256 bits, bf16(hi) in the high 256 bits */
        __m512i both = (__m512i)_mm512_cvtne2ps_pbh(hi, _mm512_loadu_ps(r0 + x));
        _mm512_storeu_si512((void *)(dst + x), pair_interleave(both));
    }
}
#endif
