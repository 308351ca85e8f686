/* fa_convert.c - row conversions between the params dtype and fp32 (CPU backend).
 *
 * Vector paths: fp16 through the hardware converters (AVX-512F vcvtph2ps/vcvtps2ph, or F16C on
 * AVX2 machines; both round to nearest even, keep subnormals and quiet NaNs, so they match the
 * scalar fa_f32_to_f16 bit for bit). bf16 through integer arithmetic (the AVX512-BF16
 * instruction flushes subnormals, the scalar code does not; integer rounding keeps every build
 * identical). Tails and the portable build use the scalar functions of fa_convert.h.
 */
#include "fa_convert.h"
#include "fa_simd.h"

#if defined(FA_SIMD_AVX512) || defined(FA_SIMD_AVX2)
#include <immintrin.h>
#endif

void fa_row_to_f32(fa_dtype dt, const void *src, float *dst, int64_t n, float scale)
{
    int64_t i = 0;
    if (dt == FA_F32) {
        const float *s = (const float *)src;
        if (scale == 1.0f) {
            memcpy(dst, s, (size_t)n * sizeof(float));
            return;
        }
        for (i = 0; i < n; ++i) dst[i] = s[i] * scale;
        return;
    }
    {
        const uint16_t *s = (const uint16_t *)src;
#if defined(FA_SIMD_AVX512)
        __m512 vs = _mm512_set1_ps(scale);
        for (; i + 16 <= n; i += 16) {
            __m256i h = _mm256_loadu_si256((const __m256i *)(const void *)(s + i));
            __m512 f;
            if (dt == FA_F16) f = _mm512_cvtph_ps(h);
            else f = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
            _mm512_storeu_ps(dst + i, _mm512_mul_ps(f, vs));
        }
#elif defined(FA_SIMD_AVX2)
        __m256 vs = _mm256_set1_ps(scale);
        for (; i + 8 <= n; i += 8) {
            __m128i h = _mm_loadu_si128((const __m128i *)(const void *)(s + i));
            __m256 f;
#if defined(__F16C__)
            if (dt == FA_F16) f = _mm256_cvtph_ps(h);
            else
#else
            if (dt == FA_F16) break; /* no F16C: the scalar loop below does the rest */
#endif
                f = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
            _mm256_storeu_ps(dst + i, _mm256_mul_ps(f, vs));
        }
#endif
        if (dt == FA_F16)
            for (; i < n; ++i) dst[i] = fa_f16_to_f32(s[i]) * scale;
        else
            for (; i < n; ++i) dst[i] = fa_bf16_to_f32(s[i]) * scale;
    }
}

void fa_row_from_f32(fa_dtype dt, const float *src, void *dst, int64_t n, float scale)
{
    int64_t i = 0;
    if (dt == FA_F32) {
        float *d = (float *)dst;
        if (scale == 1.0f) {
            memcpy(d, src, (size_t)n * sizeof(float));
            return;
        }
        for (i = 0; i < n; ++i) d[i] = src[i] * scale;
        return;
    }
    {
        uint16_t *d = (uint16_t *)dst;
#if defined(FA_SIMD_AVX512)
        __m512 vs = _mm512_set1_ps(scale);
        for (; i + 16 <= n; i += 16) {
            __m512 f = _mm512_mul_ps(_mm512_loadu_ps(src + i), vs);
            __m256i h;
            if (dt == FA_F16) {
                h = _mm512_cvtps_ph(f, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
            } else {
                __m512i x = _mm512_castps_si512(f);
                __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(x, 16), _mm512_set1_epi32(1));
                __m512i r = _mm512_srli_epi32(
                    _mm512_add_epi32(_mm512_add_epi32(x, _mm512_set1_epi32(0x7fff)), lsb), 16);
                __m512i q = _mm512_or_si512(_mm512_srli_epi32(x, 16), _mm512_set1_epi32(0x40));
                __mmask16 nan = _mm512_cmp_epu32_mask(
                    _mm512_and_si512(x, _mm512_set1_epi32(0x7fffffff)),
                    _mm512_set1_epi32(0x7f800000), _MM_CMPINT_NLE);
                h = _mm512_cvtepi32_epi16(_mm512_mask_blend_epi32(nan, r, q));
            }
            _mm256_storeu_si256((__m256i *)(void *)(d + i), h);
        }
#elif defined(FA_SIMD_AVX2)
        __m256 vs = _mm256_set1_ps(scale);
        for (; i + 8 <= n; i += 8) {
            __m256 f = _mm256_mul_ps(_mm256_loadu_ps(src + i), vs);
            __m128i h;
            if (dt == FA_F16) {
#if defined(__F16C__)
                h = _mm256_cvtps_ph(f, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
#else
                break; /* no F16C: the scalar loop below does the rest */
#endif
            } else {
                __m256i x = _mm256_castps_si256(f);
                __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(x, 16), _mm256_set1_epi32(1));
                __m256i r = _mm256_srli_epi32(
                    _mm256_add_epi32(_mm256_add_epi32(x, _mm256_set1_epi32(0x7fff)), lsb), 16);
                __m256i q = _mm256_or_si256(_mm256_srli_epi32(x, 16), _mm256_set1_epi32(0x40));
                /* NaN: |x| > 0x7f800000 as signed ints (|x| <= 0x7fffffff, so no wrap) */
                __m256i nan = _mm256_cmpgt_epi32(_mm256_and_si256(x, _mm256_set1_epi32(0x7fffffff)),
                                                 _mm256_set1_epi32(0x7f800000));
                r = _mm256_blendv_epi8(r, q, nan);
                h = _mm_packus_epi32(_mm256_castsi256_si128(r), _mm256_extracti128_si256(r, 1));
            }
            _mm_storeu_si128((__m128i *)(void *)(d + i), h);
        }
#endif
        if (dt == FA_F16)
            for (; i < n; ++i) d[i] = fa_f32_to_f16(src[i] * scale);
        else
            for (; i < n; ++i) d[i] = fa_f32_to_bf16(src[i] * scale);
    }
}
