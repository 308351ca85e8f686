/* fa_simd.h - the fp32 vector abstraction of the CPU kernels (internal to csrc/cpu).
 *
 * One vector type fa_vf of FA_VL fp32 lanes and the handful of operations the kernels need,
 * chosen at compile time from what the compiler is allowed to emit:
 *   __AVX512F__            -> 16 lanes (__m512)                     FA_SIMD_AVX512
 *   __AVX2__ and __FMA__   ->  8 lanes (__m256)                     FA_SIMD_AVX2
 *   __SSE2__ (x86-64)      ->  4 lanes (__m128, multiply + add)     FA_SIMD_SSE2
 *   anything else          ->  1 lane  (plain float, portable C)    (none)
 * Defining FA_SIMD_SCALAR forces the portable path (the C harness builds it to test it on
 * x86). Every path computes the same functions with the same algorithms (fa_vexp2 below), so
 * the builds differ only by fp32 rounding order. Strict C11: intrinsics only, no extensions.
 */
#ifndef FA_SIMD_H
#define FA_SIMD_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#if !defined(FA_SIMD_SCALAR) && defined(__AVX512F__)
#define FA_SIMD_AVX512 1
#elif !defined(FA_SIMD_SCALAR) && defined(__AVX2__) && defined(__FMA__)
#define FA_SIMD_AVX2 1
#elif !defined(FA_SIMD_SCALAR) && defined(__SSE2__)
#define FA_SIMD_SSE2 1
#endif

#define FA_LOG2E 1.4426950408889634
#define FA_LN2 0.6931471805599453

/* 2^f on f in [-0.5, 0.5]: degree-6 polynomial fitted by us for minimal relative error
 * (iteratively reweighted least squares at Chebyshev nodes). With these fp32 coefficients the
 * polynomial itself is within 1.6e-8 relative of 2^f, i.e. well below half an fp32 ulp, so the
 * evaluation rounding dominates: about 1 ulp overall (the C harness measures it). */
#define FA_EXP2_C0 1.0f
#define FA_EXP2_C1 0x1.62e430p-1f
#define FA_EXP2_C2 0x1.ebfbdap-3f
#define FA_EXP2_C3 0x1.c6aed4p-5f
#define FA_EXP2_C4 0x1.3b2dbcp-7f
#define FA_EXP2_C5 0x1.5f456ap-10f
#define FA_EXP2_C6 0x1.41d2c8p-13f

/* Inputs are clamped to [FA_EXP2_LO, FA_EXP2_HI]: 2^-150 rounds to 0 and 2^128 overflows to
 * +inf, so the clamp changes no result, and -inf becomes exactly 0. NaN passes through. */
#define FA_EXP2_LO (-150.0f)
#define FA_EXP2_HI 128.0f

/* ---- scalar helpers shared by every path (also the whole scalar fallback) ----------------- */

static inline float fa_scalar_pow2i(int32_t n /* in [-126, 127] */)
{
    uint32_t bits = (uint32_t)(n + 127) << 23;
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

/* Round to nearest (ties to even) without libm: valid for |x| < 2^22, which the clamp ensures. */
static inline float fa_scalar_rint(float x)
{
    const float magic = 12582912.0f; /* 1.5 * 2^23: x + magic rounds x to an integer */
    float t = x + magic; /* IEEE semantics (no -ffast-math) keep (x + m) - m from folding */
    return t - magic;
}

static inline float fa_scalar_exp2(float x)
{
    float n, f, p;
    int32_t ni, n1;
    if (x < FA_EXP2_LO) x = FA_EXP2_LO; /* written so that NaN compares false and stays NaN */
    if (x > FA_EXP2_HI) x = FA_EXP2_HI;
    if (x != x) return x;
    n = fa_scalar_rint(x);
    f = x - n; /* exact: n is the nearest integer of x */
    p = FA_EXP2_C6;
    p = p * f + FA_EXP2_C5;
    p = p * f + FA_EXP2_C4;
    p = p * f + FA_EXP2_C3;
    p = p * f + FA_EXP2_C2;
    p = p * f + FA_EXP2_C1;
    p = p * f + FA_EXP2_C0;
    /* 2^n in two factors so both stay normal for n in [-150, 128]; the product rounds the
     * way a single scaling would (subnormal results included). */
    ni = (int32_t)n;
    n1 = ni / 2;
    return p * fa_scalar_pow2i(n1) * fa_scalar_pow2i(ni - n1);
}

/* tanh with a relative error of a few float ulps everywhere (softcap: the score is cap tanh(s / cap),
 * so an absolute tanh error e becomes cap e in the score, and for cap >> |s| only a relative one
 * keeps that at the size of s's own rounding; 1 - 2 / (exp(2|x|) + 1) alone cancels for small |x|,
 * about 6e-8 absolute: 1e-5 in the score at cap 200, 30x torch's fp32 error there).
 *   |x| <  0.625: x + x^3 P(x^2), Cephes tanhf's degree-4 P (relative error about 1.2e-7)
 *   |x| >= 0.625: sign(x) (1 - 2 / (exp(2|x|) + 1)) (no cancellation: the result is >= 0.55) */
#define FA_TANH_SMALL 0.625f
#define FA_TANH_P4 (-5.70498872745e-3f)
#define FA_TANH_P3 2.06390887954e-2f
#define FA_TANH_P2 (-5.37397155531e-2f)
#define FA_TANH_P1 1.33314422036e-1f
#define FA_TANH_P0 (-3.33332819422e-1f)
static inline float fa_scalar_tanh(float x)
{
    float ax = x < 0.0f ? -x : x;
    if (ax < FA_TANH_SMALL) {
        float z = x * x;
        float p = (((FA_TANH_P4 * z + FA_TANH_P3) * z + FA_TANH_P2) * z + FA_TANH_P1) * z + FA_TANH_P0;
        return (p * z) * x + x;
    }
    float e = fa_scalar_exp2(ax * (float)(2.0 * FA_LOG2E));
    float t = 1.0f - 2.0f / (e + 1.0f);
    return x < 0.0f ? -t : t;
}

#if defined(FA_SIMD_AVX512)
/* ================================ AVX-512: 16 lanes ========================================= */
#include <immintrin.h>
#define FA_VL 16
#define FA_SIMD_NAME "avx512"
typedef __m512 fa_vf;

static inline fa_vf fa_vzero(void) { return _mm512_setzero_ps(); }
static inline fa_vf fa_vset1(float x) { return _mm512_set1_ps(x); }
static inline fa_vf fa_vload(const float *p) { return _mm512_loadu_ps(p); }
static inline void fa_vstore(float *p, fa_vf v) { _mm512_storeu_ps(p, v); }
static inline fa_vf fa_vadd(fa_vf a, fa_vf b) { return _mm512_add_ps(a, b); }
static inline fa_vf fa_vsub(fa_vf a, fa_vf b) { return _mm512_sub_ps(a, b); }
static inline fa_vf fa_vmul(fa_vf a, fa_vf b) { return _mm512_mul_ps(a, b); }
static inline fa_vf fa_vdiv(fa_vf a, fa_vf b) { return _mm512_div_ps(a, b); }
/* a * b + c */
static inline fa_vf fa_vfma(fa_vf a, fa_vf b, fa_vf c) { return _mm512_fmadd_ps(a, b, c); }
/* max(a, b); when b is NaN the result is NaN (MAXPS returns its second operand) */
static inline fa_vf fa_vmax(fa_vf a, fa_vf b) { return _mm512_max_ps(a, b); }
static inline float fa_vhsum(fa_vf v) { return _mm512_reduce_add_ps(v); }

static inline fa_vf fa_vexp2(fa_vf x)
{
    fa_vf n, f, p;
    x = _mm512_max_ps(_mm512_set1_ps(FA_EXP2_LO), x); /* NaN in x stays NaN */
    x = _mm512_min_ps(_mm512_set1_ps(FA_EXP2_HI), x);
    n = _mm512_roundscale_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    f = _mm512_sub_ps(x, n);
    p = _mm512_set1_ps(FA_EXP2_C6);
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(FA_EXP2_C5));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(FA_EXP2_C4));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(FA_EXP2_C3));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(FA_EXP2_C2));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(FA_EXP2_C1));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(FA_EXP2_C0));
    return _mm512_scalef_ps(p, n); /* p * 2^n, exact scaling incl. subnormals and overflow */
}

/* lanes whose index base + lane lies in [lo, hi] keep x, the others become -inf */
static inline fa_vf fa_vmask_range(fa_vf x, int32_t base, int32_t lo, int32_t hi)
{
    const __m512i iota = _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
    __m512i idx = _mm512_add_epi32(_mm512_set1_epi32(base), iota);
    __mmask16 in = _mm512_cmp_epi32_mask(idx, _mm512_set1_epi32(lo), _MM_CMPINT_NLT) &
                   _mm512_cmp_epi32_mask(idx, _mm512_set1_epi32(hi), _MM_CMPINT_LE);
    return _mm512_mask_blend_ps(in, _mm512_set1_ps(-INFINITY), x);
}

/* (float)|start + dir * lane|, dir = +1 or -1 (ALiBi distances along a vector) */
static inline fa_vf fa_vabs_iota(int32_t start, int32_t dir)
{
    const __m512i iota = _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
    __m512i d = _mm512_add_epi32(_mm512_set1_epi32(start),
                                 _mm512_mullo_epi32(_mm512_set1_epi32(dir), iota));
    return _mm512_cvtepi32_ps(_mm512_abs_epi32(d));
}

/* m == -inf ? 0 : m (the exponent offset of rows that have seen no key yet) */
static inline fa_vf fa_vneginf_to_zero(fa_vf m)
{
    __mmask16 ninf = _mm512_cmp_ps_mask(m, _mm512_set1_ps(-INFINITY), _CMP_EQ_OQ);
    return _mm512_mask_blend_ps(ninf, m, _mm512_setzero_ps());
}

#elif defined(FA_SIMD_AVX2)
/* ================================ AVX2 + FMA: 8 lanes ======================================= */
#include <immintrin.h>
#define FA_VL 8
#define FA_SIMD_NAME "avx2"
typedef __m256 fa_vf;

static inline fa_vf fa_vzero(void) { return _mm256_setzero_ps(); }
static inline fa_vf fa_vset1(float x) { return _mm256_set1_ps(x); }
static inline fa_vf fa_vload(const float *p) { return _mm256_loadu_ps(p); }
static inline void fa_vstore(float *p, fa_vf v) { _mm256_storeu_ps(p, v); }
static inline fa_vf fa_vadd(fa_vf a, fa_vf b) { return _mm256_add_ps(a, b); }
static inline fa_vf fa_vsub(fa_vf a, fa_vf b) { return _mm256_sub_ps(a, b); }
static inline fa_vf fa_vmul(fa_vf a, fa_vf b) { return _mm256_mul_ps(a, b); }
static inline fa_vf fa_vdiv(fa_vf a, fa_vf b) { return _mm256_div_ps(a, b); }
static inline fa_vf fa_vfma(fa_vf a, fa_vf b, fa_vf c) { return _mm256_fmadd_ps(a, b, c); }
static inline fa_vf fa_vmax(fa_vf a, fa_vf b) { return _mm256_max_ps(a, b); }
static inline float fa_vhsum(fa_vf v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
    return _mm_cvtss_f32(s);
}

static inline fa_vf fa_vexp2(fa_vf x)
{
    fa_vf n, f, p;
    __m256i ni, n1, n2;
    x = _mm256_max_ps(_mm256_set1_ps(FA_EXP2_LO), x);
    x = _mm256_min_ps(_mm256_set1_ps(FA_EXP2_HI), x);
    n = _mm256_round_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    f = _mm256_sub_ps(x, n);
    p = _mm256_set1_ps(FA_EXP2_C6);
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(FA_EXP2_C5));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(FA_EXP2_C4));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(FA_EXP2_C3));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(FA_EXP2_C2));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(FA_EXP2_C1));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(FA_EXP2_C0));
    /* 2^n as two normal factors (n in [-150, 128]); NaN lanes give n garbage but p is NaN */
    ni = _mm256_cvtps_epi32(n);
    n1 = _mm256_srai_epi32(ni, 1);
    n2 = _mm256_sub_epi32(ni, n1);
    n1 = _mm256_slli_epi32(_mm256_add_epi32(n1, _mm256_set1_epi32(127)), 23);
    n2 = _mm256_slli_epi32(_mm256_add_epi32(n2, _mm256_set1_epi32(127)), 23);
    p = _mm256_mul_ps(p, _mm256_castsi256_ps(n1));
    return _mm256_mul_ps(p, _mm256_castsi256_ps(n2));
}

static inline fa_vf fa_vmask_range(fa_vf x, int32_t base, int32_t lo, int32_t hi)
{
    const __m256i iota = _mm256_set_epi32(7, 6, 5, 4, 3, 2, 1, 0);
    __m256i idx = _mm256_add_epi32(_mm256_set1_epi32(base), iota);
    __m256i below = _mm256_cmpgt_epi32(_mm256_set1_epi32(lo), idx);  /* idx < lo */
    __m256i above = _mm256_cmpgt_epi32(idx, _mm256_set1_epi32(hi));  /* idx > hi */
    __m256 out = _mm256_castsi256_ps(_mm256_or_si256(below, above));
    return _mm256_blendv_ps(x, _mm256_set1_ps(-INFINITY), out);
}

static inline fa_vf fa_vabs_iota(int32_t start, int32_t dir)
{
    const __m256i iota = _mm256_set_epi32(7, 6, 5, 4, 3, 2, 1, 0);
    __m256i d = _mm256_add_epi32(_mm256_set1_epi32(start),
                                 _mm256_mullo_epi32(_mm256_set1_epi32(dir), iota));
    return _mm256_cvtepi32_ps(_mm256_abs_epi32(d));
}

static inline fa_vf fa_vneginf_to_zero(fa_vf m)
{
    __m256 ninf = _mm256_cmp_ps(m, _mm256_set1_ps(-INFINITY), _CMP_EQ_OQ);
    return _mm256_blendv_ps(m, _mm256_setzero_ps(), ninf);
}

#elif defined(FA_SIMD_SSE2)
/* ================================ SSE2 (x86-64 baseline): 4 lanes ========================== */
#include <emmintrin.h>
#define FA_VL 4
#define FA_SIMD_NAME "sse2"
typedef __m128 fa_vf;

static inline fa_vf fa_vzero(void) { return _mm_setzero_ps(); }
static inline fa_vf fa_vset1(float x) { return _mm_set1_ps(x); }
static inline fa_vf fa_vload(const float *p) { return _mm_loadu_ps(p); }
static inline void fa_vstore(float *p, fa_vf v) { _mm_storeu_ps(p, v); }
static inline fa_vf fa_vadd(fa_vf a, fa_vf b) { return _mm_add_ps(a, b); }
static inline fa_vf fa_vsub(fa_vf a, fa_vf b) { return _mm_sub_ps(a, b); }
static inline fa_vf fa_vmul(fa_vf a, fa_vf b) { return _mm_mul_ps(a, b); }
static inline fa_vf fa_vdiv(fa_vf a, fa_vf b) { return _mm_div_ps(a, b); }
/* no FMA in the baseline: multiply, then add (two roundings) */
static inline fa_vf fa_vfma(fa_vf a, fa_vf b, fa_vf c) { return _mm_add_ps(_mm_mul_ps(a, b), c); }
static inline fa_vf fa_vmax(fa_vf a, fa_vf b) { return _mm_max_ps(a, b); }
static inline float fa_vhsum(fa_vf v)
{
    __m128 s = _mm_add_ps(v, _mm_movehl_ps(v, v));
    s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
    return _mm_cvtss_f32(s);
}
static inline fa_vf fa_vselect(__m128 mask, fa_vf a, fa_vf b) /* mask ? a : b */
{
    return _mm_or_ps(_mm_and_ps(mask, a), _mm_andnot_ps(mask, b));
}

static inline fa_vf fa_vexp2(fa_vf x)
{
    fa_vf n, f, p;
    __m128i ni, n1, n2;
    x = _mm_max_ps(_mm_set1_ps(FA_EXP2_LO), x);
    x = _mm_min_ps(_mm_set1_ps(FA_EXP2_HI), x);
    ni = _mm_cvtps_epi32(x); /* nearest-even under the default MXCSR rounding mode */
    n = _mm_cvtepi32_ps(ni);
    f = _mm_sub_ps(x, n);
    p = _mm_set1_ps(FA_EXP2_C6);
    p = _mm_add_ps(_mm_mul_ps(p, f), _mm_set1_ps(FA_EXP2_C5));
    p = _mm_add_ps(_mm_mul_ps(p, f), _mm_set1_ps(FA_EXP2_C4));
    p = _mm_add_ps(_mm_mul_ps(p, f), _mm_set1_ps(FA_EXP2_C3));
    p = _mm_add_ps(_mm_mul_ps(p, f), _mm_set1_ps(FA_EXP2_C2));
    p = _mm_add_ps(_mm_mul_ps(p, f), _mm_set1_ps(FA_EXP2_C1));
    p = _mm_add_ps(_mm_mul_ps(p, f), _mm_set1_ps(FA_EXP2_C0));
    n1 = _mm_srai_epi32(ni, 1);
    n2 = _mm_sub_epi32(ni, n1);
    n1 = _mm_slli_epi32(_mm_add_epi32(n1, _mm_set1_epi32(127)), 23);
    n2 = _mm_slli_epi32(_mm_add_epi32(n2, _mm_set1_epi32(127)), 23);
    p = _mm_mul_ps(p, _mm_castsi128_ps(n1));
    return _mm_mul_ps(p, _mm_castsi128_ps(n2));
}

static inline fa_vf fa_vmask_range(fa_vf x, int32_t base, int32_t lo, int32_t hi)
{
    __m128i idx = _mm_add_epi32(_mm_set1_epi32(base), _mm_set_epi32(3, 2, 1, 0));
    __m128i out = _mm_or_si128(_mm_cmpgt_epi32(_mm_set1_epi32(lo), idx),
                               _mm_cmpgt_epi32(idx, _mm_set1_epi32(hi)));
    return fa_vselect(_mm_castsi128_ps(out), _mm_set1_ps(-INFINITY), x);
}

static inline fa_vf fa_vabs_iota(int32_t start, int32_t dir)
{
    __m128i iota = _mm_set_epi32(3, 2, 1, 0);
    __m128i d, s;
    if (dir < 0) iota = _mm_sub_epi32(_mm_setzero_si128(), iota);
    d = _mm_add_epi32(_mm_set1_epi32(start), iota);
    s = _mm_srai_epi32(d, 31);
    return _mm_cvtepi32_ps(_mm_sub_epi32(_mm_xor_si128(d, s), s));
}

static inline fa_vf fa_vneginf_to_zero(fa_vf m)
{
    return _mm_andnot_ps(_mm_cmpeq_ps(m, _mm_set1_ps(-INFINITY)), m);
}

#else
/* ================================ portable scalar: 1 lane =================================== */
#define FA_VL 1
#define FA_SIMD_NAME "scalar"
typedef float fa_vf;

static inline fa_vf fa_vzero(void) { return 0.0f; }
static inline fa_vf fa_vset1(float x) { return x; }
static inline fa_vf fa_vload(const float *p) { return *p; }
static inline void fa_vstore(float *p, fa_vf v) { *p = v; }
static inline fa_vf fa_vadd(fa_vf a, fa_vf b) { return a + b; }
static inline fa_vf fa_vsub(fa_vf a, fa_vf b) { return a - b; }
static inline fa_vf fa_vmul(fa_vf a, fa_vf b) { return a * b; }
static inline fa_vf fa_vdiv(fa_vf a, fa_vf b) { return a / b; }
static inline fa_vf fa_vfma(fa_vf a, fa_vf b, fa_vf c) { return a * b + c; }
static inline fa_vf fa_vmax(fa_vf a, fa_vf b) { return a > b ? a : b; }
static inline float fa_vhsum(fa_vf v) { return v; }
static inline fa_vf fa_vexp2(fa_vf x) { return fa_scalar_exp2(x); }
static inline fa_vf fa_vmask_range(fa_vf x, int32_t base, int32_t lo, int32_t hi)
{
    return (base >= lo && base <= hi) ? x : -INFINITY;
}
static inline fa_vf fa_vabs_iota(int32_t start, int32_t dir)
{
    (void)dir;
    return (float)(start < 0 ? -(int64_t)start : (int64_t)start);
}
static inline fa_vf fa_vneginf_to_zero(fa_vf m) { return (m == -INFINITY) ? 0.0f : m; }

#endif

/* tanh on a vector, the two branches of fa_scalar_tanh both computed and blended by |x| */
static inline fa_vf fa_vtanh(fa_vf x)
{
    fa_vf e, t, ax, neg, big, z, p, small;
    ax = fa_vmax(x, fa_vsub(fa_vzero(), x));
    e = fa_vexp2(fa_vmul(ax, fa_vset1((float)(2.0 * FA_LOG2E))));
    t = fa_vsub(fa_vset1(1.0f), fa_vdiv(fa_vset1(2.0f), fa_vadd(e, fa_vset1(1.0f))));
    neg = fa_vsub(fa_vzero(), t);
    z = fa_vmul(x, x);
    p = fa_vfma(fa_vset1(FA_TANH_P4), z, fa_vset1(FA_TANH_P3));
    p = fa_vfma(p, z, fa_vset1(FA_TANH_P2));
    p = fa_vfma(p, z, fa_vset1(FA_TANH_P1));
    p = fa_vfma(p, z, fa_vset1(FA_TANH_P0));
    small = fa_vfma(fa_vmul(p, z), x, x);
    /* copy the sign of x onto the large branch (t >= 0: sign(x) t == (x < 0 ? -t : t)), then take
     * the small branch where |x| < FA_TANH_SMALL */
#if FA_VL == 16
    big = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(x, _mm512_setzero_ps(), _CMP_LT_OQ), t, neg);
    return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(ax, _mm512_set1_ps(FA_TANH_SMALL), _CMP_LT_OQ), big, small);
#elif FA_VL == 8
    big = _mm256_blendv_ps(t, neg, _mm256_cmp_ps(x, _mm256_setzero_ps(), _CMP_LT_OQ));
    return _mm256_blendv_ps(big, small, _mm256_cmp_ps(ax, _mm256_set1_ps(FA_TANH_SMALL), _CMP_LT_OQ));
#elif FA_VL == 4
    big = fa_vselect(_mm_cmplt_ps(x, _mm_setzero_ps()), neg, t);
    return fa_vselect(_mm_cmplt_ps(ax, _mm_set1_ps(FA_TANH_SMALL)), small, big);
#else
    big = x < 0.0f ? neg : t;
    return ax < FA_TANH_SMALL ? small : big;
#endif
}

#endif /* FA_SIMD_H */
